/*
 * parse.c — reading IMAP commands (RFC 3501 9, RFC 7888 LITERAL+), with no
 * session state, so that every piece is unit-tested alone
 * (tests/unit/test_imap_parse.c).
 *
 * Two stages. The frame (imap_frame_feed) cuts the byte stream into whole
 * commands: a line, and while a line ends in a literal announcement {n} or
 * {n+}, exactly n more bytes and the next line. It never interprets more
 * than that, is resumable at any byte (a literal split across packets just
 * returns FR_MORE), and bounds every line (IMAPD_LINE_MAX) and the whole
 * command (IMAPD_CMD_MAX; APPEND's message by the configured maximum).
 * Memory grows with the bytes that really arrive, never with an announced
 * size: a client announcing a huge literal and leaving costs nothing.
 *
 * The parser (ip_*) is a cursor over one whole command. Nothing recurses
 * except SEARCH keys and FETCH's parenthesised lists, both bounded by
 * IMAPD_DEPTH_MAX before they descend: a 10,000-level nesting is a BAD,
 * not a deep stack. Strings it returns are copies it owns (ip_clear frees
 * them), at most IMAPD_STRS_MAX per command.
 */
#include "imapd.h"
#include "util.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ---- the frame ------------------------------------------------------------ */

void imap_frame_divert(imap_frame_t *f)
{
	f->divert = true;
}

void imap_frame_reset(imap_frame_t *f)
{
	sb_truncate(&f->cmd, 0);
	f->line_start = 0;
	f->lit_left = 0;
	f->divert = false;
	if (f->cmd.cap > 2 * IMAPD_CMD_MAX)
		sb_free(&f->cmd);   /* an APPEND's message is not kept around */
}

void imap_frame_free(imap_frame_t *f)
{
	sb_free(&f->cmd);
	memset(f, 0, sizeof *f);
}

/* True if the command in cmd is an APPEND (its tag, then "APPEND "). */
static bool frame_is_append(const imap_frame_t *f)
{
	const char *s = f->cmd.buf, *e = s + f->cmd.len;
	const char *sp = memchr(s, ' ', (size_t)(e - s));
	return sp != NULL && e - sp > 7 && strncasecmp(sp + 1, "APPEND ", 7) == 0;
}

/* If the line line[0..n) (line end excluded) ends in {digits} or {digits+},
 * the announced length; -1 otherwise. */
static int64_t frame_literal(const char *line, size_t n, bool *plus)
{
	if (n < 3 || line[n - 1] != '}')
		return -1;
	size_t i = n - 1;
	*plus = false;
	if (line[i - 1] == '+') {
		*plus = true;
		i--;
	}
	size_t digits_end = i;
	while (i > 0 && isdigit((unsigned char)line[i - 1]) && digits_end - i < 19)
		i--;
	if (i == digits_end || i == 0 || line[i - 1] != '{')
		return -1;
	return strtoll(line + i, NULL, 10);
}

enum frame_ev imap_frame_feed(imap_frame_t *f, const char *in, size_t len, size_t *used,
			      uint64_t append_max)
{
	size_t off = 0;
	enum frame_ev ev = FR_MORE;
	while (off < len && ev == FR_MORE) {
		if (f->lit_left > 0 && f->divert) {
			/* a streamed APPEND: the bytes go to the caller as they come */
			size_t take = len - off < f->lit_left ? len - off : (size_t)f->lit_left;
			if (take > f->lit_room)
				take = f->lit_room;
			if (take == 0)
				break;   /* the caller has no room: it comes back later */
			f->lit_data = in + off;
			f->lit_datalen = take;
			off += take;
			f->lit_left -= take;
			if (f->lit_left == 0) {
				f->line_start = f->cmd.len;
				f->divert = false;   /* a further literal is not the message */
			}
			ev = FR_LITERAL_BYTES;
			break;
		}
		if (f->lit_left > 0) {
			size_t take = len - off < f->lit_left ? len - off : (size_t)f->lit_left;
			sb_add(&f->cmd, in + off, take);
			off += take;
			f->lit_left -= take;
			if (f->lit_left == 0)
				f->line_start = f->cmd.len;
			continue;
		}
		const char *nl = memchr(in + off, '\n', len - off);
		size_t seg = nl ? (size_t)(nl - (in + off)) + 1 : len - off;
		if (f->skip_line) {
			/* dropping the rest of an over-long line */
			off += seg;
			if (nl != NULL) {
				f->skip_line = false;
				imap_frame_reset(f);
			}
			continue;
		}
		bool append = f->line_start > 0 && frame_is_append(f);
		uint64_t total_max = IMAPD_CMD_MAX + (append ? append_max : 0);
		if (f->cmd.len - f->line_start + seg > IMAPD_LINE_MAX + 2 ||
		    f->cmd.len + seg > total_max) {
			/* keep the tag for the BAD, if it is in sight */
			if (f->cmd.len < IMAPD_TAG_MAX + 2)
				sb_add(&f->cmd, in + off, seg < IMAPD_TAG_MAX + 2 ? seg : IMAPD_TAG_MAX + 2);
			imap_frame_tag(f, f->tag, sizeof f->tag);
			f->skip_line = nl == NULL;
			off += seg;
			imap_frame_reset(f);
			ev = FR_LINE_TOO_LONG;
			break;
		}
		sb_add(&f->cmd, in + off, seg);
		off += seg;
		if (nl == NULL)
			break;
		size_t linelen = f->cmd.len - f->line_start - 1;
		if (linelen > 0 && f->cmd.buf[f->line_start + linelen - 1] == '\r')
			linelen--;
		bool plus;
		int64_t n = frame_literal(f->cmd.buf + f->line_start, linelen, &plus);
		if (n < 0) {
			ev = FR_COMMAND;
			break;
		}
		append = frame_is_append(f);
		total_max = IMAPD_CMD_MAX + (append ? append_max : 0);
		if ((uint64_t)n > total_max - f->cmd.len) {
			ev = plus ? FR_LITPLUS_TOO_BIG : FR_LITERAL_TOO_BIG;
			break;
		}
		f->lit_left = (uint64_t)n;
		f->lit_sync = !plus;
		if (append && n > IMAPD_APPEND_STREAM_MIN && !f->divert) {
			ev = FR_APPEND_LITERAL;
			break;
		}
		if (n == 0)
			f->line_start = f->cmd.len;
		if (!plus)
			ev = FR_CONTINUE;
	}
	*used = off;
	return ev;
}

