/*
 * test_idna.c — cmocka unit tests for lib/idna.c: RFC 3492 7.1's samples
 * (expected values checked against Python's punycode codec), domains with
 * ASCII and non-ASCII labels, the case folding it does, and every input
 * it must refuse (bad UTF-8, a label over 63 octets once encoded, no room).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "idna.h"

static void ok(const char *in, const char *want)
{
	char out[300];
	assert_int_equal(idna_to_ascii(in, strlen(in), out, sizeof out), (int)strlen(want));
	assert_string_equal(out, want);
}

static void bad(const char *in, size_t len, size_t size)
{
	char out[300];
	assert_true(size <= sizeof out);
	assert_int_equal(idna_to_ascii(in, len, out, size), -1);
}

static void test_rfc3492_samples(void **state)
{
	(void)state;
	/* (B) Chinese (simplified) */
	ok("\xe4\xbb\x96\xe4\xbb\xac\xe4\xb8\xba\xe4\xbb\x80\xe4\xb9\x88\xe4\xb8\x8d\xe8\xaf\xb4\xe4\xb8\xad\xe6\x96\x87",
	   "xn--ihqwcrb4cv8a8dqg056pqjye");
	/* (I) Russian */
	ok("\xd0\xbf\xd0\xbe\xd1\x87\xd0\xb5\xd0\xbc\xd1\x83\xd0\xb6\xd0\xb5\xd0\xbe\xd0\xbd\xd0\xb8\xd0\xbd\xd0\xb5"
	   "\xd0\xb3\xd0\xbe\xd0\xb2\xd0\xbe\xd1\x80\xd1\x8f\xd1\x82\xd0\xbf\xd0\xbe\xd1\x80\xd1\x83\xd1\x81\xd1\x81"
	   "\xd0\xba\xd0\xb8", "xn--b1abfaaepdrnnbgefbadotcwatmq2g4l");
	/* (A) Arabic (Egyptian) */
	ok("\xd9\x84\xd9\x8a\xd9\x87\xd9\x85\xd8\xa7\xd8\xa8\xd8\xaa\xd9\x83\xd9\x84\xd9\x85\xd9\x88\xd8\xb4\xd8\xb9"
	   "\xd8\xb1\xd8\xa8\xd9\x8a\xd8\x9f", "xn--egbpdaj6bu4bxfgehfvwxn");
	/* (L) 3<nen>B<gumi><kinpachi><sensei>, its B lower-cased */
	ok("3\xe5\xb9\xb4" "B\xe7\xb5\x84\xe9\x87\x91\xe5\x85\xab\xe5\x85\x88\xe7\x94\x9f",
	   "xn--3b-ww4c5e180e575a65lsy2b");
}

static void test_domains(void **state)
{
	(void)state;
	ok("b\xc3\xbc" "cher.example", "xn--bcher-kva.example");
	ok("M\xc3\xbcnchen-Ost.Example.ORG", "xn--mnchen-ost-9db.example.org");
	ok("example.org", "example.org");
	ok("EXAMPLE.org", "example.org");
	ok("\xcf\x80\xce\xb1\xcf\x81\xce\xac\xce\xb4\xce\xb5\xce\xb9\xce\xb3\xce\xbc\xce\xb1.test",
	   "xn--hxajbheg2az3al.test");
	ok("", "");
	ok("a..b", "a..b");   /* syntax is the caller's to check */
}

static void test_case_folding(void **state)
{
	(void)state;
	/* Ü (U+00DC) is ü; Π (U+03A0) is π; П (U+041F) is п; Ё (U+0401) is ё */
	ok("B\xc3\x9c" "CHER.example", "xn--bcher-kva.example");
	ok("\xce\xa0\xce\xb1\xcf\x81\xce\xac\xce\xb4\xce\xb5\xce\xb9\xce\xb3\xce\xbc\xce\xb1.test",
	   "xn--hxajbheg2az3al.test");
	char a[64], b[64];
	assert_true(idna_to_ascii("\xd0\x81\xd0\x9f", 4, a, sizeof a) > 0);
	assert_true(idna_to_ascii("\xd1\x91\xd0\xbf", 4, b, sizeof b) > 0);
	assert_string_equal(a, b);
}

static void test_refused(void **state)
{
	(void)state;
	bad("b\xc3", 2, 300);                       /* truncated sequence */
	bad("\xc3\x28", 2, 300);                    /* bad continuation */
	bad("\xc0\xaf", 2, 300);                    /* overlong '/' */
	bad("\xed\xa0\x80", 3, 300);                /* a surrogate */
	bad("\xf4\x90\x80\x80", 4, 300);            /* above U+10FFFF */
	bad("\xff", 1, 300);
	/* 59 ASCII + é: "xn--" + 59 + "-" + 2 = 66 octets > 63 */
	char long_label[80];
	memset(long_label, 'a', 59);
	memcpy(long_label + 59, "\xc3\xa9", 2);
	bad(long_label, 61, 300);
	/* 55 + é is exactly 63: "xn--" + 55 + "-" + 3 digits; 56 + é is 64 */
	char out[300];
	assert_int_equal(idna_to_ascii(long_label + 4, 57, out, sizeof out), 63);
	bad(long_label + 3, 58, 300);
	/* a 64-letter ASCII label is refused too */
	char l64[65];
	memset(l64, 'b', 64);
	bad(l64, 64, 300);
	/* no room: every size short of the answer fails, the exact one works */
	const char *in = "b\xc3\xbc" "cher.example";
	for (size_t size = 0; size < sizeof "xn--bcher-kva.example"; size++)
		bad(in, strlen(in), size);
	assert_int_equal(idna_to_ascii(in, strlen(in), out, sizeof "xn--bcher-kva.example"), 21);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rfc3492_samples),
		cmocka_unit_test(test_domains),
		cmocka_unit_test(test_case_folding),
		cmocka_unit_test(test_refused),
	};
	return cmocka_run_group_tests_name("idna", tests, NULL, NULL);
}
