/*
 * test_dns.c — cmocka unit tests for lib/dns.c with real packets built
 * byte by byte: well-formed replies of every type we read, CNAME chains,
 * RCODEs, and malformed ones (pointer loops, forward pointers, truncated
 * records, lying counts, oversize names and labels, TXT over the cap) that
 * must each fail cleanly; under SANITIZE=1 any out-of-bounds read aborts.
 * Also the query bytes, reverse names, the resolver address forms, and a
 * timeout and a refusal against real sockets on 127.0.0.1.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dns.h"

/* ---- a packet builder ---- */

typedef struct pkt {
	uint8_t b[70000];
	size_t n;
} pkt_t;

static void b8(pkt_t *p, unsigned v) { p->b[p->n++] = (uint8_t)v; }
static void b16(pkt_t *p, unsigned v) { b8(p, v >> 8); b8(p, v & 0xFF); }
static void b32(pkt_t *p, uint32_t v) { b16(p, v >> 16); b16(p, v & 0xFFFF); }
static void bytes(pkt_t *p, const void *s, size_t n) { memcpy(p->b + p->n, s, n); p->n += n; }

/* An uncompressed name from "a.b.c" ("" is the root). */
static void bname(pkt_t *p, const char *name)
{
	while (*name) {
		const char *dot = strchr(name, '.');
		size_t l = dot ? (size_t)(dot - name) : strlen(name);
		b8(p, (unsigned)l);
		bytes(p, name, l);
		name += l + (dot != NULL);
	}
	b8(p, 0);
}

/* Header and question of a reply to q (same ID and question unless changed later). */
static pkt_t *reply_new(const dns_query_t *q, const char *qname, unsigned rcode, unsigned an)
{
	pkt_t *p = calloc(1, sizeof *p);
	b16(p, q->id);
	b16(p, 0x8180 | rcode);  /* QR, RD, RA */
	b16(p, 1);
	b16(p, an);
	b16(p, 0);
	b16(p, 0);
	bname(p, qname);
	b16(p, q->qtype);
	b16(p, 1);
	return p;
}

/* An RR header owned by the question name (pointer to offset 12). */
static void rr_hdr(pkt_t *p, unsigned type, uint32_t ttl, unsigned rdlen)
{
	b16(p, 0xC00C);
	b16(p, type);
	b16(p, 1);
	b32(p, ttl);
	b16(p, rdlen);
}

static dns_answer_t *parse(const dns_query_t *q, const pkt_t *p)
{
	return dns_reply_parse(q, p->b, p->n);
}

static void expect_status(const dns_query_t *q, const pkt_t *p, enum dns_status st)
{
	dns_answer_t *a = parse(q, p);
	if (a->status != st)
		fail_msg("status %s (%s), want %s", dns_status_name(a->status),
			 a->why ? a->why : "-", dns_status_name(st));
	if (st != DNS_OK)
		assert_int_equal(a->n, 0);
	dns_answer_free(&a);
	assert_null(a);
}

/* expect_status, then p is freed: the last use of a packet. */
static void expect_final(const dns_query_t *q, pkt_t *p, enum dns_status st)
{
	expect_status(q, p, st);
	free(p);
}

/*
 * Parses p as the reply to q, wants status st and the first record's name
 * (for NODATA: the canonical name) to be name; frees p.
 */
static void expect_name(const dns_query_t *q, pkt_t *p, enum dns_status st, const char *name)
{
	dns_answer_t *a = parse(q, p);
	assert_int_equal(a->status, st);
	assert_string_equal(st == DNS_OK ? a->rr[0].name : a->canon, name);
	dns_answer_free(&a);
	free(p);
}

/* ---- queries ---- */

