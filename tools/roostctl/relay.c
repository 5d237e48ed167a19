/*
 * relay.c — roostctl bus relay: busd's tap, read-only, for the owner's
 * devices over the WireGuard tunnel (issue 7: "devices reach IMAP,
 * submission and roostctl's bus tail over the tunnel").
 *
 * busd stays offline (network_mode: none, ipc:// only). The relay runs in
 * the tunnel's network namespace, subscribes to busd's tap over ipc:// and
 * republishes every line as it came ([type][JSON line], redacted by busd)
 * on an XPUB bound to this server's tunnel address only (wg_net .2,
 * bus_relay_port 4470). `roostctl bus tail --remote 10.44.0.2` on a device
 * reads it with the same filters as a local tail.
 *
 * What keeps it read-only and for devices only:
 *   - nothing goes toward the bus: what devices send is a subscription
 *     (kept here, never forwarded; the relay subscribes to the whole tap
 *     while any device subscribes to anything, so busd still builds no tap
 *     line while nobody looks) or is dropped and counted; a message longer
 *     than a subscription (RELAY_SUB_MAX) ends that connection (libzmq);
 *   - in compose it runs under its own uid, whose bus role "tap" busd admits
 *     to the tap and to nothing else (zap.c): a flaw reachable from the
 *     tunnel gives no admin power over the bus;
 *   - authentication is WireGuard's cryptokey routing: a packet from
 *     10.44.0.N came through the tunnel with device N's key. The relay's ZAP
 *     handler admits only the devices' addresses (wg_net .10-.254), the
 *     namespace drops the port on any interface but the tunnel's
 *     (docker/wg-up.sh, so a home-LAN host spoofing 10.44.0.N gets nowhere),
 *     and the VPS forwards it only from its tunnel peers, never from its
 *     public interface (vps-config).
 *
 * Its own zmq context: the ZAP handler it binds (inproc://zeromq.zap.01)
 * must see only the relay's TCP socket, not the ipc:// one to busd.
 */
#include "roostctl.h"
#include "bus.h"
#include "log.h"
#include "util.h"
#include "zapreq.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zmq.h>

#define RELAY_SUB_MAX 129        /* \x01 + a topic prefix: busd's tap bound */
#define RELAY_HWM 1000           /* lines queued per device before it misses some */
#define RELAY_BIND_RETRY_MS 2000 /* the tunnel address may come up after us */

struct relay {
	void *zctx;            /* the relay's own context (see the top) */
	void *up;              /* SUB to busd's tap, ipc:// (bus context) */
	void *up_mon;          /* handshake events of up */
	void *down;            /* XPUB on the tunnel address, ZAP domain "relay" */
	void *zap;             /* REP, inproc://zeromq.zap.01 in zctx */
	uint32_t dev_lo, dev_hi;   /* devices' addresses, host order */
	int topics;            /* distinct subscriptions of devices (XPUB) */
	bool subscribed;       /* to the whole tap, upstream */
	uint64_t relayed, refused, dropped;
};

static volatile sig_atomic_t relay_stop;

static void relay_on_stop(int signo)
{
	(void)signo;
	relay_stop = 1;
}

long relay_port(const struct ctl *ctl)
{
	long port;
	char err[256];
	if (config_get_int(ctl->cfg, "bus_relay_port", RELAY_DEFAULT_PORT, 1, 65535, &port, err,
			   sizeof err) < 0) {
		ctl_fail("%s", err);
		return -1;
	}
	return port;
}

/* A ZAP request's address is the peer's IP ("10.44.0.10"; an IPv4-mapped
 * IPv6 form too): true if it is one of the devices. */
static bool relay_is_device(const struct relay *r, const char *addr, size_t len)
{
	char buf[64];
	struct in_addr a;
	if (len >= sizeof buf)
		return false;
	memcpy(buf, addr, len);
	buf[len] = '\0';
	const char *v4 = strncmp(buf, "::ffff:", 7) == 0 ? buf + 7 : buf;
	if (inet_pton(AF_INET, v4, &a) != 1)
		return false;
	uint32_t h = ntohl(a.s_addr);
	return h >= r->dev_lo && h <= r->dev_hi;
}

