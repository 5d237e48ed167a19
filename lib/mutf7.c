/*
 * mutf7.c — modified UTF-7 mailbox names (see mutf7.h).
 */
#include "mutf7.h"
#include "utf8.h"

#include <stdbool.h>
#include <stdint.h>

static const char mutf7_b64[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == ',')
		return 63;
	return -1;
}

/* Output helpers: o counts bytes written; false once out is full. */
static bool put(char *out, size_t cap, size_t *o, char c)
{
	if (*o + 1 >= cap)
		return false;
	out[(*o)++] = c;
	return true;
}

int mutf7_encode(const char *in, size_t len, char *out, size_t cap)
{
	const unsigned char *u = (const unsigned char *)in;
	size_t i = 0, o = 0;
	if (cap == 0)
		return -1;
	while (i < len) {
		if (u[i] >= 0x20 && u[i] <= 0x7e) {
			if (!put(out, cap, &o, (char)u[i]) || (u[i] == '&' && !put(out, cap, &o, '-')))
				return -1;
			i++;
			continue;
		}
		/* a run of characters outside printable ASCII: one shift */
		if (!put(out, cap, &o, '&'))
			return -1;
		uint32_t bits = 0;
		int nbits = 0;
		while (i < len && !(u[i] >= 0x20 && u[i] <= 0x7e)) {
			int32_t cp = utf8_next(u, len, &i);
			if (cp < 0)
				return -1;
			uint16_t units[2];
			int nu = 1;
			if (cp >= 0x10000) {
				cp -= 0x10000;
				units[0] = (uint16_t)(0xd800 | (cp >> 10));
				units[1] = (uint16_t)(0xdc00 | (cp & 0x3ff));
				nu = 2;
			} else {
				units[0] = (uint16_t)cp;
			}
			for (int k = 0; k < nu; k++) {
				bits = bits << 16 | units[k];
				nbits += 16;
				while (nbits >= 6) {
					nbits -= 6;
					if (!put(out, cap, &o, mutf7_b64[(bits >> nbits) & 0x3f]))
						return -1;
				}
				bits &= (1u << nbits) - 1;
			}
		}
		if (nbits > 0 && !put(out, cap, &o, mutf7_b64[(bits << (6 - nbits)) & 0x3f]))
			return -1;
		if (!put(out, cap, &o, '-'))
			return -1;
	}
	out[o] = '\0';
	return (int)o;
}

/* Appends code point cp as UTF-8. */
static bool put_utf8(char *out, size_t cap, size_t *o, uint32_t cp)
{
	if (cp < 0x80)
		return put(out, cap, o, (char)cp);
	if (cp < 0x800)
		return put(out, cap, o, (char)(0xc0 | cp >> 6)) &&
		       put(out, cap, o, (char)(0x80 | (cp & 0x3f)));
	if (cp < 0x10000)
		return put(out, cap, o, (char)(0xe0 | cp >> 12)) &&
		       put(out, cap, o, (char)(0x80 | ((cp >> 6) & 0x3f))) &&
		       put(out, cap, o, (char)(0x80 | (cp & 0x3f)));
	return put(out, cap, o, (char)(0xf0 | cp >> 18)) &&
	       put(out, cap, o, (char)(0x80 | ((cp >> 12) & 0x3f))) &&
	       put(out, cap, o, (char)(0x80 | ((cp >> 6) & 0x3f))) &&
	       put(out, cap, o, (char)(0x80 | (cp & 0x3f)));
}

/* Decodes the base64 of one shift in[a..b) (between "&" and "-"). */
static int decode_shift(const unsigned char *in, size_t a, size_t b, char *out, size_t cap,
			size_t *o)
{
	uint32_t bits = 0, high = 0;
	int nbits = 0;
	for (size_t k = a; k < b; k++) {
		int v = b64_value(in[k]);
		if (v < 0)
			return -1;
		bits = bits << 6 | (uint32_t)v;
		nbits += 6;
		if (nbits < 16)
			continue;
		nbits -= 16;
		uint32_t unit = (bits >> nbits) & 0xffff;
		bits &= (1u << nbits) - 1;
		if (high != 0) {
			if (unit < 0xdc00 || unit > 0xdfff)
				return -1;   /* a high surrogate not followed by a low one */
			if (!put_utf8(out, cap, o, 0x10000 + ((high - 0xd800) << 10) + (unit - 0xdc00)))
				return -1;
			high = 0;
		} else if (unit >= 0xd800 && unit <= 0xdbff) {
			high = unit;
		} else if (unit >= 0xdc00 && unit <= 0xdfff) {
			return -1;
		} else if (unit >= 0x20 && unit <= 0x7e) {
			return -1;   /* printable ASCII must stand for itself */
		} else if (!put_utf8(out, cap, o, unit)) {
			return -1;
		}
	}
	/* at most 4 bits of padding left over, all zero; no half surrogate */
	if (high != 0 || nbits >= 6 || bits != 0)
		return -1;
	return 0;
}

int mutf7_decode(const char *in, size_t len, char *out, size_t cap)
{
	const unsigned char *u = (const unsigned char *)in;
	size_t i = 0, o = 0;
	bool after_shift = false;
	if (cap == 0)
		return -1;
	while (i < len) {
		if (u[i] < 0x20 || u[i] > 0x7e)
			return -1;
		if (u[i] != '&') {
			if (!put(out, cap, &o, (char)u[i]))
				return -1;
			i++;
			after_shift = false;
			continue;
		}
		size_t j = i + 1;
		while (j < len && u[j] != '-')
			j++;
		if (j >= len)
			return -1;          /* unterminated shift */
		if (j == i + 1) {
			if (!put(out, cap, &o, '&'))
				return -1;
			after_shift = false;
		} else {
			if (after_shift)
				return -1;  /* two shifts in a row would have been one */
			if (decode_shift(u, i + 1, j, out, cap, &o) < 0)
				return -1;
			after_shift = true;
		}
		i = j + 1;
	}
	out[o] = '\0';
	return (int)o;
}
