/*
 * smtpd.h — the inbound SMTP server (issue 4; docs/SMTPD.md): remote mail
 * servers deliver to our users on port 25.
 *
 * Files, one job each:
 *   main.c     table of contents: config, bus client, smtpd.control, listener, loop
 *              (TLS contexts: proto/tls.c, shared with imapd)
 *   net.c      the listener and the session I/O: accept, per-IP limit, non-blocking
 *              reads and writes (plain or TLS), greeting delay, idle timeout
 *   smtp.c     the session state machine: commands, replies, DATA and BDAT
 *   reply.c    the one reply table (code, enhanced code, text)
 *   addr.c     the strict RFC 5321 path parser (MAIL FROM / RCPT TO)
 *   data.c     the DATA decoder (dot-stuffing, end only on CRLF.CRLF, bare CR/LF)
 *              and the header scanner that counts Received fields
 *   deliver.c  storaged at RCPT TO and the streamed store after DATA/BDAT, the
 *              Received header, the policy/DKIM hook points, the transaction log line
 *
 * Ownership: a session_t belongs to net.c (created on accept, freed only at the
 * end of a top-level event: session_settle); smtp.c and deliver.c borrow it and
 * ask net.c to close it. A txn_t lives inside its session; its json_t members
 * and buffers are owned by it and released by txn_reset.
 */
#ifndef ROOST_SMTPD_H
#define ROOST_SMTPD_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus.h"
#include "config.h"
#include "loop.h"
#include "tls.h"

/* ---- limits (every length and count from outside is bounded) ------------ */
#define SMTPD_LINE_MAX 512          /* command line incl. CRLF (RFC 5321 4.5.3.1.4) */
#define SMTPD_LOCAL_MAX 64          /* local part (4.5.3.1.1) */
#define SMTPD_DOMAIN_MAX 255        /* domain (4.5.3.1.2) */
#define SMTPD_PATH_MAX 256          /* path incl. punctuation (4.5.3.1.3) */
#define SMTPD_RCPT_MAX 100          /* recipients per transaction (4.5.3.1.8) */
#define SMTPD_PARAMS_MAX 10         /* ESMTP parameters per MAIL/RCPT */
#define SMTPD_HOPS_MAX 50           /* Received fields a message may carry in */
#define SMTPD_COMMANDS_MAX 2000     /* commands per session */
#define SMTPD_ERRORS_MAX 20         /* error replies per session before 421 */
#define SMTPD_INBUF 8192            /* socket read buffer per session */
#define SMTPD_OUTBUF_MAX 65536      /* replies queued before we stop reading */
#define SMTPD_CHUNK (128 * 1024)    /* message bytes per storaged chunk, at most */
#define SMTPD_CHUNK_MIN (16 * 1024) /* ... and at least, however many sessions stream */
#define SMTPD_DATA_BUDGET (2L * 1024 * 1024) /* all sessions' chunks together (deliver.c) */
#define SMTPD_HEADROOM 4096         /* bytes of our own headers within max size */
#define SMTPD_QID_MAX 32
#define SMTPD_RCPT_CACHE_MS 5000    /* a positive RCPT answer is reused this long */
#define SMTPD_RCPT_CACHE_MAX 1024   /* addresses in that cache (then it starts over) */

/* ---- configuration ---------------------------------------------------------- */
typedef struct smtpd_conf {
	const char *config_path;  /* roost.conf read at start (reload reads it again) */
	const char *bus_dir;
	const char *data_dir;
	const char *hostname;
	const char *listen;
	long port;
	long max_size;            /* SIZE we advertise and enforce */
	long idle_ms;             /* RFC 5321 4.5.3.2: 5 min */
	long greet_delay_ms;      /* early-talker window before the greeting */
	long max_per_ip;          /* concurrent sessions per client address */
	long max_sessions;        /* concurrent sessions in this process */
	long store_timeout_ms;    /* per try of a storaged call */
	char *tls_cert, *tls_key; /* owned */
} smtpd_conf_t;

/* Reads the smtpd keys of cfg into c (strings borrowed from cfg except the
 * TLS paths); -1 with a reason in err. */
int smtpd_conf_load(smtpd_conf_t *c, const config_t *cfg, char *err, size_t errlen);
void smtpd_conf_clear(smtpd_conf_t *c);

