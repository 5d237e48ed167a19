/*
 * events.c — broadcast events through busd: a PUB socket connected to
 * busd's events.in (XSUB) and SUB sockets connected to events.out (XPUB).
 * Frames: [type][envelope][raw?]; the type frame is the subscription topic.
 */
#include "bus.h"
#include "msgtypes.h"
#include "frame.h"
#include "log.h"
#include "util.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

void *bus_socket_new(int type);

struct bus_pub {
	void *sock;
	uint64_t seq;
};

struct bus_sub {
	loop_t *loop;
	void *sock;
	int busy;            /* inside sub_ready: freeing waits until it returns */
	bool freed;
	bus_event_fn fn;
	void *arg;
};

bus_pub_t *bus_pub_new(const char *bus_dir)
{
	bus_endpoints_t ep;
	if (bus_endpoints_init(&ep, bus_dir) < 0)
		return NULL;
	bus_pub_t *p = xcalloc(1, sizeof *p);
	p->sock = bus_socket_new(ZMQ_PUB);
	if (zmq_connect(p->sock, ep.events_in) < 0) {
		zmq_close(p->sock);
		free(p);
		return NULL;
	}
	return p;
}

void bus_pub_free(bus_pub_t **pp)
{
	bus_pub_t *p = *pp;
	if (p == NULL)
		return;
	zmq_close(p->sock);
	free(p);
	*pp = NULL;
}

int bus_publish(bus_pub_t *p, json_t **eventp, const void *raw, size_t rawlen)
{
	json_t *ev = *eventp;
	*eventp = NULL;
	const char *type = json_string_value(json_object_get(ev, "type"));
	if (type == NULL || rawlen > BUS_RAW_MAX) {
		json_decref(ev);
		return -1;
	}
	char id[BUS_ID_MAX + 1];
	snprintf(id, sizeof id, "e%x-%lx", (unsigned)getpid(), (unsigned long)++p->seq);
	json_object_set_new(ev, "v", json_integer(BUS_PROTOCOL_VERSION));
	json_object_set_new(ev, "id", json_string(id));
	char *s = json_dumps(ev, JSON_COMPACT);
	bus_frames_t f;
	bus_frames_init(&f);
	bus_frames_add_str(&f, type);
	bus_frames_add(&f, s, strlen(s));
	if (raw != NULL)
		bus_frames_add(&f, raw, rawlen);
	int rc = bus_frames_send(p->sock, &f);
	free(s);
	json_decref(ev);
	return rc;
}

/* One event: checked for shape, parsed, handed to the subscriber. */
static bool sub_on_event(bus_frames_t *f, void *arg)
{
	bus_sub_t *s = arg;
	bus_msg_t m;
	const char *why;
	if (bus_parse_event(f, &m, &why) < 0) {
		log_warn("bus.event.bad", "why=%s", log_quote(why));
		return true;
	}
	json_t *ev = json_loadb(bus_frame_data(f, m.env), bus_frame_size(f, m.env), 0, NULL);
	if (json_is_object(ev))
		s->fn(&ev, m.raw >= 0 ? bus_frame_data(f, m.raw) : NULL,
		      m.raw >= 0 ? bus_frame_size(f, m.raw) : 0, s->arg);
	json_decref(ev);
	return !s->freed;
}

static void sub_ready(loop_t *loop, void *zsock, int fd, short revents, void *arg)
{
	(void)loop; (void)fd; (void)revents;
	bus_sub_t *s = arg;
	s->busy++;
	bus_drain(zsock, 256, sub_on_event, s);
	if (--s->busy == 0 && s->freed)
		free(s);
}

bus_sub_t *bus_sub_new(loop_t *loop, const char *bus_dir, const char *prefix,
		       bus_event_fn fn, void *arg)
{
	bus_endpoints_t ep;
	if (bus_endpoints_init(&ep, bus_dir) < 0)
		return NULL;
	bus_sub_t *s = xcalloc(1, sizeof *s);
	s->loop = loop;
	s->fn = fn;
	s->arg = arg;
	s->sock = bus_socket_new(ZMQ_SUB);
	zmq_setsockopt(s->sock, ZMQ_SUBSCRIBE, prefix, strlen(prefix));
	if (zmq_connect(s->sock, ep.events_out) < 0) {
		zmq_close(s->sock);
		free(s);
		return NULL;
	}
	loop_add_zsock(loop, s->sock, ZMQ_POLLIN, sub_ready, s);
	return s;
}

void bus_sub_free(bus_sub_t **sp)
{
	bus_sub_t *s = *sp;
	if (s == NULL)
		return;
	*sp = NULL;
	loop_remove(s->loop, s->sock, -1);
	zmq_close(s->sock);
	s->sock = NULL;
	if (s->busy > 0)
		s->freed = true;  /* freed from its own callback: sub_ready frees it */
	else
		free(s);
}
