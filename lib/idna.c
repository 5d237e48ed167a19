/*
 * idna.c — see idna.h. Internationalized domain names to their ASCII form
 * (RFC 5890 A-labels: "xn--" + Punycode, RFC 3492).
 *
 * Why here: with SMTPUTF8 (RFC 6531) a sender may write a domain we host
 * as U-labels ("bücher.example"); the domain is stored in its A-label form
 * ("xn--bcher-kva.example"), which is what DNS and every non-UTF-8 client
 * use. Converting at the one place names are checked makes both spellings
 * the same domain.
 *
 * What is not done: full IDNA2008 (RFC 5892 code point classes, Unicode
 * normalization to NFC, UTS #46 mapping). Letters are lower-cased for
 * ASCII and for the cased alphabets European domains use (Latin-1,
 * Latin Extended-A, Greek, Cyrillic); other input is encoded as given, so
 * a decomposed or oddly cased U-label does not match (the lookup fails: no
 * wrong domain is ever matched, since the encoding is one-to-one).
 */
#include "idna.h"
#include "utf8.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* RFC 3492 5: Punycode's parameters. */
enum { BASE = 36, TMIN = 1, TMAX = 26, SKEW = 38, DAMP = 700, INITIAL_BIAS = 72, INITIAL_N = 128 };

/* Lower case for ASCII and the simple one-to-one cases of Latin-1,
 * Latin Extended-A, Greek and Cyrillic capitals. */
static uint32_t fold(uint32_t c)
{
	if (c >= 'A' && c <= 'Z')
		return c + 32;
	if (c >= 0xc0 && c <= 0xde && c != 0xd7)
		return c + 32;
	if (c >= 0x100 && c <= 0x137 && c % 2 == 0)
		return c + 1;
	if (c >= 0x139 && c <= 0x148 && c % 2 == 1)
		return c + 1;
	if (c >= 0x14a && c <= 0x177 && c % 2 == 0)
		return c + 1;
	if (c == 0x178)
		return 0xff;
	if ((c == 0x179 || c == 0x17b || c == 0x17d))
		return c + 1;
	if (c >= 0x391 && c <= 0x3ab && c != 0x3a2)
		return c + 32;
	if (c >= 0x410 && c <= 0x42f)
		return c + 32;
	if (c >= 0x400 && c <= 0x40f)
		return c + 80;
	return c;
}

static char digit(uint32_t d)
{
	return (char)(d < 26 ? 'a' + d : '0' + (d - 26));
}

static uint32_t adapt(uint32_t delta, uint32_t points, bool first)
{
	uint32_t k = 0;
	delta = first ? delta / DAMP : delta / 2;
	delta += delta / points;
	while (delta > ((BASE - TMIN) * TMAX) / 2) {
		delta /= BASE - TMIN;
		k += BASE;
	}
	return k + (BASE - TMIN + 1) * delta / (delta + SKEW);
}

/* RFC 3492 6.3 for one label of n code points; appends to out. -1 if it
 * does not fit or would overflow. */
static int punycode(const uint32_t *cp, size_t n, char *out, size_t *olen, size_t omax)
{
	size_t basic = 0;
	for (size_t j = 0; j < n; j++) {
		if (cp[j] < 0x80) {
			if (*olen >= omax)
				return -1;
			out[(*olen)++] = (char)cp[j];
			basic++;
		}
	}
	size_t h = basic;
	if (basic > 0) {
		if (*olen >= omax)
			return -1;
		out[(*olen)++] = '-';
	}
	uint32_t nn = INITIAL_N, bias = INITIAL_BIAS, delta = 0;
	while (h < n) {
		uint32_t m = UINT32_MAX;
		for (size_t j = 0; j < n; j++)
			if (cp[j] >= nn && cp[j] < m)
				m = cp[j];
		if ((uint64_t)(m - nn) * (h + 1) > UINT32_MAX - delta)
			return -1;
		delta += (m - nn) * (uint32_t)(h + 1);
		nn = m;
		for (size_t j = 0; j < n; j++) {
			if (cp[j] < nn && ++delta == 0)
				return -1;
			if (cp[j] != nn)
				continue;
			uint32_t q = delta;
			for (uint32_t k = BASE;; k += BASE) {
				uint32_t t = k <= bias ? TMIN : k >= bias + TMAX ? TMAX : k - bias;
				if (q < t)
					break;
				if (*olen >= omax)
					return -1;
				out[(*olen)++] = digit(t + (q - t) % (BASE - t));
				q = (q - t) / (BASE - t);
			}
			if (*olen >= omax)
				return -1;
			out[(*olen)++] = digit(q);
			bias = adapt(delta, (uint32_t)h + 1, h == basic);
			delta = 0;
			h++;
		}
		delta++;
		nn++;
	}
	return 0;
}

int idna_to_ascii(const char *in, size_t len, char *out, size_t size)
{
	const unsigned char *s = (const unsigned char *)in;
	size_t o = 0, i = 0;
	if (size == 0)
		return -1;
	while (i <= len) {
		/* one label: in[i .. end) */
		size_t end = i;
		while (end < len && s[end] != '.')
			end++;
		uint32_t cp[IDNA_LABEL_MAX];
		size_t n = 0;
		bool ascii = true;
		for (size_t j = i; j < end;) {
			int32_t c = utf8_next(s, end, &j);
			if (c < 0 || n == IDNA_LABEL_MAX)
				return -1;
			cp[n++] = fold((uint32_t)c);
			ascii = ascii && c < 0x80;
		}
		size_t start = o;
		if (ascii) {
			for (size_t j = 0; j < n; j++) {
				if (o + 1 >= size)
					return -1;
				out[o++] = (char)cp[j];
			}
		} else {
			if (o + 4 >= size)
				return -1;
			memcpy(out + o, "xn--", 4);
			o += 4;
			if (punycode(cp, n, out, &o, size - 1) < 0)
				return -1;
		}
		if (o - start > IDNA_LABEL_MAX)
			return -1;
		if (end == len)
			break;
		if (o + 1 >= size)
			return -1;
		out[o++] = '.';
		i = end + 1;
	}
	out[o] = '\0';
	return (int)o;
}
