/*
 * net.c — the listeners and the I/O of every session, all on the one event
 * loop: no thread or process per connection.
 *
 * Listeners: listen:imap_port (STARTTLS) and listen:imaps_port (implicit
 * TLS, RFC 8314; only with a certificate), both with SO_REUSEPORT so
 * replicas share them. A connection over imap_max_sessions or over
 * imap_max_per_ip for its address gets one "* BYE" line and is closed.
 *
 * A session reads into a fixed buffer (IMAPD_INBUF) that imap.c consumes;
 * while a command waits for storaged the buffer fills and the socket is no
 * longer read: TCP's window pushes back on a pipelining client. Output
 * queues in a strbuf; past IMAPD_OUTBUF_MAX imap.c stops producing (a FETCH
 * of a large mailbox pauses, imap_pause) and no new command is read until
 * it drains. Idle longer than imap_login_timeout_ms before login, or
 * imap_idle_timeout_ms after (RFC 3501 5.4: 30 min; IDLE counts as idle
 * too, clients re-issue it), while we wait for the client: BYE, closed.
 *
 * Ownership: sessions are created here and freed here only, at the end of
 * a top-level event (session_settle), never under a caller's feet.
 */
#include "imapd.h"
#include "listener.h"
#include "hmap.h"
#include "log.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zmq.h>

static void session_settle(session_t *s);

/* ---- writing ----------------------------------------------------------------- */

void session_write(session_t *s, const void *buf, size_t len)
{
	if (s->closed || len == 0)
		return;
	sb_add(&s->out, buf, len);
}

void session_printf(session_t *s, const char *fmt, ...)
{
	if (s->closed)
		return;
	va_list ap;
	va_start(ap, fmt);
	sb_vaddf(&s->out, fmt, ap);
	va_end(ap);
}

bool session_waiting(const session_t *s)
{
	return s->call != 0 || (s->cmd != NULL && (s->cmd->chunk_inflight || s->cmd->delay != NULL ||
						     s->cmd->view_cont != NULL));
}

bool session_out_full(const session_t *s)
{
	return s->out.len >= IMAPD_OUTBUF_MAX;
}

/* Writes what is queued, as far as the socket takes it. -1: connection lost. */
static int session_flush(session_t *s)
{
	size_t off = 0;
	s->tls_want_write = false;
	while (off < s->out.len) {
		ssize_t n;
		if (s->ssl != NULL) {
			n = tls_write(s->ssl, s->out.buf + off, s->out.len - off, &s->tls_want_write);
			if (n < 0)
				return -1;
			if (n == 0)
				break;
		} else {
			n = send(s->fd, s->out.buf + off, s->out.len - off, MSG_NOSIGNAL);
			if (n < 0) {
				if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
					break;
				return -1;
			}
		}
		off += (size_t)n;
	}
	sb_consume(&s->out, off);
	if (s->out.len == 0 && s->out.cap > 65536)
		sb_free(&s->out);   /* a large FETCH is over: give the memory back */
	return 0;
}

/* ---- closing ------------------------------------------------------------------- */

void session_close_after_flush(session_t *s)
{
	s->close_after_flush = true;
	imap_enter_state(s, IS_LOGOUT);
}

void session_abort(session_t *s, const char *why)
{
	if (s->closed)
		return;
	log_info("session.close", "session=%llu ip=%s user=%s why=%s",
		 (unsigned long long)s->serial, s->ip, s->user[0] ? s->user : "-", log_quote(why));
	if (s->call != 0)
		bus_cancel(s->d->bus, s->call);
	s->call = 0;
	loop_remove(s->d->loop, NULL, s->fd);
	loop_timer_cancel(s->d->loop, &s->idle);
	if (s->ssl != NULL) {
		SSL_free(s->ssl);
		s->ssl = NULL;
	}
	close(s->fd);
	s->fd = -1;
	s->closed = true;
}

static void session_free(session_t *s)
{
	imapd_t *d = s->d;
	if (s->prev)
		s->prev->next = s->next;
	else
		d->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	ipcount_add(d->per_ip, s->ip, -1);
	d->stats.sessions--;
	imap_session_clear(s);
	sb_free(&s->out);
	free(s);
}

/* ---- timers ----------------------------------------------------------------------- */

static void session_idle(loop_t *loop, void *arg)
{
	session_t *s = arg;
	(void)loop;
	s->idle = NULL;
	/* Waiting for storaged is our wait, not the client's. */
	if (session_waiting(s)) {
		session_touch(s);
		return;
	}
	s->d->stats.timeouts++;
	session_printf(s, "* BYE Autologout; idle for too long\r\n");
	session_flush(s);
	session_abort(s, "idle timeout");
	session_settle(s);
}

