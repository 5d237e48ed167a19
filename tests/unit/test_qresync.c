/*
 * test_qresync.c — cmocka unit tests for the parsing side of
 * services/imapd/qresync.c (RFC 7162 3.2): SELECT's parameter list with
 * CONDSTORE and QRESYNC (uidvalidity modseq [known-uids] [seq-match-data]),
 * its malformed forms, the seq-match-data comparison against a map, and
 * UID FETCH's (CHANGEDSINCE n VANISHED) modifiers (parse.c).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qresync.h"

/* Parses s as SELECT's parameters (all of it): true if it is valid. */
static bool parse(const char *s, qresync_param_t *q, bool *qr, bool *cs)
{
	imap_parser_t ip;
	ip_init(&ip, s, strlen(s));
	bool ok = qresync_parse_select(&ip, q, qr, cs) && ip_eol(&ip);
	ip_clear(&ip);
	return ok;
}

static void test_select_params(void **state)
{
	(void)state;
	qresync_param_t q;
	bool qr, cs;
	assert_true(parse("(CONDSTORE)", &q, &qr, &cs));
	assert_true(cs && !qr);
	qresync_param_clear(&q);
	assert_true(parse("(QRESYNC (67890007 20050715194045000))", &q, &qr, &cs));
	assert_true(qr && !cs);
	assert_int_equal(q.uidvalidity, 67890007);
	assert_int_equal(q.modseq, 20050715194045000ULL);
	assert_null(q.known);
	assert_null(q.match_seqs);
	qresync_param_clear(&q);
	/* known-uids and seq-match-data, with CONDSTORE too, in any case */
	assert_true(parse("(condstore qresync (67890007 90060115194045000 41,43:211,214:541 "
			  "(1:10,15 41,43:51,60)))", &q, &qr, &cs));
	assert_true(qr && cs);
	assert_non_null(q.known);
	assert_int_equal(q.known->n, 3);
	assert_int_equal(q.known->r[1].lo, 43);
	assert_int_equal(q.known->r[1].hi, 211);
	assert_int_equal(q.match_seqs->n, 2);
	assert_int_equal(q.match_uids->n, 3);
	qresync_param_clear(&q);
	/* seq-match-data without known-uids */
	assert_true(parse("(QRESYNC (1 2 (1:3 5:7)))", &q, &qr, &cs));
	assert_null(q.known);
	assert_non_null(q.match_uids);
	qresync_param_clear(&q);
	const char *bad[] = {
		"", "()", "(QRESYNC)", "(QRESYNC ())", "(QRESYNC (0 1))", "(QRESYNC (1 0))",
		"(QRESYNC (4294967296 1))", "(QRESYNC (1 9223372036854775808))", "(QRESYNC (1))",
		"(QRESYNC (1 1 1:*))", "(QRESYNC (1 1 *))", "(QRESYNC (1 1 0))",
		"(QRESYNC (1 1 1:5 (1:2 1:3)))", "(QRESYNC (1 1 1:5 (1:2)))",
		"(QRESYNC (1 1 1:5 (1:* 1:5)))", "(QRESYNC (1 1 (1 1) 1:5))", "(QRESYNC (1 1 1:5 ))",
		"(QRESYNC (1 1 ))", "(QRESYNC (1 1)", "(QRESYNC (1 1) QRESYNC (1 1))",
		"(CONDSTORE CONDSTORE)", "(QRESYNC 1 1)", "(FOO)", "(CONDSTORE", "CONDSTORE",
		"(QRESYNC (1 1 1:5 (1 1) x))", "(QRESYNC (1 1 a:b))",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		bool ok = parse(bad[i], &q, &qr, &cs);
		if (ok)
			fprintf(stderr, "accepted: %s\n", bad[i]);
		assert_false(ok);
		qresync_param_clear(&q);   /* frees what a failed parse had made */
	}
}

static void test_match(void **state)
{
	(void)state;
	/* the mailbox now: UIDs 1, 3, 4, 6, 7 (2 and 5 expunged) */
	uint32_t uids[] = { 1, 3, 4, 6, 7 };
	seqmap_t map = { uids, 5 };
	qresync_param_t q;
	bool qr, cs;
	struct { const char *param; uint32_t want; } cases[] = {
		{ "(QRESYNC (1 1))", 0 },                       /* no seq-match-data */
		{ "(QRESYNC (1 1 1:7 (1:7 1:7)))", 1 },          /* the old view: 1 still first */
		{ "(QRESYNC (1 1 (1:3 1,3,4)))", 4 },            /* a view after 2 went */
		{ "(QRESYNC (1 1 (4:5 6:7)))", 7 },              /* the current view */
		{ "(QRESYNC (1 1 (2,9 3,10)))", 3 },             /* seq 9 is past the end */
		{ "(QRESYNC (1 1 (2 2)))", 0 },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		assert_true(parse(cases[i].param, &q, &qr, &cs));
		assert_int_equal(qresync_match(&q, &map), cases[i].want);
		qresync_param_clear(&q);
	}
	/* a huge sample is compared only so far (bounded work) */
	assert_true(parse("(QRESYNC (1 1 (1:4000000000 1:4000000000)))", &q, &qr, &cs));
	assert_int_equal(qresync_match(&q, &map), 1);
	qresync_param_clear(&q);
}

static void test_fetch_vanished_modifier(void **state)
{
	(void)state;
	imap_parser_t ip;
	fetch_req_t f;
	const char *good[] = { "(FLAGS) (CHANGEDSINCE 12345 VANISHED)",
			       "FLAGS (VANISHED CHANGEDSINCE 12345)" };
	for (size_t i = 0; i < 2; i++) {
		ip_init(&ip, good[i], strlen(good[i]));
		assert_true(ip_fetch_atts(&ip, &f) && ip_eol(&ip));
		assert_true(f.vanished);
		assert_int_equal(f.changedsince, 12345);
		assert_true(f.items & FI_MODSEQ);
		ip_clear(&ip);
	}
	const char *s = "FLAGS (CHANGEDSINCE 7)";
	ip_init(&ip, s, strlen(s));
	assert_true(ip_fetch_atts(&ip, &f) && ip_eol(&ip));
	assert_false(f.vanished);
	ip_clear(&ip);
	const char *bad[] = { "FLAGS (VANISHED)", "FLAGS (CHANGEDSINCE 1 VANISHED VANISHED)",
			      "FLAGS (CHANGEDSINCE 1 CHANGEDSINCE 2)", "FLAGS (CHANGEDSINCE 0 VANISHED)",
			      "FLAGS ()", "FLAGS (CHANGEDSINCE 1 VANISHED", "FLAGS (VANISHEDX)" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		ip_init(&ip, bad[i], strlen(bad[i]));
		bool ok = ip_fetch_atts(&ip, &f) && ip_eol(&ip);
		assert_false(ok);
		ip_clear(&ip);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_select_params),
		cmocka_unit_test(test_match),
		cmocka_unit_test(test_fetch_vanished_modifier),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
