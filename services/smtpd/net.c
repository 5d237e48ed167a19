/*
 * net.c — the listener and the I/O of every session, all on the one event
 * loop: no thread or process per connection.
 *
 * Listener: listen:smtp_port with SO_REUSEPORT (replicas share the port;
 * the kernel spreads connections), non-blocking accept. A connection over
 * smtp_max_sessions or over smtp_max_per_ip for its address gets one 421
 * line and is closed.
 *
 * A session: the greeting waits smtp_greet_delay_ms; a client that sends
 * anything before it is an early talker (554, closed). Reads go into a
 * fixed buffer (SMTPD_INBUF) that smtp.c consumes; when smtp.c cannot go on
 * (waiting for storaged, a full chunk in flight) the buffer fills and the
 * socket is no longer read: TCP's window pushes back on the client. Replies
 * queue in an output buffer; past SMTPD_OUTBUF_MAX (a client pipelining
 * without reading) input is not processed until it drains. With TLS the
 * same, through SSL_read/SSL_write. Idle longer than smtp_idle_timeout_ms
 * (RFC 5321 4.5.3.2, 5 min) while we wait for the client: 421, closed.
 *
 * Ownership: sessions are created here and freed here only, at the end of
 * a top-level event (session_settle), never under a caller's feet.
 */
#include "smtpd.h"
#include "hmap.h"
#include "log.h"
#include "util.h"

#include <malloc.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zmq.h>

static void session_io(loop_t *loop, void *zsock, int fd, short revents, void *arg);
static void session_settle(session_t *s);

/* ---- per-IP accounting ---------------------------------------------------- */

static long per_ip_get(smtpd_t *d, const char *ip)
{
	return (long)(uintptr_t)hmap_get(d->per_ip, ip, strlen(ip));
}

static void per_ip_add(smtpd_t *d, const char *ip, long delta)
{
	long n = per_ip_get(d, ip) + delta;
	if (n <= 0)
		hmap_del(d->per_ip, ip, strlen(ip));
	else
		hmap_put(d->per_ip, ip, strlen(ip), (void *)(uintptr_t)n);
}

/* ---- writing ----------------------------------------------------------------- */

void session_write(session_t *s, const char *buf, size_t len)
{
	if (s->closed || len == 0)
		return;
	if (s->outlen + len > s->outcap) {
		s->outcap = s->outlen + len > 4096 ? s->outlen + len : 4096;
		s->out = xrealloc(s->out, s->outcap);
	}
	memcpy(s->out + s->outlen, buf, len);
	s->outlen += len;
}

void session_reply(session_t *s, enum reply_id id, ...)
{
	char line[SMTPD_LINE_MAX + 64];
	va_list ap;
	va_start(ap, id);
	size_t n = reply_vformat(line, sizeof line, id, ap);
	va_end(ap);
	log_debug("reply", "session=%llu line=%s", (unsigned long long)s->serial,
		  log_quote((line[n - 2] = '\0', line)));
	line[n - 2] = '\r';
	session_write(s, line, n);
}

/* Writes what is queued, as far as the socket takes it. -1: connection lost. */
static int session_flush(session_t *s)
{
	size_t off = 0;
	s->tls_want_write = false;
	while (off < s->outlen) {
		ssize_t n;
		if (s->ssl != NULL) {
			ERR_clear_error();
			int r = SSL_write(s->ssl, s->out + off, (int)(s->outlen - off));
			if (r <= 0) {
				int e = SSL_get_error(s->ssl, r);
				if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
					s->tls_want_write = e == SSL_ERROR_WANT_WRITE;
					break;
				}
				return -1;
			}
			n = r;
		} else {
			n = send(s->fd, s->out + off, s->outlen - off, MSG_NOSIGNAL);
			if (n < 0) {
				if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
					break;
				return -1;
			}
		}
		off += (size_t)n;
	}
	if (off == 0)
		return 0;
	memmove(s->out, s->out + off, s->outlen - off);
	s->outlen -= off;
	if (s->outlen == 0 && s->outcap > 4096) {
		/* a burst of pipelined replies is over: give the memory back */
		free(s->out);
		s->out = NULL;
		s->outcap = 0;
	}
	return 0;
}

