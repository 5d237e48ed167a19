/*
 * imapd.h — the IMAP4rev1 server (issue 5; docs/IMAPD.md): our users read
 * their mail with it. Every command becomes storaged requests on the bus;
 * IDLE and the untagged updates come from storaged.mailbox.changed events.
 *
 * Files, one job each:
 *   main.c     table of contents: config, TLS, bus client, events, imapd.control,
 *              listeners, loop
 *   conf.c     the settings (roost.conf / ROOST_*)
 *   net.c      listeners (143 STARTTLS, 993 implicit TLS), session I/O, limits,
 *              idle timeout, output backpressure
 *   parse.c    the command reader: framing with literals, tokens, sequence sets,
 *              FETCH items, SEARCH keys (no session state: unit-tested alone)
 *   imap.c     the session state machine, the command table, the commands that
 *              need no mailbox (CAPABILITY ... LOGIN, AUTHENTICATE, ENABLE, ID)
 *   mailbox.c  LIST, LSUB, CREATE, DELETE, RENAME, (UN)SUBSCRIBE, STATUS,
 *              SELECT, EXAMINE, and the selected mailbox's UID map
 *   fetch.c    FETCH: list pages, message pieces, large BODY[] streamed
 *   message.c  STORE, SEARCH, COPY, MOVE, EXPUNGE, APPEND, CLOSE
 *   mimefmt.c  ENVELOPE, BODY, BODYSTRUCTURE, BODY[section] (lib/mime)
 *   notify.c   storaged.mailbox.changed: which sessions are concerned, and the
 *              untagged EXISTS / EXPUNGE / FETCH FLAGS at the right moments
 *   quota.c    GETQUOTA, GETQUOTAROOT, SETQUOTA (RFC 9208; quota.h)
 *   qresync.c  QRESYNC (RFC 7162 3.2): SELECT's resync, VANISHED (qresync.h)
 *   view.c     one shared view per selected mailbox (UIDs, flags, MODSEQ,
 *              size, date), loaded once and kept by the events
 *
 * Ownership: a session_t belongs to net.c (created on accept, freed only at
 * the end of a top-level event); the others borrow it. A command's state
 * (cmd_t) belongs to the session and is released by imap_cmd_end. One bus
 * call at a time per session: s->call, whose reply continues the command.
 */
#ifndef ROOST_IMAPD_H
#define ROOST_IMAPD_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus.h"
#include "config.h"
#include "loop.h"
#include "mimefmt.h"
#include "seqset.h"
#include "strbuf.h"
#include "tls.h"

/* ---- limits (every length and count from outside is bounded) ------------ */
#define IMAPD_LINE_MAX 8192         /* one line of a command, literals excluded */
#define IMAPD_CMD_MAX (64 * 1024)   /* a whole command with its literals (not APPEND's) */
#define IMAPD_TAG_MAX 64
#define IMAPD_DEPTH_MAX 16          /* parenthesised nesting (storaged's search bound) */
#define IMAPD_STRS_MAX 256          /* strings one command may carry */
#define IMAPD_FLAGS_MAX 64          /* flags in a list (storaged's bound) */
#define IMAPD_FLAG_LEN_MAX 64
#define IMAPD_NAME_MAX 1024         /* a mailbox name on the wire */
#define IMAPD_INBUF 16384           /* socket read buffer per session */
#define IMAPD_OUTBUF_MAX (256 * 1024) /* output queued before a command pauses */
#define IMAPD_FETCH_BODIES_MAX 16   /* BODY[...] items in one FETCH */
#define IMAPD_SEARCH_KEYS_MAX 256   /* nodes of one SEARCH (storaged's bound) */
#define IMAPD_ERRORS_MAX 50         /* BAD replies before the session is closed */
#define IMAPD_AUTH_FAILS_MAX 5      /* failed logins per session before BYE */
#define IMAPD_MSG_PIECE (1024 * 1024) /* bytes per storaged.message.fetch */
#define IMAPD_APPEND_STREAM_MIN (256 * 1024) /* larger APPEND literals are streamed */

