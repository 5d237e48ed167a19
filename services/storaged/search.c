/*
 * search.c — storaged.message.search's criteria (a JSON tree, RFC 3501
 * 6.4.4 and RFC 7162 3.1.5 in storaged's words) compiled to one SQL WHERE
 * expression over messages m JOIN blobs b, and run.
 *
 * The tree is bounded (depth <= 16, nodes <= 256, strings <= 1024 bytes)
 * and every node is an object with exactly one key:
 *
 *   all: true              and: [n, ...]        or: [n, n, ...]   not: n
 *   uids: "1:5,9:*"        flag / unflag: "\\Seen"   keyword / unkeyword: "$x"
 *   header: {field, contains}   (a cached field: the cache's first field,
 *                                unfolded; any other: every such field in
 *                                the stored header, unfolded)
 *   before / on / since: unix s       (INTERNALDATE, by UTC day)
 *   sentbefore / senton / sentsince   (the Date field, by UTC day)
 *   larger / smaller: bytes           modseq: n  (MODSEQ >= n)
 *   body / text: "..."   (a substring of the stored bytes after the
 *                         header / of the whole message)
 *
 * Values are never pasted into the SQL: each leaf is a fixed template
 * whose '?' become one numbered parameter. Every leaf is NULL-safe (0 or
 * 1, never NULL), so "not" is plain NOT. Comparisons are ASCII
 * case-insensitive (no Unicode folding, no MIME decoding).
 *
 * body and text run roost_contains(uid, blob_id, prefix, from, needle), an
 * SQL function registered on the connection for the run only: it streams
 * the blob's chunks through a case-folding KMP matcher whose state crosses
 * chunk boundaries, so a message is never held whole in memory. One run
 * scans at most SEARCH_SCAN_BUDGET bytes (and always one message): past
 * that it stops before the next message and says where, so a body search
 * over a large mailbox is answered in pieces (the reply's next) instead of
 * stalling storaged's loop. The query walks the mailbox in UID order
 * (CROSS JOIN keeps messages the outer loop, "+m.modseq" keeps the MODSEQ
 * index out), so every UID before that point has been decided.
 * roost_in_set(uid, set) tests a UID against a set parsed once per
 * statement (sqlite3_set_auxdata).
 */
#include "storaged.h"

#include "log.h"
#include "seqset.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEARCH_DEPTH_MAX 16
#define SEARCH_NODES_MAX 256
#define SEARCH_TEXT_MAX 1024
#define SEARCH_FIELD_MAX 76     /* a field name: RFC 5322 2.1.1's 78 less ": " */
#define SEARCH_INT_MAX 9007199254740991LL
#define SEARCH_DATE_MAX (1LL << 40)
#define SEARCH_DAY 86400
#define SEARCH_SLOW_MS 1000     /* a search this long stalls the loop: say so */
#define SEARCH_SCAN_BUDGET (64LL << 20)   /* message bytes one run may scan */

struct search_param {
	bool text;
	int64_t i;
	char *s;               /* owned */
};

struct search_query {
	char *sql;
	size_t len, cap;
	struct search_param p[SEARCH_NODES_MAX];
	int np, nodes;
	uint32_t star;         /* "*" in uids */
	struct acc_err *e;
};

struct search_key;
typedef int (*search_fn)(search_query_t *q, const struct search_key *k, const json_t *v, int depth);

/* One key of a node: how it compiles, and its SQL template. */
struct search_key {
	const char *name;
	search_fn fn;
	const char *sql;       /* '?' stands for the leaf's parameter */
	const char *want;      /* what the value must be, for errors */
	int kind;              /* search_flag: SK_SYSTEM; search_int: SK_DAY */
};

enum { SK_SYSTEM = 1, SK_DAY = 1 };

static int search_node(search_query_t *q, const json_t *n, int depth);

/* ---- building the SQL -------------------------------------------------------- */

static void search_put(search_query_t *q, const char *s)
{
	size_t n = strlen(s);
	if (q->len + n + 1 > q->cap) {
		q->cap = (q->len + n + 1) * 2;
		q->sql = xrealloc(q->sql, q->cap);
	}
	memcpy(q->sql + q->len, s, n + 1);
	q->len += n;
}

