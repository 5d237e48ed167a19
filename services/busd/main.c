/*
 * busd — the Roost bus broker (DESIGN.md "The bus"; docs/BUS.md).
 *
 * Table of contents: configuration, the bus directory (0750, bus_group),
 * a lock so that one busd owns it, peer identity (ZAP), the tap, the events
 * proxy, the broker, dropping root, the loop.
 */
#include "busd.h"
#include "config.h"
#include "log.h"
#include "service.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* bus_group may be a group name or a number; -1 means "leave as is". */
static gid_t busd_group(const config_t *cfg)
{
	const char *g = config_get(cfg, "bus_group", "");
	char *end;
	if (g[0] == '\0')
		return (gid_t)-1;
	unsigned long n = strtoul(g, &end, 10);
	if (*end == '\0')
		return (gid_t)n;
	struct group *gr = getgrnam(g);
	if (gr == NULL)
		fatal("config", "bus_group=%s why=\"no such group\"", log_quote(g));
	return gr->gr_gid;
}

/* The socket files libzmq creates get busd's group: give them to bus_group
 * so that its members can connect (the directory alone is not enough). */
static void busd_chgrp_sockets(const bus_endpoints_t *ep, gid_t gid)
{
	const char *const paths[] = { ep->clients, ep->workers, ep->events_in, ep->events_out, ep->tap };
	if (gid == (gid_t)-1)
		return;
	for (size_t i = 0; i < ARRAY_LEN(paths); i++) {
		const char *path = paths[i] + strlen("ipc://");
		if (chown(path, (uid_t)-1, gid) < 0)
			fatal("bus_dir", "path=%s why=%s", path, log_quote(strerror(errno)));
	}
}

/* Refuses to start while another busd serves the same directory: its
 * sockets would be unlinked from under it. */
static int busd_lock(const char *dir)
{
	char path[512];
	snprintf(path, sizeof path, "%s/busd.lock", dir);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
		fatal("lock", "path=%s error=%s", path, log_quote(strerror(errno)));
	if (flock(fd, LOCK_EX | LOCK_NB) < 0)
		fatal("lock", "path=%s why=\"another busd is running on this bus directory\"", path);
	return fd;
}

struct busd_reload {
	char *path;       /* the roost.conf read at start (NULL: none) */
	zap_t *zap;
};

/* SIGHUP and busd.control.reload: re-read roost.conf, apply the new ACL.
 * The bus directory and endpoints cannot change without a restart. */
static int busd_reload(void *arg, char *err, size_t errlen)
{
	struct busd_reload *r = arg;
	config_t *cfg = config_load(r->path, err, errlen);
	if (cfg == NULL)
		return -1;
	int rc = zap_set_acl(r->zap, config_get(cfg, "bus_acl", ""), err, errlen);
	config_free(&cfg);
	log_info("reload", "result=%s", rc == 0 ? "ok" : log_quote(err));
	return rc;
}

static void busd_on_hup(loop_t *loop, int signo, void *arg)
{
	char err[256];
	(void)loop; (void)signo;
	if (busd_reload(arg, err, sizeof err) < 0)
		log_warn("reload", "why=%s", log_quote(err));
}

int main(int argc, char **argv)
{
	static const service_opts_t opts = { "busd", "The Roost bus broker: routes requests, "
					     "events and the tap between Roost services." };
	char err[512];
	long queue_ms;
	config_t *cfg = service_init(&opts, argc, argv);
	const char *dir = config_bus_dir(cfg);
	bus_endpoints_t ep;
	if (bus_endpoints_init(&ep, dir) < 0)
		fatal("config", "bus_dir=%s why=\"too long for a Unix socket path\"", log_quote(dir));
	if (config_get_int(cfg, "bus_queue_timeout_ms", 2000, 0, 600000, &queue_ms, err, sizeof err) < 0)
		fatal("config", "why=%s", log_quote(err));
	if (service_mkdir(dir, 0750, busd_group(cfg), err, sizeof err) < 0)
		fatal("bus_dir", "why=%s", log_quote(err));
	int lock = busd_lock(dir);
	umask(0007);  /* sockets: owner and group may connect, nobody else */

	loop_t *loop = loop_new();
	zap_t *zap = zap_new(loop, config_get(cfg, "bus_acl", ""), err, sizeof err);
	if (zap == NULL)
		fatal("config", "why=%s", log_quote(err));
	tap_t *tap = tap_new(loop, ep.tap);
	events_t *events = tap ? events_new(loop, &ep, tap) : NULL;
	broker_t *broker = events ? broker_new(loop, &ep, tap, events, (int)queue_ms) : NULL;
	if (broker == NULL)
		fatal("bind", "bus_dir=%s why=\"cannot bind the bus sockets\"", log_quote(dir));
	struct busd_reload reload = { .path = config_path(cfg) ? xstrdup(config_path(cfg)) : NULL, .zap = zap };
	broker_on_reload(broker, busd_reload, &reload);
	loop_on_signal(loop, SIGHUP, busd_on_hup, &reload);
	busd_chgrp_sockets(&ep, busd_group(cfg));
	service_drop_root(cfg);
	service_stop_on_signals(loop);
	log_info("ready", "bus_dir=%s heartbeat_ms=%d pid=%d", log_quote(dir), bus_heartbeat_ms(), (int)getpid());

	loop_run(loop);

	broker_free(&broker);
	events_free(&events);
	tap_free(&tap);
	zap_free(&zap);
	loop_free(&loop);
	bus_zmq_term();
	close(lock);
	free(reload.path);
	config_free(&cfg);
	log_info("stopped", "pid=%d", (int)getpid());
	return 0;
}
