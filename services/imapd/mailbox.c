/*
 * mailbox.c — the mailbox commands (RFC 3501 6.3; LIST-EXTENDED RFC 5258,
 * SPECIAL-USE RFC 6154, CONDSTORE's HIGHESTMODSEQ RFC 7162) and the
 * selected mailbox's sequence-number map.
 *
 * Names: storaged knows UTF-8 names with "/" as the hierarchy delimiter;
 * the wire has modified UTF-7 (lib/mutf7). LIST matches patterns against
 * the wire form, so "%" and "*" mean what the client typed.
 *
 * SELECT asks storaged.mailbox.status, then reads the whole UID list as set
 * text (storaged.message.search ALL, 48 KiB of text a reply) and keeps it
 * as the session's map: seq n is uids[n-1]. The map changes only
 * when the client is told (EXISTS appends, EXPUNGE removes), which is what
 * keeps sequence numbers in step with the client (RFC 3501 2.3.1.2).
 *
 * Ownership: the mbox_t's arrays and name are owned by the session; a
 * command's list of mailboxes (cmd->list) by the command.
 */
#include "imapd.h"
#include "hmap.h"
#include "log.h"
#include "qresync.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define LIST_PATTERNS_MAX 16
#define LIST_WILDCARDS_MAX 16

enum list_opt {
	LO_SUBSCRIBED = 1, LO_SPECIAL = 2, LO_RET_SUBSCRIBED = 4, LO_RET_CHILDREN = 8,
	LO_RET_SPECIAL = 16, LO_LSUB = 32, LO_EXTENDED = 64, LO_RECURSIVE = 128,
};

enum { SI_MESSAGES = 1, SI_RECENT = 2, SI_UIDNEXT = 4, SI_UIDVALIDITY = 8, SI_UNSEEN = 16,
       SI_HIGHESTMODSEQ = 32, SI_SIZE = 64, SI_DELETED = 128 };

static bool status_items(imap_parser_t *ip, unsigned *bits);
static void status_line(session_t *s, const char *name, unsigned bits, const json_t *reply);

/* ---- the map ------------------------------------------------------------------ */

/* Frees or lets go of the map's UIDs. */
static void mbox_drop_uids(mbox_t *m)
{
	if (m->snap != NULL)
		uidsnap_release(&m->snap);
	else
		free(m->uids);
	m->uids = NULL;
	m->n = m->cap = 0;
}

/* Before the map changes: a view's shared UIDs become the session's own. */
static void mbox_own(mbox_t *m)
{
	if (m->snap == NULL)
		return;
	size_t cap = m->n + 64;
	uint32_t *u = xmalloc(cap * sizeof *u);
	memcpy(u, m->uids, m->n * sizeof *u);
	uidsnap_release(&m->snap);
	m->uids = u;
	m->cap = cap;
}

void mbox_clear(mbox_t *m)
{
	view_release(&m->view);
	free(m->name);
	mbox_drop_uids(m);
	free(m->gone);
	memset(m, 0, sizeof *m);
}