void session_touch(session_t *s)
{
	loop_timer_cancel(s->d->loop, &s->idle);
	long ms = s->state == IS_NOAUTH ? s->d->conf.login_ms : s->d->conf.idle_ms;
	s->idle = loop_timer_add(s->d->loop, ms, false, session_idle, s);
}

/* ---- reading -------------------------------------------------------------------- */

/*
 * Half a command is here (an APPEND's literal without its CRLF, say). A
 * client that wrote the rest in a second small write holds it under Nagle
 * until we ACK, and delayed ACK would make that 40 ms per command (imaplib's
 * APPEND: 44 ms each, 0.7 ms with this). Linux drops quick-ACK mode on its
 * own, so this is asked again each time.
 */
void session_quickack(session_t *s)
{
	int one = 1;
	(void)setsockopt(s->fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
}

/* Reads what fits into the input buffer. 1 if bytes came, 0 if none,
 * -1 if the connection is gone (EOF is noted in s->eof). */
static int session_read(session_t *s)
{
	int got = 0;
	while (s->inlen < sizeof s->in) {
		ssize_t n;
		if (s->ssl != NULL) {
			n = tls_read(s->ssl, s->in + s->inlen, sizeof s->in - s->inlen,
				     &s->tls_want_write, &s->eof);
			if (n < 0)
				return -1;
			if (n == 0)
				break;
		} else {
			n = recv(s->fd, s->in + s->inlen, sizeof s->in - s->inlen, 0);
			if (n == 0) {
				s->eof = true;
				break;
			}
			if (n < 0) {
				if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
					break;
				return -1;
			}
		}
		s->inlen += (size_t)n;
		got = 1;
	}
	return got;
}

/* Drives the TLS handshake (STARTTLS or implicit); imap.c hears when done. */
static void session_handshake(session_t *s)
{
	char why[200];
	int r = tls_accept_step(s->ssl, &s->tls_want_write, why, sizeof why);
	if (r > 0) {
		s->tls = true;
		s->handshaking = false;
		imap_tls_done(s);
	} else if (r < 0) {
		session_abort(s, why);
	}
}

/* Starts TLS on the socket. Whatever the client pipelined after STARTTLS
 * is thrown away (RFC 3501 6.2.1; the command injection of CVE-2011-0411). */
static void session_begin_tls(session_t *s)
{
	s->starttls_after_flush = false;
	s->inlen = 0;
	s->ssl = tls_session_new(s->d->tls, s->fd);
	if (s->ssl == NULL) {
		session_abort(s, "cannot create a TLS session");
		return;
	}
	s->handshaking = true;
	session_handshake(s);
}

void session_starttls(session_t *s)
{
	s->starttls_after_flush = true;
}

/* Reads and processes until nothing moves; writes the replies. */
static void session_pump(session_t *s)
{
	for (int rounds = 0; rounds < 64 && !s->closed; rounds++) {
		if (s->handshaking) {
			session_handshake(s);
			if (s->handshaking || s->closed)
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
		if (!session_out_full(s))
			imap_process(s);
		if (s->closed)
			return;
		if (session_flush(s) < 0) {
			session_abort(s, "connection lost");
			return;
		}
		if (s->paused && s->out.len < IMAPD_OUTBUF_MAX / 2 && s->cmd != NULL &&
		    s->cmd->resume != NULL) {
			s->paused = false;
			void (*resume)(session_t *) = s->cmd->resume;
			s->cmd->resume = NULL;
			resume(s);
			continue;
		}
		if (s->starttls_after_flush && s->out.len == 0) {
			session_begin_tls(s);
			continue;
		}
		if (s->eof && !s->close_after_flush && !session_waiting(s) && !s->paused) {
			/* What was buffered has been processed as far as it goes. */
			session_abort(s, "client gone");
			return;
		}
		if (s->inlen == before && r == 0)
			break;
	}
	if (s->close_after_flush && s->out.len == 0 && s->cmd == NULL) {
		/* a clean end: close_notify, so that the client sees no truncation */
		if (s->ssl != NULL)
			SSL_shutdown(s->ssl);
		session_abort(s, "logout");
	}
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
	if ((s->inlen < sizeof s->in && !s->close_after_flush && !s->eof &&
	     !s->starttls_after_flush) || s->handshaking)
		ev |= ZMQ_POLLIN;
	if (s->out.len > 0 || s->tls_want_write)
		ev |= ZMQ_POLLOUT;
	if (ev != s->events) {
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
	(void)loop; (void)zsock; (void)fd; (void)revents;
	session_settle(arg);
}

/* ---- accepting ----------------------------------------------------------------- */

static void net_refuse(imapd_t *d, int fd, const char *ip, bool per_ip)
{
	static const char line[] = "* BYE Too many connections, try again later\r\n";
	ssize_t w = send(fd, line, sizeof line - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
	(void)w;
	close(fd);
	d->stats.refused++;
	log_info("session.refused", "ip=%s why=%s", ip, per_ip ? "per_ip_limit" : "session_limit");
}

static void net_new_session(imapd_t *d, int fd, const char *ip, bool implicit)
{
	session_t *s = xcalloc(1, sizeof *s);
	s->d = d;
	s->fd = fd;
	s->serial = ++d->serial;
	s->implicit = implicit;
	snprintf(s->ip, sizeof s->ip, "%s", ip);
	/* Output is gathered per command in s->out and sent when the session
	 * settles, so Nagle has nothing to merge; it would only hold a tagged
	 * line written after untagged ones already on the wire (a command that
	 * waited for storaged in between) until the client's delayed ACK: 40 ms. */
	int one = 1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	/* Like Dovecot's default: a client on this host is not on the wire.
	 * Off unless configured: in a container a DNAT'ed client never looks
	 * like loopback, but a local proxy could. */
	s->private_peer = d->conf.plaintext_loopback &&
			  (strncmp(ip, "127.", 4) == 0 || strcmp(ip, "::1") == 0);
	s->next = d->sessions;
	if (d->sessions)
		d->sessions->prev = s;
	d->sessions = s;
	ipcount_add(d->per_ip, ip, 1);
	d->stats.sessions++;
	d->stats.connections++;
	s->state = IS_NOAUTH;
	loop_add_fd(d->loop, fd, ZMQ_POLLIN, session_io, s);
	s->events = ZMQ_POLLIN;
	session_touch(s);
	log_info("session.open", "session=%llu ip=%s tls=%s", (unsigned long long)s->serial, ip,
		 implicit ? "implicit" : "no");
	if (implicit) {
		session_begin_tls(s);   /* the greeting follows the handshake */
	} else {
		imap_greet(s);
	}
	session_settle(s);
}

static void net_accept_plain(int fd, const char *ip, unsigned port, void *arg);
static void net_accept_tls(int fd, const char *ip, unsigned port, void *arg);

static void net_accept(imapd_t *d, int fd, const char *ip, bool implicit)
{
	if (d->stats.sessions >= d->conf.max_sessions)
		net_refuse(d, fd, ip, false);
	else if (ipcount_get(d->per_ip, ip) >= d->conf.max_per_ip)
		net_refuse(d, fd, ip, true);
	else
		net_new_session(d, fd, ip, implicit);
}

static void net_accept_plain(int fd, const char *ip, unsigned port, void *arg)
{
	(void)port;
	net_accept(arg, fd, ip, false);
}

static void net_accept_tls(int fd, const char *ip, unsigned port, void *arg)
{
	(void)port;
	net_accept(arg, fd, ip, true);
}

int net_listen(imapd_t *d, char *err, size_t errlen)
{
	listener_raise_fd_limit();
	d->per_ip = hmap_new();
	d->listener = listener_open(d->loop, d->conf.listen, d->conf.port, net_accept_plain, d,
				    err, errlen);
	if (d->listener == NULL)
		return -1;
	/* Implicit TLS needs a certificate; without one the port stays closed
	 * rather than accept connections it cannot serve. */
	if (d->conf.tls_port > 0 && d->tls != NULL &&
	    (d->tls_listener = listener_open(d->loop, d->conf.listen, d->conf.tls_port,
					     net_accept_tls, d, err, errlen)) == NULL)
		return -1;
	return 0;
}

/* At shutdown: every session gets BYE (best effort) and is closed. */
void net_close_all(imapd_t *d)
{
	listener_close(d->listener);
	listener_close(d->tls_listener);
	d->listener = d->tls_listener = NULL;
	while (d->sessions != NULL) {
		session_t *s = d->sessions;
		if (!s->closed) {
			if (!s->handshaking) {
				session_printf(s, "* BYE Server shutting down\r\n");
				session_flush(s);
			}
			session_abort(s, "shutdown");
		}
		session_free(s);
	}
	hmap_free(&d->per_ip);
}
