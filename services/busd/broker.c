/*
 * broker.c — requests from clients to workers and replies back.
 *
 * Clients (DEALER) send [RBC1][service][envelope][raw?] to our clients
 * ROUTER. We check the frames, the envelope header against the type table,
 * that the service matches the type and that the caller's role (from ZAP)
 * may call it, then hand it to a ready worker of the service: the one with
 * the fewest requests in flight under its credit (ties: round robin), which
 * spreads load and keeps many requests in flight per worker. With no worker
 * ready the request waits in the service's queue until one is, or until
 * queue_timeout_ms passes ("unavailable"). Chunks of one stream always go to
 * the worker that got chunk 0.
 *
 * Workers (DEALER) speak [RBW1][cmd]...: READY registers (the role must own
 * the service name), HEARTBEAT both ways every bus_heartbeat_ms, a worker
 * silent for BUS_LIVENESS beats is dropped. A request reaches a worker with
 * a ticket (8 bytes) instead of the client's address; busd keeps the ticket
 * (client, request id, type) until the reply, so a worker can answer only
 * what it was asked, only once, and never learns who asked. A send to a worker whose process
 * is gone fails at once (ROUTER_MANDATORY) and the request goes to another.
 *
 * Everything that fails gets an error reply (status invalid/error, code,
 * one-line reason); nothing a peer sends can stop the loop.
 */
#include "busd.h"
#include "envelope.h"
#include "hmap.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

void *bus_socket_new(int type);

#define QUEUE_MAX 10000          /* requests waiting for a worker, all services */
#define QUEUE_BYTES_MAX (64L << 20) /* and their bytes */
#define STREAM_IDLE_MS 60000     /* an abandoned stream's binding is dropped after this */
#define STREAMS_MAX 10000        /* streams bound to workers at once */
#define RID_MAX 255
#define KEY_MAX (RID_MAX + BUS_ID_MAX + 2)  /* client rid + '/' + stream id */

/* A request handed to a worker and not answered yet: one allocation per
 * request on the hot path, sized to what it holds. */
struct ticket {
	const struct msgtype *mt;      /* the request's type (for the tap) */
	const unsigned char *crid;     /* the client's routing id */
	const char *id, *type;
	const char *skey;              /* a stream's last chunk: the binding to drop */
	size_t crid_len, skl;
	char data[];                   /* crid, id, type, skey */
};

struct worker {
	unsigned char rid[RID_MAX];
	size_t rid_len;
	struct service *svc;
	struct worker *next;        /* in svc->workers */
	char role[BUS_SERVICE_MAX + 1];
	int pid, credit, hb_ms;
	bool full;                  /* its pipe refused a send: skip until it replies */
	hmap_t *tickets;            /* ticket -> struct ticket: its requests in flight */
	int64_t started_wall, joined, last_heard;
	uint64_t requests;
};

struct pending {
	bus_frames_t f;             /* [client rid][tag][service][env][raw?] */
	int64_t deadline;
	char id[BUS_ID_MAX + 1];
	char type[128];
	char role[BUS_SERVICE_MAX + 1];
	const struct msgtype *mt;
	char skey[KEY_MAX];         /* chunk 0 of a stream: bind it where it goes */
	size_t skl;
	bool last;                  /* ... and it is the stream's only chunk */
	struct pending *next;
};

struct service {
	char name[BUS_SERVICE_MAX + 1];
	struct worker *workers;
	size_t nworkers;
	unsigned rr;
	struct pending *qhead, *qtail;
	size_t qlen;
	uint64_t requests;
};

struct stream_route {
	unsigned char wrid[RID_MAX];
	size_t wrid_len;
	int64_t last_used;
};

struct broker {
	loop_t *loop;
	void *clients, *workers;
	tap_t *tap;
	events_t *events;
	hmap_t *services;           /* name -> struct service */
	hmap_t *by_rid;             /* worker routing id -> struct worker */
	hmap_t *streams;            /* client rid + stream id -> struct stream_route */
	loop_timer_t *beat;
	int queue_timeout_ms;
	size_t queued, queued_bytes;
	uint64_t next_ticket;
	uint64_t routed, errors;
	int64_t started_wall, started_mono;
	broker_reload_fn reload;
	void *reload_arg;
};

static void broker_dispatch_queue(broker_t *b, struct service *svc);

/* ---- replies to clients ------------------------------------------------------- */

/* Sends [rid][tag][service][env][raw?] to a client. */
static void client_send(broker_t *b, const void *rid, size_t rid_len, const char *service,
			const void *env, size_t envlen, const bus_frames_t *rawsrc, int rawi)
{
	bus_frames_t f;
	bus_frames_init(&f);
	bus_frames_add(&f, rid, rid_len);
	bus_frames_add_str(&f, BUS_CLIENT_TAG);
	bus_frames_add_str(&f, service);
	bus_frames_add(&f, env, envlen);
	if (rawsrc != NULL && rawi >= 0)
		bus_frames_add_ref(&f, rawsrc, rawi);
	if (bus_frames_send(b->clients, &f) < 0)
		log_debug("client.gone", "service=%s error=%s", service, zmq_strerror(errno));
}

