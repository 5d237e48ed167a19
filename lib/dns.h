/*
 * dns.h — DNS messages (RFC 1035, EDNS0 of RFC 6891) and a small stub
 * resolver: what roostctl check-dns needs today and what policyd (SPF,
 * FCrDNS) and dkimd (key records) will need.
 *
 * Two layers:
 *  - packets, no I/O: dns_query_init builds one question with a random ID,
 *    RD and an OPT record; dns_reply_parse checks a reply against that query
 *    and extracts the answer (A, AAAA, MX, TXT, PTR, CNAME, following a CNAME
 *    chain inside the answer). A service with an event loop sends and
 *    receives on its own sockets and only uses this layer.
 *  - dns_resolve: blocking UDP with timeout and retries, TCP when the reply
 *    is truncated. For roostctl and worker threads, never an event loop.
 *
 * Every length and count read from a reply is bounded (DNS_* below); a
 * reply outside the bounds is DNS_MALFORMED, never an out-of-bounds read.
 *
 * Names are text without the trailing dot ("mail.example.org"); a byte that
 * is not a printable ASCII character, '.' or '\\' inside a label is written
 * as \DDD or \. as in zone files.
 *
 * Ownership: dns_reply_parse and dns_resolve return a new dns_answer_t
 * (every string in it owned by it) that dns_answer_free releases; the query
 * and the packet are borrowed.
 */
#ifndef ROOST_DNS_H
#define ROOST_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define DNS_NAME_MAX 255      /* wire octets of a name, root label included (RFC 1035 2.3.4) */
#define DNS_LABEL_MAX 63      /* octets of a label */
#define DNS_NAME_TEXT_MAX 1024 /* text form: 254 octets, each at most 4 characters (\DDD) */
#define DNS_PTR_JUMPS_MAX 16  /* compression pointers followed while reading one name */
#define DNS_ANSWERS_MAX 128   /* ANCOUNT we accept; NSCOUNT and ARCOUNT alike */
#define DNS_CNAME_MAX 8       /* CNAMEs followed inside one answer */
#define DNS_TXT_MAX 8192      /* octets of one TXT record's strings, concatenated */
#define DNS_UDP_SIZE 1232     /* EDNS0 UDP payload we announce (the DNS flag day 2020 value) */
#define DNS_MSG_MAX 65535     /* a DNS message over TCP */
#define DNS_QUERY_MAX 300     /* header + name + question + OPT: 12 + 255 + 4 + 11 */

enum dns_type {
	DNS_T_A = 1,
	DNS_T_CNAME = 5,
	DNS_T_PTR = 12,
	DNS_T_MX = 15,
	DNS_T_TXT = 16,
	DNS_T_AAAA = 28,
	DNS_T_OPT = 41,
};

enum dns_rcode {
	DNS_R_NOERROR = 0,
	DNS_R_FORMERR = 1,
	DNS_R_SERVFAIL = 2,
	DNS_R_NXDOMAIN = 3,
	DNS_R_NOTIMP = 4,
	DNS_R_REFUSED = 5,
};

/* What became of a question; check-dns tells each of these apart. */
enum dns_status {
	DNS_OK,         /* NOERROR and at least one record of the type asked */
	DNS_NODATA,     /* NOERROR, the name exists, no record of that type */
	DNS_NXDOMAIN,   /* the name does not exist */
	DNS_SERVFAIL,   /* the server could not answer (RCODE 2) */
	DNS_RCODE,      /* another RCODE (REFUSED, FORMERR, NOTIMP...): answer->rcode */
	DNS_TRUNCATED,  /* TC set: ask again over TCP (dns_reply_parse only) */
	DNS_MISMATCH,   /* not the reply to this query (ID, QNAME or QTYPE differ) */
	DNS_MALFORMED,  /* the reply breaks the format or one of our bounds */
	DNS_TIMEOUT,    /* no reply after every try (dns_resolve only) */
	DNS_NETERR,     /* socket error, e.g. connection refused (dns_resolve only) */
	DNS_BADNAME,    /* the name asked for is not a domain name (dns_resolve only) */
};