/* Appends a template with each '?' as the parameter just added. */
static void search_leaf(search_query_t *q, const char *tmpl)
{
	char num[16];
	snprintf(num, sizeof num, "?%d", q->np + 2);  /* ?1 and ?2 are search_run's */
	search_put(q, "(");
	for (const char *p = tmpl; *p != '\0'; p++) {
		char c[2] = { *p, '\0' };
		search_put(q, *p == '?' ? num : c);
	}
	search_put(q, ")");
}

/* Adds an integer / a string (copied) parameter, numbered q->np + 2. */
static void search_param_int(search_query_t *q, int64_t v)
{
	q->p[q->np++] = (struct search_param){ .i = v };
}

static void search_param_text(search_query_t *q, const char *s, size_t n)
{
	char *copy = xmalloc(n + 1);
	memcpy(copy, s, n);
	copy[n] = '\0';
	q->p[q->np++] = (struct search_param){ .text = true, .s = copy };
}

static int search_bad(search_query_t *q, const struct search_key *k)
{
	acc_set(q->e, "invalid", "criteria: \"%s\" wants %s", k->name, k->want);
	return -1;
}

/* ASCII lower case: what every string comparison here folds. */
static unsigned char search_fold(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? (unsigned char)(c - 'A' + 'a') : c;
}

/* ---- leaves -------------------------------------------------------------------------- */

static int search_all(search_query_t *q, const struct search_key *k, const json_t *v, int depth)
{
	(void)depth;
	if (!json_is_true(v))
		return search_bad(q, k);
	search_put(q, "1");
	return 0;
}

/* A string value of at most SEARCH_TEXT_MAX bytes, or NULL after saying so. */
static const char *search_string(search_query_t *q, const struct search_key *k, const json_t *v)
{
	const char *s = json_string_value(v);
	if (s == NULL) {
		search_bad(q, k);
		return NULL;
	}
	if (json_string_length(v) > SEARCH_TEXT_MAX) {
		acc_set(q->e, "invalid", "criteria: \"%s\" is over %d bytes", k->name, SEARCH_TEXT_MAX);
		return NULL;
	}
	return s;
}

/* flag, unflag (a system flag), keyword, unkeyword (a keyword), as
 * msg_flags_parse reads them. */
static int search_flag(search_query_t *q, const struct search_key *k, const json_t *v, int depth)
{
	(void)depth;
	const char *s = search_string(q, k, v);
	int bits;
	char kw[128];
	struct acc_err e;
	if (s == NULL)
		return -1;
	json_t *one = json_pack("[s]", s);
	int rc = msg_flags_parse(one, &bits, kw, sizeof kw, &e);
	json_decref(one);
	bool system = k->kind == SK_SYSTEM;
	if (rc < 0 || (system ? bits == 0 : kw[0] == '\0'))
		return search_bad(q, k);
	if (system)
		search_param_int(q, bits);
	else
		search_param_text(q, kw, strlen(kw));
	search_leaf(q, k->sql);
	return 0;
}

/* A string matched case-insensitively: its ASCII lower case is bound. */
static int search_text(search_query_t *q, const struct search_key *k, const json_t *v, int depth)
{
	(void)depth;
	const char *s = search_string(q, k, v);
	if (s == NULL)
		return -1;
	size_t n = json_string_length(v);
	search_param_text(q, s, n);
	for (char *p = q->p[q->np - 1].s; p < q->p[q->np - 1].s + n; p++)
		*p = (char)search_fold((unsigned char)*p);
	search_leaf(q, k->sql);
	return 0;
}

/* The header cache column of a field ("message-id" or "message_id"), or
 * NULL if storaged does not cache it. */
static const char *search_cached(const char *field)
{
	static const char *const fields[] = { "subject", "from", "to", "cc", "bcc", "message_id",
					      "in_reply_to", "reply_to", "sender", "date" };
	char col[16];
	size_t n = strlen(field);
	if (n >= sizeof col)
		return NULL;
	for (size_t i = 0; i <= n; i++)
		col[i] = field[i] == '-' ? '_' : (char)search_fold((unsigned char)field[i]);
	for (size_t i = 0; i < ARRAY_LEN(fields); i++)
		if (strcmp(col, fields[i]) == 0)
			return fields[i];
	return NULL;
}