/* Passes a worker's reply on without copying: [crid][tag][service][env][raw?]. */
static void client_forward(broker_t *b, const void *crid, size_t crid_len, const bus_frames_t *wf,
			   const bus_msg_t *m, const char *service)
{
	bus_frames_t f;
	bus_frames_init(&f);
	bus_frames_add(&f, crid, crid_len);
	bus_frames_add_str(&f, BUS_CLIENT_TAG);
	bus_frames_add_str(&f, service);
	bus_frames_add_ref(&f, wf, m->env);
	if (m->raw >= 0)
		bus_frames_add_ref(&f, wf, m->raw);
	if (bus_frames_send(b->clients, &f) < 0)
		log_debug("client.gone", "service=%s error=%s", service, zmq_strerror(errno));
}

/* An error reply of busd's own to a client. */
static void client_error(broker_t *b, const void *rid, size_t rid_len, const char *service,
			 const char *type, const char *id, const char *code, const char *why)
{
	const char *status = strcmp(code, "malformed") == 0 || strcmp(code, "too_large") == 0 ||
			     strcmp(code, "unknown_type") == 0 || strcmp(code, "unknown_service") == 0
			     ? "invalid" : "error";
	const struct msgtype *mt = type ? msgtype_find(type) : NULL;
	json_t *env = json_pack("{s:s, s:i, s:s, s:s, s:s, s:s}", "type",
				mt && mt->kind == MSGK_REQUEST ? type : "busd.error",
				"v", BUS_PROTOCOL_VERSION, "id", id ? id : "-", "status", status,
				"code", code, "error", why);
	char *s = json_dumps(env, JSON_COMPACT);
	b->errors++;
	tap_mirror(b->tap, "error", "busd", service ? service : "-",
		   json_string_value(json_object_get(env, "type")), s, strlen(s), env, 0);
	client_send(b, rid, rid_len, service ? service : "busd", s, strlen(s), NULL, -1);
	free(s);
	json_decref(env);
}

/* ---- services and workers ----------------------------------------------------- */

static struct service *service_get(broker_t *b, const char *name, bool create)
{
	struct service *svc = hmap_get(b->services, name, strlen(name));
	if (svc == NULL && create) {
		svc = xcalloc(1, sizeof *svc);
		snprintf(svc->name, sizeof svc->name, "%s", name);
		hmap_put(b->services, name, strlen(name), svc);
	}
	return svc;
}

static void worker_send(broker_t *b, struct worker *w, unsigned char cmd, const char *extra)
{
	bus_frames_t f;
	bus_frames_init(&f);
	bus_frames_add(&f, w->rid, w->rid_len);
	bus_frames_add_str(&f, BUS_WORKER_TAG);
	bus_frames_add_byte(&f, cmd);
	if (extra != NULL)
		bus_frames_add_str(&f, extra);
	bus_frames_send(b->workers, &f);
}

static void worker_event(broker_t *b, const char *type, const struct worker *w, const char *reason)
{
	json_t *ev = json_pack("{s:s, s:s, s:i}", "type", type, "service", w->svc->name, "pid", w->pid);
	if (reason != NULL)
		json_object_set_new(ev, "reason", json_string(reason));
	events_publish_own(b->events, &ev);
}

static int free_value(const void *k, size_t kl, void *v, void *arg)
{
	(void)k; (void)kl; (void)arg;
	free(v);
	return 0;
}

static int inflight(const struct worker *w)
{
	return (int)hmap_count(w->tickets);
}

/* Unlinks and frees a worker; its in-flight requests are the clients' to retry. */
static void worker_drop(broker_t *b, struct worker *w, const char *reason)
{
	struct service *svc = w->svc;
	for (struct worker **pp = &svc->workers; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	}
	svc->nworkers--;
	hmap_del(b->by_rid, w->rid, w->rid_len);
	log_info("worker.left", "service=%s pid=%d reason=%s inflight=%d", svc->name, w->pid,
		 log_quote(reason), inflight(w));
	worker_event(b, "busd.worker.left", w, reason);
	hmap_each(w->tickets, free_value, NULL);
	hmap_free(&w->tickets);
	free(w);
}

/* The worker under credit with the fewest requests in flight. */
static struct worker *worker_pick(struct service *svc)
{
	struct worker *best = NULL;
	size_t i = 0, start = svc->nworkers ? svc->rr++ % svc->nworkers : 0;
	/* Scan from a rotating start so ties alternate. */
	for (int pass = 0; pass < 2; pass++) {
		i = 0;
		for (struct worker *w = svc->workers; w != NULL; w = w->next, i++) {
			if ((pass == 0 && i < start) || (pass == 1 && i >= start))
				continue;
			if (!w->full && inflight(w) < w->credit && (best == NULL || inflight(w) < inflight(best)))
				best = w;
		}
	}
	return best;
}

