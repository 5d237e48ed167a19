/*
 * dns.c — see dns.h. Packets first (query, names, reply), then the
 * blocking resolver (UDP, TCP fallback), then small helpers.
 *
 * The reply parser trusts nothing in the packet: every offset is checked
 * against the packet length before the byte is read, compression pointers
 * must point strictly before the segment that holds them (so a chain of
 * them always ends) and are counted, names stop at 255 octets, counts at
 * DNS_ANSWERS_MAX, RDATA must lie inside the packet and be used up exactly
 * by the record it holds.
 */
#include "dns.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define DNS_HDR 12
#define DNS_CLASS_IN 1
#define DNS_F_QR 0x8000
#define DNS_F_TC 0x0200
#define DNS_F_RD 0x0100

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* ---- names ------------------------------------------------------------ */

/*
 * Text name to wire form in out (DNS_NAME_MAX octets). No escapes: the
 * names we ask for come from the operator and from records we built.
 */
static int name_to_wire(const char *name, uint8_t *out, size_t *outlen)
{
	size_t n = strlen(name), o = 0;
	const char *p = name, *end;

	if (n > 0 && name[n - 1] == '.')
		n--;
	if (n == 0)
		return -1;
	end = name + n;
	for (;;) {
		const char *dot = memchr(p, '.', (size_t)(end - p));
		size_t l = (size_t)((dot ? dot : end) - p);

		if (l == 0 || l > DNS_LABEL_MAX || o + 1 + l + 1 > DNS_NAME_MAX)
			return -1;
		out[o++] = (uint8_t)l;
		memcpy(out + o, p, l);
		o += l;
		if (dot == NULL)
			break;
		p = dot + 1;
	}
	out[o++] = 0;
	*outlen = o;
	return 0;
}

/*
 * Reads the (possibly compressed) name at *off of pkt[0..len) into out in
 * uncompressed wire form, and moves *off past the name as it stands there.
 * Each pointer must point before the start of the segment being read, so
 * positions strictly decrease and no loop is possible; the jump count and
 * the 255-octet limit bound the work besides.
 */
static int read_name(const uint8_t *pkt, size_t len, size_t *off, uint8_t *out,
		     size_t *outlen)
{
	size_t p = *off, o = 0, seg = *off;
	int jumps = 0;
	int jumped = 0;

	for (;;) {
		if (p >= len)
			return -1;
		uint8_t c = pkt[p];
		if (c == 0)
			break;
		if ((c & 0xC0) == 0xC0) {
			if (p + 1 >= len)
				return -1;
			size_t t = (size_t)(c & 0x3F) << 8 | pkt[p + 1];
			if (t >= seg || ++jumps > DNS_PTR_JUMPS_MAX)
				return -1;
			if (!jumped)
				*off = p + 2;
			jumped = 1;
			seg = p = t;
			continue;
		}
		/* 0x40 and 0x80: extended label types, none of which is in use. */
		if (c & 0xC0)
			return -1;
		if (len - p - 1 < c || o + 1 + c + 1 > DNS_NAME_MAX)
			return -1;
		out[o++] = c;
		memcpy(out + o, pkt + p + 1, c);
		o += c;
		p += 1 + (size_t)c;
	}
	out[o++] = 0;
	if (!jumped)
		*off = p + 1;
	*outlen = o;
	return 0;
}

static int ascii_lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

/*
 * Wire names equal ignoring ASCII case (RFC 4343). Length octets are at
 * most 63, below 'A', so folding never changes them.
 */
static int wire_eq(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	if (alen != blen)
		return 0;
	for (size_t i = 0; i < alen; i++)
		if (ascii_lower(a[i]) != ascii_lower(b[i]))
			return 0;
	return 1;
}

