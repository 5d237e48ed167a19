/*
 * notify.c — keeping every session's client up to date with its mailbox
 * (RFC 3501 5.2, 7.3.1, 7.4.1; IDLE RFC 2177), across imapd replicas.
 *
 * storaged publishes storaged.mailbox.changed after every commit that
 * changes a mailbox (new, flags, expunge). Each imapd subscribes; an event
 * marks the sessions that have that mailbox selected dirty and records
 * expunged UIDs they still show. Nothing is sent then: a client hears of
 * changes only while a command is in progress, at notify_sync, which
 * imap_done runs before every tagged reply (and IDLE runs at once):
 *
 *   1. what changed after the MODSEQ the client has seen: UIDs above the
 *      map are new (appended, then "* n EXISTS"); known ones changed flags
 *      ("* n FETCH (FLAGS ...)"). From the shared view (view.c) when it has
 *      caught up with every event received, a pass over memory; otherwise
 *      storaged.message.list CHANGEDSINCE.
 *   2. the recorded expunges as "* n EXPUNGE", unless the command uses
 *      sequence numbers (FETCH, STORE, SEARCH, COPY, MOVE without UID):
 *      then they wait for the next command, so numbers never shift under
 *      a client (7.4.1). Until then a gone message's FETCH gives nothing.
 *
 * NOOP, CHECK and IDLE look even without an event (an event can be lost
 * when busd restarts), so polling clients still see new mail.
 *
 * Ownership: events are borrowed; the map and the gone list belong to the
 * session's mbox_t.
 */
#include "imapd.h"
#include "log.h"
#include "qresync.h"
#include "util.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

bool uidset_each(const char *text, void (*fn)(uint32_t lo, uint32_t hi, void *arg), void *arg)
{
	const char *p = text;
	while (*p != '\0') {
		uint64_t lo = 0, hi;
		if (!isdigit((unsigned char)*p))
			return false;
		while (isdigit((unsigned char)*p) && lo <= UINT32_MAX)
			lo = lo * 10 + (uint64_t)(*p++ - '0');
		hi = lo;
		if (*p == ':') {
			p++;
			hi = 0;
			if (!isdigit((unsigned char)*p))
				return false;
			while (isdigit((unsigned char)*p) && hi <= UINT32_MAX)
				hi = hi * 10 + (uint64_t)(*p++ - '0');
		}
		if (lo == 0 || hi == 0 || lo > UINT32_MAX || hi > UINT32_MAX)
			return false;
		if (*p == ',')
			p++;
		else if (*p != '\0')
			return false;
		fn((uint32_t)(lo < hi ? lo : hi), (uint32_t)(lo < hi ? hi : lo), arg);
	}
	return true;
}

/* ---- events --------------------------------------------------------------------- */

/* Records the UIDs of [lo, hi] the session shows as gone. */
static void gone_add(uint32_t lo, uint32_t hi, void *arg)
{
	mbox_t *m = arg;
	for (size_t k = mbox_lower(m, lo); k < m->n && m->uids[k] <= hi; k++) {
		if (m->ngone == m->gonecap) {
			m->gonecap = m->gonecap ? 2 * m->gonecap : 16;
			m->gone = xrealloc(m->gone, m->gonecap * sizeof *m->gone);
		}
		m->gone[m->ngone++] = m->uids[k];
	}
}

void notify_idle_noop(session_t *s)
{
	(void)s;
}

void notify_event(json_t **event, const void *raw, size_t rawlen, void *arg)
{
	(void)raw; (void)rawlen;
	imapd_t *d = arg;
	const char *address, *mailbox, *kind, *uids;
	json_int_t uv, hms;
	if (json_unpack(*event, "{s:s, s:s, s:I, s:s, s:s, s:I}", "address", &address, "mailbox",
			&mailbox, "uidvalidity", &uv, "kind", &kind, "uids", &uids,
			"highestmodseq", &hms) < 0) {
		log_warn("event.bad", "why=\"missing fields\"");
		return;
	}
	d->stats.events++;
	/* the view first: a session woken below reads it */
	view_event(d, address, mailbox, (uint64_t)uv, kind, uids, (uint64_t)hms);
	for (session_t *s = d->sessions, *next; s != NULL; s = next) {
		next = s->next;
		mbox_t *m = &s->mbox;
		/* a SELECT still reading its pages counts too: what is expunged
		 * meanwhile is announced right after its tagged OK */
		if (s->closed || m->name == NULL || strcmp(s->user, address) != 0 ||
		    strcmp(m->name, mailbox) != 0 || m->uidvalidity != (uint64_t)uv)
			continue;
		if (strcmp(kind, "expunge") == 0 && !uidset_each(uids, gone_add, m))
			log_warn("event.bad", "uids=%s", log_quote(uids));
		m->dirty = true;
		/* an idler whose view is catching up on this event is woken by
		 * the view when it has (view_wake): no round trip of its own */
		if (m->view != NULL && m->view->busy && m->view->state == V_READY &&
		    m->view->uidvalidity == m->uidvalidity)
			continue;
		if (s->cmd != NULL && s->cmd->idling && s->call == 0) {
			notify_sync(s, false, notify_idle_noop);
			session_resume(s);
		}
	}
}

