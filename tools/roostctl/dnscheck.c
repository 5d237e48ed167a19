/*
 * dnscheck.c — roostctl check-dns DOMAIN [--ip VPS_IP]...: asks the
 * configured resolver (resolver / ROOST_RESOLVER, else /etc/resolv.conf)
 * for the live records and prints one line per check:
 *
 *   OK|FAIL|WARN|SKIP  mx|a|aaaa|ptr|fcrdns|spf|dmarc|dkim  what was found
 *
 * A FAIL line names the record and says what is missing or wrong, with
 * the lookup's outcome where there was none (NXDOMAIN, no data, SERVFAIL,
 * timeout). Exit status 1 if any check failed. WARN is what we cannot
 * verify (an SPF mechanism we do not evaluate) or what is odd but not
 * wrong; SKIP a check without its input (no local DKIM key).
 *
 * SPF (RFC 7208) is evaluated only as far as the question "does the record
 * authorize the VPS address": ip4/ip6/a/mx/include/all/redirect, with the
 * 10-lookup limit of 4.6.4; exists, ptr and macros are "cannot verify".
 * It is not the check_host() that policyd will need.
 *
 * Ownership: answers from dns_resolve are freed where they are read; the
 * --json array (struct chk.checks) is owned by the command.
 */
#include "roostctl.h"
#include "dns.h"
#include "strbuf.h"
#include "util.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SPF_LOOKUPS_MAX 10   /* RFC 7208 4.6.4 */
#define SPF_DEPTH_MAX 10     /* nested include/redirect; the lookup limit ends them first */
#define SPF_MX_MAX 10        /* MX names looked up for one mx term (4.6.4) */

enum chk_level { CHK_OK, CHK_WARN, CHK_SKIP, CHK_FAIL };

static const char *const chk_words[] = { "OK", "WARN", "SKIP", "FAIL" };

struct chk {
	struct ctl *ctl;
	struct dnsconf *d;
	dns_resolver_t res;
	json_t *checks;       /* --json: one object per line; owned */
	int failures;
	char ip4_buf[INET6_ADDRSTRLEN]; /* the VPS address learnt from the A record */
};

