/*
 * envelope.c — see envelope.h.
 */
#include "envelope.h"
#include "bus.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

/* Printable ASCII without space: ids and keys end up in logs unquoted. */
static bool token_ok(const char *s, size_t max)
{
	size_t n = 0;
	for (; s[n] != '\0'; n++)
		if ((unsigned char)s[n] < 0x21 || (unsigned char)s[n] > 0x7e || n >= max)
			return false;
	return n > 0;
}

const struct msgtype *msgtype_find(const char *type)
{
	char wild[128];
	const char *dot = strchr(type, '.');
	/* "*.control.ping" names a table row, never a message. */
	if (type[0] == '*')
		return NULL;
	for (int i = 1; i < MSG__COUNT; i++)
		if (strcmp(msgtypes[i].name, type) == 0)
			return &msgtypes[i];
	/* Per-service types (control) are listed once as "*.noun.verb". */
	if (dot == NULL || dot == type || snprintf(wild, sizeof wild, "*%s", dot) >= (int)sizeof wild)
		return NULL;
	for (int i = 1; i < MSG__COUNT; i++)
		if (strcmp(msgtypes[i].name, wild) == 0)
			return &msgtypes[i];
	return NULL;
}

int msgtype_route(const char *type, char *service, size_t size)
{
	const char *dot = strchr(type, '.');
	if (dot == NULL || dot == type)
		return -1;
	size_t n = (size_t)(dot - type);
	if (strncmp(dot, ".control.", 9) == 0)
		n += 8;
	if (n >= size)
		return -1;
	memcpy(service, type, n);
	service[n] = '\0';
	return 0;
}

/* "" and "-" (what ZAP gives an unknown uid) are no role at all. */
static bool role_none(const char *role)
{
	return role == NULL || role[0] == '\0' || strcmp(role, "-") == 0;
}

bool msgtype_caller_ok(const struct msgtype *mt, const char *role)
{
	if (role_none(role))
		return false;
	if (strcmp(role, "*") == 0)
		return true;
	for (const char *const *c = mt->callers; c != NULL && *c != NULL; c++)
		if (strcmp(*c, "*") == 0 || strcmp(*c, role) == 0)
			return true;
	return false;
}

bool msg_service_known(const char *service)
{
	char base[BUS_SERVICE_MAX + 1];
	size_t n = strlen(service);
	if (n > 8 && strcmp(service + n - 8, ".control") == 0)
		n -= 8;
	if (n > BUS_SERVICE_MAX)
		return false;
	memcpy(base, service, n);
	base[n] = '\0';
	if (strcmp(base, "busd") == 0)
		return true;
	for (const char *const *s = msg_services; *s != NULL; s++)
		if (strcmp(*s, base) == 0)
			return true;
	return false;
}

bool msg_register_ok(const char *service, const char *role)
{
	size_t n = strlen(service);
	size_t rn = role ? strlen(role) : 0;
	if (role_none(role) || !msg_service_known(service))
		return false;
	/* busd answers its own service: nobody registers it. */
	if (strncmp(service, "busd", 4) == 0 && (service[4] == '\0' || service[4] == '.'))
		return false;
	if (strcmp(role, "*") == 0)
		return true;
	/* A role registers its own name and its own control worker. */
	return strncmp(service, role, rn) == 0 && (n == rn || strcmp(service + rn, ".control") == 0);
}

static int env_fail(const char **code, const char *c, char *err, size_t errlen, const char *why)
{
	*code = c;
	snprintf(err, errlen, "%s", why);
	return -1;
}

/* Checks chunk {stream, seq, last}. */
static int env_chunk(envelope_t *e, json_t *chunk, const char **code, char *err, size_t errlen)
{
	json_t *stream, *seq, *last;
	if (!json_is_object(chunk) || json_object_size(chunk) != 3)
		return env_fail(code, "malformed", err, errlen, "chunk must be {stream, seq, last}");
	stream = json_object_get(chunk, "stream");
	seq = json_object_get(chunk, "seq");
	last = json_object_get(chunk, "last");
	if (!json_is_string(stream) || !token_ok(json_string_value(stream), BUS_ID_MAX) ||
	    !json_is_integer(seq) || json_integer_value(seq) < 0 ||
	    json_integer_value(seq) > 1000000 || !json_is_boolean(last))
		return env_fail(code, "malformed", err, errlen, "bad chunk stream, seq or last");
	if (!(e->mt->flags & MSGF_STREAM))
		return env_fail(code, "malformed", err, errlen, "type does not stream");
	e->has_chunk = true;
	e->stream = json_string_value(stream);
	e->seq = json_integer_value(seq);
	e->last = json_is_true(last);
	return 0;
}

