/*
 * backup.c — online snapshots for `roostctl backup` (issue 3):
 *
 *   storaged.backup.start    begins a snapshot, replies at once {backup, state}
 *   storaged.backup.status   {backup} -> state, schema; the files once done
 *   storaged.backup.read     {backup, name, offset, length} -> the bytes, one raw frame
 *   storaged.backup.finish   {backup} -> the snapshot is deleted
 *
 * (The snapshot's id travels as "backup": "id" is the envelope's.)
 *
 * A snapshot is <data_dir>/backup/<id>/: roost.db, copied from storaged's
 * own connection with SQLite's online backup API, and every regular file
 * below <data_dir>/tls/ and <data_dir>/dkim/ (links skipped; at most
 * BK_FILES_MAX files of BK_FILE_MAX bytes). storaged may run in a
 * container, so the operator's tool fetches it over the bus, never from
 * the file system.
 *
 * The work runs in ticks of a re-armed 0-ms loop timer, each one bounded,
 * so that storaged keeps answering requests in between:
 *
 *   PAGES  sqlite3_backup_step of BK_STEP_PAGES pages. What storaged itself
 *          writes meanwhile reaches the copy too (same connection); while
 *          a transaction is open on it the step says SQLITE_BUSY and the
 *          tick simply comes back BK_BUSY_MS later. The copy has no journal
 *          and no syncs (until it is done it is no backup anyway).
 *   FLUSH  writes the copy's pages to disk, BK_STEP_BYTES per tick
 *          (sync_file_range), so that no single fsync later has to wait
 *          for the whole file — seconds for a large one on an SD card
 *   SEAL   reopens the copy and makes it a rollback-journal database (its
 *          pages carry the source's WAL mark), which fsyncs it; reads its
 *          user_version
 *   FILES  hashes roost.db, copies and hashes each tls/dkim file, up to
 *          BK_STEP_BYTES per tick; every file and directory is fsynced
 *   then   state done, or failed (with its reason) and the files removed
 *
 * At most one snapshot runs, and at most BK_MAX exist (the others wait to be
 * read and finished). Snapshots live only as long as this storaged:
 * backup_new removes what an earlier run left (a crash), and a periodic
 * timer removes one left unused for BK_IDLE_MS.
 *
 * Ownership: backup_t borrows loop and db; it owns its snapshots, their
 * timers and SQLite handles. backup_free must run before db_close (an
 * unfinished sqlite3_backup keeps the source connection busy).
 */
#include "storaged.h"

#include "datadir.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define BK_DIR "backup"                 /* <data_dir>/backup/<id>/ */
#define BK_DB "roost.db"
#define BK_MAX 4                        /* snapshots at once, running or waiting */
#define BK_STEP_PAGES 256               /* pages per tick: 1 MiB of 4 KiB pages */
#define BK_STEP_BYTES (1024 * 1024)     /* bytes hashed or copied per tick */
#define BK_BUSY_MS 10                   /* wait after SQLITE_BUSY */
#define BK_FILES_MAX 1000               /* tls/ and dkim/ files */
#define BK_FILE_MAX (16LL * 1024 * 1024)
#define BK_DEPTH_MAX 8                  /* directories below tls/ or dkim/ */
#define BK_IDLE_MS (3600LL * 1000)      /* unused this long: removed */
#define BK_SWEEP_MS (60 * 1000)
#define BK_ID_LEN 26                    /* "20241125T130000Z-0123abcd" and NUL */

enum bk_state { BK_RUNNING, BK_DONE, BK_FAILED };
static const char *const bk_state_names[] = { "running", "done", "failed" };

enum bk_phase { BK_PAGES, BK_FLUSH, BK_SEAL, BK_FILES };

struct bk_file {
	char *name;                     /* relative: "roost.db", "tls/cert.pem" */
	int64_t size;
	char sha256[DATADIR_SHA256_HEX];
};

