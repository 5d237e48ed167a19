/*
 * msgops.c — IMAP semantics on stored messages (RFC 3501 STORE, EXPUNGE,
 * COPY, SEARCH; RFC 7162 CONDSTORE; RFC 6851 MOVE):
 *
 *   storaged.message.flags    add/remove/set flags and keywords on a UID
 *                             set, with UNCHANGEDSINCE
 *   storaged.message.expunge  delete the \Deleted messages (of a UID set)
 *   storaged.message.copy     copy or move a UID set to another mailbox of
 *                             the same user, sharing the blobs
 *   storaged.message.search   the UIDs matching a criteria tree (search.c
 *                             compiles it to SQL)
 *   storaged.message.vanished the UIDs expunged after a MODSEQ (RFC 7162
 *                             QRESYNC's VANISHED), from the expunged table
 *
 * Every request names {address, mailbox} and works on UIDs (lib/seqset,
 * "*" = uidnext - 1; ranges are clamped to the UIDs in use, so a set can
 * never reach the messages a copy into the same mailbox adds). A change
 * goes through acc_commit (batch.c): one savepoint with the idempotency
 * row, the reply after COMMIT. A request that changes something bumps the
 * mailbox's highestmodseq once and gives that MODSEQ to every message it
 * changed (RFC 7162 3.1); one that changes nothing leaves both alone. It
 * then queues storaged.mailbox.changed events (acc_event, published after
 * COMMIT), as many as the schema's 16384-byte uids field needs.
 *
 * Blobs are never copied: a copy is a new messages row pointing at the
 * same blob and prefix; the triggers of migration 3 count references and
 * quota, and delete a blob (and its chunks) with its last reference.
 *
 * Ownership: handlers consume *req; uid lists (uidlist_t) are freed here.
 */
#include "storaged.h"

#include "log.h"
#include "seqset.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OPS_KW_MAX (MSG_FLAGS_MAX * 65)     /* 64 keywords of 64 bytes, spaces */
#define OPS_CHANGED_BYTES (48 * 1024)       /* "changed" items in a flags reply */
#define OPS_MODIFIED_MAX (12 * 1024)        /* "modified" text (with changed: < 64 KiB) */
#define OPS_SET_MAX (48 * 1024)             /* a UID set in a reply */
#define OPS_EVENT_SET_MAX 16384             /* uids of one storaged.mailbox.changed */
#define OPS_UID_MAX 4294967295LL            /* IMAP UIDs are 32-bit */

enum ops_flag_op { OPS_ADD, OPS_REMOVE, OPS_SET };

/* One request's checked fields: the change functions' ctx. */
struct ops_req {
	char address[ACC_ADDR_MAX];
	const char *mailbox, *uids, *to;   /* borrowed from the request */
	enum ops_flag_op op;
	int bits;
	char kw[OPS_KW_MAX];
	json_int_t unchangedsince;         /* -1: none */
	int move;
};

/* ---- shared steps --------------------------------------------------------------- */

/*
 * Looks up the mailbox and parses the request's UID set (NULL: "1:*")
 * against it, ranges clamped to 1..uidnext-1. The set (malloc'd), or NULL
 * with e set.
 */
static seqset_t *ops_open(accounts_t *a, const char *addr, const char *mailbox, const char *uids,
			  struct mbx_ref *m, struct acc_err *e)
{
	const char *why;
	if (mailbox_lookup(a, addr, mailbox, m, e) != 1)
		return NULL;
	seqset_t *set = xmalloc(sizeof *set);
	uint32_t star = (uint32_t)(m->uidnext - 1);
	if (seqset_parse(set, uids ? uids : "1:*", star, &why) < 0) {
		acc_set(e, "invalid", "uids: %s", why);
		free(set);
		return NULL;
	}
	size_t o = 0;
	for (size_t i = 0; i < set->n; i++) {
		if (set->r[i].lo > star)
			continue;   /* no such UID yet */
		set->r[o] = set->r[i];
		if (set->r[o].hi > star)
			set->r[o].hi = star;
		o++;
	}
	set->n = o;
	return set;
}

/* Prepares a statement of the range loops: ?1 mailbox, ?2..?3 the range. */
static sqlite3_stmt *ops_range_stmt(accounts_t *a, const char *sql, int64_t mailbox_id,
				    const struct seq_range *r)
{
	return acc_prep(a, sql, "iii", mailbox_id, (int64_t)r->lo, (int64_t)r->hi);
}