static void test_query_bytes(void **state)
{
	(void)state;
	dns_query_t q, q2;
	assert_int_equal(dns_query_init(&q, "Example.ORG.", DNS_T_MX), 0);
	static const uint8_t want[] = {
		0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1,                     /* RD; QD 1, AR 1 */
		7, 'E', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'O', 'R', 'G', 0,
		0, 15, 0, 1,                                            /* MX IN */
		0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0,                 /* OPT, 1232, TTL 0 */
	};
	assert_int_equal(q.len, 2 + sizeof want);
	assert_memory_equal(q.pkt + 2, want, sizeof want);
	assert_int_equal((q.pkt[0] << 8 | q.pkt[1]), q.id);
	/* IDs come from getrandom: four in a row are not all equal. */
	int same = 1;
	for (int i = 0; i < 4; i++) {
		dns_query_init(&q2, "example.org", DNS_T_A);
		same &= q2.id == q.id;
	}
	assert_false(same);

	char big[400];
	memset(big, 'a', 63);
	big[63] = '\0';
	assert_int_equal(dns_query_init(&q, big, DNS_T_A), 0);   /* 63: a label may */
	big[63] = 'a';
	big[64] = '\0';
	assert_int_equal(dns_query_init(&q, big, DNS_T_A), -1);  /* 64: too long */
	/* 4 labels of 63 = 4 * 64 + 1 = 257 octets on the wire: over 255 */
	for (int i = 0; i < 4; i++) {
		memset(big + i * 64, 'b', 63);
		big[i * 64 + 63] = i < 3 ? '.' : '\0';
	}
	assert_int_equal(dns_query_init(&q, big, DNS_T_A), -1);
	big[3 * 64 + 61] = '\0';  /* 253 characters: 255 octets, allowed */
	assert_int_equal(dns_query_init(&q, big, DNS_T_A), 0);
	assert_int_equal(q.qname_len, 255);
	assert_int_equal(dns_query_init(&q, "", DNS_T_A), -1);
	assert_int_equal(dns_query_init(&q, ".", DNS_T_A), -1);
	assert_int_equal(dns_query_init(&q, "a..b", DNS_T_A), -1);
	assert_int_equal(dns_query_init(&q, ".a", DNS_T_A), -1);
}

/* ---- good replies ---- */

static void test_a_aaaa(void **state)
{
	(void)state;
	dns_query_t q;
	dns_query_init(&q, "mail.example.org", DNS_T_A);
	/* The reply may spell the name in another case (RFC 4343). */
	pkt_t *p = reply_new(&q, "MAIL.Example.org", 0, 2);
	rr_hdr(p, DNS_T_A, 300, 4);
	bytes(p, "\xcb\x00\x71\x07", 4);
	rr_hdr(p, DNS_T_A, 300, 4);
	bytes(p, "\x0a\x00\x00\x01", 4);
	dns_answer_t *a = parse(&q, p);
	assert_int_equal(a->status, DNS_OK);
	assert_int_equal(a->n, 2);
	assert_int_equal(a->rr[0].ttl, 300);
	assert_memory_equal(a->rr[0].addr, "\xcb\x00\x71\x07", 4);
	assert_memory_equal(a->rr[1].addr, "\x0a\x00\x00\x01", 4);
	assert_string_equal(a->canon, "mail.example.org");  /* as asked */
	dns_answer_free(&a);
	free(p);

	dns_query_init(&q, "mail.example.org", DNS_T_AAAA);
	p = reply_new(&q, "mail.example.org", 0, 1);
	rr_hdr(p, DNS_T_AAAA, 60, 16);
	bytes(p, "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01", 16);
	a = parse(&q, p);
	assert_int_equal(a->status, DNS_OK);
	assert_memory_equal(a->rr[0].addr, "\x20\x01\x0d\xb8", 4);
	dns_answer_free(&a);
	free(p);
}