/* Checks status, code, error on a reply. */
static int env_status(envelope_t *e, const char **code, char *err, size_t errlen)
{
	json_t *st = json_object_get(e->root, "status");
	if (!json_is_string(st))
		return env_fail(code, "malformed", err, errlen, "reply without status");
	e->status = json_string_value(st);
	if (strcmp(e->status, "ok") != 0 && strcmp(e->status, "error") != 0 &&
	    strcmp(e->status, "invalid") != 0)
		return env_fail(code, "malformed", err, errlen, "status must be ok, error or invalid");
	return 0;
}

int envelope_parse(envelope_t *e, const void *data, size_t len, enum env_kind kind,
		   const char **code, char *err, size_t errlen)
{
	json_error_t jerr;
	memset(e, 0, sizeof *e);
	if (len > BUS_ENVELOPE_MAX)
		return env_fail(code, "too_large", err, errlen, "envelope too large");
	e->root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
	if (e->root == NULL) {
		*code = "malformed";
		snprintf(err, errlen, "bad JSON: %s at byte %d", jerr.text, jerr.position);
		return -1;
	}
	if (!json_is_object(e->root))
		return env_fail(code, "malformed", err, errlen, "envelope is not a JSON object");
	json_t *id = json_object_get(e->root, "id");
	if (json_is_string(id) && token_ok(json_string_value(id), BUS_ID_MAX))
		e->id = json_string_value(id);
	json_t *type = json_object_get(e->root, "type");
	json_t *v = json_object_get(e->root, "v");
	if (!json_is_string(type))
		return env_fail(code, "malformed", err, errlen, "envelope has no type");
	e->type = json_string_value(type);
	if (e->id == NULL)
		return env_fail(code, "malformed", err, errlen, "envelope has no valid id");
	if (!json_is_integer(v) || json_integer_value(v) != BUS_PROTOCOL_VERSION)
		return env_fail(code, "malformed", err, errlen, "unsupported protocol version v");
	e->mt = msgtype_find(e->type);
	if (e->mt == NULL)
		return env_fail(code, "unknown_type", err, errlen, "unknown message type");
	if ((kind == ENV_EVENT) != (e->mt->kind == MSGK_EVENT))
		return env_fail(code, "malformed", err, errlen,
				kind == ENV_EVENT ? "not an event type" : "an event type sent as a request");
	if (kind == ENV_REQUEST && e->mt->kind == MSGK_REPLY)
		return env_fail(code, "malformed", err, errlen, "a reply-only type sent as a request");
	if (kind == ENV_REPLY && env_status(e, code, err, errlen) < 0)
		return -1;
	if (kind == ENV_REQUEST && json_object_get(e->root, "status") != NULL)
		return env_fail(code, "malformed", err, errlen, "request carries a status");
	json_t *idem = json_object_get(e->root, "idem");
	if (idem != NULL) {
		if (!json_is_string(idem) || !token_ok(json_string_value(idem), BUS_IDEM_MAX))
			return env_fail(code, "malformed", err, errlen, "bad idempotency key");
		e->idem = json_string_value(idem);
	}
	if (kind == ENV_REQUEST && (e->mt->flags & MSGF_IDEMPOTENT) && e->idem == NULL)
		return env_fail(code, "malformed", err, errlen, "state-changing request without idem");
	json_t *chunk = json_object_get(e->root, "chunk");
	if (chunk != NULL && env_chunk(e, chunk, code, err, errlen) < 0)
		return -1;
	return 0;
}

void envelope_clear(envelope_t *e)
{
	json_decref(e->root);
	memset(e, 0, sizeof *e);
}