/* Queues storaged.mailbox.changed events for the UIDs of l, each with at
 * most OPS_EVENT_SET_MAX bytes of uids. */
static void ops_events(accounts_t *a, const char *addr, const struct mbx_ref *m, const char *kind,
		       const uidlist_t *l, int64_t modseq)
{
	char *text = xmalloc(OPS_EVENT_SET_MAX + 1);
	size_t pos = 0;
	while (pos < l->n) {
		uidlist_format(l, &pos, text, OPS_EVENT_SET_MAX + 1);
		json_t *ev = json_pack("{s:s, s:s, s:s, s:I, s:s, s:s, s:I}",
			"type", "storaged.mailbox.changed", "address", addr, "mailbox", m->name,
			"uidvalidity", (json_int_t)m->uidvalidity, "kind", kind, "uids", text,
			"highestmodseq", (json_int_t)modseq);
		acc_event(a, &ev);
	}
	free(text);
}

/* The text of l cut to cap bytes (whole ranges); *cut set if it was. */
static json_t *ops_set_text(const uidlist_t *l, size_t cap, bool *cut, uint64_t *uids)
{
	char *text = xmalloc(cap + 1);
	size_t pos = 0;
	uint64_t n = uidlist_format(l, &pos, text, cap + 1);
	if (pos < l->n)
		*cut = true;
	if (uids != NULL)
		*uids = n;
	json_t *s = json_string(text);
	free(text);
	return s;
}

/* Sets the mailbox's highestmodseq (and uidnext if > 0): SQLITE_DONE or the error. */
static int ops_mailbox_update(accounts_t *a, int64_t mailbox_id, int64_t modseq, int64_t uidnext)
{
	return acc_run(a, acc_prep(a, "UPDATE mailboxes SET highestmodseq = ?1, "
				   "uidnext = max(uidnext, ?2) WHERE id = ?3", "iii", modseq,
				   uidnext, mailbox_id));
}

/*
 * Expunges the messages of set in m (only the \Deleted ones if
 * only_deleted), recording each in expunged with modseq: SQLITE_DONE or
 * the error. The triggers give back quota and drop unused blobs.
 */
static int ops_remove(accounts_t *a, int64_t mailbox_id, const seqset_t *set, int64_t modseq,
		      bool only_deleted)
{
	int rc = SQLITE_DONE;
	for (size_t i = 0; i < set->n && rc == SQLITE_DONE; i++) {
		sqlite3_stmt *st = ops_range_stmt(a, "INSERT INTO expunged (mailbox_id, uid, modseq) "
						  "SELECT mailbox_id, uid, ?4 FROM messages WHERE "
						  "mailbox_id = ?1 AND uid BETWEEN ?2 AND ?3 AND "
						  "(?5 = 0 OR flags & 8 != 0)", mailbox_id, &set->r[i]);
		if (st != NULL) {
			sqlite3_bind_int64(st, 4, modseq);
			sqlite3_bind_int(st, 5, only_deleted);
		}
		rc = acc_run(a, st);
		if (rc != SQLITE_DONE)
			break;
		st = ops_range_stmt(a, "DELETE FROM messages WHERE mailbox_id = ?1 AND uid BETWEEN "
				    "?2 AND ?3 AND (?4 = 0 OR flags & 8 != 0)", mailbox_id, &set->r[i]);
		if (st != NULL)
			sqlite3_bind_int(st, 4, only_deleted);
		rc = acc_run(a, st);
	}
	return rc;
}

/* ---- storaged.message.flags -------------------------------------------------------- */

/* Compares two keyword tokens as strcmp compares the strings. */
static int ops_tokcmp(const char *x, size_t xl, const char *y, size_t yl)
{
	int c = memcmp(x, y, xl < yl ? xl : yl);
	return c != 0 ? c : (xl > yl) - (xl < yl);
}

/* The next token of a space-separated list at *p (length in *len); false at the end. */
static bool ops_tok(const char **p, const char **tok, size_t *len)
{
	while (**p == ' ')
		(*p)++;
	if (**p == '\0')
		return false;
	*tok = *p;
	*len = strcspn(*p, " ");
	*p += *len;
	return true;
}

