/*
 * accounts.c — storaged's accounts requests (/tmp/storaged_spec.md):
 *
 *   storaged.domain.{add,del,list}
 *   storaged.user.{add,del,list,passwd,verify,quota,usage}
 *   storaged.alias.{add,del,list}
 *
 * and holds storaged's one handler table (the storaged.mailbox.* handlers
 * live in mailbox.c, storaged.queue.* in queue.c, storaged.rcpt.resolve
 * and storaged.domain.catchall in rcpt.c; they share the helpers declared
 * in storaged.h). The lists come in pages ordered by name: a cut reply
 * says where the next one starts.
 *
 * Each handler begins with one strict bus_req_unpack, validates names with
 * acc_name_check, and touches the database only through prepared
 * statements. A state-changing request goes through acc_commit (batch.c):
 * one savepoint in the group-commit transaction holding the idempotency
 * check, the change and the idempotency row; the reply is sent after
 * COMMIT.
 *
 * user.add and user.passwd hash the password on the KDF pool first: the
 * request is parked in a struct acc_job (we own it until the callback
 * replies). user.verify checks a 60 s cache of successful verifies keyed by
 * SHA-256(address NUL password NUL stored hash) before asking the pool.
 */
#include "storaged.h"
#include "ckpt.h"

#include "hmap.h"
#include "idna.h"
#include "log.h"
#include "util.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ACC_LOCAL_MAX 64
#define ACC_DOMAIN_MAX 253
#define ACC_LABEL_MAX 63
#define ACC_QUOTA_MAX (1LL << 50)
#define ACC_CACHE_MAX 1024
#define ACC_CACHE_TTL_S 60

/* A request parked while the KDF pool works. */
struct acc_job {
	accounts_t *a;
	bus_req_t *req;
	char address[ACC_ADDR_MAX];
	json_int_t quota;
	const char *hash;               /* during the hash callback only */
	unsigned char key[32];          /* verify: the cache key */
};

/* ---- validation ----------------------------------------------------------- */

/* One domain name: 1..253 bytes, labels 1..63 of [a-z0-9-] not starting or
 * ending with '-', at least one dot. s is already lower-case. */
static const char *acc_domain_check(const char *s, size_t len)
{
	size_t label = 0, dots = 0;
	if (len < 1 || len > ACC_DOMAIN_MAX)
		return "domain must be 1..253 characters";
	for (size_t i = 0; i <= len; i++) {
		char c = i < len ? s[i] : '.';
		if (c == '.') {
			if (label == 0 || label > ACC_LABEL_MAX)
				return "domain labels must be 1..63 characters";
			if (s[i - label] == '-' || s[i - 1] == '-')
				return "domain labels must not start or end with '-'";
			label = 0;
			dots += i < len;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
			return "domain may hold only letters, digits, '-' and '.'";
		label++;
	}
	return dots >= 1 ? NULL : "domain needs at least one dot";
}

/* One local part: 1..64 of [a-z0-9._-], no leading/trailing dot, no "..". */
static const char *acc_local_check(const char *s, size_t len)
{
	if (len < 1 || len > ACC_LOCAL_MAX)
		return "local part must be 1..64 characters";
	if (s[0] == '.' || s[len - 1] == '.')
		return "local part must not start or end with '.'";
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (c == '.' && s[i + 1] == '.')
			return "local part must not contain \"..\"";
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
			return "local part may hold only letters, digits, '.', '_' and '-'";
	}
	return NULL;
}

/*
 * The one validator: lower-cases in into out (ACC_ADDR_MAX bytes) and
 * checks it as an address (local@domain) or, if !address, a domain name.
 * A domain written in UTF-8 (SMTPUTF8, RFC 6531) becomes its A-labels
 * (lib/idna.h), the form it is stored in, so "bücher.example" and
 * "xn--bcher-kva.example" are one domain. For an address *at points at
 * the '@' in out. NULL, or why not.
 */
const char *acc_name_check(const char *in, bool address, char *out, char **at)
{
	size_t len = strlen(in);
	if (len >= ACC_ADDR_MAX)
		return address ? "address too long" : "domain must be 1..253 characters";
	const char *dom = in;
	size_t llen = 0;
	if (address) {
		const char *sep = strchr(in, '@');
		if (sep == NULL)
			return "address must be local@domain";
		llen = (size_t)(sep - in);
		for (size_t i = 0; i < llen; i++)
			out[i] = (char)tolower((unsigned char)in[i]);
		out[llen] = '@';
		dom = sep + 1;
	}
	char *d = address ? out + llen + 1 : out;
	int dlen = idna_to_ascii(dom, len - (size_t)(dom - in), d, ACC_ADDR_MAX - (size_t)(d - out));
	if (dlen < 0)
		return "domain is not UTF-8, or a label is longer than 63 characters once encoded";
	if (!address)
		return acc_domain_check(out, (size_t)dlen);
	const char *why = acc_local_check(out, llen);
	if (why == NULL)
		why = acc_domain_check(d, (size_t)dlen);
	if (at != NULL)
		*at = out + llen;
	return why;
}

/* Checks in; 0, or -1 with e "invalid" naming field. */
int acc_name_err(struct acc_err *e, const char *field, const char *in, bool address, char *out,
		 char **at)
{
	const char *why = acc_name_check(in, address, out, at);
	if (why == NULL)
		return 0;
	acc_set(e, "invalid", "%s: %s", field, why);
	return -1;
}

