/*
 * fetch.c — FETCH and UID FETCH (RFC 3501 6.4.5, 7.4.2; CONDSTORE's MODSEQ
 * and CHANGEDSINCE, RFC 7162).
 *
 * FETCH pages through storaged.message.list (flags, sizes, dates) and,
 * when the message itself is needed, reads it with storaged.message.fetch
 * in pieces of IMAPD_MSG_PIECE. It pauses while the output is over
 * IMAPD_OUTBUF_MAX, so a slow reader holds one page and one message. A
 * large BODY[] is streamed (below). A non-PEEK body fetch sets \Seen first
 * (storaged.message.flags) and answers the new FLAGS with the item (6.4.5).
 *
 * ENVELOPE, BODY, BODYSTRUCTURE and every BODY[section] but the whole
 * message come from mimefmt.c (lib/mime's bounded parser).
 *
 * Ownership: everything lives in the cmd_t and goes with imap_cmd_end.
 */
#include "imapd.h"
#include "log.h"
#include "qresync.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static void fetch_ask(session_t *s, uint32_t from);
static void fetch_next(session_t *s);
static void fetch_start(session_t *s);

/* One BODY[...] item: the section's bytes (mimefmt.c), cut by <partial>,
 * as a literal. */
static void fetch_body(strbuf_t *sb, const fetch_body_t *b, const char *msg, size_t len)
{
	strbuf_t part = STRBUF_INIT;
	const char *p = msg;
	size_t n = len;
	if (b->sect.depth > 0 || b->sect.kind != SECT_ALL) {
		/* -1 (MIME of the message itself) cannot pass the parser */
		if (mimefmt_section(msg, len, &b->sect, &part) < 0)
			sb_truncate(&part, 0);
		p = part.buf ? part.buf : "";
		n = part.len;
	}
	if (b->partial) {
		size_t o = b->origin < n ? (size_t)b->origin : n;
		p += o;
		n = n - o < b->count ? n - o : (size_t)b->count;
	}
	sb_addf(sb, " %s {%zu}\r\n", b->name, n);
	sb_add(sb, p, n);
	sb_free(&part);
}

/* "* seq FETCH (UID n" and the items that come from the list entry. */
static void fetch_head(session_t *s, uint32_t seq, strbuf_t *sb)
{
	cmd_t *c = s->cmd;
	fetch_req_t *f = c->fetch;
	json_t *m = c->msg;
	sb_addf(sb, "* %u FETCH (UID %lld", (unsigned)seq,
		(long long)json_integer_value(json_object_get(m, "uid")));
	if (f->items & FI_FLAGS || c->seen_now) {
		sb_adds(sb, " FLAGS ");
		imap_flags(sb, json_object_get(m, "flags"));
	}
	if (f->items & FI_INTERNALDATE) {
		char date[64];
		time_t t = (time_t)json_integer_value(json_object_get(m, "internaldate"));
		struct tm tm;
		gmtime_r(&t, &tm);
		strftime(date, sizeof date, "%d-%b-%Y %H:%M:%S +0000", &tm);
		sb_addf(sb, " INTERNALDATE \"%s\"", date);
	}
	if (f->items & FI_SIZE)
		sb_addf(sb, " RFC822.SIZE %lld", (long long)json_integer_value(json_object_get(m, "size")));
	if (f->items & FI_MODSEQ)
		sb_addf(sb, " MODSEQ (%lld)", (long long)json_integer_value(json_object_get(m, "modseq")));
}

/* "* seq FETCH (...)" for the message in c->msg (bytes in c->buf if read),
 * written straight into the session's output: no third copy. */
static void fetch_emit(session_t *s, uint32_t seq)
{
	cmd_t *c = s->cmd;
	fetch_req_t *f = c->fetch;
	strbuf_t *sb = &s->out;
	if (s->closed)
		return;
	fetch_head(s, seq, sb);
	const char *msg = c->buf.buf ? c->buf.buf : "";
	size_t len = c->buf.len, off = (size_t)c->body_off;
	if (off > len)
		off = len;
	if (f->items & FI_RFC822_HEADER) {
		sb_addf(sb, " RFC822.HEADER {%zu}\r\n", off);
		sb_add(sb, msg, off);
	}
	if (f->items & FI_RFC822_TEXT) {
		sb_addf(sb, " RFC822.TEXT {%zu}\r\n", len - off);
		sb_add(sb, msg + off, len - off);
	}
	if (f->items & FI_RFC822) {
		sb_addf(sb, " RFC822 {%zu}\r\n", len);
		sb_add(sb, msg, len);
	}
	if (f->items & FI_ENVELOPE) {
		sb_adds(sb, " ENVELOPE ");
		mimefmt_envelope(msg, len, sb);
	}
	if (f->items & FI_BODY) {
		sb_adds(sb, " BODY ");
		mimefmt_bodystructure(msg, len, false, sb);
	}
	if (f->items & FI_BODYSTRUCTURE) {
		sb_adds(sb, " BODYSTRUCTURE ");
		mimefmt_bodystructure(msg, len, true, sb);
	}
	for (size_t i = 0; i < f->nbodies; i++)
		fetch_body(sb, &f->bodies[i], msg, len);
	sb_adds(sb, ")\r\n");
}