struct bk_snap {
	backup_t *b;
	char id[BK_ID_LEN];
	char *idem;                     /* start's idempotency key, or NULL */
	char *dir;                      /* <data_dir>/backup/<id> */
	enum bk_state state;
	enum bk_phase phase;
	char error[256];
	int schema;
	const char *refusal;            /* error code of a file the walk refused */
	int64_t started, used;          /* monotonic ms: start, last request */
	struct bk_file *files;          /* [0] is roost.db, the rest sorted */
	size_t nfiles, next;            /* next: the file FILES works on */
	/* while running */
	sqlite3 *dst;
	sqlite3_backup *bk;
	int fd;                         /* FLUSH: the copy; -1 otherwise */
	int64_t flushed;
	datadir_copy_t *copy;
	loop_timer_t *tick;
};

struct backup {
	loop_t *loop;
	db_t *db;
	char *data_dir, *root;          /* root: <data_dir>/backup */
	struct bk_snap *snaps[BK_MAX];
	loop_timer_t *sweep;
};

static void bk_tick(loop_t *loop, void *arg);

/* ---- snapshots ---------------------------------------------------------------- */

/* Frees what only a running snapshot holds (SQLite handles, copy, tick). */
static void bk_release(struct bk_snap *s)
{
	loop_timer_cancel(s->b->loop, &s->tick);
	if (s->bk != NULL)
		sqlite3_backup_finish(s->bk);
	s->bk = NULL;
	if (s->dst != NULL)
		sqlite3_close(s->dst);
	s->dst = NULL;
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	datadir_copy_free(&s->copy);
}

/* Removes a snapshot's files and frees it. */
static void bk_snap_free(struct bk_snap **sp)
{
	struct bk_snap *s = *sp;
	char err[256];
	if (s == NULL)
		return;
	bk_release(s);
	if (s->dir != NULL && datadir_rmtree(s->dir, err, sizeof err) < 0)
		log_warn("backup.remove", "id=%s why=%s", s->id, log_quote(err));
	for (size_t i = 0; i < s->nfiles; i++)
		free(s->files[i].name);
	free(s->files);
	free(s->idem);
	free(s->dir);
	free(s);
	*sp = NULL;
}

/* The snapshot fails: its reason is kept for status, its files go. */
static void bk_fail(struct bk_snap *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bk_fail(struct bk_snap *s, const char *fmt, ...)
{
	va_list ap;
	char err[256];
	va_start(ap, fmt);
	vsnprintf(s->error, sizeof s->error, fmt, ap);
	va_end(ap);
	bk_release(s);
	s->state = BK_FAILED;
	if (datadir_rmtree(s->dir, err, sizeof err) < 0)
		log_warn("backup.remove", "id=%s why=%s", s->id, log_quote(err));
	log_warn("backup.failed", "id=%s why=%s", s->id, log_quote(s->error));
}

/* An id that sorts by time and names a directory: 20241125T130000Z-0123abcd. */
static void bk_make_id(char id[BK_ID_LEN])
{
	time_t now = time(NULL);
	struct tm tm;
	uint32_t r;
	if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r)
		r = (uint32_t)now_us() ^ (uint32_t)getpid();  /* unique is enough */
	gmtime_r(&now, &tm);
	strftime(id, BK_ID_LEN, "%Y%m%dT%H%M%SZ", &tm);
	snprintf(id + 16, BK_ID_LEN - 16, "-%08x", (unsigned)r);
}

/* Appends a file to the snapshot's list. */
static void bk_add_file(struct bk_snap *s, const char *name)
{
	s->files = xrealloc(s->files, (s->nfiles + 1) * sizeof *s->files);
	memset(&s->files[s->nfiles], 0, sizeof *s->files);
	s->files[s->nfiles++].name = xstrdup(name);
}

