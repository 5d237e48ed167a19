/*
 * mime.h — a bounded MIME parser (RFC 2045, 2046, 2231) over a whole
 * message in memory: the tree of parts, where each part's header and body
 * lie, and what its Content-* fields say.
 *
 * One pass over the message, no recursion: an explicit stack of open parts.
 * Every length and count has a bound (below); beyond one, the rest is
 * treated as an opaque body and the tree says so (MIME_OPAQUE, truncated),
 * never a crash, never quadratic time.
 *
 * Ownership: mime_parse borrows msg (it must outlive the tree, which points
 * into it by offsets) and returns a new tree that mime_free releases with
 * every string in it. Strings in the tree are NUL-terminated copies (a NUL
 * in the message ends a value).
 */
#ifndef ROOST_MIME_H
#define ROOST_MIME_H

#include <stdbool.h>
#include <stddef.h>

#define MIME_DEPTH_MAX 100      /* a part at depth MIME_DEPTH_MAX - 1 has no children */
#define MIME_PARTS_MAX 10000    /* parts in one message; later ones stay in their parent's body */
#define MIME_PARAMS_MAX 64      /* parameters kept from one field */
#define MIME_HEADER_MAX 262144  /* bytes of a part's header whose fields we read */
#define MIME_FIELD_MAX 16384    /* bytes of a Content-* value we interpret */
#define MIME_BOUNDARY_MAX 200   /* RFC 2046 says 70; longer ones are not boundaries */
#define MIME_LANGS_MAX 32       /* tags kept from Content-Language */

enum mime_kind {
	MIME_LEAF,       /* a body without parts of its own */
	MIME_MULTIPART,  /* children: the body parts between its boundaries */
	MIME_MESSAGE,    /* message/rfc822 or message/global: one child, the message */
	MIME_OPAQUE,     /* wanted children past MIME_DEPTH_MAX: reported as application/octet-stream */
};

typedef struct mime_param {
	char *name;   /* as written; RFC 2231 pieces joined as "name" or "name*" */
	char *value;  /* quoted-string undone; extended values left %-encoded */
} mime_param_t;

typedef struct mime_params {
	mime_param_t *v;
	size_t n;
} mime_params_t;

typedef struct mime_part {
	int parent;          /* index in mime_t.parts, -1 for the message */
	int first_child;     /* -1 if none */
	int next_sibling;    /* -1 if last */
	int last_child;      /* -1 if none: where the next child goes */
	unsigned depth;      /* 0 for the message */
	size_t nchildren;
	enum mime_kind kind;
	bool is_message_root; /* the top of a message (the whole one or a message/rfc822 body) */

	/* Offsets in the message: header [hdr_off, body_off), body [body_off, end_off). */
	size_t hdr_off, body_off, end_off;
	size_t body_size;    /* octets, every line end counted as CRLF (as IMAP sends it) */
	size_t body_lines;   /* line ends in the body */

	/* The Content-* fields; NULL (or n == 0) when absent. The first of a
	 * repeated field counts. type/subtype are "" when the field is broken. */
	char *type, *subtype;
	mime_params_t params;
	char *id, *description, *encoding, *md5, *location;
	char *disposition;
	mime_params_t disp_params;
	char *languages[MIME_LANGS_MAX];
	size_t nlanguages;
	bool has_language;   /* a Content-Language field, even an empty one */
} mime_part_t;

typedef struct mime {
	const char *msg;     /* borrowed */
	size_t len;
	mime_part_t *parts;  /* parts[0] is the message; children follow their parent */
	size_t nparts;
	bool truncated;      /* some bound was reached */
} mime_t;

/* Parses msg[0..len) (lines end in CRLF or bare LF). Never fails. */
mime_t *mime_parse(const char *msg, size_t len);
void mime_free(mime_t **m);

/* The part's parameter named name (ASCII case-insensitive), or NULL. */
const char *mime_param(const mime_params_t *ps, const char *name);

/* True if the part's type is t (and subtype st, unless st is NULL), with
 * the defaults of RFC 2045 5.2 and RFC 2046 5.1.5 applied. */
bool mime_is(const mime_t *m, const mime_part_t *p, const char *t, const char *st);

/*
 * Octets of b[0..n) counted as IMAP sends them (bare LF as CRLF) and the
 * number of line ends: how body sizes and section sizes are measured.
 */
size_t mime_crlf_size(const char *b, size_t n, size_t *lines);

#endif
