/*
 * qresync.c — QRESYNC (RFC 7162 section 3.2): a client that comes back
 * learns what was expunged and what changed while it was away, without
 * fetching the whole mailbox's UIDs and flags again.
 *
 *   ENABLE QRESYNC (imap.c)        s->qresync, and CONDSTORE with it (3.2.3)
 *   SELECT mb (QRESYNC (uv ms [known-uids] [(seqs uids)]))
 *                                  the usual responses, then, if uv is the
 *                                  mailbox's UIDVALIDITY (3.2.5.2):
 *                                    * VANISHED (EARLIER) uids
 *                                    * n FETCH (UID u FLAGS (...) MODSEQ (m))
 *   UID FETCH set items (CHANGEDSINCE ms VANISHED)
 *                                  * VANISHED (EARLIER) uids, then the FETCH (3.2.6)
 *   expunges, after ENABLE QRESYNC  * VANISHED uids instead of * n EXPUNGE (3.2.10)
 *   SELECT while one is selected   * OK [CLOSED] first (3.2.11; we advertise QRESYNC)
 *
 * The expunged UIDs come from storaged.message.vanished (the expunged
 * table), a page of at most 48 KiB of set text at a time, with the
 * session's UIDVALIDITY so that a mailbox deleted and created again in
 * between never answers for the old one. A UID still in the session's map
 * is left out of VANISHED (EARLIER): the client has not been told of its
 * expunge yet, and hears of it as VANISHED with the next update, which
 * also moves the sequence numbers (3.2.10).
 *
 * known-uids is a hint: what we report is the expunged UIDs of that set
 * above the highest seq-match-data pair that still holds (no message below
 * it can have gone: see qresync_match), never fewer. The FETCH of changed
 * messages covers the whole mailbox (the known-uids do not limit it), and
 * only messages in the map: newer ones reach the client as EXISTS.
 *
 * Ownership: the command's struct qresync (cmd->qr) owns the parsed
 * parameter and the set text; imap_cmd_end frees it (qresync_free).
 * Replies are borrowed by the continuation they reach.
 */
#include "qresync.h"

#include "log.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define QRESYNC_LINE_MAX 8192      /* set text per "* VANISHED" line of our own expunges */
#define QRESYNC_PAGE 1000          /* changed messages per storaged.message.list */
#define QRESYNC_MODSEQ_MAX 9223372036854775807ULL   /* mod-sequence-value: 63 bits */

/* A command's QRESYNC work: SELECT's resync or UID FETCH's VANISHED. */
struct qresync {
	qresync_param_t p;          /* SELECT's parameter */
	char *set;                  /* the UIDs asked about, set text (owned) */
	uint64_t since;             /* report what changed after this MODSEQ */
	uint32_t from;              /* the next page's first UID */
	bool selecting;             /* SELECT: the changed messages' FETCH follows */
	void (*done)(session_t *s);
};

/* ---- parsing (no session state) ------------------------------------------------------ */

/* A sequence set of QRESYNC's (no "*", RFC 7162 7): owned, or NULL with ip->err. */
static seqset_t *qr_set(imap_parser_t *ip)
{
	const char *t = ip_seqset(ip), *why;
	if (t == NULL)
		return NULL;
	if (strchr(t, '*') != NULL) {
		ip_fail(ip, "'*' is not allowed in QRESYNC's sets");
		return NULL;
	}
	seqset_t *set = xmalloc(sizeof *set);
	if (seqset_parse(set, t, 0, &why) < 0) {
		free(set);
		ip_fail(ip, why);
		return NULL;
	}
	return set;
}

/* The number of elements of a set (ranges count each member). */
static uint64_t qr_count(const seqset_t *set)
{
	uint64_t n = 0;
	for (size_t i = 0; i < set->n; i++)
		n += (uint64_t)set->r[i].hi - set->r[i].lo + 1;
	return n;
}

/* "(" uidvalidity SP mod-sequence-value [SP known-uids] [SP seq-match-data] ")" */
static bool qr_param(imap_parser_t *ip, qresync_param_t *q)
{
	if (!ip_char(ip, '(') || !ip_number(ip, &q->uidvalidity, UINT32_MAX) ||
	    q->uidvalidity == 0 || !ip_sp(ip) ||
	    !ip_number(ip, &q->modseq, QRESYNC_MODSEQ_MAX) || q->modseq == 0)
		return ip_fail(ip, "QRESYNC needs (uidvalidity modseq ...), both non-zero");
	bool sp = ip_char(ip, ' ');
	if (sp && !ip_peek(ip, '(')) {
		if ((q->known = qr_set(ip)) == NULL)
			return false;
		sp = ip_char(ip, ' ');
	}
	if (sp) {   /* after a space only seq-match-data may come */
		if (!ip_char(ip, '('))
			return ip_fail(ip, "bad seq-match-data");
		if ((q->match_seqs = qr_set(ip)) == NULL || !ip_sp(ip) ||
		    (q->match_uids = qr_set(ip)) == NULL || !ip_char(ip, ')'))
			return ip_fail(ip, "bad seq-match-data");
		/* the sets pair up member by member: they must be as long */
		if (qr_count(q->match_seqs) != qr_count(q->match_uids))
			return ip_fail(ip, "seq-match-data: the two sets differ in length");
	}
	return ip_char(ip, ')') || ip_fail(ip, "expected ')'");
}

