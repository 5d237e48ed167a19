/*
 * conf.c — smtpd's settings from roost.conf / ROOST_* (README, docs/SMTPD.md):
 * hostname, listen, smtp_port, max_message_size, tls_cert, tls_key,
 * smtp_idle_timeout_ms, smtp_greet_delay_ms, smtp_max_per_ip,
 * smtp_max_sessions, bus_timeout_ms.
 *
 * Ownership: strings are borrowed from the config_t (valid until its
 * config_free), except tls_cert and tls_key, which smtpd_conf_clear frees.
 */
#include "smtpd.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char smtpd_hostname[256];

int smtpd_conf_load(smtpd_conf_t *c, const config_t *cfg, char *err, size_t errlen)
{
	long v;
	c->config_path = config_path(cfg);
	c->bus_dir = config_bus_dir(cfg);
	c->data_dir = config_data_dir(cfg);
	if (gethostname(smtpd_hostname, sizeof smtpd_hostname - 1) < 0)
		strcpy(smtpd_hostname, "localhost");
	c->hostname = config_get(cfg, "hostname", smtpd_hostname);
	if (!addr_helo_valid(c->hostname, strlen(c->hostname)) || c->hostname[0] == '[') {
		snprintf(err, errlen, "hostname '%s' is not a domain name", c->hostname);
		return -1;
	}
	c->listen = config_get(cfg, "listen", "127.0.0.1");
	if (config_get_int(cfg, "smtp_port", 25, 1, 65535, &c->port, err, errlen) < 0 ||
	    config_get_int(cfg, "max_message_size", 64L << 20, 1024, 1L << 40, &v, err, errlen) < 0 ||
	    config_get_int(cfg, "smtp_idle_timeout_ms", 300000, 100, 3600000, &c->idle_ms, err, errlen) < 0 ||
	    config_get_int(cfg, "smtp_greet_delay_ms", 1000, 0, 60000, &c->greet_delay_ms, err, errlen) < 0 ||
	    config_get_int(cfg, "smtp_max_per_ip", 20, 1, 100000, &c->max_per_ip, err, errlen) < 0 ||
	    config_get_int(cfg, "smtp_max_sessions", 1000, 1, 100000, &c->max_sessions, err, errlen) < 0)
		return -1;
	/* storaged counts our Received header too: keep room for it */
	c->max_size = v > 2 * SMTPD_HEADROOM ? v - SMTPD_HEADROOM : v;
	c->store_timeout_ms = bus_timeout_ms();
	free(c->tls_cert);
	free(c->tls_key);
	const char *cert = config_get(cfg, "tls_cert", NULL), *key = config_get(cfg, "tls_key", NULL);
	c->tls_cert = cert ? xstrdup(cert) : xasprintf("%s/tls/cert.pem", c->data_dir);
	c->tls_key = key ? xstrdup(key) : xasprintf("%s/tls/key.pem", c->data_dir);
	return 0;
}

void smtpd_conf_clear(smtpd_conf_t *c)
{
	free(c->tls_cert);
	free(c->tls_key);
	c->tls_cert = c->tls_key = NULL;
}
