/*
 * test_chunk.c — cmocka unit tests for proto/chunk.c: the receiving side of
 * chunked streams (chunk_rx_*) and the sender's splitting (chunk_next).
 *
 * The last test is the whole path in miniature: a random buffer larger
 * than one raw frame is split with chunk_next, judged chunk by chunk with
 * chunk_rx_check (with resends injected, as after a lost acknowledgement)
 * and must come out byte for byte the same.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "chunk.h"
#include "util.h"

/* Judges one chunk and checks the verdict; returns the reason (or NULL). */
static const char *check(chunk_rx_t *rx, const char *stream, int64_t seq, bool last, size_t len,
			 enum chunk_verdict want)
{
	const char *why = NULL;
	enum chunk_verdict v = chunk_rx_check(rx, stream, seq, last, len, &why);
	if (v != want)
		fail_msg("chunk %s/%lld len %zu: verdict %d, want %d (%s)", stream, (long long)seq,
			 len, (int)v, (int)want, why ? why : "-");
	if (want == CHUNK_REJECT)
		assert_non_null(why);
	return why;
}

/* ---- chunk_rx ---------------------------------------------------------------- */

static void test_in_order(void **state)
{
	(void)state;
	chunk_rx_t rx;

	chunk_rx_init(&rx, 1000);
	assert_false(rx.done);
	assert_int_equal(rx.bytes, 0);
	check(&rx, "s1", 0, false, 10, CHUNK_ACCEPT);
	assert_string_equal(rx.stream, "s1");
	assert_int_equal(rx.next_seq, 1);
	assert_int_equal(rx.bytes, 10);
	assert_false(rx.done);
	check(&rx, "s1", 1, false, 0, CHUNK_ACCEPT);
	check(&rx, "s1", 2, true, 90, CHUNK_ACCEPT);
	assert_int_equal(rx.next_seq, 3);
	assert_int_equal(rx.bytes, 100);
	assert_true(rx.done);

	/* A one-chunk stream. */
	chunk_rx_init(&rx, 1000);
	check(&rx, "only", 0, true, 0, CHUNK_ACCEPT);
	assert_true(rx.done);
	assert_int_equal(rx.bytes, 0);
}

static void test_bad_start(void **state)
{
	(void)state;
	chunk_rx_t rx;
	char id[BUS_ID_MAX + 2];

	chunk_rx_init(&rx, 1000);
	assert_non_null(strstr(check(&rx, "s1", 1, false, 10, CHUNK_REJECT), "seq 0"));
	check(&rx, "s1", -1, false, 10, CHUNK_REJECT);
	assert_int_equal(rx.bytes, 0);
	assert_int_equal(rx.next_seq, 0);

	/* Stream ids: non-empty, at most BUS_ID_MAX. */
	check(&rx, "", 0, false, 10, CHUNK_REJECT);
	memset(id, 'i', sizeof id);
	id[BUS_ID_MAX + 1] = '\0';
	check(&rx, id, 0, false, 10, CHUNK_REJECT);
	id[BUS_ID_MAX] = '\0';
	check(&rx, id, 0, false, 10, CHUNK_ACCEPT);
	assert_string_equal(rx.stream, id);
}

static void test_gap(void **state)
{
	(void)state;
	chunk_rx_t rx;

	chunk_rx_init(&rx, 1000);
	check(&rx, "s1", 0, false, 10, CHUNK_ACCEPT);
	assert_non_null(strstr(check(&rx, "s1", 2, false, 10, CHUNK_REJECT), "out of order"));
	check(&rx, "s1", 5, true, 10, CHUNK_REJECT);
	assert_int_equal(rx.bytes, 10);
	assert_int_equal(rx.next_seq, 1);
	assert_false(rx.done);
}

