/*
 * test_frame.c — cmocka unit tests for proto/frame.c: building multipart
 * messages, a real round trip through a ZeroMQ inproc DEALER/ROUTER pair,
 * and the shape checks of the client, worker and event protocols.
 *
 * Parse tests build frames with bus_frames_add* and need no socket. The
 * socket tests get a fixture owning a context, a bound ROUTER and a
 * connected DEALER, so a failing assertion still closes them.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "bus.h"
#include "frame.h"
#include "util.h"

#define ENV "{\"type\":\"echo.payload.echo\",\"v\":1,\"id\":\"a1\"}"
#define RID "dealer-1"

/* ---- helpers -------------------------------------------------------------- */

/* Appends n copies of byte c as one frame (for size limits). */
static void add_fill(bus_frames_t *f, size_t n, char c)
{
	char *buf = xmalloc(n > 0 ? n : 1);
	memset(buf, c, n);
	bus_frames_add(f, buf, n);
	free(buf);
}

/* Builds [rid?][RBC1][service][envelope][raw?]. */
static void build_client(bus_frames_t *f, bool rid, const char *service, const char *raw)
{
	bus_frames_init(f);
	if (rid)
		bus_frames_add_str(f, RID);
	bus_frames_add_str(f, BUS_CLIENT_TAG);
	bus_frames_add_str(f, service);
	bus_frames_add_str(f, ENV);
	if (raw != NULL)
		bus_frames_add_str(f, raw);
}

/* Expects bus_parse_client to fail with a reason containing want. */
static void expect_client_fail(bus_frames_t *f, bool rid, const char *want)
{
	bus_msg_t m;
	const char *why = NULL;
	assert_int_equal(bus_parse_client(f, rid, &m, &why), -1);
	assert_non_null(why);
	assert_non_null(strstr(why, want));
	bus_frames_close(f);
}

static void expect_worker_fail(bus_frames_t *f, bool rid, const char *want)
{
	bus_msg_t m;
	const char *why = NULL;
	assert_int_equal(bus_parse_worker(f, rid, &m, &why), -1);
	assert_non_null(why);
	assert_non_null(strstr(why, want));
	bus_frames_close(f);
}

static void expect_event_fail(bus_frames_t *f, const char *want)
{
	bus_msg_t m;
	const char *why = NULL;
	assert_int_equal(bus_parse_event(f, &m, &why), -1);
	assert_non_null(why);
	assert_non_null(strstr(why, want));
	bus_frames_close(f);
}

/* [RBW1][cmd] — the worker protocol's first two frames. */
static void build_worker(bus_frames_t *f, bool rid, unsigned char cmd)
{
	bus_frames_init(f);
	if (rid)
		bus_frames_add_str(f, RID);
	bus_frames_add_str(f, BUS_WORKER_TAG);
	bus_frames_add_byte(f, cmd);
}

/* ---- building frames -------------------------------------------------------- */

static void test_build_frames(void **state)
{
	(void)state;
	bus_frames_t f, g;
	static const unsigned char bin[] = { 0x00, 0xff, 0x10 };

	bus_frames_init(&f);
	assert_int_equal(f.n, 0);
	assert_int_equal(f.extra, 0);
	bus_frames_add_str(&f, "hello");
	bus_frames_add(&f, bin, sizeof bin);
	bus_frames_add_byte(&f, BUS_W_HEARTBEAT);
	bus_frames_add(&f, NULL, 0);
	assert_int_equal(f.n, 4);
	assert_int_equal(f.bytes, 5 + 3 + 1 + 0);

	assert_int_equal(bus_frame_size(&f, 0), 5);
	assert_memory_equal(bus_frame_data(&f, 0), "hello", 5);
	assert_true(bus_frame_is(&f, 0, "hello"));
	assert_false(bus_frame_is(&f, 0, "hell"));
	assert_false(bus_frame_is(&f, 0, "hello!"));
	assert_false(bus_frame_is(&f, 4, "hello")); /* past the end */
	assert_int_equal(bus_frame_size(&f, 1), 3);
	assert_memory_equal(bus_frame_data(&f, 1), bin, 3);
	assert_int_equal(bus_frame_size(&f, 2), 1);
	assert_int_equal(*(const unsigned char *)bus_frame_data(&f, 2), BUS_W_HEARTBEAT);
	assert_int_equal(bus_frame_size(&f, 3), 0);
	assert_true(bus_frame_is(&f, 3, ""));

	/* add_ref shares the bytes of another message's frame. */
	bus_frames_init(&g);
	bus_frames_add_ref(&g, &f, 1);
	bus_frames_add_ref(&g, &f, 0);
	assert_int_equal(g.n, 2);
	assert_int_equal(g.bytes, 3 + 5);
	assert_memory_equal(bus_frame_data(&g, 0), bin, 3);
	assert_true(bus_frame_is(&g, 1, "hello"));

	bus_frames_close(&f);
	assert_int_equal(f.n, 0);
	assert_int_equal(f.bytes, 0);
	/* g's copies survive the source being closed. */
	assert_true(bus_frame_is(&g, 1, "hello"));
	bus_frames_close(&g);
	assert_null(bus_frames_meta(&g, "User-Id"));
}

