/*
 * test_hmap.c — cmocka unit tests for proto/hmap.c: the byte-string keyed
 * hash map (keys copied, values borrowed, grows by doubling).
 *
 * Each test gets a fixture owning a fresh map, freed in teardown.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hmap.h"
#include "util.h"

#define NKEYS 10000

static int fx_setup(void **state)
{
	*state = hmap_new();
	return *state != NULL ? 0 : -1;
}

static int fx_teardown(void **state)
{
	hmap_t *m = *state;
	hmap_free(&m);
	return 0;
}

static void test_basic(void **state)
{
	hmap_t *m = *state;
	int a = 1, b = 2, c = 3;
	char key[8];

	assert_int_equal(hmap_count(m), 0);
	assert_null(hmap_get(m, "a", 1));

	hmap_put(m, "a", 1, &a);
	hmap_put(m, "bb", 2, &b);
	assert_int_equal(hmap_count(m), 2);
	assert_ptr_equal(hmap_get(m, "a", 1), &a);
	assert_ptr_equal(hmap_get(m, "bb", 2), &b);
	assert_null(hmap_get(m, "b", 1));    /* a prefix is another key */
	assert_null(hmap_get(m, "bbb", 3));

	/* Keys are copied: the caller's buffer may change. */
	strcpy(key, "cc");
	hmap_put(m, key, 2, &c);
	strcpy(key, "xx");
	assert_ptr_equal(hmap_get(m, "cc", 2), &c);
	assert_null(hmap_get(m, "xx", 2));

	/* Replace keeps the count. */
	hmap_put(m, "a", 1, &c);
	assert_int_equal(hmap_count(m), 3);
	assert_ptr_equal(hmap_get(m, "a", 1), &c);

	assert_ptr_equal(hmap_del(m, "a", 1), &c);
	assert_int_equal(hmap_count(m), 2);
	assert_null(hmap_get(m, "a", 1));
	assert_ptr_equal(hmap_get(m, "bb", 2), &b);

	/* Put again after delete. */
	hmap_put(m, "a", 1, &a);
	assert_ptr_equal(hmap_get(m, "a", 1), &a);
	assert_int_equal(hmap_count(m), 3);
}

static void test_del_missing(void **state)
{
	hmap_t *m = *state;
	int a = 1;

	assert_null(hmap_del(m, "nope", 4));
	hmap_put(m, "k", 1, &a);
	assert_null(hmap_del(m, "nope", 4));
	assert_null(hmap_del(m, "k", 0));
	assert_null(hmap_del(m, "kk", 2));
	assert_int_equal(hmap_count(m), 1);
	assert_ptr_equal(hmap_del(m, "k", 1), &a);
	assert_null(hmap_del(m, "k", 1));    /* already gone */
	assert_int_equal(hmap_count(m), 0);
}

static void test_many_keys(void **state)
{
	hmap_t *m = *state;
	static int vals[NKEYS];
	char key[32];

	for (int i = 0; i < NKEYS; i++) {
		int n = snprintf(key, sizeof key, "key-%d", i);
		vals[i] = i;
		hmap_put(m, key, (size_t)n, &vals[i]);
		assert_int_equal(hmap_count(m), (size_t)i + 1);
	}
	for (int i = 0; i < NKEYS; i++) {
		int n = snprintf(key, sizeof key, "key-%d", i);
		int *v = hmap_get(m, key, (size_t)n);
		assert_non_null(v);
		assert_int_equal(*v, i);
	}
	assert_null(hmap_get(m, "key-10000", 9));

	/* Delete the even keys; the odd ones are still found. */
	for (int i = 0; i < NKEYS; i += 2) {
		int n = snprintf(key, sizeof key, "key-%d", i);
		assert_ptr_equal(hmap_del(m, key, (size_t)n), &vals[i]);
	}
	assert_int_equal(hmap_count(m), NKEYS / 2);
	for (int i = 0; i < NKEYS; i++) {
		int n = snprintf(key, sizeof key, "key-%d", i);
		void *v = hmap_get(m, key, (size_t)n);
		if (i % 2 == 0)
			assert_null(v);
		else
			assert_ptr_equal(v, &vals[i]);
	}
}