/* ---- configuration ---------------------------------------------------------- */
typedef struct imapd_conf {
	const char *config_path;
	const char *bus_dir, *data_dir, *hostname, *listen;
	long port;                /* 143: STARTTLS */
	long tls_port;            /* 993: implicit TLS (0: off) */
	long max_size;            /* largest APPEND */
	long idle_ms;             /* authenticated (RFC 3501 5.4: at least 30 min) */
	long login_ms;            /* before login */
	long max_per_ip, max_sessions;
	long plaintext_loopback;  /* 1: LOGIN without TLS from 127.0.0.0/8 and ::1 (benchmarks) */
	long bus_timeout_ms;      /* per try of a storaged call */
	char *tls_cert, *tls_key; /* owned */
} imapd_conf_t;

int imapd_conf_load(imapd_conf_t *c, const config_t *cfg, char *err, size_t errlen);
void imapd_conf_clear(imapd_conf_t *c);

/* ---- the command reader (parse.c) -------------------------------------------- */

/* Assembles one command from the byte stream: lines and the literals they
 * announce ({n} synchronising, {n+} LITERAL+), all in cmd. */
typedef struct imap_frame {
	strbuf_t cmd;             /* the command so far (owned) */
	size_t line_start;        /* where the current line begins in cmd */
	uint64_t lit_left;        /* literal bytes still to come */
	bool skip_line;           /* dropping up to the end of an over-long line */
	char tag[IMAPD_TAG_MAX + 1]; /* FR_LINE_TOO_LONG: the dropped command's tag, or "*" */
	bool lit_sync;            /* the literal announced last is synchronising */
	bool divert;              /* literal bytes go to the caller (FR_LITERAL_BYTES) */
	size_t lit_room;          /* at most this many of them per event */
	const char *lit_data;     /* FR_LITERAL_BYTES: the bytes (borrowed from in) */
	size_t lit_datalen;
} imap_frame_t;

enum frame_ev {
	FR_MORE,              /* everything was consumed; need more bytes */
	FR_COMMAND,           /* cmd holds a whole command */
	FR_CONTINUE,          /* a synchronising literal: send "+ " and go on */
	FR_LINE_TOO_LONG,     /* a line over IMAPD_LINE_MAX (dropped to its end) */
	FR_LITERAL_TOO_BIG,   /* a {n} over the limit: tagged BAD, command dropped */
	FR_LITPLUS_TOO_BIG,   /* a {n+} over the limit: it comes anyway, so BYE */
	FR_APPEND_LITERAL,    /* an APPEND announced a literal over IMAPD_APPEND_STREAM_MIN:
			       * the caller streams it (imap_frame_divert) */
	FR_LITERAL_BYTES,     /* diverted literal bytes in lit_data/lit_datalen */
};

void imap_frame_reset(imap_frame_t *f);
/* From now on the current literal's bytes go to the caller, lit_room at a time. */
void imap_frame_divert(imap_frame_t *f);
void imap_frame_free(imap_frame_t *f);
/* Consumes bytes of in[0..len) (*used) until an event. append_max bounds an
 * APPEND message literal; every other command is bounded by IMAPD_CMD_MAX. */
enum frame_ev imap_frame_feed(imap_frame_t *f, const char *in, size_t len, size_t *used,
			      uint64_t append_max);
/* The tag at the start of cmd (for a BAD about a command we drop), or "*". */
void imap_frame_tag(const imap_frame_t *f, char *tag, size_t cap);

/* A cursor over one assembled command. Strings it returns are owned by the
 * parser (NUL-terminated) and live until ip_clear. */
typedef struct imap_parser {
	const char *p, *end;
	const char *err;          /* the first error (static text), NULL if none */
	char *strs[IMAPD_STRS_MAX];
	size_t nstrs;
} imap_parser_t;

