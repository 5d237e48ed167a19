/*
 * deliver.c — where smtpd meets storaged (DESIGN.md "Mail flow", inbound):
 *
 *   RCPT TO     storaged.rcpt.resolve: user, alias, catch-all, user+tag,
 *               postmaster@. Not hosted: 554 5.7.1 (port 25 never relays);
 *               not found: 550 5.1.1; no answer: 451 4.3.0. A yes is
 *               reused for a few seconds (the RCPT cache below).
 *   DATA/BDAT   storaged.message.store as a stream (bus_stream_*): our
 *               Received header, then the message in chunks of at most
 *               SMTPD_CHUNK as they arrive. While a chunk is in flight
 *               smtp.c stops reading the socket (the client's TCP window
 *               fills: backpressure), and the buffer itself is handed to
 *               the bus (no copy), so a session holds about one chunk
 *               whatever the size, and all sessions together a bounded
 *               amount (SMTPD_DATA_BUDGET). The last chunk commits; 250
 *               only after storaged says so.
 *
 * Each transaction has an id (the queue id): it is logged and is the store's
 * idempotency key, so a chunk the bus resends is stored once. A failure
 * before the last chunk drops the stream: storaged never links an
 * incomplete blob to a mailbox (and deletes it when the stream idles out).
 *
 * Hook points for the services still to come: deliver_policy_mail (policyd:
 * SPF, FCrDNS at MAIL FROM) and deliver_policy_data (dkimd verification and
 * policyd's DMARC after the message, before the commit) accept everything
 * today.
 *
 * Ownership: the txn_t inside the session owns deliveries, forwards, rcpts,
 * buf and stream; txn_reset releases them all. Bus replies are borrowed.
 */
#include "smtpd.h"
#include "hmap.h"
#include "log.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static void store_send(session_t *s, bool last);
static void stream_drop(session_t *s);
static void chunk_account(session_t *s, size_t bufcap, size_t flying);
static void store_ack(bus_stream_t *st, json_t **reply, void *arg);

/* ---- transactions ------------------------------------------------------------- */

void txn_begin(session_t *s)
{
	txn_t *t = &s->txn;
	uint32_t r = 0;
	txn_reset(s);
	if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r)
		r = (uint32_t)s->serial * 2654435761u;
	/* time in ms, then 32 random bits: unique across replicas and restarts */
	snprintf(t->id, sizeof t->id, "%011llX%08X", (unsigned long long)wall_ms(), r);
	t->active = true;
	t->deliveries = json_array();
	t->forwards = json_array();
	t->started = now_ms();
}

void txn_reset(session_t *s)
{
	txn_t *t = &s->txn;
	if (t->call != 0)
		bus_cancel(s->d->bus, t->call);
	stream_drop(s);
	for (size_t i = 0; i < t->nrcpt; i++)
		free(t->rcpts[i]);
	json_decref(t->deliveries);
	json_decref(t->forwards);
	memset(t, 0, sizeof *t);
}

/* ---- hooks ------------------------------------------------------------------- */

/*
 * policyd at MAIL FROM (SPF for the sender's domain, FCrDNS of the client,
 * rate limits) hooks in here once the policyd issue lands: an asynchronous
 * call like deliver_rcpt's. Today every sender is accepted.
 */
enum reply_id deliver_policy_mail(session_t *s, const smtp_path_t *from)
{
	(void)s; (void)from;
	return R_OK;
}

/*
 * After the whole message, before the commit: dkimd verifies signatures
 * and policyd evaluates DMARC; their Authentication-Results header will go
 * in front of the stored bytes (a delivery prefix). Today: accept.
 */
static enum reply_id deliver_policy_data(session_t *s)
{
	(void)s;
	return R_OK;
}

/* ---- RCPT TO ----------------------------------------------------------------- */

/* Appends v (borrowed string) to array a unless it is there already. */
static void add_unique(json_t *a, const char *v, bool object)
{
	size_t i;
	json_t *x;
	json_array_foreach(a, i, x) {
		const char *have = json_string_value(object ? json_object_get(x, "address") : x);
		if (have != NULL && strcmp(have, v) == 0)
			return;
	}
	json_array_append_new(a, object ? json_pack("{s:s}", "address", v) : json_string(v));
}

