/*
 * test_seqset.c — cmocka unit tests for lib/seqset.c: IMAP sequence sets
 * parsed (with "*", reversed ranges, overlaps) and printed back, and the
 * growable UID list (exact text length, formatting in pieces).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "seqset.h"
#include "util.h"

static seqset_t set;

static const char *roundtrip(const char *in, uint32_t star)
{
	static char out[256];
	const char *why = NULL;
	if (seqset_parse(&set, in, star, &why) < 0)
		return why;
	assert_true(seqset_format(&set, out, sizeof out) >= 0);
	return out;
}

static void test_parse_and_format(void **state)
{
	(void)state;
	static const struct { const char *in; uint32_t star; const char *out; } cases[] = {
		{ "1", 10, "1" },
		{ "1:5", 10, "1:5" },
		{ "5:1", 10, "1:5" },
		{ "1:3,2:6,8", 10, "1:6,8" },
		{ "7,1,3:4", 10, "1,3:4,7" },
		{ "1,2,3", 10, "1:3" },
		{ "*", 10, "10" },
		{ "5:*", 10, "5:10" },
		{ "12:*", 10, "10:12" },             /* RFC 3501: n:* with n > * */
		{ "*", 0, "" },                      /* empty mailbox */
		{ "1:*", 0, "" },
		{ "3,1:*", 0, "3" },
		{ "4294967295", 1, "4294967295" },
		{ "1:4294967295", 1, "1:4294967295" },
	};
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		const char *got = roundtrip(cases[i].in, cases[i].star);
		if (strcmp(got, cases[i].out) != 0)
			fail_msg("%s (*=%u): got %s want %s", cases[i].in, cases[i].star, got,
				 cases[i].out);
	}
}

static void test_bad_sets(void **state)
{
	(void)state;
	static const char *const bad[] = { "", "0", "1:0", "01", "-1", "1-5", "1,", ",1", "1::2",
		"a", "4294967296", "1 2", "1:*:3" };
	const char *why;
	for (size_t i = 0; i < ARRAY_LEN(bad); i++)
		if (seqset_parse(&set, bad[i], 10, &why) == 0)
			fail_msg("%s: accepted", bad[i]);
}

static void test_bounds(void **state)
{
	(void)state;
	const char *why;
	/* SEQSET_RANGES_MAX disjoint ranges fit, one more does not */
	size_t cap = SEQSET_RANGES_MAX * 12 + 16;
	char *s = malloc(cap);
	size_t o = 0;
	for (int i = 0; i < SEQSET_RANGES_MAX; i++)
		o += (size_t)snprintf(s + o, cap - o, "%s%d", i ? "," : "", 2 * i + 1);
	assert_int_equal(seqset_parse(&set, s, 0, &why), 0);
	assert_int_equal(set.n, SEQSET_RANGES_MAX);
	snprintf(s + o, cap - o, ",%d", 2 * SEQSET_RANGES_MAX + 1);
	assert_int_equal(seqset_parse(&set, s, 0, &why), -1);
	assert_string_equal(why, "too many ranges in set");
	free(s);
	/* too long a text */
	char *lng = malloc(SEQSET_TEXT_MAX + 2);
	memset(lng, '1', SEQSET_TEXT_MAX + 1);
	lng[SEQSET_TEXT_MAX + 1] = '\0';
	assert_int_equal(seqset_parse(&set, lng, 0, &why), -1);
	free(lng);
	/* formatting into too small a buffer stops at a whole range */
	char out[8];
	assert_int_equal(seqset_parse(&set, "1:3,5,7:9", 10, &why), 0);
	assert_int_equal(seqset_format(&set, out, sizeof out), -1);
	assert_string_equal(out, "1:3,5");
}

static void test_add_in_any_order(void **state)
{
	(void)state;
	char out[64];
	memset(&set, 0, sizeof set);
	assert_int_equal(seqset_add(&set, 5, 5), 0);
	assert_int_equal(seqset_add(&set, 6, 7), 0);   /* adjacent: merged */
	assert_int_equal(seqset_add(&set, 2, 1), 0);   /* reversed, before */
	assert_int_equal(seqset_add(&set, 3, 3), 0);
	assert_true(seqset_format(&set, out, sizeof out) > 0);
	assert_string_equal(out, "1:3,5:7");
}

static void test_uidlist_text_length(void **state)
{
	(void)state;
	uidlist_t l = { 0 };
	uint32_t uids[] = { 1, 2, 3, 5, 9, 10, 99, 100, 101, 4294967295u };
	char out[256];
	size_t pos = 0;
	for (size_t i = 0; i < sizeof uids / sizeof uids[0]; i++) {
		uidlist_add(&l, uids[i]);
		size_t p = 0;
		uidlist_format(&l, &p, out, sizeof out);
		assert_int_equal(strlen(out), l.textlen);
	}
	assert_int_equal(l.count, 10);
	assert_int_equal(uidlist_format(&l, &pos, out, sizeof out), 10);
	assert_string_equal(out, "1:3,5,9:10,99:101,4294967295");
	assert_int_equal(pos, l.n);
	uidlist_free(&l);
	assert_null(l.r);
	pos = 0;
	assert_int_equal(uidlist_format(&l, &pos, out, sizeof out), 0);
	assert_string_equal(out, "");
}

/* Pieces of at most cap bytes, whole ranges each, that add up to the list. */
static void test_uidlist_pieces(void **state)
{
	(void)state;
	uidlist_t l = { 0 };
	for (uint32_t u = 1; u < 20000; u += 2)
		uidlist_add(&l, u);
	uidlist_add(&l, 20000);       /* merges with 19999 */
	assert_int_equal(l.count, 10001);
	char *all = malloc(l.textlen + 1), piece[1000];
	size_t pos = 0, o = 0, pieces = 0;
	uint64_t uids = 0;
	while (pos < l.n) {
		uids += uidlist_format(&l, &pos, piece, sizeof piece);
		assert_true(strlen(piece) > 0 && strlen(piece) < sizeof piece);
		o += (size_t)sprintf(all + o, "%s%s", o ? "," : "", piece);
		pieces++;
	}
	assert_int_equal(uids, l.count);
	assert_int_equal(o, l.textlen);
	assert_true(pieces > 50);
	assert_string_equal(all + o - 11, "19997,19999:20000" + 6);
	free(all);
	uidlist_free(&l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_and_format),
		cmocka_unit_test(test_bad_sets),
		cmocka_unit_test(test_bounds),
		cmocka_unit_test(test_add_in_any_order),
		cmocka_unit_test(test_uidlist_text_length),
		cmocka_unit_test(test_uidlist_pieces),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
