/*
 * backup.c — roostctl backup DIR, roostctl restore DIR (issue 3).
 *
 * backup asks storaged for an online snapshot (storaged.backup.*,
 * services/storaged/backup.c) and fetches it over the bus — storaged may
 * run in a container — in pieces of at most 1 MiB into DIR: each file goes
 * to a temporary name, is fsynced, its SHA-256 checked against storaged's,
 * then renamed. Then the roost.conf this roostctl read, the database's
 * integrity_check on the local copy, and MANIFEST.json last: a directory
 * without it is not a backup.
 *
 * restore is the one command that does not use the bus (DESIGN.md): it
 * works on data_dir itself, only while storaged is stopped. It holds
 * storaged's lock (<data_dir>/storaged.lock) for its whole run and refuses
 * if storaged.control answers on the bus. Every check comes before the
 * first change: MANIFEST.json, every file's size and SHA-256 (each copied to
 * "<name>.restore" next to its place while it is hashed), the copied
 * database's integrity_check and schema version. Only then is the old
 * database's WAL folded in and removed (it must not be replayed into the
 * new file), roost.db.restore renamed over roost.db, the tls/ and dkim/
 * files likewise, and the directories fsynced. roost.conf is never
 * overwritten: the command says where the saved one is.
 */
#include "roostctl.h"
#include "bus.h"
#include "datadir.h"
#include "db.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BK_FORMAT 1                     /* MANIFEST.json "format" */
#define BK_MANIFEST "MANIFEST.json"
#define BK_MANIFEST_MAX (1024 * 1024)
#define BK_DB "roost.db"
#define BK_CONF "roost.conf"
#define BK_CONF_MAX (1024 * 1024)
#define BK_KEY_MAX (16LL * 1024 * 1024) /* a tls/ or dkim/ file, as storaged takes */
#define BK_FILES_MAX 1002               /* roost.db, roost.conf, 1000 keys */
#define BK_POLL_MS 50
#define RS_PING_MS 1500                 /* is a storaged on the bus? */

/* ---- shared by both commands ------------------------------------------------- */

/* Writes data to dir/name through a temporary name, fsynced, then renamed. */
static int bk_write_file(const char *dir, const char *name, const char *data, size_t len,
			 char *err, size_t errlen)
{
	char *tmp = xasprintf("%s/%s.part", dir, name), *path = xasprintf("%s/%s", dir, name);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600), rc = -1;
	if (fd >= 0 && datadir_write_all(fd, data, len) == 0 && fsync(fd) == 0 && close(fd) == 0) {
		fd = -1;
		rc = rename(tmp, path);
	}
	if (rc < 0) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		if (fd >= 0)
			close(fd);
		unlink(tmp);
	}
	free(tmp);
	free(path);
	return rc;
}

/* fsync of the directory holding dir/name. */
static int bk_sync_parent(const char *dir, const char *name, char *err, size_t errlen)
{
	const char *slash = strrchr(name, '/');
	char *parent = xasprintf("%s/%.*s", dir, slash ? (int)(slash - name) : 0, name);
	int rc = datadir_fsync_dir(parent, err, errlen);
	free(parent);
	return rc;
}

/* True if the command's arguments ask for its usage. */
static bool bk_wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
			return true;
	return false;
}

/* A command's one DIR argument; NULL after printing why not. */
static const char *bk_dir_arg(const char *what, int argc, char **argv)
{
	if (argc == 2 && argv[1][0] != '\0' && argv[1][0] != '-')
		return argv[1];
	ctl_fail("%s: wants one argument, DIR (try roostctl %s --help)", what, what);
	return NULL;
}

/* ---- backup -------------------------------------------------------------------- */

static const char backup_usage[] =
	"usage: roostctl backup DIR\n"
	"  an online backup of storaged's database, and of the files under\n"
	"  <data_dir>/tls/ and <data_dir>/dkim/, fetched over the bus into DIR (new, or\n"
	"  empty), with this roost.conf and MANIFEST.json (sizes and SHA-256 of each file);\n"
	"  storaged keeps serving meanwhile. Put it back with roostctl restore DIR.\n";

