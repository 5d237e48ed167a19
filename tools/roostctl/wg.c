/*
 * wg.c — roostctl wg keygen|show and roostctl vps-config: the WireGuard
 * tunnel between this server and its VPS (issue 7, DESIGN.md "The
 * deployment it serves").
 *
 * The keys live in wg_dir (default <data_dir>/wg, mode 0700): server.key
 * and vps.key, each a WireGuard private key (32 bytes of X25519, clamped as
 * `wg genkey` does, standard base64), mode 0600. Both are made here because
 * vps-config prints one script that the owner copies to the VPS and runs:
 * the VPS needs its private key and this server's public key, nothing else.
 *
 * Addresses come from wg_net (default 10.44.0.0/24): the VPS is .1, this
 * server .2; the owner's devices (wg add-peer) from .10 to .254. A device
 * is a file peers/NAME in wg_dir: its address, public key and whether it
 * may tail the bus through the relay (--bus-tail: the tap shows every
 * user's mail traffic, so only the owner's own devices). Its private
 * key is printed once, in the device's configuration, and never kept here:
 * this server has no use for it. The VPS learns the devices when its script
 * is printed and run again (it rewrites its configuration and rules).
 */
#include "roostctl.h"

#include "util.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define WG_KEY_LEN 32
#define WG_KEY_B64 44            /* base64 of 32 bytes, with its '=' */
#define WG_DEFAULT_PORT 51820
#define WG_IFACE "roost0"        /* the VPS's interface: not wg0, which may exist */
#define WG_PEER_NAME_MAX 32

/* What a device may reach on this server: submission (587, 465) and IMAP
 * (143, 993); a device added with --bus-tail also the bus relay
 * (bus_relay_port, relay.c). Not port 25 (that is for other servers) and
 * nothing else. */
#define WG_DEVICE_PORTS "465,587,143,993"

/* The mail ports the VPS forwards to this server: SMTP, submissions,
 * submission, IMAP, IMAPS. */
#define WG_FORWARD_PORTS "25,465,587,143,993"

/* A device added with wg add-peer. */
struct wg_peer {
	char name[WG_PEER_NAME_MAX + 1];
	int host;                      /* its address: base + host */
	char pub[WG_KEY_B64 + 1];
	bool tap;                      /* --bus-tail: may reach the bus relay */
};

static const char *wg_dir(const struct ctl *ctl, char *buf, size_t size)
{
	const char *d = config_get(ctl->cfg, "wg_dir", NULL);
	if (d != NULL && d[0] != '\0')
		snprintf(buf, size, "%s", d);
	else
		snprintf(buf, size, "%s/wg", config_data_dir(ctl->cfg));
	return buf;
}

/* wg_net must be an IPv4 /24 given by its network address. */
int wg_net_get(const struct ctl *ctl, struct wg_net *n)
{
	const char *v = config_get(ctl->cfg, "wg_net", WG_DEFAULT_NET);
	char ip[INET_ADDRSTRLEN];
	const char *slash = strchr(v, '/');
	struct in_addr a;
	if (slash == NULL || strcmp(slash, "/24") != 0 || (size_t)(slash - v) >= sizeof ip)
		return ctl_fail("wg_net %s: must be an IPv4 network with /24 (e.g. %s)", v, WG_DEFAULT_NET);
	memcpy(ip, v, slash - v);
	ip[slash - v] = '\0';
	if (inet_pton(AF_INET, ip, &a) != 1 || (ntohl(a.s_addr) & 0xff) != 0)
		return ctl_fail("wg_net %s: must be an IPv4 network address with /24 (e.g. %s)", v,
				WG_DEFAULT_NET);
	uint32_t base = ntohl(a.s_addr);
	n->base = base;
	struct in_addr x;
	x.s_addr = htonl(base | 1);
	inet_ntop(AF_INET, &x, n->vps, sizeof n->vps);
	x.s_addr = htonl(base | 2);
	inet_ntop(AF_INET, &x, n->server, sizeof n->server);
	snprintf(n->cidr, sizeof n->cidr, "%s/24", ip);
	return 0;
}

/* The public key of a raw private key, both base64. */
static int wg_pubkey(const unsigned char priv[WG_KEY_LEN], char out[WG_KEY_B64 + 1])
{
	unsigned char pub[WG_KEY_LEN];
	size_t publen = sizeof pub;
	EVP_PKEY *k = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, priv, WG_KEY_LEN);
	int ok = k != NULL && EVP_PKEY_get_raw_public_key(k, pub, &publen) == 1 && publen == sizeof pub;
	EVP_PKEY_free(k);
	if (!ok)
		return -1;
	EVP_EncodeBlock((unsigned char *)out, pub, WG_KEY_LEN);
	return 0;
}

