/*
 * message.c — the message commands but FETCH (RFC 3501 6.4; UIDPLUS RFC
 * 4315, MOVE RFC 6851, CONDSTORE RFC 7162): STORE, SEARCH, COPY, MOVE,
 * EXPUNGE, CLOSE, APPEND, each a short chain of storaged requests, and the
 * pieces FETCH (fetch.c) shares with them.
 *
 * Sequence numbers become UIDs through the session's map before anything
 * reaches storaged; what comes back is shown only for UIDs in the map, so
 * a message the client has not been told about (EXISTS) never appears.
 *
 * Ownership: everything lives in the cmd_t and goes with imap_cmd_end.
 */
#include "imapd.h"
#include "log.h"
#include "util.h"

static void append_ack(bus_stream_t *st, json_t **reply, void *arg);

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- shared pieces ------------------------------------------------------------- */

/* The command's set argument as a UID set for storaged (c->set, no "*");
 * false with the reply sent. An empty result sets c->set to "". */
bool msg_set_arg(session_t *s)
{
	cmd_t *c = s->cmd;
	imap_parser_t *ip = &c->ip;
	const char *set = ip_sp(ip) ? ip_seqset(ip) : NULL, *why = NULL;
	if (set == NULL) {
		imap_done(s, "BAD", "%s", ip->err ? ip->err : "expected a sequence set");
		return false;
	}
	c->set_text = set;
	if (!c->uid) {
		seqmap_t map = mbox_seqmap(&s->mbox);
		c->set = seqmap_to_uids(&map, set, &why);
	} else {
		mbox_t *m = &s->mbox;
		seqset_t *u = xmalloc(sizeof *u);
		/* "*" is the highest UID the client knows of */
		if (seqset_parse(u, set, m->n ? m->uids[m->n - 1] : 0, &why) == 0) {
			c->set = xmalloc(SEQSET_TEXT_MAX + 1);
			if (seqset_format(u, c->set, SEQSET_TEXT_MAX + 1) < 0) {
				free(c->set);
				c->set = NULL;
				why = "set too large";
			}
		}
		free(u);
	}
	if (c->set == NULL) {
		imap_done(s, "BAD", "%s", why ? why : "bad sequence set");
		return false;
	}
	return true;
}

struct clip {
	uint32_t from;
	strbuf_t *sb;
};

static void clip_range(uint32_t lo, uint32_t hi, void *arg)
{
	struct clip *k = arg;
	if (hi < k->from)
		return;
	if (lo < k->from)
		lo = k->from;
	sb_addf(k->sb, "%s%u:%u", k->sb->len ? "," : "", (unsigned)lo, (unsigned)hi);
}

/* c->set from UID from on (a page's "next"), owned by the caller. */
char *msg_set_from(cmd_t *c, uint32_t from)
{
	strbuf_t sb = STRBUF_INIT;
	struct clip k = { from, &sb };
	uidset_each(c->set, clip_range, &k);
	return sb_steal(&sb, NULL);
}

bool json_has_flag(const json_t *flags, const char *flag)
{
	size_t i;
	json_t *f;
	json_array_foreach(flags, i, f)
		if (json_is_string(f) && strcasecmp(json_string_value(f), flag) == 0)
			return true;
	return false;
}

bool next_of(const json_t *reply, uint32_t *next)
{
	json_t *n = json_object_get(reply, "next");
	if (!json_is_integer(n) || json_integer_value(n) <= 0 || json_integer_value(n) > UINT32_MAX)
		return false;
	*next = (uint32_t)json_integer_value(n);
	return true;
}

static bool read_only(session_t *s)
{
	if (!s->mbox.readonly)
		return false;
	imap_done(s, "NO", "[READ-ONLY] Mailbox is read-only");
	return true;
}

/* ---- STORE ---------------------------------------------------------------------------- */