/*
 * out = cur ∪ kw (add) or cur \ kw (remove), both sorted lists as
 * msg_flags_parse makes them. The number of keywords, or -1 if more than
 * max.
 */
static int ops_kw_merge(const char *cur, const char *kw, bool add, int max, char *out)
{
	const char *p = cur, *q = kw, *a = NULL, *b = NULL;
	size_t al = 0, bl = 0, o = 0;
	int n = 0;
	bool ha = ops_tok(&p, &a, &al), hb = ops_tok(&q, &b, &bl);
	while (ha || hb) {
		int c = !ha ? 1 : !hb ? -1 : ops_tokcmp(a, al, b, bl);
		const char *t = c <= 0 ? a : b;
		size_t tl = c <= 0 ? al : bl;
		bool keep = c < 0 || (add && c >= 0);
		if (keep) {
			if (++n > max)
				return -1;
			if (o > 0)
				out[o++] = ' ';
			memcpy(out + o, t, tl);
			o += tl;
		}
		if (c <= 0)
			ha = ops_tok(&p, &a, &al);
		if (c >= 0)
			hb = ops_tok(&q, &b, &bl);
	}
	out[o] = '\0';
	return n;
}

/* The flags a message gets: 1 if they differ from what it has, 0 if not,
 * -1 with e set (more than MSG_FLAGS_MAX flags and keywords, which is what
 * a store may set). */
static int ops_new_flags(const struct ops_req *r, int bits, const char *kw, int *nbits, char *nkw,
			 int64_t uid, struct acc_err *e)
{
	switch (r->op) {
	case OPS_SET:
		*nbits = r->bits;
		memcpy(nkw, r->kw, strlen(r->kw) + 1);
		break;
	case OPS_ADD:
	case OPS_REMOVE:
		*nbits = r->op == OPS_ADD ? bits | r->bits : bits & ~r->bits;
		if (ops_kw_merge(kw, r->kw, r->op == OPS_ADD,
				 MSG_FLAGS_MAX - __builtin_popcount((unsigned)*nbits), nkw) < 0) {
			acc_set(e, "limit", "message UID %lld would have more than %d flags",
				(long long)uid, MSG_FLAGS_MAX);
			return -1;
		}
		break;
	}
	return *nbits != bits || strcmp(nkw, kw) != 0;
}

/* What a flags request has done so far. */
struct ops_flags_run {
	uidlist_t changed, modified;
	json_t *items;
	size_t bytes;
	bool cut;
	int64_t modseq;       /* 0 until the first change */
};

/* Records one changed message in the reply (until it is full). */
static void ops_flags_item(struct ops_flags_run *f, int64_t uid, int bits, const char *kw)
{
	uidlist_add(&f->changed, (uint32_t)uid);
	if (f->cut)
		return;
	json_t *item = json_pack("{s:I, s:o, s:I}", "uid", (json_int_t)uid, "flags",
				 msg_flags_json(bits, kw), "modseq", (json_int_t)f->modseq);
	char *text = json_dumps(item, JSON_COMPACT);
	f->bytes += (text ? strlen(text) : 0) + 1;
	free(text);
	if ((f->cut = f->bytes > OPS_CHANGED_BYTES))
		json_decref(item);
	else
		json_array_append_new(f->items, item);
}

/* Applies the request to the messages of one range: SQLITE_DONE, or the error
 * (SQLITE_CONSTRAINT with e set for a limit). */