static void test_mx_ptr_txt(void **state)
{
	(void)state;
	dns_query_t q;
	dns_query_init(&q, "example.org", DNS_T_MX);
	pkt_t *p = reply_new(&q, "example.org", 0, 1);
	rr_hdr(p, DNS_T_MX, 3600, 2 + 7);
	b16(p, 10);
	b8(p, 4);
	bytes(p, "mail", 4);
	b16(p, 0xC00C);  /* "mail" + pointer to example.org */
	dns_answer_t *a = parse(&q, p);
	assert_int_equal(a->status, DNS_OK);
	assert_int_equal(a->rr[0].pref, 10);
	assert_string_equal(a->rr[0].name, "mail.example.org");
	dns_answer_free(&a);
	free(p);

	dns_query_init(&q, "7.113.0.203.in-addr.arpa", DNS_T_PTR);
	p = reply_new(&q, "7.113.0.203.in-addr.arpa", 0, 1);
	rr_hdr(p, DNS_T_PTR, 60, 18);
	bname(p, "mail.example.org");
	expect_name(&q, p, DNS_OK, "mail.example.org");

	/* TXT: strings concatenated without separators; odd bytes kept. */
	dns_query_init(&q, "example.org", DNS_T_TXT);
	p = reply_new(&q, "example.org", 0, 2);
	rr_hdr(p, DNS_T_TXT, 60, 1 + 7 + 1 + 5 + 1);
	b8(p, 7);
	bytes(p, "v=spf1 ", 7);
	b8(p, 5);
	bytes(p, "-all", 5);  /* 4 bytes + a NUL inside the string */
	b8(p, 0);
	rr_hdr(p, DNS_T_TXT, 60, 0);  /* no strings at all */
	a = parse(&q, p);
	assert_int_equal(a->status, DNS_OK);
	assert_int_equal(a->n, 2);
	assert_int_equal(a->rr[0].txtlen, 12);
	assert_memory_equal(a->rr[0].txt, "v=spf1 -all\0", 12);
	assert_int_equal(a->rr[0].nstrings, 3);
	assert_int_equal(a->rr[1].txtlen, 0);
	assert_string_equal(a->rr[1].txt, "");
	dns_answer_free(&a);
	free(p);
}

/* Names with odd bytes come out escaped as in zone files. */
static void test_name_text_escapes(void **state)
{
	(void)state;
	dns_query_t q;
	dns_query_init(&q, "x.example", DNS_T_PTR);
	pkt_t *p = reply_new(&q, "x.example", 0, 1);
	rr_hdr(p, DNS_T_PTR, 60, 1 + 4 + 1);
	b8(p, 4);
	bytes(p, "a.\\\x01", 4);
	b8(p, 0);
	expect_name(&q, p, DNS_OK, "a\\.\\\\\\001");
	/* A PTR to the root */
	p = reply_new(&q, "x.example", 0, 1);
	rr_hdr(p, DNS_T_PTR, 60, 1);
	b8(p, 0);
	expect_name(&q, p, DNS_OK, ".");
}

static void test_cname_chain(void **state)
{
	(void)state;
	dns_query_t q;
	dns_query_init(&q, "www.example.org", DNS_T_A);
	/* Out of order: the A first, then the CNAMEs www -> b -> c. */
	pkt_t *p = reply_new(&q, "www.example.org", 0, 4);
	size_t c_off = p->n;
	bname(p, "c.example.org");
	b16(p, DNS_T_A); b16(p, 1); b32(p, 5); b16(p, 4);
	bytes(p, "\x01\x02\x03\x04", 4);
	rr_hdr(p, DNS_T_CNAME, 5, 15);
	bname(p, "b.example.org");   /* www -> b */
	bname(p, "B.EXAMPLE.ORG");   /* owner b, in other case */
	b16(p, DNS_T_CNAME); b16(p, 1); b32(p, 5); b16(p, 2);
	b16(p, 0xC000 | (unsigned)c_off);  /* b -> c, compressed */
	bname(p, "unrelated.example.org");
	b16(p, DNS_T_A); b16(p, 1); b32(p, 5); b16(p, 4);
	bytes(p, "\x09\x09\x09\x09", 4);
	dns_answer_t *a = parse(&q, p);
	assert_int_equal(a->status, DNS_OK);
	assert_int_equal(a->n, 1);
	assert_memory_equal(a->rr[0].addr, "\x01\x02\x03\x04", 4);
	assert_string_equal(a->canon, "c.example.org");
	dns_answer_free(&a);
	free(p);

	/* A CNAME to a name without the type: NODATA for the target. */
	p = reply_new(&q, "www.example.org", 0, 1);
	rr_hdr(p, DNS_T_CNAME, 5, 15);
	bname(p, "elsewhere.net");
	expect_name(&q, p, DNS_NODATA, "elsewhere.net");

	/* Asking for the CNAME itself returns it. */
	dns_query_init(&q, "www.example.org", DNS_T_CNAME);
	p = reply_new(&q, "www.example.org", 0, 1);
	rr_hdr(p, DNS_T_CNAME, 5, 15);
	bname(p, "elsewhere.net");
	expect_name(&q, p, DNS_OK, "elsewhere.net");

	/* A loop of CNAMEs (www -> x -> www) ends at the bound. */
	dns_query_init(&q, "www.example.org", DNS_T_A);
	p = reply_new(&q, "www.example.org", 0, 2);
	rr_hdr(p, DNS_T_CNAME, 5, 15);
	size_t x_off = p->n;
	bname(p, "x.example.org");
	b16(p, 0xC000 | (unsigned)x_off);
	b16(p, DNS_T_CNAME); b16(p, 1); b32(p, 5); b16(p, 2);
	b16(p, 0xC00C);
	expect_final(&q, p, DNS_MALFORMED);
}