static void store_done(session_t *s, json_t *reply, const void *raw, size_t rawlen)
{
	(void)raw; (void)rawlen;
	cmd_t *c = s->cmd;
	mbox_t *m = &s->mbox;
	if (!bus_reply_ok(reply)) {
		imap_fail_reply(s, reply, c->name);
		return;
	}
	uint64_t hms = (uint64_t)json_integer_value(json_object_get(reply, "highestmodseq"));
	/* only our change happened: no need to look again (if nothing changed,
	 * hms is the mailbox's, maybe someone else's change not yet told) */
	if (hms == m->hms + 1 && json_array_size(json_object_get(reply, "changed")) > 0)
		m->hms = hms;
	/* the view has it before the event comes: the next FETCH reads it */
	if (m->view != NULL && m->view->uidvalidity == m->uidvalidity)
		view_apply(m->view, json_object_get(reply, "changed"), hms);
	size_t i;
	json_t *ch;
	strbuf_t sb = STRBUF_INIT;
	json_array_foreach(json_object_get(reply, "changed"), i, ch) {
		uint32_t uid = (uint32_t)json_integer_value(json_object_get(ch, "uid"));
		uint32_t seq = mbox_seq(m, uid);
		if (seq == 0 || c->silent)
			continue;
		sb_truncate(&sb, 0);
		sb_addf(&sb, "* %u FETCH (FLAGS ", (unsigned)seq);
		imap_flags(&sb, json_object_get(ch, "flags"));
		if (c->uid)
			sb_addf(&sb, " UID %u", (unsigned)uid);
		if (s->condstore)
			sb_addf(&sb, " MODSEQ (%lld)",
				(long long)json_integer_value(json_object_get(ch, "modseq")));
		sb_adds(&sb, ")\r\n");
		session_write(s, sb.buf, sb.len);
	}
	sb_free(&sb);
	const char *modified = json_string_value(json_object_get(reply, "modified"));
	if (modified != NULL && modified[0] != '\0') {
		/* RFC 7162 3.1.3: the messages UNCHANGEDSINCE kept as they were,
		 * as sequence numbers for STORE (ascending, like their UIDs) */
		uidlist_t l = { 0 };
		if (c->uid) {
			imap_done(s, "OK", "[MODIFIED %s] Conditional STORE failed for some", modified);
			return;
		}
		seqset_t *u = xmalloc(sizeof *u);
		const char *why;
		if (strlen(modified) <= SEQSET_TEXT_MAX && seqset_parse(u, modified, 0, &why) == 0) {
			for (size_t r = 0; r < u->n; r++)
				for (size_t k = mbox_lower(m, u->r[r].lo); k < m->n && m->uids[k] <= u->r[r].hi; k++)
					uidlist_add(&l, (uint32_t)k + 1);
		}
		free(u);
		char *text = xmalloc(l.textlen + 1);
		size_t pos = 0;
		uidlist_format(&l, &pos, text, l.textlen + 1);
		imap_done(s, "OK", "[MODIFIED %s] Conditional STORE failed for some", text);
		free(text);
		uidlist_free(&l);
		return;
	}
	imap_done(s, "OK", "%s completed", c->name);
}

void cmd_store(session_t *s)
{
	cmd_t *c = s->cmd;
	imap_parser_t *ip = &c->ip;
	uint64_t unchangedsince = 0;
	bool has_unchanged = false;
	if (!msg_set_arg(s))
		return;
	if (!ip_sp(ip))
		goto bad;
	if (ip_char(ip, '(')) {
		const char *m = ip_atom(ip);
		if (m == NULL || strcasecmp(m, "UNCHANGEDSINCE") != 0 || !ip_sp(ip) ||
		    !ip_number(ip, &unchangedsince, 9007199254740991ULL) || !ip_char(ip, ')') ||
		    !ip_sp(ip))
			goto bad;
		has_unchanged = true;
		s->condstore = true;
	}
	const char *op = "set";
	if (ip_char(ip, '+'))
		op = "add";
	else if (ip_char(ip, '-'))
		op = "remove";
	const char *item = ip_atom(ip);
	if (item == NULL)
		goto bad;
	if (strcasecmp(item, "FLAGS.SILENT") == 0)
		c->silent = true;
	else if (strcasecmp(item, "FLAGS") != 0)
		goto bad;
	const char *flags[IMAPD_FLAGS_MAX];
	size_t n;
	if (!ip_sp(ip) || !ip_flag_list(ip, flags, IMAPD_FLAGS_MAX, &n) || !ip_eol(ip))
		goto bad;
	if (read_only(s))
		return;
	if (c->set[0] == '\0') {
		imap_done(s, "OK", "%s completed", c->name);
		return;
	}
	json_t *req = bus_env_new("storaged.message.flags");
	imap_idem(s, req);
	json_object_set_new(req, "mailbox", json_string(s->mbox.name));
	json_object_set_new(req, "uids", json_string(c->set));
	json_object_set_new(req, "op", json_string(op));
	json_t *fl = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(fl, json_string(flags[i]));
	json_object_set_new(req, "flags", fl);
	if (has_unchanged)
		json_object_set_new(req, "unchangedsince", json_integer((json_int_t)unchangedsince));
	imap_call(s, &req, store_done);
	return;
bad:
	imap_done(s, "BAD", "%s", ip->err ? ip->err : "bad STORE arguments");
}

