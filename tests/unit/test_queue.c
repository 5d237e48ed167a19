/*
 * test_queue.c — cmocka unit tests for services/storaged/queue.c, the
 * outbound queue, on a real SQLite file with the real schema.
 *
 * Each test gets a fresh mkdtemp directory, the database in it and an
 * accounts_t. Operations run through queue_run_new, each in its own
 * transaction (as acc_commit would), with a clock the test sets: now()
 * is one second after the wall clock, so what queue_add queued "now" is
 * due. Blobs are inserted directly (storaged.message.store makes them).
 */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "storaged.h"
#include "util.h"

#define HOUR 3600
#define LEASE 60000  /* ms */
#define TOK 64       /* room for a lease token */

struct fx {
	char dir[64];
	db_t *db;
	accounts_t *a;
};

static int fx_setup(void **state)
{
	struct fx *fx = xcalloc(1, sizeof *fx);
	char path[128], err[512];
	strcpy(fx->dir, "/tmp/roost-test-queue-XXXXXX");
	if (mkdtemp(fx->dir) == NULL) {
		free(fx);
		return -1;
	}
	snprintf(path, sizeof path, "%s/roost.db", fx->dir);
	fx->db = db_open(path, err, sizeof err);
	if (fx->db == NULL) {
		fprintf(stderr, "%s\n", err);
		return -1;
	}
	fx->a = accounts_new(NULL, fx->db, NULL, NULL);
	*state = fx;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *fx = *state;
	DIR *d;
	struct dirent *e;
	accounts_free(&fx->a);
	db_close(&fx->db);
	d = opendir(fx->dir);
	if (d != NULL) {
		while ((e = readdir(d)) != NULL)
			if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
				unlinkat(dirfd(d), e->d_name, 0);
		closedir(d);
	}
	rmdir(fx->dir);
	free(fx);
	return 0;
}

/* ---- helpers ------------------------------------------------------------------ */

static int64_t now(void)
{
	return ((int64_t)time(NULL) + 1) * 1000;
}

static void exec_ok(struct fx *fx, const char *sql)
{
	assert_int_equal(sqlite3_exec(db_handle(fx->db), sql, NULL, NULL, NULL), SQLITE_OK);
}

