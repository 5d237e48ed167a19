/*
 * hmap.h — a small hash map from byte-string keys to pointers (chained,
 * grows by doubling). Keys are copied; values are borrowed.
 */
#ifndef ROOST_HMAP_H
#define ROOST_HMAP_H

#include <stddef.h>

typedef struct hmap hmap_t;

hmap_t *hmap_new(void);
/* Frees the map (not the values) and nulls the pointer. */
void hmap_free(hmap_t **m);
/* Inserts or replaces. */
void hmap_put(hmap_t *m, const void *key, size_t klen, void *value);
void *hmap_get(const hmap_t *m, const void *key, size_t klen);
/* Removes and returns the value, or NULL. */
void *hmap_del(hmap_t *m, const void *key, size_t klen);
size_t hmap_count(const hmap_t *m);

/* Iteration: fn may not change the map; return non-zero to stop. */
typedef int (*hmap_iter_fn)(const void *key, size_t klen, void *value, void *arg);
void hmap_each(const hmap_t *m, hmap_iter_fn fn, void *arg);

#endif