/* ---- replies (reply.c) ------------------------------------------------------ */
enum reply_id {
	R_GREETING, R_BYE, R_OK, R_HELO, R_RESET, R_NOOP, R_VRFY, R_HELP, R_MAIL_OK,
	R_RCPT_OK, R_DATA_GO, R_STORED, R_BDAT_OK, R_TLS_GO,
	R_SHUTDOWN, R_TIMEOUT, R_TOO_MANY_SESSIONS, R_TOO_MANY_PER_IP, R_TOO_MANY_ERRORS,
	R_TOO_MANY_COMMANDS, R_TEMP_STORE, R_DISK_FULL, R_MAILBOX_FULL, R_TOO_MANY_RCPTS,
	R_TLS_UNAVAILABLE, R_LINE_TOO_LONG, R_UNKNOWN, R_SYNTAX, R_BAD_ARGS, R_BAD_HELO,
	R_NO_PARAMS, R_NOT_IMPLEMENTED, R_ORDER, R_NEED_HELO, R_NEED_MAIL, R_NEED_RCPT,
	R_NESTED_MAIL, R_TLS_ALREADY, R_MIXED_BDAT, R_BAD_SENDER, R_BAD_RCPT, R_NO_USER,
	R_RELAY, R_UTF8_NEEDED, R_SIZE_EXCEEDED, R_BAD_PARAM, R_BARE_NEWLINE, R_HOPS,
	R_EARLY_TALKER, R_POLICY, R_BAD_UTF8, R_BARE_LF_CMD, R_BAD_CHARS,
	R_COUNT
};

typedef struct reply {
	int code;             /* 250 */
	const char *enh;      /* "2.1.0", or NULL: none (greeting, EHLO, 354) */
	const char *text;     /* printf format; %s arguments documented per row */
} reply_t;

extern const reply_t reply_table[R_COUNT];
/* Formats reply id with its arguments as one line "code enh text\r\n" into
 * buf; returns the length (cut to fit). */
size_t reply_format(char *buf, size_t len, enum reply_id id, ...);
size_t reply_vformat(char *buf, size_t len, enum reply_id id, va_list ap);

/* ---- paths (addr.c) ------------------------------------------------------------ */
enum addr_err {
	ADDR_OK = 0,
	ADDR_SYNTAX,      /* not an RFC 5321 path */
	ADDR_TOO_LONG,    /* local part, domain or path over its limit */
	ADDR_NEED_UTF8,   /* non-ASCII without SMTPUTF8 */
	ADDR_BAD_UTF8,    /* malformed UTF-8 */
};

#define ADDR_ALLOW_NULL 1u  /* <> is fine (MAIL FROM) */
#define ADDR_UTF8 2u        /* SMTPUTF8 was given */
#define ADDR_POSTMASTER 4u  /* <postmaster> without a domain is fine (RCPT TO) */

typedef struct smtp_path {
	char addr[SMTPD_PATH_MAX + 1]; /* local@domain ("" for <>, "postmaster" alone) */
	size_t local_len;     /* bytes of the local part in addr */
	bool null;            /* <> */
	bool postmaster;      /* <postmaster> */
	bool quoted;          /* the local part is a quoted string that is not a dot-atom */
	bool literal;         /* the domain is an address literal */
	bool utf8;            /* non-ASCII bytes */
	bool route;           /* a source route was given (and dropped) */
} smtp_path_t;

/*
 * Parses a path "<...>" at s[0..len): optional source route (dropped, RFC
 * 5321 4.1.1.3 / C), Mailbox with a dot-string or quoted local part (a quoted
 * one that is a dot-atom is unquoted) and a domain or address literal.
 * *used is set to the bytes read (after '>'). ADDR_OK or an addr_err.
 */
enum addr_err addr_parse_path(const char *s, size_t len, unsigned flags, smtp_path_t *p,
			      size_t *used);
/* True if s[0..len) is well-formed UTF-8 without overlongs or surrogates. */
bool addr_utf8_valid(const char *s, size_t len);
/* EHLO/HELO argument: a domain or an address literal. */
bool addr_helo_valid(const char *s, size_t len);

/* ---- DATA decoding (data.c) ---------------------------------------------------- */
typedef struct dotdec {
	int st;           /* where in a line we are (data.c) */
	bool bare;        /* a bare CR or LF was seen */
	bool done;        /* CRLF.CRLF seen */
} dotdec_t;

void dotdec_init(dotdec_t *d);
/*
 * Decodes DATA bytes in[0..inlen): removes dot-stuffing and stops after the
 * end-of-data line (only CRLF "." CRLF ends; a bare LF or CR never does).
 * Writes at most outcap bytes to out (*outlen); returns the bytes of in
 * consumed (less than inlen when out is full or the end was reached).
 */