bool qresync_parse_select(imap_parser_t *ip, qresync_param_t *q, bool *qresync, bool *condstore)
{
	memset(q, 0, sizeof *q);
	*qresync = *condstore = false;
	if (!ip_char(ip, '('))
		return ip_fail(ip, "expected '('");
	do {
		const char *p = ip_atom(ip);
		if (p == NULL)
			return false;
		if (strcasecmp(p, "CONDSTORE") == 0 && !*condstore) {
			*condstore = true;
		} else if (strcasecmp(p, "QRESYNC") == 0 && !*qresync) {
			if (!ip_sp(ip) || !qr_param(ip, q))
				return ip_fail(ip, "bad QRESYNC parameter");
			*qresync = true;
		} else {
			return ip_fail(ip, "unknown or repeated SELECT parameter");
		}
	} while (ip_char(ip, ' '));
	return ip_char(ip, ')') || ip_fail(ip, "expected ')'");
}

void qresync_param_clear(qresync_param_t *q)
{
	free(q->known);
	free(q->match_seqs);
	free(q->match_uids);
	memset(q, 0, sizeof *q);
}

/*
 * If message s of the client's view (UID u) is still message s, then no
 * message below u has gone: new messages only get UIDs above every older
 * one, so the s - 1 UIDs below u now are all the client knew. The highest
 * such u of the pairs (at most QRESYNC_MATCH_MAX of them are compared).
 */
uint32_t qresync_match(const qresync_param_t *q, const seqmap_t *map)
{
	if (q->match_seqs == NULL || q->match_uids == NULL)
		return 0;
	const seqset_t *a = q->match_seqs, *b = q->match_uids;
	size_t i = 0, j = 0;
	uint64_t x = a->n ? a->r[0].lo : 0, y = b->n ? b->r[0].lo : 0, best = 0;
	for (unsigned k = 0; k < QRESYNC_MATCH_MAX && i < a->n && j < b->n; k++) {
		if (x >= 1 && x <= map->n && map->uids[x - 1] == y && y > best)
			best = y;
		if (++x > a->r[i].hi && ++i < a->n)
			x = a->r[i].lo;
		if (++y > b->r[j].hi && ++j < b->n)
			y = b->r[j].lo;
	}
	return (uint32_t)best;
}

/* ---- the session's side ---------------------------------------------------------------- */

void qresync_free(struct qresync **q)
{
	if (*q == NULL)
		return;
	qresync_param_clear(&(*q)->p);
	free((*q)->set);
	free(*q);
	*q = NULL;
}

bool qresync_select_arg(session_t *s)
{
	cmd_t *c = s->cmd;
	qresync_param_t p;
	bool qresync, condstore;
	if (!qresync_parse_select(&c->ip, &p, &qresync, &condstore)) {
		qresync_param_clear(&p);
		imap_done(s, "BAD", "%s", c->ip.err ? c->ip.err : "bad SELECT parameters");
		return false;
	}
	if (qresync && !s->qresync) {
		/* 3.2.5: the client must have said it understands VANISHED */
		qresync_param_clear(&p);
		imap_done(s, "BAD", "QRESYNC parameter without ENABLE QRESYNC");
		return false;
	}
	if (condstore)
		s->condstore = true;   /* RFC 7162 3.1: a CONDSTORE-enabling command */
	if (qresync) {
		c->qr = xcalloc(1, sizeof *c->qr);
		c->qr->p = p;   /* takes the sets */
	}
	return true;
}

void qresync_closed(session_t *s)
{
	if (s->state == IS_SELECTED)
		session_printf(s, "* OK [CLOSED] Previous mailbox closed\r\n");
}

/* A failure in the middle: the command ends with NO (a SELECT without a mailbox). */
static void qr_fail(session_t *s, const json_t *reply)
{
	if (s->cmd->qr->selecting) {
		mbox_clear(&s->mbox);
		imap_enter_state(s, IS_AUTH);
	}
	imap_fail_reply(s, reply, s->cmd->name);
}

struct qr_gaps {
	const mbox_t *m;
	strbuf_t *sb;
	size_t start;
};

