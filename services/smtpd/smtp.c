/*
 * smtp.c — the SMTP session state machine (RFC 5321 with PIPELINING,
 * SIZE, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES, CHUNKING, STARTTLS).
 *
 *   state        event                         next
 *   GREET        greeting delay over           HELO        (input before: 554, close)
 *   HELO         EHLO/HELO                     READY
 *   READY        MAIL FROM ok                  MAIL
 *   READY        STARTTLS                      TLS -> HELO (everything forgotten)
 *   MAIL/RCPT    RCPT TO (ask storaged)        WAIT_RCPT -> RCPT (ok) / back (refused)
 *   RCPT         DATA                          DATA -> WAIT_STORE -> READY
 *   RCPT         BDAT n                        BDAT -> RCPT (more) / WAIT_STORE (LAST)
 *   any          RSET                          READY (or HELO before EHLO)
 *   any          QUIT, limits, idle timeout    QUIT (close after the reply)
 *
 * Commands go through one table {verb, allowed states, the reply when not
 * allowed, handler}. Lines are read from the session's input buffer one at
 * a time, so pipelined commands are simply processed in order; processing
 * stops in a WAIT_* state and resumes when storaged answers (deliver.c calls
 * smtp_rcpt_done / smtp_store_done). Every reply comes from reply.c's table.
 *
 * Command lines: at most SMTPD_LINE_MAX bytes with their CRLF; a longer
 * one gets 500 5.5.2 and is skipped up to its LF (resynchronised). A line
 * ending in a bare LF, or holding a CR or NUL elsewhere, is refused.
 */
#include "smtpd.h"
#include "log.h"
#include "util.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

const char *const smtp_state_names[ST_COUNT] = {
	"greet", "helo", "ready", "mail", "rcpt", "wait_rcpt", "data", "bdat", "wait_store",
	"tls", "quit",
};

#define S(x) (1u << (x))

void smtp_enter_state(session_t *s, enum smtp_state st)
{
	if (s->state != st)
		log_debug("state", "session=%llu from=%s to=%s", (unsigned long long)s->serial,
			  smtp_state_names[s->state], smtp_state_names[st]);
	s->state = st;
}

/* An error reply; too many of them end the session. */
static void smtp_error(session_t *s, enum reply_id id)
{
	session_reply(s, id);
	if (++s->errors > SMTPD_ERRORS_MAX) {
		session_reply(s, R_TOO_MANY_ERRORS);
		session_close_after_flush(s);
	}
}

/* Where a session without a transaction stands. */
static enum smtp_state smtp_idle_state(const session_t *s)
{
	return s->helo[0] != '\0' ? ST_READY : ST_HELO;
}

/* Drops the transaction in progress, if any, with its log line. */
static void smtp_abandon(session_t *s, const char *why)
{
	if (s->txn.active)
		deliver_log(s, why);
	txn_reset(s);
}

void smtp_greet(session_t *s)
{
	session_reply(s, R_GREETING, s->d->conf.hostname);
	smtp_enter_state(s, ST_HELO);
}

void smtp_tls_done(session_t *s)
{
	char desc[128];
	tls_describe(s->ssl, desc, sizeof desc);
	log_info("tls", "session=%llu ip=%s tls=%s", (unsigned long long)s->serial, s->ip, desc);
	/* RFC 3207 4.2: forget everything learnt before, EHLO included. */
	smtp_abandon(s, "starttls");
	s->helo[0] = '\0';
	s->esmtp = false;
	smtp_enter_state(s, ST_HELO);
}

/* ---- commands ------------------------------------------------------------ */

typedef void (*cmd_fn)(session_t *s, const char *arg, size_t len);

static bool no_args(session_t *s, size_t len)
{
	if (len == 0)
		return true;
	smtp_error(s, R_BAD_ARGS);
	return false;
}

