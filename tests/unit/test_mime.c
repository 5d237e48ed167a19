/*
 * test_mime.c — cmocka unit tests for lib/mime.c: the tree and offsets of
 * ordinary messages, defaults, RFC 2231 parameters, sizes with bare LF, and
 * every bound (10,000-level nesting, part count, parameter count, long
 * boundaries, time linear in the input), plus truncated and mutated input
 * checked against the tree's invariants.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "mime.h"
#include "strbuf.h"
#include "util.h"

/* The bytes of part p's header and body as strings, for assertions. */
static char *hdr_of(const mime_t *m, const mime_part_t *p)
{
	return xstrndup(m->msg + p->hdr_off, p->body_off - p->hdr_off);
}

static char *body_of(const mime_t *m, const mime_part_t *p)
{
	return xstrndup(m->msg + p->body_off, p->end_off - p->body_off);
}

static void assert_body(const mime_t *m, int idx, const char *want)
{
	char *b = body_of(m, &m->parts[idx]);
	assert_string_equal(b, want);
	free(b);
}

/* Every part lies inside its parent and the offsets are ordered. */
static void check_invariants(const mime_t *m)
{
	assert_true(m->nparts >= 1 && m->nparts <= MIME_PARTS_MAX);
	for (size_t i = 0; i < m->nparts; i++) {
		const mime_part_t *p = &m->parts[i];
		assert_true(p->hdr_off <= p->body_off);
		assert_true(p->body_off <= p->end_off);
		assert_true(p->end_off <= m->len);
		assert_true(p->depth < MIME_DEPTH_MAX);
		size_t lines;
		assert_int_equal(p->body_size, mime_crlf_size(m->msg + p->body_off,
							      p->end_off - p->body_off, &lines));
		assert_int_equal(p->body_lines, lines);
		if (p->parent >= 0) {
			const mime_part_t *pp = &m->parts[p->parent];
			assert_true((size_t)p->parent < i);
			assert_true(p->hdr_off >= pp->body_off && p->end_off <= pp->end_off);
			assert_int_equal(p->depth, pp->depth + 1);
		}
		size_t n = 0;
		for (int c = p->first_child; c >= 0; c = m->parts[c].next_sibling)
			n++;
		assert_int_equal(n, p->nchildren);
	}
}

static const char multipart_msg[] =
	"From: a@example.com\r\n"
	"MIME-Version: 1.0\r\n"
	"Content-Type: multipart/mixed; boundary=\"b 1\"\r\n"
	"\r\n"
	"preamble\r\n"
	"--b 1\r\n"
	"Content-Type: text/plain; charset=utf-8\r\n"
	"Content-ID: <x@y>\r\n"
	"\r\n"
	"one\r\n"
	"two\r\n"
	"--b 1\r\n"
	"Content-Type: message/rfc822\r\n"
	"Content-Disposition: attachment; filename=m.eml\r\n"
	"Content-Language: en, de\r\n"
	"\r\n"
	"Subject: inner\r\n"
	"\r\n"
	"inner body\r\n"
	"--b 1--\r\n"
	"epilogue\r\n";

static void test_multipart_tree(void **state)
{
	(void)state;
	mime_t *m = mime_parse(multipart_msg, strlen(multipart_msg));
	check_invariants(m);
	assert_int_equal(m->nparts, 4);
	assert_false(m->truncated);
	const mime_part_t *root = &m->parts[0];
	assert_int_equal(root->kind, MIME_MULTIPART);
	assert_int_equal(root->nchildren, 2);
	assert_string_equal(mime_param(&root->params, "BOUNDARY"), "b 1");

	const mime_part_t *text = &m->parts[1];
	assert_int_equal(text->kind, MIME_LEAF);
	assert_string_equal(text->type, "text");
	assert_string_equal(mime_param(&text->params, "charset"), "utf-8");
	assert_string_equal(text->id, "<x@y>");
	char *h = hdr_of(m, text);
	assert_string_equal(h, "Content-Type: text/plain; charset=utf-8\r\nContent-ID: <x@y>\r\n\r\n");
	free(h);
	/* The CRLF before a delimiter belongs to the delimiter. */
	assert_body(m, 1, "one\r\ntwo");
	assert_int_equal(text->body_size, 8);
	assert_int_equal(text->body_lines, 1);

	const mime_part_t *msg = &m->parts[2];
	assert_int_equal(msg->kind, MIME_MESSAGE);
	assert_string_equal(msg->disposition, "attachment");
	assert_string_equal(mime_param(&msg->disp_params, "filename"), "m.eml");
	assert_int_equal(msg->nlanguages, 2);
	assert_string_equal(msg->languages[1], "de");
	assert_int_equal(msg->nchildren, 1);
	const mime_part_t *inner = &m->parts[3];
	assert_true(inner->is_message_root);
	assert_null(inner->type);  /* no MIME-Version, no Content-Type: defaults */
	assert_true(mime_is(m, inner, "text", "plain"));
	assert_body(m, 3, "inner body");
	/* The epilogue stays in the multipart's body. */
	char *b = body_of(m, root);
	assert_true(strstr(b, "epilogue\r\n") != NULL);
	free(b);
	mime_free(&m);
	assert_null(m);
}

