/*
 * test_zmq_link.c — the libzmq Roost is linked with works for the bus (a
 * context, ipc:// both ways) and, with ZMQ_LINK=static, the parts that
 * proto/static/zmq_unused.c answers fail cleanly: pgm:// and epgm://
 * endpoints are refused with EINVAL, a GSSAPI handshake fails and delivers
 * nothing. In the shared build those parts are Debian's real libraries
 * (they would look for multicast interfaces and Kerberos): not tested here.
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
#include <unistd.h>
#include <zmq.h>

/* A context and a temp directory for the ipc sockets. */
struct fx {
	void *ctx;
	char dir[64];
	char ep[128];
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof f->dir, "/tmp/roost-zl.XXXXXX");
	if (mkdtemp(f->dir) == NULL) {
		free(f);
		return -1;
	}
	snprintf(f->ep, sizeof f->ep, "ipc://%s/s", f->dir);
	f->ctx = zmq_ctx_new();
	*state = f;
	return f->ctx != NULL ? 0 : -1;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	zmq_ctx_term(f->ctx);
	char path[128];
	snprintf(path, sizeof path, "%s/s", f->dir);
	unlink(path);
	rmdir(f->dir);
	free(f);
	return 0;
}

static void *sock(struct fx *f, int type)
{
	void *s = zmq_socket(f->ctx, type);
	assert_non_null(s);
	int v = 0;
	zmq_setsockopt(s, ZMQ_LINGER, &v, sizeof v);
	v = 2000;
	zmq_setsockopt(s, ZMQ_RCVTIMEO, &v, sizeof v);
	return s;
}

/* What the bus does: a DEALER and a ROUTER over ipc, a reply routed back. */
static void test_ipc_round_trip(void **state)
{
	struct fx *f = *state;
	void *r = sock(f, ZMQ_ROUTER), *d = sock(f, ZMQ_DEALER);
	assert_int_equal(zmq_bind(r, f->ep), 0);
	assert_int_equal(zmq_connect(d, f->ep), 0);
	assert_int_equal(zmq_send(d, "ping", 4, 0), 4);
	char id[256], buf[16];
	int idlen = zmq_recv(r, id, sizeof id, 0);
	assert_true(idlen > 0);
	assert_int_equal(zmq_recv(r, buf, sizeof buf, 0), 4);
	assert_memory_equal(buf, "ping", 4);
	assert_int_equal(zmq_send(r, id, (size_t)idlen, ZMQ_SNDMORE), idlen);
	assert_int_equal(zmq_send(r, "pong", 4, 0), 4);
	assert_int_equal(zmq_recv(d, buf, sizeof buf, 0), 4);
	assert_memory_equal(buf, "pong", 4);
	zmq_close(d);
	zmq_close(r);
}

#ifdef ROOST_ZMQ_STATIC
/* libzmq resolves pgm addresses before it makes a session: the stub's
 * "no such interface" comes back as EINVAL, for connect and bind alike. */
static void test_pgm_refused(void **state)
{
	struct fx *f = *state;
	void *p = sock(f, ZMQ_PUB), *s = sock(f, ZMQ_SUB);
	errno = 0;
	assert_int_equal(zmq_connect(p, "epgm://127.0.0.1;239.192.1.1:5555"), -1);
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_int_equal(zmq_bind(s, "pgm://127.0.0.1;239.192.1.1:5555"), -1);
	assert_int_equal(errno, EINVAL);
	zmq_close(s);
	zmq_close(p);
}

/* A GSSAPI server and client: the handshake cannot start, nothing arrives,
 * and both sockets close normally. */
static void test_gssapi_fails(void **state)
{
	struct fx *f = *state;
	void *srv = sock(f, ZMQ_PULL), *cli = sock(f, ZMQ_PUSH);
	int one = 1, t = 300;
	assert_int_equal(zmq_setsockopt(srv, ZMQ_GSSAPI_SERVER, &one, sizeof one), 0);
	assert_int_equal(zmq_setsockopt(srv, ZMQ_RCVTIMEO, &t, sizeof t), 0);
	assert_int_equal(zmq_setsockopt(cli, ZMQ_GSSAPI_SERVICE_PRINCIPAL, "roost", 5), 0);
	assert_int_equal(zmq_bind(srv, f->ep), 0);
	assert_int_equal(zmq_connect(cli, f->ep), 0);
	zmq_send(cli, "x", 1, ZMQ_DONTWAIT);   /* queued at most: no peer is ever ready */
	char buf[4];
	errno = 0;
	assert_int_equal(zmq_recv(srv, buf, sizeof buf, 0), -1);
	assert_int_equal(errno, EAGAIN);
	zmq_close(cli);
	zmq_close(srv);
}
#endif

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_ipc_round_trip, setup, teardown),
#ifdef ROOST_ZMQ_STATIC
		cmocka_unit_test_setup_teardown(test_pgm_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gssapi_fails, setup, teardown),
#endif
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
