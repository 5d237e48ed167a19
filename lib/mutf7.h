/*
 * mutf7.h — modified UTF-7 (RFC 3501 5.1.3), the form IMAP4rev1 gives
 * mailbox names on the wire: printable ASCII stands for itself ("&" as
 * "&-"), anything else is "&" + UTF-16BE in base64 with "," for "/" + "-".
 *
 * Both directions are strict: decoding refuses what no conforming encoder
 * writes (printable ASCII inside a shift, "&" shifts that are empty or
 * follow each other, padding bits set, unpaired surrogates), so one name
 * has exactly one wire form and back.
 */
#ifndef ROOST_MUTF7_H
#define ROOST_MUTF7_H

#include <stddef.h>

/* UTF-8 in[0..len) as modified UTF-7 into out (NUL-terminated, at most cap
 * bytes). The length, or -1 if in is not valid UTF-8 or out is too small. */
int mutf7_encode(const char *in, size_t len, char *out, size_t cap);

/* Modified UTF-7 in[0..len) as UTF-8 into out (NUL-terminated, at most cap
 * bytes). The length, or -1 if in is not valid modified UTF-7 or out is
 * too small. */
int mutf7_decode(const char *in, size_t len, char *out, size_t cap);

#endif
