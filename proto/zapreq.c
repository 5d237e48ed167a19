/*
 * zapreq.c — see zapreq.h.
 */
#include "zapreq.h"

#include <string.h>

int zapreq_recv(zapreq_t *r, void *sock)
{
	int more = 1;
	r->n = 0;
	while (more) {
		zmq_msg_t tmp, *m = r->n < ZAPREQ_FRAMES ? &r->part[r->n] : &tmp;
		zmq_msg_init(m);
		if (zmq_msg_recv(m, sock, ZMQ_DONTWAIT) < 0) {
			zmq_msg_close(m);
			break;
		}
		more = zmq_msg_more(m);
		if (m == &tmp)
			zmq_msg_close(m);
		else
			r->n++;
	}
	return r->n > ZAPREQ_MECHANISM ? 0 : -1;
}

const char *zapreq_frame(const zapreq_t *r, int i, size_t *len)
{
	*len = zmq_msg_size((zmq_msg_t *)&r->part[i]);
	return zmq_msg_data((zmq_msg_t *)&r->part[i]);
}

bool zapreq_domain_is(const zapreq_t *r, const char *domain)
{
	size_t len;
	const char *d = zapreq_frame(r, ZAPREQ_DOMAIN, &len);
	return len == strlen(domain) && memcmp(d, domain, len) == 0;
}

void zapreq_answer(zapreq_t *r, void *sock, const char *code, const char *text, const char *user)
{
	zmq_send(sock, "1.0", 3, ZMQ_SNDMORE);
	zmq_msg_send(&r->part[ZAPREQ_ID], sock, ZMQ_SNDMORE);
	zmq_send(sock, code, strlen(code), ZMQ_SNDMORE);
	zmq_send(sock, text, strlen(text), ZMQ_SNDMORE);
	zmq_send(sock, user, strlen(user), ZMQ_SNDMORE);
	zmq_send(sock, "", 0, 0);
}

void zapreq_close(zapreq_t *r)
{
	for (int i = 0; i < r->n; i++)
		zmq_msg_close(&r->part[i]);
	r->n = 0;
}
