/*
 * test_loop.c — cmocka unit tests for proto/loop.c: timers (order, repeat,
 * cancel, stop), fd watches (including removal from inside the callback)
 * and signals delivered from inside the loop.
 *
 * Each test gets a fixture owning a loop with a watchdog timer: if a test's
 * own stop condition never comes, the watchdog stops the loop after
 * WATCHDOG_MS and sets timed_out, so a broken loop fails instead of hanging.
 *
 * Signals: loop.c keeps one process-wide self-pipe, watched by the first
 * loop that calls loop_on_signal. test_signal must therefore be the first
 * test in this binary to call loop_on_signal (see test_signal_second_loop).
 */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "loop.h"
#include "util.h"

#define WATCHDOG_MS 5000

struct fx {
	loop_t *loop;
	bool timed_out;
	int pa[2], pb[2];    /* pipes, -1 when unused */
};

static void watchdog(loop_t *loop, void *arg)
{
	struct fx *fx = arg;
	fx->timed_out = true;
	loop_stop(loop);
}

static int fx_setup(void **state)
{
	struct fx *fx = xcalloc(1, sizeof *fx);
	*state = fx;
	fx->pa[0] = fx->pa[1] = fx->pb[0] = fx->pb[1] = -1;
	fx->loop = loop_new();
	loop_timer_add(fx->loop, WATCHDOG_MS, false, watchdog, fx);
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *fx = *state;
	loop_free(&fx->loop);
	for (int i = 0; i < 2; i++) {
		if (fx->pa[i] >= 0)
			close(fx->pa[i]);
		if (fx->pb[i] >= 0)
			close(fx->pb[i]);
	}
	free(fx);
	return 0;
}

/* Runs the loop to its stop; fails if the watchdog had to stop it. */
static void run(struct fx *fx)
{
	assert_int_equal(loop_run(fx->loop), 0);
	assert_false(fx->timed_out);
}

static void stop_cb(loop_t *loop, void *arg)
{
	(void)arg;
	loop_stop(loop);
}

/* ---- timers -------------------------------------------------------------------- */

struct order {
	int got[8];
	int n;
	int64_t at[8];
};

struct tagged {
	struct order *o;
	int tag;
};

static void record_cb(loop_t *loop, void *arg)
{
	struct tagged *t = arg;
	assert_true(t->o->n < 8);
	t->o->at[t->o->n] = loop_now(loop);
	t->o->got[t->o->n++] = t->tag;
}

static void test_timer_order(void **state)
{
	struct fx *fx = *state;
	struct order o = { .n = 0 };
	struct tagged t30 = { &o, 30 }, t10 = { &o, 10 }, t20 = { &o, 20 }, t0 = { &o, 0 };
	int64_t start = now_ms();

	loop_timer_add(fx->loop, 30, false, record_cb, &t30);
	loop_timer_add(fx->loop, 10, false, record_cb, &t10);
	loop_timer_add(fx->loop, 20, false, record_cb, &t20);
	loop_timer_add(fx->loop, 0, false, record_cb, &t0);
	loop_timer_add(fx->loop, 60, false, stop_cb, NULL);
	run(fx);

	assert_int_equal(o.n, 4);
	assert_int_equal(o.got[0], 0);
	assert_int_equal(o.got[1], 10);
	assert_int_equal(o.got[2], 20);
	assert_int_equal(o.got[3], 30);
	/* Never early. */
	assert_true(o.at[1] - start >= 10);
	assert_true(o.at[2] - start >= 20);
	assert_true(o.at[3] - start >= 30);
	assert_true(loop_now(fx->loop) - start >= 60);
}

struct rep {
	loop_timer_t *timer;
	int fires;
	int64_t at[8];
};

/* Fires five times, then cancels itself from inside its own callback. */
static void repeat_cb(loop_t *loop, void *arg)
{
	struct rep *r = arg;
	assert_true(r->fires < 8);
	r->at[r->fires++] = loop_now(loop);
	if (r->fires == 5) {
		loop_timer_cancel(loop, &r->timer);
		/* Several more periods, to see that it stays cancelled. */
		loop_timer_add(loop, 30, false, stop_cb, NULL);
	}
}

static void test_repeat_timer(void **state)
{
	struct fx *fx = *state;
	struct rep r = { .fires = 0 };

	r.timer = loop_timer_add(fx->loop, 5, true, repeat_cb, &r);
	assert_non_null(r.timer);
	run(fx);

	assert_int_equal(r.fires, 5);
	assert_null(r.timer);
	for (int i = 1; i < r.fires; i++)
		assert_true(r.at[i] - r.at[i - 1] >= 5);
}

