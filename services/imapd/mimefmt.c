/*
 * mimefmt.c — ENVELOPE, BODY, BODYSTRUCTURE and BODY[section] (RFC 3501
 * 6.4.5, 7.4.2) from lib/mime.h's tree. See mimefmt.h.
 *
 * Dovecot is the bar: where RFC 3501 leaves a choice (how a broken address
 * or Content-Type is shown, quoted string or literal, which of a repeated
 * field counts), we answer as Dovecot 2.3 does, and tests/unit/
 * test_mimefmt.c compares our answers with its answers for the messages in
 * tests/data/mime. Encoded words (RFC 2047) are sent as written: IMAP
 * servers do not decode them in ENVELOPE or BODYSTRUCTURE.
 *
 * Sizes and section bytes count every line end as CRLF, as they are sent.
 */
#include "mimefmt.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mime.h"
#include "rfc5322.h"
#include "util.h"

#define ENV_ADDRS_MAX 1000    /* addresses shown from one ENVELOPE field */
#define ENV_FIELD_MAX 65536   /* bytes of one envelope field value we read */

/* ---- IMAP strings ------------------------------------------------------- */

static void put_literal(strbuf_t *out, const char *s, size_t n)
{
	sb_addf(out, "{%zu}\r\n", n);
	sb_add(out, s, n);
}

/* An nstring: NIL, a quoted string, or a literal when s holds CR, LF or
 * 8-bit bytes (which a quoted string cannot carry). */
static void put_nstring(strbuf_t *out, const char *s)
{
	if (s == NULL) {
		sb_adds(out, "NIL");
		return;
	}
	size_t n = strlen(s);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\r' || c == '\n' || c >= 0x80) {
			put_literal(out, s, n);
			return;
		}
	}
	sb_addc(out, '"');
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '"' || s[i] == '\\')
			sb_addc(out, '\\');
		sb_addc(out, s[i]);
	}
	sb_addc(out, '"');
}

/*
 * Text for people (a subject, a display name): runs of white space and
 * line ends become one space, none at either end. Sent quoted when
 * nothing needed changing and nothing needs escaping, else as a literal —
 * Dovecot's choice, which keeps 8-bit text and quotes readable.
 */
static void put_human(strbuf_t *out, const char *s, size_t n)
{
	strbuf_t t = STRBUF_INIT;
	bool space = false, plain = true;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			if (c != ' ' || space || sb_len(&t) == 0)
				plain = false;
			space = true;
			continue;
		}
		if (space && sb_len(&t) > 0)
			sb_addc(&t, ' ');
		space = false;
		if (c == '"' || c == '\\' || c >= 0x80 || c == '\0')
			plain = false;
		sb_addc(&t, c == '\0' ? (char)0x80 : (char)c);
	}
	if (space && sb_len(&t) > 0)
		plain = false;
	if (plain || sb_len(&t) == 0) {
		sb_addc(out, '"');
		sb_add(out, t.buf, sb_len(&t));
		sb_addc(out, '"');
	} else {
		put_literal(out, t.buf, sb_len(&t));
	}
	sb_free(&t);
}

/* ---- addresses (RFC 5322 3.4, obsolete forms of 4.4) -------------------- */

typedef struct addr {
	char *name, *route, *mailbox, *host;  /* owned; NULL is NIL */
} addr_t;

typedef struct alist {
	addr_t *v;
	size_t n;
	bool full;
} alist_t;

typedef struct alex {
	const char *p, *end;
	strbuf_t comment;  /* the last comment skipped: a name for a bare address */
} alex_t;

static bool is_atext(unsigned char c)
{
	return c >= 0x80 || (c > ' ' && c < 127 && strchr("()<>[]:;@\\,.\"", c) == NULL);
}

