/*
 * mailbox.c — storaged's mailbox requests (/tmp/mailbox_spec.md):
 *
 *   storaged.mailbox.{create,delete,rename,subscribe}   (idempotent)
 *   storaged.mailbox.list
 *
 * A mailbox belongs to a user (table mailboxes, migration 2) and has a
 * UTF-8 name whose levels are separated by '/'; "INBOX" in any case is the
 * inbox and is stored as "INBOX". Names are checked once, by
 * mbx_name_check. Every new mailbox name (create, the default set of a new
 * user, each name a rename produces) gets a fresh UIDVALIDITY from the
 * counters table: max(counter + 1, now), which then becomes the counter, so
 * a name deleted and created again never sees the same value again
 * (RFC 3501 2.3.1.1).
 *
 * Changes go through accounts.c's acc_commit (one transaction with the
 * idempotency row, reply after COMMIT). The children of "a" are the names
 * in ["a/", "a0") — '0' follows '/' in byte order — so the (user_id, name)
 * index finds them without LIKE and its wildcards.
 */
#include "storaged.h"

#include "log.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MBX_LEVELS_MAX 16
#define MBX_PER_USER_MAX 10000

/* One request's checked fields: the change functions' ctx. */
struct mbx_req {
	char address[ACC_ADDR_MAX];
	char name[MBX_NAME_MAX + 1];    /* rename: from */
	char to[MBX_NAME_MAX + 1];
	int subscribed;
};

/* What every user starts with; user.add and migration 2 create this set. */
static const struct { const char *name, *special_use; } mbx_defaults[] = {
	{ "INBOX", NULL },      { "Sent", "\\Sent" },   { "Drafts", "\\Drafts" },
	{ "Junk", "\\Junk" },   { "Trash", "\\Trash" }, { "Archive", "\\Archive" },
};

/* The children of a mailbox named ?2 of user ?1 (see the top comment). */
#define MBX_CHILDREN "user_id = ?1 AND name > ?2 || '/' AND name < ?2 || '0'"

/* ---- names ----------------------------------------------------------------- */

/*
 * The one validator: copies in to out (MBX_NAME_MAX + 1 bytes) with an
 * INBOX first level in any case spelt "INBOX". NULL, or why not. in is
 * valid UTF-8 already (jansson refuses anything else, and NUL).
 */
static const char *mbx_name_check(const char *in, char *out)
{
	size_t len = strlen(in), level = 0, levels = 1;
	if (len < 1 || len > MBX_NAME_MAX)
		return "must be 1..255 bytes";
	if (in[0] == '/' || in[len - 1] == '/')
		return "must not start or end with '/'";
	for (size_t i = 0; i <= len; i++) {
		unsigned char c = (unsigned char)in[i];
		if (c == '/' || c == '\0') {
			if (level == 0)
				return "must not have an empty level";
			if ((level == 1 || (level == 2 && in[i - 2] == '.')) && in[i - 1] == '.')
				return "must not have a level \".\" or \"..\"";
			if (c == '/' && ++levels > MBX_LEVELS_MAX)
				return "must have at most 16 levels";
			level = 0;
			continue;
		}
		if (c < 0x20 || c == 0x7f)
			return "must not hold control characters";
		if (c == '*' || c == '%')
			return "must not hold '*' or '%'";
		level++;
	}
	memcpy(out, in, len + 1);
	if (strncasecmp(out, "INBOX", 5) == 0 && (out[5] == '\0' || out[5] == '/'))
		memcpy(out, "INBOX", 5);
	return NULL;
}

/* Checks a name field and replies "invalid" when it fails; 0 or -1. */
static int mbx_name(accounts_t *a, bus_req_t **req, const char *field, const char *in, char *out)
{
	char msg[160];
	const char *why = mbx_name_check(in, out);
	if (why == NULL)
		return 0;
	snprintf(msg, sizeof msg, "%s: mailbox name %s", field, why);
	acc_fail(a, req, "invalid", msg);
	return -1;
}

/* ---- SQL helpers --------------------------------------------------------------- */

