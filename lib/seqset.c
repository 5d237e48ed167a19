/*
 * seqset.c — see seqset.h.
 */
#include "seqset.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int seqset_cmp(const void *a, const void *b)
{
	const struct seq_range *x = a, *y = b;
	return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Sorts and merges overlapping or adjacent ranges. */
static void seqset_normalize(seqset_t *set)
{
	if (set->n == 0)
		return;
	qsort(set->r, set->n, sizeof set->r[0], seqset_cmp);
	size_t o = 0;
	for (size_t i = 1; i < set->n; i++) {
		if ((uint64_t)set->r[i].lo <= (uint64_t)set->r[o].hi + 1) {
			if (set->r[i].hi > set->r[o].hi)
				set->r[o].hi = set->r[i].hi;
		} else {
			set->r[++o] = set->r[i];
		}
	}
	set->n = o + 1;
}

int seqset_add(seqset_t *set, uint32_t lo, uint32_t hi)
{
	if (lo > hi) {
		uint32_t t = lo;
		lo = hi, hi = t;
	}
	if (set->n > 0 && (uint64_t)lo <= (uint64_t)set->r[set->n - 1].hi + 1 &&
	    lo >= set->r[set->n - 1].lo) {
		if (hi > set->r[set->n - 1].hi)
			set->r[set->n - 1].hi = hi;  /* the common case: in order */
		return 0;
	}
	if (set->n == SEQSET_RANGES_MAX) {
		seqset_normalize(set);
		if (set->n == SEQSET_RANGES_MAX)
			return -1;
	}
	set->r[set->n].lo = lo;
	set->r[set->n].hi = hi;
	set->n++;
	if (set->n > 1 && lo < set->r[set->n - 2].lo)
		seqset_normalize(set);
	return 0;
}

/* One number or "*" at *sp: 1 with *v set, 0 for "*", -1 if neither. */
static int seqset_num(const char **sp, uint32_t star, uint32_t *v)
{
	const char *s = *sp;
	if (*s == '*') {
		*sp = s + 1;
		*v = star;
		return 0;
	}
	if (*s < '1' || *s > '9')
		return -1;
	uint64_t n = 0;
	while (*s >= '0' && *s <= '9') {
		n = n * 10 + (uint64_t)(*s++ - '0');
		if (n > UINT32_MAX)
			return -1;
	}
	*sp = s;
	*v = (uint32_t)n;
	return 1;
}

int seqset_parse(seqset_t *set, const char *s, uint32_t star, const char **why)
{
	set->n = 0;
	if (strlen(s) > SEQSET_TEXT_MAX) {
		*why = "set too long";
		return -1;
	}
	if (*s == '\0') {
		*why = "empty set";
		return -1;
	}
	for (;;) {
		uint32_t lo, hi;
		int a = seqset_num(&s, star, &lo), b = a;
		hi = lo;
		if (a >= 0 && *s == ':') {
			s++;
			b = seqset_num(&s, star, &hi);
		}
		if (a < 0 || b < 0) {
			*why = "bad number in set (1..4294967295 or *)";
			return -1;
		}
		/* "*" on an empty mailbox (star 0) matches nothing. */
		if (!(star == 0 && (a == 0 || b == 0)) && seqset_add(set, lo, hi) < 0) {
			*why = "too many ranges in set";
			return -1;
		}
		if (*s == '\0')
			break;
		if (*s++ != ',') {
			*why = "bad character in set";
			return -1;
		}
	}
	seqset_normalize(set);
	return 0;
}

int seqset_format(const seqset_t *set, char *out, size_t cap)
{
	size_t o = 0;
	if (cap == 0)
		return -1;
	out[0] = '\0';
	for (size_t i = 0; i < set->n; i++) {
		char piece[32];
		int n = set->r[i].lo == set->r[i].hi
			? snprintf(piece, sizeof piece, "%s%u", i ? "," : "", set->r[i].lo)
			: snprintf(piece, sizeof piece, "%s%u:%u", i ? "," : "", set->r[i].lo,
				   set->r[i].hi);
		if (o + (size_t)n + 1 > cap)
			return -1;
		memcpy(out + o, piece, (size_t)n + 1);
		o += (size_t)n;
	}
	return (int)o;
}

/* ---- uidlist ---------------------------------------------------------- */

static size_t seqset_digits(uint32_t v)
{
	size_t n = 1;
	while (v >= 10)
		v /= 10, n++;
	return n;
}

/* The text of one range: "lo" or "lo:hi". */
static size_t uidlist_range_len(const struct seq_range *r)
{
	return seqset_digits(r->lo) + (r->hi > r->lo ? 1 + seqset_digits(r->hi) : 0);
}

void uidlist_add(uidlist_t *l, uint32_t uid)
{
	l->count++;
	if (l->n > 0 && l->r[l->n - 1].hi + 1 == uid) {
		struct seq_range *r = &l->r[l->n - 1];
		l->textlen -= uidlist_range_len(r);
		r->hi = uid;
		l->textlen += uidlist_range_len(r);
		return;
	}
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 16;
		l->r = realloc(l->r, l->cap * sizeof *l->r);
		if (l->r == NULL)
			abort();  /* out of memory: as xrealloc does */
	}
	l->r[l->n].lo = l->r[l->n].hi = uid;
	l->textlen += seqset_digits(uid) + (l->n > 0);
	l->n++;
}

uint32_t uidlist_range_lo(const uidlist_t *l, size_t i)
{
	return l->r[i].lo;
}

uint64_t uidlist_format(const uidlist_t *l, size_t *pos, char *out, size_t cap)
{
	size_t o = 0, i = *pos;
	uint64_t uids = 0;
	if (cap == 0)
		return 0;
	out[0] = '\0';
	for (; i < l->n; i++) {
		const struct seq_range *r = &l->r[i];
		size_t need = uidlist_range_len(r) + (o > 0);
		if (o + need + 1 > cap)
			break;
		if (r->lo == r->hi)
			snprintf(out + o, cap - o, "%s%u", o ? "," : "", r->lo);
		else
			snprintf(out + o, cap - o, "%s%u:%u", o ? "," : "", r->lo, r->hi);
		o += need;
		uids += (uint64_t)r->hi - r->lo + 1;
	}
	*pos = i;
	return uids;
}

void uidlist_free(uidlist_t *l)
{
	free(l->r);
	memset(l, 0, sizeof *l);
}
