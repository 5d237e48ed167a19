/*
 * rfc5322.c — see rfc5322.h.
 */
#include "rfc5322.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>
#include <time.h>

size_t hdr_end(const char *buf, size_t len, bool *found)
{
	/* An empty line: a line end right at the start or after a line end. */
	size_t i = 0;
	while (i < len) {
		if (buf[i] == '\n') {
			*found = true;
			return i + 1;
		}
		if (buf[i] == '\r' && i + 1 < len && buf[i + 1] == '\n') {
			*found = true;
			return i + 2;
		}
		const char *nl = memchr(buf + i, '\n', len - i);
		if (nl == NULL)
			break;
		i = (size_t)(nl - buf) + 1;
	}
	*found = false;
	return len;
}

void hdr_iter_init(hdr_iter_t *it, const char *hdr, size_t len)
{
	it->p = hdr;
	it->end = hdr + len;
	it->fields = 0;
}

/* The end of the logical line at p (folding included): the first line end
 * not followed by white space; *next is where the next line starts. */
static const char *hdr_line_end(const char *p, const char *end, const char **next)
{
	for (;;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL) {
			*next = end;
			return end;
		}
		if (nl + 1 < end && (nl[1] == ' ' || nl[1] == '\t')) {
			p = nl + 1;
			continue;
		}
		*next = nl + 1;
		return nl > p && nl[-1] == '\r' ? nl - 1 : nl;
	}
}

int hdr_next(hdr_iter_t *it, const char **name, size_t *namelen, const char **value,
	     size_t *valuelen)
{
	while (it->p < it->end && it->fields < HDR_FIELDS_MAX) {
		const char *next, *start = it->p;
		const char *eol = hdr_line_end(start, it->end, &next);
		it->p = next;
		if (eol == start)
			return 0;  /* the empty line: end of the header */
		const char *colon = memchr(start, ':', (size_t)(eol - start));
		/* A field name is printable ASCII but ':' (and nothing else). */
		const char *n = start;
		while (colon != NULL && n < colon && *n > ' ' && *n < 127)
			n++;
		if (colon == NULL || n != colon || colon == start)
			continue;
		it->fields++;
		*name = start;
		*namelen = (size_t)(colon - start);
		*value = colon + 1;
		*valuelen = (size_t)(eol - colon - 1);
		return 1;
	}
	return 0;
}

bool hdr_name_is(const char *name, size_t namelen, const char *want)
{
	return strlen(want) == namelen && strncasecmp(name, want, namelen) == 0;
}

size_t hdr_unfold(const char *value, size_t len, char *out, size_t cap)
{
	size_t o = 0;
	if (cap == 0)
		return 0;
	for (size_t i = 0; i < len && o + 1 < cap; i++) {
		unsigned char c = (unsigned char)value[i];
		if (c == '\r' || c == '\n')
			continue;  /* unfolding: the white space after stays */
		if (c < ' ' || c == 127)
			c = ' ';
		if (c == ' ' && o == 0)
			continue;
		out[o++] = (char)c;
	}
	while (o > 0 && out[o - 1] == ' ')
		o--;
	out[o] = '\0';
	return o;
}

/* ---- dates ------------------------------------------------------------------ */

static const char *date_skip(const char *s)
{
	for (;;) {
		while (*s == ' ' || *s == '\t' || *s == ',')
			s++;
		if (*s != '(')
			return s;
		int depth = 0;  /* a comment, nested ones included */
		do {
			if (*s == '(')
				depth++;
			else if (*s == ')')
				depth--;
			else if (*s == '\\' && s[1] != '\0')
				s++;
			s++;
		} while (*s != '\0' && depth > 0);
	}
}

/* Up to max digits as a number; -1 if none. */
static long date_num(const char **sp, int max)
{
	const char *s = *sp;
	long v = 0;
	int n = 0;
	while (n < max && isdigit((unsigned char)*s))
		v = v * 10 + (*s++ - '0'), n++;
	if (n == 0)
		return -1;
	*sp = s;
	return v;
}

/* A zone as minutes east of UTC; -1 sets *ok false. */
static int date_zone(const char *s, bool *ok)
{
	static const struct { const char *name; int min; } names[] = {
		{ "UT", 0 }, { "UTC", 0 }, { "GMT", 0 }, { "Z", 0 },
		{ "EST", -300 }, { "EDT", -240 }, { "CST", -360 }, { "CDT", -300 },
		{ "MST", -420 }, { "MDT", -360 }, { "PST", -480 }, { "PDT", -420 },
	};
	*ok = true;
	if (*s == '+' || *s == '-') {
		int sign = *s == '-' ? -1 : 1;
		s++;
		const char *d = s;
		long hhmm = date_num(&s, 4);
		if (hhmm < 0 || s - d != 4 || hhmm % 100 > 59)
			return *ok = false, 0;
		return sign * (int)(hhmm / 100 * 60 + hhmm % 100);
	}
	size_t n = 0;
	while (isalpha((unsigned char)s[n]))
		n++;
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (strlen(names[i].name) == n && strncasecmp(s, names[i].name, n) == 0)
			return names[i].min;
	/* RFC 5322 4.3: other zones (military letters) mean "unknown", -0000. */
	if (n == 0)
		*ok = *s == '\0';  /* no zone at all: taken as UTC */
	return 0;
}

int64_t hdr_date_parse(const char *s)
{
	static const char months[][4] = { "jan", "feb", "mar", "apr", "may", "jun",
					   "jul", "aug", "sep", "oct", "nov", "dec" };
	struct tm tm;
	memset(&tm, 0, sizeof tm);
	s = date_skip(s);
	if (isalpha((unsigned char)*s)) {  /* day-of-week, optional */
		while (isalpha((unsigned char)*s))
			s++;
		s = date_skip(s);
	}
	long day = date_num(&s, 2);
	s = date_skip(s);
	int mon = -1;
	for (int i = 0; i < 12; i++)
		if (strncasecmp(s, months[i], 3) == 0)
			mon = i;
	if (day < 1 || day > 31 || mon < 0)
		return -1;
	s += 3;
	while (isalpha((unsigned char)*s))
		s++;  /* a month spelled out in full */
	s = date_skip(s);
	const char *ys = s;
	long year = date_num(&s, 4);
	if (year < 0)
		return -1;
	if (s - ys <= 2)
		year += year < 50 ? 2000 : 1900;
	else if (s - ys == 3)
		year += 1900;
	s = date_skip(s);
	long hour = date_num(&s, 2), min = -1, sec = 0;
	if (*s == ':')
		s++, min = date_num(&s, 2);
	if (*s == ':') {
		s++;
		sec = date_num(&s, 2);
	}
	if (hour < 0 || hour > 23 || min < 0 || min > 59 || sec < 0 || sec > 60)
		return -1;
	s = date_skip(s);
	bool ok;
	int zone = date_zone(s, &ok);
	if (!ok || year < 1900 || year > 9999)
		return -1;
	tm.tm_year = (int)year - 1900;
	tm.tm_mon = mon;
	tm.tm_mday = (int)day;
	tm.tm_hour = (int)hour;
	tm.tm_min = (int)min;
	tm.tm_sec = (int)(sec == 60 ? 59 : sec);
	time_t t = timegm(&tm);
	if (t == (time_t)-1)
		return -1;
	return (int64_t)t - (int64_t)zone * 60;
}
