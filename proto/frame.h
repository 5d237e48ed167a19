/*
 * frame.h — multipart ZeroMQ messages: receiving, building, sending, and
 * checking the broker frames of the two bus protocols. This file and
 * frame.c are the only code that touches ZeroMQ frames (zmq_msg_t).
 *
 *   client -> busd  [tag RBC1][service][envelope][raw?]
 *   busd -> client  [tag RBC1][service][envelope][raw?]
 *   worker <-> busd [tag RBW1][cmd][...]   (see enum bus_wcmd in bus.h;
 *                   REQUEST and REPLY carry an 8-byte ticket, not an address)
 *   events          [type][envelope][raw?]
 *
 * A ROUTER socket prepends the peer's routing id as frame 0 on receive and
 * takes it as frame 0 on send; has_rid says whether it is there.
 */
#ifndef ROOST_FRAME_H
#define ROOST_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <zmq.h>

#define BUS_FRAMES_MAX 8

typedef struct bus_frames {
	zmq_msg_t part[BUS_FRAMES_MAX];
	int n;          /* frames held */
	int extra;      /* frames received beyond BUS_FRAMES_MAX, discarded */
	size_t bytes;   /* total size of all frames received */
} bus_frames_t;

void bus_frames_init(bus_frames_t *f);
/* Releases every frame; the struct may be reused after bus_frames_init. */
void bus_frames_close(bus_frames_t *f);

/* Receives one whole multipart message without blocking: 0, or -1 (errno
 * EAGAIN when nothing is waiting). Frames past BUS_FRAMES_MAX are counted
 * in extra and dropped, so a peer cannot make us hold unbounded parts. */
int bus_frames_recv(void *sock, bus_frames_t *f);
/*
 * Receives up to max whole messages from sock and hands each to fn, which
 * borrows the frames (they are closed after it returns); fn returns false
 * to stop early (e.g. the socket was closed). A bounded batch keeps the
 * loop fair to its other sockets. Returns the number handled.
 */
typedef bool (*bus_frames_fn)(bus_frames_t *f, void *arg);
int bus_drain(void *sock, int max, bus_frames_fn fn, void *arg);

/* Sends every frame (consuming them) with ZMQ_DONTWAIT: 0 or -1 (errno). */
int bus_frames_send(void *sock, bus_frames_t *f);

/* Appends a copy of data / a string / a one-byte command. */
void bus_frames_add(bus_frames_t *f, const void *data, size_t len);
void bus_frames_add_str(bus_frames_t *f, const char *s);
void bus_frames_add_byte(bus_frames_t *f, unsigned char b);
/* Appends data (malloc'd, len > 0) without copying it: ZeroMQ free()s it
 * when the last copy of the frame is closed, which may happen on its I/O
 * thread. */
void bus_frames_add_owned(bus_frames_t *f, void *data, size_t len);
/* Appends frame i of src without copying the bytes (zmq_msg_copy). */
void bus_frames_add_ref(bus_frames_t *f, const bus_frames_t *src, int i);

/* Moves every frame of src to dst (dst must be empty); src ends empty. */
void bus_frames_move(bus_frames_t *dst, bus_frames_t *src);

const void *bus_frame_data(const bus_frames_t *f, int i);
size_t bus_frame_size(const bus_frames_t *f, int i);
/* True if frame i holds exactly the string s. */
bool bus_frame_is(const bus_frames_t *f, int i, const char *s);
/* Copies frame i into buf as a string if it fits and is printable: 0/-1. */
int bus_frame_str(const bus_frames_t *f, int i, char *buf, size_t size);
/* The ZeroMQ metadata property (e.g. "User-Id") of the message, or NULL. */
const char *bus_frames_meta(const bus_frames_t *f, const char *property);

/* Indices of the parts of a parsed message; -1 where absent. */
typedef struct bus_msg {
	int rid;        /* routing id (ROUTER side only) */
	int cmd;        /* worker protocol: the command byte's value */
	int service;    /* client protocol, worker READY: service name */
	int ticket;     /* worker REQUEST/REPLY: busd's ticket for the request */
	int info;       /* worker READY: info JSON */
	int env;        /* envelope */
	int raw;        /* raw frame */
} bus_msg_t;

/*
 * Checks the shape of a client-protocol message. Returns 0, or -1 with
 * *why naming the problem (wrong frame count, bad tag, oversize envelope
 * or raw frame, bad service name). has_rid: received on a ROUTER.
 */
int bus_parse_client(const bus_frames_t *f, bool has_rid, bus_msg_t *m, const char **why);
/* The same for the worker protocol. */
int bus_parse_worker(const bus_frames_t *f, bool has_rid, bus_msg_t *m, const char **why);
/* The same for an event: [type][envelope][raw?]. */
int bus_parse_event(const bus_frames_t *f, bus_msg_t *m, const char **why);

/* True for a service name: [a-z][a-z0-9-]* with optional ".control", <= 48. */
bool bus_service_name_ok(const char *s, size_t len);

#endif