/* Wire name to text (out holds DNS_NAME_TEXT_MAX); the root is ".". */
static void wire_to_text(const uint8_t *w, char *out)
{
	size_t o = 0;

	for (size_t p = 0; w[p] != 0; p += 1 + (size_t)w[p]) {
		if (o > 0)
			out[o++] = '.';
		for (size_t i = 1; i <= w[p]; i++) {
			uint8_t c = w[p + i];
			if (c == '.' || c == '\\') {
				out[o++] = '\\';
				out[o++] = (char)c;
			} else if (c > 0x20 && c < 0x7f) {
				out[o++] = (char)c;
			} else {
				o += (size_t)snprintf(out + o, 5, "\\%03u", c);
			}
		}
	}
	if (o == 0)
		out[o++] = '.';
	out[o] = '\0';
}

static char *wire_to_text_new(const uint8_t *w)
{
	char text[DNS_NAME_TEXT_MAX];

	wire_to_text(w, text);
	return xstrdup(text);
}

/* ---- query ------------------------------------------------------------ */

int dns_query_init(dns_query_t *q, const char *name, uint16_t type)
{
	uint8_t *p = q->pkt;

	memset(q, 0, sizeof *q);
	if (name_to_wire(name, q->qname, &q->qname_len) < 0)
		return -1;
	/* A predictable ID lets an off-path attacker forge replies. */
	if (getrandom(&q->id, sizeof q->id, 0) != (ssize_t)sizeof q->id)
		return -1;
	q->qtype = type;
	put16(p, q->id);
	put16(p + 2, DNS_F_RD);
	put16(p + 4, 1);       /* QDCOUNT */
	put16(p + 10, 1);      /* ARCOUNT: the OPT record */
	p += DNS_HDR;
	memcpy(p, q->qname, q->qname_len);
	p += q->qname_len;
	put16(p, type);
	put16(p + 2, DNS_CLASS_IN);
	p += 4;
	/* OPT (RFC 6891 6.1.2): root owner, CLASS = our UDP size, TTL 0, no options. */
	*p++ = 0;
	put16(p, DNS_T_OPT);
	put16(p + 2, DNS_UDP_SIZE);
	memset(p + 4, 0, 6);
	p += 10;
	q->len = (size_t)(p - q->pkt);
	return 0;
}

/* ---- reply ------------------------------------------------------------ */

/* One answer-section record before we know whether it is wanted. */
struct raw_rr {
	uint8_t owner[DNS_NAME_MAX];
	size_t owner_len;
	uint16_t type, class;
	uint32_t ttl;
	size_t rdoff, rdlen;
};

static dns_answer_t *answer_new(enum dns_status st, int rcode, const char *why)
{
	dns_answer_t *a = xcalloc(1, sizeof *a);

	a->status = st;
	a->rcode = rcode;
	a->why = why;
	return a;
}

void dns_answer_free(dns_answer_t **a)
{
	if (a == NULL || *a == NULL)
		return;
	for (size_t i = 0; i < (*a)->n; i++) {
		free((*a)->rr[i].name);
		free((*a)->rr[i].txt);
	}
	free((*a)->rr);
	free((*a)->canon);
	free(*a);
	*a = NULL;
}

/* Reads one resource record's header at *off; RDATA must fit the packet. */
static int read_rr(const uint8_t *pkt, size_t len, size_t *off, struct raw_rr *rr)
{
	if (read_name(pkt, len, off, rr->owner, &rr->owner_len) < 0)
		return -1;
	if (len - *off < 10)
		return -1;
	rr->type = get16(pkt + *off);
	rr->class = get16(pkt + *off + 2);
	rr->ttl = get32(pkt + *off + 4);
	rr->rdlen = get16(pkt + *off + 8);
	rr->rdoff = *off + 10;
	if (len - rr->rdoff < rr->rdlen)
		return -1;
	*off = rr->rdoff + rr->rdlen;
	return 0;
}

/* A name that must fill the RDATA from off to its end exactly. */
static char *rdata_name_new(const uint8_t *pkt, size_t len, size_t off, size_t rdend,
			    uint8_t *wire, size_t *wlen)
{
	if (read_name(pkt, len, &off, wire, wlen) < 0 || off != rdend)
		return NULL;
	return wire_to_text_new(wire);
}