/* Checks in and replies "invalid" when it fails; 0 or -1 (req consumed). */
int acc_name(accounts_t *a, bus_req_t **req, const char *field, const char *in,
		    bool address, char *out, char **at)
{
	struct acc_err e;
	if (acc_name_err(&e, field, in, address, out, at) == 0)
		return 0;
	acc_fail(a, req, e.code, e.msg);
	return -1;
}

/* ---- SQL helpers ------------------------------------------------------------ */

/*
 * Prepares sql and binds its parameters from fmt: 's' a string (NULL
 * binds NULL), 'i' an int64. NULL on error (logged).
 */
sqlite3_stmt *acc_prep(accounts_t *a, const char *sql, const char *fmt, ...)
{
	sqlite3_stmt *st = db_prepare(a->db, sql);
	va_list ap;
	if (st == NULL) {
		log_warn("db", "op=prepare why=%s", log_quote(sqlite3_errmsg(db_handle(a->db))));
		return NULL;
	}
	va_start(ap, fmt);
	for (int i = 0; fmt[i] != '\0'; i++) {
		if (fmt[i] == 's')
			sqlite3_bind_text(st, i + 1, va_arg(ap, const char *), -1, SQLITE_STATIC);
		else
			sqlite3_bind_int64(st, i + 1, (sqlite3_int64)va_arg(ap, int64_t));
	}
	va_end(ap);
	return st;
}

/* Runs a statement that returns no rows: SQLITE_DONE, or the error code
 * (extended) — SQLITE_CONSTRAINT_UNIQUE for a duplicate. */
int acc_run(accounts_t *a, sqlite3_stmt *st)
{
	if (st == NULL)
		return SQLITE_ERROR;
	int rc = sqlite3_step(st);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		rc = sqlite3_extended_errcode(db_handle(a->db));
	db_release(a->db, st);
	return rc;
}

int64_t acc_int(accounts_t *a, sqlite3_stmt *st)
{
	int64_t v = st && sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
	db_release(a->db, st);
	return v;
}

/* The id of a hosted domain, 0 if we do not host it, -1 on error. */
int64_t acc_domain_id(accounts_t *a, const char *name)
{
	sqlite3_stmt *st = acc_prep(a, "SELECT id FROM domains WHERE name = ?1", "s", name);
	if (st == NULL)
		return -1;
	int rc = sqlite3_step(st);
	int64_t id = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : rc == SQLITE_DONE ? 0 : -1;
	db_release(a->db, st);
	return id;
}

void acc_set(struct acc_err *e, const char *code, const char *fmt, ...)
{
	va_list ap;
	e->code = code;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof e->msg, fmt, ap);
	va_end(ap);
}

bool acc_changed(accounts_t *a, struct acc_err *e, const char *fmt, ...)
{
	va_list ap;
	if (sqlite3_changes(db_handle(a->db)) > 0)
		return true;
	e->code = "not_found";
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof e->msg, fmt, ap);
	va_end(ap);
	return false;
}

/* A stored result for idem, replied before any KDF work; 1 if replied. */
static int acc_idem_early(accounts_t *a, bus_req_t **req)
{
	const char *idem = json_string_value(json_object_get(bus_req_env(*req), "idem"));
	json_t *result = NULL;
	if (idem == NULL || idem_lookup(a->db, idem, bus_req_type(*req), &result) != 1)
		return 0;  /* unknown (or an error): acc_commit decides */
	acc_ok(a, req, &result);
	return 1;
}

/* ---- domains ------------------------------------------------------------------ */

static json_t *acc_domain_add_change(accounts_t *a, void *ctx, struct acc_err *e)
{
	const char *name = ctx;
	int64_t now = (int64_t)time(NULL);
	int rc = acc_run(a, acc_prep(a, "INSERT INTO domains (name, created) VALUES (?1, ?2)",
				     "si", name, now));
	if (rc == SQLITE_CONSTRAINT_UNIQUE) {
		acc_set(e, "exists", "domain %s exists", name);
		return NULL;
	}
	if (rc != SQLITE_DONE)
		return NULL;
	return json_pack("{s:{s:s, s:I}}", "domain", "name", name, "created", (json_int_t)now);
}

static void acc_domain_add(bus_req_t **req, void *arg)
{
	accounts_t *a = arg;
	const char *in;
	char name[ACC_ADDR_MAX];
	if (ACC_UNPACK(a, req, "{s:s}", "name", &in) < 0 || acc_name(a, req, "name", in, false, name, NULL) < 0)
		return;
	acc_commit(a, req, acc_domain_add_change, name);
}

static json_t *acc_domain_del_change(accounts_t *a, void *ctx, struct acc_err *e)
{
	const char *name = ctx;
	/* Users and aliases go with it (ON DELETE CASCADE). */
	if (acc_run(a, acc_prep(a, "DELETE FROM domains WHERE name = ?1", "s", name)) != SQLITE_DONE)
		return NULL;
	if (!acc_changed(a, e, "no domain %s", name))
		return NULL;
	return json_pack("{s:b}", "deleted", 1);
}

static void acc_domain_del(bus_req_t **req, void *arg)
{
	accounts_t *a = arg;
	const char *in;
	char name[ACC_ADDR_MAX];
	if (ACC_UNPACK(a, req, "{s:s}", "name", &in) < 0 || acc_name(a, req, "name", in, false, name, NULL) < 0)
		return;
	acc_commit(a, req, acc_domain_del_change, name);
}