/* DIR must be new (created 0700) or an empty directory. */
static int bk_prepare_dir(const char *dir)
{
	if (mkdir(dir, 0700) == 0)
		return 0;
	if (errno != EEXIST)
		return ctl_fail("backup: cannot create %s: %s", dir, strerror(errno));
	DIR *d = opendir(dir);
	if (d == NULL)
		return ctl_fail("backup: %s: %s", dir, strerror(errno));
	struct dirent *e;
	bool empty = true;
	while (empty && (e = readdir(d)) != NULL)
		empty = strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0;
	closedir(d);
	if (!empty)
		return ctl_fail("backup: %s is not empty (a backup goes into a new or empty directory)", dir);
	return 0;
}

/* The idempotency key of the start request: 16 random bytes, hex. */
static int bk_idem(char out[33])
{
	unsigned char b[16];
	if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b)
		return -1;
	datadir_hex(b, sizeof b, out);
	return 0;
}

/* Starts the snapshot: its id (malloc'd), or NULL after printing why. */
static char *bk_start(const struct ctl *ctl)
{
	char idem[33];
	if (bk_idem(idem) < 0) {
		ctl_fail("backup: no random idempotency key: %s", strerror(errno));
		return NULL;
	}
	json_t *req = bus_env_new("storaged.backup.start");
	json_object_set_new(req, "idem", json_string(idem));
	json_t *reply = ctl_storaged_call_new(ctl, "backup", &req, NULL, NULL);
	const char *id = json_string_value(json_object_get(reply, "backup"));
	char *out = id != NULL ? xstrdup(id) : NULL;
	if (reply != NULL && out == NULL)
		ctl_fail("backup: storaged's reply names no backup");
	json_decref(reply);
	return out;
}

/* Polls status until the snapshot is done: that reply, or NULL. */
static json_t *bk_wait_new(const struct ctl *ctl, const char *id)
{
	for (;;) {
		json_t *req = bus_env_new("storaged.backup.status");
		json_object_set_new(req, "backup", json_string(id));
		json_t *reply = ctl_storaged_call_new(ctl, "backup", &req, NULL, NULL);
		const char *state = json_string_value(json_object_get(reply, "state"));
		if (reply == NULL || (state != NULL && strcmp(state, "done") == 0))
			return reply;
		if (state == NULL || strcmp(state, "running") != 0) {
			const char *why = json_string_value(json_object_get(reply, "error"));
			ctl_fail("backup: storaged could not make the snapshot: %s", why ? why : "failed");
			json_decref(reply);
			return NULL;
		}
		json_decref(reply);
		struct timespec ts = { 0, BK_POLL_MS * 1000000L };
		nanosleep(&ts, NULL);
	}
}

/* Reads one piece of a file at off; its bytes (malloc'd, *len), or NULL. */
static void *bk_read_piece(const struct ctl *ctl, const char *id, const char *name, int64_t off,
			   int64_t want, size_t *len)
{
	void *raw = NULL;
	json_t *req = bus_env_new("storaged.backup.read");
	json_object_set_new(req, "backup", json_string(id));
	json_object_set_new(req, "name", json_string(name));
	json_object_set_new(req, "offset", json_integer(off));
	json_object_set_new(req, "length", json_integer(want));
	json_t *reply = ctl_storaged_call_new(ctl, "backup", &req, &raw, len);
	if (reply == NULL)
		return NULL;
	if (json_integer_value(json_object_get(reply, "offset")) != off || *len == 0 ||
	    json_integer_value(json_object_get(reply, "length")) != (json_int_t)*len ||
	    *len > (size_t)want) {
		ctl_fail("backup: %s: storaged sent %zu bytes at the wrong place", name, *len);
		free(raw);
		raw = NULL;
	}
	json_decref(reply);
	return raw;
}

/*
 * Fetches one file of the snapshot into dir/name: written to name.part,
 * fsynced, checked against its size and SHA-256, renamed. 0 or 1 (printed).
 */
