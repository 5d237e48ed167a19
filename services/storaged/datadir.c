/*
 * datadir.c — see datadir.h. The data directory's lock, safe names, and
 * file operations that do not trust what they find: directories are opened
 * with O_NOFOLLOW, walks and removals never follow symbolic links, copies
 * read only regular files and fsync what they write.
 */
#include "datadir.h"

#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#define DATADIR_COPY_BUF (64 * 1024)
#define DATADIR_RM_DEPTH 32      /* rmtree refuses to go deeper */

struct datadir_copy {
	int in, out;             /* out is -1 without a destination */
	char *src, *dst;
	EVP_MD_CTX *md;
	int64_t size, max;
	bool done;
	char hex[DATADIR_SHA256_HEX];
	unsigned char buf[DATADIR_COPY_BUF];
};

/* "<path>: <strerror(errno)>" into err; returns -1 for the caller. */
static int dd_errno(char *err, size_t errlen, const char *path)
{
	snprintf(err, errlen, "%s: %s", path, strerror(errno));
	return -1;
}

static int dd_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int dd_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

int datadir_lock(const char *data_dir, char *err, size_t errlen)
{
	char *path = xasprintf("%s/%s", data_dir, DATADIR_LOCK);
	int fd = open(path, O_RDONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		dd_errno(err, errlen, path);
		free(path);
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int held = errno == EWOULDBLOCK;
		if (held)
			dd_err(err, errlen, "%s is held by another process", path);
		else
			dd_errno(err, errlen, path);
		close(fd);
		free(path);
		return held ? -2 : -1;
	}
	free(path);
	return fd;
}

bool datadir_name_ok(const char *name)
{
	size_t len = strlen(name), comp = 0;
	if (len == 0 || len > DATADIR_NAME_MAX)
		return false;
	for (size_t i = 0; i <= len; i++) {
		char c = name[i];
		if (c == '/' || c == '\0') {
			const char *start = name + i - comp;
			/* empty (leading '/', "//", trailing '/'), "." and ".." */
			if (comp == 0 || (comp == 1 && start[0] == '.') ||
			    (comp == 2 && start[0] == '.' && start[1] == '.'))
				return false;
			comp = 0;
			continue;
		}
		if (c < ' ' || c > '~' || c == '\\')
			return false;
		comp++;
	}
	return true;
}

int datadir_fsync_dir(const char *dir, char *err, size_t errlen)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return dd_errno(err, errlen, dir);
	int rc = fsync(fd);
	if (rc < 0)
		dd_errno(err, errlen, dir);
	close(fd);
	return rc < 0 ? -1 : 0;
}

int datadir_mkparents(const char *base, const char *name, mode_t mode, char *err, size_t errlen)
{
	char *path = xasprintf("%s/%s", base, name);
	int rc = 0;
	for (char *s = path + strlen(base) + 1; (s = strchr(s, '/')) != NULL; s++) {
		struct stat st;
		*s = '\0';
		if (mkdir(path, mode) < 0 && errno != EEXIST)
			rc = dd_errno(err, errlen, path);
		else if (lstat(path, &st) < 0)
			rc = dd_errno(err, errlen, path);
		else if (!S_ISDIR(st.st_mode))
			rc = dd_err(err, errlen, "%s: not a directory", path);
		*s = '/';
		if (rc < 0)
			break;
	}
	free(path);
	return rc;
}

/* Opens dir for reading without following a link at its last step. */
static DIR *dd_opendir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (d == NULL && fd >= 0)
		close(fd);
	return d;
}

/* The body of datadir_rmtree: path is known to be a directory. */
static int dd_rmdir_all(const char *path, int depth, char *err, size_t errlen)
{
	if (depth > DATADIR_RM_DEPTH)
		return dd_err(err, errlen, "%s: nested too deep to remove", path);
	DIR *d = dd_opendir(path);
	if (d == NULL)
		return dd_errno(err, errlen, path);
	struct dirent *e;
	int rc = 0;
	while (rc == 0 && (e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		char *sub = xasprintf("%s/%s", path, e->d_name);
		struct stat st;
		if (lstat(sub, &st) < 0)
			rc = errno == ENOENT ? 0 : dd_errno(err, errlen, sub);
		else if (S_ISDIR(st.st_mode))
			rc = dd_rmdir_all(sub, depth + 1, err, errlen);
		else if (unlink(sub) < 0 && errno != ENOENT)
			rc = dd_errno(err, errlen, sub);
		free(sub);
	}
	closedir(d);
	if (rc == 0 && rmdir(path) < 0 && errno != ENOENT)
		rc = dd_errno(err, errlen, path);
	return rc;
}

int datadir_rmtree(const char *path, char *err, size_t errlen)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : dd_errno(err, errlen, path);
	if (!S_ISDIR(st.st_mode))
		return unlink(path) < 0 && errno != ENOENT ? dd_errno(err, errlen, path) : 0;
	return dd_rmdir_all(path, 0, err, errlen);
}