/* Lists stop before the reply could outgrow a bus envelope (64 KiB) and
 * say "truncated"; the paged ones say where the next page starts. */
#define ACC_LIST_BYTES (48 * 1024)

/*
 * The rows of st (finalized here) as an array of row_fn items, stopping
 * before their compact JSON (one byte more each, for the comma) would pass
 * max_bytes: *cut then. *bytes: what the items take. NULL on a database
 * error.
 */
json_t *acc_rows_new(accounts_t *a, sqlite3_stmt *st, acc_row_fn row_fn, size_t max_bytes, size_t *bytes,
		     bool *cut)
{
	json_t *list = json_array();
	int rc = SQLITE_ERROR;
	*bytes = 0;
	*cut = false;
	while (st != NULL && !*cut && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		json_t *item = row_fn(st);
		char *text = json_dumps(item, JSON_COMPACT);
		size_t n = (text ? strlen(text) : 0) + 1;
		free(text);
		if ((*cut = *bytes + n > max_bytes)) {
			json_decref(item);
		} else {
			*bytes += n;
			json_array_append_new(list, item);
		}
	}
	db_release(a->db, st);
	if (!*cut && rc != SQLITE_DONE) {
		json_decref(list);
		return NULL;
	}
	return list;
}

/*
 * Replies {key: [row_fn(row)...], truncated} from st (finalized here). If
 * the list is cut and cursor is not NULL (item fields, NULL-terminated),
 * the last item's cursor[0] goes in "next" and each further cursor[i] in
 * "next_<cursor[i]>": what the client sends as after, after_<...>.
 */
void acc_list_page(accounts_t *a, bus_req_t **req, sqlite3_stmt *st, const char *key,
		   acc_row_fn row_fn, const char *const *cursor)
{
	size_t bytes;
	bool cut;
	json_t *list = acc_rows_new(a, st, row_fn, ACC_LIST_BYTES, &bytes, &cut);
	json_t *last = list != NULL && json_array_size(list) > 0
		? json_array_get(list, json_array_size(list) - 1) : NULL;
	if (list == NULL) {
		acc_fail(a, req, "internal", "database error");
		return;
	}
	json_t *f = json_pack("{s:o, s:b}", key, list, "truncated", cut);
	for (size_t i = 0; cut && last != NULL && cursor != NULL && cursor[i] != NULL; i++) {
		char name[64];
		snprintf(name, sizeof name, i == 0 ? "next" : "next_%s", cursor[i]);
		json_object_set(f, name, json_object_get(last, cursor[i]));
	}
	acc_ok(a, req, &f);
}

void acc_list_reply(accounts_t *a, bus_req_t **req, sqlite3_stmt *st, const char *key,
		    acc_row_fn row_fn)
{
	acc_list_page(a, req, st, key, row_fn, NULL);
}

/* A text column as a new JSON string, or null. */
static json_t *acc_text_or_null(sqlite3_stmt *st, int col)
{
	const char *s = (const char *)sqlite3_column_text(st, col);
	return s ? json_string(s) : json_null();
}

static json_t *acc_domain_row(sqlite3_stmt *st)
{
	return json_pack("{s:s, s:I, s:I, s:o, s:o, s:I}",
			 "name", (const char *)sqlite3_column_text(st, 0),
			 "users", (json_int_t)sqlite3_column_int64(st, 1),
			 "aliases", (json_int_t)sqlite3_column_int64(st, 2),
			 "postmaster", acc_text_or_null(st, 3),
			 "catchall", acc_text_or_null(st, 5),
			 "created", (json_int_t)sqlite3_column_int64(st, 4));
}

static json_t *acc_user_row(sqlite3_stmt *st)
{
	return json_pack("{s:s, s:I, s:I, s:b, s:I}",
			 "address", (const char *)sqlite3_column_text(st, 0),
			 "quota_bytes", (json_int_t)sqlite3_column_int64(st, 1),
			 "used_bytes", (json_int_t)sqlite3_column_int64(st, 2),
			 "has_password", sqlite3_column_int(st, 3),
			 "created", (json_int_t)sqlite3_column_int64(st, 4));
}

static json_t *acc_alias_row(sqlite3_stmt *st)
{
	return json_pack("{s:s, s:s}", "address", (const char *)sqlite3_column_text(st, 0),
			 "target", (const char *)sqlite3_column_text(st, 1));
}

static void acc_domain_list(bus_req_t **req, void *arg)
{
	accounts_t *a = arg;
	const char *in = NULL;
	char after[ACC_ADDR_MAX];
	if (ACC_UNPACK(a, req, "{s?s}", "after", &in) < 0 ||
	    (in != NULL && acc_name(a, req, "after", in, false, after, NULL) < 0))
		return;
	sqlite3_stmt *st = acc_prep(a, "SELECT d.name, "
				    "(SELECT count(*) FROM users u WHERE u.domain_id = d.id), "
				    "(SELECT count(*) FROM aliases l WHERE l.domain_id = d.id), "
				    "d.postmaster, d.created, d.catchall FROM domains d "
				    "WHERE ?2 IS NULL OR d.name > ?2 ORDER BY d.name LIMIT ?1",
				    "is", (int64_t)ACC_LIST_MAX, in != NULL ? after : NULL);
	acc_list_page(a, req, st, "domains", acc_domain_row, (const char *[]){ "name", NULL });
}

/* ---- users ---------------------------------------------------------------------- */