/* ---- SEARCH ---------------------------------------------------------------------------- */

static void search_page(session_t *s, json_t *reply, const void *raw, size_t rawlen);

static void search_ask(session_t *s, uint32_t from)
{
	cmd_t *c = s->cmd;
	json_t *req = json_deep_copy(c->req);
	if (from > 0)
		json_object_set_new(req, "from", json_integer(from));
	imap_call(s, &req, search_page);
}

struct hits {
	session_t *s;
};

static void search_range(uint32_t lo, uint32_t hi, void *arg)
{
	session_t *s = ((struct hits *)arg)->s;
	mbox_t *m = &s->mbox;
	cmd_t *c = s->cmd;
	for (size_t k = mbox_lower(m, lo); k < m->n && m->uids[k] <= hi; k++) {
		uint32_t v = c->uid ? m->uids[k] : (uint32_t)k + 1;
		if (c->hits.n == 0 || v > c->hits.r[c->hits.n - 1].hi)
			uidlist_add(&c->hits, v);
	}
}

/* "* SEARCH n n n [(MODSEQ m)]" (RFC 3501 7.2.5, RFC 7162 3.1.5). */
static void search_answer(session_t *s)
{
	cmd_t *c = s->cmd;
	strbuf_t *sb = &s->out;
	sb_adds(sb, "* SEARCH");
	for (size_t r = 0; r < c->hits.n; r++)
		for (uint64_t v = c->hits.r[r].lo; v <= c->hits.r[r].hi; v++)
			sb_addf(sb, " %u", (unsigned)v);
	if (c->search_modseq && c->hits.count > 0)
		sb_addf(sb, " (MODSEQ %llu)", (unsigned long long)c->max_modseq);
	sb_adds(sb, "\r\n");
}

/* ESEARCH (RFC 4731): "* ESEARCH (TAG "t") [UID] MIN n MAX n COUNT n ALL set". */
static void search_esearch(session_t *s)
{
	cmd_t *c = s->cmd;
	uidlist_t *h = &c->hits;
	strbuf_t *sb = &s->out;
	sb_adds(sb, "* ESEARCH (TAG ");
	imap_quote(sb, c->tag, strlen(c->tag));
	sb_addc(sb, ')');
	if (c->uid)
		sb_adds(sb, " UID");
	if (h->count > 0 && (c->esearch & ES_MIN))
		sb_addf(sb, " MIN %u", (unsigned)h->r[0].lo);
	if (h->count > 0 && (c->esearch & ES_MAX))
		sb_addf(sb, " MAX %u", (unsigned)h->r[h->n - 1].hi);
	if (c->esearch & ES_COUNT)
		sb_addf(sb, " COUNT %llu", (unsigned long long)h->count);
	if (h->count > 0 && (c->esearch & ES_ALL)) {
		size_t pos = 0;
		char *text = sb_reserve(sb, h->textlen + 6);
		memcpy(text, " ALL ", 5);
		uidlist_format(h, &pos, text + 5, h->textlen + 1);
		sb_commit(sb, 5 + h->textlen);
	}
	if (c->search_modseq && h->count > 0)
		sb_addf(sb, " MODSEQ %llu", (unsigned long long)c->max_modseq);
	sb_adds(sb, "\r\n");
}

