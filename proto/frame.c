/*
 * frame.c — see frame.h.
 */
#include "frame.h"
#include "bus.h"
#include "loop.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void bus_frames_init(bus_frames_t *f)
{
	f->n = 0;
	f->extra = 0;
	f->bytes = 0;
}

void bus_frames_close(bus_frames_t *f)
{
	for (int i = 0; i < f->n; i++)
		zmq_msg_close(&f->part[i]);
	f->n = 0;
	f->extra = 0;
	f->bytes = 0;
}

int bus_frames_recv(void *sock, bus_frames_t *f)
{
	bus_frames_init(f);
	loop_zmq_used();
	for (;;) {
		zmq_msg_t tmp;
		zmq_msg_t *m = f->n < BUS_FRAMES_MAX ? &f->part[f->n] : &tmp;
		zmq_msg_init(m);
		/* Only the first part may be absent: the rest of a multipart
		 * message arrives atomically with it. */
		if (zmq_msg_recv(m, sock, ZMQ_DONTWAIT) < 0) {
			int e = errno;
			zmq_msg_close(m);
			if (f->n == 0 && f->extra == 0)
				return -1;
			bus_frames_close(f);
			errno = e;
			return -1;
		}
		f->bytes += zmq_msg_size(m);
		int more = zmq_msg_more(m);
		if (m == &tmp) {
			zmq_msg_close(m);
			f->extra++;
		} else {
			f->n++;
		}
		if (!more)
			return 0;
	}
}

int bus_drain(void *sock, int max, bus_frames_fn fn, void *arg)
{
	int n = 0;
	while (n < max) {
		bus_frames_t f;
		if (bus_frames_recv(sock, &f) < 0)
			break;
		n++;
		bool more = fn(&f, arg);
		bus_frames_close(&f);
		if (!more)
			break;
	}
	return n;
}

int bus_frames_send(void *sock, bus_frames_t *f)
{
	int rc = 0;
	loop_zmq_used();
	int i;
	for (i = 0; i < f->n; i++) {
		int flags = ZMQ_DONTWAIT | (i + 1 < f->n ? ZMQ_SNDMORE : 0);
		if (zmq_msg_send(&f->part[i], sock, flags) < 0) {
			rc = -1;
			break;
		}
	}
	int e = errno;
	/* Frames that were sent are owned by ZeroMQ now (their msg is empty);
	 * closing them is still required and harmless. */
	for (int j = 0; j < f->n; j++)
		zmq_msg_close(&f->part[j]);
	f->n = 0;
	errno = e;
	return rc;
}

void bus_frames_add(bus_frames_t *f, const void *data, size_t len)
{
	if (f->n >= BUS_FRAMES_MAX)
		abort();  /* a bug: we never build messages this long */
	zmq_msg_t *m = &f->part[f->n++];
	zmq_msg_init_size(m, len);
	if (len > 0)
		memcpy(zmq_msg_data(m), data, len);
	f->bytes += len;
}

static void frame_free(void *data, void *hint)
{
	(void)hint;
	free(data);
}

void bus_frames_add_owned(bus_frames_t *f, void *data, size_t len)
{
	if (f->n >= BUS_FRAMES_MAX)
		abort();
	zmq_msg_t *m = &f->part[f->n++];
	if (zmq_msg_init_data(m, data, len, frame_free, NULL) < 0)
		abort();  /* ENOMEM */
	f->bytes += len;
}

void bus_frames_add_str(bus_frames_t *f, const char *s)
{
	bus_frames_add(f, s, strlen(s));
}

void bus_frames_add_byte(bus_frames_t *f, unsigned char b)
{
	bus_frames_add(f, &b, 1);
}

void bus_frames_add_ref(bus_frames_t *f, const bus_frames_t *src, int i)
{
	if (f->n >= BUS_FRAMES_MAX)
		abort();
	zmq_msg_t *m = &f->part[f->n++];
	zmq_msg_init(m);
	zmq_msg_copy(m, (zmq_msg_t *)&src->part[i]);
	f->bytes += zmq_msg_size(m);
}

void bus_frames_move(bus_frames_t *dst, bus_frames_t *src)
{
	bus_frames_init(dst);
	for (int i = 0; i < src->n; i++) {
		zmq_msg_init(&dst->part[i]);
		zmq_msg_move(&dst->part[i], &src->part[i]);
		zmq_msg_close(&src->part[i]);
	}
	dst->n = src->n;
	dst->extra = src->extra;
	dst->bytes = src->bytes;
	bus_frames_init(src);
}

const void *bus_frame_data(const bus_frames_t *f, int i)
{
	return zmq_msg_data((zmq_msg_t *)&f->part[i]);
}

size_t bus_frame_size(const bus_frames_t *f, int i)
{
	return zmq_msg_size((zmq_msg_t *)&f->part[i]);
}

bool bus_frame_is(const bus_frames_t *f, int i, const char *s)
{
	size_t n = strlen(s);
	return i < f->n && bus_frame_size(f, i) == n && memcmp(bus_frame_data(f, i), s, n) == 0;
}

int bus_frame_str(const bus_frames_t *f, int i, char *buf, size_t size)
{
	size_t n = bus_frame_size(f, i);
	const unsigned char *p = bus_frame_data(f, i);
	if (n >= size)
		return -1;
	for (size_t k = 0; k < n; k++)
		if (p[k] < 0x20 || p[k] > 0x7e)
			return -1;
	memcpy(buf, p, n);
	buf[n] = '\0';
	return 0;
}

