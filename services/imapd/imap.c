/*
 * imap.c — the IMAP session state machine (RFC 3501 3) and the commands
 * that need no mailbox.
 *
 *   state       commands (besides CAPABILITY, NOOP, LOGOUT, ID in every state)
 *   NOAUTH      STARTTLS, LOGIN, AUTHENTICATE          -> AUTH
 *   AUTH        ENABLE, NAMESPACE, LIST, LSUB, CREATE, DELETE, RENAME,
 *               (UN)SUBSCRIBE, STATUS, APPEND, IDLE, SELECT/EXAMINE -> SELECTED
 *   SELECTED    the AUTH ones, and CHECK, CLOSE, UNSELECT (-> AUTH), EXPUNGE,
 *               SEARCH, FETCH, STORE, COPY, MOVE, UID ...
 *   LOGOUT      nothing: the connection closes once the replies are out
 *
 * One command runs at a time: s->cmd. Its reply continues it through
 * imap_call's callback; imap_done ends it after notify_sync has brought the
 * client up to date. Pipelined commands wait in the input buffer (and TCP).
 * Before TLS on port 143 no credentials are accepted (LOGINDISABLED, RFC
 * 3501 6.2.3, RFC 8314); failed logins slow down per client address and
 * per account (imap_fails_*), and IMAPD_AUTH_FAILS_MAX end the session.
 *
 * Ownership: cmd_t and its members are owned by the session and released by
 * imap_cmd_end; bus replies are borrowed by the continuation they reach.
 */
#include "imapd.h"
#include "hmap.h"
#include "log.h"
#include "mutf7.h"
#include "qresync.h"
#include "quota.h"
#include "util.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <unistd.h>

const char *const imap_state_names[IS_COUNT] = { "noauth", "auth", "selected", "logout" };

void imap_enter_state(session_t *s, enum imap_state st)
{
	if (s->state == st)
		return;
	log_debug("state", "session=%llu from=%s to=%s", (unsigned long long)s->serial,
		  imap_state_names[s->state], imap_state_names[st]);
	bool login = s->state == IS_NOAUTH && st == IS_AUTH;
	s->state = st;
	if (login)
		session_touch(s);   /* from the login timeout to the idle one */
}

/* ---- output helpers ---------------------------------------------------------- */

/* A quoted string if s can be one, else a literal. */
void imap_quote(strbuf_t *sb, const char *s, size_t len)
{
	bool literal = len > 1024;
	for (size_t i = 0; i < len && !literal; i++)
		literal = s[i] == '\r' || s[i] == '\n' || s[i] == '\0' || (unsigned char)s[i] >= 0x80;
	if (literal) {
		sb_addf(sb, "{%zu}\r\n", len);
		sb_add(sb, s, len);
		return;
	}
	sb_addc(sb, '"');
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '"' || s[i] == '\\')
			sb_addc(sb, '\\');
		sb_addc(sb, s[i]);
	}
	sb_addc(sb, '"');
}

void imap_flags(strbuf_t *sb, const json_t *flags)
{
	size_t i;
	json_t *f;
	sb_addc(sb, '(');
	json_array_foreach(flags, i, f) {
		if (i > 0)
			sb_addc(sb, ' ');
		if (json_is_string(f))
			sb_adds(sb, json_string_value(f));
	}
	sb_addc(sb, ')');
}

static void imap_capability(session_t *s, strbuf_t *sb)
{
	sb_adds(sb, "IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UNSELECT UIDPLUS MOVE "
		"CHILDREN SPECIAL-USE LIST-EXTENDED LIST-STATUS CONDSTORE ESEARCH UTF8=ACCEPT "
		QUOTA_CAPABILITY " " QRESYNC_CAPABILITY);
	if (s->state == IS_NOAUTH) {
		if (!s->tls && !s->private_peer)
			sb_adds(sb, s->d->tls ? " STARTTLS LOGINDISABLED" : " LOGINDISABLED");
		else if (!s->tls && s->d->tls)
			sb_adds(sb, " STARTTLS AUTH=PLAIN");
		else
			sb_adds(sb, " AUTH=PLAIN");
	}
}

void imap_greet(session_t *s)
{
	strbuf_t sb = STRBUF_INIT;
	imap_capability(s, &sb);
	session_printf(s, "* OK [CAPABILITY %s] %s Roost IMAP ready\r\n", sb_str(&sb),
		       s->d->conf.hostname);
	sb_free(&sb);
}

void imap_tls_done(session_t *s)
{
	/* implicit TLS: the greeting comes now; STARTTLS: the client speaks next */
	if (s->implicit)
		imap_greet(s);
}

/* ---- commands: the lifecycle -------------------------------------------------------- */

