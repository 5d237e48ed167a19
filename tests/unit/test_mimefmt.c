/*
 * test_mimefmt.c — cmocka tests for services/imapd/mimefmt.c.
 *
 * test_against_dovecot: for every tests/data/mime/NAME.eml, our ENVELOPE,
 * BODY, BODYSTRUCTURE and BODY[section]s must equal, byte for byte, what
 * Dovecot 2.3 answered for the same message (NAME.expected, written once by
 * tests/data/mime/gen_expected.py). Where we differ on purpose, the
 * difference is listed in `exceptions` with the reason; an exception that
 * no longer differs fails too, so the list stays true. The data directory
 * is tests/data/mime from the top of the tree (where tools/run-tests.sh
 * runs the tests), or $ROOST_MIME_DATA.
 *
 * The other tests pin RFC 3501 rules by hand on small messages, and the
 * formatter on a 10,000-level nested message.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mimefmt.h"
#include "strbuf.h"
#include "util.h"

/* Where we answer differently from Dovecot 2.3, and why. */
static const struct {
	const char *file, *item, *why;
} exceptions[] = {
	{ "message_global", "BODY",
	  "RFC 6532 3.7 / RFC 9051: message/global is an encapsulated message like "
	  "message/rfc822 (envelope, body, lines); Dovecot 2.3 shows it as a plain leaf" },
	{ "message_global", "BODYSTRUCTURE", "as for BODY" },
	{ "message_global", "BODY[1.HEADER]",
	  "1 is message/global: its message's header (Dovecot: not a message, empty)" },
	{ "message_global", "BODY[1.TEXT]", "as for BODY[1.HEADER]" },
	{ "message_global", "BODY[1.1]", "1.1 is the body of the message inside 1" },
	{ "deep_multipart", "BODY[1.1]",
	  "past the depth bound (100) a multipart is one opaque body; Dovecot still matches "
	  "the boundary of the multipart it made opaque, we do not (it is not a container "
	  "any more), and the \"--d1xx\" lines re-nest by prefix in both. BODYSTRUCTURE "
	  "comes out the same, but 1.1 ends 2 octets later in Dovecot (the empty line "
	  "before \"--d189\")" },
	{ "deep_multipart", "BODY[1.1.1]", "as for BODY[1.1]" },
};

static bool is_exception(const char *file, const char *item)
{
	for (size_t i = 0; i < ARRAY_LEN(exceptions); i++)
		if (strcmp(exceptions[i].file, file) == 0 && strcmp(exceptions[i].item, item) == 0)
			return true;
	return false;
}

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return NULL;
	strbuf_t sb = STRBUF_INIT;
	char buf[65536];
	size_t n;
	while ((n = fread(buf, 1, sizeof buf, f)) > 0)
		sb_add(&sb, buf, n);
	fclose(f);
	return sb_steal(&sb, len);
}

/*
 * The section spec inside BODY[...] as imapd's parser would fill it:
 * "1.2.MIME", "HEADER.FIELDS (A B)". The names point into spec (which
 * this NUL-splits). False if it is not one we know.
 */
static bool parse_section(char *spec, imap_section_t *s)
{
	memset(s, 0, sizeof *s);
	char *p = spec;
	while (*p >= '0' && *p <= '9') {
		if (s->depth == SECT_PATH_MAX)
			return false;
		s->path[s->depth++] = (uint32_t)strtoul(p, &p, 10);
		if (*p == '.')
			p++;
	}
	char *list = strchr(p, '(');
	if (list != NULL) {
		list[-1] = '\0';
		char *save;
		for (char *t = strtok_r(list + 1, " )", &save); t != NULL && s->nfields < SECT_FIELDS_MAX;
		     t = strtok_r(NULL, " )", &save))
			s->fields[s->nfields++] = t;
	}
	if (*p == '\0')
		s->kind = SECT_ALL;
	else if (strcmp(p, "HEADER") == 0)
		s->kind = SECT_HEADER;
	else if (strcmp(p, "TEXT") == 0)
		s->kind = SECT_TEXT;
	else if (strcmp(p, "MIME") == 0)
		s->kind = SECT_MIME;
	else if (strcmp(p, "HEADER.FIELDS") == 0)
		s->kind = SECT_HEADER_FIELDS;
	else if (strcmp(p, "HEADER.FIELDS.NOT") == 0)
		s->kind = SECT_HEADER_FIELDS_NOT;
	else
		return false;
	return true;
}