/* One check's line (or JSON object). */
__attribute__((format(printf, 4, 5)))
static void chk_say(struct chk *c, enum chk_level lv, const char *check, const char *fmt, ...)
{
	va_list ap;
	char *msg;

	va_start(ap, fmt);
	msg = xvasprintf(fmt, ap);
	va_end(ap);
	/*
	 * Messages quote TXT records, which may hold any byte: control bytes
	 * must not reach the operator's terminal, nor bytes that are not
	 * UTF-8 a JSON string.
	 */
	for (char *p = msg; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			*p = '?';
	if (lv == CHK_FAIL)
		c->failures++;
	if (c->checks != NULL)
		json_array_append_new(c->checks, json_pack("{s:s, s:s, s:s}", "check", check,
							   "status", chk_words[lv], "message", msg));
	else
		printf("%-4s %-6s %s\n", chk_words[lv], check, msg);
	free(msg);
}

/* Why a lookup of name/type gave no records, in words, into buf. */
static const char *chk_why(const struct chk *c, const dns_answer_t *a, const char *name,
			   uint16_t type, char *buf, size_t size)
{
	const char *t = dns_type_name(type);

	switch (a->status) {
	case DNS_NXDOMAIN:
		snprintf(buf, size, "%s does not exist (NXDOMAIN)", name);
		break;
	case DNS_NODATA:
		snprintf(buf, size, "no %s record at %s (the name exists: NOERROR, no data)", t,
			 a->canon ? a->canon : name);
		break;
	case DNS_SERVFAIL:
		snprintf(buf, size, "the resolver %s answered SERVFAIL for %s %s (the domain's "
			 "name servers failed or are unreachable)", c->res.text, name, t);
		break;
	case DNS_RCODE:
		snprintf(buf, size, "the resolver %s answered RCODE %d%s for %s %s", c->res.text,
			 a->rcode, a->rcode == DNS_R_REFUSED ? " (REFUSED)" : "", name, t);
		break;
	case DNS_TIMEOUT:
		snprintf(buf, size, "no answer from the resolver %s for %s %s (timeout: %d tries of "
			 "%d ms)", c->res.text, name, t, c->res.tries, c->res.timeout_ms);
		break;
	case DNS_NETERR:
		snprintf(buf, size, "cannot reach the resolver %s: %s", c->res.text,
			 a->why ? a->why : "network error");
		break;
	default:
		snprintf(buf, size, "%s %s: %s%s%s", name, t, dns_status_name(a->status),
			 a->why ? ": " : "", a->why ? a->why : "");
		break;
	}
	return buf;
}

/* True if the answer holds the address ip (text). */
static bool has_addr(const dns_answer_t *a, const char *ip)
{
	unsigned char want[16];
	int v6 = strchr(ip, ':') != NULL;

	if (a->status != DNS_OK || inet_pton(v6 ? AF_INET6 : AF_INET, ip, want) != 1)
		return false;
	for (size_t i = 0; i < a->n; i++)
		if (memcmp(a->rr[i].addr, want, v6 ? 16 : 4) == 0)
			return true;
	return false;
}

/* The answer's records as text ("10 mail.example.org, 20 b.example.net"). */
static char *rr_list_new(const dns_answer_t *a)
{
	strbuf_t sb = STRBUF_INIT;
	char ip[INET6_ADDRSTRLEN];

	for (size_t i = 0; i < a->n; i++) {
		const dns_rr_t *r = &a->rr[i];
		if (i > 0)
			sb_adds(&sb, ", ");
		if (r->type == DNS_T_MX)
			sb_addf(&sb, "%u %s", r->pref, r->name);
		else if (r->type == DNS_T_A || r->type == DNS_T_AAAA)
			sb_adds(&sb, inet_ntop(r->type == DNS_T_A ? AF_INET : AF_INET6, r->addr, ip,
					       sizeof ip));
		else if (r->name != NULL)
			sb_adds(&sb, r->name);
	}
	return sb_steal(&sb, NULL);
}

/* ---- MX, A/AAAA, PTR ---------------------------------------------------- */

static void check_mx(struct chk *c)
{
	const char *dom = c->d->domain, *host = c->d->hostname;
	dns_answer_t *a = dns_resolve(&c->res, dom, DNS_T_MX);
	char why[512];
	bool ours = false;

	if (a->status != DNS_OK) {
		chk_say(c, CHK_FAIL, "mx", "MX %s: %s", dom, chk_why(c, a, dom, DNS_T_MX, why, sizeof why));
		dns_answer_free(&a);
		return;
	}
	for (size_t i = 0; i < a->n; i++)
		ours |= dns_name_eq(a->rr[i].name, host);
	char *list = rr_list_new(a);
	if (ours)
		chk_say(c, CHK_OK, "mx", "MX %s: %s", dom, list);
	else if (a->n == 1 && strcmp(a->rr[0].name, ".") == 0)
		chk_say(c, CHK_FAIL, "mx", "MX %s is a null MX (RFC 7505: the domain takes no mail); "
			"want 10 %s", dom, host);
	else
		chk_say(c, CHK_FAIL, "mx", "MX %s points at %s, not at %s", dom, list, host);
	free(list);
	dns_answer_free(&a);
}

/*
 * The mail host's A (v6: AAAA) record must be the VPS address. Without a
 * configured IPv4 address, the A record is taken as the VPS's (and said);
 * an AAAA while no IPv6 address is configured is worth a warning: IPv6
 * senders would try an address that is not ours.
 */
static void check_addr(struct chk *c, bool v6)
{
	const char *host = c->d->hostname, *ip = v6 ? c->d->ip6 : c->d->ip4;
	const char *check = v6 ? "aaaa" : "a", *t = v6 ? "AAAA" : "A";
	dns_answer_t *a = dns_resolve(&c->res, host, v6 ? DNS_T_AAAA : DNS_T_A);
	char why[512], *list;

	if (a->status != DNS_OK) {
		/* No IPv6 configured: IPv4 only, as intended; an AAAA we cannot
		 * even look up is no concern of ours then. */
		if (!(v6 && ip == NULL))
			chk_say(c, CHK_FAIL, check, "%s %s: %s", t, host,
				chk_why(c, a, host, v6 ? DNS_T_AAAA : DNS_T_A, why, sizeof why));
		dns_answer_free(&a);
		return;
	}
	list = rr_list_new(a);
	if (ip != NULL && has_addr(a, ip))
		chk_say(c, CHK_OK, check, "%s %s: %s", t, host, list);
	else if (ip != NULL)
		chk_say(c, CHK_FAIL, check, "%s %s is %s, not the VPS address %s", t, host, list, ip);
	else if (v6)
		chk_say(c, CHK_WARN, check, "%s %s is %s, but no IPv6 VPS address is configured "
			"(vps_ip6 or --ip): is it ours?", t, host, list);
	else {
		inet_ntop(AF_INET, a->rr[0].addr, c->ip4_buf, sizeof c->ip4_buf);
		c->d->ip4 = c->ip4_buf;
		chk_say(c, CHK_OK, check, "%s %s: %s (no --ip or vps_ip: %s taken as the VPS address)",
			t, host, list, c->ip4_buf);
	}
	free(list);
	dns_answer_free(&a);
}

/* Forward confirmation: name's A/AAAA records hold ip again. */
static void check_fcrdns(struct chk *c, const char *ip, const char *name)
{
	bool v6 = strchr(ip, ':') != NULL;
	dns_answer_t *a = dns_resolve(&c->res, name, v6 ? DNS_T_AAAA : DNS_T_A);
	char why[512];

	if (has_addr(a, ip)) {
		chk_say(c, CHK_OK, "fcrdns", "%s -> %s -> %s (forward-confirmed)", ip, name, ip);
	} else if (a->status == DNS_OK) {
		char *list = rr_list_new(a);
		chk_say(c, CHK_FAIL, "fcrdns", "%s (the PTR of %s) has %s %s, not %s", name, ip,
			v6 ? "AAAA" : "A", list, ip);
		free(list);
	} else {
		chk_say(c, CHK_FAIL, "fcrdns", "%s (the PTR of %s): %s", name, ip,
			chk_why(c, a, name, v6 ? DNS_T_AAAA : DNS_T_A, why, sizeof why));
	}
	dns_answer_free(&a);
}

/* The VPS address's PTR must name the mail host, whose address leads back. */
static void check_ptr(struct chk *c, const char *ip)
{
	const char *host = c->d->hostname;
	char rev[DNS_NAME_TEXT_MAX], why[512];
	const char *match = NULL;

	if (dns_reverse_name(ip, rev, sizeof rev) < 0)
		return;
	dns_answer_t *a = dns_resolve(&c->res, rev, DNS_T_PTR);
	if (a->status != DNS_OK) {
		chk_say(c, CHK_FAIL, "ptr", "PTR %s: %s; ask the VPS provider to set the reverse DNS "
			"of %s to %s", rev, chk_why(c, a, rev, DNS_T_PTR, why, sizeof why), ip, host);
		dns_answer_free(&a);
		return;
	}
	for (size_t i = 0; i < a->n && match == NULL; i++)
		if (dns_name_eq(a->rr[i].name, host))
			match = a->rr[i].name;
	char *list = rr_list_new(a);
	if (match != NULL)
		chk_say(c, CHK_OK, "ptr", "PTR %s: %s", rev, list);
	else
		chk_say(c, CHK_FAIL, "ptr", "PTR of %s is %s, not %s; ask the VPS provider to change "
			"the reverse DNS", ip, list, host);
	free(list);
	check_fcrdns(c, ip, match ? match : a->rr[0].name);
	dns_answer_free(&a);
}

/* ---- SPF ---------------------------------------------------------------- */

enum spf_res { SPF_PASS, SPF_FAIL, SPF_SOFTFAIL, SPF_NEUTRAL, SPF_NONE, SPF_PERMERROR,
	       SPF_TEMPERROR, SPF_UNKNOWN };

static const char *const spf_words[] = { "pass", "fail", "softfail", "neutral", "none",
					 "permerror", "temperror", "cannot verify" };

/* One evaluation: the address asked about and what decided. */
struct spf {
	struct chk *c;
	bool v6;
	unsigned char addr[16];
	int lookups;          /* terms that cost a DNS query so far */
	char why[512];        /* why an error or unknown result */
	char decided[300];    /* "ip4:203.0.113.7 in example.org" */
};

__attribute__((format(printf, 2, 3)))
static enum spf_res spf_err(struct spf *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->why, sizeof s->why, fmt, ap);
	va_end(ap);
	return SPF_PERMERROR;
}

