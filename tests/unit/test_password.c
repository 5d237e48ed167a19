/*
 * test_password.c — cmocka unit tests for services/storaged/password.c
 * (scrypt in PHC strings: round trip, salts, rehash decision, strict parser,
 * RFC 7914 test vector) and kdfpool.c (jobs run on workers, callbacks on the
 * loop thread, bounded queue, free with jobs still queued).
 *
 * Hashes here use CHEAP (ln 10, 1 MiB) so the tests stay fast under
 * sanitizers. Pool tests run a loop with a watchdog timer: if the expected
 * callbacks never come, the watchdog stops the loop and the test fails.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kdfpool.h"
#include "loop.h"
#include "password.h"
#include "util.h"

#define WATCHDOG_MS 60000   /* generous: a busy machine under ASan is slow */

static const struct password_params CHEAP = { .ln = 10, .r = 8, .p = 1 };

#define PW "correct horse battery staple"
#define SALT22 "AAAAAAAAAAAAAAAAAAAAAA"
#define HASH43 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

/* ---- password.c --------------------------------------------------------- */

static void test_hash_verify(void **state)
{
	(void)state;
	char stored[PASSWORD_HASH_MAX];

	assert_int_equal(password_hash(PW, strlen(PW), &CHEAP, stored, sizeof stored), 0);
	assert_int_equal(strncmp(stored, "$scrypt$ln=10,r=8,p=1$", 22), 0);
	assert_int_equal(strlen(stored), 22 + 22 + 1 + 43);
	assert_int_equal(password_verify(PW, strlen(PW), stored), 1);
	/* Wrong password, a prefix of it, one byte more. */
	assert_int_equal(password_verify("wrong", 5, stored), 0);
	assert_int_equal(password_verify(PW, strlen(PW) - 1, stored), 0);
	assert_int_equal(password_verify(PW "x", strlen(PW) + 1, stored), 0);
}

static void test_salts_differ(void **state)
{
	(void)state;
	char a[PASSWORD_HASH_MAX], b[PASSWORD_HASH_MAX];

	assert_int_equal(password_hash(PW, strlen(PW), &CHEAP, a, sizeof a), 0);
	assert_int_equal(password_hash(PW, strlen(PW), &CHEAP, b, sizeof b), 0);
	assert_string_not_equal(a, b);
	assert_int_equal(password_verify(PW, strlen(PW), a), 1);
	assert_int_equal(password_verify(PW, strlen(PW), b), 1);
}

static void test_needs_rehash(void **state)
{
	(void)state;
	char stored[PASSWORD_HASH_MAX];
	struct password_params more_ln = { 11, 8, 1 }, more_r = { 10, 16, 1 },
		more_p = { 10, 8, 2 }, less_r = { 10, 4, 1 };

	assert_int_equal(password_hash(PW, strlen(PW), &CHEAP, stored, sizeof stored), 0);
	assert_false(password_needs_rehash(stored, &CHEAP));
	assert_false(password_needs_rehash(stored, &less_r));
	assert_true(password_needs_rehash(stored, &more_ln));
	assert_true(password_needs_rehash(stored, &more_r));
	assert_true(password_needs_rehash(stored, &more_p));
	assert_true(password_needs_rehash(stored, password_default()));
	assert_true(password_needs_rehash("garbage", &CHEAP));

	const struct password_params *d = password_default();
	assert_int_equal(d->ln, 15);
	assert_int_equal(d->r, 8);
	assert_int_equal(d->p, 1);
}