static json_t *acc_user_add_change(accounts_t *a, void *ctx, struct acc_err *e)
{
	struct acc_job *j = ctx;
	char *at = strchr(j->address, '@');
	int64_t now = (int64_t)time(NULL);
	*at = '\0';
	int64_t dom = acc_domain_id(a, at + 1);
	int rc = SQLITE_ERROR;
	if (dom == 0)
		acc_set(e, "not_found", "we do not host %s", at + 1);
	else if (dom > 0)
		rc = acc_run(a, acc_prep(a, "INSERT INTO users (domain_id, localpart, password, "
					 "quota_bytes, created) VALUES (?1, ?2, ?3, ?4, ?5)", "issii",
					 dom, j->address, j->hash, (int64_t)j->quota, now));
	if (rc == SQLITE_CONSTRAINT_UNIQUE)
		acc_set(e, "exists", "user %s@%s exists", j->address, at + 1);
	/* Every user starts with INBOX and the special-use mailboxes. */
	if (rc == SQLITE_DONE && mailbox_defaults(a, sqlite3_last_insert_rowid(db_handle(a->db))) < 0)
		rc = SQLITE_ERROR;
	/* The first user of a domain becomes its postmaster. */
	if (rc == SQLITE_DONE)
		rc = acc_run(a, acc_prep(a, "UPDATE domains SET postmaster = ?1 WHERE id = ?2 "
					 "AND postmaster IS NULL", "si", j->address, dom));
	*at = '@';
	if (rc != SQLITE_DONE)
		return NULL;
	return json_pack("{s:{s:s, s:I, s:I}}", "user", "address", j->address,
			 "quota_bytes", j->quota, "created", (json_int_t)now);
}

/* kdfpool_hash_fn for user.add and user.passwd: write, then reply. */
static void acc_hashed(int result, const char *hash, void *arg, acc_change_fn change)
{
	struct acc_job *j = arg;
	if (result < 0) {
		acc_fail(j->a, &j->req, "internal", "password hashing failed");
	} else {
		j->hash = hash;
		acc_commit(j->a, &j->req, change, j);
	}
	free(j);
}

static void acc_user_add_hashed(int result, const char *hash, void *arg)
{
	acc_hashed(result, hash, arg, acc_user_add_change);
}

/* Parks *req in j and hashes password; replies busy if the pool is full. */
static void acc_hash_then(accounts_t *a, bus_req_t **req, struct acc_job *j, const char *pw,
			  size_t pwlen, kdfpool_hash_fn done)
{
	j->a = a;
	if (kdfpool_hash(a->kdf, pw, pwlen, password_default(), done, j) < 0) {
		free(j);
		acc_fail(a, req, "busy", "password hashing pool full, retry later");
		return;
	}
	j->req = *req;
	*req = NULL;  /* parked until the callback */
}

static int acc_quota_check(accounts_t *a, bus_req_t **req, json_int_t quota)
{
	if (quota >= 0 && quota <= ACC_QUOTA_MAX)
		return 0;
	acc_fail(a, req, "invalid", "quota_bytes must be 0..2^50");
	return -1;
}

static int acc_password_check(accounts_t *a, bus_req_t **req, size_t len)
{
	if (len >= PASSWORD_MIN_LEN && len <= PASSWORD_MAX_LEN)
		return 0;
	acc_fail(a, req, "invalid", "password must be 1..1024 bytes");
	return -1;
}

static void acc_user_add(bus_req_t **req, void *arg)
{
	accounts_t *a = arg;
	const char *in, *pw = NULL;
	size_t pwlen = 0;
	json_int_t quota = 0;
	struct acc_job j0 = { .a = a };
	if (ACC_UNPACK(a, req, "{s:s, s?s%, s?I}", "address", &in, "password", &pw, &pwlen,
		       "quota_bytes", &quota) < 0 ||
	    acc_name(a, req, "address", in, true, j0.address, NULL) < 0 ||
	    acc_quota_check(a, req, quota) < 0)
		return;
	j0.quota = quota;
	if (pw == NULL) {
		acc_commit(a, req, acc_user_add_change, &j0);
		return;
	}
	if (acc_password_check(a, req, pwlen) < 0 || acc_idem_early(a, req))
		return;
	struct acc_job *j = xmalloc(sizeof *j);
	*j = j0;
	acc_hash_then(a, req, j, pw, pwlen, acc_user_add_hashed);
}

static json_t *acc_user_del_change(accounts_t *a, void *ctx, struct acc_err *e)
{
	char *addr = ctx, *at = strchr(addr, '@');
	*at = '\0';
	int rc = acc_run(a, acc_prep(a, "DELETE FROM users WHERE localpart = ?1 AND domain_id = "
				     "(SELECT id FROM domains WHERE name = ?2)", "ss", addr, at + 1));
	*at = '@';
	if (rc != SQLITE_DONE)
		return NULL;
	if (!acc_changed(a, e, "no user %s", addr))
		return NULL;
	return json_pack("{s:b}", "deleted", 1);
}

static void acc_user_del(bus_req_t **req, void *arg)
{
	accounts_t *a = arg;
	const char *in;
	char addr[ACC_ADDR_MAX];
	if (ACC_UNPACK(a, req, "{s:s}", "address", &in) < 0 || acc_name(a, req, "address", in, true, addr, NULL) < 0)
		return;
	acc_commit(a, req, acc_user_del_change, addr);
}

