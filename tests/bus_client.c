/*
 * bus-client — drives the bus from the end-to-end tests with the real
 * proto/ client library (asynchronous calls, retries, streams, events).
 *
 *   bus-client [--count N] [--concurrency C] [--size B] [--delay-ms D]
 *              [--timeout-ms T] [--retries R] [--service S] [--type T]
 *   bus-client --stream BYTES        one chunked echo.stream.put, sha256 checked
 *   bus-client --subscribe PREFIX [--count N] [--wait-ms W]
 *
 * Request mode prints one JSON line per reply ({"n", "status", "code",
 * "worker_pid"}) and a summary line {"summary": true, ...} counting replies
 * per request, so a test can prove every request got exactly one reply.
 * Exit 0 when every request got an ok reply.
 */
#include "bus.h"
#include "chunk.h"
#include "config.h"
#include "log.h"
#include "util.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct opts {
	long count, conc, size, delay, timeout, retries, stream, wait_ms;
	const char *service, *type, *subscribe;
};

struct run {
	struct opts o;
	loop_t *loop;
	bus_client_t *client;
	unsigned char *payload;
	long next, done, ok;
	int *replies;           /* replies seen per request index */
	json_t *by_worker;
	/* stream mode */
	bus_stream_t *st;
	size_t off;
	char sha[65];
	int rc;
};

struct slot {
	struct run *r;
	long n;
};

static void send_next(struct run *r);

static void on_reply(json_t **reply, const void *raw, size_t rawlen, void *arg)
{
	struct slot *s = arg;
	struct run *r = s->r;
	const char *status = bus_reply_status(*reply);
	json_t *pid = json_object_get(*reply, "worker_pid");
	r->replies[s->n]++;
	r->done++;
	if (strcmp(status, "ok") == 0 && (size_t)r->o.size == rawlen &&
	    (rawlen == 0 || memcmp(raw, r->payload, rawlen) == 0)) {
		r->ok++;
		char key[32];
		snprintf(key, sizeof key, "%lld", (long long)json_integer_value(pid));
		json_t *c = json_object_get(r->by_worker, key);
		json_object_set_new(r->by_worker, key, json_integer(json_integer_value(c) + 1));
	}
	printf("{\"n\":%ld,\"status\":\"%s\",\"code\":\"%s\",\"worker_pid\":%lld,\"raw_ok\":%s}\n", s->n, status,
	       json_string_value(json_object_get(*reply, "code")) ?: "",
	       (long long)json_integer_value(pid), (size_t)r->o.size == rawlen ? "true" : "false");
	free(s);
	if (r->next < r->o.count)
		send_next(r);
	else if (r->done == r->o.count)
		loop_stop(r->loop);
}

static void send_next(struct run *r)
{
	struct slot *s = xcalloc(1, sizeof *s);
	s->r = r;
	s->n = r->next++;
	json_t *req = bus_env_new(r->o.type);
	if (r->o.delay > 0)
		json_object_set_new(req, "delay_ms", json_integer(r->o.delay));
	bus_call_opts_t co = { .timeout_ms = (int)r->o.timeout, .retries = (int)r->o.retries };
	bus_call(r->client, r->o.service, &req, r->o.size ? r->payload : NULL, (size_t)r->o.size,
		 &co, on_reply, s);
}

/* ---- stream mode ---- */

static void stream_write_next(struct run *r)
{
	bool last;
	size_t start = r->off;
	size_t n = chunk_next((size_t)r->o.stream, &r->off, BUS_CHUNK_SIZE, &last);
	bus_stream_write(r->st, r->payload + start, n, last);
}

static void stream_step(bus_stream_t *st, json_t **reply, void *arg)
{
	(void)st;
	struct run *r = arg;
	if (!bus_reply_ok(*reply)) {
		fprintf(stderr, "bus-client: stream chunk failed: %s (%s)\n",
			json_string_value(json_object_get(*reply, "error")) ?: "?",
			json_string_value(json_object_get(*reply, "code")) ?: "?");
		r->rc = 1;
		loop_stop(r->loop);
		return;
	}
	const char *sha = json_string_value(json_object_get(*reply, "sha256"));
	if (sha == NULL) {
		stream_write_next(r);
		return;
	}
	int same = strcmp(sha, r->sha) == 0;
	printf("{\"stream\":true,\"bytes\":%lld,\"chunks\":%lld,\"sha256_ok\":%s,\"worker_pid\":%lld}\n",
	       (long long)json_integer_value(json_object_get(*reply, "bytes")),
	       (long long)json_integer_value(json_object_get(*reply, "chunks")), same ? "true" : "false",
	       (long long)json_integer_value(json_object_get(*reply, "worker_pid")));
	r->rc = same ? 0 : 1;
	loop_stop(r->loop);
}

static void stream_start(struct run *r)
{
	unsigned char md[32];
	unsigned int mdlen = 0;
	EVP_Digest(r->payload, (size_t)r->o.stream, md, &mdlen, EVP_sha256(), NULL);
	for (int i = 0; i < 32; i++)
		snprintf(r->sha + 2 * i, 3, "%02x", md[i]);
	char idem[64];
	snprintf(idem, sizeof idem, "bc-%lx-%lx", (unsigned long)wall_ms(), (unsigned long)random());
	json_t *fields = json_pack("{s:s, s:s}", "name", "bus-client", "idem", idem);
	r->st = bus_stream_new(r->client, r->o.service, "echo.stream.put", &fields, stream_step, r);
	stream_write_next(r);
}

