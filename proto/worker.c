/*
 * worker.c — the worker side of the bus (Majordomo with credit): register a
 * service with busd (READY), receive requests, reply, heartbeat both ways,
 * and reconnect when busd goes quiet for BUS_LIVENESS heartbeats or tells
 * us to (DISCONNECT after a busd restart). Also the <service>.control worker
 * every service runs.
 *
 * A request (bus_req_t) refers to its worker; a worker freed while requests
 * are still parked stays allocated (as a zombie) until the last one is freed,
 * so a late reply never touches freed memory.
 */
#include "bus.h"
#include "msgtypes.h"
#include "frame.h"
#include "jsonx.h"
#include "log.h"
#include "util.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

void *bus_socket_new(int type);

struct bus_worker {
	loop_t *loop;
	char service[BUS_SERVICE_MAX + 1];
	bus_endpoints_t ep;
	void *sock;
	const bus_handler_t *handlers;
	void *arg;
	int credit;
	int64_t last_heard, started;
	loop_timer_t *hb_timer;
	uint64_t requests;
	uint64_t generation;      /* bumped on reconnect: older requests' replies are dropped */
	bool connected, zombie;
	size_t outstanding;       /* requests handed out and not yet freed */
	int busy;                 /* inside worker_ready: freeing waits until it returns */
};

struct bus_req {
	bus_worker_t *w;
	uint64_t generation;
	bus_frames_t frames;      /* [ticket][env][raw?] kept by reference */
	json_t *env;
	const char *type;
	char id[BUS_ID_MAX + 1];
};

static void worker_ready(loop_t *loop, void *zsock, int fd, short revents, void *arg);
static void worker_heartbeat(loop_t *loop, void *arg);

/* Sends [tag][cmd] plus optional frames. */
static void worker_send_cmd(bus_worker_t *w, unsigned char cmd, bus_frames_t *more)
{
	bus_frames_t f;
	bus_frames_init(&f);
	bus_frames_add_str(&f, BUS_WORKER_TAG);
	bus_frames_add_byte(&f, cmd);
	if (more != NULL) {
		for (int i = 0; i < more->n; i++)
			bus_frames_add_ref(&f, more, i);
	}
	bus_frames_send(w->sock, &f);
}

/* (Re)creates the socket and registers with READY. */
static void worker_connect(bus_worker_t *w)
{
	if (w->sock != NULL) {
		loop_remove(w->loop, w->sock, -1);
		zmq_close(w->sock);
	}
	w->sock = bus_socket_new(ZMQ_DEALER);
	if (zmq_connect(w->sock, w->ep.workers) < 0)
		log_warn("bus.worker.connect", "endpoint=%s error=%s", w->ep.workers,
			 log_quote(zmq_strerror(zmq_errno())));
	loop_add_zsock(w->loop, w->sock, ZMQ_POLLIN, worker_ready, w);
	w->generation++;
	w->connected = false;
	w->last_heard = now_ms();
	char info[160];
	snprintf(info, sizeof info, "{\"pid\":%d,\"started\":%lld,\"credit\":%d,\"heartbeat_ms\":%d}",
		 (int)getpid(), (long long)w->started, w->credit, bus_heartbeat_ms());
	bus_frames_t f;
	bus_frames_init(&f);
	bus_frames_add_str(&f, w->service);
	bus_frames_add_str(&f, info);
	worker_send_cmd(w, BUS_W_READY, &f);
	bus_frames_close(&f);
}

bus_worker_t *bus_worker_new(loop_t *loop, const char *bus_dir, const char *service,
			     const bus_handler_t *handlers, void *arg, int credit)
{
	bus_worker_t *w = xcalloc(1, sizeof *w);
	if (bus_endpoints_init(&w->ep, bus_dir) < 0 || strlen(service) > BUS_SERVICE_MAX) {
		free(w);
		return NULL;
	}
	w->loop = loop;
	snprintf(w->service, sizeof w->service, "%s", service);
	w->handlers = handlers;
	w->arg = arg;
	w->credit = credit > 0 ? credit : BUS_WORKER_CREDIT;
	w->started = wall_ms();
	worker_connect(w);
	w->hb_timer = loop_timer_add(loop, bus_heartbeat_ms(), true, worker_heartbeat, w);
	return w;
}