static void test_malformed(void **state)
{
	(void)state;
	static const char *bad[] = {
		"",
		"$scrypt$",
		"$scrypt$ln=99,r=8,p=1$" SALT22 "$" HASH43,              /* ln out of range */
		"$scrypt$ln=10,r=8,p=1$" HASH43,                         /* missing salt */
		"$scrypt$ln=10,r=8,p=1$" SALT22,                         /* missing hash */
		"$scrypt$ln=10,r=8,p=1$" SALT22 "$",
		"$scrypt$ln=10,r=8,p=1$AAAAAAAAAA*AAAAAAAAAAA$" HASH43,  /* bad base64 */
		"$scrypt$ln=10,r=8,p=1$" SALT22 "$" "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"$scrypt$ln=10,r=8,p=1$" SALT22 "$" HASH43 "$x",         /* trailing junk */
		"$scrypt$ln=10,r=8,p=1$" SALT22 "$" HASH43 "=",          /* padding */
		"$scrypt$ln=99999999999999999999,r=8,p=1$" SALT22 "$" HASH43,
		"$scrypt$ln=10,r=4294967297,p=1$" SALT22 "$" HASH43,
		"$scrypt$ln=010,r=8,p=1$" SALT22 "$" HASH43,             /* leading zero */
		"$scrypt$ln=10,r=0,p=1$" SALT22 "$" HASH43,
		"$scrypt$ln=10,r=8,p=17$" SALT22 "$" HASH43,
		"$scrypt$ln=-10,r=8,p=1$" SALT22 "$" HASH43,
		"$scrypt$r=8,ln=10,p=1$" SALT22 "$" HASH43,              /* field order */
		"$scrypt$ln=10,r=8$" SALT22 "$" HASH43,                  /* missing p */
		"$scrypt$ln=10,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAB$" HASH43,  /* non-canonical */
		"$scrypt$ln=10,r=8,p=1$AAAAAAAAAAAAAAAAAAAA==$" HASH43,
		"$argon2id$v=19$m=65536,t=3,p=4$" SALT22 "$" HASH43,
		"$SCRYPT$ln=10,r=8,p=1$" SALT22 "$" HASH43,
	};

	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		if (password_verify(PW, strlen(PW), bad[i]) != -1)
			fail_msg("case %zu accepted: %s", i, bad[i]);
	}
	assert_int_equal(password_verify(PW, strlen(PW), NULL), -1);
	/* The table's base form is well-formed: a plain mismatch. */
	assert_int_equal(password_verify(PW, strlen(PW),
		"$scrypt$ln=10,r=8,p=1$" SALT22 "$" HASH43), 0);
	assert_int_equal(password_verify(PW, strlen(PW),
		"$scrypt$ln=10,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAQ$" HASH43), 0);
}

static void test_bounds(void **state)
{
	(void)state;
	char stored[PASSWORD_HASH_MAX], small[40];
	char *big = xmalloc(PASSWORD_MAX_LEN + 1);
	struct password_params low = { 9, 8, 1 }, wide = { 10, 33, 1 }, par = { 10, 8, 17 };

	memset(big, 'a', PASSWORD_MAX_LEN + 1);
	assert_int_equal(password_hash(big, PASSWORD_MAX_LEN + 1, &CHEAP, stored, sizeof stored), -1);
	assert_string_equal(stored, "");
	assert_int_equal(password_hash(big, PASSWORD_MAX_LEN, &CHEAP, stored, sizeof stored), 0);
	assert_int_equal(password_verify(big, PASSWORD_MAX_LEN, stored), 1);
	assert_int_equal(password_verify(big, PASSWORD_MAX_LEN + 1, stored), -1);
	assert_int_equal(password_verify("", 0, stored), -1);
	assert_int_equal(password_hash("", 0, &CHEAP, stored, sizeof stored), -1);
	assert_int_equal(password_hash(PW, strlen(PW), &low, stored, sizeof stored), -1);
	assert_int_equal(password_hash(PW, strlen(PW), &wide, stored, sizeof stored), -1);
	assert_int_equal(password_hash(PW, strlen(PW), &par, stored, sizeof stored), -1);
	assert_int_equal(password_hash(PW, strlen(PW), NULL, stored, sizeof stored), -1);
	assert_int_equal(password_hash(PW, strlen(PW), &CHEAP, small, sizeof small), -1);
	assert_string_equal(small, "");
	free(big);
}

