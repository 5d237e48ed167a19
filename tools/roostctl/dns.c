/*
 * dns.c — roostctl dns-records, and the settings it shares with check-dns
 * (dnscheck.c): domain, mail host name, VPS addresses, the DKIM key.
 *
 *   dns-records DOMAIN --ip VPS_IP [--ip VPS_IP6] [--selector S]
 *
 * prints the zone-file lines the domain needs (docs/DNS.md says why each
 * record looks as it does): MX, A (AAAA only with an IPv6 address), SPF,
 * DMARC, DKIM (once a key exists), and a comment naming the PTR to ask the
 * VPS provider for. With --json, one object holding the same.
 *
 * DKIM keys live at <dkim_dir>/<domain>/<selector>.pem (the private key
 * dkimd signs with) or <selector>.pub (the public key alone); dkim_dir
 * defaults to <data_dir>/dkim, which roostctl backup already copies.
 *
 * Ownership: struct dnsconf borrows its strings from argv and the config,
 * except those dnsconf_clear frees (noted in roostctl.h).
 */
#include "roostctl.h"
#include "dns.h"
#include "strbuf.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DNS_TTL 3600
#define TXT_STRING_MAX 255   /* octets in one character-string (RFC 1035 3.3) */

/* Takes an --ip argument: an IPv4 or IPv6 address, at most one of each. */
static int dnsconf_ip(struct dnsconf *d, const char *ip, const char *cmd)
{
	unsigned char buf[16];

	if (inet_pton(AF_INET, ip, buf) == 1) {
		if (d->ip4_arg)
			return ctl_fail("%s: --ip %s: an IPv4 address was given already", cmd, ip);
		d->ip4 = ip;
		d->ip4_arg = true;
	} else if (inet_pton(AF_INET6, ip, buf) == 1) {
		if (d->ip6_arg)
			return ctl_fail("%s: --ip %s: an IPv6 address was given already", cmd, ip);
		d->ip6 = ip;
		d->ip6_arg = true;
	} else {
		return ctl_fail("%s: --ip %s is not an IPv4 or IPv6 address", cmd, ip);
	}
	return 0;
}

/* vps_ip / vps_ip6 from roost.conf or the environment, unless --ip gave them. */
static int dnsconf_ip_config(struct dnsconf *d, const config_t *cfg, const char *cmd)
{
	const char *v4 = config_get(cfg, "vps_ip", NULL), *v6 = config_get(cfg, "vps_ip6", NULL);
	unsigned char buf[16];

	if (!d->ip4_arg && v4 != NULL && v4[0] != '\0') {
		if (inet_pton(AF_INET, v4, buf) != 1)
			return ctl_fail("%s: vps_ip '%s' is not an IPv4 address", cmd, v4);
		d->ip4 = v4;
	}
	if (!d->ip6_arg && v6 != NULL && v6[0] != '\0') {
		if (inet_pton(AF_INET6, v6, buf) != 1)
			return ctl_fail("%s: vps_ip6 '%s' is not an IPv6 address", cmd, v6);
		d->ip6 = v6;
	}
	return 0;
}

/* A pem_password_cb: an encrypted key is not one dkimd could use either. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf, (void)size, (void)rwflag, (void)u;
	return -1;
}

/* Base64 of der[0..n) (newly allocated, NUL-terminated). */
static char *base64_new(const unsigned char *der, size_t n)
{
	char *out = xmalloc(4 * ((n + 2) / 3) + 1);

	EVP_EncodeBlock((unsigned char *)out, der, (int)n);
	return out;
}

/*
 * The p= and k= of a key (RFC 6376 3.6.1): for RSA the base64 of the
 * SubjectPublicKeyInfo DER, for Ed25519 (RFC 8463) the raw 32-octet key.
 */