static void cmd_ehlo_common(session_t *s, const char *arg, size_t len, bool esmtp)
{
	if (!addr_helo_valid(arg, len)) {
		smtp_error(s, R_BAD_HELO);
		return;
	}
	smtp_abandon(s, esmtp ? "ehlo" : "helo");
	memcpy(s->helo, arg, len);
	s->helo[len] = '\0';
	s->esmtp = esmtp;
	smtp_enter_state(s, ST_READY);
	if (!esmtp) {
		session_reply(s, R_HELO, s->d->conf.hostname);
		return;
	}
	/* The first line from the table; the extensions as continuation lines. */
	char line[SMTPD_LINE_MAX];
	size_t n = reply_format(line, sizeof line, R_HELO, s->d->conf.hostname);
	line[3] = '-';
	session_write(s, line, n);
	n = (size_t)snprintf(line, sizeof line,
			     "250-PIPELINING\r\n250-SIZE %ld\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
			     "250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n%s250 HELP\r\n",
			     s->d->conf.max_size,
			     s->d->tls != NULL && !s->tls ? "250-STARTTLS\r\n" : "");
	session_write(s, line, n);
}

static void cmd_ehlo(session_t *s, const char *arg, size_t len) { cmd_ehlo_common(s, arg, len, true); }
static void cmd_helo(session_t *s, const char *arg, size_t len) { cmd_ehlo_common(s, arg, len, false); }

/* Skips "FROM:" / "TO:" and optional spaces (strict RFC 5321 has none,
 * many clients send one). NULL if the keyword is missing. */
static const char *after_keyword(const char *arg, size_t len, const char *kw, size_t *rest)
{
	size_t k = strlen(kw);
	if (len < k || strncasecmp(arg, kw, k) != 0)
		return NULL;
	size_t i = k;
	while (i < len && arg[i] == ' ')
		i++;
	*rest = len - i;
	return arg + i;
}

struct mail_params {
	long size;
	bool body8, smtputf8;
};

/* ESMTP parameters of MAIL FROM (SIZE, BODY, SMTPUTF8). R_OK or the reply. */
static enum reply_id mail_params(const char *p, size_t len, struct mail_params *mp)
{
	unsigned seen = 0, count = 0;
	size_t i = 0;
	while (i < len) {
		if (p[i] != ' ')
			return R_SYNTAX;
		while (i < len && p[i] == ' ')
			i++;
		if (i == len)
			break;
		size_t k = i;
		while (i < len && p[i] != ' ' && p[i] != '=')
			i++;
		size_t klen = i - k, v = i, vlen = 0;
		if (i < len && p[i] == '=') {
			v = ++i;
			while (i < len && p[i] != ' ')
				i++;
			vlen = i - v;
			if (vlen == 0)
				return R_SYNTAX;
		}
		if (++count > SMTPD_PARAMS_MAX)
			return R_SYNTAX;
		if (klen == 4 && strncasecmp(p + k, "SIZE", 4) == 0 && !(seen & 1)) {
			seen |= 1;
			if (vlen == 0 || vlen > 18)
				return R_BAD_PARAM;
			long n = 0;
			for (size_t j = 0; j < vlen; j++) {
				if (!isdigit((unsigned char)p[v + j]))
					return R_BAD_PARAM;
				n = n * 10 + (p[v + j] - '0');
			}
			mp->size = n;
		} else if (klen == 4 && strncasecmp(p + k, "BODY", 4) == 0 && !(seen & 2)) {
			seen |= 2;
			if (vlen == 4 && strncasecmp(p + v, "7BIT", 4) == 0)
				mp->body8 = false;
			else if (vlen == 8 && strncasecmp(p + v, "8BITMIME", 8) == 0)
				mp->body8 = true;
			else
				return R_NO_PARAMS;  /* BINARYMIME is not offered */
		} else if (klen == 8 && strncasecmp(p + k, "SMTPUTF8", 8) == 0 && vlen == 0 &&
			   !(seen & 4)) {
			seen |= 4;
			mp->smtputf8 = true;
		} else {
			return R_NO_PARAMS;
		}
	}
	return R_OK;
}

static enum reply_id path_error(enum addr_err e, enum reply_id syntax)
{
	switch (e) {
	case ADDR_NEED_UTF8: return R_UTF8_NEEDED;
	case ADDR_BAD_UTF8: return R_BAD_UTF8;
	default: return syntax;
	}
}