/* datadir_walk_fn: one tls/ or dkim/ file, within the bounds. */
static int bk_collect(const char *rel, const struct stat *st, void *arg, char *err, size_t errlen)
{
	struct bk_snap *s = arg;
	s->refusal = "too_large";
	if (s->nfiles - 1 >= BK_FILES_MAX) {  /* files[0] is roost.db */
		snprintf(err, errlen, "more than %d files under tls/ and dkim/", BK_FILES_MAX);
		return -1;
	}
	if (st->st_size > BK_FILE_MAX) {
		snprintf(err, errlen, "%s: larger than 16 MiB", rel);
		return -1;
	}
	s->refusal = "unsupported";
	if (!datadir_name_ok(rel)) {
		/* said with '?' for every byte a reply (JSON, one line) cannot carry */
		snprintf(err, errlen, "%.200s: a name a backup cannot carry (printable ASCII only)", rel);
		for (char *c = err; *c != '\0'; c++)
			*c = *c < ' ' || *c > '~' ? '?' : *c;
		return -1;
	}
	s->refusal = NULL;
	bk_add_file(s, rel);
	return 0;
}

static int bk_file_cmp(const void *x, const void *y)
{
	return strcmp(((const struct bk_file *)x)->name, ((const struct bk_file *)y)->name);
}

/*
 * Opens the copy and the SQLite backup from storaged's connection into it;
 * the directory is already there. 0, or -1 with the reason in e.
 */
static int bk_open_copy(struct bk_snap *s, struct acc_err *e)
{
	char *path = xasprintf("%s/%s", s->dir, BK_DB);
	int rc = sqlite3_open_v2(path, &s->dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
				 SQLITE_OPEN_NOMUTEX, NULL);
	/* No journal, no fsync while it fills: FLUSH and SEAL make it durable. */
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(s->dst, "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF",
				  NULL, NULL, NULL);
	if (rc == SQLITE_OK) {
		s->bk = sqlite3_backup_init(s->dst, "main", db_handle(s->b->db), "main");
		if (s->bk == NULL)
			rc = sqlite3_errcode(s->dst);
	}
	if (rc != SQLITE_OK)
		acc_set(e, "internal", "cannot start the copy %s: %s", path,
			s->dst != NULL ? sqlite3_errmsg(s->dst) : sqlite3_errstr(rc));
	free(path);
	return rc == SQLITE_OK ? 0 : -1;
}

/* A new running snapshot: its directory, its file list, the copy opened. */
static struct bk_snap *bk_snap_new(backup_t *b, const char *idem, struct acc_err *e)
{
	struct bk_snap *s = xcalloc(1, sizeof *s);
	char err[256];
	s->b = b;
	s->fd = -1;
	s->idem = idem != NULL ? xstrdup(idem) : NULL;
	s->schema = db_version(b->db);
	s->started = s->used = now_ms();
	bk_make_id(s->id);
	bk_add_file(s, BK_DB);
	char *dir = xasprintf("%s/%s", b->root, s->id);
	if ((mkdir(b->root, 0700) < 0 && errno != EEXIST) || mkdir(dir, 0700) < 0) {
		acc_set(e, "internal", "cannot create %s: %s", dir, strerror(errno));
		free(dir);  /* not ours to remove: it may be another snapshot's */
		goto fail;
	}
	s->dir = dir;
	if (datadir_walk(b->data_dir, "tls", BK_DEPTH_MAX, bk_collect, s, err, sizeof err) < 0 ||
	    datadir_walk(b->data_dir, "dkim", BK_DEPTH_MAX, bk_collect, s, err, sizeof err) < 0) {
		acc_set(e, s->refusal != NULL ? s->refusal : "internal", "%s", err);
		goto fail;
	}
	qsort(s->files + 1, s->nfiles - 1, sizeof *s->files, bk_file_cmp);
	if (bk_open_copy(s, e) < 0)
		goto fail;
	s->tick = loop_timer_add(b->loop, 0, false, bk_tick, s);
	return s;
fail:
	bk_snap_free(&s);
	return NULL;
}

/* ---- the ticks ---------------------------------------------------------------- */

/* PAGES: one bounded step. 1 when every page is copied, 0 for more
 * (after *delay ms), -1 failed. */
static int bk_step_pages(struct bk_snap *s, int *delay)
{
	int rc = sqlite3_backup_step(s->bk, BK_STEP_PAGES);
	if (rc == SQLITE_OK)
		return 0;
	if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) {
		*delay = BK_BUSY_MS;  /* a transaction is open on the source */
		return 0;
	}
	int fin = sqlite3_backup_finish(s->bk);
	s->bk = NULL;
	if (rc == SQLITE_DONE && fin == SQLITE_OK)
		return 1;
	bk_fail(s, "copying the database: %s", sqlite3_errstr(rc == SQLITE_DONE ? fin : rc));
	return -1;
}