/* The query as sent, and what its reply must echo. */
typedef struct dns_query {
	uint16_t id;
	uint16_t qtype;
	uint8_t qname[DNS_NAME_MAX]; /* wire form */
	size_t qname_len;
	uint8_t pkt[DNS_QUERY_MAX];
	size_t len;
} dns_query_t;

typedef struct dns_rr {
	uint16_t type;
	uint32_t ttl;
	uint16_t pref;     /* MX preference */
	uint8_t addr[16];  /* A: the first 4 octets; AAAA: all 16 */
	char *name;        /* MX exchange, PTR or CNAME target (text); owned, NULL otherwise */
	char *txt;         /* TXT: the character-strings concatenated, NUL-terminated; owned */
	size_t txtlen;     /* octets in txt (it may hold a NUL) */
	unsigned nstrings; /* TXT: how many character-strings */
} dns_rr_t;

typedef struct dns_answer {
	enum dns_status status;
	int rcode;          /* the reply's RCODE; -1 when there was no reply */
	char *canon;        /* the name the records belong to, after CNAMEs; owned */
	dns_rr_t *rr;       /* records of the type asked whose owner is canon; owned */
	size_t n;
	const char *why;    /* DNS_MALFORMED, DNS_NETERR...: a static reason, or NULL */
	bool tcp;           /* dns_resolve: the answer came over TCP */
} dns_answer_t;

/*
 * Builds a query for name (text, trailing dot optional, no escapes) and type
 * with a random ID from getrandom. -1 if the name is empty or breaks a
 * length bound, or there is no randomness.
 */
int dns_query_init(dns_query_t *q, const char *name, uint16_t type);

/*
 * Parses reply pkt[0..len) as the answer to q. Returns a new answer (never
 * NULL) whose status says what happened; DNS_TRUNCATED, DNS_MISMATCH and
 * DNS_MALFORMED answers carry no records.
 */
dns_answer_t *dns_reply_parse(const dns_query_t *q, const uint8_t *pkt, size_t len);

void dns_answer_free(dns_answer_t **a);

/* Where queries go, and how patiently. */
typedef struct dns_resolver {
	struct sockaddr_storage addr;
	socklen_t addrlen;
	char text[80];      /* "127.0.0.1:53" / "[::1]:53", for messages */
	int timeout_ms;     /* per try */
	int tries;          /* UDP sends before DNS_TIMEOUT */
} dns_resolver_t;

/*
 * Sets r up for the server spec "ip", "ip:port", "[ipv6]:port" or "ipv6";
 * NULL or "" takes the first nameserver of resolv_conf (NULL:
 * /etc/resolv.conf), else 127.0.0.1 as the C library does. timeout_ms and
 * tries start at 2000 and 2. -1 with a one-line reason in err.
 */
int dns_resolver_init(dns_resolver_t *r, const char *spec, const char *resolv_conf,
		      char *err, size_t errlen);

/*
 * Asks r for name/type: UDP, resent after each timeout, over TCP when the
 * reply is truncated. Blocks for at most about tries * timeout_ms (plus one
 * TCP exchange). Returns a new answer, never NULL.
 */
dns_answer_t *dns_resolve(const dns_resolver_t *r, const char *name, uint16_t type);

/* "NXDOMAIN", "SERVFAIL", "timeout"...: a short name for status. */
const char *dns_status_name(enum dns_status s);
/* "A", "MX"...; "TYPE<n>" for others (static buffer for those). */
const char *dns_type_name(uint16_t type);

/*
 * The reverse-lookup name of an IPv4 or IPv6 address in text:
 * "4.3.2.1.in-addr.arpa", or 32 nibbles + ".ip6.arpa". -1 if ip is neither.
 */
int dns_reverse_name(const char *ip, char *buf, size_t size);

/* Names equal ignoring ASCII case and one trailing dot on either. */
bool dns_name_eq(const char *a, const char *b);

/*
 * A host or domain name we can publish records for: LDH labels (RFC 1123
 * 2.1: letters, digits, inner hyphens) of 1..63 characters, at least two
 * labels, 253 characters at most; one trailing dot allowed.
 */
bool dns_hostname_valid(const char *name);

#endif
