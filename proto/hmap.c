/*
 * hmap.c — see hmap.h. FNV-1a hash; load factor kept under 1.
 */
#include "hmap.h"
#include "util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct entry {
	struct entry *next;
	uint64_t hash;
	void *value;
	size_t klen;
	unsigned char key[];
};

struct hmap {
	struct entry **buckets;
	size_t nbuckets, count;
};

static uint64_t fnv1a(const void *key, size_t len)
{
	const unsigned char *p = key;
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 1099511628211ULL;
	}
	return h;
}

hmap_t *hmap_new(void)
{
	hmap_t *m = xcalloc(1, sizeof *m);
	m->nbuckets = 16;
	m->buckets = xcalloc(m->nbuckets, sizeof *m->buckets);
	return m;
}

void hmap_free(hmap_t **mp)
{
	hmap_t *m = *mp;
	if (m == NULL)
		return;
	for (size_t i = 0; i < m->nbuckets; i++) {
		struct entry *e = m->buckets[i];
		while (e != NULL) {
			struct entry *next = e->next;
			free(e);
			e = next;
		}
	}
	free(m->buckets);
	free(m);
	*mp = NULL;
}

static void hmap_grow(hmap_t *m)
{
	size_t nb = m->nbuckets * 2;
	struct entry **b = xcalloc(nb, sizeof *b);
	for (size_t i = 0; i < m->nbuckets; i++) {
		struct entry *e = m->buckets[i];
		while (e != NULL) {
			struct entry *next = e->next;
			e->next = b[e->hash & (nb - 1)];
			b[e->hash & (nb - 1)] = e;
			e = next;
		}
	}
	free(m->buckets);
	m->buckets = b;
	m->nbuckets = nb;
}

static struct entry **hmap_slot(const hmap_t *m, const void *key, size_t klen, uint64_t h)
{
	struct entry **pp = &m->buckets[h & (m->nbuckets - 1)];
	for (; *pp != NULL; pp = &(*pp)->next)
		if ((*pp)->hash == h && (*pp)->klen == klen && memcmp((*pp)->key, key, klen) == 0)
			break;
	return pp;
}

void hmap_put(hmap_t *m, const void *key, size_t klen, void *value)
{
	uint64_t h = fnv1a(key, klen);
	struct entry **pp = hmap_slot(m, key, klen, h);
	if (*pp != NULL) {
		(*pp)->value = value;
		return;
	}
	if (m->count + 1 > m->nbuckets) {
		hmap_grow(m);
		pp = hmap_slot(m, key, klen, h);
	}
	struct entry *e = xmalloc(sizeof *e + klen);
	e->next = NULL;
	e->hash = h;
	e->value = value;
	e->klen = klen;
	memcpy(e->key, key, klen);
	*pp = e;
	m->count++;
}

void *hmap_get(const hmap_t *m, const void *key, size_t klen)
{
	struct entry **pp = hmap_slot(m, key, klen, fnv1a(key, klen));
	return *pp ? (*pp)->value : NULL;
}

void *hmap_del(hmap_t *m, const void *key, size_t klen)
{
	struct entry **pp = hmap_slot(m, key, klen, fnv1a(key, klen));
	struct entry *e = *pp;
	if (e == NULL)
		return NULL;
	void *v = e->value;
	*pp = e->next;
	free(e);
	m->count--;
	return v;
}

size_t hmap_count(const hmap_t *m)
{
	return m->count;
}

void hmap_each(const hmap_t *m, hmap_iter_fn fn, void *arg)
{
	for (size_t i = 0; i < m->nbuckets; i++)
		for (struct entry *e = m->buckets[i]; e != NULL; e = e->next)
			if (fn(e->key, e->klen, e->value, arg) != 0)
				return;
}
