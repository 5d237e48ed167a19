/*
 * config.c — see config.h. Reads roost.conf once, strictly: anything we do
 * not understand (unknown key, malformed line, duplicate, NUL byte, an
 * over-long line or value) stops the load with one line naming file and
 * line, because a mail server that silently ignores a typo in its config
 * runs with settings the operator never chose.
 *
 * Only the keys in config_keys[] exist. Values are stored per key index,
 * with the line they came from, so later errors (config_get_int) can point
 * back at the file. The environment (ROOST_<KEY>) is consulted on every
 * config_get, and wins over the file.
 *
 * Ownership: config_load and config_new_empty return a new config_t that
 * the caller releases with config_free. Every string returned by a getter
 * is borrowed: file values and derived paths live until config_free,
 * environment values until that variable is changed.
 */
#include "config.h"
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_MAX_LINE 4096  /* bytes per line, newline excluded */
#define CONFIG_MAX_VALUE 4000 /* bytes per value, after unquoting */
#define CONFIG_MAX_KEY 64     /* bytes per key */
#define CONFIG_ENV_PREFIX "ROOST_"

/*
 * The only keys roost.conf may contain. The spec's bound of 1000 keys per
 * file can never be reached: unknown and duplicate keys are already errors,
 * so a file holds at most ARRAY_LEN(config_keys) keys.
 */
static const char *const config_keys[] = {
	"data_dir",             /* database, keys, certificates; default ./var */
	"bus_dir",              /* directory of the ipc:// bus sockets; default <data_dir>/bus */
	"hostname",             /* our HELO/EHLO and greeting name */
	"listen",               /* address the public listeners bind */
	"smtp_port",            /* inbound SMTP (MX) port, 25 */
	"submission_port",      /* submission with STARTTLS, 587 */
	"submissions_port",     /* submission over implicit TLS, 465 */
	"imap_port",            /* IMAP with STARTTLS, 143 */
	"imaps_port",           /* IMAP over implicit TLS, 993 */
	"resolver",             /* DNS server ip[:port] for MX, SPF, DKIM, DMARC, PTR */
	"tls_cert",             /* PEM certificate chain file */
	"tls_key",              /* PEM private key file */
	"log_level",            /* minimum level logged: debug, info, warn, error */
	"bus_heartbeat_ms",     /* interval between bus heartbeats */
	"bus_timeout_ms",       /* how long a bus client waits for a reply before retrying */
	"bus_retries",          /* how many times a bus client retries before giving up */
	"bus_queue_timeout_ms", /* how long busd holds a request waiting for a worker */
	"bus_acl",              /* which peers may register or call which services */
	"bus_group",            /* group owning the bus directory (mode 0750) */
	"max_message_size",     /* largest message accepted, in bytes */
	"min_free_space",       /* storaged refuses messages ("disk full") below this many free bytes */
	"run_user",             /* user a service started as root switches to after binding */
	"services",             /* make run: which services the supervisor starts */
	"smtp_idle_timeout_ms", /* smtpd: idle client dropped after this (RFC 5321 4.5.3.2: 5 min) */
	"smtp_greet_delay_ms",  /* smtpd: wait before the greeting; input before it is an early talker */
	"smtp_max_per_ip",      /* smtpd: concurrent sessions per client address */
	"smtp_max_sessions",    /* smtpd: concurrent sessions per process */
	"imap_idle_timeout_ms", /* imapd: authenticated client dropped after this (RFC 3501 5.4: 30 min) */
	"imap_login_timeout_ms",/* imapd: client not yet logged in dropped after this */
	"imap_max_per_ip",      /* imapd: concurrent sessions per client address */
	"imap_max_sessions",    /* imapd: concurrent sessions per process */
	"imap_plaintext_loopback", /* imapd: 1 allows LOGIN without TLS from loopback (as Dovecot does) */
	"wg_dir",               /* WireGuard keys (roostctl wg keygen); default <data_dir>/wg */
	"wg_net",               /* the tunnel's IPv4 /24: VPS .1, this server .2, devices from .10 */
	"bus_relay_port",       /* roostctl bus relay: busd's tap for devices, on the tunnel address; 4470 */
	"vps_ip",               /* the VPS's public IPv4 address (wg add-peer, dns-records, check-dns) */
	"vps_ip6",              /* the VPS's public IPv6 address, if it has one: AAAA, ip6: and PTR */
	"dkim_dir",             /* DKIM keys: <dkim_dir>/<domain>/<selector>.pem; default <data_dir>/dkim */
	"dkim_selector",        /* the DKIM selector signed with and published; default "roost" */
	"dmarc_rua",            /* address for DMARC aggregate reports (rua=mailto:...); none if unset */
};

