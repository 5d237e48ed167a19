/*
 * db.c — see db.h. Opening storaged's database and migrating its schema.
 *
 * Order of db_open_with():
 *   1. check the migration table (versions 1..n in order): a bug otherwise
 *   2. open the file, busy timeout
 *   3. read user_version; refuse a newer schema before changing anything
 *   4. journal_mode=WAL, synchronous=FULL, temp_store=MEMORY
 *   5. apply each missing migration in its own BEGIN IMMEDIATE transaction
 *      with foreign keys off (SQLite's advice for schema changes: dropping a
 *      table to rebuild it must not cascade into its children), checked by
 *      PRAGMA foreign_key_check before COMMIT
 *   6. foreign_keys=ON for the life of the connection
 * Every error is one line "<path>: ..." and frees whatever was opened.
 */
#include "db.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "util.h"

#define DB_BUSY_TIMEOUT_MS 5000
#define DB_STMT_CACHE 64   /* distinct SQL texts kept prepared */

/* A prepared statement kept for reuse; busy while a caller holds it. */
struct db_stmt {
	sqlite3_stmt *st;
	bool busy;
};

struct db {
	sqlite3 *h;
	char *path;
	int version;
	struct db_stmt cache[DB_STMT_CACHE];
	size_t ncache;
};

/* Formats "<path>: <fmt...>" into err (if the caller gave one). */
static void db_err(const db_t *db, char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void db_err(const db_t *db, char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (err == NULL || errlen == 0)
		return;
	n = snprintf(err, errlen, "%s: ", db->path);
	if (n < 0 || (size_t)n >= errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err + n, errlen - n, fmt, ap);
	va_end(ap);
}

/* Runs sql, which returns no rows; on failure err is "<path>: <what>: <why>". */
static int db_exec(db_t *db, const char *sql, const char *what, char *err, size_t errlen)
{
	char *msg = NULL;

	if (sqlite3_exec(db->h, sql, NULL, NULL, &msg) == SQLITE_OK)
		return 0;
	db_err(db, err, errlen, "%s: %s", what, msg != NULL ? msg : sqlite3_errmsg(db->h));
	sqlite3_free(msg);
	return -1;
}

/*
 * Runs sql and copies column 0 of its first row as text into out. A
 * statement that returns no row is an error too: every pragma asked here
 * answers with one row unless SQLite was built without it.
 */
static int db_query(db_t *db, const char *sql, char *out, size_t outlen,
		    const char *what, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(db->h, sql, -1, &st, NULL);

	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const unsigned char *t = sqlite3_column_text(st, 0);
		snprintf(out, outlen, "%s", t != NULL ? (const char *)t : "");
		sqlite3_finalize(st);
		return 0;
	}
	if (rc == SQLITE_DONE)
		db_err(db, err, errlen, "%s: no answer to %s", what, sql);
	else
		db_err(db, err, errlen, "%s: %s", what, sqlite3_errmsg(db->h));
	sqlite3_finalize(st);
	return -1;
}

/* db_query() for a one-integer answer (user_version, foreign_keys...). */
static int db_query_int(db_t *db, const char *sql, int *out, const char *what,
			char *err, size_t errlen)
{
	char buf[32];

	if (db_query(db, sql, buf, sizeof buf, what, err, errlen) != 0)
		return -1;
	*out = (int)strtol(buf, NULL, 10);
	return 0;
}

/* Checks that migs holds versions 1, 2, 3... in order, each with a name
 * and SQL: anything else is a programming error in the table. */
static int db_check_table(const db_t *db, const struct db_migration *migs, size_t n,
			  char *err, size_t errlen)
{
	if (n > 0 && migs == NULL) {
		db_err(db, err, errlen, "migration table is NULL with %zu entries", n);
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		if (migs[i].version != (int)i + 1) {
			db_err(db, err, errlen, "migration table entry %zu has version %d, "
			       "expected %zu (versions must run 1, 2, 3... in order)",
			       i, migs[i].version, i + 1);
			return -1;
		}
		if (migs[i].name == NULL || migs[i].sql == NULL) {
			db_err(db, err, errlen, "migration %d has no name or no SQL",
			       migs[i].version);
			return -1;
		}
	}
	return 0;
}

/* Opens the file and sets the busy timeout; the handle is kept even on
 * failure (sqlite3_open_v2 may return one) so that db_close frees it. */