void imap_cmd_end(session_t *s)
{
	cmd_t *c = s->cmd;
	if (c == NULL)
		return;
	ip_clear(&c->ip);
	json_decref(c->page);
	json_decref(c->msg);
	json_decref(c->req);
	json_decref(c->list);
	free(c->set);
	qresync_free(&c->qr);
	sb_free(&c->buf);
	free(c->fetch);
	free(c->vset);
	uidlist_free(&c->hits);
	free(c->mailbox);
	free(c->ref);
	for (size_t i = 0; i < c->npats; i++)
		free(c->pats[i]);
	free(c->pats);
	bus_stream_free(&c->stream);
	json_decref(c->fail);
	free(c->fail_text);
	loop_timer_cancel(s->d->loop, &c->delay);
	free(c->reply);
	free(c);
	s->cmd = NULL;
	imap_frame_reset(&s->frame);
}

void imap_session_clear(session_t *s)
{
	imap_cmd_end(s);
	imap_frame_free(&s->frame);
	mbox_clear(&s->mbox);
}

/* The tagged line is out: the command is over. */
static void imap_finish(session_t *s)
{
	if (s->cmd == NULL)
		return;
	session_write(s, s->cmd->reply, strlen(s->cmd->reply));
	imap_cmd_end(s);
}

void imap_done(session_t *s, const char *status, const char *fmt, ...)
{
	cmd_t *c = s->cmd;
	char text[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	free(c->reply);
	c->reply = xasprintf("%s %s %s\r\n", c->tag, status, text);
	if (strcmp(status, "BAD") == 0 && ++s->errors >= IMAPD_ERRORS_MAX) {
		session_printf(s, "* BYE Too many errors\r\n");
		imap_cmd_end(s);
		session_close_after_flush(s);
		return;
	}
	if (s->state == IS_SELECTED)
		notify_sync(s, c->sync_force, imap_finish);
	else
		imap_finish(s);
}

/* BAD for a parse error; an error the parser marks "[CANNOT]" is a NO. */
static void imap_bad(session_t *s, const char *why)
{
	if (why == NULL)
		why = "syntax error";
	if (strncmp(why, "[CANNOT]", 8) == 0)
		imap_done(s, "NO", "%s", why);
	else
		imap_done(s, "BAD", "%s", why);
}

static void imap_reply(json_t **reply, const void *raw, size_t rawlen, void *arg)
{
	session_t *s = arg;
	s->call = 0;
	cmd_cont_fn fn = s->cont;
	s->cont = NULL;
	if (fn != NULL && !s->closed)
		fn(s, *reply, raw, rawlen);
	if (!s->in_call)
		session_resume(s);
}

#define CALL_STARTING UINT64_MAX

void imap_call(session_t *s, json_t **req, cmd_cont_fn fn)
{
	if (s->user[0] != '\0' && json_object_get(*req, "address") == NULL &&
	    strncmp(json_string_value(json_object_get(*req, "type")), "storaged.user.", 14) != 0)
		json_object_set_new(*req, "address", json_string(s->user));
	bus_call_opts_t opts = { (int)s->d->conf.bus_timeout_ms, -1 };
	bool outer = !s->in_call;
	s->cont = fn;
	s->call = CALL_STARTING;
	s->in_call = true;
	uint64_t h = bus_call(s->d->bus, "storaged", req, NULL, 0, &opts, imap_reply, s);
	if (s->call == CALL_STARTING)
		s->call = h;   /* the reply has not come yet */
	if (outer)
		s->in_call = false;
}

void imap_idem(session_t *s, json_t *req)
{
	uint32_t r = 0;
	if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r)
		r = (uint32_t)s->serial * 2654435761u;
	char id[64];
	snprintf(id, sizeof id, "imapd-%x-%llx-%llx-%08x", (unsigned)getpid(),
		 (unsigned long long)s->serial, (unsigned long long)++s->d->idem, r);
	json_object_set_new(req, "idem", json_string(id));
}

void imap_fail_reply(session_t *s, const json_t *reply, const char *what)
{
	const char *code = json_string_value(json_object_get(reply, "code"));
	const char *why = json_string_value(json_object_get(reply, "error"));
	if (code == NULL)
		code = "";
	if (strcmp(code, "not_found") == 0)
		imap_done(s, "NO", "[NONEXISTENT] %s: no such mailbox", what);
	else if (strcmp(code, "exists") == 0)
		imap_done(s, "NO", "[ALREADYEXISTS] %s: mailbox exists", what);
	else if (strcmp(code, "mailbox_full") == 0)
		imap_done(s, "NO", "[OVERQUOTA] %s: mailbox full", what);
	else if (strcmp(code, "too_big") == 0)
		imap_done(s, "NO", "[TOOBIG] %s: message too big", what);
	else if (strcmp(code, "has_children") == 0)
		imap_done(s, "NO", "[HASCHILDREN] %s: mailbox has children", what);
	else if (strcmp(code, "invalid") == 0 || strcmp(code, "limit") == 0)
		imap_done(s, "NO", "[CANNOT] %s: %s", what, why ? why : "refused");
	else {
		log_warn("storaged.error", "session=%llu what=%s code=%s why=%s",
			 (unsigned long long)s->serial, what, log_quote(code), log_quote(why));
		imap_done(s, "NO", "[UNAVAILABLE] %s: try again later", what);
	}
}

