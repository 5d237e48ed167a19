/*
 * bus.c — roostctl bus tail, bus ping, status.
 *
 * bus tail subscribes to busd's tap (admin only: busd admits roostctl's uid
 * and its own) and prints every envelope as one JSON line; --service keeps
 * the messages of one service, --type those of one type. With --remote it
 * reads the same lines from a bus relay (relay.c) over the WireGuard
 * tunnel instead: a device of wg add-peer has no bus directory.
 */
#include "roostctl.h"
#include "bus.h"
#include "util.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

static volatile sig_atomic_t tail_stop;

static void on_stop(int signo)
{
	(void)signo;
	tail_stop = 1;
}

static int tail_usage(FILE *to)
{
	fprintf(to, "usage: roostctl bus tail [--service S] [--type T] [--count N] [--remote HOST[:PORT]]\n"
		"  prints every envelope crossing busd as one JSON line (raw frames omitted)\n"
		"  --count N   stop after N lines\n"
		"  --remote    from a device over the WireGuard tunnel: the bus relay on\n"
		"              this server's tunnel address (wg add-peer prints it; PORT %d);\n"
		"              gives up after roostctl --timeout MS if no relay answers\n",
		RELAY_DEFAULT_PORT);
	return to == stdout ? 0 : 2;
}

/* True if the tap line (type topic) is one the filters keep. */
static bool tail_keep(const char *type, const char *service, const char *want_type)
{
	if (want_type != NULL && strcmp(type, want_type) != 0)
		return false;
	if (service != NULL) {
		size_t n = strlen(service);
		/* "smtpd" keeps smtpd.* and smtpd.control.* */
		if (strncmp(type, service, n) != 0 || type[n] != '.')
			return false;
	}
	return true;
}

void *monitor_new(void *ctx, void *sock, const char *name)
{
	char ep[96];
	snprintf(ep, sizeof ep, "inproc://%s", name);
	if (zmq_socket_monitor(sock, ep, ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
			       ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) < 0)
		return NULL;
	void *mon = zmq_socket(ctx, ZMQ_PAIR);
	int linger = 0;
	zmq_setsockopt(mon, ZMQ_LINGER, &linger, sizeof linger);
	if (zmq_connect(mon, ep) < 0) {
		zmq_close(mon);
		return NULL;
	}
	return mon;
}

/* A monitor message is [6 bytes: event (16 bits), value (32)][endpoint]. */
int monitor_event(void *mon, int *event)
{
	zmq_msg_t m;
	zmq_msg_init(&m);
	if (zmq_msg_recv(&m, mon, ZMQ_DONTWAIT) < 0) {
		zmq_msg_close(&m);
		return -1;
	}
	uint16_t ev = 0;
	if (zmq_msg_size(&m) >= sizeof ev)
		memcpy(&ev, zmq_msg_data(&m), sizeof ev);
	while (zmq_msg_more(&m) && zmq_msg_recv(&m, mon, 0) >= 0)
		;
	zmq_msg_close(&m);
	*event = ev;
	return 0;
}

/* Where tail reads: busd's tap, or a relay's tcp:// endpoint for --remote
 * HOST[:PORT] (the port defaults to RELAY_DEFAULT_PORT: a device has no
 * roost.conf of this server). 0, or 1 after printing why. */
static int tail_endpoint(const struct ctl *ctl, const char *remote, char *ep, size_t size)
{
	if (remote == NULL) {
		bus_endpoints_t bep;
		if (bus_endpoints_init(&bep, ctl->bus_dir) < 0)
			return ctl_fail("bus directory path too long: %s", ctl->bus_dir);
		if (ctl_bus_present(ctl) != 0)
			return 1;
		snprintf(ep, size, "%s", bep.tap);
		return 0;
	}
	const char *colon = strrchr(remote, ':');
	size_t hl = colon ? (size_t)(colon - remote) : strlen(remote);
	char *end = NULL;
	long port = colon ? strtol(colon + 1, &end, 10) : RELAY_DEFAULT_PORT;
	if (hl == 0 || hl > 253 || strcspn(remote, ";/ ") < hl || (colon && (*end != '\0' || port < 1 || port > 65535)))
		return ctl_fail("bus tail: --remote %s: want HOST or HOST:PORT (the server's tunnel address)", remote);
	snprintf(ep, size, "tcp://%.*s:%ld", (int)hl, remote, port);
	return 0;
}

/* The longest tap line read from a relay: an envelope is at most 64 KiB
 * (BUS.md), busd's header and redaction add little. Longer: the relay's
 * connection is dropped by libzmq. */
#define TAIL_REMOTE_MAX (256 * 1024)

/* One tap message, [type][line]: 1 and the line in m (topic in topic) if
 * it has exactly those two frames, else 0 (the rest of it drained). */