static int bk_fetch(const struct ctl *ctl, const char *id, const json_t *file, const char *dir)
{
	const char *name = json_string_value(json_object_get(file, "name"));
	const char *sha = json_string_value(json_object_get(file, "sha256"));
	int64_t size = json_integer_value(json_object_get(file, "size")), off = 0;
	char err[512], hex[DATADIR_SHA256_HEX] = "";
	if (name == NULL || sha == NULL || size < 0 || !datadir_name_ok(name))
		return ctl_fail("backup: storaged listed a file roostctl will not write");
	if (datadir_mkparents(dir, name, 0700, err, sizeof err) < 0)
		return ctl_fail("backup: %s", err);
	char *tmp = xasprintf("%s/%s.part", dir, name), *path = xasprintf("%s/%s", dir, name);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600), rc = 1;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	if (fd < 0)
		ctl_fail("backup: %s: %s", tmp, strerror(errno));
	while (fd >= 0 && off < size) {
		size_t len;
		int64_t want = size - off < BUS_RAW_MAX ? size - off : BUS_RAW_MAX;
		unsigned char *buf = bk_read_piece(ctl, id, name, off, want, &len);
		if (buf == NULL)
			break;
		int wrc = datadir_write_all(fd, buf, len);
		if (wrc == 0)
			EVP_DigestUpdate(md, buf, len);
		else
			ctl_fail("backup: %s: %s", tmp, strerror(errno));
		free(buf);
		if (wrc < 0)
			break;
		off += (int64_t)len;
	}
	if (fd >= 0 && off == size) {
		unsigned char d[EVP_MAX_MD_SIZE];
		unsigned int n = 0;
		EVP_DigestFinal_ex(md, d, &n);
		datadir_hex(d, n, hex);
		if (fsync(fd) < 0 || close(fd) < 0)
			ctl_fail("backup: %s: %s", tmp, strerror(errno));
		else if (strcmp(hex, sha) != 0)
			ctl_fail("backup: %s: SHA-256 of what arrived differs from storaged's", name);
		else if (rename(tmp, path) < 0 || bk_sync_parent(dir, name, err, sizeof err) < 0)
			ctl_fail("backup: %s: %s", path, strerror(errno));
		else
			rc = 0;
		fd = -1;
	}
	if (fd >= 0)
		close(fd);
	if (rc != 0)
		unlink(tmp);
	EVP_MD_CTX_free(md);
	free(tmp);
	free(path);
	return rc;
}

/* Copies the roost.conf roostctl read (if any) to dir/roost.conf and
 * lists it in files. 0 or 1 (printed). */
static int bk_save_conf(const struct ctl *ctl, const char *dir, json_t *files)
{
	const char *conf = config_path(ctl->cfg);
	char err[512], hex[DATADIR_SHA256_HEX];
	int64_t size;
	if (conf == NULL)
		return 0;
	char *tmp = xasprintf("%s/%s.part", dir, BK_CONF), *path = xasprintf("%s/%s", dir, BK_CONF);
	int rc = datadir_copy_all(conf, tmp, 0600, BK_CONF_MAX, &size, hex, err, sizeof err);
	if (rc == 0 && rename(tmp, path) < 0) {
		snprintf(err, sizeof err, "%s: %s", path, strerror(errno));
		unlink(tmp);
		rc = -1;
	}
	free(tmp);
	free(path);
	if (rc < 0)
		return ctl_fail("backup: saving roost.conf: %s", err);
	json_array_append_new(files, json_pack("{s:s, s:I, s:s}", "name", BK_CONF, "size",
					       (json_int_t)size, "sha256", hex));
	return 0;
}

/* Fetches every file of a done snapshot, saves roost.conf, checks the copied
 * database and writes MANIFEST.json (a new reference), or NULL (printed). */
static json_t *bk_fetch_all_new(const struct ctl *ctl, const char *id, const json_t *status,
				const char *dir)
{
	json_t *files = json_deep_copy(json_object_get(status, "files")), *f;
	char err[512];
	int schema = -1;
	size_t i;
	if (!json_is_array(files) || json_array_size(files) == 0) {
		json_decref(files);
		ctl_fail("backup: storaged listed no files");
		return NULL;
	}
	json_array_foreach(files, i, f)
		if (bk_fetch(ctl, id, f, dir) != 0)
			goto fail;
	char *db = xasprintf("%s/%s", dir, BK_DB);
	int rc = datadir_db_check(db, &schema, err, sizeof err);
	free(db);
	if (rc < 0) {
		ctl_fail("backup: the copy fails its check: %s", err);
		goto fail;
	}
	if (bk_save_conf(ctl, dir, files) != 0)
		goto fail;
	json_t *man = json_pack("{s:i, s:I, s:i, s:s, s:s, s:o}", "format", BK_FORMAT,
				"created", (json_int_t)time(NULL), "schema", schema,
				"roost_version", ROOST_VERSION, "backup", id, "files", files);
	char *text = json_dumps(man, JSON_INDENT(2) | JSON_SORT_KEYS);
	rc = bk_write_file(dir, BK_MANIFEST, text, strlen(text), err, sizeof err);
	free(text);
	if (rc == 0 && datadir_fsync_dir(dir, err, sizeof err) == 0)
		return man;
	json_decref(man);
	ctl_fail("backup: writing %s: %s", BK_MANIFEST, err);
	return NULL;
fail:
	json_decref(files);
	return NULL;
}