/* TXT RDATA: character-strings concatenated (RFC 7208 3.3, RFC 6376 3.6.2.2). */
static int rdata_txt(const uint8_t *pkt, const struct raw_rr *raw, dns_rr_t *rr)
{
	size_t p = raw->rdoff, end = raw->rdoff + raw->rdlen, n = 0;
	char *txt;

	if (raw->rdlen > DNS_TXT_MAX + DNS_TXT_MAX / 255 + 1)
		return -1;  /* more than the cap even after the length octets */
	txt = xmalloc(raw->rdlen + 1);
	while (p < end) {
		size_t l = pkt[p++];
		if (end - p < l || n + l > DNS_TXT_MAX) {
			free(txt);
			return -1;
		}
		memcpy(txt + n, pkt + p, l);
		n += l;
		p += l;
		rr->nstrings++;
	}
	txt[n] = '\0';
	rr->txt = txt;
	rr->txtlen = n;
	return 0;
}

/* Decodes the RDATA of a wanted record into rr. -1 if it is malformed. */
static int rdata_decode(const uint8_t *pkt, size_t len, const struct raw_rr *raw, dns_rr_t *rr)
{
	size_t rdend = raw->rdoff + raw->rdlen, wlen;
	uint8_t wire[DNS_NAME_MAX];

	rr->type = raw->type;
	rr->ttl = raw->ttl;
	switch (raw->type) {
	case DNS_T_A:
	case DNS_T_AAAA:
		if (raw->rdlen != (raw->type == DNS_T_A ? 4u : 16u))
			return -1;
		memcpy(rr->addr, pkt + raw->rdoff, raw->rdlen);
		return 0;
	case DNS_T_MX:
		if (raw->rdlen < 3)
			return -1;
		rr->pref = get16(pkt + raw->rdoff);
		rr->name = rdata_name_new(pkt, len, raw->rdoff + 2, rdend, wire, &wlen);
		return rr->name ? 0 : -1;
	case DNS_T_PTR:
	case DNS_T_CNAME:
		rr->name = rdata_name_new(pkt, len, raw->rdoff, rdend, wire, &wlen);
		return rr->name ? 0 : -1;
	case DNS_T_TXT:
		return rdata_txt(pkt, raw, rr);
	default:
		return 0;  /* a type we do not decode: only its TTL is kept */
	}
}

/*
 * Checks the header and the question of pkt against q. Returns DNS_OK to
 * go on (*off after the question), or the status that ends the parse.
 */
static enum dns_status check_header(const dns_query_t *q, const uint8_t *pkt, size_t len,
				    size_t *off, const char **why)
{
	uint8_t qname[DNS_NAME_MAX];
	size_t qlen;
	uint16_t flags;

	if (len < DNS_HDR) {
		*why = "shorter than a DNS header";
		return DNS_MALFORMED;
	}
	flags = get16(pkt + 2);
	/* Not ours, or not a reply to a standard query: someone else's packet. */
	if (get16(pkt) != q->id || !(flags & DNS_F_QR) || (flags >> 11 & 0xF) != 0) {
		*why = "ID or flags do not match the query";
		return DNS_MISMATCH;
	}
	if (get16(pkt + 4) != 1) {
		*why = "QDCOUNT is not 1";
		return DNS_MALFORMED;
	}
	if (get16(pkt + 6) > DNS_ANSWERS_MAX || get16(pkt + 8) > DNS_ANSWERS_MAX ||
	    get16(pkt + 10) > DNS_ANSWERS_MAX) {
		*why = "more records than we accept";
		return DNS_MALFORMED;
	}
	*off = DNS_HDR;
	if (read_name(pkt, len, off, qname, &qlen) < 0 || len - *off < 4) {
		*why = "bad question";
		return DNS_MALFORMED;
	}
	if (!wire_eq(qname, qlen, q->qname, q->qname_len) || get16(pkt + *off) != q->qtype ||
	    get16(pkt + *off + 2) != DNS_CLASS_IN) {
		*why = "the question is not the one asked";
		return DNS_MISMATCH;
	}
	*off += 4;
	return DNS_OK;
}