/* header: {"field": f, "contains": text}: on the header cache column of f
 * if there is one (its first field, unfolded), else every field called f
 * in the stored header (roost_header). */
static int search_header(search_query_t *q, const struct search_key *k, const json_t *v, int depth)
{
	const char *field;
	json_t *contains;
	char tmpl[96];
	if (json_unpack_ex((json_t *)v, NULL, JSON_STRICT, "{s:s, s:o}", "field", &field, "contains",
			   &contains) < 0)
		return search_bad(q, k);
	const char *col = search_cached(field);
	if (col != NULL) {
		/* The column name comes from the table, never the request. */
		snprintf(tmpl, sizeof tmpl, "b.hdr_%s IS NOT NULL AND instr(lower(b.hdr_%s), ?) > 0", col, col);
		struct search_key sub = { "header.contains", NULL, tmpl, "a string", 0 };
		return search_text(q, &sub, contains, depth);
	}
	size_t n = strlen(field);
	if (n == 0 || n > SEARCH_FIELD_MAX)
		return search_bad(q, k);
	for (size_t i = 0; i < n; i++)
		if (field[i] < 33 || field[i] > 126 || field[i] == ':')   /* RFC 5322 ftext */
			return search_bad(q, k);
	struct search_key sub = { "header.contains", NULL, NULL, "a string", 0 };
	const char *needle = search_string(q, &sub, contains);
	if (needle == NULL)
		return -1;
	/* One parameter, "name:needle": a field name has no ':' */
	size_t m = strlen(needle);
	char *arg = xmalloc(n + 1 + m + 1);
	for (size_t i = 0; i < n + 1 + m; i++)
		arg[i] = (char)search_fold((unsigned char)(i < n ? field[i] : i == n ? ':' : needle[i - n - 1]));
	search_param_text(q, arg, n + 1 + m);
	free(arg);
	search_leaf(q, "roost_header(m.uid, m.blob_id, m.prefix, b.body_off, ?)");
	return 0;
}

/* An integer leaf: sizes and MODSEQ 0..2^53-1; dates 0..2^40, taken to
 * the start of their UTC day. */
static int search_int(search_query_t *q, const struct search_key *k, const json_t *v, int depth)
{
	(void)depth;
	bool date = k->kind == SK_DAY;
	int64_t max = date ? SEARCH_DATE_MAX : SEARCH_INT_MAX;
	if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > max)
		return search_bad(q, k);
	int64_t n = json_integer_value(v);
	search_param_int(q, date ? n - n % SEARCH_DAY : n);
	search_leaf(q, k->sql);
	return 0;
}

/* uids: a set, "*" the highest UID in use, bound in its normalized form. */
static int search_uids(search_query_t *q, const struct search_key *k, const json_t *v, int depth)
{
	(void)depth;
	const char *s = json_string_value(v), *why;
	if (s == NULL)
		return search_bad(q, k);
	seqset_t *set = xmalloc(sizeof *set);
	char *text = xmalloc(SEQSET_TEXT_MAX * 2);
	int rc = seqset_parse(set, s, q->star, &why);
	if (rc < 0)
		acc_set(q->e, "invalid", "criteria: uids: %s", why);
	else if (seqset_format(set, text, SEQSET_TEXT_MAX * 2) < 0)
		rc = -1, acc_set(q->e, "invalid", "criteria: uids: set too long");
	if (rc == 0) {
		search_param_text(q, text, strlen(text));
		search_leaf(q, k->sql);
	}
	free(set);
	free(text);
	return rc;
}

/* ---- inner nodes --------------------------------------------------------------- */

