/*
 * test_smtpd_parse.c — cmocka unit tests for smtpd's parsers of outside
 * input: the RFC 5321 path parser (addr.c: relay tricks, quoting, source
 * routes, UTF-8, every length bound) and the DATA decoder and header scanner
 * (data.c: dot-stuffing, end only on CRLF.CRLF, bare CR/LF, resumable at
 * every byte, output bound).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtpd.h"
#include "util.h"

/* Parses in with flags: the address, or "!<err>". */
static const char *parse(const char *in, unsigned flags)
{
	static char out[SMTPD_PATH_MAX + 16];
	smtp_path_t p;
	size_t used;
	enum addr_err e = addr_parse_path(in, strlen(in), flags, &p, &used);
	if (e != ADDR_OK) {
		snprintf(out, sizeof out, "!%d", (int)e);
		return out;
	}
	snprintf(out, sizeof out, "%s%s%s%s|%zu", p.null ? "<>" : p.addr, p.quoted ? " Q" : "",
		 p.literal ? " L" : "", p.route ? " R" : "", used);
	return out;
}

static void test_paths(void **state)
{
	(void)state;
	static const struct { const char *in; unsigned flags; const char *want; } cases[] = {
		{ "<alice@example.org>", 0, "alice@example.org|19" },
		{ "<alice@example.org> SIZE=10", 0, "alice@example.org|19" },
		{ "<>", ADDR_ALLOW_NULL, "<>|2" },
		{ "<>", 0, "!1" },
		{ "<Postmaster>", ADDR_POSTMASTER, "postmaster|12" },
		{ "<postmaster>", 0, "!1" },
		{ "<a.b-c+tag@sub.example.org>", 0, "a.b-c+tag@sub.example.org|27" },
		/* relay tricks: the domain is after the one unquoted '@' */
		{ "<user%other@example.org>", 0, "user%other@example.org|24" },
		{ "<other!user@example.org>", 0, "other!user@example.org|24" },
		{ "<\"user@other\"@example.org>", 0, "user@other@example.org Q|26" },
		{ "<\"alice\"@example.org>", 0, "alice@example.org|21" },
		{ "<\"a b\"@example.org>", 0, "a b@example.org Q|19" },
		{ "<\"a\\\"b\"@example.org>", 0, "a\"b@example.org Q|20" },
		{ "<@example.org:user@other.example>", 0, "user@other.example R|33" },
		{ "<@a.example,@b.example:user@c.example>", 0, "user@c.example R|38" },
		{ "<user@other@example.org>", 0, "!1" },
		{ "<user@example.org.>", 0, "!1" },
		{ "<user.@example.org>", 0, "!1" },
		{ "<.user@example.org>", 0, "!1" },
		{ "<us..er@example.org>", 0, "!1" },
		{ "<user@-example.org>", 0, "!1" },
		{ "<user@example-.org>", 0, "!1" },
		{ "<user@exa_mple.org>", 0, "!1" },
		{ "<user@>", 0, "!1" },
		{ "<@example.org>", 0, "!1" },
		{ "<user>", 0, "!1" },
		{ "user@example.org", 0, "!1" },
		{ "<user@example.org", 0, "!1" },
		{ "<user@[192.0.2.1]>", 0, "user@[192.0.2.1] L|18" },
		{ "<user@[IPv6:2001:db8::1]>", 0, "user@[IPv6:2001:db8::1] L|25" },
		{ "<user@[300.0.2.1]>", 0, "!1" },
		{ "<user@[x-tag:stuff]>", 0, "user@[x-tag:stuff] L|20" },
		{ "<\"\"@example.org>", 0, "!1" },
		{ "<\"a\x01\"@example.org>", 0, "!1" },
		{ "<\"unterminated@example.org>", 0, "!1" },
		{ "<us\\er@example.org>", 0, "!1" },
		/* UTF-8 only with SMTPUTF8, and only well-formed */
		{ "<j\xc3\xb6rg@example.org>", 0, "!3" },
		{ "<j\xc3\xb6rg@example.org>", ADDR_UTF8, "j\xc3\xb6rg@example.org|19" },
		{ "<a@b\xc3\xbc" "cher.example>", ADDR_UTF8, "a@b\xc3\xbc" "cher.example|19" },
		{ "<j\xc3rg@example.org>", ADDR_UTF8, "!4" },
		{ "<j\xc0\xafrg@example.org>", ADDR_UTF8, "!4" },        /* overlong '/' */
		{ "<j\xed\xa0\x80rg@example.org>", ADDR_UTF8, "!4" },    /* surrogate */
		{ "<j\xf4\x90\x80\x80@example.org>", ADDR_UTF8, "!4" },  /* > U+10FFFF */
	};
	int bad = 0;
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		const char *got = parse(cases[i].in, cases[i].flags);
		if (strcmp(got, cases[i].want) != 0) {
			print_error("%s: got %s want %s\n", cases[i].in, got, cases[i].want);
			bad++;
		}
	}
	assert_int_equal(bad, 0);
}

