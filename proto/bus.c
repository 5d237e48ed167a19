/*
 * bus.c — endpoints, settings, envelopes, and the two clients: the
 * asynchronous DEALER client services use (many calls in flight, matched by
 * request id, timeouts and retries on the loop) and the synchronous one for
 * tools.
 *
 * A retry resends the same request id: a reply to either try completes the
 * call, and later duplicates are dropped, so the caller sees exactly one
 * reply. State-changing requests carry an idempotency key so that the
 * worker, too, acts once.
 */
#include "bus.h"
#include "msgtypes.h"
#include "config.h"
#include "envelope.h"
#include "frame.h"
#include "hmap.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

static void *zctx;
static int hb_ms = BUS_HEARTBEAT_MS;
static int call_timeout_ms = BUS_TIMEOUT_MS;
static int call_retries = BUS_RETRIES;

int bus_endpoints_init(bus_endpoints_t *ep, const char *dir)
{
	int bad = 0;
	bad |= snprintf(ep->clients, sizeof ep->clients, "ipc://%s/clients", dir) >= 108 + 6;
	bad |= snprintf(ep->workers, sizeof ep->workers, "ipc://%s/workers", dir) >= 108 + 6;
	bad |= snprintf(ep->events_in, sizeof ep->events_in, "ipc://%s/events.in", dir) >= 108 + 6;
	bad |= snprintf(ep->events_out, sizeof ep->events_out, "ipc://%s/events.out", dir) >= 108 + 6;
	bad |= snprintf(ep->tap, sizeof ep->tap, "ipc://%s/tap", dir) >= 108 + 6;
	return bad ? -1 : 0;
}

void *bus_zmq_ctx(void)
{
	if (zctx == NULL) {
		zctx = zmq_ctx_new();
		if (zctx == NULL)
			fatal("zmq.init", "error=%s", log_quote(zmq_strerror(errno)));
		zmq_ctx_set(zctx, ZMQ_BLOCKY, 0);
	}
	return zctx;
}

void bus_zmq_term(void)
{
	if (zctx != NULL) {
		zmq_ctx_term(zctx);
		zctx = NULL;
	}
}

int bus_configure(const struct config *cfg, char *err, size_t errlen)
{
	long v;
	if (config_get_int(cfg, "bus_heartbeat_ms", BUS_HEARTBEAT_MS, 10, 60000, &v, err, errlen) < 0)
		return -1;
	hb_ms = (int)v;
	if (config_get_int(cfg, "bus_timeout_ms", BUS_TIMEOUT_MS, 10, 600000, &v, err, errlen) < 0)
		return -1;
	call_timeout_ms = (int)v;
	if (config_get_int(cfg, "bus_retries", BUS_RETRIES, 0, 100, &v, err, errlen) < 0)
		return -1;
	call_retries = (int)v;
	return 0;
}

int bus_heartbeat_ms(void) { return hb_ms; }
int bus_timeout_ms(void) { return call_timeout_ms; }
int bus_retries(void) { return call_retries; }
int64_t bus_give_up_ms(void) { return (int64_t)call_timeout_ms * (call_retries + 1); }

json_t *bus_env_new(const char *type)
{
	return json_pack("{s:s, s:i}", "type", type, "v", BUS_PROTOCOL_VERSION);
}

const char *bus_reply_status(const json_t *reply)
{
	const char *s = json_string_value(json_object_get(reply, "status"));
	return s ? s : "";
}

bool bus_reply_ok(const json_t *reply)
{
	return strcmp(bus_reply_status(reply), "ok") == 0;
}

/* A reply made on our side: timeout, refused locally. New reference. */
static json_t *bus_synth_reply_new(const char *type, const char *id, const char *status,
				   const char *code, const char *error)
{
	return json_pack("{s:s, s:i, s:s, s:s, s:s, s:s}", "type", type ? type : "busd.error",
			 "v", BUS_PROTOCOL_VERSION, "id", id ? id : "-", "status", status,
			 "code", code, "error", error);
}

/* Creates a socket with the options every bus socket shares. */
static void *bus_socket(int type)
{
	void *s = zmq_socket(bus_zmq_ctx(), type);
	if (s == NULL)
		fatal("zmq.socket", "error=%s", log_quote(zmq_strerror(errno)));
	int linger = 0;
	zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
	int64_t max = BUS_FRAME_HARD_MAX;
	zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &max, sizeof max);
	return s;
}

void *bus_socket_new(int type);
void *bus_socket_new(int type)
{
	return bus_socket(type);
}

/* ---- asynchronous client ---------------------------------------------------- */