/* Tells storaged the snapshot may go (quietly: the backup is what matters). */
static void bk_finish(const struct ctl *ctl, const char *id)
{
	json_t *req = bus_env_new("storaged.backup.finish");
	json_object_set_new(req, "backup", json_string(id));
	json_decref(bus_call_sync_new(ctl->bus_dir, "storaged", &req, NULL, 0, ctl->timeout_ms,
				      CTL_STORAGED_RETRIES, NULL, NULL));
}

/* Files, bytes and seconds, as text or (--json) the manifest with them. */
static void bk_print(const struct ctl *ctl, json_t *man, const char *dir, double secs)
{
	json_t *f;
	size_t i;
	json_int_t bytes = 0;
	json_array_foreach(json_object_get(man, "files"), i, f)
		bytes += json_integer_value(json_object_get(f, "size"));
	size_t n = json_array_size(json_object_get(man, "files"));
	if (ctl->json) {
		json_t *out = json_pack("{s:s, s:I, s:f, s:O}", "dir", dir, "bytes", bytes,
					"seconds", secs, "manifest", man);
		json_dumpf(out, stdout, JSON_COMPACT);
		fputc('\n', stdout);
		json_decref(out);
		return;
	}
	printf("backup %s: %zu files, %lld bytes, schema %lld, %.2f s -> %s\n",
	       json_string_value(json_object_get(man, "backup")), n, (long long)bytes,
	       (long long)json_integer_value(json_object_get(man, "schema")), secs, dir);
}

int cmd_backup(struct ctl *ctl, int argc, char **argv)
{
	if (bk_wants_help(argc, argv))
		return fputs(backup_usage, stdout) < 0;
	const char *dir = bk_dir_arg("backup", argc, argv);
	if (dir == NULL || ctl_bus_present(ctl) != 0 || bk_prepare_dir(dir) != 0)
		return 1;
	int64_t t0 = now_ms();
	char *id = bk_start(ctl);
	if (id == NULL)
		return 1;
	json_t *status = bk_wait_new(ctl, id), *man = NULL;
	if (status != NULL)
		man = bk_fetch_all_new(ctl, id, status, dir);
	bk_finish(ctl, id);
	if (man != NULL)
		bk_print(ctl, man, dir, (double)(now_ms() - t0) / 1000.0);
	else if (status != NULL)
		fprintf(stderr, "roostctl: backup: %s holds no MANIFEST.json: it is not a backup\n", dir);
	json_decref(status);
	json_decref(man);
	free(id);
	return man != NULL ? 0 : 1;
}

/* ---- restore ------------------------------------------------------------------- */

static const char restore_usage[] =
	"usage: roostctl restore DIR\n"
	"  puts a backup made by roostctl backup back into data_dir: roost.db and the\n"
	"  tls/ and dkim/ files. storaged must be stopped. Everything is checked first\n"
	"  (MANIFEST.json, every SHA-256, the database's integrity and schema version);\n"
	"  any failure leaves data_dir as it was. roost.conf is not replaced: the saved\n"
	"  one stays in DIR.\n";

/* One staged file: DIR/name copied to <data_dir>/name.restore. */
struct rs_file {
	const char *name;               /* borrowed from the manifest */
	char *tmp;                      /* the staged copy; NULL for roost.conf */
	int64_t size;
};

struct rs {
	const struct ctl *ctl;
	const char *dir, *data;
	json_t *man;
	struct rs_file *files;
	size_t n;
	int schema;
	json_int_t bytes;
	bool wal_kept;                  /* the old WAL could not be folded in */
};