static void test_rcodes_and_nodata(void **state)
{
	(void)state;
	dns_query_t q;
	dns_query_init(&q, "example.org", DNS_T_MX);
	static const struct { unsigned rcode; enum dns_status st; } cases[] = {
		{ 3, DNS_NXDOMAIN }, { 2, DNS_SERVFAIL }, { 5, DNS_RCODE }, { 1, DNS_RCODE },
		{ 0, DNS_NODATA },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		pkt_t *p = reply_new(&q, "example.org", cases[i].rcode, 0);
		dns_answer_t *a = parse(&q, p);
		assert_int_equal(a->status, cases[i].st);
		assert_int_equal(a->rcode, (int)cases[i].rcode);
		dns_answer_free(&a);
		free(p);
	}
	/* Records of another type or another owner are no data either. */
	pkt_t *p = reply_new(&q, "example.org", 0, 2);
	rr_hdr(p, DNS_T_A, 60, 4);
	bytes(p, "\1\2\3\4", 4);
	bname(p, "other.org");
	b16(p, DNS_T_MX); b16(p, 1); b32(p, 5); b16(p, 3);
	b16(p, 5); b8(p, 0);
	expect_final(&q, p, DNS_NODATA);
	/* Another class than IN is skipped. */
	p = reply_new(&q, "example.org", 0, 1);
	b16(p, 0xC00C); b16(p, DNS_T_MX); b16(p, 3); b32(p, 5); b16(p, 3);
	b16(p, 5); b8(p, 0);
	expect_final(&q, p, DNS_NODATA);
	/* TC: ask again over TCP, whatever else the packet says. */
	p = reply_new(&q, "example.org", 0, 5);
	p->b[2] |= 0x02;
	expect_final(&q, p, DNS_TRUNCATED);
}

static void test_mismatch(void **state)
{
	(void)state;
	dns_query_t q;
	dns_query_init(&q, "example.org", DNS_T_A);
	pkt_t *p = reply_new(&q, "example.org", 0, 0);
	p->b[0] ^= 0xFF;  /* other ID */
	expect_final(&q, p, DNS_MISMATCH);
	p = reply_new(&q, "example.org", 0, 0);
	p->b[2] &= 0x7F;  /* QR clear: a query, not a reply */
	expect_final(&q, p, DNS_MISMATCH);
	p = reply_new(&q, "example.com", 0, 0);  /* other name */
	expect_final(&q, p, DNS_MISMATCH);
	p = reply_new(&q, "example.org.x", 0, 0);
	expect_final(&q, p, DNS_MISMATCH);
	p = reply_new(&q, "example.org", 0, 0);
	p->b[p->n - 3] = DNS_T_MX;  /* other type */
	expect_final(&q, p, DNS_MISMATCH);
	p = reply_new(&q, "example.org", 0, 0);
	p->b[p->n - 1] = 3;  /* class CH */
	expect_final(&q, p, DNS_MISMATCH);
}