/* ---- closing ------------------------------------------------------------------- */

void session_close_after_flush(session_t *s)
{
	s->close_after_flush = true;
	smtp_enter_state(s, ST_QUIT);
}

void session_abort(session_t *s, const char *why)
{
	if (s->closed)
		return;
	log_info("session.close", "session=%llu ip=%s why=%s", (unsigned long long)s->serial,
		 s->ip, log_quote(why));
	if (s->txn.active)
		deliver_log(s, why);
	txn_reset(s);
	loop_remove(s->d->loop, NULL, s->fd);
	loop_timer_cancel(s->d->loop, &s->idle);
	loop_timer_cancel(s->d->loop, &s->greet);
	if (s->ssl != NULL) {
		SSL_free(s->ssl);
		s->ssl = NULL;
	}
	close(s->fd);
	s->fd = -1;
	s->closed = true;
}

/* No session for a while: the chunk buffers a burst left in the heap go
 * back to the system (glibc only trims the top of the heap by itself). A
 * timer, not at once: with one message per connection the count touches
 * 0 after every message. */
#define NET_TRIM_AFTER_MS 2000

static void net_trim(loop_t *loop, void *arg)
{
	smtpd_t *d = arg;
	(void)loop;
	d->trim = NULL;
	if (d->stats.sessions != 0)
		return;
	if (d->chunk_bytes != 0)   /* deliver.c's accounting is off: a bug */
		log_error("chunk.bytes", "bytes=%zu sessions=0", d->chunk_bytes);
	malloc_trim(0);
}

static void session_free(session_t *s)
{
	smtpd_t *d = s->d;
	if (s->prev)
		s->prev->next = s->next;
	else
		d->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	per_ip_add(d, s->ip, -1);
	d->stats.sessions--;
	free(s->out);
	free(s);
	if (d->stats.sessions == 0 && d->trim == NULL && d->lfd >= 0)
		d->trim = loop_timer_add(d->loop, NET_TRIM_AFTER_MS, false, net_trim, d);
}

/* True while the session waits for storaged rather than for the client. */
static bool session_waiting(const session_t *s)
{
	return s->state == ST_WAIT_RCPT || s->state == ST_WAIT_STORE ||
	       ((s->state == ST_DATA || s->state == ST_BDAT) && s->txn.inflight);
}

/* ---- timers ----------------------------------------------------------------------- */

static void session_idle(loop_t *loop, void *arg)
{
	session_t *s = arg;
	(void)loop;
	s->idle = NULL;
	/* Waiting for storaged is our wait, not the client's. */
	if (session_waiting(s)) {
		s->idle = loop_timer_add(s->d->loop, s->d->conf.idle_ms, false, session_idle, s);
		return;
	}
	s->d->stats.timeouts++;
	session_reply(s, R_TIMEOUT);
	session_flush(s);
	session_abort(s, "idle timeout");
	session_settle(s);
}

static void session_touch(session_t *s)
{
	loop_timer_cancel(s->d->loop, &s->idle);
	s->idle = loop_timer_add(s->d->loop, s->d->conf.idle_ms, false, session_idle, s);
}

static void session_greet(loop_t *loop, void *arg)
{
	session_t *s = arg;
	(void)loop;
	s->greet = NULL;
	smtp_greet(s);
	session_settle(s);
}

/* ---- reading -------------------------------------------------------------------- */

/* Reads what fits into the input buffer. 1 if bytes came, 0 if none,
 * -1 if the connection is gone (EOF is noted in s->eof). */