/* ---- FETCH of one large BODY[]: streamed -------------------------------------------
 *
 * BODY[] (or BODY.PEEK[], with or without <partial>) of a message over
 * IMAPD_STREAM_MIN, alone or with items from the list entry, goes to the
 * client piece by piece as storaged sends it: the literal's length is known
 * from RFC822.SIZE, so imapd holds one piece, not the message. A message
 * that turns out shorter (expunged and freed meanwhile) cannot be finished
 * in step with the promised length: the session ends with BYE.
 */
#define IMAPD_STREAM_MIN (256 * 1024)

static void fetch_stream_ask(session_t *s);

static void fetch_stream_piece(session_t *s, json_t *reply, const void *raw, size_t rawlen)
{
	cmd_t *c = s->cmd;
	if (!bus_reply_ok(reply) || rawlen == 0 || rawlen > c->stream_left) {
		log_warn("fetch.stream", "session=%llu why=\"message gone or changed mid-literal\"",
			 (unsigned long long)s->serial);
		session_printf(s, "\r\n* BYE Message changed while being sent\r\n");
		session_close_after_flush(s);
		imap_cmd_end(s);
		return;
	}
	session_write(s, raw, rawlen);
	c->stream_left -= rawlen;
	c->stream_off += rawlen;
	if (c->stream_left > 0) {
		if (session_out_full(s))
			imap_pause(s, fetch_stream_ask);
		else
			fetch_stream_ask(s);
		return;
	}
	session_printf(s, ")\r\n");
	json_decref(c->msg);
	c->msg = NULL;
	c->seen_now = false;
	c->page_i++;
	fetch_next(s);
}

static void fetch_stream_ask(session_t *s)
{
	cmd_t *c = s->cmd;
	uint64_t n = c->stream_left < IMAPD_MSG_PIECE ? c->stream_left : IMAPD_MSG_PIECE;
	json_t *req = bus_env_new("storaged.message.fetch");
	json_object_set_new(req, "mailbox", json_string(s->mbox.name));
	json_object_set_new(req, "uid", json_incref(json_object_get(c->msg, "uid")));
	json_object_set_new(req, "offset", json_integer((json_int_t)c->stream_off));
	json_object_set_new(req, "length", json_integer((json_int_t)n));
	imap_call(s, &req, fetch_stream_piece);
}

enum stream_result { ST_NO, ST_STARTED, ST_ANSWERED };

/* Streams this message's answer if it is a large BODY[]: ST_STARTED, or
 * ST_ANSWERED when there was nothing to read (an empty partial). */
static enum stream_result fetch_stream(session_t *s, uint32_t seq)
{
	cmd_t *c = s->cmd;
	fetch_req_t *f = c->fetch;
	uint64_t size = (uint64_t)json_integer_value(json_object_get(c->msg, "size"));
	if (!f->streamable || size < IMAPD_STREAM_MIN)
		return ST_NO;
	const fetch_body_t *b = &f->bodies[0];
	uint64_t off = b->partial ? (b->origin < size ? b->origin : size) : 0;
	uint64_t len = size - off;
	if (b->partial && b->count < len)
		len = b->count;
	fetch_head(s, seq, &s->out);
	session_printf(s, " %s {%llu}\r\n", b->name, (unsigned long long)len);
	if (len == 0) {
		session_printf(s, ")\r\n");
		return ST_ANSWERED;
	}
	c->stream_off = off;
	c->stream_left = len;
	fetch_stream_ask(s);
	return ST_STARTED;
}

static void fetch_piece(session_t *s, json_t *reply, const void *raw, size_t rawlen);

