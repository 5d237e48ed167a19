/*
 * bus.c — roostctl bus tail, bus ping, status.
 *
 * bus tail subscribes to busd's tap (admin only: busd admits roostctl's uid
 * and its own) and prints every envelope as one JSON line; --service keeps
 * the messages of one service, --type those of one type.
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
	fprintf(to, "usage: roostctl bus tail [--service S] [--type T] [--count N]\n"
		"  prints every envelope crossing busd as one JSON line (raw frames omitted)\n"
		"  --count N  stop after N lines\n");
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

static int cmd_tail(struct ctl *ctl, int argc, char **argv)
{
	const char *service = NULL, *type = NULL;
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
		else
			return ctl_fail("bus tail: unknown argument '%s' (try --help)", argv[i]);
	}
	bus_endpoints_t ep;
	if (bus_endpoints_init(&ep, ctl->bus_dir) < 0)
		return ctl_fail("bus directory path too long: %s", ctl->bus_dir);
	if (ctl_bus_present(ctl) != 0)
		return 1;
	void *sub = zmq_socket(bus_zmq_ctx(), ZMQ_SUB);
	int linger = 0;
	zmq_setsockopt(sub, ZMQ_LINGER, &linger, sizeof linger);
	const char *prefix = type ? type : service ? service : "";
	zmq_setsockopt(sub, ZMQ_SUBSCRIBE, prefix, strlen(prefix));
	if (zmq_connect(sub, ep.tap) < 0) {
		zmq_close(sub);
		return ctl_fail("cannot connect to %s: %s", ep.tap, zmq_strerror(zmq_errno()));
	}
	signal(SIGINT, on_stop);
	signal(SIGTERM, on_stop);
	signal(SIGPIPE, on_stop);
	setvbuf(stdout, NULL, _IOLBF, 0);
	char topic[256];
	while (!tail_stop && (count < 0 || seen < count)) {
		zmq_pollitem_t it = { .socket = sub, .events = ZMQ_POLLIN };
		if (zmq_poll(&it, 1, 200) <= 0)
			continue;
		int tn = zmq_recv(sub, topic, sizeof topic - 1, 0);
		if (tn < 0)
			continue;
		topic[tn < (int)sizeof topic - 1 ? tn : (int)sizeof topic - 1] = '\0';
		zmq_msg_t m;
		zmq_msg_init(&m);
		if (zmq_msg_recv(&m, sub, 0) < 0) {
			zmq_msg_close(&m);
			continue;
		}
		if (tail_keep(topic, service, type)) {
			fwrite(zmq_msg_data(&m), 1, zmq_msg_size(&m), stdout);
			fputc('\n', stdout);
			seen++;
		}
		zmq_msg_close(&m);
	}
	zmq_close(sub);
	return 0;
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
			"usage: roostctl bus tail [--service S] [--type T]\n"
			"       roostctl bus ping SERVICE\n");
		return argc < 2 ? 2 : 0;
	}
	if (strcmp(argv[1], "tail") == 0)
		return cmd_tail(ctl, argc - 1, argv + 1);
	if (strcmp(argv[1], "ping") == 0)
		return cmd_ping(ctl, argc - 1, argv + 1);
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