/* True if a restore may write name: roost.db, roost.conf, tls/..., dkim/... */
static bool rs_name_ok(const char *name)
{
	return datadir_name_ok(name) && (strcmp(name, BK_DB) == 0 || strcmp(name, BK_CONF) == 0 ||
					 strncmp(name, "tls/", 4) == 0 || strncmp(name, "dkim/", 5) == 0);
}

/* Checks one manifest entry; 0, or 1 (printed). */
static int rs_check_entry(json_t *f, json_t *seen)
{
	const char *name, *sha;
	json_int_t size;
	if (json_unpack(f, "{s:s, s:I, s:s}", "name", &name, "size", &size, "sha256", &sha) < 0 ||
	    size < 0 || strlen(sha) != 64 || strspn(sha, "0123456789abcdef") != 64)
		return ctl_fail("restore: %s lists a file without name, size and sha256", BK_MANIFEST);
	if (!rs_name_ok(name))
		return ctl_fail("restore: %s lists '%.100s', which a restore does not write", BK_MANIFEST, name);
	if (json_object_get(seen, name) != NULL)
		return ctl_fail("restore: %s lists %.100s twice", BK_MANIFEST, name);
	json_object_set_new(seen, name, json_true());
	return 0;
}

/* Reads and checks DIR/MANIFEST.json into r->man; 0 or 1 (printed). */
static int rs_manifest(struct rs *r)
{
	char *path = xasprintf("%s/%s", r->dir, BK_MANIFEST);
	json_error_t je;
	struct stat st;
	json_int_t format = 0, schema = -1;
	json_t *files = NULL, *f, *seen = json_object();
	size_t i;
	int rc = 1;
	if (stat(path, &st) < 0)
		ctl_fail("restore: %s: %s (not a backup made by roostctl backup?)", path, strerror(errno));
	else if (st.st_size > BK_MANIFEST_MAX)
		ctl_fail("restore: %s is larger than %d bytes", path, BK_MANIFEST_MAX);
	else if ((r->man = json_load_file(path, JSON_REJECT_DUPLICATES, &je)) == NULL)
		ctl_fail("restore: %s:%d: %s", path, je.line, je.text);
	else if (json_unpack(r->man, "{s:I, s:I, s:o}", "format", &format, "schema", &schema,
			     "files", &files) < 0 || format != BK_FORMAT || schema < 0 ||
		 !json_is_array(files) || json_array_size(files) > BK_FILES_MAX)
		ctl_fail("restore: %s: not a format %d manifest", path, BK_FORMAT);
	else
		rc = 0;
	if (rc == 0)
		json_array_foreach(files, i, f)
			if ((rc = rs_check_entry(f, seen)) != 0)
				break;
	if (rc == 0 && json_object_get(seen, BK_DB) == NULL)
		rc = ctl_fail("restore: %s lists no %s", path, BK_DB);
	r->schema = (int)schema;
	json_decref(seen);
	free(path);
	return rc;
}

/* Fails unless storaged is stopped: the lock is free (and now ours,
 * in *lock) and no storaged answers on the bus. 0 or 1 (printed). */
static int rs_storaged_stopped(struct rs *r, int *lock)
{
	char err[512], path[600];
	struct stat st;
	*lock = datadir_lock(r->data, err, sizeof err);
	if (*lock == -2)
		return ctl_fail("restore: storaged is running: it holds %s/%s; stop it first",
				r->data, DATADIR_LOCK);
	if (*lock < 0)
		return ctl_fail("restore: %s", err);
	snprintf(path, sizeof path, "%s/clients", r->ctl->bus_dir);
	if (stat(path, &st) < 0 || !S_ISSOCK(st.st_mode))
		return 0;  /* no bus, so no storaged on it */
	json_t *req = bus_env_new("storaged.control.ping");
	json_t *reply = bus_call_sync_new(r->ctl->bus_dir, "storaged.control", &req, NULL, 0,
					  RS_PING_MS, 0, NULL, NULL);
	bool up = bus_reply_ok(reply);
	json_decref(reply);
	if (up)
		return ctl_fail("restore: a storaged answers on the bus at %s (with another data_dir, or "
				"in a container?); stop it first", r->ctl->bus_dir);
	return 0;
}

/* Gives data_dir/name and the directories on its way to data_dir's owner
 * when we run as root (root restores a data_dir a service user owns). */