static int session_read(session_t *s)
{
	int got = 0;
	while (s->inlen < sizeof s->in) {
		ssize_t n;
		if (s->ssl != NULL) {
			ERR_clear_error();
			int r = SSL_read(s->ssl, s->in + s->inlen, (int)(sizeof s->in - s->inlen));
			if (r <= 0) {
				int e = SSL_get_error(s->ssl, r);
				if (e == SSL_ERROR_WANT_READ)
					break;
				if (e == SSL_ERROR_WANT_WRITE) {
					s->tls_want_write = true;
					break;
				}
				if (e == SSL_ERROR_ZERO_RETURN) {
					s->eof = true;
					break;
				}
				return -1;
			}
			n = r;
		} else {
			/* Only after epoll said readable, and not after a short read:
			 * the socket was empty then, and epoll (level-triggered) says
			 * when more comes, so a recv that would only say EAGAIN is
			 * not made (it was one per command and per reply). */
			if (s->drained)
				break;
			size_t want = sizeof s->in - s->inlen;
			n = recv(s->fd, s->in + s->inlen, want, 0);
			if (n == 0) {
				s->eof = true;
				break;
			}
			if (n < 0) {
				if (errno == EAGAIN || errno == EWOULDBLOCK)
					s->drained = true;
				if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
					break;
				return -1;
			}
			if ((size_t)n < want)
				s->drained = true;
		}
		s->inlen += (size_t)n;
		got = 1;
	}
	return got;
}

void session_consume(session_t *s, size_t n)
{
	memmove(s->in, s->in + n, s->inlen - n);
	s->inlen -= n;
}

/* Drives the STARTTLS handshake; smtp.c hears when it is done. */
static void session_handshake(session_t *s)
{
	ERR_clear_error();
	int r = SSL_accept(s->ssl);
	if (r == 1) {
		s->tls = true;
		smtp_tls_done(s);
		return;
	}
	int e = SSL_get_error(s->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		s->tls_want_write = e == SSL_ERROR_WANT_WRITE;
		return;
	}
	char why[200];
	unsigned long oe = ERR_peek_error();
	snprintf(why, sizeof why, "TLS handshake failed: %s",
		 oe ? ERR_reason_error_string(oe) ? ERR_reason_error_string(oe) : "error" : "peer gone");
	ERR_clear_error();
	session_abort(s, why);
}

/* The replies are out and STARTTLS was accepted: switch to TLS. Whatever
 * the client pipelined after STARTTLS is thrown away (RFC 3207 4.2 and
 * the command injection of CVE-2011-0411). */
static void session_begin_tls(session_t *s)
{
	s->starttls_after_flush = false;
	s->inlen = 0;
	s->ssl = tls_session_new(s->d->tls, s->fd);
	if (s->ssl == NULL) {
		session_abort(s, "cannot create a TLS session");
		return;
	}
	smtp_enter_state(s, ST_TLS);
	session_handshake(s);
}

/* Reads and processes until nothing moves; writes the replies. */
static void session_pump(session_t *s)
{
	for (int rounds = 0; rounds < 64 && !s->closed; rounds++) {
		if (s->state == ST_TLS) {
			session_handshake(s);
			if (s->state == ST_TLS)
				break;
			continue;
		}
		size_t before = s->inlen;
		int r = s->close_after_flush || s->eof || s->starttls_after_flush ? 0 : session_read(s);
		if (r < 0) {
			session_abort(s, "connection lost");
			return;
		}
		if (r > 0)
			session_touch(s);
		if (s->state == ST_GREET) {
			if (s->inlen > 0 || s->eof) {
				s->d->stats.early++;
				if (!s->eof)
					session_reply(s, R_EARLY_TALKER);
				session_flush(s);
				session_abort(s, "early talker");
				return;
			}
			break;
		}
		if (s->outlen < SMTPD_OUTBUF_MAX)
			smtp_process(s);
		if (s->closed)
			return;
		if (session_flush(s) < 0) {
			session_abort(s, "connection lost");
			return;
		}
		if (s->starttls_after_flush && s->outlen == 0) {
			session_begin_tls(s);
			continue;
		}
		if (s->eof && !s->close_after_flush && !session_waiting(s)) {
			/* What is still buffered was processed as far as it goes (a
			 * client may half-close after pipelining its last commands). */
			session_abort(s, s->txn.active ? "client gone mid-transaction" : "client gone");
			return;
		}
		if (s->inlen == before && r == 0)
			break;
	}
	if (s->close_after_flush && s->outlen == 0)
		session_abort(s, "quit");
}