void ip_init(imap_parser_t *ip, const char *buf, size_t len);
void ip_clear(imap_parser_t *ip);
/* Records the first error; returns false for "return ip_fail(...)". */
bool ip_fail(imap_parser_t *ip, const char *why);
bool ip_sp(imap_parser_t *ip);             /* one space */
bool ip_peek(const imap_parser_t *ip, char c);
bool ip_char(imap_parser_t *ip, char c);   /* consumes c if it is next */
bool ip_eol(imap_parser_t *ip);            /* at the end (CRLF or LF or nothing) */
const char *ip_tag(imap_parser_t *ip);
const char *ip_atom(imap_parser_t *ip);    /* ATOM-CHARs, plus ']' if brackets */
/* astring / string / nstring: *len may contain NULs for literals; NULL on error
 * (nstring: NIL gives NULL without an error, *nil set). */
const char *ip_astring(imap_parser_t *ip, size_t *len);
const char *ip_string(imap_parser_t *ip, size_t *len);
const char *ip_nstring(imap_parser_t *ip, size_t *len, bool *nil);
/* list-mailbox (LIST patterns: atom chars, %, *, ]) or a string; owned. */
const char *ip_list_mailbox(imap_parser_t *ip, size_t *len);
/* A literal's bytes in place (APPEND's message): borrowed from the buffer. */
const char *ip_literal(imap_parser_t *ip, size_t *len);
bool ip_number(imap_parser_t *ip, uint64_t *n, uint64_t max);
/* A sequence-set token ("1:5,7,*"), owned; NULL on error. */
const char *ip_seqset(imap_parser_t *ip);
/* "(" flag *(SP flag) ")" into flags (owned strings), at most max. */
bool ip_flag_list(imap_parser_t *ip, const char **flags, size_t max, size_t *n);
/* True if s is a flag storaged accepts: a system flag or an atom keyword. */
bool imap_flag_valid(const char *s);
/* date-time of APPEND ("dd-Mon-yyyy hh:mm:ss +zzzz") as unix seconds; -1. */
int64_t imap_datetime_parse(const char *s, size_t len);
/* date of SEARCH ("d-Mon-yyyy") as unix seconds at 00:00 UTC; -1. */
int64_t imap_date_parse(const char *s, size_t len);

/* FETCH items */
enum fetch_item {
	FI_FLAGS = 1u << 0, FI_UID = 1u << 1, FI_INTERNALDATE = 1u << 2, FI_SIZE = 1u << 3,
	FI_ENVELOPE = 1u << 4, FI_BODY = 1u << 5, FI_BODYSTRUCTURE = 1u << 6,
	FI_MODSEQ = 1u << 7, FI_RFC822 = 1u << 8, FI_RFC822_HEADER = 1u << 9,
	FI_RFC822_TEXT = 1u << 10,
};

typedef struct fetch_body {
	imap_section_t sect;
	bool peek;
	bool partial;             /* <origin.count> */
	uint64_t origin, count;
	char name[256];           /* "BODY[1.HEADER.FIELDS (A B)]" as we answer it */
} fetch_body_t;

typedef struct fetch_req {
	unsigned items;           /* enum fetch_item bits */
	fetch_body_t bodies[IMAPD_FETCH_BODIES_MAX];
	size_t nbodies;
	uint64_t changedsince;    /* RFC 7162 (CHANGEDSINCE n); 0: none */
	bool vanished;            /* RFC 7162 3.2.6 (... VANISHED): qresync.c */
	bool sets_seen;           /* a non-PEEK body item or RFC822(.TEXT) */
	bool needs_bytes;         /* the message itself must be read */
	bool streamable;          /* one whole-message BODY[]: large ones are streamed */
} fetch_req_t;

/* "ALL", "FAST", "FULL", one item or a list, then optional modifiers. */
bool ip_fetch_atts(imap_parser_t *ip, fetch_req_t *f);

/* The selected mailbox's sequence numbers, for SEARCH keys that use them. */
typedef struct seqmap {
	const uint32_t *uids;     /* uids[seq - 1], ascending */
	size_t n;
} seqmap_t;

