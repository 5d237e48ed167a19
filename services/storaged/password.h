/*
 * password.h — password hashing for storaged: scrypt (RFC 7914) through
 * OpenSSL 3's EVP_KDF, stored in the PHC string format with its parameters,
 * so that they can be raised later and old hashes upgraded on next login:
 *
 *   $scrypt$ln=15,r=8,p=1$<salt>$<hash>
 *
 * salt: 16 random bytes, hash: 32 bytes, both standard base64 without
 * padding. N = 2^ln. Every function here is blocking (the default costs
 * ~32 MiB and tens of milliseconds): storaged calls them through kdfpool.h,
 * never from its loop. All functions are thread-safe.
 */
#ifndef ROOST_STORAGED_PASSWORD_H
#define ROOST_STORAGED_PASSWORD_H

#include <stdbool.h>
#include <stddef.h>

#define PASSWORD_MIN_LEN 1
#define PASSWORD_MAX_LEN 1024          /* bytes; longer passwords are refused */
#define PASSWORD_SALT_LEN 16
#define PASSWORD_KEY_LEN 32
#define PASSWORD_HASH_MAX 128          /* enough for any stored string + NUL */

#define PASSWORD_LN_MIN 10
#define PASSWORD_LN_MAX 22
#define PASSWORD_R_MIN 1
#define PASSWORD_R_MAX 32
#define PASSWORD_P_MIN 1
#define PASSWORD_P_MAX 16

/* scrypt cost: N = 2^ln, block size r, parallelism p. */
struct password_params {
	unsigned ln;
	unsigned r;
	unsigned p;
};

/* The parameters for new hashes: ln 15, r 8, p 1 (32 MiB). */
const struct password_params *password_default(void);

/*
 * Hashes password (len bytes, 1..PASSWORD_MAX_LEN) with a fresh random salt
 * into out as a NUL-terminated stored string (outlen >= PASSWORD_HASH_MAX
 * is always enough). Returns 0, or -1 on bad length, out-of-range params,
 * short buffer or KDF failure (out is then "" if outlen > 0).
 */
int password_hash(const char *password, size_t len, const struct password_params *p,
		char *out, size_t outlen);

/*
 * Checks password against a stored string, in constant time over the hash.
 * Returns 1 on match, 0 on mismatch, -1 if stored is malformed (or has
 * out-of-range params), the password length is out of bounds, or the KDF
 * failed.
 */
int password_verify(const char *password, size_t len, const char *stored);

/*
 * True when stored was made with any parameter (ln, r or p) lower than p's,
 * so it should be replaced after the next successful verify. Also true for
 * a malformed stored string. False when equal or stronger.
 */
bool password_needs_rehash(const char *stored, const struct password_params *p);

/*
 * Internal, exposed for the RFC 7914 test vector: raw scrypt of pw (0..
 * PASSWORD_MAX_LEN bytes) with the given salt into out (outlen bytes).
 * Params must be in the bounds above. Returns 0 or -1.
 */
int password_scrypt_raw(const char *pw, size_t pwlen, const unsigned char *salt,
		size_t saltlen, unsigned ln, unsigned r, unsigned p,
		unsigned char *out, size_t outlen);

#endif