/* White space and comments; true if something is left. */
static bool a_skip(alex_t *l)
{
	while (l->p < l->end) {
		char c = *l->p;
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			l->p++;
			continue;
		}
		if (c != '(')
			return true;
		sb_truncate(&l->comment, 0);
		int depth = 0;
		while (l->p < l->end) {
			c = *l->p++;
			if (c == '\\' && l->p < l->end) {
				sb_addc(&l->comment, *l->p++);
				continue;
			}
			if (c == '(' && depth++ == 0)
				continue;
			if (c == ')' && --depth == 0)
				break;
			if (c != '\r' && c != '\n')
				sb_addc(&l->comment, c);
		}
	}
	return false;
}

static bool a_quoted(alex_t *l, strbuf_t *out)
{
	l->p++;
	while (l->p < l->end) {
		char c = *l->p++;
		if (c == '"') {
			a_skip(l);
			return true;
		}
		if (c == '\\' && l->p < l->end)
			c = *l->p++;
		else if (c == '\r' || c == '\n')
			continue;
		sb_addc(out, c);
	}
	return false;
}

/* atext and dots (obsolete phrases and local parts allow them). */
static size_t a_atom(alex_t *l, strbuf_t *out)
{
	size_t n = 0;
	while (l->p < l->end && (is_atext((unsigned char)*l->p) || *l->p == '.'))
		sb_addc(out, *l->p++), n++;
	a_skip(l);
	return n;
}

/* phrase: words joined by one space. -1 if it cannot start here. */
static int a_phrase(alex_t *l, strbuf_t *out)
{
	if (l->p >= l->end || *l->p == '.')
		return -1;
	for (;;) {
		if (*l->p == '"') {
			if (!a_quoted(l, out))
				return -1;
		} else {
			a_atom(l, out);
		}
		if (l->p >= l->end)
			return 0;
		unsigned char c = (unsigned char)*l->p;
		if (!is_atext(c) && c != '"' && c != '.')
			return 1;
		sb_addc(out, ' ');
	}
}

/* "@" domain (dot-atom or [literal]) appended to out. */
static bool a_domain(alex_t *l, strbuf_t *out)
{
	l->p++;  /* '@' */
	if (!a_skip(l))
		return false;
	if (*l->p == '[') {
		while (l->p < l->end && *l->p != ']') {
			if (*l->p == '\\' && l->p + 1 < l->end)
				l->p++;
			sb_addc(out, *l->p++);
		}
		if (l->p >= l->end)
			return false;
		sb_addc(out, *l->p++);
		a_skip(l);
		return true;
	}
	return a_atom(l, out) > 0;
}

static bool a_local(alex_t *l, strbuf_t *out)
{
	if (*l->p == '"')
		return a_quoted(l, out);
	return a_atom(l, out) > 0;
}

static char *sb_take(strbuf_t *sb)
{
	char *s = xstrndup(sb_str(sb), sb_len(sb));
	sb_truncate(sb, 0);
	return s;
}

static void alist_push(alist_t *al, addr_t *a)
{
	if (al->n >= ENV_ADDRS_MAX) {
		al->full = true;
		free(a->name), free(a->route), free(a->mailbox), free(a->host);
	} else {
		al->v = xrealloc(al->v, (al->n + 1) * sizeof *al->v);
		al->v[al->n++] = *a;
	}
	memset(a, 0, sizeof *a);
}

/* "<" [route ":"] [local "@" domain] ">": false if broken. */
static bool a_angle(alex_t *l, addr_t *a)
{
	strbuf_t t = STRBUF_INIT;
	bool ok = false;
	l->p++;
	if (!a_skip(l))
		goto out;
	if (*l->p == '@') {
		bool route_ok = true;
		while (route_ok && l->p < l->end && *l->p == '@') {
			if (sb_len(&t) > 0)
				sb_addc(&t, ',');
			sb_addc(&t, '@');
			route_ok = a_domain(l, &t);
			while (route_ok && a_skip(l) && *l->p == ',')
				l->p++;
		}
		if (route_ok && l->p < l->end && *l->p == ':') {
			l->p++;
			a->route = sb_take(&t);
		} else {
			a->route = xstrdup("INVALID_ROUTE");
			if (l->p >= l->end)
				goto out;
		}
		if (!a_skip(l))
			goto out;
	}
	if (*l->p != '>') {
		sb_truncate(&t, 0);
		if (!a_local(l, &t))
			goto out;
		a->mailbox = sb_take(&t);
		if (l->p < l->end && *l->p == '@') {
			if (!a_domain(l, &t))
				goto out;
			a->host = sb_take(&t);
		}
	}
	if (l->p >= l->end || *l->p != '>')
		goto out;
	l->p++;
	a_skip(l);
	ok = true;
out:
	sb_free(&t);
	return ok;
}