static int ops_flags_range(accounts_t *a, const struct ops_req *r, const struct mbx_ref *m,
			   const struct seq_range *range, sqlite3_stmt *upd, struct ops_flags_run *f,
			   struct acc_err *e)
{
	sqlite3_stmt *st = ops_range_stmt(a, "SELECT id, uid, flags, keywords, modseq FROM messages "
					  "WHERE mailbox_id = ?1 AND uid BETWEEN ?2 AND ?3 ORDER BY uid",
					  m->id, range);
	int rc = st ? SQLITE_ROW : SQLITE_ERROR, nbits = 0;
	char nkw[OPS_KW_MAX];
	while (rc == SQLITE_ROW && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		int64_t uid = sqlite3_column_int64(st, 1);
		const char *kw = (const char *)sqlite3_column_text(st, 3);
		if (r->unchangedsince >= 0 && sqlite3_column_int64(st, 4) > r->unchangedsince) {
			uidlist_add(&f->modified, (uint32_t)uid);   /* RFC 7162 3.1.3 */
			continue;
		}
		int differ = ops_new_flags(r, sqlite3_column_int(st, 2), kw ? kw : "", &nbits, nkw, uid, e);
		if (differ < 0) {
			rc = SQLITE_CONSTRAINT;
			break;
		}
		if (differ == 0)
			continue;   /* no change, no new MODSEQ */
		if (f->modseq == 0)
			f->modseq = m->highestmodseq + 1;
		sqlite3_reset(upd);
		sqlite3_bind_int(upd, 1, nbits);
		sqlite3_bind_text(upd, 2, nkw, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(upd, 3, f->modseq);
		sqlite3_bind_int64(upd, 4, sqlite3_column_int64(st, 0));
		if (sqlite3_step(upd) != SQLITE_DONE) {
			rc = SQLITE_ERROR;
			break;
		}
		ops_flags_item(f, uid, nbits, nkw);
	}
	db_release(a->db, st);
	return rc == SQLITE_ROW ? SQLITE_DONE : rc;
}

static json_t *ops_flags_change(accounts_t *a, void *ctx, struct acc_err *e)
{
	struct ops_req *r = ctx;
	struct mbx_ref m;
	seqset_t *set = ops_open(a, r->address, r->mailbox, r->uids, &m, e);
	if (set == NULL)
		return NULL;
	struct ops_flags_run f = { .items = json_array() };
	sqlite3_stmt *upd = acc_prep(a, "UPDATE messages SET flags = ?1, keywords = ?2, modseq = ?3 "
				     "WHERE id = ?4", "");
	int rc = upd ? SQLITE_DONE : SQLITE_ERROR;
	for (size_t i = 0; i < set->n && rc == SQLITE_DONE; i++)
		rc = ops_flags_range(a, r, &m, &set->r[i], upd, &f, e);
	db_release(a->db, upd);
	if (rc == SQLITE_DONE && f.modseq > 0)
		rc = ops_mailbox_update(a, m.id, f.modseq, 0);
	json_t *result = NULL;
	if (rc == SQLITE_DONE) {
		if (f.modseq > 0)
			ops_events(a, r->address, &m, "flags", &f.changed, f.modseq);
		json_t *modified = ops_set_text(&f.modified, OPS_MODIFIED_MAX, &f.cut, NULL);
		result = json_pack("{s:I, s:O, s:o, s:b}", "highestmodseq",
				   (json_int_t)(f.modseq > 0 ? f.modseq : m.highestmodseq),
				   "changed", f.items, "modified", modified, "truncated", f.cut);
	}
	json_decref(f.items);
	uidlist_free(&f.changed);
	uidlist_free(&f.modified);
	free(set);
	return result;
}

void msgops_flags(bus_req_t **req, void *arg)
{
	accounts_t *a = arg;
	struct ops_req r = { .unchangedsince = -1 };
	const char *addr, *op;
	json_t *flags;
	struct acc_err e = { "invalid", "" };
	if (ACC_UNPACK(a, req, "{s:s, s:s, s:s, s:s, s:o, s?:I}", "address", &addr, "mailbox",
		       &r.mailbox, "uids", &r.uids, "op", &op, "flags", &flags, "unchangedsince",
		       &r.unchangedsince) < 0 ||
	    acc_name(a, req, "address", addr, true, r.address, NULL) < 0)
		return;
	if (strcmp(op, "add") == 0)
		r.op = OPS_ADD;
	else if (strcmp(op, "remove") == 0)
		r.op = OPS_REMOVE;
	else if (strcmp(op, "set") == 0)
		r.op = OPS_SET;
	else {
		acc_fail(a, req, "invalid", "op: add, remove or set");
		return;
	}
	if (json_object_get(bus_req_env(*req), "unchangedsince") != NULL && r.unchangedsince < 0) {
		acc_fail(a, req, "invalid", "unchangedsince: a MODSEQ, 0 or more");
		return;
	}
	if (msg_flags_parse(flags, &r.bits, r.kw, sizeof r.kw, &e) < 0) {
		acc_fail(a, req, e.code, e.msg);
		return;
	}
	acc_commit(a, req, ops_flags_change, &r);
}

/* ---- storaged.message.expunge ------------------------------------------------------- */

/* The UIDs of set in m (the \Deleted ones only if only_deleted) into l,
 * and their total size into *bytes (if not NULL): SQLITE_DONE or the error. */
static int ops_collect(accounts_t *a, int64_t mailbox_id, const seqset_t *set, bool only_deleted,
		       uidlist_t *l, int64_t *bytes)
{
	int rc = SQLITE_DONE;
	for (size_t i = 0; i < set->n && rc == SQLITE_DONE; i++) {
		sqlite3_stmt *st = ops_range_stmt(a, "SELECT uid, size FROM messages WHERE mailbox_id "
						  "= ?1 AND uid BETWEEN ?2 AND ?3 AND (?4 = 0 OR "
						  "flags & 8 != 0) ORDER BY uid", mailbox_id, &set->r[i]);
		if (st == NULL)
			return SQLITE_ERROR;
		sqlite3_bind_int(st, 4, only_deleted);
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			uidlist_add(l, (uint32_t)sqlite3_column_int64(st, 0));
			if (bytes != NULL)
				*bytes += sqlite3_column_int64(st, 1);
		}
		db_release(a->db, st);
	}
	return rc;
}