#define CONFIG_NKEYS ARRAY_LEN(config_keys)

struct config {
	char *path;                        /* as given or found; NULL if none */
	char *values[CONFIG_NKEYS];        /* file value per key, NULL if absent */
	unsigned long lines[CONFIG_NKEYS]; /* line each value came from */
	char *bus_dir_default;             /* <data_dir>/bus, computed at load */
};

/* Result of reading one physical line. */
enum line_status { LINE_OK, LINE_EOF, LINE_TOO_LONG, LINE_NUL, LINE_IOERR };

/* Writes a one-line reason into err; callers may pass err == NULL. */
__attribute__((format(printf, 3, 4)))
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* Index of key in config_keys[], or -1. */
static int key_index(const char *key, size_t len)
{
	for (size_t i = 0; i < CONFIG_NKEYS; i++)
		if (strlen(config_keys[i]) == len &&
		    memcmp(config_keys[i], key, len) == 0)
			return (int)i;
	return -1;
}

/* A lookup of a key not in the table is a bug in the caller, not bad input. */
static int key_index_or_die(const char *key)
{
	int i = key_index(key, strlen(key));

	if (i < 0) {
		fprintf(stderr, "config: unknown key '%s' asked for "
			"(programming error: add it to config_keys[])\n", key);
		abort();
	}
	return i;
}

