/*
 * tls.c — server TLS contexts (see tls.h): STARTTLS (RFC 3207, RFC 3501
 * 6.2.1) and implicit TLS (RFC 8314) for smtpd and imapd.
 */
#include "tls.h"
#include "config.h"
#include "util.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>

struct tls {
	SSL_CTX *ctx;
};

/* The last OpenSSL error as one line into err. */
static void tls_error(char *err, size_t errlen, const char *what, const char *path)
{
	unsigned long e = ERR_get_error();
	char buf[256];
	ERR_error_string_n(e, buf, sizeof buf);
	snprintf(err, errlen, "%s %s: %s", what, path, e ? buf : "failed");
	ERR_clear_error();
}

static SSL_CTX *tls_ctx_new(const char *cert, const char *key, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL) {
		tls_error(err, errlen, "SSL_CTX_new", "");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
				 SSL_OP_NO_COMPRESSION);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
			      SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ctx, 0);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		tls_error(err, errlen, "certificate", cert);
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		tls_error(err, errlen, "key", key);
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		tls_error(err, errlen, "key does not match certificate", cert);
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

tls_t *tls_new(const char *cert, const char *key, char *err, size_t errlen)
{
	SSL_CTX *ctx = tls_ctx_new(cert, key, err, errlen);
	if (ctx == NULL)
		return NULL;
	tls_t *t = xcalloc(1, sizeof *t);
	t->ctx = ctx;
	return t;
}

int tls_reload(tls_t *t, const char *cert, const char *key, char *err, size_t errlen)
{
	SSL_CTX *ctx = tls_ctx_new(cert, key, err, errlen);
	if (ctx == NULL)
		return -1;  /* the old context stays */
	SSL_CTX_free(t->ctx);
	t->ctx = ctx;
	return 0;
}

void tls_free(tls_t **tp)
{
	tls_t *t = *tp;
	if (t == NULL)
		return;
	SSL_CTX_free(t->ctx);
	free(t);
	*tp = NULL;
}

SSL *tls_session_new(tls_t *t, int fd)
{
	SSL *ssl = SSL_new(t->ctx);
	if (ssl == NULL)
		return NULL;
	if (SSL_set_fd(ssl, fd) != 1) {
		SSL_free(ssl);
		return NULL;
	}
	SSL_set_accept_state(ssl);
	return ssl;
}

void tls_describe(SSL *ssl, char *buf, size_t len)
{
	snprintf(buf, len, "%s:%s", SSL_get_version(ssl), SSL_get_cipher_name(ssl));
}

void tls_conf_paths(const struct config *cfg, char **cert, char **key)
{
	const char *c = config_get(cfg, "tls_cert", NULL), *k = config_get(cfg, "tls_key", NULL);
	*cert = c ? xstrdup(c) : xasprintf("%s/tls/cert.pem", config_data_dir(cfg));
	*key = k ? xstrdup(k) : xasprintf("%s/tls/key.pem", config_data_dir(cfg));
}