static json_t *ops_expunge_change(accounts_t *a, void *ctx, struct acc_err *e)
{
	struct ops_req *r = ctx;
	struct mbx_ref m;
	uidlist_t gone = { 0 };
	seqset_t *set = ops_open(a, r->address, r->mailbox, r->uids, &m, e);
	if (set == NULL)
		return NULL;
	int64_t modseq = m.highestmodseq;
	int rc = ops_collect(a, m.id, set, true, &gone, NULL);
	if (rc == SQLITE_DONE && gone.count > 0) {
		modseq++;
		rc = ops_remove(a, m.id, set, modseq, true);
		if (rc == SQLITE_DONE)
			rc = ops_mailbox_update(a, m.id, modseq, 0);
	}
	json_t *result = NULL;
	if (rc == SQLITE_DONE) {
		bool cut = false;
		if (gone.count > 0)
			ops_events(a, r->address, &m, "expunge", &gone, modseq);
		json_t *text = ops_set_text(&gone, OPS_SET_MAX, &cut, NULL);
		result = json_pack("{s:o, s:I, s:b}", "expunged", text, "highestmodseq",
				   (json_int_t)modseq, "truncated", cut);
	}
	uidlist_free(&gone);
	free(set);
	return result;
}

void msgops_expunge(bus_req_t **req, void *arg)
{
	accounts_t *a = arg;
	struct ops_req r = { .uids = NULL };
	const char *addr;
	if (ACC_UNPACK(a, req, "{s:s, s:s, s?:s}", "address", &addr, "mailbox", &r.mailbox, "uids",
		       &r.uids) < 0 ||
	    acc_name(a, req, "address", addr, true, r.address, NULL) < 0)
		return;
	acc_commit(a, req, ops_expunge_change, &r);
}

/* ---- storaged.message.copy ------------------------------------------------------------ */

/* Inserts the messages of set in m into t from UID *uidnext on, in UID
 * order, with MODSEQ modseq: SQLITE_DONE or the error; *uidnext advances. */
static int ops_insert_copies(accounts_t *a, const struct mbx_ref *m, const struct mbx_ref *t,
			     const seqset_t *set, int64_t modseq, int64_t *uidnext)
{
	int rc = SQLITE_DONE;
	for (size_t i = 0; i < set->n && rc == SQLITE_DONE; i++) {
		sqlite3_stmt *st = ops_range_stmt(a, "INSERT INTO messages (mailbox_id, user_id, uid, "
			"blob_id, prefix, size, internaldate, flags, keywords, modseq) "
			"SELECT ?4, ?5, ?6 + row_number() OVER (ORDER BY uid) - 1, blob_id, prefix, "
			"size, internaldate, flags, keywords, ?7 FROM messages "
			"WHERE mailbox_id = ?1 AND uid BETWEEN ?2 AND ?3", m->id, &set->r[i]);
		if (st != NULL) {
			sqlite3_bind_int64(st, 4, t->id);
			sqlite3_bind_int64(st, 5, t->user_id);
			sqlite3_bind_int64(st, 6, *uidnext);
			sqlite3_bind_int64(st, 7, modseq);
		}
		rc = acc_run(a, st);
		*uidnext += sqlite3_changes(db_handle(a->db));
	}
	return rc;
}

