/*
 * smtpd — Roost's SMTP server, inbound half (issue 4; docs/SMTPD.md): the MX
 * on port 25. Remote servers deliver to our users; storaged decides who
 * exists and stores every message durably before we answer 250.
 *
 * Table of contents: configuration (conf.c), the TLS context (tls.c), the
 * bus client for storaged (deliver.c), the control worker smtpd.control
 * (ping, stats, reload = SIGHUP: certificates), the listener (net.c; the
 * sessions run smtp.c), dropping root, the loop; SIGTERM drains (net.c:
 * commits in flight are answered first), then everything is freed.
 */
#include "smtpd.h"
#include "log.h"
#include "service.h"
#include "util.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

/* control.reload and SIGHUP: certificate and key read again (a renewed
 * Let's Encrypt pair); sessions keep going with the context they have. */
static int smtpd_reload(void *arg, char *err, size_t errlen)
{
	smtpd_t *d = arg;
	config_t *cfg = config_load(d->conf.config_path, err, errlen);
	if (cfg == NULL)
		return -1;
	const char *cert = config_get(cfg, "tls_cert", NULL), *key = config_get(cfg, "tls_key", NULL);
	char *c = cert ? xstrdup(cert) : xasprintf("%s/tls/cert.pem", d->conf.data_dir);
	char *k = key ? xstrdup(key) : xasprintf("%s/tls/key.pem", d->conf.data_dir);
	config_free(&cfg);
	int rc = 0;
	if (d->tls != NULL)
		rc = tls_reload(d->tls, c, k, err, errlen);
	else if ((d->tls = tls_new(c, k, err, errlen)) == NULL)
		rc = -1;
	log_info("reload", "tls_cert=%s result=%s", log_quote(c), rc == 0 ? "ok" : log_quote(err));
	free(c);
	free(k);
	return rc;
}

/* smtpd.control.stats: sessions and transaction counters. */
static void smtpd_stats(json_t *st, void *arg)
{
	smtpd_t *d = arg;
	json_object_set_new(st, "sessions", json_integer(d->stats.sessions));
	json_object_set_new(st, "connections", json_integer((json_int_t)d->stats.connections));
	json_object_set_new(st, "refused", json_integer((json_int_t)d->stats.refused));
	json_object_set_new(st, "early_talkers", json_integer((json_int_t)d->stats.early));
	json_object_set_new(st, "timeouts", json_integer((json_int_t)d->stats.timeouts));
	json_object_set_new(st, "messages", json_integer((json_int_t)d->stats.messages));
	json_object_set_new(st, "rejected", json_integer((json_int_t)d->stats.rejected));
	json_object_set_new(st, "recipients", json_integer((json_int_t)d->stats.rcpts));
	json_object_set_new(st, "bytes", json_integer((json_int_t)d->stats.bytes));
	json_object_set_new(st, "tls", json_boolean(d->tls != NULL));
}

/* SIGTERM/SIGINT: drain (net.c); a second one stops at once. */
static void smtpd_on_stop(loop_t *loop, int signo, void *arg)
{
	(void)loop;
	log_info("stopping", "signal=%d", signo);
	net_drain(arg);
}

int main(int argc, char **argv)
{
	static const service_opts_t opts = { "smtpd", "The Roost SMTP server: receives mail "
					     "for local users on port 25 (MX)." };
	char err[512];
	config_t *cfg = service_init(&opts, argc, argv);
	smtpd_t d = { 0 };
	if (smtpd_conf_load(&d.conf, cfg, err, sizeof err) < 0)
		fatal("config", "why=%s", log_quote(err));
	d.tls = tls_new(d.conf.tls_cert, d.conf.tls_key, err, sizeof err);
	if (d.tls == NULL)
		log_warn("tls", "why=%s starttls=off", log_quote(err));

	d.loop = loop_new();
	d.bus = bus_client_new(d.loop, d.conf.bus_dir);
	d.pub = bus_pub_new(d.conf.bus_dir);
	d.ctl = bus_control_new(d.loop, d.conf.bus_dir, "smtpd", smtpd_stats, smtpd_reload, &d);
	if (d.bus == NULL || d.ctl == NULL || d.pub == NULL)
		fatal("bus", "bus_dir=%s why=\"cannot create bus sockets\"", log_quote(d.conf.bus_dir));
	if (net_listen(&d, err, sizeof err) < 0)
		fatal("listen", "why=%s", log_quote(err));
	service_drop_root(cfg);
	signal(SIGPIPE, SIG_IGN);
	loop_on_signal(d.loop, SIGTERM, smtpd_on_stop, &d);
	loop_on_signal(d.loop, SIGINT, smtpd_on_stop, &d);
	log_info("ready", "listen=%s port=%ld hostname=%s max_size=%ld tls=%s pid=%d", d.conf.listen,
		 d.conf.port, d.conf.hostname, d.conf.max_size, d.tls ? "yes" : "no", (int)getpid());

	loop_run(d.loop);

	net_close_all(&d);
	bus_control_free(&d.ctl);
	bus_client_free(&d.bus);
	bus_pub_free(&d.pub);
	tls_free(&d.tls);
	loop_free(&d.loop);
	bus_zmq_term();
	smtpd_conf_clear(&d.conf);
	config_free(&cfg);
	log_info("stopped", "pid=%d", (int)getpid());
	return 0;
}