/* The body of datadir_walk: root/rel is a directory depth levels down. */
static int dd_walk(const char *root, const char *rel, int depth, int max_depth,
		   datadir_walk_fn fn, void *arg, char *err, size_t errlen)
{
	char *path = xasprintf("%s/%s", root, rel);
	DIR *d = dd_opendir(path);
	int rc = 0;
	if (d == NULL)
		/* a missing tls/, or one that is a link or a file: no keys to take */
		rc = depth == 0 && (errno == ENOENT || errno == ELOOP || errno == ENOTDIR) ? 0 :
			dd_errno(err, errlen, path);
	struct dirent *e;
	while (d != NULL && rc == 0 && (e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		char *sub = xasprintf("%s/%s", rel, e->d_name);
		char *full = xasprintf("%s/%s", root, sub);
		struct stat st;
		if (lstat(full, &st) < 0)
			rc = dd_errno(err, errlen, full);
		else if (S_ISDIR(st.st_mode) && depth + 1 >= max_depth)
			rc = dd_err(err, errlen, "%s: directories nested deeper than %d", full, max_depth);
		else if (S_ISDIR(st.st_mode))
			rc = dd_walk(root, sub, depth + 1, max_depth, fn, arg, err, errlen);
		else if (S_ISREG(st.st_mode))
			rc = fn(sub, &st, arg, err, errlen);
		/* links, sockets, devices: not the operator's keys; skipped */
		free(full);
		free(sub);
	}
	if (d != NULL)
		closedir(d);
	free(path);
	return rc;
}

int datadir_walk(const char *root, const char *sub, int max_depth, datadir_walk_fn fn,
		 void *arg, char *err, size_t errlen)
{
	return dd_walk(root, sub, 0, max_depth, fn, arg, err, errlen);
}

/* ---- copies that hash ------------------------------------------------------ */

datadir_copy_t *datadir_copy_new(const char *src, const char *dst, mode_t mode, int64_t max_size,
				 char *err, size_t errlen)
{
	struct stat st;
	datadir_copy_t *c = xcalloc(1, sizeof *c);
	c->out = -1;
	c->max = max_size;
	c->src = xstrdup(src);
	c->in = open(src, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (c->in < 0 || fstat(c->in, &st) < 0) {
		dd_errno(err, errlen, src);
		goto fail;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > max_size) {
		dd_err(err, errlen, "%s: %s", src, !S_ISREG(st.st_mode) ? "not a regular file" :
		       "larger than the limit");
		goto fail;
	}
	if (dst != NULL) {
		c->out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode);
		if (c->out < 0 || fchmod(c->out, mode) < 0) {
			dd_errno(err, errlen, dst);
			goto fail;
		}
		c->dst = xstrdup(dst);  /* only now is it ours to remove */
	}
	c->md = EVP_MD_CTX_new();
	if (c->md == NULL || EVP_DigestInit_ex(c->md, EVP_sha256(), NULL) != 1) {
		dd_err(err, errlen, "%s: cannot start SHA-256", src);
		goto fail;
	}
	return c;
fail:
	datadir_copy_free(&c);
	return NULL;
}

int datadir_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t w = write(fd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

/* End of the source: fsync and close the copy, finish the digest. */
static int dd_copy_finish(datadir_copy_t *c, char *err, size_t errlen)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	if (c->out >= 0) {
		int rc = fsync(c->out);
		rc |= close(c->out);
		c->out = -1;
		if (rc != 0)
			return dd_errno(err, errlen, c->dst);
	}
	EVP_DigestFinal_ex(c->md, md, &n);
	datadir_hex(md, n, c->hex);
	c->done = true;
	return 1;
}

int datadir_copy_step(datadir_copy_t *c, size_t max, char *err, size_t errlen)
{
	size_t moved = 0;
	if (c->done)
		return 1;
	while (moved < max) {
		size_t want = max - moved < sizeof c->buf ? max - moved : sizeof c->buf;
		ssize_t r = read(c->in, c->buf, want);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return dd_errno(err, errlen, c->src);
		if (r == 0)
			return dd_copy_finish(c, err, errlen);
		/* It grew while we copied: the bound holds for what we take. */
		if (c->size + r > c->max)
			return dd_err(err, errlen, "%s: grew larger than the limit", c->src);
		if (c->out >= 0 && datadir_write_all(c->out, c->buf, (size_t)r) < 0)
			return dd_errno(err, errlen, c->dst);
		EVP_DigestUpdate(c->md, c->buf, (size_t)r);
		c->size += r;
		moved += (size_t)r;
	}
	return 0;
}

int64_t datadir_copy_size(const datadir_copy_t *c)
{
	return c->size;
}

const char *datadir_copy_sha256(const datadir_copy_t *c)
{
	return c->hex;
}

void datadir_copy_free(datadir_copy_t **cp)
{
	datadir_copy_t *c = *cp;
	if (c == NULL)
		return;
	if (c->in >= 0)
		close(c->in);
	if (c->out >= 0)
		close(c->out);
	/* An unfinished copy is garbage: nobody may take it for the file. */
	if (!c->done && c->dst != NULL)
		unlink(c->dst);
	EVP_MD_CTX_free(c->md);
	free(c->src);
	free(c->dst);
	free(c);
	*cp = NULL;
}

int datadir_copy_all(const char *src, const char *dst, mode_t mode, int64_t max_size,
		     int64_t *size, char *hex, char *err, size_t errlen)
{
	datadir_copy_t *c = datadir_copy_new(src, dst, mode, max_size, err, errlen);
	int rc = c != NULL ? 0 : -1;
	while (rc == 0)
		rc = datadir_copy_step(c, (size_t)1 << 30, err, errlen);
	if (rc == 1) {
		*size = c->size;
		memcpy(hex, c->hex, DATADIR_SHA256_HEX);
	}
	datadir_copy_free(&c);
	return rc == 1 ? 0 : -1;
}

/* ---- the database file ------------------------------------------------------ */

int datadir_db_text(sqlite3 *h, const char *sql, char *out, size_t outlen)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(h, sql, -1, &st, NULL);
	if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		const unsigned char *t = sqlite3_column_text(st, 0);
		snprintf(out, outlen, "%s", t != NULL ? (const char *)t : "");
		rc = SQLITE_OK;
	} else if (rc == SQLITE_DONE) {
		rc = SQLITE_ERROR;  /* a pragma this SQLite does not have */
	}
	sqlite3_finalize(st);
	return rc;
}