/* One ZAP request (zapreq.h): 200 for a device's address, else 400. */
static void relay_zap(struct relay *r)
{
	zapreq_t req;
	if (zapreq_recv(&req, r->zap) == 0) {
		size_t alen;
		const char *addr = zapreq_frame(&req, ZAPREQ_ADDRESS, &alen);
		int shown = alen < 64 ? (int)alen : 64;
		bool ok = relay_is_device(r, addr, alen);
		if (ok) {
			log_info("relay.device", "addr=%.*s", shown, addr);
		} else {
			r->refused++;
			log_warn("relay.refused", "addr=%.*s why=\"not a device of wg_net\"", shown, addr);
		}
		zapreq_answer(&req, r->zap, ok ? "200" : "400", ok ? "OK" : "not a device", "device");
	}
	zapreq_close(&req);
}

/* The relay subscribes to the whole tap while devices subscribe to
 * anything, and to nothing otherwise: busd builds tap lines only while
 * someone looks. */
static void relay_upstream_follow(struct relay *r)
{
	bool want = r->topics > 0;
	if (want == r->subscribed)
		return;
	zmq_setsockopt(r->up, want ? ZMQ_SUBSCRIBE : ZMQ_UNSUBSCRIBE, "", 0);
	r->subscribed = want;
	log_info(want ? "relay.watching" : "relay.idle", "topics=%d", r->topics);
}

/* What devices send: subscriptions (\x01topic, \x00topic) are counted and
 * kept by the XPUB; anything else is dropped, never forwarded. */
static void relay_from_devices(struct relay *r)
{
	zmq_msg_t m;
	zmq_msg_init(&m);
	while (zmq_msg_recv(&m, r->down, ZMQ_DONTWAIT) >= 0) {
		const unsigned char *d = zmq_msg_data(&m);
		size_t len = zmq_msg_size(&m);
		if (len >= 1 && d[0] == 1 && !zmq_msg_more(&m)) {
			r->topics++;
		} else if (len >= 1 && d[0] == 0 && !zmq_msg_more(&m)) {
			if (r->topics > 0)
				r->topics--;
		} else {
			/* Counted, logged now and then: a device cannot flood the log. */
			if (r->dropped++ % 1000 == 0)
				log_warn("relay.dropped", "bytes=%zu dropped=%llu why=\"the relay only publishes\"",
					 len, (unsigned long long)r->dropped);
		}
	}
	zmq_msg_close(&m);
	relay_upstream_follow(r);
}

/* busd's tap lines, [type][line], passed on as they are (already redacted
 * by busd); a device too slow for RELAY_HWM lines misses some (XPUB). */
