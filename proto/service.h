/*
 * service.h — the start-up steps every Roost process shares: command-line
 * flags (--help, --version, --config), roost.conf, logging, bus settings,
 * signals, and dropping root after binding.
 */
#ifndef ROOST_SERVICE_H
#define ROOST_SERVICE_H

#include <sys/types.h>

#include "config.h"
#include "loop.h"

typedef struct service_opts {
	const char *name;       /* "busd" */
	const char *summary;    /* one line for --help */
} service_opts_t;

/*
 * Parses argv (--help, --version, --config PATH), loads the configuration,
 * starts logging (log_level key) and the bus settings. Exits with a one-line
 * reason on any error. The returned config is the caller's.
 */
config_t *service_init(const service_opts_t *opts, int argc, char **argv);

/* Stops the loop on SIGTERM and SIGINT; ignores SIGPIPE. */
void service_stop_on_signals(loop_t *loop);

/* Creates dir (and parents) with mode, group gid if not (gid_t)-1. -1 with
 * a reason in err. */
int service_mkdir(const char *dir, mode_t mode, gid_t gid, char *err, size_t errlen);

/*
 * Running as root: switches to the user named by run_user (config key)
 * after the listeners are bound. Not root: nothing to do.
 */
void service_drop_root(const config_t *cfg);

#endif