size_t mbox_lower(const mbox_t *m, uint32_t uid)
{
	size_t lo = 0, hi = m->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (m->uids[mid] < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

uint32_t mbox_seq(const mbox_t *m, uint32_t uid)
{
	size_t i = mbox_lower(m, uid);
	return i < m->n && m->uids[i] == uid ? (uint32_t)i + 1 : 0;
}

void mbox_append(mbox_t *m, uint32_t uid)
{
	if (m->n > 0 && uid <= m->uids[m->n - 1])
		return;   /* already known */
	mbox_own(m);
	if (m->n == m->cap) {
		m->cap = m->cap ? 2 * m->cap : 64;
		m->uids = xrealloc(m->uids, m->cap * sizeof *m->uids);
	}
	m->uids[m->n++] = uid;
}

void mbox_remove(mbox_t *m, uint32_t seq)
{
	if (seq == 0 || seq > m->n)
		return;
	mbox_own(m);
	memmove(m->uids + seq - 1, m->uids + seq, (m->n - seq) * sizeof *m->uids);
	m->n--;
}

seqmap_t mbox_seqmap(const mbox_t *m)
{
	seqmap_t map = { m->uids, m->n };
	return map;
}

/* ---- simple requests ----------------------------------------------------------- */

static void simple_done(session_t *s, json_t *reply, const void *raw, size_t rawlen)
{
	(void)raw; (void)rawlen;
	if (!bus_reply_ok(reply))
		imap_fail_reply(s, reply, s->cmd->name);
	else
		imap_done(s, "OK", "%s completed", s->cmd->name);
}

/* type with {name: <mailbox argument>} and idem. */
static void mailbox_request(session_t *s, const char *type, const char *key)
{
	char name[IMAPD_NAME_MAX + 1];
	if (!imap_mailbox_only(s, name, sizeof name))
		return;
	if (strcmp(type, "storaged.mailbox.delete") == 0)
		view_forget(s->d, s->user, name);   /* a mailbox made again has new UIDs */
	json_t *req = bus_env_new(type);
	imap_idem(s, req);
	json_object_set_new(req, key, json_string(name));
	if (strcmp(type, "storaged.mailbox.subscribe") == 0)
		json_object_set_new(req, "subscribed", json_boolean(strcmp(s->cmd->name, "SUBSCRIBE") == 0));
	imap_call(s, &req, simple_done);
}

static void create_next(session_t *s);

static void create_done(session_t *s, json_t *reply, const void *raw, size_t rawlen)
{
	cmd_t *c = s->cmd;
	const char *code = json_string_value(json_object_get(reply, "code"));
	bool last = c->page_i + 1 >= json_array_size(c->list);
	if (last || (!bus_reply_ok(reply) && (code == NULL || strcmp(code, "exists") != 0))) {
		simple_done(s, reply, raw, rawlen);
		return;
	}
	c->page_i++;   /* a superior level made, or there already */
	create_next(s);
}

static void create_next(session_t *s)
{
	cmd_t *c = s->cmd;
	json_t *req = bus_env_new("storaged.mailbox.create");
	imap_idem(s, req);
	json_object_set_new(req, "name", json_incref(json_array_get(c->list, c->page_i)));
	imap_call(s, &req, create_done);
}

/* CREATE "a/b/c" makes "a" and "a/b" first if they are missing (RFC 3501
 * 6.3.3: superior hierarchical names are created as needed). */
void cmd_create(session_t *s)
{
	cmd_t *c = s->cmd;
	char name[IMAPD_NAME_MAX + 1];
	if (!imap_mailbox_only(s, name, sizeof name))
		return;
	size_t n = strlen(name);
	if (n > 1 && name[n - 1] == '/')
		name[--n] = '\0';   /* a trailing delimiter is a hint (6.3.3) */
	if (strcmp(name, "INBOX") == 0) {
		imap_done(s, "NO", "[ALREADYEXISTS] INBOX always exists");
		return;
	}
	c->list = json_array();
	for (size_t i = 1; i < n && json_array_size(c->list) < 16; i++)
		if (name[i] == '/' && name[i - 1] != '/')
			json_array_append_new(c->list, json_stringn(name, i));
	json_array_append_new(c->list, json_string(name));
	c->page_i = 0;
	create_next(s);
}

void cmd_delete(session_t *s)
{
	mailbox_request(s, "storaged.mailbox.delete", "name");
}

void cmd_subscribe(session_t *s)
{
	mailbox_request(s, "storaged.mailbox.subscribe", "name");
}

void cmd_unsubscribe(session_t *s)
{
	mailbox_request(s, "storaged.mailbox.subscribe", "name");
}

static void rename_inbox_moved(session_t *s, json_t *reply, const void *raw, size_t rawlen)
{
	(void)raw; (void)rawlen;
	cmd_t *c = s->cmd;
	if (!bus_reply_ok(reply)) {
		imap_fail_reply(s, reply, "RENAME");
		return;
	}
	const char *src = json_string_value(json_object_get(reply, "src"));
	if (s->state == IS_SELECTED && strcmp(s->mbox.name, "INBOX") == 0 && src != NULL)
		notify_expunged(s, src);   /* this session's INBOX just emptied */
	imap_done(s, "OK", "%s completed", c->name);
}

static void rename_inbox_created(session_t *s, json_t *reply, const void *raw, size_t rawlen)
{
	(void)raw; (void)rawlen;
	cmd_t *c = s->cmd;
	if (!bus_reply_ok(reply)) {
		imap_fail_reply(s, reply, "RENAME");
		return;
	}
	json_t *req = bus_env_new("storaged.message.copy");
	imap_idem(s, req);
	json_object_set_new(req, "mailbox", json_string("INBOX"));
	json_object_set_new(req, "uids", json_string("1:*"));
	json_object_set_new(req, "to", json_string(c->mailbox));
	json_object_set_new(req, "move", json_true());
	imap_call(s, &req, rename_inbox_moved);
}

/* RFC 3501 6.3.5: renaming INBOX moves its messages to a new mailbox of
 * that name and leaves INBOX, empty, where it is. */
static void rename_inbox(session_t *s, const char *to)
{
	cmd_t *c = s->cmd;
	c->mailbox = xstrdup(to);
	json_t *req = bus_env_new("storaged.mailbox.create");
	imap_idem(s, req);
	json_object_set_new(req, "name", json_string(to));
	imap_call(s, &req, rename_inbox_created);
}

void cmd_rename(session_t *s)
{
	char from[IMAPD_NAME_MAX + 1], to[IMAPD_NAME_MAX + 1];
	imap_parser_t *ip = &s->cmd->ip;
	if (!ip_sp(ip)) {
		imap_done(s, "BAD", "expected a mailbox");
		return;
	}
	if (!imap_mailbox_arg(s, from, sizeof from))
		return;
	if (!ip_sp(ip)) {
		imap_done(s, "BAD", "expected a mailbox");
		return;
	}
	if (!imap_mailbox_arg(s, to, sizeof to))
		return;
	if (!ip_eol(ip)) {
		imap_done(s, "BAD", "unexpected arguments");
		return;
	}
	view_forget(s->d, s->user, from);
	view_forget(s->d, s->user, to);
	if (strcmp(from, "INBOX") == 0) {
		rename_inbox(s, to);
		return;
	}
	json_t *req = bus_env_new("storaged.mailbox.rename");
	imap_idem(s, req);
	json_object_set_new(req, "from", json_string(from));
	json_object_set_new(req, "to", json_string(to));
	imap_call(s, &req, simple_done);
}

/* ---- LIST and LSUB ------------------------------------------------------------------ */

/* Does name match the pattern ("*" anything, "%" anything but "/")? The
 * INBOX prefix matches case-insensitively. Wildcards are bounded, so the
 * backtracking is too. */
static bool list_match(const char *p, const char *n, bool ci)
{
	for (; *p != '\0'; p++, n++) {
		if (*p == '*' || *p == '%') {
			for (const char *k = n;; k++) {
				if (list_match(p + 1, k, false))
					return true;
				if (*k == '\0' || (*p == '%' && *k == '/'))
					return false;
			}
		}
		if (*n == '\0')
			return false;
		if (ci ? (*p | 0x20) != (*n | 0x20) && *p != *n : *p != *n)
			return false;
	}
	return *n == '\0';
}

static bool list_matches(session_t *s, const char *wire, bool inbox)
{
	cmd_t *c = s->cmd;
	for (size_t i = 0; i < c->npats; i++) {
		char *full = xasprintf("%s%s", c->ref, c->pats[i]);
		/* INBOX in any case: compare the first five bytes case-insensitively */
		bool ok = inbox && strncasecmp(full, "INBOX", 5) == 0
			  ? list_match(full + 5, wire + 5, false) || list_match(full, wire, false)
			  : list_match(full, wire, false);
		free(full);
		if (ok)
			return true;
	}
	return false;
}

static bool has_children(const json_t *list, const char *name)
{
	size_t i, n = strlen(name);
	json_t *m;
	json_array_foreach(list, i, m) {
		const char *o = json_string_value(json_object_get(m, "name"));
		if (o != NULL && strncmp(o, name, n) == 0 && o[n] == '/')
			return true;
	}
	return false;
}

/* Levels that do not exist themselves but have children ("a" of "a/b"):
 * RFC 3501 6.3.8 lists them \Noselect so that "%" can walk the tree. */
static void list_parents(session_t *s, const json_t *list)
{
	hmap_t *seen = hmap_new();
	size_t i;
	json_t *m;
	json_array_foreach(list, i, m) {
		const char *name = json_string_value(json_object_get(m, "name"));
		if (name != NULL)
			hmap_put(seen, name, strlen(name), (void *)1);
	}
	strbuf_t sb = STRBUF_INIT;
	json_array_foreach(list, i, m) {
		const char *name = json_string_value(json_object_get(m, "name"));
		for (const char *sl = name ? strchr(name, '/') : NULL; sl; sl = strchr(sl + 1, '/')) {
			size_t n = (size_t)(sl - name);
			char wire[IMAPD_NAME_MAX * 3], *parent = xstrndup(name, n);
			bool fresh = hmap_get(seen, name, n) == NULL;
			if (fresh)
				hmap_put(seen, name, n, (void *)1);
			if (fresh && imap_name_wire(s, parent, n, wire, sizeof wire) >= 0 &&
			    list_matches(s, wire, false)) {
				sb_truncate(&sb, 0);
				sb_adds(&sb, "* LIST (\\Noselect \\HasChildren) \"/\" ");
				imap_quote(&sb, wire, strlen(wire));
				sb_adds(&sb, "\r\n");
				session_write(s, sb.buf, sb.len);
			}
			free(parent);
		}
	}
	sb_free(&sb);
	hmap_free(&seen);
}

static void list_status_next(session_t *s);

static void list_status_done(session_t *s, json_t *reply, const void *raw, size_t rawlen)
{
	(void)raw; (void)rawlen;
	cmd_t *c = s->cmd;
	/* a mailbox deleted meanwhile has no STATUS: RFC 5819 lets it go */
	if (bus_reply_ok(reply))
		status_line(s, json_string_value(json_array_get(c->list, c->page_i)), c->status_items,
			    reply);
	c->page_i++;
	list_status_next(s);
}

/* LIST-STATUS (RFC 5819): a STATUS for each listed mailbox, one by one. */
static void list_status_next(session_t *s)
{
	cmd_t *c = s->cmd;
	if (c->page_i >= json_array_size(c->list)) {
		imap_done(s, "OK", "%s completed", c->name);
		return;
	}
	json_t *req = bus_env_new("storaged.mailbox.status");
	json_object_set_new(req, "mailbox", json_incref(json_array_get(c->list, c->page_i)));
	imap_call(s, &req, list_status_done);
}

static void list_done(session_t *s, json_t *reply, const void *raw, size_t rawlen)
{
	(void)raw; (void)rawlen;
	cmd_t *c = s->cmd;
	if (!bus_reply_ok(reply)) {
		imap_fail_reply(s, reply, c->name);
		return;
	}
	json_t *list = json_object_get(reply, "mailboxes");
	size_t i;
	json_t *m;
	strbuf_t sb = STRBUF_INIT;
	json_array_foreach(list, i, m) {
		const char *name = json_string_value(json_object_get(m, "name"));
		const char *special = json_string_value(json_object_get(m, "special_use"));
		bool subscribed = json_is_true(json_object_get(m, "subscribed"));
		char wire[IMAPD_NAME_MAX * 3];
		if (name == NULL || imap_name_wire(s, name, strlen(name), wire, sizeof wire) < 0)
			continue;
		if (((c->list_opts & LO_SUBSCRIBED) && !subscribed) ||
		    ((c->list_opts & LO_SPECIAL) && special == NULL) ||
		    !list_matches(s, wire, strcmp(name, "INBOX") == 0))
			continue;
		sb_truncate(&sb, 0);
		sb_addf(&sb, "* %s (", c->list_opts & LO_LSUB ? "LSUB" : "LIST");
		size_t start = sb.len;
		if (!(c->list_opts & LO_LSUB))
			sb_adds(&sb, has_children(list, name) ? "\\HasChildren" : "\\HasNoChildren");
		if (subscribed && !(c->list_opts & LO_LSUB) &&
		    (c->list_opts & (LO_SUBSCRIBED | LO_RET_SUBSCRIBED)))
			sb_addf(&sb, "%s\\Subscribed", sb.len > start ? " " : "");
		if (special != NULL)
			sb_addf(&sb, "%s%s", sb.len > start ? " " : "", special);
		sb_adds(&sb, ") \"/\" ");
		imap_quote(&sb, wire, strlen(wire));
		sb_adds(&sb, "\r\n");
		session_write(s, sb.buf, sb.len);
		if (c->status_items != 0)
			json_array_append_new(c->list, json_string(name));
	}
	sb_free(&sb);
	if (!(c->list_opts & (LO_LSUB | LO_SUBSCRIBED | LO_SPECIAL)))
		list_parents(s, list);
	c->page_i = 0;
	list_status_next(s);
}

/* "(" opt *(SP opt) ")" of LIST-EXTENDED into c->list_opts. */
static bool list_options(session_t *s, bool ret)
{
	imap_parser_t *ip = &s->cmd->ip;
	if (!ip_char(ip, '('))
		return ip_fail(ip, "expected '('");
	if (ip_char(ip, ')'))
		return true;
	do {
		const char *o = ip_atom(ip);
		if (o == NULL)
			return false;
		if (!ret && strcasecmp(o, "SUBSCRIBED") == 0)
			s->cmd->list_opts |= LO_SUBSCRIBED | LO_RET_SUBSCRIBED;
		else if (!ret && strcasecmp(o, "SPECIAL-USE") == 0)
			s->cmd->list_opts |= LO_SPECIAL;
		else if (!ret && strcasecmp(o, "REMOTE") == 0)
			;   /* no remote mailboxes here */
		else if (!ret && strcasecmp(o, "RECURSIVEMATCH") == 0)
			s->cmd->list_opts |= LO_RECURSIVE;
		else if (ret && strcasecmp(o, "SUBSCRIBED") == 0)
			s->cmd->list_opts |= LO_RET_SUBSCRIBED;
		else if (ret && strcasecmp(o, "CHILDREN") == 0)
			s->cmd->list_opts |= LO_RET_CHILDREN;
		else if (ret && strcasecmp(o, "SPECIAL-USE") == 0)
			s->cmd->list_opts |= LO_RET_SPECIAL;
		else if (ret && strcasecmp(o, "STATUS") == 0) {
			if (!ip_sp(ip) || !status_items(ip, &s->cmd->status_items))
				return ip_fail(ip, "bad STATUS return option");
		}
		else
			return ip_fail(ip, "unknown LIST option");
	} while (ip_char(ip, ' '));
	return ip_char(ip, ')') || ip_fail(ip, "expected ')'");
}

static bool list_pattern(session_t *s)
{
	cmd_t *c = s->cmd;
	size_t len;
	const char *p = ip_list_mailbox(&c->ip, &len);
	if (p == NULL)
		return false;
	size_t wild = 0;
	for (size_t i = 0; i < len; i++)
		wild += p[i] == '*' || p[i] == '%';
	if (c->npats >= LIST_PATTERNS_MAX || wild > LIST_WILDCARDS_MAX || strlen(p) != len ||
	    len > IMAPD_NAME_MAX)
		return ip_fail(&c->ip, "pattern too complex");
	c->pats = xrealloc(c->pats, (c->npats + 1) * sizeof *c->pats);
	c->pats[c->npats++] = xstrdup(p);
	return true;
}

static void list_common(session_t *s, bool lsub)
{
	cmd_t *c = s->cmd;
	imap_parser_t *ip = &c->ip;
	size_t len;
	if (lsub)
		c->list_opts |= LO_LSUB | LO_SUBSCRIBED;
	if (!ip_sp(ip))
		goto bad;
	if (!lsub && ip_peek(ip, '(')) {
		c->list_opts |= LO_EXTENDED;
		if (!list_options(s, false) || !ip_sp(ip))
			goto bad;
	}
	const char *ref = ip_astring(ip, &len);
	if (ref == NULL || strlen(ref) != len || len > IMAPD_NAME_MAX || !ip_sp(ip))
		goto bad;
	c->ref = xstrdup(ref);
	if (!lsub && ip_char(ip, '(')) {
		do {
			if (!list_pattern(s))
				goto bad;
		} while (ip_char(ip, ' '));
		if (!ip_char(ip, ')'))
			goto bad;
	} else if (!list_pattern(s)) {
		goto bad;
	}
	if (!lsub && ip_char(ip, ' ')) {
		const char *r = ip_atom(ip);
		if (r == NULL || strcasecmp(r, "RETURN") != 0 || !ip_sp(ip) || !list_options(s, true))
			goto bad;
	}
	if (!ip_eol(ip))
		goto bad;
	if (c->npats == 1 && c->pats[0][0] == '\0') {
		/* RFC 3501 6.3.8: the delimiter and the root of the reference */
		session_printf(s, "* %s (\\Noselect) \"/\" \"\"\r\n", lsub ? "LSUB" : "LIST");
		imap_done(s, "OK", "%s completed", c->name);
		return;
	}
	c->list = json_array();
	json_t *req = bus_env_new("storaged.mailbox.list");
	imap_call(s, &req, list_done);
	return;
bad:
	imap_done(s, "BAD", "%s", ip->err ? ip->err : "bad LIST arguments");
}

void cmd_list(session_t *s)
{
	list_common(s, false);
}

void cmd_lsub(session_t *s)
{
	list_common(s, true);
}

/* ---- STATUS ------------------------------------------------------------------------------- */


static const struct { const char *name, *key; unsigned bit; } status_names[] = {
	{ "MESSAGES", "messages", SI_MESSAGES }, { "RECENT", NULL, SI_RECENT },
	{ "UIDNEXT", "uidnext", SI_UIDNEXT }, { "UIDVALIDITY", "uidvalidity", SI_UIDVALIDITY },
	{ "UNSEEN", "unseen", SI_UNSEEN }, { "HIGHESTMODSEQ", "highestmodseq", SI_HIGHESTMODSEQ },
	{ "SIZE", "size", SI_SIZE }, { "DELETED", "deleted", SI_DELETED },
};

/* "(" item *(SP item) ")" of STATUS into *bits. */
static bool status_items(imap_parser_t *ip, unsigned *bits)
{
	if (!ip_char(ip, '('))
		return ip_fail(ip, "expected '('");
	do {
		const char *it = ip_atom(ip);
		size_t k = 0;
		if (it == NULL)
			return false;
		while (k < ARRAY_LEN(status_names) && strcasecmp(it, status_names[k].name) != 0)
			k++;
		if (k == ARRAY_LEN(status_names))
			return ip_fail(ip, "unknown STATUS item");
		*bits |= status_names[k].bit;
	} while (ip_char(ip, ' '));
	return ip_char(ip, ')') || ip_fail(ip, "expected ')'");
}

/* "* STATUS name (...)" from a storaged.mailbox.status reply. */
static void status_line(session_t *s, const char *name, unsigned bits, const json_t *reply)
{
	char wire[IMAPD_NAME_MAX * 3];
	if (name == NULL || imap_name_wire(s, name, strlen(name), wire, sizeof wire) < 0)
		return;
	strbuf_t sb = STRBUF_INIT;
	sb_adds(&sb, "* STATUS ");
	imap_quote(&sb, wire, strlen(wire));
	sb_adds(&sb, " (");
	bool first = true;
	for (size_t i = 0; i < ARRAY_LEN(status_names); i++) {
		if (!(bits & status_names[i].bit))
			continue;
		json_int_t v = status_names[i].key ?
			       json_integer_value(json_object_get(reply, status_names[i].key)) : 0;
		sb_addf(&sb, "%s%s %lld", first ? "" : " ", status_names[i].name, (long long)v);
		first = false;
	}
	sb_adds(&sb, ")\r\n");
	session_write(s, sb.buf, sb.len);
	sb_free(&sb);
}

static void status_done(session_t *s, json_t *reply, const void *raw, size_t rawlen)
{
	(void)raw; (void)rawlen;
	cmd_t *c = s->cmd;
	if (!bus_reply_ok(reply)) {
		imap_fail_reply(s, reply, "STATUS");
		return;
	}
	status_line(s, c->mailbox, c->status_items, reply);
	imap_done(s, "OK", "STATUS completed");
}

void cmd_status(session_t *s)
{
	cmd_t *c = s->cmd;
	imap_parser_t *ip = &c->ip;
	char name[IMAPD_NAME_MAX + 1];
	if (!ip_sp(ip)) {
		imap_done(s, "BAD", "expected a mailbox");
		return;
	}
	if (!imap_mailbox_arg(s, name, sizeof name))
		return;
	if (!ip_sp(ip) || !status_items(ip, &c->status_items) || !ip_eol(ip)) {
		imap_done(s, "BAD", "%s", ip->err ? ip->err : "bad STATUS items");
		return;
	}
	if (c->status_items & SI_HIGHESTMODSEQ)
		s->condstore = true;   /* RFC 7162 3.1: a CONDSTORE-enabling command */
	c->mailbox = xstrdup(name);
	json_t *req = bus_env_new("storaged.mailbox.status");
	json_object_set_new(req, "mailbox", json_string(name));
	imap_call(s, &req, status_done);
}

/* ---- SELECT and EXAMINE ------------------------------------------------------------------- */

static void select_status_done(session_t *s, json_t *reply, const void *raw, size_t rawlen);
static void select_page(session_t *s, json_t *reply, const void *raw, size_t rawlen);

/* The next piece of the UID list: a search for everything returns it as
 * set text ("1:5000"), a few bytes where a message list would be a JSON
 * object per message. */
static void select_ask(session_t *s, uint32_t from)
{
	json_t *req = bus_env_new("storaged.message.search");
	json_object_set_new(req, "mailbox", json_string(s->mbox.name));
	json_object_set_new(req, "criteria", json_pack("{s:b}", "all", 1));
	if (from > 1)
		json_object_set_new(req, "from", json_integer(from));
	imap_call(s, &req, select_page);
}

/* The tagged OK of a successful SELECT. */
static void select_done(session_t *s)
{
	imap_done(s, "OK", "[%s] %s completed", s->mbox.readonly ? "READ-ONLY" : "READ-WRITE",
		  s->cmd->name);
}

/* The untagged responses of a successful SELECT (RFC 3501 6.3.1). */
static void select_announce(session_t *s)
{
	mbox_t *m = &s->mbox;
	cmd_t *c = s->cmd;
	session_printf(s, "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n");
	if (m->readonly)
		session_printf(s, "* OK [PERMANENTFLAGS ()] Read-only mailbox\r\n");
	else
		session_printf(s, "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen "
			       "\\Draft \\*)] Flags permitted\r\n");
	session_printf(s, "* %zu EXISTS\r\n* 0 RECENT\r\n", m->n);
	if (c->first_unseen != 0)
		session_printf(s, "* OK [UNSEEN %u] First unseen\r\n", (unsigned)c->first_unseen);
	session_printf(s, "* OK [UIDVALIDITY %llu] UIDs valid\r\n",
		       (unsigned long long)m->uidvalidity);
	session_printf(s, "* OK [UIDNEXT %llu] Predicted next UID\r\n",
		       (unsigned long long)m->uidnext);
	session_printf(s, "* OK [HIGHESTMODSEQ %llu] Highest\r\n", (unsigned long long)m->hms);
	imap_enter_state(s, IS_SELECTED);
	if (c->qr != NULL) {
		qresync_select(s, select_done);   /* VANISHED (EARLIER), FETCH: qresync.c */
		return;
	}
	select_done(s);
}

/*
 * UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ and the first unseen come from the
 * status asked first: a change after it has a greater MODSEQ, so notify's
 * CHANGEDSINCE catches up whatever the UID list below already shows.
 */
static void select_status_done(session_t *s, json_t *reply, const void *raw, size_t rawlen)
{
	(void)raw; (void)rawlen;
	mbox_t *m = &s->mbox;
	cmd_t *c = s->cmd;
	if (!bus_reply_ok(reply)) {
		mbox_clear(m);
		imap_fail_reply(s, reply, c->name);
		return;
	}
	m->uidvalidity = (uint64_t)json_integer_value(json_object_get(reply, "uidvalidity"));
	m->hms = (uint64_t)json_integer_value(json_object_get(reply, "highestmodseq"));
	m->uidnext = (uint64_t)json_integer_value(json_object_get(reply, "uidnext"));
	json_int_t fu = json_integer_value(json_object_get(reply, "first_unseen"));
	c->first_unseen_uid = fu > 0 && fu <= UINT32_MAX ? (uint32_t)fu : 0;
	select_ask(s, 1);
}

static void select_range(uint32_t lo, uint32_t hi, void *arg)
{
	mbox_t *m = arg;
	for (uint64_t u = lo; u <= hi; u++)
		if (m->n == 0 || u > m->uids[m->n - 1])   /* sorted, no repeats */
			mbox_append(m, (uint32_t)u);
}

static void select_page(session_t *s, json_t *reply, const void *raw, size_t rawlen)
{
	(void)raw; (void)rawlen;
	mbox_t *m = &s->mbox;
	cmd_t *c = s->cmd;
	const char *uids = json_string_value(json_object_get(reply, "uids"));
	if (!bus_reply_ok(reply) || uids == NULL || !uidset_each(uids, select_range, m)) {
		mbox_clear(m);
		imap_fail_reply(s, reply, c->name);
		return;
	}
	json_t *more = json_object_get(reply, "next");
	if (json_is_integer(more) && json_integer_value(more) > 0 &&
	    json_integer_value(more) <= UINT32_MAX) {
		select_ask(s, (uint32_t)json_integer_value(more));
		return;
	}
	if (m->n > 0 && m->uidnext <= m->uids[m->n - 1])
		m->uidnext = m->uids[m->n - 1] + 1ULL;
	/* gone since the status, or not yet listed: no UNSEEN then */
	c->first_unseen = c->first_unseen_uid ? mbox_seq(m, c->first_unseen_uid) : 0;
	select_announce(s);
}

/* SELECT from the view: the UIDs it has are the map (shared until the
 * session changes it), nothing asked. */
static void select_from_view(session_t *s)
{
	mbox_t *m = &s->mbox;
	cmd_t *c = s->cmd;
	view_t *v = m->view;
	mbox_drop_uids(m);
	m->snap = view_uids(v);
	m->uids = m->snap->uids;
	m->n = m->cap = m->snap->n;
	c->first_unseen = view_first_unseen(v);
	m->uidvalidity = v->uidvalidity;
	m->uidnext = v->uidnext;
	m->hms = v->hms;
	m->view_gen = v->gen;
	select_announce(s);
}

/*
 * storaged's status against the view: the same UIDVALIDITY, HIGHESTMODSEQ
 * and count means the view is storaged's state, and SELECT answers from
 * it. Otherwise an event has not come yet (or was lost): this SELECT goes
 * the storaged way, and the view catches up (or, if the counts differ at
 * the same MODSEQ, loads again).
 */
static void select_check_done(session_t *s, json_t *reply, const void *raw, size_t rawlen)
{
	view_t *v = s->mbox.view;
	if (bus_reply_ok(reply) && view_ready(v)) {
		uint64_t uv = (uint64_t)json_integer_value(json_object_get(reply, "uidvalidity"));
		uint64_t hms = (uint64_t)json_integer_value(json_object_get(reply, "highestmodseq"));
		uint64_t n = (uint64_t)json_integer_value(json_object_get(reply, "messages"));
		if (uv == v->uidvalidity && hms == v->hms && n == v->n) {
			v->checked_ms = loop_now(s->d->loop);
			select_from_view(s);
			return;
		}
		/* a status older than the view (our own write came between)
		 * says nothing about it */
		if (uv != v->uidvalidity || (hms == v->hms && n != v->n))
			view_load(v);
		else if (hms > v->hms)
			view_refresh(v);
	}
	select_status_done(s, reply, raw, rawlen);
}

/* How long a view that storaged's status confirmed is trusted without
 * asking again: events keep it current; this bounds how long a lost one
 * (busd restarted) or a mailbox deleted and made again elsewhere can go
 * unseen by a SELECT. */
#define SELECT_TRUST_MS 250

/* From the view if storaged confirmed it lately; after its load if it is
 * loading (cheaper than reading the UIDs beside it); else ask. */
static void select_go(session_t *s)
{
	view_t *v = s->mbox.view;
	if (view_ready(v) && loop_now(s->d->loop) - v->checked_ms < SELECT_TRUST_MS) {
		select_from_view(s);
		return;
	}
	if (view_loading(v)) {
		view_wait(s, select_go);
		return;
	}
	json_t *req = bus_env_new("storaged.mailbox.status");
	json_object_set_new(req, "mailbox", json_string(s->mbox.name));
	imap_call(s, &req, view_ready(v) ? select_check_done : select_status_done);
}

static void select_common(session_t *s, bool examine)
{
	cmd_t *c = s->cmd;
	imap_parser_t *ip = &c->ip;
	char name[IMAPD_NAME_MAX + 1];
	/* RFC 3501 6.3.1: a SELECT, even a failing one, leaves the old mailbox;
	 * its view is let go after the new one is held, so a SELECT of the same
	 * mailbox keeps it */
	view_t *old = s->mbox.view;
	s->mbox.view = NULL;
	qresync_closed(s);
	mbox_clear(&s->mbox);
	imap_enter_state(s, IS_AUTH);
	const char *bad = NULL;
	if (!ip_sp(ip))
		bad = "expected a mailbox";
	else if (!imap_mailbox_arg(s, name, sizeof name))
		goto out;   /* answered */
	else if (ip_char(ip, ' ') && !qresync_select_arg(s))
		goto out;   /* (CONDSTORE), (QRESYNC (...)): qresync.c; BAD sent */
	if (bad == NULL && !ip_eol(ip))
		bad = "unexpected arguments";
	if (bad != NULL) {
		imap_done(s, "BAD", "%s", bad);
		goto out;
	}
	s->mbox.name = xstrdup(name);
	s->mbox.readonly = examine;
	s->mbox.view = view_acquire(s->d, s->user, name);
	select_go(s);
out:
	view_release(&old);
}

void cmd_select(session_t *s)
{
	select_common(s, false);
}

void cmd_examine(session_t *s)
{
	select_common(s, true);
}

void cmd_unselect(session_t *s)
{
	if (!ip_eol(&s->cmd->ip)) {
		imap_done(s, "BAD", "unexpected arguments");
		return;
	}
	mbox_clear(&s->mbox);
	imap_enter_state(s, IS_AUTH);
	imap_done(s, "OK", "UNSELECT completed");
}
