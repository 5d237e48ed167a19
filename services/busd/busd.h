/*
 * busd.h — the bus broker (DESIGN.md "The bus").
 *
 *   broker.c  clients and workers: registration, credit-based load
 *             balancing, queueing while no worker is ready, stream affinity,
 *             heartbeats, busd's own requests (busd.status.get, control)
 *   events.c  the events proxy (XSUB in, XPUB out) with publisher checks
 *   tap.c     the tap: every envelope mirrored as one JSON line
 *   zap.c     peer identity: ZAP handler mapping Unix credentials to roles
 */
#ifndef ROOST_BUSD_H
#define ROOST_BUSD_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "bus.h"
#include "frame.h"
#include "loop.h"

/* ---- zap.c ---- */
typedef struct zap zap_t;
/* Parses bus_acl ("uid=role, uid=role"); -1 with err on a bad entry. */
zap_t *zap_new(loop_t *loop, const char *acl, char *err, size_t errlen);
void zap_free(zap_t **z);
/* Replaces the ACL (on reload); the old one stays on error. New
 * connections get the new roles; existing ones keep theirs. */
int zap_set_acl(zap_t *z, const char *acl, char *err, size_t errlen);
/* Sets the ZAP domain on a socket so that its peers get a role. */
void zap_protect(void *sock, const char *domain);
/* The role for a uid (exposed for tests): "*", a service, "roostctl" or "". */
const char *zap_role_for(const zap_t *z, uid_t uid);

/* ---- tap.c ---- */
typedef struct tap tap_t;
tap_t *tap_new(loop_t *loop, const char *endpoint);
/* True while someone subscribes: only then is mirroring worth any work. */
bool tap_active(const tap_t *t);
void tap_free(tap_t **t);
/* Mirrors one envelope (bytes as on the wire; parsed copy for redaction). */
void tap_mirror(tap_t *t, const char *dir, const char *from, const char *service,
		const char *type, const void *env, size_t envlen, const json_t *parsed,
		size_t rawlen);

/* ---- events.c ---- */
typedef struct events events_t;
events_t *events_new(loop_t *loop, const bus_endpoints_t *ep, tap_t *tap);
void events_free(events_t **e);
/* Publishes an event of busd's own (worker joined/left); *ev stolen. */
void events_publish_own(events_t *e, json_t **ev);
uint64_t events_count(const events_t *e);

/* ---- broker.c ---- */
typedef struct broker broker_t;
broker_t *broker_new(loop_t *loop, const bus_endpoints_t *ep, tap_t *tap, events_t *ev,
		     int queue_timeout_ms);
void broker_free(broker_t **b);
/* What busd.control.reload runs (main.c: re-read roost.conf, new ACL). */
typedef int (*broker_reload_fn)(void *arg, char *err, size_t errlen);
void broker_on_reload(broker_t *b, broker_reload_fn fn, void *arg);

#endif