/*
 * Hands a request ([client rid][tag][service][env][raw?], m describes it) to
 * worker w under a new ticket. skey/skl: a stream's last chunk, whose binding
 * goes with the reply. 0 on success; -1 if the worker is gone (dropped) or
 * its pipe is full (skipped until it replies).
 */
static int worker_forward(broker_t *b, struct worker *w, const bus_frames_t *rf, const bus_msg_t *m,
			  const struct msgtype *mt, const char *id, const char *type,
			  const char *skey, size_t skl)
{
	uint64_t tk = ++b->next_ticket;
	bus_frames_t f;
	bus_frames_init(&f);
	bus_frames_add(&f, w->rid, w->rid_len);
	bus_frames_add_str(&f, BUS_WORKER_TAG);
	bus_frames_add_byte(&f, BUS_W_REQUEST);
	bus_frames_add(&f, &tk, BUS_TICKET_LEN);
	bus_frames_add_ref(&f, rf, m->env);
	if (m->raw >= 0)
		bus_frames_add_ref(&f, rf, m->raw);
	if (bus_frames_send(b->workers, &f) < 0) {
		if (errno == EHOSTUNREACH)
			worker_drop(b, w, "send failed: worker gone");
		else
			w->full = true;
		return -1;
	}
	size_t cl = bus_frame_size(rf, m->rid), il = strlen(id) + 1, tl = strlen(type) + 1;
	struct ticket *t = xmalloc(sizeof *t + cl + il + tl + skl);
	char *d = t->data;
	t->mt = mt;
	t->crid = memcpy(d, bus_frame_data(rf, m->rid), cl);
	t->crid_len = cl;
	t->id = memcpy(d + cl, id, il);
	t->type = memcpy(d + cl + il, type, tl);
	t->skey = skl > 0 ? memcpy(d + cl + il + tl, skey, skl) : NULL;
	t->skl = skl;
	hmap_put(w->tickets, &tk, BUS_TICKET_LEN, t);
	w->requests++;
	w->svc->requests++;
	b->routed++;
	return 0;
}

/* ---- streams ----------------------------------------------------------------- */

static size_t stream_key(char *key, size_t size, const bus_frames_t *f, int rid, const char *stream)
{
	size_t rl = bus_frame_size(f, rid), sl = strlen(stream);
	if (rl + sl + 1 > size)
		return 0;
	memcpy(key, bus_frame_data(f, rid), rl);
	key[rl] = '/';
	memcpy(key + rl + 1, stream, sl);
	return rl + sl + 1;
}

/* Binds a stream to the worker that took its chunk 0. */
static void stream_bind(broker_t *b, const char *key, size_t kl, const struct worker *w)
{
	struct stream_route *sr = xcalloc(1, sizeof *sr);
	memcpy(sr->wrid, w->rid, w->rid_len);
	sr->wrid_len = w->rid_len;
	sr->last_used = loop_now(b->loop);
	free(hmap_del(b->streams, key, kl));
	hmap_put(b->streams, key, kl, sr);
}

/*
 * The worker a chunk must go to. A bound stream's chunks go to its worker
 * whatever its credit (the stream already holds its place); NULL with
 * *broken when that worker is gone. Chunk 0 of a new stream: NULL, not
 * broken — the caller picks a worker like for any request and binds it.
 */
static struct worker *stream_worker(broker_t *b, struct service *svc, const char *key, size_t kl,
				    const envelope_t *env, bool *broken)
{
	struct stream_route *sr = kl ? hmap_get(b->streams, key, kl) : NULL;
	*broken = false;
	if (sr != NULL) {
		struct worker *w = hmap_get(b->by_rid, sr->wrid, sr->wrid_len);
		sr->last_used = loop_now(b->loop);
		*broken = w == NULL || w->svc != svc;
		return *broken ? NULL : w;
	}
	/* Refuse new streams rather than let the table grow without bound. */
	*broken = env->seq != 0 || kl == 0 || hmap_count(b->streams) >= STREAMS_MAX;
	return NULL;
}

/* ---- requests ------------------------------------------------------------------ */

/* Puts a request in its service's queue; takes the frames. */
static void queue_request(broker_t *b, struct service *svc, bus_frames_t *f, const envelope_t *env,
			  const char *role, const char *skey, size_t skl)
{
	struct pending *p = xcalloc(1, sizeof *p);
	bus_frames_move(&p->f, f);
	p->deadline = loop_now(b->loop) + b->queue_timeout_ms;
	snprintf(p->id, sizeof p->id, "%s", env->id);
	snprintf(p->type, sizeof p->type, "%s", env->type);
	snprintf(p->role, sizeof p->role, "%s", role);
	p->mt = env->mt;
	if (skl > 0) {
		memcpy(p->skey, skey, skl);
		p->skl = skl;
		p->last = env->last;
	}
	if (svc->qtail)
		svc->qtail->next = p;
	else
		svc->qhead = p;
	svc->qtail = p;
	svc->qlen++;
	b->queued++;
	b->queued_bytes += p->f.bytes;
}