/*
 * Collects the records of the asked type owned by the end of the CNAME
 * chain that starts at the question. Returns the final status.
 */
static enum dns_status follow_chain(const dns_query_t *q, const uint8_t *pkt, size_t len,
				    const struct raw_rr *rrs, size_t nrr, dns_answer_t *a)
{
	uint8_t cur[DNS_NAME_MAX];
	size_t curlen = q->qname_len;

	memcpy(cur, q->qname, curlen);
	for (int hops = 0; hops <= DNS_CNAME_MAX; hops++) {
		const struct raw_rr *cname = NULL;
		for (size_t i = 0; i < nrr; i++) {
			if (!wire_eq(rrs[i].owner, rrs[i].owner_len, cur, curlen))
				continue;
			if (rrs[i].type == q->qtype) {
				if (rdata_decode(pkt, len, &rrs[i], &a->rr[a->n]) < 0) {
					a->n++;  /* so dns_answer_free releases what it holds */
					a->why = "malformed RDATA";
					return DNS_MALFORMED;
				}
				a->n++;
			} else if (rrs[i].type == DNS_T_CNAME && cname == NULL) {
				cname = &rrs[i];
			}
		}
		free(a->canon);
		a->canon = wire_to_text_new(cur);
		if (a->n > 0)
			return DNS_OK;
		if (cname == NULL)
			return DNS_NODATA;
		size_t off = cname->rdoff;
		if (read_name(pkt, len, &off, cur, &curlen) < 0 ||
		    off != cname->rdoff + cname->rdlen) {
			a->why = "malformed CNAME";
			return DNS_MALFORMED;
		}
	}
	a->why = "CNAME chain too long";
	return DNS_MALFORMED;
}

dns_answer_t *dns_reply_parse(const dns_query_t *q, const uint8_t *pkt, size_t len)
{
	const char *why = NULL;
	size_t off, nan, nrr = 0;
	enum dns_status st = check_header(q, pkt, len, &off, &why);
	int rcode;
	dns_answer_t *a;
	struct raw_rr *rrs;

	if (st != DNS_OK)
		return answer_new(st, -1, why);
	rcode = pkt[3] & 0xF;
	if (get16(pkt + 2) & DNS_F_TC)
		return answer_new(DNS_TRUNCATED, rcode, "truncated");
	if (rcode == DNS_R_NXDOMAIN)
		return answer_new(DNS_NXDOMAIN, rcode, NULL);
	if (rcode == DNS_R_SERVFAIL)
		return answer_new(DNS_SERVFAIL, rcode, NULL);
	if (rcode != DNS_R_NOERROR)
		return answer_new(DNS_RCODE, rcode, NULL);
	nan = get16(pkt + 6);
	rrs = xcalloc(nan ? nan : 1, sizeof *rrs);
	for (size_t i = 0; i < nan; i++) {
		if (read_rr(pkt, len, &off, &rrs[nrr]) < 0) {
			free(rrs);
			return answer_new(DNS_MALFORMED, rcode, "answer section runs past the packet");
		}
		/* Another class than IN is no answer to our question: skipped. */
		if (rrs[nrr].class == DNS_CLASS_IN)
			nrr++;
	}
	a = answer_new(DNS_OK, rcode, NULL);
	a->rr = xcalloc(nrr ? nrr : 1, sizeof *a->rr);
	a->status = follow_chain(q, pkt, len, rrs, nrr, a);
	free(rrs);
	if (a->status == DNS_MALFORMED) {
		/* A half-decoded answer is no answer: keep only the status. */
		const char *w = a->why;
		dns_answer_free(&a);
		a = answer_new(DNS_MALFORMED, rcode, w);
	}
	return a;
}

/* ---- resolver --------------------------------------------------------- */

