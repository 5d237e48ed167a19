/*
 * storaged.h — storaged's modules as main.c sees them.
 *
 * accounts.c answers the storaged.{domain,user,alias}.* requests of the
 * accounts slice (/tmp/storaged_spec.md, docs/BUS.md) from the SQLite
 * database (db.h), hashing passwords off the loop (kdfpool.h).
 * mailbox.c answers storaged.mailbox.* (/tmp/mailbox_spec.md) with the
 * same machinery, which accounts.c shares through the acc_* helpers below.
 * queue.c keeps the outbound queue (queue_add for storaged.message.store,
 * storaged.queue.* for smtpd's delivery client and roostctl).
 * rcpt.c answers storaged.rcpt.resolve (where mail for a recipient goes)
 * and storaged.domain.catchall with the same helpers.
 * idem.c keeps the replies of state-changing requests under their idem key
 * so that a retried request changes nothing and gets the same answer.
 * backup.c makes online snapshots for roostctl backup (storaged.backup.*).
 * message.c stores and reads messages; msgops.c changes their flags,
 * expunges, copies, moves and searches them (search.c compiles the
 * criteria to SQL).
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
struct message_state;
typedef struct backup backup_t;

/* The open group-commit transaction (batch.c). */
struct batch {
	bool open;
	loop_timer_t *timer;     /* the 0 ms flush at the end of the iteration */
	struct parked *v;        /* replies waiting for COMMIT */
	size_t n, cap;
	json_t *events;          /* events published after COMMIT */
	uint64_t gen;            /* batches finished so far */
	size_t bytes;            /* written in this batch */
	char *reply_text;        /* a change's reply already dumped (acc_reply_text) */
};

/* storaged's request state, shared by all its modules. */
struct accounts {
	loop_t *loop;
	db_t *db;
	kdfpool_t *kdf;
	bus_control_t *ctl;
	bus_pub_t *pub;          /* "mailbox changed" events; NULL: none */
	struct hmap *cache;   /* 32-byte digest -> expiry (unix s), verify cache */
	struct batch batch;
	struct message_state *msg;   /* message.c: uploads in progress */
	int64_t max_message_size;    /* bytes; 0: the default (64 MiB) */
	int64_t min_free_space;      /* bytes the data dir's file system keeps free */
	const char *data_dir;        /* borrowed: where roost.db lives (statvfs) */
	backup_t *backup;     /* backup.c's snapshots (borrowed; NULL: none) */
	struct ckpt *ckpt;    /* ckpt.c's checkpoint thread (borrowed; NULL: none), for stats */
	uint64_t ok, error, invalid, cache_hits, commits, batched;
};

/* The handler table for bus_worker_new (accounts and mailboxes); its arg
 * is an accounts_t. */
extern const bus_handler_t accounts_handlers[];

/* loop, db, kdf and pub (NULL: no events) are borrowed. */
accounts_t *accounts_new(loop_t *loop, db_t *db, kdfpool_t *kdf, bus_pub_t *pub);
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

/* Replies ok with *fields (stolen) / an error, counted by outcome; while
 * a batch is open the reply waits for its COMMIT (batch.c). */
void acc_ok(accounts_t *a, bus_req_t **req, json_t **fields);
void acc_fail(accounts_t *a, bus_req_t **req, const char *code, const char *msg);
/* For a change function (acc_write/acc_commit) that has its reply as
 * compact JSON text already (it dumped it for the idempotency row): the
 * request is answered with text (taken over) instead of a second dump. */
void acc_reply_text(accounts_t *a, char *text);
/* Publishes *event (stolen) after the open batch commits (now if none). */
void acc_event(accounts_t *a, json_t **event);
/* The check behind acc_name, without a reply: NULL, or why not. */
const char *acc_name_check(const char *in, bool address, char *out, char **at);
/* Lower-cases in into out (ACC_ADDR_MAX bytes) and checks it as an address
 * (or a domain if !address); *at (if at) points at the '@'. 0, or -1 after
 * replying "invalid" naming field. */
int acc_name(accounts_t *a, bus_req_t **req, const char *field, const char *in,
	     bool address, char *out, char **at);
/* The same without a request: 0, or -1 with e "invalid" naming field. */
int acc_name_err(struct acc_err *e, const char *field, const char *in, bool address, char *out,
		 char **at);
