/*
 * test_strbuf.c — cmocka unit tests for proto/strbuf.c: appends that grow
 * the buffer, printf past the first guess, NUL bytes kept, consume/steal.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "strbuf.h"

static void test_grow_and_format(void **state)
{
	(void)state;
	strbuf_t sb = STRBUF_INIT;
	assert_string_equal(sb_str(&sb), "");
	for (int i = 0; i < 1000; i++)
		sb_addc(&sb, 'a' + i % 26);
	assert_int_equal(sb_len(&sb), 1000);
	char big[300];
	memset(big, 'x', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	sb_truncate(&sb, 3);
	sb_addf(&sb, "<%s|%d>", big, 42);
	assert_int_equal(sb_len(&sb), 3 + 1 + 299 + 4);
	assert_memory_equal(sb_str(&sb), "abc<x", 5);
	assert_string_equal(sb_str(&sb) + sb_len(&sb) - 4, "|42>");
	sb_free(&sb);
}

static void test_nul_consume_steal(void **state)
{
	(void)state;
	strbuf_t sb = STRBUF_INIT;
	sb_add(&sb, "a\0b", 3);
	sb_adds(&sb, "cd");
	assert_int_equal(sb_len(&sb), 5);
	assert_memory_equal(sb.buf, "a\0bcd", 5);
	sb_consume(&sb, 2);
	assert_string_equal(sb_str(&sb), "bcd");
	char *dst = sb_reserve(&sb, 2);
	memcpy(dst, "ef", 2);
	sb_commit(&sb, 2);
	size_t n;
	char *s = sb_steal(&sb, &n);
	assert_int_equal(n, 5);
	assert_string_equal(s, "bcdef");
	assert_int_equal(sb_len(&sb), 0);
	free(s);
	sb_consume(&sb, 10);
	s = sb_steal(&sb, NULL);
	assert_string_equal(s, "");
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_grow_and_format),
		cmocka_unit_test(test_nul_consume_steal),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
