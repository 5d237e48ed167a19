/*
 * loop.c — see loop.h.
 *
 * One zmq_poll() over a compact array of poll items; timers in a binary
 * min-heap keyed by deadline; signals through a self-pipe written from the
 * handler (sigaction works whichever thread ZeroMQ's I/O threads leave the
 * signal to, unlike signalfd, which needs every thread to block it).
 */
#include "loop.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

struct watch {
	loop_io_fn fn;
	void *arg;
	bool dead;          /* removed during this iteration; compacted after */
};

struct loop_timer {
	int64_t deadline;
	int64_t interval;   /* 0 for one-shot */
	loop_timer_fn fn;
	void *arg;
	size_t heap_index;
};

#define LOOP_MAX_SIGNALS 65

struct loop {
	zmq_pollitem_t *items;
	struct watch *watches;
	size_t count, cap;
	bool dirty;               /* some watch is dead */
	loop_timer_t **heap;
	size_t nheap, heap_cap;
	bool running;
	bool sig_watched;         /* the signal pipe is in this loop's watches */
	int64_t now;
	struct {
		loop_signal_fn fn;
		void *arg;
	} sig[LOOP_MAX_SIGNALS];
};

static int sig_pipe[2] = { -1, -1 };

loop_t *loop_new(void)
{
	loop_t *loop = xcalloc(1, sizeof *loop);
	loop->now = now_ms();
	return loop;
}

void loop_free(loop_t **loopp)
{
	loop_t *loop = *loopp;
	if (loop == NULL)
		return;
	for (size_t i = 0; i < loop->nheap; i++)
		free(loop->heap[i]);
	free(loop->heap);
	free(loop->items);
	free(loop->watches);
	free(loop);
	*loopp = NULL;
}

static int loop_add(loop_t *loop, void *zsock, int fd, short events, loop_io_fn fn, void *arg)
{
	if (loop->count == loop->cap) {
		loop->cap = loop->cap ? loop->cap * 2 : 16;
		loop->items = xrealloc(loop->items, loop->cap * sizeof *loop->items);
		loop->watches = xrealloc(loop->watches, loop->cap * sizeof *loop->watches);
	}
	loop->items[loop->count] = (zmq_pollitem_t){ .socket = zsock, .fd = fd, .events = events };
	loop->watches[loop->count] = (struct watch){ .fn = fn, .arg = arg };
	loop->count++;
	return 0;
}

int loop_add_zsock(loop_t *loop, void *zsock, short events, loop_io_fn fn, void *arg)
{
	return loop_add(loop, zsock, -1, events, fn, arg);
}

int loop_add_fd(loop_t *loop, int fd, short events, loop_io_fn fn, void *arg)
{
	return loop_add(loop, NULL, fd, events, fn, arg);
}

static ssize_t loop_find(const loop_t *loop, void *zsock, int fd)
{
	for (size_t i = 0; i < loop->count; i++) {
		if (loop->watches[i].dead)
			continue;
		if (zsock ? loop->items[i].socket == zsock
			  : (loop->items[i].socket == NULL && loop->items[i].fd == fd))
			return (ssize_t)i;
	}
	return -1;
}

int loop_set_events(loop_t *loop, void *zsock, int fd, short events)
{
	ssize_t i = loop_find(loop, zsock, fd);
	if (i < 0)
		return -1;
	loop->items[i].events = events;
	return 0;
}

void loop_remove(loop_t *loop, void *zsock, int fd)
{
	ssize_t i = loop_find(loop, zsock, fd);
	if (i < 0)
		return;
	/* Dead entries stay in place until the end of the iteration so that
	 * indices in the running dispatch stay valid. */
	loop->watches[i].dead = true;
	loop->items[i].events = 0;
	loop->dirty = true;
}

static void loop_compact(loop_t *loop)
{
	size_t o = 0;
	for (size_t i = 0; i < loop->count; i++) {
		if (loop->watches[i].dead)
			continue;
		loop->items[o] = loop->items[i];
		loop->watches[o] = loop->watches[i];
		o++;
	}
	loop->count = o;
	loop->dirty = false;
}

/* ---- timers: binary min-heap ------------------------------------------ */

static void heap_swap(loop_t *loop, size_t a, size_t b)
{
	loop_timer_t *t = loop->heap[a];
	loop->heap[a] = loop->heap[b];
	loop->heap[b] = t;
	loop->heap[a]->heap_index = a;
	loop->heap[b]->heap_index = b;
}

static void heap_up(loop_t *loop, size_t i)
{
	while (i > 0) {
		size_t parent = (i - 1) / 2;
		if (loop->heap[parent]->deadline <= loop->heap[i]->deadline)
			break;
		heap_swap(loop, i, parent);
		i = parent;
	}
}

static void heap_down(loop_t *loop, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < loop->nheap && loop->heap[l]->deadline < loop->heap[m]->deadline)
			m = l;
		if (r < loop->nheap && loop->heap[r]->deadline < loop->heap[m]->deadline)
			m = r;
		if (m == i)
			return;
		heap_swap(loop, i, m);
		i = m;
	}
}