/* ---- bringing a client up to date ---------------------------------------------------- */

static int cmp_u32_desc(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? 1 : x > y ? -1 : 0;
}

/* "* n EXPUNGE" for every recorded UID, highest first: removing a higher
 * number never moves a lower one, so each line names the current number. */
static size_t sync_expunges(session_t *s)
{
	mbox_t *m = &s->mbox;
	if (s->qresync) {
		size_t before = m->n;
		qresync_expunges(s);   /* "* VANISHED uids" (RFC 7162 3.2.10) */
		return before - m->n;
	}
	size_t removed = 0;
	qsort(m->gone, m->ngone, sizeof *m->gone, cmp_u32_desc);
	for (size_t i = 0; i < m->ngone; i++) {
		uint32_t seq = mbox_seq(m, m->gone[i]);
		if (seq == 0)
			continue;   /* a duplicate, or already announced */
		session_printf(s, "* %u EXPUNGE\r\n", (unsigned)seq);
		mbox_remove(m, seq);
		removed++;
	}
	m->ngone = 0;
	return removed;
}

static void sync_end(session_t *s)
{
	cmd_t *c = s->cmd;
	mbox_t *m = &s->mbox;
	if (c->sync_hms > m->hms)
		m->hms = c->sync_hms;
	if (!c->no_expunge && m->ngone > 0) {
		/* the client's count after these EXPUNGEs: a message new in this
		 * same sync still needs its EXISTS even if the total is as before */
		size_t removed = sync_expunges(s);
		c->sync_before = c->sync_before > removed ? c->sync_before - removed : 0;
	}
	if (m->n != c->sync_before)
		session_printf(s, "* %zu EXISTS\r\n", m->n);
	if (m->n > 0 && m->uidnext <= m->uids[m->n - 1])
		m->uidnext = m->uids[m->n - 1] + 1ULL;
	void (*done)(session_t *) = c->sync_done;
	if (c->idling && m->dirty) {
		/* another event came while we were looking: IDLE tells it now */
		notify_sync(s, false, done);
		return;
	}
	c->sync_done = NULL;
	done(s);
}

static void sync_ask(session_t *s, uint32_t from);

static void sync_page(session_t *s, json_t *reply, const void *raw, size_t rawlen)
{
	(void)raw; (void)rawlen;
	mbox_t *m = &s->mbox;
	cmd_t *c = s->cmd;
	if (!bus_reply_ok(reply)) {
		/* the command itself is done: it is answered; the updates wait for
		 * the next NOOP or IDLE, which look again (not at once: a mailbox
		 * deleted under an IDLE would make that a loop) */
		sync_end(s);
		return;
	}
	if (c->sync_hms == 0)
		c->sync_hms = (uint64_t)json_integer_value(json_object_get(reply, "highestmodseq"));
	size_t i;
	json_t *msg;
	strbuf_t sb = STRBUF_INIT;
	json_array_foreach(json_object_get(reply, "messages"), i, msg) {
		uint32_t uid = (uint32_t)json_integer_value(json_object_get(msg, "uid"));
		uint32_t seq = mbox_seq(m, uid);
		if (seq == 0) {
			mbox_append(m, uid);   /* new: announced by EXISTS in sync_end */
			continue;
		}
		sb_truncate(&sb, 0);
		sb_addf(&sb, "* %u FETCH (FLAGS ", (unsigned)seq);
		imap_flags(&sb, json_object_get(msg, "flags"));
		if (c->uid || s->qresync)   /* QRESYNC clients follow UIDs */
			sb_addf(&sb, " UID %u", (unsigned)uid);
		if (s->condstore)
			sb_addf(&sb, " MODSEQ (%lld)",
				(long long)json_integer_value(json_object_get(msg, "modseq")));
		sb_adds(&sb, ")\r\n");
		session_write(s, sb.buf, sb.len);
	}
	sb_free(&sb);
	json_t *more = json_object_get(reply, "next");
	if (json_is_integer(more) && json_integer_value(more) > 0 &&
	    json_integer_value(more) <= UINT32_MAX) {
		sync_ask(s, (uint32_t)json_integer_value(more));
		return;
	}
	sync_end(s);
}