static void test_frames_move(void **state)
{
	(void)state;
	bus_frames_t src, dst;

	bus_frames_init(&src);
	bus_frames_add_str(&src, BUS_CLIENT_TAG);
	bus_frames_add_str(&src, "echo");
	bus_frames_add(&src, NULL, 0);
	src.extra = 2;
	bus_frames_move(&dst, &src);
	assert_int_equal(src.n, 0);
	assert_int_equal(src.extra, 0);
	assert_int_equal(src.bytes, 0);
	assert_int_equal(dst.n, 3);
	assert_int_equal(dst.extra, 2);
	assert_int_equal(dst.bytes, 8);
	assert_true(bus_frame_is(&dst, 0, BUS_CLIENT_TAG));
	assert_true(bus_frame_is(&dst, 1, "echo"));
	assert_int_equal(bus_frame_size(&dst, 2), 0);
	bus_frames_close(&src); /* nothing left to release */
	bus_frames_close(&dst);

	/* Moving an empty message. */
	bus_frames_init(&src);
	bus_frames_move(&dst, &src);
	assert_int_equal(dst.n, 0);
}

static void test_frame_str(void **state)
{
	(void)state;
	bus_frames_t f;
	char buf[16];

	bus_frames_init(&f);
	bus_frames_add_str(&f, "echo.control");   /* 0: 12 bytes */
	bus_frames_add(&f, "a\x01" "b", 3);        /* 1: control byte */
	bus_frames_add(&f, "a\x7f", 2);            /* 2: DEL */
	bus_frames_add(&f, "a\x80", 2);            /* 3: high byte */
	bus_frames_add(&f, "a\0b", 3);             /* 4: NUL */
	bus_frames_add(&f, NULL, 0);               /* 5: empty */
	bus_frames_add_str(&f, " ~");              /* 6: printable edges */

	memset(buf, 'X', sizeof buf);
	assert_int_equal(bus_frame_str(&f, 0, buf, sizeof buf), 0);
	assert_string_equal(buf, "echo.control");
	/* The buffer must hold the terminating NUL too. */
	assert_int_equal(bus_frame_str(&f, 0, buf, 13), 0);
	assert_string_equal(buf, "echo.control");
	assert_int_equal(bus_frame_str(&f, 0, buf, 12), -1);
	assert_int_equal(bus_frame_str(&f, 0, buf, 1), -1);
	assert_int_equal(bus_frame_str(&f, 0, buf, 0), -1);

	assert_int_equal(bus_frame_str(&f, 1, buf, sizeof buf), -1);
	assert_int_equal(bus_frame_str(&f, 2, buf, sizeof buf), -1);
	assert_int_equal(bus_frame_str(&f, 3, buf, sizeof buf), -1);
	assert_int_equal(bus_frame_str(&f, 4, buf, sizeof buf), -1);

	assert_int_equal(bus_frame_str(&f, 5, buf, 1), 0);
	assert_string_equal(buf, "");
	assert_int_equal(bus_frame_str(&f, 5, buf, 0), -1);
	assert_int_equal(bus_frame_str(&f, 6, buf, sizeof buf), 0);
	assert_string_equal(buf, " ~");
	bus_frames_close(&f);
}

/* ---- sockets: an inproc DEALER/ROUTER pair ------------------------------------ */

struct zfx {
	void *ctx;
	void *router;
	void *dealer;
};

static int zfx_setup(void **state)
{
	struct zfx *z = xcalloc(1, sizeof *z);
	int linger = 0;

	*state = z;
	z->ctx = zmq_ctx_new();
	if (z->ctx == NULL)
		return -1;
	z->router = zmq_socket(z->ctx, ZMQ_ROUTER);
	z->dealer = zmq_socket(z->ctx, ZMQ_DEALER);
	if (z->router == NULL || z->dealer == NULL)
		return -1;
	zmq_setsockopt(z->router, ZMQ_LINGER, &linger, sizeof linger);
	zmq_setsockopt(z->dealer, ZMQ_LINGER, &linger, sizeof linger);
	if (zmq_setsockopt(z->dealer, ZMQ_ROUTING_ID, RID, strlen(RID)) != 0)
		return -1;
	if (zmq_bind(z->router, "inproc://t") != 0)
		return -1;
	if (zmq_connect(z->dealer, "inproc://t") != 0)
		return -1;
	return 0;
}