static void cmd_mail(session_t *s, const char *arg, size_t len)
{
	size_t rest, used;
	const char *p = after_keyword(arg, len, "FROM:", &rest);
	smtp_path_t from;
	struct mail_params mp = { 0, false, false };
	if (p == NULL) {
		smtp_error(s, R_SYNTAX);
		return;
	}
	enum addr_err e = addr_parse_path(p, rest, ADDR_ALLOW_NULL | ADDR_UTF8, &from, &used);
	if (e != ADDR_OK) {
		smtp_error(s, path_error(e, R_BAD_SENDER));
		return;
	}
	enum reply_id r = mail_params(p + used, rest - used, &mp);
	if (r == R_OK && from.utf8 && !mp.smtputf8)
		r = R_UTF8_NEEDED;
	if (r == R_OK && mp.size > s->d->conf.max_size)
		r = R_SIZE_EXCEEDED;
	if (r == R_OK)
		r = deliver_policy_mail(s, &from);
	if (r != R_OK) {
		smtp_error(s, r);
		return;
	}
	txn_begin(s);
	snprintf(s->txn.from, sizeof s->txn.from, "%s", from.addr);
	s->txn.smtputf8 = mp.smtputf8;
	s->txn.body8 = mp.body8;
	s->txn.size_decl = mp.size;
	session_reply(s, R_MAIL_OK);
	smtp_enter_state(s, ST_MAIL);
}

static void cmd_rcpt(session_t *s, const char *arg, size_t len)
{
	size_t rest, used;
	const char *p = after_keyword(arg, len, "TO:", &rest);
	smtp_path_t to;
	if (p == NULL) {
		smtp_error(s, R_SYNTAX);
		return;
	}
	unsigned flags = ADDR_POSTMASTER | (s->txn.smtputf8 ? ADDR_UTF8 : 0);
	enum addr_err e = addr_parse_path(p, rest, flags, &to, &used);
	if (e != ADDR_OK) {
		smtp_error(s, path_error(e, R_BAD_RCPT));
		return;
	}
	if (used != rest) {  /* NOTIFY and ORCPT need DSN, which we do not offer */
		smtp_error(s, p[used] == ' ' ? R_NO_PARAMS : R_SYNTAX);
		return;
	}
	if (s->txn.nrcpt >= SMTPD_RCPT_MAX) {
		smtp_error(s, R_TOO_MANY_RCPTS);
		return;
	}
	/* Never looked up: a quoted local part that is not a plain dot-atom
	 * ("user@other"@ours) names nobody here; an address literal is never
	 * one we host. A UTF-8 domain (SMTPUTF8) is: storaged turns it into
	 * the A-labels it keeps (lib/idna.h). */
	if (to.quoted) {
		smtp_error(s, R_NO_USER);
		return;
	}
	if (to.literal) {
		smtp_error(s, R_RELAY);
		return;
	}
	smtp_enter_state(s, ST_WAIT_RCPT);
	deliver_rcpt(s, &to);
}

void smtp_rcpt_done(session_t *s, enum reply_id id, const char *arg)
{
	(void)arg;
	if (id == R_RCPT_OK)
		session_reply(s, id);
	else
		smtp_error(s, id);
	if (s->state == ST_WAIT_RCPT)
		smtp_enter_state(s, s->txn.nrcpt > 0 ? ST_RCPT : ST_MAIL);
}

static void cmd_data(session_t *s, const char *arg, size_t len)
{
	if (!no_args(s, len))
		return;
	(void)arg;
	if (s->txn.bdat) {
		smtp_error(s, R_MIXED_BDAT);
		return;
	}
	deliver_open(s);
	dotdec_init(&s->txn.dd);
	session_reply(s, R_DATA_GO);
	smtp_enter_state(s, ST_DATA);
}

/* BDAT size [LAST] (RFC 3030). The bytes follow whatever we answer, so a
 * BDAT we refuse still has its bytes read and dropped. */
