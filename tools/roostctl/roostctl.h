/*
 * roostctl.h — the operator's command line. main.c holds the command table
 * and the shared options; each family of subcommands has its own file
 * (bus.c: bus tail, bus ping, status; accounts.c: domain, user, alias, mailbox,
 * rcpt).
 */
#ifndef ROOST_ROOSTCTL_H
#define ROOST_ROOSTCTL_H

#include <jansson.h>
#include <stdbool.h>

#include "config.h"

struct ctl {
	config_t *cfg;
	const char *bus_dir;
	bool json;           /* --json: machine-readable output */
	int timeout_ms;      /* --timeout */
};

/* One line on stderr, "roostctl: ...", and the exit status to return. */
int ctl_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* 0 if the bus directory holds busd's sockets, else prints why: 1. */
int ctl_bus_present(const struct ctl *ctl);

/*
 * Calls the bus synchronously; returns the reply (new reference) or NULL
 * after printing a one-line error (timeout, or a status other than ok).
 */
json_t *ctl_call_new(const struct ctl *ctl, const char *service, json_t **req);

int cmd_bus(struct ctl *ctl, int argc, char **argv);
int cmd_status(struct ctl *ctl, int argc, char **argv);
int cmd_domain(struct ctl *ctl, int argc, char **argv);
int cmd_user(struct ctl *ctl, int argc, char **argv);
int cmd_alias(struct ctl *ctl, int argc, char **argv);
int cmd_mailbox(struct ctl *ctl, int argc, char **argv);
int cmd_rcpt(struct ctl *ctl, int argc, char **argv);

#endif