/* The copy's reply: src cut to OPS_SET_MAX, dst the matching new UIDs. */
static json_t *ops_copy_result(const struct mbx_ref *t, const uidlist_t *src, int64_t first,
			       int64_t tmodseq, int64_t smodseq)
{
	bool cut = false;
	uint64_t n = 0;
	char dst[48] = "";
	json_t *s = ops_set_text(src, OPS_SET_MAX, &cut, &n);
	if (n == 1)
		snprintf(dst, sizeof dst, "%lld", (long long)first);
	else if (n > 1)
		snprintf(dst, sizeof dst, "%lld:%lld", (long long)first, (long long)(first + (int64_t)n - 1));
	json_t *result = json_pack("{s:I, s:o, s:s, s:I, s:b}", "uidvalidity",
				   (json_int_t)t->uidvalidity, "src", s, "dst", dst,
				   "highestmodseq", (json_int_t)tmodseq, "truncated", cut);
	if (smodseq > 0)
		json_object_set_new(result, "src_highestmodseq", json_integer(smodseq));
	return result;
}

/* Checks what a copy may do: 0, or -1 with e set. */
static int ops_copy_check(const struct ops_req *r, const struct mbx_ref *m, const struct mbx_ref *t,
			  const uidlist_t *src, int64_t bytes, struct acc_err *e)
{
	if (r->move && m->id == t->id) {
		acc_set(e, "invalid", "to: a message cannot be moved to its own mailbox");
		return -1;
	}
	if (t->uidnext + (int64_t)src->count - 1 > OPS_UID_MAX) {
		acc_set(e, "limit", "mailbox %s has run out of UIDs", t->name);
		return -1;
	}
	/* A move within one user leaves the usage as it is (RFC 6851 3.3: no
	 * quota failure for it); a copy adds every byte it references. */
	if (!r->move && t->quota > 0 && t->used + bytes > t->quota) {
		acc_set(e, "mailbox_full", "mailbox full: %s is over quota", r->address);
		return -1;
	}
	return 0;
}

static json_t *ops_copy_change(accounts_t *a, void *ctx, struct acc_err *e)
{
	struct ops_req *r = ctx;
	struct mbx_ref m, t;
	uidlist_t src = { 0 };
	int64_t bytes = 0;
	seqset_t *set = ops_open(a, r->address, r->mailbox, r->uids, &m, e);
	if (set == NULL)
		return NULL;
	json_t *result = NULL;
	int rc = SQLITE_ERROR;
	if (mailbox_lookup(a, r->address, r->to, &t, e) != 1 ||
	    (rc = ops_collect(a, m.id, set, false, &src, &bytes)) != SQLITE_DONE ||
	    ops_copy_check(r, &m, &t, &src, bytes, e) < 0)
		goto out;
	int64_t first = t.uidnext, next = t.uidnext, tmod = t.highestmodseq, smod = 0;
	if (src.count > 0) {
		tmod = t.highestmodseq + 1;
		rc = ops_insert_copies(a, &m, &t, set, tmod, &next);
		if (rc == SQLITE_DONE && next - first != (int64_t)src.count)
			rc = SQLITE_ERROR;   /* cannot be: the rows were counted in this savepoint */
		if (rc == SQLITE_DONE)
			rc = ops_mailbox_update(a, t.id, tmod, next);
		if (rc == SQLITE_DONE && r->move) {
			smod = m.highestmodseq + 1;
			rc = ops_remove(a, m.id, set, smod, false);
			if (rc == SQLITE_DONE)
				rc = ops_mailbox_update(a, m.id, smod, 0);
		}
	}
	if (rc != SQLITE_DONE)
		goto out;
	if (src.count > 0) {
		uidlist_t dst = { 0 };
		dst.r = &(struct seq_range){ (uint32_t)first, (uint32_t)(next - 1) };
		dst.n = dst.cap = 1;
		ops_events(a, r->address, &t, "new", &dst, tmod);
		if (r->move)
			ops_events(a, r->address, &m, "expunge", &src, smod);
	}
	result = ops_copy_result(&t, &src, first, tmod, r->move ? (smod ? smod : m.highestmodseq) : 0);
out:
	uidlist_free(&src);
	free(set);
	return result;
}

