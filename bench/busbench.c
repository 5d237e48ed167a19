/*
 * busbench — request/reply round trips through busd, beside the two
 * baselines that bound what any broker can do (bench/bus.sh runs them all):
 *
 *   busbench echo-server ENDPOINT
 *       ROUTER bound at ENDPOINT that sends every message back unchanged
 *       (the "direct" mode: clients' DEALERs talk to it straight).
 *   busbench echo-dealer ENDPOINT
 *       DEALER connected to the relay's back ROUTER: sends one "READY" frame
 *       so the relay learns its routing id, then sends every message
 *       ([client rid][payload...]) back unchanged.
 *   busbench relay FRONT BACK
 *       The bare relay: two bound ROUTERs and zmq_poll, no parsing. Front to
 *       back prepends the echo dealer's routing id, back to front strips it.
 *       The ceiling for any broker.
 *   busbench client MODE ENDPOINT --clients C --size B --seconds S
 *                   [--warmup W] [--fork] [--json]
 *       MODE is direct, relay or busd. Starts C clients, each with its own
 *       DEALER, closed loop (one request outstanding per client): threads
 *       sharing one ZeroMQ context (one I/O thread, the cheapest client side,
 *       so the server side dominates), or with --fork one process (and
 *       context) per client. A request is one frame of B bytes (direct,
 *       relay) or the real client protocol (busd: [RBC1][echo][envelope][raw B bytes] to
 *       ipc://<bus>/clients, served by echo-worker). Every reply is checked:
 *       frame count and raw size, the sequence number written in the first
 *       8 bytes of the payload, and in busd mode "status":"ok" and the
 *       request id in the envelope. After W seconds of warm-up (0.5 by
 *       default) round trips started in the next S seconds are counted and
 *       their latencies (monotonic clock, µs) recorded in a shared mapping;
 *       the parent merges them for p50/p99.
 *
 * Output: one human line; with --json also one JSON line
 *   {"mode","clients","size","seconds","rtt_per_s","p50_us","p99_us","errors"}.
 * Exit status 1 when any error was counted or no round trip completed.
 *
 * Threads need no Makefile change: with glibc >= 2.34 pthread_create lives
 * in libc itself.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "stats.h"

#define MAX_CLIENTS 256
#define MAX_PARTS 8
#define REPLY_TIMEOUT_MS 5000
#define SAMPLES_PER_SEC 250000   /* per client: far above what one closed loop reaches */
#define BUSD_TAG "RBC1"
#define BUSD_SERVICE "echo"
#define BUSD_TYPE "echo.payload.echo"

static void die(const char *what)
{
	fprintf(stderr, "busbench: %s: %s\n", what, zmq_strerror(errno));
	exit(2);
}