/* A TXT record is an SPF record if it starts "v=spf1" then space or end (4.5). */
static bool spf_is_record(const char *txt)
{
	return strncasecmp(txt, "v=spf1", 6) == 0 && (txt[6] == ' ' || txt[6] == '\0');
}

/*
 * The one SPF record of domain: SPF_PASS here means "found", with the
 * record newly allocated in *rec. NONE when there is none, PERMERROR for
 * two or more, TEMPERROR when the lookup failed.
 */
static enum spf_res spf_fetch(struct spf *s, const char *domain, char **rec)
{
	dns_answer_t *a = dns_resolve(&s->c->res, domain, DNS_T_TXT);
	size_t n = 0;
	enum spf_res r = SPF_PASS;

	*rec = NULL;
	if (a->status == DNS_OK) {
		for (size_t i = 0; i < a->n; i++)
			if (spf_is_record(a->rr[i].txt) && n++ == 0)
				*rec = xstrdup(a->rr[i].txt);
	}
	if (a->status != DNS_OK && a->status != DNS_NODATA && a->status != DNS_NXDOMAIN) {
		chk_why(s->c, a, domain, DNS_T_TXT, s->why, sizeof s->why);
		r = SPF_TEMPERROR;
	} else if (n == 0) {
		snprintf(s->why, sizeof s->why, "no SPF record (TXT \"v=spf1 ...\") at %s", domain);
		r = SPF_NONE;
	} else if (n > 1) {
		snprintf(s->why, sizeof s->why, "%zu SPF records at %s: receivers treat that as an "
			 "error (RFC 7208 4.5, permerror); keep one", n, domain);
		r = SPF_PERMERROR;
	}
	if (r != SPF_PASS) {
		free(*rec);
		*rec = NULL;
	}
	dns_answer_free(&a);
	return r;
}