/* Reads dir/name: one base64 private key line. Errors are printed. */
static int wg_key_read(const char *dir, const char *name, unsigned char priv[WG_KEY_LEN],
		       char b64[WG_KEY_B64 + 1])
{
	char path[4096], buf[128];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return ctl_fail("%s: %s (make the keys with: roostctl wg keygen)", path, strerror(errno));
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	unsigned char raw[WG_KEY_B64];
	if (strlen(buf) != WG_KEY_B64 || buf[WG_KEY_B64 - 1] != '=' ||
	    EVP_DecodeBlock(raw, (const unsigned char *)buf, WG_KEY_B64) != 33)
		return ctl_fail("%s: not a WireGuard key (44 characters of base64)", path);
	memcpy(priv, raw, WG_KEY_LEN);
	memcpy(b64, buf, WG_KEY_B64 + 1);
	return 0;
}

/* A new private key, clamped for X25519 as `wg genkey` does. */
static int wg_key_new(unsigned char priv[WG_KEY_LEN])
{
	if (getrandom(priv, WG_KEY_LEN, 0) != WG_KEY_LEN)
		return -1;
	priv[0] &= 248;
	priv[31] = (priv[31] & 127) | 64;
	return 0;
}

/* Writes text to path, mode 0600, fsynced: created only if absent
 * (exclusive), else through path.new and a rename, so a reader never sees
 * half a file. Errors are printed. */
static int wg_write_file(const char *path, const char *text, bool exclusive)
{
	char tmp[4200];
	snprintf(tmp, sizeof tmp, "%s.new", path);
	const char *to = exclusive ? path : tmp;
	int fd = open(to, O_WRONLY | O_CREAT | O_CLOEXEC | (exclusive ? O_EXCL : O_TRUNC), 0600);
	if (fd < 0)
		return ctl_fail("%s: %s", to, strerror(errno));
	size_t len = strlen(text);
	if (write(fd, text, len) != (ssize_t)len || fsync(fd) != 0) {
		int e = errno;
		close(fd);
		unlink(to);
		return ctl_fail("%s: %s", to, strerror(e));
	}
	close(fd);
	if (!exclusive && rename(tmp, path) != 0) {
		int e = errno;
		unlink(tmp);
		return ctl_fail("%s: %s", path, strerror(e));
	}
	return 0;
}

/* Writes dir/name, a private key (0600; replaced only with force). */
static int wg_key_write(const char *dir, const char *name, const unsigned char priv[WG_KEY_LEN],
			bool force)
{
	char path[4096], b64[WG_KEY_B64 + 2];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	if (!force && access(path, F_OK) == 0)
		return ctl_fail("%s exists: keys are kept (--force makes new ones; the VPS then needs "
				"its script again)", path);
	EVP_EncodeBlock((unsigned char *)b64, priv, WG_KEY_LEN);
	strcat(b64, "\n");
	return wg_write_file(path, b64, false);
}

static int wg_keygen(struct ctl *ctl, int argc, char **argv)
{
	bool force = false;
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--force") == 0)
			force = true;
		else
			return ctl_fail("wg keygen: unknown argument %s (usage: wg keygen [--force])", argv[i]);
	}
	char dir[4096];
	wg_dir(ctl, dir, sizeof dir);
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return ctl_fail("%s: %s", dir, strerror(errno));
	if (chmod(dir, 0700) != 0)
		return ctl_fail("%s: %s", dir, strerror(errno));
	char path[4200];
	snprintf(path, sizeof path, "%s/server.key", dir);
	if (!force && access(path, F_OK) == 0)
		return ctl_fail("%s exists: keys are kept (--force makes new ones; the VPS then needs "
				"its script again)", path);
	unsigned char srv[WG_KEY_LEN], vps[WG_KEY_LEN];
	if (wg_key_new(srv) < 0 || wg_key_new(vps) < 0)
		return ctl_fail("wg keygen: no randomness (getrandom failed)");
	if (wg_key_write(dir, "vps.key", vps, true) != 0 || wg_key_write(dir, "server.key", srv, true) != 0)
		return 1;
	char sp[WG_KEY_B64 + 1], vp[WG_KEY_B64 + 1];
	if (wg_pubkey(srv, sp) < 0 || wg_pubkey(vps, vp) < 0)
		return ctl_fail("wg keygen: OpenSSL cannot derive X25519 public keys");
	if (ctl->json) {
		json_t *o = json_pack("{s:s, s:s, s:s}", "dir", dir, "server_public_key", sp,
				      "vps_public_key", vp);
		char *s = json_dumps(o, JSON_COMPACT);
		puts(s);
		free(s);
		json_decref(o);
	} else {
		printf("keys in %s\nserver public key %s\nVPS public key    %s\n"
		       "next: roostctl vps-config --vps-ip YOUR_VPS_IP > roost-vps.sh, and run it on the VPS\n",
		       dir, sp, vp);
	}
	return 0;
}