static void test_binary_keys(void **state)
{
	hmap_t *m = *state;
	static const unsigned char k1[] = { 'a', 0, 'b' };
	static const unsigned char k2[] = { 'a', 0, 'c' };
	static const unsigned char k3[] = { 'a', 0 };
	static const unsigned char k4[] = { 0, 0, 0, 0 };
	static const unsigned char k5[] = { 0xff, 0x00, 0x80 };
	int v[7];

	hmap_put(m, k1, sizeof k1, &v[0]);
	hmap_put(m, k2, sizeof k2, &v[1]);
	hmap_put(m, k3, sizeof k3, &v[2]);
	hmap_put(m, "a", 1, &v[3]);
	hmap_put(m, k4, sizeof k4, &v[4]);
	hmap_put(m, k4, 3, &v[5]);           /* a shorter run of NULs differs */
	hmap_put(m, k5, sizeof k5, &v[6]);
	assert_int_equal(hmap_count(m), 7);

	assert_ptr_equal(hmap_get(m, k1, sizeof k1), &v[0]);
	assert_ptr_equal(hmap_get(m, k2, sizeof k2), &v[1]);
	assert_ptr_equal(hmap_get(m, k3, sizeof k3), &v[2]);
	assert_ptr_equal(hmap_get(m, "a", 1), &v[3]);
	assert_ptr_equal(hmap_get(m, k4, sizeof k4), &v[4]);
	assert_ptr_equal(hmap_get(m, k4, 3), &v[5]);
	assert_ptr_equal(hmap_get(m, k5, sizeof k5), &v[6]);
	assert_null(hmap_get(m, k4, 2));
	assert_null(hmap_get(m, k4, 1));

	/* The empty key is a key like any other. */
	hmap_put(m, "", 0, &v[0]);
	assert_ptr_equal(hmap_get(m, "", 0), &v[0]);
	assert_int_equal(hmap_count(m), 8);

	assert_ptr_equal(hmap_del(m, k3, sizeof k3), &v[2]);
	assert_ptr_equal(hmap_get(m, k1, sizeof k1), &v[0]);
	assert_ptr_equal(hmap_get(m, "a", 1), &v[3]);
	assert_null(hmap_get(m, k3, sizeof k3));
}

struct visit {
	unsigned char seen[NKEYS];
	size_t calls;
	size_t stop_after;   /* 0 = never */
};

/* Marks the key's index, checked against the value. */
static int visit_fn(const void *key, size_t klen, void *value, void *arg)
{
	struct visit *vs = arg;
	char buf[32];
	int i = *(int *)value;

	assert_true(i >= 0 && i < NKEYS);
	assert_int_equal(klen, (size_t)snprintf(buf, sizeof buf, "k%d", i));
	assert_memory_equal(key, buf, klen);
	vs->seen[i]++;
	vs->calls++;
	return vs->stop_after != 0 && vs->calls == vs->stop_after;
}

static void test_each(void **state)
{
	hmap_t *m = *state;
	static int vals[NKEYS];
	struct visit *vs = xcalloc(1, sizeof *vs);
	char key[32];
	int n = NKEYS;

	/* An empty map visits nothing. */
	hmap_each(m, visit_fn, vs);
	assert_int_equal(vs->calls, 0);

	for (int i = 0; i < n; i++) {
		int len = snprintf(key, sizeof key, "k%d", i);
		vals[i] = i;
		hmap_put(m, key, (size_t)len, &vals[i]);
	}
	hmap_each(m, visit_fn, vs);
	assert_int_equal(vs->calls, (size_t)n);
	for (int i = 0; i < n; i++)
		assert_int_equal(vs->seen[i], 1);

	/* Non-zero from fn stops the walk. */
	memset(vs, 0, sizeof *vs);
	vs->stop_after = 10;
	hmap_each(m, visit_fn, vs);
	assert_int_equal(vs->calls, 10);
	free(vs);
}

static void test_free_nulls(void **state)
{
	(void)state;
	hmap_t *m = hmap_new();
	int a = 1;

	hmap_put(m, "a", 1, &a);
	hmap_free(&m);
	assert_null(m);
	hmap_free(&m);    /* NULL is fine */
}

#define FX_TEST(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		FX_TEST(test_basic),
		FX_TEST(test_del_missing),
		FX_TEST(test_many_keys),
		FX_TEST(test_binary_keys),
		FX_TEST(test_each),
		cmocka_unit_test(test_free_nulls),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