/* The first bits of a and b agree. */
static bool cidr_match(const unsigned char *a, const unsigned char *b, int bits)
{
	int bytes = bits / 8, rest = bits % 8;

	if (memcmp(a, b, (size_t)bytes) != 0)
		return false;
	return rest == 0 || ((a[bytes] ^ b[bytes]) & (0xFF << (8 - rest)) & 0xFF) == 0;
}

/* "/24" into *bits (0..max); -1 if malformed. */
static int spf_prefix(const char *s, int max, int *bits)
{
	char *end;
	long v;

	if (s[0] < '0' || s[0] > '9')
		return -1;
	v = strtol(s, &end, 10);
	if (*end != '\0' || v > max || (s[0] == '0' && s[1] != '\0'))
		return -1;
	*bits = (int)v;
	return 0;
}

/* ip4:ADDR[/n] and ip6:ADDR[/n]: 1 match, 0 not, -1 malformed. */
static int spf_ip(struct spf *s, const char *arg, bool v6)
{
	char addr[INET6_ADDRSTRLEN + 1];
	unsigned char net[16];
	const char *slash = strchr(arg, '/');
	size_t n = slash ? (size_t)(slash - arg) : strlen(arg);
	int bits = v6 ? 128 : 32;

	if (n >= sizeof addr)
		return -1;
	memcpy(addr, arg, n);
	addr[n] = '\0';
	if (inet_pton(v6 ? AF_INET6 : AF_INET, addr, net) != 1 ||
	    (slash && spf_prefix(slash + 1, v6 ? 128 : 32, &bits) < 0))
		return -1;
	return v6 == s->v6 && cidr_match(net, s->addr, bits);
}

/*
 * Splits "[:domain][/n4][//n6]" of an a or mx term: the domain (into dom,
 * the current one if absent) and the prefix for our address family.
 */
static int spf_dual_cidr(struct spf *s, const char *arg, const char *cur, char *dom, size_t size,
			 int *bits)
{
	const char *slash = strchr(arg, '/'), *dslash = strstr(arg, "//");
	size_t n = slash ? (size_t)(slash - arg) : strlen(arg);
	char num[8];

	*bits = s->v6 ? 128 : 32;
	if (arg[0] == ':') {
		arg++;
		n--;
	} else if (n > 0) {
		return -1;
	}
	if ((n == 0 ? strlen(cur) : n) >= size)
		return -1;
	snprintf(dom, size, "%.*s", (int)(n == 0 ? strlen(cur) : n), n == 0 ? cur : arg);
	/* /n4 applies to IPv4, //n6 to IPv6; the other one is skipped. */
	const char *p = s->v6 ? (dslash ? dslash + 2 : NULL) : (slash && slash != dslash ? slash + 1 : NULL);
	if (p != NULL) {
		size_t l = strcspn(p, "/");
		if (l >= sizeof num)
			return -1;
		memcpy(num, p, l);
		num[l] = '\0';
		if (spf_prefix(num, s->v6 ? 128 : 32, bits) < 0)
			return -1;
	}
	return 0;
}

