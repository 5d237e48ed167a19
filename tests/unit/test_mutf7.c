/*
 * test_mutf7.c — cmocka unit tests for lib/mutf7.c: RFC 3501 5.1.3's
 * example, round trips (BMP, astral, "&"), and every malformed form the
 * decoder must refuse.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "mutf7.h"

static void roundtrip(const char *utf8, const char *wire)
{
	char out[256], back[256];
	assert_int_equal(mutf7_encode(utf8, strlen(utf8), out, sizeof out), (int)strlen(wire));
	assert_string_equal(out, wire);
	assert_int_equal(mutf7_decode(wire, strlen(wire), back, sizeof back), (int)strlen(utf8));
	assert_string_equal(back, utf8);
}

static void test_examples(void **state)
{
	(void)state;
	roundtrip("INBOX", "INBOX");
	roundtrip("~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",
		  "~peter/mail/&U,BTFw-/&ZeVnLIqe-");   /* RFC 3501 5.1.3 */
	roundtrip("Tom & Jerry", "Tom &- Jerry");
	roundtrip("Entw\xc3\xbc" "rfe", "Entw&APw-rfe");
	roundtrip("\xf0\x9f\x98\x80", "&2D3eAA-");     /* U+1F600, a surrogate pair */
	roundtrip("", "");
}

static void test_bad_wire(void **state)
{
	(void)state;
	char out[64];
	const char *bad[] = {
		"&",            /* unterminated */
		"&U,BTFw",      /* unterminated */
		"&AGE-",        /* 'a' shifted: must stand for itself */
		"&2D0-",        /* lone high surrogate */
		"&3gA-",        /* lone low surrogate */
		"&APw-&APw-",   /* two shifts in a row */
		"&APx-",        /* padding bits set */
		"&A/w-",        /* '/' is not modified base64 */
		"caf\xc3\xa9",  /* raw 8-bit */
		"a\tb",         /* control character */
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_equal(mutf7_decode(bad[i], strlen(bad[i]), out, sizeof out), -1);
}

static void test_bad_utf8_and_room(void **state)
{
	(void)state;
	char out[8];
	assert_int_equal(mutf7_encode("\xc3", 1, out, sizeof out), -1);          /* truncated */
	assert_int_equal(mutf7_encode("\xc0\xaf", 2, out, sizeof out), -1);      /* overlong */
	assert_int_equal(mutf7_encode("\xed\xa0\x80", 3, out, sizeof out), -1);  /* surrogate */
	assert_int_equal(mutf7_encode("abcdefgh", 8, out, sizeof out), -1);      /* no room */
	assert_int_equal(mutf7_encode("abcdefg", 7, out, sizeof out), 7);
	assert_int_equal(mutf7_decode("abcdefgh", 8, out, sizeof out), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_examples),
		cmocka_unit_test(test_bad_wire),
		cmocka_unit_test(test_bad_utf8_and_room),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