/* ---- malformed replies ---- */

static void test_pointer_loops(void **state)
{
	(void)state;
	dns_query_t q;
	dns_query_init(&q, "example.org", DNS_T_A);
	/* The question name is a pointer to itself. */
	pkt_t *p = reply_new(&q, "example.org", 0, 0);
	p->n = 12;
	b16(p, 0xC00C);
	b16(p, DNS_T_A); b16(p, 1);
	expect_final(&q, p, DNS_MALFORMED);
	/* An owner name pointing forward, at a later pointer back to it. */
	p = reply_new(&q, "example.org", 0, 1);
	size_t at = p->n;
	b16(p, 0xC000 | (unsigned)(at + 2));
	b16(p, 0xC000 | (unsigned)at);
	b16(p, DNS_T_A); b16(p, 1); b32(p, 1); b16(p, 4);
	bytes(p, "\1\2\3\4", 4);
	expect_final(&q, p, DNS_MALFORMED);
	/* label "a" then a pointer back to that label: backwards, but a loop */
	p = reply_new(&q, "example.org", 0, 1);
	at = p->n;
	b8(p, 1); b8(p, 'a');
	b16(p, 0xC000 | (unsigned)at);
	b16(p, DNS_T_A); b16(p, 1); b32(p, 1); b16(p, 4);
	bytes(p, "\1\2\3\4", 4);
	expect_final(&q, p, DNS_MALFORMED);
	/* A pointer past the end of the packet, and one cut in half. */
	p = reply_new(&q, "example.org", 0, 1);
	b16(p, 0xFFFF);
	expect_status(&q, p, DNS_MALFORMED);
	p->n--;
	expect_final(&q, p, DNS_MALFORMED);
	/*
	 * Chained backward pointers, kept in the RDATA of a record of a type
	 * we skip: the next owner name follows them all. 20 jumps are more
	 * than we follow; 10 are fine (and end at the root: not our name).
	 */
	for (int jumps = 20; jumps >= 10; jumps -= 10) {
		p = reply_new(&q, "example.org", 0, 2);
		rr_hdr(p, 99, 1, 1 + 2 * (unsigned)jumps);
		size_t prev = p->n;
		b8(p, 0);
		for (int i = 0; i < jumps; i++) {
			size_t here = p->n;
			b16(p, 0xC000 | (unsigned)prev);
			prev = here;
		}
		b16(p, 0xC000 | (unsigned)prev);
		b16(p, DNS_T_A); b16(p, 1); b32(p, 1); b16(p, 4);
		bytes(p, "\1\2\3\4", 4);
		expect_final(&q, p, jumps > DNS_PTR_JUMPS_MAX ? DNS_MALFORMED : DNS_NODATA);
	}
}

static void test_truncated_and_lying(void **state)
{
	(void)state;
	dns_query_t q;
	dns_query_init(&q, "example.org", DNS_T_A);
	pkt_t *p = reply_new(&q, "example.org", 0, 1);
	rr_hdr(p, DNS_T_A, 60, 4);
	bytes(p, "\1\2\3\4", 4);
	size_t full = p->n;
	/* Every cut short of the whole packet fails cleanly. */
	for (size_t n = 0; n < full; n++) {
		dns_answer_t *a = dns_reply_parse(&q, p->b, n);
		assert_int_equal(a->status, DNS_MALFORMED);
		dns_answer_free(&a);
	}
	/* RDLENGTH past the end */
	p->b[full - 5] = 5;
	expect_status(&q, p, DNS_MALFORMED);
	p->b[full - 5] = 4;
	/* ANCOUNT says 3, the packet has 1 */
	p->b[7] = 3;
	expect_status(&q, p, DNS_MALFORMED);
	/* ANCOUNT over the bound */
	p->b[6] = 0x10;
	expect_status(&q, p, DNS_MALFORMED);
	p->b[6] = 0;
	p->b[7] = 1;
	p->b[9] = 0xFF;  /* NSCOUNT 255 */
	expect_status(&q, p, DNS_MALFORMED);
	p->b[9] = 0;
	/* QDCOUNT 0 and 2 */
	p->b[5] = 0;
	expect_status(&q, p, DNS_MALFORMED);
	p->b[5] = 2;
	expect_status(&q, p, DNS_MALFORMED);
	p->b[5] = 1;
	/* A record of 5 octets */
	p->b[full - 5] = 5;
	b8(p, 0);
	expect_final(&q, p, DNS_MALFORMED);
}