static int dkim_public(struct dnsconf *d, EVP_PKEY *pk, const char *cmd)
{
	unsigned char *der = NULL, raw[32];
	size_t rawlen = sizeof raw;
	int n;

	switch (EVP_PKEY_get_base_id(pk)) {
	case EVP_PKEY_RSA:
		n = i2d_PUBKEY(pk, &der);
		if (n <= 0)
			return ctl_fail("%s: %s: cannot encode the public key", cmd, d->dkim_key);
		d->dkim_p = base64_new(der, (size_t)n);
		d->dkim_k = "rsa";
		OPENSSL_free(der);
		return 0;
	case EVP_PKEY_ED25519:
		if (EVP_PKEY_get_raw_public_key(pk, raw, &rawlen) != 1)
			return ctl_fail("%s: %s: cannot read the Ed25519 key", cmd, d->dkim_key);
		d->dkim_p = base64_new(raw, rawlen);
		d->dkim_k = "ed25519";
		return 0;
	default:
		return ctl_fail("%s: %s: neither an RSA nor an Ed25519 key", cmd, d->dkim_key);
	}
}

/*
 * Finds and reads the DKIM key of the domain and selector: .pub first (a
 * public key alone), else .pem (the private key; its public half). No file
 * is not an error (no key yet); an unreadable or foreign one is.
 */
static int dkim_load(struct dnsconf *d, const char *cmd)
{
	static const char *const ext[] = { "pub", "pem" };
	EVP_PKEY *pk = NULL;
	FILE *f = NULL;
	size_t i;
	int rc;

	for (i = 0; i < ARRAY_LEN(ext) && f == NULL; i++) {
		free(d->dkim_key);
		d->dkim_key = xasprintf("%s/%s/%s.%s", d->dkim_dir, d->domain, d->selector, ext[i]);
		f = fopen(d->dkim_key, "r");
		if (f == NULL && errno != ENOENT)
			return ctl_fail("%s: %s: %s", cmd, d->dkim_key, strerror(errno));
	}
	if (f == NULL) {
		free(d->dkim_key);
		d->dkim_key = NULL;
		return 0;
	}
	bool pub = i == 1;  /* the loop stepped one past the extension it found */
	pk = pub ? PEM_read_PUBKEY(f, NULL, no_passphrase, NULL)
		 : PEM_read_PrivateKey(f, NULL, no_passphrase, NULL);
	fclose(f);
	if (pk == NULL)
		return ctl_fail("%s: %s: not a PEM %s key (or an encrypted one)", cmd, d->dkim_key,
				pub ? "public" : "private");
	rc = dkim_public(d, pk, cmd);
	EVP_PKEY_free(pk);
	return rc;
}

/*
 * A DKIM selector (RFC 6376 3.1: sub-domains joined by dots): LDH labels.
 * It also names a file, so nothing but letters, digits, '-' and inner dots.
 */
static bool selector_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 63 || s[0] == '.' || s[n - 1] == '.' || strstr(s, "..") != NULL)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '.'))
			return false;
	return true;
}

/*
 * name without its trailing dot, in buf (256 bytes) if it had one: we add
 * the dot ourselves where a zone file wants it. name is a valid host name
 * (so shorter than 256).
 */
static const char *undot(const char *name, char *buf)
{
	size_t n = strlen(name);

	if (n == 0 || name[n - 1] != '.')
		return name;
	memmove(buf, name, n - 1);  /* memmove: name may be buf itself */
	buf[n - 1] = '\0';
	return buf;
}

/* The command line: DOMAIN, --ip (twice at most), --selector, --json, --help. */
static int dnsconf_args(struct dnsconf *d, struct ctl *ctl, int argc, char **argv,
			int (*usage)(FILE *to), int *rc)
{
	const char *cmd = argv[0];

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0) {
			*rc = usage(stdout);
			return -1;
		} else if (strcmp(argv[i], "--json") == 0) {
			ctl->json = true;
		} else if (strcmp(argv[i], "--ip") == 0 && i + 1 < argc) {
			if ((*rc = dnsconf_ip(d, argv[++i], cmd)) != 0)
				return -1;
		} else if (strcmp(argv[i], "--selector") == 0 && i + 1 < argc) {
			d->selector = argv[++i];
		} else if (argv[i][0] != '-' && d->domain == NULL) {
			d->domain = argv[i];
		} else {
			*rc = ctl_fail("%s: unexpected argument '%s' (try --help)", cmd, argv[i]);
			return -1;
		}
	}
	if (d->domain == NULL) {
		*rc = usage(stderr);
		return -1;
	}
	return 0;
}