static void relay_forward(struct relay *r)
{
	for (int i = 0; i < 256; i++) {
		zmq_msg_t topic, line;
		zmq_msg_init(&topic);
		if (zmq_msg_recv(&topic, r->up, ZMQ_DONTWAIT) < 0) {
			zmq_msg_close(&topic);
			break;
		}
		zmq_msg_init(&line);
		bool ok = zmq_msg_more(&topic) && zmq_msg_recv(&line, r->up, 0) >= 0;
		if (ok && !zmq_msg_more(&line) &&
		    zmq_msg_send(&topic, r->down, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0) {
			zmq_msg_send(&line, r->down, ZMQ_DONTWAIT);
			r->relayed++;
		}
		/* Not [type][line]: the rest of it is skipped. */
		while (ok && zmq_msg_more(&line) && zmq_msg_recv(&line, r->up, 0) >= 0)
			;
		zmq_msg_close(&topic);
		zmq_msg_close(&line);
	}
}

/* busd refusing the tap to this uid is a broken setup, not a passing state. */
static void relay_upstream_events(struct relay *r)
{
	int ev;
	while (monitor_event(r->up_mon, &ev) == 0) {
		if (ev == ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
			log_info("relay.tap", "connected to busd's tap");
		else if (ev != ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
			log_warn("relay.tap", "handshake with busd failed (event %#x); retrying", ev);
		else
			fatal("relay.tap", "busd refuses its tap to uid %ld (bus_acl: uid=tap or uid=roostctl)",
			      (long)geteuid());
	}
}

/* Parses --listen ADDR:PORT (an IPv4 address, not the wildcard: the relay
 * is for the tunnel's address only) into a tcp:// endpoint and the address. */
static int relay_listen_arg(const char *v, char *ep, size_t size, struct in_addr *addr)
{
	const char *colon = strrchr(v, ':');
	char ip[INET_ADDRSTRLEN], *end;
	struct in_addr a;
	if (colon == NULL || (size_t)(colon - v) >= sizeof ip)
		return ctl_fail("bus relay: --listen %s: want ADDR:PORT (this server's tunnel address)", v);
	memcpy(ip, v, colon - v);
	ip[colon - v] = '\0';
	long port = strtol(colon + 1, &end, 10);
	if (inet_pton(AF_INET, ip, &a) != 1 || *end != '\0' || port < 1 || port > 65535)
		return ctl_fail("bus relay: --listen %s: want an IPv4 ADDR:PORT", v);
	if (a.s_addr == htonl(INADDR_ANY))
		return ctl_fail("bus relay: --listen %s: not the wildcard, the tunnel address only", v);
	snprintf(ep, size, "tcp://%s:%ld", ip, port);
	*addr = a;
	return 0;
}

/* The XPUB devices connect to, bound to ep; waits while the address does not
 * exist yet (the tunnel comes up beside us). 0, or 1 after printing why. */
static int relay_bind(struct relay *r, const char *ep)
{
	r->down = zmq_socket(r->zctx, ZMQ_XPUB);
	int linger = 0, hwm = RELAY_HWM, hb = 10000, hbt = 30000;
	int64_t max = RELAY_SUB_MAX;
	zmq_setsockopt(r->down, ZMQ_LINGER, &linger, sizeof linger);
	zmq_setsockopt(r->down, ZMQ_SNDHWM, &hwm, sizeof hwm);
	zmq_setsockopt(r->down, ZMQ_MAXMSGSIZE, &max, sizeof max);
	zmq_setsockopt(r->down, ZMQ_HEARTBEAT_IVL, &hb, sizeof hb);
	zmq_setsockopt(r->down, ZMQ_HEARTBEAT_TIMEOUT, &hbt, sizeof hbt);
	zmq_setsockopt(r->down, ZMQ_ZAP_DOMAIN, "relay", 5);
	bool said = false;
	while (zmq_bind(r->down, ep) < 0) {
		if (zmq_errno() != EADDRNOTAVAIL)
			return ctl_fail("bus relay: cannot listen on %s: %s", ep, zmq_strerror(zmq_errno()));
		if (!said)
			log_info("relay.waiting", "endpoint=%s why=\"address not up yet (the tunnel)\"", ep);
		said = true;
		usleep(RELAY_BIND_RETRY_MS * 1000);
		if (relay_stop)
			return 0;   /* stopped while waiting: relay_loop ends at once */
	}
	log_info("relay.listening", "endpoint=%s", ep);
	return 0;
}

/* Waits, with nothing of ZeroMQ's started yet, while addr (ep's) does not
 * exist: a stack without a tunnel keeps the relay a sleeping process (no
 * context, no I/O threads, little memory). */
static void relay_wait_address(const char *ep, struct in_addr addr)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr = addr };
	bool said = false;
	while (!relay_stop) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int rc = fd < 0 ? 0 : bind(fd, (struct sockaddr *)&sa, sizeof sa);   /* port 0 */
		int err = errno;
		if (fd >= 0)
			close(fd);
		if (rc == 0 || err != EADDRNOTAVAIL)
			return;   /* there, or a problem zmq_bind will name */
		if (!said)
			log_info("relay.waiting", "endpoint=%s why=\"address not up yet (the tunnel)\"", ep);
		said = true;
		usleep(RELAY_BIND_RETRY_MS * 1000);
	}
}

/* The sockets: ZAP handler first (libzmq asks it from the first connection
 * on), then the tap upstream, then the listener. 0, or 1 after printing why. */