static void test_oversize_names(void **state)
{
	(void)state;
	dns_query_t q;
	dns_query_init(&q, "example.org", DNS_T_PTR);
	/* An owner of 5 labels of 63: 321 octets. */
	pkt_t *p = reply_new(&q, "example.org", 0, 1);
	char label[64];
	memset(label, 'x', 63);
	for (int i = 0; i < 5; i++) {
		b8(p, 63);
		bytes(p, label, 63);
	}
	b8(p, 0);
	b16(p, DNS_T_PTR); b16(p, 1); b32(p, 1); b16(p, 1);
	b8(p, 0);
	expect_final(&q, p, DNS_MALFORMED);
	/* 4 labels of 62 (253 octets) then a pointer to example.org (13): 266 */
	p = reply_new(&q, "example.org", 0, 1);
	rr_hdr(p, DNS_T_PTR, 1, 4 * 63 + 2);
	for (int i = 0; i < 4; i++) {
		b8(p, 62);
		bytes(p, label, 62);
	}
	b16(p, 0xC00C);
	expect_final(&q, p, DNS_MALFORMED);
	/* Label length octets 0x40 and 0x80 (extended label types) */
	for (unsigned bad = 0x40; bad <= 0x80; bad += 0x40) {
		p = reply_new(&q, "example.org", 0, 1);
		rr_hdr(p, DNS_T_PTR, 1, 3);
		b8(p, bad);
		b8(p, 'a');
		b8(p, 0);
		expect_final(&q, p, DNS_MALFORMED);
	}
	/* A PTR name longer than its RDATA (runs into the next bytes) */
	p = reply_new(&q, "example.org", 0, 1);
	rr_hdr(p, DNS_T_PTR, 1, 3);
	bname(p, "abc.d");
	expect_final(&q, p, DNS_MALFORMED);
	/* ...and shorter than its RDATA */
	p = reply_new(&q, "example.org", 0, 1);
	rr_hdr(p, DNS_T_PTR, 1, 9);
	bname(p, "abc.d");
	b16(p, 0);
	expect_final(&q, p, DNS_MALFORMED);
}

static void test_txt_bounds(void **state)
{
	(void)state;
	dns_query_t q;
	dns_query_init(&q, "example.org", DNS_T_TXT);
	/* A string whose length octet runs past RDATA */
	pkt_t *p = reply_new(&q, "example.org", 0, 1);
	rr_hdr(p, DNS_T_TXT, 1, 4);
	b8(p, 10);
	bytes(p, "abc", 3);
	b32(p, 0);  /* bytes after RDATA that it must not borrow */
	expect_final(&q, p, DNS_MALFORMED);
	/* Exactly the cap: 32 strings of 255 + one of 32 = 8192 octets */
	p = reply_new(&q, "example.org", 0, 1);
	char s[255];
	memset(s, 'k', sizeof s);
	rr_hdr(p, DNS_T_TXT, 1, 32 * 256 + 33);
	for (int i = 0; i < 32; i++) {
		b8(p, 255);
		bytes(p, s, 255);
	}
	b8(p, 32);
	bytes(p, s, 32);
	dns_answer_t *a = parse(&q, p);
	assert_int_equal(a->status, DNS_OK);
	assert_int_equal(a->rr[0].txtlen, DNS_TXT_MAX);
	assert_int_equal(a->rr[0].nstrings, 33);
	dns_answer_free(&a);
	free(p);
	/* One octet over the cap */
	p = reply_new(&q, "example.org", 0, 1);
	rr_hdr(p, DNS_T_TXT, 1, 32 * 256 + 34);
	for (int i = 0; i < 32; i++) {
		b8(p, 255);
		bytes(p, s, 255);
	}
	b8(p, 33);
	bytes(p, s, 33);
	expect_final(&q, p, DNS_MALFORMED);
}