void imap_frame_tag(const imap_frame_t *f, char *tag, size_t cap)
{
	size_t i = 0;
	while (i < f->cmd.len && i + 1 < cap) {
		char c = f->cmd.buf[i];
		if (c == ' ' || c == '\r' || c == '\n' || (unsigned char)c <= 0x20 || c == '{' ||
		    c == '(' || c == ')' || c == '%' || c == '*' || c == '"' || c == '\\' || c == '+' ||
		    (unsigned char)c >= 0x7f)
			break;
		tag[i] = c;
		i++;
	}
	if (i == 0 || i >= f->cmd.len || f->cmd.buf[i] != ' ')
		snprintf(tag, cap, "*");
	else
		tag[i] = '\0';
}

/* ---- the cursor -------------------------------------------------------------- */

void ip_init(imap_parser_t *ip, const char *buf, size_t len)
{
	memset(ip, 0, sizeof *ip);
	ip->p = buf;
	ip->end = buf + len;
}

void ip_clear(imap_parser_t *ip)
{
	for (size_t i = 0; i < ip->nstrs; i++)
		free(ip->strs[i]);
	ip->nstrs = 0;
}

bool ip_fail(imap_parser_t *ip, const char *why)
{
	if (ip->err == NULL)
		ip->err = why;
	return false;
}

/* Keeps a copy of p[0..n) for the rest of the command. */
static const char *ip_keep(imap_parser_t *ip, const char *p, size_t n)
{
	if (ip->nstrs >= IMAPD_STRS_MAX) {
		ip_fail(ip, "too many strings in one command");
		return NULL;
	}
	char *s = xstrndup(p, n);
	if (memchr(p, '\0', n) != NULL) {
		/* xstrndup stops at a NUL: keep the bytes exactly */
		free(s);
		s = xmalloc(n + 1);
		memcpy(s, p, n);
		s[n] = '\0';
	}
	ip->strs[ip->nstrs++] = s;
	return s;
}

bool ip_peek(const imap_parser_t *ip, char c)
{
	return ip->p < ip->end && *ip->p == c;
}

bool ip_char(imap_parser_t *ip, char c)
{
	if (!ip_peek(ip, c))
		return false;
	ip->p++;
	return true;
}

bool ip_sp(imap_parser_t *ip)
{
	return ip_char(ip, ' ') || ip_fail(ip, "expected a space");
}

bool ip_eol(imap_parser_t *ip)
{
	if (ip->p < ip->end && *ip->p == '\r')
		ip->p++;
	if (ip->p < ip->end && *ip->p == '\n')
		ip->p++;
	return ip->p == ip->end;
}

static bool is_atom_char(unsigned char c)
{
	return c > 0x20 && c < 0x7f && c != '(' && c != ')' && c != '{' && c != '%' && c != '*' &&
	       c != '"' && c != '\\' && c != ']';
}

/* The run of characters accepted by ok; NULL if empty. */
static const char *ip_run(imap_parser_t *ip, bool (*ok)(unsigned char), const char *what)
{
	const char *s = ip->p;
	while (ip->p < ip->end && ok((unsigned char)*ip->p))
		ip->p++;
	if (ip->p == s) {
		ip_fail(ip, what);
		return NULL;
	}
	return ip_keep(ip, s, (size_t)(ip->p - s));
}

static bool is_tag_char(unsigned char c)
{
	return (is_atom_char(c) || c == ']') && c != '+';
}

static bool is_astring_char(unsigned char c)
{
	return is_atom_char(c) || c == ']';
}