/* What wg show and vps-config read: wg_dir, wg_net, both private keys
 * (base64) and both public keys. */
struct wg_setup {
	char dir[4096];
	struct wg_net net;
	char srv_key[WG_KEY_B64 + 1], vps_key[WG_KEY_B64 + 1];
	char srv_pub[WG_KEY_B64 + 1], vps_pub[WG_KEY_B64 + 1];
};

/* 0, or 1 after printing why (what: the command, for the message). */
static int wg_setup_load(const struct ctl *ctl, struct wg_setup *w, const char *what)
{
	unsigned char srv[WG_KEY_LEN], vps[WG_KEY_LEN];
	wg_dir(ctl, w->dir, sizeof w->dir);
	if (wg_net_get(ctl, &w->net) != 0 || wg_key_read(w->dir, "server.key", srv, w->srv_key) != 0 ||
	    wg_key_read(w->dir, "vps.key", vps, w->vps_key) != 0)
		return 1;
	if (wg_pubkey(srv, w->srv_pub) < 0 || wg_pubkey(vps, w->vps_pub) < 0)
		return ctl_fail("%s: OpenSSL cannot derive X25519 public keys", what);
	return 0;
}

static int wg_show(struct ctl *ctl, int argc, char **argv)
{
	(void)argv;
	if (argc > 0)
		return ctl_fail("wg show: no arguments");
	struct wg_setup w;
	if (wg_setup_load(ctl, &w, "wg show") != 0)
		return 1;
	if (ctl->json) {
		json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "dir", w.dir, "server_public_key",
				      w.srv_pub, "vps_public_key", w.vps_pub, "net", w.net.cidr,
				      "server_address", w.net.server, "vps_address", w.net.vps);
		char *s = json_dumps(o, JSON_COMPACT);
		puts(s);
		free(s);
		json_decref(o);
	} else {
		printf("keys in %s\nserver %s  public key %s\nVPS    %s  public key %s\n", w.dir,
		       w.net.server, w.srv_pub, w.net.vps, w.vps_pub);
	}
	return 0;
}

/* A TCP/UDP port number in [1, 65535], or -1. */
static long port_arg(const char *s)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < 1 || v > 65535)
		return -1;
	return v;
}

static bool peer_name_ok(const char *n)
{
	size_t len = strlen(n);
	if (len == 0 || len > WG_PEER_NAME_MAX || n[0] == '-')
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= '0' && n[i] <= '9') || n[i] == '-'))
			return false;
	return true;
}

/* Reads wg_dir/peers/NAME ("host N\npublic KEY\n[tap 1\n]"); 0, or -1 if it is
 * not one of ours (skipped by the listing, named by the caller). */
static int peer_read(const char *dir, const char *name, struct wg_peer *p)
{
	char path[4200], line[160];
	snprintf(path, sizeof path, "%s/peers/%s", dir, name);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return -1;
	memset(p, 0, sizeof *p);
	snprintf(p->name, sizeof p->name, "%.*s", WG_PEER_NAME_MAX, name);
	while (fgets(line, sizeof line, f) != NULL) {
		line[strcspn(line, "\r\n")] = '\0';
		if (strncmp(line, "host ", 5) == 0)
			p->host = atoi(line + 5);
		else if (strncmp(line, "public ", 7) == 0 && strlen(line + 7) == WG_KEY_B64)
			memcpy(p->pub, line + 7, WG_KEY_B64 + 1);
		else if (strcmp(line, "tap 1") == 0)
			p->tap = true;
	}
	fclose(f);
	return p->host >= WG_PEER_FIRST && p->host <= WG_PEER_LAST && p->pub[0] ? 0 : -1;
}

static int peer_cmp(const void *a, const void *b)
{
	return ((const struct wg_peer *)a)->host - ((const struct wg_peer *)b)->host;
}

/* The devices, by address; at most WG_PEER_LAST - WG_PEER_FIRST + 1 (one per
 * address). *n is their number. */