/* RETURN (MIN MAX COUNT ALL) of ESEARCH; "()" means ALL. */
static bool search_return(imap_parser_t *ip, unsigned *opts)
{
	static const struct { const char *w; unsigned bit; } names[] = {
		{ "MIN", ES_MIN }, { "MAX", ES_MAX }, { "COUNT", ES_COUNT }, { "ALL", ES_ALL },
	};
	if (!ip_sp(ip) || !ip_char(ip, '('))
		return ip_fail(ip, "expected RETURN options");
	*opts = ES_ON;
	while (!ip_char(ip, ')')) {
		if ((*opts & ~ES_ON) && !ip_sp(ip))
			return false;
		const char *o = ip_atom(ip);
		size_t k = 0;
		while (o != NULL && k < ARRAY_LEN(names) && strcasecmp(o, names[k].w) != 0)
			k++;
		if (o == NULL || k == ARRAY_LEN(names))
			return ip_fail(ip, "unknown RETURN option");
		*opts |= names[k].bit;
	}
	if (*opts == ES_ON)
		*opts |= ES_ALL;
	return ip_sp(ip);
}

static void search_page(session_t *s, json_t *reply, const void *raw, size_t rawlen)
{
	(void)raw; (void)rawlen;
	cmd_t *c = s->cmd;
	if (!bus_reply_ok(reply)) {
		imap_fail_reply(s, reply, c->name);
		return;
	}
	struct hits h = { s };
	uidset_each(json_string_value(json_object_get(reply, "uids")) ?
		    json_string_value(json_object_get(reply, "uids")) : "", search_range, &h);
	uint64_t mm = (uint64_t)json_integer_value(json_object_get(reply, "max_modseq"));
	if (mm > c->max_modseq)
		c->max_modseq = mm;
	uint32_t next;
	if (next_of(reply, &next)) {
		search_ask(s, next);
		return;
	}
	if (c->esearch)
		search_esearch(s);
	else
		search_answer(s);
	imap_done(s, "OK", "%s completed", c->name);
}

void cmd_search(session_t *s)
{
	cmd_t *c = s->cmd;
	imap_parser_t *ip = &c->ip;
	if (!ip_sp(ip))
		goto bad;
	const char *save = ip->p;
	const char *w = ip_atom(ip);
	if (w != NULL && strcasecmp(w, "RETURN") == 0) {
		if (!search_return(ip, &c->esearch))
			goto bad;
		save = ip->p;
		w = ip_atom(ip);
	}
	if (w != NULL && strcasecmp(w, "CHARSET") == 0) {
		size_t len;
		const char *cs = ip_sp(ip) ? ip_astring(ip, &len) : NULL;
		if (cs == NULL || !ip_sp(ip))
			goto bad;
		if (strcasecmp(cs, "UTF-8") != 0 && strcasecmp(cs, "US-ASCII") != 0) {
			imap_done(s, "NO", "[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset");
			return;
		}
	} else {
		ip->p = save;
		ip->err = NULL;
	}
	seqmap_t map = mbox_seqmap(&s->mbox);
	json_t *crit = ip_search_new(ip, &map, &c->search_modseq);
	if (crit == NULL || !ip_eol(ip)) {
		json_decref(crit);
		if (ip->err != NULL && strncmp(ip->err, "[CANNOT]", 8) == 0) {
			imap_done(s, "NO", "%s", ip->err);
			return;
		}
		goto bad;
	}
	if (c->search_modseq)
		s->condstore = true;
	c->req = bus_env_new("storaged.message.search");
	json_object_set_new(c->req, "address", json_string(s->user));
	json_object_set_new(c->req, "mailbox", json_string(s->mbox.name));
	json_object_set_new(c->req, "criteria", crit);
	search_ask(s, 0);
	return;
bad:
	imap_done(s, "BAD", "%s", ip->err ? ip->err : "bad SEARCH");
}

