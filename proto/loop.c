/*
 * loop.c — see loop.h.
 *
 * epoll for everything: a plain fd is watched as itself; a ZeroMQ socket
 * through its ZMQ_FD, which only says "look at ZMQ_EVENTS" and may stay
 * quiet after an operation on the socket has consumed its signal. So each
 * iteration first asks ZMQ_EVENTS of the ZeroMQ sockets and runs the ready
 * ones, and blocks in epoll_wait only after a pass in which none was ready.
 * A socket is asked only when its ZMQ_FD fired or some ZeroMQ operation
 * happened in this thread since it was last asked (loop_zmq_used, a socket
 * callback, a timer): each ask is a getsockopt that costs libzmq a getpid
 * and a poll, and a pass woken by a TCP session alone needs none.
 * zmq_poll() builds and tears down a poller on every call, which dominated
 * busd's profile.
 *
 * Timers live in a binary min-heap keyed by deadline; signals arrive
 * through a self-pipe written from the handler (sigaction works whichever
 * thread ZeroMQ's I/O threads leave the signal to, unlike signalfd, which
 * needs every thread to block it).
 */
#include "loop.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>
#include <zmq.h>

struct watch {
	void *zsock;        /* NULL for a plain fd */
	int fd;             /* the fd, or the socket's ZMQ_FD */
	short events;       /* ZMQ_POLLIN | ZMQ_POLLOUT wanted */
	loop_io_fn fn;
	void *arg;
	bool dead;          /* removed; freed after the iteration */
	bool fired;         /* ZeroMQ: epoll reported the ZMQ_FD since the last ask */
	uint64_t asked;     /* ZeroMQ: zmq_ops when ZMQ_EVENTS was last asked (0: never) */
};

/* ZeroMQ operations in this thread so far (loop_zmq_used); starts at 1 so
 * that a new watch (asked 0) is asked on the next pass. */
static _Thread_local uint64_t zmq_ops = 1;

void loop_zmq_used(void)
{
	zmq_ops++;
}

struct loop_timer {
	int64_t deadline;
	int64_t interval;   /* 0 for one-shot */
	loop_timer_fn fn;
	void *arg;
	size_t heap_index;
};

#define LOOP_MAX_SIGNALS 65
#define LOOP_MAX_EVENTS 64

struct loop {
	int epfd;
	struct watch **watches;   /* stable pointers: epoll data refers to them */
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
	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (loop->epfd < 0)
		abort();  /* out of fds at start-up: nothing sensible to do */
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
	for (size_t i = 0; i < loop->count; i++)
		free(loop->watches[i]);
	free(loop->heap);
	free(loop->watches);
	close(loop->epfd);
	free(loop);
	*loopp = NULL;
}

static uint32_t epoll_bits(const struct watch *w)
{
	if (w->zsock != NULL)
		return EPOLLIN;  /* ZMQ_FD signals both directions as "readable" */
	return ((w->events & ZMQ_POLLIN) ? EPOLLIN : 0) | ((w->events & ZMQ_POLLOUT) ? EPOLLOUT : 0);
}

static int loop_add(loop_t *loop, void *zsock, int fd, short events, loop_io_fn fn, void *arg)
{
	struct watch *w = xcalloc(1, sizeof *w);
	w->zsock = zsock;
	w->fd = fd;
	w->events = events;
	w->fn = fn;
	w->arg = arg;
	if (zsock != NULL) {
		size_t sz = sizeof w->fd;
		if (zmq_getsockopt(zsock, ZMQ_FD, &w->fd, &sz) < 0) {
			free(w);
			return -1;
		}
	}
	struct epoll_event ev = { .events = epoll_bits(w), .data.ptr = w };
	if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, w->fd, &ev) < 0) {
		free(w);
		return -1;
	}
	if (loop->count == loop->cap) {
		loop->cap = loop->cap ? loop->cap * 2 : 16;
		loop->watches = xrealloc(loop->watches, loop->cap * sizeof *loop->watches);
	}
	loop->watches[loop->count++] = w;
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

static struct watch *loop_find(const loop_t *loop, void *zsock, int fd)
{
	for (size_t i = 0; i < loop->count; i++) {
		struct watch *w = loop->watches[i];
		if (w->dead)
			continue;
		if (zsock ? w->zsock == zsock : (w->zsock == NULL && w->fd == fd))
			return w;
	}
	return NULL;
}