static void fetch_read(session_t *s)
{
	cmd_t *c = s->cmd;
	json_t *req = bus_env_new("storaged.message.fetch");
	json_object_set_new(req, "mailbox", json_string(s->mbox.name));
	json_object_set_new(req, "uid", json_object_get(c->msg, "uid") ?
			    json_incref(json_object_get(c->msg, "uid")) : json_integer(0));
	json_object_set_new(req, "offset", json_integer((json_int_t)c->buf.len));
	json_object_set_new(req, "length", json_integer(IMAPD_MSG_PIECE));
	imap_call(s, &req, fetch_piece);
}

/* The message is complete (or was not needed): answer it, go on. */
static void fetch_answer(session_t *s)
{
	cmd_t *c = s->cmd;
	uint32_t uid = (uint32_t)json_integer_value(json_object_get(c->msg, "uid"));
	uint32_t seq = mbox_seq(&s->mbox, uid);
	if (seq != 0)
		fetch_emit(s, seq);
	sb_free(&c->buf);
	json_decref(c->msg);
	c->msg = NULL;
	c->seen_now = false;
	c->page_i++;
	fetch_next(s);
}

static void fetch_piece(session_t *s, json_t *reply, const void *raw, size_t rawlen)
{
	cmd_t *c = s->cmd;
	if (!bus_reply_ok(reply)) {
		const char *code = json_string_value(json_object_get(reply, "code"));
		if (code != NULL && strcmp(code, "not_found") == 0) {
			/* expunged since the page was read: nothing to show */
			sb_free(&c->buf);
			json_decref(c->msg);
			c->msg = NULL;
			c->page_i++;
			fetch_next(s);
			return;
		}
		imap_fail_reply(s, reply, "FETCH");
		return;
	}
	uint64_t size = (uint64_t)json_integer_value(json_object_get(reply, "size"));
	c->body_off = (uint64_t)json_integer_value(json_object_get(reply, "body_offset"));
	if (size > (uint64_t)s->d->conf.max_size * 2) {
		imap_done(s, "NO", "[LIMIT] Message too large to fetch");
		return;
	}
	if (raw != NULL && rawlen > 0)
		sb_add(&c->buf, raw, rawlen);
	if (c->buf.len < size && rawlen > 0) {
		fetch_read(s);
		return;
	}
	fetch_answer(s);
}

/* The message's answer: streamed, read whole first, or from the list alone. */
static void fetch_bytes(session_t *s)
{
	cmd_t *c = s->cmd;
	uint32_t seq = mbox_seq(&s->mbox, (uint32_t)json_integer_value(json_object_get(c->msg, "uid")));
	enum stream_result r = seq != 0 ? fetch_stream(s, seq) : ST_NO;
	if (r == ST_STARTED)
		return;
	if (r == ST_ANSWERED) {
		json_decref(c->msg);
		c->msg = NULL;
		c->seen_now = false;
		c->page_i++;
		fetch_next(s);
	} else if (c->fetch->needs_bytes) {
		fetch_read(s);
	} else {
		fetch_answer(s);
	}
}

static void fetch_seen(session_t *s, json_t *reply, const void *raw, size_t rawlen)
{
	(void)raw; (void)rawlen;
	cmd_t *c = s->cmd;
	if (!bus_reply_ok(reply)) {
		imap_fail_reply(s, reply, "FETCH");
		return;
	}
	json_t *ch = json_array_get(json_object_get(reply, "changed"), 0);
	if (s->mbox.view != NULL && s->mbox.view->uidvalidity == s->mbox.uidvalidity)
		view_apply(s->mbox.view, json_object_get(reply, "changed"),
			   (uint64_t)json_integer_value(json_object_get(reply, "highestmodseq")));
	if (ch != NULL) {
		json_object_set(c->msg, "flags", json_object_get(ch, "flags"));
		json_object_set(c->msg, "modseq", json_object_get(ch, "modseq"));
	}
	c->seen_now = true;   /* FLAGS go with the answer (6.4.5) */
	fetch_bytes(s);
}

