/*
 * strbuf.h — a growable byte buffer for building replies.
 *
 * Bytes, not C strings: it may hold NULs, and sb_str() terminates it for
 * printing. Allocation aborts on out-of-memory like xmalloc (util.h); a
 * caller that must bound a reply checks sb_len() itself.
 */
#ifndef ROOST_STRBUF_H
#define ROOST_STRBUF_H

#include <stddef.h>
#include <stdarg.h>

typedef struct strbuf {
	char *buf;  /* owned; NULL until the first byte */
	size_t len;
	size_t cap;
} strbuf_t;

#define STRBUF_INIT { NULL, 0, 0 }

void sb_add(strbuf_t *sb, const void *p, size_t n);
void sb_addc(strbuf_t *sb, char c);
void sb_adds(strbuf_t *sb, const char *s);
/* v in decimal: what sb_addf("%llu") writes, without printf's machinery
 * (a FETCH of 50,000 flags writes 100,000 numbers). */
void sb_addu(strbuf_t *sb, unsigned long long v);
void sb_addf(strbuf_t *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_vaddf(strbuf_t *sb, const char *fmt, va_list ap);
/* Makes room for n more bytes and returns where they go; sb_commit adds them. */
char *sb_reserve(strbuf_t *sb, size_t n);
void sb_commit(strbuf_t *sb, size_t n);
/* Drops the first n bytes (what a writer has sent). */
void sb_consume(strbuf_t *sb, size_t n);
void sb_truncate(strbuf_t *sb, size_t len);
static inline size_t sb_len(const strbuf_t *sb) { return sb->len; }
/* NUL-terminated view ("" when empty); valid until the next change. */
const char *sb_str(strbuf_t *sb);
/* Hands the bytes to the caller (NUL-terminated, free()) and empties sb. */
char *sb_steal(strbuf_t *sb, size_t *len);
void sb_free(strbuf_t *sb);

#endif
