/*
 * roostctl — the operator's command line for Roost (DESIGN.md).
 *
 * Table of contents: global options (--config, --json, --timeout, --help),
 * the configuration (for the bus directory), then one subcommand from the
 * table below. Every error is one line on stderr and a non-zero exit.
 */
#include "roostctl.h"
#include "bus.h"
#include "log.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>


static const struct command {
	const char *name;
	int (*fn)(struct ctl *ctl, int argc, char **argv);
	const char *help;
} commands[] = {
	{ "bus", cmd_bus, "bus tail|ping|relay: watch the bus (here or --remote), a round trip, the tap for devices" },
	{ "status", cmd_status, "services on the bus, their replicas, uptime and requests" },
	{ "domain", cmd_domain, "domain add|del|list|catchall: the mail domains storaged hosts" },
	{ "user", cmd_user, "user add|del|list|passwd|verify|quota: mailbox users" },
	{ "alias", cmd_alias, "alias add|del|list: addresses forwarded to others" },
	{ "mailbox", cmd_mailbox, "mailbox list|create|delete|rename|subscribe|unsubscribe: a user's mailboxes" },
	{ "backup", cmd_backup, "backup DIR: an online backup of storaged's data into DIR" },
	{ "restore", cmd_restore, "restore DIR: put a backup back (storaged stopped)" },
	{ "queue", cmd_queue, "queue list|show|retry|delete: outbound mail waiting for delivery" },
	{ "rcpt", cmd_rcpt, "rcpt ADDRESS: where mail for an address goes (user, alias, catch-all...)" },
	{ "message", cmd_message, "message get|list|search|flag|expunge|copy|move: a mailbox's messages" },
	{ "wg", cmd_wg, "wg keygen|show: the WireGuard keys of this server and its VPS" },
	{ "vps-config", cmd_vps_config, "vps-config --vps-ip IP: the script that sets up the VPS" },
	{ "dns-records", cmd_dns_records, "dns-records DOMAIN --ip VPS_IP: the DNS records the domain needs" },
	{ "check-dns", cmd_check_dns, "check-dns DOMAIN [--ip VPS_IP]: what is missing or wrong in the live DNS" },
	{ NULL, NULL, NULL },
};

static void usage(FILE *to)
{
	fprintf(to, "usage: roostctl [--config PATH] [--json] [--timeout MS] COMMAND [ARGS]\n\n"
		"commands:\n");
	for (const struct command *c = commands; c->name != NULL; c++)
		fprintf(to, "  %-11s %s\n", c->name, c->help);
	fprintf(to, "\n  --config PATH  roost.conf (default: $ROOST_CONFIG, ./roost.conf, /etc/roost/roost.conf)\n"
		"  --json         print JSON\n"
		"  --timeout MS   how long to wait for each reply (default 3000)\n"
		"  --help         this text; COMMAND --help for a command's own\n");
}

int ctl_fail(const char *fmt, ...)
{
	va_list ap;
	fputs("roostctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

int ctl_bus_present(const struct ctl *ctl)
{
	char path[512];
	struct stat st;
	snprintf(path, sizeof path, "%s/clients", ctl->bus_dir);
	if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		return 0;
	return ctl_fail("no bus at %s (is busd running? ROOST_BUS_DIR or bus_dir in roost.conf names it)",
			ctl->bus_dir);
}

json_t *ctl_call_new(const struct ctl *ctl, const char *service, json_t **req)
{
	if (ctl_bus_present(ctl) != 0) {
		json_decref(*req);
		*req = NULL;
		return NULL;
	}
	json_t *reply = bus_call_sync_new(ctl->bus_dir, service, req, NULL, 0, ctl->timeout_ms, 0, NULL, NULL);
	if (!bus_reply_ok(reply)) {
		const char *code = json_string_value(json_object_get(reply, "code"));
		const char *err = json_string_value(json_object_get(reply, "error"));
		if (code && strcmp(code, "timeout") == 0)
			ctl_fail("%s did not answer within %d ms (is busd running on %s?)", service,
				 ctl->timeout_ms, ctl->bus_dir);
		else
			ctl_fail("%s: %s (%s)", service, err ? err : "error", code ? code : "?");
		json_decref(reply);
		return NULL;
	}
	return reply;
}

const char *ctl_idem(void)
{
	static char idem[33];
	unsigned char b[16];
	if (idem[0] != '\0')
		return idem;
	if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b)
		return NULL;
	for (size_t i = 0; i < sizeof b; i++)
		snprintf(idem + 2 * i, 3, "%02x", b[i]);
	return idem;
}

json_t *ctl_storaged_call_new(const struct ctl *ctl, const char *what, json_t **req, void **raw,
			      size_t *rawlen)
{
	if (ctl_bus_present(ctl) != 0) {
		json_decref(*req);
		*req = NULL;
		return NULL;
	}
	json_t *reply = bus_call_sync_new(ctl->bus_dir, "storaged", req, NULL, 0, ctl->timeout_ms,
					  CTL_STORAGED_RETRIES, raw, rawlen);
	if (bus_reply_ok(reply))
		return reply;
	const char *code = json_string_value(json_object_get(reply, "code"));
	const char *err = json_string_value(json_object_get(reply, "error"));
	if (code != NULL && strcmp(code, "timeout") == 0)
		ctl_fail("%s: storaged did not answer within %d ms, %d tries (is storaged running?)",
			 what, ctl->timeout_ms, CTL_STORAGED_RETRIES + 1);
	else
		ctl_fail("%s: %s: %s", what, code ? code : "error", err && err[0] ? err : "(no reason given)");
	json_decref(reply);
	if (raw != NULL) {
		free(*raw);
		*raw = NULL;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	struct ctl ctl = { .timeout_ms = 3000 };
	const char *path = NULL;
	char err[512];
	int i = 1;
	log_init("roostctl", LOG_WARN);
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(argv[i], "--json") == 0) {
			ctl.json = true;
		} else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
			path = argv[++i];
		} else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
			ctl.timeout_ms = atoi(argv[++i]);
			if (ctl.timeout_ms <= 0)
				return ctl_fail("--timeout wants a positive number of milliseconds");
		} else {
			return ctl_fail("unknown option '%s' (try --help)", argv[i]);
		}
	}
	if (i >= argc) {
		usage(stderr);
		return 2;
	}
	for (const struct command *c = commands; c->name != NULL; c++) {
		if (strcmp(c->name, argv[i]) != 0)
			continue;
		ctl.cfg = config_load(path, err, sizeof err);
		if (ctl.cfg == NULL)
			return ctl_fail("%s", err);
		ctl.bus_dir = config_bus_dir(ctl.cfg);
		int rc = c->fn(&ctl, argc - i, argv + i);
		config_free(&ctl.cfg);
		bus_zmq_term();
		return rc;
	}
	return ctl_fail("unknown command '%s' (try --help)", argv[i]);
}
