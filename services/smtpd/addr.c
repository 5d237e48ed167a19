/*
 * addr.c — the strict path parser for MAIL FROM and RCPT TO (RFC 5321
 * 4.1.2, with the UTF-8 extensions of RFC 6531 3.3 when SMTPUTF8 was
 * given), and the EHLO argument check.
 *
 *   Path      = "<" [ A-d-l ":" ] Mailbox ">"
 *   A-d-l     = At-domain *( "," At-domain )      ; source route: dropped
 *   Mailbox   = Local-part "@" ( Domain / address-literal )
 *   Local-part= Dot-string / Quoted-string
 *
 * Relay tricks have no effect here: the domain is what follows the one '@'
 * that is outside quotes, '%' and '!' are ordinary local-part characters,
 * and a quoted local part that is not a plain dot-atom is flagged (quoted)
 * so that smtpd never looks it up. Every length is bounded (SMTPD_LOCAL_MAX,
 * SMTPD_DOMAIN_MAX, SMTPD_PATH_MAX) and no byte past len is read.
 */
#include "smtpd.h"

#include <arpa/inet.h>
#include <string.h>

static bool is_alpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static bool is_digit(int c) { return c >= '0' && c <= '9'; }

/* atext of RFC 5322 3.2.3 (ASCII part). */
static bool is_atext(int c)
{
	return is_alpha(c) || is_digit(c) || (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* Length of the UTF-8 sequence at s (at most left bytes) if well formed
 * (no overlongs, no surrogates, at most U+10FFFF), else 0. */
static size_t utf8_seq(const unsigned char *s, size_t left)
{
	size_t n;
	unsigned cp;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) { n = 2; cp = s[0] & 0x1f; }
	else if (s[0] >= 0xe0 && s[0] <= 0xef) { n = 3; cp = s[0] & 0x0f; }
	else if (s[0] >= 0xf0 && s[0] <= 0xf4) { n = 4; cp = s[0] & 0x07; }
	else return 0;
	if (left < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

bool addr_utf8_valid(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	for (size_t i = 0; i < len;) {
		if (p[i] < 0x80) {
			i++;
			continue;
		}
		size_t n = utf8_seq(p + i, len - i);
		if (n == 0)
			return false;
		i += n;
	}
	return true;
}

struct cur {
	const unsigned char *p;
	size_t i, len;
	unsigned flags;
	enum addr_err err;   /* first error that is not plain syntax */
};

static int peek(const struct cur *c) { return c->i < c->len ? c->p[c->i] : -1; }

/* A non-ASCII character at the cursor: consumes it if SMTPUTF8 allows it.
 * Returns its length, 0 if it is not one or not allowed (err says why). */
static size_t take_utf8(struct cur *c)
{
	size_t n = utf8_seq(c->p + c->i, c->len - c->i);
	if (n == 0) {
		c->err = ADDR_BAD_UTF8;
		return 0;
	}
	if (!(c->flags & ADDR_UTF8)) {
		c->err = ADDR_NEED_UTF8;
		return 0;
	}
	c->i += n;
	return n;
}

/* sub-domain = Let-dig [Ldh-str], or a U-label with SMTPUTF8. Returns its
 * length, 0 if none. */
static size_t sub_domain(struct cur *c, bool *utf8)
{
	size_t start = c->i;
	int last = -1;
	for (;;) {
		int ch = peek(c);
		if (ch >= 0x80) {
			if (take_utf8(c) == 0)
				return 0;
			*utf8 = true;
			last = 'a';
			continue;
		}
		if (ch < 0 || !(is_alpha(ch) || is_digit(ch) || (ch == '-' && c->i > start)))
			break;
		last = ch;
		c->i++;
	}
	if (c->i == start || last == '-' || c->i - start > 63)
		return 0;
	return c->i - start;
}

/* Domain = sub-domain *("." sub-domain). Returns 0 or -1. */
static int domain(struct cur *c, bool *utf8)
{
	size_t start = c->i;
	for (;;) {
		if (sub_domain(c, utf8) == 0)
			return -1;
		if (peek(c) != '.')
			break;
		c->i++;
	}
	if (c->i - start > SMTPD_DOMAIN_MAX) {
		c->err = ADDR_TOO_LONG;
		return -1;
	}
	return 0;
}

/* address-literal = "[" ( IPv4 / "IPv6:" IPv6 / tag ":" dcontent ) "]". */
static int address_literal(struct cur *c)
{
	char lit[SMTPD_DOMAIN_MAX + 1];
	size_t n = 0;
	c->i++;  /* '[' */
	while (peek(c) >= 33 && peek(c) <= 126 && peek(c) != '[' && peek(c) != ']' &&
	       peek(c) != '\\') {
		if (n == sizeof lit - 1)
			return -1;
		lit[n++] = (char)c->p[c->i++];
	}
	if (peek(c) != ']' || n == 0)
		return -1;
	c->i++;
	lit[n] = '\0';
	unsigned char bin[16];
	if (strncasecmp(lit, "IPv6:", 5) == 0)
		return inet_pton(AF_INET6, lit + 5, bin) == 1 ? 0 : -1;
	if (is_digit((unsigned char)lit[0]))
		return inet_pton(AF_INET, lit, bin) == 1 ? 0 : -1;
	/* General-address-literal: Standardized-tag ":" 1*dcontent */
	char *colon = strchr(lit, ':');
	if (colon == NULL || colon == lit || colon[1] == '\0')
		return -1;
	for (char *q = lit; q < colon; q++)
		if (!(is_alpha(*q) || is_digit(*q) || *q == '-'))
			return -1;
	return 0;
}

/* A-d-l ":" — a source route, parsed and dropped (RFC 5321 4.1.1.3: it
 * MUST be accepted, SHOULD NOT be used; C: servers MAY ignore it). */
static int source_route(struct cur *c)
{
	bool utf8 = false;
	for (;;) {
		if (peek(c) != '@')
			return -1;
		c->i++;
		if (domain(c, &utf8) < 0)
			return -1;
		if (peek(c) == ',') {
			c->i++;
			continue;
		}
		if (peek(c) != ':')
			return -1;
		c->i++;
		return 0;
	}
}

/* Dot-string: writes it to out. Returns its length or -1. */
static long dot_string(struct cur *c, char *out, size_t cap, bool *utf8)
{
	size_t n = 0;
	bool atom_empty = true;
	for (;;) {
		int ch = peek(c);
		size_t from = c->i;
		if (ch >= 0x80) {
			if (take_utf8(c) == 0)
				return -1;
			*utf8 = true;
		} else if (ch >= 0 && is_atext(ch)) {
			c->i++;
		} else if (ch == '.' && !atom_empty) {
			c->i++;
			atom_empty = true;
			if (n == cap)
				return -1;
			out[n++] = '.';
			continue;
		} else {
			break;
		}
		atom_empty = false;
		if (n + (c->i - from) > cap) {
			c->err = ADDR_TOO_LONG;
			return -1;
		}
		memcpy(out + n, c->p + from, c->i - from);
		n += c->i - from;
	}
	return atom_empty ? -1 : (long)n;
}

/* True if s[0..n) is a dot-atom (could be written without quotes). */
static bool is_dot_atom(const char *s, size_t n)
{
	if (n == 0 || s[0] == '.' || s[n - 1] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '.' ? s[i + 1] == '.' : !(ch >= 0x80 || is_atext(ch)))
			return false;
	}
	return true;
}

/* Quoted-string: the unquoted content goes to out; *needs_quotes says
 * whether it is not a plain dot-atom. Returns its length or -1. */
static long quoted_string(struct cur *c, char *out, size_t cap, bool *utf8, bool *needs_quotes)
{
	size_t n = 0;
	c->i++;  /* '"' */
	for (;;) {
		int ch = peek(c);
		size_t from = c->i;
		if (ch == '"')
			break;
		if (ch == '\\') {
			c->i++;
			ch = peek(c);
			if (ch < 32 || ch > 126)
				return -1;
			from = c->i;
			c->i++;
		} else if (ch >= 0x80) {
			if (take_utf8(c) == 0)
				return -1;
			*utf8 = true;
		} else if (ch >= 32 && ch <= 126) {
			c->i++;
		} else {
			return -1;  /* control character or end of input */
		}
		if (n + (c->i - from) > cap) {
			c->err = ADDR_TOO_LONG;
			return -1;
		}
		memcpy(out + n, c->p + from, c->i - from);
		n += c->i - from;
	}
	c->i++;
	*needs_quotes = !is_dot_atom(out, n);
	return (long)n;
}

/* Mailbox = Local-part "@" ( Domain / address-literal ), written to p->addr. */
static int mailbox(struct cur *c, smtp_path_t *p)
{
	char local[SMTPD_LOCAL_MAX];
	bool needs_quotes = false;
	long ln = peek(c) == '"' ? quoted_string(c, local, sizeof local, &p->utf8, &needs_quotes)
				 : dot_string(c, local, sizeof local, &p->utf8);
	if (ln <= 0) {
		/* an empty quoted local part ("") is legal but never a mailbox here */
		return -1;
	}
	p->quoted = needs_quotes;
	if (peek(c) != '@')
		return -1;
	c->i++;
	size_t dstart = c->i;
	if (peek(c) == '[') {
		if (address_literal(c) < 0)
			return -1;
		p->literal = true;
	} else if (domain(c, &p->utf8) < 0) {
		return -1;
	}
	size_t dl = c->i - dstart;
	if ((size_t)ln + 1 + dl > SMTPD_PATH_MAX - 2) {
		c->err = ADDR_TOO_LONG;
		return -1;
	}
	memcpy(p->addr, local, (size_t)ln);
	p->addr[ln] = '@';
	memcpy(p->addr + ln + 1, c->p + dstart, dl);
	p->addr[ln + 1 + dl] = '\0';
	p->local_len = (size_t)ln;
	return 0;
}

enum addr_err addr_parse_path(const char *s, size_t len, unsigned flags, smtp_path_t *p,
			      size_t *used)
{
	struct cur c = { (const unsigned char *)s, 0, len, flags, ADDR_OK };
	memset(p, 0, sizeof *p);
	*used = 0;
	/* The whole path, with its brackets, is at most 256 octets (4.5.3.1.3). */
	const char *gt = memchr(s, '>', len);
	if (gt != NULL && (size_t)(gt - s) + 1 > SMTPD_PATH_MAX)
		return ADDR_TOO_LONG;
	if (peek(&c) != '<')
		return ADDR_SYNTAX;
	c.i++;
	if (peek(&c) == '>') {
		if (!(flags & ADDR_ALLOW_NULL))
			return ADDR_SYNTAX;
		p->null = true;
		*used = c.i + 1;
		return ADDR_OK;
	}
	if ((flags & ADDR_POSTMASTER) && len - c.i >= 11 && strncasecmp(s + c.i, "postmaster>", 11) == 0) {
		p->postmaster = true;
		strcpy(p->addr, "postmaster");
		*used = c.i + 11;
		return ADDR_OK;
	}
	if (peek(&c) == '@') {
		if (source_route(&c) < 0)
			return c.err != ADDR_OK ? c.err : ADDR_SYNTAX;
		p->route = true;
	}
	if (mailbox(&c, p) < 0 || peek(&c) != '>') {
		enum addr_err e = c.err != ADDR_OK ? c.err : ADDR_SYNTAX;
		memset(p, 0, sizeof *p);
		return e;
	}
	*used = c.i + 1;
	return ADDR_OK;
}

bool addr_helo_valid(const char *s, size_t len)
{
	struct cur c = { (const unsigned char *)s, 0, len, 0, ADDR_OK };
	bool utf8 = false;
	if (len == 0 || len > SMTPD_DOMAIN_MAX)
		return false;
	if (s[0] == '[')
		return address_literal(&c) == 0 && c.i == len;
	/* A trailing dot is common in the wild and harmless in a HELO name. */
	if (s[len - 1] == '.')
		c.len--;
	return domain(&c, &utf8) == 0 && c.i == c.len;
}