/* The next message of the page, or the next page, or the end. */
static void fetch_next(session_t *s)
{
	cmd_t *c = s->cmd;
	fetch_req_t *f = c->fetch;
	json_t *msgs = json_object_get(c->page, "messages");
	while (c->page_i < json_array_size(msgs)) {
		if (session_out_full(s)) {
			imap_pause(s, fetch_next);
			return;
		}
		json_t *m = json_array_get(msgs, c->page_i);
		uint32_t uid = (uint32_t)json_integer_value(json_object_get(m, "uid"));
		if (mbox_seq(&s->mbox, uid) == 0) {
			c->page_i++;   /* not announced (yet): the client does not know it */
			continue;
		}
		c->msg = json_deep_copy(m);
		c->seen_now = false;
		sb_free(&c->buf);
		if (f->sets_seen && !s->mbox.readonly &&
		    !json_has_flag(json_object_get(m, "flags"), "\\Seen")) {
			char set[16];
			snprintf(set, sizeof set, "%u", (unsigned)uid);
			json_t *req = bus_env_new("storaged.message.flags");
			imap_idem(s, req);
			json_object_set_new(req, "mailbox", json_string(s->mbox.name));
			json_object_set_new(req, "uids", json_string(set));
			json_object_set_new(req, "op", json_string("add"));
			json_object_set_new(req, "flags", json_pack("[s]", "\\Seen"));
			imap_call(s, &req, fetch_seen);
			return;
		}
		fetch_bytes(s);
		return;
	}
	uint32_t next;
	if (next_of(c->page, &next)) {
		fetch_ask(s, next);
		return;
	}
	imap_done(s, "OK", "%s completed", c->name);
}

static void fetch_page(session_t *s, json_t *reply, const void *raw, size_t rawlen)
{
	(void)raw; (void)rawlen;
	cmd_t *c = s->cmd;
	if (!bus_reply_ok(reply)) {
		imap_fail_reply(s, reply, c->name);
		return;
	}
	json_decref(c->page);
	c->page = json_incref(reply);
	c->page_i = 0;
	fetch_next(s);
}

/* ---- FETCH from the view ------------------------------------------------------------
 *
 * Items the view has (UID, FLAGS, INTERNALDATE, RFC822.SIZE, MODSEQ) are
 * written from it directly, the set walked through the session's map;
 * anything that needs the message gets its list page from the view, so
 * only the message itself is read from storaged. A message of the map the
 * view no longer has was expunged and is not yet announced: nothing is
 * shown for it, as storaged's list would not show it either.
 */

/* The items of one message, from the view. */
static void fetch_view_emit(session_t *s, uint32_t seq, const vmsg_t *vm)
{
	fetch_req_t *f = s->cmd->fetch;
	strbuf_t *sb = &s->out;
	sb_adds(sb, "* ");
	sb_addu(sb, seq);
	sb_adds(sb, " FETCH (UID ");
	sb_addu(sb, vm->uid);
	if (f->items & FI_FLAGS) {
		sb_adds(sb, " FLAGS ");
		view_flags(sb, s->mbox.view, vm->flags);
	}
	if (f->items & FI_INTERNALDATE) {
		char date[64];
		time_t t = (time_t)vm->idate;
		struct tm tm;
		gmtime_r(&t, &tm);
		strftime(date, sizeof date, "%d-%b-%Y %H:%M:%S +0000", &tm);
		sb_addf(sb, " INTERNALDATE \"%s\"", date);
	}
	if (f->items & FI_SIZE) {
		sb_adds(sb, " RFC822.SIZE ");
		sb_addu(sb, vm->size);
	}
	if (f->items & FI_MODSEQ) {
		sb_adds(sb, " MODSEQ (");
		sb_addu(sb, vm->modseq);
		sb_addc(sb, ')');
	}
	sb_adds(sb, ")\r\n");
}

/* Walks the set (c->vset) over the map from c->page_i, pausing when the
 * output is full. */
static void fetch_view_next(session_t *s)
{
	cmd_t *c = s->cmd;
	mbox_t *m = &s->mbox;
	if (s->closed)
		return;   /* the session ends: nobody to write to */
	while (c->vset_i < c->vset->n) {
		const struct seq_range *r = &c->vset->r[c->vset_i];
		for (; c->page_i < m->n && m->uids[c->page_i] <= r->hi; c->page_i++) {
			if (session_out_full(s)) {
				imap_pause(s, fetch_view_next);
				return;
			}
			const vmsg_t *vm = m->view ? view_find_near(m->view, m->uids[c->page_i], &c->view_i) : NULL;
			if (vm == NULL || (c->fetch->changedsince && vm->modseq <= c->fetch->changedsince))
				continue;
			fetch_view_emit(s, (uint32_t)c->page_i + 1, vm);
		}
		if (++c->vset_i < c->vset->n)
			c->page_i = mbox_lower(m, c->vset->r[c->vset_i].lo);
	}
	imap_done(s, "OK", "%s completed", c->name);
}

/* A storaged.message.list page made from the view: up to limit messages
 * of the set from UID from on, with "next" if there are more. */