/* SEARCH keys (after CHARSET) as storaged.message.search's criteria tree: a new
 * reference, or NULL with ip->err. *modseq is set if a MODSEQ key was used. */
json_t *ip_search_new(imap_parser_t *ip, const seqmap_t *map, bool *modseq);

/* A sequence set of message numbers as the UID set it means (text, owned by
 * the caller); NULL with why if it is invalid or too large for storaged. */
char *seqmap_to_uids(const seqmap_t *map, const char *set, const char **why);

/* ---- the process -------------------------------------------------------------- */
typedef struct session session_t;
typedef struct hmap hmap_t;

typedef struct imapd {
	loop_t *loop;
	imapd_conf_t conf;
	bus_client_t *bus;
	bus_control_t *ctl;
	bus_sub_t *sub;           /* storaged.mailbox.changed */
	bus_pub_t *pub;           /* imapd.login.failed */
	bus_sub_t *fails_sub;     /* imapd.login.failed of every replica */
	char instance[128];       /* host:pid, to skip our own events */
	tls_t *tls;               /* NULL: no certificate (no STARTTLS, no 993) */
	struct listener *listener, *tls_listener; /* proto/listener.h (tls: NULL if off) */
	session_t *sessions;
	hmap_t *per_ip;           /* address -> live sessions (uintptr_t) */
	hmap_t *fails;            /* "ip:..." / "user:..." -> struct imap_fails * */
	hmap_t *views;            /* "address\0mailbox" -> view_t * (view.c) */
	uint64_t serial, idem;
	struct {
		uint64_t connections, refused, timeouts, logins, login_failures, commands, events;
		uint64_t view_loads, view_catchups; /* storaged.message.list runs of the views */
		long sessions;
	} stats;
} imapd_t;

/* ---- sessions ---------------------------------------------------------------- */
enum imap_state {
	IS_NOAUTH,      /* connected, not logged in */
	IS_AUTH,        /* logged in, nothing selected */
	IS_SELECTED,    /* a mailbox is selected */
	IS_LOGOUT,      /* closing after the last reply */
	IS_COUNT
};

/* ---- the shared mailbox view (view.c) ------------------------------------------ */

/* One message as the view knows it: 32 bytes. flags: the system flags in
 * the low byte (\Seen \Answered \Flagged \Deleted \Draft = bits 0..4), the
 * index of the message's keyword text in view_t.kws above it. */
typedef struct vmsg {
	uint32_t uid, flags, size, pad;
	uint64_t modseq, idate;
} vmsg_t;

/* The view's UIDs at one moment, shared read-only by the sessions that
 * SELECTed from it: a SELECT of 50,000 messages then copies nothing. A
 * session copies them before it changes its own map. */
typedef struct uidsnap {
	unsigned refs;
	size_t n;
	uint32_t uids[];
} uidsnap_t;

enum view_state {
	V_STALE,    /* not loaded (or no longer trusted): the next SELECT loads it */
	V_READY,    /* loaded; kept by events */
	V_BROKEN,   /* too many keyword combinations: sessions use storaged */
};

typedef struct view {
	imapd_t *d;
	char *key;                /* "address\0mailbox" (owned); address and mailbox point in */
	size_t klen;
	const char *address, *mailbox;
	unsigned refs;            /* sessions that hold it */
	enum view_state state;
	uint64_t uidvalidity, uidnext, hms; /* every change up to hms is in msgs */
	uint64_t gen;             /* full loads so far (a session compares it) */
	int64_t checked_ms;       /* when storaged's status last agreed (SELECT) */
	vmsg_t *msgs;             /* ascending UIDs (owned) */
	size_t n, cap;
	uidsnap_t *snap;          /* msgs' UIDs, made by a SELECT, let go at a change (a reference) */
	uint32_t first_unseen;    /* index + 1 of the first message without \Seen, 0 for none, */
	bool first_unseen_known;  /* ... if known: forgotten at any change */
	char **kws;               /* keyword texts, [0] = "" (owned) */
	size_t nkws, kwcap;
	bool busy;                /* a load or catch-up in flight */
	bool loading;             /* it is a load: pages fill next */
	bool again, reload;       /* after it: catch up again / load again */
	bool orphan;              /* let go of (no reference, evicted): free on the reply */
	int64_t idle_since;       /* when the last reference went (refs == 0) */
	uint64_t busy_hms;        /* HIGHESTMODSEQ of its first page */
	vmsg_t *next;             /* a load's list until it is complete (owned) */
	size_t nnext, nextcap;
	struct seq_range *xp;     /* expunged while busy: cut again at the end (owned) */
	size_t nxp, xpcap;
} view_t;