static struct wg_peer *peers_load(const char *dir, size_t *n)
{
	char path[4200];
	snprintf(path, sizeof path, "%s/peers", dir);
	size_t cap = WG_PEER_LAST - WG_PEER_FIRST + 1;
	struct wg_peer *v = xcalloc(cap, sizeof *v);
	*n = 0;
	DIR *d = opendir(path);
	if (d == NULL)
		return v;
	struct dirent *e;
	while ((e = readdir(d)) != NULL && *n < cap) {
		if (!peer_name_ok(e->d_name))
			continue;
		if (peer_read(dir, e->d_name, &v[*n]) == 0)
			(*n)++;
	}
	closedir(d);
	qsort(v, *n, sizeof *v, peer_cmp);
	return v;
}

static void host_addr(const struct wg_net *net, int host, char out[INET_ADDRSTRLEN])
{
	struct in_addr x;
	x.s_addr = htonl(net->base | (uint32_t)host);
	inet_ntop(AF_INET, &x, out, INET_ADDRSTRLEN);
}

static int wg_add_peer(struct ctl *ctl, int argc, char **argv)
{
	const char *name = NULL, *vps_ip = config_get(ctl->cfg, "vps_ip", NULL);
	long port = WG_DEFAULT_PORT;
	bool qr = isatty(STDOUT_FILENO), tap = false;
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--qr") == 0)
			qr = true;
		else if (strcmp(argv[i], "--bus-tail") == 0)
			tap = true;
		else if (strcmp(argv[i], "--no-qr") == 0)
			qr = false;
		else if (strcmp(argv[i], "--vps-ip") == 0 && i + 1 < argc)
			vps_ip = argv[++i];
		else if (strcmp(argv[i], "--wg-port") == 0 && i + 1 < argc) {
			if ((port = port_arg(argv[++i])) < 0)
				return ctl_fail("wg add-peer: --wg-port %s: not a port (1-65535)", argv[i]);
		} else if (argv[i][0] != '-' && name == NULL)
			name = argv[i];
		else
			return ctl_fail("wg add-peer: unexpected %s (usage: wg add-peer NAME --vps-ip IP "
					"[--wg-port P] [--bus-tail] [--qr|--no-qr])", argv[i]);
	}
	struct in_addr a4;
	if (name == NULL)
		return ctl_fail("wg add-peer: NAME is required (the device: laptop, phone...)");
	if (!peer_name_ok(name))
		return ctl_fail("wg add-peer: %s: a name is 1-%d of a-z, 0-9 and '-', not first",
				name, WG_PEER_NAME_MAX);
	if (vps_ip == NULL || inet_pton(AF_INET, vps_ip, &a4) != 1)
		return ctl_fail("wg add-peer: --vps-ip IP (or vps_ip in roost.conf) must be the VPS's IPv4 address");
	char dir[4096], vb[WG_KEY_B64 + 1], vp[WG_KEY_B64 + 1];
	unsigned char vps[WG_KEY_LEN];
	struct wg_net net;
	long relay = relay_port(ctl);
	wg_dir(ctl, dir, sizeof dir);
	if (relay < 0 || wg_net_get(ctl, &net) != 0 || wg_key_read(dir, "vps.key", vps, vb) != 0)
		return 1;
	if (wg_pubkey(vps, vp) < 0)
		return ctl_fail("wg add-peer: OpenSSL cannot derive X25519 public keys");
	size_t n;
	struct wg_peer *peers = peers_load(dir, &n);
	int host = WG_PEER_FIRST;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(peers[i].name, name) == 0) {
			free(peers);
			return ctl_fail("wg add-peer: %s exists (wg remove %s first to make it anew)", name, name);
		}
		if (peers[i].host == host)
			host++;
	}
	free(peers);
	if (host > WG_PEER_LAST)
		return ctl_fail("wg add-peer: all %d device addresses of %s are taken",
				WG_PEER_LAST - WG_PEER_FIRST + 1, net.cidr);
	unsigned char priv[WG_KEY_LEN];
	struct wg_peer p = { .host = host, .tap = tap };
	char pb[WG_KEY_B64 + 1], addr[INET_ADDRSTRLEN], path[4200], text[256];
	if (wg_key_new(priv) < 0)
		return ctl_fail("wg add-peer: no randomness (getrandom failed)");
	if (wg_pubkey(priv, p.pub) < 0)
		return ctl_fail("wg add-peer: OpenSSL cannot derive X25519 public keys");
	EVP_EncodeBlock((unsigned char *)pb, priv, WG_KEY_LEN);
	host_addr(&net, host, addr);
	snprintf(path, sizeof path, "%s/peers", dir);
	if (mkdir(path, 0700) != 0 && errno != EEXIST)
		return ctl_fail("%s: %s", path, strerror(errno));
	snprintf(text, sizeof text, "host %d\npublic %s\n%s", host, p.pub, tap ? "tap 1\n" : "");
	snprintf(path, sizeof path, "%s/peers/%s", dir, name);
	if (wg_write_file(path, text, true) != 0)
		return 1;
	char conf[1024], tail[64];
	snprintf(tail, sizeof tail, "roostctl bus tail --remote %s:%ld", net.server, relay);
	snprintf(conf, sizeof conf,
		 "[Interface]\n# %s: Roost's IMAP and submission%s through the VPS\n%s%s%s"
		 "PrivateKey = %s\nAddress = %s/32\n\n[Peer]\n# the Roost VPS\nPublicKey = %s\n"
		 "Endpoint = %s:%ld\nAllowedIPs = %s/32\nPersistentKeepalive = 25\n",
		 name, tap ? ", and the bus" : "", tap ? "# (" : "", tap ? tail : "", tap ? ")\n" : "",
		 pb, addr, vp, vps_ip, port, net.server);
	if (ctl->json) {
		json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s?}", "name", name, "address", addr,
				      "public_key", p.pub, "config", conf, "bus_tail", tap ? tail : NULL);
		char *s = json_dumps(o, JSON_COMPACT);
		puts(s);
		free(s);
		json_decref(o);
		return 0;
	}
	fputs(conf, stdout);
	fflush(stdout);
	if (qr) {
		/* Debian's qrencode draws it in the terminal, for a phone's app. */
		FILE *q = popen("qrencode -t ansiutf8", "w");
		if (q == NULL || fputs(conf, q) < 0 || pclose(q) != 0)
			fprintf(stderr, "roostctl: no QR code (qrencode missing? apt install qrencode)\n");
	}
	if (tap)
		fprintf(stderr, "%s gets %s and reaches %s (IMAP 143/993, submission 587/465, the bus\n"
			"relay %ld) only. With the tunnel up, on the device: %s\n"
			"(the relay runs on this server: roostctl bus relay; the compose stack's bus-relay).\n",
			name, addr, net.server, relay, tail);
	else
		fprintf(stderr, "%s gets %s and reaches %s (IMAP 143/993, submission 587/465) only\n"
			"(--bus-tail: the bus too, for the owner's own devices).\n", name, addr, net.server);
	fprintf(stderr, "Next, the VPS needs its script again: roostctl vps-config --vps-ip %s > roost-vps.sh,\n"
		"copy it there and run it (sh roost-vps.sh).\n", vps_ip);
	return 0;
}

