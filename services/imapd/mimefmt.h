/*
 * mimefmt.h — what IMAP FETCH says about a message's MIME structure
 * (RFC 3501 7.4.2): ENVELOPE, BODY and BODYSTRUCTURE, and the bytes of a
 * BODY[section]. Built on lib/mime.h's bounded parser.
 *
 * Every function works on the whole message in msg[0..len) (borrowed, not
 * NUL-terminated; lines may end in CRLF or bare LF) and appends to out.
 * Each call parses the message again (one linear pass, bounded: see
 * lib/mime.h); nothing is kept between calls.
 *
 * Sizes in BODY/BODYSTRUCTURE and the bytes of a section count every bare
 * LF as CRLF, because that is how a message is sent; RFC822.SIZE must be
 * measured the same way (mime_crlf_size in lib/mime.h). Where RFC 3501
 * leaves a choice we answer as Dovecot 2.3 does; tests/unit/test_mimefmt.c
 * holds the comparison and its documented exceptions.
 */
#ifndef ROOST_IMAPD_MIMEFMT_H
#define ROOST_IMAPD_MIMEFMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "strbuf.h"

#define SECT_PATH_MAX 32     /* part numbers in one section spec */
#define SECT_FIELDS_MAX 64   /* names in HEADER.FIELDS (...) */

enum sect_kind {
	SECT_ALL,                /* BODY[] or BODY[1.2]: the whole part */
	SECT_HEADER,             /* BODY[HEADER], BODY[1.HEADER] (message/rfc822 part) */
	SECT_HEADER_FIELDS,      /* BODY[HEADER.FIELDS (A B)] */
	SECT_HEADER_FIELDS_NOT,  /* BODY[HEADER.FIELDS.NOT (A B)] */
	SECT_TEXT,               /* BODY[TEXT], BODY[1.TEXT] */
	SECT_MIME,               /* BODY[1.MIME]: the part's own MIME header */
};

/* A parsed section spec: the imapd command parser fills it, mimefmt reads it. */
typedef struct imap_section {
	uint32_t path[SECT_PATH_MAX]; /* part numbers, each >= 1 */
	size_t depth;                 /* 0: the message itself */
	enum sect_kind kind;
	const char *fields[SECT_FIELDS_MAX]; /* borrowed, NUL-terminated */
	size_t nfields;
} imap_section_t;

/* Appends the ENVELOPE list "(date subject from ...)" for msg. */
void mimefmt_envelope(const char *msg, size_t len, strbuf_t *out);

/* Appends BODYSTRUCTURE (extended true) or BODY (false), parenthesised. */
void mimefmt_bodystructure(const char *msg, size_t len, bool extended, strbuf_t *out);

/*
 * Appends the bytes of section s of msg (before any <partial> cut, which
 * the caller applies). A part that does not exist, or HEADER/TEXT of a
 * part that is not message/rfc822, gives no bytes (the caller sends "", as
 * Dovecot does). Returns 0, or -1 if the spec cannot apply (MIME with
 * depth 0, depth > SECT_PATH_MAX), which the caller answers with BAD.
 * HEADER.FIELDS names are matched ASCII case-insensitively; the fields
 * keep their own lines, then the empty line.
 */
int mimefmt_section(const char *msg, size_t len, const imap_section_t *s, strbuf_t *out);

#endif