static void sync_ask(session_t *s, uint32_t from)
{
	char set[32];
	snprintf(set, sizeof set, "%u:*", (unsigned)from);
	json_t *req = bus_env_new("storaged.message.list");
	json_object_set_new(req, "mailbox", json_string(s->mbox.name));
	json_object_set_new(req, "uids", json_string(set));
	json_object_set_new(req, "changedsince", json_integer((json_int_t)s->mbox.hms));
	json_object_set_new(req, "limit", json_integer(1000));
	imap_call(s, &req, sync_page);
}

/* The map's UIDs the view no longer has (after the view was loaded again:
 * expunges whose events were lost) join the gone list. */
static void sync_view_gone(session_t *s, view_t *v)
{
	mbox_t *m = &s->mbox;
	for (size_t k = 0; k < m->n; k++)
		if (view_find(v, m->uids[k]) == NULL)
			gone_add(m->uids[k], m->uids[k], m);
}

/*
 * The same as sync_ask's pages, from the view: what changed after the
 * MODSEQ the client has seen (FETCH FLAGS for known messages, new UIDs
 * appended for EXISTS). One pass over the view's messages.
 */
static void sync_view(session_t *s)
{
	cmd_t *c = s->cmd;
	mbox_t *m = &s->mbox;
	view_t *v = m->view;
	if (m->view_gen != v->gen) {
		sync_view_gone(s, v);
		m->view_gen = v->gen;
	}
	if (v->hms > m->hms) {
		strbuf_t sb = STRBUF_INIT;
		for (size_t i = 0; i < v->n; i++) {
			const vmsg_t *vm = &v->msgs[i];
			if (vm->modseq <= m->hms)
				continue;
			uint32_t seq = mbox_seq(m, vm->uid);
			if (seq == 0) {
				mbox_append(m, vm->uid);   /* new: EXISTS in sync_end */
				continue;
			}
			sb_truncate(&sb, 0);
			sb_addf(&sb, "* %u FETCH (FLAGS ", (unsigned)seq);
			view_flags(&sb, v, vm->flags);
			if (c->uid || s->qresync)   /* QRESYNC clients follow UIDs */
				sb_addf(&sb, " UID %u", (unsigned)vm->uid);
			if (s->condstore)
				sb_addf(&sb, " MODSEQ (%llu)", (unsigned long long)vm->modseq);
			sb_adds(&sb, ")\r\n");
			session_write(s, sb.buf, sb.len);
		}
		sb_free(&sb);
		c->sync_hms = v->hms;
	}
	if (v->uidnext > m->uidnext)
		m->uidnext = v->uidnext;
	m->dirty = false;
	sync_end(s);
}

void notify_sync(session_t *s, bool force, void (*done)(session_t *s))
{
	cmd_t *c = s->cmd;
	mbox_t *m = &s->mbox;
	c->sync_done = done;
	c->sync_hms = 0;
	c->sync_before = m->n;
	if (s->state != IS_SELECTED) {
		sync_end(s);
		return;
	}
	/* the view has caught up with every event received: no round trip
	 * (NOOP, CHECK and IDLE still ask storaged: an event may be lost) */
	if (!force && view_ready(m->view) && m->view->uidvalidity == m->uidvalidity &&
	    m->view->hms >= m->hms) {
		sync_view(s);
		return;
	}
	if (!m->dirty && !force) {
		sync_end(s);
		return;
	}
	m->dirty = false;
	sync_ask(s, 1);
}

/* ---- this session's own expunges --------------------------------------------------------- */

void notify_expunged(session_t *s, const char *uids)
{
	mbox_t *m = &s->mbox;
	if (!uidset_each(uids, gone_add, m))
		log_warn("expunged.bad", "uids=%s", log_quote(uids));
	(void)sync_expunges(s);
}
