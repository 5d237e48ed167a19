/*
 * queue.c — the outbound queue (DESIGN.md "Mail flow: Outbound"):
 *
 *   queue_add                        storaged.message.store's enqueue, in the
 *                                    savepoint that stores the blob
 *   storaged.queue.{take,update}     smtpd's delivery client   (idempotent)
 *   storaged.queue.{retry,delete}    roostctl                  (idempotent)
 *   storaged.queue.{list,show}       roostctl
 *
 * An entry (table queue, migration 3) is one message (a blob) from one
 * envelope sender, with one queue_rcpts row per recipient, queued until a
 * delivery worker reports it delivered or failed. When no recipient is
 * queued any more the entry is deleted, and with it its blob reference
 * (triggers; the blob goes with its last reference).
 *
 * Leases. take hands each entry it returns to one worker until lease_until
 * (unix ms) under a fresh random token, in one transaction (acc_commit: a
 * savepoint of the group commit; takes of one batch see each other's
 * leases), and only takes entries whose lease has run out: two workers
 * never hold one entry at once. The token stays current until the next take replaces
 * it (or update releases it); update is refused (lease_lost) without the
 * current token. An update after lease_until whose token is still current
 * is accepted: nobody took the entry since, its deliveries happened, and
 * refusing would only send them twice.
 *
 * Retries. A deferred recipient waits 5 min, 10, 20, 40, 80, 160, then 4 h
 * between attempts, never past the entry's expiry (5 days after queueing);
 * deferred at or after expiry it fails with "expired: <error>". update's
 * reply lists the recipients that failed by it: the worker builds the DSN.
 *
 * Bounds. Replies stay under QU_REPLY_BYTES (one bus envelope is 64 KiB):
 * take gives fewer entries (an entry's recipients may be cut: the rest stay
 * due for the next take), list pages with a cursor (next), show says
 * "truncated".
 *
 * Time. Each handler reads the clock once and hands it down (queue_run_new),
 * so the unit tests drive the clock. A take that finds nothing due is
 * answered without a change: idle polls cost no commit and no idempotency
 * row.
 */
#include "storaged.h"

#include "hmap.h"
#include "jsonx.h"
#include "util.h"

#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define QU_LIFETIME_S (5 * 24 * 3600)   /* queued mail gives up after this */
#define QU_RCPTS_MAX 1000               /* recipients of an entry, results of an update */
#define QU_ORIGIN_MAX 64                /* smtpd's transaction id */
#define QU_WORKER_MAX 64
#define QU_TOKEN_BYTES 16               /* random bytes of a lease token (hex on the wire) */
#define QU_TOKEN_MAX 64
#define QU_TAKE_MAX 100
#define QU_LEASE_MIN_MS 1000
#define QU_LEASE_MAX_MS 3600000
#define QU_ERROR_MAX 512                /* characters of a delivery error */
#define QU_LIST_DEFAULT 100
#define QU_LIST_MAX 1000
#define QU_REPLY_BYTES (48 * 1024)
#define QU_ID_MAX 9007199254740991LL    /* 2^53 - 1: exact in every JSON reader */

/* One request: what every operation gets. */
struct qu_call {
	const char *type;
	const json_t *fields;   /* borrowed: the request's own fields */
	int64_t now_ms;         /* unix ms, read once per request */
};

typedef json_t *(*qu_op_fn)(accounts_t *a, const struct qu_call *c, struct acc_err *e);

/* ---- checks -------------------------------------------------------------------- */

/* Strict unpack of the request's fields; -1 with e invalid. */
static int qu_unpack(const struct qu_call *c, struct acc_err *e, const char *fmt, ...)
{
	json_error_t jerr;
	va_list ap;
	va_start(ap, fmt);
	int rc = json_vunpack_ex((json_t *)c->fields, &jerr, JSON_STRICT, fmt, ap);
	va_end(ap);
	if (rc < 0)
		acc_set(e, "invalid", "bad %s: %s", c->type, jerr.text);
	return rc;
}

/* 1..max bytes of printable ASCII without space (worker names, origins). */
static bool qu_token_ok(const char *s, size_t max)
{
	size_t n = strlen(s);
	for (size_t i = 0; i < n; i++)
		if (s[i] < '!' || s[i] > '~')
			return false;
	return n >= 1 && n <= max;
}