/* A bare addr-spec; a comment after it names it. -1 if broken. */
static int a_spec(alex_t *l, addr_t *a)
{
	strbuf_t t = STRBUF_INIT;
	int ret = 1;
	bool has_domain = false, quoted = *l->p == '"';
	sb_truncate(&l->comment, 0);
	if (!a_local(l, &t))
		ret = -1;
	else
		a->mailbox = sb_take(&t);
	if (l->p < l->end && *l->p == '@') {
		has_domain = true;
		if (!a_domain(l, &t))
			ret = -1;
		else
			a->host = sb_take(&t);
	}
	if (sb_len(&l->comment) > 0) {
		a->name = xstrndup(l->comment.buf, sb_len(&l->comment));
	} else if (!has_domain && ret > 0) {
		/* "user" alone: followed by more words it was a name. */
		if (a_phrase(l, &t) >= 0 && sb_len(&t) > 0) {
			strbuf_t n = STRBUF_INIT;
			sb_adds(&n, a->mailbox);
			sb_addc(&n, ' ');
			sb_add(&n, t.buf, sb_len(&t));
			a->name = sb_take(&n);
			sb_free(&n);
			free(a->mailbox);
			a->mailbox = NULL;
		} else if (!quoted) {
			a->host = xstrdup("");
		}
		ret = -1;
	}
	sb_free(&t);
	return ret;
}

/* mailbox = name-addr / addr-spec, always one entry (broken parts filled). */
static int a_mailbox(alex_t *l, alist_t *al)
{
	addr_t a = { 0 };
	const char *start = l->p;
	strbuf_t t = STRBUF_INIT;
	int ret = 1;
	if (a_phrase(l, &t) > 0 && *l->p == '<') {
		if (sb_len(&t) > 0)
			a.name = sb_take(&t);
		if (!a_angle(l, &a)) {
			free(a.host);
			a.host = xstrdup("SYNTAX_ERROR");
			ret = -1;
		}
	} else {
		l->p = start;
		ret = a_spec(l, &a);
		if (ret < 0 && a.name == NULL && a.mailbox != NULL && a.host == NULL) {
			a.name = a.mailbox;
			a.mailbox = NULL;
		}
	}
	sb_free(&t);
	if (a.mailbox == NULL)
		a.mailbox = xstrdup("MISSING_MAILBOX");
	if (a.host == NULL || a.host[0] == '\0') {
		free(a.host);
		a.host = xstrdup("MISSING_DOMAIN");
	}
	alist_push(al, &a);
	return ret;
}

/* group = phrase ":" [mailbox-list] ";" — -1 if this is not a group. */
static int a_group(alex_t *l, alist_t *al)
{
	strbuf_t t = STRBUF_INIT;
	if (a_phrase(l, &t) <= 0 || *l->p != ':') {
		sb_free(&t);
		return -1;
	}
	l->p++;
	addr_t a = { 0 };
	a.mailbox = sb_take(&t);
	sb_free(&t);
	alist_push(al, &a);
	bool more = a_skip(l);
	while (more && *l->p != ';') {
		if (a_mailbox(l, al) < 0 || l->p >= l->end || *l->p != ',')
			break;
		l->p++;
		more = a_skip(l);
	}
	if (l->p < l->end && *l->p == ';') {
		l->p++;
		a_skip(l);
	}
	alist_push(al, &a);  /* the group's end: all NIL */
	return 1;
}