const char *bus_frames_meta(const bus_frames_t *f, const char *property)
{
	/* Not frame 0: a ROUTER's routing-id frame lacks metadata when the
	 * message was prefetched by a poll (libzmq 4.3 router.cpp). */
	if (f->n == 0)
		return NULL;
	return zmq_msg_gets((zmq_msg_t *)&f->part[f->n - 1], property);
}

bool bus_service_name_ok(const char *s, size_t len)
{
	static const char suffix[] = ".control";
	size_t base = len;
	if (len == 0 || len > BUS_SERVICE_MAX)
		return false;
	if (len > sizeof suffix - 1 && memcmp(s + len - (sizeof suffix - 1), suffix, sizeof suffix - 1) == 0)
		base = len - (sizeof suffix - 1);
	if (s[0] < 'a' || s[0] > 'z')
		return false;
	for (size_t i = 1; i < base; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
			return false;
	}
	return true;
}

static void bus_msg_clear(bus_msg_t *m)
{
	*m = (bus_msg_t){ -1, -1, -1, -1, -1, -1, -1 };
}

/* Common checks for [envelope][raw?] starting at frame i. */
static int bus_parse_payload(const bus_frames_t *f, int i, bus_msg_t *m, const char **why)
{
	if (f->extra > 0 || f->n < i + 1 || f->n > i + 2) {
		*why = "wrong number of frames";
		return -1;
	}
	m->env = i;
	if (bus_frame_size(f, i) == 0) {
		*why = "empty envelope frame";
		return -1;
	}
	if (bus_frame_size(f, i) > BUS_ENVELOPE_MAX) {
		*why = "envelope frame too large";
		return -1;
	}
	if (f->n == i + 2) {
		m->raw = i + 1;
		if (bus_frame_size(f, i + 1) > BUS_RAW_MAX) {
			*why = "raw frame too large";
			return -1;
		}
	}
	return 0;
}

int bus_parse_client(const bus_frames_t *f, bool has_rid, bus_msg_t *m, const char **why)
{
	int i = has_rid ? 1 : 0;
	bus_msg_clear(m);
	if (has_rid)
		m->rid = 0;
	if (f->n < i + 3 || f->extra > 0) {
		*why = "wrong number of frames";
		return -1;
	}
	if (!bus_frame_is(f, i, BUS_CLIENT_TAG)) {
		*why = "not a client protocol message (bad tag)";
		return -1;
	}
	m->service = i + 1;
	if (!bus_service_name_ok(bus_frame_data(f, i + 1), bus_frame_size(f, i + 1))) {
		*why = "bad service name";
		return -1;
	}
	return bus_parse_payload(f, i + 2, m, why);
}

int bus_parse_worker(const bus_frames_t *f, bool has_rid, bus_msg_t *m, const char **why)
{
	int i = has_rid ? 1 : 0;
	bus_msg_clear(m);
	if (has_rid)
		m->rid = 0;
	if (f->n < i + 2 || f->extra > 0) {
		*why = "wrong number of frames";
		return -1;
	}
	if (!bus_frame_is(f, i, BUS_WORKER_TAG)) {
		*why = "not a worker protocol message (bad tag)";
		return -1;
	}
	if (bus_frame_size(f, i + 1) != 1) {
		*why = "bad command frame";
		return -1;
	}
	m->cmd = *(const unsigned char *)bus_frame_data(f, i + 1);
	switch (m->cmd) {
	case BUS_W_READY:
		if (f->n != i + 4) {
			*why = "READY needs service and info frames";
			return -1;
		}
		m->service = i + 2;
		m->info = i + 3;
		if (!bus_service_name_ok(bus_frame_data(f, i + 2), bus_frame_size(f, i + 2))) {
			*why = "bad service name";
			return -1;
		}
		if (bus_frame_size(f, i + 3) > 4096) {
			*why = "READY info too large";
			return -1;
		}
		return 0;
	case BUS_W_REQUEST:
	case BUS_W_REPLY:
		if (f->n < i + 3) {
			*why = "wrong number of frames";
			return -1;
		}
		m->ticket = i + 2;
		if (bus_frame_size(f, i + 2) != BUS_TICKET_LEN) {
			*why = "bad ticket frame";
			return -1;
		}
		return bus_parse_payload(f, i + 3, m, why);
	case BUS_W_DISCONNECT:
		/* An optional reason: why busd refused a registration. */
		if (f->n == i + 3 && bus_frame_size(f, i + 2) <= 512) {
			m->info = i + 2;
			return 0;
		}
		/* fall through */
	case BUS_W_HEARTBEAT:
		if (f->n != i + 2) {
			*why = "wrong number of frames";
			return -1;
		}
		return 0;
	default:
		*why = "unknown worker command";
		return -1;
	}
}

int bus_parse_event(const bus_frames_t *f, bus_msg_t *m, const char **why)
{
	bus_msg_clear(m);
	if (f->n < 2 || f->extra > 0) {
		*why = "wrong number of frames";
		return -1;
	}
	if (bus_frame_size(f, 0) == 0 || bus_frame_size(f, 0) > 128) {
		*why = "bad topic frame";
		return -1;
	}
	return bus_parse_payload(f, 1, m, why);
}