/* The first "nameserver" address of a resolv.conf, into buf; -1 if none. */
static int resolv_conf_first(const char *path, char *buf, size_t size)
{
	FILE *f = fopen(path, "r");
	char line[512];
	int rc = -1;

	if (f == NULL)
		return -1;
	while (rc < 0 && fgets(line, sizeof line, f) != NULL) {
		char word[16], addr[128];
		if (sscanf(line, "%15s %127s", word, addr) == 2 &&
		    strcmp(word, "nameserver") == 0 && strlen(addr) < size) {
			strcpy(buf, addr);
			rc = 0;
		}
	}
	fclose(f);
	return rc;
}

/*
 * Splits "ip", "ip:port", "[ip6]:port" or a bare "ip6" into host and port
 * (53 when absent). -1 when the form is none of these.
 */
static int split_hostport(const char *spec, char *host, size_t hsize, long *port)
{
	const char *colon = NULL, *h = spec;
	size_t hlen;

	*port = 53;
	if (spec[0] == '[') {
		const char *close = strchr(spec, ']');
		if (close == NULL || (close[1] != '\0' && close[1] != ':'))
			return -1;
		h = spec + 1;
		hlen = (size_t)(close - h);
		colon = close[1] == ':' ? close + 1 : NULL;
	} else {
		colon = strchr(spec, ':');
		/* More than one colon and no brackets: an IPv6 address alone. */
		if (colon != NULL && strchr(colon + 1, ':') != NULL)
			colon = NULL;
		hlen = colon ? (size_t)(colon - spec) : strlen(spec);
	}
	if (hlen == 0 || hlen >= hsize)
		return -1;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	if (colon != NULL) {
		char *end;
		if (colon[1] < '0' || colon[1] > '9')
			return -1;
		errno = 0;
		*port = strtol(colon + 1, &end, 10);
		if (errno != 0 || *end != '\0' || *port < 1 || *port > 65535)
			return -1;
	}
	return 0;
}

int dns_resolver_init(dns_resolver_t *r, const char *spec, const char *resolv_conf,
		      char *err, size_t errlen)
{
	char found[128], host[128], portstr[8], numeric[INET6_ADDRSTRLEN];
	struct addrinfo hints = { .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV,
				  .ai_socktype = SOCK_DGRAM };
	struct addrinfo *ai = NULL;
	long port;

	memset(r, 0, sizeof *r);
	r->timeout_ms = 2000;
	r->tries = 2;
	if (spec == NULL || spec[0] == '\0') {
		/* No resolv.conf, or none named in it: the C library's default too. */
		spec = resolv_conf_first(resolv_conf ? resolv_conf : "/etc/resolv.conf",
					 found, sizeof found) == 0 ? found : "127.0.0.1";
	}
	if (split_hostport(spec, host, sizeof host, &port) < 0 ||
	    (snprintf(portstr, sizeof portstr, "%ld", port),
	     getaddrinfo(host, portstr, &hints, &ai) != 0)) {
		snprintf(err, errlen, "resolver '%s' is not ip[:port] or [ipv6]:port", spec);
		return -1;
	}
	memcpy(&r->addr, ai->ai_addr, ai->ai_addrlen);
	r->addrlen = ai->ai_addrlen;
	getnameinfo(ai->ai_addr, ai->ai_addrlen, numeric, sizeof numeric, NULL, 0, NI_NUMERICHOST);
	snprintf(r->text, sizeof r->text, ai->ai_family == AF_INET6 ? "[%s]:%ld" : "%s:%ld",
		 numeric, port);
	freeaddrinfo(ai);
	return 0;
}

