/*
 * datadir.h — storaged's data directory as files: the lock that says one
 * storaged uses it, the names of files inside it, and careful file
 * operations (fsync, walk, remove, copy with SHA-256) shared by storaged's
 * online backup (backup.c) and `roostctl restore`, which works on the
 * directory while storaged is stopped (DESIGN.md "Processes").
 *
 * Every function reports failure as -1 with a one-line reason in err
 * ("<path>: <strerror>"); none exits. Paths are borrowed.
 *
 * Ownership: datadir_copy_new() returns a job the caller frees with
 * datadir_copy_free(), which nulls the pointer and removes an unfinished
 * destination file.
 */
#ifndef ROOST_STORAGED_DATADIR_H
#define ROOST_STORAGED_DATADIR_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#define DATADIR_LOCK "storaged.lock"   /* <data_dir>/storaged.lock */
#define DATADIR_NAME_MAX 255           /* a relative file name, bytes */
#define DATADIR_SHA256_HEX 65          /* 64 hex digits and the NUL */

/*
 * Opens (creating it, mode 0600) <data_dir>/storaged.lock and takes an
 * exclusive flock without waiting. Returns the descriptor (close-on-exec;
 * the lock lasts while it stays open), -2 if another process holds the
 * lock, -1 on any other error.
 */
int datadir_lock(const char *data_dir, char *err, size_t errlen);

/*
 * True if name is a safe relative file name: 1..DATADIR_NAME_MAX bytes of
 * printable ASCII (space included) but backslash, components separated by one
 * '/', none of them empty, "." or "..".
 */
bool datadir_name_ok(const char *name);

/* fsync of a directory, after creating, renaming or unlinking in it. */
int datadir_fsync_dir(const char *dir, char *err, size_t errlen);

/* mkdir -p of base/<the directories of name> (mode for new ones); base
 * itself must exist. */
int datadir_mkparents(const char *base, const char *name, mode_t mode, char *err, size_t errlen);

/* Removes path and everything below it without following symbolic links;
 * a missing path is not an error. */
int datadir_rmtree(const char *path, char *err, size_t errlen);

/*
 * Calls fn for every regular file below root/sub ("tls"), depth first, at
 * most max_depth directories deep, with its name relative to root
 * ("tls/live/cert.pem") and its lstat. Symbolic links and other special
 * files are skipped; a missing root/sub holds no files. fn returns 0 to go
 * on or -1 to stop with its own reason in err (the walk then returns -1).
 */
typedef int (*datadir_walk_fn)(const char *rel, const struct stat *st, void *arg,
			       char *err, size_t errlen);
int datadir_walk(const char *root, const char *sub, int max_depth, datadir_walk_fn fn,
		 void *arg, char *err, size_t errlen);

/*
 * A copy of src to dst (or, with dst NULL, a read of src) that computes
 * src's SHA-256 as it goes, in steps of bounded size so that storaged's
 * loop can interleave it with requests. src must be a regular file (not a
 * link) of at most max_size bytes; dst is created or truncated with mode
 * and fsynced before the last step returns.
 */
typedef struct datadir_copy datadir_copy_t;
datadir_copy_t *datadir_copy_new(const char *src, const char *dst, mode_t mode, int64_t max_size,
				 char *err, size_t errlen);
/* Copies up to max bytes: 1 when finished, 0 if more is left, -1. */
int datadir_copy_step(datadir_copy_t *c, size_t max, char *err, size_t errlen);
/* After the last step: the bytes copied and their SHA-256 (hex, borrowed). */
int64_t datadir_copy_size(const datadir_copy_t *c);
const char *datadir_copy_sha256(const datadir_copy_t *c);
void datadir_copy_free(datadir_copy_t **c);
/* All steps at once (roostctl): 0 with size and hex (DATADIR_SHA256_HEX), or -1. */
int datadir_copy_all(const char *src, const char *dst, mode_t mode, int64_t max_size,
		     int64_t *size, char *hex, char *err, size_t errlen);

/* Writes all of buf to fd: 0, or -1 (errno). */
int datadir_write_all(int fd, const void *buf, size_t len);

/* Runs a statement that answers one row (a pragma) and copies its column 0
 * as text into out: SQLITE_OK, or SQLite's error. */
int datadir_db_text(sqlite3 *h, const char *sql, char *out, size_t outlen);

/*
 * Checks the database file path as it is, without changing it (opened
 * read-only and immutable: no lock, no -wal or -shm beside it): PRAGMA
 * integrity_check must say ok; *schema gets its user_version. 0 or -1.
 */
int datadir_db_check(const char *path, int *schema, char *err, size_t errlen);

/* "%02x" of n bytes into out (2n+1 bytes). */
void datadir_hex(const unsigned char *bytes, size_t n, char *out);

#endif
