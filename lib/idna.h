/*
 * idna.h — a domain name to its ASCII form: each label holding non-ASCII
 * (UTF-8) becomes "xn--" + its Punycode (RFC 3492, RFC 5890 A-label);
 * ASCII letters are lower-cased. See idna.c for what of IDNA2008 is not
 * done.
 */
#ifndef ROOST_IDNA_H
#define ROOST_IDNA_H

#include <stddef.h>

#define IDNA_LABEL_MAX 63   /* octets of an A-label; also code points of a U-label */

/*
 * Converts in[0..len) into out (NUL-terminated, at most size - 1 bytes).
 * Returns the length written, or -1 on bad UTF-8, a label over 63 octets
 * once encoded, or no room. Empty labels are kept (the caller checks the
 * name's syntax afterwards).
 */
int idna_to_ascii(const char *in, size_t len, char *out, size_t size);

#endif
