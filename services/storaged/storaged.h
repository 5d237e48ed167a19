/*
 * storaged.h — storaged's modules as main.c sees them.
 *
 * accounts.c answers the storaged.{domain,user,alias}.* requests of the
 * accounts slice (/tmp/storaged_spec.md, docs/BUS.md) from the SQLite
 * database (db.h), hashing passwords off the loop (kdfpool.h).
 * mailbox.c answers storaged.mailbox.* (/tmp/mailbox_spec.md) with the
 * same machinery, which accounts.c shares through the acc_* helpers below.
 * rcpt.c answers storaged.rcpt.resolve (where mail for a recipient goes)
 * and storaged.domain.catchall with the same helpers.
 * idem.c keeps the replies of state-changing requests under their idem key
 * so that a retried request changes nothing and gets the same answer.
 *
 * Ownership: accounts_new() borrows db and kdf (they must outlive it);
 * accounts_free() frees and nulls. accounts_handlers is static data.
 * acc_ok/acc_fail/acc_name/acc_commit consume *req (they reply).
 */
#ifndef ROOST_STORAGED_H
#define ROOST_STORAGED_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "bus.h"
#include "db.h"
#include "kdfpool.h"

#define IDEM_MAX_AGE_S (7 * 24 * 3600)   /* idempotency rows older are pruned */

#define ACC_ADDR_MAX (64 + 1 + 253 + 1)   /* local@domain and its NUL */
#define ACC_LIST_MAX 10000                 /* rows in a list reply, at most */

typedef struct accounts accounts_t;

/* storaged's request state, shared by accounts.c and mailbox.c. */
struct accounts {
	db_t *db;
	kdfpool_t *kdf;
	bus_control_t *ctl;
	struct hmap *cache;   /* 32-byte digest -> expiry (unix s), verify cache */
	uint64_t ok, error, invalid, cache_hits;
};

/* The handler table for bus_worker_new (accounts and mailboxes); its arg
 * is an accounts_t. */
extern const bus_handler_t accounts_handlers[];

accounts_t *accounts_new(db_t *db, kdfpool_t *kdf);
void accounts_free(accounts_t **a);
/* Requests are counted on ctl too (control.stats "requests"); NULL: not. */
void accounts_set_control(accounts_t *a, bus_control_t *ctl);
/* bus_stats_fn: adds domains, users and requests by outcome to stats. */
void accounts_stats(json_t *stats, void *arg);

/* ---- the request helpers of accounts.c, shared with mailbox.c ---- */

/* A change inside acc_commit: returns a new result object, or NULL with
 * an error code (and message) set. */
struct acc_err {
	const char *code;
	char msg[160];
};
typedef json_t *(*acc_change_fn)(accounts_t *a, void *ctx, struct acc_err *e);
/* Builds one list item from the current row (new reference). */
typedef json_t *(*acc_row_fn)(sqlite3_stmt *st);

/* bus_req_unpack that counts the request and its "invalid" replies. */
#define ACC_UNPACK(a, req, ...) \
	(bus_control_count((a)->ctl), \
	 bus_req_unpack(req, __VA_ARGS__) < 0 ? ((a)->invalid++, -1) : 0)

/* Replies ok with *fields (stolen) / an error, counted by outcome. */
void acc_ok(accounts_t *a, bus_req_t **req, json_t **fields);
void acc_fail(accounts_t *a, bus_req_t **req, const char *code, const char *msg);
/* Lower-cases in into out (ACC_ADDR_MAX bytes) and checks it as an address
 * (or a domain if !address); *at (if at) points at the '@'. 0, or -1 after
 * replying "invalid" naming field. */
int acc_name(accounts_t *a, bus_req_t **req, const char *field, const char *in,
	     bool address, char *out, char **at);
/* The id of a hosted domain (lower-case name), 0 if we do not host it,
 * -1 on error. */
int64_t acc_domain_id(accounts_t *a, const char *name);
/* 1 if domain dom has a user local, 0 if not, -1 on error. */
int acc_user_exists(accounts_t *a, int64_t dom, const char *local);
/* Prepares sql binding fmt's parameters ('s' string or NULL, 'i' int64). */
sqlite3_stmt *acc_prep(accounts_t *a, const char *sql, const char *fmt, ...);
/* Steps and finalizes st: SQLITE_DONE (or ROW), else the extended code. */
int acc_run(accounts_t *a, sqlite3_stmt *st);
/* True if the last statement changed a row; else sets not_found with the
 * formatted reason ("no user x@y") and returns false. */
bool acc_changed(accounts_t *a, struct acc_err *e, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void acc_set(struct acc_err *e, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* One transaction: idem lookup, change(), idem row, COMMIT, then reply. */
void acc_commit(accounts_t *a, bus_req_t **req, acc_change_fn change, void *ctx);
/* Replies {key: [row_fn(row)...], truncated} from st (finalized here). */
void acc_list_reply(accounts_t *a, bus_req_t **req, sqlite3_stmt *st, const char *key,
		    acc_row_fn row_fn);
/* The same for a paged list: when cut, the last item's cursor[0] is
 * replied as "next", each further cursor[i] as "next_<cursor[i]>"
 * (cursor: item field names, NULL-terminated). */
void acc_list_page(accounts_t *a, bus_req_t **req, sqlite3_stmt *st, const char *key,
		   acc_row_fn row_fn, const char *const *cursor);

/* ---- mailbox.c ---- */

/* The storaged.mailbox.* handlers (arg: accounts_t), for accounts_handlers. */
void mailbox_create(bus_req_t **req, void *arg);
void mailbox_delete(bus_req_t **req, void *arg);
void mailbox_rename(bus_req_t **req, void *arg);
void mailbox_subscribe(bus_req_t **req, void *arg);
void mailbox_list(bus_req_t **req, void *arg);
/* Creates the default mailboxes (INBOX, Sent, Drafts, Junk, Trash,
 * Archive) of a new user inside the caller's transaction: 0 or -1. */
int mailbox_defaults(accounts_t *a, int64_t user_id);

/* ---- rcpt.c ---- */

/* storaged.rcpt.resolve and storaged.domain.catchall (arg: accounts_t). */
void rcpt_resolve(bus_req_t **req, void *arg);
void rcpt_catchall(bus_req_t **req, void *arg);

/*
 * The stored result for idem: 1 and a new reference in *result_out if it
 * answered the same type, 0 if unknown, -2 if it answered another type,
 * -1 on a database error.
 */
int idem_lookup(db_t *db, const char *idem, const char *type, json_t **result_out);
/* Records result (borrowed) under idem; call inside the change's
 * transaction. 0 or -1. */
int idem_store(db_t *db, const char *idem, const char *type, const json_t *result);
/* Deletes rows older than max_age_s; the number deleted, or -1. */
int idem_prune(db_t *db, int64_t max_age_s);

#endif
