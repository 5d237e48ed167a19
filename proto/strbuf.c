/* strbuf.c — see strbuf.h. */
#include "strbuf.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *sb_reserve(strbuf_t *sb, size_t n)
{
	/* +1 keeps room for the terminator sb_str writes. */
	if (sb->cap - sb->len < n + 1) {
		size_t cap = sb->cap ? sb->cap : 64;
		while (cap - sb->len < n + 1)
			cap *= 2;
		sb->buf = xrealloc(sb->buf, cap);
		sb->cap = cap;
	}
	return sb->buf + sb->len;
}

void sb_commit(strbuf_t *sb, size_t n)
{
	sb->len += n;
}

void sb_add(strbuf_t *sb, const void *p, size_t n)
{
	if (n == 0)
		return;
	memcpy(sb_reserve(sb, n), p, n);
	sb->len += n;
}

void sb_addc(strbuf_t *sb, char c)
{
	*sb_reserve(sb, 1) = c;
	sb->len++;
}

void sb_adds(strbuf_t *sb, const char *s)
{
	sb_add(sb, s, strlen(s));
}

void sb_addu(strbuf_t *sb, unsigned long long v)
{
	char tmp[20];   /* 2^64 - 1 has 20 digits */
	size_t i = sizeof tmp;
	do
		tmp[--i] = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	sb_add(sb, tmp + i, sizeof tmp - i);
}

void sb_vaddf(strbuf_t *sb, const char *fmt, va_list ap)
{
	va_list ap2;
	va_copy(ap2, ap);
	char *dst = sb_reserve(sb, 64);
	int n = vsnprintf(dst, sb->cap - sb->len, fmt, ap);
	if (n >= 0 && (size_t)n >= sb->cap - sb->len) {
		dst = sb_reserve(sb, (size_t)n);
		n = vsnprintf(dst, sb->cap - sb->len, fmt, ap2);
	}
	va_end(ap2);
	if (n > 0)
		sb->len += (size_t)n;
}

void sb_addf(strbuf_t *sb, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	sb_vaddf(sb, fmt, ap);
	va_end(ap);
}

void sb_consume(strbuf_t *sb, size_t n)
{
	if (n >= sb->len) {
		sb->len = 0;
		return;
	}
	memmove(sb->buf, sb->buf + n, sb->len - n);
	sb->len -= n;
}

void sb_truncate(strbuf_t *sb, size_t len)
{
	if (len < sb->len)
		sb->len = len;
}

const char *sb_str(strbuf_t *sb)
{
	if (!sb->buf)
		return "";
	sb->buf[sb->len] = '\0';
	return sb->buf;
}

char *sb_steal(strbuf_t *sb, size_t *len)
{
	char *p = sb->buf ? sb->buf : xcalloc(1, 1);
	if (sb->buf)
		p[sb->len] = '\0';
	if (len)
		*len = sb->len;
	sb->buf = NULL;
	sb->len = sb->cap = 0;
	return p;
}

void sb_free(strbuf_t *sb)
{
	free(sb->buf);
	sb->buf = NULL;
	sb->len = sb->cap = 0;
}
