/*
 * stream.c — the sending side of chunked streams (bus.h): every chunk is a
 * bus_call of the same type carrying chunk {stream, seq, last}, one in
 * flight at a time, so the sender holds at most one chunk whatever the
 * payload size. Retries of a chunk reuse its seq; the receiver (chunk.h)
 * recognises them.
 */
#include "bus.h"
#include "log.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct bus_stream {
	bus_client_t *client;
	char service[BUS_SERVICE_MAX + 1];
	char type[128];
	char id[BUS_ID_MAX + 1];
	json_t *fields;
	int64_t seq;
	bool inflight, finished;
	bool deadlines;       /* each chunk carries "deadline" (bus_stream_deadlines) */
	uint64_t bytes;
	bus_stream_fn fn;
	void *arg;
	uint64_t handle;      /* the call in flight, cancelled by free */
};

bus_stream_t *bus_stream_new(bus_client_t *c, const char *service, const char *type,
			     json_t **fieldsp, bus_stream_fn fn, void *arg)
{
	static uint64_t next;
	bus_stream_t *s = xcalloc(1, sizeof *s);
	s->client = c;
	snprintf(s->service, sizeof s->service, "%s", service);
	snprintf(s->type, sizeof s->type, "%s", type);
	snprintf(s->id, sizeof s->id, "st%x-%lx-%lx", (unsigned)getpid(),
		 (unsigned long)(wall_ms() % 0xffffff), (unsigned long)++next);
	s->fields = fieldsp && *fieldsp ? *fieldsp : json_object();
	if (fieldsp)
		*fieldsp = NULL;
	s->fn = fn;
	s->arg = arg;
	return s;
}

static void stream_acked(json_t **reply, const void *raw, size_t rawlen, void *arg)
{
	(void)raw; (void)rawlen;
	bus_stream_t *s = arg;
	s->inflight = false;
	s->fn(s, reply, s->arg);
}

static int stream_write(bus_stream_t *s, const void *data, void **give, size_t len, bool last)
{
	if (s->inflight || s->finished || len > BUS_CHUNK_SIZE) {
		if (give) {
			free(*give);
			*give = NULL;
		}
		return -1;
	}
	/* The last chunk takes the fields themselves: nothing needs them after
	 * it (a message in one chunk never copies them). */
	json_t *req = last ? s->fields : json_deep_copy(s->fields);
	if (last)
		s->fields = NULL;
	json_object_set_new(req, "type", json_string(s->type));
	json_object_set_new(req, "chunk", json_pack("{s:s, s:I, s:b}", "stream", s->id,
						    "seq", (json_int_t)s->seq, "last", last));
	if (s->deadlines) {
		/* When this sender will have given up on the chunk (every try
		 * timed out), less a quarter (at most 5 s) for the receiver's
		 * own work after accepting it, such as a commit. */
		int64_t wait = bus_give_up_ms();
		int64_t margin = wait / 4 < 5000 ? wait / 4 : 5000;
		json_object_set_new(req, "deadline", json_integer(wall_ms() + wait - margin));
	}
	s->seq++;
	s->bytes += len;
	s->inflight = true;
	s->finished = last;
	/* Sent even when empty: an empty chunk still carries "last". */
	if (give && *give)
		s->handle = bus_call_give(s->client, s->service, &req, give, len, NULL, stream_acked, s);
	else
		s->handle = bus_call(s->client, s->service, &req, data ? data : "", len, NULL,
				     stream_acked, s);
	return 0;
}

int bus_stream_write(bus_stream_t *s, const void *data, size_t len, bool last)
{
	return stream_write(s, data, NULL, len, last);
}

int bus_stream_write_give(bus_stream_t *s, void **data, size_t len, bool last)
{
	return stream_write(s, NULL, data, len, last);
}

void bus_stream_deadlines(bus_stream_t *s)
{
	s->deadlines = true;
}

uint64_t bus_stream_bytes(const bus_stream_t *s)
{
	return s->bytes;
}

void bus_stream_free(bus_stream_t **sp)
{
	bus_stream_t *s = *sp;
	if (s == NULL)
		return;
	if (s->inflight)
		bus_cancel(s->client, s->handle);
	json_decref(s->fields);
	free(s);
	*sp = NULL;
}