/* The reply for a resolve answer; records the recipient when accepted. */
static enum reply_id rcpt_verdict(session_t *s, const json_t *reply)
{
	txn_t *t = &s->txn;
	if (!bus_reply_ok(reply)) {
		const char *code = json_string_value(json_object_get(reply, "code"));
		/* storaged refuses what can be no user of ours (bad characters) */
		if (code != NULL && strcmp(code, "invalid") == 0)
			return R_NO_USER;
		log_warn("rcpt.tempfail", "qid=%s ip=%s rcpt=%s code=%s", t->id, s->ip,
			 log_quote(t->pending), code ? code : "-");
		return R_TEMP_STORE;
	}
	if (!json_is_true(json_object_get(reply, "local")))
		return R_RELAY;
	if (!json_is_true(json_object_get(reply, "found")))
		return R_NO_USER;
	json_t *dl = json_object_get(reply, "deliveries"), *fw = json_object_get(reply, "forwards");
	if (json_array_size(t->deliveries) + json_array_size(dl) > SMTPD_RCPT_MAX ||
	    json_array_size(t->forwards) + json_array_size(fw) > SMTPD_RCPT_MAX)
		return R_TOO_MANY_RCPTS;
	size_t i;
	json_t *x;
	json_array_foreach(dl, i, x)
		if (json_is_string(x))
			add_unique(t->deliveries, json_string_value(x), true);
	json_array_foreach(fw, i, x)
		if (json_is_string(x))
			add_unique(t->forwards, json_string_value(x), false);
	t->rcpts[t->nrcpt++] = xstrdup(t->pending);
	return R_RCPT_OK;
}

/*
 * The RCPT cache: storaged's positive answers (the address exists, and its
 * deliveries and forwards), reused for SMTPD_RCPT_CACHE_MS, so a burst of
 * messages to the same recipients does not cost a bus round trip through
 * busd and storaged per recipient (like Postfix's address verification
 * cache, but seconds, not days). Negative answers and failures are never
 * kept: a user added is seen at once. A user (or domain) deleted within
 * the TTL is still accepted at RCPT, but storaged checks every delivery
 * again at the commit and fails the store: the client gets 451 4.3.0 and
 * tries again later (then 550 5.1.1), so nothing is lost silently, as
 * when the deletion falls between RCPT and the end of DATA. An alias
 * changed within the TTL still goes to its old targets for that long.
 */
struct rcpt_hit {
	int64_t until;      /* loop ms */
	json_t *reply;      /* storaged's answer (owned) */
};

static int rcpt_hit_free(const void *k, size_t kl, void *v, void *arg)
{
	(void)k; (void)kl; (void)arg;
	struct rcpt_hit *h = v;
	json_decref(h->reply);
	free(h);
	return 0;
}

void deliver_cache_free(smtpd_t *d)
{
	if (d->rcpt_cache == NULL)
		return;
	hmap_each(d->rcpt_cache, rcpt_hit_free, NULL);
	hmap_free(&d->rcpt_cache);
}

/* The cached answer for address (borrowed), or NULL. */
static const json_t *rcpt_cache_get(smtpd_t *d, const char *address)
{
	if (d->rcpt_cache == NULL)
		return NULL;
	struct rcpt_hit *h = hmap_get(d->rcpt_cache, address, strlen(address));
	if (h == NULL)
		return NULL;
	if (now_ms() < h->until)
		return h->reply;
	hmap_del(d->rcpt_cache, address, strlen(address));
	rcpt_hit_free(NULL, 0, h, NULL);
	return NULL;
}

/* Keeps reply (borrowed) for address if it says the address is ours and exists. */
static void rcpt_cache_put(smtpd_t *d, const char *address, json_t *reply)
{
	if (!bus_reply_ok(reply) || !json_is_true(json_object_get(reply, "local")) ||
	    !json_is_true(json_object_get(reply, "found")))
		return;
	if (d->rcpt_cache != NULL && hmap_count(d->rcpt_cache) >= SMTPD_RCPT_CACHE_MAX)
		deliver_cache_free(d);   /* bounded: start over */
	if (d->rcpt_cache == NULL)
		d->rcpt_cache = hmap_new();
	struct rcpt_hit *h = hmap_get(d->rcpt_cache, address, strlen(address));
	if (h == NULL) {
		h = xcalloc(1, sizeof *h);
		hmap_put(d->rcpt_cache, address, strlen(address), h);
	}
	json_decref(h->reply);
	h->reply = json_incref(reply);
	h->until = now_ms() + SMTPD_RCPT_CACHE_MS;
}

/* storaged's answer (fresh or cached) to RCPT TO: the reply to the client. */
static void rcpt_answer(session_t *s, const json_t *reply, bool cached)
{
	enum reply_id id = rcpt_verdict(s, reply);
	if (id == R_RCPT_OK)
		s->d->stats.rcpts++;
	log_debug("rcpt", "qid=%s rcpt=%s result=%s%s", s->txn.id, log_quote(s->txn.pending),
		  reply_table[id].enh, cached ? " cached=yes" : "");
	smtp_rcpt_done(s, id, s->txn.pending);
}

