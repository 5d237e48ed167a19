/*
 * chunk.h — the receiving side of chunked streams (see bus_stream_* in
 * bus.h): checks that chunks of one stream arrive in order, recognises the
 * resend of a chunk whose acknowledgement was lost, and bounds the total.
 */
#ifndef ROOST_CHUNK_H
#define ROOST_CHUNK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus.h"

enum chunk_verdict {
	CHUNK_ACCEPT,     /* new data: append it, then acknowledge */
	CHUNK_DUPLICATE,  /* already have it (a retry): acknowledge again, append nothing */
	CHUNK_REJECT,     /* out of order, too large, wrong stream: fail the stream */
};

typedef struct chunk_rx {
	char stream[BUS_ID_MAX + 1];
	int64_t next_seq;     /* the seq expected next */
	uint64_t bytes;       /* accepted so far */
	uint64_t max_bytes;   /* bound on the whole stream */
	bool done;            /* the last chunk was accepted */
} chunk_rx_t;

/* Starts an empty receiver accepting at most max_bytes in total. */
void chunk_rx_init(chunk_rx_t *rx, uint64_t max_bytes);

/* Judges one chunk; *why explains a rejection. */
enum chunk_verdict chunk_rx_check(chunk_rx_t *rx, const char *stream, int64_t seq, bool last,
				  size_t len, const char **why);

/*
 * Sender-side splitting: the next piece of a buffer of total bytes at
 * offset *off, at most max bytes. Returns its length and advances *off;
 * *last says whether it ends the buffer. An empty buffer is one empty,
 * last chunk.
 */
size_t chunk_next(size_t total, size_t *off, size_t max, bool *last);

#endif