/* "file:" URI of path (everything but [A-Za-z0-9/._-] percent-encoded)
 * followed by query. */
static char *dd_uri_new(const char *path, const char *query)
{
	char *uri = xmalloc(5 + 3 * strlen(path) + strlen(query) + 1), *o = uri;
	o += sprintf(o, "file:");
	for (const unsigned char *p = (const unsigned char *)path; *p != '\0'; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		    strchr("/._-", *p) != NULL)
			*o++ = (char)*p;
		else
			o += sprintf(o, "%%%02X", *p);
	}
	strcpy(o, query);
	return uri;
}

int datadir_db_check(const char *path, int *schema, char *err, size_t errlen)
{
	char *uri = dd_uri_new(path, "?mode=ro&immutable=1");
	char res[256] = "", ver[32] = "";
	sqlite3 *h = NULL;
	int rc = sqlite3_open_v2(uri, &h, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL);
	free(uri);
	if (rc == SQLITE_OK)
		rc = datadir_db_text(h, "PRAGMA integrity_check", res, sizeof res);
	if (rc == SQLITE_OK && strcmp(res, "ok") != 0)
		dd_err(err, errlen, "%s: integrity_check: %s", path, res);
	else if (rc == SQLITE_OK && (rc = datadir_db_text(h, "PRAGMA user_version", ver,
							  sizeof ver)) == SQLITE_OK)
		*schema = atoi(ver);
	if (rc != SQLITE_OK)
		dd_err(err, errlen, "%s: %s", path, h != NULL ? sqlite3_errmsg(h) : sqlite3_errstr(rc));
	sqlite3_close(h);
	return rc == SQLITE_OK && strcmp(res, "ok") == 0 ? 0 : -1;
}

void datadir_hex(const unsigned char *bytes, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[bytes[i] >> 4];
		out[2 * i + 1] = digits[bytes[i] & 15];
	}
	out[2 * n] = '\0';
}