const char *imap_mailbox_parse(session_t *s, char *out, size_t cap)
{
	imap_parser_t *ip = &s->cmd->ip;
	size_t len;
	const char *name = ip_astring(ip, &len);
	if (name == NULL)
		return ip->err ? ip->err : "expected a mailbox";
	if (len == 0 || len > IMAPD_NAME_MAX || strlen(name) != len)
		return "[CANNOT] bad mailbox name";
	if (strcasecmp(name, "INBOX") == 0) {
		snprintf(out, cap, "INBOX");
		return NULL;
	}
	char check[IMAPD_NAME_MAX * 3];
	if (s->utf8) {
		/* RFC 6855 3: UTF-8 as it is (encoding it is the validity check) */
		if (mutf7_encode(name, len, check, sizeof check) < 0 || len >= cap)
			return "[CANNOT] mailbox name is not UTF-8";
		memcpy(out, name, len + 1);
	} else if (mutf7_decode(name, len, out, cap) < 0) {
		return "[CANNOT] mailbox name is not modified UTF-7";
	}
	if (strncasecmp(out, "INBOX/", 6) == 0)
		memcpy(out, "INBOX", 5);   /* INBOX's children live under "INBOX" */
	return NULL;
}

bool imap_mailbox_arg(session_t *s, char *out, size_t cap)
{
	const char *why = imap_mailbox_parse(s, out, cap);
	if (why == NULL)
		return true;
	imap_bad(s, why);
	return false;
}

bool imap_mailbox_only(session_t *s, char *out, size_t cap)
{
	if (!ip_sp(&s->cmd->ip)) {
		imap_done(s, "BAD", "expected a mailbox");
		return false;
	}
	if (!imap_mailbox_arg(s, out, cap))
		return false;
	if (!ip_eol(&s->cmd->ip)) {
		imap_done(s, "BAD", "unexpected arguments");
		return false;
	}
	return true;
}

int imap_name_wire(const session_t *s, const char *name, size_t len, char *out, size_t cap)
{
	if (!s->utf8)
		return mutf7_encode(name, len, out, cap);
	if (len >= cap)
		return -1;
	memcpy(out, name, len);
	out[len] = '\0';
	return (int)len;
}

void imap_pause(session_t *s, void (*resume)(session_t *s))
{
	s->paused = true;
	s->cmd->resume = resume;
}

/* ---- failed logins ---------------------------------------------------------------------- */

#define FAILS_WINDOW_MS (15 * 60 * 1000)
#define FAILS_FREE 3            /* failures before any delay */
#define FAILS_DELAY_MAX_MS 15000
#define FAILS_KEYS_MAX 10000

struct imap_fails {
	unsigned n;
	int64_t last;
};

static int fails_free_one(const void *key, size_t klen, void *value, void *arg)
{
	(void)key; (void)klen; (void)arg;
	free(value);
	return 0;
}

void imap_fails_free(imapd_t *d)
{
	if (d->fails != NULL)
		hmap_each(d->fails, fails_free_one, NULL);
	hmap_free(&d->fails);
}

static unsigned fails_get(imapd_t *d, const char *kind, const char *v)
{
	char key[400];
	int n = snprintf(key, sizeof key, "%s:%s", kind, v);
	struct imap_fails *f = hmap_get(d->fails, key, (size_t)n);
	if (f == NULL || now_ms() - f->last > FAILS_WINDOW_MS)
		return 0;
	return f->n;
}

static void fails_add(imapd_t *d, const char *kind, const char *v)
{
	char key[400];
	int n = snprintf(key, sizeof key, "%s:%s", kind, v);
	struct imap_fails *f = hmap_get(d->fails, key, (size_t)n);
	if (f == NULL) {
		if (hmap_count(d->fails) >= FAILS_KEYS_MAX) {
			/* a flood of names: start over rather than grow without bound */
			imap_fails_free(d);
			d->fails = hmap_new();
		}
		f = xcalloc(1, sizeof *f);
		hmap_put(d->fails, key, (size_t)n, f);
	}
	if (now_ms() - f->last > FAILS_WINDOW_MS)
		f->n = 0;
	f->n++;
	f->last = now_ms();
}

static void fails_clear(imapd_t *d, const char *kind, const char *v)
{
	char key[400];
	int n = snprintf(key, sizeof key, "%s:%s", kind, v);
	free(hmap_del(d->fails, key, (size_t)n));
}