/* ---- subscribe mode ---- */

static void on_event(json_t **ev, const void *raw, size_t rawlen, void *arg)
{
	(void)raw; (void)rawlen;
	struct run *r = arg;
	json_dumpf(*ev, stdout, JSON_COMPACT);
	fputc('\n', stdout);
	fflush(stdout);
	if (++r->done >= r->o.count)
		loop_stop(r->loop);
}

static void on_deadline(loop_t *loop, void *arg)
{
	struct run *r = arg;
	fprintf(stderr, "bus-client: time is up after %ld ms\n", r->o.wait_ms);
	r->rc = 1;
	loop_stop(loop);
}

/* ---- main ---- */

static int parse_args(struct opts *o, int argc, char **argv)
{
	*o = (struct opts){ .count = 1, .conc = 1, .timeout = 0, .retries = -1, .wait_ms = 60000,
			    .service = "echo", .type = "echo.payload.echo" };
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (v == NULL)
			return -1;
		if (strcmp(a, "--count") == 0) o->count = atol(v);
		else if (strcmp(a, "--concurrency") == 0) o->conc = atol(v);
		else if (strcmp(a, "--size") == 0) o->size = atol(v);
		else if (strcmp(a, "--delay-ms") == 0) o->delay = atol(v);
		else if (strcmp(a, "--timeout-ms") == 0) o->timeout = atol(v);
		else if (strcmp(a, "--retries") == 0) o->retries = atol(v);
		else if (strcmp(a, "--stream") == 0) o->stream = atol(v);
		else if (strcmp(a, "--wait-ms") == 0) o->wait_ms = atol(v);
		else if (strcmp(a, "--service") == 0) o->service = v;
		else if (strcmp(a, "--type") == 0) o->type = v;
		else if (strcmp(a, "--subscribe") == 0) o->subscribe = v;
		else return -1;
		i++;
	}
	if (o->count < 0 || o->conc < 1 || o->size < 0 || o->size > BUS_RAW_MAX || o->stream < 0)
		return -1;
	return 0;
}

int main(int argc, char **argv)
{
	struct run r = { 0 };
	char err[256];
	if (parse_args(&r.o, argc, argv) < 0) {
		fprintf(stderr, "usage: bus-client [--count N] [--concurrency C] [--size B] [--delay-ms D] "
			"[--timeout-ms T] [--retries R] [--service S] [--type T] | --stream BYTES | "
			"--subscribe PREFIX [--count N] [--wait-ms W]\n");
		return 2;
	}
	log_init("bus-client", LOG_WARN);
	config_t *cfg = config_load(NULL, err, sizeof err);
	if (cfg == NULL || bus_configure(cfg, err, sizeof err) < 0) {
		fprintf(stderr, "bus-client: %s\n", err);
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	r.loop = loop_new();
	loop_timer_add(r.loop, r.o.wait_ms, false, on_deadline, &r);
	size_t plen = (size_t)(r.o.stream > r.o.size ? r.o.stream : r.o.size);
	r.payload = xmalloc(plen + 1);
	RAND_bytes(r.payload, (int)plen);
	bus_sub_t *sub = NULL;
	if (r.o.subscribe != NULL) {
		sub = bus_sub_new(r.loop, config_bus_dir(cfg), r.o.subscribe, on_event, &r);
		printf("{\"subscribed\":true}\n");
	} else {
		r.client = bus_client_new(r.loop, config_bus_dir(cfg));
		if (r.o.stream > 0) {
			stream_start(&r);
		} else {
			r.replies = xcalloc((size_t)r.o.count + 1, sizeof *r.replies);
			r.by_worker = json_object();
			for (long i = 0; i < r.o.conc && r.next < r.o.count; i++)
				send_next(&r);
		}
	}
	if (r.o.count > 0 || r.o.stream > 0)
		loop_run(r.loop);
	if (r.replies != NULL) {
		long once = 0, dup = 0, none = 0;
		for (long i = 0; i < r.o.count; i++) {
			once += r.replies[i] == 1;
			dup += r.replies[i] > 1;
			none += r.replies[i] == 0;
		}
		char *bw = json_dumps(r.by_worker, JSON_COMPACT);
		printf("{\"summary\":true,\"sent\":%ld,\"ok\":%ld,\"exactly_once\":%ld,\"duplicated\":%ld,"
		       "\"unanswered\":%ld,\"by_worker\":%s}\n", r.o.count, r.ok, once, dup, none, bw);
		free(bw);
		r.rc = r.rc || r.ok != r.o.count || dup || none;
		json_decref(r.by_worker);
		free(r.replies);
	}
	bus_stream_free(&r.st);
	bus_sub_free(&sub);
	bus_client_free(&r.client);
	loop_free(&r.loop);
	free(r.payload);
	bus_zmq_term();
	config_free(&cfg);
	return r.rc;
}