static int db_connect(db_t *db, char *err, size_t errlen)
{
	int rc = sqlite3_open_v2(db->path, &db->h,
				 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
				 SQLITE_OPEN_NOMUTEX, NULL);

	if (rc != SQLITE_OK) {
		int sys = db->h != NULL ? sqlite3_system_errno(db->h) : 0;
		db_err(db, err, errlen, "cannot open database: %s%s%s%s",
		       db->h != NULL ? sqlite3_errmsg(db->h) : sqlite3_errstr(rc),
		       sys != 0 ? " (" : "", sys != 0 ? strerror(sys) : "",
		       sys != 0 ? ")" : "");
		return -1;
	}
	sqlite3_extended_result_codes(db->h, 1);
	sqlite3_busy_timeout(db->h, DB_BUSY_TIMEOUT_MS);
	return 0;
}

/* Sets the journal and sync pragmas; WAL must really be in effect. */
static int db_pragmas(db_t *db, char *err, size_t errlen)
{
	char mode[32];

	if (db_query(db, "PRAGMA journal_mode=WAL", mode, sizeof mode,
		     "cannot set journal_mode=WAL", err, errlen) != 0)
		return -1;
	/* SQLite answers with the mode in effect, not an error, when it
	 * cannot switch (an in-memory database, a read-only directory...). */
	if (strcasecmp(mode, "wal") != 0) {
		db_err(db, err, errlen, "cannot set journal_mode=WAL: journal mode is %s", mode);
		return -1;
	}
	/* temp_store=MEMORY keeps savepoint journals in memory: each request
	 * of a group commit runs in a savepoint, and SQLite otherwise spills
	 * its journal of the pages the batch had already changed (7 per 4 KiB
	 * store) to a temporary file. They matter only to ROLLBACK TO, never
	 * to recovery, and hold only the pages one request touches. */
	if (db_exec(db, "PRAGMA synchronous=FULL", "cannot set synchronous=FULL", err, errlen) != 0)
		return -1;
	return db_exec(db, "PRAGMA temp_store=MEMORY", "cannot set temp_store=MEMORY", err, errlen);
}

/* Rolls back the open transaction, if SQLite has not already done so. */
static void db_rollback(db_t *db)
{
	if (!sqlite3_get_autocommit(db->h))
		sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
}

/* Foreign keys are off while migrating: fails if the transaction left a
 * row they would have refused. */