int loop_set_events(loop_t *loop, void *zsock, int fd, short events)
{
	struct watch *w = loop_find(loop, zsock, fd);
	if (w == NULL)
		return -1;
	w->events = events;
	if (zsock != NULL) {
		w->asked = 0;   /* ask on the next pass */
		return 0;
	}
	struct epoll_event ev = { .events = epoll_bits(w), .data.ptr = w };
	return epoll_ctl(loop->epfd, EPOLL_CTL_MOD, w->fd, &ev);
}

void loop_remove(loop_t *loop, void *zsock, int fd)
{
	struct watch *w = loop_find(loop, zsock, fd);
	if (w == NULL)
		return;
	/* The struct stays until the end of the iteration: events already
	 * fetched from epoll may still point at it. */
	epoll_ctl(loop->epfd, EPOLL_CTL_DEL, w->fd, NULL);
	w->dead = true;
	loop->dirty = true;
}

static void loop_compact(loop_t *loop)
{
	size_t o = 0;
	for (size_t i = 0; i < loop->count; i++) {
		if (loop->watches[i]->dead) {
			free(loop->watches[i]);
			continue;
		}
		loop->watches[o++] = loop->watches[i];
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
 * so that the callback may cancel it. True if any ran. */
static bool loop_run_timers(loop_t *loop)
{
	int budget = 10000;
	bool ran = false;
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
		ran = true;
	}
	if (ran)
		zmq_ops++;  /* timers send (heartbeats, retries) and reconnect */
	return ran;
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

static int loop_wait_ms(const loop_t *loop)
{
	if (loop->nheap == 0)
		return 1000;
	int64_t d = loop->heap[0]->deadline - now_ms();
	if (d < 0)
		return 0;
	return d > 1000 ? 1000 : (int)d;
}

/* Runs every ZeroMQ socket whose ZMQ_EVENTS match; true if any ran. Only
 * watches present before the pass are visited (callbacks may add more). */
static bool loop_zmq_pass(loop_t *loop)
{
	bool ran = false;
	size_t n = loop->count;
	for (size_t i = 0; i < n && loop->running; i++) {
		struct watch *w = loop->watches[i];
		int ev = 0;
		size_t sz = sizeof ev;
		if (w->dead || w->zsock == NULL)
			continue;
		if (!w->fired && w->asked == zmq_ops)
			continue;  /* nothing can have changed its ZMQ_EVENTS */
		w->fired = false;
		w->asked = zmq_ops;
		if (zmq_getsockopt(w->zsock, ZMQ_EVENTS, &ev, &sz) < 0 || !(ev & w->events))
			continue;
		w->fn(loop, w->zsock, -1, (short)(ev & w->events), w->arg);
		zmq_ops++;  /* it received (and maybe sent) on its socket, maybe others */
		ran = true;
	}
	return ran;
}

/* Runs the plain fds epoll reported. */
static void loop_fd_events(loop_t *loop, const struct epoll_event *evs, int n)
{
	for (int i = 0; i < n && loop->running; i++) {
		struct watch *w = evs[i].data.ptr;
		if (w->zsock != NULL)
			w->fired = true;  /* a ZMQ_FD only means "ask ZMQ_EVENTS": the next pass does */
		if (w->dead || w->zsock != NULL)
			continue;
		short re = 0;
		if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP))
			re |= ZMQ_POLLIN;
		if (evs[i].events & EPOLLOUT)
			re |= ZMQ_POLLOUT;
		if (evs[i].events & (EPOLLERR | EPOLLHUP))
			re |= ZMQ_POLLERR;
		re &= (short)(w->events | ZMQ_POLLERR);
		if (re != 0)
			w->fn(loop, NULL, w->fd, re, w->arg);
	}
}

int loop_run(loop_t *loop)
{
	struct epoll_event evs[LOOP_MAX_EVENTS];
	bool ran = false;
	loop->running = true;
	while (loop->running) {
		/* After a pass that ran callbacks, look again before sleeping:
		 * those callbacks may have consumed a socket's ZMQ_FD signal. */
		int n = epoll_wait(loop->epfd, evs, LOOP_MAX_EVENTS, ran ? 0 : loop_wait_ms(loop));
		if (n < 0 && errno != EINTR)
			return -1;
		loop->now = now_ms();
		if (n > 0)
			loop_fd_events(loop, evs, n);
		ran = loop_zmq_pass(loop);
		/* A timer may send on a socket too (heartbeats, retries). */
		ran |= loop_run_timers(loop);
		if (loop->dirty)
			loop_compact(loop);
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