void imap_fails_event(json_t **event, const void *raw, size_t rawlen, void *arg)
{
	(void)raw; (void)rawlen;
	imapd_t *d = arg;
	const char *client, *user, *instance;
	if (json_unpack(*event, "{s:s, s:s, s:s}", "client", &client, "user", &user, "instance",
			&instance) < 0 || strcmp(instance, d->instance) == 0)
		return;
	fails_add(d, "ip", client);
	fails_add(d, "user", user);
}

/* Counts a failure here and tells the other replicas. */
static void fails_record(imapd_t *d, const char *ip, const char *user)
{
	fails_add(d, "ip", ip);
	fails_add(d, "user", user);
	json_t *ev = json_pack("{s:s, s:s, s:s, s:s}", "type", "imapd.login.failed", "client", ip,
			       "user", user, "instance", d->instance);
	bus_publish(d->pub, &ev, NULL, 0);
}

/* How long this login waits before it is even checked: doubling from the
 * FAILS_FREE-th recent failure of its address or its account. */
static int64_t fails_delay_ms(imapd_t *d, const char *ip, const char *user)
{
	unsigned a = fails_get(d, "ip", ip), b = fails_get(d, "user", user);
	unsigned n = a > b ? a : b;
	if (n < FAILS_FREE)
		return 0;
	n -= FAILS_FREE;
	return n >= 6 ? FAILS_DELAY_MAX_MS : 250LL << n < FAILS_DELAY_MAX_MS ? 250LL << n
									      : FAILS_DELAY_MAX_MS;
}

/* ---- LOGIN and AUTHENTICATE ----------------------------------------------------------- */

static void login_verified(session_t *s, json_t *reply, const void *raw, size_t rawlen)
{
	(void)raw; (void)rawlen;
	cmd_t *c = s->cmd;
	if (!bus_reply_ok(reply)) {
		const char *code = json_string_value(json_object_get(reply, "code"));
		if (code == NULL || strcmp(code, "invalid") != 0) {
			imap_fail_reply(s, reply, "LOGIN");
			return;
		}
	} else if (json_is_true(json_object_get(reply, "valid"))) {
		snprintf(s->user, sizeof s->user, "%s", c->login_user);
		fails_clear(s->d, "user", s->user);
		s->d->stats.logins++;
		imap_enter_state(s, IS_AUTH);
		log_info("login", "session=%llu ip=%s user=%s", (unsigned long long)s->serial,
			 s->ip, s->user);
		strbuf_t sb = STRBUF_INIT;
		imap_capability(s, &sb);
		imap_done(s, "OK", "[CAPABILITY %s] Logged in", sb_str(&sb));
		sb_free(&sb);
		return;
	}
	/* a wrong password, an unknown user and a malformed name look the same */
	fails_record(s->d, s->ip, c->login_user);
	s->d->stats.login_failures++;
	log_info("login.failed", "session=%llu ip=%s user=%s", (unsigned long long)s->serial,
		 s->ip, log_quote(c->login_user));
	if (++s->auth_fails >= IMAPD_AUTH_FAILS_MAX) {
		session_printf(s, "* BYE Too many failed logins\r\n");
		imap_done(s, "NO", "[AUTHENTICATIONFAILED] Authentication failed");
		session_close_after_flush(s);
		return;
	}
	imap_done(s, "NO", "[AUTHENTICATIONFAILED] Authentication failed");
}

static void login_check(loop_t *loop, void *arg)
{
	(void)loop;
	session_t *s = arg;
	s->cmd->delay = NULL;
	json_t *req = bus_env_new("storaged.user.verify");
	json_object_set_new(req, "address", json_string(s->cmd->login_user));
	json_object_set_new(req, "password", json_string(s->cmd->login_pass));
	bool outer = !s->in_call;
	s->in_call = true;
	imap_call(s, &req, login_verified);
	if (outer) {
		s->in_call = false;
		session_resume(s);   /* a timer is a top-level event */
	}
}

/* Checks user and password with storaged, after the throttling delay. */
static void login_start(session_t *s, const char *user, size_t ulen, const char *pass,
			size_t plen)
{
	cmd_t *c = s->cmd;
	if (ulen == 0 || ulen > 320 || strlen(user) != ulen || plen == 0 || plen > 1024 ||
	    strlen(pass) != plen) {
		imap_done(s, "NO", "[AUTHENTICATIONFAILED] Authentication failed");
		return;
	}
	for (char *p = (char *)user; *p; p++)
		*p = (char)tolower((unsigned char)*p);   /* parser-owned copy */
	c->login_user = user;
	c->login_pass = pass;
	int64_t ms = fails_delay_ms(s->d, s->ip, user);
	if (ms > 0) {
		log_info("login.delayed", "session=%llu ip=%s user=%s ms=%lld",
			 (unsigned long long)s->serial, s->ip, log_quote(user), (long long)ms);
		c->delay = loop_timer_add(s->d->loop, ms, false, login_check, s);
		return;
	}
	json_t *req = bus_env_new("storaged.user.verify");
	json_object_set_new(req, "address", json_string(user));
	json_object_set_new(req, "password", json_string(pass));
	imap_call(s, &req, login_verified);
}