static int db_fk_check(db_t *db, const char *what, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(db->h, "PRAGMA foreign_key_check", -1, &st, NULL);

	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		db_err(db, err, errlen, "%s: foreign key violation in table %s (rowid %lld)",
		       what, (const char *)sqlite3_column_text(st, 0),
		       (long long)sqlite3_column_int64(st, 1));
	else if (rc != SQLITE_DONE)
		db_err(db, err, errlen, "%s: %s", what, sqlite3_errmsg(db->h));
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

/*
 * Applies one migration in its own transaction together with its
 * user_version. Returns 1 if applied, 0 if the database already had it
 * (another opener got there between our read and our lock), -1 on failure
 * with the transaction rolled back.
 */
static int db_apply(db_t *db, const struct db_migration *mig, char *err, size_t errlen)
{
	char what[256], sql[64];
	int cur;

	snprintf(what, sizeof what, "migration %d (%s) failed", mig->version, mig->name);
	if (db_exec(db, "BEGIN IMMEDIATE", what, err, errlen) != 0)
		return -1;
	if (db_query_int(db, "PRAGMA user_version", &cur, what, err, errlen) != 0)
		goto fail;
	if (cur >= mig->version) {
		db_rollback(db);
		return 0;
	}
	snprintf(sql, sizeof sql, "PRAGMA user_version = %d", mig->version);
	if (db_exec(db, mig->sql, what, err, errlen) != 0 ||
	    db_exec(db, sql, what, err, errlen) != 0)
		goto fail;
	if (db_fk_check(db, what, err, errlen) != 0 ||
	    db_exec(db, "COMMIT", what, err, errlen) != 0)
		goto fail;
	log_info("db.migrated", "version=%d name=%s", mig->version, log_quote(mig->name));
	return 1;
fail:
	db_rollback(db);
	return -1;
}

/* Reads user_version and refuses a schema this binary does not know. */
static int db_check_version(db_t *db, int newest, char *err, size_t errlen)
{
	if (db_query_int(db, "PRAGMA user_version", &db->version,
			 "cannot read schema version", err, errlen) != 0)
		return -1;
	if (db->version > newest) {
		db_err(db, err, errlen, "schema version %d is newer than this storaged "
		       "understands (%d): upgrade Roost or restore a backup",
		       db->version, newest);
		return -1;
	}
	if (db->version < 0) {
		db_err(db, err, errlen, "schema version %d is invalid: restore a backup",
		       db->version);
		return -1;
	}
	return 0;
}

/* Applies every migration after db->version in order, then rereads it. */
static int db_migrate(db_t *db, const struct db_migration *migs, size_t n,
		      char *err, size_t errlen)
{
	for (size_t i = (size_t)db->version; i < n; i++)
		if (db_apply(db, &migs[i], err, errlen) < 0)
			return -1;
	return db_query_int(db, "PRAGMA user_version", &db->version,
			    "cannot read schema version", err, errlen);
}

db_t *db_open_with(const char *path, const struct db_migration *migs, size_t n,
		   char *err, size_t errlen)
{
	db_t *db = xcalloc(1, sizeof *db);
	int fk = 0;

	db->path = xstrdup(path);
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (db_check_table(db, migs, n, err, errlen) != 0 ||
	    db_connect(db, err, errlen) != 0)
		goto fail;
	/* The version check comes first so a newer database is left as is. */
	if (db_check_version(db, n > 0 ? migs[n - 1].version : 0, err, errlen) != 0 ||
	    db_pragmas(db, err, errlen) != 0 ||
	    db_migrate(db, migs, n, err, errlen) != 0 ||
	    db_exec(db, "PRAGMA foreign_keys=ON", "cannot enable foreign keys",
		    err, errlen) != 0 ||
	    db_query_int(db, "PRAGMA foreign_keys", &fk, "cannot enable foreign keys",
			 err, errlen) != 0)
		goto fail;
	/* 0: this SQLite was built without foreign key support. */
	if (fk != 1) {
		db_err(db, err, errlen, "cannot enable foreign keys: not supported by this SQLite");
		goto fail;
	}
	return db;
fail:
	db_close(&db);
	return NULL;
}

db_t *db_open(const char *path, char *err, size_t errlen)
{
	return db_open_with(path, db_migrations, db_migrations_count, err, errlen);
}

void db_close(db_t **db)
{
	if (db == NULL || *db == NULL)
		return;
	/* The cached statements go first; then close cannot be busy unless a
	 * statement leaked, which is worth seeing in the log. */
	for (size_t i = 0; i < (*db)->ncache; i++)
		sqlite3_finalize((*db)->cache[i].st);
	(*db)->ncache = 0;
	if ((*db)->h != NULL && sqlite3_close((*db)->h) != SQLITE_OK)
		log_warn("db.close", "path=%s error=%s", log_quote((*db)->path),
			 log_quote(sqlite3_errmsg((*db)->h)));
	free((*db)->path);
	free(*db);
	*db = NULL;
}

/*
 * Parsing SQL is the larger part of a short statement's cost (a store runs
 * a dozen), so statements are prepared once (SQLITE_PREPARE_PERSISTENT)
 * and reset on release. The cache is keyed by the SQL text. A statement
 * whose cached copy is in use (a caller holds it while running the same
 * SQL again), or one past the cache's size, is prepared afresh and
 * finalized on release.
 */
sqlite3_stmt *db_prepare(db_t *db, const char *sql)
{
	sqlite3_stmt *st = NULL;
	bool cacheable = db->ncache < DB_STMT_CACHE;
	for (size_t i = 0; i < db->ncache; i++) {
		if (strcmp(sqlite3_sql(db->cache[i].st), sql) != 0)
			continue;
		if (!db->cache[i].busy) {
			db->cache[i].busy = true;
			return db->cache[i].st;
		}
		cacheable = false;  /* in use: a one-off copy */
		break;
	}
	if (sqlite3_prepare_v3(db->h, sql, -1, cacheable ? SQLITE_PREPARE_PERSISTENT : 0, &st,
			       NULL) != SQLITE_OK) {
		sqlite3_finalize(st);
		return NULL;
	}
	if (cacheable && st != NULL)
		db->cache[db->ncache++] = (struct db_stmt){ st, true };
	return st;
}

void db_release(db_t *db, sqlite3_stmt *st)
{
	if (st == NULL)
		return;
	for (size_t i = 0; i < db->ncache; i++) {
		if (db->cache[i].st == st) {
			sqlite3_reset(st);
			sqlite3_clear_bindings(st);
			db->cache[i].busy = false;
			return;
		}
	}
	sqlite3_finalize(st);
}

int db_run(db_t *db, const char *sql)
{
	sqlite3_stmt *st = db_prepare(db, sql);
	int rc = st != NULL ? sqlite3_step(st) : SQLITE_ERROR;
	db_release(db, st);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : -1;
}

size_t db_cached(const db_t *db)
{
	return db->ncache;
}

sqlite3 *db_handle(db_t *db)
{
	return db->h;
}

int db_version(db_t *db)
{
	return db->version;
}

int db_integrity_check(db_t *db, char *err, size_t errlen)
{
	char res[512];

	if (db_query(db, "PRAGMA integrity_check(1)", res, sizeof res,
		     "integrity check failed", err, errlen) != 0)
		return -1;
	if (strcmp(res, "ok") == 0)
		return 0;
	db_err(db, err, errlen, "integrity check failed: %s", res);
	return -1;
}