const char *ip_tag(imap_parser_t *ip)
{
	const char *t = ip_run(ip, is_tag_char, "expected a tag");
	if (t != NULL && strlen(t) > IMAPD_TAG_MAX) {
		ip_fail(ip, "tag too long");
		return NULL;
	}
	return t;
}

const char *ip_atom(imap_parser_t *ip)
{
	return ip_run(ip, is_atom_char, "expected an atom");
}

static const char *ip_quoted(imap_parser_t *ip, size_t *len)
{
	ip->p++;   /* the opening quote */
	char *tmp = xmalloc((size_t)(ip->end - ip->p) + 1);
	size_t n = 0;
	while (ip->p < ip->end && *ip->p != '"') {
		char c = *ip->p++;
		if (c == '\r' || c == '\n' || c == '\0')
			break;
		if (c == '\\') {
			if (ip->p >= ip->end || (*ip->p != '"' && *ip->p != '\\'))
				break;
			c = *ip->p++;
		}
		tmp[n++] = c;
	}
	if (!ip_char(ip, '"')) {
		free(tmp);
		ip_fail(ip, "bad quoted string");
		return NULL;
	}
	const char *s = ip_keep(ip, tmp, n);
	free(tmp);
	*len = n;
	return s;
}

const char *ip_literal(imap_parser_t *ip, size_t *len)
{
	if (!ip_char(ip, '{'))
		return ip_fail(ip, "expected a literal"), NULL;
	uint64_t n = 0;
	if (!ip_number(ip, &n, UINT32_MAX * 16ULL))
		return NULL;
	ip_char(ip, '+');
	if (!ip_char(ip, '}'))
		return ip_fail(ip, "bad literal"), NULL;
	ip_char(ip, '\r');
	if (!ip_char(ip, '\n') || (uint64_t)(ip->end - ip->p) < n)
		return ip_fail(ip, "bad literal"), NULL;
	const char *s = ip->p;
	ip->p += n;
	*len = (size_t)n;
	return s;
}

const char *ip_string(imap_parser_t *ip, size_t *len)
{
	if (ip_peek(ip, '"'))
		return ip_quoted(ip, len);
	if (ip_peek(ip, '{')) {
		const char *s = ip_literal(ip, len);
		return s ? ip_keep(ip, s, *len) : NULL;
	}
	ip_fail(ip, "expected a string");
	return NULL;
}

const char *ip_astring(imap_parser_t *ip, size_t *len)
{
	if (ip_peek(ip, '"') || ip_peek(ip, '{'))
		return ip_string(ip, len);
	const char *s = ip_run(ip, is_astring_char, "expected a string");
	if (s != NULL)
		*len = strlen(s);
	return s;
}

static bool is_list_char(unsigned char c)
{
	return is_astring_char(c) || c == '%' || c == '*';
}

const char *ip_list_mailbox(imap_parser_t *ip, size_t *len)
{
	if (ip_peek(ip, '"') || ip_peek(ip, '{'))
		return ip_string(ip, len);
	const char *s = ip_run(ip, is_list_char, "expected a mailbox pattern");
	if (s != NULL)
		*len = strlen(s);
	return s;
}

const char *ip_nstring(imap_parser_t *ip, size_t *len, bool *nil)
{
	*nil = false;
	if ((size_t)(ip->end - ip->p) >= 3 && strncasecmp(ip->p, "NIL", 3) == 0 &&
	    (ip->end - ip->p == 3 || !is_atom_char((unsigned char)ip->p[3]))) {
		ip->p += 3;
		*nil = true;
		return NULL;
	}
	return ip_string(ip, len);
}

bool ip_number(imap_parser_t *ip, uint64_t *n, uint64_t max)
{
	const char *s = ip->p;
	uint64_t v = 0;
	while (ip->p < ip->end && isdigit((unsigned char)*ip->p)) {
		v = v * 10 + (uint64_t)(*ip->p - '0');
		if (v > max)
			return ip_fail(ip, "number out of range");
		ip->p++;
	}
	if (ip->p == s)
		return ip_fail(ip, "expected a number");
	*n = v;
	return true;
}

static bool is_seq_char(unsigned char c)
{
	return isdigit(c) || c == ':' || c == ',' || c == '*';
}

const char *ip_seqset(imap_parser_t *ip)
{
	const char *s = ip_run(ip, is_seq_char, "expected a sequence set");
	if (s == NULL)
		return NULL;
	seqset_t *set = xmalloc(sizeof *set);
	const char *why;
	int rc = strlen(s) > SEQSET_TEXT_MAX ? -1 : seqset_parse(set, s, 1, &why);
	free(set);
	if (rc < 0) {
		ip_fail(ip, "bad sequence set");
		return NULL;
	}
	return s;
}

/* ---- flags -------------------------------------------------------------------- */

static const char *const system_flags[] = { "\\Seen", "\\Answered", "\\Flagged", "\\Deleted",
					    "\\Draft" };

bool imap_flag_valid(const char *s)
{
	if (s[0] == '\\') {
		for (size_t i = 0; i < ARRAY_LEN(system_flags); i++)
			if (strcmp(s, system_flags[i]) == 0)
				return true;
		return false;
	}
	size_t n = strlen(s);
	if (n == 0 || n > IMAPD_FLAG_LEN_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!is_atom_char((unsigned char)s[i]))
			return false;
	return true;
}