/*
 * Every single-byte change of a good reply, each value tried at a few
 * positions: whatever the outcome, no crash and no out-of-bounds read
 * (the sanitizer build checks), and a consistent answer.
 */
static void test_mutations(void **state)
{
	(void)state;
	dns_query_t q;
	dns_query_init(&q, "example.org", DNS_T_MX);
	pkt_t *p = reply_new(&q, "example.org", 0, 2);
	rr_hdr(p, DNS_T_MX, 60, 2 + 7);
	b16(p, 10); b8(p, 4); bytes(p, "mail", 4); b16(p, 0xC00C);
	rr_hdr(p, DNS_T_MX, 60, 2 + 2);
	b16(p, 20); b16(p, 0xC000 | 41);
	pkt_t *m = malloc(sizeof *m);
	size_t ok = 0;
	for (size_t i = 0; i < p->n; i++) {
		for (unsigned v = 0; v < 256; v += 7) {
			memcpy(m, p, sizeof *m);
			m->b[i] = (uint8_t)v;
			dns_answer_t *a = parse(&q, m);
			if (a->status == DNS_OK) {
				ok++;
				for (size_t k = 0; k < a->n; k++)
					assert_non_null(a->rr[k].name);
			} else if (a->status != DNS_NODATA) {
				assert_int_equal(a->n, 0);
			}
			dns_answer_free(&a);
		}
	}
	assert_true(ok > 0);
	free(m);
	free(p);
}

/* ---- helpers and the resolver ---- */

static void test_reverse_and_names(void **state)
{
	(void)state;
	char buf[128];
	assert_int_equal(dns_reverse_name("203.0.113.7", buf, sizeof buf), 0);
	assert_string_equal(buf, "7.113.0.203.in-addr.arpa");
	assert_int_equal(dns_reverse_name("2001:db8::567:89ab", buf, sizeof buf), 0);
	assert_string_equal(buf, "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa");
	assert_int_equal(dns_reverse_name("mail.example.org", buf, sizeof buf), -1);
	assert_int_equal(dns_reverse_name("1.2.3.4", buf, 10), -1);
	assert_int_equal(dns_reverse_name("::1", buf, 40), -1);
	assert_true(dns_name_eq("Mail.Example.ORG.", "mail.example.org"));
	assert_false(dns_name_eq("mail.example.org", "mail.example.or"));
	assert_false(dns_name_eq("mail.example.org..", "mail.example.org"));
	assert_true(dns_hostname_valid("mail.example.org"));
	assert_true(dns_hostname_valid("Mail-1.example.org."));
	assert_false(dns_hostname_valid("localhost"));
	assert_false(dns_hostname_valid("-a.example.org"));
	assert_false(dns_hostname_valid("a-.example.org"));
	assert_false(dns_hostname_valid("a..example.org"));
	assert_false(dns_hostname_valid("a_b.example.org"));
	assert_false(dns_hostname_valid("example.org.."));
	assert_false(dns_hostname_valid(""));
	char longname[300];
	memset(longname, 'a', 64);
	strcpy(longname + 64, ".org");
	assert_false(dns_hostname_valid(longname));  /* a 64-character label */
	assert_string_equal(dns_type_name(DNS_T_TXT), "TXT");
	assert_string_equal(dns_type_name(99), "TYPE99");
	assert_string_equal(dns_status_name(DNS_NXDOMAIN), "NXDOMAIN");
}