/* Watches what the session can use next; frees a closed one. Every
 * top-level event ends here. */
static void session_settle(session_t *s)
{
	if (!s->closed)
		session_pump(s);
	if (s->closed) {
		session_free(s);
		return;
	}
	short ev = 0;
	if (s->inlen < sizeof s->in && !s->close_after_flush && !s->eof && s->state != ST_GREET &&
	    !s->starttls_after_flush)
		ev |= ZMQ_POLLIN;
	if (s->state == ST_GREET || s->state == ST_TLS)
		ev |= ZMQ_POLLIN;
	if (s->outlen > 0 || s->tls_want_write)
		ev |= ZMQ_POLLOUT;
	if (ev != s->events) {   /* a syscall only when something changed */
		loop_set_events(s->d->loop, NULL, s->fd, ev);
		s->events = ev;
	}
}

void session_resume(session_t *s)
{
	session_settle(s);
}

static void session_io(loop_t *loop, void *zsock, int fd, short revents, void *arg)
{
	(void)loop; (void)zsock; (void)fd;
	session_t *s = arg;
	if (revents & (ZMQ_POLLIN | ZMQ_POLLERR))
		s->drained = false;
	session_settle(s);
}

/* ---- accepting ----------------------------------------------------------------- */

static void net_refuse(smtpd_t *d, int fd, enum reply_id id, const char *ip)
{
	char line[256];
	size_t n = reply_format(line, sizeof line, id);
	ssize_t w = send(fd, line, n, MSG_NOSIGNAL | MSG_DONTWAIT);
	(void)w;
	close(fd);
	d->stats.refused++;
	log_info("session.refused", "ip=%s why=%s", ip,
		 id == R_TOO_MANY_PER_IP ? "per_ip_limit" : "session_limit");
}

static void net_new_session(smtpd_t *d, int fd, const char *ip, unsigned port)
{
	session_t *s = xmalloc(sizeof *s);
	memset(s, 0, offsetof(session_t, in));   /* in[] is written before it is read */
	s->d = d;
	s->fd = fd;
	s->serial = ++d->serial;
	snprintf(s->ip, sizeof s->ip, "%s", ip);
	s->port = port;
	s->next = d->sessions;
	if (d->sessions)
		d->sessions->prev = s;
	d->sessions = s;
	per_ip_add(d, ip, 1);
	d->stats.sessions++;
	d->stats.connections++;
	s->state = ST_GREET;
	s->drained = true;   /* nothing to read until epoll says so */
	loop_add_fd(d->loop, fd, ZMQ_POLLIN, session_io, s);
	s->events = ZMQ_POLLIN;
	session_touch(s);
	log_info("session.open", "session=%llu ip=%s port=%u", (unsigned long long)s->serial, ip, port);
	s->greet = loop_timer_add(d->loop, d->conf.greet_delay_ms, false, session_greet, s);
}

#define NET_ACCEPT_PAUSE_MS 200

/* Out of file descriptors a moment ago: listen again. */
static void net_accept_resume(loop_t *loop, void *arg)
{
	smtpd_t *d = arg;
	if (d->lfd >= 0)
		loop_set_events(loop, NULL, d->lfd, ZMQ_POLLIN);
}