static void cmd_bdat(session_t *s, const char *arg, size_t len)
{
	uint64_t n = 0;
	size_t i = 0;
	bool last = false;
	while (i < len && isdigit((unsigned char)arg[i]) && i < 18)
		n = n * 10 + (uint64_t)(arg[i++] - '0');
	if (i == 0 || (i < len && arg[i] != ' ')) {
		/* without a size we cannot know where the chunk ends: resync impossible */
		session_reply(s, R_SYNTAX);
		session_close_after_flush(s);
		return;
	}
	if (i < len) {
		while (i < len && arg[i] == ' ')
			i++;
		if (len - i != 4 || strncasecmp(arg + i, "LAST", 4) != 0) {
			session_reply(s, R_SYNTAX);
			session_close_after_flush(s);
			return;
		}
		last = true;
	}
	enum reply_id err = R_GREETING;
	if (s->state == ST_HELO)
		err = R_NEED_HELO;
	else if (s->state == ST_READY)
		err = R_NEED_MAIL;
	else if (s->state == ST_MAIL)
		err = R_NEED_RCPT;
	if (err != R_GREETING) {
		s->bdat_error = err;
		s->bdat_skip = n;
		s->bdat_return = s->state;
		smtp_enter_state(s, ST_BDAT);
		return;
	}
	if (!s->txn.bdat)
		deliver_open(s);
	s->txn.bdat = true;
	s->txn.bdat_left = n;
	s->txn.bdat_last = last;
	smtp_enter_state(s, ST_BDAT);
}

static void cmd_rset(session_t *s, const char *arg, size_t len)
{
	(void)arg;
	if (!no_args(s, len))
		return;
	smtp_abandon(s, "rset");
	smtp_enter_state(s, smtp_idle_state(s));
	session_reply(s, R_RESET);
}

static void cmd_noop(session_t *s, const char *arg, size_t len)
{
	(void)arg; (void)len;   /* NOOP may carry a string, which is ignored */
	session_reply(s, R_NOOP);
}

static void cmd_vrfy(session_t *s, const char *arg, size_t len)
{
	(void)arg; (void)len;   /* never reveal who exists (RFC 5321 3.5.3) */
	session_reply(s, R_VRFY);
}

static void cmd_help(session_t *s, const char *arg, size_t len)
{
	(void)arg; (void)len;
	session_reply(s, R_HELP);
}

/* EXPN would list an alias's members; ETRN, TURN and AUTH are not for an
 * MX (RFC 5321 3.5.3, 7.3): known, refused. */
static void cmd_not_impl(session_t *s, const char *arg, size_t len)
{
	(void)arg; (void)len;
	smtp_error(s, R_NOT_IMPLEMENTED);
}

static void cmd_quit(session_t *s, const char *arg, size_t len)
{
	(void)arg;
	if (!no_args(s, len))
		return;
	smtp_abandon(s, "quit");
	session_reply(s, R_BYE);
	session_close_after_flush(s);
}

static void cmd_starttls(session_t *s, const char *arg, size_t len)
{
	(void)arg;
	if (!no_args(s, len))
		return;
	if (s->tls) {
		smtp_error(s, R_TLS_ALREADY);
		return;
	}
	if (s->d->tls == NULL) {
		smtp_error(s, R_TLS_UNAVAILABLE);
		return;
	}
	if (!s->esmtp) {
		smtp_error(s, R_ORDER);
		return;
	}
	session_reply(s, R_TLS_GO);
	s->starttls_after_flush = true;
}

/* Commands that EHLO / a transaction does not change are allowed in
 * every state where a command is read. */
#define ANY (S(ST_HELO) | S(ST_READY) | S(ST_MAIL) | S(ST_RCPT))

