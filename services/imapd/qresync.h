/*
 * qresync.h — QRESYNC (RFC 7162 section 3.2) in imapd: SELECT/EXAMINE's
 * QRESYNC parameter, UID FETCH's VANISHED modifier, VANISHED instead of
 * EXPUNGE after ENABLE QRESYNC, the CLOSED response code. See qresync.c.
 */
#ifndef ROOST_IMAPD_QRESYNC_H
#define ROOST_IMAPD_QRESYNC_H

#include "imapd.h"

#define QRESYNC_CAPABILITY "QRESYNC"
#define QRESYNC_MATCH_MAX 100000   /* seq-match-data pairs compared, at most */

/* SELECT/EXAMINE's "QRESYNC (uidvalidity modseq [known-uids] [seq-match-data])". */
typedef struct qresync_param {
	uint64_t uidvalidity, modseq;
	seqset_t *known;                    /* known-uids (owned), NULL: not given */
	seqset_t *match_seqs, *match_uids;  /* seq-match-data (owned), NULL: not given */
} qresync_param_t;

/*
 * Parses SELECT's parameter list, "(" param *(SP param) ")", with the
 * cursor after "SELECT mailbox SP": CONDSTORE sets *condstore, QRESYNC
 * (...) fills *q and sets *qresync. No session state (unit-tested). false
 * with ip->err; *q may hold sets either way: qresync_param_clear frees them.
 */
bool qresync_parse_select(imap_parser_t *ip, qresync_param_t *q, bool *qresync, bool *condstore);
void qresync_param_clear(qresync_param_t *q);
/* The highest UID of q's seq-match-data whose message still has its
 * sequence number in map (RFC 7162 3.2.5.2): no UID below it the client
 * knew is expunged. 0 if none matches. */
uint32_t qresync_match(const qresync_param_t *q, const seqmap_t *map);

/* ---- hooks into the commands (each a line in mailbox.c, fetch.c, notify.c) ---- */

/* SELECT/EXAMINE's parameters after "mailbox SP": false with the BAD sent. */
bool qresync_select_arg(session_t *s);
/* SELECT/EXAMINE while a mailbox is selected: "* OK [CLOSED]" (3.2.11). */
void qresync_closed(session_t *s);
/* After SELECT's untagged responses: VANISHED (EARLIER) and the FETCH of
 * what changed since the client's MODSEQ, then done (the tagged OK). A
 * failure answers NO and leaves no mailbox selected. */
void qresync_select(session_t *s, void (*done)(session_t *s));
/* UID FETCH ... (CHANGEDSINCE n VANISHED): false if the command has no
 * VANISHED; else true, and it sends BAD or the VANISHED (EARLIER) lines
 * and then calls start (the FETCH itself). */
bool qresync_fetch(session_t *s, void (*start)(session_t *s));
/* After ENABLE QRESYNC: the recorded expunges (s->mbox.gone) as
 * "* VANISHED uids", instead of "* n EXPUNGE" (3.2.10). */
void qresync_expunges(session_t *s);
/* Frees a command's QRESYNC state (imap_cmd_end). */
void qresync_free(struct qresync **q);

#endif
