/*
 * message.c — storaged's messages:
 *
 *   storaged.message.store   a message streamed in chunks, stored once
 *                            (blobs + blob_chunks) and delivered to one or
 *                            more mailboxes and/or the outbound queue
 *   storaged.message.fetch   a byte range of a message (a raw frame)
 *   storaged.message.list    UID, flags, MODSEQ, size, dates and the
 *                            header cache of messages, paged
 *   storaged.mailbox.status  counts and UID/MODSEQ state of a mailbox
 *
 * A store arrives as chunks (chunk.h) of one stream; each chunk is written
 * as a blob_chunks row in the group-commit batch (batch.c), so storaged
 * never holds a message, only its running SHA-256 and, until the empty
 * line is seen, at most MSG_HDR_BUF_MAX bytes of header for the cache. The
 * blob stays incomplete (complete = 0) until the last chunk, whose one
 * savepoint completes it, adds the messages rows (UID from the mailbox's
 * uidnext, MODSEQ from its highestmodseq), checks quota, enqueues and
 * stores the idempotency row: all or nothing. Incomplete blobs of a
 * storaged that died are deleted at start (message_gc), those of a sender
 * that went away by the sweep timer.
 *
 * Each delivery may carry a prefix: header lines for that mailbox only
 * (Delivered-To), kept in the messages row and read before the blob.
 */
#include "storaged.h"

#include "chunk.h"
#include "hmap.h"
#include "log.h"
#include "rfc5322.h"
#include "seqset.h"
#include "strbuf.h"
#include "util.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>

#define MSG_DELIVERIES_MAX 100
#define MSG_PREFIX_MAX 4096
#define MSG_HDR_BUF_MAX (64 * 1024)      /* header bytes kept for the cache */
#define MSG_HDR_FIELD_MAX 8192           /* one cached field, unfolded */
#define MSG_UPLOADS_MAX 512              /* streams in progress at once */
#define MSG_UPLOAD_IDLE_MS (5 * 60 * 1000)
#define MSG_SWEEP_MS (60 * 1000)
#define MSG_SIZE_DEFAULT_MAX (64L << 20)
#define MSG_LIST_MAX 1000
#define MSG_LIST_BYTES (48 * 1024)
#define MSG_COMPACT_MAX 8192           /* rows of a compact page */
#define MSG_COMPACT_BYTES MSG_LIST_BYTES /* its text with the keywords, about: the envelope is 64 KiB */
#define MSG_COMPACT_KW 64              /* distinct keyword texts per compact page */
#define MSG_LIST_COLS "SELECT uid, flags, keywords, modseq, size, internaldate FROM messages"
#define MSG_LIST_WHERE \
	" WHERE mailbox_id = ?1 AND uid BETWEEN ?2 AND ?3 AND modseq > ?4 ORDER BY uid LIMIT ?5"

/* A stream being received. */
struct upload {
	char stream[BUS_ID_MAX + 1];
	chunk_rx_t rx;
	int64_t blob_id;      /* 0 until the first chunk is written */
	uint64_t blob_gen;    /* the batch that created the blob row */
	EVP_MD_CTX *sha;
	int64_t touched;      /* loop ms of the last chunk */
	uint64_t gen;         /* the batch that wrote the last chunk */
	int scan;             /* the empty-line scanner: 1 at a line start, 2 after CR */
	int64_t body_off;     /* -1 until the empty line is seen */
	char *hdr;            /* the header so far, for the cache (NULL once parsed) */
	size_t hdrlen;
	bool finished;        /* the last chunk was stored */
	bool dead;            /* a batch it wrote in was rolled back */
	char sha256[2 * EVP_MAX_MD_SIZE + 1];  /* hex, once the last chunk is in */
};

struct message_state {
	hmap_t *uploads;      /* stream id -> struct upload */
	loop_timer_t *sweep, *reap;
	bool orphans;         /* a batch failed: incomplete blobs may be left */
	uint64_t stored, bytes, fetched, dropped;
	uint64_t late;        /* chunks refused past their deadline */
};

/* A store request's checked fields (the change functions' ctx). */
struct store_req {
	accounts_t *a;
	struct upload *up;
	const void *data;
	size_t len;
	const json_t *deliveries, *enqueue;
	const char *idem;
	int64_t internaldate;
	bool ok;              /* a chunk was written */
	bool idem_missed;     /* this request's own lookup found no prior result */
};

static const char *const msg_sysflags[] = { "\\Seen", "\\Answered", "\\Flagged", "\\Deleted",
					    "\\Draft" };

/* ---- state ---------------------------------------------------------------- */

static void upload_free(struct upload *up)
{
	if (up == NULL)
		return;
	EVP_MD_CTX_free(up->sha);
	free(up->hdr);
	free(up);
}

static int msg_drop_each(const void *key, size_t klen, void *value, void *arg)
{
	(void)key; (void)klen; (void)arg;
	upload_free(value);
	return 0;
}

void message_free(accounts_t *a)
{
	if (a->msg == NULL)
		return;
	loop_timer_cancel(a->loop, &a->msg->sweep);
	loop_timer_cancel(a->loop, &a->msg->reap);
	hmap_each(a->msg->uploads, msg_drop_each, NULL);
	hmap_free(&a->msg->uploads);
	free(a->msg);
	a->msg = NULL;
}

static void msg_sweep(loop_t *loop, void *arg);

static struct message_state *msg_state(accounts_t *a)
{
	if (a->msg == NULL) {
		a->msg = xcalloc(1, sizeof *a->msg);
		a->msg->uploads = hmap_new();
		if (a->loop != NULL)
			a->msg->sweep = loop_timer_add(a->loop, MSG_SWEEP_MS, true, msg_sweep, a);
	}
	return a->msg;
}

/* Forgets an upload; its incomplete blob is deleted in the batch. */
static void msg_drop(accounts_t *a, struct upload *up)
{
	if (up == NULL)
		return;
	hmap_del(a->msg->uploads, up->stream, strlen(up->stream));
	if (up->blob_id > 0 && !up->finished && acc_begin(a) == 0)
		acc_run(a, acc_prep(a, "DELETE FROM blobs WHERE id = ?1 AND complete = 0", "i",
				    up->blob_id));
	a->msg->dropped += !up->finished;
	upload_free(up);
}

struct mark {
	uint64_t gen;
	size_t n;
};

static int msg_mark_dead(const void *key, size_t klen, void *value, void *arg)
{
	(void)key; (void)klen;
	struct upload *up = value;
	struct mark *m = arg;
	if (up->gen == m->gen && !up->dead) {
		up->dead = true;
		m->n++;
		if (up->blob_gen == m->gen)
			up->blob_id = 0;  /* its row was rolled back with the batch */
	}
	return 0;
}

static void msg_reap(loop_t *loop, void *arg)
{
	accounts_t *a = arg;
	a->msg->reap = NULL;  /* one-shot: freed by the loop */
	a->msg->orphans = false;
	msg_sweep(loop, a);
}

static void msg_reap_soon(accounts_t *a)
{
	if (a->msg->reap == NULL && a->loop != NULL)
		a->msg->reap = loop_timer_add(a->loop, 0, false, msg_reap, a);
}

