/*
 * storebench — load for storaged's store and read paths, through busd with
 * the real client library (bus.h), and a bare SQLite baseline; bench/store.sh
 * runs them all side by side.
 *
 *   storebench store BUS_DIR --address A --clients C --size B --seconds S
 *                    [--warmup W] [--json]
 *       C clients, each its own bus_client (DEALER) on one loop, each with
 *       one storaged.message.store in flight at a time (what smtpd does per
 *       SMTP transaction): a B-byte RFC 5322 message with a unique
 *       Message-ID, streamed with bus_stream (256 KiB chunks), a unique idem,
 *       delivered to A's INBOX; the next store starts when the last chunk's
 *       reply ("stored", after storaged's COMMIT) came. After W s of warm-up
 *       (0.5), stores finished in the next S s are counted, with their
 *       latency (first chunk sent to last reply).
 *   storebench fill BUS_DIR --address A --clients C --size B --count N [--json]
 *       The same until N stores are acknowledged; prints the rate of every
 *       10,000 so that a slowdown as the mailbox grows shows.
 *   storebench list BUS_DIR --address A --clients C --seconds S
 *                   (--page N | --uid) [--json]
 *       Header lookups: storaged.message.list with headers on A's INBOX.
 *       --page N: a random range of N UIDs, read as an IMAP server would,
 *       following "next" until the range is done (a reply is cut at 48 KiB);
 *       --uid: one random UID per request. Counts operations, requests and
 *       messages (each must carry its headers).
 *   storebench sqlite DIR --size B --rows-per-commit K --seconds S [--json]
 *       Bare SQLite on the same disk: DIR/sqlite-bench.db with WAL and
 *       synchronous=FULL, transactions of K single-row INSERTs of a B-byte
 *       blob, one after another: the fsync ceiling for one commit per
 *       message (K = 1), and what grouping gains (K = 10).
 *
 * Output: one human line; with --json also one flat JSON line. Exit status
 * 1 when any error was counted or nothing completed.
 */
#include "bus.h"
#include "log.h"
#include "stats.h"
#include "util.h"

#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define MAX_CLIENTS 64
#define CALL_TIMEOUT_MS 30000
#define FILL_REPORT 10000
#define LIST_PAGE_LIMIT 1000

enum cmd { CMD_STORE, CMD_FILL, CMD_LIST, CMD_SQLITE };

struct opts {
	enum cmd cmd;
	const char *dir, *address;
	long clients, size, count, page, rows;
	double seconds, warmup;
	bool uid, json;
};

struct bench;

/* One client: its own DEALER, one operation in flight. */
struct client {
	struct bench *b;
	int idx;
	bus_client_t *bus;
	bus_stream_t *st;
	unsigned char *msg;        /* the message template (stores) */
	size_t len, off;           /* its size; bytes sent of the current store */
	uint64_t n;                /* operations started */
	int64_t t0;                /* µs: the current operation's start */
	uint64_t rng;
	int64_t lo, hi;            /* list --page: the range being read */
};

struct bench {
	const struct opts *o;
	loop_t *loop;
	struct client cl[MAX_CLIENTS];
	int active;
	bool stopping;
	int64_t t_measure, t_end, t_fill;  /* µs */
	uint64_t started, count, requests, rows, errors, fill_mark;
	uint32_t *samples;
	size_t ns, cap;
	int64_t maxuid;
};

static void die(const char *fmt, const char *arg)
{
	fprintf(stderr, "storebench: ");
	fprintf(stderr, fmt, arg);
	fputc('\n', stderr);
	exit(2);
}

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* ---- results ---------------------------------------------------------------------- */

/* An operation finished at t1 (µs): counted if inside the measured window. */
static void bench_done(struct bench *b, struct client *c, int64_t t1)
{
	if (t1 < b->t_measure || t1 > b->t_end)
		return;
	b->count++;
	if (b->ns < b->cap) {
		int64_t d = t1 - c->t0;
		b->samples[b->ns++] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
	}
}

static double cpu_seconds(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       ru.ru_stime.tv_usec / 1e6;
}

static const char *const cmd_names[] = { "store", "fill", "list", "sqlite" };

