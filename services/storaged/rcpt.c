/*
 * rcpt.c — where mail for a recipient goes:
 *
 *   storaged.rcpt.resolve      smtpd at RCPT TO, roostctl rcpt (read-only)
 *   storaged.domain.catchall   roostctl domain catchall (idempotent)
 *
 * resolve lower-cases and checks the address, splits a subaddress off at
 * the first '+' ("user+tag" delivers to user: stored local parts never hold
 * '+', so the part before it is the only one worth looking up) and, for a
 * domain we host, tries in order:
 *
 *   user        an exact user: deliver to it
 *   alias       an exact alias: expand every target (below)
 *   postmaster  local part "postmaster": the domain's postmaster user, else
 *               another domain's, else any user (RFC 5321 4.5.1: postmaster@
 *               must work whenever anyone can receive mail)
 *   catchall    the domain's catch-all address, expanded like a target
 *
 * A target of a domain we do not host is forwarded; one of a hosted
 * domain goes through user/alias/postmaster again (never a catch-all), so
 * aliases nest — at most RCPT_DEPTH_MAX deep, an alias that reaches itself
 * is an error ("alias_loop"), and more than RCPT_TARGETS_MAX targets in all
 * is "too_many". A hosted target that leads nowhere is skipped and logged,
 * and a step whose targets all lead nowhere falls through to the next, so
 * found means there is somewhere to put the message. Deliveries and
 * forwards are kept once each, in the order found.
 */
#include "storaged.h"

#include "log.h"
#include "util.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#define RCPT_DEPTH_MAX 4      /* aliases inside aliases, at most */
#define RCPT_TARGETS_MAX 100  /* alias and catch-all targets in one resolution */
#define RCPT_LOCAL_MAX 64     /* the whole local part, tag included */

/* One resolution in progress; the deliveries and forwards are ours. */
struct rcpt {
	accounts_t *a;
	const char *address;                  /* the recipient (for messages) */
	json_t *deliveries, *forwards;        /* arrays of addresses, each once */
	int targets;                          /* targets looked at so far */
	int depth;                            /* aliases being expanded */
	const char *path[RCPT_DEPTH_MAX];     /* ...and their addresses (borrowed) */
	struct acc_err e;                     /* why, after a -1 */
};

static int rcpt_local(struct rcpt *r, int64_t dom, const char *addr, const char **via);

/* ---- the address ------------------------------------------------------------- */

/* A character RFC 5322 allows in a dot-atom, other than '.'. */
static bool rcpt_atext(char c)
{
	return isalnum((unsigned char)c) || (c != '\0' && strchr("!#$%&'*+/=?^_`{|}~-", c) != NULL);
}

/* Why the tag (lower-case, len bytes) cannot be, or NULL. */
static const char *rcpt_tag_check(const char *tag, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (tag[i] == '.' && (i + 1 == len || tag[i + 1] == '.'))
			return "address: the tag after '+' must not end with '.' or hold \"..\"";
		if (tag[i] != '.' && !rcpt_atext(tag[i]))
			return "address: the tag after '+' may hold only letters, digits, '.' and "
			       "!#$%&'*+/=?^_`{|}~-";
	}
	return NULL;
}

/*
 * Splits in (lower-cased) into base, the address without its tag, which
 * acc_name checks, and tag (empty if none; *has_tag says if there was a
 * '+'). Both buffers ACC_ADDR_MAX bytes. 0, or -1 after replying invalid.
 */
