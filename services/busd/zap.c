/*
 * zap.c — who is on the other end of a bus socket.
 *
 * Every bus socket busd binds is ipc://, so the kernel knows the peer's
 * uid, gid and pid (SO_PEERCRED); libzmq hands them to the ZAP handler as
 * the address "...:uid:gid:pid". We map the uid to a role through bus_acl
 * and answer with the role as ZAP user id: libzmq then stamps it on every
 * message from that connection ("User-Id" metadata), which broker.c and
 * events.c check against the message-type table.
 *
 * Roles: "*" (trusted: busd's own uid and root; the whole `make run` stack
 * runs as one uid, and a process with busd's uid could replace busd anyway),
 * a service name (containers give each service its own uid), "roostctl"
 * (admin), or "" (unknown uid: connected, but allowed nothing — a clear
 * "forbidden" beats a silent refusal; on the events sockets, which have no
 * replies, it is refused). The tap domain admits only "*", "roostctl" and
 * "tap": it shows every envelope. "tap" is the bus relay's role (roostctl
 * bus relay, which serves the tap to the tunnel's devices): the tap and
 * nothing else, so that the one bus client listening on a network holds no
 * admin power. No service is named "tap".
 */
#include "busd.h"
#include "log.h"
#include "util.h"
#include "zapreq.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#define ZAP_MAX_ENTRIES 64

void *bus_socket_new(int type);

struct acl_entry {
	uid_t uid;
	char role[BUS_SERVICE_MAX + 1];
};

struct zap {
	loop_t *loop;
	void *sock;
	struct acl_entry acl[ZAP_MAX_ENTRIES];
	int nacl;
	uint64_t allowed, denied;
};

/* Parses "uid=role, uid=role". */
static int zap_parse_acl(zap_t *z, const char *acl, char *err, size_t errlen)
{
	char *copy = xstrdup(acl), *save = NULL;
	int rc = 0;
	for (char *tok = strtok_r(copy, ", \t", &save); tok != NULL; tok = strtok_r(NULL, ", \t", &save)) {
		char *eq = strchr(tok, '=');
		char *end = NULL;
		unsigned long uid = eq ? strtoul(tok, &end, 10) : 0;
		if (eq == NULL || end != eq || eq == tok || uid > 0x7fffffffUL || z->nacl == ZAP_MAX_ENTRIES ||
		    strlen(eq + 1) == 0 || strlen(eq + 1) > BUS_SERVICE_MAX) {
			snprintf(err, errlen, "bus_acl: bad entry '%s' (want uid=role)", tok);
			rc = -1;
			break;
		}
		z->acl[z->nacl].uid = (uid_t)uid;
		snprintf(z->acl[z->nacl].role, sizeof z->acl[z->nacl].role, "%s", eq + 1);
		z->nacl++;
	}
	free(copy);
	return rc;
}

int zap_set_acl(zap_t *z, const char *acl, char *err, size_t errlen)
{
	zap_t tmp = { .nacl = 0 };
	if (zap_parse_acl(&tmp, acl, err, errlen) < 0)
		return -1;
	memcpy(z->acl, tmp.acl, sizeof z->acl);
	z->nacl = tmp.nacl;
	return 0;
}

const char *zap_role_for(const zap_t *z, uid_t uid)
{
	for (int i = 0; i < z->nacl; i++)
		if (z->acl[i].uid == uid)
			return z->acl[i].role;
	if (uid == 0 || uid == geteuid())
		return "*";
	return "";
}

/* Reads uid from "host:uid:gid:pid" (the last three fields). */
static int zap_peer_uid(const char *addr, size_t len, uid_t *uid, long *pid)
{
	char buf[128];
	if (len >= sizeof buf)
		return -1;
	memcpy(buf, addr, len);
	buf[len] = '\0';
	char *p3 = strrchr(buf, ':');
	if (p3 == NULL)
		return -1;
	*p3 = '\0';
	char *p2 = strrchr(buf, ':');
	if (p2 == NULL)
		return -1;
	*p2 = '\0';
	char *p1 = strrchr(buf, ':');
	if (p1 == NULL)
		return -1;
	*uid = (uid_t)strtoul(p1 + 1, NULL, 10);
	*pid = strtol(p3 + 1, NULL, 10);
	return 0;
}