static bool login_allowed(session_t *s)
{
	if (s->tls || s->private_peer)
		return true;
	imap_done(s, "NO", "[PRIVACYREQUIRED] Use STARTTLS first (LOGINDISABLED)");
	return false;
}

static void cmd_login(session_t *s)
{
	imap_parser_t *ip = &s->cmd->ip;
	size_t ulen, plen;
	const char *user = ip_sp(ip) ? ip_astring(ip, &ulen) : NULL;
	const char *pass = user && ip_sp(ip) ? ip_astring(ip, &plen) : NULL;
	if (pass == NULL || !ip_eol(ip)) {
		imap_bad(s, ip->err);
		return;
	}
	if (login_allowed(s))
		login_start(s, user, ulen, pass, plen);
}

/* SASL PLAIN (RFC 4616): base64 of authzid NUL authcid NUL password. */
static void sasl_plain(session_t *s, const char *b64, size_t len)
{
	cmd_t *c = s->cmd;
	if (len == 1 && b64[0] == '=')
		len = 0;   /* SASL-IR: an empty initial response */
	if (len % 4 != 0 || len > 4 * 1024) {
		imap_done(s, "BAD", "bad base64");
		return;
	}
	unsigned char *raw = xmalloc(len / 4 * 3 + 1);
	int n = len ? EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)len) : 0;
	if (n < 0) {
		free(raw);
		imap_done(s, "BAD", "bad base64");
		return;
	}
	for (size_t i = len; i > 0 && b64[i - 1] == '='; i--)
		n--;   /* EVP_DecodeBlock counts the padding as bytes */
	const char *authz = (const char *)raw, *end = authz + n;
	const char *user = memchr(authz, '\0', (size_t)(end - authz));
	const char *pass = user ? memchr(user + 1, '\0', (size_t)(end - user - 1)) : NULL;
	if (pass == NULL) {
		free(raw);
		imap_done(s, "NO", "[AUTHENTICATIONFAILED] Authentication failed");
		return;
	}
	user++, pass++;
	size_t ulen = (size_t)(pass - 1 - user), plen = (size_t)(end - pass);
	/* keep copies for the rest of the command in the parser's strings */
	const char *u = NULL, *p = NULL;
	if (c->ip.nstrs + 2 <= IMAPD_STRS_MAX) {
		c->ip.strs[c->ip.nstrs++] = xstrndup(user, ulen);
		u = c->ip.strs[c->ip.nstrs - 1];
		c->ip.strs[c->ip.nstrs++] = xstrndup(pass, plen);
		p = c->ip.strs[c->ip.nstrs - 1];
	}
	bool authz_ok = authz == user - 1 ||
			((size_t)(user - 1 - authz) == ulen && memcmp(authz, user, ulen) == 0);
	free(raw);
	if (u == NULL || !authz_ok) {
		/* acting as someone else (an authzid) is not something we offer */
		imap_done(s, "NO", "[AUTHENTICATIONFAILED] Authentication failed");
		return;
	}
	login_start(s, u, ulen, p, plen);
}

static void cmd_authenticate(session_t *s)
{
	imap_parser_t *ip = &s->cmd->ip;
	const char *mech = ip_sp(ip) ? ip_atom(ip) : NULL;
	if (mech == NULL) {
		imap_bad(s, ip->err);
		return;
	}
	if (strcasecmp(mech, "PLAIN") != 0) {
		imap_done(s, "NO", "[CANNOT] Unsupported mechanism");
		return;
	}
	if (!login_allowed(s))
		return;
	if (ip_char(ip, ' ')) {
		const char *ir = ip_atom(ip);   /* base64 chars are atom chars */
		if (ir == NULL || !ip_eol(ip)) {
			imap_bad(s, ip->err);
			return;
		}
		sasl_plain(s, ir, strlen(ir));
		return;
	}
	if (!ip_eol(ip)) {
		imap_bad(s, "unexpected arguments");
		return;
	}
	s->cmd->sasl = true;
	session_printf(s, "+ \r\n");
	/* the response line comes through the frame like a command (the
	 * parser's strings stay: they are copies) */
	sb_truncate(&s->frame.cmd, 0);
	s->frame.line_start = 0;
}