/* The filter and cursor of a user or alias list request, checked;
 * the pointers are NULL where the request has no such field. */
struct acc_page {
	char buf[3][ACC_ADDR_MAX];
	const char *domain, *after_local, *after_domain, *after_target;
};

/*
 * Unpacks {domain?, after?} (and after_target? if targets) into p:
 * after is an address, split into its local part and domain so that the
 * list can go on from (domain, local part). 0, or -1 after replying.
 */
static int acc_page_args(accounts_t *a, bus_req_t **req, struct acc_page *p, bool targets)
{
	const char *dom = NULL, *after = NULL, *target = NULL;
	char *at = NULL;
	memset(p, 0, sizeof *p);
	if ((targets ? ACC_UNPACK(a, req, "{s?s, s?s, s?s}", "domain", &dom, "after", &after,
				  "after_target", &target)
		     : ACC_UNPACK(a, req, "{s?s, s?s}", "domain", &dom, "after", &after)) < 0 ||
	    (dom != NULL && acc_name(a, req, "domain", dom, false, p->buf[0], NULL) < 0) ||
	    (after != NULL && acc_name(a, req, "after", after, true, p->buf[1], &at) < 0) ||
	    (target != NULL && acc_name(a, req, "after_target", target, true, p->buf[2], NULL) < 0))
		return -1;
	if (target != NULL && after == NULL) {
		acc_fail(a, req, "invalid", "after_target needs after");
		return -1;
	}
	p->domain = dom != NULL ? p->buf[0] : NULL;
	if (at != NULL) {
		*at = '\0';
		p->after_local = p->buf[1];
		p->after_domain = at + 1;
	}
	p->after_target = target != NULL ? p->buf[2] : NULL;
	return 0;
}

static void acc_user_list(bus_req_t **req, void *arg)
{
	accounts_t *a = arg;
	struct acc_page p;
	if (acc_page_args(a, req, &p, false) < 0)
		return;
	sqlite3_stmt *st = acc_prep(a, "SELECT u.localpart || '@' || d.name, u.quota_bytes, u.used_bytes, "
				    "u.password IS NOT NULL, u.created FROM users u JOIN domains d "
				    "ON d.id = u.domain_id WHERE (?1 IS NULL OR d.name = ?1) AND "
				    "(?3 IS NULL OR (d.name, u.localpart) > (?3, ?4)) "
				    "ORDER BY d.name, u.localpart LIMIT ?2", "siss",
				    p.domain, (int64_t)ACC_LIST_MAX, p.after_domain, p.after_local);
	acc_list_page(a, req, st, "users", acc_user_row, (const char *[]){ "address", NULL });
}

static json_t *acc_user_passwd_change(accounts_t *a, void *ctx, struct acc_err *e)
{
	struct acc_job *j = ctx;
	char *at = strchr(j->address, '@');
	*at = '\0';
	int rc = acc_run(a, acc_prep(a, "UPDATE users SET password = ?1 WHERE localpart = ?2 AND "
				     "domain_id = (SELECT id FROM domains WHERE name = ?3)", "sss",
				     j->hash, j->address, at + 1));
	*at = '@';
	if (rc != SQLITE_DONE)
		return NULL;
	if (!acc_changed(a, e, "no user %s", j->address))
		return NULL;
	return json_pack("{s:b}", "changed", 1);
}

static void acc_user_passwd_hashed(int result, const char *hash, void *arg)
{
	acc_hashed(result, hash, arg, acc_user_passwd_change);
}

static void acc_user_passwd(bus_req_t **req, void *arg)
{
	accounts_t *a = arg;
	const char *in, *pw;
	size_t pwlen;
	struct acc_job *j = xcalloc(1, sizeof *j);
	if (ACC_UNPACK(a, req, "{s:s, s:s%}", "address", &in, "password", &pw, &pwlen) < 0 ||
	    acc_name(a, req, "address", in, true, j->address, NULL) < 0 ||
	    acc_password_check(a, req, pwlen) < 0 || acc_idem_early(a, req)) {
		free(j);
		return;
	}
	acc_hash_then(a, req, j, pw, pwlen, acc_user_passwd_hashed);
}

/* Sets the quota; the reply carries what the user stores already. */
static json_t *acc_user_quota_change(accounts_t *a, void *ctx, struct acc_err *e)
{
	struct acc_job *j = ctx;
	char *at = strchr(j->address, '@');
	*at = '\0';
	/* RETURNING: the change is made by the first step, which yields the row. */
	sqlite3_stmt *st = acc_prep(a, "UPDATE users SET quota_bytes = ?1 WHERE localpart = ?2 AND "
				    "domain_id = (SELECT id FROM domains WHERE name = ?3) "
				    "RETURNING used_bytes", "iss", (int64_t)j->quota, j->address, at + 1);
	int rc = st ? sqlite3_step(st) : SQLITE_ERROR;
	json_int_t used = rc == SQLITE_ROW ? (json_int_t)sqlite3_column_int64(st, 0) : 0;
	db_release(a->db, st);
	*at = '@';  /* only now: the statement read the local part in place */
	if (rc == SQLITE_DONE)
		acc_set(e, "not_found", "no user %s", j->address);
	if (rc != SQLITE_ROW)
		return NULL;
	return json_pack("{s:{s:s, s:I, s:I}}", "user", "address", j->address,
			 "quota_bytes", j->quota, "used_bytes", used);
}