static int bench_report(struct bench *b, double seconds, double cpu)
{
	const struct opts *o = b->o;
	stats_sort(b->samples, b->ns);
	uint32_t p50 = stats_percentile(b->samples, b->ns, 0.50);
	uint32_t p99 = stats_percentile(b->samples, b->ns, 0.99);
	double rate = (double)b->count / seconds, rows = (double)b->rows / seconds;
	const char *what = o->cmd == CMD_LIST ? (o->uid ? "uid" : "page") : cmd_names[o->cmd];
	printf("%-6s clients=%-2ld size=%-6ld %9.0f ops/s  %9.0f rows/s  p50 %6u us  p99 %7u us  "
	       "client cpu %3.0f%%  errors %llu\n", what, o->clients, o->cmd == CMD_LIST ? o->page : o->size,
	       rate, rows, p50, p99, 100 * cpu / seconds, (unsigned long long)b->errors);
	if (o->json)
		printf("{\"op\":\"%s\",\"clients\":%ld,\"size\":%ld,\"page\":%ld,\"seconds\":%.3f,"
		       "\"ops_per_s\":%.1f,\"rows_per_s\":%.1f,\"requests\":%llu,\"p50_us\":%u,"
		       "\"p99_us\":%u,\"client_cpu\":%.2f,\"errors\":%llu}\n", what, o->clients, o->size,
		       o->page, seconds, rate, rows, (unsigned long long)b->requests, p50, p99,
		       cpu / seconds, (unsigned long long)b->errors);
	return b->errors || b->count == 0 ? 1 : 0;
}

/* ---- stores ------------------------------------------------------------------------ */

/* A message of o->size bytes: headers (the counter goes in Subject and
 * Message-ID), an empty line, then printable filler in 76-byte lines. */
static void msg_template(struct client *c, long size)
{
	c->len = (size_t)size;
	c->msg = xmalloc(c->len + 1);
	for (size_t i = 0; i < c->len; i++) {
		unsigned char letter = (unsigned char)('a' + (i * 7 + (size_t)c->idx) % 26);
		c->msg[i] = i % 78 == 76 ? '\r' : i % 78 == 77 ? '\n' : letter;
	}
}

static void store_start(struct client *c);

static void store_fail(struct client *c, const char *why)
{
	struct bench *b = c->b;
	if (b->errors++ < 5)
		fprintf(stderr, "storebench: client %d: store %llu: %s\n", c->idx, (unsigned long long)c->n, why);
	bus_stream_free(&c->st);
	store_start(c);
}

static void store_acked(bus_stream_t *s, json_t **reply, void *arg)
{
	(void)s;
	struct client *c = arg;
	struct bench *b = c->b;
	b->requests++;
	if (!bus_reply_ok(*reply)) {
		char *t = json_dumps(*reply, JSON_COMPACT);
		store_fail(c, t ? t : "error");
		free(t);
		return;
	}
	if (c->off < c->len) {   /* the next chunk */
		size_t n = c->len - c->off < BUS_CHUNK_SIZE ? c->len - c->off : BUS_CHUNK_SIZE;
		bus_stream_write(c->st, c->msg + c->off, n, c->off + n == c->len);
		c->off += n;
		return;
	}
	json_t *stored = json_object_get(*reply, "stored");
	if (json_array_size(stored) != 1 ||
	    json_integer_value(json_object_get(*reply, "size")) != (json_int_t)c->len) {
		store_fail(c, "the last reply is not a stored message of the right size");
		return;
	}
	bus_stream_free(&c->st);
	int64_t t1 = now_us();
	bench_done(b, c, t1);
	if (b->o->cmd == CMD_FILL && b->count - b->fill_mark >= FILL_REPORT) {
		printf("fill: %llu stored, the last %d at %.0f/s\n", (unsigned long long)b->count,
		       FILL_REPORT, (b->count - b->fill_mark) / ((t1 - b->t_fill) / 1e6));
		fflush(stdout);
		b->fill_mark = b->count, b->t_fill = t1;
	}
	store_start(c);
}

