/*
 * zapreq.h — one ZAP request (ZeroMQ RFC 27) as a handler reads and
 * answers it: busd's (services/busd/zap.c, peers by Unix credentials) and
 * the bus relay's (tools/roostctl/relay.c, peers by TCP address).
 *
 * A request is version, request id, domain, address, identity, mechanism
 * and the mechanism's credentials; frames beyond ZAPREQ_FRAMES are read and
 * dropped (libzmq sends none for NULL). The frames live in the request
 * until zapreq_close.
 */
#ifndef ROOST_ZAPREQ_H
#define ROOST_ZAPREQ_H

#include <stdbool.h>
#include <stddef.h>
#include <zmq.h>

#define ZAPREQ_FRAMES 8

enum { ZAPREQ_VERSION, ZAPREQ_ID, ZAPREQ_DOMAIN, ZAPREQ_ADDRESS, ZAPREQ_IDENTITY, ZAPREQ_MECHANISM };

typedef struct zapreq {
	zmq_msg_t part[ZAPREQ_FRAMES];
	int n;
} zapreq_t;

/* Reads one request from the handler's REP socket without waiting: 0 if
 * it has the six frames of a request, else -1 (nothing to answer). Call
 * zapreq_close in both cases. */
int zapreq_recv(zapreq_t *r, void *sock);
/* Frame i's bytes (borrowed) and their length. */
const char *zapreq_frame(const zapreq_t *r, int i, size_t *len);
/* True if the request's domain is the NUL-terminated domain. */
bool zapreq_domain_is(const zapreq_t *r, const char *domain);
/* Answers it: code "200" (with user, the user id stamped on the peer's
 * messages) or "400" with a reason. */
void zapreq_answer(zapreq_t *r, void *sock, const char *code, const char *text, const char *user);
void zapreq_close(zapreq_t *r);

#endif