static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void sleep_until_us(int64_t t)
{
	struct timespec ts = { .tv_sec = t / 1000000, .tv_nsec = (long)(t % 1000000) * 1000 };
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static void *socket_new(void *ctx, int type)
{
	void *s = zmq_socket(ctx, type);
	if (s == NULL)
		die("zmq_socket");
	int linger = 0;
	zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
	return s;
}

/* ---- echo server, echo dealer: forward every part back where it came from ---- */

static int echo_loop(void *s)
{
	zmq_msg_t m;
	zmq_msg_init(&m);
	for (;;) {
		if (zmq_msg_recv(&m, s, 0) < 0) {
			if (errno == EINTR)
				continue;
			die("echo recv");
		}
		int more = zmq_msg_more(&m);
		if (zmq_msg_send(&m, s, more ? ZMQ_SNDMORE : 0) < 0)
			die("echo send");
	}
	return 0;
}

static int cmd_echo_server(const char *endpoint)
{
	void *ctx = zmq_ctx_new();
	void *s = socket_new(ctx, ZMQ_ROUTER);
	if (zmq_bind(s, endpoint) < 0)
		die(endpoint);
	return echo_loop(s);
}

static int cmd_echo_dealer(const char *endpoint)
{
	void *ctx = zmq_ctx_new();
	void *s = socket_new(ctx, ZMQ_DEALER);
	if (zmq_connect(s, endpoint) < 0)
		die(endpoint);
	if (zmq_send(s, "READY", 5, 0) < 0)
		die("send READY");
	return echo_loop(s);
}

/* ---- the bare relay ---------------------------------------------------------- */

/* Moves the rest of a multipart message (after the part in m) from one socket
 * to another. */
static void relay_rest(zmq_msg_t *m, void *from, void *to)
{
	while (zmq_msg_more(m)) {
		if (zmq_msg_recv(m, from, 0) < 0)
			die("relay recv");
		if (zmq_msg_send(m, to, zmq_msg_more(m) ? ZMQ_SNDMORE : 0) < 0)
			die("relay send");
	}
}

static int cmd_relay(const char *front_ep, const char *back_ep)
{
	void *ctx = zmq_ctx_new();
	void *front = socket_new(ctx, ZMQ_ROUTER);
	void *back = socket_new(ctx, ZMQ_ROUTER);
	if (zmq_bind(front, front_ep) < 0)
		die(front_ep);
	if (zmq_bind(back, back_ep) < 0)
		die(back_ep);
	/* Learn the echo dealer's routing id from its READY: [rid]["READY"]. */
	unsigned char echo_rid[256];
	int rid_len = zmq_recv(back, echo_rid, sizeof echo_rid, 0);
	if (rid_len < 0 || rid_len > (int)sizeof echo_rid)
		die("relay: routing id of the echo dealer");
	char ready[16];
	zmq_recv(back, ready, sizeof ready, 0);
	zmq_msg_t m;
	zmq_msg_init(&m);
	zmq_pollitem_t items[2] = { { front, 0, ZMQ_POLLIN, 0 }, { back, 0, ZMQ_POLLIN, 0 } };
	for (;;) {
		if (zmq_poll(items, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			die("zmq_poll");
		}
		/* front -> back: [client rid][payload...] becomes [echo rid][client rid][payload...] */
		for (int i = 0; i < 512 && (items[0].revents & ZMQ_POLLIN); i++) {
			if (zmq_msg_recv(&m, front, ZMQ_DONTWAIT) < 0)
				break;
			zmq_send(back, echo_rid, (size_t)rid_len, ZMQ_SNDMORE);
			zmq_msg_send(&m, back, zmq_msg_more(&m) ? ZMQ_SNDMORE : 0);
			relay_rest(&m, front, back);
		}
		/* back -> front: [echo rid][client rid][payload...] loses its first frame */
		for (int i = 0; i < 512 && (items[1].revents & ZMQ_POLLIN); i++) {
			if (zmq_msg_recv(&m, back, ZMQ_DONTWAIT) < 0)
				break;
			relay_rest(&m, back, front);
		}
	}
	return 0;
}

/* ---- clients --------------------------------------------------------------------- */

enum mode { MODE_DIRECT, MODE_RELAY, MODE_BUSD };
static const char *const mode_names[] = { "direct", "relay", "busd" };

struct opts {
	enum mode mode;
	const char *endpoint;
	long clients, size;
	double seconds, warmup;
	bool json, fork;
};

/* What each client leaves in the shared mapping (one cache line each: the
 * threads count side by side). */
struct result {
	_Alignas(64) uint64_t count; /* round trips started in the measured window */
	uint64_t errors;      /* bad or missing replies, whole run */
	uint64_t dropped;     /* samples beyond the array (counted, not stored) */
	uint64_t nsamples;
	int done;
};

/* Receives one whole multipart message into parts (at most MAX_PARTS kept;
 * more is an error). Returns the number of parts, -1 on timeout/error. */
static int recv_parts(void *s, zmq_msg_t *parts, bool *too_many)
{
	int n = 0;
	*too_many = false;
	for (;;) {
		zmq_msg_t tmp;
		zmq_msg_t *m = n < MAX_PARTS ? &parts[n] : &tmp;
		zmq_msg_init(m);
		if (zmq_msg_recv(m, s, 0) < 0) {
			zmq_msg_close(m);
			for (int i = 0; i < n && i < MAX_PARTS; i++)
				zmq_msg_close(&parts[i]);
			return -1;
		}
		int more = zmq_msg_more(m);
		if (m == &tmp) {
			zmq_msg_close(m);
			*too_many = true;
		} else {
			n++;
		}
		if (!more)
			return n;
	}
}

/* True if the raw frame m is the payload we sent with sequence number seq. */
static bool payload_ok(zmq_msg_t *m, size_t size, uint64_t seq)
{
	if (zmq_msg_size(m) != size)
		return false;
	if (size < sizeof seq)
		return true;
	uint64_t got;
	memcpy(&got, zmq_msg_data(m), sizeof got);
	return got == seq;
}

/*
 * One request and its reply. Returns 1 for a good reply, 0 for a bad one,
 * -1 when none came (the socket is then out of step: the client stops).
 */
static int round_trip(const struct opts *o, void *s, unsigned char *payload, uint64_t seq, int idx)
{
	size_t size = (size_t)o->size;
	char env[160], idkey[96];
	zmq_msg_t parts[MAX_PARTS];
	bool too_many;
	if (size >= sizeof seq)
		memcpy(payload, &seq, sizeof seq);
	if (o->mode == MODE_BUSD) {
		int el = snprintf(env, sizeof env, "{\"type\":\"" BUSD_TYPE "\",\"v\":1,\"id\":\"bb%d-%llu\"}",
				  idx, (unsigned long long)seq);
		snprintf(idkey, sizeof idkey, "\"id\":\"bb%d-%llu\"", idx, (unsigned long long)seq);
		if (zmq_send(s, BUSD_TAG, 4, ZMQ_SNDMORE) < 0 ||
		    zmq_send(s, BUSD_SERVICE, strlen(BUSD_SERVICE), ZMQ_SNDMORE) < 0 ||
		    zmq_send(s, env, (size_t)el, size > 0 ? ZMQ_SNDMORE : 0) < 0 ||
		    (size > 0 && zmq_send(s, payload, size, 0) < 0))
			return -1;
	} else if (zmq_send(s, payload, size, 0) < 0) {
		return -1;
	}
	int n = recv_parts(s, parts, &too_many);
	if (n < 0)
		return -1;
	bool ok = !too_many;
	if (o->mode == MODE_BUSD) {
		/* [RBC1][echo][envelope][raw] */
		ok = ok && n == (size > 0 ? 4 : 3) && zmq_msg_size(&parts[0]) == 4 &&
		     memcmp(zmq_msg_data(&parts[0]), BUSD_TAG, 4) == 0;
		if (ok) {
			const void *e = zmq_msg_data(&parts[2]);
			size_t elen = zmq_msg_size(&parts[2]);
			ok = memmem(e, elen, "\"status\":\"ok\"", 13) != NULL &&
			     memmem(e, elen, idkey, strlen(idkey)) != NULL &&
			     (size == 0 || payload_ok(&parts[3], size, seq));
		}
	} else {
		ok = ok && n == 1 && payload_ok(&parts[0], size, seq);
	}
	for (int i = 0; i < n; i++)
		zmq_msg_close(&parts[i]);
	return ok ? 1 : 0;
}

struct client {
	const struct opts *o;
	void *ctx;            /* shared by the threads; NULL: the client makes its own */
	int idx;
	struct result *res;
	uint32_t *samples;
	uint64_t cap;
	int64_t t_start, t_measure, t_end;
};

static void *client_run(void *arg)
{
	const struct client *c = arg;
	const struct opts *o = c->o;
	struct result *res = c->res;
	int idx = c->idx;
	void *ctx = c->ctx ? c->ctx : zmq_ctx_new();
	void *s = socket_new(ctx, ZMQ_DEALER);
	int tmo = REPLY_TIMEOUT_MS;
	zmq_setsockopt(s, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
	zmq_setsockopt(s, ZMQ_SNDTIMEO, &tmo, sizeof tmo);
	if (zmq_connect(s, o->endpoint) < 0)
		die(o->endpoint);
	unsigned char *payload = malloc((size_t)o->size + 8);
	if (payload == NULL)
		die("malloc");
	for (long i = 0; i < o->size; i++)
		payload[i] = (unsigned char)(i * 31 + idx);
	sleep_until_us(c->t_start);
	uint64_t seq = 0;
	for (;;) {
		int64_t t0 = now_us();
		if (t0 >= c->t_end)
			break;
		int rc = round_trip(o, s, payload, ++seq, idx);
		int64_t t1 = now_us();
		if (rc < 0) {
			res->errors++;
			fprintf(stderr, "busbench: client %d: no reply within %d ms (%s); stopping it\n", idx,
				REPLY_TIMEOUT_MS, zmq_strerror(errno));
			break;
		}
		if (rc == 0) {
			res->errors++;
			continue;
		}
		if (t0 < c->t_measure)
			continue;
		res->count++;
		if (res->nsamples < c->cap) {
			int64_t d = t1 - t0;
			c->samples[res->nsamples++] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
		} else {
			res->dropped++;
		}
	}
	res->done = 1;
	free(payload);
	zmq_close(s);
	if (c->ctx == NULL)
		zmq_ctx_term(ctx);
	return NULL;
}

static int usage(FILE *f)
{
	fprintf(f,
		"usage: busbench echo-server ENDPOINT\n"
		"       busbench echo-dealer ENDPOINT\n"
		"       busbench relay FRONT BACK\n"
		"       busbench client direct|relay|busd ENDPOINT --clients C --size B --seconds S\n"
		"                       [--warmup W] [--fork] [--json]\n"
		"  client: C closed-loop clients (threads sharing one context; --fork: one\n"
		"  process each) for W s of warm-up (0.5) then S s measured;\n"
		"  prints round trips/s and p50/p99 latency (µs). busd mode speaks the client\n"
		"  protocol to ENDPOINT (ipc://<bus>/clients) and needs echo-worker running.\n");
	return f == stdout ? 0 : 2;
}

static int parse_client(int argc, char **argv, struct opts *o)
{
	*o = (struct opts){ .clients = 1, .size = 1024, .seconds = 5, .warmup = 0.5 };
	if (argc < 4)
		return -1;
	int m;
	for (m = 0; m < 3 && strcmp(argv[2], mode_names[m]) != 0; m++)
		;
	if (m == 3)
		return -1;
	o->mode = (enum mode)m;
	o->endpoint = argv[3];
	for (int i = 4; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--json") == 0 || strcmp(a, "--fork") == 0) {
			*(a[2] == 'j' ? &o->json : &o->fork) = true;
			continue;
		}
		if (i + 1 >= argc)
			return -1;
		char *end;
		const char *v = argv[++i];
		if (strcmp(a, "--clients") == 0)
			o->clients = strtol(v, &end, 10);
		else if (strcmp(a, "--size") == 0)
			o->size = strtol(v, &end, 10);
		else if (strcmp(a, "--seconds") == 0)
			o->seconds = strtod(v, &end);
		else if (strcmp(a, "--warmup") == 0)
			o->warmup = strtod(v, &end);
		else
			return -1;
		if (*end != '\0' || end == v)
			return -1;
	}
	if (o->clients < 1 || o->clients > MAX_CLIENTS || o->size < 0 || o->size > 16L * 1024 * 1024 ||
	    !(o->seconds > 0 && o->seconds <= 3600) || !(o->warmup >= 0 && o->warmup <= 60))
		return -1;
	return 0;
}

static int cmd_client(const struct opts *o)
{
	size_t nc = (size_t)o->clients;
	uint64_t cap = (uint64_t)(o->seconds * SAMPLES_PER_SEC) + 1000;
	size_t res_bytes = (nc * sizeof(struct result) + 63) & ~(size_t)63;
	size_t total = res_bytes + nc * cap * sizeof(uint32_t);
	void *shm = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (shm == MAP_FAILED) {
		perror("busbench: mmap");
		return 2;
	}
	struct result *res = shm;
	uint32_t *samples = (uint32_t *)((char *)shm + res_bytes);
	/* Everyone starts together once all are started and connected. */
	int64_t t_start = now_us() + 100000 + 10000 * (int64_t)nc;
	int64_t t_measure = t_start + (int64_t)(o->warmup * 1e6);
	int64_t t_end = t_measure + (int64_t)(o->seconds * 1e6);
	struct client cl[MAX_CLIENTS];
	pid_t pids[MAX_CLIENTS];
	pthread_t tids[MAX_CLIENTS];
	void *ctx = o->fork ? NULL : zmq_ctx_new();
	uint64_t count = 0, errors = 0, dropped = 0, ns = 0;
	fflush(NULL);
	for (size_t i = 0; i < nc; i++) {
		cl[i] = (struct client){ .o = o, .ctx = ctx, .idx = (int)i, .res = &res[i],
					 .samples = samples + i * cap, .cap = cap, .t_start = t_start,
					 .t_measure = t_measure, .t_end = t_end };
		if (!o->fork) {
			int e = pthread_create(&tids[i], NULL, client_run, &cl[i]);
			if (e != 0) {
				fprintf(stderr, "busbench: pthread_create: %s\n", strerror(e));
				exit(2);
			}
			continue;
		}
		pids[i] = fork();
		if (pids[i] < 0) {
			perror("busbench: fork");
			for (size_t j = 0; j < i; j++)
				kill(pids[j], SIGKILL);
			return 2;
		}
		if (pids[i] == 0) {
			client_run(&cl[i]);
			_exit(0);
		}
	}
	for (size_t i = 0; i < nc; i++) {
		bool failed = false;
		if (o->fork) {
			int st;
			while (waitpid(pids[i], &st, 0) < 0 && errno == EINTR)
				;
			failed = !WIFEXITED(st) || WEXITSTATUS(st) != 0;
		} else {
			pthread_join(tids[i], NULL);
		}
		if (failed || !res[i].done) {
			fprintf(stderr, "busbench: client %zu failed\n", i);
			errors++;
		}
		count += res[i].count;
		errors += res[i].errors;
		dropped += res[i].dropped;
	}
	if (ctx != NULL)
		zmq_ctx_term(ctx);
	/* Gather every client's samples at the front of the array. */
	for (size_t i = 0; i < nc; i++) {
		memmove(samples + ns, samples + i * cap, res[i].nsamples * sizeof(uint32_t));
		ns += res[i].nsamples;
	}
	stats_sort(samples, ns);
	uint32_t p50 = stats_percentile(samples, ns, 0.50);
	uint32_t p99 = stats_percentile(samples, ns, 0.99);
	double rate = (double)count / o->seconds;
	printf("%-6s clients=%-3ld size=%-7ld %10.0f rtt/s  p50 %6u us  p99 %6u us  errors %llu%s\n",
	       mode_names[o->mode], o->clients, o->size, rate, p50, p99, (unsigned long long)errors,
	       dropped ? "  (some latency samples not stored)" : "");
	if (o->json)
		printf("{\"mode\":\"%s\",\"clients\":%ld,\"size\":%ld,\"seconds\":%g,\"rtt_per_s\":%.1f,"
		       "\"p50_us\":%u,\"p99_us\":%u,\"errors\":%llu}\n",
		       mode_names[o->mode], o->clients, o->size, o->seconds, rate, p50, p99,
		       (unsigned long long)errors);
	munmap(shm, total);
	return errors || count == 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return usage(stderr);
	const char *cmd = argv[1];
	if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0)
		return usage(stdout);
	if (strcmp(cmd, "echo-server") == 0 && argc == 3)
		return cmd_echo_server(argv[2]);
	if (strcmp(cmd, "echo-dealer") == 0 && argc == 3)
		return cmd_echo_dealer(argv[2]);
	if (strcmp(cmd, "relay") == 0 && argc == 4)
		return cmd_relay(argv[2], argv[3]);
	if (strcmp(cmd, "client") == 0) {
		struct opts o;
		if (parse_client(argc, argv, &o) < 0)
			return usage(stderr);
		return cmd_client(&o);
	}
	return usage(stderr);
}