static const struct command {
	const char *verb;
	unsigned states;          /* where it is allowed */
	enum reply_id refused;    /* the reply elsewhere (by state, see smtp_refuse) */
	cmd_fn fn;
} commands[] = {
	{ "EHLO", ANY, R_ORDER, cmd_ehlo },
	{ "HELO", ANY, R_ORDER, cmd_helo },
	{ "MAIL", S(ST_READY), R_NESTED_MAIL, cmd_mail },
	{ "RCPT", S(ST_MAIL) | S(ST_RCPT), R_NEED_MAIL, cmd_rcpt },
	{ "DATA", S(ST_RCPT), R_NEED_RCPT, cmd_data },
	{ "BDAT", ANY, R_ORDER, cmd_bdat },
	{ "RSET", ANY, R_ORDER, cmd_rset },
	{ "NOOP", ANY, R_ORDER, cmd_noop },
	{ "VRFY", ANY, R_ORDER, cmd_vrfy },
	{ "HELP", ANY, R_ORDER, cmd_help },
	{ "QUIT", ANY, R_ORDER, cmd_quit },
	{ "STARTTLS", S(ST_READY), R_ORDER, cmd_starttls },
	{ "EXPN", ANY, R_ORDER, cmd_not_impl },
	{ "ETRN", ANY, R_ORDER, cmd_not_impl },
	{ "TURN", ANY, R_ORDER, cmd_not_impl },
	{ "AUTH", ANY, R_ORDER, cmd_not_impl },
};

/* The reply for a command in the wrong state. */
static enum reply_id smtp_refuse(const session_t *s, const struct command *c)
{
	if (s->state == ST_HELO)
		return R_NEED_HELO;
	if (c->fn == cmd_mail)
		return R_NESTED_MAIL;
	if (c->fn == cmd_data)
		return s->state == ST_MAIL ? R_NEED_RCPT : R_NEED_MAIL;
	return c->refused;
}

/* Runs one command line (without its CRLF). */
static void smtp_command(session_t *s, const char *line, size_t len)
{
	size_t v = 0;
	while (v < len && line[v] != ' ')
		v++;
	size_t a = v < len ? v + 1 : v;
	if (++s->commands > SMTPD_COMMANDS_MAX) {
		session_reply(s, R_TOO_MANY_COMMANDS);
		session_close_after_flush(s);
		return;
	}
	for (size_t i = 0; i < ARRAY_LEN(commands); i++) {
		const struct command *c = &commands[i];
		if (strlen(c->verb) != v || strncasecmp(line, c->verb, v) != 0)
			continue;
		if (!(c->states & S(s->state))) {
			if (c->fn == cmd_bdat)
				break;  /* never: BDAT is allowed in ANY */
			smtp_error(s, smtp_refuse(s, c));
			return;
		}
		c->fn(s, line + a, len - a);
		return;
	}
	char verb[16];
	snprintf(verb, sizeof verb, "%.*s", (int)(v < 15 ? v : 15), line);
	log_debug("command.unknown", "session=%llu verb=%s", (unsigned long long)s->serial,
		  log_quote(verb));
	smtp_error(s, R_UNKNOWN);
}

/* Takes one command line from the input buffer. false: no complete line. */
static bool smtp_line(session_t *s)
{
	char *lf = memchr(s->in, '\n', s->inlen);
	if (s->discard_line) {
		/* the rest of an over-long line: drop it up to its LF */
		session_consume(s, lf ? (size_t)(lf - s->in) + 1 : s->inlen);
		if (lf)
			s->discard_line = false;
		return lf != NULL;
	}
	if (lf == NULL || (size_t)(lf - s->in) + 1 > SMTPD_LINE_MAX) {
		if (lf == NULL && s->inlen < SMTPD_LINE_MAX)
			return false;
		smtp_error(s, R_LINE_TOO_LONG);
		s->discard_line = lf == NULL;
		session_consume(s, lf ? (size_t)(lf - s->in) + 1 : s->inlen);
		return true;
	}
	size_t n = (size_t)(lf - s->in);   /* bytes before the LF */
	char line[SMTPD_LINE_MAX];
	if (n == 0 || s->in[n - 1] != '\r') {
		session_consume(s, n + 1);
		smtp_error(s, R_BARE_LF_CMD);
		return true;
	}
	memcpy(line, s->in, n - 1);
	line[n - 1] = '\0';
	session_consume(s, n + 1);
	if (memchr(line, '\r', n - 1) != NULL || memchr(line, '\0', n - 1) != NULL) {
		smtp_error(s, R_BAD_CHARS);
		return true;
	}
	smtp_command(s, line, n - 1);
	return true;
}