static void store_start(struct client *c)
{
	struct bench *b = c->b;
	const struct opts *o = b->o;
	if (b->stopping || (o->cmd == CMD_FILL && b->started >= (uint64_t)o->count)) {
		if (--b->active == 0)
			loop_stop(b->loop);
		return;
	}
	b->started++;
	c->n++;
	char idem[96], head[256];
	snprintf(idem, sizeof idem, "sb-%d-%lld-%d-%llu", (int)getpid(), (long long)wall_ms(), c->idx,
		 (unsigned long long)c->n);
	int hl = snprintf(head, sizeof head, "From: bench <bench@bench.test>\r\nTo: %s\r\n"
			  "Subject: storebench %s\r\nDate: Tue, 24 Nov 2026 10:00:00 +0100\r\n"
			  "Message-ID: <%s@bench.test>\r\n\r\n", o->address, idem, idem);
	memcpy(c->msg, head, (size_t)hl < c->len ? (size_t)hl : c->len);
	json_t *fields = json_pack("{s:s, s:[{s:s}]}", "idem", idem, "deliveries", "address",
				   o->address);
	c->st = bus_stream_new(c->bus, "storaged", "storaged.message.store", &fields, store_acked, c);
	c->t0 = now_us();
	c->off = c->len < BUS_CHUNK_SIZE ? c->len : BUS_CHUNK_SIZE;
	bus_stream_write(c->st, c->msg, c->off, c->off == c->len);
}

/* ---- header lookups ----------------------------------------------------------------- */

static void list_start(struct client *c);

static void list_send(struct client *c);

static void list_reply(json_t **reply, const void *raw, size_t rawlen, void *arg)
{
	(void)raw; (void)rawlen;
	struct client *c = arg;
	struct bench *b = c->b;
	int64_t t = now_us();
	b->requests += t >= b->t_measure && t <= b->t_end;
	json_t *msgs = json_object_get(*reply, "messages");
	size_t i, n = json_array_size(msgs);
	json_t *m;
	bool good = bus_reply_ok(*reply) && n > 0;
	json_array_foreach(msgs, i, m)
		good = good && json_object_get(json_object_get(m, "headers"), "subject") != NULL;
	if (!good) {
		char *t = json_dumps(*reply, JSON_COMPACT);
		if (b->errors++ < 5)
			fprintf(stderr, "storebench: client %d: list: %.300s\n", c->idx, t ? t : "?");
		free(t);
		list_start(c);
		return;
	}
	if (t >= b->t_measure && t <= b->t_end)
		b->rows += n;
	json_int_t next = json_integer_value(json_object_get(*reply, "next"));
	if (next > 0 && next <= c->hi) {
		c->lo = next;
		list_send(c);
		return;
	}
	bench_done(b, c, t);
	list_start(c);
}

static void list_send(struct client *c)
{
	char uids[48];
	if (c->lo == c->hi)
		snprintf(uids, sizeof uids, "%lld", (long long)c->lo);
	else
		snprintf(uids, sizeof uids, "%lld:%lld", (long long)c->lo, (long long)c->hi);
	json_t *req = json_pack("{s:s, s:s, s:s, s:s, s:b, s:i}", "type", "storaged.message.list",
				"address", c->b->o->address, "mailbox", "INBOX", "uids", uids,
				"headers", 1, "limit", LIST_PAGE_LIMIT);
	bus_call_opts_t opts = { CALL_TIMEOUT_MS, 0 };
	bus_call(c->bus, "storaged", &req, NULL, 0, &opts, list_reply, c);
}

static void list_start(struct client *c)
{
	struct bench *b = c->b;
	if (b->stopping) {
		if (--b->active == 0)
			loop_stop(b->loop);
		return;
	}
	int64_t span = b->o->uid ? 1 : b->o->page;
	int64_t top = b->maxuid - span + 1 > 1 ? b->maxuid - span + 1 : 1;
	c->lo = 1 + (int64_t)(xorshift(&c->rng) % (uint64_t)top);
	c->hi = c->lo + span - 1;
	c->n++;
	c->t0 = now_us();
	list_send(c);
}

/* The highest UID of A's INBOX (uidnext - 1), asked once before the run. */
static int64_t list_maxuid(const struct opts *o)
{
	json_t *req = json_pack("{s:s, s:s, s:s}", "type", "storaged.mailbox.status", "address",
				o->address, "mailbox", "INBOX");
	json_t *rep = bus_call_sync_new(o->dir, "storaged", &req, NULL, 0, CALL_TIMEOUT_MS, 0, NULL, NULL);
	int64_t n = bus_reply_ok(rep) ? json_integer_value(json_object_get(rep, "uidnext")) - 1 : 0;
	json_decref(rep);
	return n;
}