/* FLUSH: writes out (and waits for) the next BK_STEP_BYTES of the copy.
 * 1 when all of it is on disk, 0 for more, -1 failed. */
static int bk_step_flush(struct bk_snap *s)
{
	struct stat st;
	if (s->fd < 0) {
		char *path = xasprintf("%s/%s", s->dir, BK_DB);
		s->fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		free(path);
	}
	if (s->fd < 0 || fstat(s->fd, &st) < 0) {
		bk_fail(s, "flushing the copy: %s", strerror(errno));
		return -1;
	}
	int64_t n = st.st_size - s->flushed < BK_STEP_BYTES ? st.st_size - s->flushed : BK_STEP_BYTES;
	if (n <= 0) {
		close(s->fd);
		s->fd = -1;
		return 1;
	}
	if (sync_file_range(s->fd, (off_t)s->flushed, (off_t)n, SYNC_FILE_RANGE_WAIT_BEFORE |
			    SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER) < 0) {
		bk_fail(s, "flushing the copy: %s", strerror(errno));
		return -1;
	}
	s->flushed += n;
	return 0;
}

/*
 * SEAL: the copy holds the source's header, which marks it WAL; reopened
 * and switched to a rollback journal it is one self-contained file that a
 * read-only open (roostctl restore's check) can read. Reads user_version.
 */
static int bk_seal(struct bk_snap *s)
{
	char *path = xasprintf("%s/%s", s->dir, BK_DB);
	char mode[16] = "", ver[16] = "";
	sqlite3 *h = NULL;
	sqlite3_close(s->dst);
	s->dst = NULL;
	int rc = sqlite3_open_v2(path, &h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc == SQLITE_OK && (datadir_db_text(h, "PRAGMA journal_mode=DELETE", mode,
						sizeof mode) != SQLITE_OK || strcasecmp(mode, "delete") != 0 ||
				datadir_db_text(h, "PRAGMA user_version", ver, sizeof ver) != SQLITE_OK))
		rc = SQLITE_ERROR;
	if (rc != SQLITE_OK)
		bk_fail(s, "sealing the copy: %s", h != NULL ? sqlite3_errmsg(h) : sqlite3_errstr(rc));
	else
		s->schema = atoi(ver);
	sqlite3_close(h);
	free(path);
	return rc == SQLITE_OK ? 1 : -1;
}

/* After the last file: fsync every directory of the snapshot (the files
 * are sorted, so a directory's files are neighbours). */
static int bk_sync_dirs(struct bk_snap *s)
{
	char err[256];
	const char *prev = NULL;
	size_t prevlen = 0;
	for (size_t i = 0; i < s->nfiles; i++) {
		const char *slash = strrchr(s->files[i].name, '/');
		size_t len = slash != NULL ? (size_t)(slash - s->files[i].name) : 0;
		if (prev != NULL && len == prevlen && strncmp(prev, s->files[i].name, len) == 0)
			continue;
		prev = s->files[i].name;
		prevlen = len;
		char *dir = xasprintf("%s%s%.*s", s->dir, len ? "/" : "", (int)len, prev);
		int rc = datadir_fsync_dir(dir, err, sizeof err);
		free(dir);
		if (rc < 0) {
			bk_fail(s, "%s", err);
			return -1;
		}
	}
	return 1;
}

/* FILES: hashes roost.db, copies and hashes the others, a bounded piece
 * per tick. 1 when all are done, 0 for more, -1 failed. */