void bus_worker_free(bus_worker_t **wp)
{
	bus_worker_t *w = *wp;
	if (w == NULL)
		return;
	*wp = NULL;
	if (w->sock != NULL) {
		worker_send_cmd(w, BUS_W_DISCONNECT, NULL);
		loop_remove(w->loop, w->sock, -1);
		zmq_close(w->sock);
		w->sock = NULL;
	}
	loop_timer_cancel(w->loop, &w->hb_timer);
	if (w->outstanding > 0 || w->busy > 0) {
		w->zombie = true;
		return;
	}
	free(w);
}

uint64_t bus_worker_requests(const bus_worker_t *w) { return w->requests; }
bool bus_worker_connected(const bus_worker_t *w) { return w->connected; }

static void worker_heartbeat(loop_t *loop, void *arg)
{
	bus_worker_t *w = arg;
	(void)loop;
	if (now_ms() - w->last_heard > (int64_t)BUS_LIVENESS * bus_heartbeat_ms()) {
		if (w->connected)
			log_warn("bus.worker.lost", "service=%s why=\"busd silent\"", w->service);
		worker_connect(w);
		return;
	}
	/* Silent until busd acknowledges READY: a refused worker must not
	 * provoke a DISCONNECT/READY loop with its heartbeats. */
	if (w->connected)
		worker_send_cmd(w, BUS_W_HEARTBEAT, NULL);
}

/* ---- requests ----------------------------------------------------------------- */

const json_t *bus_req_env(const bus_req_t *req) { return req->env; }
const char *bus_req_type(const bus_req_t *req) { return req->type; }

const void *bus_req_raw(const bus_req_t *req, size_t *len)
{
	if (req->frames.n < 3) {
		*len = 0;
		return NULL;
	}
	*len = bus_frame_size(&req->frames, 2);
	return bus_frame_data(&req->frames, 2);
}

void bus_req_free(bus_req_t **rp)
{
	bus_req_t *r = *rp;
	if (r == NULL)
		return;
	*rp = NULL;
	bus_worker_t *w = r->w;
	bus_frames_close(&r->frames);
	json_decref(r->env);
	free(r);
	w->outstanding--;
	if (w->zombie && w->outstanding == 0 && w->busy == 0)
		free(w);
}

/* Sends the serialized reply envelope for r (and raw), then frees r. A raw
 * reply that is the request's own raw frame goes back without a copy. */
static void req_send(bus_req_t **rp, const char *env, size_t envlen, const void *raw, size_t rawlen)
{
	bus_req_t *r = *rp;
	bus_worker_t *w = r->w;
	if (!w->zombie && w->sock != NULL && r->generation == w->generation) {
		bus_frames_t f;
		bus_frames_init(&f);
		bus_frames_add_ref(&f, &r->frames, 0);
		bus_frames_add(&f, env, envlen);
		if (raw != NULL && r->frames.n == 3 && raw == bus_frame_data(&r->frames, 2) &&
		    rawlen == bus_frame_size(&r->frames, 2))
			bus_frames_add_ref(&f, &r->frames, 2);
		else if (raw != NULL)
			bus_frames_add(&f, raw, rawlen);
		worker_send_cmd(w, BUS_W_REPLY, &f);
		bus_frames_close(&f);
	}
	bus_req_free(rp);
}

/* Appends s as a JSON string literal. */
static size_t json_quote(char *out, size_t o, size_t cap, const char *s)
{
	out[o++] = '"';
	for (; *s != '\0' && o + 8 < cap; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = (char)c;
		} else if (c < 0x20) {
			o += (size_t)snprintf(out + o, cap - o, "\\u%04x", c);
		} else {
			out[o++] = (char)c;
		}
	}
	out[o++] = '"';
	return o;
}