/* ---- running the clients ------------------------------------------------------------ */

static void on_start(loop_t *loop, void *arg)
{
	(void)loop;
	struct bench *b = arg;
	int64_t t = now_us();
	b->t_measure = t + (int64_t)(b->o->warmup * 1e6);
	b->t_end = b->o->cmd == CMD_FILL ? INT64_MAX : b->t_measure + (int64_t)(b->o->seconds * 1e6);
	b->t_fill = t;
	for (long i = 0; i < b->o->clients; i++) {
		b->active++;
		if (b->o->cmd == CMD_LIST)
			list_start(&b->cl[i]);
		else
			store_start(&b->cl[i]);
	}
}

static void on_stop(loop_t *loop, void *arg)
{
	(void)loop;
	((struct bench *)arg)->stopping = true;
}

static int run_clients(const struct opts *o)
{
	struct bench *b = xcalloc(1, sizeof *b);
	b->o = o;
	b->loop = loop_new();
	b->cap = o->cmd == CMD_FILL ? (size_t)o->count : (size_t)(o->seconds * 50000) + 1000;
	b->samples = xmalloc(b->cap * sizeof *b->samples);
	if (o->cmd == CMD_LIST && (b->maxuid = list_maxuid(o)) < 1)
		die("no messages in the INBOX of %s (or storaged did not answer)", o->address);
	for (long i = 0; i < o->clients; i++) {
		struct client *c = &b->cl[i];
		c->b = b;
		c->idx = (int)i;
		c->rng = 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1);
		if ((c->bus = bus_client_new(b->loop, o->dir)) == NULL)
			die("cannot connect to the bus in %s", o->dir);
		if (o->cmd != CMD_LIST)
			msg_template(c, o->size);
	}
	/* Everyone starts together once the DEALERs are connected. */
	loop_timer_add(b->loop, 200, false, on_start, b);
	if (o->cmd != CMD_FILL)
		loop_timer_add(b->loop, 200 + (int64_t)((o->warmup + o->seconds) * 1000), false, on_stop, b);
	double cpu0 = cpu_seconds();
	loop_run(b->loop);
	double secs = o->cmd == CMD_FILL ? (now_us() - b->t_measure) / 1e6 : o->seconds;
	int rc = bench_report(b, secs, cpu_seconds() - cpu0);
	for (long i = 0; i < o->clients; i++) {
		bus_stream_free(&b->cl[i].st);
		bus_client_free(&b->cl[i].bus);
		free(b->cl[i].msg);
	}
	loop_free(&b->loop);
	free(b->samples);
	free(b);
	bus_zmq_term();
	return rc;
}

/* ---- bare SQLite -------------------------------------------------------------------- */

static void sql_check(sqlite3 *db, int rc, const char *what)
{
	if (rc == SQLITE_OK || rc == SQLITE_DONE || rc == SQLITE_ROW)
		return;
	fprintf(stderr, "storebench: sqlite %s: %s\n", what, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
	exit(2);
}

static int run_sqlite(const struct opts *o)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/sqlite-bench.db", o->dir);
	unlink(path);
	sqlite3 *db;
	sqlite3_stmt *ins;
	sql_check(NULL, sqlite3_open(path, &db), "open");
	sql_check(db, sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; "
				   "CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB NOT NULL)",
				   NULL, NULL, NULL), "setup");
	sql_check(db, sqlite3_prepare_v2(db, "INSERT INTO t (data) VALUES (?1)", -1, &ins, NULL), "prepare");
	unsigned char *data = xcalloc(1, (size_t)o->size + 1);
	struct bench b = { .o = o, .cap = (size_t)(o->seconds * 50000) + 1000 };
	b.samples = xmalloc(b.cap * sizeof *b.samples);
	struct client c = { .b = &b };
	int64_t t = now_us();
	b.t_measure = t + (int64_t)(o->warmup * 1e6);
	b.t_end = b.t_measure + (int64_t)(o->seconds * 1e6);
	double cpu0 = cpu_seconds();
	while ((t = now_us()) < b.t_end) {
		c.t0 = t;
		sql_check(db, sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), "begin");
		for (long i = 0; i < o->rows; i++) {
			memcpy(data, &t, sizeof t < (size_t)o->size ? sizeof t : (size_t)o->size);
			sqlite3_bind_blob(ins, 1, data, (int)o->size, SQLITE_STATIC);
			sql_check(db, sqlite3_step(ins), "insert");
			sqlite3_reset(ins);
		}
		sql_check(db, sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), "commit");
		bench_done(&b, &c, now_us());
	}
	b.rows = b.count * (uint64_t)o->rows;
	int rc = bench_report(&b, o->seconds, cpu_seconds() - cpu0);
	sqlite3_finalize(ins);
	sqlite3_close(db);
	unlink(path);
	snprintf(path, sizeof path, "%s/sqlite-bench.db-wal", o->dir);
	unlink(path);
	snprintf(path, sizeof path, "%s/sqlite-bench.db-shm", o->dir);
	unlink(path);
	free(data);
	free(b.samples);
	return rc;
}