static int zfx_teardown(void **state)
{
	struct zfx *z = *state;

	if (z->dealer != NULL)
		zmq_close(z->dealer);
	if (z->router != NULL)
		zmq_close(z->router);
	if (z->ctx != NULL)
		zmq_ctx_term(z->ctx);
	free(z);
	return 0;
}

/* Waits up to 2 s for a message on sock, then receives it whole. */
static int recv_wait(void *sock, bus_frames_t *f)
{
	zmq_pollitem_t it = { .socket = sock, .events = ZMQ_POLLIN };
	if (zmq_poll(&it, 1, 2000) != 1)
		return -1;
	return bus_frames_recv(sock, f);
}

static void test_roundtrip(void **state)
{
	struct zfx *z = *state;
	bus_frames_t f, in, out;
	bus_msg_t m;
	const char *why = NULL;

	/* Nothing waiting: EAGAIN, and nothing held. */
	errno = 0;
	assert_int_equal(bus_frames_recv(z->router, &in), -1);
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(in.n, 0);

	/* DEALER -> ROUTER: the router sees our routing id as frame 0. */
	build_client(&f, false, "echo", "raw-bytes");
	assert_int_equal(bus_frames_send(z->dealer, &f), 0);
	assert_int_equal(f.n, 0); /* consumed */
	assert_int_equal(recv_wait(z->router, &in), 0);
	assert_int_equal(in.n, 5);
	assert_int_equal(in.extra, 0);
	assert_int_equal(in.bytes, strlen(RID) + 4 + 4 + strlen(ENV) + 9);
	assert_true(bus_frame_is(&in, 0, RID));
	assert_true(bus_frame_is(&in, 1, BUS_CLIENT_TAG));
	assert_true(bus_frame_is(&in, 2, "echo"));
	assert_true(bus_frame_is(&in, 3, ENV));
	assert_true(bus_frame_is(&in, 4, "raw-bytes"));
	assert_int_equal(bus_parse_client(&in, true, &m, &why), 0);
	assert_int_equal(m.rid, 0);
	assert_int_equal(m.service, 2);
	assert_int_equal(m.env, 3);
	assert_int_equal(m.raw, 4);

	/* ROUTER -> DEALER: frame 0 addresses the peer and is not delivered. */
	bus_frames_init(&out);
	bus_frames_add_ref(&out, &in, m.rid);
	bus_frames_add_str(&out, BUS_CLIENT_TAG);
	bus_frames_add_ref(&out, &in, m.service);
	bus_frames_add_str(&out, "{\"status\":\"ok\"}");
	bus_frames_close(&in);
	assert_int_equal(bus_frames_send(z->router, &out), 0);
	assert_int_equal(out.n, 0);
	assert_int_equal(recv_wait(z->dealer, &in), 0);
	assert_int_equal(in.n, 3);
	assert_true(bus_frame_is(&in, 0, BUS_CLIENT_TAG));
	assert_true(bus_frame_is(&in, 1, "echo"));
	assert_true(bus_frame_is(&in, 2, "{\"status\":\"ok\"}"));
	assert_int_equal(bus_parse_client(&in, false, &m, &why), 0);
	assert_int_equal(m.rid, -1);
	assert_int_equal(m.env, 2);
	assert_int_equal(m.raw, -1);
	bus_frames_close(&in);

	/* Empty frames survive the trip. */
	bus_frames_init(&f);
	bus_frames_add(&f, NULL, 0);
	bus_frames_add(&f, NULL, 0);
	assert_int_equal(bus_frames_send(z->dealer, &f), 0);
	assert_int_equal(recv_wait(z->router, &in), 0);
	assert_int_equal(in.n, 3);
	assert_int_equal(bus_frame_size(&in, 1), 0);
	assert_int_equal(bus_frame_size(&in, 2), 0);
	bus_frames_close(&in);
}

/* Sends parts frames "p0".."pN" as one message with plain zmq calls. */
static void send_parts(void *sock, const char *rid, int parts)
{
	char buf[16];
	if (rid != NULL)
		assert_int_equal(zmq_send(sock, rid, strlen(rid), ZMQ_SNDMORE), (int)strlen(rid));
	for (int i = 0; i < parts; i++) {
		int len = snprintf(buf, sizeof buf, "p%d", i);
		assert_int_equal(zmq_send(sock, buf, (size_t)len, i + 1 < parts ? ZMQ_SNDMORE : 0), len);
	}
}