/* A delivery error: 1..512 characters (UTF-8, valid: jansson checked it),
 * one line without control characters. */
static bool qu_error_ok(const char *s)
{
	size_t chars = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
		if (*p < 0x20 || *p == 0x7f)
			return false;
		chars += (*p & 0xc0) != 0x80;
	}
	return chars >= 1 && chars <= QU_ERROR_MAX;
}

/* 0 if ok, else -1 with e invalid saying what is wanted. */
static int qu_check(bool ok, struct acc_err *e, const char *what)
{
	if (!ok)
		acc_set(e, "invalid", "%s", what);
	return ok ? 0 : -1;
}

/* Checks an entry id; -1 with e invalid. */
static int qu_id(json_int_t id, struct acc_err *e)
{
	return qu_check(id >= 1 && id <= QU_ID_MAX, e, "queue_id must be 1..2^53-1");
}

/* A delay before the next attempt after the attempts-th. */
static int64_t qu_backoff_s(int64_t attempts)
{
	static const int64_t steps[] = { 300, 600, 1200, 2400, 4800, 9600, 14400 };
	size_t i = attempts < 1 ? 0 : (size_t)(attempts - 1);
	return steps[i < ARRAY_LEN(steps) ? i : ARRAY_LEN(steps) - 1];
}

/* ---- rows ---------------------------------------------------------------------- */

static json_t *qu_text(sqlite3_stmt *st, int col)
{
	const char *s = (const char *)sqlite3_column_text(st, col);
	return s != NULL ? json_string(s) : json_null();
}

static json_int_t qu_col(sqlite3_stmt *st, int col)
{
	return (json_int_t)sqlite3_column_int64(st, col);
}

static size_t qu_json_len(const json_t *j)
{
	char *text = json_dumps(j, JSON_COMPACT);
	size_t n = text ? strlen(text) : 0;
	free(text);
	return n;
}

/*
 * Entry id as {id, blob, sender, origin, created, expires, size, sha256}
 * and, with lease, {lease_owner, lease_until, leased}. NULL with e
 * not_found (or internal).
 */
static json_t *qu_entry_new(accounts_t *a, int64_t id, int64_t now_ms, bool lease, struct acc_err *e)
{
	sqlite3_stmt *st = acc_prep(a, "SELECT q.blob_id, q.sender, q.origin, q.created, q.expires, "
				    "b.size, b.sha256, q.lease_owner, q.lease_until FROM queue q "
				    "JOIN blobs b ON b.id = q.blob_id WHERE q.id = ?1", "i", id);
	int rc = st ? sqlite3_step(st) : SQLITE_ERROR;
	json_t *entry = NULL;
	if (rc == SQLITE_ROW)
		entry = json_pack("{s:I, s:I, s:s, s:o, s:I, s:I, s:I, s:o}", "id", (json_int_t)id,
				  "blob", qu_col(st, 0), "sender", (const char *)sqlite3_column_text(st, 1),
				  "origin", qu_text(st, 2), "created", qu_col(st, 3), "expires",
				  qu_col(st, 4), "size", qu_col(st, 5), "sha256", qu_text(st, 6));
	if (entry != NULL && lease) {
		json_object_set_new(entry, "lease_owner", qu_text(st, 7));
		json_object_set_new(entry, "lease_until", json_integer(qu_col(st, 8)));
		json_object_set_new(entry, "leased", json_boolean(qu_col(st, 8) >= now_ms));
	}
	if (rc == SQLITE_DONE)
		acc_set(e, "not_found", "no queue entry %lld", (long long)id);
	db_release(a->db, st);
	return entry;
}

/* acc_row_fn: a recipient as take gives it (rcpt, attempts). */
static json_t *qu_take_rcpt_row(sqlite3_stmt *st)
{
	return json_pack("{s:s, s:I}", "rcpt", (const char *)sqlite3_column_text(st, 0),
			 "attempts", qu_col(st, 1));
}