/* Waits until fd is ready for events or the deadline passes: 1, 0 (time), -1. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	for (;;) {
		int64_t left = deadline - now_ms();
		struct pollfd pfd = { .fd = fd, .events = events };
		if (left <= 0)
			return 0;
		int n = poll(&pfd, 1, (int)left);
		if (n < 0 && errno == EINTR)
			continue;
		return n < 0 ? -1 : n > 0;
	}
}

/* Writes or reads exactly n bytes of a non-blocking stream before the deadline. */
static int stream_full(int fd, uint8_t *buf, size_t n, int writing, int64_t deadline)
{
	size_t done = 0;

	while (done < n) {
		ssize_t k = writing ? send(fd, buf + done, n - done, MSG_NOSIGNAL)
				    : recv(fd, buf + done, n - done, 0);
		if (k > 0) {
			done += (size_t)k;
			continue;
		}
		if (k == 0 || (errno != EAGAIN && errno != EINTR))
			return -1;  /* closed early, or a real error */
		if (wait_fd(fd, writing ? POLLOUT : POLLIN, deadline) <= 0)
			return -1;
	}
	return 0;
}

/* One query over TCP (RFC 1035 4.2.2: two-octet length prefix), one deadline. */
static dns_answer_t *resolve_tcp(const dns_resolver_t *r, const dns_query_t *q, uint8_t *buf)
{
	int64_t deadline = now_ms() + r->timeout_ms;
	int fd = socket(r->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	uint8_t out[2 + DNS_QUERY_MAX], lenbuf[2];
	int soerr = 0;
	socklen_t sl = sizeof soerr;
	dns_answer_t *a;

	if (fd < 0)
		return answer_new(DNS_NETERR, -1, "cannot make a TCP socket");
	if (connect(fd, (const struct sockaddr *)&r->addr, r->addrlen) < 0 &&
	    (errno != EINPROGRESS || wait_fd(fd, POLLOUT, deadline) <= 0 ||
	     getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr != 0)) {
		close(fd);
		return answer_new(DNS_NETERR, -1, "TCP connection failed");
	}
	put16(out, (uint16_t)q->len);
	memcpy(out + 2, q->pkt, q->len);
	if (stream_full(fd, out, q->len + 2, 1, deadline) < 0 ||
	    stream_full(fd, lenbuf, 2, 0, deadline) < 0 ||
	    stream_full(fd, buf, get16(lenbuf), 0, deadline) < 0) {
		close(fd);
		return answer_new(DNS_TIMEOUT, -1, "no complete reply over TCP");
	}
	close(fd);
	a = dns_reply_parse(q, buf, get16(lenbuf));
	if (a->status == DNS_TRUNCATED) {
		/* TCP carries 64 KiB; truncation there is a broken server. */
		dns_answer_free(&a);
		a = answer_new(DNS_MALFORMED, -1, "truncated even over TCP");
	}
	a->tcp = 1;
	return a;
}

/*
 * Sends q over UDP up to r->tries times and waits for the matching reply;
 * packets that are not the reply (other ID, other question) are dropped
 * and the wait goes on. Sets *truncated when the reply says TC.
 */
static dns_answer_t *resolve_udp(const dns_resolver_t *r, const dns_query_t *q, uint8_t *buf,
				 int *truncated)
{
	int fd = socket(r->addr.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	const char *neterr = NULL;

	*truncated = 0;
	/* connect: the kernel drops datagrams from any other address for us. */
	if (fd < 0 || connect(fd, (const struct sockaddr *)&r->addr, r->addrlen) < 0) {
		if (fd >= 0)
			close(fd);
		return answer_new(DNS_NETERR, -1, "cannot reach the resolver over UDP");
	}
	for (int t = 0; t < r->tries; t++) {
		int64_t deadline = now_ms() + r->timeout_ms;
		if (send(fd, q->pkt, q->len, 0) < 0) {
			neterr = "cannot send to the resolver";
			continue;
		}
		while (wait_fd(fd, POLLIN, deadline) > 0) {
			ssize_t n = recv(fd, buf, DNS_MSG_MAX, 0);
			if (n < 0) {
				/* ICMP port unreachable comes back as ECONNREFUSED. */
				neterr = errno == ECONNREFUSED ? "connection refused" : "receive failed";
				break;
			}
			dns_answer_t *a = dns_reply_parse(q, buf, (size_t)n);
			if (a->status == DNS_MISMATCH) {
				dns_answer_free(&a);
				continue;
			}
			close(fd);
			if (a->status == DNS_TRUNCATED)
				*truncated = 1;
			return a;
		}
	}
	close(fd);
	if (neterr != NULL)
		return answer_new(DNS_NETERR, -1, neterr);
	return answer_new(DNS_TIMEOUT, -1, "no reply");
}

dns_answer_t *dns_resolve(const dns_resolver_t *r, const char *name, uint16_t type)
{
	dns_query_t q;
	uint8_t *buf;
	dns_answer_t *a;
	int truncated;

	if (dns_query_init(&q, name, type) < 0)
		return answer_new(DNS_BADNAME, -1, "not a domain name (or no randomness)");
	buf = xmalloc(DNS_MSG_MAX);
	a = resolve_udp(r, &q, buf, &truncated);
	if (truncated) {
		dns_answer_free(&a);
		a = resolve_tcp(r, &q, buf);
	}
	free(buf);
	return a;
}

/* ---- helpers ---------------------------------------------------------- */

const char *dns_status_name(enum dns_status s)
{
	static const char *const names[] = {
		[DNS_OK] = "OK", [DNS_NODATA] = "NODATA", [DNS_NXDOMAIN] = "NXDOMAIN",
		[DNS_SERVFAIL] = "SERVFAIL", [DNS_RCODE] = "error RCODE",
		[DNS_TRUNCATED] = "truncated", [DNS_MISMATCH] = "mismatched reply",
		[DNS_MALFORMED] = "malformed reply", [DNS_TIMEOUT] = "timeout",
		[DNS_NETERR] = "network error", [DNS_BADNAME] = "bad name",
	};

	return (size_t)s < ARRAY_LEN(names) && names[s] ? names[s] : "?";
}

const char *dns_type_name(uint16_t type)
{
	static char other[16];

	switch (type) {
	case DNS_T_A: return "A";
	case DNS_T_CNAME: return "CNAME";
	case DNS_T_PTR: return "PTR";
	case DNS_T_MX: return "MX";
	case DNS_T_TXT: return "TXT";
	case DNS_T_AAAA: return "AAAA";
	default:
		snprintf(other, sizeof other, "TYPE%u", type);
		return other;
	}
}

int dns_reverse_name(const char *ip, char *buf, size_t size)
{
	uint8_t a[16];
	size_t o = 0;

	if (inet_pton(AF_INET, ip, a) == 1) {
		int n = snprintf(buf, size, "%u.%u.%u.%u.in-addr.arpa", a[3], a[2], a[1], a[0]);
		return n < 0 || (size_t)n >= size ? -1 : 0;
	}
	if (inet_pton(AF_INET6, ip, a) != 1 || size < 32 * 2 + sizeof "ip6.arpa")
		return -1;
	/* RFC 3596 2.5: nibbles, least significant first. */
	for (int i = 15; i >= 0; i--) {
		o += (size_t)snprintf(buf + o, size - o, "%x.%x.", a[i] & 0xF, a[i] >> 4);
	}
	strcpy(buf + o, "ip6.arpa");
	return 0;
}

bool dns_name_eq(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);

	if (la > 0 && a[la - 1] == '.')
		la--;
	if (lb > 0 && b[lb - 1] == '.')
		lb--;
	if (la != lb)
		return false;
	for (size_t i = 0; i < la; i++)
		if (ascii_lower((unsigned char)a[i]) != ascii_lower((unsigned char)b[i]))
			return false;
	return true;
}

bool dns_hostname_valid(const char *name)
{
	size_t n = strlen(name), label = 0, labels = 1;

	if (n > 0 && name[n - 1] == '.')
		n--;
	if (n == 0 || n > 253)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (c == '.') {
			/* empty label, or one ending in a hyphen */
			if (label == 0 || name[i - 1] == '-')
				return false;
			label = 0;
			labels++;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      (c == '-' && label > 0)) || ++label > DNS_LABEL_MAX)
			return false;
	}
	return label > 0 && name[n - 1] != '-' && labels >= 2;
}