static int rcpt_parse(accounts_t *a, bus_req_t **req, const char *in, char *base, char *tag,
		      bool *has_tag)
{
	const char *at = strchr(in, '@');
	const char *plus = at != NULL ? memchr(in, '+', (size_t)(at - in)) : NULL;
	char bare[ACC_ADDR_MAX];
	const char *why = NULL;
	*has_tag = plus != NULL && plus != in;  /* "+x@d" has no base: acc_name refuses it */
	tag[0] = '\0';
	if (!*has_tag || strlen(in) >= ACC_ADDR_MAX)
		return acc_name(a, req, "address", in, true, base, NULL);
	size_t taglen = (size_t)(at - plus - 1);
	snprintf(bare, sizeof bare, "%.*s%s", (int)(plus - in), in, at);
	for (size_t i = 0; i < taglen; i++)
		tag[i] = (char)tolower((unsigned char)plus[1 + i]);
	tag[taglen] = '\0';
	if (acc_name(a, req, "address", bare, true, base, NULL) < 0)
		return -1;
	if (at - in > RCPT_LOCAL_MAX)
		why = "address: local part must be 1..64 characters";
	else
		why = rcpt_tag_check(tag, taglen);
	if (why != NULL) {
		acc_fail(a, req, "invalid", why);
		return -1;
	}
	return 0;
}

/* ---- expansion ------------------------------------------------------------------- */

/* Appends addr to list unless it is there already. */
static void rcpt_add(json_t *list, const char *addr)
{
	size_t i;
	json_t *v;
	json_array_foreach(list, i, v)
		if (strcmp(json_string_value(v), addr) == 0)
			return;
	json_array_append_new(list, json_string(addr));
}

/* The targets of alias local in dom (new array, at most one more than the
 * targets still allowed, so that going over shows), or NULL on error. */
static json_t *rcpt_alias_targets(struct rcpt *r, int64_t dom, const char *local)
{
	sqlite3_stmt *st = acc_prep(r->a, "SELECT target FROM aliases WHERE domain_id = ?1 AND "
				    "localpart = ?2 ORDER BY target LIMIT ?3", "isi", dom, local,
				    (int64_t)(RCPT_TARGETS_MAX - r->targets + 1));
	json_t *list = json_array();
	int rc = SQLITE_ERROR;
	while (st != NULL && (rc = sqlite3_step(st)) == SQLITE_ROW)
		json_array_append_new(list, json_string((const char *)sqlite3_column_text(st, 0)));
	db_release(r->a->db, st);
	if (rc != SQLITE_DONE)
		json_decref(list), list = NULL;
	return list;
}

/*
 * Where mail for target goes (a stored alias or catch-all target, so
 * lower-case and checked): forwarded if we do not host its domain, else
 * resolved like a recipient without its catch-all. 1 if it went
 * somewhere, 0 if nowhere (logged), -1 with r->e set.
 */
static int rcpt_target(struct rcpt *r, const char *from, const char *target)
{
	char addr[ACC_ADDR_MAX];
	const char *via;
	if (++r->targets > RCPT_TARGETS_MAX) {
		acc_set(&r->e, "too_many", "%s expands to more than %d addresses", r->address,
			RCPT_TARGETS_MAX);
		return -1;
	}
	char *at = strlen(target) < sizeof addr ? strchr(strcpy(addr, target), '@') : NULL;
	int64_t dom = at != NULL ? acc_domain_id(r->a, at + 1) : 0;
	if (at == NULL || dom < 0) {
		log_warn("rcpt", "address=%s target=%s why=\"unusable target or database error\"",
			 log_quote(from), log_quote(target));
		return at == NULL ? 0 : -1;
	}
	if (dom == 0) {
		rcpt_add(r->forwards, addr);
		return 1;
	}
	int rc = rcpt_local(r, dom, addr, &via);
	if (rc == 0)
		log_warn("rcpt", "address=%s target=%s why=\"target leads nowhere: skipped\"",
			 log_quote(from), log_quote(target));
	return rc;
}

/*
 * Expands the alias addr (local part and domain dom): 1 if a target went
 * somewhere, 0 if it is no alias or none did, -1 with r->e set (a loop,
 * too deep, too many, or the database).
 */