/* One flag: "\Seen" (canonical case), or a keyword atom. */
static const char *ip_flag(imap_parser_t *ip)
{
	if (ip_char(ip, '\\')) {
		const char *a = ip_atom(ip);
		if (a == NULL)
			return NULL;
		for (size_t i = 0; i < ARRAY_LEN(system_flags); i++)
			if (strcasecmp(a, system_flags[i] + 1) == 0)
				return system_flags[i];
		ip_fail(ip, "unknown or unsettable system flag");
		return NULL;
	}
	const char *a = ip_atom(ip);
	if (a != NULL && strlen(a) > IMAPD_FLAG_LEN_MAX) {
		ip_fail(ip, "keyword too long");
		return NULL;
	}
	return a;
}

bool ip_flag_list(imap_parser_t *ip, const char **flags, size_t max, size_t *n)
{
	*n = 0;
	bool paren = ip_char(ip, '(');
	if (paren && ip_char(ip, ')'))
		return true;
	for (;;) {
		const char *f = ip_flag(ip);
		if (f == NULL)
			return false;
		if (*n >= max)
			return ip_fail(ip, "too many flags");
		flags[(*n)++] = f;
		if (!paren || !ip_char(ip, ' '))
			break;
	}
	return !paren || ip_char(ip, ')') || ip_fail(ip, "expected ')'");
}

/* ---- dates -------------------------------------------------------------------- */

static const char *const months[] = { "jan", "feb", "mar", "apr", "may", "jun",
				      "jul", "aug", "sep", "oct", "nov", "dec" };

/* "d-Mon-yyyy" at s into tm (day, month, year); the bytes used, or 0. */
static size_t parse_day(const char *s, size_t len, struct tm *tm)
{
	size_t i = 0;
	int day = 0;
	if (i < len && s[i] == ' ')
		i++;  /* date-day-fixed: " 5" */
	while (i < len && isdigit((unsigned char)s[i]) && day < 100)
		day = day * 10 + (s[i++] - '0');
	if (day < 1 || day > 31 || i + 9 > len || s[i] != '-' || s[i + 4] != '-')
		return 0;
	int mon = -1;
	for (int m = 0; m < 12; m++)
		if (strncasecmp(s + i + 1, months[m], 3) == 0)
			mon = m;
	int year = 0;
	for (int k = 0; k < 4; k++) {
		if (!isdigit((unsigned char)s[i + 5 + k]))
			return 0;
		year = year * 10 + (s[i + 5 + k] - '0');
	}
	if (mon < 0 || year < 1970)
		return 0;
	tm->tm_mday = day;
	tm->tm_mon = mon;
	tm->tm_year = year - 1900;
	return i + 9;
}

int64_t imap_date_parse(const char *s, size_t len)
{
	struct tm tm = { 0 };
	if (parse_day(s, len, &tm) != len)
		return -1;
	return (int64_t)timegm(&tm);
}

int64_t imap_datetime_parse(const char *s, size_t len)
{
	struct tm tm = { 0 };
	size_t i = parse_day(s, len, &tm);
	/* then " hh:mm:ss +zzzz" */
	if (i == 0 || len - i != 15 || s[i] != ' ' || s[i + 3] != ':' || s[i + 6] != ':' ||
	    s[i + 9] != ' ' || (s[i + 10] != '+' && s[i + 10] != '-'))
		return -1;
	int v[7];
	const size_t at[7] = { i + 1, i + 4, i + 7, i + 11, i + 13 };
	for (int k = 0; k < 5; k++) {
		if (!isdigit((unsigned char)s[at[k]]) || !isdigit((unsigned char)s[at[k] + 1]))
			return -1;
		v[k] = (s[at[k]] - '0') * 10 + (s[at[k] + 1] - '0');
	}
	if (v[0] > 23 || v[1] > 59 || v[2] > 60 || v[4] > 59)
		return -1;
	tm.tm_hour = v[0];
	tm.tm_min = v[1];
	tm.tm_sec = v[2];
	int64_t zone = (v[3] * 60 + v[4]) * 60;
	if (s[i + 10] == '-')
		zone = -zone;
	int64_t t = (int64_t)timegm(&tm) - zone;
	return t < 0 ? -1 : t;
}

/* ---- FETCH items ---------------------------------------------------------------- */

/* A word of letters, digits and dots (item names, section keywords). */
static bool word_is(imap_parser_t *ip, const char *w)
{
	size_t n = strlen(w);
	if ((size_t)(ip->end - ip->p) < n || strncasecmp(ip->p, w, n) != 0)
		return false;
	if (ip->p + n < ip->end && (isalnum((unsigned char)ip->p[n]) || ip->p[n] == '.'))
		return false;
	ip->p += n;
	return true;
}

/* Appends a header field name for the response: an atom if it is one. */
static void name_add_field(char *name, size_t cap, const char *f)
{
	size_t n = strlen(name);
	bool atom = *f != '\0';
	for (const char *c = f; *c; c++)
		atom = atom && is_astring_char((unsigned char)*c);
	snprintf(name + n, cap - n, atom ? "%s" : "\"%s\"", f);
}