/* ---- COPY and MOVE ----------------------------------------------------------------------- */

static void copy_done(session_t *s, json_t *reply, const void *raw, size_t rawlen)
{
	(void)raw; (void)rawlen;
	cmd_t *c = s->cmd;
	if (!bus_reply_ok(reply)) {
		const char *code = json_string_value(json_object_get(reply, "code"));
		if (code != NULL && strcmp(code, "not_found") == 0)
			imap_done(s, "NO", "[TRYCREATE] No such target mailbox");
		else
			imap_fail_reply(s, reply, c->name);
		return;
	}
	const char *src = json_string_value(json_object_get(reply, "src"));
	const char *dst = json_string_value(json_object_get(reply, "dst"));
	json_int_t uv = json_integer_value(json_object_get(reply, "uidvalidity"));
	bool truncated = json_is_true(json_object_get(reply, "truncated"));
	char code[256] = "";
	if (src != NULL && dst != NULL && src[0] && !truncated && strlen(src) < 100)
		snprintf(code, sizeof code, "[COPYUID %lld %s %s] ", (long long)uv, src, dst);
	if (strcmp(c->mailbox, s->mbox.name) == 0)
		c->sync_force = true;   /* copies into the selected mailbox: EXISTS now */
	if (c->move) {
		if (code[0])
			session_printf(s, "* OK %sMoved\r\n", code);
		if (src != NULL)
			notify_expunged(s, src);
		imap_done(s, "OK", "%s completed", c->name);
		return;
	}
	imap_done(s, "OK", "%s%s completed", code, c->name);
}

static void copy_common(session_t *s, bool move)
{
	cmd_t *c = s->cmd;
	char to[IMAPD_NAME_MAX + 1];
	if (!msg_set_arg(s))
		return;
	if (!c->ip.err && !ip_sp(&c->ip)) {
		imap_done(s, "BAD", "expected a mailbox");
		return;
	}
	if (!imap_mailbox_arg(s, to, sizeof to))
		return;
	if (!ip_eol(&c->ip)) {
		imap_done(s, "BAD", "unexpected arguments");
		return;
	}
	if (move && read_only(s))
		return;
	if (c->set[0] == '\0') {
		imap_done(s, "OK", "%s completed", c->name);
		return;
	}
	c->move = move;
	c->mailbox = xstrdup(to);
	json_t *req = bus_env_new("storaged.message.copy");
	imap_idem(s, req);
	json_object_set_new(req, "mailbox", json_string(s->mbox.name));
	json_object_set_new(req, "uids", json_string(c->set));
	json_object_set_new(req, "to", json_string(to));
	if (move)
		json_object_set_new(req, "move", json_true());
	imap_call(s, &req, copy_done);
}

void cmd_copy(session_t *s)
{
	copy_common(s, false);
}

void cmd_move(session_t *s)
{
	copy_common(s, true);
}

/* ---- EXPUNGE and CLOSE -------------------------------------------------------------------- */

static void expunge_done(session_t *s, json_t *reply, const void *raw, size_t rawlen)
{
	(void)raw; (void)rawlen;
	cmd_t *c = s->cmd;
	if (!bus_reply_ok(reply)) {
		imap_fail_reply(s, reply, c->name);
		return;
	}
	const char *gone = json_string_value(json_object_get(reply, "expunged"));
	if (gone != NULL && s->mbox.view != NULL && s->mbox.view->uidvalidity == s->mbox.uidvalidity)
		view_expunged(s->mbox.view, gone,
			      (uint64_t)json_integer_value(json_object_get(reply, "highestmodseq")));
	if (c->closing) {   /* RFC 3501 6.4.2: no EXPUNGE responses */
		mbox_clear(&s->mbox);
		imap_enter_state(s, IS_AUTH);
		imap_done(s, "OK", "CLOSE completed");
		return;
	}
	if (gone != NULL)
		notify_expunged(s, gone);
	if (json_is_true(json_object_get(reply, "truncated")))
		c->sync_force = true;
	imap_done(s, "OK", "%s completed", c->name);
}