/* The id of the user addr (checked, lower-case); 0 with e not_found, or
 * -1 with e internal. */
static int64_t mbx_user(accounts_t *a, const char *addr, struct acc_err *e)
{
	char local[ACC_ADDR_MAX];
	const char *at = strchr(addr, '@');
	memcpy(local, addr, (size_t)(at - addr));
	local[at - addr] = '\0';
	sqlite3_stmt *st = acc_prep(a, "SELECT u.id FROM users u JOIN domains d ON d.id = u.domain_id "
				    "WHERE d.name = ?1 AND u.localpart = ?2", "ss", at + 1, local);
	int rc = st ? sqlite3_step(st) : SQLITE_ERROR;
	int64_t id = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : rc == SQLITE_DONE ? 0 : -1;
	db_release(a->db, st);
	if (id == 0)
		acc_set(e, "not_found", "no user %s", addr);
	else if (id < 0)
		acc_set(e, "internal", "database error");
	return id;
}

/* The next UIDVALIDITY, max(counter + 1, now), now also the counter; -1
 * on error. Call inside the change's transaction. */
static int64_t mbx_uidvalidity(accounts_t *a)
{
	if (acc_run(a, acc_prep(a, "UPDATE counters SET value = max(value + 1, ?1) "
				"WHERE name = 'uidvalidity'", "i", (int64_t)time(NULL))) != SQLITE_DONE)
		return -1;
	return acc_int(a, acc_prep(a, "SELECT value FROM counters WHERE name = 'uidvalidity'", ""));
}

/* Inserts a mailbox with a fresh UIDVALIDITY: SQLITE_DONE, or the error
 * (SQLITE_CONSTRAINT_UNIQUE if the name exists). */
static int mbx_insert(accounts_t *a, int64_t uid, const char *name, const char *special_use)
{
	int64_t uv = mbx_uidvalidity(a);
	if (uv < 0)
		return SQLITE_ERROR;
	return acc_run(a, acc_prep(a, "INSERT INTO mailboxes (user_id, name, special_use, uidvalidity, "
				   "created) VALUES (?1, ?2, ?3, ?4, ?5)", "issii", uid, name,
				   special_use, uv, (int64_t)time(NULL)));
}

int mailbox_lookup(accounts_t *a, const char *addr, const char *name, struct mbx_ref *m,
		   struct acc_err *e)
{
	char canon[MBX_NAME_MAX + 1];
	const char *why = mbx_name_check(name, canon);
	memset(m, 0, sizeof *m);
	if (why != NULL) {
		acc_set(e, "invalid", "mailbox name %s", why);
		return -1;
	}
	if ((m->user_id = mbx_user(a, addr, e)) <= 0)
		return m->user_id == 0 ? 0 : -1;
	sqlite3_stmt *st = acc_prep(a, "SELECT m.id, m.uidvalidity, m.uidnext, m.highestmodseq, "
				    "u.quota_bytes, u.used_bytes FROM mailboxes m JOIN users u "
				    "ON u.id = m.user_id WHERE m.user_id = ?1 AND m.name = ?2",
				    "is", m->user_id, canon);
	int rc = st ? sqlite3_step(st) : SQLITE_ERROR;
	if (rc == SQLITE_ROW) {
		m->id = sqlite3_column_int64(st, 0);
		m->uidvalidity = sqlite3_column_int64(st, 1);
		m->uidnext = sqlite3_column_int64(st, 2);
		m->highestmodseq = sqlite3_column_int64(st, 3);
		m->quota = sqlite3_column_int64(st, 4);
		m->used = sqlite3_column_int64(st, 5);
		memcpy(m->name, canon, strlen(canon) + 1);
	}
	db_release(a->db, st);
	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE) {
		acc_set(e, "not_found", "no mailbox %s of %s", canon, addr);
		return 0;
	}
	acc_set(e, "internal", "database error");
	return -1;
}

#define MBX_COLUMNS "name, special_use, subscribed, uidvalidity, uidnext, highestmodseq"