static void addr_list_parse(const char *v, size_t n, alist_t *al)
{
	alex_t l = { v, v + n, STRBUF_INIT };
	if (a_skip(&l)) {
		while (!al->full) {
			const char *start = l.p;
			if (a_group(&l, al) < 0) {
				l.p = start;
				a_mailbox(&l, al);
			}
			if (l.p >= l.end || *l.p != ',')
				break;
			l.p++;
			if (!a_skip(&l))
				break;
		}
	}
	sb_free(&l.comment);
}

static void alist_free(alist_t *al)
{
	for (size_t i = 0; i < al->n; i++)
		free(al->v[i].name), free(al->v[i].route), free(al->v[i].mailbox), free(al->v[i].host);
	free(al->v);
	memset(al, 0, sizeof *al);
}

static void put_alist(strbuf_t *out, const alist_t *al)
{
	if (al->n == 0) {
		sb_adds(out, "NIL");
		return;
	}
	sb_addc(out, '(');
	for (size_t i = 0; i < al->n; i++) {
		const addr_t *a = &al->v[i];
		sb_addc(out, '(');
		if (a->name != NULL)
			put_human(out, a->name, strlen(a->name));
		else
			sb_adds(out, "NIL");
		sb_addc(out, ' ');
		put_nstring(out, a->route);
		sb_addc(out, ' ');
		put_nstring(out, a->mailbox);
		sb_addc(out, ' ');
		put_nstring(out, a->host);
		sb_addc(out, ')');
	}
	sb_addc(out, ')');
}

/* ---- ENVELOPE ----------------------------------------------------------- */

enum { ENV_DATE, ENV_SUBJECT, ENV_FROM, ENV_SENDER, ENV_REPLY_TO, ENV_TO, ENV_CC, ENV_BCC,
       ENV_IN_REPLY_TO, ENV_MESSAGE_ID, ENV_N };

static const char *const env_names[ENV_N] = {
	"Date", "Subject", "From", "Sender", "Reply-To", "To", "Cc", "Bcc",
	"In-Reply-To", "Message-ID",
};

/* A value as sent for date, message-id, in-reply-to: leading white space
 * and line ends removed, the rest as written. */
static char *env_raw(const char *v, size_t n)
{
	while (n > 0 && (*v == ' ' || *v == '\t'))
		v++, n--;
	char *s = xmalloc(n + 1);
	size_t o = 0;
	for (size_t i = 0; i < n && v[i] != '\0'; i++)
		if (v[i] != '\r' && v[i] != '\n')
			s[o++] = v[i];
	s[o] = '\0';
	return s;
}

/* The subject as written, without the white space after the colon. */
static char *env_trim(const char *v, size_t n)
{
	while (n > 0 && (*v == ' ' || *v == '\t'))
		v++, n--;
	return xstrndup(v, n);
}

/* The envelope of the header hdr[0..n): the last of a repeated single
 * field counts, repeated address fields add up (as in Dovecot). */
static void put_envelope(strbuf_t *out, const char *hdr, size_t n)
{
	char *single[ENV_N] = { 0 };
	alist_t lists[ENV_N] = { 0 };
	hdr_iter_t it;
	const char *name, *v;
	size_t nlen, vlen;
	hdr_iter_init(&it, hdr, n);
	while (hdr_next(&it, &name, &nlen, &v, &vlen) == 1) {
		if (vlen > ENV_FIELD_MAX)
			vlen = ENV_FIELD_MAX;
		for (int f = 0; f < ENV_N; f++) {
			if (!hdr_name_is(name, nlen, env_names[f]))
				continue;
			if (f >= ENV_FROM && f <= ENV_BCC) {
				addr_list_parse(v, vlen, &lists[f]);
			} else {
				free(single[f]);
				/* The subject keeps its folding: put_human shows it. */
				single[f] = f == ENV_SUBJECT ? env_trim(v, vlen) : env_raw(v, vlen);
			}
		}
	}
	sb_addc(out, '(');
	put_nstring(out, single[ENV_DATE]);
	sb_addc(out, ' ');
	if (single[ENV_SUBJECT] != NULL)
		put_human(out, single[ENV_SUBJECT], strlen(single[ENV_SUBJECT]));
	else
		sb_adds(out, "NIL");
	for (int f = ENV_FROM; f <= ENV_BCC; f++) {
		/* RFC 3501 7.4.2: sender and reply-to default to from. */
		int src = (f == ENV_SENDER || f == ENV_REPLY_TO) && lists[f].n == 0 ? ENV_FROM : f;
		sb_addc(out, ' ');
		put_alist(out, &lists[src]);
	}
	sb_addc(out, ' ');
	put_nstring(out, single[ENV_IN_REPLY_TO]);
	sb_addc(out, ' ');
	put_nstring(out, single[ENV_MESSAGE_ID]);
	sb_addc(out, ')');
	for (int f = 0; f < ENV_N; f++) {
		free(single[f]);
		alist_free(&lists[f]);
	}
}