/* Our answer for item ("ENVELOPE", "BODY[1.MIME]"...) into out. */
static void answer(const char *msg, size_t len, const char *item, strbuf_t *out)
{
	if (strcmp(item, "ENVELOPE") == 0) {
		mimefmt_envelope(msg, len, out);
	} else if (strcmp(item, "BODY") == 0) {
		mimefmt_bodystructure(msg, len, false, out);
	} else if (strcmp(item, "BODYSTRUCTURE") == 0) {
		mimefmt_bodystructure(msg, len, true, out);
	} else {
		char *spec = xstrndup(item + 5, strlen(item) - 6);  /* inside BODY[...] */
		imap_section_t s;
		assert_true(parse_section(spec, &s));
		assert_int_equal(mimefmt_section(msg, len, &s, out), 0);
		free(spec);
	}
}

static void show(const char *what, const char *p, size_t n)
{
	fprintf(stderr, "  %s (%zu): ", what, n);
	fwrite(p, 1, n > 600 ? 600 : n, stderr);
	fprintf(stderr, "%s\n", n > 600 ? "..." : "");
}

/* Compares every record of one .expected file; returns the mismatches. */
static int compare_file(const char *dir, const char *name, int *records, int *excepted)
{
	char *path = xasprintf("%s/%s.eml", dir, name);
	size_t mlen, elen;
	char *msg = read_file(path, &mlen);
	free(path);
	path = xasprintf("%s/%s.expected", dir, name);
	char *exp = read_file(path, &elen);
	free(path);
	assert_non_null(msg);
	assert_non_null(exp);
	int bad = 0;
	const char *p = exp, *end = exp + elen;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		assert_non_null(nl);
		if (*p == '#') {
			p = nl + 1;
			continue;
		}
		const char *sp = nl;
		while (sp > p && sp[-1] != ' ')
			sp--;
		assert_true(sp > p);
		char *item = xstrndup(p, (size_t)(sp - 1 - p));
		const char *want = nl + 1;
		size_t wlen = 0;
		if (strncmp(sp, "NIL", 3) == 0) {
			p = nl + 1;  /* NIL: a part that does not exist; we send "" */
		} else {
			wlen = strtoul(sp, NULL, 10);
			assert_true(want + wlen < end && want[wlen] == '\n');
			p = want + wlen + 1;
		}
		strbuf_t got = STRBUF_INIT;
		answer(msg, mlen, item, &got);
		bool same = sb_len(&got) == wlen && (wlen == 0 || memcmp(got.buf, want, wlen) == 0);
		bool exc = is_exception(name, item);
		(*records)++;
		if (exc)
			(*excepted)++;
		if (!same && !exc) {
			fprintf(stderr, "%s %s: differs from Dovecot\n", name, item);
			show("dovecot", want, wlen);
			show("ours", got.buf ? got.buf : "", sb_len(&got));
			bad++;
		} else if (same && exc) {
			fprintf(stderr, "%s %s: listed as an exception but now equal\n", name, item);
			bad++;
		}
		sb_free(&got);
		free(item);
	}
	free(msg);
	free(exp);
	return bad;
}

static void test_against_dovecot(void **state)
{
	(void)state;
	const char *dir = getenv("ROOST_MIME_DATA");
	if (dir == NULL)
		dir = "tests/data/mime";
	DIR *d = opendir(dir);
	if (d == NULL)
		fail_msg("no %s: run the test from the top of the tree or set ROOST_MIME_DATA", dir);
	int files = 0, records = 0, excepted = 0, bad = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		size_t n = strlen(e->d_name);
		if (n < 5 || strcmp(e->d_name + n - 4, ".eml") != 0)
			continue;
		char *name = xstrndup(e->d_name, n - 4);
		char *exp = xasprintf("%s/%s.expected", dir, name);
		if (access(exp, R_OK) != 0)
			fail_msg("%s has no Dovecot answers: run gen_expected.py %s.eml", exp, name);
		free(exp);
		bad += compare_file(dir, name, &records, &excepted);
		free(name);
		files++;
	}
	closedir(d);
	fprintf(stderr, "compared %d messages, %d answers with Dovecot's: %d differ, %d listed exceptions\n",
		files, records, bad, excepted);
	assert_true(files >= 25);
	assert_int_equal(bad, 0);
}

/* ---- rules pinned by hand ------------------------------------------------ */

static const char nested_msg[] =
	"Subject: outer\r\n"
	"MIME-Version: 1.0\r\n"
	"Content-Type: multipart/mixed; boundary=o\r\n"
	"\r\n"
	"--o\r\n"
	"Content-Type: text/plain\r\n"
	"\r\n"
	"first\r\n"
	"--o\r\n"
	"Content-Type: message/rfc822\r\n"
	"\r\n"
	"Subject: inner\r\n"
	"X-Low: case\r\n"
	"Content-Type: multipart/alternative; boundary=i\r\n"
	"\r\n"
	"--i\r\n"
	"\r\n"
	"alt one\nline two\r\n"
	"--i\r\n"
	"Content-Type: text/html\r\n"
	"\r\n"
	"<p>two</p>\r\n"
	"--i--\r\n"
	"--o--\r\n";