/* acc_row_fn: a recipient as show gives it. */
static json_t *qu_show_rcpt_row(sqlite3_stmt *st)
{
	return json_pack("{s:s, s:s, s:I, s:I, s:o}", "rcpt", (const char *)sqlite3_column_text(st, 0),
			 "state", (const char *)sqlite3_column_text(st, 1), "attempts", qu_col(st, 2),
			 "next_attempt", qu_col(st, 3), "last_error", qu_text(st, 4));
}

/* acc_row_fn: an entry as list gives it. */
static json_t *qu_list_row(sqlite3_stmt *st)
{
	return json_pack("{s:I, s:s, s:I, s:I, s:I, s:I, s:I, s:o, s:b}", "id", qu_col(st, 0),
			 "sender", (const char *)sqlite3_column_text(st, 1), "created", qu_col(st, 2),
			 "expires", qu_col(st, 3), "size", qu_col(st, 4), "rcpts", qu_col(st, 5),
			 "queued", qu_col(st, 6), "next_attempt", sqlite3_column_type(st, 7) == SQLITE_NULL ?
			 json_null() : json_integer(qu_col(st, 7)), "leased", sqlite3_column_int(st, 8));
}

/* ---- add --------------------------------------------------------------------------- */

/* Checks sender (lower-cased into low), rcpts and origin of queue_add: 0,
 * or -1 with e invalid naming storaged.message.store's enqueue fields. */
static int qu_add_check(const char *sender, const json_t *rcpts, const char *origin, char *low,
			struct acc_err *e)
{
	char addr[ACC_ADDR_MAX], field[48];
	size_t i, n = json_array_size(rcpts);
	const json_t *r;
	if ((sender[0] != '\0' && acc_name_err(e, "enqueue.sender", sender, true, low, NULL) < 0) ||
	    qu_check(origin == NULL || qu_token_ok(origin, QU_ORIGIN_MAX), e,
		     "enqueue.origin must be 1..64 printable characters without space") < 0 ||
	    qu_check(json_is_array(rcpts) && n >= 1 && n <= QU_RCPTS_MAX, e,
		     "enqueue.recipients must hold 1..1000 addresses") < 0)
		return -1;
	json_array_foreach(rcpts, i, r) {
		snprintf(field, sizeof field, "enqueue.recipients[%zu]", i);
		if (!json_is_string(r)) {
			acc_set(e, "invalid", "%s: not a string", field);
			return -1;
		}
		if (acc_name_err(e, field, json_string_value(r), true, addr, NULL) < 0)
			return -1;
	}
	return 0;
}

int64_t queue_add(accounts_t *a, int64_t blob_id, const char *sender, const json_t *rcpts,
		  const char *origin, struct acc_err *e)
{
	char low[ACC_ADDR_MAX] = "", addr[ACC_ADDR_MAX];
	int64_t now = (int64_t)time(NULL);
	size_t i;
	const json_t *r;
	if (qu_add_check(sender, rcpts, origin, low, e) < 0)
		return -1;
	if (acc_int(a, acc_prep(a, "SELECT count(*) FROM blobs WHERE id = ?1 AND complete = 1", "i",
			     blob_id)) != 1) {
		acc_set(e, "internal", "blob %lld missing or incomplete", (long long)blob_id);
		return -1;
	}
	if (acc_run(a, acc_prep(a, "INSERT INTO queue (blob_id, sender, origin, created, expires) "
				"VALUES (?1, ?2, ?3, ?4, ?5)", "issii", blob_id, low, origin, now,
				now + QU_LIFETIME_S)) != SQLITE_DONE) {
		acc_set(e, "internal", "database error");
		return -1;
	}
	int64_t id = sqlite3_last_insert_rowid(db_handle(a->db));
	/* The same recipient twice (in any case) is one row: UNIQUE (queue_id, rcpt). */
	json_array_foreach(rcpts, i, r) {
		acc_name_err(e, "rcpts", json_string_value(r), true, addr, NULL);  /* checked: lower-cases */
		if (acc_run(a, acc_prep(a, "INSERT OR IGNORE INTO queue_rcpts (queue_id, rcpt, "
					"next_attempt) VALUES (?1, ?2, ?3)", "isi", id, addr, now)) != SQLITE_DONE) {
			acc_set(e, "internal", "database error");
			return -1;
		}
	}
	return id;
}