void message_batch_failed(accounts_t *a)
{
	/* Their chunks of this batch are gone: such a stream cannot go on.
	 * They are only marked here (a handler may be using one); a 0 ms
	 * timer drops them and deletes what they had committed. Incomplete
	 * blobs may be left (a delete that failed too): the next commit that
	 * succeeds, or the minute's sweep, deletes them. Never a retry loop:
	 * on a full disk every write fails. */
	if (a->msg == NULL)
		return;
	struct mark m = { a->batch.gen, 0 };
	hmap_each(a->msg->uploads, msg_mark_dead, &m);
	a->msg->orphans = true;
	if (m.n > 0)
		msg_reap_soon(a);
}

void message_batch_committed(accounts_t *a)
{
	if (a->msg != NULL && a->msg->orphans)
		msg_reap_soon(a);
}

struct sweep {
	int64_t now;
	struct upload *idle[MSG_UPLOADS_MAX];
	size_t n;
	int64_t live[MSG_UPLOADS_MAX];
	size_t nlive;
};

static int msg_sweep_each(const void *key, size_t klen, void *value, void *arg)
{
	(void)key; (void)klen;
	struct upload *up = value;
	struct sweep *s = arg;
	if (up->dead || s->now - up->touched > MSG_UPLOAD_IDLE_MS)
		s->idle[s->n++] = up;
	else if (up->blob_id > 0)
		s->live[s->nlive++] = up->blob_id;
	return 0;
}

static int msg_cmp_id(const void *x, const void *y)
{
	int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
	return a < b ? -1 : a > b;
}

/* Every minute: streams idle for 5 minutes are dropped, and incomplete
 * blobs no stream owns (a stream that died in a failed batch) deleted. */
static void msg_sweep(loop_t *loop, void *arg)
{
	accounts_t *a = arg;
	struct sweep *s = xcalloc(1, sizeof *s);
	s->now = loop_now(loop);
	hmap_each(a->msg->uploads, msg_sweep_each, s);
	for (size_t i = 0; i < s->n; i++) {
		log_info("upload_idle", "stream=%s bytes=%llu", log_quote(s->idle[i]->stream),
			 (unsigned long long)s->idle[i]->rx.bytes);
		msg_drop(a, s->idle[i]);
	}
	qsort(s->live, s->nlive, sizeof s->live[0], msg_cmp_id);
	sqlite3_stmt *st = acc_prep(a, "SELECT id FROM blobs WHERE complete = 0", "");
	int64_t orphans[64];
	size_t no = 0;
	while (st != NULL && no < 64 && sqlite3_step(st) == SQLITE_ROW) {
		int64_t id = sqlite3_column_int64(st, 0);
		if (bsearch(&id, s->live, s->nlive, sizeof id, msg_cmp_id) == NULL)
			orphans[no++] = id;
	}
	db_release(a->db, st);
	for (size_t i = 0; i < no && acc_begin(a) == 0; i++)
		acc_run(a, acc_prep(a, "DELETE FROM blobs WHERE id = ?1 AND complete = 0", "i",
				    orphans[i]));
	free(s);
}

int message_gc(db_t *db)
{
	sqlite3 *h = db_handle(db);
	if (sqlite3_exec(h, "DELETE FROM blobs WHERE complete = 0 OR refs <= 0", NULL, NULL,
			 NULL) != SQLITE_OK)
		return -1;
	return sqlite3_changes(h);
}

void message_stats(json_t *stats, accounts_t *a)
{
	struct message_state *m = msg_state(a);
	json_object_set_new(stats, "messages", json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}",
		"stored", (json_int_t)m->stored, "bytes_in", (json_int_t)m->bytes,
		"fetched", (json_int_t)m->fetched, "uploads", (json_int_t)hmap_count(m->uploads),
		"uploads_dropped", (json_int_t)m->dropped, "late", (json_int_t)m->late));
}

/* ---- flags ---------------------------------------------------------------------- */

/* An IMAP atom usable as a keyword (RFC 3501 flag-keyword), 1..64 bytes. */
static bool msg_keyword_ok(const char *k)
{
	size_t n = strlen(k);
	if (n < 1 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)k[i];
		if (c <= ' ' || c >= 127 || strchr("(){%*\"\\]", c) != NULL)
			return false;
	}
	return true;
}

static int msg_kw_cmp(const void *x, const void *y)
{
	return strcmp(*(const char *const *)x, *(const char *const *)y);
}

int msg_flags_parse(const json_t *flags, int *bits, char *kw, size_t kwcap, struct acc_err *e)
{
	const char *k[MSG_FLAGS_MAX];
	size_t nk = 0, i;
	json_t *f;
	*bits = 0;
	kw[0] = '\0';
	if (flags == NULL)
		return 0;
	if (!json_is_array(flags) || json_array_size(flags) > MSG_FLAGS_MAX) {
		acc_set(e, "invalid", "flags: must be an array of at most %d strings", MSG_FLAGS_MAX);
		return -1;
	}
	json_array_foreach(flags, i, f) {
		const char *s = json_string_value(f);
		bool sys = false;
		if (s == NULL) {
			acc_set(e, "invalid", "flags: must be strings");
			return -1;
		}
		for (int b = 0; b < (int)ARRAY_LEN(msg_sysflags); b++)
			if (strcasecmp(s, msg_sysflags[b]) == 0)
				*bits |= 1 << b, sys = true;
		if (sys)
			continue;
		if (s[0] == '\\' || !msg_keyword_ok(s)) {
			acc_set(e, "invalid", "flags: %.64s is not a system flag or keyword", s);
			return -1;
		}
		k[nk++] = s;
	}
	qsort(k, nk, sizeof k[0], msg_kw_cmp);
	size_t o = 0;
	for (i = 0; i < nk; i++) {
		if (i > 0 && strcmp(k[i], k[i - 1]) == 0)
			continue;
		size_t n = strlen(k[i]);
		if (o + n + 2 > kwcap) {
			acc_set(e, "invalid", "flags: too many keywords");
			return -1;
		}
		if (o > 0)
			kw[o++] = ' ';
		memcpy(kw + o, k[i], n);
		o += n;
	}
	kw[o] = '\0';
	return 0;
}

json_t *msg_flags_json(int bits, const char *kw)
{
	json_t *a = json_array();
	for (int b = 0; b < (int)ARRAY_LEN(msg_sysflags); b++)
		if (bits & (1 << b))
			json_array_append_new(a, json_string(msg_sysflags[b]));
	while (kw != NULL && *kw != '\0') {
		const char *sp = strchr(kw, ' ');
		size_t n = sp ? (size_t)(sp - kw) : strlen(kw);
		json_array_append_new(a, json_stringn(kw, n));
		kw += n + (sp != NULL);
	}
	return a;
}

/* ---- checking a store request ---------------------------------------------------- */

/* Header lines only: printable ASCII and tabs, every line "Name:..." and
 * ended by CRLF, no empty line. */