int dnsconf_load(struct dnsconf *d, struct ctl *ctl, int argc, char **argv,
		 int (*usage)(FILE *to), int *rc)
{
	const char *cmd = argv[0], *dir;

	memset(d, 0, sizeof *d);
	if (dnsconf_args(d, ctl, argc, argv, usage, rc) < 0)
		return -1;
	*rc = 1;
	if (!dns_hostname_valid(d->domain)) {
		ctl_fail("%s: '%s' is not a domain name", cmd, d->domain);
		return -1;
	}
	d->domain = undot(d->domain, d->domain_buf);
	if (dnsconf_ip_config(d, ctl->cfg, cmd) != 0)
		return -1;
	d->hostname = config_get(ctl->cfg, "hostname", NULL);
	if (d->hostname == NULL) {
		if (gethostname(d->host_buf, sizeof d->host_buf - 1) < 0)
			strcpy(d->host_buf, "localhost");
		d->hostname = d->host_buf;
	}
	/* MX and PTR must name a fully qualified host: "pi" would not resolve. */
	if (!dns_hostname_valid(d->hostname)) {
		ctl_fail("%s: the mail host name '%s' is not a fully qualified domain name "
			 "(set hostname in roost.conf or ROOST_HOSTNAME)", cmd, d->hostname);
		return -1;
	}
	d->hostname = undot(d->hostname, d->host_buf);
	if (d->selector == NULL)
		d->selector = config_get(ctl->cfg, "dkim_selector", "roost");
	if (!selector_valid(d->selector)) {
		ctl_fail("%s: '%s' is not a DKIM selector (letters, digits, '-', inner dots)",
			 cmd, d->selector);
		return -1;
	}
	dir = config_get(ctl->cfg, "dkim_dir", NULL);
	d->dkim_dir = dir ? xstrdup(dir) : xasprintf("%s/dkim", config_data_dir(ctl->cfg));
	if (dkim_load(d, cmd) != 0)
		return -1;
	*rc = 0;
	return 0;
}

int dnsconf_usage(FILE *to, const char *text)
{
	fputs(text, to);
	return to == stdout ? 0 : 2;
}

void dnsconf_clear(struct dnsconf *d)
{
	free(d->dkim_dir);
	free(d->dkim_key);
	free(d->dkim_p);
	d->dkim_dir = d->dkim_key = d->dkim_p = NULL;
}

/* ---- dns-records -------------------------------------------------------- */

/* One record to publish. */
struct rec {
	char *name;        /* owner, absolute ("example.org."); owned */
	const char *type;
	char *value;       /* RDATA as text; for TXT the whole unsplit text; owned */
	bool txt;
};

struct recs {
	struct rec v[8];
	size_t n;
	char *notes[8];    /* comment lines (without "; "); owned */
	size_t nnotes;
};

static void recs_add(struct recs *r, char *name, const char *type, char *value, bool txt)
{
	r->v[r->n++] = (struct rec){ name, type, value, txt };
}

/*
 * A TXT value as zone-file character-strings of at most 255 octets each,
 * quoted, '"' and '\\' escaped (RFC 1035 5.1), as many DNS providers want
 * long DKIM keys: "v=DKIM1; k=rsa; p=MIIB..." "...". Into sb.
 */
static void txt_quoted(strbuf_t *sb, const char *v)
{
	size_t n = strlen(v), off = 0;

	do {
		size_t l = n - off < TXT_STRING_MAX ? n - off : TXT_STRING_MAX;
		if (off > 0)
			sb_addc(sb, ' ');
		sb_addc(sb, '"');
		for (size_t i = off; i < off + l; i++) {
			if (v[i] == '"' || v[i] == '\\')
				sb_addc(sb, '\\');
			sb_addc(sb, v[i]);
		}
		sb_addc(sb, '"');
		off += l;
	} while (off < n);
}

