/*
 * test_imap_parse.c — cmocka unit tests for services/imapd/parse.c: the
 * frame (literals split across feeds, LITERAL+, bounds on lines and
 * literals, a huge literal announced and never sent), tokens, FETCH items
 * with sections and partials, SEARCH keys into storaged criteria (nesting
 * bounded without deep recursion), sequence numbers to UIDs, dates.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imapd.h"

/* Feeds s in pieces of step bytes; returns the last event and the bytes
 * not consumed in *left. */
static enum frame_ev feed(imap_frame_t *f, const char *s, size_t step, size_t *left)
{
	size_t len = strlen(s), off = 0;
	enum frame_ev ev = FR_MORE;
	while (off < len) {
		size_t n = len - off < step ? len - off : step, used;
		ev = imap_frame_feed(f, s + off, n, &used, 1000);
		off += used;
		if (ev != FR_MORE && ev != FR_CONTINUE)
			break;
	}
	*left = len - off;
	return ev;
}

static void test_frame_literals_split(void **state)
{
	(void)state;
	imap_frame_t f = { 0 };
	size_t used, left;
	/* the announcement, then the continuation event, then the bytes in pieces */
	assert_int_equal(imap_frame_feed(&f, "a LOGIN {5}\r\n", 13, &used, 0), FR_CONTINUE);
	assert_int_equal(used, 13);
	assert_int_equal(imap_frame_feed(&f, "al", 2, &used, 0), FR_MORE);
	assert_int_equal(imap_frame_feed(&f, "ice {3+}\r\npw", 12, &used, 0), FR_MORE);
	assert_int_equal(imap_frame_feed(&f, "d\r\nb NOOP\r\n", 11, &used, 0), FR_COMMAND);
	assert_int_equal(used, 3);
	assert_int_equal(f.cmd.len, strlen("a LOGIN {5}\r\nalice {3+}\r\npwd\r\n"));
	assert_memory_equal(f.cmd.buf, "a LOGIN {5}\r\nalice {3+}\r\npwd\r\n", f.cmd.len);
	imap_frame_reset(&f);
	/* byte by byte gives the same command */
	assert_int_equal(feed(&f, "x LOGIN {1+}\r\nu {1+}\r\np\r\n", 1, &left), FR_COMMAND);
	assert_int_equal(left, 0);
	imap_frame_free(&f);
}

static void test_frame_bounds(void **state)
{
	(void)state;
	imap_frame_t f = { 0 };
	size_t used;
	char tag[IMAPD_TAG_MAX + 1];
	/* a literal over the command bound: refused before any byte comes */
	const char *big = "t1 LOGIN {999999999}\r\n";
	assert_int_equal(imap_frame_feed(&f, big, strlen(big), &used, 0), FR_LITERAL_TOO_BIG);
	imap_frame_tag(&f, tag, sizeof tag);
	assert_string_equal(tag, "t1");
	assert_true(f.cmd.cap < 4096);   /* nothing reserved for it */
	imap_frame_reset(&f);
	const char *plus = "t2 LOGIN {999999999+}\r\n";
	assert_int_equal(imap_frame_feed(&f, plus, strlen(plus), &used, 0), FR_LITPLUS_TOO_BIG);
	imap_frame_reset(&f);
	/* APPEND may carry up to append_max; the memory grows with the bytes only */
	const char *app = "t3 APPEND INBOX {1000}\r\n";
	assert_int_equal(imap_frame_feed(&f, app, strlen(app), &used, 1000), FR_CONTINUE);
	assert_true(f.cmd.cap < 4096);
	imap_frame_reset(&f);
	const char *app2 = "t4 APPEND INBOX {99999}\r\n";   /* over IMAPD_CMD_MAX + 1000 */
	assert_int_equal(imap_frame_feed(&f, app2, strlen(app2), &used, 1000), FR_LITERAL_TOO_BIG);
	imap_frame_reset(&f);
	/* an over-long line is dropped to its end, then the next command reads */
	char *line = malloc(IMAPD_LINE_MAX + 100);
	memset(line, 'a', IMAPD_LINE_MAX + 99);
	line[IMAPD_LINE_MAX + 99] = '\0';
	size_t left;
	assert_int_equal(feed(&f, line, 1000, &left), FR_LINE_TOO_LONG);
	assert_int_equal(feed(&f, line + IMAPD_LINE_MAX + 99 - left, 1000, &left), FR_MORE);
	assert_int_equal(feed(&f, "\r\nn NOOP\r\n", 100, &left), FR_COMMAND);
	assert_memory_equal(f.cmd.buf, "n NOOP\r\n", 8);
	free(line);
	imap_frame_free(&f);
}

/* A large APPEND literal is announced, then diverted to the caller in
 * pieces no larger than its room; the line after it ends the command. */
