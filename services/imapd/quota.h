/*
 * quota.h — IMAP QUOTA (RFC 9208) in imapd: GETQUOTA, GETQUOTAROOT,
 * SETQUOTA (refused) for the logged-in user only. See quota.c.
 */
#ifndef ROOST_IMAPD_QUOTA_H
#define ROOST_IMAPD_QUOTA_H

#include "imapd.h"

/* What the CAPABILITY list says about quotas (no QUOTASET: SETQUOTA is refused). */
#define QUOTA_CAPABILITY "QUOTA QUOTA=RES-STORAGE"

void cmd_getquota(session_t *s);
void cmd_getquotaroot(session_t *s);
void cmd_setquota(session_t *s);

#endif