static void expunge_ask(session_t *s, const char *uids)
{
	json_t *req = bus_env_new("storaged.message.expunge");
	imap_idem(s, req);
	json_object_set_new(req, "mailbox", json_string(s->mbox.name));
	if (uids != NULL)
		json_object_set_new(req, "uids", json_string(uids));
	imap_call(s, &req, expunge_done);
}

void cmd_expunge(session_t *s)
{
	cmd_t *c = s->cmd;
	if (c->uid && !msg_set_arg(s))
		return;
	if (!ip_eol(&c->ip)) {
		imap_done(s, "BAD", "unexpected arguments");
		return;
	}
	if (read_only(s))
		return;
	if (c->uid && c->set[0] == '\0') {
		imap_done(s, "OK", "%s completed", c->name);
		return;
	}
	expunge_ask(s, c->uid ? c->set : NULL);
}

void cmd_close(session_t *s)
{
	cmd_t *c = s->cmd;
	if (!ip_eol(&c->ip)) {
		imap_done(s, "BAD", "unexpected arguments");
		return;
	}
	if (s->mbox.readonly) {
		mbox_clear(&s->mbox);
		imap_enter_state(s, IS_AUTH);
		imap_done(s, "OK", "CLOSE completed");
		return;
	}
	c->closing = true;
	expunge_ask(s, NULL);
}

/* ---- APPEND -------------------------------------------------------------------------------
 *
 * The message goes to storaged.message.store as a stream of chunks of at
 * most BUS_CHUNK_SIZE, one in flight. A literal up to IMAPD_APPEND_STREAM_MIN
 * arrives with its command (cmd_append); a larger one is taken from the
 * frame as it arrives (append_stream_*): the socket is not read while the
 * chunk buffer is full and a chunk is in flight, so a session holds about
 * one chunk whatever the message's size. Bare LF line ends become CRLF on
 * the way (RFC 3501 2.3.3), so RFC822.SIZE, BODY[] and BODYSTRUCTURE's
 * sizes (mimefmt.h) agree. A failure before the literal's end is answered
 * after it: its bytes are on their way and must not be read as commands.
 */

struct append_args {
	char name[IMAPD_NAME_MAX + 1];
	const char *flags[IMAPD_FLAGS_MAX];
	size_t nflags;
	int64_t date;
	bool utf8;                /* UTF8 (~{n}...) of RFC 6855 */
};

/* SP mailbox [SP flag-list] [SP date-time] SP, up to the literal (or to
 * "UTF8 (~" before it). NULL, or why ("[CANNOT] ..." means NO). */
static const char *append_args(session_t *s, struct append_args *a)
{
	imap_parser_t *ip = &s->cmd->ip;
	size_t len;
	const char *why;
	memset(a, 0, sizeof *a);
	a->date = -1;
	if (!ip_sp(ip))
		return "expected a mailbox";
	if ((why = imap_mailbox_parse(s, a->name, sizeof a->name)) != NULL)
		return why;
	if (!ip_sp(ip))
		return "bad APPEND arguments";
	if (ip_peek(ip, '(') && (!ip_flag_list(ip, a->flags, IMAPD_FLAGS_MAX, &a->nflags) ||
				 !ip_sp(ip)))
		return ip->err ? ip->err : "bad flags";
	if (ip_peek(ip, '"')) {
		const char *d = ip_string(ip, &len);
		if (d == NULL || (a->date = imap_datetime_parse(d, len)) < 0 || !ip_sp(ip))
			return "bad date-time";
	}
	if (s->utf8 && (ip_peek(ip, 'U') || ip_peek(ip, 'u'))) {
		const char *u = ip_atom(ip);
		if (u == NULL || strcasecmp(u, "UTF8") != 0 || !ip_sp(ip) || !ip_char(ip, '(') ||
		    !ip_char(ip, '~'))
			return "bad UTF8 data item";
		a->utf8 = true;
	}
	if (!ip_peek(ip, '{'))
		return "expected a literal";   /* CATENATE is not offered */
	return NULL;
}

