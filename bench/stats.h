/*
 * stats.h — latency percentiles for the benchmark programs (busbench,
 * storebench): sort the samples, then read nearest-rank percentiles.
 */
#ifndef ROOST_BENCH_STATS_H
#define ROOST_BENCH_STATS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

static inline int stats_cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* Sorts v[0..n) in place. */
static inline void stats_sort(uint32_t *v, size_t n)
{
	qsort(v, n, sizeof *v, stats_cmp_u32);
}

/* Nearest-rank percentile of sorted v[0..n) (0 when empty). */
static inline uint32_t stats_percentile(const uint32_t *v, size_t n, double p)
{
	if (n == 0)
		return 0;
	size_t r = (size_t)ceil(p * (double)n);
	return v[r == 0 ? 0 : r - 1];
}

#endif
