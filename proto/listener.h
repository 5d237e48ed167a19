/*
 * listener.h — the TCP listeners of the public services (smtpd, imapd):
 * a non-blocking SO_REUSEPORT socket on the loop (replicas share a port),
 * an accept loop that pauses when descriptors run out instead of spinning,
 * the peer's address as text, and a count of sessions per address.
 */
#ifndef ROOST_LISTENER_H
#define ROOST_LISTENER_H

#include "hmap.h"
#include "loop.h"

/* A new connection (non-blocking, close-on-exec, now the callee's): the
 * peer's address as text (an IPv4 client of an IPv6 socket as IPv4) and
 * its port. */
typedef void (*listener_fn)(int fd, const char *ip, unsigned port, void *arg);

typedef struct listener listener_t;

/* Listens on addr:port (numeric). NULL with a one-line reason in err. */
listener_t *listener_open(loop_t *loop, const char *addr, long port, listener_fn fn, void *arg,
			  char *err, size_t errlen);
/* Stops listening and frees l (NULL is fine). */
void listener_close(listener_t *l);

/* Every session is a descriptor: raises RLIMIT_NOFILE to its hard limit. */
void listener_raise_fd_limit(void);

/* Sessions per client address in h (address -> count as uintptr_t). */
long ipcount_get(hmap_t *h, const char *ip);
void ipcount_add(hmap_t *h, const char *ip, long delta);

#endif