/* One ZAP request: version, request id, domain, address, identity, mechanism. */
static void zap_handle(zap_t *z)
{
	zapreq_t req;
	if (zapreq_recv(&req, z->sock) < 0) {
		zapreq_close(&req);
		return;
	}
	uid_t uid = (uid_t)-1;
	long pid = 0;
	size_t alen;
	const char *addr = zapreq_frame(&req, ZAPREQ_ADDRESS, &alen);
	bool tap = zapreq_domain_is(&req, "tap");
	bool events = zapreq_domain_is(&req, "events");
	const char *role = "";
	if (zap_peer_uid(addr, alen, &uid, &pid) == 0)
		role = zap_role_for(z, uid);
	/* "tap" reads the tap and nothing else: elsewhere it is an unknown uid. */
	if (!tap && strcmp(role, "tap") == 0)
		role = "";
	if (tap && strcmp(role, "*") != 0 && strcmp(role, "roostctl") != 0 && strcmp(role, "tap") != 0) {
		z->denied++;
		log_warn("zap.denied", "domain=tap uid=%ld pid=%ld why=\"tap is for roostctl only\"", (long)uid, pid);
		zapreq_answer(&req, z->sock, "400", "tap is for roostctl only", "");
	} else if (events && role[0] == '\0') {
		/* Requests from an unknown uid get a "forbidden" reply; events
		 * have no reply to carry one, so the connection is refused. */
		z->denied++;
		log_warn("zap.denied", "domain=events uid=%ld pid=%ld why=\"uid has no bus role\"", (long)uid, pid);
		zapreq_answer(&req, z->sock, "400", "uid has no bus role", "");
	} else {
		z->allowed++;
		log_debug("zap.allowed", "uid=%ld pid=%ld role=%s addr=%.*s", (long)uid, pid, role[0] ? role : "-", (int)alen, addr);
		zapreq_answer(&req, z->sock, "200", "OK", role[0] ? role : "-");
	}
	zapreq_close(&req);
}

static void zap_ready(loop_t *loop, void *zsock, int fd, short revents, void *arg)
{
	(void)loop; (void)zsock; (void)fd; (void)revents;
	zap_t *z = arg;
	int events;
	size_t sz = sizeof events;
	for (int i = 0; i < 64; i++) {
		if (zmq_getsockopt(z->sock, ZMQ_EVENTS, &events, &sz) < 0 || !(events & ZMQ_POLLIN))
			break;
		zap_handle(z);
	}
}

zap_t *zap_new(loop_t *loop, const char *acl, char *err, size_t errlen)
{
	zap_t *z = xcalloc(1, sizeof *z);
	if (acl != NULL && zap_parse_acl(z, acl, err, errlen) < 0) {
		free(z);
		return NULL;
	}
	z->loop = loop;
	z->sock = bus_socket_new(ZMQ_REP);
	if (zmq_bind(z->sock, "inproc://zeromq.zap.01") < 0) {
		snprintf(err, errlen, "cannot bind ZAP handler: %s", zmq_strerror(errno));
		zmq_close(z->sock);
		free(z);
		return NULL;
	}
	loop_add_zsock(loop, z->sock, ZMQ_POLLIN, zap_ready, z);
	return z;
}

void zap_free(zap_t **zp)
{
	zap_t *z = *zp;
	if (z == NULL)
		return;
	loop_remove(z->loop, z->sock, -1);
	zmq_close(z->sock);
	free(z);
	*zp = NULL;
}

void zap_protect(void *sock, const char *domain)
{
	zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, domain, strlen(domain));
}