static void test_defaults_and_digest(void **state)
{
	(void)state;
	const char *s =
		"Content-Type: multipart/digest; boundary=d\n\n"
		"--d\n\nSubject: one\n\nbody one\n"
		"--d\nContent-Type: text/plain\n\nexplicit\n"
		"--d--\n";
	mime_t *m = mime_parse(s, strlen(s));
	check_invariants(m);
	assert_int_equal(m->parts[0].nchildren, 2);
	const mime_part_t *first = &m->parts[1];
	assert_int_equal(first->kind, MIME_MESSAGE);  /* RFC 2046 5.1.5 */
	assert_true(mime_is(m, first, "message", "rfc822"));
	assert_int_equal(m->parts[2].kind, MIME_LEAF);  /* the inner message */
	assert_body(m, 2, "body one");
	assert_int_equal(m->parts[3].kind, MIME_LEAF);
	assert_true(mime_is(m, &m->parts[3], "text", "plain"));
	/* Bare LF counted as CRLF: "explicit" has no line end left. */
	assert_int_equal(m->parts[3].body_size, 8);
	mime_free(&m);

	/* Without MIME-Version and Content-Type, the Content-* fields mean nothing. */
	const char *plain = "Content-Transfer-Encoding: base64\r\nContent-ID: <a>\r\n\r\nx\r\n";
	m = mime_parse(plain, strlen(plain));
	assert_null(m->parts[0].encoding);
	assert_null(m->parts[0].id);
	mime_free(&m);
	const char *mime = "MIME-Version: 1.0\r\nContent-Transfer-Encoding: base64\r\n\r\nx\r\n";
	m = mime_parse(mime, strlen(mime));
	assert_string_equal(m->parts[0].encoding, "base64");
	mime_free(&m);
}

static void test_content_type_forms(void **state)
{
	(void)state;
	static const struct { const char *ct, *type, *subtype; size_t nparams; } cases[] = {
		{ "text / plain (c) ; charset = \"x\" ; (c) a=b", "text", "plain", 2 },
		{ "text", "text", "", 0 },
		{ "textplain; charset", "", "", 0 },
		{ "/plain", "", "", 0 },
		{ "image/png; junk here; name=a.png", "image", "png", 1 },
		{ "a/b; x=\"unterminated", "a", "b", 0 },
	};
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		char *s = xasprintf("Content-Type: %s\r\n\r\nbody", cases[i].ct);
		mime_t *m = mime_parse(s, strlen(s));
		assert_string_equal(m->parts[0].type, cases[i].type);
		assert_string_equal(m->parts[0].subtype, cases[i].subtype);
		assert_int_equal(m->parts[0].params.n, cases[i].nparams);
		mime_free(&m);
		free(s);
	}
}

static void test_rfc2231(void **state)
{
	(void)state;
	const char *s =
		"Content-Type: application/x; z=1;\r\n"
		" title*1*=%2A%2A%2Afun%2A%2A%2A%20; title*0*=us-ascii'en'This%20is%20;\r\n"
		" title*2=\"isn't it!\"; name*0=\"a \"; name*1=b;\r\n"
		" gap*0=x; gap*2=y; single*=utf-8''%C3%A9\r\n\r\n";
	mime_t *m = mime_parse(s, strlen(s));
	const mime_params_t *ps = &m->parts[0].params;
	assert_int_equal(ps->n, 6);
	assert_string_equal(ps->v[0].name, "z");  /* plain ones first, in order */
	assert_string_equal(ps->v[1].name, "gap*0");  /* then the pieces, by name */
	assert_string_equal(ps->v[2].name, "gap*2");
	assert_string_equal(mime_param(ps, "name"), "a b");
	assert_string_equal(mime_param(ps, "single*"), "utf-8''%C3%A9");
	assert_string_equal(mime_param(ps, "title*"),
			    "us-ascii'en'This%20is%20%2A%2A%2Afun%2A%2A%2A%20isn't it!");
	mime_free(&m);
}