static void test_path_bounds(void **state)
{
	(void)state;
	char buf[2048];
	/* local part: 64 is fine, 65 is not */
	snprintf(buf, sizeof buf, "<%.*s@example.org>", 64, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	assert_string_not_equal(parse(buf, 0), "!2");
	assert_true(parse(buf, 0)[0] != '!');
	snprintf(buf, sizeof buf, "<%.*s@example.org>", 65, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	assert_true(parse(buf, 0)[0] == '!');
	/* a label of 64 */
	snprintf(buf, sizeof buf, "<a@%.*s.org>", 64, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
	assert_string_equal(parse(buf, 0), "!1");
	/* a path over 256 octets */
	size_t o = (size_t)snprintf(buf, sizeof buf, "<a@");
	for (int i = 0; i < 60; i++)
		o += (size_t)snprintf(buf + o, sizeof buf - o, "abcd.");
	snprintf(buf + o, sizeof buf - o, "org>");
	assert_string_equal(parse(buf, 0), "!2");
	/* no byte past len is read: the same path cut short */
	smtp_path_t p;
	size_t used;
	const char *full = "<alice@example.org>";
	for (size_t n = 0; n < strlen(full); n++) {
		char *cut = xmalloc(n ? n : 1);
		memcpy(cut, full, n);
		assert_int_not_equal(addr_parse_path(cut, n, 0, &p, &used), ADDR_OK);
		free(cut);
	}
}

static void test_helo(void **state)
{
	(void)state;
	assert_true(addr_helo_valid("mail.example.org", 16));
	assert_true(addr_helo_valid("mail.example.org.", 17));
	assert_true(addr_helo_valid("localhost", 9));
	assert_true(addr_helo_valid("[192.0.2.1]", 11));
	assert_false(addr_helo_valid("", 0));
	assert_false(addr_helo_valid("bad_name!", 9));
	assert_false(addr_helo_valid("a b", 3));
	assert_false(addr_helo_valid("[1.2.3]", 7));
	assert_false(addr_helo_valid("-x.org", 6));
}

/* Decodes in, fed in pieces of step bytes with an output window of cap:
 * the decoded bytes into out; returns bytes of in consumed. */
static size_t decode(const char *in, size_t len, size_t step, size_t cap, char *out,
		     size_t *outlen, dotdec_t *d)
{
	size_t i = 0, o = 0;
	dotdec_init(d);
	char *win = xmalloc(cap);
	while (i < len && !d->done) {
		size_t n = len - i < step ? len - i : step, got = 0;
		size_t used = dotdec_feed(d, in + i, n, win, cap, &got);
		assert_true(got <= cap);
		memcpy(out + o, win, got);
		o += got;
		i += used;
	}
	free(win);
	*outlen = o;
	return i;
}

static void test_dot_decoder(void **state)
{
	(void)state;
	static const struct { const char *in, *out; bool done, bare; size_t used; } cases[] = {
		{ "a\r\n.\r\n", "a\r\n", true, false, 6 },
		{ ".\r\n", "", true, false, 3 },
		{ "..x\r\n.\r\nMORE", ".x\r\n", true, false, 8 },
		{ "a\r\n..\r\n.\r\n", "a\r\n.\r\n", true, false, 10 },
		{ "a\n.\nb\r\n.\r\n", "a\n.\nb\r\n", true, true, 10 },
		{ "a\r.\rb\r\n.\r\n", "a\r.\rb\r\n", true, true, 10 },
		{ "a\n.\r\nb\r\n.\r\n", "a\n.\r\nb\r\n", true, true, 11 },
		{ "a\r\n.\nb\r\n.\r\n", "a\r\n\nb\r\n", true, true, 11 },
		{ "a\r\n.\rb\r\n.\r\n", "a\r\n\rb\r\n", true, true, 11 },
		{ "a\r\r\n.\r\n", "a\r\r\n", true, true, 7 },
		{ "no end\r\n", "no end\r\n", false, false, 8 },
		{ "a\r\n. \r\n.\r\n", "a\r\n \r\n", true, false, 10 },
		{ "\x00\xff\r\n.\r\n", "\x00\xff\r\n", true, false, 7 },
	};
	char out[256];
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		size_t inlen = strlen(cases[i].in), wantlen = strlen(cases[i].out);
		if (i == ARRAY_LEN(cases) - 1) {
			inlen = 7;
			wantlen = 4;
		}
		/* every split of the input and tiny output windows give the same */
		for (size_t step = 1; step <= inlen; step++) {
			for (size_t cap = 2; cap <= 8; cap += 3) {
				dotdec_t d;
				size_t olen;
				size_t used = decode(cases[i].in, inlen, step, cap, out, &olen, &d);
				if (olen != wantlen || memcmp(out, cases[i].out, wantlen) != 0 ||
				    d.done != cases[i].done || d.bare != cases[i].bare ||
				    used != cases[i].used)
					fail_msg("case %zu step %zu cap %zu: got %zu bytes done %d bare %d used %zu",
						 i, step, cap, olen, d.done, d.bare, used);
			}
		}
	}
}

static void test_dot_decoder_output_bound(void **state)
{
	(void)state;
	/* a window of 1 byte cannot take a CRLF: nothing moves, nothing overflows */
	dotdec_t d;
	char out[1];
	size_t got = 7;
	dotdec_init(&d);
	assert_int_equal(dotdec_feed(&d, "\r\n", 2, out, 1, &got), 0);
	assert_int_equal(got, 0);
	/* a megabyte of CRs and LFs through a small window */
	size_t n = 1 << 20;
	char *in = xmalloc(n), *big = xmalloc(2 * n);
	for (size_t i = 0; i < n; i++)
		in[i] = "\r\n.x"[i % 4];
	size_t olen;
	decode(in, n, 4096, 100, big, &olen, &d);
	assert_true(olen <= 2 * n);
	assert_false(d.done);
	free(in);
	free(big);
}

/* The decoder as it was, strictly a byte at a time (before the run fast
 * path): the reference the fast one must match on every input and split. */
static size_t ref_feed(dotdec_t *d, const char *in, size_t inlen, char *out, size_t outcap,
		       size_t *outlen)
{
	enum { BOL, MID, CR, DOT, DOTCR };
	size_t i = 0, o = 0;
	while (i < inlen && !d->done && o + 2 <= outcap) {
		char c = in[i++];
		switch (d->st) {
		case BOL:
			if (c == '.') {
				d->st = DOT;
				continue;
			}
			break;
		case DOT:
			if (c == '\r') {
				d->st = DOTCR;
				continue;
			}
			break;
		case DOTCR:
			if (c == '\n') {
				d->done = true;
				continue;
			}
			d->st = CR;
			i--;
			continue;
		case CR:
			if (c == '\n') {
				out[o++] = '\r';
				out[o++] = '\n';
				d->st = BOL;
				continue;
			}
			d->bare = true;
			out[o++] = '\r';
			if (c == '\r')
				continue;
			break;
		default:
			break;
		}
		if (c == '\r') {
			d->st = CR;
			continue;
		}
		if (c == '\n')
			d->bare = true;
		out[o++] = c;
		d->st = MID;
	}
	*outlen = o;
	return i;
}

typedef size_t (*feed_fn)(dotdec_t *, const char *, size_t, char *, size_t, size_t *);

/* Feeds in[0..len) in pieces cut at the offsets cuts[0..ncut) (ascending),
 * with output windows of cap bytes; the result into out/outlen/used/d. */
static void feed_cuts(feed_fn feed, const char *in, size_t len, const size_t *cuts, size_t ncut,
		      size_t cap, char *out, size_t *outlen, size_t *used, dotdec_t *d)
{
	char win[64];
	size_t i = 0, o = 0, k = 0;
	dotdec_init(d);
	while (i < len && !d->done) {
		while (k < ncut && cuts[k] <= i)
			k++;
		size_t end = k < ncut ? cuts[k] : len;
		size_t got = 0;
		size_t u = feed(d, in + i, end - i, win, cap, &got);
		assert_true(got <= cap);
		assert_true(u > 0);  /* cap >= 2: it always moves */
		memcpy(out + o, win, got);
		o += got;
		i += u;
	}
	*outlen = o;
	*used = i;
}

/* Compares the fast decoder with the reference on one input and one way
 * of cutting it; the reference is fed whole with a large window. */
static void compare_one(const char *in, size_t len, const size_t *cuts, size_t ncut, size_t cap)
{
	char want[2 * 512 + 2], got[2 * 512 + 2];
	size_t wlen, wused, glen, gused;
	dotdec_t wd, gd;
	assert_true(len <= 512);
	feed_cuts(ref_feed, in, len, NULL, 0, 64, want, &wlen, &wused, &wd);
	feed_cuts(dotdec_feed, in, len, cuts, ncut, cap, got, &glen, &gused, &gd);
	if (wlen != glen || memcmp(want, got, wlen) != 0 || wd.done != gd.done ||
	    wd.bare != gd.bare || wused != gused) {
		char hex[3 * 64 + 1] = "";
		for (size_t i = 0; i < len && i < 64; i++)
			snprintf(hex + 3 * i, 4, "%02x ", (unsigned char)in[i]);
		fail_msg("input %s(len %zu, %zu cuts, cap %zu): want %zu bytes done %d bare %d used %zu, "
			 "got %zu bytes done %d bare %d used %zu", hex, len, ncut, cap, wlen, wd.done,
			 wd.bare, wused, glen, gd.done, gd.bare, gused);
	}
}

/* Every string up to 7 bytes over {CR, LF, '.', 'a'}, whole and cut at
 * every single offset and at every byte, with windows of 2, 3 and 64;
 * then random longer ones cut at random places: the run fast path must
 * give exactly what the byte-at-a-time decoder gives. */
static void test_dot_decoder_fast_path_matches_bytewise(void **state)
{
	(void)state;
	static const char alpha[] = "\r\n.a";
	char in[512];
	size_t cuts[512];
	for (size_t len = 1; len <= 7; len++) {
		size_t total = 1;
		for (size_t k = 0; k < len; k++)
			total *= 4;
		for (size_t x = 0; x < total; x++) {
			size_t v = x;
			for (size_t k = 0; k < len; k++, v /= 4)
				in[k] = alpha[v % 4];
			static const size_t caps[] = { 2, 3, 64 };
			for (size_t c = 0; c < ARRAY_LEN(caps); c++) {
				compare_one(in, len, NULL, 0, caps[c]);
				for (size_t k = 1; k < len; k++) {
					cuts[k - 1] = k;
					compare_one(in, len, &k, 1, caps[c]);
				}
				compare_one(in, len, cuts, len - 1, caps[c]);
			}
		}
	}
	/* random: mostly text, with CR, LF and dots where they matter */
	srand(4);
	for (int round = 0; round < 20000; round++) {
		size_t len = 1 + (size_t)rand() % sizeof in;
		for (size_t k = 0; k < len; k++) {
			int r = rand() % 16;
			in[k] = r < 3 ? '\r' : r < 6 ? '\n' : r < 8 ? '.' : (char)('a' + r);
		}
		size_t ncut = 0;
		for (size_t k = 1; k < len; k++)
			if (rand() % 8 == 0)
				cuts[ncut++] = k;
		compare_one(in, len, cuts, ncut, 2 + (size_t)rand() % 62);
	}
}

static void test_received_count(void **state)
{
	(void)state;
	hdrscan_t h;
	const char *msg = "Received: a\r\n\tfolded Received: no\r\nRECEIVED: b\r\nX-Received: no\r\n"
			  "received : no\r\nReceived:c\r\n\r\nReceived: body\r\n";
	for (size_t step = 1; step < 8; step++) {
		hdrscan_init(&h);
		for (size_t i = 0; i < strlen(msg); i += step)
			hdrscan_feed(&h, msg + i, strlen(msg) - i < step ? strlen(msg) - i : step);
		assert_int_equal(h.received, 3);
		assert_true(h.body);
	}
	hdrscan_init(&h);
	hdrscan_feed(&h, "Receive", 7);
	hdrscan_feed(&h, "d: x\n\nReceived: y\n", 18);
	assert_int_equal(h.received, 1);
}

static void test_reply_format(void **state)
{
	(void)state;
	char buf[64];
	size_t n = reply_format(buf, sizeof buf, R_NO_USER);
	assert_int_equal(n, strlen("550 5.1.1 No such user here\r\n"));
	assert_memory_equal(buf, "550 5.1.1 No such user here\r\n", n);
	n = reply_format(buf, sizeof buf, R_GREETING, "evil\r\n250 injected");
	assert_null(memchr(buf, '\n', n - 1));
	/* cut to fit, still one line with its CRLF */
	char small[16];
	n = reply_format(small, sizeof small, R_TEMP_STORE);
	assert_true(n <= sizeof small);
	assert_memory_equal(small + n - 2, "\r\n", 2);
	/* every row is filled, and its enhanced code has the class of its code */
	for (int i = 0; i < R_COUNT; i++) {
		const reply_t *r = &reply_table[i];
		assert_true(r->code >= 200 && r->code < 600 && r->text != NULL);
		if (r->enh != NULL)
			assert_int_equal(r->enh[0] - '0', r->code / 100);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_paths),
		cmocka_unit_test(test_path_bounds),
		cmocka_unit_test(test_helo),
		cmocka_unit_test(test_dot_decoder),
		cmocka_unit_test(test_dot_decoder_output_bound),
		cmocka_unit_test(test_dot_decoder_fast_path_matches_bytewise),
		cmocka_unit_test(test_received_count),
		cmocka_unit_test(test_reply_format),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