static const char *msg_prefix_check(const char *p)
{
	size_t n = strlen(p);
	if (n > MSG_PREFIX_MAX)
		return "prefix: at most 4096 bytes";
	if (n == 0)
		return NULL;
	if (n < 2 || p[n - 2] != '\r' || p[n - 1] != '\n')
		return "prefix: must end with CRLF";
	bool line_start = true;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c == '\r') {
			if (p[i + 1] != '\n' || line_start)
				return "prefix: bare CR or empty line";
			i++;
			line_start = true;
			continue;
		}
		if ((c < ' ' && c != '\t') || c >= 127)
			return "prefix: only printable ASCII header lines";
		if (line_start && (c == ':' || c == ' ' || c == '\t'))
			return "prefix: each line must start a field";
		line_start = false;
	}
	return NULL;
}

/* Checks the deliveries array; replies invalid (consuming *req) on a
 * problem. 0 or -1. */
static int msg_check_deliveries(accounts_t *a, bus_req_t **req, const json_t *dl)
{
	size_t i;
	json_t *d;
	char addr[ACC_ADDR_MAX], kw[2048], msg[200];
	struct acc_err e = { "invalid", "" };
	if (!json_is_array(dl) || json_array_size(dl) > MSG_DELIVERIES_MAX) {
		acc_fail(a, req, "invalid", "deliveries: an array of at most 100");
		return -1;
	}
	json_array_foreach(dl, i, d) {
		const char *address, *mailbox = "INBOX", *prefix = "", *why;
		json_t *flags = NULL;
		json_error_t je;
		int bits;
		if (json_unpack_ex(d, &je, JSON_STRICT, "{s:s, s?:s, s?:o, s?:s}", "address", &address,
				   "mailbox", &mailbox, "flags", &flags, "prefix", &prefix) < 0) {
			snprintf(msg, sizeof msg, "deliveries[%zu]: %s", i, je.text);
			acc_fail(a, req, "invalid", msg);
			return -1;
		}
		if ((why = acc_name_check(address, true, addr, NULL)) != NULL ||
		    (why = msg_prefix_check(prefix)) != NULL ||
		    (strlen(mailbox) > MBX_NAME_MAX && (why = "mailbox: too long")) ||
		    (msg_flags_parse(flags, &bits, kw, sizeof kw, &e) < 0 && (why = e.msg))) {
			snprintf(msg, sizeof msg, "deliveries[%zu]: %s", i, why);
			acc_fail(a, req, "invalid", msg);
			return -1;
		}
	}
	return 0;
}

/* ---- writing chunks -------------------------------------------------------------- */

/* Feeds the empty-line scanner and the header buffer with a chunk at
 * offset off of the blob. */
static void msg_scan(struct upload *up, const unsigned char *p, size_t len, uint64_t off)
{
	for (size_t i = 0; i < len && up->body_off < 0; i++) {
		unsigned char c = p[i];
		if ((up->scan == 1 || up->scan == 2) && c == '\n')
			up->body_off = (int64_t)(off + i + 1);
		else if (up->scan == 1 && c == '\r')
			up->scan = 2;
		else
			up->scan = c == '\n' ? 1 : 0;
	}
	if (up->hdr != NULL && up->hdrlen < MSG_HDR_BUF_MAX) {
		size_t n = len < MSG_HDR_BUF_MAX - up->hdrlen ? len : MSG_HDR_BUF_MAX - up->hdrlen;
		memcpy(up->hdr + up->hdrlen, p, n);
		up->hdrlen += n;
	}
}

static int msg_insert_whole(accounts_t *a, struct upload *up);

/* Writes one chunk row (creating the blob row first); then updates the
 * upload. A message whose first chunk is also its last gets its blob row
 * complete in one INSERT (no UPDATE after it). SQLITE_DONE or the error. */
static int msg_write_chunk(accounts_t *a, struct upload *up, const void *data, size_t len,
			   bool whole)
{
	sqlite3 *h = db_handle(a->db);
	int64_t blob_id = up->blob_id;
	if (whole) {
		/* The upload is dropped after its last chunk, whatever
		 * happens: it may be updated before the SQL. */
		msg_scan(up, data, len, up->rx.bytes - len);
		EVP_DigestUpdate(up->sha, data, len);
		int rc = msg_insert_whole(a, up);
		if (rc != SQLITE_DONE)
			return rc;
		blob_id = sqlite3_last_insert_rowid(h);
		up->blob_gen = a->batch.gen;
	} else if (blob_id == 0) {
		int rc = acc_run(a, acc_prep(a, "INSERT INTO blobs (created) VALUES (?1)", "i",
					     (int64_t)time(NULL)));
		if (rc != SQLITE_DONE)
			return rc;
		blob_id = sqlite3_last_insert_rowid(h);
		up->blob_gen = a->batch.gen;
	}
	if (len > 0) {
		sqlite3_stmt *st = acc_prep(a, "INSERT INTO blob_chunks (blob_id, off, data) "
					    "VALUES (?1, ?2, ?3)", "ii", blob_id,
					    (int64_t)(up->rx.bytes - len));
		if (st == NULL)
			return SQLITE_ERROR;
		sqlite3_bind_blob(st, 3, data, (int)len, SQLITE_STATIC);
		int rc = acc_run(a, st);
		if (rc != SQLITE_DONE)
			return rc;
	}
	/* Only now: a blob row made in a savepoint that then fails is gone,
	 * and its id may be given to the next blob. */
	up->blob_id = blob_id;
	if (!whole) {
		msg_scan(up, data, len, up->rx.bytes - len);
		EVP_DigestUpdate(up->sha, data, len);
	}
	up->gen = a->batch.gen;
	acc_wrote(a, len);
	return SQLITE_DONE;
}

static json_t *msg_chunk_change(accounts_t *a, void *ctx, struct acc_err *e)
{
	struct store_req *r = ctx;
	int rc = msg_write_chunk(a, r->up, r->data, r->len, false);
	if (rc != SQLITE_DONE) {
		if ((rc & 0xff) == SQLITE_FULL)
			acc_set(e, "disk_full", "temporary failure: disk full");
		return NULL;
	}
	r->ok = true;
	return json_pack("{s:I}", "bytes", (json_int_t)r->up->rx.bytes);
}

/* ---- completing a store ------------------------------------------------------------ */

/* The header cache columns, in the order of the UPDATE below. */
static const char *const msg_hdr_names[] = { "Date", "Subject", "From", "Sender", "Reply-To",
					     "To", "Cc", "Bcc", "Message-ID", "In-Reply-To" };
#define MSG_HDRS ARRAY_LEN(msg_hdr_names)

/* What a complete blob's row holds besides its bytes. */
struct blob_summary {
	char *val[MSG_HDRS];  /* unfolded header fields, or NULL */
	int64_t date_sent;    /* -1: no usable Date */
	int64_t body_off;
};