static int rcpt_alias(struct rcpt *r, int64_t dom, const char *local, const char *addr)
{
	json_t *targets = rcpt_alias_targets(r, dom, local), *t;
	int rc = 0, got = 0;
	bool loop = false;
	size_t i;
	if (targets == NULL || json_array_size(targets) == 0) {
		rc = targets == NULL ? -1 : 0;
		json_decref(targets);
		return rc;
	}
	for (int d = 0; d < r->depth; d++)
		loop |= strcmp(r->path[d], addr) == 0;
	if (loop || r->depth == RCPT_DEPTH_MAX) {
		/* Both are a mistake in the aliases: no part of the expansion is used. */
		if (loop)
			acc_set(&r->e, "alias_loop", "alias loop: %s reaches alias %s again", r->address, addr);
		else
			acc_set(&r->e, "alias_loop", "%s: aliases nested more than %d deep (at %s)",
				r->address, RCPT_DEPTH_MAX, addr);
		json_decref(targets);
		return -1;
	}
	r->path[r->depth++] = addr;
	json_array_foreach(targets, i, t) {
		if ((rc = rcpt_target(r, addr, json_string_value(t))) < 0)
			break;
		got |= rc;
	}
	r->depth--;
	json_decref(targets);
	return rc < 0 ? -1 : got;
}

/* The postmaster of dom: its postmaster user, else the lowest-id domain's
 * postmaster, else a user of dom, else any user. 1, 0 (no users), -1. */