static void test_frame_divert(void **state)
{
	(void)state;
	imap_frame_t f = { 0 };
	size_t used, n = IMAPD_APPEND_STREAM_MIN + 10;
	char head[64];
	snprintf(head, sizeof head, "a APPEND INBOX {%zu+}\r\n", n);
	assert_int_equal(imap_frame_feed(&f, head, strlen(head), &used, 1 << 30), FR_APPEND_LITERAL);
	assert_int_equal(used, strlen(head));
	assert_false(f.lit_sync);
	imap_frame_divert(&f);
	char *body = malloc(n + 2);
	memset(body, 'm', n);
	memcpy(body + n, "\r\n", 2);
	size_t off = 0, got = 0;
	f.lit_room = 0;
	assert_int_equal(imap_frame_feed(&f, body, n + 2, &used, 1 << 30), FR_MORE);
	assert_int_equal(used, 0);   /* no room: nothing taken */
	for (;;) {
		f.lit_room = 4096;
		enum frame_ev ev = imap_frame_feed(&f, body + off, n + 2 - off, &used, 1 << 30);
		off += used;
		if (ev == FR_COMMAND)
			break;
		assert_int_equal(ev, FR_LITERAL_BYTES);
		assert_true(f.lit_datalen <= 4096);
		got += f.lit_datalen;
	}
	assert_int_equal(got, n);
	assert_int_equal(off, n + 2);
	assert_memory_equal(f.cmd.buf, head, strlen(head));   /* the literal is not kept */
	assert_int_equal(f.cmd.len, strlen(head) + 2);
	free(body);
	imap_frame_free(&f);
}

static void test_tokens(void **state)
{
	(void)state;
	imap_parser_t ip;
	const char *cmd = "a1 \"q\\\"x\\\\\" {3}\r\nl\0t atom] NIL \"\"";
	size_t len;
	bool nil;
	ip_init(&ip, cmd, 33);
	assert_string_equal(ip_tag(&ip), "a1");
	assert_true(ip_sp(&ip));
	assert_string_equal(ip_astring(&ip, &len), "q\"x\\");
	assert_true(ip_sp(&ip));
	const char *lit = ip_astring(&ip, &len);
	assert_int_equal(len, 3);
	assert_memory_equal(lit, "l\0t", 3);
	assert_true(ip_sp(&ip));
	assert_string_equal(ip_astring(&ip, &len), "atom]");
	assert_true(ip_sp(&ip));
	assert_null(ip_nstring(&ip, &len, &nil));
	assert_true(nil);
	assert_true(ip_sp(&ip));
	assert_string_equal(ip_astring(&ip, &len), "");
	assert_true(ip_eol(&ip));
	ip_clear(&ip);
	/* a literal announcing more than there is */
	ip_init(&ip, "{10}\r\nab", 8);
	assert_null(ip_astring(&ip, &len));
	assert_non_null(ip.err);
	ip_clear(&ip);
	/* flags: system flags in canonical case, \Recent refused */
	const char *flags[4];
	size_t n;
	ip_init(&ip, "(\\seen $Junk \\DELETED)", 22);
	assert_true(ip_flag_list(&ip, flags, 4, &n));
	assert_int_equal(n, 3);
	assert_string_equal(flags[0], "\\Seen");
	assert_string_equal(flags[1], "$Junk");
	assert_string_equal(flags[2], "\\Deleted");
	ip_clear(&ip);
	ip_init(&ip, "(\\Recent)", 9);
	assert_false(ip_flag_list(&ip, flags, 4, &n));
	ip_clear(&ip);
}

static void test_fetch_atts(void **state)
{
	(void)state;
	imap_parser_t ip;
	fetch_req_t f;
	const char *s = "(UID FLAGS BODY.PEEK[HEADER.FIELDS (From \"X y\")]<0.100> BODY[1.2.MIME] "
			"RFC822.SIZE) (CHANGEDSINCE 7)";
	ip_init(&ip, s, strlen(s));
	assert_true(ip_fetch_atts(&ip, &f));
	assert_true(ip_eol(&ip));
	assert_int_equal(f.items, FI_UID | FI_FLAGS | FI_SIZE | FI_MODSEQ);
	assert_int_equal(f.nbodies, 2);
	assert_true(f.bodies[0].peek && f.bodies[0].partial);
	assert_int_equal(f.bodies[0].sect.kind, SECT_HEADER_FIELDS);
	assert_int_equal(f.bodies[0].sect.nfields, 2);
	assert_string_equal(f.bodies[0].sect.fields[1], "X y");
	assert_string_equal(f.bodies[0].name, "BODY[HEADER.FIELDS (From \"X y\")]<0>");
	assert_int_equal(f.bodies[1].sect.depth, 2);
	assert_int_equal(f.bodies[1].sect.kind, SECT_MIME);
	assert_string_equal(f.bodies[1].name, "BODY[1.2.MIME]");
	assert_true(f.sets_seen && f.needs_bytes);
	assert_int_equal(f.changedsince, 7);
	ip_clear(&ip);
	ip_init(&ip, "FAST", 4);
	assert_true(ip_fetch_atts(&ip, &f));
	assert_int_equal(f.items, FI_FLAGS | FI_INTERNALDATE | FI_SIZE);
	assert_false(f.needs_bytes);
	ip_clear(&ip);
	const char *bad[] = { "BODY.PEEK", "BODY[MIME]", "BODY[1.]", "BODY[]<5>", "(FLAGS", "BOGUS",
			      "BODY[HEADER.FIELDS ()]", "((((FLAGS))))", "BODY[0]" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		ip_init(&ip, bad[i], strlen(bad[i]));
		bool ok = ip_fetch_atts(&ip, &f) && ip_eol(&ip);
		assert_false(ok);
		ip_clear(&ip);
	}
}

