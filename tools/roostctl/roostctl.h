/*
 * roostctl.h — the operator's command line. main.c holds the command table
 * and the shared options; each family of subcommands has its own file
 * (bus.c: bus tail, bus ping, status; relay.c: bus relay; accounts.c: domain, user, alias, mailbox,
 * rcpt; backup.c: backup, restore; queue.c: queue; message.c: message;
 * wg.c: wg, vps-config; dns.c: dns-records; dnscheck.c: check-dns).
 */
#ifndef ROOST_ROOSTCTL_H
#define ROOST_ROOSTCTL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "msgtypes.h"

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

#define CTL_STORAGED_RETRIES 2   /* resends after a timeout (same id, same idem) */

/*
 * Sends *req (stolen) to storaged, resending after a timeout; returns its
 * ok reply (new reference; the raw frame, malloc'd, in *raw if raw is not
 * NULL), or NULL after one line "roostctl: <what>: <code>: <error>".
 */
json_t *ctl_storaged_call_new(const struct ctl *ctl, const char *what, json_t **req, void **raw,
			      size_t *rawlen);

/* accounts.c's request helpers, which queue.c shares. */
/* A request envelope of type (new reference), carrying this invocation's
 * idempotency key if the type changes state; NULL after printing why. */
json_t *acct_env_new(enum msg_type type, const char *what);
/* Unix seconds as "2024-11-25T13:00:00Z" into buf. */
const char *acct_when(long long secs, char *buf, size_t size);
/* A reply's string field, "-" if absent or null; an integer field, 0 if absent. */
const char *acct_str(const json_t *obj, const char *key);
long long acct_num(const json_t *obj, const char *key);

/*
 * The idempotency key of this invocation: 16 random bytes, hex. Made once,
 * so every state-changing request of one roostctl run and every resend of
 * it carries the same key (a run that sends several derives one per
 * request from it). NULL if there is no randomness.
 */
const char *ctl_idem(void);

/*
 * dns.c: what dns-records and check-dns share. Strings are borrowed from
 * argv and the config, except dkim_dir, dkim_key and dkim_p, which
 * dnsconf_clear frees.
 */
struct dnsconf {
	const char *domain;     /* as given, without a trailing dot */
	const char *hostname;   /* hostname / ROOST_HOSTNAME, else the host's name; no trailing dot */
	char domain_buf[256], host_buf[256];
	const char *ip4, *ip6;  /* the VPS's addresses (--ip, vps_ip, vps_ip6); NULL if unknown */
	bool ip4_arg, ip6_arg;  /* given with --ip */
	const char *selector;   /* DKIM selector */
	char *dkim_dir;
	char *dkim_key;         /* path of the key file found; NULL if none yet */
	char *dkim_p;           /* its public key as the p= tag wants it */
	const char *dkim_k;     /* k=: "rsa" or "ed25519" */
};

/*
 * Parses DOMAIN [--ip IP]... [--selector S] [--json] [--help] and reads
 * the settings and the DKIM key. 0 to go on; -1 to stop with exit status
 * *rc (after --help, or one line saying what is wrong). Call
 * dnsconf_clear in both cases.
 */
int dnsconf_load(struct dnsconf *d, struct ctl *ctl, int argc, char **argv,
		 int (*usage)(FILE *to), int *rc);
void dnsconf_clear(struct dnsconf *d);
/* Prints a command's usage text to to: exit status 0 for stdout (--help), 2 otherwise. */
int dnsconf_usage(FILE *to, const char *text);

/*
 * wg.c: the tunnel's addresses, from wg_net (default 10.44.0.0/24): the VPS
 * .1, this server .2, the owner's devices (wg add-peer) .10 to .254.
 */
#define WG_DEFAULT_NET "10.44.0.0/24"
#define WG_PEER_FIRST 10         /* devices' host numbers in wg_net */
#define WG_PEER_LAST 254
struct wg_net {
	uint32_t base;   /* host order, the .0 */
	char vps[16], server[16], cidr[16 + 3];   /* INET_ADDRSTRLEN is 16 */
};
/* Reads wg_net; 0, or 1 after printing why. */
int wg_net_get(const struct ctl *ctl, struct wg_net *n);

/*
 * relay.c: the port of `roostctl bus relay` on this server's tunnel
 * address (bus_relay_port, default RELAY_DEFAULT_PORT); -1 after printing
 * why if the setting is bad.
 */
#define RELAY_DEFAULT_PORT 4470
long relay_port(const struct ctl *ctl);

/*
 * bus.c: a monitor on sock (a PAIR in ctx, inproc://name) reporting the
 * handshake events (ZMQ_EVENT_HANDSHAKE_*); NULL if libzmq refuses.
 * monitor_event reads one: 0 and *event, or -1 if none is waiting.
 */
void *monitor_new(void *ctx, void *sock, const char *name);
int monitor_event(void *mon, int *event);

int cmd_bus(struct ctl *ctl, int argc, char **argv);
int cmd_status(struct ctl *ctl, int argc, char **argv);
/* relay.c: roostctl bus relay (called by cmd_bus). */
int cmd_relay(struct ctl *ctl, int argc, char **argv);
int cmd_domain(struct ctl *ctl, int argc, char **argv);
int cmd_user(struct ctl *ctl, int argc, char **argv);
int cmd_alias(struct ctl *ctl, int argc, char **argv);
int cmd_mailbox(struct ctl *ctl, int argc, char **argv);
int cmd_backup(struct ctl *ctl, int argc, char **argv);
int cmd_restore(struct ctl *ctl, int argc, char **argv);
int cmd_queue(struct ctl *ctl, int argc, char **argv);
int cmd_rcpt(struct ctl *ctl, int argc, char **argv);
int cmd_message(struct ctl *ctl, int argc, char **argv);
int cmd_wg(struct ctl *ctl, int argc, char **argv);
int cmd_vps_config(struct ctl *ctl, int argc, char **argv);
int cmd_dns_records(struct ctl *ctl, int argc, char **argv);
int cmd_check_dns(struct ctl *ctl, int argc, char **argv);

#endif