/* Whether a name's A/AAAA records hold our address within bits: 1, 0, -1 temperror. */
static int spf_addr_of(struct spf *s, const char *name, int bits)
{
	dns_answer_t *a = dns_resolve(&s->c->res, name, s->v6 ? DNS_T_AAAA : DNS_T_A);
	int m = 0;

	if (a->status == DNS_OK) {
		for (size_t i = 0; i < a->n && !m; i++)
			m = cidr_match(a->rr[i].addr, s->addr, bits);
	} else if (a->status != DNS_NODATA && a->status != DNS_NXDOMAIN) {
		chk_why(s->c, a, name, s->v6 ? DNS_T_AAAA : DNS_T_A, s->why, sizeof s->why);
		m = -1;
	}
	dns_answer_free(&a);
	return m;
}

/* mx[:domain][/n]: any of the first 10 MX hosts has our address. */
static int spf_mx(struct spf *s, const char *dom, int bits)
{
	dns_answer_t *a = dns_resolve(&s->c->res, dom, DNS_T_MX);
	int m = 0;

	if (a->status != DNS_OK && a->status != DNS_NODATA && a->status != DNS_NXDOMAIN) {
		chk_why(s->c, a, dom, DNS_T_MX, s->why, sizeof s->why);
		m = -1;
	}
	for (size_t i = 0; a->status == DNS_OK && i < a->n && i < SPF_MX_MAX && m == 0; i++)
		m = spf_addr_of(s, a->rr[i].name, bits);
	dns_answer_free(&a);
	return m;
}

static enum spf_res spf_eval(struct spf *s, const char *domain, int depth);

/*
 * One mechanism (qualifier already taken off): 1 it matches, 0 it does
 * not, -1 with *err set when evaluation must stop there.
 */
static int spf_mechanism(struct spf *s, const char *domain, const char *term, int depth,
			 enum spf_res *err)
{
	size_t nl = strcspn(term, ":/");
	const char *arg = term + nl;
	char dom[DNS_NAME_TEXT_MAX];
	int bits, m;

	*err = SPF_PERMERROR;
	if (strncasecmp(term, "all", nl) == 0 && nl == 3)
		return *arg == '\0' ? 1 : (spf_err(s, "bad term '%s'", term), -1);
	if ((nl == 3 && strncasecmp(term, "ip4", 3) == 0) || (nl == 3 && strncasecmp(term, "ip6", 3) == 0)) {
		m = *arg == ':' ? spf_ip(s, arg + 1, term[2] == '6') : -1;
		return m < 0 ? (spf_err(s, "bad term '%s'", term), -1) : m;
	}
	if (strchr(term, '%') != NULL) {
		*err = SPF_UNKNOWN;
		return spf_err(s, "'%s' uses macros (RFC 7208 7), which check-dns does not expand", term), -1;
	}
	if (++s->lookups > SPF_LOOKUPS_MAX)
		return spf_err(s, "more than %d DNS-querying terms (RFC 7208 4.6.4)", SPF_LOOKUPS_MAX), -1;
	if ((nl == 1 && strncasecmp(term, "a", 1) == 0) || (nl == 2 && strncasecmp(term, "mx", 2) == 0)) {
		if (spf_dual_cidr(s, arg, domain, dom, sizeof dom, &bits) < 0)
			return spf_err(s, "bad term '%s'", term), -1;
		m = nl == 1 ? spf_addr_of(s, dom, bits) : spf_mx(s, dom, bits);
		*err = SPF_TEMPERROR;
		return m;
	}
	if (nl == 7 && strncasecmp(term, "include", 7) == 0 && *arg == ':' && arg[1] != '\0') {
		enum spf_res r = spf_eval(s, arg + 1, depth + 1);
		if (r == SPF_PASS)
			return 1;
		if (r == SPF_FAIL || r == SPF_SOFTFAIL || r == SPF_NEUTRAL)
			return 0;
		*err = r == SPF_NONE ? SPF_PERMERROR : r;  /* 5.2: include of nothing is an error */
		return -1;
	}
	if ((nl == 6 && strncasecmp(term, "exists", 6) == 0) || (nl == 3 && strncasecmp(term, "ptr", 3) == 0)) {
		*err = SPF_UNKNOWN;
		return spf_err(s, "'%s' in %s is not evaluated by check-dns", term, domain), -1;
	}
	return spf_err(s, "unknown mechanism '%s' in %s", term, domain), -1;
}

/* The result a matching mechanism gives with its qualifier. */
static enum spf_res spf_qualified(char q)
{
	return q == '-' ? SPF_FAIL : q == '~' ? SPF_SOFTFAIL : q == '?' ? SPF_NEUTRAL : SPF_PASS;
}

/*
 * Walks domain's record left to right (RFC 7208 4.6): the first matching
 * mechanism decides; without one, redirect= (6.1), else neutral.
 */
