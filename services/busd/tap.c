/*
 * tap.c — every envelope that crosses busd, mirrored on an XPUB socket as
 * [type][one JSON line]:
 *
 *   {"ts":..., "dir":"request", "from":"smtpd", "service":"storaged",
 *    "raw":1234, "env":{...the envelope...}}
 *
 * Raw frames are never mirrored (only their size), and fields a schema marks
 * sensitive (passwords) are replaced by "[redacted]". Nothing is built while
 * no one subscribes.
 */
#include "busd.h"
#include "envelope.h"
#include "log.h"
#include "util.h"

#include <stdio.h>
#include <string.h>
#include <zmq.h>

void *bus_socket_new(int type);

struct tap {
	loop_t *loop;
	void *sock;
	uint64_t mirrored;
	int subscribers;     /* distinct topics subscribed, from XPUB */
};

static void tap_ready(loop_t *loop, void *zsock, int fd, short revents, void *arg);

tap_t *tap_new(loop_t *loop, const char *endpoint)
{
	tap_t *t = xcalloc(1, sizeof *t);
	t->loop = loop;
	t->sock = bus_socket_new(ZMQ_XPUB);
	zap_protect(t->sock, "tap");
	int64_t sub_max = 129;  /* subscriptions only: \x01 + a topic prefix */
	zmq_setsockopt(t->sock, ZMQ_MAXMSGSIZE, &sub_max, sizeof sub_max);
	int hwm = 10000;
	zmq_setsockopt(t->sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
	if (zmq_bind(t->sock, endpoint) < 0) {
		zmq_close(t->sock);
		free(t);
		return NULL;
	}
	loop_add_zsock(loop, t->sock, ZMQ_POLLIN, tap_ready, t);
	return t;
}

void tap_free(tap_t **tp)
{
	tap_t *t = *tp;
	if (t == NULL)
		return;
	loop_remove(t->loop, t->sock, -1);
	zmq_close(t->sock);
	free(t);
	*tp = NULL;
}

/* Subscriptions arrive as messages on the XPUB: \x01topic subscribes,
 * \x00topic unsubscribes (also sent for a subscriber that goes away). Kept
 * as a count so that tap_mirror costs one comparison while nobody looks. */
static void tap_ready(loop_t *loop, void *zsock, int fd, short revents, void *arg)
{
	(void)loop; (void)fd; (void)revents;
	tap_t *t = arg;
	char buf[256];
	int n;
	while ((n = zmq_recv(zsock, buf, sizeof buf, ZMQ_DONTWAIT)) > 0) {
		if (buf[0] == 1)
			t->subscribers++;
		else if (buf[0] == 0 && t->subscribers > 0)
			t->subscribers--;
	}
}

bool tap_active(const tap_t *t)
{
	return t != NULL && t->subscribers > 0;
}

/* The envelope with sensitive fields replaced; NULL if none present. */
static char *tap_redacted(const json_t *parsed)
{
	const char *type = json_string_value(json_object_get(parsed, "type"));
	const struct msgtype *mt = type ? msgtype_find(type) : NULL;
	if (mt == NULL || mt->sensitive == NULL || mt->sensitive[0] == NULL)
		return NULL;
	json_t *copy = json_deep_copy(parsed);
	for (const char *const *k = mt->sensitive; *k != NULL; k++)
		if (json_object_get(copy, *k) != NULL)
			json_object_set_new(copy, *k, json_string("[redacted]"));
	char *s = json_dumps(copy, JSON_COMPACT);
	json_decref(copy);
	return s;
}

void tap_mirror(tap_t *t, const char *dir, const char *from, const char *service,
		const char *type, const void *env, size_t envlen, const json_t *parsed,
		size_t rawlen)
{
	if (!tap_active(t))
		return;
	char head[384];
	char *red = parsed ? tap_redacted(parsed) : NULL;
	if (red != NULL) {
		env = red;
		envlen = strlen(red);
	}
	int hn = snprintf(head, sizeof head,
			  "{\"ts\":%lld,\"dir\":\"%s\",\"from\":\"%s\",\"service\":\"%s\",\"raw\":%zu,\"env\":",
			  (long long)wall_ms(), dir, from, service, rawlen);
	zmq_msg_t m;
	zmq_msg_init_size(&m, (size_t)hn + envlen + 1);
	char *p = zmq_msg_data(&m);
	memcpy(p, head, (size_t)hn);
	memcpy(p + hn, env, envlen);
	p[hn + envlen] = '}';
	zmq_send(t->sock, type, strlen(type), ZMQ_SNDMORE | ZMQ_DONTWAIT);
	zmq_msg_send(&m, t->sock, ZMQ_DONTWAIT);
	zmq_msg_close(&m);
	t->mirrored++;
	free(red);
}