static void test_duplicate(void **state)
{
	(void)state;
	chunk_rx_t rx;

	chunk_rx_init(&rx, 1000);
	check(&rx, "s1", 0, false, 10, CHUNK_ACCEPT);
	check(&rx, "s1", 0, false, 10, CHUNK_DUPLICATE);
	assert_int_equal(rx.bytes, 10);
	assert_int_equal(rx.next_seq, 1);
	check(&rx, "s1", 1, false, 20, CHUNK_ACCEPT);
	check(&rx, "s1", 1, false, 20, CHUNK_DUPLICATE);
	check(&rx, "s1", 1, false, 20, CHUNK_DUPLICATE);
	assert_int_equal(rx.bytes, 30);
	assert_int_equal(rx.next_seq, 2);
	/* Only the previous chunk can be a resend: older is out of order. */
	check(&rx, "s1", 0, false, 10, CHUNK_REJECT);
	check(&rx, "s1", 2, true, 5, CHUNK_ACCEPT);
	assert_int_equal(rx.bytes, 35);
}

static void test_after_last(void **state)
{
	(void)state;
	chunk_rx_t rx;

	chunk_rx_init(&rx, 1000);
	check(&rx, "s1", 0, false, 10, CHUNK_ACCEPT);
	check(&rx, "s1", 1, true, 10, CHUNK_ACCEPT);
	assert_true(rx.done);
	assert_non_null(strstr(check(&rx, "s1", 2, false, 10, CHUNK_REJECT), "after the last"));
	check(&rx, "s1", 2, true, 10, CHUNK_REJECT);
	/* The last chunk's acknowledgement may be lost like any other. */
	check(&rx, "s1", 1, true, 10, CHUNK_DUPLICATE);
	assert_int_equal(rx.bytes, 20);
	assert_true(rx.done);
}

static void test_other_stream(void **state)
{
	(void)state;
	chunk_rx_t rx;

	chunk_rx_init(&rx, 1000);
	check(&rx, "s1", 0, false, 10, CHUNK_ACCEPT);
	assert_non_null(strstr(check(&rx, "s2", 1, false, 10, CHUNK_REJECT), "another stream"));
	/* Not even as a "duplicate" of the previous seq. */
	check(&rx, "s2", 0, false, 10, CHUNK_REJECT);
	check(&rx, "s", 1, false, 10, CHUNK_REJECT);
	check(&rx, "s10", 1, false, 10, CHUNK_REJECT);
	assert_int_equal(rx.bytes, 10);
	check(&rx, "s1", 1, true, 10, CHUNK_ACCEPT);
}

static void test_max_bytes(void **state)
{
	(void)state;
	chunk_rx_t rx;

	chunk_rx_init(&rx, 100);
	check(&rx, "s1", 0, false, 60, CHUNK_ACCEPT);
	assert_non_null(strstr(check(&rx, "s1", 1, false, 41, CHUNK_REJECT), "larger than allowed"));
	assert_int_equal(rx.bytes, 60);
	assert_int_equal(rx.next_seq, 1);
	/* Exactly the bound is fine. */
	check(&rx, "s1", 1, true, 40, CHUNK_ACCEPT);
	assert_int_equal(rx.bytes, 100);

	/* A first chunk alone may exceed it. */
	chunk_rx_init(&rx, 100);
	check(&rx, "s1", 0, true, 101, CHUNK_REJECT);
	assert_int_equal(rx.bytes, 0);

	chunk_rx_init(&rx, 0);
	check(&rx, "s1", 0, false, 0, CHUNK_ACCEPT);
	check(&rx, "s1", 1, true, 1, CHUNK_REJECT);
}

static void test_chunk_too_big(void **state)
{
	(void)state;
	chunk_rx_t rx;

	chunk_rx_init(&rx, 10 * (uint64_t)BUS_RAW_MAX);
	assert_non_null(strstr(check(&rx, "s1", 0, false, BUS_RAW_MAX + 1, CHUNK_REJECT),
			       "larger than a raw frame"));
	assert_int_equal(rx.bytes, 0);
	check(&rx, "s1", 0, false, BUS_RAW_MAX, CHUNK_ACCEPT);
	check(&rx, "s1", 1, true, BUS_RAW_MAX + 1, CHUNK_REJECT);
	assert_int_equal(rx.bytes, BUS_RAW_MAX);
}

/* ---- chunk_next ---------------------------------------------------------------- */