size_t dotdec_feed(dotdec_t *d, const char *in, size_t inlen, char *out, size_t outcap,
		   size_t *outlen);

typedef struct hdrscan {
	int st;
	size_t matched;
	unsigned received;   /* Received fields seen in the header */
	bool body;           /* the header has ended */
} hdrscan_t;

void hdrscan_init(hdrscan_t *h);
/* Feeds message bytes; counts Received fields until the empty line. */
void hdrscan_feed(hdrscan_t *h, const char *p, size_t n);

/* ---- the process -------------------------------------------------------------- */
typedef struct session session_t;
typedef struct hmap hmap_t;

typedef struct smtpd {
	loop_t *loop;
	smtpd_conf_t conf;
	bus_client_t *bus;
	bus_control_t *ctl;
	bus_pub_t *pub;           /* smtpd.message.received */
	tls_t *tls;               /* NULL: no certificate, STARTTLS not offered */
	struct listener *listener; /* proto/listener.h; NULL when draining */
	session_t *sessions;      /* list of live sessions */
	loop_timer_t *drain;      /* after SIGTERM: waits for commits in flight */
	loop_timer_t *trim;       /* no session left: give the heap back (net.c) */
	int64_t drain_until;      /* loop ms: stop even if one is still committing */
	hmap_t *per_ip;           /* client address -> sessions (as uintptr_t) */
	hmap_t *rcpt_cache;       /* address -> storaged's positive answer (deliver.c) */
	uint64_t serial;
	size_t chunk_bytes;       /* all sessions' chunk buffers, filling or in flight (deliver.c) */
	struct {
		uint64_t connections, refused, early, timeouts, messages, rejected, tempfail,
			 bytes, rcpts;
		long sessions;
	} stats;
} smtpd_t;

/* ---- transactions (deliver.c) ----------------------------------------------- */
typedef struct txn {
	char id[SMTPD_QID_MAX];   /* the queue id: logged, the idempotency key */
	bool active;              /* MAIL FROM accepted */
	char from[SMTPD_PATH_MAX + 1];
	bool smtputf8, body8;
	long size_decl;           /* SIZE= of MAIL FROM, 0 if none */
	char *rcpts[SMTPD_RCPT_MAX]; /* accepted recipients as given (owned) */
	size_t nrcpt;
	json_t *deliveries;       /* [{address}] local users, each once (owned) */
	json_t *forwards;         /* [address] alias targets elsewhere (owned) */
	/* the message in flight */
	bus_stream_t *stream;     /* to storaged (owned) */
	char *buf;                /* bytes not yet sent (owned; grows to SMTPD_CHUNK) */
	size_t buflen, bufcap;
	size_t flying;            /* bytes of the chunk in flight (counted in chunk_bytes) */
	uint64_t size;            /* message bytes received (ours excluded) */
	uint64_t sent;            /* bytes handed to the stream */
	bool inflight;            /* a chunk awaits its acknowledgement */
	bool ended;               /* the client's last byte is in */
	bool committing;          /* the last chunk is sent */
	int fail;                 /* reply for the end instead of storing (0: none) */
	dotdec_t dd;
	hdrscan_t hs;
	uint64_t bdat_left;       /* bytes of the current BDAT chunk still to read */
	bool bdat, bdat_last;
	uint64_t call;            /* storaged.rcpt.resolve in flight (0: none) */
	char pending[SMTPD_PATH_MAX + 1]; /* the recipient being resolved */
	bool calling;             /* inside a bus call: callbacks must not resume */
	int64_t started;
} txn_t;

/* ---- sessions ---------------------------------------------------------------- */
enum smtp_state {
	ST_GREET,      /* connected, greeting not sent yet (early-talker window) */
	ST_HELO,       /* greeted: waiting for EHLO/HELO */
	ST_READY,      /* EHLO done: MAIL, STARTTLS... */
	ST_MAIL,       /* MAIL accepted: RCPT */
	ST_RCPT,       /* at least one RCPT: more RCPT, DATA, BDAT */
	ST_WAIT_RCPT,  /* asking storaged about a recipient */
	ST_DATA,       /* reading DATA bytes */
	ST_BDAT,       /* reading a BDAT chunk */
	ST_WAIT_STORE, /* last chunk sent: waiting for the durable commit */
	ST_TLS,        /* STARTTLS handshake */
	ST_QUIT,       /* closing after the last reply */
	ST_COUNT
};

