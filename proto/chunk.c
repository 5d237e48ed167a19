/*
 * chunk.c — see chunk.h.
 */
#include "chunk.h"

#include <string.h>

void chunk_rx_init(chunk_rx_t *rx, uint64_t max_bytes)
{
	memset(rx, 0, sizeof *rx);
	rx->max_bytes = max_bytes;
}

enum chunk_verdict chunk_rx_check(chunk_rx_t *rx, const char *stream, int64_t seq, bool last,
				  size_t len, const char **why)
{
	if (len > BUS_RAW_MAX) {
		*why = "chunk larger than a raw frame";
		return CHUNK_REJECT;
	}
	if (rx->stream[0] == '\0') {
		if (seq != 0) {
			*why = "stream does not start at seq 0";
			return CHUNK_REJECT;
		}
		if (strlen(stream) == 0 || strlen(stream) > BUS_ID_MAX) {
			*why = "bad stream id";
			return CHUNK_REJECT;
		}
		strcpy(rx->stream, stream);
	} else if (strcmp(rx->stream, stream) != 0) {
		*why = "chunk of another stream";
		return CHUNK_REJECT;
	}
	/* The sender keeps one chunk in flight: a resend is always the
	 * previous one, whose acknowledgement was lost. */
	if (seq == rx->next_seq - 1)
		return CHUNK_DUPLICATE;
	if (rx->done || seq != rx->next_seq) {
		*why = rx->done ? "chunk after the last one" : "chunk out of order";
		return CHUNK_REJECT;
	}
	if (rx->bytes + len > rx->max_bytes) {
		*why = "stream larger than allowed";
		return CHUNK_REJECT;
	}
	rx->bytes += len;
	rx->next_seq++;
	rx->done = last;
	return CHUNK_ACCEPT;
}

size_t chunk_next(size_t total, size_t *off, size_t max, bool *last)
{
	size_t left = total > *off ? total - *off : 0;
	size_t n = left < max ? left : max;
	*off += n;
	*last = *off >= total;
	return n;
}
