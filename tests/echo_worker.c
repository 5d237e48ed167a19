/*
 * echo-worker — the small bus worker the end-to-end tests and the benchmark
 * run (service "echo", or another name given with --service to test that
 * busd refuses it). It answers:
 *   echo.payload.echo  echoes text and the raw frame; delay_ms waits first
 *                      (on the loop, not blocking), fail replies that error
 *   echo.stream.put    receives a chunked stream, checks order with
 *                      chunk_rx, replies the running size and, on the last
 *                      chunk, the SHA-256 of everything received
 *   echo.event.emit    publishes echo.event.fired
 * and runs echo.control like every service.
 */
#include "bus.h"
#include "chunk.h"
#include "config.h"
#include "hmap.h"
#include "log.h"
#include "service.h"
#include "util.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ECHO_STREAM_MAX (64ULL * 1024 * 1024)

struct echo {
	loop_t *loop;
	bus_pub_t *pub;
	bus_control_t *ctl;
	hmap_t *streams;      /* stream id -> struct stream_state */
	uint64_t seq;
};

struct stream_state {
	chunk_rx_t rx;
	EVP_MD_CTX *md;
	json_t *last_reply;   /* kept to answer a retried last chunk */
};

struct delayed {
	struct echo *e;
	bus_req_t *req;
	json_t *fields;
	void *raw;
	size_t rawlen;
};

static void echo_delayed(loop_t *loop, void *arg)
{
	(void)loop;
	struct delayed *d = arg;
	bus_reply(&d->req, &d->fields, d->raw, d->rawlen);
	free(d->raw);
	free(d);
}

static void echo_payload(bus_req_t **req, void *arg)
{
	struct echo *e = arg;
	const char *text = NULL, *fail = NULL;
	json_int_t delay = 0;
	size_t rawlen;
	const void *raw = bus_req_raw(*req, &rawlen);
	bus_control_count(e->ctl);
	if (bus_req_unpack(req, "{s?s, s?I, s?s}", "text", &text, "delay_ms", &delay, "fail", &fail) < 0)
		return;
	if (delay < 0 || delay > 60000) {
		bus_reply_error(req, "invalid", "delay_ms must be 0..60000");
		return;
	}
	if (fail != NULL) {
		bus_reply_error(req, fail, "failing as asked");
		return;
	}
	json_t *f = json_pack("{s:i, s:I, s:I}", "worker_pid", (int)getpid(), "raw_len",
			      (json_int_t)rawlen, "seq", (json_int_t)++e->seq);
	if (text != NULL)
		json_object_set_new(f, "text", json_string(text));
	if (delay == 0) {
		bus_reply(req, &f, raw, rawlen);
		return;
	}
	struct delayed *d = xcalloc(1, sizeof *d);
	d->e = e;
	d->req = *req;
	*req = NULL;  /* parked until the timer fires */
	d->fields = f;
	d->rawlen = rawlen;
	d->raw = xmalloc(rawlen + 1);
	if (rawlen)
		memcpy(d->raw, raw, rawlen);
	else {
		free(d->raw);
		d->raw = NULL;
	}
	loop_timer_add(e->loop, delay, false, echo_delayed, d);
}

static void stream_state_free(struct stream_state *st)
{
	EVP_MD_CTX_free(st->md);
	json_decref(st->last_reply);
	free(st);
}