static int wg_list(struct ctl *ctl, int argc, char **argv)
{
	(void)argv;
	if (argc > 0)
		return ctl_fail("wg list: no arguments");
	char dir[4096], addr[INET_ADDRSTRLEN];
	struct wg_net net;
	wg_dir(ctl, dir, sizeof dir);
	if (wg_net_get(ctl, &net) != 0)
		return 1;
	size_t n;
	struct wg_peer *peers = peers_load(dir, &n);
	json_t *arr = ctl->json ? json_array() : NULL;
	for (size_t i = 0; i < n; i++) {
		host_addr(&net, peers[i].host, addr);
		if (arr)
			json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:b}", "name", peers[i].name,
							     "address", addr, "public_key", peers[i].pub,
							     "bus_tail", peers[i].tap));
		else
			printf("%s\t%s\t%s\t%s\n", peers[i].name, addr, peers[i].pub,
			       peers[i].tap ? "bus-tail" : "-");
	}
	if (arr) {
		char *s = json_dumps(arr, JSON_COMPACT);
		puts(s);
		free(s);
		json_decref(arr);
	}
	free(peers);
	return 0;
}

static int wg_remove(struct ctl *ctl, int argc, char **argv)
{
	if (argc != 1)
		return ctl_fail("wg remove: usage: wg remove NAME");
	if (!peer_name_ok(argv[0]))
		return ctl_fail("wg remove: %s: not a device name", argv[0]);
	char dir[4096], path[4200];
	wg_dir(ctl, dir, sizeof dir);
	snprintf(path, sizeof path, "%s/peers/%s", dir, argv[0]);
	if (unlink(path) != 0)
		return ctl_fail("wg remove: %s: %s", argv[0],
				errno == ENOENT ? "no such device (wg list shows them)" : strerror(errno));
	fprintf(stderr, "%s removed here; it keeps reaching the VPS until the VPS runs its script again "
		"(roostctl vps-config --vps-ip IP > roost-vps.sh, then sh roost-vps.sh there)\n", argv[0]);
	return 0;
}