/*
 * Builds {"type":..,"v":1,"id":..,"status":"ok", ...fields} as text: the hot
 * path of every worker, so no intermediate JSON object is built. Header
 * keys in fields are dropped (the header wins).
 */
void bus_reply(bus_req_t **rp, json_t **fieldsp, const void *raw, size_t rawlen)
{
	char *fields = NULL;
	if (fieldsp != NULL && *fieldsp != NULL) {
		static const char *const header_keys[] = { "type", "v", "id", "status", "code", "error" };
		for (size_t i = 0; i < ARRAY_LEN(header_keys); i++)
			json_object_del(*fieldsp, header_keys[i]);
		if (json_object_size(*fieldsp) > 0)
			fields = json_dumps(*fieldsp, JSON_COMPACT);
		json_decref(*fieldsp);
		*fieldsp = NULL;
	}
	bus_reply_text(rp, fields, raw, rawlen);
	free(fields);
}

void bus_reply_text(bus_req_t **rp, const char *fields, const void *raw, size_t rawlen)
{
	bus_req_t *r = *rp;
	char head[2 * BUS_ID_MAX + 300];
	size_t o = 0;
	o += (size_t)snprintf(head, sizeof head, "{\"type\":");
	o = json_quote(head, o, sizeof head / 2, r->type);
	o += (size_t)snprintf(head + o, sizeof head - o, ",\"v\":%d,\"id\":", BUS_PROTOCOL_VERSION);
	o = json_quote(head, o, sizeof head - 20, r->id);
	o += (size_t)snprintf(head + o, sizeof head - o, ",\"status\":\"ok\"");
	size_t fl = fields != NULL ? strlen(fields) : 0;
	if (fl <= 2) {  /* none, or "{}" */
		head[o++] = '}';
		req_send(rp, head, o, raw, rawlen);
		return;
	}
	/* fields is "{...}": splice its members after the header. */
	char *env = xmalloc(o + fl + 1);
	memcpy(env, head, o);
	env[o] = ',';
	memcpy(env + o + 1, fields + 1, fl - 1);
	req_send(rp, env, o + fl, raw, rawlen);
	free(env);
}

void bus_reply_error(bus_req_t **rp, const char *code, const char *fmt, ...)
{
	bus_req_t *r = *rp;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	json_t *env = bus_env_new(r->type);
	json_object_set_new(env, "id", json_string(r->id));
	json_object_set_new(env, "status", json_string(strcmp(code, "invalid") == 0 ? "invalid" : "error"));
	json_object_set_new(env, "code", json_string(code));
	json_object_set_new(env, "error", json_string(msg));
	char *text = json_dumps(env, JSON_COMPACT);
	req_send(rp, text, strlen(text), NULL, 0);
	free(text);
	json_decref(env);
}

int bus_req_unpack(bus_req_t **rp, const char *fmt, ...)
{
	json_error_t jerr;
	va_list ap;
	json_t *fields = jx_fields_new((*rp)->env);
	va_start(ap, fmt);
	int rc = json_vunpack_ex(fields, &jerr, JSON_STRICT, fmt, ap);
	va_end(ap);
	json_decref(fields);  /* shallow copy: unpacked strings live in env */
	if (rc < 0)
		bus_reply_error(rp, "invalid", "bad %s: %s", (*rp)->type, jerr.text);
	return rc;
}

/* "*.control.ping" matches "smtpd.control.ping"; "*" matches anything. */
static bool handler_matches(const char *pattern, const char *type)
{
	if (strcmp(pattern, "*") == 0 || strcmp(pattern, type) == 0)
		return true;
	if (pattern[0] != '*' || pattern[1] != '.')
		return false;
	const char *dot = strchr(type, '.');
	return dot != NULL && strcmp(dot, pattern + 1) == 0;
}

