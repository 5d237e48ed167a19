/*
 * password.c — see password.h.
 *
 * The stored-string parser is strict and bounded: it reads exactly
 * "$scrypt$ln=<n>,r=<n>,p=<n>$<22 base64>$<43 base64>" and nothing else
 * (no padding, no leading zeros, no trailing bytes, canonical base64), so
 * a corrupt database row can only make verify return -1.
 */
#include "password.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#define PASSWORD_PREFIX "$scrypt$"
#define B64_LEN(n) (((n) * 4 + 2) / 3)   /* unpadded base64 length of n bytes */

static const struct password_params password_defaults = { .ln = 15, .r = 8, .p = 1 };

static const char b64_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* A parsed stored string. */
struct stored {
	struct password_params params;
	unsigned char salt[PASSWORD_SALT_LEN];
	unsigned char hash[PASSWORD_KEY_LEN];
};

const struct password_params *password_default(void)
{
	return &password_defaults;
}

static bool params_valid(const struct password_params *p)
{
	return p != NULL &&
		p->ln >= PASSWORD_LN_MIN && p->ln <= PASSWORD_LN_MAX &&
		p->r >= PASSWORD_R_MIN && p->r <= PASSWORD_R_MAX &&
		p->p >= PASSWORD_P_MIN && p->p <= PASSWORD_P_MAX;
}

/* ---- base64, standard alphabet, no padding ----------------------------- */

/* Encodes n bytes into dst (B64_LEN(n) + 1 bytes, NUL-terminated). */
static void b64_encode(const unsigned char *src, size_t n, char *dst)
{
	size_t i = 0;
	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8 | src[i + 2];
		*dst++ = b64_alphabet[v >> 18 & 63];
		*dst++ = b64_alphabet[v >> 12 & 63];
		*dst++ = b64_alphabet[v >> 6 & 63];
		*dst++ = b64_alphabet[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)src[i] << 16;
		*dst++ = b64_alphabet[v >> 18 & 63];
		*dst++ = b64_alphabet[v >> 12 & 63];
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8;
		*dst++ = b64_alphabet[v >> 18 & 63];
		*dst++ = b64_alphabet[v >> 12 & 63];
		*dst++ = b64_alphabet[v >> 6 & 63];
	}
	*dst = '\0';
}

static int b64_value(char c)
{
	const char *at = c != '\0' ? strchr(b64_alphabet, c) : NULL;
	return at != NULL ? (int)(at - b64_alphabet) : -1;
}

/*
 * Decodes exactly B64_LEN(n) characters of src into n bytes of dst.
 * Returns -1 on a character outside the alphabet (including '=' and NUL)
 * or non-zero unused bits in the last character (non-canonical form).
 */
static int b64_decode_exact(const char *src, unsigned char *dst, size_t n)
{
	size_t chars = B64_LEN(n), o = 0;
	uint32_t acc = 0;
	int bits = 0;

	for (size_t i = 0; i < chars; i++) {
		int v = b64_value(src[i]);
		if (v < 0)
			return -1;
		acc = (acc << 6 | (uint32_t)v) & 0xffffff;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			dst[o++] = (unsigned char)(acc >> bits);
		}
	}
	/* Leftover bits must be zero, or two strings would decode alike. */
	if ((acc & ((1u << bits) - 1)) != 0)
		return -1;
	return o == n ? 0 : -1;
}

/* ---- parsing ------------------------------------------------------------ */

/*
 * Reads "<name>=<decimal>" at *s into *out, advancing *s. Decimal: 1 to 3
 * digits, no sign, no leading zero, so huge numbers cannot overflow.
 */
static int parse_field(const char **s, const char *name, unsigned *out)
{
	size_t nlen = strlen(name);
	const char *c = *s;
	unsigned v = 0;
	int digits = 0;

	if (strncmp(c, name, nlen) != 0 || c[nlen] != '=')
		return -1;
	c += nlen + 1;
	if (*c == '0')
		return -1;  /* a leading zero or a zero value: neither is valid */
	while (*c >= '0' && *c <= '9') {
		if (++digits > 3)
			return -1;
		v = v * 10 + (unsigned)(*c++ - '0');
	}
	if (digits == 0)
		return -1;
	*out = v;
	*s = c;
	return 0;
}

/* Parses a stored string into st; -1 for anything not exactly our form. */
static int stored_parse(const char *s, struct stored *st)
{
	if (s == NULL || strncmp(s, PASSWORD_PREFIX, strlen(PASSWORD_PREFIX)) != 0)
		return -1;
	s += strlen(PASSWORD_PREFIX);
	if (parse_field(&s, "ln", &st->params.ln) < 0 || *s++ != ',')
		return -1;
	if (parse_field(&s, "r", &st->params.r) < 0 || *s++ != ',')
		return -1;
	if (parse_field(&s, "p", &st->params.p) < 0 || *s++ != '$')
		return -1;
	if (!params_valid(&st->params))
		return -1;
	/* The decoder stops at NUL (not in the alphabet), so short input is safe. */
	if (b64_decode_exact(s, st->salt, sizeof st->salt) < 0)
		return -1;
	s += B64_LEN(sizeof st->salt);
	if (*s++ != '$')
		return -1;
	if (b64_decode_exact(s, st->hash, sizeof st->hash) < 0)
		return -1;
	s += B64_LEN(sizeof st->hash);
	return *s == '\0' ? 0 : -1;  /* trailing junk */
}