int cmd_wg(struct ctl *ctl, int argc, char **argv)
{
	argc--, argv++;  /* past "wg" */
	if (argc < 1 || strcmp(argv[0], "--help") == 0) {
		fprintf(argc < 1 ? stderr : stdout,
			"usage: roostctl wg keygen [--force]   the keys of this server and of its VPS\n"
			"       roostctl wg show               their public keys and tunnel addresses\n"
			"       roostctl wg add-peer NAME --vps-ip IP [--wg-port P] [--bus-tail] [--qr|--no-qr]\n"
			"                                      a device's WireGuard configuration (IMAP,\n"
			"                                      submission through the VPS; --bus-tail: and\n"
			"                                      roostctl bus tail --remote, the owner's only)\n"
			"       roostctl wg list               the devices\n"
			"       roostctl wg remove NAME        forget a device\n");
		return argc < 1 ? 2 : 0;
	}
	if (strcmp(argv[0], "keygen") == 0)
		return wg_keygen(ctl, argc - 1, argv + 1);
	if (strcmp(argv[0], "show") == 0)
		return wg_show(ctl, argc - 1, argv + 1);
	if (strcmp(argv[0], "add-peer") == 0)
		return wg_add_peer(ctl, argc - 1, argv + 1);
	if (strcmp(argv[0], "list") == 0)
		return wg_list(ctl, argc - 1, argv + 1);
	if (strcmp(argv[0], "remove") == 0)
		return wg_remove(ctl, argc - 1, argv + 1);
	return ctl_fail("wg: unknown subcommand %s (keygen, show, add-peer, list, remove)", argv[0]);
}


/*
 * The script the owner runs on the VPS. It only uses what a Debian or
 * Ubuntu VPS has (sh, ip, sysctl, iptables, wg-quick from wireguard-tools,
 * installed when missing) and is safe to run twice: its files are
 * rewritten, its rules live in chains of its own that are flushed and
 * refilled, and each jump into them is added only if absent.
 */
static const char vps_script[] =
	"#!/bin/sh\n"
	"# Roost's VPS: WireGuard to the mail server, the mail ports forwarded to it\n"
	"# with the client's own address, its outgoing mail leaving from this address.\n"
	"# Generated by roostctl vps-config on %s. Run as root: sh roost-vps.sh\n"
	"# Running it again is safe: it rewrites its files and its own firewall chains.\n"
	"set -eu\n"
	"VPS_IP=%s\n"
	"WG_PORT=%ld\n"
	"SSH_PORT=%ld\n"
	"TUN_NET=%s\n"
	"SERVER=%s\n"
	"PORTS=%s\n"
	"DEVICES=%s\n"
	"DEVICE_PORTS=%s\n"
	"# devices added with --bus-tail, and the bus relay's port\n"
	"TAP_DEVICES=\"%s\"\n"
	"RELAY_PORT=%ld\n"
	"IF=" WG_IFACE "\n"
	"# ROOST_VPS_ROOT: install the files under another root (tests);\n"
	"# ROOST_VPS_PUBLIC_IF: the public interface, if not the default route's.\n"
	"ROOT=${ROOST_VPS_ROOT:-}\n"
	"PUB=${ROOST_VPS_PUBLIC_IF:-$(ip -4 route show default | awk '{ for (i = 1; i < NF; i++) if ($i == \"dev\") { print $(i + 1); exit } }')}\n"
	"[ -n \"$PUB\" ] || { echo \"roost-vps: no default route: set ROOST_VPS_PUBLIC_IF\" >&2; exit 1; }\n"
	"ip -4 addr show dev \"$PUB\" | grep -q \"inet $VPS_IP/\" ||\n"
	"\techo \"roost-vps: warning: $VPS_IP is not an address of $PUB (a provider's 1:1 NAT is fine)\" >&2\n"
	"if ! command -v wg-quick >/dev/null || ! command -v iptables >/dev/null; then\n"
	"\tapt-get update && apt-get install -y wireguard-tools iptables\n"
	"fi\n"
	"umask 077\n"
	"mkdir -p \"$ROOT/etc/wireguard\" \"$ROOT/etc/sysctl.d\" \"$ROOT/usr/local/sbin\"\n"
	"cat > \"$ROOT/etc/wireguard/$IF.conf\" <<EOF\n"
	"[Interface]\n"
	"Address = %s/24\n"
	"ListenPort = $WG_PORT\n"
	"PrivateKey = %s\n"
	"\n"
	"[Peer]\n"
	"# the Roost mail server\n"
	"PublicKey = %s\n"
	"AllowedIPs = $SERVER/32\n";