static enum spf_res spf_eval(struct spf *s, const char *domain, int depth)
{
	char *rec = NULL, *save = NULL, *redirect = NULL;
	enum spf_res r = depth > SPF_DEPTH_MAX ? spf_err(s, "includes nested too deep")
					       : spf_fetch(s, domain, &rec);

	if (r != SPF_PASS)
		return r;
	r = SPF_NEUTRAL;
	for (char *t = strtok_r(rec + 6, " ", &save); t != NULL; t = strtok_r(NULL, " ", &save)) {
		char q = strchr("+-~?", *t) ? *t++ : '+';
		size_t nl = strcspn(t, "=:/");
		enum spf_res err;
		if (t[nl] == '=') {  /* a modifier: only redirect= matters here */
			if (nl == 8 && strncasecmp(t, "redirect", 8) == 0)
				redirect = t + 9;
			continue;
		}
		int m = spf_mechanism(s, domain, t, depth, &err);
		if (m < 0) {
			r = err;
			goto out;
		}
		if (m == 1) {
			snprintf(s->decided, sizeof s->decided, "%c%s in %s's record", q, t, domain);
			r = spf_qualified(q);
			goto out;
		}
	}
	if (redirect != NULL) {
		if (++s->lookups > SPF_LOOKUPS_MAX) {
			r = spf_err(s, "more than %d DNS-querying terms (RFC 7208 4.6.4)", SPF_LOOKUPS_MAX);
		} else {
			char *target = xstrdup(redirect);
			r = spf_eval(s, target, depth + 1);
			free(target);
			if (r == SPF_NONE)
				r = SPF_PERMERROR;  /* 6.1: redirect to no record */
		}
	}
out:
	free(rec);
	return r;
}

/* SPF: exactly one record, and it gives pass for each VPS address. */
static void check_spf(struct chk *c)
{
	const char *dom = c->d->domain, *ips[2] = { c->d->ip4, c->d->ip6 };
	struct spf s = { .c = c };
	char *rec;
	enum spf_res r = spf_fetch(&s, dom, &rec);

	if (r != SPF_PASS) {
		chk_say(c, CHK_FAIL, "spf", "SPF TXT %s: %s", dom, s.why);
		return;
	}
	if (ips[0] == NULL && ips[1] == NULL)
		chk_say(c, CHK_WARN, "spf", "SPF TXT %s: \"%s\" (no VPS address known to check it "
			"against: --ip)", dom, rec);
	for (int i = 0; i < 2; i++) {
		if (ips[i] == NULL)
			continue;
		memset(&s, 0, sizeof s);
		s.c = c;
		s.v6 = i == 1;
		inet_pton(s.v6 ? AF_INET6 : AF_INET, ips[i], s.addr);
		r = spf_eval(&s, dom, 0);
		if (r == SPF_PASS)
			chk_say(c, CHK_OK, "spf", "SPF TXT %s authorizes %s (%s)", dom, ips[i], s.decided);
		else if (r == SPF_UNKNOWN)
			chk_say(c, CHK_WARN, "spf", "SPF TXT %s: cannot verify that it authorizes %s: %s",
				dom, ips[i], s.why);
		else if (r == SPF_FAIL || r == SPF_SOFTFAIL || r == SPF_NEUTRAL)
			chk_say(c, CHK_FAIL, "spf", "SPF TXT %s does not authorize the VPS address %s "
				"(result %s%s%s): \"%s\"", dom, ips[i], spf_words[r],
				s.decided[0] ? ", by " : ", no term matched", s.decided, rec);
		else
			chk_say(c, CHK_FAIL, "spf", "SPF TXT %s: %s for %s: %s", dom, spf_words[r],
				ips[i], s.why);
	}
	free(rec);
}

/* ---- DMARC and DKIM: tag=value lists ------------------------------------ */