static void rcpt_reply(json_t **reply, const void *raw, size_t rawlen, void *arg)
{
	(void)raw; (void)rawlen;
	session_t *s = arg;
	s->txn.call = 0;
	rcpt_cache_put(s->d, s->txn.pending, *reply);
	rcpt_answer(s, *reply, false);
	if (!s->txn.calling)
		session_resume(s);
}

void deliver_rcpt(session_t *s, const smtp_path_t *rcpt)
{
	txn_t *t = &s->txn;
	/* <postmaster> alone (RFC 5321 4.5.1) is the postmaster of our own name. */
	if (rcpt->postmaster)
		snprintf(t->pending, sizeof t->pending, "postmaster@%s", s->d->conf.hostname);
	else
		snprintf(t->pending, sizeof t->pending, "%s", rcpt->addr);
	const json_t *hit = rcpt_cache_get(s->d, t->pending);
	if (hit != NULL) {
		rcpt_answer(s, hit, true);   /* smtp.c goes on processing */
		return;
	}
	json_t *req = bus_env_new("storaged.rcpt.resolve");
	json_object_set_new(req, "address", json_string(t->pending));
	bus_call_opts_t opts = { s->d->conf.store_timeout_ms, -1 };
	t->calling = true;
	t->call = bus_call(s->d->bus, "storaged", &req, NULL, 0, &opts, rcpt_reply, s);
	t->calling = false;
}

/* ---- the message --------------------------------------------------------------- */

/* RFC 5321 4.4 protocol names, with RFC 3848 and RFC 6531 7.3. */
static const char *with_protocol(const session_t *s)
{
	if (s->txn.smtputf8)
		return s->tls ? "UTF8SMTPS" : "UTF8SMTP";
	if (!s->esmtp)
		return "SMTP";
	return s->tls ? "ESMTPS" : "ESMTP";
}

/* The Received field we prepend (RFC 5321 4.4), folded, into t->buf. */
static void received_header(session_t *s)
{
	txn_t *t = &s->txn;
	char date[64], tls[160] = "", lit[80];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
	if (s->tls) {
		char desc[128];
		tls_describe(s->ssl, desc, sizeof desc);
		snprintf(tls, sizeof tls, "\r\n\t(%s)", desc);
	}
	snprintf(lit, sizeof lit, strchr(s->ip, ':') ? "[IPv6:%s]" : "[%s]", s->ip);
	char forbuf[SMTPD_PATH_MAX + 16] = "";
	if (t->nrcpt == 1)
		snprintf(forbuf, sizeof forbuf, "\r\n\tfor <%s>", t->rcpts[0]);
	int n = snprintf(t->buf, t->bufcap,
			 "Received: from %s (%s)\r\n\tby %s (Roost) with %s id %s%s%s;\r\n\t%s\r\n",
			 s->helo, lit, s->d->conf.hostname, with_protocol(s), t->id, tls, forbuf,
			 date);
	t->buflen = n > 0 && (size_t)n < t->bufcap ? (size_t)n : 0;
}

void deliver_open(session_t *s)
{
	txn_t *t = &s->txn;
	stream_drop(s);
	t->buf = xmalloc(16384);
	chunk_account(s, 16384, 0);
	t->buflen = 0;
	t->size = 0;
	hdrscan_init(&t->hs);
	json_t *fields = json_pack("{s:s, s:O}", "idem", t->id, "deliveries", t->deliveries);
	if (json_array_size(t->forwards) > 0)
		json_object_set_new(fields, "enqueue", json_pack("{s:s, s:O, s:s}", "sender", t->from,
								  "recipients", t->forwards,
								  "origin", t->id));
	received_header(s);
	t->stream = bus_stream_new(s->d->bus, "storaged", "storaged.message.store", &fields,
				   store_ack, s);
	/* We answer 451 when storaged is late and the sender tries again:
	 * a store storaged only reaches after that must not happen too. */
	bus_stream_deadlines(t->stream);
}