/* SP "(" header-fld-name *(SP header-fld-name) ")" into b's section and name. */
static bool ip_header_list(imap_parser_t *ip, fetch_body_t *b)
{
	imap_section_t *s = &b->sect;
	char *name = b->name;
	size_t cap = sizeof b->name, n;
	if (!ip_sp(ip) || !ip_char(ip, '('))
		return ip_fail(ip, "expected a header list");
	do {
		size_t len;
		const char *f = ip_astring(ip, &len);
		if (f == NULL)
			return false;
		if (s->nfields >= SECT_FIELDS_MAX || len == 0 || strlen(f) != len)
			return ip_fail(ip, "bad header list");
		s->fields[s->nfields++] = f;
		if (s->nfields > 1) {
			n = strlen(name);
			snprintf(name + n, cap - n, " ");
		}
		name_add_field(name, cap, f);
	} while (ip_char(ip, ' '));
	if (!ip_char(ip, ')'))
		return ip_fail(ip, "expected ')'");
	n = strlen(name);
	snprintf(name + n, cap - n, ")");
	return true;
}

/* section = "[" [section-spec] "]", then an optional <origin.count>. */
static bool ip_section(imap_parser_t *ip, fetch_body_t *b)
{
	imap_section_t *s = &b->sect;
	char *name = b->name;
	size_t cap = sizeof b->name, n = strlen(name);
	snprintf(name + n, cap - n, "[");
	s->kind = SECT_ALL;
	while (ip->p < ip->end && isdigit((unsigned char)*ip->p)) {
		uint64_t v;
		if (!ip_number(ip, &v, UINT32_MAX) || v == 0)
			return ip_fail(ip, "bad section part");
		if (s->depth >= SECT_PATH_MAX)
			return ip_fail(ip, "section too deep");
		s->path[s->depth++] = (uint32_t)v;
		n = strlen(name);
		snprintf(name + n, cap - n, "%s%u", s->depth > 1 ? "." : "", (unsigned)v);
		if (!ip_char(ip, '.'))
			break;
		if (!isdigit((unsigned char)(ip->p < ip->end ? *ip->p : 0))) {
			n = strlen(name);
			snprintf(name + n, cap - n, ".");
			break;
		}
	}
	n = strlen(name);
	if (word_is(ip, "HEADER.FIELDS.NOT")) {
		s->kind = SECT_HEADER_FIELDS_NOT;
		snprintf(name + n, cap - n, "HEADER.FIELDS.NOT (");
	} else if (word_is(ip, "HEADER.FIELDS")) {
		s->kind = SECT_HEADER_FIELDS;
		snprintf(name + n, cap - n, "HEADER.FIELDS (");
	} else if (word_is(ip, "HEADER")) {
		s->kind = SECT_HEADER;
		snprintf(name + n, cap - n, "HEADER");
	} else if (word_is(ip, "TEXT")) {
		s->kind = SECT_TEXT;
		snprintf(name + n, cap - n, "TEXT");
	} else if (s->depth > 0 && word_is(ip, "MIME")) {
		s->kind = SECT_MIME;
		snprintf(name + n, cap - n, "MIME");
	} else if (n > 0 && name[n - 1] == '.') {
		return ip_fail(ip, "bad section text");
	}
	if ((s->kind == SECT_HEADER_FIELDS || s->kind == SECT_HEADER_FIELDS_NOT) &&
	    !ip_header_list(ip, b))
		return false;
	if (!ip_char(ip, ']'))
		return ip_fail(ip, "expected ']'");
	n = strlen(name);
	snprintf(name + n, cap - n, "]");
	if (ip_char(ip, '<')) {
		if (!ip_number(ip, &b->origin, UINT32_MAX) || !ip_char(ip, '.') ||
		    !ip_number(ip, &b->count, UINT32_MAX) || b->count == 0 || !ip_char(ip, '>'))
			return ip_fail(ip, "bad partial");
		b->partial = true;
		n = strlen(name);
		snprintf(name + n, cap - n, "<%llu>", (unsigned long long)b->origin);
	}
	if (strlen(name) >= cap - 1)
		return ip_fail(ip, "section too long");
	return true;
}

