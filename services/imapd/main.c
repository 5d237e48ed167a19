/*
 * imapd — Roost's IMAP4rev1 server (issue 5; docs/IMAPD.md): 143 with
 * STARTTLS, 993 with implicit TLS. Every command becomes storaged requests;
 * storaged.mailbox.changed events drive IDLE and the untagged updates.
 *
 * Table of contents: configuration (conf.c), the TLS context (proto/tls.c),
 * the bus client for storaged, the event subscription (notify.c), the
 * control worker imapd.control (ping, stats, reload = SIGHUP: certificates),
 * the listeners (net.c; sessions run imap.c), dropping root, the loop.
 */
#include "imapd.h"
#include "hmap.h"
#include "log.h"
#include "service.h"
#include "util.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* control.reload and SIGHUP: certificate and key read again; sessions keep
 * the context they have. */
static int imapd_reload(void *arg, char *err, size_t errlen)
{
	imapd_t *d = arg;
	config_t *cfg = config_load(d->conf.config_path, err, errlen);
	if (cfg == NULL)
		return -1;
	char *c, *k;
	tls_conf_paths(cfg, &c, &k);
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

/* imapd.control.stats */
static void imapd_stats(json_t *st, void *arg)
{
	imapd_t *d = arg;
	json_object_set_new(st, "sessions", json_integer(d->stats.sessions));
	json_object_set_new(st, "connections", json_integer((json_int_t)d->stats.connections));
	json_object_set_new(st, "refused", json_integer((json_int_t)d->stats.refused));
	json_object_set_new(st, "timeouts", json_integer((json_int_t)d->stats.timeouts));
	json_object_set_new(st, "logins", json_integer((json_int_t)d->stats.logins));
	json_object_set_new(st, "login_failures", json_integer((json_int_t)d->stats.login_failures));
	json_object_set_new(st, "commands", json_integer((json_int_t)d->stats.commands));
	json_object_set_new(st, "events", json_integer((json_int_t)d->stats.events));
	json_object_set_new(st, "views", json_integer(d->views ? (json_int_t)hmap_count(d->views) : 0));
	json_object_set_new(st, "view_loads", json_integer((json_int_t)d->stats.view_loads));
	json_object_set_new(st, "view_catchups", json_integer((json_int_t)d->stats.view_catchups));
	json_object_set_new(st, "tls", json_boolean(d->tls != NULL));
}

int main(int argc, char **argv)
{
	static const service_opts_t opts = { "imapd", "The Roost IMAP server: users read their "
					     "mail on ports 143 (STARTTLS) and 993 (TLS)." };
	char err[512];
	config_t *cfg = service_init(&opts, argc, argv);
	imapd_t d = { 0 };
	if (imapd_conf_load(&d.conf, cfg, err, sizeof err) < 0)
		fatal("config", "why=%s", log_quote(err));
	d.tls = tls_new(d.conf.tls_cert, d.conf.tls_key, err, sizeof err);
	if (d.tls == NULL)
		log_warn("tls", "why=%s starttls=off imaps=off login=off", log_quote(err));

	d.loop = loop_new();
	d.bus = bus_client_new(d.loop, d.conf.bus_dir);
	d.sub = bus_sub_new(d.loop, d.conf.bus_dir, "storaged.mailbox.changed", notify_event, &d);
	d.pub = bus_pub_new(d.conf.bus_dir);
	d.fails_sub = bus_sub_new(d.loop, d.conf.bus_dir, "imapd.login.failed", imap_fails_event, &d);
	snprintf(d.instance, sizeof d.instance, "%s:%d", d.conf.hostname, (int)getpid());
	d.ctl = bus_control_new(d.loop, d.conf.bus_dir, "imapd", imapd_stats, imapd_reload, &d);
	if (d.bus == NULL || d.ctl == NULL || d.sub == NULL || d.pub == NULL || d.fails_sub == NULL)
		fatal("bus", "bus_dir=%s why=\"cannot create bus sockets\"", log_quote(d.conf.bus_dir));
	d.fails = hmap_new();
	if (net_listen(&d, err, sizeof err) < 0)
		fatal("listen", "why=%s", log_quote(err));
	service_drop_root(cfg);
	service_stop_on_signals(d.loop);
	log_info("ready", "listen=%s port=%ld tls_port=%ld hostname=%s tls=%s pid=%d",
		 d.conf.listen, d.conf.port, d.conf.tls_port, d.conf.hostname, d.tls ? "yes" : "no",
		 (int)getpid());

	loop_run(d.loop);

	net_close_all(&d);
	imap_fails_free(&d);
	bus_control_free(&d.ctl);
	bus_sub_free(&d.sub);
	bus_sub_free(&d.fails_sub);
	bus_pub_free(&d.pub);
	bus_client_free(&d.bus);
	views_free(&d);   /* after the client: no reply can reach a view now */
	tls_free(&d.tls);
	loop_free(&d.loop);
	bus_zmq_term();
	imapd_conf_clear(&d.conf);
	config_free(&cfg);
	log_info("stopped", "pid=%d", (int)getpid());
	return 0;
}