/*
 * Memory, not CPU, bounds the chunk size: a chunk waits in smtpd until
 * storaged has it, so with many sessions streaming at once (64 sending
 * 100 KiB: 64 x 128 KiB) the chunks would be most of smtpd's memory. All
 * sessions' chunk buffers together (d->chunk_bytes: filling, or handed to
 * the bus and not yet acknowledged) stay within SMTPD_DATA_BUDGET: a buffer
 * grows past SMTPD_CHUNK_MIN only while the budget allows, and otherwise is
 * sent as it is. With a few sessions a message up to 128 KiB is one chunk
 * (one round trip, storaged's one-chunk path); with many they are smaller
 * (64 sessions sending 100 KiB: chunks of 16 KiB, and 1-2 MiB instead of
 * 8). A session holds one buffer at a time (filling, or in flight: no
 * reading meanwhile). With 16 KiB chunks and an 8 KiB read buffer smtpd's
 * anonymous memory at that load went from 6.5 to 5.4 MB (PSS 8.2 -> 7.2-7.5
 * on a busy machine; bench/RESULTS.md).
 */
static void chunk_account(session_t *s, size_t bufcap, size_t flying)
{
	txn_t *t = &s->txn;
	s->d->chunk_bytes += bufcap + flying;
	s->d->chunk_bytes -= t->bufcap + t->flying;
	t->bufcap = bufcap;
	t->flying = flying;
}

/* Closes the session's store stream and forgets its chunk buffers. */
static void stream_drop(session_t *s)
{
	txn_t *t = &s->txn;
	bus_stream_free(&t->stream);   /* a chunk in flight is freed by the bus */
	chunk_account(s, 0, 0);
	free(t->buf);
	t->buf = NULL;
	t->buflen = 0;
}

/* Ends the transaction with reply id instead of storing: the stream (and
 * whatever storaged holds of it) is dropped; the client's bytes are still
 * read to their end, then id is the answer. */
static void deliver_fail(session_t *s, enum reply_id id)
{
	txn_t *t = &s->txn;
	if (t->fail == 0)
		t->fail = id;
	stream_drop(s);
	t->inflight = false;
}

size_t deliver_room(session_t *s)
{
	txn_t *t = &s->txn;
	if (t->fail != 0 || t->stream == NULL)
		return SMTPD_CHUNK;   /* read and drop */
	if (t->inflight)
		return 0;             /* backpressure: one chunk at a time */
	/* "Full" leaves no room for the two bytes the DATA decoder may write
	 * at once (a CRLF): below that it could never move again. */
	if (t->buflen + 2 > SMTPD_CHUNK) {
		store_send(s, false);
		return 0;
	}
	if (t->bufcap - t->buflen < 2) {
		/* Past the first 16 KiB (a small message never holds more) the
		 * buffer goes to a whole chunk at once if the budget allows:
		 * doubling copied 16 + 32 + 64 KiB on the way to 128 (a tenth of
		 * smtpd's instructions for a 100 KiB message), and the buffer is
		 * fitted before it is sent anyway. Otherwise to SMTPD_CHUNK_MIN,
		 * or, there already, it goes as it is. */
		size_t cap = 16384;
		if (t->bufcap > 0) {
			cap = SMTPD_CHUNK;
			if (s->d->chunk_bytes + (cap - t->bufcap) > (size_t)SMTPD_DATA_BUDGET)
				cap = t->bufcap < SMTPD_CHUNK_MIN ? SMTPD_CHUNK_MIN : t->bufcap;
		}
		if (cap - t->buflen < 2) {
			store_send(s, false);   /* over the budget: send what there is */
			return 0;
		}
		t->buf = xrealloc(t->buf, cap);
		chunk_account(s, cap, t->flying);
	}
	return t->bufcap - t->buflen;
}

char *deliver_space(session_t *s)
{
	txn_t *t = &s->txn;
	if (t->fail != 0 || t->stream == NULL || t->buf == NULL)
		return NULL;
	return t->buf + t->buflen;
}

void deliver_append(session_t *s, const char *p, size_t n)
{
	txn_t *t = &s->txn;
	t->size += n;
	if (n == 0 || t->fail != 0 || t->stream == NULL)
		return;
	if (t->size > (uint64_t)s->d->conf.max_size) {
		deliver_fail(s, R_SIZE_EXCEEDED);
		return;
	}
	hdrscan_feed(&t->hs, p, n);
	if (t->hs.received > SMTPD_HOPS_MAX) {
		deliver_fail(s, R_HOPS);
		return;
	}
	if (p != t->buf + t->buflen)
		memcpy(t->buf + t->buflen, p, n);
	t->buflen += n;
}

/* A storaged error code as our reply. */
static enum reply_id store_error(const json_t *reply)
{
	const char *code = json_string_value(json_object_get(reply, "code"));
	if (code == NULL)
		return R_TEMP_STORE;
	if (strcmp(code, "disk_full") == 0)
		return R_DISK_FULL;
	if (strcmp(code, "mailbox_full") == 0)
		return R_MAILBOX_FULL;
	if (strcmp(code, "too_big") == 0)
		return R_SIZE_EXCEEDED;
	return R_TEMP_STORE;
}