/* One fetch-att. */
static bool ip_fetch_att(imap_parser_t *ip, fetch_req_t *f)
{
	static const struct { const char *w; unsigned bits; } simple[] = {
		{ "BODYSTRUCTURE", FI_BODYSTRUCTURE }, { "ENVELOPE", FI_ENVELOPE },
		{ "FLAGS", FI_FLAGS }, { "INTERNALDATE", FI_INTERNALDATE },
		{ "RFC822.HEADER", FI_RFC822_HEADER }, { "RFC822.SIZE", FI_SIZE },
		{ "RFC822.TEXT", FI_RFC822_TEXT }, { "RFC822", FI_RFC822 }, { "UID", FI_UID },
		{ "MODSEQ", FI_MODSEQ },
	};
	bool peek = false;
	if (word_is(ip, "BODY.PEEK"))
		peek = true;
	else if (!word_is(ip, "BODY")) {
		for (size_t i = 0; i < ARRAY_LEN(simple); i++) {
			if (word_is(ip, simple[i].w)) {
				f->items |= simple[i].bits;
				return true;
			}
		}
		return ip_fail(ip, "unknown FETCH item");
	}
	if (!ip_peek(ip, '[')) {
		if (peek)
			return ip_fail(ip, "BODY.PEEK needs a section");
		f->items |= FI_BODY;
		return true;
	}
	ip->p++;
	if (f->nbodies >= IMAPD_FETCH_BODIES_MAX)
		return ip_fail(ip, "too many BODY[] items");
	fetch_body_t *b = &f->bodies[f->nbodies++];
	memset(b, 0, sizeof *b);
	b->peek = peek;
	snprintf(b->name, sizeof b->name, "BODY");
	if (!ip_section(ip, b))
		return false;
	if (!peek)
		f->sets_seen = true;
	return true;
}

bool ip_fetch_atts(imap_parser_t *ip, fetch_req_t *f)
{
	memset(f, 0, sizeof *f);
	if (word_is(ip, "ALL"))
		f->items = FI_FLAGS | FI_INTERNALDATE | FI_SIZE | FI_ENVELOPE;
	else if (word_is(ip, "FAST"))
		f->items = FI_FLAGS | FI_INTERNALDATE | FI_SIZE;
	else if (word_is(ip, "FULL"))
		f->items = FI_FLAGS | FI_INTERNALDATE | FI_SIZE | FI_ENVELOPE | FI_BODY;
	else if (ip_char(ip, '(')) {
		do {
			if (!ip_fetch_att(ip, f))
				return false;
		} while (ip_char(ip, ' '));
		if (!ip_char(ip, ')'))
			return ip_fail(ip, "expected ')'");
	} else if (!ip_fetch_att(ip, f)) {
		return false;
	}
	/* RFC 7162 3.1.4: FETCH ... (CHANGEDSINCE n), 3.2.6: and VANISHED, which
	 * needs CHANGEDSINCE (whether QRESYNC is on is the session's: qresync.c) */
	if (ip_char(ip, ' ')) {
		if (!ip_char(ip, '('))
			return ip_fail(ip, "bad FETCH modifier");
		do {
			if (f->changedsince == 0 && word_is(ip, "CHANGEDSINCE")) {
				if (!ip_sp(ip) || !ip_number(ip, &f->changedsince, 9007199254740991ULL) ||
				    f->changedsince == 0)
					return ip_fail(ip, "bad FETCH modifier");
			} else if (!f->vanished && word_is(ip, "VANISHED")) {
				f->vanished = true;
			} else {
				return ip_fail(ip, "bad FETCH modifier");
			}
		} while (ip_char(ip, ' '));
		if (!ip_char(ip, ')') || f->changedsince == 0)
			return ip_fail(ip, "bad FETCH modifier");
		f->items |= FI_MODSEQ;
	}
	if (f->items & (FI_RFC822 | FI_RFC822_TEXT))
		f->sets_seen = true;
	f->needs_bytes = f->nbodies > 0 || (f->items & (FI_RFC822 | FI_RFC822_HEADER |
							 FI_RFC822_TEXT | FI_ENVELOPE | FI_BODY |
							 FI_BODYSTRUCTURE));
	return true;
}

/* ---- sequence numbers to UIDs ------------------------------------------------------ */

char *seqmap_to_uids(const seqmap_t *map, const char *set, const char **why)
{
	seqset_t *in = xmalloc(sizeof *in), *out = xmalloc(sizeof *out);
	char *text = NULL;
	out->n = 0;
	if (seqset_parse(in, set, (uint32_t)map->n, why) < 0)
		goto done;
	for (size_t i = 0; i < in->n; i++) {
		uint32_t lo = in->r[i].lo, hi = in->r[i].hi;
		if (lo > map->n)
			break;
		if (hi > map->n)
			hi = (uint32_t)map->n;
		if (seqset_add(out, map->uids[lo - 1], map->uids[hi - 1]) < 0) {
			*why = "too many ranges";
			goto done;
		}
	}
	text = xmalloc(SEQSET_TEXT_MAX + 1);
	if (seqset_format(out, text, SEQSET_TEXT_MAX + 1) < 0) {
		free(text);
		text = NULL;
		*why = "set too large";
	}
done:
	free(in);
	free(out);
	return text;
}

/* ---- SEARCH keys --------------------------------------------------------------------- */

typedef struct search_ctx {
	imap_parser_t *ip;
	const seqmap_t *map;
	unsigned nodes;
	bool modseq;
} search_ctx_t;

static json_t *search_key(search_ctx_t *c, unsigned depth);

/* A criterion that matches nothing (RECENT, NEW: we have no \Recent). */
static json_t *search_none(void)
{
	return json_pack("{s:{s:b}}", "not", "all", 1);
}

