/*
 * test_db.c — cmocka unit tests for services/storaged/db.c and the real
 * schema in migrations.c.
 *
 * Each test gets a fixture owning a fresh mkdtemp directory under /tmp
 * (the database, its -wal and -shm files live there) and the open db_t;
 * teardown closes the database and removes the directory, so a failing
 * assertion still cleans up.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "db.h"
#include "log.h"
#include "util.h"

struct fx {
	char dir[64];   /* temp directory */
	char path[128]; /* <dir>/roost.db */
	db_t *db;
	char err[512];
};

/* Fake schema steps for db_open_with. */
static const struct db_migration mig_ab[] = {
	{ 1, "table a", "CREATE TABLE a (x INTEGER);" },
	{ 2, "table b", "CREATE TABLE b (x INTEGER); INSERT INTO b VALUES (1);" },
	/* Half of it works before the error: the rollback must undo that half. */
	{ 3, "broken", "CREATE TABLE c (x INTEGER); INSERT INTO c VALUES (1); "
		       "CREATE TABLE oops (;" },
};

static int fx_setup(void **state)
{
	struct fx *fx = xcalloc(1, sizeof *fx);

	strcpy(fx->dir, "/tmp/roost-test-db-XXXXXX");
	if (mkdtemp(fx->dir) == NULL) {
		free(fx);
		return -1;
	}
	snprintf(fx->path, sizeof fx->path, "%s/roost.db", fx->dir);
	*state = fx;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *fx = *state;
	DIR *d;
	struct dirent *e;

	db_close(&fx->db);
	d = opendir(fx->dir);
	if (d != NULL) {
		while ((e = readdir(d)) != NULL) {
			if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
				continue;
			unlinkat(dirfd(d), e->d_name, 0);
		}
		closedir(d);
	}
	rmdir(fx->dir);
	free(fx);
	return 0;
}

/* Runs sql on the fixture's database and returns column 0 of its first row
 * as an integer (-1 if no row). */