struct cancel {
	loop_timer_t *victim;
	bool victim_fired;
};

static void victim_cb(loop_t *loop, void *arg)
{
	(void)loop;
	struct cancel *c = arg;
	c->victim_fired = true;
}

static void canceller_cb(loop_t *loop, void *arg)
{
	struct cancel *c = arg;
	loop_timer_cancel(loop, &c->victim);
}

static void test_cancel_pending(void **state)
{
	struct fx *fx = *state;
	struct cancel before = { NULL, false }, inside = { NULL, false };
	loop_timer_t *none = NULL;

	/* Cancelled before the loop runs. */
	before.victim = loop_timer_add(fx->loop, 10, false, victim_cb, &before);
	loop_timer_cancel(fx->loop, &before.victim);
	assert_null(before.victim);
	loop_timer_cancel(fx->loop, &before.victim); /* NULL is fine */
	loop_timer_cancel(fx->loop, &none);

	/* Cancelled by another timer while pending. */
	inside.victim = loop_timer_add(fx->loop, 30, false, victim_cb, &inside);
	loop_timer_add(fx->loop, 10, false, canceller_cb, &inside);
	loop_timer_add(fx->loop, 60, false, stop_cb, NULL);
	run(fx);

	assert_false(before.victim_fired);
	assert_false(inside.victim_fired);
	assert_null(inside.victim);
}

static void count_cb(loop_t *loop, void *arg)
{
	(void)loop;
	(*(int *)arg)++;
}

static void test_stop_from_timer(void **state)
{
	struct fx *fx = *state;
	int ticks = 0, after;
	int64_t start = now_ms();

	loop_timer_add(fx->loop, 1, true, count_cb, &ticks);
	loop_timer_add(fx->loop, 20, false, stop_cb, NULL);
	run(fx);
	assert_true(now_ms() - start >= 20);
	assert_true(ticks > 0);

	/* Stopped means stopped: nothing runs until loop_run again. */
	after = ticks;
	nanosleep(&(struct timespec){ .tv_nsec = 10 * 1000 * 1000 }, NULL);
	assert_int_equal(ticks, after);

	/* And it runs again, the repeating timer with it. */
	loop_timer_add(fx->loop, 20, false, stop_cb, NULL);
	run(fx);
	assert_true(ticks > after);
}

/* ---- fd watches ---------------------------------------------------------------------- */

struct rd {
	struct fx *fx;
	bool written;
	bool read_before_write;
	char buf[16];
	int calls;
};

static void writer_cb(loop_t *loop, void *arg)
{
	(void)loop;
	struct rd *r = arg;
	r->written = true;
	assert_int_equal(write(r->fx->pa[1], "hello", 5), 5);
}

static void reader_cb(loop_t *loop, void *zsock, int fd, short revents, void *arg)
{
	struct rd *r = arg;
	assert_null(zsock);
	assert_int_equal(fd, r->fx->pa[0]);
	assert_true(revents & ZMQ_POLLIN);
	if (!r->written)
		r->read_before_write = true;
	r->calls++;
	assert_int_equal(read(fd, r->buf, sizeof r->buf - 1), 5);
	loop_stop(loop);
}

static void test_fd_watch(void **state)
{
	struct fx *fx = *state;
	struct rd r = { .fx = fx };

	assert_int_equal(pipe(fx->pa), 0);
	assert_int_equal(loop_add_fd(fx->loop, fx->pa[0], ZMQ_POLLIN, reader_cb, &r), 0);
	loop_timer_add(fx->loop, 10, false, writer_cb, &r);
	run(fx);

	assert_false(r.read_before_write);
	assert_int_equal(r.calls, 1);
	assert_string_equal(r.buf, "hello");
}

struct rm {
	struct fx *fx;
	int a_calls, b_calls;
};

/* Removes its own watch without reading: a level-triggered poll would
 * call it again if the removal did not hold. */
static void remove_self_cb(loop_t *loop, void *zsock, int fd, short revents, void *arg)
{
	(void)zsock; (void)revents;
	struct rm *r = arg;
	assert_int_equal(fd, r->fx->pa[0]);
	r->a_calls++;
	loop_remove(loop, NULL, fd);
	loop_remove(loop, NULL, fd); /* twice is harmless */
}