/* acc_row_fn: one mailbox from the MBX_COLUMNS of the current row. */
static json_t *mbx_row(sqlite3_stmt *st)
{
	const char *su = (const char *)sqlite3_column_text(st, 1);
	return json_pack("{s:s, s:o, s:b, s:I, s:I, s:I}",
			 "name", (const char *)sqlite3_column_text(st, 0),
			 "special_use", su ? json_string(su) : json_null(),
			 "subscribed", sqlite3_column_int(st, 2),
			 "uidvalidity", (json_int_t)sqlite3_column_int64(st, 3),
			 "uidnext", (json_int_t)sqlite3_column_int64(st, 4),
			 "highestmodseq", (json_int_t)sqlite3_column_int64(st, 5));
}

int mailbox_defaults(accounts_t *a, int64_t user_id)
{
	for (size_t i = 0; i < ARRAY_LEN(mbx_defaults); i++)
		if (mbx_insert(a, user_id, mbx_defaults[i].name, mbx_defaults[i].special_use) != SQLITE_DONE)
			return -1;
	return 0;
}

/* ---- create ----------------------------------------------------------------------- */

static json_t *mbx_create_change(accounts_t *a, void *ctx, struct acc_err *e)
{
	struct mbx_req *r = ctx;
	int64_t uid = mbx_user(a, r->address, e);
	if (uid <= 0)
		return NULL;
	int64_t n = acc_int(a, acc_prep(a, "SELECT count(*) FROM mailboxes WHERE user_id = ?1", "i", uid));
	if (n < 0)
		return NULL;
	if (n >= MBX_PER_USER_MAX) {
		acc_set(e, "limit", "%s has %d mailboxes, the most a user may have", r->address,
			MBX_PER_USER_MAX);
		return NULL;
	}
	int rc = mbx_insert(a, uid, r->name, NULL);
	if (rc == SQLITE_CONSTRAINT_UNIQUE)
		acc_set(e, "exists", "mailbox %s exists", r->name);
	if (rc != SQLITE_DONE)
		return NULL;
	sqlite3_stmt *st = acc_prep(a, "SELECT " MBX_COLUMNS " FROM mailboxes WHERE id = ?1", "i",
				    (int64_t)sqlite3_last_insert_rowid(db_handle(a->db)));
	json_t *mb = st && sqlite3_step(st) == SQLITE_ROW ? mbx_row(st) : NULL;
	db_release(a->db, st);
	return mb ? json_pack("{s:o}", "mailbox", mb) : NULL;
}

/* The {address, name} request of create and delete, checked into r; -1
 * after replying "invalid". */
static int mbx_unpack_address_name(accounts_t *a, bus_req_t **req, struct mbx_req *r)
{
	const char *addr, *name;
	if (ACC_UNPACK(a, req, "{s:s, s:s}", "address", &addr, "name", &name) < 0 ||
	    acc_name(a, req, "address", addr, true, r->address, NULL) < 0 ||
	    mbx_name(a, req, "name", name, r->name) < 0)
		return -1;
	return 0;
}

void mailbox_create(bus_req_t **req, void *arg)
{
	accounts_t *a = arg;
	struct mbx_req r;
	if (mbx_unpack_address_name(a, req, &r) < 0)
		return;
	acc_commit(a, req, mbx_create_change, &r);
}

/* ---- delete ------------------------------------------------------------------------ */

static json_t *mbx_delete_change(accounts_t *a, void *ctx, struct acc_err *e)
{
	struct mbx_req *r = ctx;
	int64_t uid = mbx_user(a, r->address, e), id, children;
	if (uid <= 0)
		return NULL;
	id = acc_int(a, acc_prep(a, "SELECT coalesce((SELECT id FROM mailboxes WHERE user_id = ?1 AND "
			      "name = ?2), 0)", "is", uid, r->name));
	if (id == 0)
		acc_set(e, "not_found", "no mailbox %s", r->name);
	if (id <= 0)
		return NULL;
	children = acc_int(a, acc_prep(a, "SELECT count(*) FROM mailboxes WHERE " MBX_CHILDREN, "is",
				    uid, r->name));
	if (children > 0)
		acc_set(e, "has_children", "mailbox %s has children", r->name);
	if (children != 0)
		return NULL;
	if (acc_run(a, acc_prep(a, "DELETE FROM mailboxes WHERE id = ?1", "i", id)) != SQLITE_DONE)
		return NULL;
	return json_pack("{s:b}", "deleted", 1);
}