/* After the [Peer] of each device. */
static const char vps_script_tail[] =
	"EOF\n"
	"# forwarding between the tunnel and the public interface, now and at boot\n"
	"echo net.ipv4.ip_forward=1 > \"$ROOT/etc/sysctl.d/90-roost.conf\"\n"
	"sysctl -q -w net.ipv4.ip_forward=1 2>/dev/null || [ \"$(cat /proc/sys/net/ipv4/ip_forward)\" = 1 ] ||\n"
	"\t{ echo \"roost-vps: cannot turn on net.ipv4.ip_forward\" >&2; exit 1; }\n"
	"# the tunnel: brought up, or given the new configuration if it is up\n"
	"if ip link show \"$IF\" >/dev/null 2>&1; then\n"
	"\twg-quick strip \"$ROOT/etc/wireguard/$IF.conf\" > \"$ROOT/etc/wireguard/$IF.stripped\"\n"
	"\twg syncconf \"$IF\" \"$ROOT/etc/wireguard/$IF.stripped\"\n"
	"\trm -f \"$ROOT/etc/wireguard/$IF.stripped\"\n"
	"else\n"
	"\twg-quick up \"$ROOT/etc/wireguard/$IF.conf\"\n"
	"fi\n"
	"# the firewall, in Roost's own chains\n"
	"chain() { iptables -w -t \"$1\" -N \"$2\" 2>/dev/null || iptables -w -t \"$1\" -F \"$2\"; }\n"
	"jump() { t=$1; c=$2; shift 2; iptables -w -t \"$t\" -C \"$c\" \"$@\" 2>/dev/null || iptables -w -t \"$t\" -I \"$c\" 1 \"$@\"; }\n"
	"# inbound mail and IMAP go to the server with the client's address kept:\n"
	"# DNAT only, never SNAT toward the tunnel, or every client would look\n"
	"# like the VPS (SPF breaks, and a server trusting its own network relays)\n"
	"chain nat ROOST-PRE\n"
	"iptables -w -t nat -A ROOST-PRE -i \"$PUB\" -p tcp -m multiport --dports \"$PORTS\" -j DNAT --to-destination \"$SERVER\"\n"
	"jump nat PREROUTING -j ROOST-PRE\n"
	"# the server's own traffic leaves from the VPS's address; nothing else is masqueraded\n"
	"chain nat ROOST-POST\n"
	"iptables -w -t nat -A ROOST-POST -s \"$SERVER\" -o \"$PUB\" -j MASQUERADE\n"
	"jump nat POSTROUTING -j ROOST-POST\n"
	"chain filter ROOST-FWD\n"
	"iptables -w -A ROOST-FWD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n"
	"iptables -w -A ROOST-FWD -i \"$PUB\" -o \"$IF\" -d \"$SERVER\" -p tcp -m multiport --dports \"$PORTS\" -m conntrack --ctstate DNAT -j ACCEPT\n"
	"iptables -w -A ROOST-FWD -i \"$IF\" -o \"$PUB\" -s \"$SERVER\" -j ACCEPT\n"
	"# the owner's devices (roostctl wg add-peer) reach IMAP and submission, and\n"
	"# those added with --bus-tail the bus relay (roostctl bus tail --remote);\n"
	"# nothing else, and never from $PUB\n"
	"iptables -w -A ROOST-FWD -i \"$IF\" -o \"$IF\" -m iprange --src-range \"$DEVICES\" -d \"$SERVER\" -p tcp -m multiport --dports \"$DEVICE_PORTS\" -j ACCEPT\n"
	"for d in $TAP_DEVICES; do\n"
	"\tiptables -w -A ROOST-FWD -i \"$IF\" -o \"$IF\" -s \"$d\" -d \"$SERVER\" -p tcp --dport \"$RELAY_PORT\" -j ACCEPT\n"
	"done\n"
	"iptables -w -A ROOST-FWD -j DROP\n"
	"jump filter FORWARD -j ROOST-FWD\n"
	"# to the VPS itself: WireGuard, SSH, ping; nothing else\n"
	"chain filter ROOST-IN\n"
	"iptables -w -A ROOST-IN -i lo -j ACCEPT\n"
	"iptables -w -A ROOST-IN -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n"
	"iptables -w -A ROOST-IN -p udp --dport \"$WG_PORT\" -j ACCEPT\n"
	"iptables -w -A ROOST-IN -p tcp --dport \"$SSH_PORT\" -j ACCEPT\n"
	"iptables -w -A ROOST-IN -p icmp -j ACCEPT\n"
	"iptables -w -A ROOST-IN -j DROP\n"
	"jump filter INPUT -j ROOST-IN\n"
	"# at boot: this script again (it only rewrites what it wrote), after the network\n"
	"cp \"$0\" \"$ROOT/usr/local/sbin/roost-vps\" 2>/dev/null || true\n"
	"if [ -z \"$ROOT\" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then\n"
	"\tcat > /etc/systemd/system/roost-vps.service <<EOF\n"
	"[Unit]\n"
	"Description=Roost VPS: WireGuard tunnel and mail port forwarding\n"
	"Wants=network-online.target\n"
	"After=network-online.target\n"
	"\n"
	"[Service]\n"
	"Type=oneshot\n"
	"RemainAfterExit=yes\n"
	"ExecStart=/bin/sh /usr/local/sbin/roost-vps\n"
	"\n"
	"[Install]\n"
	"WantedBy=multi-user.target\n"
	"EOF\n"
	"\tsystemctl daemon-reload\n"
	"\tsystemctl enable roost-vps.service >/dev/null\n"
	"else\n"
	"\techo \"roost-vps: no systemd: run $ROOT/usr/local/sbin/roost-vps at boot\" >&2\n"
	"fi\n"
	"echo \"roost-vps: tunnel $IF up ($TUN_NET, server $SERVER), ports $PORTS forwarded from $VPS_IP\"\n";