static void acc_user_quota(bus_req_t **req, void *arg)
{
	accounts_t *a = arg;
	const char *in;
	struct acc_job j = { .a = a };
	if (ACC_UNPACK(a, req, "{s:s, s:I}", "address", &in, "quota_bytes", &j.quota) < 0 ||
	    acc_name(a, req, "address", in, true, j.address, NULL) < 0 ||
	    acc_quota_check(a, req, j.quota) < 0)
		return;
	acc_commit(a, req, acc_user_quota_change, &j);
}

/* The user's own quota and usage (IMAP GETQUOTA, GETQUOTAROOT): a read, so
 * no idempotency; with a mailbox, mailbox_lookup checks that it exists and
 * reads the same two numbers in the same statement. */
static void acc_user_usage(bus_req_t **req, void *arg)
{
	accounts_t *a = arg;
	const char *in, *mailbox = NULL;
	char addr[ACC_ADDR_MAX], *at;
	struct acc_err e = { "internal", "database error" };
	struct mbx_ref m = { 0 };
	if (ACC_UNPACK(a, req, "{s:s, s?:s}", "address", &in, "mailbox", &mailbox) < 0 ||
	    acc_name(a, req, "address", in, true, addr, &at) < 0)
		return;
	if (mailbox != NULL && mailbox_lookup(a, addr, mailbox, &m, &e) != 1) {
		acc_fail(a, req, e.code, e.msg);
		return;
	}
	if (mailbox == NULL) {
		*at = '\0';
		sqlite3_stmt *st = acc_prep(a, "SELECT u.quota_bytes, u.used_bytes FROM users u JOIN "
					    "domains d ON d.id = u.domain_id WHERE u.localpart = ?1 "
					    "AND d.name = ?2", "ss", addr, at + 1);
		int rc = st ? sqlite3_step(st) : SQLITE_ERROR;
		if (rc == SQLITE_ROW) {
			m.quota = sqlite3_column_int64(st, 0);
			m.used = sqlite3_column_int64(st, 1);
		}
		db_release(a->db, st);
		*at = '@';   /* only now: the statement read the local part in place */
		if (rc != SQLITE_ROW) {
			acc_fail(a, req, rc == SQLITE_DONE ? "not_found" : "internal",
				 rc == SQLITE_DONE ? "no such user" : "database error");
			return;
		}
	}
	json_t *f = json_pack("{s:s, s:I, s:I}", "address", addr, "quota_bytes",
			      (json_int_t)m.quota, "used_bytes", (json_int_t)m.used);
	acc_ok(a, req, &f);
}

/* ---- user.verify and its cache ----------------------------------------------- */

/* The cache key: SHA-256(address NUL password NUL stored). */
static void acc_cache_key(const char *addr, const char *pw, size_t pwlen, const char *stored,
			  unsigned char key[32])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	if (md == NULL)
		fatal("crypto", "why=\"out of memory\"");
	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	EVP_DigestUpdate(md, addr, strlen(addr) + 1);
	EVP_DigestUpdate(md, pw, pwlen);
	EVP_DigestUpdate(md, "", 1);
	EVP_DigestUpdate(md, stored, strlen(stored));
	EVP_DigestFinal_ex(md, key, NULL);
	EVP_MD_CTX_free(md);
}

/*
 * The cache maps a key to its expiry (unix seconds) stored in the value
 * pointer itself, so entries own no memory. When it holds ACC_CACHE_MAX
 * entries it is emptied: at worst a few logins pay the KDF again.
 */
static bool acc_cache_hit(accounts_t *a, const unsigned char key[32])
{
	intptr_t exp = (intptr_t)hmap_get(a->cache, key, 32);
	if (exp == 0)
		return false;
	if (exp > (intptr_t)time(NULL))
		return true;
	hmap_del(a->cache, key, 32);  /* expired */
	return false;
}

static void acc_cache_put(accounts_t *a, const unsigned char key[32])
{
	if (hmap_count(a->cache) >= ACC_CACHE_MAX) {
		hmap_free(&a->cache);
		a->cache = hmap_new();
	}
	hmap_put(a->cache, key, 32, (void *)(intptr_t)(time(NULL) + ACC_CACHE_TTL_S));
}

/* kdfpool_verify_fn: a match is cached; a malformed hash is an error. */
static void acc_verified(int result, void *arg)
{
	struct acc_job *j = arg;
	if (result < 0) {
		log_warn("verify", "address=%s why=\"stored hash unusable or pool stopped\"", j->address);
		acc_fail(j->a, &j->req, "internal", "password check failed");
	} else {
		if (result == 1)
			acc_cache_put(j->a, j->key);
		json_t *f = json_pack("{s:b}", "valid", result == 1);
		acc_ok(j->a, &j->req, &f);
	}
	OPENSSL_cleanse(j->key, sizeof j->key);
	free(j);
}

/* The stored hash of addr (lower-case), malloc'd; NULL if no such user or
 * no password (*err set on a database error). */
static char *acc_stored_hash(accounts_t *a, char *addr, bool *err)
{
	char *at = strchr(addr, '@'), *hash = NULL;
	*at = '\0';
	sqlite3_stmt *st = acc_prep(a, "SELECT u.password FROM users u JOIN domains d ON d.id = "
				    "u.domain_id WHERE d.name = ?1 AND u.localpart = ?2", "ss", at + 1, addr);
	int rc = st ? sqlite3_step(st) : SQLITE_ERROR;
	*err = rc != SQLITE_ROW && rc != SQLITE_DONE;
	if (rc == SQLITE_ROW && sqlite3_column_text(st, 0) != NULL)
		hash = xstrdup((const char *)sqlite3_column_text(st, 0));
	db_release(a->db, st);
	*at = '@';
	return hash;
}

