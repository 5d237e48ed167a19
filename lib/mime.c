/*
 * mime.c — see mime.h.
 *
 * The structure comes from one forward scan over the lines of the message
 * with a stack of the parts still open (the whole message first, the part
 * whose body we are in last). A line "--boundary" of an open multipart —
 * the innermost first, as a prefix, as Dovecot and most readers match it —
 * closes every part below that multipart and starts its next body part
 * (or, with "--" after it, ends its list of parts). Line ends are counted
 * as we go, so sizes cost nothing more than the scan.
 */
#include "mime.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rfc5322.h"
#include "strbuf.h"
#include "util.h"

/* ---- values of Content-* fields (RFC 2045 5.1 tokens, RFC 822 lexemes) ---- */

typedef struct lex {
	const char *p, *end;
} lex_t;

/* RFC 2045 tspecials, which end a token. */
static bool lex_tspecial(unsigned char c)
{
	return c != '\0' && strchr("()<>@,;:\\\"/[]?=", c) != NULL;
}

/* Skips white space, line ends and (nested) comments; false at the end. */
static bool lex_skip(lex_t *l)
{
	while (l->p < l->end) {
		char c = *l->p;
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			l->p++;
			continue;
		}
		if (c != '(')
			return true;
		int depth = 0;  /* bounded by the value's length */
		while (l->p < l->end) {
			c = *l->p++;
			if (c == '\\' && l->p < l->end)
				l->p++;
			else if (c == '(')
				depth++;
			else if (c == ')' && --depth == 0)
				break;
		}
	}
	return false;
}

/* A token (RFC 2045 5.1) into out, then the white space after it. Its length. */
static size_t lex_token(lex_t *l, strbuf_t *out)
{
	size_t n = 0;
	while (l->p < l->end) {
		unsigned char c = (unsigned char)*l->p;
		if (c <= ' ' || c == 127 || lex_tspecial(c))
			break;
		sb_addc(out, (char)c);
		l->p++, n++;
	}
	lex_skip(l);
	return n;
}

/* A quoted-string at l->p ('"') into out without quotes and escapes; false
 * if it does not end. Folding inside it is removed (RFC 5322 3.2.4). */