static json_t *search_header(const char *field, const char *v)
{
	return json_pack("{s:{s:s, s:s}}", "header", "field", field, "contains", v);
}

/* An astring argument for a text key, bounded like storaged's contains. */
static const char *search_text(search_ctx_t *c)
{
	size_t len;
	if (!ip_sp(c->ip))
		return NULL;
	const char *v = ip_astring(c->ip, &len);
	if (v != NULL && (len > 1024 || strlen(v) != len)) {
		ip_fail(c->ip, "search string too long");
		return NULL;
	}
	return v;
}

static json_t *search_date(search_ctx_t *c, const char *key)
{
	size_t len;
	if (!ip_sp(c->ip))
		return NULL;
	const char *v = ip_astring(c->ip, &len);
	int64_t t = v ? imap_date_parse(v, len) : -1;
	if (t < 0) {
		ip_fail(c->ip, "bad date");
		return NULL;
	}
	return json_pack("{s:I}", key, (json_int_t)t);
}

/* HEADER name value: the fields storaged caches by their cache names. */
static json_t *search_header_key(search_ctx_t *c)
{
	static const struct { const char *imap, *field; } cached[] = {
		{ "subject", "subject" }, { "from", "from" }, { "to", "to" }, { "cc", "cc" },
		{ "bcc", "bcc" }, { "message-id", "message_id" }, { "in-reply-to", "in_reply_to" },
		{ "reply-to", "reply_to" }, { "sender", "sender" }, { "date", "date" },
	};
	const char *name = search_text(c);
	const char *v = name ? search_text(c) : NULL;
	if (v == NULL)
		return NULL;
	for (size_t i = 0; i < ARRAY_LEN(cached); i++)
		if (strcasecmp(name, cached[i].imap) == 0)
			return search_header(cached[i].field, v);
	/* Any other field: storaged reads it in the stored header. */
	size_t n = strlen(name);
	bool ok = n > 0 && n <= 76;   /* RFC 5322 2.1.1: a 78-byte line less ": " */
	for (size_t i = 0; ok && i < n; i++)
		ok = name[i] >= 33 && name[i] <= 126 && name[i] != ':';   /* ftext */
	if (!ok) {
		ip_fail(c->ip, "HEADER wants a field name (1 to 76 printable characters, no ':')");
		return NULL;
	}
	return search_header(name, v);
}

static json_t *search_number(search_ctx_t *c, const char *key)
{
	uint64_t n;
	if (!ip_sp(c->ip) || !ip_number(c->ip, &n, 9007199254740991ULL))
		return NULL;
	return json_pack("{s:I}", key, (json_int_t)n);
}

/* MODSEQ [entry-name entry-type-req] mod-sequence-valzer (RFC 7162 3.1.5) */
static json_t *search_modseq(search_ctx_t *c)
{
	size_t len;
	if (!ip_sp(c->ip))
		return NULL;
	if (ip_peek(c->ip, '"')) {
		if (ip_astring(c->ip, &len) == NULL || !ip_sp(c->ip) || ip_atom(c->ip) == NULL ||
		    !ip_sp(c->ip))
			return NULL;
	}
	uint64_t n;
	if (!ip_number(c->ip, &n, 9007199254740991ULL))
		return NULL;
	c->modseq = true;
	return json_pack("{s:I}", "modseq", (json_int_t)n);
}

/* A sequence set of message numbers as a UID criterion. */
static json_t *search_seqs(search_ctx_t *c)
{
	const char *set = ip_seqset(c->ip), *why = NULL;
	if (set == NULL)
		return NULL;
	char *uids = seqmap_to_uids(c->map, set, &why);
	if (uids == NULL) {
		ip_fail(c->ip, why ? why : "bad sequence set");
		return NULL;
	}
	json_t *k = uids[0] ? json_pack("{s:s}", "uids", uids) : search_none();
	free(uids);
	return k;
}

/* Keys up to ')' or the end, as one "and" (or the single key). */
static json_t *search_keys(search_ctx_t *c, unsigned depth, bool paren)
{
	json_t *all = json_array();
	for (;;) {
		json_t *k = search_key(c, depth);
		if (k == NULL) {
			json_decref(all);
			return NULL;
		}
		json_array_append_new(all, k);
		if (!ip_char(c->ip, ' '))
			break;
		if (paren && ip_peek(c->ip, ')'))
			break;
	}
	if (json_array_size(all) == 1) {
		json_t *one = json_incref(json_array_get(all, 0));
		json_decref(all);
		return one;
	}
	return json_pack("{s:o}", "and", all);
}

/* The keys named by a table: flags, header texts, dates; NULL with no
 * error if name is none of them. */