static void qr_gap_add(struct qr_gaps *g, uint32_t lo, uint32_t hi)
{
	if (lo > hi)
		return;
	if (g->sb->len > g->start)
		sb_addc(g->sb, ',');
	if (lo == hi)
		sb_addf(g->sb, "%u", (unsigned)lo);
	else
		sb_addf(g->sb, "%u:%u", (unsigned)lo, (unsigned)hi);
}

/* uidset_each: the UIDs of [lo, hi] that are not in the map, as set text. */
static void qr_gaps_range(uint32_t lo, uint32_t hi, void *arg)
{
	struct qr_gaps *g = arg;
	uint64_t cur = lo;
	for (size_t k = mbox_lower(g->m, lo); k < g->m->n && g->m->uids[k] <= hi; k++) {
		if (g->m->uids[k] > cur)
			qr_gap_add(g, (uint32_t)cur, g->m->uids[k] - 1);
		cur = (uint64_t)g->m->uids[k] + 1;
	}
	if (cur <= hi)
		qr_gap_add(g, (uint32_t)cur, hi);
}

static void qr_changed_ask(session_t *s);
static void qr_vanished_ask(session_t *s);

/* What follows the expunges: SELECT's FETCH of the changed messages, or
 * the command's own continuation. */
static void qr_vanished_end(session_t *s)
{
	struct qresync *q = s->cmd->qr;
	q->from = 1;
	if (q->selecting)
		qr_changed_ask(s);
	else
		q->done(s);
}

static void qr_vanished_page(session_t *s, json_t *reply, const void *raw, size_t rawlen)
{
	(void)raw; (void)rawlen;
	struct qresync *q = s->cmd->qr;
	const char *uids = json_string_value(json_object_get(reply, "uids"));
	strbuf_t sb = STRBUF_INIT;
	sb_adds(&sb, "* VANISHED (EARLIER) ");
	struct qr_gaps g = { &s->mbox, &sb, sb.len };
	if (!bus_reply_ok(reply) || uids == NULL || !uidset_each(uids, qr_gaps_range, &g)) {
		sb_free(&sb);
		qr_fail(s, reply);
		return;
	}
	if (sb.len > g.start) {
		sb_adds(&sb, "\r\n");
		session_write(s, sb.buf, sb.len);
	}
	sb_free(&sb);
	uint32_t next;
	if (!next_of(reply, &next)) {
		qr_vanished_end(s);
		return;
	}
	q->from = next;
	if (session_out_full(s))
		imap_pause(s, qr_vanished_ask);   /* a slow reader holds one page */
	else
		qr_vanished_ask(s);
}

static void qr_vanished_ask(session_t *s)
{
	struct qresync *q = s->cmd->qr;
	json_t *req = bus_env_new("storaged.message.vanished");
	json_object_set_new(req, "mailbox", json_string(s->mbox.name));
	json_object_set_new(req, "changedsince", json_integer((json_int_t)q->since));
	json_object_set_new(req, "uids", json_string(q->set));
	json_object_set_new(req, "uidvalidity", json_integer((json_int_t)s->mbox.uidvalidity));
	if (q->from > 1)
		json_object_set_new(req, "from", json_integer(q->from));
	imap_call(s, &req, qr_vanished_page);
}

static void qr_changed_page(session_t *s, json_t *reply, const void *raw, size_t rawlen)
{
	(void)raw; (void)rawlen;
	struct qresync *q = s->cmd->qr;
	if (!bus_reply_ok(reply)) {
		qr_fail(s, reply);
		return;
	}
	size_t i;
	json_t *msg;
	strbuf_t sb = STRBUF_INIT;
	json_array_foreach(json_object_get(reply, "messages"), i, msg) {
		uint32_t uid = (uint32_t)json_integer_value(json_object_get(msg, "uid"));
		uint32_t seq = mbox_seq(&s->mbox, uid);
		if (seq == 0)
			continue;   /* newer than the map: EXISTS tells of it */
		sb_truncate(&sb, 0);
		sb_addf(&sb, "* %u FETCH (UID %u FLAGS ", (unsigned)seq, (unsigned)uid);
		imap_flags(&sb, json_object_get(msg, "flags"));
		sb_addf(&sb, " MODSEQ (%lld))\r\n",
			(long long)json_integer_value(json_object_get(msg, "modseq")));
		session_write(s, sb.buf, sb.len);
	}
	sb_free(&sb);
	uint32_t next;
	if (!next_of(reply, &next)) {
		q->done(s);
		return;
	}
	q->from = next;
	if (session_out_full(s))
		imap_pause(s, qr_changed_ask);
	else
		qr_changed_ask(s);
}

