/*
 * jsonx.h — jansson helpers with Roost's ownership rules (see bus.h):
 * *_new returns a new reference; `json_t **` parameters are stolen.
 *
 * Untrusted bytes are parsed with jx_loadb_new (duplicates rejected, size
 * bounded); a handler checks its fields with one strict jx_unpack_fields
 * (unknown keys rejected), as STYLE.md asks.
 */
#ifndef ROOST_JSONX_H
#define ROOST_JSONX_H

#include <jansson.h>
#include <stddef.h>

/* Parses at most max bytes of untrusted JSON that must be an object. NULL
 * with a one-line reason in err. */
json_t *jx_loadb_new(const void *data, size_t len, size_t max, char *err, size_t errlen);

/* A copy of a message's own fields: the envelope without type, v, id,
 * status, code, error, idem and chunk. New reference. */
json_t *jx_fields_new(const json_t *env);

/*
 * Strict json_unpack_ex of a message's own fields (JSON_STRICT: a key the
 * format does not name is an error). 0, or -1 with jansson's reason in err.
 */
int jx_unpack_fields(const json_t *env, char *err, size_t errlen, const char *fmt, ...);

/* Compact serialisation; the caller frees the string. */
char *jx_dumps(const json_t *json);

#endif