static void acc_user_verify(bus_req_t **req, void *arg)
{
	accounts_t *a = arg;
	const char *in, *pw;
	size_t pwlen;
	bool err;
	char addr[ACC_ADDR_MAX];
	if (ACC_UNPACK(a, req, "{s:s, s:s%}", "address", &in, "password", &pw, &pwlen) < 0 ||
	    acc_name(a, req, "address", in, true, addr, NULL) < 0 || acc_password_check(a, req, pwlen) < 0)
		return;
	char *stored = acc_stored_hash(a, addr, &err);
	if (stored == NULL) {
		json_t *f = json_pack("{s:b}", "valid", 0);  /* unknown or no password: same answer */
		if (err)
			acc_fail(a, req, "internal", "database error");
		else
			acc_ok(a, req, &f);
		json_decref(f);
		return;
	}
	struct acc_job *j = xcalloc(1, sizeof *j);
	j->a = a;
	memcpy(j->address, addr, sizeof addr);
	acc_cache_key(addr, pw, pwlen, stored, j->key);
	if (acc_cache_hit(a, j->key)) {
		a->cache_hits++;
		json_t *f = json_pack("{s:b}", "valid", 1);
		acc_ok(a, req, &f);
		free(j);
	} else if (kdfpool_verify(a->kdf, pw, pwlen, stored, acc_verified, j) < 0) {
		acc_fail(a, req, "busy", "password hashing pool full, retry later");
		free(j);
	} else {
		j->req = *req;
		*req = NULL;  /* parked until acc_verified */
	}
	free(stored);
}

/* ---- aliases -------------------------------------------------------------------- */

struct acc_alias {
	char address[ACC_ADDR_MAX];
	char target[ACC_ADDR_MAX];
};

