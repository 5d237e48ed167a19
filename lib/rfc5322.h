/*
 * rfc5322.h — the header section of an Internet message (RFC 5322 2.2,
 * 3.3): finding where it ends, walking its fields, unfolding a value and
 * reading a Date.
 *
 * Everything works on a caller's buffer (borrowed, not NUL-terminated)
 * and never reads past its length; lines may end in CRLF or a bare LF.
 */
#ifndef ROOST_RFC5322_H
#define ROOST_RFC5322_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HDR_FIELDS_MAX 1000   /* fields hdr_next returns from one header */

/*
 * The offset of the body in buf[0..len): just after the empty line that
 * ends the header. *found is false if there is none within len (then the
 * whole buffer is header and len is returned).
 */
size_t hdr_end(const char *buf, size_t len, bool *found);

typedef struct hdr_iter {
	const char *p, *end;
	unsigned fields;
} hdr_iter_t;

/* Walks the fields of the header hdr[0..len) (len from hdr_end). */
void hdr_iter_init(hdr_iter_t *it, const char *hdr, size_t len);
/*
 * The next field: its name (without the colon) and its raw value (after
 * the colon, folding included, without the final line end). 1 for a field,
 * 0 at the end (or after HDR_FIELDS_MAX). A line without a colon (not a
 * field) is skipped.
 */
int hdr_next(hdr_iter_t *it, const char **name, size_t *namelen, const char **value,
	     size_t *valuelen);

/* True if name[0..namelen) is want, ASCII case-insensitively. */
bool hdr_name_is(const char *name, size_t namelen, const char *want);

/*
 * Unfolds value (line ends followed by white space become nothing, RFC
 * 5322 2.2.3), turns other control characters into spaces, trims white
 * space at both ends, and writes at most cap - 1 bytes and a NUL to out.
 * Returns the length written.
 */
size_t hdr_unfold(const char *value, size_t len, char *out, size_t cap);

/*
 * An RFC 5322 date-time (3.3, obsolete forms of 4.3 tolerated: two-digit
 * years, zone names, missing seconds, comments) as unix seconds; -1 if s
 * is not one.
 */
int64_t hdr_date_parse(const char *s);

#endif