static int is_space(int c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static int is_key_char(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

/*
 * Reads one line (without its '\n') into buf, which holds CONFIG_MAX_LINE + 1
 * bytes. A last line without a newline still counts as a line.
 */
static enum line_status read_line(FILE *f, char *buf)
{
	size_t len = 0;
	int c;

	while ((c = getc(f)) != '\n') {
		if (c == EOF) {
			if (ferror(f))
				return LINE_IOERR;
			if (len == 0)
				return LINE_EOF;
			break;
		}
		/* A NUL would silently truncate every string we build from it. */
		if (c == '\0')
			return LINE_NUL;
		if (len == CONFIG_MAX_LINE)
			return LINE_TOO_LONG;
		buf[len++] = (char)c;
	}
	buf[len] = '\0';
	return LINE_OK;
}

/*
 * Unquotes a "..." value starting at s (on the opening quote) into out.
 * Only \" and \\ are escapes; nothing but whitespace may follow the
 * closing quote. Returns the unquoted length, or -1 with *why set.
 */
static long parse_quoted(const char *s, char *out, const char **why)
{
	long n = 0;

	for (s++; *s != '"'; s++) {
		if (*s == '\0') {
			*why = "unterminated quoted value";
			return -1;
		}
		if (*s == '\\') {
			s++;
			if (*s != '"' && *s != '\\') {
				*why = "bad escape in quoted value (only \\\" and \\\\)";
				return -1;
			}
		}
		out[n++] = *s;
	}
	for (s++; is_space(*s); s++)
		;
	if (*s != '\0') {
		*why = "unexpected text after closing quote";
		return -1;
	}
	out[n] = '\0';
	return n;
}

/* Copies the unquoted value s into out with trailing whitespace removed. */
static long parse_plain(const char *s, char *out)
{
	size_t n = strlen(s);

	while (n > 0 && is_space((unsigned char)s[n - 1]))
		n--;
	memcpy(out, s, n);
	out[n] = '\0';
	return (long)n;
}

/* Stores value for key index k, refusing a key already seen. */
static int store_value(config_t *cfg, int k, const char *value,
		       unsigned long lineno, char *err, size_t errlen)
{
	if (cfg->values[k] != NULL) {
		set_err(err, errlen, "%s:%lu: duplicate key '%s' (first on line %lu)",
			cfg->path, lineno, config_keys[k], cfg->lines[k]);
		return -1;
	}
	cfg->values[k] = xstrdup(value);
	cfg->lines[k] = lineno;
	return 0;
}

/*
 * Parses one line: blank, comment, or `key = value`. value is scratch
 * space of CONFIG_MAX_LINE + 1 bytes.
 */
static int parse_line(config_t *cfg, const char *line, unsigned long lineno,
		      char *value, char *err, size_t errlen)
{
	const char *p = line, *key, *why = NULL;
	size_t keylen;
	long vlen;
	int k;

	while (is_space(*p))
		p++;
	if (*p == '\0' || *p == '#')
		return 0;
	for (key = p; is_key_char(*p); p++)
		;
	keylen = (size_t)(p - key);
	while (is_space(*p))
		p++;
	if (keylen == 0 || *p != '=') {
		set_err(err, errlen, "%s:%lu: expected 'key = value'", cfg->path, lineno);
		return -1;
	}
	if (keylen > CONFIG_MAX_KEY) {
		set_err(err, errlen, "%s:%lu: key longer than %d bytes",
			cfg->path, lineno, CONFIG_MAX_KEY);
		return -1;
	}
	k = key_index(key, keylen);
	if (k < 0) {
		set_err(err, errlen, "%s:%lu: unknown key '%.*s'",
			cfg->path, lineno, (int)keylen, key);
		return -1;
	}
	for (p++; is_space(*p); p++)
		;
	vlen = *p == '"' ? parse_quoted(p, value, &why) : parse_plain(p, value);
	if (vlen < 0) {
		set_err(err, errlen, "%s:%lu: %s: %s", cfg->path, lineno,
			config_keys[k], why);
		return -1;
	}
	if (vlen > CONFIG_MAX_VALUE) {
		set_err(err, errlen, "%s:%lu: %s: value longer than %d bytes",
			cfg->path, lineno, config_keys[k], CONFIG_MAX_VALUE);
		return -1;
	}
	return store_value(cfg, k, value, lineno, err, errlen);
}

/* Turns a bad read_line status into its one-line error. */
static void line_error(const config_t *cfg, enum line_status st,
		       unsigned long lineno, int saved_errno, char *err, size_t errlen)
{
	if (st == LINE_TOO_LONG)
		set_err(err, errlen, "%s:%lu: line too long", cfg->path, lineno);
	else if (st == LINE_NUL)
		set_err(err, errlen, "%s:%lu: NUL byte in file", cfg->path, lineno);
	else
		set_err(err, errlen, "%s:%lu: %s", cfg->path, lineno,
			strerror(saved_errno));
}

/* Reads every line of f into cfg; stops at the first error. */
static int parse_file(config_t *cfg, FILE *f, char *err, size_t errlen)
{
	char *line = xmalloc(CONFIG_MAX_LINE + 1);
	char *value = xmalloc(CONFIG_MAX_LINE + 1);
	unsigned long lineno = 0;
	enum line_status st;
	int rc = 0;

	for (;;) {
		lineno++;
		errno = 0;
		st = read_line(f, line);
		if (st == LINE_EOF)
			break;
		if (st != LINE_OK) {
			line_error(cfg, st, lineno, errno, err, errlen);
			rc = -1;
			break;
		}
		if (parse_line(cfg, line, lineno, value, err, errlen) < 0) {
			rc = -1;
			break;
		}
	}
	free(line);
	free(value);
	return rc;
}

/*
 * dir + "/" + name, dropping trailing slashes of dir (but keeping "/"), so
 * "<data_dir>/bus" has no "//": Unix socket paths are limited to 108 bytes.
 */
static char *dir_join(const char *dir, const char *name)
{
	size_t n = strlen(dir);

	while (n > 1 && dir[n - 1] == '/')
		n--;
	if (n == 1 && dir[0] == '/')
		return xasprintf("/%s", name);
	return xasprintf("%.*s/%s", (int)n, dir, name);
}

config_t *config_new_empty(void)
{
	config_t *cfg = xcalloc(1, sizeof *cfg);

	/*
	 * Computed here rather than in config_bus_dir because the getters
	 * take a const config; so ROOST_DATA_DIR is read at load time.
	 */
	cfg->bus_dir_default = dir_join(config_data_dir(cfg), "bus");
	return cfg;
}

/* Opens path; "label" is what the error names (the path, or ROOST_CONFIG=path). */
static FILE *open_config(const char *path, const char *label, char *err,
			 size_t errlen)
{
	FILE *f = fopen(path, "r");

	if (f == NULL)
		set_err(err, errlen, "%s: %s", label, strerror(errno));
	return f;
}

/*
 * The default search: $ROOST_CONFIG (must exist), ./roost.conf, then
 * /etc/roost/roost.conf. Sets *f to NULL with no error when no file exists;
 * returns -1 on a file that exists but cannot be opened.
 */
static int find_config(const char **path, FILE **f, char *err, size_t errlen)
{
	static const char *const candidates[] = { "./roost.conf",
						  "/etc/roost/roost.conf" };
	const char *env = getenv("ROOST_CONFIG");

	*f = NULL;
	if (env != NULL) {
		char *label = xasprintf("ROOST_CONFIG=%s", env);
		*path = env;
		*f = open_config(env, label, err, errlen);
		free(label);
		return *f == NULL ? -1 : 0;
	}
	for (size_t i = 0; i < ARRAY_LEN(candidates); i++) {
		*path = candidates[i];
		*f = fopen(candidates[i], "r");
		if (*f != NULL)
			return 0;
		/* Only absence moves on: an unreadable file is the operator's. */
		if (errno != ENOENT) {
			set_err(err, errlen, "%s: %s", candidates[i], strerror(errno));
			return -1;
		}
	}
	*path = NULL;
	return 0;
}

config_t *config_load(const char *path, char *err, size_t errlen)
{
	config_t *cfg;
	FILE *f;

	if (path != NULL) {
		/* A path named by the caller must exist: no fallback search. */
		f = open_config(path, path, err, errlen);
		if (f == NULL)
			return NULL;
	} else if (find_config(&path, &f, err, errlen) < 0) {
		return NULL;
	}
	cfg = config_new_empty();
	if (f == NULL)
		return cfg; /* no file anywhere: environment and defaults only */
	cfg->path = xstrdup(path);
	if (parse_file(cfg, f, err, errlen) < 0) {
		fclose(f);
		config_free(&cfg);
		return NULL;
	}
	fclose(f);
	/* data_dir may have come from the file: derive bus_dir again. */
	free(cfg->bus_dir_default);
	cfg->bus_dir_default = dir_join(config_data_dir(cfg), "bus");
	return cfg;
}

void config_free(config_t **cfg)
{
	if (cfg == NULL || *cfg == NULL)
		return;
	for (size_t i = 0; i < CONFIG_NKEYS; i++)
		free((*cfg)->values[i]);
	free((*cfg)->path);
	free((*cfg)->bus_dir_default);
	free(*cfg);
	*cfg = NULL;
}

const char *config_path(const config_t *cfg)
{
	return cfg->path;
}

/* Writes ROOST_<KEY> for key into buf (sized for the longest key). */
static void env_name(const char *key, char *buf)
{
	size_t n = strlen(CONFIG_ENV_PREFIX);

	memcpy(buf, CONFIG_ENV_PREFIX, n);
	for (; *key != '\0'; key++)
		buf[n++] = (*key >= 'a' && *key <= 'z') ? (char)(*key - 'a' + 'A') : *key;
	buf[n] = '\0';
}

/*
 * The value of key k and where it came from: *from_env is set when the
 * environment supplied it. NULL when neither environment nor file has it.
 */
static const char *lookup(const config_t *cfg, int k, int *from_env)
{
	char name[sizeof CONFIG_ENV_PREFIX + CONFIG_MAX_KEY];
	const char *v;

	env_name(config_keys[k], name);
	v = getenv(name);
	*from_env = v != NULL;
	return v != NULL ? v : cfg->values[k];
}

const char *config_get(const config_t *cfg, const char *key, const char *def)
{
	int from_env;
	const char *v = lookup(cfg, key_index_or_die(key), &from_env);

	return v != NULL ? v : def;
}

/* Strict decimal: optional '-', digits only, no overflow. */
static int parse_long(const char *s, long *out)
{
	char *end;
	const char *digits = *s == '-' ? s + 1 : s;

	/* strtol would also accept leading spaces and '+': we do not. */
	if (*digits < '0' || *digits > '9')
		return -1;
	errno = 0;
	*out = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return -1;
	return 0;
}

int config_get_int(const config_t *cfg, const char *key, long def, long min,
		   long max, long *out, char *err, size_t errlen)
{
	int k = key_index_or_die(key);
	int from_env;
	const char *v = lookup(cfg, k, &from_env);
	long n;

	if (v == NULL) {
		*out = def;
		return 0;
	}
	if (parse_long(v, &n) == 0 && n >= min && n <= max) {
		*out = n;
		return 0;
	}
	if (from_env) {
		char name[sizeof CONFIG_ENV_PREFIX + CONFIG_MAX_KEY];
		env_name(key, name);
		set_err(err, errlen, "%s: '%s' is not an integer in %ld..%ld",
			name, v, min, max);
	} else {
		set_err(err, errlen, "%s:%lu: %s: '%s' is not an integer in %ld..%ld",
			cfg->path, cfg->lines[k], key, v, min, max);
	}
	return -1;
}

const char *config_data_dir(const config_t *cfg)
{
	return config_get(cfg, "data_dir", "./var");
}

const char *config_bus_dir(const config_t *cfg)
{
	return config_get(cfg, "bus_dir", cfg->bus_dir_default);
}
