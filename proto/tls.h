/*
 * tls.h — server-side TLS contexts with OpenSSL 3, shared by the services
 * that speak TLS to the outside (smtpd: STARTTLS, submissions; imapd:
 * STARTTLS and implicit TLS on 993).
 *
 * TLS 1.2 and later, the certificate chain and key from tls_cert / tls_key
 * (PEM), no renegotiation, buffers released while idle (memory per session).
 * A reload builds a new context and swaps it in only if the pair loaded;
 * sessions keep the context they started with (OpenSSL counts references).
 *
 * Ownership: tls_new returns a tls_t freed with tls_free; tls_session_new
 * returns an SSL the caller frees with SSL_free.
 */
#ifndef ROOST_TLS_H
#define ROOST_TLS_H

#include <stddef.h>

typedef struct tls tls_t;
typedef struct ssl_st SSL;
struct config;

/* A server context from PEM cert chain and key; NULL with a reason. */
tls_t *tls_new(const char *cert, const char *key, char *err, size_t errlen);
/* Loads cert and key again into a new context; sessions keep the old one. */
int tls_reload(tls_t *t, const char *cert, const char *key, char *err, size_t errlen);
void tls_free(tls_t **t);
/* A new server SSL on fd (non-blocking), or NULL. */
SSL *tls_session_new(tls_t *t, int fd);
/* "TLSv1.3:TLS_AES_256_GCM_SHA384" into buf. */
void tls_describe(SSL *ssl, char *buf, size_t len);

/* The configured pair (tls_cert, tls_key; default <data_dir>/tls/cert.pem
 * and key.pem) as new strings the caller frees. */
void tls_conf_paths(const struct config *cfg, char **cert, char **key);

#endif