static void test_recv_too_many_parts(void **state)
{
	struct zfx *z = *state;
	bus_frames_t in;
	bus_msg_t m;
	const char *why = NULL;

	/* 10 parts + the routing id = 11 at the router: 8 kept, 3 dropped. */
	send_parts(z->dealer, NULL, 10);
	assert_int_equal(recv_wait(z->router, &in), 0);
	assert_int_equal(in.n, BUS_FRAMES_MAX);
	assert_int_equal(in.extra, 3);
	assert_true(bus_frame_is(&in, 0, RID));
	assert_true(bus_frame_is(&in, 7, "p6"));
	/* bytes counts what was received, dropped parts included. */
	assert_int_equal(in.bytes, strlen(RID) + 10 * 2);
	assert_int_equal(bus_parse_client(&in, true, &m, &why), -1);
	assert_string_equal(why, "wrong number of frames");
	assert_int_equal(bus_parse_worker(&in, true, &m, &why), -1);
	assert_int_equal(bus_parse_event(&in, &m, &why), -1);
	bus_frames_close(&in);

	/* Even a well-formed prefix is refused when parts were dropped:
	 * [RBC1][echo][env] then 6 more parts. */
	assert_int_equal(zmq_send(z->dealer, BUS_CLIENT_TAG, 4, ZMQ_SNDMORE), 4);
	assert_int_equal(zmq_send(z->dealer, "echo", 4, ZMQ_SNDMORE), 4);
	assert_int_equal(zmq_send(z->dealer, ENV, strlen(ENV), ZMQ_SNDMORE), (int)strlen(ENV));
	send_parts(z->dealer, NULL, 6);
	assert_int_equal(recv_wait(z->router, &in), 0);
	assert_int_equal(in.n, BUS_FRAMES_MAX);
	assert_int_equal(in.extra, 2);
	assert_int_equal(bus_parse_client(&in, true, &m, &why), -1);
	assert_string_equal(why, "wrong number of frames");
	bus_frames_close(&in);

	/* The dealer side, without routing id: 9 parts -> 8 kept, 1 dropped. */
	send_parts(z->dealer, NULL, 1); /* let the router learn our id */
	assert_int_equal(recv_wait(z->router, &in), 0);
	bus_frames_close(&in);
	send_parts(z->router, RID, 9);
	assert_int_equal(recv_wait(z->dealer, &in), 0);
	assert_int_equal(in.n, BUS_FRAMES_MAX);
	assert_int_equal(in.extra, 1);
	assert_true(bus_frame_is(&in, 0, "p0"));
	bus_frames_close(&in);

	/* Exactly BUS_FRAMES_MAX parts: nothing dropped. */
	send_parts(z->router, RID, BUS_FRAMES_MAX);
	assert_int_equal(recv_wait(z->dealer, &in), 0);
	assert_int_equal(in.n, BUS_FRAMES_MAX);
	assert_int_equal(in.extra, 0);
	bus_frames_close(&in);
}

/* ---- client protocol ---------------------------------------------------------- */

static void test_client_ok(void **state)
{
	(void)state;
	bus_frames_t f;
	bus_msg_t m;
	const char *why = NULL;

	build_client(&f, false, "echo", NULL);
	assert_int_equal(bus_parse_client(&f, false, &m, &why), 0);
	assert_int_equal(m.rid, -1);
	assert_int_equal(m.cmd, -1);
	assert_int_equal(m.service, 1);
	assert_int_equal(m.ticket, -1);
	assert_int_equal(m.info, -1);
	assert_int_equal(m.env, 2);
	assert_int_equal(m.raw, -1);
	bus_frames_close(&f);

	build_client(&f, false, "echo.control", "some raw bytes");
	assert_int_equal(bus_parse_client(&f, false, &m, &why), 0);
	assert_int_equal(m.service, 1);
	assert_int_equal(m.env, 2);
	assert_int_equal(m.raw, 3);
	bus_frames_close(&f);

	build_client(&f, true, "echo", NULL);
	assert_int_equal(bus_parse_client(&f, true, &m, &why), 0);
	assert_int_equal(m.rid, 0);
	assert_int_equal(m.service, 2);
	assert_int_equal(m.env, 3);
	assert_int_equal(m.raw, -1);
	bus_frames_close(&f);

	build_client(&f, true, "echo", "raw");
	assert_int_equal(bus_parse_client(&f, true, &m, &why), 0);
	assert_int_equal(m.rid, 0);
	assert_int_equal(m.service, 2);
	assert_int_equal(m.env, 3);
	assert_int_equal(m.raw, 4);
	bus_frames_close(&f);

	/* An empty raw frame is still a raw frame. */
	build_client(&f, false, "echo", "");
	assert_int_equal(bus_parse_client(&f, false, &m, &why), 0);
	assert_int_equal(m.raw, 3);
	bus_frames_close(&f);
}