/* Column 0 of the first row of a formatted query; -1 if no row. */
static long long q_int(struct fx *fx, const char *fmt, ...)
{
	char sql[512];
	va_list ap;
	sqlite3_stmt *st = NULL;
	long long v = -1;
	va_start(ap, fmt);
	vsnprintf(sql, sizeof sql, fmt, ap);
	va_end(ap);
	assert_int_equal(sqlite3_prepare_v2(db_handle(fx->db), sql, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

static void exec_fmt(struct fx *fx, const char *fmt, ...)
{
	char sql[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(sql, sizeof sql, fmt, ap);
	va_end(ap);
	exec_ok(fx, sql);
}

/* A complete blob of size bytes; its id. */
static int64_t blob(struct fx *fx, long long size)
{
	exec_fmt(fx, "INSERT INTO blobs (size, sha256, complete, created) VALUES (%lld, "
		 "'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', 1, %lld)",
		 size, (long long)time(NULL));
	return sqlite3_last_insert_rowid(db_handle(fx->db));
}

/* queue_add in its own transaction; rcpts is stolen. The id, or -1 (rolled
 * back) with e set. */
static int64_t add(struct fx *fx, int64_t blob_id, const char *sender, json_t *rcpts,
		   const char *origin, struct acc_err *e)
{
	exec_ok(fx, "BEGIN IMMEDIATE");
	int64_t id = queue_add(fx->a, blob_id, sender, rcpts, origin, e);
	exec_ok(fx, id > 0 ? "COMMIT" : "ROLLBACK");
	json_decref(rcpts);
	return id;
}

/* A new entry of a new blob for the given recipients (NULL-terminated). */
static int64_t entry(struct fx *fx, const char *rcpt, ...)
{
	struct acc_err e;
	json_t *rcpts = json_array();
	va_list ap;
	va_start(ap, rcpt);
	for (const char *r = rcpt; r != NULL; r = va_arg(ap, const char *))
		json_array_append_new(rcpts, json_string(r));
	va_end(ap);
	int64_t id = add(fx, blob(fx, 100), "alice@example.org", rcpts, "q-1", &e);
	assert_true(id > 0);
	return id;
}

/* One storaged.queue.* request at now_ms, fields from json_pack(fmt);
 * committed if it worked. The reply (new reference) or NULL with e set. */
static json_t *run(struct fx *fx, const char *type, int64_t now_ms, struct acc_err *e,
		   const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	json_t *fields = json_vpack_ex(NULL, 0, fmt, ap);
	va_end(ap);
	assert_non_null(fields);
	exec_ok(fx, "BEGIN IMMEDIATE");
	json_t *r = queue_run_new(fx->a, type, fields, now_ms, e);
	exec_ok(fx, r != NULL ? "COMMIT" : "ROLLBACK");
	json_decref(fields);
	return r;
}

/* run() that must fail with code. */
static void fails(struct fx *fx, const char *code, const char *type, int64_t now_ms,
		  const char *fmt, ...)
{
	struct acc_err e = { NULL, "" };
	va_list ap;
	va_start(ap, fmt);
	json_t *fields = json_vpack_ex(NULL, 0, fmt, ap);
	va_end(ap);
	assert_non_null(fields);
	exec_ok(fx, "BEGIN IMMEDIATE");
	json_t *r = queue_run_new(fx->a, type, fields, now_ms, &e);
	exec_ok(fx, "ROLLBACK");
	json_decref(fields);
	if (r != NULL)
		fail_msg("%s succeeded, wanted %s", type, code);
	if (strcmp(e.code, code) != 0)
		fail_msg("%s: %s (%s), wanted %s", type, e.code, e.msg, code);
}

static json_t *take(struct fx *fx, const char *worker, int64_t now_ms, int max)
{
	struct acc_err e;
	json_t *r = run(fx, "storaged.queue.take", now_ms, &e, "{s:s, s:i, s:i}", "worker", worker,
			"max", max, "lease_ms", LEASE);
	if (r == NULL)
		fail_msg("take: %s: %s", e.code, e.msg);
	return r;
}

static size_t taken(json_t *r)
{
	return json_array_size(json_object_get(r, "entries"));
}

static json_int_t field_int(const json_t *o, const char *key)
{
	return json_integer_value(json_object_get(o, key));
}

static const char *field_str(const json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

static json_t *nth(json_t *r, size_t i)
{
	return json_array_get(json_object_get(r, "entries"), i);
}

/* Takes the one entry due at now_ms, which must be id; its token in tok. */
static void take_token(struct fx *fx, const char *worker, int64_t now_ms, int64_t id, char tok[TOK])
{
	json_t *r = take(fx, worker, now_ms, 100);
	assert_int_equal(taken(r), 1);
	assert_int_equal(field_int(nth(r, 0), "id"), id);
	snprintf(tok, TOK, "%s", field_str(nth(r, 0), "token"));
	json_decref(r);
}

/* An entry for bob and carol taken by worker at *t = now(): its id, and
 * the lease token in tok. */
static int64_t taken_entry(struct fx *fx, const char *worker, int64_t *t, char tok[TOK])
{
	int64_t id = entry(fx, "bob@example.net", "carol@example.com", NULL);
	*t = now();
	take_token(fx, worker, *t, id, tok);
	return id;
}

/* update with one result (error may be NULL); the reply or NULL with e. */
static json_t *update1(struct fx *fx, int64_t id, const char *token, int64_t now_ms,
		       const char *rcpt, const char *status, const char *error, struct acc_err *e)
{
	json_t *res = json_pack("{s:s, s:s}", "rcpt", rcpt, "status", status);
	if (error != NULL)
		json_object_set_new(res, "error", json_string(error));
	return run(fx, "storaged.queue.update", now_ms, e, "{s:I, s:s, s:[o]}", "queue_id",
		   (json_int_t)id, "token", token, "results", res);
}

/* ---- queue_add ---------------------------------------------------------------------- */

static void test_add(void **state)
{
	struct fx *fx = *state;
	struct acc_err e;
	int64_t b = blob(fx, 1234);
	int64_t id = add(fx, b, "Alice@Example.ORG", json_pack("[s, s, s]", "Bob@Example.NET",
		"bob@example.net", "carol@example.com"), "q-1a2b", &e);
	assert_true(id > 0);
	assert_int_equal(q_int(fx, "SELECT count(*) FROM queue WHERE id = %lld AND sender = "
			       "'alice@example.org' AND origin = 'q-1a2b' AND lease_until = 0", (long long)id), 1);
	assert_int_equal(q_int(fx, "SELECT expires - created FROM queue WHERE id = %lld", (long long)id),
			 5 * 24 * HOUR);
	/* deduplicated after lower-casing, each due at once */
	assert_int_equal(q_int(fx, "SELECT count(*) FROM queue_rcpts WHERE queue_id = %lld", (long long)id), 2);
	assert_int_equal(q_int(fx, "SELECT count(*) FROM queue_rcpts r JOIN queue q ON q.id = r.queue_id "
			       "WHERE r.rcpt = 'bob@example.net' AND r.state = 'queued' AND r.attempts = 0 "
			       "AND r.next_attempt = q.created"), 1);
	assert_int_equal(q_int(fx, "SELECT refs FROM blobs WHERE id = %lld", (long long)b), 1);
	/* a bounce: empty sender, no origin */
	int64_t id2 = add(fx, b, "", json_pack("[s]", "alice@example.org"), NULL, &e);
	assert_true(id2 > id);
	assert_int_equal(q_int(fx, "SELECT count(*) FROM queue WHERE id = %lld AND sender = '' AND "
			       "origin IS NULL", (long long)id2), 1);
	assert_int_equal(q_int(fx, "SELECT refs FROM blobs WHERE id = %lld", (long long)b), 2);
}

static void add_fails(struct fx *fx, const char *code, int64_t b, const char *sender, json_t *rcpts,
		      const char *origin)
{
	struct acc_err e = { NULL, "" };
	assert_int_equal(add(fx, b, sender, rcpts, origin, &e), -1);
	assert_string_equal(e.code, code);
	assert_int_equal(q_int(fx, "SELECT count(*) FROM queue"), 0);
	assert_int_equal(q_int(fx, "SELECT count(*) FROM queue_rcpts"), 0);
}

static void test_add_bad_input(void **state)
{
	struct fx *fx = *state;
	int64_t b = blob(fx, 10);
	json_t *many = json_array();
	for (int i = 0; i < 1001; i++)
		json_array_append_new(many, json_sprintf("r%d@example.org", i));
	add_fails(fx, "invalid", b, "alice", json_pack("[s]", "b@example.org"), NULL);
	add_fails(fx, "invalid", b, "a@localhost", json_pack("[s]", "b@example.org"), NULL);
	add_fails(fx, "invalid", b, "a@example.org", json_array(), NULL);
	add_fails(fx, "invalid", b, "a@example.org", json_string("b@example.org"), NULL);
	add_fails(fx, "invalid", b, "a@example.org", many, NULL);
	add_fails(fx, "invalid", b, "a@example.org", json_pack("[s, i]", "b@example.org", 1), NULL);
	add_fails(fx, "invalid", b, "a@example.org", json_pack("[s, s]", "b@example.org", "c..d@x.org"), NULL);
	add_fails(fx, "invalid", b, "a@example.org", json_pack("[s]", "b@example.org"), "with space");
	add_fails(fx, "invalid", b, "a@example.org", json_pack("[s]", "b@example.org"), "");
	add_fails(fx, "invalid", b, "a@example.org", json_pack("[s]", "b@example.org"),
		  "q-012345678901234567890123456789012345678901234567890123456789012");  /* 65 */
	add_fails(fx, "internal", 9999, "a@example.org", json_pack("[s]", "b@example.org"), NULL);
	exec_fmt(fx, "UPDATE blobs SET complete = 0 WHERE id = %lld", (long long)b);
	add_fails(fx, "internal", b, "a@example.org", json_pack("[s]", "b@example.org"), NULL);
	/* 1000 is the limit, not over it */
	struct acc_err e;
	json_t *thousand = json_array();
	for (int i = 0; i < 1000; i++)
		json_array_append_new(thousand, json_sprintf("r%d@example.org", i));
	assert_true(add(fx, blob(fx, 1), "", thousand, NULL, &e) > 0);
}

/* ---- take ---------------------------------------------------------------------------- */

static void test_take(void **state)
{
	struct fx *fx = *state;
	int64_t a = entry(fx, "bob@example.net", "carol@example.com", NULL);
	int64_t b = entry(fx, "dave@example.com", NULL);
	int64_t t = now();
	/* b is due longer than a; carol is not due at all */
	exec_fmt(fx, "UPDATE queue_rcpts SET next_attempt = next_attempt - 100 WHERE queue_id = %lld", (long long)b);
	exec_fmt(fx, "UPDATE queue_rcpts SET next_attempt = %lld WHERE rcpt = 'carol@example.com'",
		 (long long)(t / 1000 + HOUR));
	json_t *r = take(fx, "smtpd-1", t, 10);
	assert_int_equal(taken(r), 2);
	json_t *x = nth(r, 0), *y = nth(r, 1);
	assert_int_equal(field_int(x, "id"), b);
	assert_int_equal(field_int(y, "id"), a);
	assert_string_equal(field_str(y, "sender"), "alice@example.org");
	assert_string_equal(field_str(y, "origin"), "q-1");
	assert_int_equal(field_int(y, "size"), 100);
	assert_int_equal(field_int(y, "blob"), q_int(fx, "SELECT blob_id FROM queue WHERE id = %lld", (long long)a));
	assert_int_equal(strlen(field_str(y, "sha256")), 64);
	assert_int_equal(field_int(y, "lease_until"), t + LEASE);
	assert_int_equal(field_int(y, "expires") - field_int(y, "created"), 5 * 24 * HOUR);
	const char *tx = field_str(x, "token"), *ty = field_str(y, "token");
	assert_int_equal(strlen(ty), 32);
	assert_int_equal(strspn(ty, "0123456789abcdef"), 32);
	assert_string_not_equal(tx, ty);
	json_t *rc = json_object_get(y, "rcpts");
	assert_int_equal(json_array_size(rc), 1);  /* carol is not due */
	assert_string_equal(field_str(json_array_get(rc, 0), "rcpt"), "bob@example.net");
	assert_int_equal(field_int(json_array_get(rc, 0), "attempts"), 0);
	assert_int_equal(q_int(fx, "SELECT count(*) FROM queue WHERE lease_owner = 'smtpd-1' AND "
			       "lease_until = %lld AND lease_token IS NOT NULL", (long long)(t + LEASE)), 2);
	json_decref(r);
	/* max */
	exec_ok(fx, "UPDATE queue SET lease_until = 0");
	r = take(fx, "smtpd-1", t, 1);
	assert_int_equal(taken(r), 1);
	assert_int_equal(field_int(nth(r, 0), "id"), b);
	json_decref(r);
}

static void test_take_nothing_due(void **state)
{
	struct fx *fx = *state;
	json_t *r = take(fx, "w", now(), 5);  /* empty queue */
	assert_int_equal(taken(r), 0);
	json_decref(r);
	int64_t a = entry(fx, "bob@example.net", NULL);
	exec_fmt(fx, "UPDATE queue_rcpts SET next_attempt = next_attempt + 60 WHERE queue_id = %lld", (long long)a);
	r = take(fx, "w", now(), 5);
	assert_int_equal(taken(r), 0);
	json_decref(r);
	assert_int_equal(q_int(fx, "SELECT lease_until FROM queue WHERE id = %lld", (long long)a), 0);
}

static void test_lease_exclusion(void **state)
{
	struct fx *fx = *state;
	struct acc_err e;
	int64_t t;
	char t1[TOK];
	int64_t a = taken_entry(fx, "w1", &t, t1);
	/* held: nobody else gets it until the lease has run out */
	for (int64_t dt = 0; dt <= LEASE; dt += LEASE / 4) {
		json_t *r = take(fx, "w2", t + dt, 10);
		assert_int_equal(taken(r), 0);
		json_decref(r);
	}
	char t2[TOK];
	take_token(fx, "w2", t + LEASE + 1, a, t2);
	assert_string_not_equal(t1, t2);
	/* w1's lease is lost; w2's token works */
	fails(fx, "lease_lost", "storaged.queue.update", t + LEASE + 2, "{s:I, s:s, s:[{s:s, s:s}]}",
	      "queue_id", (json_int_t)a, "token", t1, "results", "rcpt", "bob@example.net", "status",
	      "delivered");
	assert_int_equal(q_int(fx, "SELECT count(*) FROM queue_rcpts WHERE state = 'queued'"), 2);
	json_t *r = update1(fx, a, t2, t + LEASE + 3, "bob@example.net", "delivered", NULL, &e);
	assert_non_null(r);
	assert_int_equal(field_int(r, "remaining"), 1);
	json_decref(r);
}

static void test_token_check(void **state)
{
	struct fx *fx = *state;
	struct acc_err e;
	int64_t a = entry(fx, "bob@example.net", "carol@example.com", NULL);
	int64_t t = now();
	char tok[TOK];
	/* never taken: no token is current */
	fails(fx, "lease_lost", "storaged.queue.update", t, "{s:I, s:s, s:[]}", "queue_id",
	      (json_int_t)a, "token", "0123456789abcdef0123456789abcdef", "results");
	take_token(fx, "w1", t, a, tok);
	fails(fx, "lease_lost", "storaged.queue.update", t, "{s:I, s:s, s:[]}", "queue_id",
	      (json_int_t)a, "token", "0123456789abcdef0123456789abcdef", "results");
	fails(fx, "lease_lost", "storaged.queue.update", t, "{s:I, s:s, s:[]}", "queue_id",
	      (json_int_t)a + 1, "token", tok, "results");
	/* a lease past lease_until that nobody took again is still current */
	json_t *r = update1(fx, a, tok, t + 2 * LEASE, "bob@example.net", "delivered", NULL, &e);
	assert_non_null(r);
	assert_int_equal(field_int(r, "remaining"), 1);
	assert_false(json_is_true(json_object_get(r, "done")));
	json_decref(r);
	/* released (the default): the token is no longer current */
	assert_int_equal(q_int(fx, "SELECT count(*) FROM queue WHERE lease_token IS NULL AND "
			       "lease_owner IS NULL AND lease_until = 0"), 1);
	fails(fx, "lease_lost", "storaged.queue.update", t, "{s:I, s:s, s:[]}", "queue_id",
	      (json_int_t)a, "token", tok, "results");
}

static void test_release_false(void **state)
{
	struct fx *fx = *state;
	struct acc_err e;
	int64_t t;
	char tok[TOK];
	int64_t a = taken_entry(fx, "w1", &t, tok);
	json_t *r = run(fx, "storaged.queue.update", t + 1, &e, "{s:I, s:s, s:b, s:[{s:s, s:s}]}",
			"queue_id", (json_int_t)a, "token", tok, "release", 0, "results", "rcpt",
			"bob@example.net", "status", "delivered");
	assert_non_null(r);
	json_decref(r);
	/* still w1's, with the same lease_until */
	r = take(fx, "w2", t + 2, 10);
	assert_int_equal(taken(r), 0);
	json_decref(r);
	assert_int_equal(q_int(fx, "SELECT lease_until FROM queue WHERE id = %lld", (long long)a), t + LEASE);
	/* an empty update releases */
	r = run(fx, "storaged.queue.update", t + 3, &e, "{s:I, s:s, s:[]}", "queue_id", (json_int_t)a,
		"token", tok, "results");
	assert_non_null(r);
	assert_int_equal(field_int(r, "remaining"), 1);
	json_decref(r);
	r = take(fx, "w2", t + 4, 10);
	assert_int_equal(taken(r), 1);
	assert_int_equal(json_array_size(json_object_get(nth(r, 0), "rcpts")), 1);  /* carol only */
	json_decref(r);
}

/* ---- update: backoff, expiry, the end of an entry --------------------------------------- */

static void test_backoff_schedule(void **state)
{
	struct fx *fx = *state;
	struct acc_err e;
	static const long long want[] = { 300, 600, 1200, 2400, 4800, 9600, 14400, 14400, 14400 };
	int64_t a = entry(fx, "bob@example.net", NULL);
	int64_t t = now();
	for (size_t k = 0; k < ARRAY_LEN(want); k++) {
		char tok[TOK];
		take_token(fx, "w", t, a, tok);
		json_t *r = update1(fx, a, tok, t, "bob@example.net", "deferred", "451 4.7.1 later", &e);
		assert_non_null(r);
		assert_int_equal(field_int(r, "remaining"), 1);
		assert_int_equal(json_array_size(json_object_get(r, "failed")), 0);
		json_decref(r);
		long long next = q_int(fx, "SELECT next_attempt FROM queue_rcpts WHERE queue_id = %lld", (long long)a);
		assert_int_equal(next - t / 1000, want[k]);
		assert_int_equal(q_int(fx, "SELECT attempts FROM queue_rcpts WHERE queue_id = %lld", (long long)a),
				 (long long)k + 1);
		/* not due a second early */
		r = take(fx, "w", (next - 1) * 1000, 10);
		assert_int_equal(taken(r), 0);
		json_decref(r);
		t = next * 1000;
	}
}

static void test_expiry(void **state)
{
	struct fx *fx = *state;
	struct acc_err e;
	int64_t a = entry(fx, "bob@example.net", "carol@example.com", NULL);
	int64_t exp = q_int(fx, "SELECT expires FROM queue WHERE id = %lld", (long long)a);
	/* deferred shortly before expiry: one last try at expiry, not later */
	char tok[TOK];
	take_token(fx, "w", (exp - 100) * 1000, a, tok);
	json_t *r = update1(fx, a, tok, (exp - 100) * 1000, "bob@example.net", "deferred", "451 later", &e);
	assert_non_null(r);
	json_decref(r);
	assert_int_equal(q_int(fx, "SELECT next_attempt FROM queue_rcpts WHERE rcpt = 'bob@example.net'"), exp);
	/* deferred at expiry: failed, with the reason */
	take_token(fx, "w", exp * 1000, a, tok);
	r = run(fx, "storaged.queue.update", exp * 1000, &e, "{s:I, s:s, s:[{s:s, s:s, s:s}, {s:s, s:s}]}",
		"queue_id", (json_int_t)a, "token", tok, "results", "rcpt", "bob@example.net", "status",
		"deferred", "error", "451 4.4.1 no answer", "rcpt", "carol@example.com", "status",
		"delivered");
	assert_non_null(r);
	assert_true(json_is_true(json_object_get(r, "done")));
	assert_int_equal(field_int(r, "remaining"), 0);
	json_t *f = json_object_get(r, "failed");
	assert_int_equal(json_array_size(f), 1);
	assert_string_equal(field_str(json_array_get(f, 0), "rcpt"), "bob@example.net");
	assert_string_equal(field_str(json_array_get(f, 0), "error"), "expired: 451 4.4.1 no answer");
	json_decref(r);
	assert_int_equal(q_int(fx, "SELECT count(*) FROM queue"), 0);
}

static void test_done_frees_blob(void **state)
{
	struct fx *fx = *state;
	struct acc_err e;
	int64_t b = blob(fx, 500);
	int64_t x = add(fx, b, "a@example.org", json_pack("[s, s]", "b@example.org", "c@example.org"), NULL, &e);
	int64_t y = add(fx, b, "a@example.org", json_pack("[s]", "d@example.org"), NULL, &e);
	exec_fmt(fx, "INSERT INTO blob_chunks (blob_id, off, data) VALUES (%lld, 0, x'00')", (long long)b);
	assert_int_equal(q_int(fx, "SELECT refs FROM blobs WHERE id = %lld", (long long)b), 2);
	int64_t t = now();
	json_t *r = take(fx, "w", t, 10);
	assert_int_equal(taken(r), 2);
	char tx[64], ty[64];
	snprintf(tx, sizeof tx, "%s", field_str(nth(r, 0), "token"));
	snprintf(ty, sizeof ty, "%s", field_str(nth(r, 1), "token"));
	json_decref(r);
	/* x: one delivered, one failed — final, gone; the blob stays for y */
	r = run(fx, "storaged.queue.update", t, &e, "{s:I, s:s, s:[{s:s, s:s}, {s:s, s:s, s:s}]}",
		"queue_id", (json_int_t)x, "token", tx, "results", "rcpt", "b@example.org", "status",
		"delivered", "rcpt", "C@Example.org", "status", "failed", "error", "550 5.1.1 unknown");
	assert_non_null(r);
	assert_true(json_is_true(json_object_get(r, "done")));
	assert_string_equal(field_str(json_array_get(json_object_get(r, "failed"), 0), "rcpt"), "c@example.org");
	json_decref(r);
	assert_int_equal(q_int(fx, "SELECT count(*) FROM queue WHERE id = %lld", (long long)x), 0);
	assert_int_equal(q_int(fx, "SELECT count(*) FROM queue_rcpts WHERE queue_id = %lld", (long long)x), 0);
	assert_int_equal(q_int(fx, "SELECT refs FROM blobs WHERE id = %lld", (long long)b), 1);
	/* y: its last recipient delivered — the blob and its chunks go too */
	r = update1(fx, y, ty, t, "d@example.org", "delivered", NULL, &e);
	assert_non_null(r);
	assert_true(json_is_true(json_object_get(r, "done")));
	json_decref(r);
	assert_int_equal(q_int(fx, "SELECT count(*) FROM blobs"), 0);
	assert_int_equal(q_int(fx, "SELECT count(*) FROM blob_chunks"), 0);
	assert_int_equal(q_int(fx, "SELECT count(*) FROM queue_rcpts"), 0);
}

static void test_update_is_atomic(void **state)
{
	struct fx *fx = *state;
	int64_t t;
	char tok[TOK];
	int64_t a = taken_entry(fx, "w", &t, tok);
	/* the first result is fine, the second is not: nothing changes */
	fails(fx, "invalid", "storaged.queue.update", t, "{s:I, s:s, s:[{s:s, s:s}, {s:s, s:s}]}",
	      "queue_id", (json_int_t)a, "token", tok, "results", "rcpt", "bob@example.net", "status",
	      "delivered", "rcpt", "carol@example.com", "status", "deferred");
	assert_int_equal(q_int(fx, "SELECT count(*) FROM queue_rcpts WHERE state = 'queued' AND attempts = 0"), 2);
	assert_int_equal(q_int(fx, "SELECT count(*) FROM queue WHERE lease_token = '%s'", tok), 1);
}

/* ---- retry, delete, list, show ------------------------------------------------------ */

static void test_retry(void **state)
{
	struct fx *fx = *state;
	struct acc_err e;
	int64_t a = entry(fx, "bob@example.net", "carol@example.com", NULL);
	int64_t b = entry(fx, "dave@example.com", NULL);
	int64_t t = now();
	exec_fmt(fx, "UPDATE queue_rcpts SET next_attempt = %lld", (long long)(t / 1000 + HOUR));
	json_t *r = run(fx, "storaged.queue.retry", t, &e, "{s:I}", "queue_id", (json_int_t)a);
	assert_non_null(r);
	assert_int_equal(field_int(r, "updated"), 2);
	json_decref(r);
	assert_int_equal(q_int(fx, "SELECT count(*) FROM queue_rcpts WHERE next_attempt = %lld",
			       (long long)(t / 1000)), 2);
	r = take(fx, "w", t, 10);
	assert_int_equal(taken(r), 1);
	assert_int_equal(field_int(nth(r, 0), "id"), a);
	json_decref(r);
	/* all: every queued recipient, delivered ones untouched */
	exec_fmt(fx, "UPDATE queue_rcpts SET state = 'delivered' WHERE rcpt = 'carol@example.com'");
	exec_fmt(fx, "UPDATE queue_rcpts SET next_attempt = %lld", (long long)(t / 1000 + HOUR));
	r = run(fx, "storaged.queue.retry", t + 5000, &e, "{s:b}", "all", 1);
	assert_non_null(r);
	assert_int_equal(field_int(r, "updated"), 2);
	json_decref(r);
	assert_int_equal(q_int(fx, "SELECT count(*) FROM queue_rcpts WHERE next_attempt = %lld",
			       (long long)(t / 1000 + 5)), 2);
	fails(fx, "not_found", "storaged.queue.retry", t, "{s:I}", "queue_id", (json_int_t)(b + 100));
	fails(fx, "invalid", "storaged.queue.retry", t, "{}");
	fails(fx, "invalid", "storaged.queue.retry", t, "{s:b}", "all", 0);
	fails(fx, "invalid", "storaged.queue.retry", t, "{s:I, s:b}", "queue_id", (json_int_t)a, "all", 1);
	fails(fx, "invalid", "storaged.queue.retry", t, "{s:I}", "queue_id", (json_int_t)0);
}

static void test_delete(void **state)
{
	struct fx *fx = *state;
	struct acc_err e;
	int64_t a = entry(fx, "bob@example.net", NULL);
	int64_t t = now();
	char tok[TOK];
	take_token(fx, "w", t, a, tok);
	json_t *r = run(fx, "storaged.queue.delete", t, &e, "{s:I}", "queue_id", (json_int_t)a);
	assert_non_null(r);
	assert_int_equal(field_int(r, "queue_id"), a);
	json_decref(r);
	assert_int_equal(q_int(fx, "SELECT count(*) FROM queue"), 0);
	assert_int_equal(q_int(fx, "SELECT count(*) FROM queue_rcpts"), 0);
	assert_int_equal(q_int(fx, "SELECT count(*) FROM blobs"), 0);
	fails(fx, "not_found", "storaged.queue.delete", t, "{s:I}", "queue_id", (json_int_t)a);
	/* the worker that held it learns at its next update */
	fails(fx, "lease_lost", "storaged.queue.update", t, "{s:I, s:s, s:[]}", "queue_id",
	      (json_int_t)a, "token", tok, "results");
}

static void test_list_pages(void **state)
{
	struct fx *fx = *state;
	struct acc_err e;
	int64_t id[5];
	for (int i = 0; i < 5; i++)
		id[i] = entry(fx, "bob@example.net", "carol@example.com", NULL);
	int64_t t = now();
	exec_fmt(fx, "UPDATE queue_rcpts SET state = 'delivered' WHERE queue_id = %lld AND rcpt = "
		 "'bob@example.net'", (long long)id[1]);
	json_t *r = take(fx, "w", t, 1);
	json_decref(r);
	/* pages of two */
	json_int_t after = 0;
	int seen = 0;
	for (int page = 0; page < 3; page++) {
		r = run(fx, "storaged.queue.list", t, &e, "{s:I, s:i}", "after", after, "limit", 2);
		assert_non_null(r);
		json_t *list = json_object_get(r, "entries");
		assert_int_equal(json_array_size(list), page < 2 ? 2 : 1);
		for (size_t i = 0; i < json_array_size(list); i++, seen++) {
			json_t *x = json_array_get(list, i);
			assert_int_equal(field_int(x, "id"), id[seen]);
			assert_string_equal(field_str(x, "sender"), "alice@example.org");
			assert_int_equal(field_int(x, "size"), 100);
			assert_int_equal(field_int(x, "rcpts"), 2);
			assert_int_equal(field_int(x, "queued"), seen == 1 ? 1 : 2);
			assert_true(field_int(x, "next_attempt") <= t / 1000);
			assert_int_equal(json_is_true(json_object_get(x, "leased")), seen == 0);
			assert_true(field_int(x, "expires") > field_int(x, "created"));
		}
		json_t *next = json_object_get(r, "next");
		if (page < 2) {
			assert_int_equal(json_integer_value(next), id[seen - 1]);
			after = json_integer_value(next);
		} else {
			assert_null(next);
		}
		json_decref(r);
	}
	assert_int_equal(seen, 5);
	/* the default page holds them all */
	r = run(fx, "storaged.queue.list", t, &e, "{}");
	assert_int_equal(json_array_size(json_object_get(r, "entries")), 5);
	assert_null(json_object_get(r, "next"));
	json_decref(r);
}

static void test_show(void **state)
{
	struct fx *fx = *state;
	struct acc_err e;
	int64_t t;
	char tok[TOK];
	int64_t a = taken_entry(fx, "smtpd-7", &t, tok);
	json_t *r = update1(fx, a, tok, t, "carol@example.com", "deferred", "451 greylisted", &e);
	json_decref(r);
	take_token(fx, "smtpd-7", t, a, tok);
	r = run(fx, "storaged.queue.show", t, &e, "{s:I}", "queue_id", (json_int_t)a);
	assert_non_null(r);
	assert_false(json_is_true(json_object_get(r, "truncated")));
	json_t *x = json_object_get(r, "entry");
	assert_int_equal(field_int(x, "id"), a);
	assert_string_equal(field_str(x, "lease_owner"), "smtpd-7");
	assert_int_equal(field_int(x, "lease_until"), t + LEASE);
	assert_true(json_is_true(json_object_get(x, "leased")));
	assert_null(json_object_get(x, "token"));  /* the lease is the worker's secret */
	json_t *rc = json_object_get(x, "rcpts");
	assert_int_equal(json_array_size(rc), 2);
	json_t *carol = json_array_get(rc, 1);
	assert_string_equal(field_str(carol, "rcpt"), "carol@example.com");
	assert_string_equal(field_str(carol, "state"), "queued");
	assert_int_equal(field_int(carol, "attempts"), 1);
	assert_int_equal(field_int(carol, "next_attempt"), t / 1000 + 300);
	assert_string_equal(field_str(carol, "last_error"), "451 greylisted");
	assert_true(json_is_null(json_object_get(json_array_get(rc, 0), "last_error")));
	json_decref(r);
	fails(fx, "not_found", "storaged.queue.show", t, "{s:I}", "queue_id", (json_int_t)(a + 1));
	/* show after the lease ran out */
	r = run(fx, "storaged.queue.show", t + LEASE + 1, &e, "{s:I}", "queue_id", (json_int_t)a);
	assert_false(json_is_true(json_object_get(json_object_get(r, "entry"), "leased")));
	json_decref(r);
}

/* ---- bounds and bad input -------------------------------------------------------------- */

/* An update of entry id with results (stolen) must be refused as invalid. */
static void bad_results(struct fx *fx, int64_t id, const char *tok, int64_t t, json_t *results)
{
	fails(fx, "invalid", "storaged.queue.update", t, "{s:I, s:s, s:o}", "queue_id", (json_int_t)id,
	      "token", tok, "results", results);
}

/* 1000 long recipients do not fit one reply: take gives part of them, the
 * rest are taken after the release. */
static void test_take_reply_bounded(void **state)
{
	struct fx *fx = *state;
	struct acc_err e;
	char local[65];
	memset(local, 'x', 60);
	local[60] = '\0';
	json_t *rcpts = json_array();
	for (int i = 0; i < 1000; i++)
		json_array_append_new(rcpts, json_sprintf("%s%03d@example.org", local, i));
	int64_t a = add(fx, blob(fx, 1), "a@example.org", rcpts, NULL, &e);
	int64_t t = now();
	size_t total = 0;
	for (int round = 0; round < 10 && total < 1000; round++) {
		json_t *r = take(fx, "w", t, 100);
		char *text = json_dumps(r, JSON_COMPACT);
		assert_true(strlen(text) < 60 * 1024);
		free(text);
		assert_int_equal(taken(r), 1);
		json_t *rc = json_object_get(nth(r, 0), "rcpts");
		assert_true(json_array_size(rc) >= 1);
		if (round == 0)  /* cut, but not to nothing */
			assert_true(json_array_size(rc) > 100 && json_array_size(rc) < 1000);
		json_t *results = json_array();
		for (size_t i = 0; i < json_array_size(rc); i++)
			json_array_append_new(results, json_pack("{s:O, s:s}", "rcpt",
				json_object_get(json_array_get(rc, i), "rcpt"), "status", "delivered"));
		total += json_array_size(rc);
		json_t *u = run(fx, "storaged.queue.update", t, &e, "{s:I, s:s, s:o}", "queue_id",
				(json_int_t)a, "token", field_str(nth(r, 0), "token"), "results", results);
		assert_non_null(u);
		assert_int_equal(field_int(u, "remaining"), 1000 - (json_int_t)total);
		json_decref(u);
		json_decref(r);
	}
	assert_int_equal(total, 1000);
	assert_int_equal(q_int(fx, "SELECT count(*) FROM queue"), 0);
}

static void test_bad_requests(void **state)
{
	struct fx *fx = *state;
	const char *T = "storaged.queue.take", *U = "storaged.queue.update";
	char long_error[600], worker[66];
	int64_t a = entry(fx, "bob@example.net", NULL);
	int64_t t = now();
	memset(long_error, 'e', 513);
	long_error[513] = '\0';
	memset(worker, 'w', 65);
	worker[65] = '\0';
	fails(fx, "invalid", T, t, "{s:s, s:i, s:i}", "worker", "w", "max", 0, "lease_ms", LEASE);
	fails(fx, "invalid", T, t, "{s:s, s:i, s:i}", "worker", "w", "max", 101, "lease_ms", LEASE);
	fails(fx, "invalid", T, t, "{s:s, s:i, s:i}", "worker", "w", "max", 1, "lease_ms", 999);
	fails(fx, "invalid", T, t, "{s:s, s:i, s:i}", "worker", "w", "max", 1, "lease_ms", 3600001);
	fails(fx, "invalid", T, t, "{s:s, s:i, s:i}", "worker", "", "max", 1, "lease_ms", LEASE);
	fails(fx, "invalid", T, t, "{s:s, s:i, s:i}", "worker", "a b", "max", 1, "lease_ms", LEASE);
	fails(fx, "invalid", T, t, "{s:s, s:i, s:i}", "worker", worker, "max", 1, "lease_ms", LEASE);
	fails(fx, "invalid", T, t, "{s:s, s:i}", "worker", "w", "max", 1);
	fails(fx, "invalid", T, t, "{s:s, s:i, s:i, s:i}", "worker", "w", "max", 1, "lease_ms", LEASE,
	      "colour", 1);
	fails(fx, "invalid", T, t, "{s:s, s:s, s:i}", "worker", "w", "max", "1", "lease_ms", LEASE);
	/* nothing was leased by any of them */
	assert_int_equal(q_int(fx, "SELECT lease_until FROM queue WHERE id = %lld", (long long)a), 0);
	char tok[TOK];
	take_token(fx, "w", t, a, tok);
	bad_results(fx, a, tok, t, json_pack("[{s:s, s:s}]", "rcpt", "bob@example.net", "status", "bounced"));
	bad_results(fx, a, tok, t, json_pack("[{s:s, s:s}]", "rcpt", "bob@example.net", "status", "deferred"));
	bad_results(fx, a, tok, t, json_pack("[{s:s, s:s}]", "rcpt", "bob@example.net", "status", "failed"));
	bad_results(fx, a, tok, t, json_pack("[{s:s, s:s, s:s}]", "rcpt", "bob@example.net", "status",
					     "failed", "error", long_error));
	bad_results(fx, a, tok, t, json_pack("[{s:s, s:s, s:s}]", "rcpt", "bob@example.net", "status",
					     "failed", "error", "550 a\r\n550 b"));
	bad_results(fx, a, tok, t, json_pack("[{s:s, s:s, s:s}]", "rcpt", "bob@example.net", "status",
					     "failed", "error", ""));
	bad_results(fx, a, tok, t, json_pack("[{s:s, s:s}]", "rcpt", "nobody@example.net", "status", "delivered"));
	bad_results(fx, a, tok, t, json_pack("[{s:s, s:s}]", "rcpt", "bob", "status", "delivered"));
	bad_results(fx, a, tok, t, json_pack("[{s:s}]", "rcpt", "bob@example.net"));
	bad_results(fx, a, tok, t, json_pack("[{s:s, s:s, s:i}]", "rcpt", "bob@example.net", "status",
					     "delivered", "extra", 1));
	bad_results(fx, a, tok, t, json_pack("[{s:s, s:s}, {s:s, s:s, s:s}]", "rcpt", "bob@example.net",
					     "status", "delivered", "rcpt", "BOB@example.net", "status",
					     "failed", "error", "550 twice"));
	bad_results(fx, a, tok, t, json_object());
	fails(fx, "invalid", U, t, "{s:I, s:s, s:[]}", "queue_id", (json_int_t)0, "token", tok, "results");
	fails(fx, "invalid", U, t, "{s:s, s:[]}", "token", tok, "results");
	/* 512 characters of UTF-8 (1024 bytes) are fine */
	char utf8[1100] = "";
	for (int i = 0; i < 512; i++)
		strcat(utf8, "\xc3\xa9");
	struct acc_err e;
	json_t *r = update1(fx, a, tok, t, "bob@example.net", "failed", utf8, &e);
	assert_non_null(r);
	json_decref(r);
	fails(fx, "invalid", "storaged.queue.list", t, "{s:i}", "limit", 0);
	fails(fx, "invalid", "storaged.queue.list", t, "{s:i}", "limit", 1001);
	fails(fx, "invalid", "storaged.queue.list", t, "{s:i}", "after", -1);
	fails(fx, "invalid", "storaged.queue.show", t, "{}");
	fails(fx, "invalid", "storaged.queue.show", t, "{s:s}", "queue_id", "1");
	fails(fx, "invalid", "storaged.queue.delete", t, "{s:i}", "queue_id", -5);
	fails(fx, "invalid", "storaged.queue.nothing", t, "{}");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_add, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_add_bad_input, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_take, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_take_nothing_due, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_lease_exclusion, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_token_check, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_release_false, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_backoff_schedule, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_expiry, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_done_frees_blob, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_update_is_atomic, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_retry, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_delete, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_list_pages, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_show, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_take_reply_bounded, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_bad_requests, fx_setup, fx_teardown),
	};
	log_init("test_queue", LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