void msgops_copy(bus_req_t **req, void *arg)
{
	accounts_t *a = arg;
	struct ops_req r = { .move = 0 };
	const char *addr;
	if (ACC_UNPACK(a, req, "{s:s, s:s, s:s, s:s, s?:b}", "address", &addr, "mailbox", &r.mailbox,
		       "uids", &r.uids, "to", &r.to, "move", &r.move) < 0 ||
	    acc_name(a, req, "address", addr, true, r.address, NULL) < 0)
		return;
	acc_commit(a, req, ops_copy_change, &r);
}

/* ---- storaged.message.search ------------------------------------------------------------- */

/* The matches so far: a UID list cut when its text outgrows a reply. */
struct ops_hits {
	uidlist_t uids;
	int64_t max_prev, max_last;   /* highest MODSEQ before the last range, and in it */
	bool full;
};

/* search_row_fn: adds one match; stops once the set outgrows OPS_SET_MAX. */
static int ops_search_row(uint32_t uid, int64_t modseq, void *arg)
{
	struct ops_hits *h = arg;
	size_t ranges = h->uids.n;
	uidlist_add(&h->uids, uid);
	if (h->uids.n != ranges) {   /* a new range: the last one is complete */
		if (h->max_last > h->max_prev)
			h->max_prev = h->max_last;
		h->max_last = 0;
	}
	if (modseq > h->max_last)
		h->max_last = modseq;
	return (h->full = h->uids.textlen > OPS_SET_MAX);
}

/* The reply of a search: the set (without the last range if it was cut:
 * the caller goes on from "next", as after a run that stopped at UID
 * stopped), the mailbox's HIGHESTMODSEQ and the highest MODSEQ of the UIDs
 * returned (RFC 7162 3.1.5). */
static json_t *ops_search_result(struct ops_hits *h, const struct mbx_ref *m, int64_t stopped)
{
	bool cut = false;
	json_t *text = ops_set_text(&h->uids, OPS_SET_MAX, &cut, NULL);
	json_t *f = json_pack("{s:o, s:I}", "uids", text, "highestmodseq",
			      (json_int_t)m->highestmodseq);
	int64_t max = h->max_prev;
	if (cut)
		json_object_set_new(f, "next", json_integer(uidlist_range_lo(&h->uids, h->uids.n - 1)));
	else if (h->max_last > max)
		max = h->max_last;
	if (!cut && stopped > 0)
		json_object_set_new(f, "next", json_integer(stopped));
	if (h->uids.count > 0)
		json_object_set_new(f, "max_modseq", json_integer(max));
	return f;
}

void msgops_search(bus_req_t **req, void *arg)
{
	accounts_t *a = arg;
	struct ops_req r = { .uids = NULL };
	const char *addr;
	json_t *criteria;
	json_int_t from = 1;
	struct acc_err e = { "internal", "database error" };
	struct mbx_ref m;
	if (ACC_UNPACK(a, req, "{s:s, s:s, s:o, s?:I}", "address", &addr, "mailbox", &r.mailbox,
		       "criteria", &criteria, "from", &from) < 0 ||
	    acc_name(a, req, "address", addr, true, r.address, NULL) < 0)
		return;
	if (from < 1 || from > OPS_UID_MAX) {
		acc_fail(a, req, "invalid", "from: a UID, 1..4294967295");
		return;
	}
	if (mailbox_lookup(a, r.address, r.mailbox, &m, &e) != 1) {
		acc_fail(a, req, e.code, e.msg);
		return;
	}
	search_query_t *q = search_compile(criteria, (uint32_t)(m.uidnext - 1), &e);
	if (q == NULL) {
		acc_fail(a, req, e.code, e.msg);
		return;
	}
	struct ops_hits h = { .uids = { 0 } };
	int64_t stopped = 0;
	int rc = search_run(a, q, m.id, from, ops_search_row, &h, &stopped);
	search_free(&q);
	if (rc < 0) {
		uidlist_free(&h.uids);
		acc_fail(a, req, "internal", "database error");
		return;
	}
	json_t *f = ops_search_result(&h, &m, stopped);
	uidlist_free(&h.uids);
	acc_ok(a, req, &f);
}