static int bk_step_files(struct bk_snap *s)
{
	char err[256];
	if (s->next == s->nfiles)
		return bk_sync_dirs(s);
	struct bk_file *f = &s->files[s->next];
	if (s->copy == NULL) {
		bool db = s->next == 0;   /* already in place: only hashed */
		char *src = xasprintf("%s/%s", db ? s->dir : s->b->data_dir, f->name);
		char *dst = db ? NULL : xasprintf("%s/%s", s->dir, f->name);
		if (db || datadir_mkparents(s->dir, f->name, 0700, err, sizeof err) == 0)
			s->copy = datadir_copy_new(src, dst, 0600, db ? INT64_MAX : BK_FILE_MAX,
						   err, sizeof err);
		free(src);
		free(dst);
		if (s->copy == NULL) {
			bk_fail(s, "%s", err);
			return -1;
		}
	}
	int rc = datadir_copy_step(s->copy, BK_STEP_BYTES, err, sizeof err);
	if (rc < 0) {
		bk_fail(s, "%s", err);
		return -1;
	}
	if (rc == 1) {
		f->size = datadir_copy_size(s->copy);
		memcpy(f->sha256, datadir_copy_sha256(s->copy), sizeof f->sha256);
		datadir_copy_free(&s->copy);
		s->next++;
	}
	return 0;
}

/* The snapshot is complete. */
static void bk_done(struct bk_snap *s)
{
	int64_t bytes = 0;
	for (size_t i = 0; i < s->nfiles; i++)
		bytes += s->files[i].size;
	s->state = BK_DONE;
	log_info("backup.done", "id=%s schema=%d files=%zu bytes=%lld ms=%lld", s->id, s->schema,
		 s->nfiles, (long long)bytes, (long long)(now_ms() - s->started));
}

/* loop_timer_fn: one bounded piece of work, then the next tick. */
static void bk_tick(loop_t *loop, void *arg)
{
	struct bk_snap *s = arg;
	int delay = 0, rc;
	s->tick = NULL;   /* one-shot: already freed */
	if (s->phase == BK_PAGES)
		rc = bk_step_pages(s, &delay);
	else if (s->phase == BK_FLUSH)
		rc = bk_step_flush(s);
	else if (s->phase == BK_SEAL)
		rc = bk_seal(s);
	else
		rc = bk_step_files(s);
	if (rc < 0)
		return;   /* bk_fail said why */
	if (rc == 1 && s->phase == BK_FILES) {
		bk_done(s);
		return;
	}
	if (rc == 1)
		s->phase++;
	s->tick = loop_timer_add(loop, delay, false, bk_tick, s);
}

/* loop_timer_fn: removes the snapshots nobody has asked about for an hour. */
static void bk_sweep(loop_t *loop, void *arg)
{
	backup_t *b = arg;
	(void)loop;
	for (size_t i = 0; i < BK_MAX; i++) {
		struct bk_snap *s = b->snaps[i];
		if (s != NULL && s->state != BK_RUNNING && now_ms() - s->used > BK_IDLE_MS) {
			log_info("backup.expired", "id=%s", s->id);
			bk_snap_free(&b->snaps[i]);
		}
	}
}

/* ---- the requests -------------------------------------------------------------- */

/* The backup state of a request's accounts_t; NULL after replying. */
static backup_t *bk_of(accounts_t *a, bus_req_t **req)
{
	if (a->backup == NULL)
		acc_fail(a, req, "internal", "backups are not set up in this storaged");
	return a->backup;
}

/* The snapshot named id, NULL if none (a not_found reply is sent if req). */
static struct bk_snap *bk_find(accounts_t *a, bus_req_t **req, const char *id)
{
	char msg[160];
	for (size_t i = 0; i < BK_MAX; i++) {
		struct bk_snap *s = a->backup->snaps[i];
		if (s != NULL && strcmp(s->id, id) == 0) {
			s->used = now_ms();
			return s;
		}
	}
	if (req != NULL) {
		snprintf(msg, sizeof msg, "no backup %.64s (finished, expired, or storaged restarted)", id);
		acc_fail(a, req, "not_found", msg);
	}
	return NULL;
}

/* Replies {backup, state} for s. */
static void bk_reply_state(accounts_t *a, bus_req_t **req, const struct bk_snap *s)
{
	json_t *f = json_pack("{s:s, s:s}", "backup", s->id, "state", bk_state_names[s->state]);
	acc_ok(a, req, &f);
}

