/*
 * events.c — the events proxy: publishers connect PUB to events.in (our
 * XSUB), subscribers connect SUB to events.out (our XPUB). Subscriptions
 * flow upstream unchanged; every event is checked (shape, known event type,
 * topic = type, publisher's role may publish it) before it is forwarded and
 * mirrored on the tap. A bad event is dropped and logged: a publisher has no
 * one to send an error to.
 */
#include "busd.h"
#include "envelope.h"
#include "log.h"
#include "util.h"

#include <string.h>
#include <unistd.h>
#include <stdio.h>
#include <zmq.h>

void *bus_socket_new(int type);

#define EVENTS_TOPIC_MAX 128   /* a subscription prefix: at most a type name */

struct events {
	loop_t *loop;
	void *in, *out;
	tap_t *tap;
	uint64_t forwarded, dropped, own_seq;
};

/* Subscriptions from subscribers go upstream to the publishers: only
 * well-formed ones (one frame, \x00 or \x01 then a topic no longer than a
 * type name), so a subscriber cannot grow the topic tries without bound. */
static bool events_subscription(bus_frames_t *f, void *arg)
{
	events_t *e = arg;
	const unsigned char *p = bus_frame_data(f, 0);
	size_t n = bus_frame_size(f, 0);
	if (f->n != 1 || f->extra != 0 || n < 1 || n > EVENTS_TOPIC_MAX + 1 || p[0] > 1) {
		e->dropped++;
		return true;
	}
	bus_frames_send(e->in, f);
	return true;
}

static void events_out_ready(loop_t *loop, void *zsock, int fd, short revents, void *arg)
{
	(void)loop; (void)fd; (void)revents;
	bus_drain(zsock, 256, events_subscription, arg);
}

static bool events_forward(bus_frames_t *f, void *arg)
{
	events_t *e = arg;
	bus_msg_t m;
	envelope_t env;
	const char *why, *code;
	char err[200];
	const char *role = bus_frames_meta(f, "User-Id");
	if (bus_parse_event(f, &m, &why) < 0) {
		e->dropped++;
		log_warn("event.dropped", "from=%s why=%s", role ? role : "-", log_quote(why));
		return true;
	}
	if (envelope_parse(&env, bus_frame_data(f, m.env), bus_frame_size(f, m.env), ENV_EVENT,
			   &code, err, sizeof err) < 0) {
		e->dropped++;
		log_warn("event.dropped", "from=%s why=%s", role ? role : "-", log_quote(err));
		envelope_clear(&env);
		return true;
	}
	if (!bus_frame_is(f, 0, env.type) || !msgtype_caller_ok(env.mt, role)) {
		e->dropped++;
		log_warn("event.dropped", "from=%s type=%s why=\"topic mismatch or publisher not allowed\"",
			 role ? role : "-", env.type);
		envelope_clear(&env);
		return true;
	}
	tap_mirror(e->tap, "event", role, env.mt->service, env.type, bus_frame_data(f, m.env),
		   bus_frame_size(f, m.env), env.root, m.raw >= 0 ? bus_frame_size(f, m.raw) : 0);
	envelope_clear(&env);
	e->forwarded++;
	bus_frames_send(e->out, f);
	return true;
}

static void events_in_ready(loop_t *loop, void *zsock, int fd, short revents, void *arg)
{
	(void)loop; (void)fd; (void)revents;
	bus_drain(zsock, 256, events_forward, arg);
}

events_t *events_new(loop_t *loop, const bus_endpoints_t *ep, tap_t *tap)
{
	events_t *e = xcalloc(1, sizeof *e);
	e->loop = loop;
	e->tap = tap;
	e->in = bus_socket_new(ZMQ_XSUB);
	e->out = bus_socket_new(ZMQ_XPUB);
	zap_protect(e->in, "events");
	zap_protect(e->out, "events");
	/* What subscribers send are subscriptions: a few bytes each. */
	int64_t sub_max = EVENTS_TOPIC_MAX + 1;
	zmq_setsockopt(e->out, ZMQ_MAXMSGSIZE, &sub_max, sizeof sub_max);
	if (zmq_bind(e->in, ep->events_in) < 0 || zmq_bind(e->out, ep->events_out) < 0) {
		zmq_close(e->in);
		zmq_close(e->out);
		free(e);
		return NULL;
	}
	loop_add_zsock(loop, e->in, ZMQ_POLLIN, events_in_ready, e);
	loop_add_zsock(loop, e->out, ZMQ_POLLIN, events_out_ready, e);
	return e;
}

void events_free(events_t **ep)
{
	events_t *e = *ep;
	if (e == NULL)
		return;
	loop_remove(e->loop, e->in, -1);
	loop_remove(e->loop, e->out, -1);
	zmq_close(e->in);
	zmq_close(e->out);
	free(e);
	*ep = NULL;
}

void events_publish_own(events_t *e, json_t **evp)
{
	json_t *ev = *evp;
	*evp = NULL;
	char id[BUS_ID_MAX + 1];
	snprintf(id, sizeof id, "busd%x-%lx", (unsigned)getpid(), (unsigned long)++e->own_seq);
	json_object_set_new(ev, "v", json_integer(BUS_PROTOCOL_VERSION));
	json_object_set_new(ev, "id", json_string(id));
	const char *type = json_string_value(json_object_get(ev, "type"));
	char *s = json_dumps(ev, JSON_COMPACT);
	tap_mirror(e->tap, "event", "busd", "busd", type, s, strlen(s), ev, 0);
	bus_frames_t f;
	bus_frames_init(&f);
	bus_frames_add_str(&f, type);
	bus_frames_add(&f, s, strlen(s));
	bus_frames_send(e->out, &f);
	e->forwarded++;
	free(s);
	json_decref(ev);
}

uint64_t events_count(const events_t *e)
{
	return e->forwarded;
}