static void test_client_frame_count(void **state)
{
	(void)state;
	bus_frames_t f;

	bus_frames_init(&f);
	expect_client_fail(&f, false, "wrong number of frames");

	bus_frames_init(&f);
	bus_frames_add_str(&f, BUS_CLIENT_TAG);
	bus_frames_add_str(&f, "echo");
	expect_client_fail(&f, false, "wrong number of frames");

	/* A ROUTER message needs one more frame than a DEALER one. */
	bus_frames_init(&f);
	bus_frames_add_str(&f, RID);
	bus_frames_add_str(&f, BUS_CLIENT_TAG);
	bus_frames_add_str(&f, "echo");
	expect_client_fail(&f, true, "wrong number of frames");

	/* Envelope, raw and one more. */
	build_client(&f, false, "echo", "raw");
	bus_frames_add_str(&f, "extra");
	expect_client_fail(&f, false, "wrong number of frames");

	/* Six payload frames. */
	bus_frames_init(&f);
	bus_frames_add_str(&f, BUS_CLIENT_TAG);
	bus_frames_add_str(&f, "echo");
	for (int i = 0; i < 6; i++)
		bus_frames_add_str(&f, ENV);
	assert_int_equal(f.n, BUS_FRAMES_MAX);
	expect_client_fail(&f, false, "wrong number of frames");

	/* A frame count that fits, but extra parts were dropped on receive. */
	build_client(&f, false, "echo", NULL);
	f.extra = 1;
	expect_client_fail(&f, false, "wrong number of frames");
}

static void test_client_bad_tag(void **state)
{
	(void)state;
	static const char *const tags[] = { "RBC2", BUS_WORKER_TAG, "", "RBC", "RBC1 ", "rbc1" };
	bus_frames_t f;

	for (size_t i = 0; i < ARRAY_LEN(tags); i++) {
		bus_frames_init(&f);
		bus_frames_add_str(&f, tags[i]);
		bus_frames_add_str(&f, "echo");
		bus_frames_add_str(&f, ENV);
		expect_client_fail(&f, false, "bad tag");
	}
	/* With a routing id the tag is frame 1, not 0. */
	build_client(&f, false, "echo", "raw");
	expect_client_fail(&f, true, "bad tag");
}

static void test_client_envelope_size(void **state)
{
	(void)state;
	bus_frames_t f;
	bus_msg_t m;
	const char *why = NULL;

	bus_frames_init(&f);
	bus_frames_add_str(&f, BUS_CLIENT_TAG);
	bus_frames_add_str(&f, "echo");
	bus_frames_add(&f, NULL, 0);
	expect_client_fail(&f, false, "empty envelope");

	bus_frames_init(&f);
	bus_frames_add_str(&f, BUS_CLIENT_TAG);
	bus_frames_add_str(&f, "echo");
	add_fill(&f, BUS_ENVELOPE_MAX, '{');
	assert_int_equal(bus_parse_client(&f, false, &m, &why), 0);
	bus_frames_close(&f);

	bus_frames_init(&f);
	bus_frames_add_str(&f, BUS_CLIENT_TAG);
	bus_frames_add_str(&f, "echo");
	add_fill(&f, BUS_ENVELOPE_MAX + 1, '{');
	expect_client_fail(&f, false, "too large");
}

static void test_client_raw_size(void **state)
{
	(void)state;
	bus_frames_t f;
	bus_msg_t m;
	const char *why = NULL;

	build_client(&f, false, "echo", NULL);
	add_fill(&f, BUS_RAW_MAX, 'r');
	assert_int_equal(bus_parse_client(&f, false, &m, &why), 0);
	assert_int_equal(m.raw, 3);
	bus_frames_close(&f);

	build_client(&f, true, "echo", NULL);
	add_fill(&f, BUS_RAW_MAX + 1, 'r');
	expect_client_fail(&f, true, "raw frame too large");
}

static void test_client_bad_service(void **state)
{
	(void)state;
	static const char *const bad[] = { "", "Echo", "1abc", "a b", ".control", "echo/x" };
	bus_frames_t f;

	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		build_client(&f, false, bad[i], NULL);
		expect_client_fail(&f, false, "bad service name");
		build_client(&f, true, bad[i], "raw");
		expect_client_fail(&f, true, "bad service name");
	}
}