void mailbox_delete(bus_req_t **req, void *arg)
{
	accounts_t *a = arg;
	struct mbx_req r;
	if (mbx_unpack_address_name(a, req, &r) < 0)
		return;
	if (strcmp(r.name, "INBOX") == 0) {
		acc_fail(a, req, "invalid", "INBOX cannot be deleted");
		return;
	}
	acc_commit(a, req, mbx_delete_change, &r);
}

/* ---- rename ------------------------------------------------------------------------ */

static size_t mbx_levels(const char *name)
{
	size_t n = 1;
	for (; *name != '\0'; name++)
		n += *name == '/';
	return n;
}

/*
 * Whether the children of from still fit the name rules under to: 0, or
 * -1 with e set. The longest child (in bytes) and the deepest one decide.
 */
static int mbx_rename_fits(accounts_t *a, int64_t uid, const struct mbx_req *r, struct acc_err *e)
{
	sqlite3_stmt *st = acc_prep(a, "SELECT coalesce(max(length(CAST(name AS BLOB))), 0), "
				    "coalesce(max(length(name) - length(replace(name, '/', ''))), 0) "
				    "FROM mailboxes WHERE " MBX_CHILDREN, "is", uid, r->name);
	if (st == NULL || sqlite3_step(st) != SQLITE_ROW) {
		db_release(a->db, st);
		return -1;
	}
	int64_t bytes = sqlite3_column_int64(st, 0), levels = sqlite3_column_int64(st, 1) + 1;
	db_release(a->db, st);
	if (bytes == 0)
		return 0;  /* no children */
	bytes += (int64_t)strlen(r->to) - (int64_t)strlen(r->name);
	levels += (int64_t)mbx_levels(r->to) - (int64_t)mbx_levels(r->name);
	if (bytes <= MBX_NAME_MAX && levels <= MBX_LEVELS_MAX)
		return 0;
	acc_set(e, "invalid", "to: the children of %s would get names over 255 bytes or 16 levels",
		r->name);
	return -1;
}

/* The ids of from and its children (malloc'd, *n of them), NULL on error. */
static int64_t *mbx_subtree(accounts_t *a, int64_t uid, const char *from, size_t *n)
{
	sqlite3_stmt *st = acc_prep(a, "SELECT id FROM mailboxes WHERE (user_id = ?1 AND name = ?2) "
				    "OR (" MBX_CHILDREN ") ORDER BY name", "is", uid, from);
	int64_t *ids = xmalloc(sizeof *ids * (MBX_PER_USER_MAX + 1));
	int rc = SQLITE_ERROR;
	*n = 0;
	while (st != NULL && *n <= MBX_PER_USER_MAX && (rc = sqlite3_step(st)) == SQLITE_ROW)
		ids[(*n)++] = sqlite3_column_int64(st, 0);
	db_release(a->db, st);
	if (rc != SQLITE_DONE) {
		free(ids);
		return NULL;
	}
	return ids;
}