/* The free slot, or -1 after replying busy: one runs, or BK_MAX exist. */
static int bk_slot(accounts_t *a, bus_req_t **req)
{
	char msg[160];
	int slot = -1;
	for (int i = 0; i < BK_MAX; i++) {
		const struct bk_snap *s = a->backup->snaps[i];
		if (s != NULL && s->state == BK_RUNNING) {
			snprintf(msg, sizeof msg, "backup %s is running", s->id);
			acc_fail(a, req, "busy", msg);
			return -1;
		}
		if (s == NULL && slot < 0)
			slot = i;
	}
	if (slot < 0)
		acc_fail(a, req, "busy", "4 backups wait for storaged.backup.finish (or expire "
			 "after an hour unused)");
	return slot;
}

void backup_start(bus_req_t **req, void *arg)
{
	accounts_t *a = arg;
	const char *idem = json_string_value(json_object_get(bus_req_env(*req), "idem"));
	struct acc_err e = { "internal", "" };
	if (ACC_UNPACK(a, req, "{}") < 0 || bk_of(a, req) == NULL)
		return;
	backup_t *b = a->backup;
	/* A resent start (same key) gets the snapshot the first one began. */
	for (size_t i = 0; idem != NULL && i < BK_MAX; i++)
		if (b->snaps[i] != NULL && b->snaps[i]->idem != NULL &&
		    strcmp(b->snaps[i]->idem, idem) == 0) {
			bk_reply_state(a, req, b->snaps[i]);
			return;
		}
	int slot = bk_slot(a, req);
	if (slot < 0)
		return;
	struct bk_snap *s = bk_snap_new(b, idem, &e);
	if (s == NULL) {
		log_warn("backup.start", "why=%s", log_quote(e.msg));
		acc_fail(a, req, e.code, e.msg);
		return;
	}
	b->snaps[slot] = s;
	log_info("backup.started", "id=%s schema=%d files=%zu", s->id, s->schema, s->nfiles);
	bk_reply_state(a, req, s);
}

void backup_status(bus_req_t **req, void *arg)
{
	accounts_t *a = arg;
	const char *id;
	struct bk_snap *s;
	if (ACC_UNPACK(a, req, "{s:s}", "backup", &id) < 0 || bk_of(a, req) == NULL ||
	    (s = bk_find(a, req, id)) == NULL)
		return;
	json_t *f = json_pack("{s:s, s:s, s:i}", "backup", s->id, "state", bk_state_names[s->state],
			      "schema", s->schema);
	if (s->state == BK_FAILED)
		json_object_set_new(f, "error", json_string(s->error));
	if (s->state == BK_DONE) {
		json_t *files = json_array();
		for (size_t i = 0; i < s->nfiles; i++)
			json_array_append_new(files, json_pack("{s:s, s:I, s:s}", "name", s->files[i].name,
							       "size", (json_int_t)s->files[i].size,
							       "sha256", s->files[i].sha256));
		json_object_set_new(f, "files", files);
	}
	acc_ok(a, req, &f);
}