static int relay_open(struct relay *r, const struct ctl *ctl, const char *ep)
{
	bus_endpoints_t bep;
	if (bus_endpoints_init(&bep, ctl->bus_dir) < 0)
		return ctl_fail("bus directory path too long: %s", ctl->bus_dir);
	int linger = 0;
	r->zctx = zmq_ctx_new();
	r->zap = zmq_socket(r->zctx, ZMQ_REP);
	zmq_setsockopt(r->zap, ZMQ_LINGER, &linger, sizeof linger);
	if (zmq_bind(r->zap, "inproc://zeromq.zap.01") < 0)
		return ctl_fail("bus relay: cannot bind its ZAP handler: %s", zmq_strerror(zmq_errno()));
	r->up = zmq_socket(bus_zmq_ctx(), ZMQ_SUB);
	zmq_setsockopt(r->up, ZMQ_LINGER, &linger, sizeof linger);
	r->up_mon = monitor_new(bus_zmq_ctx(), r->up, "relay-tap");
	/* ipc:// connects even before busd's socket exists, and reconnects. */
	if (zmq_connect(r->up, bep.tap) < 0)
		return ctl_fail("bus relay: cannot connect to %s: %s", bep.tap, zmq_strerror(zmq_errno()));
	return relay_bind(r, ep);
}

static void relay_close(struct relay *r)
{
	zmq_close(r->up_mon);
	zmq_close(r->up);
	zmq_close(r->down);
	zmq_close(r->zap);
	if (r->zctx != NULL)
		zmq_ctx_term(r->zctx);
}

static int relay_loop(struct relay *r)
{
	while (!relay_stop) {
		zmq_pollitem_t it[4] = {
			{ .socket = r->zap, .events = ZMQ_POLLIN },
			{ .socket = r->down, .events = ZMQ_POLLIN },
			{ .socket = r->up, .events = ZMQ_POLLIN },
			{ .socket = r->up_mon, .events = ZMQ_POLLIN },
		};
		if (zmq_poll(it, r->up_mon ? 4 : 3, 1000) < 0 && zmq_errno() != EINTR)
			return ctl_fail("bus relay: poll: %s", zmq_strerror(zmq_errno()));
		if (it[0].revents & ZMQ_POLLIN)
			relay_zap(r);
		if (it[1].revents & ZMQ_POLLIN)
			relay_from_devices(r);
		if (it[2].revents & ZMQ_POLLIN)
			relay_forward(r);
		if (r->up_mon && (it[3].revents & ZMQ_POLLIN))
			relay_upstream_events(r);
	}
	log_info("relay.stopped", "relayed=%llu refused=%llu dropped=%llu", (unsigned long long)r->relayed,
		 (unsigned long long)r->refused, (unsigned long long)r->dropped);
	return 0;
}

int cmd_relay(struct ctl *ctl, int argc, char **argv)
{
	const char *listen = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0) {
			printf("usage: roostctl bus relay [--listen ADDR:PORT]\n"
			       "  busd's tap, read-only, for the devices of wg add-peer: listens on this\n"
			       "  server's tunnel address (wg_net .2, bus_relay_port %d), admits only\n"
			       "  the devices' addresses (wg_net .%d-.%d); on a device: roostctl bus tail --remote\n",
			       RELAY_DEFAULT_PORT, WG_PEER_FIRST, WG_PEER_LAST);
			return 0;
		} else if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
			listen = argv[++i];
		} else {
			return ctl_fail("bus relay: unknown argument '%s' (try --help)", argv[i]);
		}
	}
	struct wg_net net;
	long port = relay_port(ctl);
	if (port < 0 || wg_net_get(ctl, &net) != 0)
		return 1;
	char ep[64], def[48];
	snprintf(def, sizeof def, "%s:%ld", net.server, port);
	struct in_addr addr = { 0 };
	if (relay_listen_arg(listen ? listen : def, ep, sizeof ep, &addr) != 0)
		return 1;
	int level = log_level_parse(config_get(ctl->cfg, "log_level", "info"));
	log_init("bus-relay", level < 0 ? LOG_INFO : (enum log_level)level);
	struct relay r = { .dev_lo = net.base | WG_PEER_FIRST, .dev_hi = net.base | WG_PEER_LAST };
	signal(SIGINT, relay_on_stop);
	signal(SIGTERM, relay_on_stop);
	signal(SIGPIPE, SIG_IGN);
	relay_wait_address(ep, addr);
	int rc = relay_stop ? 0 : relay_open(&r, ctl, ep);
	if (rc == 0)
		rc = relay_loop(&r);
	relay_close(&r);
	return rc;
}