/* The zone-file line of a record (newly allocated). */
static char *rec_line_new(const struct rec *r)
{
	strbuf_t sb = STRBUF_INIT;

	sb_addf(&sb, "%s\t%d\tIN\t%s\t", r->name, DNS_TTL, r->type);
	if (r->txt)
		txt_quoted(&sb, r->value);
	else
		sb_adds(&sb, r->value);
	return sb_steal(&sb, NULL);
}

/* True if host is domain or below it. */
static bool name_within(const char *host, const char *domain)
{
	size_t h = strlen(host), d = strlen(domain);

	if (dns_name_eq(host, domain))
		return true;
	return h > d + 1 && host[h - d - 1] == '.' && dns_name_eq(host + h - d, domain);
}

/* Every record of docs/DNS.md for d, and the notes to print with them. */
/*
 * dmarc_rua must be a plain address: it is pasted into a tag list where
 * ';', ',', '!' and spaces have meanings (RFC 7489 6.4), and into JSON.
 */
static bool rua_valid(const char *s)
{
	const char *at = strchr(s, '@');

	if (at == NULL || at == s || at[1] == '\0')
		return false;
	for (; *s != '\0'; s++)
		if (*s <= ' ' || *s >= 0x7f || strchr(";,!\"\\", *s) != NULL)
			return false;
	return true;
}

static void records_build(const struct dnsconf *d, struct recs *r, const char *rua)
{
	char rev[DNS_NAME_TEXT_MAX];

	recs_add(r, xasprintf("%s.", d->domain), "MX", xasprintf("10 %s.", d->hostname), false);
	if (d->ip4)
		recs_add(r, xasprintf("%s.", d->hostname), "A", xstrdup(d->ip4), false);
	if (d->ip6)
		recs_add(r, xasprintf("%s.", d->hostname), "AAAA", xstrdup(d->ip6), false);
	if (!name_within(d->hostname, d->domain))
		r->notes[r->nnotes++] = xasprintf("%s is outside %s: its address records go in "
						  "that name's own zone", d->hostname, d->domain);
	/* Only the VPS sends our mail (egress through the tunnel): nothing else passes. */
	recs_add(r, xasprintf("%s.", d->domain), "TXT",
		 xasprintf("v=spf1%s%s%s%s -all", d->ip4 ? " ip4:" : "", d->ip4 ? d->ip4 : "",
			   d->ip6 ? " ip6:" : "", d->ip6 ? d->ip6 : ""), true);
	recs_add(r, xasprintf("_dmarc.%s.", d->domain), "TXT",
		 rua && rua[0] ? xasprintf("v=DMARC1; p=quarantine; rua=mailto:%s", rua)
			       : xstrdup("v=DMARC1; p=quarantine"), true);
	if (d->dkim_p != NULL)
		recs_add(r, xasprintf("%s._domainkey.%s.", d->selector, d->domain), "TXT",
			 xasprintf("v=DKIM1; k=%s; p=%s", d->dkim_k, d->dkim_p), true);
	else
		r->notes[r->nnotes++] = xasprintf(
			"DKIM: no key yet at %s/%s/%s.pem; the TXT record at %s._domainkey.%s comes "
			"once a key exists (run dns-records again then)",
			d->dkim_dir, d->domain, d->selector, d->selector, d->domain);
	for (int v6 = 0; v6 < 2; v6++) {
		const char *ip = v6 ? d->ip6 : d->ip4;
		if (ip != NULL && dns_reverse_name(ip, rev, sizeof rev) == 0)
			r->notes[r->nnotes++] = xasprintf(
				"PTR: ask the VPS provider to set the reverse DNS of %s to %s "
				"(%s. PTR %s.)", ip, d->hostname, rev, d->hostname);
	}
}