static json_t *fetch_view_page_new(session_t *s, uint32_t from, size_t limit)
{
	cmd_t *c = s->cmd;
	view_t *v = s->mbox.view;
	json_t *msgs = json_array(), *page = json_object();
	for (size_t r = 0; r < c->vset->n; r++) {
		uint32_t lo = c->vset->r[r].lo > from ? c->vset->r[r].lo : from;
		if (c->vset->r[r].hi < lo)
			continue;
		for (size_t k = mbox_lower(&s->mbox, lo);
		     k < s->mbox.n && s->mbox.uids[k] <= c->vset->r[r].hi; k++) {
			const vmsg_t *vm = view_find(v, s->mbox.uids[k]);
			if (vm == NULL || (c->fetch->changedsince && vm->modseq <= c->fetch->changedsince))
				continue;
			if (json_array_size(msgs) == limit) {
				json_object_set_new(page, "next", json_integer(vm->uid));
				goto full;
			}
			json_array_append_new(msgs, view_msg_json_new(v, vm));
		}
	}
full:
	json_object_set_new(page, "messages", msgs);
	return page;
}

static bool fetch_from_view(session_t *s, uint32_t from)
{
	cmd_t *c = s->cmd;
	fetch_req_t *f = c->fetch;
	const char *why;
	if (from <= 1 && view_loading(s->mbox.view)) {
		view_wait(s, fetch_start);   /* cheaper than the list beside it */
		return true;
	}
	if (!view_ready(s->mbox.view) || !view_serves(s))
		return false;
	if (c->vset == NULL) {
		c->vset = xmalloc(sizeof *c->vset);
		if (seqset_parse(c->vset, c->set, 0, &why) < 0) {
			free(c->vset);
			c->vset = NULL;
			return false;
		}
	}
	if (!f->needs_bytes && !f->sets_seen && from <= 1) {
		c->vset_i = 0;
		c->page_i = c->vset->n ? mbox_lower(&s->mbox, c->vset->r[0].lo) : 0;
		fetch_view_next(s);
		return true;
	}
	json_decref(c->page);
	c->page = fetch_view_page_new(s, from, f->needs_bytes ? 50 : 500);
	c->page_i = 0;
	fetch_next(s);
	return true;
}

static void fetch_ask(session_t *s, uint32_t from)
{
	cmd_t *c = s->cmd;
	char *set = from > 1 ? msg_set_from(c, from) : xstrdup(c->set);
	if (set == NULL || set[0] == '\0') {
		free(set);
		imap_done(s, "OK", "%s completed", c->name);
		return;
	}
	if (fetch_from_view(s, from)) {
		free(set);
		return;
	}
	json_t *req = bus_env_new("storaged.message.list");
	json_object_set_new(req, "mailbox", json_string(s->mbox.name));
	json_object_set_new(req, "uids", json_string(set));
	json_object_set_new(req, "limit", json_integer(c->fetch->needs_bytes ? 50 : 500));
	if (c->fetch->changedsince)
		json_object_set_new(req, "changedsince", json_integer((json_int_t)c->fetch->changedsince));
	free(set);
	imap_call(s, &req, fetch_page);
}

static void fetch_start(session_t *s)
{
	fetch_ask(s, 1);
}

void cmd_fetch(session_t *s)
{
	cmd_t *c = s->cmd;
	imap_parser_t *ip = &c->ip;
	if (!msg_set_arg(s))
		return;
	c->fetch = xmalloc(sizeof *c->fetch);
	if (!ip_sp(ip) || !ip_fetch_atts(ip, c->fetch) || !ip_eol(ip)) {
		imap_done(s, "BAD", "%s", ip->err ? ip->err : "bad FETCH items");
		return;
	}
	fetch_req_t *f = c->fetch;
	f->streamable = f->nbodies == 1 && f->bodies[0].sect.depth == 0 &&
			f->bodies[0].sect.kind == SECT_ALL &&
			!(f->items & (FI_ENVELOPE | FI_BODY | FI_BODYSTRUCTURE | FI_RFC822 |
				      FI_RFC822_HEADER | FI_RFC822_TEXT));
	if (f->items & FI_MODSEQ)
		s->condstore = true;   /* RFC 7162 3.1: enabling */
	if (qresync_fetch(s, fetch_start))
		return;   /* (CHANGEDSINCE n VANISHED): VANISHED (EARLIER) first, qresync.c */
	fetch_ask(s, 1);
}