/* ---- service names ---------------------------------------------------------------- */

static void test_service_names(void **state)
{
	(void)state;
	static const struct {
		const char *name;
		bool ok;
	} cases[] = {
		{ "echo", true },
		{ "a", true },
		{ "smtp-in", true },
		{ "a-1", true },
		{ "x.control", true },
		{ "echo.control", true },
		{ "", false },
		{ "Echo", false },
		{ "1abc", false },
		{ "-abc", false },
		{ "a b", false },
		{ "echo_x", false },
		{ "echo.", false },
		{ ".control", false },
		{ "echo.Control", false },
		{ "echo.controlx", false },
		{ "echo.control.control", false },
		{ "echo.stats", false },
		{ "*", false },
		{ "*.control", false },
	};
	char name[64];

	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		const char *s = cases[i].name;
		if (bus_service_name_ok(s, strlen(s)) != cases[i].ok)
			fail_msg("bus_service_name_ok(\"%s\") != %d", s, cases[i].ok);
	}

	/* Length: BUS_SERVICE_MAX (48) counts ".control" too. */
	memset(name, 'a', sizeof name);
	assert_true(bus_service_name_ok(name, BUS_SERVICE_MAX));
	assert_false(bus_service_name_ok(name, BUS_SERVICE_MAX + 1));
	memcpy(name + BUS_SERVICE_MAX - 8, ".control", 8);
	assert_true(bus_service_name_ok(name, BUS_SERVICE_MAX));
	memset(name, 'a', sizeof name);
	memcpy(name + BUS_SERVICE_MAX + 1 - 8, ".control", 8);
	assert_false(bus_service_name_ok(name, BUS_SERVICE_MAX + 1));

	/* The length given is what counts, not a NUL. */
	assert_true(bus_service_name_ok("echo.control", 4));
	assert_false(bus_service_name_ok("ec\0ho", 5));
}

/* ---- worker protocol ---------------------------------------------------------------- */

static void test_worker_ready(void **state)
{
	(void)state;
	bus_frames_t f;
	bus_msg_t m;
	const char *why = NULL;

	build_worker(&f, false, BUS_W_READY);
	bus_frames_add_str(&f, "echo");
	bus_frames_add_str(&f, "{\"credit\":64}");
	assert_int_equal(f.n, 4);
	assert_int_equal(bus_parse_worker(&f, false, &m, &why), 0);
	assert_int_equal(m.rid, -1);
	assert_int_equal(m.cmd, BUS_W_READY);
	assert_int_equal(m.service, 2);
	assert_int_equal(m.info, 3);
	assert_int_equal(m.env, -1);
	assert_int_equal(m.raw, -1);
	bus_frames_close(&f);

	build_worker(&f, true, BUS_W_READY);
	bus_frames_add_str(&f, "echo.control");
	bus_frames_add_str(&f, "{}");
	assert_int_equal(bus_parse_worker(&f, true, &m, &why), 0);
	assert_int_equal(m.rid, 0);
	assert_int_equal(m.cmd, BUS_W_READY);
	assert_int_equal(m.service, 3);
	assert_int_equal(m.info, 4);
	bus_frames_close(&f);

	/* Missing info. */
	build_worker(&f, false, BUS_W_READY);
	bus_frames_add_str(&f, "echo");
	expect_worker_fail(&f, false, "READY needs service and info");

	/* One frame too many. */
	build_worker(&f, false, BUS_W_READY);
	bus_frames_add_str(&f, "echo");
	bus_frames_add_str(&f, "{}");
	bus_frames_add_str(&f, "{}");
	expect_worker_fail(&f, false, "READY needs service and info");

	build_worker(&f, false, BUS_W_READY);
	bus_frames_add_str(&f, "Echo");
	bus_frames_add_str(&f, "{}");
	expect_worker_fail(&f, false, "bad service name");

	build_worker(&f, false, BUS_W_READY);
	bus_frames_add_str(&f, "echo");
	add_fill(&f, 4096, ' ');
	assert_int_equal(bus_parse_worker(&f, false, &m, &why), 0);
	bus_frames_close(&f);

	build_worker(&f, false, BUS_W_READY);
	bus_frames_add_str(&f, "echo");
	add_fill(&f, 4097, ' ');
	expect_worker_fail(&f, false, "READY info too large");
}