void mimefmt_envelope(const char *msg, size_t len, strbuf_t *out)
{
	bool found;
	put_envelope(out, msg, hdr_end(msg, len, &found));
}

/* ---- BODY and BODYSTRUCTURE --------------------------------------------- */

static void put_params(strbuf_t *out, const mime_params_t *ps, bool default_charset)
{
	bool charset = false;
	if (ps->n == 0 && !default_charset) {
		sb_adds(out, "NIL");
		return;
	}
	sb_addc(out, '(');
	for (size_t i = 0; i < ps->n; i++) {
		if (i > 0)
			sb_addc(out, ' ');
		charset = charset || strcasecmp(ps->v[i].name, "charset") == 0;
		put_nstring(out, ps->v[i].name);
		sb_addc(out, ' ');
		put_nstring(out, ps->v[i].value);
	}
	if (default_charset && !charset)
		sb_adds(out, ps->n > 0 ? " \"charset\" \"us-ascii\"" : "\"charset\" \"us-ascii\"");
	sb_addc(out, ')');
}

/* disposition, language, location: the tail of every extended part. */
static void put_ext_tail(strbuf_t *out, const mime_part_t *p)
{
	sb_addc(out, ' ');
	if (p->disposition == NULL) {
		sb_adds(out, "NIL");
	} else {
		sb_addc(out, '(');
		put_nstring(out, p->disposition);
		sb_addc(out, ' ');
		put_params(out, &p->disp_params, false);
		sb_addc(out, ')');
	}
	sb_addc(out, ' ');
	if (p->nlanguages == 0) {
		sb_adds(out, "NIL");
	} else {
		sb_addc(out, '(');
		for (size_t i = 0; i < p->nlanguages; i++) {
			if (i > 0)
				sb_addc(out, ' ');
			put_nstring(out, p->languages[i]);
		}
		sb_addc(out, ')');
	}
	sb_addc(out, ' ');
	put_nstring(out, p->location);
}

/*
 * A whole message that is plain 7-bit text with nothing else said about it
 * is shown in the canonical lower-case form (Dovecot stores such messages
 * as a flag and rebuilds the answer, so "TEXT/PLAIN; CHARSET=US-ASCII" is
 * sent as "text" "plain" ("charset" "us-ascii")).
 */
static bool plain_7bit_root(const mime_part_t *p)
{
	if (p->parent >= 0 || p->kind != MIME_LEAF)
		return false;
	if (p->type != NULL && (strcasecmp(p->type, "text") != 0 || strcasecmp(p->subtype, "plain") != 0))
		return false;
	if (p->params.n > 1 || (p->params.n == 1 &&
	    (strcasecmp(p->params.v[0].name, "charset") != 0 ||
	     strcasecmp(p->params.v[0].value, "us-ascii") != 0)))
		return false;
	if (p->encoding != NULL && strcasecmp(p->encoding, "7bit") != 0)
		return false;
	return p->id == NULL && p->description == NULL && p->md5 == NULL &&
	       p->disposition == NULL && p->nlanguages == 0 && p->location == NULL;
}

typedef struct fmt {
	const mime_t *m;
	strbuf_t *out;
	bool extended;
} fmt_t;

static void put_part(fmt_t *f, int idx);

/* A multipart without any part: RFC 3501 needs one, Dovecot shows an empty
 * text/plain one. */