static int rcpt_postmaster(struct rcpt *r, int64_t dom)
{
	sqlite3_stmt *st = acc_prep(r->a, "SELECT u.localpart || '@' || d.name FROM users u "
				    "JOIN domains d ON d.id = u.domain_id ORDER BY "
				    "u.localpart IS NOT d.postmaster, d.id <> ?1, d.id, u.id LIMIT 1",
				    "i", dom);
	int rc = st ? sqlite3_step(st) : SQLITE_ERROR;
	if (rc == SQLITE_ROW)
		rcpt_add(r->deliveries, (const char *)sqlite3_column_text(st, 0));
	db_release(r->a->db, st);
	return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

/*
 * The user, alias and postmaster rules for addr (checked, lower-case, no
 * tag) of hosted domain dom; *via names the rule that matched. 1, 0 if
 * none did, -1 with r->e set.
 */
static int rcpt_local(struct rcpt *r, int64_t dom, const char *addr, const char **via)
{
	char local[ACC_ADDR_MAX];
	size_t n = strcspn(addr, "@");
	memcpy(local, addr, n);
	local[n] = '\0';
	int rc = acc_user_exists(r->a, dom, local);
	*via = "user";
	if (rc == 1)
		rcpt_add(r->deliveries, addr);
	if (rc == 0) {
		rc = rcpt_alias(r, dom, local, addr);
		*via = "alias";
	}
	if (rc == 0 && strcmp(local, "postmaster") == 0) {
		rc = rcpt_postmaster(r, dom);
		*via = "postmaster";
	}
	return rc;
}

/* The catch-all of domain dom, expanded like a target: 1, 0 (none, or it
 * leads nowhere), -1 with r->e set. */
static int rcpt_catchall_expand(struct rcpt *r, int64_t dom)
{
	char target[ACC_ADDR_MAX] = "";
	sqlite3_stmt *st = acc_prep(r->a, "SELECT catchall FROM domains WHERE id = ?1", "i", dom);
	int rc = st ? sqlite3_step(st) : SQLITE_ERROR;
	if (rc == SQLITE_ROW && sqlite3_column_text(st, 0) != NULL)
		snprintf(target, sizeof target, "%s", (const char *)sqlite3_column_text(st, 0));
	db_release(r->a->db, st);
	if (rc != SQLITE_ROW)
		return -1;
	return target[0] != '\0' ? rcpt_target(r, r->address, target) : 0;
}

/* ---- the requests ------------------------------------------------------------------ */

/* {address} -> {address, local, found, via?, tag?, deliveries, forwards}:
 * the rules at the top of this file; errors invalid, alias_loop, too_many. */
void rcpt_resolve(bus_req_t **req, void *arg)
{
	accounts_t *a = arg;
	const char *in, *via = NULL;
	char base[ACC_ADDR_MAX], tag[ACC_ADDR_MAX], full[ACC_ADDR_MAX];
	bool has_tag;
	if (ACC_UNPACK(a, req, "{s:s}", "address", &in) < 0 ||
	    rcpt_parse(a, req, in, base, tag, &has_tag) < 0)
		return;
	const char *at = strchr(base, '@');
	/* The address as given, lower-case, with its domain as base has it (in
	 * A-labels if it came in UTF-8). rcpt_parse checked there is an '@'. */
	size_t llen = (size_t)(strchr(in, '@') - in);
	for (size_t i = 0; i < llen; i++)
		full[i] = (char)tolower((unsigned char)in[i]);
	if (snprintf(full + llen, sizeof full - llen, "%s", at) >= (int)(sizeof full - llen)) {
		acc_fail(a, req, "invalid", "address too long");
		return;
	}
	struct rcpt r = { .a = a, .address = full, .deliveries = json_array(),
			  .forwards = json_array(), .e = { "internal", "database error" } };
	int64_t dom = acc_domain_id(a, at + 1);
	int rc = dom < 0 ? -1 : 0;
	if (dom > 0)
		rc = rcpt_local(&r, dom, base, &via);
	if (dom > 0 && rc == 0) {
		rc = rcpt_catchall_expand(&r, dom);
		via = "catchall";
	}
	if (rc < 0) {
		json_decref(r.deliveries);
		json_decref(r.forwards);
		acc_fail(a, req, r.e.code, r.e.msg);
		return;
	}
	json_t *f = json_pack("{s:s, s:b, s:b, s:o, s:o}", "address", full, "local", dom > 0,
			      "found", rc > 0, "deliveries", r.deliveries, "forwards", r.forwards);
	if (rc > 0)
		json_object_set_new(f, "via", json_string(via));
	if (dom > 0 && has_tag)
		json_object_set_new(f, "tag", json_string(tag));
	acc_ok(a, req, &f);
}

/* storaged.domain.catchall's checked fields. */
struct rcpt_set {
	char domain[ACC_ADDR_MAX];
	char target[ACC_ADDR_MAX];   /* "" turns the catch-all off */
};

static json_t *rcpt_catchall_change(accounts_t *a, void *ctx, struct acc_err *e)
{
	struct rcpt_set *s = ctx;
	const char *target = s->target[0] != '\0' ? s->target : NULL;
	if (acc_run(a, acc_prep(a, "UPDATE domains SET catchall = ?1 WHERE name = ?2", "ss", target,
				s->domain)) != SQLITE_DONE)
		return NULL;
	if (!acc_changed(a, e, "no domain %s", s->domain))
		return NULL;
	log_info("catchall", "domain=%s target=%s", s->domain, target ? target : "off");
	return json_pack("{s:s, s:o}", "domain", s->domain, "catchall",
			 target ? json_string(target) : json_null());
}

/* {domain, target: address or null} -> {domain, catchall}, through
 * acc_commit (idempotent); not_found if we do not host the domain. */
void rcpt_catchall(bus_req_t **req, void *arg)
{
	accounts_t *a = arg;
	const char *dom;
	json_t *target;
	struct rcpt_set s = { .target = "" };
	if (ACC_UNPACK(a, req, "{s:s, s:o}", "domain", &dom, "target", &target) < 0 ||
	    acc_name(a, req, "domain", dom, false, s.domain, NULL) < 0)
		return;
	if (!json_is_null(target) && !json_is_string(target)) {
		acc_fail(a, req, "invalid", "target must be an address or null");
		return;
	}
	if (json_is_string(target) &&
	    acc_name(a, req, "target", json_string_value(target), true, s.target, NULL) < 0)
		return;
	acc_commit(a, req, rcpt_catchall_change, &s);
}