static void rs_give(const struct rs *r, const char *name, const char *path)
{
	struct stat st;
	if (geteuid() != 0 || stat(r->data, &st) < 0 || (st.st_uid == 0 && st.st_gid == 0))
		return;
	for (const char *s = name; (s = strchr(s, '/')) != NULL; s++) {
		char *dir = xasprintf("%s/%.*s", r->data, (int)(s - name), name);
		if (lchown(dir, st.st_uid, st.st_gid) < 0)
			fprintf(stderr, "roostctl: restore: warning: cannot chown %s: %s\n", dir, strerror(errno));
		free(dir);
	}
	if (lchown(path, st.st_uid, st.st_gid) < 0)
		fprintf(stderr, "roostctl: restore: warning: cannot chown %s: %s\n", path, strerror(errno));
}

/* Copies DIR/name to <data_dir>/name.restore (roost.conf: only hashes it)
 * and checks it against the manifest; 0 or 1 (printed). */
static int rs_stage(struct rs *r, const json_t *f, struct rs_file *out)
{
	char err[512], hex[DATADIR_SHA256_HEX];
	int64_t size;
	out->name = json_string_value(json_object_get(f, "name"));
	bool conf = strcmp(out->name, BK_CONF) == 0;
	char *src = xasprintf("%s/%s", r->dir, out->name);
	if (!conf && datadir_mkparents(r->data, out->name, 0700, err, sizeof err) < 0) {
		free(src);
		return ctl_fail("restore: %s", err);
	}
	if (!conf)
		out->tmp = xasprintf("%s/%s.restore", r->data, out->name);
	int rc = datadir_copy_all(src, out->tmp, 0600, strcmp(out->name, BK_DB) == 0 ? INT64_MAX :
				  conf ? BK_CONF_MAX : BK_KEY_MAX, &size, hex, err, sizeof err);
	if (rc < 0)
		ctl_fail("restore: %s", err);
	else if (size != json_integer_value(json_object_get(f, "size")) ||
		 strcmp(hex, json_string_value(json_object_get(f, "sha256"))) != 0)
		rc = ctl_fail("restore: %s does not match %s (size or SHA-256): the backup is damaged "
			      "or was changed; nothing was restored", src, BK_MANIFEST);
	free(src);
	out->size = size;
	r->bytes += size;
	if (rc == 0 && out->tmp != NULL)
		rs_give(r, out->name, out->tmp);
	return rc == 0 ? 0 : 1;
}

/* Stages every file and checks the staged database; 0 or 1 (printed). */
static int rs_stage_all(struct rs *r)
{
	json_t *files = json_object_get(r->man, "files"), *f;
	char err[512];
	int schema = -1, newest = (int)db_migrations[db_migrations_count - 1].version;
	size_t i;
	if (r->schema > newest)
		return ctl_fail("restore: the backup has schema version %d; this Roost knows up to %d: "
				"upgrade Roost first", r->schema, newest);
	r->files = xcalloc(json_array_size(files), sizeof *r->files);
	json_array_foreach(files, i, f) {
		if (rs_stage(r, f, &r->files[r->n++]) != 0)
			return 1;
	}
	char *db = xasprintf("%s/%s.restore", r->data, BK_DB);
	int rc = datadir_db_check(db, &schema, err, sizeof err);
	free(db);
	if (rc < 0)
		return ctl_fail("restore: the backed-up database fails its check: %s", err);
	if (schema != r->schema)
		return ctl_fail("restore: roost.db has schema version %d but %s says %d", schema,
				BK_MANIFEST, r->schema);
	return 0;
}

/* Removes the staged copies (after a failure). */
static void rs_unstage(struct rs *r)
{
	for (size_t i = 0; i < r->n; i++)
		if (r->files[i].tmp != NULL)
			unlink(r->files[i].tmp);
}

/*
 * The old database's WAL must not outlive it: SQLite would replay its
 * frames into the new file. Fold it in (a TRUNCATE checkpoint, and closing
 * removes it); if the old database cannot even do that, keep the WAL aside
 * as roost.db-wal.pre-restore rather than lose it. Then -shm and any
 * rollback journal go.
 */