static void echo_stream(bus_req_t **req, void *arg)
{
	struct echo *e = arg;
	const json_t *env = bus_req_env(*req);
	const char *stream;
	json_int_t seq;
	int last;
	size_t len;
	const void *data = bus_req_raw(*req, &len);
	const char *why = "", *name = NULL;
	if (bus_req_unpack(req, "{s?s}", "name", &name) < 0)
		return;
	if (json_unpack((json_t *)env, "{s:{s:s, s:I, s:b}}", "chunk", "stream", &stream, "seq", &seq,
			"last", &last) < 0) {
		bus_reply_error(req, "invalid", "echo.stream.put needs a chunk");
		return;
	}
	struct stream_state *st = hmap_get(e->streams, stream, strlen(stream));
	if (st == NULL) {
		st = xcalloc(1, sizeof *st);
		chunk_rx_init(&st->rx, ECHO_STREAM_MAX);
		st->md = EVP_MD_CTX_new();
		EVP_DigestInit_ex(st->md, EVP_sha256(), NULL);
		hmap_put(e->streams, stream, strlen(stream), st);
	}
	enum chunk_verdict v = chunk_rx_check(&st->rx, stream, seq, last, len, &why);
	if (v == CHUNK_REJECT) {
		bus_reply_error(req, "stream_broken", "%s", why);
		stream_state_free(hmap_del(e->streams, stream, strlen(stream)));
		return;
	}
	if (v == CHUNK_DUPLICATE && st->last_reply != NULL) {
		json_t *again = json_deep_copy(st->last_reply);
		bus_reply(req, &again, NULL, 0);
		return;
	}
	if (v == CHUNK_ACCEPT)
		EVP_DigestUpdate(st->md, data, len);
	json_t *f = json_pack("{s:I, s:i}", "bytes", (json_int_t)st->rx.bytes, "worker_pid", (int)getpid());
	if (st->rx.done) {
		unsigned char md[32];
		char hex[65];
		EVP_DigestFinal_ex(st->md, md, NULL);
		EVP_DigestInit_ex(st->md, EVP_sha256(), NULL);
		for (int i = 0; i < 32; i++)
			snprintf(hex + 2 * i, 3, "%02x", md[i]);
		json_object_set_new(f, "sha256", json_string(hex));
		json_object_set_new(f, "chunks", json_integer(st->rx.next_seq));
	}
	json_decref(st->last_reply);
	st->last_reply = json_deep_copy(f);
	bus_reply(req, &f, NULL, 0);
}

static void echo_emit(bus_req_t **req, void *arg)
{
	struct echo *e = arg;
	const char *text = "";
	if (bus_req_unpack(req, "{s?s}", "text", &text) < 0)
		return;
	json_t *ev = json_pack("{s:s, s:s, s:i}", "type", "echo.event.fired", "text", text,
			       "worker_pid", (int)getpid());
	int rc = bus_publish(e->pub, &ev, NULL, 0);
	json_t *f = json_pack("{s:b}", "published", rc == 0);
	bus_reply(req, &f, NULL, 0);
}

static int echo_free_stream(const void *k, size_t kl, void *v, void *arg)
{
	(void)k; (void)kl; (void)arg;
	stream_state_free(v);
	return 0;
}

static const bus_handler_t echo_handlers[] = {
	{ "echo.payload.echo", echo_payload },
	{ "echo.stream.put", echo_stream },
	{ "echo.event.emit", echo_emit },
	{ NULL, NULL },
};

int main(int argc, char **argv)
{
	static const service_opts_t opts = { "echo-worker", "A test worker for the bus (service echo)." };
	const char *service = "echo";
	/* --service NAME is ours; everything else is the common flags. */
	if (argc >= 3 && strcmp(argv[1], "--service") == 0) {
		service = argv[2];
		argv[2] = argv[0];
		argv += 2;
		argc -= 2;
	}
	config_t *cfg = service_init(&opts, argc, argv);
	const char *dir = config_bus_dir(cfg);
	struct echo e = { .loop = loop_new(), .streams = hmap_new() };
	e.pub = bus_pub_new(dir);
	e.ctl = bus_control_new(e.loop, dir, service, NULL, NULL, NULL);
	bus_worker_t *w = bus_worker_new(e.loop, dir, service, echo_handlers, &e, 0);
	if (w == NULL || e.ctl == NULL || e.pub == NULL)
		fatal("bus", "bus_dir=%s why=\"cannot create bus sockets\"", log_quote(dir));
	service_stop_on_signals(e.loop);
	log_info("ready", "service=%s pid=%d", service, (int)getpid());
	loop_run(e.loop);
	bus_worker_free(&w);
	bus_control_free(&e.ctl);
	bus_pub_free(&e.pub);
	hmap_each(e.streams, echo_free_stream, NULL);
	hmap_free(&e.streams);
	loop_free(&e.loop);
	bus_zmq_term();
	config_free(&cfg);
	return 0;
}