static void put_empty_text(fmt_t *f)
{
	sb_adds(f->out, "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0");
	if (f->extended)
		sb_adds(f->out, " NIL NIL NIL NIL");
	sb_addc(f->out, ')');
}

static void put_multipart(fmt_t *f, const mime_part_t *p)
{
	sb_addc(f->out, '(');
	if (p->first_child < 0)
		put_empty_text(f);
	for (int c = p->first_child; c >= 0; c = f->m->parts[c].next_sibling)
		put_part(f, c);
	sb_addc(f->out, ' ');
	put_nstring(f->out, p->subtype);
	if (f->extended) {
		sb_addc(f->out, ' ');
		put_params(f->out, &p->params, false);
		put_ext_tail(f->out, p);
	}
	sb_addc(f->out, ')');
}

static void put_single(fmt_t *f, const mime_part_t *p)
{
	strbuf_t *out = f->out;
	const mime_t *m = f->m;
	bool canon = plain_7bit_root(p);
	bool text = mime_is(m, p, "text", NULL) && p->kind == MIME_LEAF;
	sb_addc(out, '(');
	if (p->kind == MIME_OPAQUE) {
		sb_adds(out, "\"application\" \"octet-stream\"");
	} else if (p->type == NULL || canon) {
		bool msg = mime_is(m, p, "message", "rfc822");
		sb_adds(out, msg ? "\"message\" \"rfc822\"" : "\"text\" \"plain\"");
	} else {
		put_nstring(out, p->type);
		sb_addc(out, ' ');
		put_nstring(out, p->subtype);
	}
	sb_addc(out, ' ');
	if (canon) {
		sb_adds(out, "(\"charset\" \"us-ascii\")");
	} else {
		put_params(out, &p->params, text);
	}
	sb_addc(out, ' ');
	put_nstring(out, p->id);
	sb_addc(out, ' ');
	put_nstring(out, p->description);
	sb_addc(out, ' ');
	put_nstring(out, canon || p->encoding == NULL ? "7bit" : p->encoding);
	sb_addf(out, " %zu", p->body_size);
	if (text)
		sb_addf(out, " %zu", p->body_lines);
	if (p->kind == MIME_MESSAGE) {
		/* The message inside: its envelope, its structure, our lines. */
		int c = p->first_child;
		sb_addc(out, ' ');
		if (c >= 0) {
			const mime_part_t *cp = &m->parts[c];
			put_envelope(out, m->msg + cp->hdr_off, cp->body_off - cp->hdr_off);
			sb_addc(out, ' ');
			put_part(f, c);
		} else {
			put_envelope(out, "", 0);
			sb_addc(out, ' ');
			put_empty_text(f);
		}
		sb_addf(out, " %zu", p->body_lines);
	}
	if (f->extended) {
		sb_addc(out, ' ');
		put_nstring(out, p->md5);
		put_ext_tail(out, p);
	}
	sb_addc(out, ')');
}

/* One part. Recursion follows the tree, whose depth mime.h bounds. */
static void put_part(fmt_t *f, int idx)
{
	const mime_part_t *p = &f->m->parts[idx];
	if (p->kind == MIME_MULTIPART)
		put_multipart(f, p);
	else
		put_single(f, p);
}

void mimefmt_bodystructure(const char *msg, size_t len, bool extended, strbuf_t *out)
{
	mime_t *m = mime_parse(msg, len);
	fmt_t f = { m, out, extended };
	put_part(&f, 0);
	mime_free(&m);
}

/* ---- BODY[section] ------------------------------------------------------ */

/* Appends b[0..n) with every bare LF sent as CRLF. */
static void put_crlf(strbuf_t *out, const char *b, size_t n)
{
	size_t i = 0;
	while (i < n) {
		const char *nl = memchr(b + i, '\n', n - i);
		size_t j = nl != NULL ? (size_t)(nl - b) : n;
		sb_add(out, b + i, j - i);
		if (nl == NULL)
			break;
		if (j == 0 || b[j - 1] != '\r')
			sb_addc(out, '\r');
		sb_addc(out, '\n');
		i = j + 1;
	}
}