static void heap_push(loop_t *loop, loop_timer_t *t)
{
	if (loop->nheap == loop->heap_cap) {
		loop->heap_cap = loop->heap_cap ? loop->heap_cap * 2 : 16;
		loop->heap = xrealloc(loop->heap, loop->heap_cap * sizeof *loop->heap);
	}
	t->heap_index = loop->nheap;
	loop->heap[loop->nheap++] = t;
	heap_up(loop, t->heap_index);
}

static void heap_remove(loop_t *loop, loop_timer_t *t)
{
	size_t i = t->heap_index;
	loop->nheap--;
	if (i != loop->nheap) {
		loop->heap[i] = loop->heap[loop->nheap];
		loop->heap[i]->heap_index = i;
		heap_down(loop, i);
		heap_up(loop, i);
	}
}

loop_timer_t *loop_timer_add(loop_t *loop, int64_t ms, bool repeat, loop_timer_fn fn, void *arg)
{
	loop_timer_t *t = xcalloc(1, sizeof *t);
	if (ms < 0)
		ms = 0;
	t->deadline = now_ms() + ms;
	t->interval = repeat ? (ms > 0 ? ms : 1) : 0;
	t->fn = fn;
	t->arg = arg;
	heap_push(loop, t);
	return t;
}

void loop_timer_cancel(loop_t *loop, loop_timer_t **tp)
{
	loop_timer_t *t = *tp;
	if (t == NULL)
		return;
	heap_remove(loop, t);
	free(t);
	*tp = NULL;
}

/* Runs every due timer; a repeating timer is re-armed before its callback
 * so that the callback may cancel it. */
static void loop_run_timers(loop_t *loop)
{
	int budget = 10000;
	while (loop->nheap > 0 && loop->heap[0]->deadline <= loop->now && budget-- > 0) {
		loop_timer_t *t = loop->heap[0];
		loop_timer_fn fn = t->fn;
		void *arg = t->arg;
		if (t->interval > 0) {
			t->deadline = loop->now + t->interval;
			heap_down(loop, 0);
		} else {
			heap_remove(loop, t);
			free(t);
		}
		fn(loop, arg);
	}
}

/* ---- signals ------------------------------------------------------------ */

static void loop_sig_handler(int signo)
{
	int saved = errno;
	unsigned char b = (unsigned char)signo;
	ssize_t w = write(sig_pipe[1], &b, 1);
	(void)w;
	errno = saved;
}

static void loop_sig_ready(loop_t *loop, void *zsock, int fd, short revents, void *arg)
{
	(void)zsock; (void)revents; (void)arg;
	unsigned char buf[64];
	ssize_t n = read(fd, buf, sizeof buf);
	for (ssize_t i = 0; i < n; i++) {
		int s = buf[i];
		if (s < LOOP_MAX_SIGNALS && loop->sig[s].fn != NULL)
			loop->sig[s].fn(loop, s, loop->sig[s].arg);
	}
}

int loop_on_signal(loop_t *loop, int signo, loop_signal_fn fn, void *arg)
{
	if (signo <= 0 || signo >= LOOP_MAX_SIGNALS)
		return -1;
	if (sig_pipe[0] < 0 && pipe2(sig_pipe, O_NONBLOCK | O_CLOEXEC) < 0)
		return -1;
	/* The pipe is the process's; each loop that wants signals watches it. */
	if (!loop->sig_watched) {
		loop_add_fd(loop, sig_pipe[0], ZMQ_POLLIN, loop_sig_ready, NULL);
		loop->sig_watched = true;
	}
	loop->sig[signo].fn = fn;
	loop->sig[signo].arg = arg;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = loop_sig_handler;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	return sigaction(signo, &sa, NULL);
}

/* ---- running -------------------------------------------------------------- */

static long loop_poll_timeout(const loop_t *loop)
{
	if (loop->nheap == 0)
		return 1000;
	int64_t d = loop->heap[0]->deadline - now_ms();
	if (d < 0)
		return 0;
	return d > 1000 ? 1000 : (long)d;
}

int loop_run(loop_t *loop)
{
	loop->running = true;
	while (loop->running) {
		if (loop->dirty)
			loop_compact(loop);
		int rc = zmq_poll(loop->items, (int)loop->count, loop_poll_timeout(loop));
		if (rc < 0 && errno != EINTR)
			return -1;
		loop->now = now_ms();
		/* Only entries present before the callbacks run are dispatched:
		 * a callback may add watches (appended) or remove them (marked). */
		size_t n = loop->count;
		for (size_t i = 0; rc > 0 && i < n && loop->running; i++) {
			short re = loop->items[i].revents;
			if (re == 0 || loop->watches[i].dead)
				continue;
			loop->items[i].revents = 0;
			loop->watches[i].fn(loop, loop->items[i].socket, loop->items[i].fd, re,
					    loop->watches[i].arg);
		}
		loop_run_timers(loop);
	}
	return 0;
}

void loop_stop(loop_t *loop)
{
	loop->running = false;
}

int64_t loop_now(const loop_t *loop)
{
	return loop->now;
}
