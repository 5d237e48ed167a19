/*
 * config.h — roost.conf: `key = value` lines, `#` comments, blank lines.
 *
 * Every key may be overridden by the environment variable ROOST_<KEY>
 * (upper case). The file is found at $ROOST_CONFIG, else ./roost.conf,
 * else /etc/roost/roost.conf; no file at all is fine (defaults apply), but a
 * file named by ROOST_CONFIG must exist. Unknown keys, malformed lines and
 * duplicate keys are errors that name the file and line.
 */
#ifndef ROOST_CONFIG_H
#define ROOST_CONFIG_H

#include <stddef.h>

typedef struct config config_t;

/*
 * Loads path (or, when NULL, the default search above). On error returns
 * NULL and writes a one-line reason ("roost.conf:12: ...") into err.
 */
config_t *config_load(const char *path, char *err, size_t errlen);
/* An empty configuration: only environment and defaults. */
config_t *config_new_empty(void);
void config_free(config_t **cfg);

/* The path that was read, or NULL if no file was found. Borrowed. */
const char *config_path(const config_t *cfg);

/* ROOST_<KEY> if set, else the file's value, else def. Borrowed. */
const char *config_get(const config_t *cfg, const char *key, const char *def);

/*
 * Integer value in [min, max]; def if unset. On a bad value returns -1 and
 * writes "ROOST_X: ..." or "roost.conf:3: ..." into err.
 */
int config_get_int(const config_t *cfg, const char *key, long def, long min,
		   long max, long *out, char *err, size_t errlen);

/*
 * Well-known derived values (DESIGN.md "Interfaces"): data_dir defaults to
 * ./var, bus_dir to <data_dir>/bus. Borrowed, valid until config_free.
 */
const char *config_data_dir(const config_t *cfg);
const char *config_bus_dir(const config_t *cfg);

#endif
