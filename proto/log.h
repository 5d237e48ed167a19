/*
 * log.h — one line per event: time, level, service, event name, fields.
 *
 *   2026-11-25T13:51:20.123Z info busd worker.ready service=echo pid=4242
 *
 * Fields are logfmt (key=value, separated by spaces); values that may hold
 * spaces or quotes from the outside go through log_quote().
 */
#ifndef ROOST_LOG_H
#define ROOST_LOG_H

#include <stdarg.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Sets the service name shown on every line and the lowest level printed. */
void log_init(const char *service, enum log_level min);
/* Parses "debug", "info", "warn", "error"; -1 if unknown. */
int log_level_parse(const char *s);

void log_msg(enum log_level level, const char *event, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void log_vmsg(enum log_level level, const char *event, const char *fmt, va_list ap);

#define log_debug(ev, ...) log_msg(LOG_DEBUG, ev, __VA_ARGS__)
#define log_info(ev, ...) log_msg(LOG_INFO, ev, __VA_ARGS__)
#define log_warn(ev, ...) log_msg(LOG_WARN, ev, __VA_ARGS__)
#define log_error(ev, ...) log_msg(LOG_ERROR, ev, __VA_ARGS__)

/* A broken environment (cannot bind, cannot open the database): log and exit(1). */
void fatal(const char *event, const char *fmt, ...)
	__attribute__((format(printf, 2, 3), noreturn));

/*
 * Quotes s for a logfmt value into a static ring of buffers (safe for up to
 * eight uses in one log call); cut at 200 bytes, control bytes escaped.
 */
const char *log_quote(const char *s);

#endif
