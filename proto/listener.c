/* listener.c — see listener.h. */
#include "listener.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zmq.h>

#define LISTENER_PAUSE_MS 200
#define LISTENER_BURST 64   /* accepts per wake-up: others get their turn */

struct listener {
	loop_t *loop;
	int fd;
	listener_fn fn;
	void *arg;
	loop_timer_t *resume;
};

/* Out of descriptors a moment ago: listen again. */
static void listener_resume(loop_t *loop, void *arg)
{
	listener_t *l = arg;
	l->resume = NULL;
	loop_set_events(loop, NULL, l->fd, ZMQ_POLLIN);
}

static void listener_accept(loop_t *loop, void *zsock, int fd, short revents, void *arg)
{
	(void)zsock; (void)revents;
	listener_t *l = arg;
	for (int i = 0; i < LISTENER_BURST; i++) {
		struct sockaddr_storage sa;
		socklen_t sl = sizeof sa;
		int c = accept4(fd, (struct sockaddr *)&sa, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (c < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				/* The connection stays queued and the socket readable:
				 * stop watching it for a moment instead of spinning. */
				log_warn("accept", "error=%s pause_ms=%d", log_quote(strerror(errno)),
					 LISTENER_PAUSE_MS);
				loop_set_events(loop, NULL, fd, 0);
				if (l->resume == NULL)
					l->resume = loop_timer_add(loop, LISTENER_PAUSE_MS, false,
								   listener_resume, l);
			} else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
				   errno != ECONNABORTED) {
				log_warn("accept", "error=%s", log_quote(strerror(errno)));
			}
			return;
		}
		char ip[64] = "?", serv[16] = "0";
		getnameinfo((struct sockaddr *)&sa, sl, ip, sizeof ip, serv, sizeof serv,
			    NI_NUMERICHOST | NI_NUMERICSERV);
		/* An IPv4 client on an IPv6 socket is logged and counted as IPv4. */
		if (strncmp(ip, "::ffff:", 7) == 0 && strchr(ip + 7, ':') == NULL)
			memmove(ip, ip + 7, strlen(ip + 7) + 1);
		l->fn(c, ip, (unsigned)atoi(serv), l->arg);
	}
}

listener_t *listener_open(loop_t *loop, const char *addr, long port, listener_fn fn, void *arg,
			  char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV,
				  .ai_socktype = SOCK_STREAM }, *ai;
	char ps[16];
	snprintf(ps, sizeof ps, "%ld", port);
	int rc = getaddrinfo(addr, ps, &hints, &ai);
	if (rc != 0) {
		snprintf(err, errlen, "listen %s: %s", addr, gai_strerror(rc));
		return NULL;
	}
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 256) < 0) {
		snprintf(err, errlen, "cannot listen on %s port %s: %s", addr, ps, strerror(errno));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(ai);
		return NULL;
	}
	freeaddrinfo(ai);
	listener_t *l = xcalloc(1, sizeof *l);
	*l = (listener_t){ .loop = loop, .fd = fd, .fn = fn, .arg = arg };
	loop_add_fd(loop, fd, ZMQ_POLLIN, listener_accept, l);
	return l;
}

void listener_close(listener_t *l)
{
	if (l == NULL)
		return;
	loop_timer_cancel(l->loop, &l->resume);
	loop_remove(l->loop, NULL, l->fd);
	close(l->fd);
	free(l);
}

void listener_raise_fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

long ipcount_get(hmap_t *h, const char *ip)
{
	return (long)(uintptr_t)hmap_get(h, ip, strlen(ip));
}

void ipcount_add(hmap_t *h, const char *ip, long delta)
{
	long n = ipcount_get(h, ip) + delta;
	if (n <= 0)
		hmap_del(h, ip, strlen(ip));
	else
		hmap_put(h, ip, strlen(ip), (void *)(uintptr_t)n);
}
