/*
 * log.c — see log.h. Writes to stderr with one write() per line so that
 * lines from concurrent processes sharing the supervisor's pipe never mix.
 */
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char log_service[32] = "roost";
static enum log_level log_min = LOG_INFO;
static const char *const level_names[] = { "debug", "info", "warn", "error" };

void log_init(const char *service, enum log_level min)
{
	snprintf(log_service, sizeof log_service, "%s", service);
	log_min = min;
}

int log_level_parse(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (strcmp(s, level_names[i]) == 0)
			return i;
	return -1;
}

void log_vmsg(enum log_level level, const char *event, const char *fmt, va_list ap)
{
	if (level < log_min)
		return;
	char line[2048];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s %s",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
			 tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
			 level_names[level], log_service, event);
	if (fmt != NULL && fmt[0] != '\0' && n < (int)sizeof line - 2) {
		line[n++] = ' ';
		int m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
		if (m > 0)
			n += m < (int)(sizeof line - n - 1) ? m : (int)(sizeof line - n - 2);
	}
	if (n > (int)sizeof line - 2)
		n = sizeof line - 2;
	line[n++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, n);
	(void)w;
}

void log_msg(enum log_level level, const char *event, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(level, event, fmt, ap);
	va_end(ap);
}

void fatal(const char *event, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(LOG_ERROR, event, fmt, ap);
	va_end(ap);
	exit(1);
}

const char *log_quote(const char *s)
{
	static char ring[8][256];
	static unsigned next;
	char *out = ring[next++ % 8];
	size_t o = 0;
	if (s == NULL)
		return "-";
	out[o++] = '"';
	for (size_t i = 0; s[i] != '\0' && o < 200; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = (char)c;
		} else if (c < 0x20 || c == 0x7f) {
			o += snprintf(out + o, 256 - o, "\\x%02x", c);
		} else {
			out[o++] = (char)c;
		}
	}
	out[o++] = '"';
	out[o] = '\0';
	return out;
}
