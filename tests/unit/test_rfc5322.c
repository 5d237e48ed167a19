/*
 * test_rfc5322.c — cmocka unit tests for lib/rfc5322.c: where the header
 * ends, walking fields (folded, malformed, bare LF), unfolding, and Date
 * parsing with RFC 5322's obsolete forms.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "rfc5322.h"
#include "util.h"

static void test_end_crlf_and_lf(void **state)
{
	(void)state;
	bool found;
	const char *m = "A: 1\r\nB: 2\r\n\r\nbody";
	assert_int_equal(hdr_end(m, strlen(m), &found), 14);
	assert_true(found);
	const char *lf = "A: 1\nB: 2\n\nbody";
	assert_int_equal(hdr_end(lf, strlen(lf), &found), 11);
	assert_true(found);
	/* an empty header: the message starts with the empty line */
	assert_int_equal(hdr_end("\r\nbody", 6, &found), 2);
	assert_true(found);
	/* no empty line within the buffer: all of it is header */
	const char *cut = "A: 1\r\nB: 2\r\n";
	assert_int_equal(hdr_end(cut, strlen(cut), &found), strlen(cut));
	assert_false(found);
	/* a CR at the very end is not a line end yet */
	assert_int_equal(hdr_end("A: 1\r\n\r", 7, &found), 7);
	assert_false(found);
	assert_int_equal(hdr_end("", 0, &found), 0);
	assert_false(found);
}

static void test_fields_folded_and_malformed(void **state)
{
	(void)state;
	const char *h = "Subject: a\r\n b\r\n\tc\r\nnot a field\r\nX-Empty:\r\n: no name\r\n"
			"Bad Name: x\r\nTo: t\r\n\r\nbody: no";
	bool found;
	size_t end = hdr_end(h, strlen(h), &found);
	hdr_iter_t it;
	const char *n, *v;
	size_t nl, vl;
	char out[64];
	hdr_iter_init(&it, h, end);
	assert_int_equal(hdr_next(&it, &n, &nl, &v, &vl), 1);
	assert_true(hdr_name_is(n, nl, "subject"));
	hdr_unfold(v, vl, out, sizeof out);
	assert_string_equal(out, "a b c");   /* a tab is white space: a space */
	assert_int_equal(hdr_next(&it, &n, &nl, &v, &vl), 1);
	assert_true(hdr_name_is(n, nl, "X-Empty"));
	assert_int_equal(vl, 0);
	assert_int_equal(hdr_next(&it, &n, &nl, &v, &vl), 1);
	assert_true(hdr_name_is(n, nl, "To"));
	assert_int_equal(hdr_next(&it, &n, &nl, &v, &vl), 0);
	assert_int_equal(hdr_next(&it, &n, &nl, &v, &vl), 0);
}

static void test_fields_bounded(void **state)
{
	(void)state;
	static char h[HDR_FIELDS_MAX * 8 + 100];
	size_t o = 0;
	for (int i = 0; i < HDR_FIELDS_MAX + 10; i++)
		o += (size_t)snprintf(h + o, sizeof h - o, "X%d: y\n", i % 10);
	hdr_iter_t it;
	const char *n, *v;
	size_t nl, vl;
	unsigned count = 0;
	hdr_iter_init(&it, h, o);
	while (hdr_next(&it, &n, &nl, &v, &vl) == 1)
		count++;
	assert_int_equal(count, HDR_FIELDS_MAX);
}

static void test_unfold(void **state)
{
	(void)state;
	char out[8];
	const char *v = "  long value here  ";
	assert_int_equal(hdr_unfold(v, strlen(v), out, sizeof out), 7);
	assert_string_equal(out, "long va");
	assert_int_equal(hdr_unfold("a\x01" "b\x7f", 4, out, sizeof out), 3);
	assert_string_equal(out, "a b");
	assert_int_equal(hdr_unfold("x", 1, out, 1), 0);
	assert_string_equal(out, "");
	assert_int_equal(hdr_unfold("x", 1, out, 0), 0);
}

static void test_dates(void **state)
{
	(void)state;
	static const struct { const char *in; int64_t want; } cases[] = {
		{ "Tue, 24 Nov 2026 10:00:00 +0100", 1795510800 },
		{ "24 Nov 2026 09:00:00 +0000", 1795510800 },
		{ " Tue, 24 Nov 2026 04:00 -0500 (EST)", 1795510800 },
		{ "Tue, 24 Nov 2026 09:00:00 GMT", 1795510800 },
		{ "Tue, 24 Nov 2026 01:00:00 PST", 1795510800 },
		{ "Tue, 24 November 2026 09:00:00 UT", 1795510800 },
		{ "(comment) 24 (more) Nov 2026 09:00:00 +0000", 1795510800 },
		{ "1 Jan 70 00:00:00 +0000", 0 },
		{ "1 Jan 49 00:00:00 +0000", 2493072000 },
		{ "Thu, 1 Jan 1970 00:00:60 +0000", 59 },       /* leap second folded */
		{ "1 Jan 2000 00:00:00 A", 946684800 },        /* military zone: unknown, UTC */
		{ "1 Jan 2000 00:00:00", 946684800 },          /* no zone */
	};
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		int64_t got = hdr_date_parse(cases[i].in);
		if (got != cases[i].want)
			fail_msg("%s: got %lld want %lld", cases[i].in, (long long)got,
				 (long long)cases[i].want);
	}
	static const char *const bad[] = { "", "yesterday", "32 Jan 2000 00:00:00 +0000",
		"1 Foo 2000 00:00:00 +0000", "1 Jan 2000 24:00:00 +0000", "1 Jan 2000 00:61 +0000",
		"1 Jan 2000 00:00:00 +01", "1 Jan 2000 00:00:00 +0199", "1 Jan 2000",
		"1 Jan 2000 00 +0000", "Tue, Nov 2026" };
	for (size_t i = 0; i < ARRAY_LEN(bad); i++)
		if (hdr_date_parse(bad[i]) != -1)
			fail_msg("%s: accepted", bad[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_end_crlf_and_lf),
		cmocka_unit_test(test_fields_folded_and_malformed),
		cmocka_unit_test(test_fields_bounded),
		cmocka_unit_test(test_unfold),
		cmocka_unit_test(test_dates),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
