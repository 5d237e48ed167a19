/*
 * quota.c — IMAP QUOTA (RFC 9208): how much a user stores and may store.
 *
 * A user has one quota (storaged's users.quota_bytes, 0 = none) over all
 * their mailboxes, so there is one quota root, "", and every mailbox is
 * under it. The only resource is STORAGE, in units of 1024 octets (RFC
 * 9208 5.1), from storaged.user.usage: used_bytes and quota_bytes, both
 * rounded down, so that usage under the limit never shows as over it.
 *
 *   GETQUOTAROOT mailbox -> * QUOTAROOT mailbox ""
 *                           * QUOTA "" (STORAGE used limit)
 *   GETQUOTA ""          -> * QUOTA "" (STORAGE used limit)
 *   SETQUOTA ...         -> NO: quotas are the administrator's (roostctl user
 *                           quota); we do not advertise QUOTASET (RFC 9208 4.1.3)
 *
 * A user without a quota has no quota root: GETQUOTAROOT lists none and
 * GETQUOTA "" is NO [NONEXISTENT]. A listed root must come with its QUOTA
 * response (4.1.2), and a QUOTA response needs at least one resource
 * with a limit (the quota-list of RFC 9208 9), so "" with no limit cannot
 * be shown. Over-quota APPEND and COPY answer NO [OVERQUOTA] through
 * imap_fail_reply (storaged's mailbox_full).
 *
 * The request always names s->user, never anything from the client: a
 * session sees its own user's numbers only.
 *
 * Ownership: replies are borrowed; the mailbox name (wire form) is kept
 * in the command's cmd->mailbox (owned by the cmd_t).
 */
#include "quota.h"

#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QUOTA_RESOURCES_MAX 32   /* SETQUOTA: resources read before it is refused */

/* storaged.user.usage of the logged-in user; mailbox (UTF-8) must exist if not NULL. */
static void quota_ask(session_t *s, const char *mailbox, cmd_cont_fn fn)
{
	json_t *req = bus_env_new("storaged.user.usage");
	/* storaged.user.* requests are not given the address by imap_call */
	json_object_set_new(req, "address", json_string(s->user));
	if (mailbox != NULL)
		json_object_set_new(req, "mailbox", json_string(mailbox));
	imap_call(s, &req, fn);
}

/* "* QUOTA "" (STORAGE used limit)" if the user has a limit; false if not. */
static bool quota_line(session_t *s, const json_t *reply)
{
	json_int_t limit = json_integer_value(json_object_get(reply, "quota_bytes"));
	json_int_t used = json_integer_value(json_object_get(reply, "used_bytes"));
	if (limit <= 0)
		return false;
	session_printf(s, "* QUOTA \"\" (STORAGE %lld %lld)\r\n", (long long)(used / 1024),
		       (long long)(limit / 1024));
	return true;
}

static void getquota_done(session_t *s, json_t *reply, const void *raw, size_t rawlen)
{
	(void)raw; (void)rawlen;
	if (!bus_reply_ok(reply)) {
		imap_fail_reply(s, reply, "GETQUOTA");
		return;
	}
	if (!quota_line(s, reply)) {
		imap_done(s, "NO", "[NONEXISTENT] No quota root \"\": no limit is set");
		return;
	}
	imap_done(s, "OK", "GETQUOTA completed");
}

/* GETQUOTA quota-root: "" is the only root there is. */
void cmd_getquota(session_t *s)
{
	imap_parser_t *ip = &s->cmd->ip;
	size_t len;
	const char *root = ip_sp(ip) ? ip_astring(ip, &len) : NULL;
	if (root == NULL || !ip_eol(ip)) {
		imap_done(s, "BAD", "%s", ip->err ? ip->err : "expected a quota root");
		return;
	}
	if (len != 0) {
		imap_done(s, "NO", "[NONEXISTENT] No such quota root");
		return;
	}
	quota_ask(s, NULL, getquota_done);
}

static void getquotaroot_done(session_t *s, json_t *reply, const void *raw, size_t rawlen)
{
	(void)raw; (void)rawlen;
	cmd_t *c = s->cmd;
	if (!bus_reply_ok(reply)) {
		imap_fail_reply(s, reply, "GETQUOTAROOT");
		return;
	}
	bool limited = json_integer_value(json_object_get(reply, "quota_bytes")) > 0;
	strbuf_t sb = STRBUF_INIT;
	sb_adds(&sb, "* QUOTAROOT ");
	imap_quote(&sb, c->mailbox, strlen(c->mailbox));
	sb_adds(&sb, limited ? " \"\"\r\n" : "\r\n");
	session_write(s, sb.buf, sb.len);
	sb_free(&sb);
	quota_line(s, reply);
	imap_done(s, "OK", "GETQUOTAROOT completed");
}

/* GETQUOTAROOT mailbox: the mailbox must exist (storaged checks it in the
 * same request); it is named back as the client sees it. */
void cmd_getquotaroot(session_t *s)
{
	cmd_t *c = s->cmd;
	char name[IMAPD_NAME_MAX + 1], wire[IMAPD_NAME_MAX * 3];
	if (!imap_mailbox_only(s, name, sizeof name))
		return;
	if (imap_name_wire(s, name, strlen(name), wire, sizeof wire) < 0) {
		imap_done(s, "NO", "[CANNOT] bad mailbox name");
		return;
	}
	c->mailbox = xstrdup(wire);
	quota_ask(s, name, getquotaroot_done);
}

/* SETQUOTA quota-root "(" [resource SP limit *(SP resource SP limit)] ")":
 * read whole (a malformed one is BAD like any command), then refused. */
void cmd_setquota(session_t *s)
{
	imap_parser_t *ip = &s->cmd->ip;
	size_t len;
	uint64_t limit;
	int n = 0;
	if (!ip_sp(ip) || ip_astring(ip, &len) == NULL || !ip_sp(ip) || !ip_char(ip, '('))
		goto bad;
	while (!ip_char(ip, ')')) {
		if ((n > 0 && !ip_sp(ip)) || ++n > QUOTA_RESOURCES_MAX || ip_atom(ip) == NULL ||
		    !ip_sp(ip) || !ip_number(ip, &limit, 9223372036854775807ULL))
			goto bad;
	}
	if (!ip_eol(ip))
		goto bad;
	imap_done(s, "NO", "[NOPERM] Quotas are set by the administrator");
	return;
bad:
	imap_done(s, "BAD", "%s", ip->err ? ip->err : "bad SETQUOTA arguments");
}