/* A chunk: to its stream's worker, or (chunk 0) to any, binding it. 1 if
 * handled (sent or answered), 0 if chunk 0 should wait in the queue. */
static int route_chunk(broker_t *b, struct service *svc, bus_frames_t *f, const bus_msg_t *m,
		       const envelope_t *env, const char *key, size_t kl)
{
	bool broken;
	const void *rid = bus_frame_data(f, m->rid);
	size_t rl = bus_frame_size(f, m->rid);
	struct worker *w = stream_worker(b, svc, key, kl, env, &broken);
	if (broken) {
		client_error(b, rid, rl, svc->name, env->type, env->id, "stream_broken",
			     "this stream's worker is gone (or too many streams); restart the stream");
		return 1;
	}
	if (w != NULL) {
		if (worker_forward(b, w, f, m, env->mt, env->id, env->type, key, env->last ? kl : 0) < 0)
			client_error(b, rid, rl, svc->name, env->type, env->id, "stream_broken",
				     "this stream's worker cannot take more; restart the stream");
		return 1;
	}
	for (int tries = 0; tries < 8 && svc->qhead == NULL && (w = worker_pick(svc)) != NULL; tries++) {
		if (worker_forward(b, w, f, m, env->mt, env->id, env->type, key, env->last ? kl : 0) == 0) {
			stream_bind(b, key, kl, w);
			return 1;
		}
	}
	return 0;
}

/* Routes a checked request to a worker, or queues it. Takes f's frames
 * when it queues them. */
static void route_request(broker_t *b, bus_frames_t *f, const bus_msg_t *m, const envelope_t *env,
			  const char *service, const char *role)
{
	struct service *svc = service_get(b, service, true);
	char key[KEY_MAX];
	size_t kl = 0;
	tap_mirror(b->tap, "request", role, service, env->type, bus_frame_data(f, m->env),
		   bus_frame_size(f, m->env), env->root, m->raw >= 0 ? bus_frame_size(f, m->raw) : 0);
	if (env->has_chunk) {
		kl = stream_key(key, sizeof key, f, m->rid, env->stream);
		if (route_chunk(b, svc, f, m, env, key, kl))
			return;
	} else {
		struct worker *w;
		/* While requests wait, new ones queue behind them: FIFO. */
		for (int tries = 0; tries < 8 && svc->qhead == NULL && (w = worker_pick(svc)) != NULL; tries++)
			if (worker_forward(b, w, f, m, env->mt, env->id, env->type, NULL, 0) == 0)
				return;
	}
	if (b->queued >= QUEUE_MAX || b->queued_bytes + f->bytes > QUEUE_BYTES_MAX) {
		client_error(b, bus_frame_data(f, m->rid), bus_frame_size(f, m->rid), service, env->type,
			     env->id, "unavailable", "busd queue is full");
		return;
	}
	queue_request(b, svc, f, env, role, key, kl);
}

/* The id of a request whose frames are wrong, if its envelope frame (the
 * fourth) is small enough to read: so that even that error reply reaches
 * the caller's pending call instead of timing out. */
static const char *guess_id(const bus_frames_t *f, char *id, size_t size)
{
	if (f->n < 4 || bus_frame_size(f, 3) > BUS_ENVELOPE_MAX)
		return NULL;
	json_t *j = json_loadb(bus_frame_data(f, 3), bus_frame_size(f, 3), 0, NULL);
	const char *s = json_string_value(json_object_get(j, "id"));
	bool ok = s != NULL && strlen(s) > 0 && strlen(s) < size && strlen(s) <= BUS_ID_MAX;
	for (size_t i = 0; ok && s[i] != '\0'; i++)
		ok = s[i] > 0x20 && s[i] < 0x7f;
	if (ok)
		snprintf(id, size, "%s", s);
	json_decref(j);
	return ok ? id : NULL;
}

/* busd's own service: status and control. */
static void busd_request(broker_t *b, const bus_frames_t *f, const bus_msg_t *m, const envelope_t *env);

