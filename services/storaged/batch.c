/*
 * batch.c — group commit: the state-changing requests that arrive in one
 * loop iteration share one write transaction, and their replies wait for
 * its COMMIT.
 *
 * Why: with synchronous=FULL every COMMIT is an fsync, about 4,500 a
 * second here; one per request would cap durable stores there. So the
 * first change of an iteration opens the batch (BEGIN IMMEDIATE) and arms
 * a 0 ms timer, which runs after every request of the iteration has been
 * handled; each request runs inside its own SAVEPOINT, so a failing one
 * rolls back alone. The flush COMMITs, then sends the parked replies and
 * publishes the parked events. If the COMMIT fails (a full disk), every
 * request of the batch gets the error and nothing of it is stored.
 *
 * While a batch is open every reply is parked (acc_ok/acc_fail), reads
 * included, so nothing uncommitted is ever shown to a client; a read that
 * replies with a raw frame flushes first (acc_flush) and replies directly.
 */
#include "storaged.h"

#include "log.h"
#include "util.h"

#include <string.h>

#define BATCH_MAX_REQUESTS 512          /* a larger batch is flushed at once */
#define BATCH_MAX_BYTES (16 << 20)      /* bytes written in one batch, about */

struct parked {
	bus_req_t *req;
	json_t *fields;     /* ok reply (NULL for an error or text) */
	char *text;         /* ok reply already as JSON text (acc_reply_text) */
	const char *code;   /* static string: the error's code */
	char *msg;
};

static int batch_exec(accounts_t *a, const char *sql)
{
	return db_run(a->db, sql);
}

static void batch_park(accounts_t *a, bus_req_t **req, json_t **fields, const char *code,
		       const char *msg)
{
	struct batch *b = &a->batch;
	if (b->n == b->cap) {
		b->cap = b->cap ? b->cap * 2 : 64;
		b->v = xrealloc(b->v, b->cap * sizeof *b->v);
	}
	struct parked *p = &b->v[b->n++];
	p->req = *req;
	*req = NULL;
	p->fields = fields ? *fields : NULL;
	if (fields)
		*fields = NULL;
	p->text = NULL;
	p->code = code;
	p->msg = msg ? xstrdup(msg) : NULL;
}

void acc_ok(accounts_t *a, bus_req_t **req, json_t **fields)
{
	if (a->batch.open) {
		if (*fields == NULL)
			*fields = json_object();
		batch_park(a, req, fields, NULL, NULL);
		return;
	}
	a->ok++;
	bus_reply(req, fields, NULL, 0);
}

void acc_reply_text(accounts_t *a, char *text)
{
	free(a->batch.reply_text);
	a->batch.reply_text = text;
}

/* acc_ok with the fields as text (taken over). */
static void acc_ok_text(accounts_t *a, bus_req_t **req, char **text)
{
	if (a->batch.open) {
		batch_park(a, req, NULL, NULL, NULL);
		a->batch.v[a->batch.n - 1].text = *text;
		*text = NULL;
		return;
	}
	a->ok++;
	bus_reply_text(req, *text, NULL, 0);
	free(*text);
	*text = NULL;
}

void acc_fail(accounts_t *a, bus_req_t **req, const char *code, const char *msg)
{
	if (a->batch.open) {
		batch_park(a, req, NULL, code, msg);
		return;
	}
	if (strcmp(code, "invalid") == 0)
		a->invalid++;
	else
		a->error++;
	bus_reply_error(req, code, "%s", msg);
}

void acc_event(accounts_t *a, json_t **event)
{
	if (a->pub == NULL) {
		json_decref(*event);
		*event = NULL;
		return;
	}
	if (!a->batch.open) {
		bus_publish(a->pub, event, NULL, 0);
		return;
	}
	if (a->batch.events == NULL)
		a->batch.events = json_array();
	json_array_append_new(a->batch.events, *event);
	*event = NULL;
}

static void batch_timer(loop_t *loop, void *arg)
{
	(void)loop;
	accounts_t *a = arg;
	a->batch.timer = NULL;  /* one-shot: freed by the loop */
	acc_flush(a);
}

int acc_begin(accounts_t *a)
{
	struct batch *b = &a->batch;
	if (b->open)
		return 0;
	if (batch_exec(a, "BEGIN IMMEDIATE") < 0) {
		log_warn("db", "op=begin why=%s", log_quote(sqlite3_errmsg(db_handle(a->db))));
		return -1;
	}
	b->open = true;
	b->bytes = 0;
	if (a->loop != NULL)
		b->timer = loop_timer_add(a->loop, 0, false, batch_timer, a);
	return 0;
}

void acc_wrote(accounts_t *a, size_t bytes)
{
	a->batch.bytes += bytes;
}

/* Sends the parked replies: as they are if committed, else every ok
 * becomes the error code (a failed COMMIT stored nothing). */
static void batch_reply(accounts_t *a, const char *code, const char *msg)
{
	struct batch *b = &a->batch;
	size_t n = b->n;
	struct parked *v = b->v;
	b->v = NULL, b->n = b->cap = 0;
	for (size_t i = 0; i < n; i++) {
		if (v[i].text != NULL && code == NULL) {
			acc_ok_text(a, &v[i].req, &v[i].text);
		} else if (v[i].fields != NULL && code == NULL) {
			acc_ok(a, &v[i].req, &v[i].fields);
		} else {
			json_decref(v[i].fields);
			free(v[i].text);
			acc_fail(a, &v[i].req, v[i].code ? v[i].code : code,
				 v[i].code ? v[i].msg : msg);
		}
		free(v[i].msg);
	}
	free(v);
}