static bool is_wsp(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

/*
 * The value of tag in a tag-list (RFC 6376 3.2, which DMARC reuses:
 * "tag=value; tag=value", whitespace around each), copied into out with
 * its surrounding whitespace trimmed. *first is set if it is the first tag.
 * -1 if absent (or longer than out).
 */
static int tag_get(const char *list, const char *tag, char *out, size_t size, bool *first)
{
	size_t tl = strlen(tag);
	bool is_first = true;

	for (const char *p = list; *p != '\0'; is_first = false) {
		size_t len = strcspn(p, ";");
		const char *b = p, *e = p + len;
		while (b < e && is_wsp(*b))
			b++;
		if ((size_t)(e - b) > tl && strncmp(b, tag, tl) == 0) {
			const char *v = b + tl;
			while (v < e && is_wsp(*v))
				v++;
			if (v < e && *v == '=') {
				for (v++; v < e && is_wsp(*v); v++)
					;
				while (e > v && is_wsp(e[-1]))
					e--;
				if ((size_t)(e - v) >= size)
					return -1;
				memcpy(out, v, (size_t)(e - v));
				out[e - v] = '\0';
				if (first)
					*first = is_first;
				return 0;
			}
		}
		p += len + (p[len] == ';');
	}
	return -1;
}

/* The record starts with v=DMARC1 (RFC 7489 6.4: first tag, exact value). */
static bool dmarc_is_record(const char *txt)
{
	char v[16];
	bool first;

	return tag_get(txt, "v", v, sizeof v, &first) == 0 && first && strcmp(v, "DMARC1") == 0;
}

static void check_dmarc(struct chk *c)
{
	char *name = xasprintf("_dmarc.%s", c->d->domain), why[512], p[32];
	dns_answer_t *a = dns_resolve(&c->res, name, DNS_T_TXT);
	const char *rec = NULL;
	size_t n = 0;

	for (size_t i = 0; a->status == DNS_OK && i < a->n; i++)
		if (dmarc_is_record(a->rr[i].txt) && n++ == 0)
			rec = a->rr[i].txt;
	if (a->status != DNS_OK && a->status != DNS_NODATA && a->status != DNS_NXDOMAIN)
		chk_say(c, CHK_FAIL, "dmarc", "DMARC TXT %s: %s", name,
			chk_why(c, a, name, DNS_T_TXT, why, sizeof why));
	else if (n == 0)
		chk_say(c, CHK_FAIL, "dmarc", "DMARC TXT %s: no DMARC record (\"v=DMARC1; p=...\")%s%s",
			name, a->status == DNS_OK ? "" : ": ",
			a->status == DNS_OK ? "" : chk_why(c, a, name, DNS_T_TXT, why, sizeof why));
	else if (n > 1)
		chk_say(c, CHK_FAIL, "dmarc", "DMARC TXT %s: %zu DMARC records; receivers then apply "
			"none (RFC 7489 6.6.3): keep one", name, n);
	else if (tag_get(rec, "p", p, sizeof p, NULL) < 0)
		chk_say(c, CHK_FAIL, "dmarc", "DMARC TXT %s has no p= tag: \"%s\"", name, rec);
	else if (strcmp(p, "none") != 0 && strcmp(p, "quarantine") != 0 && strcmp(p, "reject") != 0)
		chk_say(c, CHK_FAIL, "dmarc", "DMARC TXT %s: p=%s is not none, quarantine or reject",
			name, p);
	else
		chk_say(c, CHK_OK, "dmarc", "DMARC TXT %s: \"%s\"%s", name, rec,
			strcmp(p, "none") == 0 ? " (p=none: reports only, no protection)" : "");
	dns_answer_free(&a);
	free(name);
}

/* p= of a key record with the whitespace that may fold it removed. */
static void strip_wsp(char *s)
{
	char *o = s;

	for (; *s != '\0'; s++)
		if (!is_wsp(*s))
			*o++ = *s;
	*o = '\0';
}

/* Compares one DKIM key record (RFC 6376 3.6.1) with the local key. */
static void dkim_compare(struct chk *c, const char *name, const char *rec)
{
	struct dnsconf *d = c->d;
	char v[16], k[16] = "rsa", p[DNS_TXT_MAX + 1];
	bool first;

	if (tag_get(rec, "v", v, sizeof v, &first) == 0 && (!first || strcmp(v, "DKIM1") != 0))
		chk_say(c, CHK_FAIL, "dkim", "DKIM TXT %s: v= must be first and DKIM1 (RFC 6376 3.6.1)",
			name);
	else if (tag_get(rec, "p", p, sizeof p, NULL) < 0)
		chk_say(c, CHK_FAIL, "dkim", "DKIM TXT %s has no p= tag", name);
	else if ((strip_wsp(p), p[0] == '\0'))
		chk_say(c, CHK_FAIL, "dkim", "DKIM TXT %s: the key is revoked (empty p=)", name);
	else if (tag_get(rec, "k", k, sizeof k, NULL), strcmp(k, d->dkim_k) != 0)
		chk_say(c, CHK_FAIL, "dkim", "DKIM TXT %s: k=%s, but the local key %s is %s", name, k,
			d->dkim_key, d->dkim_k);
	else if (strcmp(p, d->dkim_p) != 0)
		chk_say(c, CHK_FAIL, "dkim", "DKIM TXT %s holds another public key than %s "
			"(publish the one roostctl dns-records prints)", name, d->dkim_key);
	else
		chk_say(c, CHK_OK, "dkim", "DKIM TXT %s matches %s", name, d->dkim_key);
}

static void check_dkim(struct chk *c)
{
	struct dnsconf *d = c->d;
	char *name, why[512];

	if (d->dkim_key == NULL) {
		chk_say(c, CHK_SKIP, "dkim", "no local key at %s/%s/%s.pem (or .pub): nothing to "
			"compare %s._domainkey.%s with yet", d->dkim_dir, d->domain, d->selector,
			d->selector, d->domain);
		return;
	}
	name = xasprintf("%s._domainkey.%s", d->selector, d->domain);
	dns_answer_t *a = dns_resolve(&c->res, name, DNS_T_TXT);
	if (a->status != DNS_OK)
		chk_say(c, CHK_FAIL, "dkim", "DKIM TXT %s: %s", name,
			chk_why(c, a, name, DNS_T_TXT, why, sizeof why));
	else if (a->n > 1)
		chk_say(c, CHK_FAIL, "dkim", "DKIM TXT %s: %zu TXT records; verifiers' results are "
			"then undefined (RFC 6376 3.6.2.2): keep one", name, a->n);
	else
		dkim_compare(c, name, a->rr[0].txt);
	dns_answer_free(&a);
	free(name);
}

/* ---- the command -------------------------------------------------------- */

static const char check_help[] =
	"usage: roostctl check-dns DOMAIN [--ip VPS_IP] [--ip VPS_IPV6] [--selector S]\n"
	"  asks the resolver (resolver in roost.conf / ROOST_RESOLVER, else /etc/resolv.conf)\n"
	"  for DOMAIN's live records: MX, the mail host's A (AAAA), PTR and FCrDNS of the VPS\n"
	"  address, SPF, DMARC, DKIM; one line per check: OK, FAIL, WARN or SKIP.\n"
	"  Exit status 1 if a check failed. --timeout MS (before the command) is per query try.\n"
	"  --ip       the VPS's public address (default: vps_ip, vps_ip6; else the A record)\n"
	"  --selector the DKIM selector (default: dkim_selector, else \"roost\")\n";

static int check_usage(FILE *to)
{
	return dnsconf_usage(to, check_help);
}

int cmd_check_dns(struct ctl *ctl, int argc, char **argv)
{
	struct dnsconf d;
	struct chk c = { .ctl = ctl, .d = &d };
	char err[256];
	int rc;

	if (dnsconf_load(&d, ctl, argc, argv, check_usage, &rc) < 0) {
		dnsconf_clear(&d);
		return rc;
	}
	if (dns_resolver_init(&c.res, config_get(ctl->cfg, "resolver", NULL), NULL, err,
			      sizeof err) < 0) {
		dnsconf_clear(&d);
		return ctl_fail("check-dns: %s (resolver in roost.conf or ROOST_RESOLVER)", err);
	}
	c.res.timeout_ms = ctl->timeout_ms;
	if (ctl->json)
		c.checks = json_array();
	check_mx(&c);
	check_addr(&c, false);
	check_addr(&c, true);
	for (int i = 0; i < 2; i++)
		if ((i == 0 ? d.ip4 : d.ip6) != NULL)
			check_ptr(&c, i == 0 ? d.ip4 : d.ip6);
	if (d.ip4 == NULL && d.ip6 == NULL)
		chk_say(&c, CHK_FAIL, "ptr", "no VPS address (--ip, vps_ip, or an A record of %s) to "
			"check the PTR of", d.hostname);
	check_spf(&c);
	check_dmarc(&c);
	check_dkim(&c);
	if (c.checks != NULL) {
		json_t *out = json_pack("{s:s, s:s, s:s, s:b, s:o}", "domain", d.domain, "hostname",
					d.hostname, "resolver", c.res.text, "ok", c.failures == 0,
					"checks", c.checks);
		char *s = json_dumps(out, JSON_INDENT(2));
		puts(s ? s : "null");  /* out is NULL only if hostname was not UTF-8 */
		free(s);
		json_decref(out);
	}
	if (c.failures > 0)
		fprintf(stderr, "roostctl: check-dns: %d problem%s in the DNS of %s\n", c.failures,
			c.failures == 1 ? "" : "s", d.domain);
	dnsconf_clear(&d);
	return c.failures > 0 ? 1 : 0;
}