/* Builds a request from [tag][cmd][ticket][env][raw?] and dispatches it. */
static void worker_on_request(bus_worker_t *w, bus_frames_t *f, const bus_msg_t *m)
{
	bus_req_t *r = xcalloc(1, sizeof *r);
	r->w = w;
	r->generation = w->generation;
	w->outstanding++;
	w->requests++;
	bus_frames_init(&r->frames);
	bus_frames_add_ref(&r->frames, f, m->ticket);
	bus_frames_add_ref(&r->frames, f, m->env);
	if (m->raw >= 0)
		bus_frames_add_ref(&r->frames, f, m->raw);
	r->env = json_loadb(bus_frame_data(f, m->env), bus_frame_size(f, m->env), JSON_REJECT_DUPLICATES, NULL);
	const char *id = json_string_value(json_object_get(r->env, "id"));
	r->type = json_string_value(json_object_get(r->env, "type"));
	snprintf(r->id, sizeof r->id, "%s", id ? id : "-");
	if (r->type == NULL) {
		r->type = "busd.error";
		bus_reply_error(&r, "malformed", "envelope without type");
		return;
	}
	for (const bus_handler_t *h = w->handlers; h->type != NULL; h++) {
		if (handler_matches(h->type, r->type)) {
			h->fn(&r, w->arg);
			if (r != NULL)  /* the handler neither replied nor kept it: a bug */
				bus_reply_error(&r, "internal", "handler for %s did not reply", r->type);
			return;
		}
	}
	bus_reply_error(&r, "invalid", "%s does not handle %s", w->service, r->type);
}

/* One message from busd; false once the socket was replaced (reconnect). */
static bool worker_on_message(bus_frames_t *f, void *arg)
{
	bus_worker_t *w = arg;
	uint64_t gen = w->generation;
	bus_msg_t m;
	const char *why;
	if (bus_parse_worker(f, false, &m, &why) < 0) {
		log_warn("bus.worker.bad", "service=%s why=%s", w->service, log_quote(why));
		return true;
	}
	w->last_heard = now_ms();
	switch (m.cmd) {
	case BUS_W_REQUEST:
		w->connected = true;
		worker_on_request(w, f, &m);
		break;
	case BUS_W_HEARTBEAT:
		if (!w->connected)
			log_info("bus.worker.registered", "service=%s", w->service);
		w->connected = true;
		break;
	case BUS_W_DISCONNECT:
		if (m.info >= 0) {
			/* Refused (identity): say why, and try again only after
			 * the liveness period, in case the ACL is reloaded. */
			char why[513];
			if (bus_frame_str(f, m.info, why, sizeof why) < 0)
				snprintf(why, sizeof why, "?");
			log_error("bus.worker.refused", "service=%s why=%s", w->service, log_quote(why));
			w->connected = false;
			w->last_heard = now_ms();
			break;
		}
		/* busd does not know us (it restarted): register again. */
		log_info("bus.worker.reregister", "service=%s", w->service);
		worker_connect(w);
		break;
	default:
		log_warn("bus.worker.bad", "service=%s cmd=%d", w->service, m.cmd);
	}
	return !w->zombie && w->generation == gen;
}

static void worker_ready(loop_t *loop, void *zsock, int fd, short revents, void *arg)
{
	(void)loop; (void)fd; (void)revents;
	bus_worker_t *w = arg;
	/* A handler may free the worker: it stays allocated until we are out. */
	w->busy++;
	bus_drain(zsock, 256, worker_on_message, w);
	w->busy--;
	if (w->zombie && w->busy == 0 && w->outstanding == 0)
		free(w);
}

/* ---- control worker ------------------------------------------------------------ */

struct bus_control {
	loop_t *loop;
	bus_worker_t *w;
	char service[BUS_SERVICE_MAX + 1];
	bus_stats_fn stats;
	bus_reload_fn reload;
	void *arg;
	int64_t started_wall, started_mono;
	uint64_t served;
};