static void qr_changed_ask(session_t *s)
{
	struct qresync *q = s->cmd->qr;
	char set[32];
	snprintf(set, sizeof set, "%u:*", (unsigned)q->from);
	json_t *req = bus_env_new("storaged.message.list");
	json_object_set_new(req, "mailbox", json_string(s->mbox.name));
	json_object_set_new(req, "uids", json_string(set));
	json_object_set_new(req, "changedsince", json_integer((json_int_t)q->since));
	json_object_set_new(req, "limit", json_integer(QRESYNC_PAGE));
	imap_call(s, &req, qr_changed_page);
}

/* The set text of set's ranges (all of 1..top if set is NULL) from UID
 * above + 1 to top: owned, NULL if it is empty. */
static char *qr_set_text(const seqset_t *set, uint32_t above, uint32_t top)
{
	seqset_t *out = xmalloc(sizeof *out);
	out->n = 0;
	struct seq_range all = { 1, top };
	size_t n = set ? set->n : 1;
	for (size_t i = 0; i < n && top > 0; i++) {
		struct seq_range r = set ? set->r[i] : all;
		if (r.lo <= above)
			r.lo = above + 1;
		if (r.hi > top)
			r.hi = top;
		if (r.lo <= r.hi)
			seqset_add(out, r.lo, r.hi);   /* at most as many ranges as set has */
	}
	char *text = NULL;
	if (out->n > 0) {
		text = xmalloc(SEQSET_TEXT_MAX + 1);
		if (seqset_format(out, text, SEQSET_TEXT_MAX + 1) < 0)
			snprintf(text, SEQSET_TEXT_MAX + 1, "%u:%u", above + 1, top);   /* a superset */
	}
	free(out);
	return text;
}

void qresync_select(session_t *s, void (*done)(session_t *s))
{
	struct qresync *q = s->cmd->qr;
	mbox_t *m = &s->mbox;
	q->done = done;
	q->selecting = true;
	q->since = q->p.modseq;
	q->from = 1;
	/* another UIDVALIDITY: the client's cache is void, there is nothing to
	 * resync (3.2.5.2); nothing changed since its MODSEQ: nothing to say */
	if (q->p.uidvalidity != m->uidvalidity || q->p.modseq >= m->hms) {
		done(s);
		return;
	}
	seqmap_t map = mbox_seqmap(m);
	uint32_t top = m->uidnext > 1 && m->uidnext - 1 <= UINT32_MAX ? (uint32_t)(m->uidnext - 1) : 0;
	q->set = qr_set_text(q->p.known, qresync_match(&q->p, &map), top);
	if (q->set == NULL)
		qr_vanished_end(s);
	else
		qr_vanished_ask(s);
}

bool qresync_fetch(session_t *s, void (*start)(session_t *s))
{
	cmd_t *c = s->cmd;
	mbox_t *m = &s->mbox;
	if (!c->fetch->vanished)
		return false;
	if (!c->uid || !s->qresync) {
		imap_done(s, "BAD", "VANISHED needs UID FETCH and ENABLE QRESYNC (RFC 7162 3.2.6)");
		return true;
	}
	/* the set as the client sent it, "*" being the highest UID ever given
	 * out: the last messages may be among the expunged ones */
	uint32_t top = m->uidnext > 1 && m->uidnext - 1 <= UINT32_MAX ? (uint32_t)(m->uidnext - 1) : 0;
	seqset_t *set = xmalloc(sizeof *set);
	const char *why;
	c->qr = xcalloc(1, sizeof *c->qr);
	c->qr->done = start;
	c->qr->since = c->fetch->changedsince;
	c->qr->from = 1;
	if (c->set_text != NULL && seqset_parse(set, c->set_text, top, &why) == 0)
		c->qr->set = qr_set_text(set, 0, top);
	free(set);
	if (c->qr->set == NULL)
		start(s);   /* nothing was ever given out in that set */
	else
		qr_vanished_ask(s);
	return true;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

void qresync_expunges(session_t *s)
{
	mbox_t *m = &s->mbox;
	uidlist_t l = { 0 };
	qsort(m->gone, m->ngone, sizeof *m->gone, cmp_u32);
	for (size_t i = 0; i < m->ngone; i++) {
		uint32_t seq = mbox_seq(m, m->gone[i]);
		if (seq == 0)
			continue;   /* a duplicate, or already announced */
		uidlist_add(&l, m->gone[i]);
		mbox_remove(m, seq);
	}
	m->ngone = 0;
	char *text = xmalloc(QRESYNC_LINE_MAX + 1);
	for (size_t pos = 0; pos < l.n;) {
		uidlist_format(&l, &pos, text, QRESYNC_LINE_MAX + 1);
		session_printf(s, "* VANISHED %s\r\n", text);
	}
	free(text);
	uidlist_free(&l);
}
