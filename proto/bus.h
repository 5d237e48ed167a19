/*
 * bus.h — the Roost bus as services see it: an asynchronous client, a
 * synchronous client for tools, workers (with the <service>.control worker
 * every service has), event publish/subscribe and chunked streams.
 *
 * Ownership rules (jansson vocabulary, STYLE.md):
 *   - A parameter `json_t **x` is STOLEN: the function takes the reference
 *     and sets *x to NULL, on success and on failure alike.
 *   - A plain `json_t *` or `const json_t *` parameter is BORROWED.
 *   - A function named *_new returns a NEW reference the caller must release.
 *   - Raw bytes (`const void *raw, size_t len`) are copied when needed;
 *     the caller keeps its buffer.
 *   - `bus_req_t **` likewise: a handler that receives a request owns it and
 *     must hand it to bus_reply*() (which nulls it) or park it and reply later.
 *
 * Wire format (docs/BUS.md): after the broker frames (protocol tag,
 * command, service or address) comes one JSON envelope frame and at most one
 * raw frame. Envelope keys: type, v, id, and for replies status (ok, error,
 * invalid) with code and error; idem (idempotency key) on state-changing
 * requests; chunk {stream, seq, last} on streamed ones. Everything else is
 * the message's own fields, described by proto/schemas/<type>.json.
 */
#ifndef ROOST_BUS_H
#define ROOST_BUS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loop.h"

#define BUS_CLIENT_TAG "RBC1"   /* first frame client <-> busd */
#define BUS_WORKER_TAG "RBW1"   /* first frame worker <-> busd */

/* Worker protocol commands (one byte, second frame). */
enum bus_wcmd {
	BUS_W_READY = 1,      /* worker -> busd: service, info JSON */
	BUS_W_REQUEST = 2,    /* busd -> worker: ticket, envelope, [raw] */
	BUS_W_REPLY = 3,      /* worker -> busd: the same ticket, envelope, [raw] */
	BUS_W_HEARTBEAT = 4,  /* both ways */
	BUS_W_DISCONNECT = 5, /* both ways: forget me / register again */
};

/* Bounds on everything that crosses the bus. */
#define BUS_ENVELOPE_MAX (64 * 1024)  /* one JSON envelope frame */
#define BUS_RAW_MAX (1024 * 1024)     /* one raw frame */
#define BUS_CHUNK_SIZE (256 * 1024)   /* what streams send per chunk */
#define BUS_FRAME_HARD_MAX (16L * 1024 * 1024) /* larger: connection dropped */
#define BUS_ID_MAX 64                 /* request id, stream id */
#define BUS_IDEM_MAX 128              /* idempotency key */
#define BUS_SERVICE_MAX 48            /* service name incl. ".control" */
#define BUS_TICKET_LEN 8              /* busd's handle for a request at a worker */

/* Defaults, overridable by config (bus_heartbeat_ms, bus_timeout_ms, ...). */
#define BUS_HEARTBEAT_MS 1000
#define BUS_LIVENESS 3                /* missed heartbeats before "dead" */
#define BUS_TIMEOUT_MS 3000
#define BUS_RETRIES 3
#define BUS_WORKER_CREDIT 64          /* requests in flight per worker */

/* ---- endpoints ------------------------------------------------------ */

typedef struct bus_endpoints {
	char clients[128];   /* ipc://<dir>/clients   ROUTER */
	char workers[128];   /* ipc://<dir>/workers   ROUTER */
	char events_in[128]; /* ipc://<dir>/events.in  XSUB  */
	char events_out[128];/* ipc://<dir>/events.out XPUB  */
	char tap[128];       /* ipc://<dir>/tap        XPUB  */
} bus_endpoints_t;

/* Fills the endpoint names for a bus directory; -1 if a path would not fit
 * a Unix socket (108 bytes). */
int bus_endpoints_init(bus_endpoints_t *ep, const char *bus_dir);

/*
 * Process-wide bus settings from roost.conf / ROOST_* (bus_heartbeat_ms,
 * bus_timeout_ms, bus_retries). 0, or -1 with a one-line reason in err.
 */
struct config;
int bus_configure(const struct config *cfg, char *err, size_t errlen);
int bus_heartbeat_ms(void);
int bus_timeout_ms(void);
int bus_retries(void);
/* How long a default call waits before it gives up: every try timed out. */
int64_t bus_give_up_ms(void);