/* RFC 7914 section 12, second vector. */
static void test_rfc7914_vector(void **state)
{
	(void)state;
	static const unsigned char want[64] = {
		0xfd, 0xba, 0xbe, 0x1c, 0x9d, 0x34, 0x72, 0x00, 0x78, 0x56, 0xe7, 0x19,
		0x0d, 0x01, 0xe9, 0xfe, 0x7c, 0x6a, 0xd7, 0xcb, 0xc8, 0x23, 0x78, 0x30,
		0xe7, 0x73, 0x76, 0x63, 0x4b, 0x37, 0x31, 0x62, 0x2e, 0xaf, 0x30, 0xd9,
		0x2e, 0x22, 0xa3, 0x88, 0x6f, 0xf1, 0x09, 0x27, 0x9d, 0x98, 0x30, 0xda,
		0xc7, 0x27, 0xaf, 0xb9, 0x4a, 0x83, 0xee, 0x6d, 0x83, 0x60, 0xcb, 0xdf,
		0xa2, 0xcc, 0x06, 0x40,
	};
	unsigned char out[64];

	assert_int_equal(password_scrypt_raw("password", 8, (const unsigned char *)"NaCl", 4,
		10, 8, 16, out, sizeof out), 0);
	assert_memory_equal(out, want, sizeof want);
}

/* ---- kdfpool.c ---------------------------------------------------------- */

struct fx {
	loop_t *loop;
	bool timed_out;
	pthread_t main_thread;
	int want, got;        /* callbacks expected / arrived */
	int off_thread;       /* callbacks that ran on another thread */
	int results[64];      /* verify: result; hash: result */
	char hashes[8][PASSWORD_HASH_MAX];
};

struct ticket {
	struct fx *fx;
	int index;
};

static void watchdog(loop_t *loop, void *arg)
{
	struct fx *fx = arg;
	fx->timed_out = true;
	loop_stop(loop);
}

static int fx_setup(void **state)
{
	struct fx *fx = xcalloc(1, sizeof *fx);
	*state = fx;
	fx->main_thread = pthread_self();
	fx->loop = loop_new();
	loop_timer_add(fx->loop, WATCHDOG_MS, false, watchdog, fx);
	for (size_t i = 0; i < ARRAY_LEN(fx->results); i++)
		fx->results[i] = 99;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *fx = *state;
	loop_free(&fx->loop);
	free(fx);
	return 0;
}

static void note_arrival(struct fx *fx)
{
	if (!pthread_equal(pthread_self(), fx->main_thread))
		fx->off_thread++;
	if (++fx->got == fx->want)
		loop_stop(fx->loop);
}

static void verify_done(int result, void *arg)
{
	struct ticket *t = arg;
	assert_int_equal(t->fx->results[t->index], 99);  /* exactly once */
	t->fx->results[t->index] = result;
	note_arrival(t->fx);
}

static void hash_done(int result, const char *hash, void *arg)
{
	struct ticket *t = arg;
	assert_int_equal(t->fx->results[t->index], 99);
	t->fx->results[t->index] = result;
	if (result == 0) {
		assert_non_null(hash);
		assert_int_equal(strlcpy_checked(t->fx->hashes[t->index - 20], hash,
			PASSWORD_HASH_MAX), 0);
	} else {
		assert_null(hash);
	}
	note_arrival(t->fx);
}

/* 20 verifies (even: right password, odd: wrong) and 5 hashes, run to the end. */
static void test_pool_run(void **state)
{
	struct fx *fx = *state;
	struct ticket t[25];
	char stored[PASSWORD_HASH_MAX];
	kdfpool_t *pool = kdfpool_new(fx->loop, 0);

	assert_non_null(pool);
	assert_int_equal(password_hash(PW, strlen(PW), &CHEAP, stored, sizeof stored), 0);
	fx->want = 25;
	for (int i = 0; i < 25; i++) {
		t[i] = (struct ticket){ fx, i };
		if (i < 20) {
			const char *pw = i % 2 == 0 ? PW : "not it";
			assert_int_equal(kdfpool_verify(pool, pw, strlen(pw), stored,
				verify_done, &t[i]), 0);
		} else {
			assert_int_equal(kdfpool_hash(pool, PW, strlen(PW), &CHEAP,
				hash_done, &t[i]), 0);
		}
	}
	assert_int_equal(loop_run(fx->loop), 0);
	assert_false(fx->timed_out);
	assert_int_equal(fx->got, 25);
	assert_int_equal(fx->off_thread, 0);
	for (int i = 0; i < 20; i++)
		assert_int_equal(fx->results[i], i % 2 == 0 ? 1 : 0);
	for (int i = 20; i < 25; i++) {
		assert_int_equal(fx->results[i], 0);
		assert_int_equal(password_verify(PW, strlen(PW), fx->hashes[i - 20]), 1);
	}
	kdfpool_free(&pool);
	assert_null(pool);
	kdfpool_free(&pool);  /* NULL is fine */
}