/* The selected mailbox: what this session has told its client. */
typedef struct mbox {
	char *name;               /* UTF-8, as storaged names it (owned) */
	bool readonly;            /* EXAMINE */
	uint64_t uidvalidity, uidnext, hms;
	uint32_t *uids;           /* uids[seq - 1], ascending: owned, or snap's */
	size_t n, cap;
	uidsnap_t *snap;          /* a view's UIDs this map still shares (a reference), or NULL */
	uint32_t *gone;           /* expunged elsewhere, not yet announced (owned) */
	size_t ngone, gonecap;
	bool dirty;               /* an event came: look at the mailbox again */
	view_t *view;             /* the shared view (a counted reference), or NULL */
	uint64_t view_gen;        /* the view's load this map was last compared with */
} mbox_t;

typedef struct cmd cmd_t;
typedef void (*cmd_cont_fn)(session_t *s, json_t *reply, const void *raw, size_t rawlen);

struct session {
	imapd_t *d;
	session_t *prev, *next;
	uint64_t serial;
	int fd;
	short events;
	char ip[64];
	SSL *ssl;
	bool tls;                 /* TLS is up (implicit or after STARTTLS) */
	bool implicit;            /* came in on the IMAPS port */
	bool private_peer;        /* loopback with imap_plaintext_loopback: login without TLS */
	bool handshaking, tls_want_write;
	char in[IMAPD_INBUF];
	size_t inlen;
	strbuf_t out;
	loop_timer_t *idle;
	bool closed, close_after_flush, eof, starttls_after_flush;
	bool paused;              /* a command waits for the output to drain */
	enum imap_state state;
	char user[321];           /* logged-in address, lower case */
	bool condstore;           /* ENABLE CONDSTORE or a CONDSTORE command */
	bool utf8;                /* ENABLE UTF8=ACCEPT: names in UTF-8, not modified UTF-7 */
	bool qresync;             /* ENABLE QRESYNC: VANISHED instead of EXPUNGE (qresync.c) */
	unsigned errors, auth_fails;
	imap_frame_t frame;
	cmd_t *cmd;               /* the command being executed (owned), or NULL */
	uint64_t call;            /* bus call in flight (0: none) */
	cmd_cont_fn cont;         /* where its reply goes */
	bool in_call;             /* inside bus_call: the reply must not resume */
	mbox_t mbox;
};

enum { ES_ON = 1, ES_MIN = 2, ES_MAX = 4, ES_COUNT = 8, ES_ALL = 16 };

/* A command in progress. Fields used by one command family only are in the
 * union-like tail; everything owned is released by imap_cmd_end. */
