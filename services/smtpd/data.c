/*
 * data.c — reading a message after DATA (RFC 5321 4.1.1.4, 4.5.2) and
 * counting its Received fields (the hop limit, 6.3).
 *
 * The DATA decoder is a state machine, resumable at any byte, so a
 * message may arrive in pieces of any size (in MID, a run up to the next CR
 * is copied at once: the table below is what it does byte by byte):
 *
 *   state   byte       action                              next
 *   BOL     '.'        drop it (dot-stuffing)              DOT
 *   BOL     other      as in MID                            MID
 *   MID     '\r'       -                                   CR
 *   MID     '\n'       bare LF: flag, keep                 MID
 *   MID     other      keep                                MID
 *   CR      '\n'       keep "\r\n"                         BOL
 *   CR      '\r'       bare CR: flag, keep '\r'            CR
 *   CR      other      bare CR: flag, keep '\r', as MID    MID
 *   DOT     '\r'       -                                   DOTCR
 *   DOT     other      as in MID                            MID
 *   DOTCR   '\n'       end of data                          (done)
 *   DOTCR   other      as in CR (a bare CR)                ...
 *
 * So only CRLF "." CRLF ends a message (the start counts as after a CRLF:
 * DATA's own line ended with one). "\n.\n", "\r.\r", "\n.\r\n" and "\r.\n"
 * are content — SMTP smuggling needs a server that ends on them. smtpd
 * refuses a message with a bare CR or LF anywhere (550 5.6.0, Postfix's
 * smtpd_forbid_bare_newline = yes), after reading to the real end.
 */
#include "smtpd.h"

#include <string.h>

enum { DD_BOL, DD_MID, DD_CR, DD_DOT, DD_DOTCR };

void dotdec_init(dotdec_t *d)
{
	memset(d, 0, sizeof *d);
	d->st = DD_BOL;
}

size_t dotdec_feed(dotdec_t *d, const char *in, size_t inlen, char *out, size_t outcap,
		   size_t *outlen)
{
	size_t i = 0, o = 0;
	/* Each input byte writes at most two bytes ("\r\n", or '\r' and itself). */
	while (i < inlen && !d->done && o + 2 <= outcap) {
		if (d->st == DD_MID) {
			/* Fast path: the middle of a line is copied as a run up to
			 * the next CR (memchr, then one memcpy), and a CRLF whose
			 * next line does not start with a dot is part of the run
			 * (CR '\n' -> BOL, BOL non-dot -> as MID: the bytes come out
			 * as they went in). A LF in a run is bare (MID '\n': flagged,
			 * kept, still MID). Everything else (a CR not followed by LF,
			 * a line starting with '.', a CR at the end of the input)
			 * goes through the state machine below, a byte at a time. */
			size_t avail = inlen - i < outcap - o ? inlen - i : outcap - o;
			const char *p = in + i, *end = in + i + avail;
			for (;;) {
				const char *cr = memchr(p, '\r', (size_t)(end - p));
				const char *stop = cr ? cr : end;
				if (!d->bare && memchr(p, '\n', (size_t)(stop - p)) != NULL)
					d->bare = true;
				p = stop;
				if (cr == NULL || end - cr < 3 || cr[1] != '\n' || cr[2] == '.')
					break;
				p = cr + 2;
			}
			size_t n = (size_t)(p - (in + i));
			if (n > 0) {
				memcpy(out + o, in + i, n);
				i += n;
				o += n;
				continue;
			}
		}
		char c = in[i++];
		switch (d->st) {
		case DD_BOL:
			if (c == '.') {
				d->st = DD_DOT;
				continue;
			}
			break;
		case DD_DOT:
			if (c == '\r') {
				d->st = DD_DOTCR;
				continue;
			}
			break;
		case DD_DOTCR:
			if (c == '\n') {
				d->done = true;
				continue;
			}
			/* "." CR x: the CR was bare; x is read as after a CR. */
			d->st = DD_CR;
			i--;
			continue;
		case DD_CR:
			if (c == '\n') {
				out[o++] = '\r';
				out[o++] = '\n';
				d->st = DD_BOL;
				continue;
			}
			d->bare = true;
			out[o++] = '\r';
			if (c == '\r')
				continue;  /* still after a CR */
			break;
		default:
			break;
		}
		/* MID */
		if (c == '\r') {
			d->st = DD_CR;
			continue;
		}
		if (c == '\n')
			d->bare = true;
		out[o++] = c;
		d->st = DD_MID;
	}
	*outlen = o;
	return i;
}

/*
 * The header scanner: at the start of each header line it matches
 * "received:" case-insensitively (fields only, so folded lines, which start
 * with white space, never match); the first empty line ends the header.
 */
enum { HS_BOL, HS_NAME, HS_LINE, HS_CR_BOL };

void hdrscan_init(hdrscan_t *h)
{
	memset(h, 0, sizeof *h);
	h->st = HS_BOL;
}

void hdrscan_feed(hdrscan_t *h, const char *p, size_t n)
{
	static const char want[] = "received:";
	for (size_t i = 0; i < n && !h->body; i++) {
		char c = p[i];
		switch (h->st) {
		case HS_BOL:
			if (c == '\n') {
				h->body = true;
				break;
			}
			if (c == '\r') {
				h->st = HS_CR_BOL;
				break;
			}
			h->matched = 0;
			h->st = HS_NAME;
			/* fall through */
		case HS_NAME:
			if (c == '\n') {
				h->st = HS_BOL;
			} else if ((c >= 'A' && c <= 'Z' ? c + 32 : c) == want[h->matched]) {
				if (++h->matched == sizeof want - 1) {
					h->received++;
					h->st = HS_LINE;
				}
			} else {
				h->st = HS_LINE;
			}
			break;
		case HS_CR_BOL:
			if (c == '\n') {
				h->body = true;
				break;
			}
			h->st = HS_LINE;
			break;
		default:
			if (c == '\n')
				h->st = HS_BOL;
			break;
		}
	}
}