/* Section spec (as in BODY[...]) of nested_msg, or NULL for "-1 expected". */
static char *section(const char *spec, int *rc)
{
	char *copy = xstrdup(spec);
	imap_section_t s;
	assert_true(parse_section(copy, &s));
	strbuf_t out = STRBUF_INIT;
	*rc = mimefmt_section(nested_msg, strlen(nested_msg), &s, &out);
	free(copy);
	char *r = sb_steal(&out, NULL);
	return r;
}

static void expect_section(const char *spec, const char *want)
{
	int rc;
	char *got = section(spec, &rc);
	assert_int_equal(rc, 0);
	if (strcmp(got, want) != 0)
		fail_msg("BODY[%s]: got \"%s\", want \"%s\"", spec, got, want);
	free(got);
}

static void test_section_rules(void **state)
{
	(void)state;
	int rc;
	char *got;
	/* RFC 3501 6.4.5 on a message/rfc822 part (2) holding a multipart. */
	expect_section("1", "first");
	expect_section("1.MIME", "Content-Type: text/plain\r\n\r\n");
	expect_section("2.MIME", "Content-Type: message/rfc822\r\n\r\n");
	expect_section("2.HEADER", "Subject: inner\r\nX-Low: case\r\n"
		       "Content-Type: multipart/alternative; boundary=i\r\n\r\n");
	expect_section("2.HEADER.FIELDS (x-LOW subject)", "Subject: inner\r\nX-Low: case\r\n\r\n");
	expect_section("2.HEADER.FIELDS.NOT (content-type Subject)", "X-Low: case\r\n\r\n");
	expect_section("2.1", "alt one\r\nline two");  /* bare LF sent as CRLF */
	expect_section("2.2", "<p>two</p>");
	expect_section("2.2.MIME", "Content-Type: text/html\r\n\r\n");
	expect_section("2.2.1", "<p>two</p>");  /* part 1 of a leaf is itself */
	expect_section("2.2.1.1", "");          /* ...but the path ends there */
	expect_section("1.HEADER", "");         /* HEADER only of a message */
	expect_section("3", "");
	expect_section("2.3", "");
	expect_section("HEADER.FIELDS (SUBJECT)", "Subject: outer\r\n\r\n");
	got = section("TEXT", &rc);
	assert_int_equal(strncmp(got, "--o\r\nContent-Type: text/plain\r\n", 30), 0);
	assert_non_null(strstr(got, "alt one\r\nline two\r\n--i\r\n"));
	assert_string_equal(got + strlen(got) - 7, "--o--\r\n");
	free(got);
	/* MIME of the message itself is not a section (the caller says BAD). */
	got = section("MIME", &rc);
	assert_int_equal(rc, -1);
	free(got);
}

static char *envelope_of(const char *msg)
{
	strbuf_t out = STRBUF_INIT;
	mimefmt_envelope(msg, strlen(msg), &out);
	return sb_steal(&out, NULL);
}

static void test_envelope_strings(void **state)
{
	(void)state;
	/* RFC 3501 7.4.2: sender and reply-to default to from; NIL vs "". */
	char *e = envelope_of("From: A <a@x.test>\r\nSubject:\r\nMessage-ID: <q\"\\@x>\r\n\r\n");
	assert_string_equal(e, "(NIL \"\" ((\"A\" NIL \"a\" \"x.test\")) ((\"A\" NIL \"a\" \"x.test\")) "
			       "((\"A\" NIL \"a\" \"x.test\")) NIL NIL NIL NIL \"<q\\\"\\\\@x>\")");
	free(e);
	/* 8-bit and line ends go as literals; encoded words are not decoded. */
	e = envelope_of("Subject: caf\xc3\xa9\r\nTo: =?utf-8?q?B=C3=A9?= <b@x>\r\n\r\n");
	assert_string_equal(e, "(NIL {5}\r\ncaf\xc3\xa9 NIL NIL NIL "
			       "((\"=?utf-8?q?B=C3=A9?=\" NIL \"b\" \"x\")) NIL NIL NIL NIL)");
	free(e);
	/* A group and its end marker. */
	e = envelope_of("Cc: team: a@x, \"B, C\" <b@y>;\r\n\r\n");
	assert_non_null(strstr(e, "((NIL NIL \"team\" NIL)(NIL NIL \"a\" \"x\")(\"B, C\" NIL \"b\" \"y\")(NIL NIL NIL NIL))"));
	free(e);
	/* No header at all. */
	e = envelope_of("");
	assert_string_equal(e, "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)");
	free(e);
}