static int rs_retire_old_db(struct rs *r)
{
	char *db = xasprintf("%s/%s", r->data, BK_DB), *wal = xasprintf("%s-wal", db);
	char *shm = xasprintf("%s-shm", db), *jnl = xasprintf("%s-journal", db);
	char *kept = xasprintf("%s.pre-restore", wal);
	struct stat st;
	int rc = 0;
	if (stat(db, &st) == 0 && stat(wal, &st) == 0) {
		sqlite3 *h = NULL;
		if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK)
			sqlite3_exec(h, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
		sqlite3_close(h);
	}
	if (stat(wal, &st) == 0 && st.st_size > 0) {
		r->wal_kept = true;
		rc = rename(wal, kept) < 0 ? ctl_fail("restore: %s: %s", wal, strerror(errno)) : 0;
	}
	const char *gone[] = { wal, shm, jnl };
	for (size_t i = 0; rc == 0 && i < ARRAY_LEN(gone); i++)
		if (unlink(gone[i]) < 0 && errno != ENOENT)
			rc = ctl_fail("restore: %s: %s", gone[i], strerror(errno));
	free(db), free(wal), free(shm), free(jnl), free(kept);
	return rc;
}

/* Renames every staged copy over its place, roost.db first, and fsyncs
 * the directories; 0 or 1 (printed). */
static int rs_commit(struct rs *r)
{
	char err[512];
	if (rs_retire_old_db(r) != 0)
		return 1;
	for (size_t i = 0; i < r->n; i++) {
		if (r->files[i].tmp == NULL)
			continue;
		char *path = xasprintf("%s/%s", r->data, r->files[i].name);
		int rc = rename(r->files[i].tmp, path);
		if (rc < 0)
			ctl_fail("restore: %s: %s", path, strerror(errno));
		else if ((rc = bk_sync_parent(r->data, r->files[i].name, err, sizeof err)) < 0)
			ctl_fail("restore: %s", err);
		free(path);
		if (rc < 0)
			return 1;
		free(r->files[i].tmp);
		r->files[i].tmp = NULL;
	}
	return 0;
}

/* What was restored, and where the saved roost.conf is. */
static void rs_print(const struct rs *r)
{
	bool conf = false;
	for (size_t i = 0; i < r->n; i++)
		conf |= strcmp(r->files[i].name, BK_CONF) == 0;
	char *saved = conf ? xasprintf("%s/%s", r->dir, BK_CONF) : NULL;
	if (r->ctl->json) {
		json_t *out = json_pack("{s:s, s:s, s:I, s:I, s:i, s:s?, s:b}", "restored", r->dir,
					"data_dir", r->data, "files", (json_int_t)r->n, "bytes", r->bytes,
					"schema", r->schema, "roost_conf", saved, "wal_kept", r->wal_kept);
		json_dumpf(out, stdout, JSON_COMPACT);
		fputc('\n', stdout);
		json_decref(out);
	} else {
		printf("restored %s into %s: %zu files, %lld bytes, schema %d\n", r->dir, r->data,
		       r->n, (long long)r->bytes, r->schema);
		if (saved != NULL)
			printf("roost.conf was not replaced; the backed-up one is %s\n", saved);
		if (r->wal_kept)
			printf("the old database's WAL could not be folded in; it is kept as "
			       "%s/roost.db-wal.pre-restore\n", r->data);
	}
	free(saved);
}

int cmd_restore(struct ctl *ctl, int argc, char **argv)
{
	struct rs r = { .ctl = ctl, .data = config_data_dir(ctl->cfg) };
	struct stat st;
	int lock = -1, rc = 1;
	if (bk_wants_help(argc, argv))
		return fputs(restore_usage, stdout) < 0;
	if ((r.dir = bk_dir_arg("restore", argc, argv)) == NULL)
		return 1;
	if (stat(r.data, &st) < 0 && mkdir(r.data, 0750) < 0)
		return ctl_fail("restore: cannot create data_dir %s: %s", r.data, strerror(errno));
	if (rs_storaged_stopped(&r, &lock) == 0 && rs_manifest(&r) == 0) {
		if (rs_stage_all(&r) == 0 && rs_commit(&r) == 0) {
			rs_print(&r);
			rc = 0;
		}
		rs_unstage(&r);
	}
	for (size_t i = 0; i < r.n; i++)
		free(r.files[i].tmp);
	free(r.files);
	json_decref(r.man);
	if (lock >= 0)
		close(lock);
	return rc;
}