/* ---- take --------------------------------------------------------------------------- */

/* A fresh lease token: 16 random bytes in hex; -1 if there is no randomness. */
static int qu_new_token(char out[2 * QU_TOKEN_BYTES + 1])
{
	unsigned char b[QU_TOKEN_BYTES];
	if (RAND_bytes(b, sizeof b) != 1)
		return -1;
	for (size_t i = 0; i < sizeof b; i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
	return 0;
}

struct qu_take {
	const char *worker;
	int64_t now_ms, until;
	size_t used;            /* reply bytes so far */
	json_t *entries;
};

/*
 * Leases entry id to t->worker and appends it with its due recipients,
 * as many as fit the reply. 1, 0 if nothing of it fits (take stops), -1
 * with e set.
 */
static int qu_take_one(accounts_t *a, int64_t id, struct qu_take *t, struct acc_err *e)
{
	char token[2 * QU_TOKEN_BYTES + 1];
	size_t bytes;
	bool cut;
	json_t *entry = qu_entry_new(a, id, t->now_ms, false, e), *rcpts;
	if (entry == NULL)
		return -1;
	/* + token, lease_until, "rcpts":[] and the comma */
	size_t head = qu_json_len(entry) + 2 * QU_TOKEN_BYTES + 64;
	if (t->used + head >= QU_REPLY_BYTES) {
		json_decref(entry);
		return 0;
	}
	rcpts = acc_rows_new(a, acc_prep(a, "SELECT rcpt, attempts FROM queue_rcpts WHERE queue_id = ?1 "
				      "AND state = 'queued' AND next_attempt <= ?2 ORDER BY id", "ii",
				      id, t->now_ms / 1000), qu_take_rcpt_row,
			     QU_REPLY_BYTES - t->used - head, &bytes, &cut);
	int rc = rcpts == NULL ? -1 : json_array_size(rcpts) == 0 ? 0 : 1;
	if (rc == 1 && qu_new_token(token) < 0) {
		acc_set(e, "internal", "no randomness for a lease token");
		rc = -1;
	}
	if (rc == 1 && acc_run(a, acc_prep(a, "UPDATE queue SET lease_owner = ?1, lease_token = ?2, "
					   "lease_until = ?3 WHERE id = ?4", "ssii", t->worker, token,
					   t->until, id)) != SQLITE_DONE)
		rc = -1;
	if (rc != 1) {
		json_decref(rcpts);
		json_decref(entry);
		return rc;
	}
	json_object_set_new(entry, "token", json_string(token));
	json_object_set_new(entry, "lease_until", json_integer(t->until));
	json_object_set_new(entry, "rcpts", rcpts);
	json_array_append_new(t->entries, entry);
	t->used += head + bytes;
	return 1;
}

/* Entries with a due recipient and a free lease, oldest due first. */
#define QU_DUE "FROM queue q JOIN queue_rcpts r ON r.queue_id = q.id WHERE r.state = 'queued' " \
	       "AND r.next_attempt <= ?1 AND q.lease_until < ?2"

static json_t *qu_take(accounts_t *a, const struct qu_call *c, struct acc_err *e)
{
	json_int_t max, lease_ms;
	int64_t ids[QU_TAKE_MAX];
	size_t n = 0;
	int rc = SQLITE_ERROR;
	struct qu_take t = { .now_ms = c->now_ms };
	if (qu_unpack(c, e, "{s:s, s:I, s:I}", "worker", &t.worker, "max", &max, "lease_ms",
		      &lease_ms) < 0 ||
	    qu_check(qu_token_ok(t.worker, QU_WORKER_MAX), e,
		     "worker must be 1..64 printable characters without space") < 0 ||
	    qu_check(max >= 1 && max <= QU_TAKE_MAX, e, "max must be 1..100") < 0 ||
	    qu_check(lease_ms >= QU_LEASE_MIN_MS && lease_ms <= QU_LEASE_MAX_MS, e,
		     "lease_ms must be 1000..3600000") < 0)
		return NULL;
	t.until = c->now_ms + lease_ms;
	/* The ids first: the leases below change rows this query reads. */
	sqlite3_stmt *st = acc_prep(a, "SELECT q.id " QU_DUE " GROUP BY q.id "
				    "ORDER BY min(r.next_attempt), q.id LIMIT ?3", "iii",
				    c->now_ms / 1000, c->now_ms, (int64_t)max);
	while (st != NULL && (rc = sqlite3_step(st)) == SQLITE_ROW)
		ids[n++] = sqlite3_column_int64(st, 0);
	db_release(a->db, st);
	if (rc != SQLITE_DONE)
		return NULL;
	t.entries = json_array();
	for (size_t i = 0; i < n; i++)
		if ((rc = qu_take_one(a, ids[i], &t, e)) <= 0)
			break;  /* an error, or the reply is full */
	if (rc < 0) {
		json_decref(t.entries);
		return NULL;
	}
	return json_pack("{s:o}", "entries", t.entries);
}

/*
 * True if a take at now_ms would find nothing and its idem is new: then it
 * changes nothing and needs neither a transaction nor an idempotency row.
 * A retried take whose first try leased entries is not idle (its stored
 * result is the answer).
 */
static bool qu_take_idle(accounts_t *a, const bus_req_t *req, int64_t now_ms)
{
	const char *idem = json_string_value(json_object_get(bus_req_env(req), "idem"));
	json_t *old = NULL;
	if (acc_int(a, acc_prep(a, "SELECT EXISTS (SELECT 1 " QU_DUE ")", "ii", now_ms / 1000, now_ms)) != 0)
		return false;  /* something is due (or the query failed: the transaction says) */
	int known = idem != NULL ? idem_lookup(a->db, idem, bus_req_type(req), &old) : 0;
	json_decref(old);
	return known == 0;
}

/* ---- update ------------------------------------------------------------------------- */

/* One update: the entry and what its results produce. */
struct qu_update {
	int64_t id, expires, now_s;
	hmap_t *seen;           /* recipients of this update so far */
	json_t *failed;         /* [{rcpt, error}] */
};

/* The expiry of entry id if token is its current lease token; else -1 with
 * e lease_lost (or internal). */
static int64_t qu_lease_check(accounts_t *a, int64_t id, const char *token, struct acc_err *e)
{
	sqlite3_stmt *st = acc_prep(a, "SELECT lease_token, expires FROM queue WHERE id = ?1", "i", id);
	int rc = st ? sqlite3_step(st) : SQLITE_ERROR;
	const char *cur = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
	int64_t expires = -1;
	if (rc == SQLITE_DONE)
		acc_set(e, "lease_lost", "queue entry %lld is gone", (long long)id);
	else if (rc == SQLITE_ROW && (cur == NULL || strcmp(cur, token) != 0))
		acc_set(e, "lease_lost", "queue entry %lld is %s", (long long)id,
			cur ? "leased to another worker now" : "not leased (released or never taken)");
	else if (rc == SQLITE_ROW)
		expires = sqlite3_column_int64(st, 1);
	db_release(a->db, st);
	return expires;
}

/* Unpacks and checks results[i]: rcpt (lower-cased), the new state
 * ("queued" for deferred) and the error; 0, or -1 with e invalid. */
static int qu_result_args(const json_t *r, size_t i, struct qu_update *u, char *rcpt,
			  const char **state, const char **error, struct acc_err *e)
{
	const char *in, *status, *why = NULL;
	char field[40];
	json_error_t jerr;
	snprintf(field, sizeof field, "results[%zu]", i);
	if (json_unpack_ex((json_t *)r, &jerr, JSON_STRICT, "{s:s, s:s, s?s}", "rcpt", &in,
			   "status", &status, "error", error) < 0) {
		acc_set(e, "invalid", "%s: %s", field, jerr.text);
		return -1;
	}
	*state = strcmp(status, "delivered") == 0 ? "delivered" : strcmp(status, "failed") == 0 ?
		 "failed" : strcmp(status, "deferred") == 0 ? "queued" : NULL;
	if (*state == NULL)
		why = "status must be delivered, deferred or failed";
	else if (*error == NULL && strcmp(*state, "delivered") != 0)
		why = "error is required unless delivered";
	else if (*error != NULL && !qu_error_ok(*error))
		why = "error must be one line of 1..512 characters";
	if (why != NULL) {
		acc_set(e, "invalid", "%s: %s", field, why);
		return -1;
	}
	snprintf(field, sizeof field, "results[%zu].rcpt", i);
	if (acc_name_err(e, field, in, true, rcpt, NULL) < 0)
		return -1;
	if (hmap_get(u->seen, rcpt, strlen(rcpt)) != NULL) {
		acc_set(e, "invalid", "%s: %s is listed twice", field, rcpt);
		return -1;
	}
	hmap_put(u->seen, rcpt, strlen(rcpt), u);
	return 0;
}

/* Applies results[i] to the entry; 0, or -1 with e set. */
static int qu_result(accounts_t *a, const json_t *r, size_t i, struct qu_update *u,
		     struct acc_err *e)
{
	char rcpt[ACC_ADDR_MAX], expired[sizeof "expired: " + 4 * QU_ERROR_MAX];
	const char *state, *error = NULL;
	if (qu_result_args(r, i, u, rcpt, &state, &error, e) < 0)
		return -1;
	int64_t attempts = acc_int(a, acc_prep(a, "SELECT coalesce((SELECT attempts FROM queue_rcpts "
					    "WHERE queue_id = ?1 AND rcpt = ?2 AND state = 'queued'), -2)",
					    "is", u->id, rcpt));
	if (attempts == -2)
		acc_set(e, "invalid", "results[%zu].rcpt: %s is not a queued recipient of entry %lld",
			i, rcpt, (long long)u->id);
	if (attempts < 0)
		return -1;
	attempts++;
	int64_t next = u->now_s;
	if (strcmp(state, "queued") == 0 && u->now_s >= u->expires) {
		snprintf(expired, sizeof expired, "expired: %s", error);
		state = "failed";
		error = expired;
	} else if (strcmp(state, "queued") == 0) {
		next = u->now_s + qu_backoff_s(attempts);
		next = next < u->expires ? next : u->expires;  /* one last try at expiry */
	}
	if (strcmp(state, "failed") == 0)
		json_array_append_new(u->failed, json_pack("{s:s, s:s}", "rcpt", rcpt, "error", error));
	if (strcmp(state, "delivered") == 0)
		error = NULL;  /* keeps the last deferral's reason */
	return acc_run(a, acc_prep(a, "UPDATE queue_rcpts SET state = ?3, attempts = ?4, "
				   "next_attempt = ?5, last_error = coalesce(?6, last_error) "
				   "WHERE queue_id = ?1 AND rcpt = ?2", "issiis", u->id, rcpt, state,
				   attempts, next, error)) == SQLITE_DONE ? 0 : -1;
}

static json_t *qu_update(accounts_t *a, const struct qu_call *c, struct acc_err *e)
{
	json_int_t id;
	const char *token;
	json_t *results, *r;
	int release = 1, rc = 0, done = SQLITE_DONE;
	size_t i;
	struct qu_update u = { .now_s = c->now_ms / 1000 };
	if (qu_unpack(c, e, "{s:I, s:s, s:o, s?b}", "queue_id", &id, "token", &token, "results", &results,
		      "release", &release) < 0 || qu_id(id, e) < 0 ||
	    qu_check(strlen(token) <= QU_TOKEN_MAX, e, "token must be at most 64 characters") < 0 ||
	    qu_check(json_is_array(results) && json_array_size(results) <= QU_RCPTS_MAX, e,
		     "results must be an array of at most 1000") < 0 ||
	    (u.expires = qu_lease_check(a, id, token, e)) < 0)
		return NULL;
	u.id = id;
	u.seen = hmap_new();
	u.failed = json_array();
	json_array_foreach(results, i, r)
		if ((rc = qu_result(a, r, i, &u, e)) < 0)
			break;
	hmap_free(&u.seen);
	int64_t remaining = rc < 0 ? -1 :
		acc_int(a, acc_prep(a, "SELECT count(*) FROM queue_rcpts WHERE queue_id = ?1 AND "
				 "state = 'queued'", "i", u.id));
	/* Every recipient final: the entry goes, and its blob reference. */
	if (remaining == 0)
		done = acc_run(a, acc_prep(a, "DELETE FROM queue WHERE id = ?1", "i", u.id));
	else if (remaining > 0 && release)
		done = acc_run(a, acc_prep(a, "UPDATE queue SET lease_owner = NULL, lease_token = NULL, "
					   "lease_until = 0 WHERE id = ?1", "i", u.id));
	if (remaining < 0 || done != SQLITE_DONE) {
		json_decref(u.failed);
		return NULL;
	}
	return json_pack("{s:I, s:I, s:b, s:o}", "queue_id", id, "remaining", (json_int_t)remaining,
			 "done", remaining == 0, "failed", u.failed);
}

/* ---- list and show -------------------------------------------------------------------- */

static json_t *qu_list(accounts_t *a, const struct qu_call *c, struct acc_err *e)
{
	json_int_t after = 0, limit = QU_LIST_DEFAULT;
	size_t bytes;
	bool cut;
	if (qu_unpack(c, e, "{s?I, s?I}", "after", &after, "limit", &limit) < 0 ||
	    qu_check(after >= 0 && after <= QU_ID_MAX, e, "after must be 0..2^53-1") < 0 ||
	    qu_check(limit >= 1 && limit <= QU_LIST_MAX, e, "limit must be 1..1000") < 0)
		return NULL;
	/* One row more than asked says whether there are more. */
	json_t *list = acc_rows_new(a, acc_prep(a, "SELECT q.id, q.sender, q.created, q.expires, b.size, "
		"(SELECT count(*) FROM queue_rcpts r WHERE r.queue_id = q.id), "
		"(SELECT count(*) FROM queue_rcpts r WHERE r.queue_id = q.id AND r.state = 'queued'), "
		"(SELECT min(r.next_attempt) FROM queue_rcpts r WHERE r.queue_id = q.id AND "
		"r.state = 'queued'), q.lease_until >= ?3 FROM queue q JOIN blobs b ON b.id = q.blob_id "
		"WHERE q.id > ?1 ORDER BY q.id LIMIT ?2", "iii", (int64_t)after, (int64_t)limit + 1,
		c->now_ms), qu_list_row, QU_REPLY_BYTES, &bytes, &cut);
	if (list == NULL)
		return NULL;
	if (json_array_size(list) > (size_t)limit) {
		json_array_remove(list, (size_t)limit);
		cut = true;
	}
	json_t *f = json_pack("{s:o}", "entries", list);
	if (cut && json_array_size(list) > 0)
		json_object_set(f, "next", json_object_get(json_array_get(list, json_array_size(list) - 1), "id"));
	return f;
}

static json_t *qu_show(accounts_t *a, const struct qu_call *c, struct acc_err *e)
{
	json_int_t id;
	size_t bytes;
	bool cut;
	json_t *entry;
	if (qu_unpack(c, e, "{s:I}", "queue_id", &id) < 0 || qu_id(id, e) < 0 ||
	    (entry = qu_entry_new(a, id, c->now_ms, true, e)) == NULL)
		return NULL;
	json_t *rcpts = acc_rows_new(a, acc_prep(a, "SELECT rcpt, state, attempts, next_attempt, last_error "
					      "FROM queue_rcpts WHERE queue_id = ?1 ORDER BY id", "i", id),
				     qu_show_rcpt_row, QU_REPLY_BYTES - qu_json_len(entry), &bytes, &cut);
	if (rcpts == NULL) {
		json_decref(entry);
		return NULL;
	}
	json_object_set_new(entry, "rcpts", rcpts);
	return json_pack("{s:o, s:b}", "entry", entry, "truncated", cut);
}

/* ---- retry and delete ------------------------------------------------------------------ */

static json_t *qu_retry(accounts_t *a, const struct qu_call *c, struct acc_err *e)
{
	json_int_t id = 0;
	int all = 0;
	bool has_id = json_object_get(c->fields, "queue_id") != NULL;
	if (qu_unpack(c, e, "{s?I, s?b}", "queue_id", &id, "all", &all) < 0 ||
	    qu_check(has_id != (all != 0), e, "give queue_id or all: true, not both") < 0 ||
	    (has_id && qu_id(id, e) < 0))
		return NULL;
	int64_t found = has_id ? acc_int(a, acc_prep(a, "SELECT count(*) FROM queue WHERE id = ?1", "i",
						  (int64_t)id)) : 1;
	if (found == 0)
		acc_set(e, "not_found", "no queue entry %lld", (long long)id);
	if (found != 1 || acc_run(a, acc_prep(a, "UPDATE queue_rcpts SET next_attempt = ?1 WHERE "
					      "state = 'queued' AND (?2 = 0 OR queue_id = ?2)", "ii",
					      c->now_ms / 1000, (int64_t)id)) != SQLITE_DONE)
		return NULL;
	return json_pack("{s:I}", "updated", (json_int_t)sqlite3_changes(db_handle(a->db)));
}

static json_t *qu_delete(accounts_t *a, const struct qu_call *c, struct acc_err *e)
{
	json_int_t id;
	if (qu_unpack(c, e, "{s:I}", "queue_id", &id) < 0 || qu_id(id, e) < 0 ||
	    acc_run(a, acc_prep(a, "DELETE FROM queue WHERE id = ?1", "i", (int64_t)id)) != SQLITE_DONE ||
	    !acc_changed(a, e, "no queue entry %lld", (long long)id))
		return NULL;
	return json_pack("{s:I}", "queue_id", id);
}

/* ---- the handlers ------------------------------------------------------------------------ */

static const struct {
	const char *type;
	qu_op_fn fn;
} qu_ops[] = {
	{ "storaged.queue.take", qu_take },     { "storaged.queue.update", qu_update },
	{ "storaged.queue.list", qu_list },     { "storaged.queue.show", qu_show },
	{ "storaged.queue.retry", qu_retry },   { "storaged.queue.delete", qu_delete },
};

json_t *queue_run_new(accounts_t *a, const char *type, const json_t *fields, int64_t now_ms,
		      struct acc_err *e)
{
	struct qu_call c = { type, fields, now_ms };
	acc_set(e, "internal", "database error");
	for (size_t i = 0; i < ARRAY_LEN(qu_ops); i++)
		if (strcmp(qu_ops[i].type, type) == 0)
			return qu_ops[i].fn(a, &c, e);
	acc_set(e, "invalid", "unknown type %s", type);
	return NULL;
}

/* A change for acc_commit: one operation and its request. */
struct qu_change {
	qu_op_fn fn;
	struct qu_call call;
};

static json_t *qu_change(accounts_t *a, void *ctx, struct acc_err *e)
{
	struct qu_change *ch = ctx;
	return ch->fn(a, &ch->call, e);
}

/* Runs fn for *req at now_ms: in acc_commit's transaction (with the
 * idempotency row) if it changes state, else directly. */
static void qu_handle(accounts_t *a, bus_req_t **req, qu_op_fn fn, int64_t now_ms, bool change)
{
	json_t *fields = jx_fields_new(bus_req_env(*req));
	struct qu_change ch = { fn, { bus_req_type(*req), fields, now_ms } };
	struct acc_err e = { "internal", "database error" };
	bus_control_count(a->ctl);
	if (change) {
		acc_commit(a, req, qu_change, &ch);
	} else {
		json_t *f = fn(a, &ch.call, &e);
		if (f != NULL)
			acc_ok(a, req, &f);
		else
			acc_fail(a, req, e.code, e.msg);
	}
	json_decref(fields);
}

void queue_take(bus_req_t **req, void *arg)
{
	int64_t now = wall_ms();
	qu_handle(arg, req, qu_take, now, !qu_take_idle(arg, *req, now));
}

void queue_update(bus_req_t **req, void *arg)
{
	qu_handle(arg, req, qu_update, wall_ms(), true);
}

void queue_list(bus_req_t **req, void *arg)
{
	qu_handle(arg, req, qu_list, wall_ms(), false);
}

void queue_show(bus_req_t **req, void *arg)
{
	qu_handle(arg, req, qu_show, wall_ms(), false);
}

void queue_retry(bus_req_t **req, void *arg)
{
	qu_handle(arg, req, qu_retry, wall_ms(), true);
}

void queue_delete(bus_req_t **req, void *arg)
{
	qu_handle(arg, req, qu_delete, wall_ms(), true);
}