struct call {
	bus_client_t *client;
	uint64_t handle;
	char id[BUS_ID_MAX + 1];
	char service[BUS_SERVICE_MAX + 1];
	char type[128];
	bus_frames_t saved;      /* [env][raw?] kept for resends (refcounted) */
	int tries_left, timeout_ms;
	loop_timer_t *timer;
	bus_reply_fn fn;
	void *arg;
};

struct bus_client {
	loop_t *loop;
	void *sock;
	hmap_t *calls;           /* id -> struct call */
	int busy;                /* inside client_ready: freeing waits until it returns */
	bool freed;
	uint64_t next;
	char prefix[24];
};

static void client_ready(loop_t *loop, void *zsock, int fd, short revents, void *arg);

bus_client_t *bus_client_new(loop_t *loop, const char *bus_dir)
{
	bus_endpoints_t ep;
	if (bus_endpoints_init(&ep, bus_dir) < 0)
		return NULL;
	bus_client_t *c = xcalloc(1, sizeof *c);
	c->loop = loop;
	c->sock = bus_socket(ZMQ_DEALER);
	c->calls = hmap_new();
	snprintf(c->prefix, sizeof c->prefix, "%x-%lx", (unsigned)getpid(), (unsigned long)(wall_ms() % 0xffffff));
	if (zmq_connect(c->sock, ep.clients) < 0) {
		log_error("bus.connect", "endpoint=%s error=%s", ep.clients, log_quote(zmq_strerror(errno)));
		zmq_close(c->sock);
		hmap_free(&c->calls);
		free(c);
		return NULL;
	}
	loop_add_zsock(loop, c->sock, ZMQ_POLLIN, client_ready, c);
	return c;
}

static void call_free(struct call *call)
{
	loop_timer_cancel(call->client->loop, &call->timer);
	bus_frames_close(&call->saved);
	free(call);
}

static int client_free_call(const void *k, size_t kl, void *v, void *arg)
{
	(void)k; (void)kl; (void)arg;
	call_free(v);
	return 0;
}

void bus_client_free(bus_client_t **cp)
{
	bus_client_t *c = *cp;
	if (c == NULL)
		return;
	*cp = NULL;
	hmap_each(c->calls, client_free_call, NULL);
	hmap_free(&c->calls);
	loop_remove(c->loop, c->sock, -1);
	zmq_close(c->sock);
	c->sock = NULL;
	/* Freed from a reply callback: client_ready frees it on its way out. */
	if (c->busy > 0)
		c->freed = true;
	else
		free(c);
}

size_t bus_client_pending(const bus_client_t *c)
{
	return hmap_count(c->calls);
}

/* Sends one try of a call: [tag][service][env][raw?]. */
static int call_send(struct call *call)
{
	bus_frames_t f;
	bus_frames_init(&f);
	bus_frames_add_str(&f, BUS_CLIENT_TAG);
	bus_frames_add_str(&f, call->service);
	for (int i = 0; i < call->saved.n; i++)
		bus_frames_add_ref(&f, &call->saved, i);
	return bus_frames_send(call->client->sock, &f);
}

/* Completes a call: unlinks it, runs the callback, frees it. */
static void call_finish(struct call *call, json_t **reply, const void *raw, size_t rawlen)
{
	bus_client_t *c = call->client;
	hmap_del(c->calls, call->id, strlen(call->id));
	bus_reply_fn fn = call->fn;
	void *arg = call->arg;
	call_free(call);
	fn(reply, raw, rawlen, arg);
	json_decref(*reply);
	*reply = NULL;
}

static void call_timeout(loop_t *loop, void *arg)
{
	struct call *call = arg;
	(void)loop;
	call->timer = NULL;
	if (call->tries_left > 0) {
		call->tries_left--;
		log_debug("bus.retry", "id=%s service=%s type=%s", call->id, call->service, call->type);
		call_send(call);
		call->timer = loop_timer_add(call->client->loop, call->timeout_ms, false, call_timeout, call);
		return;
	}
	char why[160];
	snprintf(why, sizeof why, "no reply from %s in time", call->service);
	json_t *reply = bus_synth_reply_new(call->type, call->id, "error", "timeout", why);
	call_finish(call, &reply, NULL, 0);
}

/* A call refused before it was sent: its callback gets an "invalid" reply
 * at once. Returns 0, the handle of no call. */
static uint64_t call_refuse(struct call *call, const char *code, const char *why)
{
	json_t *reply = bus_synth_reply_new(call->type, call->id, "invalid", code, why);
	call->fn(&reply, NULL, 0, call->arg);
	json_decref(reply);
	free(call);
	return 0;
}