struct cmd {
	char tag[IMAPD_TAG_MAX + 1];
	char name[24];            /* upper case, "UID FETCH" */
	bool uid;                 /* UID variant */
	bool no_expunge;          /* RFC 3501 7.4.1: numbers must not move now */
	bool idling;              /* IDLE: waiting for DONE */
	bool sasl;                /* AUTHENTICATE: waiting for the client's response */
	imap_parser_t ip;
	void (*resume)(session_t *s);   /* after a pause for the output */
	/* shared working state */
	json_t *page;             /* a storaged page being worked through (owned) */
	size_t page_i;
	size_t view_i;            /* fetch_view_next: where the view had the last UID, plus one */
	char *set;                /* a UID set for storaged (owned) */
	const char *set_text;     /* the set as the client sent it (borrowed from ip) */
	struct qresync *qr;       /* QRESYNC's SELECT or UID FETCH VANISHED (qresync.c, owned) */
	strbuf_t buf;             /* FETCH: the message; APPEND: the next chunk (owned) */
	uint64_t body_off;        /* the message being read: where its body starts */
	bool seen_now;            /* FETCH set \Seen on it: FLAGS go with the answer */
	uint64_t stream_off, stream_left; /* a streamed BODY[]: next offset, bytes owed */
	json_t *msg;              /* the list entry of that message (owned) */
	fetch_req_t *fetch;       /* owned */
	uidlist_t hits;           /* SEARCH */
	bool search_modseq;
	unsigned esearch;         /* SEARCH RETURN (...): ES_* bits, 0 for plain SEARCH */
	uint64_t max_modseq;
	json_t *req;              /* a request kept for paging (owned) */
	char *mailbox;            /* target name (owned) */
	bool silent;              /* STORE .SILENT */
	bool move;                /* COPY is a MOVE */
	bool closing;             /* EXPUNGE is CLOSE's: no responses */
	json_t *list;             /* names to go through: LIST-STATUS, CREATE's levels (owned) */
	unsigned list_opts;       /* LIST: enum list_opt bits (mailbox.c) */
	unsigned status_items;     /* STATUS, LIST-STATUS: what to report */
	char *ref, **pats;        /* LIST reference and patterns (owned) */
	size_t npats;
	uint32_t first_unseen;    /* SELECT: sequence number of the first unseen */
	uint32_t first_unseen_uid; /* SELECT: its UID, from the status */
	bus_stream_t *stream;     /* APPEND */
	const char *lit;          /* APPEND: a small message inside the command buffer */
	size_t litlen, sent;
	bool appending;           /* a large APPEND: its literal comes through the frame */
	bool chunk_inflight, ended, last_sent, utf8_form;
	char last_byte;           /* the previous message byte (bare LF -> CRLF) */
	json_t *fail;             /* storaged's refusal (owned), answered after the literal */
	char *fail_text;          /* or ours (owned) */
	loop_timer_t *delay;      /* login throttling */
	char *reply;              /* the tagged line, waiting for the updates (owned) */
	bool sync_force;          /* NOOP, CHECK, IDLE: look at the mailbox even without an event */
	const char *login_user, *login_pass;  /* borrowed from ip */
	void (*sync_done)(session_t *s);      /* notify_sync's continuation */
	uint64_t sync_hms;                    /* HIGHESTMODSEQ of the sync's first page */
	void (*view_cont)(session_t *s);      /* waiting for the view's load: goes on here */
	seqset_t *vset;                       /* FETCH from the view: the UID ranges (owned) */
	size_t vset_i;                        /* the range being answered */
	size_t sync_before;                   /* messages the client knew before the sync */
};