static void recs_free(struct recs *r)
{
	for (size_t i = 0; i < r->n; i++) {
		free(r->v[i].name);
		free(r->v[i].value);
	}
	for (size_t i = 0; i < r->nnotes; i++)
		free(r->notes[i]);
}

/* --json: { domain, hostname, records: [{name, ttl, type, value, strings?, zone}], notes } */
static void records_json(const struct dnsconf *d, const struct recs *r)
{
	json_t *recs = json_array(), *notes = json_array();

	for (size_t i = 0; i < r->n; i++) {
		char *line = rec_line_new(&r->v[i]);
		json_t *o = json_pack("{s:s, s:i, s:s, s:s, s:s}", "name", r->v[i].name, "ttl", DNS_TTL,
				      "type", r->v[i].type, "value", r->v[i].value, "zone", line);
		free(line);
		if (r->v[i].txt) {
			json_t *strings = json_array();
			size_t n = strlen(r->v[i].value);
			for (size_t off = 0; off < n; off += TXT_STRING_MAX)
				json_array_append_new(strings, json_stringn(r->v[i].value + off,
					n - off < TXT_STRING_MAX ? n - off : TXT_STRING_MAX));
			json_object_set_new(o, "strings", strings);
		}
		json_array_append_new(recs, o);
	}
	for (size_t i = 0; i < r->nnotes; i++)
		json_array_append_new(notes, json_string(r->notes[i]));
	/* dkim_key is a path: not necessarily UTF-8, then not in the JSON. */
	json_t *out = json_pack("{s:s, s:s, s:o, s:o}", "domain", d->domain, "hostname",
				d->hostname, "records", recs, "notes", notes);
	json_object_set_new(out, "dkim_key", d->dkim_key ? json_string(d->dkim_key) : json_null());
	char *s = json_dumps(out, JSON_INDENT(2));
	puts(s);
	free(s);
	json_decref(out);
}

static const char records_help[] =
	"usage: roostctl dns-records DOMAIN --ip VPS_IP [--ip VPS_IPV6] [--selector S]\n"
	"  prints the zone-file lines DOMAIN needs: MX, A (AAAA with an IPv6 address), SPF,\n"
	"  DMARC, DKIM (once a key exists) and the PTR to ask the VPS provider for.\n"
	"  --ip       the VPS's public address (default: vps_ip, vps_ip6 in roost.conf)\n"
	"  --selector the DKIM selector (default: dkim_selector, else \"roost\")\n"
	"  the mail host name is hostname in roost.conf (ROOST_HOSTNAME); see docs/DNS.md\n";

static int records_usage(FILE *to)
{
	return dnsconf_usage(to, records_help);
}

int cmd_dns_records(struct ctl *ctl, int argc, char **argv)
{
	struct dnsconf d;
	struct recs r = { .n = 0 };
	int rc;

	if (dnsconf_load(&d, ctl, argc, argv, records_usage, &rc) < 0) {
		dnsconf_clear(&d);
		return rc;
	}
	if (d.ip4 == NULL && d.ip6 == NULL) {
		dnsconf_clear(&d);
		return ctl_fail("dns-records: the VPS address is needed: --ip VPS_IP (or vps_ip in roost.conf)");
	}
	const char *rua = config_get(ctl->cfg, "dmarc_rua", NULL);
	if (rua != NULL && rua[0] != '\0' && !rua_valid(rua)) {
		dnsconf_clear(&d);
		return ctl_fail("dns-records: dmarc_rua '%s' is not a plain mail address", rua);
	}
	records_build(&d, &r, rua);
	if (ctl->json) {
		records_json(&d, &r);
	} else {
		printf("; DNS records for %s (mail host %s); docs/DNS.md explains them\n",
		       d.domain, d.hostname);
		for (size_t i = 0; i < r.n; i++) {
			char *line = rec_line_new(&r.v[i]);
			puts(line);
			free(line);
		}
		for (size_t i = 0; i < r.nnotes; i++)
			printf("; %s\n", r.notes[i]);
	}
	recs_free(&r);
	dnsconf_clear(&d);
	return 0;
}