/* The id of a hosted domain (lower-case name), 0 if we do not host it,
 * -1 on error. */
int64_t acc_domain_id(accounts_t *a, const char *name);
/* 1 if domain dom has a user local, 0 if not, -1 on error. */
int acc_user_exists(accounts_t *a, int64_t dom, const char *local);
/* Prepares sql binding fmt's parameters ('s' string or NULL, 'i' int64):
 * a cached statement (db_prepare), given back with db_release. */
sqlite3_stmt *acc_prep(accounts_t *a, const char *sql, const char *fmt, ...);
/* Steps and releases st: SQLITE_DONE (or ROW), else the extended code. */
int acc_run(accounts_t *a, sqlite3_stmt *st);
/* Column 0 of the first row of st (finalized here) as int64; -1 if no row
 * or on error. */
int64_t acc_int(accounts_t *a, sqlite3_stmt *st);
/* True if the last statement changed a row; else sets not_found with the
 * formatted reason ("no user x@y") and returns false. */
bool acc_changed(accounts_t *a, struct acc_err *e, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void acc_set(struct acc_err *e, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* One request in the group commit (batch.c): idem lookup, change(), idem
 * row in a savepoint; the reply follows the COMMIT. */
void acc_commit(accounts_t *a, bus_req_t **req, acc_change_fn change, void *ctx);
/* The same without the idempotency check and row. */
void acc_write(accounts_t *a, bus_req_t **req, acc_change_fn change, void *ctx);
/* Opens the batch if none is: 0, or -1 (database busy or failing). */
int acc_begin(accounts_t *a);
/* Counts bytes written in the open batch (a large batch commits early). */
void acc_wrote(accounts_t *a, size_t bytes);
/* Commits the open batch and sends its replies and events (a read that
 * replies with a raw frame calls it first). */
void acc_flush(accounts_t *a);
/* Rolls the open batch back: every reply of it becomes an error
 * (disk_full for SQLITE_FULL). */
void acc_abort(accounts_t *a, int sqlite_rc);
void batch_free(accounts_t *a);
/* The rows of st (released here) as row_fn items while their compact JSON
 * fits max_bytes (*cut when it stopped early; *bytes what they take);
 * NULL on a database error. */
json_t *acc_rows_new(accounts_t *a, sqlite3_stmt *st, acc_row_fn row_fn, size_t max_bytes, size_t *bytes,
		     bool *cut);
/* Replies {key: [row_fn(row)...], truncated} from st (released here). */
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
/* A mailbox as message operations need it (mailbox_lookup). */
#define MBX_NAME_MAX 255
struct mbx_ref {
	int64_t id, user_id, uidvalidity, uidnext, highestmodseq;
	int64_t quota, used;          /* the owner's quota_bytes (0: none) and used_bytes */
	char name[MBX_NAME_MAX + 1];  /* as stored ("INBOX" spelt so) */
};
/* Finds mailbox name (checked here) of the user addr (checked, lower-case)
 * inside the caller's transaction or read: 1, 0 with e not_found (no such
 * user or mailbox), -1 with e invalid (bad name) or internal. */
int mailbox_lookup(accounts_t *a, const char *addr, const char *name, struct mbx_ref *m,
		   struct acc_err *e);
/* Creates the default mailboxes (INBOX, Sent, Drafts, Junk, Trash,
 * Archive) of a new user inside the caller's transaction: 0 or -1. */
int mailbox_defaults(accounts_t *a, int64_t user_id);

/* ---- message.c: messages ---- */

/* The storaged.message.* handlers and storaged.mailbox.status. */
void message_store(bus_req_t **req, void *arg);
void message_fetch(bus_req_t **req, void *arg);
void message_list(bus_req_t **req, void *arg);
void mailbox_status(bus_req_t **req, void *arg);
/* System flags (\Seen...) and keywords of a JSON array of strings (NULL:
 * none): the bit mask (1 \Seen, 2 \Answered, 4 \Flagged, 8 \Deleted,
 * 16 \Draft) and the keywords sorted, space-separated, into kw. 0, or -1
 * with e invalid. */
#define MSG_FLAGS_MAX 64
int msg_flags_parse(const json_t *flags, int *bits, char *kw, size_t kwcap, struct acc_err *e);
/* The JSON array of strings for a mask and keyword text (new reference). */
json_t *msg_flags_json(int bits, const char *kw);
/* Deletes blobs left incomplete by a crash (at start): the number, or -1. */
int message_gc(db_t *db);
/* The batch was rolled back: uploads that wrote into it are dropped. */
void message_batch_failed(accounts_t *a);
/* A batch committed: cleans up after an earlier failed one, if any. */
void message_batch_committed(accounts_t *a);
void message_stats(json_t *stats, accounts_t *a);
void message_free(accounts_t *a);

/* ---- msgops.c: IMAP semantics on messages ---- */

/* storaged.message.{flags,expunge,copy,search} (arg: accounts_t). */
void msgops_flags(bus_req_t **req, void *arg);
void msgops_expunge(bus_req_t **req, void *arg);
void msgops_copy(bus_req_t **req, void *arg);
void msgops_search(bus_req_t **req, void *arg);
/* storaged.message.vanished: UIDs expunged after a MODSEQ (RFC 7162 QRESYNC). */
void msgops_vanished(bus_req_t **req, void *arg);

/* ---- search.c: search criteria compiled to SQL ---- */

typedef struct search_query search_query_t;
/* Called for each match in UID order; non-zero stops the run. */
typedef int (*search_row_fn)(uint32_t uid, int64_t modseq, void *arg);
/* Compiles a criteria tree (borrowed; see search.c) with "*" = star: a new
 * query, or NULL with e invalid. */
search_query_t *search_compile(const json_t *criteria, uint32_t star, struct acc_err *e);
/* Runs q over the messages of mailbox_id from UID from on, in UID order:
 * 0, or -1 on a database error (logged). *stopped is 0, or the UID before
 * which the run stopped because it had scanned enough message bytes for
 * one request (every UID before it has been decided). */
int search_run(accounts_t *a, const search_query_t *q, int64_t mailbox_id, int64_t from,
	       search_row_fn row, void *arg, int64_t *stopped);
void search_free(search_query_t **q);

/* ---- queue.c: the outbound queue ---- */

/* Enqueues the complete blob blob_id for sender ("" for a bounce) and
 * rcpts (a JSON array of address strings, borrowed, 1..1000), inside the
 * caller's transaction (message.c calls it for storaged.message.store's
 * "enqueue"); origin is smtpd's transaction id or NULL. The new entry's
 * id, or -1 with e set (invalid, internal). */
int64_t queue_add(accounts_t *a, int64_t blob_id, const char *sender, const json_t *rcpts,
		  const char *origin, struct acc_err *e);
/*
 * One storaged.queue.* request of type without the bus, at now_ms (unix
 * ms): fields (borrowed; the request's own, no envelope keys) are checked
 * strictly, then applied inside the caller's transaction (take, update,
 * retry, delete) or read (list, show). The reply's fields (new reference),
 * or NULL with e set (invalid, not_found, lease_lost, internal). The
 * handlers below run it; the unit tests too, with a clock of their own.
 */
json_t *queue_run_new(accounts_t *a, const char *type, const json_t *fields, int64_t now_ms,
		      struct acc_err *e);
/* The storaged.queue.* handlers (arg: accounts_t). */
void queue_take(bus_req_t **req, void *arg);
void queue_update(bus_req_t **req, void *arg);
void queue_list(bus_req_t **req, void *arg);
void queue_show(bus_req_t **req, void *arg);
void queue_retry(bus_req_t **req, void *arg);
void queue_delete(bus_req_t **req, void *arg);
/* ---- backup.c ---- */

/* Online snapshots for roostctl backup under <data_dir>/backup/; removes
 * what an earlier run left there. Borrows loop and db; free it before
 * db_close. */
backup_t *backup_new(loop_t *loop, db_t *db, const char *data_dir);
void backup_free(backup_t **b);
/* The storaged.backup.* handlers (arg: accounts_t, its backup set). */
void backup_start(bus_req_t **req, void *arg);
void backup_status(bus_req_t **req, void *arg);
void backup_read(bus_req_t **req, void *arg);
void backup_finish(bus_req_t **req, void *arg);
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
/* The same with the result already compact JSON text. */
int idem_store_text(db_t *db, const char *idem, const char *type, const char *text);
/* Deletes rows older than max_age_s; the number deleted, or -1. */
int idem_prune(db_t *db, int64_t max_age_s);

#endif