static bool on_client_message(bus_frames_t *f, void *arg)
{
	broker_t *b = arg;
	bus_msg_t m;
	envelope_t env;
	const char *why, *code;
	char err[256], service[BUS_SERVICE_MAX + 1], route[BUS_SERVICE_MAX + 1];
	const char *role = bus_frames_meta(f, "User-Id");
	const void *rid = bus_frame_data(f, 0);
	size_t rl = bus_frame_size(f, 0);
	if (role == NULL)
		role = "";
	if (bus_parse_client(f, true, &m, &why) < 0) {
		log_warn("request.bad", "from=%s why=%s", role[0] ? role : "-", log_quote(why));
		char id[BUS_ID_MAX + 1];
		client_error(b, rid, rl, NULL, NULL, guess_id(f, id, sizeof id),
			     strstr(why, "too large") ? "too_large" : "malformed", why);
		return true;
	}
	bus_frame_str(f, m.service, service, sizeof service);
	/* Parsed first so that every error reply carries the request's id. */
	int perr = envelope_parse(&env, bus_frame_data(f, m.env), bus_frame_size(f, m.env), ENV_REQUEST,
				  &code, err, sizeof err);
	if (!msg_service_known(service)) {
		client_error(b, rid, rl, service, perr == 0 ? env.type : NULL, env.id, "unknown_service",
			     "no such service on this bus");
	} else if (perr < 0) {
		log_warn("request.bad", "from=%s service=%s why=%s", role[0] ? role : "-", service, log_quote(err));
		client_error(b, rid, rl, service, env.type, env.id, code, err);
	} else if (msgtype_route(env.type, route, sizeof route) < 0 || strcmp(route, service) != 0) {
		client_error(b, rid, rl, service, env.type, env.id, "malformed", "type does not belong to service");
	} else if (!msgtype_caller_ok(env.mt, role)) {
		log_warn("request.forbidden", "from=%s type=%s", role[0] ? role : "-", env.type);
		snprintf(err, sizeof err, "role '%s' may not call %s", role[0] && role[0] != '-' ? role : "none", env.type);
		client_error(b, rid, rl, service, env.type, env.id, "forbidden", err);
	} else if (strncmp(service, "busd", 4) == 0) {
		busd_request(b, f, &m, &env);
	} else {
		route_request(b, f, &m, &env, service, role);
	}
	envelope_clear(&env);
	return true;
}

static void clients_ready(loop_t *loop, void *zsock, int fd, short revents, void *arg)
{
	(void)loop; (void)fd; (void)revents;
	bus_drain(zsock, 512, on_client_message, arg);
}

/* ---- messages from workers ---------------------------------------------------- */

static void on_worker_ready(broker_t *b, bus_frames_t *f, const bus_msg_t *m, const char *role)
{
	char service[BUS_SERVICE_MAX + 1], why[160];
	bus_frame_str(f, m->service, service, sizeof service);
	struct worker *old = hmap_get(b->by_rid, bus_frame_data(f, 0), bus_frame_size(f, 0));
	if (old != NULL)
		worker_drop(b, old, "registered again");
	if (!msg_register_ok(service, role)) {
		snprintf(why, sizeof why, "role '%s' may not register '%s'", role[0] && role[0] != '-' ? role : "none", service);
		log_warn("worker.refused", "service=%s role=%s why=%s", service, role[0] ? role : "-", log_quote(why));
		struct worker tmp = { .rid_len = bus_frame_size(f, 0) };
		memcpy(tmp.rid, bus_frame_data(f, 0), tmp.rid_len);
		worker_send(b, &tmp, BUS_W_DISCONNECT, why);
		b->errors++;
		return;
	}
	json_t *info = json_loadb(bus_frame_data(f, m->info), bus_frame_size(f, m->info), 0, NULL);
	json_int_t pid = 0, started = 0, credit = BUS_WORKER_CREDIT, hb = bus_heartbeat_ms();
	json_unpack(info, "{s?I, s?I, s?I, s?I}", "pid", &pid, "started", &started, "credit", &credit,
		    "heartbeat_ms", &hb);
	json_decref(info);
	struct worker *w = xcalloc(1, sizeof *w);
	w->rid_len = bus_frame_size(f, 0);
	memcpy(w->rid, bus_frame_data(f, 0), w->rid_len);
	w->svc = service_get(b, service, true);
	snprintf(w->role, sizeof w->role, "%s", role);
	w->pid = (int)pid;
	w->started_wall = started;
	w->credit = credit < 1 ? 1 : credit > 10000 ? 10000 : (int)credit;
	/* Its liveness follows the interval it beats at, not only ours. */
	w->hb_ms = hb < 10 ? 10 : hb > 60000 ? 60000 : (int)hb;
	w->tickets = hmap_new();
	w->joined = w->last_heard = loop_now(b->loop);
	w->next = w->svc->workers;
	w->svc->workers = w;
	w->svc->nworkers++;
	hmap_put(b->by_rid, w->rid, w->rid_len, w);
	log_info("worker.joined", "service=%s pid=%d role=%s credit=%d", service, w->pid, role, w->credit);
	worker_send(b, w, BUS_W_HEARTBEAT, NULL);  /* tells the worker it is registered */
	worker_event(b, "busd.worker.joined", w, NULL);
	broker_dispatch_queue(b, w->svc);
}

/*
 * A reply goes back to the client its ticket names, never to an address the
 * worker chose. busd checks the bounds (bus_parse_worker) and the shape of a
 * JSON object, and the client library checks the rest (it matches the id
 * and reads the status), so busd does not parse replies: the same whether
 * or not anyone watches the tap.
 */