void acc_abort(accounts_t *a, int sqlite_rc)
{
	struct batch *b = &a->batch;
	if (!b->open)
		return;
	loop_timer_cancel(a->loop, &b->timer);
	if (!sqlite3_get_autocommit(db_handle(a->db)))
		batch_exec(a, "ROLLBACK");
	b->open = false;
	json_decref(b->events);
	b->events = NULL;
	bool full = (sqlite_rc & 0xff) == SQLITE_FULL;
	log_warn("db", "op=batch_abort requests=%zu why=%s", b->n,
		 full ? "\"disk full\"" : log_quote(sqlite3_errstr(sqlite_rc)));
	message_batch_failed(a);  /* the uploads that wrote in this gen */
	b->gen++;
	/* A full disk: fold the WAL into the database and truncate it, which
	 * gives back what the failed transaction had grown it by. */
	if (full)
		sqlite3_wal_checkpoint_v2(db_handle(a->db), NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
	batch_reply(a, full ? "disk_full" : "internal",
		    full ? "temporary failure: disk full" : "temporary failure: database error");
}

void acc_flush(accounts_t *a)
{
	struct batch *b = &a->batch;
	if (!b->open)
		return;
	loop_timer_cancel(a->loop, &b->timer);
	if (batch_exec(a, "COMMIT") < 0) {
		acc_abort(a, sqlite3_extended_errcode(db_handle(a->db)));
		return;
	}
	b->open = false;
	b->gen++;
	a->commits++;
	a->batched += b->n;
	json_t *events = b->events;
	b->events = NULL;
	message_batch_committed(a);
	batch_reply(a, NULL, NULL);
	size_t i;
	json_t *ev;
	json_array_foreach(events, i, ev) {
		json_incref(ev);
		bus_publish(a->pub, &ev, NULL, 0);
	}
	json_decref(events);
}

/* After a request's work: a batch that grew large is committed now. */
static void batch_maybe_flush(accounts_t *a)
{
	if (a->batch.n >= BATCH_MAX_REQUESTS || a->batch.bytes >= BATCH_MAX_BYTES)
		acc_flush(a);
}

/*
 * One request inside the batch: SAVEPOINT; a known idem replies its
 * stored result and changes nothing; else change(), idem_store, RELEASE,
 * and the reply is parked until COMMIT. A failure rolls back to the
 * savepoint and replies the error (errors are not stored). idem may be
 * skipped (write without idempotency: the chunks of a stream before the
 * last).
 */
static void batch_request(accounts_t *a, bus_req_t **req, acc_change_fn change, void *ctx,
			  bool use_idem)
{
	const char *type = bus_req_type(*req);
	const char *idem = use_idem ? json_string_value(json_object_get(bus_req_env(*req), "idem"))
				    : NULL;
	struct acc_err e = { "internal", "database error" };
	json_t *result = NULL;
	if (acc_begin(a) < 0 || batch_exec(a, "SAVEPOINT req") < 0) {
		acc_fail(a, req, "internal", "database busy or failing");
		return;
	}
	/* Events this request parks go if its savepoint is rolled back. */
	size_t events_mark = json_array_size(a->batch.events);
	int found = idem != NULL ? idem_lookup(a->db, idem, type, &result) : 0;
	if (found == -2)
		acc_set(&e, "invalid", "idem already used by another request type");
	else if (found == 0)
		result = change(a, ctx, &e);
	if (result != NULL && found == 0 && idem != NULL && idem_store(a->db, idem, type, result) < 0)
		json_decref(result), result = NULL, acc_set(&e, "internal", "database error");
	if (result == NULL) {
		acc_reply_text(a, NULL);
		int rc = sqlite3_extended_errcode(db_handle(a->db));
		if (strcmp(e.code, "internal") == 0 && (rc & 0xff) == SQLITE_FULL)
			acc_set(&e, "disk_full", "temporary failure: disk full");
		if (sqlite3_get_autocommit(db_handle(a->db))) {
			/* SQLite rolled the whole transaction back (a full disk,
			 * an I/O error): the batch is lost, say so to all. */
			acc_fail(a, req, e.code, e.msg);
			acc_abort(a, rc);
			return;
		}
		batch_exec(a, "ROLLBACK TO req");
		batch_exec(a, "RELEASE req");
		while (json_array_size(a->batch.events) > events_mark)
			json_array_remove(a->batch.events, json_array_size(a->batch.events) - 1);
		acc_fail(a, req, e.code, e.msg);
	} else {
		batch_exec(a, "RELEASE req");
		if (a->batch.reply_text != NULL) {
			json_decref(result);
			acc_ok_text(a, req, &a->batch.reply_text);
		} else {
			acc_ok(a, req, &result);
		}
	}
	batch_maybe_flush(a);
}

void acc_commit(accounts_t *a, bus_req_t **req, acc_change_fn change, void *ctx)
{
	batch_request(a, req, change, ctx, true);
}

void acc_write(accounts_t *a, bus_req_t **req, acc_change_fn change, void *ctx)
{
	batch_request(a, req, change, ctx, false);
}

void batch_free(accounts_t *a)
{
	if (a->batch.open)
		acc_flush(a);
	free(a->batch.reply_text);
	free(a->batch.v);
	json_decref(a->batch.events);
	memset(&a->batch, 0, sizeof a->batch);
}