static json_t *search_table_key(search_ctx_t *c)
{
	static const struct { const char *w, *key, *flag; } flagkeys[] = {
		{ "ANSWERED", "flag", "\\Answered" }, { "DELETED", "flag", "\\Deleted" },
		{ "DRAFT", "flag", "\\Draft" }, { "FLAGGED", "flag", "\\Flagged" },
		{ "SEEN", "flag", "\\Seen" }, { "UNANSWERED", "unflag", "\\Answered" },
		{ "UNDELETED", "unflag", "\\Deleted" }, { "UNDRAFT", "unflag", "\\Draft" },
		{ "UNFLAGGED", "unflag", "\\Flagged" }, { "UNSEEN", "unflag", "\\Seen" },
	};
	static const struct { const char *w, *field; } textkeys[] = {
		{ "BCC", "bcc" }, { "CC", "cc" }, { "FROM", "from" }, { "SUBJECT", "subject" },
		{ "TO", "to" },
	};
	static const struct { const char *w, *key; } datekeys[] = {
		{ "BEFORE", "before" }, { "ON", "on" }, { "SINCE", "since" },
		{ "SENTBEFORE", "sentbefore" }, { "SENTON", "senton" }, { "SENTSINCE", "sentsince" },
	};
	imap_parser_t *ip = c->ip;
	for (size_t i = 0; i < ARRAY_LEN(flagkeys); i++)
		if (word_is(ip, flagkeys[i].w))
			return json_pack("{s:s}", flagkeys[i].key, flagkeys[i].flag);
	for (size_t i = 0; i < ARRAY_LEN(textkeys); i++) {
		if (word_is(ip, textkeys[i].w)) {
			const char *v = search_text(c);
			return v ? search_header(textkeys[i].field, v) : NULL;
		}
	}
	for (size_t i = 0; i < ARRAY_LEN(datekeys); i++)
		if (word_is(ip, datekeys[i].w))
			return search_date(c, datekeys[i].key);
	return NULL;
}

/* The keys with their own syntax (and NOT, OR, which recurse). */
static json_t *search_other_key(search_ctx_t *c, unsigned depth)
{
	imap_parser_t *ip = c->ip;
	bool un = false;
	if (word_is(ip, "ALL") || word_is(ip, "OLD"))
		return json_pack("{s:b}", "all", 1);
	if (word_is(ip, "NEW") || word_is(ip, "RECENT"))
		return search_none();
	if (word_is(ip, "KEYWORD") || (un = word_is(ip, "UNKEYWORD"))) {
		const char *kw = ip_sp(ip) ? ip_atom(ip) : NULL;
		if (kw == NULL || strlen(kw) > IMAPD_FLAG_LEN_MAX) {
			ip_fail(ip, "bad keyword");
			return NULL;
		}
		return json_pack("{s:s}", un ? "unkeyword" : "keyword", kw);
	}
	bool body = false;
	if ((body = word_is(ip, "BODY")) || word_is(ip, "TEXT")) {
		const char *v = search_text(c);
		return v ? json_pack("{s:s}", body ? "body" : "text", v) : NULL;
	}
	if (word_is(ip, "HEADER"))
		return search_header_key(c);
	if (word_is(ip, "LARGER"))
		return search_number(c, "larger");
	if (word_is(ip, "SMALLER"))
		return search_number(c, "smaller");
	if (word_is(ip, "MODSEQ"))
		return search_modseq(c);
	if (word_is(ip, "UID")) {
		const char *set = ip_sp(ip) ? ip_seqset(ip) : NULL;
		return set ? json_pack("{s:s}", "uids", set) : NULL;
	}
	if (word_is(ip, "NOT")) {
		json_t *k = ip_sp(ip) ? search_key(c, depth + 1) : NULL;
		return k ? json_pack("{s:o}", "not", k) : NULL;
	}
	if (word_is(ip, "OR")) {
		json_t *a = ip_sp(ip) ? search_key(c, depth + 1) : NULL;
		json_t *b = a && ip_sp(ip) ? search_key(c, depth + 1) : NULL;
		if (b == NULL) {
			json_decref(a);
			return NULL;
		}
		return json_pack("{s:[o,o]}", "or", a, b);
	}
	ip_fail(ip, "unknown search key");
	return NULL;
}

/* One search key; the depth and the number of keys are bounded before
 * anything recurses. */
static json_t *search_key(search_ctx_t *c, unsigned depth)
{
	imap_parser_t *ip = c->ip;
	if (depth >= IMAPD_DEPTH_MAX) {
		ip_fail(ip, "search keys nested too deeply");
		return NULL;
	}
	if (++c->nodes > IMAPD_SEARCH_KEYS_MAX) {
		ip_fail(ip, "too many search keys");
		return NULL;
	}
	if (ip_char(ip, '(')) {
		json_t *k = search_keys(c, depth + 1, true);
		if (k != NULL && !ip_char(ip, ')')) {
			json_decref(k);
			ip_fail(ip, "expected ')'");
			return NULL;
		}
		return k;
	}
	if (ip->p < ip->end && (isdigit((unsigned char)*ip->p) || *ip->p == '*'))
		return search_seqs(c);
	json_t *k = search_table_key(c);
	if (k != NULL || ip->err != NULL)
		return k;
	return search_other_key(c, depth);
}

json_t *ip_search_new(imap_parser_t *ip, const seqmap_t *map, bool *modseq)
{
	search_ctx_t c = { ip, map, 0, false };
	json_t *k = search_keys(&c, 0, false);
	*modseq = c.modseq;
	return k;
}