static void on_worker_reply(broker_t *b, struct worker *w, bus_frames_t *f, const bus_msg_t *m)
{
	struct ticket *t = hmap_del(w->tickets, bus_frame_data(f, m->ticket), BUS_TICKET_LEN);
	const char *e = bus_frame_data(f, m->env);
	size_t elen = bus_frame_size(f, m->env);
	bool ok = e[0] == '{' && e[elen - 1] == '}';
	w->full = false;
	if (t == NULL) {
		log_warn("reply.unknown", "service=%s pid=%d why=\"no request in flight has this ticket\"",
			 w->svc->name, w->pid);
		return;
	}
	if (ok && tap_active(b->tap)) {
		/* Mirrored as sent; parsed only to redact a type with sensitive
		 * fields, and never mirrored unredacted if that parse fails. */
		bool secret = t->mt->sensitive != NULL && t->mt->sensitive[0] != NULL;
		json_t *parsed = secret ? json_loadb(e, elen, 0, NULL) : NULL;
		if (!secret || parsed != NULL)
			tap_mirror(b->tap, "reply", w->role, w->svc->name, t->type, e, elen, parsed,
				   m->raw >= 0 ? bus_frame_size(f, m->raw) : 0);
		json_decref(parsed);
	}
	if (ok) {
		client_forward(b, t->crid, t->crid_len, f, m, w->svc->name);
	} else {
		log_warn("reply.bad", "service=%s pid=%d why=\"malformed reply envelope\"", w->svc->name, w->pid);
		client_error(b, t->crid, t->crid_len, w->svc->name, t->type, t->id, "malformed",
			     "the worker sent a malformed reply");
	}
	if (t->skl > 0)
		free(hmap_del(b->streams, t->skey, t->skl));
	free(t);
	if (w->svc->qhead != NULL)
		broker_dispatch_queue(b, w->svc);
}

static bool on_worker_message(bus_frames_t *f, void *arg)
{
	broker_t *b = arg;
	bus_msg_t m;
	const char *why;
	const char *role = bus_frames_meta(f, "User-Id");
	if (bus_parse_worker(f, true, &m, &why) < 0) {
		log_warn("worker.bad", "role=%s why=%s", role ? role : "-", log_quote(why));
		return true;
	}
	if (m.cmd == BUS_W_READY) {
		on_worker_ready(b, f, &m, role ? role : "");
		return true;
	}
	struct worker *w = hmap_get(b->by_rid, bus_frame_data(f, 0), bus_frame_size(f, 0));
	if (w == NULL) {
		/* Not registered (we restarted, or it was dropped): ask it to
		 * register again. A reply it carries is lost: the client retries. */
		if (m.cmd != BUS_W_DISCONNECT) {
			struct worker tmp = { .rid_len = bus_frame_size(f, 0) };
			memcpy(tmp.rid, bus_frame_data(f, 0), tmp.rid_len);
			worker_send(b, &tmp, BUS_W_DISCONNECT, NULL);
		}
		return true;
	}
	w->last_heard = loop_now(b->loop);
	if (m.cmd == BUS_W_REPLY)
		on_worker_reply(b, w, f, &m);
	else if (m.cmd == BUS_W_DISCONNECT)
		worker_drop(b, w, "disconnect");
	else if (m.cmd == BUS_W_REQUEST)
		log_warn("worker.bad", "service=%s why=\"worker sent REQUEST\"", w->svc->name);
	return true;
}

static void workers_ready(loop_t *loop, void *zsock, int fd, short revents, void *arg)
{
	(void)loop; (void)fd; (void)revents;
	bus_drain(zsock, 512, on_worker_message, arg);
}

/* ---- queue ------------------------------------------------------------------------ */

static struct pending *queue_pop(broker_t *b, struct service *svc)
{
	struct pending *p = svc->qhead;
	if (p == NULL)
		return NULL;
	svc->qhead = p->next;
	if (svc->qhead == NULL)
		svc->qtail = NULL;
	svc->qlen--;
	b->queued--;
	b->queued_bytes -= p->f.bytes;
	return p;
}

/* Sends queued requests of svc to workers while any has credit. */
static void broker_dispatch_queue(broker_t *b, struct service *svc)
{
	while (svc->qhead != NULL) {
		struct worker *w = worker_pick(svc);
		if (w == NULL)
			return;
		struct pending *p = svc->qhead;
		bus_msg_t m;
		const char *why;
		bus_parse_client(&p->f, true, &m, &why);
		if (worker_forward(b, w, &p->f, &m, p->mt, p->id, p->type, p->skey, p->last ? p->skl : 0) < 0)
			continue;  /* w was dropped or is full; pick again */
		if (p->skl > 0)
			stream_bind(b, p->skey, p->skl, w);  /* a queued chunk 0 */
		p = queue_pop(b, svc);
		bus_frames_close(&p->f);
		free(p);
	}
}