/* Reads len bytes at off of the snapshot's file name into a new buffer. */
static unsigned char *bk_pread_new(const struct bk_snap *s, const char *name, int64_t off,
				   size_t len, char *err, size_t errlen)
{
	char *path = xasprintf("%s/%s", s->dir, name);
	unsigned char *buf = xmalloc(len > 0 ? len : 1);
	size_t got = 0;
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	while (fd >= 0 && got < len) {
		ssize_t r = pread(fd, buf + got, len - got, (off_t)(off + (int64_t)got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			if (r == 0)
				errno = EIO;  /* shorter than when it was hashed */
			break;
		}
		got += (size_t)r;
	}
	if (got < len) {
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
		free(buf);
		buf = NULL;
	}
	if (fd >= 0)
		close(fd);
	free(path);
	return buf;
}

/* The file name of a done snapshot, or NULL after replying why not. */
static const struct bk_file *bk_file_of(accounts_t *a, bus_req_t **req, const struct bk_snap *s,
					const char *name)
{
	char msg[160];
	if (s->state != BK_DONE) {
		snprintf(msg, sizeof msg, "backup %s is %s", s->id, bk_state_names[s->state]);
		acc_fail(a, req, s->state == BK_RUNNING ? "not_ready" : "failed", msg);
		return NULL;
	}
	for (size_t i = 0; i < s->nfiles; i++)
		if (strcmp(s->files[i].name, name) == 0)
			return &s->files[i];
	snprintf(msg, sizeof msg, "backup %s has no file %.64s", s->id, name);
	acc_fail(a, req, "not_found", msg);
	return NULL;
}

void backup_read(bus_req_t **req, void *arg)
{
	accounts_t *a = arg;
	const char *id, *name;
	json_int_t off, len;
	char err[256];
	struct bk_snap *s;
	const struct bk_file *f;
	if (ACC_UNPACK(a, req, "{s:s, s:s, s:I, s:I}", "backup", &id, "name", &name, "offset", &off,
		       "length", &len) < 0 || bk_of(a, req) == NULL)
		return;
	if (!datadir_name_ok(name)) {
		acc_fail(a, req, "invalid", "name: a relative path inside the backup, without \"..\"");
		return;
	}
	if (off < 0 || len < 0 || len > BUS_RAW_MAX) {
		acc_fail(a, req, "invalid", "offset must be >= 0 and length 0..1048576");
		return;
	}
	if ((s = bk_find(a, req, id)) == NULL || (f = bk_file_of(a, req, s, name)) == NULL)
		return;
	if (off > f->size) {
		acc_fail(a, req, "invalid", "offset is past the end of the file");
		return;
	}
	size_t n = (size_t)(f->size - off < len ? f->size - off : len);
	unsigned char *buf = bk_pread_new(s, name, off, n, err, sizeof err);
	if (buf == NULL) {
		log_warn("backup.read", "id=%s why=%s", s->id, log_quote(err));
		acc_fail(a, req, "internal", err);
		return;
	}
	json_t *fields = json_pack("{s:I, s:I, s:I}", "size", (json_int_t)f->size, "offset", off,
				   "length", (json_int_t)n);
	a->ok++;
	bus_reply(req, &fields, n > 0 ? buf : NULL, n);
	free(buf);
}

void backup_finish(bus_req_t **req, void *arg)
{
	accounts_t *a = arg;
	const char *id;
	if (ACC_UNPACK(a, req, "{s:s}", "backup", &id) < 0 || bk_of(a, req) == NULL)
		return;
	bool found = false;
	for (size_t i = 0; i < BK_MAX; i++) {
		struct bk_snap *s = a->backup->snaps[i];
		if (s != NULL && strcmp(s->id, id) == 0) {
			log_info("backup.finished", "id=%s state=%s", s->id, bk_state_names[s->state]);
			bk_snap_free(&a->backup->snaps[i]);
			found = true;
		}
	}
	/* Gone already is fine: a resent finish must not fail. */
	json_t *f = json_pack("{s:b}", "deleted", found);
	acc_ok(a, req, &f);
}

/* ---- the module ---------------------------------------------------------------- */

backup_t *backup_new(loop_t *loop, db_t *db, const char *data_dir)
{
	backup_t *b = xcalloc(1, sizeof *b);
	char err[256];
	b->loop = loop;
	b->db = db;
	b->data_dir = xstrdup(data_dir);
	b->root = xasprintf("%s/%s", data_dir, BK_DIR);
	/* Nothing under it belongs to this run: what is there, a crash left. */
	if (datadir_rmtree(b->root, err, sizeof err) < 0)
		log_warn("backup.sweep", "why=%s", log_quote(err));
	b->sweep = loop_timer_add(loop, BK_SWEEP_MS, true, bk_sweep, b);
	return b;
}

void backup_free(backup_t **bp)
{
	backup_t *b = *bp;
	if (b == NULL)
		return;
	for (size_t i = 0; i < BK_MAX; i++)
		bk_snap_free(&b->snaps[i]);
	loop_timer_cancel(b->loop, &b->sweep);
	free(b->data_dir);
	free(b->root);
	free(b);
	*bp = NULL;
}
