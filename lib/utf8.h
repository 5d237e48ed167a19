/*
 * utf8.h — strict UTF-8 decoding, one code point at a time (shared by the
 * mailbox-name and domain-name encoders, lib/mutf7.c and lib/idna.c).
 */
#ifndef ROOST_UTF8_H
#define ROOST_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* The code point at s[*i] (s has len bytes), *i moved past it; -1 if the
 * sequence is malformed: truncated, an overlong form, a surrogate or past
 * U+10FFFF. */
int32_t utf8_next(const unsigned char *s, size_t len, size_t *i);

#endif