static void test_worker_request_reply(void **state)
{
	(void)state;
	static const unsigned char cmds[] = { BUS_W_REQUEST, BUS_W_REPLY };
	bus_frames_t f;
	bus_msg_t m;
	const char *why = NULL;

	for (size_t i = 0; i < ARRAY_LEN(cmds); i++) {
		build_worker(&f, false, cmds[i]);
		bus_frames_add_str(&f, "ticket#7");
		bus_frames_add_str(&f, ENV);
		assert_int_equal(bus_parse_worker(&f, false, &m, &why), 0);
		assert_int_equal(m.cmd, cmds[i]);
		assert_int_equal(m.ticket, 2);
		assert_int_equal(m.env, 3);
		assert_int_equal(m.raw, -1);
		assert_int_equal(m.service, -1);
		bus_frames_close(&f);

		build_worker(&f, true, cmds[i]);
		bus_frames_add_str(&f, "ticket#7");
		bus_frames_add_str(&f, ENV);
		bus_frames_add_str(&f, "raw");
		assert_int_equal(bus_parse_worker(&f, true, &m, &why), 0);
		assert_int_equal(m.rid, 0);
		assert_int_equal(m.ticket, 3);
		assert_int_equal(m.env, 4);
		assert_int_equal(m.raw, 5);
		bus_frames_close(&f);

		/* No envelope. */
		build_worker(&f, false, cmds[i]);
		bus_frames_add_str(&f, "ticket#7");
		expect_worker_fail(&f, false, "wrong number of frames");

		/* Envelope, raw and one more. */
		build_worker(&f, false, cmds[i]);
		bus_frames_add_str(&f, "ticket#7");
		bus_frames_add_str(&f, ENV);
		bus_frames_add_str(&f, "raw");
		bus_frames_add_str(&f, "more");
		expect_worker_fail(&f, false, "wrong number of frames");

		build_worker(&f, false, cmds[i]);
		bus_frames_add(&f, NULL, 0);
		bus_frames_add_str(&f, ENV);
		expect_worker_fail(&f, false, "bad ticket");

		build_worker(&f, false, cmds[i]);
		add_fill(&f, BUS_TICKET_LEN + 1, 'a');
		bus_frames_add_str(&f, ENV);
		expect_worker_fail(&f, false, "bad ticket");

		build_worker(&f, false, cmds[i]);
		add_fill(&f, BUS_TICKET_LEN - 1, 'a');
		bus_frames_add_str(&f, ENV);
		expect_worker_fail(&f, false, "bad ticket");

		build_worker(&f, false, cmds[i]);
		bus_frames_add_str(&f, "ticket#7");
		bus_frames_add(&f, NULL, 0);
		expect_worker_fail(&f, false, "empty envelope");

		build_worker(&f, false, cmds[i]);
		bus_frames_add_str(&f, "ticket#7");
		bus_frames_add_str(&f, ENV);
		add_fill(&f, BUS_RAW_MAX + 1, 'r');
		expect_worker_fail(&f, false, "raw frame too large");
	}
}