/* The client's line after "+ " in AUTHENTICATE. */
static void sasl_line(session_t *s)
{
	s->cmd->sasl = false;
	size_t len = s->frame.cmd.len;
	const char *line = s->frame.cmd.buf;
	while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	if (len == 1 && line[0] == '*') {
		imap_done(s, "BAD", "Authentication cancelled");
		return;
	}
	char *copy = xstrndup(line, len);
	sasl_plain(s, copy, len);
	free(copy);
}

/* ---- the other commands without a mailbox ------------------------------------------- */

static bool no_args(session_t *s)
{
	if (ip_eol(&s->cmd->ip))
		return true;
	imap_bad(s, "unexpected arguments");
	return false;
}

static void cmd_capability(session_t *s)
{
	if (!no_args(s))
		return;
	strbuf_t sb = STRBUF_INIT;
	imap_capability(s, &sb);
	session_printf(s, "* CAPABILITY %s\r\n", sb_str(&sb));
	sb_free(&sb);
	imap_done(s, "OK", "CAPABILITY completed");
}

static void cmd_noop(session_t *s)
{
	if (!no_args(s))
		return;
	s->cmd->sync_force = true;
	imap_done(s, "OK", "%s completed", s->cmd->name);
}

static void cmd_logout(session_t *s)
{
	if (!no_args(s))
		return;
	session_printf(s, "* BYE Logging out\r\n");
	/* LOGOUT state first: no mailbox updates before the last reply */
	session_close_after_flush(s);
	imap_done(s, "OK", "LOGOUT completed");
}

static void cmd_starttls(session_t *s)
{
	if (!no_args(s))
		return;
	if (s->tls) {
		imap_done(s, "BAD", "TLS is already active");
		return;
	}
	if (s->d->tls == NULL) {
		imap_done(s, "NO", "[UNAVAILABLE] TLS is not configured");
		return;
	}
	imap_done(s, "OK", "Begin TLS negotiation now");
	session_starttls(s);
}

static void cmd_enable(session_t *s)
{
	imap_parser_t *ip = &s->cmd->ip;
	strbuf_t sb = STRBUF_INIT;
	int n = 0;
	while (ip_char(ip, ' ')) {
		const char *cap = ip_atom(ip);
		if (cap == NULL || ++n > 32) {
			sb_free(&sb);
			imap_bad(s, ip->err ? ip->err : "too many capabilities");
			return;
		}
		if (strcasecmp(cap, "CONDSTORE") == 0 && !s->condstore) {
			s->condstore = true;
			sb_adds(&sb, " CONDSTORE");
		} else if (strcasecmp(cap, "QRESYNC") == 0 && !s->qresync) {
			s->qresync = s->condstore = true;   /* RFC 7162 3.2.3: CONDSTORE too */
			sb_adds(&sb, " QRESYNC");
		} else if (strcasecmp(cap, "UTF8=ACCEPT") == 0 && !s->utf8) {
			s->utf8 = true;
			sb_adds(&sb, " UTF8=ACCEPT");
		}
	}
	if (n == 0 || !ip_eol(ip)) {
		sb_free(&sb);
		imap_bad(s, "ENABLE needs capabilities");
		return;
	}
	session_printf(s, "* ENABLED%s\r\n", sb_str(&sb));
	sb_free(&sb);
	imap_done(s, "OK", "ENABLE completed");
}

/* RFC 2971: the client's list is read and logged, ours is sent. */
static void cmd_id(session_t *s)
{
	imap_parser_t *ip = &s->cmd->ip;
	strbuf_t seen = STRBUF_INIT;
	bool nil;
	size_t len;
	if (!ip_sp(ip))
		goto bad;
	if (!ip_char(ip, '(')) {
		if (ip_nstring(ip, &len, &nil) != NULL || !nil)
			goto bad;
	} else {
		for (int i = 0; !ip_char(ip, ')'); i++) {
			const char *k, *v;
			if (i >= 30 || (i > 0 && !ip_sp(ip)) || (k = ip_string(ip, &len)) == NULL ||
			    !ip_sp(ip))
				goto bad;
			v = ip_nstring(ip, &len, &nil);
			if (v == NULL && !nil)
				goto bad;
			sb_addf(&seen, "%s%s=%s", i ? "," : "", k, v ? v : "NIL");
		}
	}
	if (!ip_eol(ip))
		goto bad;
	log_info("id", "session=%llu client=%s", (unsigned long long)s->serial,
		 log_quote(sb_str(&seen)));
	sb_free(&seen);
	session_printf(s, "* ID (\"name\" \"Roost\" \"version\" \"%s\")\r\n", ROOST_VERSION);
	imap_done(s, "OK", "ID completed");
	return;
bad:
	sb_free(&seen);
	imap_bad(s, ip->err ? ip->err : "bad ID list");
}

