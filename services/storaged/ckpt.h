/*
 * ckpt.h — WAL checkpoints off the loop (ckpt.c says why).
 *
 * ckpt_start opens a second connection to the database at path and a
 * thread that checkpoints through it whenever a COMMIT on db's connection
 * leaves 1,000 pages or more in the WAL. db is borrowed and must outlive
 * the ckpt_t; ckpt_stop (before db_close) joins the thread, closes its
 * connection and gives the checkpoints back to SQLite.
 */
#ifndef ROOST_STORAGED_CKPT_H
#define ROOST_STORAGED_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "db.h"

typedef struct ckpt ckpt_t;  /* also struct ckpt in storaged.h */

/* NULL and a one-line err on failure. */
ckpt_t *ckpt_start(db_t *db, const char *path, char *err, size_t errlen);
/* Checkpoints the thread ran, and those the loop had to run itself. */
void ckpt_stats(ckpt_t *c, uint64_t *runs, uint64_t *forced);
void ckpt_stop(ckpt_t **c);

#endif
