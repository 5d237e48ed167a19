/*
 * conf.c — imapd's settings from roost.conf / ROOST_* (docs/IMAPD.md):
 * hostname, listen, imap_port, imaps_port, max_message_size, tls_cert,
 * tls_key, imap_idle_timeout_ms, imap_login_timeout_ms, imap_max_per_ip,
 * imap_max_sessions, imap_plaintext_loopback, bus_timeout_ms.
 *
 * Ownership: strings are borrowed from the config_t (valid until its
 * config_free), except tls_cert and tls_key, which imapd_conf_clear frees.
 */
#include "imapd.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char imapd_hostname[256];

int imapd_conf_load(imapd_conf_t *c, const config_t *cfg, char *err, size_t errlen)
{
	c->config_path = config_path(cfg);
	c->bus_dir = config_bus_dir(cfg);
	c->data_dir = config_data_dir(cfg);
	if (gethostname(imapd_hostname, sizeof imapd_hostname - 1) < 0)
		strcpy(imapd_hostname, "localhost");
	c->hostname = config_get(cfg, "hostname", imapd_hostname);
	c->listen = config_get(cfg, "listen", "127.0.0.1");
	/* RFC 3501 5.4: an autologout timer of at least 30 minutes once logged
	 * in; before that a client has no reason to sit idle. */
	if (config_get_int(cfg, "imap_port", 143, 1, 65535, &c->port, err, errlen) < 0 ||
	    config_get_int(cfg, "imaps_port", 993, 0, 65535, &c->tls_port, err, errlen) < 0 ||
	    config_get_int(cfg, "max_message_size", 64L << 20, 1024, 1L << 40, &c->max_size, err,
			   errlen) < 0 ||
	    config_get_int(cfg, "imap_idle_timeout_ms", 30 * 60 * 1000, 100, 24L * 3600 * 1000,
			   &c->idle_ms, err, errlen) < 0 ||
	    config_get_int(cfg, "imap_login_timeout_ms", 60 * 1000, 100, 3600 * 1000,
			   &c->login_ms, err, errlen) < 0 ||
	    config_get_int(cfg, "imap_max_per_ip", 50, 1, 100000, &c->max_per_ip, err, errlen) < 0 ||
	    config_get_int(cfg, "imap_max_sessions", 2000, 1, 100000, &c->max_sessions, err,
			   errlen) < 0 ||
	    config_get_int(cfg, "imap_plaintext_loopback", 0, 0, 1, &c->plaintext_loopback, err,
			   errlen) < 0)
		return -1;
	c->bus_timeout_ms = bus_timeout_ms();
	free(c->tls_cert);
	free(c->tls_key);
	tls_conf_paths(cfg, &c->tls_cert, &c->tls_key);
	return 0;
}

void imapd_conf_clear(imapd_conf_t *c)
{
	free(c->tls_cert);
	free(c->tls_key);
	c->tls_cert = c->tls_key = NULL;
}
