/*
 * jsonx.c — see jsonx.h.
 */
#include "jsonx.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const envelope_keys[] = {
	"type", "v", "id", "status", "code", "error", "idem", "chunk", NULL,
};

json_t *jx_loadb_new(const void *data, size_t len, size_t max, char *err, size_t errlen)
{
	json_error_t jerr;
	if (len > max) {
		snprintf(err, errlen, "JSON of %zu bytes is over the limit of %zu", len, max);
		return NULL;
	}
	json_t *j = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
	if (j == NULL) {
		snprintf(err, errlen, "bad JSON: %s at byte %d", jerr.text, jerr.position);
		return NULL;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		snprintf(err, errlen, "JSON is not an object");
		return NULL;
	}
	return j;
}

json_t *jx_fields_new(const json_t *env)
{
	json_t *fields = json_copy((json_t *)env);
	if (fields == NULL)
		return json_object();
	for (const char *const *k = envelope_keys; *k != NULL; k++)
		json_object_del(fields, *k);
	return fields;
}

int jx_unpack_fields(const json_t *env, char *err, size_t errlen, const char *fmt, ...)
{
	json_error_t jerr;
	va_list ap;
	json_t *fields = jx_fields_new(env);
	va_start(ap, fmt);
	int rc = json_vunpack_ex(fields, &jerr, JSON_STRICT, fmt, ap);
	va_end(ap);
	if (rc < 0)
		snprintf(err, errlen, "%s", jerr.text);
	/* Strings unpacked point into env's values too (json_copy is shallow),
	 * so they stay valid after fields is released. */
	json_decref(fields);
	return rc;
}

char *jx_dumps(const json_t *json)
{
	char *s = json_dumps(json, JSON_COMPACT);
	if (s == NULL)
		s = xstrdup("null");
	return s;
}
