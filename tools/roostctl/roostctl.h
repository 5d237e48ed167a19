/*
 * roostctl.h — the operator's command line. main.c holds the command table
 * and the shared options; each family of subcommands has its own file
 * (bus.c: bus tail, bus ping, status; accounts.c: domain, user, alias, mailbox;
 * message.c: message).
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

/*
 * The idempotency key of this invocation: 16 random bytes, hex. Made once,
 * so every state-changing request of one roostctl run and every resend of
 * it carries the same key (a run that sends several derives one per
 * request from it). NULL if there is no randomness.
 */
const char *ctl_idem(void);

/*
 * Sends *req (stolen) to storaged, resending the same envelope after a
 * timeout; returns its ok reply (new reference) and, if raw is not NULL,
 * its raw frame (malloc'd, *rawlen bytes; the caller frees), or NULL after
 * printing one line: "roostctl: <what>: <code>: <reason>".
 */
json_t *ctl_storaged_new(const struct ctl *ctl, const char *what, json_t **req, void **raw,
			 size_t *rawlen);

int cmd_bus(struct ctl *ctl, int argc, char **argv);
int cmd_status(struct ctl *ctl, int argc, char **argv);
int cmd_domain(struct ctl *ctl, int argc, char **argv);
int cmd_user(struct ctl *ctl, int argc, char **argv);
int cmd_alias(struct ctl *ctl, int argc, char **argv);
int cmd_mailbox(struct ctl *ctl, int argc, char **argv);
int cmd_message(struct ctl *ctl, int argc, char **argv);

#endif