/* Parentheses outside strings and literals balance and never go below 0. */
static void assert_balanced(const char *s, size_t n)
{
	long depth = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '"') {
			for (i++; i < n && s[i] != '"'; i++)
				if (s[i] == '\\')
					i++;
		} else if (s[i] == '{') {
			char *end;
			unsigned long lit = strtoul(s + i + 1, &end, 10);
			i = (size_t)(end - s) + 3 + lit - 1;  /* "}\r\n" then the bytes */
		} else if (s[i] == '(') {
			depth++;
		} else if (s[i] == ')') {
			assert_true(--depth >= 0);
		}
	}
	assert_int_equal(depth, 0);
}

static void test_deep_message_structure(void **state)
{
	(void)state;
	strbuf_t sb = STRBUF_INIT;
	for (int i = 0; i < 10000; i++)
		sb_addf(&sb, "Subject: %d\r\nContent-Type: message/rfc822\r\n\r\n", i);
	sb_adds(&sb, "\r\nbottom\r\n");
	strbuf_t out = STRBUF_INIT;
	mimefmt_bodystructure(sb.buf, sb_len(&sb), true, &out);
	assert_balanced(out.buf, sb_len(&out));
	assert_non_null(strstr(sb_str(&out), "\"application\" \"octet-stream\""));
	sb_truncate(&out, 0);
	mimefmt_envelope(sb.buf, sb_len(&sb), &out);
	assert_balanced(out.buf, sb_len(&out));
	/* A section path deeper than the tree finds nothing. */
	imap_section_t s = { .depth = SECT_PATH_MAX, .kind = SECT_ALL };
	for (size_t i = 0; i < SECT_PATH_MAX; i++)
		s.path[i] = 1;
	sb_truncate(&out, 0);
	assert_int_equal(mimefmt_section(sb.buf, sb_len(&sb), &s, &out), 0);
	assert_true(sb_len(&out) > 0);  /* 1.1.1... goes down the message chain */
	sb_free(&out);
	sb_free(&sb);
}

/*
 * Every sample with bytes flipped to characters that matter to the parsers
 * (quotes, brackets, line ends, boundaries): never a crash (ASan and UBSan
 * watch), and the structures stay well formed.
 */
static void test_mutated_samples(void **state)
{
	(void)state;
	const char *dir = getenv("ROOST_MIME_DATA");
	if (dir == NULL)
		dir = "tests/data/mime";
	static const char alphabet[] = "\"\\()<>@,;:.[]-\r\n =*'%\x80\t";
	static const char *const specs[] = { "1", "1.MIME", "2.HEADER", "1.1.TEXT",
					     "HEADER.FIELDS (FROM TO)" };
	DIR *d = opendir(dir);
	assert_non_null(d);
	unsigned seed = 42;
	int runs = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		size_t n = strlen(e->d_name);
		if (n < 5 || strcmp(e->d_name + n - 4, ".eml") != 0)
			continue;
		char *path = xasprintf("%s/%s", dir, e->d_name);
		size_t len;
		char *orig = read_file(path, &len);
		free(path);
		assert_non_null(orig);
		char *buf = xmalloc(len + 1);
		for (int round = 0; round < 40 && len > 0; round++) {
			memcpy(buf, orig, len);
			for (int k = 0; k < 6; k++) {
				seed = seed * 1103515245u + 12345u;
				size_t at = (seed >> 8) % len;
				seed = seed * 1103515245u + 12345u;
				buf[at] = alphabet[(seed >> 8) % (sizeof alphabet - 1)];
			}
			strbuf_t out = STRBUF_INIT;
			mimefmt_envelope(buf, len, &out);
			assert_balanced(out.buf, sb_len(&out));
			for (int ext = 0; ext <= 1; ext++) {
				sb_truncate(&out, 0);
				mimefmt_bodystructure(buf, len, ext, &out);
				assert_balanced(out.buf, sb_len(&out));
			}
			for (size_t i = 0; i < ARRAY_LEN(specs); i++) {
				char *spec = xstrdup(specs[i]);
				imap_section_t s;
				assert_true(parse_section(spec, &s));
				sb_truncate(&out, 0);
				assert_int_equal(mimefmt_section(buf, len, &s, &out), 0);
				assert_true(sb_len(&out) <= 2 * len + 2);
				free(spec);
			}
			sb_free(&out);
			runs++;
		}
		free(buf);
		free(orig);
	}
	closedir(d);
	fprintf(stderr, "formatted %d mutated messages\n", runs);
	assert_true(runs >= 1000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_against_dovecot),
		cmocka_unit_test(test_section_rules),
		cmocka_unit_test(test_envelope_strings),
		cmocka_unit_test(test_deep_message_structure),
		cmocka_unit_test(test_mutated_samples),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