/* True if n has a body or text search in it (run those last). */
static bool search_costly(const json_t *n, int depth)
{
	const char *key;
	json_t *v;
	size_t i;
	if (depth > SEARCH_DEPTH_MAX)
		return false;
	if (json_is_array(n)) {
		json_array_foreach(n, i, v)
			if (search_costly(v, depth + 1))
				return true;
		return false;
	}
	json_object_foreach((json_t *)n, key, v) {
		if (strcmp(key, "body") == 0 || strcmp(key, "text") == 0)
			return true;
		if (strcmp(key, "header") == 0) {
			const char *field = json_string_value(json_object_get(v, "field"));
			return field != NULL && search_cached(field) == NULL;
		}
		if (search_costly(v, depth + 1))
			return true;
	}
	return false;
}

/* and, or: the children joined, cheap ones first (SQLite stops early). */
static int search_bool(search_query_t *q, const struct search_key *k, const json_t *v, int depth)
{
	size_t min = strcmp(k->name, "or") == 0 ? 2 : 1, i;
	json_t *c;
	int done = 0;
	if (!json_is_array(v) || json_array_size(v) < min || json_array_size(v) > SEARCH_NODES_MAX)
		return search_bad(q, k);
	search_put(q, "(");
	for (int costly = 0; costly <= 1; costly++)
		json_array_foreach(v, i, c) {
			if (search_costly(c, depth + 1) != costly)
				continue;
			if (done++ > 0)
				search_put(q, k->sql);
			if (search_node(q, c, depth + 1) < 0)
				return -1;
		}
	search_put(q, ")");
	return 0;
}

static int search_not(search_query_t *q, const struct search_key *k, const json_t *v, int depth)
{
	(void)k;
	search_put(q, "(NOT ");
	if (search_node(q, v, depth + 1) < 0)
		return -1;
	search_put(q, ")");
	return 0;
}

#define INTERNALDATE "unix seconds (an INTERNALDATE day)"
#define DATE_SENT "unix seconds (a Date: day)"
#define CONTAINS(from) "roost_contains(m.uid, m.blob_id, " from ", ?)"

static const struct search_key search_keys[] = {
	{ "all", search_all, NULL, "true", 0 },
	{ "and", search_bool, " AND ", "an array of 1..256 criteria", 0 },
	{ "or", search_bool, " OR ", "an array of 2..256 criteria", 0 },
	{ "not", search_not, NULL, "a criterion", 0 },
	{ "uids", search_uids, "roost_in_set(m.uid, ?)", "a UID set", 0 },
	{ "flag", search_flag, "(m.flags & ?) != 0", "a system flag (\\Seen...)", SK_SYSTEM },
	{ "unflag", search_flag, "(m.flags & ?) = 0", "a system flag (\\Seen...)", SK_SYSTEM },
	{ "keyword", search_flag, "instr(' ' || m.keywords || ' ', ' ' || ? || ' ') > 0", "a keyword", 0 },
	{ "unkeyword", search_flag, "instr(' ' || m.keywords || ' ', ' ' || ? || ' ') = 0", "a keyword", 0 },
	{ "header", search_header, NULL, "{\"field\": subject|from|to|cc|bcc|message_id|in_reply_to|"
	  "reply_to|sender|date, \"contains\": text}", 0 },
	{ "before", search_int, "m.internaldate < ?", INTERNALDATE, SK_DAY },
	{ "on", search_int, "m.internaldate >= ? AND m.internaldate < ? + 86400", INTERNALDATE, SK_DAY },
	{ "since", search_int, "m.internaldate >= ?", INTERNALDATE, SK_DAY },
	{ "sentbefore", search_int, "b.date_sent IS NOT NULL AND b.date_sent < ?", DATE_SENT, SK_DAY },
	{ "senton", search_int, "b.date_sent IS NOT NULL AND b.date_sent >= ? AND "
	  "b.date_sent < ? + 86400", DATE_SENT, SK_DAY },
	{ "sentsince", search_int, "b.date_sent IS NOT NULL AND b.date_sent >= ?", DATE_SENT, SK_DAY },
	{ "larger", search_int, "m.size > ?", "a size in bytes", 0 },
	{ "smaller", search_int, "m.size < ?", "a size in bytes", 0 },
	{ "modseq", search_int, "+m.modseq >= ?", "a MODSEQ", 0 },
	{ "body", search_text, CONTAINS("NULL, b.body_off"), "a string", 0 },
	{ "text", search_text, CONTAINS("m.prefix, 0"), "a string", 0 },
};