/* Opens the stream to storaged for the message. */
static void append_open(session_t *s, const struct append_args *a)
{
	cmd_t *c = s->cmd;
	c->mailbox = xstrdup(a->name);
	json_t *dl = json_pack("{s:s, s:s}", "address", s->user, "mailbox", a->name);
	if (a->nflags > 0) {
		json_t *fl = json_array();
		for (size_t i = 0; i < a->nflags; i++)
			json_array_append_new(fl, json_string(a->flags[i]));
		json_object_set_new(dl, "flags", fl);
	}
	json_t *fields = json_pack("{s:[o]}", "deliveries", dl);
	imap_idem(s, fields);
	if (a->date >= 0)
		json_object_set_new(fields, "internaldate", json_integer(a->date));
	c->stream = bus_stream_new(s->d->bus, "storaged", "storaged.message.store", &fields,
				   append_ack, s);
}

/* Adds message bytes to the chunk buffer, bare LF made CRLF (at most twice
 * n bytes: callers keep n within append_room). */
static void append_add(cmd_t *c, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\n' && c->last_byte != '\r')
			sb_addc(&c->buf, '\r');
		sb_addc(&c->buf, p[i]);
		c->last_byte = p[i];
	}
}

size_t append_room(const session_t *s)
{
	const cmd_t *c = s->cmd;
	return c->buf.len < BUS_CHUNK_SIZE / 2 ? (BUS_CHUNK_SIZE - c->buf.len) / 2 : 0;
}

/* Sends the chunk buffer when it is worth a chunk, or the last one. */
static void append_flush(session_t *s)
{
	cmd_t *c = s->cmd;
	if (c->chunk_inflight || c->stream == NULL)
		return;
	while (c->lit != NULL && c->sent < c->litlen && append_room(s) > 0) {
		size_t n = c->litlen - c->sent < append_room(s) ? c->litlen - c->sent : append_room(s);
		append_add(c, c->lit + c->sent, n);
		c->sent += n;
	}
	bool last = c->ended && (c->lit == NULL || c->sent == c->litlen);
	if (!last && c->buf.len < BUS_CHUNK_SIZE / 2)
		return;
	c->chunk_inflight = true;
	c->last_sent = last;
	bool outer = !s->in_call;
	s->in_call = true;
	if (bus_stream_write(c->stream, c->buf.buf, c->buf.len, last) < 0)
		log_error("append.write", "session=%llu why=\"chunk while one is in flight\"",
			  (unsigned long long)s->serial);
	if (outer)
		s->in_call = false;
	sb_truncate(&c->buf, 0);
}

/* The answer to a refused APPEND. */
static void append_failed(session_t *s)
{
	cmd_t *c = s->cmd;
	if (c->fail_text != NULL) {
		const char *t = c->fail_text;
		imap_done(s, strncmp(t, "[CANNOT]", 8) == 0 || strncmp(t, "[TOOBIG]", 8) == 0 ? "NO" : "BAD",
			  "%s", t);
		return;
	}
	const char *code = json_string_value(json_object_get(c->fail, "code"));
	if (code != NULL && strcmp(code, "not_found") == 0)
		imap_done(s, "NO", "[TRYCREATE] No such mailbox");
	else
		imap_fail_reply(s, c->fail, "APPEND");
}

static void append_ack(bus_stream_t *st, json_t **reply, void *arg)
{
	(void)st;
	session_t *s = arg;
	cmd_t *c = s->cmd;
	if (c == NULL || c->stream == NULL)
		return;
	c->chunk_inflight = false;
	if (!bus_reply_ok(*reply)) {
		c->fail = json_incref(*reply);
		bus_stream_free(&c->stream);   /* storaged drops what it has */
		sb_free(&c->buf);
		if (c->ended)
			append_failed(s);
	} else if (c->last_sent) {
		json_t *st0 = json_array_get(json_object_get(*reply, "stored"), 0);
		if (strcmp(c->mailbox, s->mbox.name ? s->mbox.name : "") == 0)
			c->sync_force = true;   /* the client sees it in its EXISTS now */
		imap_done(s, "OK", "[APPENDUID %lld %lld] APPEND completed",
			  (long long)json_integer_value(json_object_get(st0, "uidvalidity")),
			  (long long)json_integer_value(json_object_get(st0, "uid")));
	} else {
		append_flush(s);
	}
	if (!s->in_call)
		session_resume(s);
}