struct session {
	smtpd_t *d;
	session_t *prev, *next;
	uint64_t serial;
	int fd;
	short events;             /* what the loop watches on fd now */
	char ip[64];
	unsigned port;
	SSL *ssl;
	bool tls, tls_want_write;
	size_t inlen;             /* bytes in in[] (last member) */
	char *out;                /* replies not yet written (owned) */
	size_t outlen, outcap;
	loop_timer_t *idle, *greet;
	bool closed;              /* gone: freed at the end of the event */
	bool close_after_flush;
	bool eof;                 /* the peer closed its side */
	bool drained;             /* a recv found the socket empty; no more until epoll says readable */
	bool starttls_after_flush;
	bool discard_line;        /* resynchronising after an over-long line */
	enum smtp_state state;
	char helo[SMTPD_DOMAIN_MAX + 3];
	bool esmtp;
	unsigned commands, errors;
	enum reply_id bdat_error; /* BDAT bytes to discard, then this reply (0: none) */
	uint64_t bdat_skip;
	enum smtp_state bdat_return; /* state to go back to after discarding */
	txn_t txn;
	/* Last: a new session zeroes everything before it, not these 16 KiB
	 * (that memset was 7% of smtpd's instructions per 4 KiB message). */
	char in[SMTPD_INBUF];
};

/* net.c */
int net_listen(smtpd_t *d, char *err, size_t errlen);
void net_close_all(smtpd_t *d);
/* SIGTERM/SIGINT: stop accepting; sessions whose message storaged is
 * committing get their answer first, the others 421 now; the loop stops
 * when none is left (a second call stops it at once). */
void net_drain(smtpd_t *d);
/* Queues bytes to the client (copied). */
void session_write(session_t *s, const char *buf, size_t len);
/* Queues reply id with its arguments. */
void session_reply(session_t *s, enum reply_id id, ...);
/* Closes once the queued replies are written. */
void session_close_after_flush(session_t *s);
/* Drops the connection now (nothing more is written). */
void session_abort(session_t *s, const char *why);
/* After an asynchronous answer: go on reading and processing, then settle. */
void session_resume(session_t *s);
/* Consumes n bytes at the front of the input buffer. */
void session_consume(session_t *s, size_t n);

/* smtp.c */
extern const char *const smtp_state_names[ST_COUNT];
void smtp_enter_state(session_t *s, enum smtp_state st);
/* The greeting (after the early-talker window). */
void smtp_greet(session_t *s);
/* Processes buffered input as far as the state allows. */
void smtp_process(session_t *s);
/* The TLS handshake finished: the session starts over (RFC 3207 4.2). */
void smtp_tls_done(session_t *s);
/* Replies for the deliver path (called by deliver.c when storaged answers). */
void smtp_rcpt_done(session_t *s, enum reply_id id, const char *arg);
void smtp_store_done(session_t *s, enum reply_id id);

/* deliver.c */
/* Starts a transaction (MAIL FROM accepted): assigns the queue id. */
void txn_begin(session_t *s);
/* Forgets the transaction: cancels bus calls, frees buffers. */
void txn_reset(session_t *s);
/* Hook: policyd at MAIL FROM (SPF, FCrDNS). Returns R_OK to accept. */
enum reply_id deliver_policy_mail(session_t *s, const smtp_path_t *from);
/* Asks storaged where rcpt goes; answers through smtp_rcpt_done (at once
 * when the answer is in the RCPT cache). */
void deliver_rcpt(session_t *s, const smtp_path_t *rcpt);
/* Empties the RCPT cache (at exit). */
void deliver_cache_free(smtpd_t *d);
/* Opens the stream and writes the Received header (DATA / first BDAT). */
void deliver_open(session_t *s);
/* Room left in the chunk buffer (0: wait for an acknowledgement). */
size_t deliver_room(session_t *s);
/* Where deliver_room's bytes may be written in place (then passed to
 * deliver_append without a copy), or NULL when they are being dropped. */
char *deliver_space(session_t *s);
/* Appends decoded message bytes (at most deliver_room). */
void deliver_append(session_t *s, const char *p, size_t n);
/* The client's message is complete: commit (or fail) and answer through
 * smtp_store_done. */
void deliver_finish(session_t *s);
/* One log line for the transaction. */
void deliver_log(session_t *s, const char *result);

#endif