/* bus_call and bus_call_give: raw is copied, or *give (owned) taken. */
static uint64_t call_start(bus_client_t *c, const char *service, json_t **reqp, const void *raw,
			   void **give, size_t rawlen, const bus_call_opts_t *opts, bus_reply_fn fn,
			   void *arg)
{
	json_t *req = *reqp;
	*reqp = NULL;
	void *owned = give ? *give : NULL;
	if (give) {
		*give = NULL;
		raw = owned;
	}
	const char *type = json_string_value(json_object_get(req, "type"));
	struct call *call = xcalloc(1, sizeof *call);
	call->client = c;
	call->handle = ++c->next;
	call->fn = fn;
	call->arg = arg;
	call->timeout_ms = opts && opts->timeout_ms > 0 ? opts->timeout_ms : call_timeout_ms;
	call->tries_left = opts && opts->retries >= 0 ? opts->retries : call_retries;
	snprintf(call->id, sizeof call->id, "%s-%lx", c->prefix, (unsigned long)call->handle);
	snprintf(call->type, sizeof call->type, "%s", type ? type : "busd.error");
	if (type == NULL || strlen(service) > BUS_SERVICE_MAX || rawlen > BUS_RAW_MAX) {
		json_decref(req);
		free(owned);
		return call_refuse(call, "invalid", "request without type, bad service or raw too large");
	}
	snprintf(call->service, sizeof call->service, "%s", service);
	json_object_set_new(req, "v", json_integer(BUS_PROTOCOL_VERSION));
	json_object_set_new(req, "id", json_string(call->id));
	char *env = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	if (env == NULL || strlen(env) > BUS_ENVELOPE_MAX) {
		free(env);
		free(owned);
		return call_refuse(call, "too_large", "request envelope larger than the bus allows");
	}
	bus_frames_init(&call->saved);
	bus_frames_add(&call->saved, env, strlen(env));
	free(env);
	if (owned != NULL && rawlen > 0) {
		/* the resends share it too (bus_frames_add_ref) */
		bus_frames_add_owned(&call->saved, owned, rawlen);
	} else {
		if (raw != NULL)
			bus_frames_add(&call->saved, raw, rawlen);
		free(owned);
	}
	hmap_put(c->calls, call->id, strlen(call->id), call);
	call_send(call);
	call->timer = loop_timer_add(c->loop, call->timeout_ms, false, call_timeout, call);
	return call->handle;
}

uint64_t bus_call(bus_client_t *c, const char *service, json_t **req, const void *raw,
		  size_t rawlen, const bus_call_opts_t *opts, bus_reply_fn fn, void *arg)
{
	return call_start(c, service, req, raw, NULL, rawlen, opts, fn, arg);
}

uint64_t bus_call_give(bus_client_t *c, const char *service, json_t **req, void **raw,
		       size_t rawlen, const bus_call_opts_t *opts, bus_reply_fn fn, void *arg)
{
	return call_start(c, service, req, NULL, raw, rawlen, opts, fn, arg);
}

struct cancel_find {
	uint64_t handle;
	struct call *found;
};

static int cancel_match(const void *k, size_t kl, void *v, void *arg)
{
	(void)k; (void)kl;
	struct cancel_find *cf = arg;
	if (((struct call *)v)->handle == cf->handle) {
		cf->found = v;
		return 1;
	}
	return 0;
}

void bus_cancel(bus_client_t *c, uint64_t handle)
{
	/* Handles map to ids as "<prefix>-<handle hex>": rebuild it. */
	char id[BUS_ID_MAX + 1];
	snprintf(id, sizeof id, "%s-%lx", c->prefix, (unsigned long)handle);
	struct call *call = hmap_get(c->calls, id, strlen(id));
	if (call == NULL) {
		struct cancel_find cf = { handle, NULL };
		hmap_each(c->calls, cancel_match, &cf);
		call = cf.found;
	}
	if (call == NULL)
		return;
	hmap_del(c->calls, call->id, strlen(call->id));
	call_free(call);
}

/* Handles one reply frame set from busd. */
static bool client_on_reply(bus_frames_t *f, void *arg)
{
	bus_client_t *c = arg;
	bus_msg_t m;
	const char *why;
	if (bus_parse_client(f, false, &m, &why) < 0) {
		log_warn("bus.reply.bad", "why=%s", log_quote(why));
		return true;
	}
	json_error_t jerr;
	json_t *reply = json_loadb(bus_frame_data(f, m.env), bus_frame_size(f, m.env), 0, &jerr);
	const char *id = json_string_value(json_object_get(reply, "id"));
	struct call *call = id ? hmap_get(c->calls, id, strlen(id)) : NULL;
	if (call == NULL) {
		/* A late duplicate of a retried call, or a reply after cancel. */
		log_debug("bus.reply.late", "id=%s", id ? log_quote(id) : "-");
		json_decref(reply);
		return true;
	}
	if (!json_is_object(reply) || !json_is_string(json_object_get(reply, "status"))) {
		json_decref(reply);
		reply = bus_synth_reply_new(call->type, call->id, "error", "malformed",
					    "malformed reply from the bus");
	}
	const void *raw = m.raw >= 0 ? bus_frame_data(f, m.raw) : NULL;
	size_t rawlen = m.raw >= 0 ? bus_frame_size(f, m.raw) : 0;
	call_finish(call, &reply, raw, rawlen);
	return !c->freed;
}