/* ---- message bytes ---------------------------------------------------------- */

/* DATA: decodes what is buffered into the store; false when it must wait. */
static bool smtp_data_bytes(session_t *s)
{
	txn_t *t = &s->txn;
	char tmp[8192];
	while (s->inlen > 0 && !t->dd.done) {
		size_t room = deliver_room(s);
		if (room < 2)
			return false;  /* a full chunk waits for storaged: stop reading */
		/* decoded straight into the chunk buffer; into tmp only when
		 * the bytes are being dropped */
		char *dst = deliver_space(s);
		size_t out = 0;
		size_t used = dotdec_feed(&t->dd, s->in, s->inlen, dst ? dst : tmp,
					  dst || room < sizeof tmp ? room : sizeof tmp, &out);
		session_consume(s, used);
		deliver_append(s, dst ? dst : tmp, out);
	}
	if (!t->dd.done)
		return false;
	if (t->dd.bare && t->fail == 0)
		t->fail = R_BARE_NEWLINE;
	smtp_enter_state(s, ST_WAIT_STORE);
	deliver_finish(s);
	return true;
}

/* BDAT: copies the chunk's bytes into the store; false when it must wait. */
static bool smtp_bdat_bytes(session_t *s)
{
	txn_t *t = &s->txn;
	if (s->bdat_error != R_GREETING) {
		size_t n = s->inlen < s->bdat_skip ? s->inlen : (size_t)s->bdat_skip;
		session_consume(s, n);
		s->bdat_skip -= n;
		if (s->bdat_skip > 0)
			return false;
		enum reply_id e = s->bdat_error;
		s->bdat_error = R_GREETING;
		smtp_enter_state(s, s->bdat_return);
		smtp_error(s, e);
		return true;
	}
	while (t->bdat_left > 0 && s->inlen > 0) {
		size_t room = deliver_room(s);
		if (room == 0)
			return false;
		size_t n = s->inlen;
		if (n > room)
			n = room;
		if (n > t->bdat_left)
			n = (size_t)t->bdat_left;
		deliver_append(s, s->in, n);
		session_consume(s, n);
		t->bdat_left -= n;
	}
	if (t->bdat_left > 0)
		return false;
	if (t->bdat_last) {
		smtp_enter_state(s, ST_WAIT_STORE);
		deliver_finish(s);
		return true;
	}
	if (t->fail != 0) {
		/* RFC 3030 2: the transaction has failed; the client should RSET */
		enum reply_id e = (enum reply_id)t->fail;
		deliver_log(s, reply_table[e].enh);
		txn_reset(s);
		smtp_enter_state(s, smtp_idle_state(s));
		smtp_error(s, e);
		return true;
	}
	char count[24];
	snprintf(count, sizeof count, "%llu", (unsigned long long)t->size);
	session_reply(s, R_BDAT_OK, count);
	smtp_enter_state(s, ST_RCPT);
	return true;
}

void smtp_store_done(session_t *s, enum reply_id id)
{
	if (id == R_STORED) {
		session_reply(s, R_STORED, s->txn.id);
	} else {
		smtp_error(s, id);
	}
	deliver_log(s, id == R_STORED ? "stored" : reply_table[id].enh);
	txn_reset(s);
	if (s->state == ST_WAIT_STORE)
		smtp_enter_state(s, smtp_idle_state(s));
}

void smtp_process(session_t *s)
{
	for (;;) {
		if (s->closed || s->close_after_flush || s->starttls_after_flush)
			return;
		switch (s->state) {
		case ST_HELO: case ST_READY: case ST_MAIL: case ST_RCPT:
			if (!smtp_line(s))
				return;
			break;
		case ST_DATA:
			if (!smtp_data_bytes(s))
				return;
			break;
		case ST_BDAT:
			if (!smtp_bdat_bytes(s))
				return;
			break;
		default:
			return;  /* waiting for storaged, the greeting or TLS */
		}
		if (s->outlen >= SMTPD_OUTBUF_MAX)
			return;  /* the client is not reading its replies */
	}
}
