/*
 * storaged.h — storaged's modules as main.c sees them.
 *
 * accounts.c answers the storaged.{domain,user,alias}.* requests of the
 * accounts slice (/tmp/storaged_spec.md, docs/BUS.md) from the SQLite
 * database (db.h), hashing passwords off the loop (kdfpool.h).
 * idem.c keeps the replies of state-changing requests under their idem key
 * so that a retried request changes nothing and gets the same answer.
 *
 * Ownership: accounts_new() borrows db and kdf (they must outlive it);
 * accounts_free() frees and nulls. accounts_handlers is static data.
 */
#ifndef ROOST_STORAGED_H
#define ROOST_STORAGED_H

#include <jansson.h>
#include <stdint.h>

#include "bus.h"
#include "db.h"
#include "kdfpool.h"

#define IDEM_MAX_AGE_S (7 * 24 * 3600)   /* idempotency rows older are pruned */

typedef struct accounts accounts_t;

/* The handler table for bus_worker_new; its arg is an accounts_t. */
extern const bus_handler_t accounts_handlers[];

accounts_t *accounts_new(db_t *db, kdfpool_t *kdf);
void accounts_free(accounts_t **a);
/* Requests are counted on ctl too (control.stats "requests"); NULL: not. */
void accounts_set_control(accounts_t *a, bus_control_t *ctl);
/* bus_stats_fn: adds domains, users and requests by outcome to stats. */
void accounts_stats(json_t *stats, void *arg);

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