/* ---- storaged.message.vanished --------------------------------------------------------- */

/*
 * The UIDs of set expunged with a MODSEQ above since into l, in UID order,
 * stopping once their text is over OPS_SET_MAX bytes (the reply cuts
 * there): SQLITE_DONE or the error. The (mailbox_id, uid) primary key
 * walks each range; rows of older expunges are read and skipped.
 */
static int ops_vanished_collect(accounts_t *a, int64_t mailbox_id, const seqset_t *set,
				int64_t since, uint32_t from, uidlist_t *l)
{
	int rc = SQLITE_DONE;
	for (size_t i = 0; i < set->n && rc == SQLITE_DONE && l->textlen <= OPS_SET_MAX; i++) {
		struct seq_range r = set->r[i];
		if (r.hi < from)
			continue;   /* an earlier page had it */
		if (r.lo < from)
			r.lo = from;
		sqlite3_stmt *st = ops_range_stmt(a, "SELECT uid FROM expunged WHERE mailbox_id = ?1 "
						  "AND uid BETWEEN ?2 AND ?3 AND modseq > ?4 "
						  "ORDER BY uid", mailbox_id, &r);
		if (st == NULL)
			return SQLITE_ERROR;
		sqlite3_bind_int64(st, 4, since);
		while (l->textlen <= OPS_SET_MAX && (rc = sqlite3_step(st)) == SQLITE_ROW)
			uidlist_add(l, (uint32_t)sqlite3_column_int64(st, 0));
		if (rc == SQLITE_ROW)
			rc = SQLITE_DONE;   /* stopped early: the text is full */
		db_release(a->db, st);
	}
	return rc;
}

/* RFC 7162 VANISHED: which UIDs of a set were expunged after a MODSEQ. A
 * read: the expunged table is written by expunge, move and rename of
 * INBOX, and goes with its mailbox (ON DELETE CASCADE). */
void msgops_vanished(bus_req_t **req, void *arg)
{
	accounts_t *a = arg;
	const char *addr, *mailbox, *uids = NULL;
	char address[ACC_ADDR_MAX];
	json_int_t since, uv = 0, from = 1;
	struct acc_err e = { "internal", "database error" };
	struct mbx_ref m;
	if (ACC_UNPACK(a, req, "{s:s, s:s, s:I, s?:s, s?:I, s?:I}", "address", &addr, "mailbox",
		       &mailbox, "changedsince", &since, "uids", &uids, "uidvalidity", &uv, "from",
		       &from) < 0 ||
	    acc_name(a, req, "address", addr, true, address, NULL) < 0)
		return;
	if (since < 0 || from < 1 || from > OPS_UID_MAX) {
		acc_fail(a, req, "invalid", since < 0 ? "changedsince: a MODSEQ, 0 or more"
					   : "from: a UID, 1..4294967295");
		return;
	}
	seqset_t *set = ops_open(a, address, mailbox, uids, &m, &e);
	if (set == NULL) {
		acc_fail(a, req, e.code, e.msg);
		return;
	}
	if (uv != 0 && uv != m.uidvalidity) {
		/* not this mailbox's UIDs: a client must start over, not learn
		 * of expunges in a mailbox it never saw */
		free(set);
		acc_fail(a, req, "uidvalidity_changed", "the mailbox has another UIDVALIDITY");
		return;
	}
	uidlist_t l = { 0 };
	int rc = ops_vanished_collect(a, m.id, set, since, (uint32_t)from, &l);
	free(set);
	if (rc != SQLITE_DONE) {
		uidlist_free(&l);
		acc_fail(a, req, "internal", "database error");
		return;
	}
	char *text = xmalloc(OPS_SET_MAX + 1);
	size_t pos = 0;
	uidlist_format(&l, &pos, text, OPS_SET_MAX + 1);
	json_t *f = json_pack("{s:s, s:I, s:I}", "uids", text, "uidvalidity",
			      (json_int_t)m.uidvalidity, "highestmodseq", (json_int_t)m.highestmodseq);
	if (pos < l.n)
		json_object_set_new(f, "next", json_integer(uidlist_range_lo(&l, pos)));
	free(text);
	uidlist_free(&l);
	acc_ok(a, req, &f);
}