/* smtpd.message.received, after the durable commit. */
static void deliver_announce(session_t *s)
{
	txn_t *t = &s->txn;
	json_t *ev = json_pack("{s:s, s:s, s:s, s:I, s:i, s:i, s:b}", "type",
			       "smtpd.message.received", "qid", t->id, "client", s->ip,
			       "size", (json_int_t)t->size, "deliveries",
			       (int)json_array_size(t->deliveries), "forwards",
			       (int)json_array_size(t->forwards), "tls", s->tls);
	bus_publish(s->d->pub, &ev, NULL, 0);
}

/* A chunk was acknowledged (or failed); the last one's reply is the
 * result of the whole store. */
static void store_ack(bus_stream_t *st, json_t **reply, void *arg)
{
	(void)st;
	session_t *s = arg;
	txn_t *t = &s->txn;
	t->inflight = false;
	chunk_account(s, t->bufcap, 0);   /* the bus is done with the chunk */
	if (!bus_reply_ok(*reply)) {
		const char *why = json_string_value(json_object_get(*reply, "error"));
		log_warn("store.failed", "qid=%s code=%s why=%s", t->id,
			 log_quote(json_string_value(json_object_get(*reply, "code"))),
			 log_quote(why));
		deliver_fail(s, store_error(*reply));
		if (t->committing || t->ended) {
			t->committing = false;
			smtp_store_done(s, (enum reply_id)t->fail);
		}
	} else if (t->committing) {
		t->committing = false;
		s->d->stats.messages++;
		s->d->stats.bytes += t->size;
		deliver_announce(s);
		smtp_store_done(s, R_STORED);
	} else if (t->ended) {
		deliver_finish(s);   /* the client finished while this chunk flew */
	}
	if (!t->calling)
		session_resume(s);
}

/* Sends the buffer as the next chunk. */
static void store_send(session_t *s, bool last)
{
	txn_t *t = &s->txn;
	t->inflight = true;
	t->calling = true;
	size_t len = t->buflen, held = t->bufcap;
	/* Fitted first: a 100 KiB message must not keep the 128 KiB the
	 * buffer grew to while it waits for the commit (in place, no copy). */
	if (t->bufcap - len > 4096) {
		t->buf = xrealloc(t->buf, len ? len : 1);
		held = len;
	}
	chunk_account(s, 0, held);
	/* the buffer itself goes to the bus (no copy); it frees it after the
	 * acknowledgement, so a session holds one chunk, never two */
	if (bus_stream_write_give(t->stream, (void **)&t->buf, len, last) < 0) {
		log_error("store.write", "qid=%s why=\"chunk while one is in flight\"", t->id);
		chunk_account(s, 0, 0);
	}
	t->calling = false;
	t->sent += len;
	t->buf = NULL;
	t->buflen = 0;
}

void deliver_finish(session_t *s)
{
	txn_t *t = &s->txn;
	t->ended = true;
	if (t->fail == 0 && t->stream != NULL && !t->inflight) {
		enum reply_id r = deliver_policy_data(s);
		if (r != R_OK)
			deliver_fail(s, r);
	}
	if (t->fail != 0) {
		smtp_store_done(s, (enum reply_id)t->fail);
		return;
	}
	if (t->inflight || t->committing)
		return;   /* store_ack comes back here */
	t->committing = true;
	store_send(s, true);
}

/* The transaction's one log line (queue id, client, envelope, size, result). */
void deliver_log(session_t *s, const char *result)
{
	txn_t *t = &s->txn;
	char to[1024];
	size_t o = 0;
	to[0] = '\0';
	for (size_t i = 0; i < t->nrcpt && o < sizeof to - 1; i++) {
		int n = snprintf(to + o, sizeof to - o, "%s%s", i ? "," : "", t->rcpts[i]);
		if (n < 0)
			break;
		o += (size_t)n;
	}
	bool ok = strcmp(result, "stored") == 0;
	if (!ok)
		s->d->stats.rejected++;
	log_info("txn", "qid=%s ip=%s helo=%s from=%s to=%s nrcpt=%zu size=%llu tls=%s result=%s ms=%lld",
		 t->id[0] ? t->id : "-", s->ip, log_quote(s->helo), log_quote(t->from), log_quote(to),
		 t->nrcpt, (unsigned long long)t->size, s->tls ? "yes" : "no", log_quote(result),
		 (long long)(now_ms() - t->started));
}