static void test_next_empty(void **state)
{
	(void)state;
	size_t off = 0;
	bool last = false;

	assert_int_equal(chunk_next(0, &off, BUS_CHUNK_SIZE, &last), 0);
	assert_true(last);
	assert_int_equal(off, 0);
}

static void test_next_exact(void **state)
{
	(void)state;
	size_t off = 0;
	bool last = true;

	for (int i = 0; i < 3; i++) {
		assert_int_equal(chunk_next(3 * 100, &off, 100, &last), 100);
		assert_int_equal(off, (size_t)(i + 1) * 100);
		assert_int_equal(last, i == 2);
	}

	/* One full chunk. */
	off = 0;
	assert_int_equal(chunk_next(100, &off, 100, &last), 100);
	assert_true(last);
}

static void test_next_remainder(void **state)
{
	(void)state;
	size_t off = 0;
	bool last = true;

	assert_int_equal(chunk_next(205, &off, 100, &last), 100);
	assert_false(last);
	assert_int_equal(chunk_next(205, &off, 100, &last), 100);
	assert_false(last);
	assert_int_equal(chunk_next(205, &off, 100, &last), 5);
	assert_true(last);
	assert_int_equal(off, 205);

	/* Smaller than one chunk. */
	off = 0;
	assert_int_equal(chunk_next(7, &off, 100, &last), 7);
	assert_true(last);
	assert_int_equal(off, 7);
}

/* ---- the whole path ---------------------------------------------------------------- */

/*
 * Splits total random bytes into BUS_CHUNK_SIZE chunks and feeds them to a
 * receiver, resending chunk dup_seq once (and the last chunk once) as a
 * sender does when an acknowledgement is lost. Returns the chunk count.
 */
static int64_t reassemble(size_t total, int64_t dup_seq)
{
	unsigned char *src = xmalloc(total > 0 ? total : 1);
	unsigned char *dst = xmalloc(total > 0 ? total : 1);
	chunk_rx_t rx;
	size_t off = 0;
	int64_t seq = 0;
	bool last = false;
	int dups = 0;

	for (size_t i = 0; i < total; i++)
		src[i] = (unsigned char)(rand() & 0xff);
	memset(dst, 0, total);
	chunk_rx_init(&rx, total);
	while (!last) {
		size_t start = off;
		size_t n = chunk_next(total, &off, BUS_CHUNK_SIZE, &last);
		assert_true(n <= BUS_CHUNK_SIZE);
		/* A resend carries the same bytes: the receiver must keep one copy. */
		for (int attempt = 0; attempt < ((seq == dup_seq || last) ? 2 : 1); attempt++) {
			const char *why = NULL;
			enum chunk_verdict v = chunk_rx_check(&rx, "big", seq, last, n, &why);
			if (attempt == 0) {
				assert_int_equal(v, CHUNK_ACCEPT);
				assert_int_equal(rx.bytes, start + n);
				memcpy(dst + start, src + start, n);
			} else {
				assert_int_equal(v, CHUNK_DUPLICATE);
				dups++;
			}
		}
		seq++;
	}
	assert_true(rx.done);
	assert_int_equal(rx.bytes, total);
	assert_int_equal(dups, dup_seq < seq - 1 ? 2 : 1);
	assert_memory_equal(src, dst, total);
	free(src);
	free(dst);
	return seq;
}

static void test_reassemble(void **state)
{
	(void)state;
	srand(20240611);
	/* 1 MiB: exactly four BUS_CHUNK_SIZE chunks. */
	assert_int_equal(reassemble(1024 * 1024, 1), 4);
	/* 1 MiB and a bit: a short fifth chunk. */
	assert_int_equal(reassemble(1024 * 1024 + 12345, 2), 5);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_in_order),
		cmocka_unit_test(test_bad_start),
		cmocka_unit_test(test_gap),
		cmocka_unit_test(test_duplicate),
		cmocka_unit_test(test_after_last),
		cmocka_unit_test(test_other_stream),
		cmocka_unit_test(test_max_bytes),
		cmocka_unit_test(test_chunk_too_big),
		cmocka_unit_test(test_next_empty),
		cmocka_unit_test(test_next_exact),
		cmocka_unit_test(test_next_remainder),
		cmocka_unit_test(test_reassemble),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