static bool lex_quoted(lex_t *l, strbuf_t *out)
{
	l->p++;
	while (l->p < l->end) {
		char c = *l->p++;
		if (c == '"') {
			lex_skip(l);
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

static char *sb_dup(strbuf_t *sb)
{
	return xstrndup(sb_str(sb), sb_len(sb));
}

/* ---- parameters, with RFC 2231 continuations joined ---------------------- */

typedef struct rawparam {
	char *name;      /* without the "*n*" suffix when it is a continuation */
	char *value;
	int index;       /* -1: a plain parameter */
	bool extended;   /* a trailing '*': value is charset'lang'%-encoded */
} rawparam_t;

/*
 * One "; name=value" at l->p. 1 with *rp filled, 0 at the end, -1 when
 * broken (the caller skips a byte and goes on, as Dovecot does).
 */
static int param_next(lex_t *l, rawparam_t *rp)
{
	if (l->p >= l->end)
		return 0;
	if (*l->p != ';')
		return -1;
	l->p++;
	if (!lex_skip(l))
		return -1;
	strbuf_t name = STRBUF_INIT, value = STRBUF_INIT;
	int ret = -1;
	if (lex_token(l, &name) == 0 || l->p >= l->end || *l->p != '=')
		goto out;
	l->p++;
	if (!lex_skip(l))
		goto out;  /* "name=" and nothing: no value */
	if (*l->p == '"') {
		if (!lex_quoted(l, &value))
			goto out;
	} else if (lex_token(l, &value) == 0) {
		goto out;
	}
	ret = 1;
	rp->index = -1;
	rp->extended = false;
	/* RFC 2231 3-4: name*, name*0, name*0*. */
	char *star = memchr(name.buf, '*', name.len);
	if (star != NULL) {
		char *q = star + 1, *e = name.buf + name.len;
		long idx = 0;
		bool digits = false;
		while (q < e && *q >= '0' && *q <= '9' && idx < 1000)
			idx = idx * 10 + (*q++ - '0'), digits = true;
		/* "name*" alone marks an extended value without pieces. */
		bool ext = q < e && *q == '*';
		if (ext)
			q++;
		else if (!digits && q == e)
			ext = true;
		if (q == e && (digits || ext) && idx < 1000) {
			rp->index = digits ? (int)idx : 0;
			rp->extended = ext;
			sb_truncate(&name, (size_t)(star - name.buf));
		}
	}
	rp->name = sb_dup(&name);
	rp->value = sb_dup(&value);
out:
	sb_free(&name);
	sb_free(&value);
	return ret;
}

static void params_add(mime_params_t *ps, char *name, char *value)
{
	ps->v = xrealloc(ps->v, (ps->n + 1) * sizeof *ps->v);
	ps->v[ps->n].name = name;
	ps->v[ps->n].value = value;
	ps->n++;
}

static int rawparam_cmp(const void *a, const void *b)
{
	const rawparam_t *x = a, *y = b;
	int c = strcasecmp(x->name, y->name);
	return c != 0 ? c : x->index - y->index;
}

/*
 * Joins the RFC 2231 pieces (index >= 0) of raw[0..n) into ps: a name
 * whose pieces are 0, 1, 2... becomes one parameter ("name*" if any piece
 * is extended, its value the pieces concatenated, still %-encoded); a
 * broken series stays as it was written. Takes the strings of raw.
 */
static void params_join(rawparam_t *raw, size_t n, mime_params_t *ps)
{
	qsort(raw, n, sizeof *raw, rawparam_cmp);
	for (size_t i = 0, j; i < n; i = j) {
		bool ok = true, ext = false;
		for (j = i; j < n && strcasecmp(raw[i].name, raw[j].name) == 0; j++) {
			ok = ok && raw[j].index == (int)(j - i);
			ext = ext || raw[j].extended;
		}
		if (!ok) {
			for (size_t k = i; k < j; k++) {
				params_add(ps, xasprintf("%s*%d%s", raw[k].name, raw[k].index,
							 raw[k].extended ? "*" : ""), raw[k].value);
				free(raw[k].name);
			}
			continue;
		}
		strbuf_t v = STRBUF_INIT;
		for (size_t k = i; k < j; k++) {
			sb_adds(&v, raw[k].value);
			free(raw[k].value);
			if (k > i)
				free(raw[k].name);
		}
		char *name = raw[i].name;
		if (ext) {
			name = xasprintf("%s*", raw[i].name);
			free(raw[i].name);
		}
		params_add(ps, name, sb_dup(&v));
		sb_free(&v);
	}
}

/* The parameters after a type or disposition: plain ones in order, then the
 * RFC 2231 ones joined. At most MIME_PARAMS_MAX are read. */
static void params_parse(lex_t *l, mime_params_t *ps, bool *truncated)
{
	rawparam_t raw[MIME_PARAMS_MAX];
	size_t nraw = 0;
	for (;;) {
		rawparam_t rp;
		int r = param_next(l, &rp);
		if (r == 0)
			break;
		if (r < 0) {
			/* Broken: skip a byte and try the rest, like Dovecot. */
			if (l->p >= l->end)
				break;
			l->p++;
			continue;
		}
		if (ps->n + nraw >= MIME_PARAMS_MAX) {
			*truncated = true;
			free(rp.name);
			free(rp.value);
			break;
		}
		if (rp.index < 0)
			params_add(ps, rp.name, rp.value);
		else
			raw[nraw++] = rp;
	}
	if (nraw > 0)
		params_join(raw, nraw, ps);
}

/* ---- the Content-* fields of one part ---------------------------------- */

/* The value as IMAP shows it: leading white space gone, line ends removed,
 * the white space of folding kept (what Dovecot sends). */
static char *field_raw(const char *v, size_t n)
{
	while (n > 0 && (*v == ' ' || *v == '\t'))
		v++, n--;
	char *out = xmalloc(n + 1);
	size_t o = 0;
	for (size_t i = 0; i < n && v[i] != '\0'; i++)
		if (v[i] != '\r' && v[i] != '\n')
			out[o++] = v[i];
	out[o] = '\0';
	return out;
}

/* Content-Type: type "/" subtype *(";" parameter). A broken one keeps what
 * could be read: "text" alone is text with an empty subtype, anything
 * else broken is "" "" without parameters. */
static void parse_content_type(mime_part_t *p, lex_t *l, bool *truncated)
{
	strbuf_t t = STRBUF_INIT, st = STRBUF_INIT;
	bool ok = false;
	lex_skip(l);
	if (lex_token(l, &t) > 0) {
		if (l->p >= l->end) {
			p->type = sb_dup(&t);
			p->subtype = xstrdup("");
			goto out;
		}
		if (*l->p == '/') {
			l->p++;
			lex_skip(l);
			ok = lex_token(l, &st) > 0;
		}
	}
	p->type = ok ? sb_dup(&t) : xstrdup("");
	p->subtype = ok ? sb_dup(&st) : xstrdup("");
	if (ok)
		params_parse(l, &p->params, truncated);
out:
	sb_free(&t);
	sb_free(&st);
}

static void parse_disposition(mime_part_t *p, lex_t *l, bool *truncated)
{
	strbuf_t t = STRBUF_INIT;
	lex_skip(l);
	lex_token(l, &t);
	p->disposition = sb_dup(&t);
	sb_free(&t);
	params_parse(l, &p->disp_params, truncated);
}

/* Content-Language (RFC 3282): tags separated by commas. */
static void parse_language(mime_part_t *p, lex_t *l)
{
	p->has_language = true;
	lex_skip(l);
	while (l->p < l->end && p->nlanguages < MIME_LANGS_MAX) {
		strbuf_t t = STRBUF_INIT;
		while (l->p < l->end && *l->p != ',' && *l->p != '(' && (unsigned char)*l->p > ' ')
			sb_addc(&t, *l->p++);
		lex_skip(l);
		if (sb_len(&t) > 0)
			p->languages[p->nlanguages++] = sb_dup(&t);
		sb_free(&t);
		if (l->p >= l->end || *l->p != ',')
			break;
		l->p++;
		lex_skip(l);
	}
}

/* Content-Transfer-Encoding: one token, nothing after it. */
static void parse_encoding(mime_part_t *p, lex_t *l)
{
	strbuf_t t = STRBUF_INIT;
	lex_skip(l);
	if (lex_token(l, &t) > 0 && l->p >= l->end)
		p->encoding = sb_dup(&t);
	sb_free(&t);
}

static void part_field(mime_part_t *p, const char *name, size_t nlen, const char *v, size_t vlen,
		       bool *truncated)
{
	if (nlen <= 8 || strncasecmp(name, "Content-", 8) != 0)
		return;
	const char *n = name + 8;
	size_t k = nlen - 8;
	if (vlen > MIME_FIELD_MAX) {
		vlen = MIME_FIELD_MAX;  /* the rest of an absurd value is not read */
		*truncated = true;
	}
	lex_t l = { v, v + vlen };
	/* The first of a repeated field counts (Dovecot does the same). */
	if (hdr_name_is(n, k, "Type") && p->type == NULL)
		parse_content_type(p, &l, truncated);
	else if (hdr_name_is(n, k, "Transfer-Encoding") && p->encoding == NULL)
		parse_encoding(p, &l);
	else if (hdr_name_is(n, k, "Disposition") && p->disposition == NULL)
		parse_disposition(p, &l, truncated);
	else if (hdr_name_is(n, k, "Language") && !p->has_language)
		parse_language(p, &l);
	else if (hdr_name_is(n, k, "ID") && p->id == NULL)
		p->id = field_raw(v, vlen);
	else if (hdr_name_is(n, k, "Description") && p->description == NULL)
		p->description = field_raw(v, vlen);
	else if (hdr_name_is(n, k, "MD5") && p->md5 == NULL)
		p->md5 = field_raw(v, vlen);
	else if (hdr_name_is(n, k, "Location") && p->location == NULL)
		p->location = field_raw(v, vlen);
}

static void part_fields_clear(mime_part_t *p);

/*
 * Reads the Content-* fields of p's header. In a message's own header they
 * count only when it says MIME-Version or has a Content-Type (RFC 2045 4;
 * Dovecot accepts a Content-Type alone, and so do we).
 */
static void part_header(mime_t *m, mime_part_t *p)
{
	hdr_iter_t it;
	const char *name, *v;
	size_t nlen, vlen;
	bool mime_version = false;
	size_t n = p->body_off - p->hdr_off;
	if (n > MIME_HEADER_MAX) {
		n = MIME_HEADER_MAX;  /* fields past this are not read */
		m->truncated = true;
	}
	hdr_iter_init(&it, m->msg + p->hdr_off, n);
	while (hdr_next(&it, &name, &nlen, &v, &vlen) == 1) {
		if (hdr_name_is(name, nlen, "MIME-Version"))
			mime_version = true;
		part_field(p, name, nlen, v, vlen, &m->truncated);
	}
	if (p->is_message_root && !mime_version && p->type == NULL)
		part_fields_clear(p);
}

/* ---- the structure ------------------------------------------------------ */

typedef struct scan {
	mime_t *m;
	size_t pos;            /* start of the next line */
	size_t lf, bare_lf;    /* line ends before pos: all, and those without CR */
	int open[MIME_DEPTH_MAX];
	const char *bnd[MIME_DEPTH_MAX];  /* active boundary of open[i], or NULL */
	size_t bndlen[MIME_DEPTH_MAX];
	size_t nopen;
	/* Where the content of open[i] that a boundary may end starts (its
	 * header, or after its close delimiter), with the line-end counts
	 * there: the line end before a boundary is cut only from within. */
	size_t floor_off[MIME_DEPTH_MAX], floor_lf[MIME_DEPTH_MAX], floor_bare[MIME_DEPTH_MAX];
	/* line-end counts at each part's body_off, to size bodies without a rescan */
	size_t *body_lf, *body_bare;
} scan_t;

/* The line at s->pos: [start, eol) without its line end; moves past it. */
static void scan_line(scan_t *s, size_t *start, size_t *eol)
{
	const char *msg = s->m->msg;
	size_t len = s->m->len;
	*start = s->pos;
	const char *nl = memchr(msg + s->pos, '\n', len - s->pos);
	if (nl == NULL) {
		*eol = s->pos = len;
		return;
	}
	size_t at = (size_t)(nl - msg);
	s->lf++;
	if (at == 0 || msg[at - 1] != '\r')
		s->bare_lf++;
	*eol = at > *start && msg[at - 1] == '\r' ? at - 1 : at;
	s->pos = at + 1;
}

/* The open multipart (stack index) whose boundary the line is, or -1;
 * *close tells a close delimiter. */
static int scan_boundary(const scan_t *s, const char *line, size_t n, bool *close)
{
	if (n < 2 || line[0] != '-' || line[1] != '-')
		return -1;
	for (size_t i = s->nopen; i-- > 0;) {
		size_t bl = s->bndlen[i];
		if (s->bnd[i] == NULL || n < 2 + bl || memcmp(line + 2, s->bnd[i], bl) != 0)
			continue;
		*close = n >= 4 + bl && line[2 + bl] == '-' && line[3 + bl] == '-';
		return (int)i;
	}
	return -1;
}

static int part_new(scan_t *s, int parent, size_t off)
{
	mime_t *m = s->m;
	if (m->nparts >= MIME_PARTS_MAX) {
		m->truncated = true;
		return -1;
	}
	if ((m->nparts & (m->nparts - 1)) == 0) {  /* grow at powers of two */
		size_t cap = m->nparts ? m->nparts * 2 : 4;
		m->parts = xrealloc(m->parts, cap * sizeof *m->parts);
		s->body_lf = xrealloc(s->body_lf, cap * sizeof *s->body_lf);
		s->body_bare = xrealloc(s->body_bare, cap * sizeof *s->body_bare);
	}
	int idx = (int)m->nparts++;
	mime_part_t *p = &m->parts[idx];
	memset(p, 0, sizeof *p);
	p->parent = parent;
	p->first_child = p->next_sibling = p->last_child = -1;
	p->hdr_off = p->body_off = p->end_off = off;
	if (parent >= 0) {
		mime_part_t *pp = &m->parts[parent];
		p->depth = pp->depth + 1;
		p->is_message_root = pp->kind == MIME_MESSAGE;
		if (pp->first_child < 0)
			pp->first_child = idx;
		else
			m->parts[pp->last_child].next_sibling = idx;
		pp->last_child = idx;
		pp->nchildren++;
	} else {
		p->is_message_root = true;
	}
	return idx;
}

/* Ends every open part above stack index keep at offset end (the line end
 * before a boundary belongs to the boundary, RFC 2046 5.1.1). */
static void scan_close(scan_t *s, size_t keep, size_t end, size_t lf, size_t bare)
{
	size_t was_open = s->nopen;
	while (s->nopen > keep) {
		size_t i = --s->nopen;
		int idx = s->open[i];
		mime_part_t *p = &s->m->parts[idx];
		size_t e = end, l = lf, b = bare;
		if (e < s->floor_off[i])
			e = s->floor_off[i], l = s->floor_lf[i], b = s->floor_bare[i];
		if (e < p->body_off) {
			/* The empty line we took for the end of the header was the
			 * boundary's own line end: no header, no body. */
			p->body_off = e;
			s->body_lf[idx] = l;
			s->body_bare[idx] = b;
		}
		p->end_off = e;
		p->body_lines = l - s->body_lf[idx];
		p->body_size = (e - p->body_off) + (b - s->body_bare[idx]);
	}
	/* A message whose part lost that empty line to the boundary starts
	 * after its parent's end: it is empty, at that end. */
	for (size_t i = keep + 1; i < was_open; i++) {
		const mime_part_t *pp = &s->m->parts[s->open[i - 1]];
		mime_part_t *p = &s->m->parts[s->open[i]];
		if (p->hdr_off > pp->end_off) {
			p->hdr_off = p->body_off = p->end_off = pp->end_off;
			p->body_size = p->body_lines = 0;
		}
	}
}

/* Moves s->pos to the start of the body: past the empty line that ends
 * the header, or to a boundary line of an open multipart (left for the
 * main loop), or to the end. */
static void scan_header_end(scan_t *s)
{
	mime_t *m = s->m;
	while (s->pos < m->len) {
		size_t start, eol, save = s->pos, lf = s->lf, bare = s->bare_lf;
		bool close;
		scan_line(s, &start, &eol);
		if (scan_boundary(s, m->msg + start, eol - start, &close) >= 0) {
			s->pos = save, s->lf = lf, s->bare_lf = bare;
			return;
		}
		if (eol == start)
			return;
	}
}

/* What p's type makes of it; past the depth bound a container is opaque. */
static enum mime_kind part_kind(mime_t *m, const mime_part_t *p)
{
	bool multi = mime_is(m, p, "multipart", NULL);
	bool message = mime_is(m, p, "message", "rfc822") || mime_is(m, p, "message", "global");
	if ((multi || message) && p->depth + 1 >= MIME_DEPTH_MAX) {
		m->truncated = true;
		return MIME_OPAQUE;
	}
	return multi ? MIME_MULTIPART : message ? MIME_MESSAGE : MIME_LEAF;
}

/*
 * Starts part idx at s->pos: finds the end of its header, reads its
 * fields and opens it. A message/rfc822 part opens its message at once.
 */
static void scan_begin(scan_t *s, int idx)
{
	mime_t *m = s->m;
	/* A loop, not recursion, down a chain of message/rfc822 parts. */
	while (idx >= 0) {
		size_t i = s->nopen;
		s->floor_off[i] = s->pos;
		s->floor_lf[i] = s->lf;
		s->floor_bare[i] = s->bare_lf;
		scan_header_end(s);
		mime_part_t *p = &m->parts[idx];
		p->body_off = s->pos;
		s->body_lf[idx] = s->lf;
		s->body_bare[idx] = s->bare_lf;
		part_header(m, p);
		p->kind = part_kind(m, p);
		s->nopen++;
		s->open[i] = idx;
		s->bnd[i] = NULL;
		if (p->kind == MIME_MULTIPART) {
			const char *b = mime_param(&p->params, "boundary");
			if (b != NULL && b[0] != '\0' && strlen(b) <= MIME_BOUNDARY_MAX) {
				s->bnd[i] = b;
				s->bndlen[i] = strlen(b);
			}
		}
		idx = p->kind == MIME_MESSAGE ? part_new(s, idx, s->pos) : -1;
	}
}

mime_t *mime_parse(const char *msg, size_t len)
{
	mime_t *m = xcalloc(1, sizeof *m);
	m->msg = msg;
	m->len = len;
	scan_t s = { .m = m };
	scan_begin(&s, part_new(&s, -1, 0));
	while (s.pos < len) {
		size_t start, eol, lf = s.lf, bare = s.bare_lf;
		bool close;
		scan_line(&s, &start, &eol);
		int k = scan_boundary(&s, msg + start, eol - start, &close);
		if (k < 0)
			continue;
		/* The boundary's line end before it: CRLF, or a bare LF. */
		size_t end = start;
		if (end > 0 && msg[end - 1] == '\n') {
			end--, lf--;
			if (end > 0 && msg[end - 1] == '\r')
				end--;
			else
				bare--;
		}
		scan_close(&s, (size_t)k + 1, end, lf, bare);
		if (close) {
			s.bnd[k] = NULL;  /* the epilogue stays in the multipart's body */
			s.floor_off[k] = s.pos;
			s.floor_lf[k] = s.lf;
			s.floor_bare[k] = s.bare_lf;
			continue;
		}
		int child = part_new(&s, s.open[k], s.pos);
		if (child >= 0)
			scan_begin(&s, child);
	}
	scan_close(&s, 0, len, s.lf, s.bare_lf);
	free(s.body_lf);
	free(s.body_bare);
	return m;
}

/* ---- lookups and the rest ---------------------------------------------- */

const char *mime_param(const mime_params_t *ps, const char *name)
{
	for (size_t i = 0; i < ps->n; i++)
		if (strcasecmp(ps->v[i].name, name) == 0)
			return ps->v[i].value;
	return NULL;
}

bool mime_is(const mime_t *m, const mime_part_t *p, const char *t, const char *st)
{
	const char *type = p->type, *sub = p->subtype;
	if (type == NULL) {
		/* RFC 2046 5.1.5: in a digest the default is message/rfc822. */
		const mime_part_t *pp = p->parent >= 0 ? &m->parts[p->parent] : NULL;
		bool digest = pp != NULL && pp->kind == MIME_MULTIPART && pp->subtype != NULL &&
			      strcasecmp(pp->subtype, "digest") == 0;
		type = digest ? "message" : "text";
		sub = digest ? "rfc822" : "plain";
	}
	return strcasecmp(type, t) == 0 && (st == NULL || strcasecmp(sub, st) == 0);
}

size_t mime_crlf_size(const char *b, size_t n, size_t *lines)
{
	size_t size = n, lf = 0;
	for (const char *p = b, *e = b + n; p < e;) {
		const char *nl = memchr(p, '\n', (size_t)(e - p));
		if (nl == NULL)
			break;
		lf++;
		if (nl == b || nl[-1] != '\r')
			size++;
		p = nl + 1;
	}
	if (lines != NULL)
		*lines = lf;
	return size;
}

static void params_free(mime_params_t *ps)
{
	for (size_t i = 0; i < ps->n; i++) {
		free(ps->v[i].name);
		free(ps->v[i].value);
	}
	free(ps->v);
	ps->v = NULL;
	ps->n = 0;
}

static void part_fields_clear(mime_part_t *p)
{
	free(p->type);
	free(p->subtype);
	params_free(&p->params);
	free(p->id);
	free(p->description);
	free(p->encoding);
	free(p->md5);
	free(p->location);
	free(p->disposition);
	params_free(&p->disp_params);
	for (size_t i = 0; i < p->nlanguages; i++)
		free(p->languages[i]);
	p->type = p->subtype = p->id = p->description = p->encoding = NULL;
	p->md5 = p->location = p->disposition = NULL;
	p->nlanguages = 0;
	p->has_language = false;
}

void mime_free(mime_t **mp)
{
	mime_t *m = *mp;
	if (m == NULL)
		return;
	for (size_t i = 0; i < m->nparts; i++)
		part_fields_clear(&m->parts[i]);
	free(m->parts);
	free(m);
	*mp = NULL;
}
