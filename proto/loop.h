/*
 * loop.h — the single-threaded event loop every service runs: ZeroMQ
 * sockets, plain file descriptors (TCP sessions), timers and signals, all
 * through one zmq_poll().
 *
 * Ownership: the loop never owns the sockets or fds it watches; callers
 * remove them before closing them. Timers are owned by the loop until they
 * fire (one-shot) or are cancelled.
 */
#ifndef ROOST_LOOP_H
#define ROOST_LOOP_H

#include <stdbool.h>
#include <stdint.h>

typedef struct loop loop_t;
typedef struct loop_timer loop_timer_t;

/* Called when a watched ZeroMQ socket or fd is ready (revents: ZMQ_POLLIN...). */
typedef void (*loop_io_fn)(loop_t *loop, void *zsock, int fd, short revents, void *arg);
typedef void (*loop_timer_fn)(loop_t *loop, void *arg);
typedef void (*loop_signal_fn)(loop_t *loop, int signo, void *arg);

loop_t *loop_new(void);
void loop_free(loop_t **loop);

/* Watches a ZeroMQ socket for events (ZMQ_POLLIN and/or ZMQ_POLLOUT). */
int loop_add_zsock(loop_t *loop, void *zsock, short events, loop_io_fn fn, void *arg);
/* Watches a file descriptor. */
int loop_add_fd(loop_t *loop, int fd, short events, loop_io_fn fn, void *arg);
/* Changes the events watched on a socket or fd (zsock NULL for an fd). */
int loop_set_events(loop_t *loop, void *zsock, int fd, short events);
/* Stops watching; safe to call from inside a callback. */
void loop_remove(loop_t *loop, void *zsock, int fd);

/* Calls fn after ms milliseconds, then every ms if repeat. A one-shot timer
 * is freed before its callback runs: do not cancel it from there. */
loop_timer_t *loop_timer_add(loop_t *loop, int64_t ms, bool repeat, loop_timer_fn fn, void *arg);
/* Cancels a timer and nulls the caller's pointer; NULL is fine. */
void loop_timer_cancel(loop_t *loop, loop_timer_t **timer);

/*
 * Delivers signo (SIGTERM, SIGINT, SIGHUP, SIGCHLD...) to fn from inside the
 * loop, never from signal context.
 */
int loop_on_signal(loop_t *loop, int signo, loop_signal_fn fn, void *arg);

/*
 * Says that this thread just operated on a ZeroMQ socket (send, receive,
 * connect...): such an operation may consume the signal on the socket's
 * ZMQ_FD, so before sleeping the loop asks ZMQ_EVENTS of its sockets again.
 * frame.c calls it on every send and receive; code that calls libzmq
 * directly outside a socket's own callback or a timer must call it too.
 * (Without any such operation, and with no event on a socket's ZMQ_FD, the
 * loop does not ask: each ask costs libzmq two system calls.)
 */
void loop_zmq_used(void);

/* Runs until loop_stop(); returns 0, or -1 if polling failed. */
int loop_run(loop_t *loop);
void loop_stop(loop_t *loop);

/* The time the current iteration started (monotonic ms): cheap "now". */
int64_t loop_now(const loop_t *loop);

#endif