/* Finishes the digest (hex into up->sha256) and parses the header cache. */
static void msg_summarise(struct upload *up, struct blob_summary *s)
{
	static const char hexdig[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_DigestFinal_ex(up->sha, md, &mdlen);
	for (unsigned i = 0; i < mdlen; i++) {
		up->sha256[2 * i] = hexdig[md[i] >> 4];
		up->sha256[2 * i + 1] = hexdig[md[i] & 15];
	}
	up->sha256[2 * mdlen] = '\0';
	memset(s->val, 0, sizeof s->val);
	if (up->hdr != NULL) {
		bool found;
		size_t end = hdr_end(up->hdr, up->hdrlen, &found);
		hdr_iter_t it;
		const char *name, *value;
		size_t nlen, vlen;
		hdr_iter_init(&it, up->hdr, end);
		while (hdr_next(&it, &name, &nlen, &value, &vlen) == 1)
			for (size_t i = 0; i < MSG_HDRS; i++)
				if (s->val[i] == NULL && hdr_name_is(name, nlen, msg_hdr_names[i])) {
					size_t cap = vlen + 1 < MSG_HDR_FIELD_MAX ? vlen + 1 : MSG_HDR_FIELD_MAX;
					s->val[i] = xmalloc(cap);
					hdr_unfold(value, vlen, s->val[i], cap);
				}
	}
	s->date_sent = s->val[0] ? hdr_date_parse(s->val[0]) : -1;
	s->body_off = up->body_off >= 0 ? up->body_off : (int64_t)up->rx.bytes;
}

/* Runs sql (an UPDATE or INSERT of blobs with the summary as ?1..?14 and
 * id_or_created as ?15), then frees the summary and the header buffer. */
static int msg_write_summary(accounts_t *a, struct upload *up, const char *sql,
			     int64_t id_or_created)
{
	struct blob_summary s;
	msg_summarise(up, &s);
	sqlite3_stmt *st = acc_prep(a, sql, "isiissssssssssi", (int64_t)up->rx.bytes, up->sha256,
				    s.body_off, (int64_t)0, s.val[0], s.val[1], s.val[2], s.val[3],
				    s.val[4], s.val[5], s.val[6], s.val[7], s.val[8], s.val[9],
				    id_or_created);
	if (st != NULL && s.date_sent < 0)
		sqlite3_bind_null(st, 4);
	else if (st != NULL)
		sqlite3_bind_int64(st, 4, s.date_sent);
	int rc = acc_run(a, st);
	for (size_t i = 0; i < MSG_HDRS; i++)
		free(s.val[i]);
	free(up->hdr);
	up->hdr = NULL;
	return rc;
}

/* Fills the blob's size, digest, body offset and header cache. */
static int msg_complete_blob(accounts_t *a, struct upload *up)
{
	return msg_write_summary(a, up, "UPDATE blobs SET size = ?1, sha256 = ?2, complete = 1, "
				 "body_off = ?3, date_sent = ?4, hdr_date = ?5, hdr_subject = ?6, "
				 "hdr_from = ?7, hdr_sender = ?8, hdr_reply_to = ?9, hdr_to = ?10, "
				 "hdr_cc = ?11, hdr_bcc = ?12, hdr_message_id = ?13, "
				 "hdr_in_reply_to = ?14 WHERE id = ?15", up->blob_id);
}

/* The blob row of a message that came in one chunk, complete at once. */
static int msg_insert_whole(accounts_t *a, struct upload *up)
{
	return msg_write_summary(a, up, "INSERT INTO blobs (size, sha256, complete, body_off, "
				 "date_sent, hdr_date, hdr_subject, hdr_from, hdr_sender, "
				 "hdr_reply_to, hdr_to, hdr_cc, hdr_bcc, hdr_message_id, "
				 "hdr_in_reply_to, created) VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?7, "
				 "?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)", (int64_t)time(NULL));
}

/* One delivery into a mailbox: quota, UID, MODSEQ, the row, the event. */
static json_t *msg_deliver(struct store_req *r, const json_t *d, json_t *events, struct acc_err *e)
{
	accounts_t *a = r->a;
	const char *address, *mailbox = "INBOX", *prefix = "";
	json_t *flags = NULL;
	char addr[ACC_ADDR_MAX], kw[2048];
	int bits = 0;
	struct mbx_ref m;
	json_unpack((json_t *)d, "{s:s, s?:s, s?:o, s?:s}", "address", &address, "mailbox", &mailbox,
		    "flags", &flags, "prefix", &prefix);
	acc_name_check(address, true, addr, NULL);  /* checked before */
	msg_flags_parse(flags, &bits, kw, sizeof kw, e);
	if (mailbox_lookup(a, addr, mailbox, &m, e) != 1)
		return NULL;
	int64_t size = (int64_t)(strlen(prefix) + r->up->rx.bytes);
	if (m.quota > 0 && m.used + size > m.quota) {
		acc_set(e, "mailbox_full", "mailbox full: %s is over quota", addr);
		return NULL;
	}
	int64_t uid = m.uidnext, modseq = m.highestmodseq + 1;
	if (acc_run(a, acc_prep(a, "UPDATE mailboxes SET uidnext = ?1, highestmodseq = ?2 "
				"WHERE id = ?3", "iii", uid + 1, modseq, m.id)) != SQLITE_DONE)
		return NULL;
	sqlite3_stmt *st = acc_prep(a, "INSERT INTO messages (mailbox_id, user_id, uid, blob_id, "
				    "prefix, size, internaldate, flags, keywords, modseq) "
				    "VALUES (?1, ?2, ?3, ?4, ?10, ?5, ?6, ?7, ?8, ?9)", "iiiiiiisi",
				    m.id, m.user_id, uid, r->up->blob_id, size, r->internaldate,
				    (int64_t)bits, kw, modseq);
	if (st != NULL && prefix[0] != '\0')
		sqlite3_bind_blob(st, 10, prefix, (int)strlen(prefix), SQLITE_STATIC);
	if (acc_run(a, st) != SQLITE_DONE)
		return NULL;
	char uids[24];
	snprintf(uids, sizeof uids, "%lld", (long long)uid);
	json_array_append_new(events, json_pack("{s:s, s:s, s:s, s:I, s:s, s:s, s:I}",
		"type", "storaged.mailbox.changed", "address", addr, "mailbox", m.name,
		"uidvalidity", (json_int_t)m.uidvalidity, "kind", "new", "uids", uids,
		"highestmodseq", (json_int_t)modseq));
	return json_pack("{s:s, s:s, s:I, s:I, s:I}", "address", addr, "mailbox", m.name,
			 "uidvalidity", (json_int_t)m.uidvalidity, "uid", (json_int_t)uid,
			 "modseq", (json_int_t)modseq);
}

static json_t *msg_final_change(accounts_t *a, void *ctx, struct acc_err *e)
{
	struct store_req *r = ctx;
	json_t *result = NULL;
	const char *type = "storaged.message.store";
	/* A one-chunk store looked its idem up a moment ago, in this savepoint. */
	int found = r->idem && !r->idem_missed ? idem_lookup(a->db, r->idem, type, &result) : 0;
	if (found == 1)
		return result;  /* a retry of a stored message: its blob is dropped */
	if (found != 0) {
		if (found == -2)
			acc_set(e, "invalid", "idem already used by another request type");
		return NULL;
	}
	bool blob_new = r->up->blob_id == 0;
	int rc = msg_write_chunk(a, r->up, r->data, r->len, blob_new);
	if (rc == SQLITE_DONE && !blob_new)
		rc = msg_complete_blob(a, r->up);
	if (rc != SQLITE_DONE) {
		if ((rc & 0xff) == SQLITE_FULL)
			acc_set(e, "disk_full", "temporary failure: disk full");
		if (blob_new)
			r->up->blob_id = 0;
		return NULL;
	}
	json_t *stored = json_array(), *events = json_array(), *d;
	size_t i;
	json_array_foreach(r->deliveries, i, d) {
		json_t *one = msg_deliver(r, d, events, e);
		if (one == NULL)
			goto fail;
		json_array_append_new(stored, one);
	}
	int64_t queued = 0;
	if (r->enqueue != NULL) {
		const char *sender, *origin = NULL;
		json_t *rcpts;
		json_unpack((json_t *)r->enqueue, "{s:s, s:o, s?:s}", "sender", &sender, "recipients", &rcpts,
			    "origin", &origin);
		if ((queued = queue_add(a, r->up->blob_id, sender, rcpts, origin, e)) < 0)
			goto fail;
	}
	/* The digest msg_complete_blob wrote is in memory: no read back. */
	result = json_pack("{s:I, s:s, s:o}", "size", (json_int_t)r->up->rx.bytes,
			   "sha256", r->up->sha256, "stored", stored);
	stored = NULL;
	json_object_set_new(result, "bytes", json_integer((json_int_t)r->up->rx.bytes));
	if (queued > 0)
		json_object_set_new(result, "queued", json_integer(queued));
	if (r->idem != NULL) {
		char *text = json_dumps(result, JSON_COMPACT);
		if (text == NULL || idem_store_text(a->db, r->idem, type, text) < 0) {
			free(text);
			json_decref(result);
			result = NULL;
			goto fail;
		}
		acc_reply_text(a, text);  /* the reply is this same text */
	}
	json_array_foreach(events, i, d) {
		json_t *ev = json_incref(d);
		acc_event(a, &ev);
	}
	json_decref(events);
	r->up->finished = true;
	return result;
fail:
	if (strcmp(e->code, "internal") == 0 &&
	    (sqlite3_extended_errcode(db_handle(a->db)) & 0xff) == SQLITE_FULL)
		acc_set(e, "disk_full", "temporary failure: disk full");
	json_decref(stored);
	json_decref(events);
	if (blob_new)
		r->up->blob_id = 0;  /* rolled back with the savepoint */
	return NULL;
}

/* 0 if len more bytes leave min_free_space free on the data dir's file
 * system, else -1 (logged once a minute). */
static int msg_space_left(accounts_t *a, size_t len)
{
	static int64_t logged;
	struct statvfs fs;
	if (a->data_dir == NULL || a->min_free_space <= 0 || statvfs(a->data_dir, &fs) < 0)
		return 0;
	int64_t avail = (int64_t)fs.f_bavail * (int64_t)fs.f_frsize;
	if (avail - (int64_t)len >= a->min_free_space)
		return 0;
	int64_t now = (int64_t)time(NULL);
	if (now - logged >= 60) {
		logged = now;
		log_warn("disk_full", "data_dir=%s avail=%lld min_free_space=%lld",
			 log_quote(a->data_dir), (long long)avail, (long long)a->min_free_space);
	}
	return -1;
}

/* ---- storaged.message.store ------------------------------------------------------------ */

static struct upload *msg_upload_new(const char *stream, int64_t max)
{
	struct upload *up = xcalloc(1, sizeof *up);
	snprintf(up->stream, sizeof up->stream, "%s", stream);
	chunk_rx_init(&up->rx, (uint64_t)max);
	up->sha = EVP_MD_CTX_new();
	EVP_DigestInit_ex(up->sha, EVP_sha256(), NULL);
	up->scan = 1;
	up->body_off = -1;
	up->hdr = xmalloc(MSG_HDR_BUF_MAX);
	return up;
}

void message_store(bus_req_t **req, void *arg)
{
	accounts_t *a = arg;
	struct message_state *ms = msg_state(a);
	struct store_req r = { .a = a, .internaldate = (json_int_t)time(NULL) };
	json_int_t idate = -1, deadline = 0;
	json_t *deliveries = NULL, *enqueue = NULL;
	if (ACC_UNPACK(a, req, "{s:o, s?:I, s?:o, s?:I}", "deliveries", &deliveries, "internaldate",
		       &idate, "enqueue", &enqueue, "deadline", &deadline) < 0 ||
	    msg_check_deliveries(a, req, deliveries) < 0)
		return;
	if (idate > (json_int_t)1 << 40) {
		acc_fail(a, req, "invalid", "internaldate: unix seconds, 0..2^40");
		return;
	}
	if (idate >= 0)
		r.internaldate = idate;
	if (json_array_size(deliveries) == 0 && enqueue == NULL) {
		acc_fail(a, req, "invalid", "nothing to do: no deliveries and no enqueue");
		return;
	}
	if (enqueue != NULL) {
		const char *sender, *origin;
		json_t *rcpts;
		json_error_t je;
		char msg[200];
		if (json_unpack_ex(enqueue, &je, JSON_STRICT, "{s:s, s:o, s?:s}", "sender", &sender,
				   "recipients", &rcpts, "origin", &origin) < 0 || !json_is_array(rcpts)) {
			snprintf(msg, sizeof msg, "enqueue: %s", json_is_object(enqueue) ? je.text :
				 "must be an object");
			acc_fail(a, req, "invalid", msg);
			return;
		}
	}
	r.deliveries = deliveries;
	r.enqueue = enqueue;
	const json_t *env = bus_req_env(*req);
	r.idem = json_string_value(json_object_get(env, "idem"));
	r.data = bus_req_raw(*req, &r.len);

	/* No "chunk": the whole message in this one request. */
	const char *stream = "";
	json_int_t seq = 0;
	int last = 1;
	json_t *chunk = json_object_get(env, "chunk");
	if (chunk != NULL &&
	    (json_unpack(chunk, "{s:s, s:I, s:b}", "stream", &stream, "seq", &seq, "last", &last) < 0 ||
	     stream[0] == '\0')) {
		acc_fail(a, req, "invalid", "chunk: needs stream, seq and last");
		return;
	}
	struct upload *up = stream[0] ? hmap_get(ms->uploads, stream, strlen(stream)) : NULL;
	if (up == NULL) {
		json_t *prior = NULL;
		/* A resend after the reply of the last chunk was lost, or a
		 * whole retry: the first result, nothing stored again. */
		int found = r.idem != NULL ? idem_lookup(a->db, r.idem, bus_req_type(*req), &prior) : 0;
		if (found == 1) {
			acc_ok(a, req, &prior);
			return;
		}
		r.idem_missed = found == 0;
		if (seq != 0) {
			acc_fail(a, req, "stream_lost", "unknown stream (storaged restarted or the "
				 "stream failed): send the message again");
			return;
		}
		if (hmap_count(ms->uploads) >= MSG_UPLOADS_MAX) {
			acc_fail(a, req, "busy", "too many messages arriving at once: try again");
			return;
		}
		up = msg_upload_new(stream, a->max_message_size > 0 ? a->max_message_size
							  : MSG_SIZE_DEFAULT_MAX);
		if (stream[0])
			hmap_put(ms->uploads, stream, strlen(stream), up);
	}
	/* The sender has given up (smtpd answered 451 and the remote side
	 * will send again): storing it now would make a duplicate. */
	if (deadline > 0 && wall_ms() > deadline) {
		if (stream[0])
			msg_drop(a, up);
		else
			upload_free(up);
		ms->late++;
		acc_fail(a, req, "timeout", "deadline passed before storaged got to it: nothing stored");
		return;
	}
	if (up->dead) {
		msg_drop(a, up);
		acc_fail(a, req, "stream_lost", "the stream failed (a commit did not happen): send "
			 "the message again");
		return;
	}
	up->touched = a->loop ? loop_now(a->loop) : 0;
	const char *why = "";
	switch (chunk_rx_check(&up->rx, stream[0] ? stream : "-", seq, last, r.len, &why)) {
	case CHUNK_DUPLICATE: {
		json_t *f = json_pack("{s:I}", "bytes", (json_int_t)up->rx.bytes);
		acc_ok(a, req, &f);
		return;
	}
	case CHUNK_REJECT:
		/* The drop first: the error then waits for its commit. */
		if (stream[0])
			msg_drop(a, up);
		else
			upload_free(up);
		acc_fail(a, req, strstr(why, "larger than allowed") ? "too_big" : "invalid", why);
		return;
	case CHUNK_ACCEPT:
		break;
	}
	if (msg_space_left(a, r.len) < 0) {
		/* Refused before the file system is really full, so that
		 * deletes and checkpoints can still be written. */
		if (stream[0])
			msg_drop(a, up);
		else
			upload_free(up);
		acc_fail(a, req, "disk_full", "temporary failure: disk full");
		return;
	}
	r.up = up;
	ms->bytes += r.len;
	if (!last) {
		acc_write(a, req, msg_chunk_change, &r);
		if (!r.ok || up->dead)
			msg_drop(a, up);  /* the sender gets the error: the stream is over */
		return;
	}
	acc_write(a, req, msg_final_change, &r);
	if (up->finished)
		ms->stored += json_array_size(deliveries);
	if (stream[0])
		msg_drop(a, up);  /* deletes the blob unless it was stored */
	else {
		if (!up->finished && up->blob_id > 0 && acc_begin(a) == 0)
			acc_run(a, acc_prep(a, "DELETE FROM blobs WHERE id = ?1 AND complete = 0",
					    "i", up->blob_id));
		upload_free(up);
	}
}

/* ---- reading ------------------------------------------------------------------------------- */

/* A message's place: its blob, prefix and sizes. */
struct msg_loc {
	int64_t blob_id, size, blob_size, body_off, uid;
	void *prefix;
	size_t prefixlen;
	char sha256[65];
};

/* Copies bytes [off, off + len) of the blob into out; 0 or -1. */
static int msg_read_blob(accounts_t *a, int64_t blob_id, int64_t off, int64_t len,
			 unsigned char *out)
{
	sqlite3_stmt *st = acc_prep(a, "SELECT off, data FROM blob_chunks WHERE blob_id = ?1 AND "
				    "off >= (SELECT coalesce(max(off), 0) FROM blob_chunks "
				    "WHERE blob_id = ?1 AND off <= ?2) AND off < ?3 ORDER BY off",
				    "iii", blob_id, off, off + len);
	int64_t done = 0;
	while (st != NULL && done < len && sqlite3_step(st) == SQLITE_ROW) {
		int64_t coff = sqlite3_column_int64(st, 0);
		const unsigned char *data = sqlite3_column_blob(st, 1);
		int64_t clen = sqlite3_column_bytes(st, 1);
		int64_t from = off + done - coff;   /* where we are inside this chunk */
		if (from < 0 || from >= clen)
			break;
		int64_t n = clen - from < len - done ? clen - from : len - done;
		memcpy(out + done, data + from, (size_t)n);
		done += n;
	}
	db_release(a->db, st);
	return done == len ? 0 : -1;
}

/* Locates uid in m or blob_id directly: 1, 0 (not found), -1. */
static int msg_locate(accounts_t *a, const struct mbx_ref *m, int64_t uid, int64_t blob_id,
		      struct msg_loc *loc)
{
	sqlite3_stmt *st = m != NULL
		? acc_prep(a, "SELECT b.id, m.prefix, m.size, b.size, b.body_off, b.sha256 "
			   "FROM messages m JOIN blobs b ON b.id = m.blob_id "
			   "WHERE m.mailbox_id = ?1 AND m.uid = ?2", "ii", m->id, uid)
		: acc_prep(a, "SELECT id, NULL, size, size, body_off, sha256 FROM blobs "
			   "WHERE id = ?1 AND complete = 1", "i", blob_id);
	int rc = st ? sqlite3_step(st) : SQLITE_ERROR;
	memset(loc, 0, sizeof *loc);
	if (rc == SQLITE_ROW) {
		loc->blob_id = sqlite3_column_int64(st, 0);
		loc->prefixlen = (size_t)sqlite3_column_bytes(st, 1);
		if (loc->prefixlen > 0) {
			loc->prefix = xmalloc(loc->prefixlen);
			memcpy(loc->prefix, sqlite3_column_blob(st, 1), loc->prefixlen);
		}
		loc->size = sqlite3_column_int64(st, 2);
		loc->blob_size = sqlite3_column_int64(st, 3);
		loc->body_off = sqlite3_column_int64(st, 4) + (int64_t)loc->prefixlen;
		snprintf(loc->sha256, sizeof loc->sha256, "%s",
			 sqlite3_column_text(st, 5) ? (const char *)sqlite3_column_text(st, 5) : "");
		loc->uid = uid;
	}
	db_release(a->db, st);
	return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

void message_fetch(bus_req_t **req, void *arg)
{
	accounts_t *a = arg;
	const char *in = NULL, *mailbox = NULL;
	json_int_t uid = 0, blob = 0, offset = 0, length = BUS_RAW_MAX;
	char addr[ACC_ADDR_MAX];
	struct acc_err e = { "internal", "database error" };
	struct mbx_ref m;
	struct msg_loc loc;
	if (ACC_UNPACK(a, req, "{s?:s, s?:s, s?:I, s?:I, s?:I, s?:I}", "address", &in, "mailbox",
		       &mailbox, "uid", &uid, "blob", &blob, "offset", &offset, "length", &length) < 0)
		return;
	if ((blob > 0) == (in != NULL || mailbox != NULL || uid != 0) ||
	    (blob == 0 && (in == NULL || mailbox == NULL || uid <= 0))) {
		acc_fail(a, req, "invalid", "give either address, mailbox and uid, or blob");
		return;
	}
	if (offset < 0 || length < 0 || length > BUS_RAW_MAX) {
		acc_fail(a, req, "invalid", "offset must be >= 0 and length 0..1048576");
		return;
	}
	if (in != NULL && acc_name(a, req, "address", in, true, addr, NULL) < 0)
		return;
	/* Nothing uncommitted may be read: the open batch commits first. */
	acc_flush(a);
	int found = in != NULL ? mailbox_lookup(a, addr, mailbox, &m, &e) : 1;
	if (found == 1)
		found = msg_locate(a, in != NULL ? &m : NULL, uid, blob, &loc);
	if (found != 1) {
		if (found == 0 && strcmp(e.code, "not_found") != 0)
			acc_set(&e, "not_found", in ? "no message with UID %lld" : "no blob %lld",
				(long long)(in ? uid : blob));
		acc_fail(a, req, e.code, e.msg);
		return;
	}
	int64_t off = offset < loc.size ? offset : loc.size;
	int64_t n = loc.size - off < length ? loc.size - off : length;
	unsigned char *buf = xmalloc((size_t)n + 1);
	int64_t done = 0;
	if (off < (int64_t)loc.prefixlen) {
		done = (int64_t)loc.prefixlen - off < n ? (int64_t)loc.prefixlen - off : n;
		memcpy(buf, (char *)loc.prefix + off, (size_t)done);
	}
	if (done < n && msg_read_blob(a, loc.blob_id, off + done - (int64_t)loc.prefixlen,
				      n - done, buf + done) < 0) {
		free(buf);
		free(loc.prefix);
		log_warn("fetch", "blob=%lld why=\"chunks missing\"", (long long)loc.blob_id);
		acc_fail(a, req, "internal", "message bytes missing");
		return;
	}
	json_t *f = json_pack("{s:I, s:I, s:I, s:I, s:s}", "size", (json_int_t)loc.size, "offset",
			      (json_int_t)off, "length", (json_int_t)n, "body_offset",
			      (json_int_t)loc.body_off, "sha256", loc.sha256);
	if (in != NULL)
		json_object_set_new(f, "uid", json_integer(uid));
	a->ok++;
	msg_state(a)->fetched += (uint64_t)(off == 0);
	bus_reply(req, &f, buf, (size_t)n);
	free(buf);
	free(loc.prefix);
}

/* One list item from the row of message_list's query. */
static json_t *msg_list_row(sqlite3_stmt *st, bool headers)
{
	json_t *o = json_pack("{s:I, s:o, s:I, s:I, s:I}",
		"uid", (json_int_t)sqlite3_column_int64(st, 0),
		"flags", msg_flags_json(sqlite3_column_int(st, 1), (const char *)sqlite3_column_text(st, 2)),
		"modseq", (json_int_t)sqlite3_column_int64(st, 3),
		"size", (json_int_t)sqlite3_column_int64(st, 4),
		"internaldate", (json_int_t)sqlite3_column_int64(st, 5));
	if (!headers)
		return o;
	json_t *h = json_object();
	static const char *const keys[] = { "date", "subject", "from", "sender", "reply_to", "to",
					    "cc", "bcc", "message_id", "in_reply_to" };
	for (size_t i = 0; i < ARRAY_LEN(keys); i++) {
		const char *v = (const char *)sqlite3_column_text(st, 7 + (int)i);
		if (v != NULL)
			json_object_set_new(h, keys[i], json_string(v));
	}
	json_object_set_new(o, "headers", h);
	json_object_set_new(o, "date_sent", sqlite3_column_type(st, 6) == SQLITE_NULL ? json_null()
				: json_integer(sqlite3_column_int64(st, 6)));
	json_object_set_new(o, "body_offset", json_integer(sqlite3_column_int64(st, 17)));
	return o;
}

/* The index of a keyword text in the page's table, added if new; -1 if
 * the table is full (the page ends before this row). */
static int msg_compact_kw(json_t *kws, const char *kw, size_t *bytes)
{
	size_t i;
	json_t *k;
	json_array_foreach(kws, i, k)
		if (strcmp(json_string_value(k), kw) == 0)
			return (int)i;
	if (json_array_size(kws) >= MSG_COMPACT_KW)
		return -1;
	json_array_append_new(kws, json_string(kw));
	*bytes += strlen(kw) + 3;   /* quotes and comma */
	return (int)json_array_size(kws) - 1;
}

/*
 * message.list with compact: the rows as one text, "uid,modseq,size,
 * internaldate,flags,kw" joined by ';' (flags: the system flag bits,
 * 1 \Seen 2 \Answered 4 \Flagged 8 \Deleted 16 \Draft; kw: the index of the
 * row's keyword text in "keywords", whose [0] is ""). A JSON object per
 * message costs storaged and imapd about 25 us each; this is a few
 * hundred ns a row (imapd loads a whole mailbox with it).
 */
static void msg_list_compact(accounts_t *a, bus_req_t **req, const struct mbx_ref *m,
			     const seqset_t *set, json_int_t changedsince, json_int_t limit)
{
	const char *sql = changedsince > 0 ? MSG_LIST_COLS " INDEXED BY messages_modseq" MSG_LIST_WHERE
					   : MSG_LIST_COLS MSG_LIST_WHERE;
	strbuf_t rows = STRBUF_INIT;
	json_t *kws = json_pack("[s]", "");
	json_int_t n = 0;
	int64_t next = 0;
	size_t kwbytes = 0;
	int rc = SQLITE_DONE;
	for (size_t i = 0; i < set->n && rc == SQLITE_DONE && next == 0; i++) {
		sqlite3_stmt *st = acc_prep(a, sql, "iiiii", m->id, (int64_t)set->r[i].lo,
					    (int64_t)set->r[i].hi, (int64_t)changedsince, limit - n + 1);
		while (st != NULL && (rc = sqlite3_step(st)) == SQLITE_ROW) {
			int64_t uid = sqlite3_column_int64(st, 0);
			const char *kw = (const char *)sqlite3_column_text(st, 2);
			int k = n >= limit || rows.len + kwbytes >= MSG_COMPACT_BYTES ? -1
				: msg_compact_kw(kws, kw ? kw : "", &kwbytes);
			if (k < 0) {   /* the page is at its bounds: the first row always fits */
				next = uid;  /* the page is full: continue from here */
				rc = SQLITE_DONE;
				break;
			}
			sb_addf(&rows, "%s%lld,%lld,%lld,%lld,%d,%d", n ? ";" : "", (long long)uid,
				(long long)sqlite3_column_int64(st, 3), (long long)sqlite3_column_int64(st, 4),
				(long long)sqlite3_column_int64(st, 5), sqlite3_column_int(st, 1) & 31, k);
			n++;
		}
		db_release(a->db, st);
		if (st == NULL)
			rc = SQLITE_ERROR;
	}
	if (rc != SQLITE_DONE) {
		sb_free(&rows);
		json_decref(kws);
		acc_fail(a, req, "internal", "database error");
		return;
	}
	json_t *f = json_pack("{s:s#, s:o, s:I, s:I, s:I}", "compact", rows.buf ? rows.buf : "",
			      rows.len, "keywords", kws, "uidvalidity", (json_int_t)m->uidvalidity,
			      "uidnext", (json_int_t)m->uidnext, "highestmodseq",
			      (json_int_t)m->highestmodseq);
	sb_free(&rows);
	if (next > 0)
		json_object_set_new(f, "next", json_integer(next));
	acc_ok(a, req, &f);
}

void message_list(bus_req_t **req, void *arg)
{
	accounts_t *a = arg;
	const char *in, *mailbox, *uids = "1:*", *why;
	json_int_t changedsince = 0, limit = -1;
	int headers = 0, compact = 0;
	char addr[ACC_ADDR_MAX];
	struct acc_err e = { "internal", "database error" };
	struct mbx_ref m;
	if (ACC_UNPACK(a, req, "{s:s, s:s, s?:s, s?:I, s?:b, s?:I, s?:b}", "address", &in,
		       "mailbox", &mailbox, "uids", &uids, "changedsince", &changedsince, "headers",
		       &headers, "limit", &limit, "compact", &compact) < 0 ||
	    acc_name(a, req, "address", in, true, addr, NULL) < 0)
		return;
	json_int_t max = compact ? MSG_COMPACT_MAX : MSG_LIST_MAX;
	if (limit == -1)
		limit = max;
	if (limit < 1 || limit > max || changedsince < 0 || (compact && headers)) {
		acc_fail(a, req, "invalid", "limit must be 1..1000 (8192 compact), changedsince >= 0, "
			 "headers not with compact");
		return;
	}
	if (mailbox_lookup(a, addr, mailbox, &m, &e) != 1) {
		acc_fail(a, req, e.code, e.msg);
		return;
	}
	seqset_t *set = xmalloc(sizeof *set);
	if (seqset_parse(set, uids, (uint32_t)(m.uidnext - 1), &why) < 0) {
		free(set);
		acc_set(&e, "invalid", "uids: %s", why);
		acc_fail(a, req, e.code, e.msg);
		return;
	}
	if (compact) {
		msg_list_compact(a, req, &m, set, changedsince, limit);
		free(set);
		return;
	}
#define MSG_LIST_HDR_COLS \
	"SELECT m.uid, m.flags, m.keywords, m.modseq, m.size, m.internaldate, b.date_sent, " \
	"b.hdr_date, b.hdr_subject, b.hdr_from, b.hdr_sender, b.hdr_reply_to, b.hdr_to, " \
	"b.hdr_cc, b.hdr_bcc, b.hdr_message_id, b.hdr_in_reply_to, " \
	"b.body_off + coalesce(length(m.prefix), 0) "
#define MSG_LIST_HDR_WHERE \
	" JOIN blobs b ON b.id = m.blob_id WHERE m.mailbox_id = ?1 " \
	"AND m.uid BETWEEN ?2 AND ?3 AND m.modseq > ?4 ORDER BY m.uid LIMIT ?5"
	/*
	 * CHANGEDSINCE (imapd asks it after every command that changed the
	 * mailbox) reads the few changed rows through the MODSEQ index;
	 * without INDEXED BY, SQLite walks every UID of the range in order
	 * and tests each one's MODSEQ: 4.4 ms of storaged per STORE on a
	 * 50,000-message mailbox.
	 */
	const char *sql = headers
		? (changedsince > 0
			   ? MSG_LIST_HDR_COLS "FROM messages m INDEXED BY messages_modseq" MSG_LIST_HDR_WHERE
			   : MSG_LIST_HDR_COLS "FROM messages m" MSG_LIST_HDR_WHERE)
		: (changedsince > 0 ? MSG_LIST_COLS " INDEXED BY messages_modseq" MSG_LIST_WHERE
				    : MSG_LIST_COLS MSG_LIST_WHERE);
	json_t *list = json_array();
	size_t bytes = 0;
	int64_t next = 0;
	int rc = SQLITE_DONE;
	for (size_t i = 0; i < set->n && rc == SQLITE_DONE && next == 0; i++) {
		sqlite3_stmt *st = acc_prep(a, sql, "iiiii", m.id, (int64_t)set->r[i].lo,
					    (int64_t)set->r[i].hi, (int64_t)changedsince,
					    limit - (json_int_t)json_array_size(list) + 1);
		while (st != NULL && (rc = sqlite3_step(st)) == SQLITE_ROW) {
			int64_t uid = sqlite3_column_int64(st, 0);
			json_t *item = msg_list_row(st, headers);
			char *text = json_dumps(item, JSON_COMPACT);
			bytes += (text ? strlen(text) : 0) + 1;
			free(text);
			if (bytes > MSG_LIST_BYTES || (json_int_t)json_array_size(list) >= limit) {
				json_decref(item);
				next = uid;  /* the page is full: continue from here */
				rc = SQLITE_DONE;
				break;
			}
			json_array_append_new(list, item);
		}
		db_release(a->db, st);
		if (st == NULL)
			rc = SQLITE_ERROR;
	}
	free(set);
	if (rc != SQLITE_DONE) {
		json_decref(list);
		acc_fail(a, req, "internal", "database error");
		return;
	}
	json_t *f = json_pack("{s:o, s:I, s:I, s:I}", "messages", list, "uidvalidity",
			      (json_int_t)m.uidvalidity, "uidnext", (json_int_t)m.uidnext,
			      "highestmodseq", (json_int_t)m.highestmodseq);
	if (next > 0)
		json_object_set_new(f, "next", json_integer(next));
	acc_ok(a, req, &f);
}

void mailbox_status(bus_req_t **req, void *arg)
{
	accounts_t *a = arg;
	const char *in, *mailbox;
	char addr[ACC_ADDR_MAX];
	struct acc_err e = { "internal", "database error" };
	struct mbx_ref m;
	if (ACC_UNPACK(a, req, "{s:s, s:s}", "address", &in, "mailbox", &mailbox) < 0 ||
	    acc_name(a, req, "address", in, true, addr, NULL) < 0)
		return;
	if (mailbox_lookup(a, addr, mailbox, &m, &e) != 1) {
		acc_fail(a, req, e.code, e.msg);
		return;
	}
	sqlite3_stmt *st = acc_prep(a, "SELECT count(*), coalesce(sum(flags & 1 = 0), 0), "
				    "coalesce(sum(flags & 8 != 0), 0), coalesce(sum(size), 0), "
				    "(SELECT min(uid) FROM messages WHERE mailbox_id = ?1 AND flags & 1 = 0) "
				    "FROM messages WHERE mailbox_id = ?1", "i", m.id);
	if (st == NULL || sqlite3_step(st) != SQLITE_ROW) {
		db_release(a->db, st);
		acc_fail(a, req, "internal", "database error");
		return;
	}
	json_t *f = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o}",
		"mailbox", m.name, "uidvalidity", (json_int_t)m.uidvalidity,
		"uidnext", (json_int_t)m.uidnext, "highestmodseq", (json_int_t)m.highestmodseq,
		"messages", (json_int_t)sqlite3_column_int64(st, 0),
		"unseen", (json_int_t)sqlite3_column_int64(st, 1),
		"deleted", (json_int_t)sqlite3_column_int64(st, 2),
		"size", (json_int_t)sqlite3_column_int64(st, 3),
		"first_unseen", sqlite3_column_type(st, 4) == SQLITE_NULL ? json_null()
				: json_integer(sqlite3_column_int64(st, 4)));
	db_release(a->db, st);
	acc_ok(a, req, &f);
}