/* Fails queued requests whose time is up. */
static void queue_expire(broker_t *b, struct service *svc)
{
	int64_t now = loop_now(b->loop);
	while (svc->qhead != NULL && svc->qhead->deadline <= now) {
		struct pending *p = queue_pop(b, svc);
		char why[160];
		snprintf(why, sizeof why, "no %s worker became ready in %d ms", svc->name, b->queue_timeout_ms);
		client_error(b, bus_frame_data(&p->f, 0), bus_frame_size(&p->f, 0), svc->name, p->type,
			     p->id, "unavailable", why);
		bus_frames_close(&p->f);
		free(p);
	}
}

/* ---- heartbeats ---------------------------------------------------------------- */

static int beat_service(const void *k, size_t kl, void *v, void *arg)
{
	(void)k; (void)kl;
	broker_t *b = arg;
	struct service *svc = v;
	int64_t now = loop_now(b->loop);
	struct worker *w = svc->workers;
	while (w != NULL) {
		struct worker *next = w->next;
		int hb = w->hb_ms > bus_heartbeat_ms() ? w->hb_ms : bus_heartbeat_ms();
		if (now - w->last_heard > (int64_t)BUS_LIVENESS * hb)
			worker_drop(b, w, "heartbeat expired");
		else
			worker_send(b, w, BUS_W_HEARTBEAT, NULL);
		w = next;
	}
	queue_expire(b, svc);
	return 0;
}

#define STALE_MAX 1024

struct stale {
	char key[STALE_MAX][KEY_MAX];
	size_t kl[STALE_MAX];
	int n;
	int64_t now;
};

static int find_stale_streams(const void *k, size_t kl, void *v, void *arg)
{
	struct stale *st = arg;
	struct stream_route *sr = v;
	if (st->now - sr->last_used > STREAM_IDLE_MS && kl <= KEY_MAX) {
		memcpy(st->key[st->n], k, kl);
		st->kl[st->n++] = kl;
	}
	return st->n == STALE_MAX;
}

static void broker_beat(loop_t *loop, void *arg)
{
	broker_t *b = arg;
	hmap_each(b->services, beat_service, b);
	/* Bindings of streams abandoned before their last chunk. */
	struct stale *st = xcalloc(1, sizeof *st);
	st->now = loop_now(loop);
	hmap_each(b->streams, find_stale_streams, st);
	for (int i = 0; i < st->n; i++)
		free(hmap_del(b->streams, st->key[i], st->kl[i]));
	free(st);
}

/* ---- busd's own requests ------------------------------------------------------- */

static int status_service(const void *k, size_t kl, void *v, void *arg)
{
	(void)k; (void)kl;
	struct service *svc = v;
	json_t *list = arg, *workers;
	int64_t now = now_ms();
	if (svc->nworkers == 0)
		return 0;
	workers = json_array();
	for (struct worker *w = svc->workers; w != NULL; w = w->next)
		json_array_append_new(workers, json_pack("{s:i, s:I, s:I, s:I, s:i, s:i, s:s}",
			"pid", w->pid, "started", (json_int_t)w->started_wall,
			"uptime_ms", (json_int_t)(now - w->joined), "requests", (json_int_t)w->requests,
			"inflight", inflight(w), "credit", w->credit, "role", w->role[0] ? w->role : "-"));
	json_array_append_new(list, json_pack("{s:s, s:o}", "name", svc->name, "workers", workers));
	return 0;
}

static json_t *busd_status_new(broker_t *b)
{
	json_t *services = json_array();
	hmap_each(b->services, status_service, services);
	json_t *me = json_pack("{s:i, s:I, s:I, s:I, s:I, s:I}", "pid", (int)getpid(),
			       "started", (json_int_t)b->started_wall,
			       "uptime_ms", (json_int_t)(now_ms() - b->started_mono),
			       "requests", (json_int_t)b->routed, "errors", (json_int_t)b->errors,
			       "queued", (json_int_t)b->queued);
	return json_pack("{s:o, s:o}", "services", services, "busd", me);
}

