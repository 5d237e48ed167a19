/*
 * util.h — allocation that never returns NULL, clocks, small string helpers.
 *
 * Failure levels (STYLE.md): x* allocators abort on out-of-memory; fatal()
 * (log.h) is for a broken environment; everything a peer caused is logged
 * and answered, never fatal.
 */
#ifndef ROOST_UTIL_H
#define ROOST_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *xvasprintf(const char *fmt, va_list ap);

/* Milliseconds on the monotonic clock: for deadlines and intervals. */
int64_t now_ms(void);
/* Microseconds on the monotonic clock: for latency measurement. */
int64_t now_us(void);
/* Milliseconds since the Unix epoch: for timestamps shown to people. */
int64_t wall_ms(void);

/* Copies src into dst (size bytes), always NUL-terminated; returns -1 if cut. */
int strlcpy_checked(char *dst, const char *src, size_t size);

#endif
