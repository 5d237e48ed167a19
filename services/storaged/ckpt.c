/*
 * ckpt.c — see ckpt.h. WAL checkpoints on a thread of their own.
 *
 * Why: SQLite's automatic checkpoint runs inside the COMMIT that takes the
 * WAL past 1,000 pages, on the loop: the batch's replies (a 250 in smtpd,
 * a tagged OK in imapd) wait while it copies those pages into the database
 * file and fsyncs it. A PASSIVE checkpoint from a second connection copies
 * while the loop keeps committing — WAL mode lets one checkpointer and one
 * writer work at once. Once every frame is copied, the writer's next
 * transaction starts the WAL again from its beginning, so its blocks are
 * overwritten rather than appended (an fdatasync after an append must also
 * write the file's new size: slower, measured in bench/RESULTS.md).
 *
 * Durability is SQLite's own: the checkpoint connection runs with
 * synchronous=FULL, so the database file is fsynced before the WAL may be
 * reused. If the thread falls behind (the WAL reaches CKPT_FORCE_PAGES),
 * the loop checkpoints itself, as SQLite would have, so the WAL stays
 * bounded whatever the load.
 */
#include "ckpt.h"

#include "log.h"
#include "util.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#define CKPT_PAGES 1000          /* SQLite's own wal_autocheckpoint default */
#define CKPT_FORCE_PAGES 16000   /* 64 MiB of 4 KiB frames: the loop does it */

struct ckpt {
	sqlite3 *main;          /* the loop's connection (borrowed) */
	sqlite3 *h;             /* the thread's own connection */
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool want, stop;
	bool running;           /* the thread was started */
	uint64_t runs, forced;  /* under mu */
};

static void *ckpt_thread(void *arg)
{
	ckpt_t *c = arg;
	pthread_mutex_lock(&c->mu);
	for (;;) {
		while (!c->want && !c->stop)
			pthread_cond_wait(&c->cv, &c->mu);
		if (c->stop)
			break;
		c->want = false;
		pthread_mutex_unlock(&c->mu);
		int rc = sqlite3_wal_checkpoint_v2(c->h, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
		/* BUSY: another checkpoint (the loop's, after a full disk) runs;
		 * the next commit past the threshold asks again. */
		if (rc != SQLITE_OK && rc != SQLITE_BUSY)
			log_warn("db", "op=checkpoint why=%s", log_quote(sqlite3_errmsg(c->h)));
		pthread_mutex_lock(&c->mu);
		c->runs++;
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

/* SQLite calls this after every COMMIT, the write lock released, with the
 * number of frames in the WAL. */
static int ckpt_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
	ckpt_t *c = arg;
	if (pages < CKPT_PAGES)
		return SQLITE_OK;
	if (pages >= CKPT_FORCE_PAGES) {
		sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
		pthread_mutex_lock(&c->mu);
		c->forced++;
		pthread_mutex_unlock(&c->mu);
		return SQLITE_OK;
	}
	pthread_mutex_lock(&c->mu);
	if (!c->want) {
		c->want = true;
		pthread_cond_signal(&c->cv);
	}
	pthread_mutex_unlock(&c->mu);
	return SQLITE_OK;
}

ckpt_t *ckpt_start(db_t *db, const char *path, char *err, size_t errlen)
{
	ckpt_t *c = xcalloc(1, sizeof *c);
	c->main = db_handle(db);
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
	int rc = sqlite3_open_v2(path, &c->h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(c->h, "PRAGMA synchronous=FULL", NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "%s: checkpoint connection: %s", path,
			 c->h ? sqlite3_errmsg(c->h) : sqlite3_errstr(rc));
		ckpt_stop(&c);
		return NULL;
	}
	if (pthread_create(&c->thread, NULL, ckpt_thread, c) != 0) {
		snprintf(err, errlen, "cannot start the checkpoint thread");
		ckpt_stop(&c);
		return NULL;
	}
	c->running = true;
	/* Replaces SQLite's automatic checkpoint (wal_autocheckpoint is itself
	 * a WAL hook). */
	sqlite3_wal_hook(c->main, ckpt_hook, c);
	return c;
}

void ckpt_stats(ckpt_t *c, uint64_t *runs, uint64_t *forced)
{
	pthread_mutex_lock(&c->mu);
	*runs = c->runs;
	*forced = c->forced;
	pthread_mutex_unlock(&c->mu);
}

void ckpt_stop(ckpt_t **cp)
{
	ckpt_t *c = *cp;
	if (c == NULL)
		return;
	*cp = NULL;
	if (c->running) {
		/* Back to SQLite's own checkpoints for what the loop still
		 * commits (the last batch) and for db_close. */
		sqlite3_wal_autocheckpoint(c->main, CKPT_PAGES);
		pthread_mutex_lock(&c->mu);
		c->stop = true;
		pthread_cond_signal(&c->cv);
		pthread_mutex_unlock(&c->mu);
		pthread_join(c->thread, NULL);
	}
	sqlite3_close(c->h);
	pthread_cond_destroy(&c->cv);
	pthread_mutex_destroy(&c->mu);
	free(c);
}