/* 1 if domain dom has a user local, 0 if not, -1 on error. */
int acc_user_exists(accounts_t *a, int64_t dom, const char *local)
{
	sqlite3_stmt *st = acc_prep(a, "SELECT 1 FROM users WHERE domain_id = ?1 AND localpart = ?2",
				    "is", dom, local);
	int rc = st ? sqlite3_step(st) : SQLITE_ERROR;
	db_release(a->db, st);
	return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

static json_t *acc_alias_add_change(accounts_t *a, void *ctx, struct acc_err *e)
{
	struct acc_alias *al = ctx;
	char *at = strchr(al->address, '@');
	int64_t dom = acc_domain_id(a, at + 1);
	int rc = SQLITE_ERROR, user = -1;
	*at = '\0';
	if (dom == 0)
		acc_set(e, "not_found", "we do not host %s", at + 1);
	else if (dom > 0 && (user = acc_user_exists(a, dom, al->address)) == 1)
		acc_set(e, "exists", "%s@%s is a user", al->address, at + 1);
	else if (user == 0)
		rc = acc_run(a, acc_prep(a, "INSERT INTO aliases (domain_id, localpart, target) "
					 "VALUES (?1, ?2, ?3)", "iss", dom, al->address, al->target));
	if (rc == SQLITE_CONSTRAINT_UNIQUE)
		acc_set(e, "exists", "alias %s@%s -> %s exists", al->address, at + 1, al->target);
	*at = '@';
	if (rc != SQLITE_DONE)
		return NULL;
	return json_pack("{s:{s:s, s:s}}", "alias", "address", al->address, "target", al->target);
}

/* Unpacks and checks {address, target} into al; 0 or -1 (req consumed). */
static int acc_alias_args(accounts_t *a, bus_req_t **req, struct acc_alias *al)
{
	const char *addr, *target;
	if (ACC_UNPACK(a, req, "{s:s, s:s}", "address", &addr, "target", &target) < 0)
		return -1;
	if (acc_name(a, req, "address", addr, true, al->address, NULL) < 0 ||
	    acc_name(a, req, "target", target, true, al->target, NULL) < 0)
		return -1;
	return 0;
}

static void acc_alias_add(bus_req_t **req, void *arg)
{
	struct acc_alias al;
	if (acc_alias_args(arg, req, &al) == 0)
		acc_commit(arg, req, acc_alias_add_change, &al);
}

static json_t *acc_alias_del_change(accounts_t *a, void *ctx, struct acc_err *e)
{
	struct acc_alias *al = ctx;
	char *at = strchr(al->address, '@');
	*at = '\0';
	int rc = acc_run(a, acc_prep(a, "DELETE FROM aliases WHERE localpart = ?1 AND target = ?2 AND "
				     "domain_id = (SELECT id FROM domains WHERE name = ?3)", "sss",
				     al->address, al->target, at + 1));
	*at = '@';
	if (rc != SQLITE_DONE)
		return NULL;
	if (!acc_changed(a, e, "no alias %s -> %s", al->address, al->target))
		return NULL;
	return json_pack("{s:b}", "deleted", 1);
}

static void acc_alias_del(bus_req_t **req, void *arg)
{
	struct acc_alias al;
	if (acc_alias_args(arg, req, &al) == 0)
		acc_commit(arg, req, acc_alias_del_change, &al);
}

static void acc_alias_list(bus_req_t **req, void *arg)
{
	accounts_t *a = arg;
	struct acc_page p;
	if (acc_page_args(a, req, &p, true) < 0)
		return;
	/* Without after_target every target of after is behind us. */
	sqlite3_stmt *st = acc_prep(a, "SELECT l.localpart || '@' || d.name, l.target FROM aliases l "
				    "JOIN domains d ON d.id = l.domain_id WHERE (?1 IS NULL OR d.name = ?1) "
				    "AND (?3 IS NULL OR (?5 IS NULL AND (d.name, l.localpart) > (?3, ?4)) "
				    "OR (d.name, l.localpart, l.target) > (?3, ?4, ?5)) "
				    "ORDER BY d.name, l.localpart, l.target LIMIT ?2", "sisss",
				    p.domain, (int64_t)ACC_LIST_MAX, p.after_domain, p.after_local,
				    p.after_target);
	acc_list_page(a, req, st, "aliases", acc_alias_row,
		      (const char *[]){ "address", "target", NULL });
}

/* ---- the service -------------------------------------------------------------- */

const bus_handler_t accounts_handlers[] = {
	{ "storaged.domain.add", acc_domain_add },
	{ "storaged.domain.del", acc_domain_del },
	{ "storaged.domain.list", acc_domain_list },
	{ "storaged.user.add", acc_user_add },
	{ "storaged.user.del", acc_user_del },
	{ "storaged.user.list", acc_user_list },
	{ "storaged.user.passwd", acc_user_passwd },
	{ "storaged.user.verify", acc_user_verify },
	{ "storaged.user.quota", acc_user_quota },
	{ "storaged.user.usage", acc_user_usage },
	{ "storaged.domain.catchall", rcpt_catchall },
	{ "storaged.rcpt.resolve", rcpt_resolve },
	{ "storaged.alias.add", acc_alias_add },
	{ "storaged.alias.del", acc_alias_del },
	{ "storaged.alias.list", acc_alias_list },
	{ "storaged.mailbox.create", mailbox_create },
	{ "storaged.mailbox.delete", mailbox_delete },
	{ "storaged.mailbox.rename", mailbox_rename },
	{ "storaged.mailbox.subscribe", mailbox_subscribe },
	{ "storaged.mailbox.list", mailbox_list },
	{ "storaged.mailbox.status", mailbox_status },
	{ "storaged.message.store", message_store },
	{ "storaged.message.fetch", message_fetch },
	{ "storaged.message.list", message_list },
	{ "storaged.backup.start", backup_start },
	{ "storaged.backup.status", backup_status },
	{ "storaged.backup.read", backup_read },
	{ "storaged.backup.finish", backup_finish },
	{ "storaged.queue.take", queue_take },
	{ "storaged.queue.update", queue_update },
	{ "storaged.queue.list", queue_list },
	{ "storaged.queue.show", queue_show },
	{ "storaged.queue.retry", queue_retry },
	{ "storaged.queue.delete", queue_delete },
	{ "storaged.message.flags", msgops_flags },
	{ "storaged.message.expunge", msgops_expunge },
	{ "storaged.message.copy", msgops_copy },
	{ "storaged.message.search", msgops_search },
	{ "storaged.message.vanished", msgops_vanished },
	{ NULL, NULL },
};

accounts_t *accounts_new(loop_t *loop, db_t *db, kdfpool_t *kdf, bus_pub_t *pub)
{
	accounts_t *a = xcalloc(1, sizeof *a);
	a->loop = loop;
	a->db = db;
	a->kdf = kdf;
	a->pub = pub;
	a->cache = hmap_new();
	return a;
}

void accounts_free(accounts_t **a)
{
	if (a == NULL || *a == NULL)
		return;
	batch_free(*a);
	message_free(*a);
	hmap_free(&(*a)->cache);
	free(*a);
	*a = NULL;
}

void accounts_set_control(accounts_t *a, bus_control_t *ctl)
{
	a->ctl = ctl;
}

static json_int_t acc_count(accounts_t *a, const char *sql)
{
	return acc_int(a, acc_prep(a, sql, ""));
}

void accounts_stats(json_t *stats, void *arg)
{
	accounts_t *a = arg;
	json_object_set_new(stats, "domains", json_integer(acc_count(a, "SELECT count(*) FROM domains")));
	json_object_set_new(stats, "users", json_integer(acc_count(a, "SELECT count(*) FROM users")));
	json_object_set_new(stats, "aliases", json_integer(acc_count(a, "SELECT count(*) FROM aliases")));
	json_object_set_new(stats, "outcomes", json_pack("{s:I, s:I, s:I}", "ok", (json_int_t)a->ok,
							 "error", (json_int_t)a->error, "invalid", (json_int_t)a->invalid));
	json_object_set_new(stats, "verify_cache", json_pack("{s:I, s:I}", "entries",
		(json_int_t)hmap_count(a->cache), "hits", (json_int_t)a->cache_hits));
	json_object_set_new(stats, "commits", json_pack("{s:I, s:I}", "transactions",
		(json_int_t)a->commits, "requests", (json_int_t)a->batched));
	if (a->ckpt != NULL) {
		uint64_t runs, forced;
		ckpt_stats(a->ckpt, &runs, &forced);
		json_object_set_new(stats, "checkpoints", json_pack("{s:I, s:I}", "thread",
			(json_int_t)runs, "loop", (json_int_t)forced));
	}
	message_stats(stats, a);
}