int cmd_vps_config(struct ctl *ctl, int argc, char **argv)
{
	const char *ip = NULL;
	long port = WG_DEFAULT_PORT, ssh = 22;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--help") == 0) {
			printf("usage: roostctl vps-config --vps-ip IP [--wg-port PORT] [--ssh-port PORT]\n"
			       "  prints the shell script to run as root on the VPS (keys from roostctl wg keygen)\n");
			return 0;
		}
		if (v == NULL)
			return ctl_fail("vps-config: %s needs a value", a);
		if (strcmp(a, "--vps-ip") == 0)
			ip = v;
		else if (strcmp(a, "--wg-port") == 0 && (port = port_arg(v)) < 0)
			return ctl_fail("vps-config: --wg-port %s: not a port (1-65535)", v);
		else if (strcmp(a, "--ssh-port") == 0 && (ssh = port_arg(v)) < 0)
			return ctl_fail("vps-config: --ssh-port %s: not a port (1-65535)", v);
		else if (strcmp(a, "--vps-ip") != 0 && strcmp(a, "--wg-port") != 0 &&
			 strcmp(a, "--ssh-port") != 0)
			return ctl_fail("vps-config: unknown option %s", a);
		i++;
	}
	struct in_addr a4;
	if (ip == NULL)
		return ctl_fail("vps-config: --vps-ip IP is required (the VPS's public IPv4 address)");
	if (inet_pton(AF_INET, ip, &a4) != 1)
		return ctl_fail("vps-config: --vps-ip %s: not an IPv4 address", ip);
	struct wg_setup w;
	long relay = relay_port(ctl);
	if (relay < 0 || wg_setup_load(ctl, &w, "vps-config") != 0)
		return 1;
	const struct wg_net n = w.net;
	char when[32];
	time_t now = time(NULL);
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
	char first[INET_ADDRSTRLEN], last[INET_ADDRSTRLEN], range[2 * INET_ADDRSTRLEN + 2], addr[INET_ADDRSTRLEN];
	host_addr(&n, WG_PEER_FIRST, first);
	host_addr(&n, WG_PEER_LAST, last);
	snprintf(range, sizeof range, "%s-%s", first, last);
	size_t np;
	struct wg_peer *peers = peers_load(w.dir, &np);
	/* At most 245 addresses of at most 15 characters and a space. */
	char taps[(WG_PEER_LAST - WG_PEER_FIRST + 1) * INET_ADDRSTRLEN + 1] = "";
	for (size_t i = 0, len = 0; i < np; i++) {
		if (peers[i].tap) {
			host_addr(&n, peers[i].host, addr);
			len += (size_t)snprintf(taps + len, sizeof taps - len, "%s%s", len ? " " : "", addr);
		}
	}
	printf(vps_script, when, ip, port, ssh, n.cidr, n.server, WG_FORWARD_PORTS, range,
	       WG_DEVICE_PORTS, taps, relay, n.vps, w.vps_key, w.srv_pub);
	for (size_t i = 0; i < np; i++) {
		host_addr(&n, peers[i].host, addr);
		printf("\n[Peer]\n# device %s (roostctl wg add-peer)\nPublicKey = %s\nAllowedIPs = %s/32\n",
		       peers[i].name, peers[i].pub, addr);
	}
	free(peers);
	fputs(vps_script_tail, stdout);
	return fflush(stdout) == 0 ? 0 : ctl_fail("vps-config: cannot write the script: %s", strerror(errno));
}