/* One node: an object with one known key. */
static int search_node(search_query_t *q, const json_t *n, int depth)
{
	if (depth > SEARCH_DEPTH_MAX) {
		acc_set(q->e, "invalid", "criteria: deeper than %d levels", SEARCH_DEPTH_MAX);
		return -1;
	}
	if (++q->nodes > SEARCH_NODES_MAX) {
		acc_set(q->e, "invalid", "criteria: more than %d nodes", SEARCH_NODES_MAX);
		return -1;
	}
	if (!json_is_object(n) || json_object_size(n) != 1) {
		acc_set(q->e, "invalid", "criteria: each criterion is an object with one key");
		return -1;
	}
	void *it = json_object_iter((json_t *)n);
	const char *key = json_object_iter_key(it);
	for (size_t i = 0; i < ARRAY_LEN(search_keys); i++)
		if (strcmp(key, search_keys[i].name) == 0)
			return search_keys[i].fn(q, &search_keys[i], json_object_iter_value(it), depth);
	acc_set(q->e, "invalid", "criteria: unknown key \"%.40s\"", key);
	return -1;
}

search_query_t *search_compile(const json_t *criteria, uint32_t star, struct acc_err *e)
{
	search_query_t *q = xcalloc(1, sizeof *q);
	q->star = star;
	q->e = e;
	if (search_node(q, criteria, 1) < 0)
		search_free(&q);
	return q;
}

void search_free(search_query_t **q)
{
	if (q == NULL || *q == NULL)
		return;
	for (int i = 0; i < (*q)->np; i++)
		free((*q)->p[i].s);
	free((*q)->sql);
	free(*q);
	*q = NULL;
}

/* ---- the SQL functions ------------------------------------------------------------ */

/* One run's state, the functions' user data. */
struct search_exec {
	sqlite3 *db;
	sqlite3_stmt *chunks;   /* the blob's chunks from an offset on (kept for the run) */
	int64_t bytes;          /* scanned by roost_contains */
	int64_t stop_uid;       /* > 0: the budget ran out before this UID */
};

/* A needle, folded to lower case, with its KMP failure table. */
struct search_kmp {
	size_t n;
	int *fail;
	unsigned char pat[];
};

static void search_kmp_free(void *p)
{
	struct search_kmp *k = p;
	free(k->fail);
	free(k);
}

static struct search_kmp *search_kmp_new(const unsigned char *s, size_t n)
{
	struct search_kmp *k = xmalloc(sizeof *k + n + 1);
	k->n = n;
	k->fail = xmalloc((n + 1) * sizeof *k->fail);
	for (size_t i = 0; i < n; i++)
		k->pat[i] = search_fold(s[i]);
	k->fail[0] = 0;
	for (size_t i = 1, j = 0; i < n; i++) {
		while (j > 0 && k->pat[i] != k->pat[j])
			j = (size_t)k->fail[j - 1];
		if (k->pat[i] == k->pat[j])
			j++;
		k->fail[i] = (int)j;
	}
	return k;
}

/* Feeds bytes to the matcher at state *j: true once the needle is found. */
static bool search_kmp_feed(const struct search_kmp *k, size_t *j, const unsigned char *p, size_t len)
{
	size_t s = *j;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = search_fold(p[i]);
		while (s > 0 && c != k->pat[s])
			s = (size_t)k->fail[s - 1];
		if (c == k->pat[s] && ++s == k->n)
			return true;
	}
	*j = s;
	return false;
}

/* Something the bytes of a message are fed to: feed returns true to stop
 * (found, or nothing more can be). */
struct search_sink {
	bool (*feed)(struct search_sink *sk, const unsigned char *p, size_t len);
	bool found;
};

/* The matcher over every byte fed. */
struct search_kmp_sink {
	struct search_sink sk;
	const struct search_kmp *k;
	size_t j;
};