static void test_boundaries(void **state)
{
	(void)state;
	/* Missing closing delimiter, a boundary inside a header, a wrong one. */
	const char *s =
		"Content-Type: multipart/mixed; boundary=ab\n\n"
		"--ab\nContent-Type: multipart/mixed; boundary=abc\n\n"
		"--abc\nContent-Type: text/plain\n--abc\n\ninner two\n"
		"--ab\n\nlast part to the end\n";
	mime_t *m = mime_parse(s, strlen(s));
	check_invariants(m);
	assert_int_equal(m->nparts, 5);
	assert_int_equal(m->parts[1].nchildren, 2);
	char *h = hdr_of(m, &m->parts[2]);
	assert_string_equal(h, "Content-Type: text/plain");  /* its header ended at --abc */
	free(h);
	assert_body(m, 2, "");
	assert_body(m, 3, "inner two");
	assert_body(m, 4, "last part to the end\n");
	mime_free(&m);

	const char *wrong = "Content-Type: multipart/mixed; boundary=x\r\n\r\n--y\r\n\r\nz\r\n";
	m = mime_parse(wrong, strlen(wrong));
	assert_int_equal(m->parts[0].kind, MIME_MULTIPART);
	assert_int_equal(m->parts[0].nchildren, 0);
	mime_free(&m);

	/* A boundary past MIME_BOUNDARY_MAX is none. */
	strbuf_t sb = STRBUF_INIT;
	sb_adds(&sb, "Content-Type: multipart/mixed; boundary=");
	for (int i = 0; i < MIME_BOUNDARY_MAX + 1; i++)
		sb_addc(&sb, 'b');
	sb_adds(&sb, "\r\n\r\n--");
	for (int i = 0; i < MIME_BOUNDARY_MAX + 1; i++)
		sb_addc(&sb, 'b');
	sb_adds(&sb, "\r\n\r\nx\r\n");
	m = mime_parse(sb.buf, sb_len(&sb));
	assert_int_equal(m->parts[0].nchildren, 0);
	mime_free(&m);
	sb_free(&sb);
}

/* n levels of multipart (or message/rfc822) nesting; no boundary is a
 * prefix of another (a prefix would match as one). */
static char *deep_message(int n, bool rfc822, size_t *len)
{
	strbuf_t sb = STRBUF_INIT;
	for (int i = 0; i < n; i++) {
		if (rfc822)
			sb_adds(&sb, "Content-Type: message/rfc822\r\n\r\n");
		else
			sb_addf(&sb, "Content-Type: multipart/mixed; boundary=b%05d\r\n\r\n--b%05d\r\n", i, i);
	}
	sb_adds(&sb, "Content-Type: text/plain\r\n\r\nbottom\r\n");
	for (int i = n - 1; !rfc822 && i >= 0; i--)
		sb_addf(&sb, "--b%05d--\r\n", i);
	return sb_steal(&sb, len);
}

static void test_deep_nesting(void **state)
{
	(void)state;
	for (int rfc822 = 0; rfc822 <= 1; rfc822++) {
		size_t len;
		char *s = deep_message(10000, rfc822, &len);
		mime_t *m = mime_parse(s, len);
		check_invariants(m);
		assert_true(m->truncated);
		assert_int_equal(m->nparts, MIME_DEPTH_MAX);
		const mime_part_t *last = &m->parts[m->nparts - 1];
		assert_int_equal(last->depth, MIME_DEPTH_MAX - 1);
		assert_int_equal(last->kind, MIME_OPAQUE);
		mime_free(&m);
		free(s);
	}
	/* Just under the bound everything is parsed. */
	size_t len;
	char *s = deep_message(MIME_DEPTH_MAX - 1, false, &len);
	mime_t *m = mime_parse(s, len);
	assert_false(m->truncated);
	assert_int_equal(m->nparts, MIME_DEPTH_MAX);
	assert_body(m, MIME_DEPTH_MAX - 1, "bottom");
	mime_free(&m);
	free(s);
}