/* APPEND with its (small) literal inside the command. */
void cmd_append(session_t *s)
{
	cmd_t *c = s->cmd;
	imap_parser_t *ip = &c->ip;
	struct append_args a;
	const char *why = append_args(s, &a);
	if (why == NULL && ((c->lit = ip_literal(ip, &c->litlen)) == NULL ||
			    (a.utf8 && !ip_char(ip, ')')) || !ip_eol(ip)))
		why = ip->err ? ip->err : "bad APPEND arguments";   /* MULTIAPPEND is not offered */
	if (why != NULL) {
		imap_done(s, strncmp(why, "[CANNOT]", 8) == 0 ? "NO" : "BAD", "%s", why);
		return;
	}
	if (c->litlen > (size_t)s->d->conf.max_size) {
		imap_done(s, "NO", "[TOOBIG] Message too large");
		return;
	}
	append_open(s, &a);
	c->ended = true;
	append_flush(s);
}

/* A large APPEND literal was announced (FR_APPEND_LITERAL): the command up
 * to it is in the frame. Its bytes will be handed to append_stream_bytes. */
void append_stream_begin(session_t *s)
{
	imap_frame_t *f = &s->frame;
	cmd_t *c = xcalloc(1, sizeof *c);
	s->cmd = c;
	s->d->stats.commands++;
	c->appending = true;
	snprintf(c->name, sizeof c->name, "APPEND");
	imap_parser_t *ip = &c->ip;
	ip_init(ip, f->cmd.buf, f->cmd.len);
	const char *tag = ip_tag(ip);
	snprintf(c->tag, sizeof c->tag, "%s", tag ? tag : "*");
	struct append_args a;
	const char *why = NULL;
	if (tag == NULL || !ip_sp(ip) || ip_atom(ip) == NULL)
		why = "bad APPEND";
	else if (s->state != IS_AUTH && s->state != IS_SELECTED)
		why = "APPEND not allowed now";
	else
		why = append_args(s, &a);
	c->utf8_form = why == NULL && a.utf8;
	if (why != NULL) {
		if (f->lit_sync) {
			/* the client waits for "+": it will not send the literal */
			imap_done(s, strncmp(why, "[CANNOT]", 8) == 0 ? "NO" : "BAD", "%s", why);
			return;
		}
		c->fail_text = xstrdup(why);   /* answered once the literal is read */
	} else {
		append_open(s, &a);
	}
	imap_frame_divert(f);
	if (f->lit_sync)
		session_printf(s, "+ Ready for literal data\r\n");
}

void append_stream_bytes(session_t *s, const char *p, size_t n)
{
	cmd_t *c = s->cmd;
	if (c->stream == NULL)
		return;   /* refused: the bytes are read and dropped */
	append_add(c, p, n);
	append_flush(s);
}

/* The line after the literal is in: the command is whole. */
void append_stream_end(session_t *s)
{
	cmd_t *c = s->cmd;
	imap_frame_t *f = &s->frame;
	size_t n = f->cmd.len - f->line_start;
	const char *rest = f->cmd.buf + f->line_start;
	while (n > 0 && (rest[n - 1] == '\n' || rest[n - 1] == '\r'))
		n--;
	c->ended = true;
	if (c->fail_text == NULL && c->fail == NULL &&
	    !(n == (c->utf8_form ? 1u : 0u) && (n == 0 || rest[0] == ')'))) {
		bus_stream_free(&c->stream);   /* MULTIAPPEND and CATENATE are not offered */
		c->fail_text = xstrdup("unexpected data after the message");
	}
	if (c->fail_text != NULL || c->fail != NULL)
		append_failed(s);
	else
		append_flush(s);
}