static void test_worker_commands(void **state)
{
	(void)state;
	bus_frames_t f;
	bus_msg_t m;
	const char *why = NULL;

	build_worker(&f, false, BUS_W_HEARTBEAT);
	assert_int_equal(bus_parse_worker(&f, false, &m, &why), 0);
	assert_int_equal(m.cmd, BUS_W_HEARTBEAT);
	bus_frames_close(&f);

	build_worker(&f, true, BUS_W_DISCONNECT);
	assert_int_equal(bus_parse_worker(&f, true, &m, &why), 0);
	assert_int_equal(m.cmd, BUS_W_DISCONNECT);
	assert_int_equal(m.rid, 0);
	bus_frames_close(&f);

	build_worker(&f, false, BUS_W_HEARTBEAT);
	bus_frames_add_str(&f, "extra");
	expect_worker_fail(&f, false, "wrong number of frames");

	/* DISCONNECT may carry one reason frame (why busd refused us), <= 512. */
	build_worker(&f, false, BUS_W_DISCONNECT);
	bus_frames_add_str(&f, "role echo may not register smtpd");
	assert_int_equal(bus_parse_worker(&f, false, &m, &why), 0);
	assert_int_equal(m.cmd, BUS_W_DISCONNECT);
	assert_int_equal(m.info, 2);
	bus_frames_close(&f);

	build_worker(&f, true, BUS_W_DISCONNECT);
	add_fill(&f, 512, 'r');
	assert_int_equal(bus_parse_worker(&f, true, &m, &why), 0);
	assert_int_equal(m.info, 3);
	bus_frames_close(&f);

	build_worker(&f, false, BUS_W_DISCONNECT);
	add_fill(&f, 513, 'r');
	expect_worker_fail(&f, false, "wrong number of frames");

	build_worker(&f, false, BUS_W_DISCONNECT);
	bus_frames_add_str(&f, "reason");
	bus_frames_add_str(&f, "extra");
	expect_worker_fail(&f, false, "wrong number of frames");

	/* Without a reason, info stays absent. */
	build_worker(&f, false, BUS_W_DISCONNECT);
	assert_int_equal(bus_parse_worker(&f, false, &m, &why), 0);
	assert_int_equal(m.info, -1);
	bus_frames_close(&f);

	build_worker(&f, false, 9);
	expect_worker_fail(&f, false, "unknown worker command");
	build_worker(&f, false, 0);
	expect_worker_fail(&f, false, "unknown worker command");

	bus_frames_init(&f);
	bus_frames_add_str(&f, BUS_WORKER_TAG);
	bus_frames_add(&f, "\x04\x00", 2);
	expect_worker_fail(&f, false, "bad command frame");

	bus_frames_init(&f);
	bus_frames_add_str(&f, BUS_WORKER_TAG);
	bus_frames_add(&f, NULL, 0);
	expect_worker_fail(&f, false, "bad command frame");

	bus_frames_init(&f);
	bus_frames_add_str(&f, BUS_CLIENT_TAG);
	bus_frames_add_byte(&f, BUS_W_HEARTBEAT);
	expect_worker_fail(&f, false, "bad tag");

	bus_frames_init(&f);
	bus_frames_add_str(&f, BUS_WORKER_TAG);
	expect_worker_fail(&f, false, "wrong number of frames");

	build_worker(&f, false, BUS_W_HEARTBEAT);
	f.extra = 2;
	expect_worker_fail(&f, false, "wrong number of frames");
}

/* ---- events ----------------------------------------------------------------------------- */

static void test_events(void **state)
{
	(void)state;
	bus_frames_t f;
	bus_msg_t m;
	const char *why = NULL;

	bus_frames_init(&f);
	bus_frames_add_str(&f, "echo.event.fired");
	bus_frames_add_str(&f, ENV);
	assert_int_equal(bus_parse_event(&f, &m, &why), 0);
	assert_int_equal(m.rid, -1);
	assert_int_equal(m.env, 1);
	assert_int_equal(m.raw, -1);
	bus_frames_close(&f);

	bus_frames_init(&f);
	bus_frames_add_str(&f, "echo.event.fired");
	bus_frames_add_str(&f, ENV);
	bus_frames_add_str(&f, "raw");
	assert_int_equal(bus_parse_event(&f, &m, &why), 0);
	assert_int_equal(m.env, 1);
	assert_int_equal(m.raw, 2);
	bus_frames_close(&f);

	bus_frames_init(&f);
	bus_frames_add(&f, NULL, 0);
	bus_frames_add_str(&f, ENV);
	expect_event_fail(&f, "bad topic frame");

	bus_frames_init(&f);
	add_fill(&f, 129, 't');
	bus_frames_add_str(&f, ENV);
	expect_event_fail(&f, "bad topic frame");

	bus_frames_init(&f);
	bus_frames_add_str(&f, "echo.event.fired");
	expect_event_fail(&f, "wrong number of frames");

	bus_frames_init(&f);
	bus_frames_add_str(&f, "echo.event.fired");
	bus_frames_add(&f, NULL, 0);
	expect_event_fail(&f, "empty envelope");

	bus_frames_init(&f);
	bus_frames_add_str(&f, "echo.event.fired");
	bus_frames_add_str(&f, ENV);
	bus_frames_add_str(&f, "raw");
	bus_frames_add_str(&f, "more");
	expect_event_fail(&f, "wrong number of frames");
}

#define ZTEST(f) cmocka_unit_test_setup_teardown(f, zfx_setup, zfx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_build_frames),
		cmocka_unit_test(test_frames_move),
		cmocka_unit_test(test_frame_str),
		ZTEST(test_roundtrip),
		ZTEST(test_recv_too_many_parts),
		cmocka_unit_test(test_client_ok),
		cmocka_unit_test(test_client_frame_count),
		cmocka_unit_test(test_client_bad_tag),
		cmocka_unit_test(test_client_envelope_size),
		cmocka_unit_test(test_client_raw_size),
		cmocka_unit_test(test_client_bad_service),
		cmocka_unit_test(test_service_names),
		cmocka_unit_test(test_worker_ready),
		cmocka_unit_test(test_worker_request_reply),
		cmocka_unit_test(test_worker_commands),
		cmocka_unit_test(test_events),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