static void cmd_namespace(session_t *s)
{
	if (!no_args(s))
		return;
	session_printf(s, "* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n");
	imap_done(s, "OK", "NAMESPACE completed");
}

static void idle_synced(session_t *s)
{
	(void)s;   /* nothing to answer yet: IDLE goes on until DONE */
}

static void cmd_idle(session_t *s)
{
	if (!no_args(s))
		return;
	s->cmd->idling = true;
	session_printf(s, "+ idling\r\n");
	sb_truncate(&s->frame.cmd, 0);
	s->frame.line_start = 0;
	if (s->state == IS_SELECTED)
		notify_sync(s, true, idle_synced);
}

/* The client's line during IDLE: DONE ends it. */
static void idle_line(session_t *s)
{
	size_t len = s->frame.cmd.len;
	const char *line = s->frame.cmd.buf;
	while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	s->cmd->idling = false;
	if (len == 4 && strncasecmp(line, "DONE", 4) == 0)
		imap_done(s, "OK", "IDLE terminated");
	else
		imap_done(s, "BAD", "Expected DONE");
}

/* ---- the command table ------------------------------------------------------------------ */

#define ST_NOAUTH (1u << IS_NOAUTH)
#define ST_AUTH (1u << IS_AUTH)
#define ST_SEL (1u << IS_SELECTED)
#define ST_ANY (ST_NOAUTH | ST_AUTH | ST_SEL)
#define ST_IN (ST_AUTH | ST_SEL)

static const struct imap_command {
	const char *name;
	unsigned states;
	bool uid;            /* has a UID variant */
	bool no_expunge;     /* uses sequence numbers: no EXPUNGE while it runs */
	void (*fn)(session_t *s);
} imap_commands[] = {
	{ "CAPABILITY", ST_ANY, false, false, cmd_capability },
	{ "NOOP", ST_ANY, false, false, cmd_noop },
	{ "LOGOUT", ST_ANY, false, false, cmd_logout },
	{ "ID", ST_ANY, false, false, cmd_id },
	{ "STARTTLS", ST_NOAUTH, false, false, cmd_starttls },
	{ "LOGIN", ST_NOAUTH, false, false, cmd_login },
	{ "AUTHENTICATE", ST_NOAUTH, false, false, cmd_authenticate },
	{ "ENABLE", ST_IN, false, false, cmd_enable },
	{ "NAMESPACE", ST_IN, false, false, cmd_namespace },
	{ "IDLE", ST_IN, false, false, cmd_idle },
	{ "LIST", ST_IN, false, false, cmd_list },
	{ "LSUB", ST_IN, false, false, cmd_lsub },
	{ "CREATE", ST_IN, false, false, cmd_create },
	{ "DELETE", ST_IN, false, false, cmd_delete },
	{ "RENAME", ST_IN, false, false, cmd_rename },
	{ "SUBSCRIBE", ST_IN, false, false, cmd_subscribe },
	{ "UNSUBSCRIBE", ST_IN, false, false, cmd_unsubscribe },
	{ "STATUS", ST_IN, false, false, cmd_status },
	{ "SELECT", ST_IN, false, false, cmd_select },
	{ "EXAMINE", ST_IN, false, false, cmd_examine },
	{ "APPEND", ST_IN, false, false, cmd_append },
	{ "GETQUOTA", ST_IN, false, false, cmd_getquota },         /* quota.c */
	{ "GETQUOTAROOT", ST_IN, false, false, cmd_getquotaroot },
	{ "SETQUOTA", ST_IN, false, false, cmd_setquota },
	{ "CHECK", ST_SEL, false, false, cmd_noop },
	{ "CLOSE", ST_SEL, false, false, cmd_close },
	{ "UNSELECT", ST_SEL, false, false, cmd_unselect },
	{ "EXPUNGE", ST_SEL, true, false, cmd_expunge },
	{ "FETCH", ST_SEL, true, true, cmd_fetch },
	{ "STORE", ST_SEL, true, true, cmd_store },
	{ "SEARCH", ST_SEL, true, true, cmd_search },
	{ "COPY", ST_SEL, true, true, cmd_copy },
	{ "MOVE", ST_SEL, true, true, cmd_move },
};