static void test_resolver_spec(void **state)
{
	(void)state;
	dns_resolver_t r;
	char err[200];
	static const struct { const char *spec, *text; } good[] = {
		{ "127.0.0.1", "127.0.0.1:53" }, { "127.0.0.1:5353", "127.0.0.1:5353" },
		{ "[::1]:5300", "[::1]:5300" }, { "::1", "[::1]:53" }, { "[2001:db8::1]", "[2001:db8::1]:53" },
	};
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
		assert_int_equal(dns_resolver_init(&r, good[i].spec, NULL, err, sizeof err), 0);
		assert_string_equal(r.text, good[i].text);
	}
	static const char *const bad[] = {
		"1.2.3.4:0", "1.2.3.4:65536", "1.2.3.4:x", "ns.example.org", "ns.example.org:53",
		"[::1", "[::1]x", "1.2.3.4:", ":53", "1.2.3.4:+53",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		err[0] = '\0';
		assert_int_equal(dns_resolver_init(&r, bad[i], NULL, err, sizeof err), -1);
		assert_non_null(strstr(err, bad[i]));
	}
	char path[] = "/tmp/roost-test-resolv-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	dprintf(fd, "# a comment\nsearch example.org\noptions ndots:1\nnameserver 192.0.2.53\nnameserver 192.0.2.54\n");
	close(fd);
	assert_int_equal(dns_resolver_init(&r, NULL, path, err, sizeof err), 0);
	assert_string_equal(r.text, "192.0.2.53:53");
	unlink(path);
	assert_int_equal(dns_resolver_init(&r, "", path, err, sizeof err), 0);
	assert_string_equal(r.text, "127.0.0.1:53");  /* no file: the libc default */
}

/* A bound UDP socket that never answers: a timeout; a closed port: refused. */
static void test_resolver_timeout_and_refused(void **state)
{
	(void)state;
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof sin;
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
	char spec[64], err[200];
	snprintf(spec, sizeof spec, "127.0.0.1:%u", ntohs(sin.sin_port));
	dns_resolver_t r;
	assert_int_equal(dns_resolver_init(&r, spec, NULL, err, sizeof err), 0);
	r.timeout_ms = 100;
	r.tries = 2;
	dns_answer_t *a = dns_resolve(&r, "example.org", DNS_T_A);
	assert_int_equal(a->status, DNS_TIMEOUT);
	dns_answer_free(&a);
	/* Both queries arrived, with the same ID (a late reply still counts). */
	uint8_t b1[600], b2[600];
	assert_true(recv(fd, b1, sizeof b1, MSG_DONTWAIT) > 12);
	assert_true(recv(fd, b2, sizeof b2, MSG_DONTWAIT) > 12);
	assert_memory_equal(b1, b2, 2);
	close(fd);
	a = dns_resolve(&r, "example.org", DNS_T_A);  /* nobody on the port now */
	assert_int_equal(a->status, DNS_NETERR);
	assert_string_equal(a->why, "connection refused");
	dns_answer_free(&a);
	a = dns_resolve(&r, "bad..name", DNS_T_A);
	assert_int_equal(a->status, DNS_BADNAME);
	dns_answer_free(&a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_query_bytes),
		cmocka_unit_test(test_a_aaaa),
		cmocka_unit_test(test_mx_ptr_txt),
		cmocka_unit_test(test_name_text_escapes),
		cmocka_unit_test(test_cname_chain),
		cmocka_unit_test(test_rcodes_and_nodata),
		cmocka_unit_test(test_mismatch),
		cmocka_unit_test(test_pointer_loops),
		cmocka_unit_test(test_truncated_and_lying),
		cmocka_unit_test(test_oversize_names),
		cmocka_unit_test(test_txt_bounds),
		cmocka_unit_test(test_mutations),
		cmocka_unit_test(test_reverse_and_names),
		cmocka_unit_test(test_resolver_spec),
		cmocka_unit_test(test_resolver_timeout_and_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