/* The process-wide ZeroMQ context (created on first use). */
void *bus_zmq_ctx(void);
/* Closes the context at exit (after every socket is closed). */
void bus_zmq_term(void);

/* ---- envelopes ------------------------------------------------------ */

/* A new request envelope {"type": type, "v": 1}; the client adds the id. */
json_t *bus_env_new(const char *type);

/* The status of a reply: "ok", "error" or "invalid"; "" if none. Borrowed. */
const char *bus_reply_status(const json_t *reply);
/* True if reply has status "ok". */
bool bus_reply_ok(const json_t *reply);

/* ---- asynchronous client -------------------------------------------- */

typedef struct bus_client bus_client_t;

/*
 * Called once per call with the reply. The callback may keep it by taking
 * the reference (setting *reply to NULL); otherwise it is released when the
 * callback returns. A timeout after all retries arrives as a reply with
 * status "error" and code "timeout"; raw is NULL when there is none. The
 * callback may free the client.
 */
typedef void (*bus_reply_fn)(json_t **reply, const void *raw, size_t rawlen, void *arg);

typedef struct bus_call_opts {
	int timeout_ms; /* per try; 0 = default */
	int retries;    /* resends after the first try; -1 = default, 0 = none */
} bus_call_opts_t;

bus_client_t *bus_client_new(loop_t *loop, const char *bus_dir);
void bus_client_free(bus_client_t **c);

/*
 * Sends request *req (stolen; must carry "type") to service, with an
 * optional raw frame (copied). Fills "v" and "id". Returns a call handle
 * (> 0) for bus_cancel(), or 0 if the request was refused locally (fn is
 * then called before bus_call returns, with an "invalid" reply).
 */
uint64_t bus_call(bus_client_t *c, const char *service, json_t **req,
		  const void *raw, size_t rawlen, const bus_call_opts_t *opts,
		  bus_reply_fn fn, void *arg);
/*
 * bus_call with the raw frame handed over instead of copied: *raw (from
 * malloc, may be NULL) is taken and *raw set to NULL; the bus frees it when
 * the call and every send of it are done. For large payloads (a message
 * chunk) this saves a copy and the memory of holding two.
 */
uint64_t bus_call_give(bus_client_t *c, const char *service, json_t **req, void **raw,
		       size_t rawlen, const bus_call_opts_t *opts, bus_reply_fn fn, void *arg);
/* Forgets a pending call: its callback will not run. */
void bus_cancel(bus_client_t *c, uint64_t handle);
/* Calls in flight. */
size_t bus_client_pending(const bus_client_t *c);

/*
 * Synchronous call for tools (roostctl): own socket, blocks up to
 * timeout_ms per try. Returns a new reference to the reply (a synthetic
 * status "error" code "timeout" reply if none came); *raw_out (malloc'd,
 * caller frees) receives the raw frame if raw_out is not NULL.
 */
json_t *bus_call_sync_new(const char *bus_dir, const char *service, json_t **req,
			  const void *raw, size_t rawlen, int timeout_ms, int retries,
			  void **raw_out, size_t *raw_out_len);

/* ---- workers ---------------------------------------------------------- */

typedef struct bus_worker bus_worker_t;
typedef struct bus_req bus_req_t;

/* A handler owns *req: it replies (bus_reply*) or parks it and replies later. */
typedef void (*bus_handler_fn)(bus_req_t **req, void *arg);

typedef struct bus_handler {
	const char *type;     /* "echo.payload.echo"; "*" = any type */
	bus_handler_fn fn;
} bus_handler_t;

/*
 * Registers as a worker of service with busd, heartbeats and reconnects by
 * itself. handlers is a table ended by {NULL, NULL}, borrowed for the
 * worker's life. credit: requests busd may have in flight here (0 = default).
 */
bus_worker_t *bus_worker_new(loop_t *loop, const char *bus_dir, const char *service,
			     const bus_handler_t *handlers, void *arg, int credit);
void bus_worker_free(bus_worker_t **w);
/* Requests handled so far. */
uint64_t bus_worker_requests(const bus_worker_t *w);
/* True while busd acknowledges us (heartbeats flowing). */
bool bus_worker_connected(const bus_worker_t *w);

/* The request envelope (borrowed), its type and raw frame. */
const json_t *bus_req_env(const bus_req_t *req);
const char *bus_req_type(const bus_req_t *req);
const void *bus_req_raw(const bus_req_t *req, size_t *len);

/*
 * Replies with status "ok" and the fields of *fields (stolen; NULL for
 * none), and an optional raw frame. Consumes *req.
 */