static void client_ready(loop_t *loop, void *zsock, int fd, short revents, void *arg)
{
	(void)loop; (void)fd; (void)revents;
	bus_client_t *c = arg;
	c->busy++;
	bus_drain(zsock, 256, client_on_reply, c);
	if (--c->busy == 0 && c->freed)
		free(c);
}

/* ---- synchronous client ---------------------------------------------------- */

/* Waits for the reply to id on sock until deadline; NULL on timeout. */
static json_t *sync_wait_new(void *sock, const char *id, int64_t deadline, void **raw_out,
			     size_t *raw_out_len)
{
	for (;;) {
		int64_t left = deadline - now_ms();
		if (left <= 0)
			return NULL;
		zmq_pollitem_t it = { .socket = sock, .events = ZMQ_POLLIN };
		if (zmq_poll(&it, 1, (long)left) <= 0)
			continue;
		bus_frames_t f;
		bus_msg_t m;
		const char *why;
		if (bus_frames_recv(sock, &f) < 0)
			continue;
		if (bus_parse_client(&f, false, &m, &why) < 0) {
			bus_frames_close(&f);
			continue;
		}
		json_t *reply = json_loadb(bus_frame_data(&f, m.env), bus_frame_size(&f, m.env), 0, NULL);
		const char *rid = json_string_value(json_object_get(reply, "id"));
		if (rid == NULL || strcmp(rid, id) != 0) {
			json_decref(reply);
			bus_frames_close(&f);
			continue;
		}
		if (raw_out != NULL && m.raw >= 0) {
			*raw_out_len = bus_frame_size(&f, m.raw);
			*raw_out = xmalloc(*raw_out_len + 1);
			memcpy(*raw_out, bus_frame_data(&f, m.raw), *raw_out_len);
		}
		bus_frames_close(&f);
		return reply;
	}
}

json_t *bus_call_sync_new(const char *bus_dir, const char *service, json_t **reqp,
			  const void *raw, size_t rawlen, int timeout_ms, int retries,
			  void **raw_out, size_t *raw_out_len)
{
	static unsigned long seq;
	json_t *req = *reqp;
	*reqp = NULL;
	bus_endpoints_t ep;
	char id[BUS_ID_MAX + 1];
	const char *t = json_string_value(json_object_get(req, "type"));
	char type[128];
	snprintf(type, sizeof type, "%s", t ? t : "busd.error");
	snprintf(id, sizeof id, "s%x-%lx-%lu", (unsigned)getpid(), (unsigned long)(wall_ms() % 0xffffff), ++seq);
	if (raw_out != NULL) {
		*raw_out = NULL;
		*raw_out_len = 0;
	}
	if (bus_endpoints_init(&ep, bus_dir) < 0 || t == NULL) {
		json_decref(req);
		return bus_synth_reply_new(type, id, "invalid", "invalid", "bad bus directory or request");
	}
	json_object_set_new(req, "v", json_integer(BUS_PROTOCOL_VERSION));
	json_object_set_new(req, "id", json_string(id));
	char *env = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	void *sock = bus_socket(ZMQ_DEALER);
	zmq_connect(sock, ep.clients);
	json_t *reply = NULL;
	for (int attempt = 0; attempt <= retries && reply == NULL; attempt++) {
		bus_frames_t f;
		bus_frames_init(&f);
		bus_frames_add_str(&f, BUS_CLIENT_TAG);
		bus_frames_add_str(&f, service);
		bus_frames_add(&f, env, strlen(env));
		if (raw != NULL)
			bus_frames_add(&f, raw, rawlen);
		bus_frames_send(sock, &f);
		reply = sync_wait_new(sock, id, now_ms() + timeout_ms, raw_out, raw_out_len);
	}
	free(env);
	zmq_close(sock);
	if (reply == NULL) {
		char why[200];
		snprintf(why, sizeof why, "no reply from %s through busd at %s", service, bus_dir);
		reply = bus_synth_reply_new(type, id, "error", "timeout", why);
	}
	return reply;
}