static void test_search(void **state)
{
	(void)state;
	uint32_t uids[] = { 3, 5, 9, 10, 11 };
	seqmap_t map = { uids, 5 };
	imap_parser_t ip;
	bool modseq;
	const char *s = "OR (SEEN FROM \"bob\") NOT 2:4 SINCE 1-Feb-2024 MODSEQ 5";
	ip_init(&ip, s, strlen(s));
	json_t *k = ip_search_new(&ip, &map, &modseq);
	assert_non_null(k);
	assert_true(ip_eol(&ip));
	assert_true(modseq);
	char *txt = json_dumps(k, JSON_COMPACT | JSON_SORT_KEYS);
	assert_string_equal(txt, "{\"and\":[{\"or\":[{\"and\":[{\"flag\":\"\\\\Seen\"},{\"header\":"
			    "{\"contains\":\"bob\",\"field\":\"from\"}}]},{\"not\":{\"uids\":\"5:10\"}}]},"
			    "{\"since\":1706745600},{\"modseq\":5}]}");
	free(txt);
	json_decref(k);
	ip_clear(&ip);
	/* 10,000 levels of nesting: an error, not a deep recursion */
	size_t depth = 10000;
	char *deep = malloc(2 * depth + 4);
	memset(deep, '(', depth);
	memcpy(deep + depth, "ALL", 3);
	memset(deep + depth + 3, ')', depth);
	ip_init(&ip, deep, 2 * depth + 3);
	assert_null(ip_search_new(&ip, &map, &modseq));
	assert_non_null(ip.err);
	ip_clear(&ip);
	free(deep);
	/* NOT NOT NOT ... likewise */
	deep = malloc(4 * depth + 4);
	for (size_t i = 0; i < depth; i++)
		memcpy(deep + 4 * i, "NOT ", 4);
	memcpy(deep + 4 * depth, "ALL", 3);
	ip_init(&ip, deep, 4 * depth + 3);
	assert_null(ip_search_new(&ip, &map, &modseq));
	assert_non_null(ip.err);
	ip_clear(&ip);
	free(deep);
	const char *bad[] = { "BOGUS", "OR SEEN", "(SEEN", "SINCE 31-Foo-2024", "HEADER \"a:b\" yes",
			      "HEADER \"\" yes", "HEADER \"X Spam\" yes", "LARGER x", "UID" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		ip_init(&ip, bad[i], strlen(bad[i]));
		k = ip_search_new(&ip, &map, &modseq);
		assert_true(k == NULL || !ip_eol(&ip));
		json_decref(k);
		ip_clear(&ip);
	}
	/* a field storaged does not cache goes to it by name; a cached one by
	 * its cache name */
	const char *fields[][2] = { { "HEADER X-Spam yes", "X-Spam" }, { "HEADER Message-ID x", "message_id" } };
	for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
		ip_init(&ip, fields[i][0], strlen(fields[i][0]));
		k = ip_search_new(&ip, &map, &modseq);
		assert_non_null(k);
		assert_string_equal(json_string_value(json_object_get(json_object_get(k, "header"), "field")),
				    fields[i][1]);
		json_decref(k);
		ip_clear(&ip);
	}
}

static void test_seqmap_and_dates(void **state)
{
	(void)state;
	uint32_t uids[] = { 3, 5, 9, 10, 11 };
	seqmap_t map = { uids, 5 }, empty = { NULL, 0 };
	const char *why;
	char *u = seqmap_to_uids(&map, "1,3:*", &why);
	assert_string_equal(u, "3,9:11");
	free(u);
	u = seqmap_to_uids(&map, "7:9", &why);
	assert_string_equal(u, "");
	free(u);
	u = seqmap_to_uids(&empty, "1:*", &why);
	assert_string_equal(u, "");
	free(u);
	assert_null(seqmap_to_uids(&map, "0", &why));
	assert_int_equal(imap_date_parse("1-Feb-2024", 10), 1706745600);
	assert_int_equal(imap_date_parse("01-feb-2024", 11), 1706745600);
	assert_int_equal(imap_date_parse("1-Feb-24", 8), -1);
	assert_int_equal(imap_datetime_parse("17-Jul-1996 02:44:25 -0700", 26), 837596665);
	assert_int_equal(imap_datetime_parse(" 7-Jul-1996 02:44:25 +0000", 26), 836707465);
	assert_int_equal(imap_datetime_parse("17-Jul-1996 25:44:25 -0700", 26), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_frame_literals_split),
		cmocka_unit_test(test_frame_bounds),
		cmocka_unit_test(test_frame_divert),
		cmocka_unit_test(test_tokens),
		cmocka_unit_test(test_fetch_atts),
		cmocka_unit_test(test_search),
		cmocka_unit_test(test_seqmap_and_dates),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