static int tail_recv(void *sub, char topic[256], zmq_msg_t *m)
{
	int tn = zmq_recv(sub, topic, 255, 0);
	if (tn < 0)
		return 0;
	topic[tn < 255 ? tn : 255] = '\0';
	int more = 0;
	size_t ml = sizeof more;
	zmq_getsockopt(sub, ZMQ_RCVMORE, &more, &ml);
	if (!more || zmq_msg_recv(m, sub, 0) < 0)
		return 0;
	if (!zmq_msg_more(m))
		return 1;
	zmq_msg_t extra;
	zmq_msg_init(&extra);
	while (zmq_msg_recv(&extra, sub, 0) >= 0 && zmq_msg_more(&extra))
		;
	zmq_msg_close(&extra);
	return 0;
}

/* Handshake events of the tail's connection: 0 to go on, 1 after printing
 * why it cannot (refused by busd's ZAP or the relay's; a remote end that is
 * not a relay). A handshake cut short (busd restarting) is retried by
 * libzmq. */
static int tail_events(void *mon, const char *ep, bool *connected)
{
	bool remote = strncmp(ep, "tcp:", 4) == 0;
	int ev;
	while (mon != NULL && monitor_event(mon, &ev) == 0) {
		if (ev == ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
			*connected = true;
		else if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
			return ctl_fail("bus tail: %s refused us (%s)", ep, remote ?
					"the relay serves only the devices of wg_net, through the tunnel" :
					"the tap is for roostctl's uid and root: bus_acl");
		else if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL && remote)
			return ctl_fail("bus tail: %s: handshake failed (not a Roost bus relay?)", ep);
	}
	return 0;
}

static int cmd_tail(struct ctl *ctl, int argc, char **argv)
{
	const char *service = NULL, *type = NULL, *remote = NULL;
	long count = -1, seen = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0)
			return tail_usage(stdout);
		else if (strcmp(argv[i], "--service") == 0 && i + 1 < argc)
			service = argv[++i];
		else if (strcmp(argv[i], "--type") == 0 && i + 1 < argc)
			type = argv[++i];
		else if (strcmp(argv[i], "--count") == 0 && i + 1 < argc)
			count = atol(argv[++i]);
		else if (strcmp(argv[i], "--remote") == 0 && i + 1 < argc)
			remote = argv[++i];
		else
			return ctl_fail("bus tail: unknown argument '%s' (try --help)", argv[i]);
	}
	char ep[320];
	if (tail_endpoint(ctl, remote, ep, sizeof ep) != 0)
		return 1;
	void *sub = zmq_socket(bus_zmq_ctx(), ZMQ_SUB);
	int linger = 0;
	zmq_setsockopt(sub, ZMQ_LINGER, &linger, sizeof linger);
	if (remote != NULL) {
		int64_t max = TAIL_REMOTE_MAX;
		zmq_setsockopt(sub, ZMQ_MAXMSGSIZE, &max, sizeof max);
	}
	const char *prefix = type ? type : service ? service : "";
	zmq_setsockopt(sub, ZMQ_SUBSCRIBE, prefix, strlen(prefix));
	void *mon = monitor_new(bus_zmq_ctx(), sub, "roostctl-tail");
	if (zmq_connect(sub, ep) < 0) {
		zmq_close(mon);
		zmq_close(sub);
		return ctl_fail("cannot connect to %s: %s", ep, zmq_strerror(zmq_errno()));
	}
	signal(SIGINT, on_stop);
	signal(SIGTERM, on_stop);
	signal(SIGPIPE, on_stop);
	setvbuf(stdout, NULL, _IOLBF, 0);
	char topic[256];
	int rc = 0;
	bool connected = false;
	int64_t deadline = now_us() + (int64_t)ctl->timeout_ms * 1000;
	while (!tail_stop && (count < 0 || seen < count)) {
		zmq_pollitem_t it[2] = { { .socket = sub, .events = ZMQ_POLLIN },
					 { .socket = mon, .events = ZMQ_POLLIN } };
		zmq_poll(it, mon ? 2 : 1, 200);
		if ((rc = tail_events(mon, ep, &connected)) != 0)
			break;
		/* A relay that does not answer (tunnel down): say so rather than wait. */
		if (remote != NULL && !connected && now_us() > deadline) {
			rc = ctl_fail("bus tail: no answer from the relay at %s within %d ms (tunnel up? "
				      "--timeout MS waits longer)", ep, ctl->timeout_ms);
			break;
		}
		if (!(it[0].revents & ZMQ_POLLIN))
			continue;
		zmq_msg_t m;
		zmq_msg_init(&m);
		/* From a relay, a line is one line: no newline inside it. */
		if (tail_recv(sub, topic, &m) && tail_keep(topic, service, type) &&
		    memchr(zmq_msg_data(&m), '\n', zmq_msg_size(&m)) == NULL) {
			fwrite(zmq_msg_data(&m), 1, zmq_msg_size(&m), stdout);
			fputc('\n', stdout);
			seen++;
		}
		zmq_msg_close(&m);
	}
	zmq_close(mon);
	zmq_close(sub);
	return rc;
}