/* Reads one byte per call. */
static void read_one_cb(loop_t *loop, void *zsock, int fd, short revents, void *arg)
{
	(void)zsock; (void)revents;
	struct rm *r = arg;
	char c;
	assert_int_equal(fd, r->fx->pb[0]);
	assert_int_equal(read(fd, &c, 1), 1);
	/* Drained: give a wrongly kept watch on A time to fire again. */
	if (++r->b_calls == 3)
		loop_timer_add(loop, 20, false, stop_cb, NULL);
}

static void test_remove_in_callback(void **state)
{
	struct fx *fx = *state;
	struct rm r = { .fx = fx };

	assert_int_equal(pipe(fx->pa), 0);
	assert_int_equal(pipe(fx->pb), 0);
	assert_int_equal(write(fx->pa[1], "a", 1), 1);
	assert_int_equal(write(fx->pb[1], "bbb", 3), 3);
	/* A is watched first, so its removal happens mid-dispatch, before B. */
	assert_int_equal(loop_add_fd(fx->loop, fx->pa[0], ZMQ_POLLIN, remove_self_cb, &r), 0);
	assert_int_equal(loop_add_fd(fx->loop, fx->pb[0], ZMQ_POLLIN, read_one_cb, &r), 0);
	run(fx);

	assert_int_equal(r.a_calls, 1);
	assert_int_equal(r.b_calls, 3);
	/* A is no longer known to the loop. */
	assert_int_equal(loop_set_events(fx->loop, NULL, fx->pa[0], ZMQ_POLLIN), -1);
	assert_int_equal(loop_set_events(fx->loop, NULL, fx->pb[0], ZMQ_POLLIN), 0);

	/* Watching A again works (its byte is still unread). */
	assert_int_equal(loop_add_fd(fx->loop, fx->pa[0], ZMQ_POLLIN, remove_self_cb, &r), 0);
	loop_timer_add(fx->loop, 30, false, stop_cb, NULL);
	run(fx);
	assert_int_equal(r.a_calls, 2);
	assert_int_equal(r.b_calls, 3);
}

/* ---- signals ----------------------------------------------------------------------------- */

struct sig {
	int signo;
	int calls;
	bool called_during_raise;
};

static void sig_cb(loop_t *loop, int signo, void *arg)
{
	struct sig *s = arg;
	s->signo = signo;
	s->calls++;
	loop_stop(loop);
}

static void raise_cb(loop_t *loop, void *arg)
{
	(void)loop;
	struct sig *s = arg;
	assert_int_equal(raise(s->signo), 0);
	/* The callback runs later, from the loop, not from the handler. */
	s->called_during_raise = s->calls > 0;
}

static void test_signal(void **state)
{
	struct fx *fx = *state;
	struct sig s = { .signo = SIGUSR1 };

	assert_int_equal(loop_on_signal(fx->loop, 0, sig_cb, &s), -1);
	assert_int_equal(loop_on_signal(fx->loop, 65, sig_cb, &s), -1);
	assert_int_equal(loop_on_signal(fx->loop, SIGUSR1, sig_cb, &s), 0);
	loop_timer_add(fx->loop, 5, false, raise_cb, &s);
	run(fx);

	assert_int_equal(s.calls, 1);
	assert_int_equal(s.signo, SIGUSR1);
	assert_false(s.called_during_raise);
}

/*
 * Regression: the self-pipe is process-wide; a loop created after another
 * was freed must still watch it and deliver its signals.
 */
static void test_signal_second_loop(void **state)
{
	struct fx *fx = *state;
	struct sig s = { .signo = SIGUSR2 };
	loop_t *first = loop_new();

	assert_int_equal(loop_on_signal(first, SIGUSR2, sig_cb, &s), 0);
	loop_free(&first);

	assert_int_equal(loop_on_signal(fx->loop, SIGUSR2, sig_cb, &s), 0);
	loop_timer_add(fx->loop, 5, false, raise_cb, &s);
	loop_timer_add(fx->loop, 300, false, stop_cb, NULL);
	run(fx);
	assert_int_equal(s.calls, 1);
}

#define FX_TEST(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		FX_TEST(test_timer_order),
		FX_TEST(test_repeat_timer),
		FX_TEST(test_cancel_pending),
		FX_TEST(test_stop_from_timer),
		FX_TEST(test_fd_watch),
		FX_TEST(test_remove_in_callback),
		FX_TEST(test_signal),            /* must stay the first to use signals */
		FX_TEST(test_signal_second_loop),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
