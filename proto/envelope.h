/*
 * envelope.h — parsing and checking the JSON envelope frame against the
 * message-type table generated from proto/schemas/ (msgtypes.h).
 *
 * What is checked here is the header every message shares (type known, v,
 * id, status, idem, chunk) and who may send it; each handler then checks its
 * own fields with one strict json_unpack_ex.
 */
#ifndef ROOST_ENVELOPE_H
#define ROOST_ENVELOPE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "msgtypes.h"

enum env_kind { ENV_REQUEST, ENV_REPLY, ENV_EVENT };

typedef struct envelope {
	json_t *root;                   /* owned; NULL after envelope_clear */
	const struct msgtype *mt;       /* table entry of type */
	const char *type, *id, *status, *idem;  /* borrowed from root */
	bool has_chunk;
	const char *stream;             /* chunk.stream, borrowed */
	int64_t seq;
	bool last;
} envelope_t;

/*
 * Parses len bytes as an envelope of the given kind. Returns 0, or -1 with
 * *code ("malformed", "unknown_type", "too_large") and a one-line reason in
 * err. On failure e->root may still hold the parsed JSON (for its id):
 * call envelope_clear either way.
 */
int envelope_parse(envelope_t *e, const void *data, size_t len, enum env_kind kind,
		   const char **code, char *err, size_t errlen);
void envelope_clear(envelope_t *e);

/* The table entry for a wire type name ("smtpd.control.ping" finds
 * "*.control.ping"), or NULL. */
const struct msgtype *msgtype_find(const char *type);

/* The service a request of this type is routed to: "echo" for
 * "echo.payload.echo", "smtpd.control" for "smtpd.control.ping". -1 if the
 * type has no service part or it does not fit. */
int msgtype_route(const char *type, char *service, size_t size);

/* True if a peer with this bus role may send (call or publish) mt. Role
 * "*" is trusted with everything (busd's own uid); "" and "-" (an unknown
 * uid) may send nothing. */
bool msgtype_caller_ok(const struct msgtype *mt, const char *role);

/* True if the table knows service ("echo", "busd", or "<known>.control"). */
bool msg_service_known(const char *service);

/* True if a peer with this role may register as a worker of service. */
bool msg_register_ok(const char *service, const char *role);

#endif