static int cmd_ping(struct ctl *ctl, int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "--help") == 0) {
		fprintf(argc < 2 ? stderr : stdout,
			"usage: roostctl bus ping SERVICE\n"
			"  round trip through busd to SERVICE.control (control.ping)\n");
		return argc < 2 ? 2 : 0;
	}
	const char *svc = argv[1];
	char type[128], target[128];
	if (snprintf(type, sizeof type, "%s.control.ping", svc) >= (int)sizeof type ||
	    strlen(svc) > BUS_SERVICE_MAX - 8)
		return ctl_fail("service name too long");
	snprintf(target, sizeof target, "%s.control", svc);
	json_t *req = bus_env_new(type);
	int64_t t0 = now_us();
	json_t *reply = ctl_call_new(ctl, target, &req);
	int64_t rtt = now_us() - t0;
	if (reply == NULL)
		return 1;
	json_object_set_new(reply, "rtt_us", json_integer(rtt));
	if (ctl->json) {
		json_dumpf(reply, stdout, JSON_COMPACT);
		fputc('\n', stdout);
	} else {
		printf("%s: pid %lld, up %.1f s, round trip %.3f ms\n", svc,
		       (long long)json_integer_value(json_object_get(reply, "pid")),
		       json_integer_value(json_object_get(reply, "uptime_ms")) / 1000.0, rtt / 1000.0);
	}
	json_decref(reply);
	return 0;
}

int cmd_bus(struct ctl *ctl, int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "--help") == 0) {
		fprintf(argc < 2 ? stderr : stdout,
			"usage: roostctl bus tail [--service S] [--type T] [--count N] [--remote HOST[:PORT]]\n"
			"       roostctl bus ping SERVICE\n"
			"       roostctl bus relay [--listen ADDR:PORT]   (busd's tap for the tunnel's devices)\n");
		return argc < 2 ? 2 : 0;
	}
	if (strcmp(argv[1], "tail") == 0)
		return cmd_tail(ctl, argc - 1, argv + 1);
	if (strcmp(argv[1], "ping") == 0)
		return cmd_ping(ctl, argc - 1, argv + 1);
	if (strcmp(argv[1], "relay") == 0)
		return cmd_relay(ctl, argc - 1, argv + 1);
	return ctl_fail("bus: unknown subcommand '%s' (try roostctl bus --help)", argv[1]);
}

static void status_print(const json_t *reply)
{
	const json_t *me = json_object_get(reply, "busd");
	printf("%-16s %8s %10s %12s %8s\n", "SERVICE", "PID", "UPTIME", "REQUESTS", "INFLIGHT");
	printf("%-16s %8lld %9.0fs %12lld %8s\n", "busd", (long long)json_integer_value(json_object_get(me, "pid")),
	       json_integer_value(json_object_get(me, "uptime_ms")) / 1000.0,
	       (long long)json_integer_value(json_object_get(me, "requests")), "-");
	size_t i, j;
	json_t *svc, *w;
	json_array_foreach(json_object_get(reply, "services"), i, svc) {
		const char *name = json_string_value(json_object_get(svc, "name"));
		json_array_foreach(json_object_get(svc, "workers"), j, w) {
			printf("%-16s %8lld %9.0fs %12lld %8lld\n", name,
			       (long long)json_integer_value(json_object_get(w, "pid")),
			       json_integer_value(json_object_get(w, "uptime_ms")) / 1000.0,
			       (long long)json_integer_value(json_object_get(w, "requests")),
			       (long long)json_integer_value(json_object_get(w, "inflight")));
		}
	}
}

int cmd_status(struct ctl *ctl, int argc, char **argv)
{
	(void)argv;
	if (argc > 1) {
		fprintf(strcmp(argv[1], "--help") == 0 ? stdout : stderr,
			"usage: roostctl status\n"
			"  every service registered with busd: one line per replica with its pid,\n"
			"  uptime, requests served and requests in flight\n");
		return strcmp(argv[1], "--help") == 0 ? 0 : 2;
	}
	json_t *req = bus_env_new("busd.status.get");
	json_t *reply = ctl_call_new(ctl, "busd", &req);
	if (reply == NULL)
		return 1;
	if (ctl->json) {
		json_dumpf(reply, stdout, JSON_COMPACT);
		fputc('\n', stdout);
	} else {
		status_print(reply);
	}
	json_decref(reply);
	return 0;
}