static void net_accept(loop_t *loop, void *zsock, int fd, short revents, void *arg)
{
	(void)loop; (void)zsock; (void)revents;
	smtpd_t *d = arg;
	for (int i = 0; i < 64; i++) {
		struct sockaddr_storage sa;
		socklen_t sl = sizeof sa;
		int c = accept4(fd, (struct sockaddr *)&sa, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (c < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				/* The connection stays queued and the socket readable:
				 * stop watching it for a moment instead of spinning. */
				log_warn("accept", "error=%s pause_ms=%d", log_quote(strerror(errno)),
					 NET_ACCEPT_PAUSE_MS);
				loop_set_events(d->loop, NULL, fd, 0);
				loop_timer_add(d->loop, NET_ACCEPT_PAUSE_MS, false, net_accept_resume, d);
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
		if (d->stats.sessions >= d->conf.max_sessions)
			net_refuse(d, c, R_TOO_MANY_SESSIONS, ip);
		else if (per_ip_get(d, ip) >= d->conf.max_per_ip)
			net_refuse(d, c, R_TOO_MANY_PER_IP, ip);
		else
			net_new_session(d, c, ip, (unsigned)atoi(serv));
	}
}

int net_listen(smtpd_t *d, char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV,
				  .ai_socktype = SOCK_STREAM }, *ai;
	char port[16];
	snprintf(port, sizeof port, "%ld", d->conf.port);
	int rc = getaddrinfo(d->conf.listen, port, &hints, &ai);
	if (rc != 0) {
		snprintf(err, errlen, "listen %s: %s", d->conf.listen, gai_strerror(rc));
		return -1;
	}
	/* Every session is a descriptor: take all the kernel allows us. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 256) < 0) {
		snprintf(err, errlen, "cannot listen on %s port %s: %s", d->conf.listen, port,
			 strerror(errno));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(ai);
		return -1;
	}
	freeaddrinfo(ai);
	d->lfd = fd;
	d->per_ip = hmap_new();
	loop_add_fd(d->loop, fd, ZMQ_POLLIN, net_accept, d);
	return 0;
}

/* 421 (best effort) and closed. */
static void session_shutdown(session_t *s)
{
	if (!s->closed) {
		if (s->state != ST_GREET && s->state != ST_TLS) {
			session_reply(s, R_SHUTDOWN);
			session_flush(s);
		}
		session_abort(s, "shutdown");
	}
	session_free(s);
}

/* Every 50 ms while draining: a session that is not waiting for its
 * commit is closed (one that was has had its 250 or 451 by now). */
static void net_drain_tick(loop_t *loop, void *arg)
{
	smtpd_t *d = arg;
	size_t committing = 0;
	for (session_t *s = d->sessions, *next; s != NULL; s = next) {
		next = s->next;
		if (!s->closed && s->txn.committing)
			committing++;
		else
			session_shutdown(s);
	}
	if (committing == 0 || loop_now(loop) >= d->drain_until) {
		if (committing > 0)
			log_warn("drain", "committing=%zu why=\"storaged did not answer in time\"",
				 committing);
		loop_stop(loop);
	}
}

void net_drain(smtpd_t *d)
{
	if (d->drain != NULL) {
		loop_stop(d->loop);
		return;
	}
	if (d->lfd >= 0) {
		loop_remove(d->loop, NULL, d->lfd);
		close(d->lfd);
		d->lfd = -1;
	}
	/* A sender told 421 after its message was stored would send it
	 * again: the commits in flight are answered first. They cannot take
	 * longer than every try of the store call. */
	d->drain_until = loop_now(d->loop) + bus_give_up_ms() + 1000;
	log_info("draining", "sessions=%ld", d->stats.sessions);
	d->drain = loop_timer_add(d->loop, 50, true, net_drain_tick, d);
	net_drain_tick(d->loop, d);
}

/* At shutdown: every session gets 421 (best effort) and is closed. */
void net_close_all(smtpd_t *d)
{
	loop_timer_cancel(d->loop, &d->drain);
	loop_timer_cancel(d->loop, &d->trim);
	if (d->lfd >= 0) {
		loop_remove(d->loop, NULL, d->lfd);
		close(d->lfd);
		d->lfd = -1;
	}
	while (d->sessions != NULL)
		session_shutdown(d->sessions);
	hmap_free(&d->per_ip);
	deliver_cache_free(d);
}
