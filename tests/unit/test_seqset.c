/*
 * test_seqset.c — cmocka unit tests for lib/seqset.c: IMAP sequence sets
 * (parse, merge, format) and the growable UID list with its exact text
 * length, formatted in pieces (storaged cuts replies and splits events
 * with it).
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

#include "seqset.h"

static void test_parse_format(void **state)
{
	(void)state;
	static seqset_t set;
	char out[128];
	const char *why = NULL;
	assert_int_equal(seqset_parse(&set, "9:*,1:3,4,7", 12, &why), 0);
	assert_int_equal(seqset_format(&set, out, sizeof out), 10);
	assert_string_equal(out, "1:4,7,9:12");
	assert_int_equal(seqset_parse(&set, "5:*", 3, &why), 0);   /* "5:*" is 3:5 */
	seqset_format(&set, out, sizeof out);
	assert_string_equal(out, "3:5");
	assert_int_equal(seqset_parse(&set, "*", 0, &why), 0);     /* empty mailbox */
	assert_int_equal(set.n, 0);
	assert_int_equal(seqset_parse(&set, "1-5", 10, &why), -1);
	assert_int_equal(seqset_parse(&set, "0", 10, &why), -1);
	assert_int_equal(seqset_parse(&set, "", 10, &why), -1);
	assert_int_equal(seqset_parse(&set, "1,", 10, &why), -1);
	assert_int_equal(seqset_parse(&set, "4294967296", 10, &why), -1);
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
		cmocka_unit_test(test_parse_format),
		cmocka_unit_test(test_uidlist_text_length),
		cmocka_unit_test(test_uidlist_pieces),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