static long self_rss_kb(void)
{
	long pages = 0, rss = 0;
	FILE *f = fopen("/proc/self/statm", "r");
	if (f == NULL)
		return 0;
	if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
		rss = 0;
	fclose(f);
	return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static void control_ping(bus_req_t **r, void *arg)
{
	bus_control_t *ctl = arg;
	json_t *f = json_pack("{s:s, s:i, s:I, s:I, s:s}", "service", ctl->service,
			      "pid", (int)getpid(), "started", (json_int_t)ctl->started_wall,
			      "uptime_ms", (json_int_t)(now_ms() - ctl->started_mono),
			      "version", ROOST_VERSION);
	bus_reply(r, &f, NULL, 0);
}

static void control_stats(bus_req_t **r, void *arg)
{
	bus_control_t *ctl = arg;
	json_t *stats = json_object();
	if (ctl->stats != NULL)
		ctl->stats(stats, ctl->arg);
	json_t *f = json_pack("{s:s, s:i, s:I, s:I, s:I, s:o}", "service", ctl->service,
			      "pid", (int)getpid(), "uptime_ms", (json_int_t)(now_ms() - ctl->started_mono),
			      "requests", (json_int_t)ctl->served, "rss_kb", (json_int_t)self_rss_kb(),
			      "stats", stats);
	bus_reply(r, &f, NULL, 0);
}

static void control_reload(bus_req_t **r, void *arg)
{
	bus_control_t *ctl = arg;
	char err[256] = "";
	if (ctl->reload != NULL && ctl->reload(ctl->arg, err, sizeof err) < 0) {
		bus_reply_error(r, "reload_failed", "%s", err);
		return;
	}
	json_t *f = json_pack("{s:b}", "reloaded", ctl->reload != NULL);
	bus_reply(r, &f, NULL, 0);
}

/* SIGHUP means the same as control.reload. */
static void control_on_hup(loop_t *loop, int signo, void *arg)
{
	(void)loop; (void)signo;
	bus_control_t *ctl = arg;
	char err[256] = "";
	if (ctl->reload == NULL)
		log_info("reload", "result=\"nothing to reload\"");
	else if (ctl->reload(ctl->arg, err, sizeof err) < 0)
		log_warn("reload", "why=%s", log_quote(err));
	else
		log_info("reload", "result=ok");
}

static const bus_handler_t control_handlers[] = {
	{ "*.control.ping", control_ping },
	{ "*.control.stats", control_stats },
	{ "*.control.reload", control_reload },
	{ NULL, NULL },
};

bus_control_t *bus_control_new(loop_t *loop, const char *bus_dir, const char *service,
			       bus_stats_fn stats, bus_reload_fn reload, void *arg)
{
	bus_control_t *ctl = xcalloc(1, sizeof *ctl);
	char name[BUS_SERVICE_MAX + 1];
	snprintf(ctl->service, sizeof ctl->service, "%s", service);
	if (snprintf(name, sizeof name, "%s.control", service) >= (int)sizeof name) {
		free(ctl);
		return NULL;
	}
	ctl->stats = stats;
	ctl->reload = reload;
	ctl->arg = arg;
	ctl->started_wall = wall_ms();
	ctl->started_mono = now_ms();
	ctl->w = bus_worker_new(loop, bus_dir, name, control_handlers, ctl, 8);
	if (ctl->w == NULL) {
		free(ctl);
		return NULL;
	}
	ctl->loop = loop;
	loop_on_signal(loop, SIGHUP, control_on_hup, ctl);
	return ctl;
}

void bus_control_free(bus_control_t **cp)
{
	bus_control_t *ctl = *cp;
	if (ctl == NULL)
		return;
	loop_on_signal(ctl->loop, SIGHUP, NULL, NULL);  /* ctl is going away */
	bus_worker_free(&ctl->w);
	free(ctl);
	*cp = NULL;
}

void bus_control_count(bus_control_t *ctl)
{
	ctl->served++;
}