/*
 * The part a section path names (RFC 3501 6.4.5), or -1: in a multipart
 * the n-th child; a part that is not multipart has only part 1, itself,
 * and a path may go on from there only into a message/rfc822 part; going
 * on inside one moves to the message it holds.
 */
static int section_find(const mime_t *m, const uint32_t *path, size_t depth)
{
	int idx = 0;
	for (size_t i = 0; i < depth && idx >= 0; i++) {
		const mime_part_t *p = &m->parts[idx];
		bool last = i + 1 == depth;
		if (p->kind == MIME_MULTIPART) {
			idx = p->first_child;
			for (uint32_t n = path[i]; n > 1 && idx >= 0; n--)
				idx = m->parts[idx].next_sibling;
		} else if (path[i] != 1 || (!last && p->kind != MIME_MESSAGE)) {
			idx = -1;
		}
		if (idx >= 0 && !last && m->parts[idx].kind == MIME_MESSAGE)
			idx = m->parts[idx].first_child;
	}
	return idx;
}

static bool field_listed(const imap_section_t *s, const char *name, size_t n)
{
	for (size_t i = 0; i < s->nfields; i++)
		if (hdr_name_is(name, n, s->fields[i]))
			return true;
	return false;
}

/* True if hdr[0..n) ends with its empty line (CRLF or bare LF). */
static bool ends_with_empty_line(const char *hdr, size_t n)
{
	if (n == 0 || hdr[n - 1] != '\n')
		return false;
	size_t i = n - 1;
	if (i > 0 && hdr[i - 1] == '\r')
		i--;
	return i == 0 || hdr[i - 1] == '\n';
}

/* The fields of hdr[0..n) named (or, with NOT, not named) in s, each with
 * its own lines as written, then the empty line. */
static void put_fields(strbuf_t *out, const char *hdr, size_t n, const imap_section_t *s)
{
	bool want = s->kind == SECT_HEADER_FIELDS, any = false;
	hdr_iter_t it;
	const char *name, *v;
	size_t nlen, vlen;
	hdr_iter_init(&it, hdr, n);
	while (hdr_next(&it, &name, &nlen, &v, &vlen) == 1) {
		if (field_listed(s, name, nlen) != want)
			continue;
		put_crlf(out, name, (size_t)(v + vlen - name));
		sb_adds(out, "\r\n");
		any = true;
	}
	/* The empty line ends what we send if we send a field or the header
	 * has one (Dovecot's header filter does the same). */
	if (any || ends_with_empty_line(hdr, n))
		sb_adds(out, "\r\n");
}

int mimefmt_section(const char *msg, size_t len, const imap_section_t *s, strbuf_t *out)
{
	if (s->kind == SECT_MIME && s->depth == 0)
		return -1;
	if (s->depth > SECT_PATH_MAX)
		return -1;
	mime_t *m = mime_parse(msg, len);
	int idx = section_find(m, s->path, s->depth);
	if (idx >= 0 && s->depth > 0 && s->kind != SECT_ALL && s->kind != SECT_MIME) {
		/* HEADER, TEXT and the fields apply to a message/rfc822 part's message. */
		idx = m->parts[idx].kind == MIME_MESSAGE ? m->parts[idx].first_child : -1;
	}
	if (idx >= 0) {
		const mime_part_t *p = &m->parts[idx];
		const char *hdr = msg + p->hdr_off, *body = msg + p->body_off;
		size_t hlen = p->body_off - p->hdr_off, blen = p->end_off - p->body_off;
		switch (s->kind) {
		case SECT_ALL:
			if (s->depth == 0)
				put_crlf(out, msg, len);
			else
				put_crlf(out, body, blen);
			break;
		case SECT_MIME:
		case SECT_HEADER:
			put_crlf(out, hdr, hlen);
			break;
		case SECT_TEXT:
			put_crlf(out, body, blen);
			break;
		case SECT_HEADER_FIELDS:
		case SECT_HEADER_FIELDS_NOT:
			put_fields(out, hdr, hlen, s);
			break;
		}
	}
	mime_free(&m);
	return 0;
}