static void test_part_and_param_bounds(void **state)
{
	(void)state;
	strbuf_t sb = STRBUF_INIT;
	sb_adds(&sb, "Content-Type: multipart/mixed; boundary=p\r\n\r\n");
	for (int i = 0; i < MIME_PARTS_MAX + 5000; i++)
		sb_adds(&sb, "--p\r\n\r\nx\r\n");
	sb_adds(&sb, "--p--\r\n");
	mime_t *m = mime_parse(sb.buf, sb_len(&sb));
	assert_int_equal(m->nparts, MIME_PARTS_MAX);
	assert_true(m->truncated);
	check_invariants(m);
	mime_free(&m);
	sb_free(&sb);

	sb_adds(&sb, "Content-Type: text/plain");
	for (int i = 0; i < 3 * MIME_PARAMS_MAX; i++)
		sb_addf(&sb, "; p%d=v", i);
	sb_adds(&sb, "\r\n\r\n");
	m = mime_parse(sb.buf, sb_len(&sb));
	assert_int_equal(m->parts[0].params.n, MIME_PARAMS_MAX);
	assert_true(m->truncated);
	mime_free(&m);
	sb_free(&sb);
}

/*
 * 99 open boundaries sharing a prefix and a megabyte of lines that almost
 * match each: the work per line is bounded by the depth, so this stays
 * linear (it would take minutes if it were quadratic).
 */
static void test_linear_time(void **state)
{
	(void)state;
	strbuf_t sb = STRBUF_INIT;
	for (int i = 0; i < MIME_DEPTH_MAX - 1; i++)
		sb_addf(&sb, "Content-Type: multipart/mixed; boundary=aaaaaaaaaaaaaaaa%02d\r\n\r\n"
			     "--aaaaaaaaaaaaaaaa%02d\r\n", i, i);
	while (sb_len(&sb) < (1u << 20))
		sb_adds(&sb, "--aaaaaaaaaaaaaaaaXX\r\n");
	int64_t t0 = now_ms();
	mime_t *m = mime_parse(sb.buf, sb_len(&sb));
	int64_t ms = now_ms() - t0;
	check_invariants(m);
	assert_int_equal(m->nparts, MIME_DEPTH_MAX);
	assert_true(ms < 20000);  /* generous: sanitizers on a busy machine */
	mime_free(&m);
	sb_free(&sb);
}

/* Every prefix of a message, and bytes flipped in it: never a crash, the
 * invariants hold (ASan and UBSan watch the reads). */
static void test_truncated_and_mutated(void **state)
{
	(void)state;
	size_t len = strlen(multipart_msg);
	for (size_t n = 0; n <= len; n++) {
		mime_t *m = mime_parse(multipart_msg, n);
		check_invariants(m);
		mime_free(&m);
	}
	static const char alphabet[] = "-\r\n;=\"()\\*:/ b1xa";
	char *buf = xmalloc(len);
	unsigned seed = 12345;
	for (int round = 0; round < 3000; round++) {
		memcpy(buf, multipart_msg, len);
		for (int k = 0; k < 4; k++) {
			seed = seed * 1103515245u + 12345u;
			size_t at = (seed >> 8) % len;
			seed = seed * 1103515245u + 12345u;
			buf[at] = alphabet[(seed >> 8) % (sizeof alphabet - 1)];
		}
		mime_t *m = mime_parse(buf, len);
		check_invariants(m);
		mime_free(&m);
	}
	free(buf);
}

static void test_crlf_size(void **state)
{
	(void)state;
	size_t lines;
	assert_int_equal(mime_crlf_size("a\nb\r\nc", 6, &lines), 7);
	assert_int_equal(lines, 2);
	assert_int_equal(mime_crlf_size("\n", 1, &lines), 2);
	assert_int_equal(mime_crlf_size("", 0, &lines), 0);
	assert_int_equal(lines, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_multipart_tree),
		cmocka_unit_test(test_defaults_and_digest),
		cmocka_unit_test(test_content_type_forms),
		cmocka_unit_test(test_rfc2231),
		cmocka_unit_test(test_boundaries),
		cmocka_unit_test(test_deep_nesting),
		cmocka_unit_test(test_part_and_param_bounds),
		cmocka_unit_test(test_linear_time),
		cmocka_unit_test(test_truncated_and_mutated),
		cmocka_unit_test(test_crlf_size),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