/* ---- the KDF ------------------------------------------------------------ */

int password_scrypt_raw(const char *pw, size_t pwlen, const unsigned char *salt,
		size_t saltlen, unsigned ln, unsigned r, unsigned p,
		unsigned char *out, size_t outlen)
{
	struct password_params pp = { ln, r, p };
	if (!params_valid(&pp) || pwlen > PASSWORD_MAX_LEN || (pw == NULL && pwlen > 0) ||
			salt == NULL || out == NULL || outlen == 0)
		return -1;

	uint64_t n = (uint64_t)1 << ln;
	uint32_t r32 = r, p32 = p;
	/* OpenSSL needs 128*r*(N+2) for V plus 128*r*p for B; add slack. */
	uint64_t maxmem = 128u * (uint64_t)r * (n + 2) + 128u * (uint64_t)r * p + (1u << 20);

	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "SCRYPT", NULL);
	if (kdf == NULL)
		return -1;
	EVP_KDF_CTX *ctx = EVP_KDF_CTX_new(kdf);
	EVP_KDF_free(kdf);
	if (ctx == NULL)
		return -1;

	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PASSWORD,
			(void *)(pw != NULL ? pw : ""), pwlen),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, saltlen),
		OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_N, &n),
		OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_R, &r32),
		OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_P, &p32),
		OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_MAXMEM, &maxmem),
		OSSL_PARAM_construct_end(),
	};
	int rc = EVP_KDF_derive(ctx, out, outlen, params) == 1 ? 0 : -1;
	EVP_KDF_CTX_free(ctx);
	if (rc < 0)
		OPENSSL_cleanse(out, outlen);  /* no half-written key left behind */
	return rc;
}

int password_hash(const char *password, size_t len, const struct password_params *p,
		char *out, size_t outlen)
{
	unsigned char salt[PASSWORD_SALT_LEN], key[PASSWORD_KEY_LEN];
	char salt64[B64_LEN(PASSWORD_SALT_LEN) + 1], key64[B64_LEN(PASSWORD_KEY_LEN) + 1];

	if (out != NULL && outlen > 0)
		out[0] = '\0';
	/* Refuse before spending the KDF: bad input never produces a hash. */
	if (password == NULL || len < PASSWORD_MIN_LEN || len > PASSWORD_MAX_LEN ||
			!params_valid(p) || out == NULL || outlen == 0)
		return -1;
	if (RAND_bytes(salt, sizeof salt) != 1)
		return -1;
	if (password_scrypt_raw(password, len, salt, sizeof salt, p->ln, p->r, p->p,
			key, sizeof key) < 0)
		return -1;
	b64_encode(salt, sizeof salt, salt64);
	b64_encode(key, sizeof key, key64);
	OPENSSL_cleanse(key, sizeof key);
	int n = snprintf(out, outlen, PASSWORD_PREFIX "ln=%u,r=%u,p=%u$%s$%s",
		p->ln, p->r, p->p, salt64, key64);
	OPENSSL_cleanse(key64, sizeof key64);
	if (n < 0 || (size_t)n >= outlen) {
		OPENSSL_cleanse(out, outlen);
		out[0] = '\0';
		return -1;  /* a cut string would never verify */
	}
	return 0;
}

int password_verify(const char *password, size_t len, const char *stored)
{
	struct stored st;
	unsigned char key[PASSWORD_KEY_LEN];

	if (password == NULL || len < PASSWORD_MIN_LEN || len > PASSWORD_MAX_LEN)
		return -1;
	if (stored_parse(stored, &st) < 0)
		return -1;
	if (password_scrypt_raw(password, len, st.salt, sizeof st.salt, st.params.ln,
			st.params.r, st.params.p, key, sizeof key) < 0) {
		OPENSSL_cleanse(&st, sizeof st);
		return -1;
	}
	int match = CRYPTO_memcmp(key, st.hash, sizeof key) == 0;
	OPENSSL_cleanse(key, sizeof key);
	OPENSSL_cleanse(&st, sizeof st);
	return match;
}

bool password_needs_rehash(const char *stored, const struct password_params *p)
{
	struct stored st;

	/* Unparseable: whatever is there should be replaced. */
	if (stored_parse(stored, &st) < 0 || p == NULL)
		return true;
	return st.params.ln < p->ln || st.params.r < p->r || st.params.p < p->p;
}