static long long query_int(struct fx *fx, const char *sql)
{
	sqlite3_stmt *st = NULL;
	long long v = -1;

	assert_int_equal(sqlite3_prepare_v2(db_handle(fx->db), sql, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

/* Like query_int, for a text answer copied into buf. */
static const char *query_text(struct fx *fx, const char *sql, char *buf, size_t len)
{
	sqlite3_stmt *st = NULL;

	buf[0] = '\0';
	assert_int_equal(sqlite3_prepare_v2(db_handle(fx->db), sql, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		snprintf(buf, len, "%s", (const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	return buf;
}

static void exec_ok(struct fx *fx, const char *sql)
{
	assert_int_equal(sqlite3_exec(db_handle(fx->db), sql, NULL, NULL, NULL), SQLITE_OK);
}

/* 1 if a table (or index) of that name exists. */
static int has_table(struct fx *fx, const char *name)
{
	char sql[128];

	snprintf(sql, sizeof sql, "SELECT count(*) FROM sqlite_master WHERE name = '%s'", name);
	return (int)query_int(fx, sql);
}

/* Sets user_version on path with plain SQLite, behind db.c's back. */
static void set_user_version(const char *path, int v)
{
	sqlite3 *h = NULL;
	char sql[64];

	snprintf(sql, sizeof sql, "PRAGMA user_version = %d", v);
	assert_int_equal(sqlite3_open(path, &h), SQLITE_OK);
	assert_int_equal(sqlite3_exec(h, sql, NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_close(h), SQLITE_OK);
}

static void test_fresh_database(void **state)
{
	struct fx *fx = *state;
	char buf[32];
	static const char *const tables[] = { "domains", "users", "aliases", "idempotency",
					      "idempotency_created", "counters", "mailboxes",
					      "blobs", "blob_chunks", "messages", "expunged", "queue",
					      "queue_rcpts" };

	fx->db = db_open(fx->path, fx->err, sizeof fx->err);
	assert_non_null(fx->db);
	assert_int_equal(db_version(fx->db), (int)db_migrations_count);
	assert_int_equal(query_int(fx, "PRAGMA user_version"), (int)db_migrations_count);
	for (size_t i = 0; i < ARRAY_LEN(tables); i++)
		assert_int_equal(has_table(fx, tables[i]), 1);
	assert_string_equal(query_text(fx, "PRAGMA journal_mode", buf, sizeof buf), "wal");
	assert_int_equal(query_int(fx, "PRAGMA synchronous"), 2);
	/* savepoint journals stay in memory, not in temporary files */
	assert_int_equal(query_int(fx, "PRAGMA temp_store"), 2);
	assert_int_equal(query_int(fx, "PRAGMA foreign_keys"), 1);
	assert_int_equal(query_int(fx, "PRAGMA busy_timeout"), 5000);
	/* The schema comments are kept in sqlite_master: they document it. */
	assert_non_null(strstr(query_text(fx, "SELECT sql FROM sqlite_master WHERE name = 'users'",
					  fx->err, sizeof fx->err), "-- 0: no quota"));
}

/* A second open finds the newest version and applies nothing: re-running migration
 * 1 would fail on CREATE TABLE domains. */
static void test_reopen(void **state)
{
	struct fx *fx = *state;

	fx->db = db_open(fx->path, fx->err, sizeof fx->err);
	assert_non_null(fx->db);
	exec_ok(fx, "INSERT INTO domains (name, created) VALUES ('example.org', 1)");
	db_close(&fx->db);
	fx->db = db_open(fx->path, fx->err, sizeof fx->err);
	assert_non_null(fx->db);
	assert_int_equal(db_version(fx->db), (int)db_migrations_count);
	assert_int_equal(query_int(fx, "SELECT count(*) FROM domains"), 1);
}

static void test_newer_refused(void **state)
{
	struct fx *fx = *state;
	char want[512];

	fx->db = db_open(fx->path, fx->err, sizeof fx->err);
	assert_non_null(fx->db);
	db_close(&fx->db);
	set_user_version(fx->path, 99);
	assert_null(db_open(fx->path, fx->err, sizeof fx->err));
	snprintf(want, sizeof want, "%s: schema version 99 is newer than this storaged "
		 "understands (%d): upgrade Roost or restore a backup", fx->path,
		 (int)db_migrations_count);
	assert_string_equal(fx->err, want);
}

/* An older database is upgraded at start, and only the missing step runs. */
static void test_upgrade(void **state)
{
	struct fx *fx = *state;

	fx->db = db_open_with(fx->path, mig_ab, 1, fx->err, sizeof fx->err);
	assert_non_null(fx->db);
	assert_int_equal(db_version(fx->db), 1);
	assert_int_equal(has_table(fx, "a"), 1);
	assert_int_equal(has_table(fx, "b"), 0);
	db_close(&fx->db);
	fx->db = db_open_with(fx->path, mig_ab, 2, fx->err, sizeof fx->err);
	assert_non_null(fx->db);
	assert_int_equal(db_version(fx->db), 2);
	assert_int_equal(query_int(fx, "PRAGMA user_version"), 2);
	assert_int_equal(has_table(fx, "b"), 1);
}

/* Migration 3 fails half way: nothing of it remains, the version stays 2. */
static void test_failed_migration(void **state)
{
	struct fx *fx = *state;
	char want[256];

	assert_null(db_open_with(fx->path, mig_ab, 3, fx->err, sizeof fx->err));
	snprintf(want, sizeof want, "%s: migration 3 (broken) failed: ", fx->path);
	assert_memory_equal(fx->err, want, strlen(want));
	assert_non_null(strstr(fx->err, "syntax error"));
	fx->db = db_open_with(fx->path, mig_ab, 2, fx->err, sizeof fx->err);
	assert_non_null(fx->db);
	assert_int_equal(db_version(fx->db), 2);
	assert_int_equal(has_table(fx, "b"), 1);
	assert_int_equal(has_table(fx, "c"), 0);
}

/* A bad migration table is refused before the file is even created. */
static void test_bad_table(void **state)
{
	struct fx *fx = *state;
	static const struct db_migration swapped[] = {
		{ 2, "two", "CREATE TABLE b (x);" }, { 1, "one", "CREATE TABLE a (x);" },
	};
	static const struct db_migration gap[] = {
		{ 1, "one", "CREATE TABLE a (x);" }, { 3, "three", "CREATE TABLE c (x);" },
	};
	static const struct db_migration dup[] = {
		{ 1, "one", "CREATE TABLE a (x);" }, { 1, "again", "CREATE TABLE b (x);" },
	};
	static const struct db_migration zero[] = { { 0, "zero", "CREATE TABLE a (x);" } };
	static const struct db_migration nosql[] = { { 1, "one", NULL } };

	assert_null(db_open_with(fx->path, swapped, 2, fx->err, sizeof fx->err));
	assert_non_null(strstr(fx->err, "entry 0 has version 2, expected 1"));
	assert_null(db_open_with(fx->path, gap, 2, fx->err, sizeof fx->err));
	assert_non_null(strstr(fx->err, "entry 1 has version 3, expected 2"));
	assert_null(db_open_with(fx->path, dup, 2, fx->err, sizeof fx->err));
	assert_non_null(strstr(fx->err, "entry 1 has version 1, expected 2"));
	assert_null(db_open_with(fx->path, zero, 1, fx->err, sizeof fx->err));
	assert_non_null(strstr(fx->err, "entry 0 has version 0"));
	assert_null(db_open_with(fx->path, nosql, 1, fx->err, sizeof fx->err));
	assert_non_null(strstr(fx->err, "migration 1 has no name or no SQL"));
	assert_int_equal(access(fx->path, F_OK), -1);
}

static void test_missing_directory(void **state)
{
	struct fx *fx = *state;
	char path[192], want[256];

	snprintf(path, sizeof path, "%s/missing/roost.db", fx->dir);
	assert_null(db_open(path, fx->err, sizeof fx->err));
	snprintf(want, sizeof want, "%s: cannot open database: ", path);
	assert_memory_equal(fx->err, want, strlen(want));
}

/* A file that is not SQLite is refused with the path in the message. */
static void test_not_a_database(void **state)
{
	struct fx *fx = *state;
	FILE *f = fopen(fx->path, "w");

	assert_non_null(f);
	for (int i = 0; i < 512; i++)
		fputs("this is not a database ", f);
	assert_int_equal(fclose(f), 0);
	assert_null(db_open(fx->path, fx->err, sizeof fx->err));
	assert_memory_equal(fx->err, fx->path, strlen(fx->path));
	assert_non_null(strstr(fx->err, "not a database"));
}

static void test_foreign_keys_cascade(void **state)
{
	struct fx *fx = *state;

	fx->db = db_open(fx->path, fx->err, sizeof fx->err);
	assert_non_null(fx->db);
	exec_ok(fx, "INSERT INTO domains (id, name, created) VALUES (1, 'a.example', 1), "
		    "(2, 'b.example', 1);"
		    "INSERT INTO users (domain_id, localpart, created) VALUES (1, 'ann', 1), "
		    "(1, 'bob', 1), (2, 'cy', 1);"
		    "INSERT INTO aliases (domain_id, localpart, target) VALUES "
		    "(1, 'info', 'ann@a.example');");
	exec_ok(fx, "DELETE FROM domains WHERE id = 1");
	assert_int_equal(query_int(fx, "SELECT count(*) FROM users"), 1);
	assert_int_equal(query_int(fx, "SELECT count(*) FROM users WHERE domain_id = 1"), 0);
	assert_int_equal(query_int(fx, "SELECT count(*) FROM aliases"), 0);
	/* A user of a domain that does not exist is refused. */
	assert_int_equal(sqlite3_exec(db_handle(fx->db), "INSERT INTO users (domain_id, "
				      "localpart, created) VALUES (9, 'x', 1)", NULL, NULL, NULL),
			 SQLITE_CONSTRAINT_FOREIGNKEY);
}

/* Rebuilding a parent table in a migration (create, copy, drop, rename)
 * must not cascade into its children: foreign keys are off while migrating. */
static void test_migration_rebuild_keeps_children(void **state)
{
	struct fx *fx = *state;
	static const struct db_migration migs[] = {
		{ 1, "parent and child",
		  "CREATE TABLE p (id INTEGER PRIMARY KEY);"
		  "CREATE TABLE c (p_id INTEGER NOT NULL REFERENCES p(id) ON DELETE CASCADE);"
		  "INSERT INTO p VALUES (1); INSERT INTO c VALUES (1);" },
		{ 2, "rebuild parent",
		  "CREATE TABLE p_new (id INTEGER PRIMARY KEY, note TEXT);"
		  "INSERT INTO p_new (id) SELECT id FROM p;"
		  "DROP TABLE p; ALTER TABLE p_new RENAME TO p;" },
	};

	fx->db = db_open_with(fx->path, migs, 2, fx->err, sizeof fx->err);
	assert_non_null(fx->db);
	assert_int_equal(query_int(fx, "SELECT count(*) FROM c"), 1);
	assert_int_equal(query_int(fx, "PRAGMA foreign_keys"), 1);
}

/* A migration leaving a row foreign keys would refuse is rolled back. */
static void test_migration_fk_violation(void **state)
{
	struct fx *fx = *state;
	static const struct db_migration migs[] = {
		{ 1, "dangling child",
		  "CREATE TABLE p (id INTEGER PRIMARY KEY);"
		  "CREATE TABLE c (p_id INTEGER NOT NULL REFERENCES p(id));"
		  "INSERT INTO c VALUES (7);" },
	};

	assert_null(db_open_with(fx->path, migs, 1, fx->err, sizeof fx->err));
	assert_non_null(strstr(fx->err, "migration 1 (dangling child) failed: "
				"foreign key violation in table c"));
	fx->db = db_open_with(fx->path, NULL, 0, fx->err, sizeof fx->err);
	assert_non_null(fx->db);
	assert_int_equal(db_version(fx->db), 0);
	assert_int_equal(has_table(fx, "c"), 0);
}

static void test_integrity_check(void **state)
{
	struct fx *fx = *state;

	fx->db = db_open(fx->path, fx->err, sizeof fx->err);
	assert_non_null(fx->db);
	fx->err[0] = '\0';
	assert_int_equal(db_integrity_check(fx->db, fx->err, sizeof fx->err), 0);
	assert_string_equal(fx->err, "");
}

static void test_close_nulls(void **state)
{
	struct fx *fx = *state;
	db_t *none = NULL;

	fx->db = db_open(fx->path, fx->err, sizeof fx->err);
	assert_non_null(fx->db);
	db_close(&fx->db);
	assert_null(fx->db);
	db_close(&fx->db);
	db_close(&none);
	db_close(NULL);
}

/* Prepared statements are kept: the same SQL gives the same statement
 * back once released, reset and without its bindings; a copy while it is
 * held; a bad statement gives NULL; db_run goes through the cache too and
 * keeps the error code; db_close finalizes them all. */
static void test_statement_cache(void **state)
{
	struct fx *fx = *state;
	const char *ins = "INSERT INTO a (x) VALUES (?1)", *sel = "SELECT count(*), sum(x) FROM a";

	fx->db = db_open_with(fx->path, mig_ab, 1, fx->err, sizeof fx->err);
	assert_non_null(fx->db);
	assert_int_equal(db_cached(fx->db), 0);
	sqlite3_stmt *st = db_prepare(fx->db, ins);
	assert_non_null(st);
	sqlite3_bind_int64(st, 1, 7);
	assert_int_equal(sqlite3_step(st), SQLITE_DONE);
	db_release(fx->db, st);
	sqlite3_stmt *again = db_prepare(fx->db, ins);
	assert_ptr_equal(again, st);
	assert_int_equal(db_cached(fx->db), 1);
	/* held: the same SQL again is a copy, finalized on release */
	sqlite3_stmt *copy = db_prepare(fx->db, ins);
	assert_non_null(copy);
	assert_ptr_not_equal(copy, again);
	assert_int_equal(db_cached(fx->db), 1);
	sqlite3_bind_int64(copy, 1, 5);
	assert_int_equal(sqlite3_step(copy), SQLITE_DONE);
	db_release(fx->db, copy);
	/* released bindings are cleared: NULL is inserted */
	assert_int_equal(sqlite3_step(again), SQLITE_DONE);
	db_release(fx->db, again);
	sqlite3_stmt *q = db_prepare(fx->db, sel);
	assert_int_equal(sqlite3_step(q), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int64(q, 0), 3);
	assert_int_equal(sqlite3_column_int64(q, 1), 12);
	/* a reader left half way is reset by its release */
	db_release(fx->db, q);
	assert_int_equal(db_run(fx->db, "BEGIN IMMEDIATE"), 0);
	assert_int_equal(db_run(fx->db, "DELETE FROM a"), 0);
	assert_int_equal(db_run(fx->db, "COMMIT"), 0);
	assert_int_equal(db_run(fx->db, "COMMIT"), -1);   /* no transaction */
	assert_int_equal(sqlite3_extended_errcode(db_handle(fx->db)), SQLITE_ERROR);
	assert_null(db_prepare(fx->db, "SELECT nonsense FROM nowhere"));
	assert_int_equal(db_cached(fx->db), 5);
	db_release(fx->db, NULL);
	db_close(&fx->db);   /* finalizes the cache: close is not busy */
	assert_null(fx->db);
}

#define FX_TEST(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		FX_TEST(test_fresh_database),
		FX_TEST(test_reopen),
		FX_TEST(test_newer_refused),
		FX_TEST(test_upgrade),
		FX_TEST(test_failed_migration),
		FX_TEST(test_bad_table),
		FX_TEST(test_missing_directory),
		FX_TEST(test_not_a_database),
		FX_TEST(test_foreign_keys_cascade),
		FX_TEST(test_migration_rebuild_keeps_children),
		FX_TEST(test_migration_fk_violation),
		FX_TEST(test_integrity_check),
		FX_TEST(test_close_nulls),
		FX_TEST(test_statement_cache),
	};

	/* db.migrated lines would only clutter the test output. */
	log_init("test_db", LOG_WARN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