static void busd_request(broker_t *b, const bus_frames_t *f, const bus_msg_t *m, const envelope_t *env)
{
	json_t *reply;
	const char *verb = strrchr(env->type, '.') + 1;
	if (env->mt->id == MSG_BUSD_STATUS_GET) {
		reply = busd_status_new(b);
	} else if (strcmp(verb, "ping") == 0) {
		reply = json_pack("{s:s, s:i, s:I, s:I, s:s}", "service", "busd", "pid", (int)getpid(),
				  "started", (json_int_t)b->started_wall,
				  "uptime_ms", (json_int_t)(now_ms() - b->started_mono), "version", ROOST_VERSION);
	} else if (strcmp(verb, "stats") == 0) {
		reply = json_pack("{s:s, s:i, s:I, s:I, s:I, s:{s:I, s:I, s:I}}", "service", "busd",
				  "pid", (int)getpid(), "uptime_ms", (json_int_t)(now_ms() - b->started_mono),
				  "requests", (json_int_t)b->routed, "rss_kb", (json_int_t)0,
				  "stats", "errors", (json_int_t)b->errors, "queued", (json_int_t)b->queued,
				  "events", (json_int_t)events_count(b->events));
		json_object_set_new(json_object_get(reply, "stats"), "streams",
				    json_integer((json_int_t)hmap_count(b->streams)));
		json_object_set_new(json_object_get(reply, "stats"), "queued_bytes",
				    json_integer((json_int_t)b->queued_bytes));
	} else {
		char err[256] = "no reload handler";
		if (b->reload == NULL || b->reload(b->reload_arg, err, sizeof err) < 0) {
			char svc[BUS_SERVICE_MAX + 1];
			bus_frame_str(f, m->service, svc, sizeof svc);
			client_error(b, bus_frame_data(f, 0), bus_frame_size(f, 0), svc, env->type, env->id,
				     "reload_failed", err);
			return;
		}
		reply = json_pack("{s:b}", "reloaded", 1);
	}
	char svc[BUS_SERVICE_MAX + 1];
	bus_frame_str(f, m->service, svc, sizeof svc);
	json_object_set_new(reply, "type", json_string(env->type));
	json_object_set_new(reply, "v", json_integer(BUS_PROTOCOL_VERSION));
	json_object_set_new(reply, "id", json_string(env->id));
	json_object_set_new(reply, "status", json_string("ok"));
	char *s = json_dumps(reply, JSON_COMPACT);
	tap_mirror(b->tap, "request", bus_frames_meta(f, "User-Id") ?: "-", svc, env->type,
		   bus_frame_data(f, m->env), bus_frame_size(f, m->env), env->root, 0);
	tap_mirror(b->tap, "reply", "busd", svc, env->type, s, strlen(s), reply, 0);
	client_send(b, bus_frame_data(f, 0), bus_frame_size(f, 0), svc, s, strlen(s), NULL, -1);
	free(s);
	json_decref(reply);
	b->routed++;
}

/* ---- life cycle ---------------------------------------------------------------- */

broker_t *broker_new(loop_t *loop, const bus_endpoints_t *ep, tap_t *tap, events_t *ev,
		     int queue_timeout_ms)
{
	broker_t *b = xcalloc(1, sizeof *b);
	int one = 1;
	b->loop = loop;
	b->tap = tap;
	b->events = ev;
	b->queue_timeout_ms = queue_timeout_ms;
	b->services = hmap_new();
	b->by_rid = hmap_new();
	b->streams = hmap_new();
	b->started_wall = wall_ms();
	b->started_mono = now_ms();
	b->clients = bus_socket_new(ZMQ_ROUTER);
	b->workers = bus_socket_new(ZMQ_ROUTER);
	zmq_setsockopt(b->clients, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
	zmq_setsockopt(b->workers, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
	zap_protect(b->clients, "clients");
	zap_protect(b->workers, "workers");
	if (zmq_bind(b->clients, ep->clients) < 0 || zmq_bind(b->workers, ep->workers) < 0) {
		log_error("bind", "error=%s", log_quote(zmq_strerror(errno)));
		zmq_close(b->clients);
		zmq_close(b->workers);
		hmap_free(&b->services);
		hmap_free(&b->by_rid);
		hmap_free(&b->streams);
		free(b);
		return NULL;
	}
	loop_add_zsock(loop, b->clients, ZMQ_POLLIN, clients_ready, b);
	loop_add_zsock(loop, b->workers, ZMQ_POLLIN, workers_ready, b);
	b->beat = loop_timer_add(loop, bus_heartbeat_ms(), true, broker_beat, b);
	return b;
}

void broker_on_reload(broker_t *b, broker_reload_fn fn, void *arg)
{
	b->reload = fn;
	b->reload_arg = arg;
}

static int free_service(const void *k, size_t kl, void *v, void *arg)
{
	(void)k; (void)kl; (void)arg;
	struct service *svc = v;
	while (svc->workers) {
		struct worker *w = svc->workers;
		svc->workers = w->next;
		hmap_each(w->tickets, free_value, NULL);
		hmap_free(&w->tickets);
		free(w);
	}
	while (svc->qhead) {
		struct pending *p = svc->qhead;
		svc->qhead = p->next;
		bus_frames_close(&p->f);
		free(p);
	}
	free(svc);
	return 0;
}

void broker_free(broker_t **bp)
{
	broker_t *b = *bp;
	if (b == NULL)
		return;
	loop_timer_cancel(b->loop, &b->beat);
	loop_remove(b->loop, b->clients, -1);
	loop_remove(b->loop, b->workers, -1);
	zmq_close(b->clients);
	zmq_close(b->workers);
	hmap_each(b->services, free_service, NULL);
	hmap_each(b->streams, free_value, NULL);
	hmap_free(&b->services);
	hmap_free(&b->by_rid);
	hmap_free(&b->streams);
	free(b);
	*bp = NULL;
}