/* ---- arguments ---------------------------------------------------------------------- */

static int usage(FILE *f)
{
	fprintf(f,
		"usage: storebench store BUS_DIR --address A --clients C --size B --seconds S [--warmup W] [--json]\n"
		"       storebench fill BUS_DIR --address A --clients C --size B --count N [--json]\n"
		"       storebench list BUS_DIR --address A --clients C --seconds S (--page N | --uid) [--json]\n"
		"       storebench sqlite DIR --size B --rows-per-commit K --seconds S [--json]\n"
		"See the comment at the top of bench/storebench.c.\n");
	return f == stdout ? 0 : 2;
}

static int parse(int argc, char **argv, struct opts *o)
{
	*o = (struct opts){ .clients = 1, .size = 4096, .seconds = 5, .warmup = 0.5, .rows = 1 };
	int m;
	for (m = 0; m < (int)ARRAY_LEN(cmd_names) && strcmp(argv[1], cmd_names[m]) != 0; m++)
		;
	if (m == (int)ARRAY_LEN(cmd_names) || argc < 3)
		return -1;
	o->cmd = (enum cmd)m;
	o->dir = argv[2];
	for (int i = 3; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--json") == 0 || strcmp(a, "--uid") == 0) {
			*(a[2] == 'j' ? &o->json : &o->uid) = true;
			continue;
		}
		if (i + 1 >= argc)
			return -1;
		char *end = NULL;
		const char *v = argv[++i];
		if (strcmp(a, "--address") == 0)
			o->address = v, end = (char *)v + strlen(v);
		else if (strcmp(a, "--clients") == 0)
			o->clients = strtol(v, &end, 10);
		else if (strcmp(a, "--size") == 0)
			o->size = strtol(v, &end, 10);
		else if (strcmp(a, "--count") == 0)
			o->count = strtol(v, &end, 10);
		else if (strcmp(a, "--page") == 0)
			o->page = strtol(v, &end, 10);
		else if (strcmp(a, "--rows-per-commit") == 0)
			o->rows = strtol(v, &end, 10);
		else if (strcmp(a, "--seconds") == 0)
			o->seconds = strtod(v, &end);
		else if (strcmp(a, "--warmup") == 0)
			o->warmup = strtod(v, &end);
		else
			return -1;
		if (*end != '\0' || end == v)
			return -1;
	}
	if (o->cmd == CMD_FILL)
		o->warmup = 0;
	bool bus = o->cmd != CMD_SQLITE;
	if (o->clients < 1 || o->clients > MAX_CLIENTS || o->size < 256 || o->size > 64L << 20 ||
	    !(o->seconds > 0 && o->seconds <= 3600) || !(o->warmup >= 0 && o->warmup <= 60) ||
	    (bus && o->address == NULL) || (o->cmd == CMD_FILL && o->count < 1) ||
	    (o->cmd == CMD_LIST && o->uid == (o->page > 0)) || o->page > 100000 ||
	    o->rows < 1 || o->rows > 10000)
		return -1;
	if (o->cmd == CMD_LIST && o->uid)
		o->page = 1;
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o;
	if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0))
		return usage(stdout);
	if (argc < 3 || parse(argc, argv, &o) < 0)
		return usage(stderr);
	log_init("storebench", LOG_WARN);
	return o.cmd == CMD_SQLITE ? run_sqlite(&o) : run_clients(&o);
}