static bool search_kmp_sink_feed(struct search_sink *sk, const unsigned char *p, size_t len)
{
	struct search_kmp_sink *m = (struct search_kmp_sink *)sk;
	return sk->found = search_kmp_feed(m->k, &m->j, p, len);
}

/* Streams the chunks of blob from offset from up to offset to into the
 * sink; 1 if found, 0 if not, -1 on a database error. */
static int search_scan_blob(struct search_exec *x, struct search_sink *sk, int64_t blob, int64_t from,
			    int64_t to)
{
	if (x->chunks == NULL &&
	    sqlite3_prepare_v2(x->db, "SELECT off, data FROM blob_chunks WHERE blob_id = ?1 AND "
			       "off >= (SELECT coalesce(max(off), 0) FROM blob_chunks WHERE "
			       "blob_id = ?1 AND off <= ?2) AND off < ?3 ORDER BY off", -1, &x->chunks,
			       NULL) != SQLITE_OK)
		return -1;
	sqlite3_bind_int64(x->chunks, 1, blob);
	sqlite3_bind_int64(x->chunks, 2, from);
	sqlite3_bind_int64(x->chunks, 3, to);
	int rc;
	bool stop = false;
	while (!stop && (rc = sqlite3_step(x->chunks)) == SQLITE_ROW) {
		int64_t off = sqlite3_column_int64(x->chunks, 0);
		const unsigned char *data = sqlite3_column_blob(x->chunks, 1);
		int64_t len = sqlite3_column_bytes(x->chunks, 1), skip = from > off ? from - off : 0;
		if (len > to - off)
			len = to - off;
		if (skip >= len)
			continue;
		x->bytes += len - skip;
		stop = sk->feed(sk, data + skip, (size_t)(len - skip));
	}
	sqlite3_reset(x->chunks);
	return !stop && rc != SQLITE_DONE ? -1 : sk->found;
}

/* The statement's needle (argument i; with after_colon, what follows its
 * first ':'), compiled once per statement; NULL if there is none or SQLite
 * could not keep it. */
static struct search_kmp *search_needle(sqlite3_context *ctx, sqlite3_value **argv, int i, bool after_colon)
{
	struct search_kmp *k = sqlite3_get_auxdata(ctx, i);
	if (k != NULL)
		return k;
	const char *s = (const char *)sqlite3_value_text(argv[i]);
	size_t n = (size_t)sqlite3_value_bytes(argv[i]);
	if (s == NULL)
		s = "";
	if (after_colon) {
		const char *colon = strchr(s, ':');
		if (colon == NULL)
			return NULL;
		n -= (size_t)(colon + 1 - s);
		s = colon + 1;
	}
	k = search_kmp_new((const unsigned char *)s, n);
	sqlite3_set_auxdata(ctx, i, k, search_kmp_free);
	return sqlite3_get_auxdata(ctx, i);
}

/* False, noting uid, once the run's scan budget is spent. */
static bool search_budget(sqlite3_context *ctx, struct search_exec *x, sqlite3_value *uid)
{
	if (x->bytes < SEARCH_SCAN_BUDGET)
		return true;
	x->stop_uid = sqlite3_value_int64(uid);
	sqlite3_result_error(ctx, "roost_contains: scan budget spent", -1);
	return false;
}

/* Feeds prefix, then the blob's bytes from..to, to the sink (until it
 * stops) and makes the function's result of it. */
static void search_sink_result(sqlite3_context *ctx, struct search_exec *x, struct search_sink *sk,
			       sqlite3_value *prefix, int64_t blob, int64_t from, int64_t to)
{
	bool stop = sk->found;
	if (!stop && sqlite3_value_type(prefix) == SQLITE_BLOB)
		stop = sk->feed(sk, sqlite3_value_blob(prefix), (size_t)sqlite3_value_bytes(prefix));
	int found = stop ? sk->found : search_scan_blob(x, sk, blob, from, to);
	if (found < 0)
		sqlite3_result_error(ctx, "roost_contains: cannot read the blob", -1);
	else
		sqlite3_result_int(ctx, found);
}