/* Reads the tag and the command name of the assembled command and runs it. */
static void imap_command(session_t *s)
{
	cmd_t *c = xcalloc(1, sizeof *c);
	s->cmd = c;
	s->d->stats.commands++;
	imap_parser_t *ip = &c->ip;
	ip_init(ip, s->frame.cmd.buf, s->frame.cmd.len);
	const char *tag = ip_tag(ip);
	snprintf(c->tag, sizeof c->tag, "%s", tag ? tag : "*");
	const char *name = tag && ip_sp(ip) ? ip_atom(ip) : NULL;
	if (name == NULL) {
		imap_bad(s, tag ? "expected a command" : "expected a tag");
		return;
	}
	snprintf(c->name, sizeof c->name, "%s", name);
	for (char *p = c->name; *p; p++)
		*p = (char)toupper((unsigned char)*p);
	if (strcmp(c->name, "UID") == 0) {
		const char *sub = ip_sp(ip) ? ip_atom(ip) : NULL;
		if (sub == NULL) {
			imap_bad(s, "expected a command after UID");
			return;
		}
		c->uid = true;
		snprintf(c->name, sizeof c->name, "UID %s", sub);
		for (char *p = c->name; *p; p++)
			*p = (char)toupper((unsigned char)*p);
	}
	const char *base = c->uid ? c->name + 4 : c->name;
	for (size_t i = 0; i < ARRAY_LEN(imap_commands); i++) {
		const struct imap_command *k = &imap_commands[i];
		if (strcmp(k->name, base) != 0 || (c->uid && !k->uid))
			continue;
		if (!(k->states & (1u << s->state))) {
			imap_done(s, "BAD", "%s not allowed %s", c->name,
				  s->state == IS_NOAUTH ? "before login" :
				  s->state == IS_AUTH && (k->states & ST_SEL) ? "without a mailbox selected" :
				  "now");
			return;
		}
		c->no_expunge = k->no_expunge && !c->uid;
		log_debug("command", "session=%llu tag=%s name=%s", (unsigned long long)s->serial,
			  log_quote(c->tag), c->name);
		k->fn(s);
		return;
	}
	imap_done(s, "BAD", "Unknown command %s", log_quote(c->name));
}

void imap_process(session_t *s)
{
	uint64_t append_max = s->state == IS_NOAUTH ? 0 : (uint64_t)s->d->conf.max_size;
	while (!s->closed && !s->close_after_flush && !s->starttls_after_flush && s->inlen > 0 &&
	       !session_out_full(s)) {
		if (s->cmd != NULL && s->cmd->appending && !s->cmd->ended) {
			s->frame.lit_room = append_room(s);
			if (s->frame.divert && s->frame.lit_left > 0 && s->frame.lit_room == 0)
				return;   /* storaged has a chunk: TCP holds the rest */
		} else if (s->cmd != NULL && !((s->cmd->idling || s->cmd->sasl) && s->call == 0)) {
			return;   /* one command at a time: the rest waits */
		}
		size_t used = 0;
		enum frame_ev ev = imap_frame_feed(&s->frame, s->in, s->inlen, &used, append_max);
		if (ev == FR_LITERAL_BYTES)   /* they point into s->in: before it moves */
			append_stream_bytes(s, s->frame.lit_data, s->frame.lit_datalen);
		memmove(s->in, s->in + used, s->inlen - used);
		s->inlen -= used;
		char tag[IMAPD_TAG_MAX + 1];
		switch (ev) {
		case FR_MORE:
			if (s->frame.cmd.len > 0 || s->frame.lit_left > 0)
				session_quickack(s);
			return;
		case FR_CONTINUE:
			session_printf(s, "+ Ready for literal data\r\n");
			break;
		case FR_LINE_TOO_LONG:
			session_printf(s, "%s BAD Command line too long\r\n", s->frame.tag);
			if (++s->errors >= IMAPD_ERRORS_MAX) {
				session_printf(s, "* BYE Too many errors\r\n");
				imap_cmd_end(s);   /* an IDLE or AUTHENTICATE waiting for its line */
				session_close_after_flush(s);
			}
			break;
		case FR_LITERAL_TOO_BIG:
			imap_frame_tag(&s->frame, tag, sizeof tag);
			session_printf(s, "%s NO [TOOBIG] Literal too large\r\n", tag);
			imap_frame_reset(&s->frame);
			break;
		case FR_LITPLUS_TOO_BIG:
			/* its bytes come anyway (RFC 7888 4): we cannot resynchronise */
			session_printf(s, "* BYE [TOOBIG] Literal too large\r\n");
			imap_cmd_end(s);
			session_close_after_flush(s);
			return;
		case FR_APPEND_LITERAL:
			if (s->cmd != NULL) {
				/* an APPEND where IDLE wants DONE or AUTHENTICATE its line */
				session_printf(s, "* BYE Protocol error\r\n");
				imap_cmd_end(s);
				session_close_after_flush(s);
				return;
			}
			append_stream_begin(s);
			break;
		case FR_LITERAL_BYTES:
			break;   /* handed over above */
		case FR_COMMAND:
			if (s->cmd != NULL && s->cmd->appending)
				append_stream_end(s);
			else if (s->cmd != NULL && s->cmd->idling)
				idle_line(s);
			else if (s->cmd != NULL && s->cmd->sasl)
				sasl_line(s);
			else
				imap_command(s);
			break;
		}
	}
}