void bus_reply(bus_req_t **req, json_t **fields, const void *raw, size_t rawlen);
/* The same with the fields already compact JSON text ("{...}", or NULL), which
 * must hold no header key (type, v, id, status, code, error); not taken over. */
void bus_reply_text(bus_req_t **req, const char *fields, const void *raw, size_t rawlen);
/* Replies with status "error" (or "invalid" if code is "invalid"). */
void bus_reply_error(bus_req_t **req, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void bus_req_free(bus_req_t **req);

/*
 * One strict json_unpack_ex of the request's own fields (envelope keys
 * excluded; unknown keys rejected). On failure replies "invalid" with the
 * reason, consumes *req and returns -1. Strings stay valid while the
 * request lives.
 */
int bus_req_unpack(bus_req_t **req, const char *fmt, ...);

/* ---- the control worker ------------------------------------------------ */

typedef struct bus_control bus_control_t;
/* Adds service-specific fields to control.stats replies (borrowed object). */
typedef void (*bus_stats_fn)(json_t *stats, void *arg);
/* Runs control.reload (and SIGHUP); returns 0 or -1 with a reason in err. */
typedef int (*bus_reload_fn)(void *arg, char *err, size_t errlen);

/* Registers "<service>.control" answering ping, stats and reload; SIGHUP
 * runs reload too. */
bus_control_t *bus_control_new(loop_t *loop, const char *bus_dir, const char *service,
			       bus_stats_fn stats, bus_reload_fn reload, void *arg);
void bus_control_free(bus_control_t **ctl);
/* Counts one request served by the service (shown by control.stats). */
void bus_control_count(bus_control_t *ctl);

/* ---- events ------------------------------------------------------------ */

typedef struct bus_pub bus_pub_t;
typedef struct bus_sub bus_sub_t;
/* Called per event (same rule as bus_reply_fn: take *event to keep it); it
 * may free the subscriber. */
typedef void (*bus_event_fn)(json_t **event, const void *raw, size_t rawlen, void *arg);

bus_pub_t *bus_pub_new(const char *bus_dir);
void bus_pub_free(bus_pub_t **p);
/* Publishes *event (stolen; must carry "type"); fills "v" and "id". */
int bus_publish(bus_pub_t *p, json_t **event, const void *raw, size_t rawlen);

/* Subscribes to events whose type starts with prefix ("" = all). */
bus_sub_t *bus_sub_new(loop_t *loop, const char *bus_dir, const char *prefix,
		       bus_event_fn fn, void *arg);
void bus_sub_free(bus_sub_t **s);

/* ---- chunked streams (sender side) ---------------------------------------
 *
 * A payload larger than one frame goes as a sequence of requests of the
 * same type with chunk {stream, seq, last}; busd sends every chunk of a
 * stream to the same worker; the sender keeps one chunk in flight, so
 * memory stays bounded whatever the size. The receiver checks order with
 * chunk_rx (chunk.h).
 */
typedef struct bus_stream bus_stream_t;
/* Called when a chunk is acknowledged, with the ack (same rule as
 * bus_reply_fn: take *reply to keep it); the last chunk's reply is the
 * result of the whole stream. */
typedef void (*bus_stream_fn)(bus_stream_t *s, json_t **reply, void *arg);

/* *fields (stolen) are the request fields repeated on every chunk. */
bus_stream_t *bus_stream_new(bus_client_t *c, const char *service, const char *type,
			     json_t **fields, bus_stream_fn fn, void *arg);
/* From now on every chunk carries "deadline", the wall-clock unix ms at
 * which this sender stops waiting for it (less a margin): a receiver that
 * honours it (storaged.message.store) refuses a chunk that arrives too
 * late, so a retry after a timeout cannot duplicate what it carried. */
void bus_stream_deadlines(bus_stream_t *s);
/* Sends the next chunk (len <= BUS_CHUNK_SIZE); -1 if one is in flight. */
int bus_stream_write(bus_stream_t *s, const void *data, size_t len, bool last);
/* The same with the chunk's buffer (malloc'd) handed over, not copied
 * (bus_call_give): *data is taken and set to NULL, even on -1. */
int bus_stream_write_give(bus_stream_t *s, void **data, size_t len, bool last);
/* Bytes sent and chunks acknowledged so far. */
uint64_t bus_stream_bytes(const bus_stream_t *s);
void bus_stream_free(bus_stream_t **s);

#endif