/* Free right after submitting: every callback still runs once, on this thread. */
static void test_pool_free_queued(void **state)
{
	struct fx *fx = *state;
	struct ticket t[25];
	char stored[PASSWORD_HASH_MAX];
	kdfpool_t *pool = kdfpool_new(fx->loop, 1);

	assert_non_null(pool);
	assert_int_equal(password_hash(PW, strlen(PW), &CHEAP, stored, sizeof stored), 0);
	fx->want = -1;  /* never stop the loop: it is not run */
	for (int i = 0; i < 25; i++) {
		t[i] = (struct ticket){ fx, i };
		if (i < 20)
			assert_int_equal(kdfpool_verify(pool, PW, strlen(PW), stored,
				verify_done, &t[i]), 0);
		else
			assert_int_equal(kdfpool_hash(pool, PW, strlen(PW), &CHEAP,
				hash_done, &t[i]), 0);
	}
	kdfpool_free(&pool);
	assert_null(pool);
	assert_int_equal(fx->got, 25);
	assert_int_equal(fx->off_thread, 0);
	for (int i = 0; i < 20; i++)
		assert_true(fx->results[i] == 1 || fx->results[i] == -1);
	for (int i = 20; i < 25; i++)
		assert_true(fx->results[i] == 0 || fx->results[i] == -1);
}

static void count_done(int result, void *arg)
{
	struct fx *fx = arg;
	if (result != -1)
		fx->results[0] = result;  /* flags an unexpected result */
	note_arrival(fx);
}

/* At most KDFPOOL_MAX_JOBS outstanding; room again once they are delivered. */
static void test_pool_bound(void **state)
{
	struct fx *fx = *state;
	char big[PASSWORD_MAX_LEN + 1];
	struct ticket t = { fx, 0 };
	kdfpool_t *pool = kdfpool_new(fx->loop, 2);

	assert_non_null(pool);
	memset(big, 'a', sizeof big);
	fx->want = KDFPOOL_MAX_JOBS;
	/* Malformed stored strings: workers finish each at once, with -1. */
	for (int i = 0; i < KDFPOOL_MAX_JOBS - 1; i++)
		assert_int_equal(kdfpool_verify(pool, PW, strlen(PW), "$bad", count_done, fx), 0);
	/* A too-long password is accepted and completes with -1. */
	assert_int_equal(kdfpool_verify(pool, big, sizeof big, "$bad", count_done, fx), 0);
	assert_int_equal(kdfpool_verify(pool, PW, strlen(PW), "$bad", count_done, fx), -1);
	assert_int_equal(kdfpool_hash(pool, PW, strlen(PW), &CHEAP, hash_done, &t), -1);
	assert_int_equal(loop_run(fx->loop), 0);
	assert_false(fx->timed_out);
	assert_int_equal(fx->got, KDFPOOL_MAX_JOBS);
	assert_int_equal(fx->results[0], 99);
	assert_int_equal(fx->off_thread, 0);

	/* Delivered: room again. A hash of a too-long password completes with -1. */
	fx->got = 0;
	fx->want = 1;
	assert_int_equal(kdfpool_hash(pool, big, sizeof big, &CHEAP, hash_done, &t), 0);
	assert_int_equal(loop_run(fx->loop), 0);
	assert_false(fx->timed_out);
	assert_int_equal(fx->results[0], -1);
	kdfpool_free(&pool);
}

#define FX_TEST(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hash_verify),
		cmocka_unit_test(test_salts_differ),
		cmocka_unit_test(test_needs_rehash),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_bounds),
		cmocka_unit_test(test_rfc7914_vector),
		FX_TEST(test_pool_run),
		FX_TEST(test_pool_free_queued),
		FX_TEST(test_pool_bound),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
