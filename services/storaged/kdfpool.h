/*
 * kdfpool.h — a small fixed pool of threads that runs password_hash and
 * password_verify (password.h) off storaged's event loop.
 *
 * Jobs go into a bounded FIFO; workers take them, and put finished jobs on
 * a done-queue and poke an eventfd watched by the loop. The loop's callback
 * drains the done-queue and calls each job's `done` — so callbacks always
 * run on the loop thread, never on a worker.
 *
 * Ownership: the pool copies the password (wiped with OPENSSL_cleanse and
 * freed after use) and the stored string; callers' buffers are borrowed only
 * for the duration of the submit call. The hash string passed to a hash
 * callback lives only during the callback.
 *
 * Thread rules: every kdfpool_* call must come from the loop thread. A
 * callback may submit new jobs but must not free the pool.
 */
#ifndef ROOST_STORAGED_KDFPOOL_H
#define ROOST_STORAGED_KDFPOOL_H

#include <stddef.h>

#include "loop.h"
#include "password.h"

#define KDFPOOL_DEFAULT_THREADS 2
#define KDFPOOL_MAX_THREADS 16
#define KDFPOOL_MAX_JOBS 1024   /* outstanding jobs: queued + running + undelivered */

typedef struct kdfpool kdfpool_t;

/* result: as password_verify (1 match, 0 mismatch, -1 error). */
typedef void (*kdfpool_verify_fn)(int result, void *arg);
/* result: 0 with hash the new stored string, or -1 with hash NULL. */
typedef void (*kdfpool_hash_fn)(int result, const char *hash, void *arg);

/*
 * Starts threads workers (<= 0: KDFPOOL_DEFAULT_THREADS; capped at
 * KDFPOOL_MAX_THREADS) and watches the wake-up fd on loop. Returns NULL if
 * the eventfd, the watch or every thread failed to start.
 */
kdfpool_t *kdfpool_new(loop_t *loop, int threads);

/*
 * Stops the pool and nulls *p; NULL is fine. Running jobs are finished
 * (the KDF cannot be interrupted) and the threads joined. Then, on the
 * calling thread, jobs already finished get their callbacks with their real
 * result, and jobs still queued are dropped with their callbacks called with
 * -1 (hash NULL). Every submitted job's callback runs exactly once; nothing
 * leaks. Do not call from inside a pool callback.
 */
void kdfpool_free(kdfpool_t **p);

/*
 * Queues a verify of password (len bytes) against stored. Returns 0, or -1
 * when KDFPOOL_MAX_JOBS are outstanding (the caller answers "busy") or on
 * NULL pool/stored/done; on -1 done is never called. A password length out
 * of bounds is accepted and completes with -1, like password_verify.
 */
int kdfpool_verify(kdfpool_t *p, const char *password, size_t len, const char *stored,
		kdfpool_verify_fn done, void *arg);

/* Queues a password_hash with params (copied); returns as kdfpool_verify. */
int kdfpool_hash(kdfpool_t *p, const char *password, size_t len,
		const struct password_params *params, kdfpool_hash_fn done, void *arg);

#endif