/* net.c */
int net_listen(imapd_t *d, char *err, size_t errlen);
void net_close_all(imapd_t *d);
void session_write(session_t *s, const void *buf, size_t len);
void session_printf(session_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void session_close_after_flush(session_t *s);
void session_abort(session_t *s, const char *why);
/* After an asynchronous event: process input and write, then settle. */
void session_resume(session_t *s);
/* Restarts the idle timer (its length depends on the state). */
void session_touch(session_t *s);
/* Waiting for the rest of a command: ACK at once (see net.c). */
void session_quickack(session_t *s);
/* True while the session waits for storaged or a timer, not for the client. */
bool session_waiting(const session_t *s);
/* True when a producing command should pause until the output drains. */
bool session_out_full(const session_t *s);
/* Switch to TLS once the replies are written (STARTTLS). */
void session_starttls(session_t *s);

/* imap.c */
extern const char *const imap_state_names[IS_COUNT];
void imap_enter_state(session_t *s, enum imap_state st);
void imap_greet(session_t *s);
/* Processes buffered input as far as the session allows. */
void imap_process(session_t *s);
void imap_tls_done(session_t *s);
/* Ends the current command with its tagged reply (after pending updates). */
void imap_done(session_t *s, const char *status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Sends a request to storaged with the user's address; the reply continues
 * at fn. *req is stolen. */
void imap_call(session_t *s, json_t **req, cmd_cont_fn fn);
/* A fresh idempotency key for a state-changing request. */
void imap_idem(session_t *s, json_t *req);
/* NO with the response code storaged's error maps to. */
void imap_fail_reply(session_t *s, const json_t *reply, const char *what);
/* A mailbox name from the wire (modified UTF-7, "INBOX" any case) as UTF-8
 * into out; false with a BAD/NO already sent. */
bool imap_mailbox_arg(session_t *s, char *out, size_t cap);
/* " mailbox" as the command's last argument (CREATE, DELETE, GETQUOTAROOT...):
 * the same, and BAD if anything follows. */
bool imap_mailbox_only(session_t *s, char *out, size_t cap);
/* The same without a reply: NULL, or why ("[CANNOT] ..." means NO). */
const char *imap_mailbox_parse(session_t *s, char *out, size_t cap);
/* Pauses the command until the output drains; resume is called then. */
void imap_pause(session_t *s, void (*resume)(session_t *s));
/* Forgets the current command without a tagged reply (the session ends). */
void imap_cmd_end(session_t *s);
/* A mailbox name (UTF-8, as storaged has it) as the client sees it: modified
 * UTF-7, or UTF-8 itself after ENABLE UTF8=ACCEPT. The length, or -1. */
int imap_name_wire(const session_t *s, const char *name, size_t len, char *out, size_t cap);
void imap_quote(strbuf_t *sb, const char *s, size_t len);
void imap_flags(strbuf_t *sb, const json_t *flags);
/* Frees a session's command, frame and mailbox (net.c, at the end). */
void imap_session_clear(session_t *s);
/* imapd.login.failed from another replica: counted like our own. */
void imap_fails_event(json_t **event, const void *raw, size_t rawlen, void *arg);
/* Frees the failed-login counters (at exit). */
void imap_fails_free(imapd_t *d);

/* mailbox.c */
void cmd_list(session_t *s);
void cmd_lsub(session_t *s);
void cmd_create(session_t *s);
void cmd_delete(session_t *s);
void cmd_rename(session_t *s);
void cmd_subscribe(session_t *s);
void cmd_unsubscribe(session_t *s);
void cmd_status(session_t *s);
void cmd_select(session_t *s);
void cmd_examine(session_t *s);
void cmd_unselect(session_t *s);
void mbox_clear(mbox_t *m);
/* The index of the first UID >= uid in the map (n if none). */
size_t mbox_lower(const mbox_t *m, uint32_t uid);
/* The sequence number of uid (1-based), 0 if not in the map. */
uint32_t mbox_seq(const mbox_t *m, uint32_t uid);
void mbox_append(mbox_t *m, uint32_t uid);
/* Removes seq (1-based) from the map. */
void mbox_remove(mbox_t *m, uint32_t seq);
seqmap_t mbox_seqmap(const mbox_t *m);

/* fetch.c */
void cmd_fetch(session_t *s);

/* message.c */
/* The command's set argument as a UID set for storaged in cmd->set (no
 * "*"; "" if it names nothing); false with the reply sent. */
bool msg_set_arg(session_t *s);
/* cmd->set from UID from on (a page's "next"), owned by the caller. */
char *msg_set_from(cmd_t *c, uint32_t from);
bool json_has_flag(const json_t *flags, const char *flag);
/* A page's "next" UID, if there is one. */
bool next_of(const json_t *reply, uint32_t *next);
void cmd_store(session_t *s);
void cmd_search(session_t *s);
void cmd_copy(session_t *s);
void cmd_move(session_t *s);
void cmd_expunge(session_t *s);
void cmd_close(session_t *s);
void cmd_append(session_t *s);
/* A large APPEND, streamed: the announcement, its bytes, its end. */
void append_stream_begin(session_t *s);
void append_stream_bytes(session_t *s, const char *p, size_t n);
void append_stream_end(session_t *s);
/* Literal bytes the chunk buffer can take now (0: wait for storaged). */
size_t append_room(const session_t *s);

/* notify.c */
void notify_event(json_t **event, const void *raw, size_t rawlen, void *arg);
/* Before a tagged reply: brings the client up to date if something changed,
 * then calls done. Expunges wait while s->cmd->no_expunge. */
void notify_sync(session_t *s, bool force, void (*done)(session_t *s));
/* Calls fn for each range of a UID set text ("1:5,7"; no "*"), however
 * long; false if the text is malformed. */
bool uidset_each(const char *text, void (*fn)(uint32_t lo, uint32_t hi, void *arg), void *arg);
/* Sends "* n EXPUNGE" for the UIDs of a set text that are in the map, and
 * removes them (an EXPUNGE or MOVE of this session: allowed at once). */
void notify_expunged(session_t *s, const char *uids);
/* A notify_sync continuation that does nothing (IDLE's). */
void notify_idle_noop(session_t *s);

/* view.c */
/* A counted reference to the view of address's mailbox, made (and loading)
 * if there is none; NULL if the names are too long. */
view_t *view_acquire(imapd_t *d, const char *address, const char *mailbox);
void view_release(view_t **v);
/* Loaded, nothing in flight: what it says is storaged's state as of the
 * events received. */
bool view_ready(const view_t *v);
/* Its first load is in flight: waiting for it (view_wait) beats asking
 * storaged the slow way meanwhile. */
bool view_loading(const view_t *v);
/* Parks the session's command until the view's load or catch-up ends;
 * then fn runs (the view may be ready or not). */
void view_wait(session_t *s, void (*fn)(session_t *s));
/* The view can answer this session's FETCH: ready, same UIDVALIDITY, and
 * at least as new as what the session has told its client. */
bool view_serves(const session_t *s);
vmsg_t *view_find(view_t *v, uint32_t uid);
/* view_find for UIDs asked in ascending order: *hint (0 to start) is
 * where the last one was found, plus one. */
vmsg_t *view_find_near(view_t *v, uint32_t uid, size_t *hint);
/* The view's UIDs, shared (a new reference: uidsnap_release it). */
uidsnap_t *view_uids(view_t *v);
void uidsnap_release(uidsnap_t **sp);
/* The sequence number of the first message without \Seen, 0 if none. */
uint32_t view_first_unseen(view_t *v);
/* "(\\Seen kw)" for packed flags. */
void view_flags(strbuf_t *sb, const view_t *v, uint32_t flags);
/* A message as a storaged.message.list entry (a new reference). */
json_t *view_msg_json_new(const view_t *v, const vmsg_t *m);
/* This process's own changes, from storaged's reply: "changed" entries
 * ({uid, flags, modseq}) and the HIGHESTMODSEQ after them; expunged UIDs. */
void view_apply(view_t *v, const json_t *changed, uint64_t hms);
void view_expunged(view_t *v, const char *uids, uint64_t hms);
/* Loads the view again (after what is in flight, or now). */
void view_load(view_t *v);
/* Reads what changed since the view's HIGHESTMODSEQ (after what is in
 * flight, or now). */
void view_refresh(view_t *v);
/* A mailbox deleted or renamed here: its view is no longer trusted. */
void view_forget(imapd_t *d, const char *address, const char *mailbox);
/* storaged.mailbox.changed, for the view of that mailbox. */
void view_event(imapd_t *d, const char *address, const char *mailbox, uint64_t uv,
		const char *kind, const char *uids, uint64_t hms);
void views_free(imapd_t *d);

#endif