/* Renames from (and its children) to to, each with a fresh UIDVALIDITY. */
static json_t *mbx_rename_change(accounts_t *a, void *ctx, struct acc_err *e)
{
	struct mbx_req *r = ctx;
	int64_t uid = mbx_user(a, r->address, e), *ids, found = -1;
	size_t n = 0;
	int rc = SQLITE_DONE;
	if (uid > 0)
		found = acc_int(a, acc_prep(a, "SELECT count(*) FROM mailboxes WHERE user_id = ?1 AND "
					 "name = ?2", "is", uid, r->name));
	if (found == 0)
		acc_set(e, "not_found", "no mailbox %s", r->name);
	if (found <= 0 || mbx_rename_fits(a, uid, r, e) < 0 ||
	    (ids = mbx_subtree(a, uid, r->name, &n)) == NULL)
		return NULL;
	for (size_t i = 0; i < n && rc == SQLITE_DONE; i++) {
		int64_t uv = mbx_uidvalidity(a);
		rc = uv < 0 ? SQLITE_ERROR :
		     acc_run(a, acc_prep(a, "UPDATE mailboxes SET name = ?1 || substr(name, length(?2) + 1), "
					 "uidvalidity = ?3 WHERE id = ?4", "ssii", r->to, r->name, uv, ids[i]));
	}
	free(ids);
	if (rc == SQLITE_CONSTRAINT_UNIQUE)
		acc_set(e, "exists", "mailbox %s (or one of the children's new names) exists", r->to);
	if (rc != SQLITE_DONE)
		return NULL;
	return json_pack("{s:b}", "renamed", 1);
}

void mailbox_rename(bus_req_t **req, void *arg)
{
	accounts_t *a = arg;
	const char *addr, *from, *to;
	struct mbx_req r;
	if (ACC_UNPACK(a, req, "{s:s, s:s, s:s}", "address", &addr, "from", &from, "to", &to) < 0 ||
	    acc_name(a, req, "address", addr, true, r.address, NULL) < 0 ||
	    mbx_name(a, req, "from", from, r.name) < 0 || mbx_name(a, req, "to", to, r.to) < 0)
		return;
	size_t len = strlen(r.name);
	if (strcmp(r.name, "INBOX") == 0) {
		acc_fail(a, req, "invalid", "renaming INBOX comes with messages");
		return;
	}
	if (strncmp(r.to, r.name, len) == 0 && r.to[len] == '/') {
		acc_fail(a, req, "invalid", "a mailbox cannot be renamed into its own child");
		return;
	}
	acc_commit(a, req, mbx_rename_change, &r);
}

/* ---- subscribe and list ------------------------------------------------------------- */

static json_t *mbx_subscribe_change(accounts_t *a, void *ctx, struct acc_err *e)
{
	struct mbx_req *r = ctx;
	int64_t uid = mbx_user(a, r->address, e);
	if (uid <= 0 || acc_run(a, acc_prep(a, "UPDATE mailboxes SET subscribed = ?3 WHERE user_id = ?1 "
					    "AND name = ?2", "isi", uid, r->name,
					    (int64_t)(r->subscribed != 0))) != SQLITE_DONE)
		return NULL;
	if (!acc_changed(a, e, "no mailbox %s", r->name))
		return NULL;
	return json_pack("{s:b}", "subscribed", r->subscribed != 0);
}

void mailbox_subscribe(bus_req_t **req, void *arg)
{
	accounts_t *a = arg;
	const char *addr, *name;
	struct mbx_req r;
	if (ACC_UNPACK(a, req, "{s:s, s:s, s:b}", "address", &addr, "name", &name,
		       "subscribed", &r.subscribed) < 0 ||
	    acc_name(a, req, "address", addr, true, r.address, NULL) < 0 ||
	    mbx_name(a, req, "name", name, r.name) < 0)
		return;
	acc_commit(a, req, mbx_subscribe_change, &r);
}

void mailbox_list(bus_req_t **req, void *arg)
{
	accounts_t *a = arg;
	const char *in;
	char addr[ACC_ADDR_MAX];
	struct acc_err e = { "internal", "database error" };
	if (ACC_UNPACK(a, req, "{s:s}", "address", &in) < 0 ||
	    acc_name(a, req, "address", in, true, addr, NULL) < 0)
		return;
	int64_t uid = mbx_user(a, addr, &e);
	if (uid <= 0) {
		acc_fail(a, req, e.code, e.msg);
		return;
	}
	sqlite3_stmt *st = acc_prep(a, "SELECT " MBX_COLUMNS " FROM mailboxes WHERE user_id = ?1 "
				    "ORDER BY name LIMIT ?2", "ii", uid, (int64_t)ACC_LIST_MAX);
	acc_list_reply(a, req, st, "mailboxes", mbx_row);
}