/* roost_contains(uid, blob_id, prefix, from, needle): 1 if the needle
 * (ASCII case-insensitively) is in prefix followed by the blob from byte
 * from on. Once the run's budget is spent it fails, noting uid. */
static void search_contains(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	(void)argc;
	struct search_exec *x = sqlite3_user_data(ctx);
	if (!search_budget(ctx, x, argv[0]))
		return;
	struct search_kmp *k = search_needle(ctx, argv, 4, false);
	if (k == NULL) {
		sqlite3_result_error_nomem(ctx);
		return;
	}
	struct search_kmp_sink m = { { search_kmp_sink_feed, k->n == 0 }, k, 0 };
	search_sink_result(ctx, x, &m.sk, argv[2], sqlite3_value_int64(argv[1]), sqlite3_value_int64(argv[3]),
			   INT64_MAX);
}

/* A header field filter in front of the matcher: only the text after the
 * colon of each field with the given name, unfolded, reaches it, and the
 * matcher starts afresh at each such field (RFC 3501 6.4.4 HEADER). The
 * empty line ends the header. */
struct search_hdr_sink {
	struct search_kmp_sink m;
	const char *name;           /* lower case */
	size_t nlen, ni;            /* the name's length; bytes of the line's name so far */
	enum { HDR_SKIP, HDR_NAME, HDR_VALUE } state;
	bool bol, same;             /* at a line's start; the line's name matches so far */
};

static bool search_hdr_feed(struct search_sink *sk, const unsigned char *p, size_t len)
{
	struct search_hdr_sink *h = (struct search_hdr_sink *)sk;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = p[i];
		if (h->bol) {
			h->bol = false;
			if (c == '\r' || c == '\n')
				return true;                     /* the empty line */
			if (c != ' ' && c != '\t') {             /* else: a folded line goes on */
				h->state = HDR_NAME;
				h->ni = 0;
				h->same = true;
			}
		}
		switch (h->state) {
		case HDR_NAME:
			if (c == ':') {
				h->state = h->same && h->ni == h->nlen ? HDR_VALUE : HDR_SKIP;
				h->m.j = 0;
				if (h->state == HDR_VALUE && h->m.k->n == 0)
					return sk->found = true;   /* "": the field is there */
			} else if (c == '\n') {
				h->state = HDR_SKIP, h->bol = true;
			} else if (c != ' ' && c != '\t') {   /* obsolete syntax: WSP before ':' */
				h->same = h->same && h->ni < h->nlen && search_fold(c) == (unsigned char)h->name[h->ni];
				h->ni++;
			}
			break;
		case HDR_VALUE:
			if (c == '\n')
				h->bol = true;
			else if (c != '\r' && search_kmp_feed(h->m.k, &h->m.j, &c, 1))
				return sk->found = true;
			break;
		case HDR_SKIP:
			h->bol = c == '\n';
			break;
		}
	}
	return false;
}

/* roost_header(uid, blob_id, prefix, body_off, "name:needle"): 1 if a
 * field called name (ASCII case-insensitively) in the header, prefix
 * followed by the blob up to body_off, holds the needle. */
static void search_header_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	(void)argc;
	struct search_exec *x = sqlite3_user_data(ctx);
	if (!search_budget(ctx, x, argv[0]))
		return;
	struct search_kmp *k = search_needle(ctx, argv, 4, true);
	if (k == NULL) {
		sqlite3_result_error(ctx, "roost_header: no \"name:needle\"", -1);
		return;
	}
	const char *name = (const char *)sqlite3_value_text(argv[4]);
	struct search_hdr_sink h = { { { search_hdr_feed, false }, k, 0 }, name, strcspn(name, ":"), 0,
				     HDR_SKIP, true, false };
	search_sink_result(ctx, x, &h.m.sk, argv[2], sqlite3_value_int64(argv[1]), 0,
			   sqlite3_value_int64(argv[3]));
}

/* roost_in_set(uid, set): 1 if uid is in the (normalized) set. */
static void search_in_set(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	(void)argc;
	seqset_t *set = sqlite3_get_auxdata(ctx, 1);
	const char *why;
	if (set == NULL) {
		set = xmalloc(sizeof *set);
		const char *text = (const char *)sqlite3_value_text(argv[1]);
		if (text == NULL || seqset_parse(set, text, 0, &why) < 0)
			set->n = 0;
		sqlite3_set_auxdata(ctx, 1, set, free);
		if ((set = sqlite3_get_auxdata(ctx, 1)) == NULL) {
			sqlite3_result_error_nomem(ctx);
			return;
		}
	}
	int64_t uid = sqlite3_value_int64(argv[0]);
	size_t lo = 0, hi = set->n;
	while (lo < hi) {   /* the first range whose hi >= uid */
		size_t mid = (lo + hi) / 2;
		if (set->r[mid].hi < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	sqlite3_result_int(ctx, lo < set->n && set->r[lo].lo <= uid);
}

/* Registers (x) or removes (NULL) the functions: 0 or -1. */
static int search_functions(sqlite3 *db, struct search_exec *x)
{
	int rc = sqlite3_create_function_v2(db, "roost_contains", 5, SQLITE_UTF8, x,
					    x ? search_contains : NULL, NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_create_function_v2(db, "roost_header", 5, SQLITE_UTF8, x,
						x ? search_header_fn : NULL, NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_create_function_v2(db, "roost_in_set", 2, SQLITE_UTF8 | SQLITE_DETERMINISTIC,
						x, x ? search_in_set : NULL, NULL, NULL, NULL);
	return rc == SQLITE_OK ? 0 : -1;
}

int search_run(accounts_t *a, const search_query_t *q, int64_t mailbox_id, int64_t from,
	       search_row_fn row, void *arg, int64_t *stopped)
{
	sqlite3 *db = db_handle(a->db);
	struct search_exec x = { .db = db };
	char *sql = NULL;
	int rc = SQLITE_ERROR;
	int64_t t0 = now_ms();
	if (search_functions(db, &x) < 0) {
		log_warn("search", "op=register why=%s", log_quote(sqlite3_errmsg(db)));
		return -1;
	}
	*stopped = 0;
	if (asprintf(&sql, "SELECT m.uid, m.modseq FROM messages m CROSS JOIN blobs b ON b.id = m.blob_id "
		     "WHERE m.mailbox_id = ?1 AND m.uid >= ?2 AND %s ORDER BY m.uid", q->sql) < 0)
		fatal("search", "why=\"out of memory\"");
	/* Not acc_prep: each query's SQL is its own, the statement cache is
	 * for the fixed ones. */
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
		sqlite3_finalize(st);
		st = NULL;
	}
	if (st != NULL) {
		sqlite3_bind_int64(st, 1, mailbox_id);
		sqlite3_bind_int64(st, 2, from);
	}
	for (int i = 0; st != NULL && i < q->np; i++) {
		if (q->p[i].text)
			sqlite3_bind_text(st, i + 3, q->p[i].s, -1, SQLITE_STATIC);
		else
			sqlite3_bind_int64(st, i + 3, q->p[i].i);
	}
	while (st != NULL && (rc = sqlite3_step(st)) == SQLITE_ROW)
		if (row((uint32_t)sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1), arg) != 0) {
			rc = SQLITE_DONE;
			break;
		}
	if (rc != SQLITE_DONE && x.stop_uid > 0)
		rc = SQLITE_DONE, *stopped = x.stop_uid;   /* the budget, not a failure */
	if (rc != SQLITE_DONE)
		log_warn("search", "op=step why=%s", log_quote(sqlite3_errmsg(db)));
	sqlite3_finalize(st);
	sqlite3_finalize(x.chunks);
	search_functions(db, NULL);
	free(sql);
	int64_t ms = now_ms() - t0;
	log_msg(ms >= SEARCH_SLOW_MS ? LOG_WARN : LOG_DEBUG, "search", "mailbox=%lld ms=%lld "
		"bytes_scanned=%lld nodes=%d stopped_at=%lld", (long long)mailbox_id, (long long)ms,
		(long long)x.bytes, q->nodes, (long long)*stopped);
	return rc == SQLITE_DONE ? 0 : -1;
}
