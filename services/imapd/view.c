/*
 * view.c — one shared picture of a mailbox per imapd process: its UIDs
 * and, per message, flags, MODSEQ, size and INTERNALDATE, with the
 * mailbox's UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ (docs/IMAPD.md, "The
 * mailbox view"). Every session that has the mailbox selected holds a
 * reference; a view nobody holds stays a while (view_release), bounded.
 *
 * Why: without it every SELECT read the mailbox's UID list from storaged
 * and every UID FETCH 1:* (FLAGS) a JSON object per message, for every
 * session, every time. With it, SELECT copies the UIDs it already has,
 * FETCH of flags, sizes and dates never leaves imapd, FETCH BODY[] is one
 * storaged.message.fetch, and a session's catch-up before its tagged reply
 * is a scan of memory, not a storaged.message.list CHANGEDSINCE.
 *
 * How it stays current: it is loaded once (storaged.message.list pages in
 * the compact form: a text row per message, not a JSON object),
 * then kept by storaged.mailbox.changed events, which come from storaged
 * for changes made through any imapd replica, smtpd or roostctl:
 *   - expunge: the UIDs are removed at once (the event carries them);
 *   - new, flags: the event names UIDs but not their flags, so a catch-up
 *     (storaged.message.list CHANGEDSINCE the view's HIGHESTMODSEQ) reads
 *     them, unless the view already has that MODSEQ;
 *   - this process's own STORE, EXPUNGE and FETCH-sets-\Seen apply their
 *     replies at once (view_apply, view_expunged), so a session reads its
 *     own writes; the event that follows then finds nothing new.
 * MODSEQs of one mailbox grow by one per commit, so "hms" is exact: every
 * change up to it is in the view. While a load or catch-up is in flight
 * the view is not "ready" and sessions use the storaged paths they used
 * before the view existed (notify.c, fetch.c, mailbox.c): the view is
 * only ever a faster way to the same answers.
 *
 * Sessions keep their own UID map (what their client has been told), so
 * each one lags the view as RFC 3501 7.4.1 requires; notify.c moves a
 * session's map forward from the view.
 *
 * Bounds: 32 bytes per message; keyword combinations (the keyword text
 * of a message, "$Forwarded $Junk") are interned, at most VIEW_KWSETS per
 * view, beyond which the view gives up (V_BROKEN: sessions use storaged).
 *
 * Ownership: views belong to d->views (key "address\0mailbox"); a session
 * holds a counted reference in s->mbox.view. A view with a call in flight
 * outlives its last reference (orphan) until the reply comes; views_free
 * (after the bus client is gone: no reply can come) frees what is left.
 */
#include "imapd.h"
#include "hmap.h"
#include "log.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

#define VIEW_KWSETS 256         /* distinct keyword combinations per view */
#define VIEW_XP_MAX 1024        /* expunge ranges remembered during a load */
#define VIEW_IDLE_MAX 4         /* views kept that no session holds */
#define VIEW_IDLE_MSGS 65536    /* messages between them (32 bytes each) */

static const char *const view_sysflags[] = { "\\Seen", "\\Answered", "\\Flagged", "\\Deleted",
					     "\\Draft" };

static void view_ask(view_t *v, uint32_t from);

/* ---- flags ----------------------------------------------------------------------- */

/* The index of a keyword combination, interned; -1 if the view is full. */
static int view_kwset(view_t *v, const char *kw, size_t len)
{
	for (size_t i = 0; i < v->nkws; i++)
		if (strlen(v->kws[i]) == len && memcmp(v->kws[i], kw, len) == 0)
			return (int)i;
	if (v->nkws == VIEW_KWSETS)
		return -1;
	if (v->nkws == v->kwcap) {
		v->kwcap = v->kwcap ? 2 * v->kwcap : 4;
		v->kws = xrealloc(v->kws, v->kwcap * sizeof *v->kws);
	}
	v->kws[v->nkws] = xstrndup(kw, len);
	return (int)v->nkws++;
}

/* A JSON flag list as the view's packed form: system flags in the low
 * byte, the keyword combination above it. false if it does not fit. */
static bool view_pack(view_t *v, const json_t *flags, uint32_t *out)
{
	uint32_t sys = 0;
	strbuf_t kw = STRBUF_INIT;
	size_t i;
	json_t *f;
	json_array_foreach(flags, i, f) {
		const char *s = json_string_value(f);
		size_t k = 0;
		if (s == NULL)
			continue;
		while (k < ARRAY_LEN(view_sysflags) && strcmp(s, view_sysflags[k]) != 0)
			k++;
		if (k < ARRAY_LEN(view_sysflags)) {
			sys |= 1u << k;
			continue;
		}
		if (kw.len > 0)
			sb_addc(&kw, ' ');
		sb_adds(&kw, s);
	}
	int idx = view_kwset(v, kw.buf ? kw.buf : "", kw.len);
	sb_free(&kw);
	if (idx < 0)
		return false;
	*out = sys | (uint32_t)idx << 8;
	return true;
}

void view_flags(strbuf_t *sb, const view_t *v, uint32_t flags)
{
	bool first = true;
	sb_addc(sb, '(');
	for (size_t k = 0; k < ARRAY_LEN(view_sysflags); k++) {
		if (!(flags & (1u << k)))
			continue;
		if (!first)
			sb_addc(sb, ' ');
		sb_adds(sb, view_sysflags[k]);
		first = false;
	}
	const char *kw = v->kws[flags >> 8];
	if (kw[0] != '\0') {
		if (!first)
			sb_addc(sb, ' ');
		sb_adds(sb, kw);
	}
	sb_addc(sb, ')');
}

json_t *view_msg_json_new(const view_t *v, const vmsg_t *m)
{
	json_t *flags = json_array();
	for (size_t k = 0; k < ARRAY_LEN(view_sysflags); k++)
		if (m->flags & (1u << k))
			json_array_append_new(flags, json_string(view_sysflags[k]));
	for (const char *kw = v->kws[m->flags >> 8]; *kw != '\0';) {
		const char *sp = strchr(kw, ' ');
		size_t n = sp ? (size_t)(sp - kw) : strlen(kw);
		json_array_append_new(flags, json_stringn(kw, n));
		kw += n + (sp != NULL);
	}
	return json_pack("{s:I, s:o, s:I, s:I, s:I}", "uid", (json_int_t)m->uid, "flags", flags,
			 "modseq", (json_int_t)m->modseq, "size", (json_int_t)m->size,
			 "internaldate", (json_int_t)m->idate);
}

/* ---- lookup ------------------------------------------------------------------------ */

static size_t view_lower(const vmsg_t *a, size_t n, uint32_t uid)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (a[mid].uid < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

vmsg_t *view_find(view_t *v, uint32_t uid)
{
	size_t i = view_lower(v->msgs, v->n, uid);
	return i < v->n && v->msgs[i].uid == uid ? &v->msgs[i] : NULL;
}

/* Something in msgs changed: what was derived from it goes (shape: the
 * set of UIDs, not only flags). */
static void view_touched(view_t *v, bool shape)
{
	v->first_unseen_known = false;
	if (shape)
		uidsnap_release(&v->snap);
}

void uidsnap_release(uidsnap_t **sp)
{
	if (*sp != NULL && --(*sp)->refs == 0)
		free(*sp);
	*sp = NULL;
}

uidsnap_t *view_uids(view_t *v)
{
	if (v->snap == NULL) {
		v->snap = xmalloc(sizeof *v->snap + (v->n ? v->n : 1) * sizeof v->snap->uids[0]);
		v->snap->refs = 1;
		v->snap->n = v->n;
		for (size_t i = 0; i < v->n; i++)
			v->snap->uids[i] = v->msgs[i].uid;
	}
	v->snap->refs++;
	return v->snap;
}

uint32_t view_first_unseen(view_t *v)
{
	if (!v->first_unseen_known) {
		v->first_unseen = 0;
		for (size_t i = 0; i < v->n && v->first_unseen == 0; i++)
			if (!(v->msgs[i].flags & 1u))
				v->first_unseen = (uint32_t)i + 1;
		v->first_unseen_known = true;
	}
	return v->first_unseen;
}

vmsg_t *view_find_near(view_t *v, uint32_t uid, size_t *hint)
{
	/* a walk in UID order over a map much like the view: the message is
	 * the one after the last (or that one); else search */
	for (size_t i = *hint; i < v->n && i <= *hint + 1; i++)
		if (v->msgs[i].uid == uid) {
			*hint = i + 1;
			return &v->msgs[i];
		}
	size_t i = view_lower(v->msgs, v->n, uid);
	if (i < v->n && v->msgs[i].uid == uid) {
		*hint = i + 1;
		return &v->msgs[i];
	}
	return NULL;
}

bool view_loading(const view_t *v)
{
	return v != NULL && v->busy && v->loading && v->state != V_BROKEN;
}

void view_wait(session_t *s, void (*fn)(session_t *s))
{
	s->cmd->view_cont = fn;
}

bool view_ready(const view_t *v)
{
	return v != NULL && v->state == V_READY && !v->busy && !v->again;
}

bool view_serves(const session_t *s)
{
	const view_t *v = s->mbox.view;
	return v != NULL && v->state == V_READY && v->uidvalidity == s->mbox.uidvalidity &&
	       v->hms >= s->mbox.hms;
}

/* ---- applying changes --------------------------------------------------------------- */

static void view_push(vmsg_t **a, size_t *n, size_t *cap, const vmsg_t *m)
{
	if (*n == *cap) {
		*cap = *cap ? 2 * *cap : 64;
		*a = xrealloc(*a, *cap * sizeof **a);
	}
	(*a)[(*n)++] = *m;
}

/* One message as storaged has it now (a list row, or a STORE's "changed"
 * entry, which lacks size and date: then only a known message changes).
 * A message below the highest UID that the view lacks was expunged
 * meanwhile: UIDs are never reused, so it is not put back. */
static void view_put_msg(view_t *v, const vmsg_t *nm, bool listed)
{
	vmsg_t *m = view_find(v, nm->uid);
	if (m != NULL) {
		if (nm->modseq >= m->modseq) {
			m->flags = nm->flags;
			m->modseq = nm->modseq;
			view_touched(v, false);
		}
		return;
	}
	if (!listed || (v->n > 0 && nm->uid < v->msgs[v->n - 1].uid))
		return;
	view_push(&v->msgs, &v->n, &v->cap, nm);
	view_touched(v, true);
	if (v->uidnext <= (uint64_t)nm->uid)
		v->uidnext = (uint64_t)nm->uid + 1;
}

/* A message in JSON (storaged.message.list's entry or "changed"); false
 * if its flags do not fit the view. */
static bool view_put(view_t *v, const json_t *msg, bool listed)
{
	json_int_t uid = json_integer_value(json_object_get(msg, "uid"));
	vmsg_t nm = { 0 };
	if (uid <= 0 || uid > UINT32_MAX || !view_pack(v, json_object_get(msg, "flags"), &nm.flags))
		return false;
	nm.uid = (uint32_t)uid;
	nm.modseq = (uint64_t)json_integer_value(json_object_get(msg, "modseq"));
	nm.size = (uint32_t)json_integer_value(json_object_get(msg, "size"));
	nm.idate = (uint64_t)json_integer_value(json_object_get(msg, "internaldate"));
	view_put_msg(v, &nm, listed);
	return true;
}

/* The next number of a compact row and its separator; false if malformed
 * (at most 2^53, as everything storaged sends). */
static bool view_num(const char **p, const char *end, uint64_t *out, char sep)
{
	uint64_t n = 0;
	const char *q = *p;
	while (q < end && *q >= '0' && *q <= '9' && q - *p < 16)
		n = n * 10 + (uint64_t)(*q++ - '0');
	if (q == *p || n > 9007199254740991ULL)
		return false;
	if (q < end) {
		if (*q != sep)
			return false;
		q++;
	} else if (sep != ';') {
		return false;   /* the text ends only after a row's last number */
	}
	*p = q;
	*out = n;
	return true;
}

/* A compact page (storaged.message.list with compact): rows
 * "uid,modseq,size,internaldate,flags,kw" joined by ';'. false if it is
 * malformed or its keywords do not fit the view. */
static bool view_put_compact(view_t *v, const json_t *reply)
{
	const json_t *text = json_object_get(reply, "compact");
	const json_t *kws = json_object_get(reply, "keywords");
	int map[64];
	size_t nk = json_array_size(kws);
	if (!json_is_string(text) || nk == 0 || nk > ARRAY_LEN(map))
		return false;
	for (size_t i = 0; i < nk; i++) {
		const char *kw = json_string_value(json_array_get(kws, i));
		if (kw == NULL || (map[i] = view_kwset(v, kw, strlen(kw))) < 0)
			return false;
	}
	const char *p = json_string_value(text), *end = p + json_string_length(text);
	while (p < end) {
		uint64_t f[6];
		for (int k = 0; k < 6; k++)
			if (!view_num(&p, end, &f[k], k < 5 ? ',' : ';'))
				return false;
		if (f[0] == 0 || f[0] > UINT32_MAX || f[2] > UINT32_MAX || f[4] > 31 || f[5] >= nk)
			return false;
		vmsg_t nm = { (uint32_t)f[0], (uint32_t)f[4] | (uint32_t)map[f[5]] << 8,
			      (uint32_t)f[2], 0, f[1], f[3] };
		view_put_msg(v, &nm, true);
	}
	return true;
}

/* Removes [lo, hi] from the messages. */
static void view_cut(vmsg_t *a, size_t *n, uint32_t lo, uint32_t hi)
{
	size_t i = view_lower(a, *n, lo), j = view_lower(a, *n, hi == UINT32_MAX ? hi : hi + 1);
	if (hi == UINT32_MAX)
		j = *n;
	if (j <= i)
		return;
	memmove(a + i, a + j, (*n - j) * sizeof *a);
	*n -= j - i;
}

static void view_cut_range(uint32_t lo, uint32_t hi, void *arg)
{
	view_t *v = arg;
	view_cut(v->msgs, &v->n, lo, hi);
	view_touched(v, true);
	if (v->busy) {
		/* a page in flight may still show them: cut them again after it */
		if (v->nxp == VIEW_XP_MAX) {
			v->reload = true;
			return;
		}
		if (v->nxp == v->xpcap) {
			v->xpcap = v->xpcap ? 2 * v->xpcap : 8;
			v->xp = xrealloc(v->xp, v->xpcap * sizeof *v->xp);
		}
		v->xp[v->nxp].lo = lo;
		v->xp[v->nxp++].hi = hi;
	}
}

/* The view moves to MODSEQ hms if nothing can lie between: a change of
 * hms + 1 is the next commit; anything else waits for a catch-up. */
static void view_advance(view_t *v, uint64_t hms)
{
	if (hms == v->hms + 1 && !v->busy)
		v->hms = hms;
	else if (hms > v->hms)
		view_refresh(v);
}

/*
 * A reply's HIGHESTMODSEQ is our commit's MODSEQ only if the commit changed
 * something: a STORE that changed nothing (the flag was there) answers the
 * mailbox's current one, which may be someone else's change still on its
 * way as an event. So only a reply with changes moves the view.
 */
void view_apply(view_t *v, const json_t *changed, uint64_t hms)
{
	if (v == NULL || v->state != V_READY || json_array_size(changed) == 0)
		return;
	size_t i;
	json_t *ch;
	json_array_foreach(changed, i, ch)
		if (!view_put(v, ch, false)) {
			v->state = V_BROKEN;
			return;
		}
	if ((uint64_t)json_integer_value(json_object_get(json_array_get(changed, 0), "modseq")) == hms)
		view_advance(v, hms);
}

void view_expunged(view_t *v, const char *uids, uint64_t hms)
{
	if (v == NULL || v->state != V_READY || uids[0] == '\0')
		return;   /* nothing expunged: hms is not ours (view_apply) */
	if (!uidset_each(uids, view_cut_range, v))
		log_warn("view.bad", "uids=%s", log_quote(uids));
	view_advance(v, hms);
}

/* ---- loading and catching up ------------------------------------------------------------ */

/* Wakes the sessions waiting for v (view_wait) and those idling on it:
 * the view has something new for them. */
static void view_wake(view_t *v)
{
	for (session_t *s = v->d->sessions, *next; s != NULL; s = next) {
		next = s->next;
		if (s->mbox.view != v || s->cmd == NULL || s->call != 0 || s->closed)
			continue;
		if (s->cmd->view_cont != NULL) {
			void (*fn)(session_t *) = s->cmd->view_cont;
			s->cmd->view_cont = NULL;
			fn(s);
			session_resume(s);
		} else if (s->cmd->idling) {
			notify_sync(s, false, notify_idle_noop);
			session_resume(s);
		}
	}
}

static void view_free(view_t *v)
{
	uidsnap_release(&v->snap);
	free(v->msgs);
	free(v->next);
	for (size_t i = 0; i < v->nkws; i++)
		free(v->kws[i]);
	free(v->kws);
	free(v->xp);
	free(v->key);
	free(v);
}

/* A load or catch-up ended (ok or not). */
static void view_settle(view_t *v, bool ok)
{
	v->busy = false;
	if (v->orphan) {
		hmap_del(v->d->views, v->key, v->klen);
		view_free(v);
		return;
	}
	if (ok && v->loading) {
		/* the new list replaces the old one whole */
		free(v->msgs);
		v->msgs = v->next;
		v->n = v->nnext;
		v->cap = v->nextcap;
		v->next = NULL;
		v->nnext = v->nextcap = 0;
		v->gen++;
		v->state = V_READY;
		v->checked_ms = loop_now(v->d->loop);   /* storaged's state, just read */
	}
	v->loading = false;
	for (size_t i = 0; i < v->nxp; i++)
		view_cut(v->msgs, &v->n, v->xp[i].lo, v->xp[i].hi);
	view_touched(v, true);   /* a new list, or cuts again */
	v->nxp = 0;
	if (!ok) {
		if (v->state != V_BROKEN)
			v->state = V_STALE;   /* the next SELECT loads it again */
		free(v->next);
		v->next = NULL;
		v->nnext = v->nextcap = 0;
		v->again = false;
		view_wake(v);   /* idling sessions ask storaged themselves */
		return;
	}
	if (v->reload) {
		view_load(v);
		return;
	}
	if (v->again) {
		v->again = false;
		view_refresh(v);
		return;
	}
	view_wake(v);
}

static void view_page(json_t **reply, const void *raw, size_t rawlen, void *arg)
{
	(void)raw; (void)rawlen;
	view_t *v = arg;
	if (v->orphan || !bus_reply_ok(*reply)) {
		if (!v->orphan)
			log_info("view.fail", "mailbox=%s why=%s", log_quote(v->mailbox),
				 log_quote(json_string_value(json_object_get(*reply, "code"))));
		view_settle(v, false);
		return;
	}
	uint64_t uv = (uint64_t)json_integer_value(json_object_get(*reply, "uidvalidity"));
	if (v->busy_hms == 0) {
		/* the first page's HIGHESTMODSEQ: every later change is > it */
		v->busy_hms = (uint64_t)json_integer_value(json_object_get(*reply, "highestmodseq"));
		if (v->loading)
			v->uidvalidity = uv;
	}
	if (uv != v->uidvalidity) {
		/* the mailbox was made again under this name: the next SELECT
		 * loads it */
		view_settle(v, false);
		return;
	}
	json_int_t un = json_integer_value(json_object_get(*reply, "uidnext"));
	if (un > 0 && (uint64_t)un > v->uidnext)
		v->uidnext = (uint64_t)un;
	size_t i;
	json_t *msg;
	/* a load fills the next list; a catch-up changes the current one */
	vmsg_t *save = v->msgs;
	size_t sn = v->n, sc = v->cap;
	if (v->loading) {
		v->msgs = v->next;
		v->n = v->nnext;
		v->cap = v->nextcap;
	}
	bool ok = true;
	if (json_object_get(*reply, "compact") != NULL)
		ok = view_put_compact(v, *reply);
	else
		json_array_foreach(json_object_get(*reply, "messages"), i, msg)
			if (!view_put(v, msg, true)) {
				ok = false;
				break;
			}
	if (v->loading) {
		v->next = v->msgs;
		v->nnext = v->n;
		v->nextcap = v->cap;
		v->msgs = save;
		v->n = sn;
		v->cap = sc;
	}
	if (!ok) {
		log_warn("view.page", "mailbox=%s why=\"malformed, or more than %d keyword "
			 "combinations\"", log_quote(v->mailbox), VIEW_KWSETS);
		v->state = V_BROKEN;
		view_settle(v, false);
		return;
	}
	json_t *more = json_object_get(*reply, "next");
	if (json_is_integer(more) && json_integer_value(more) > 0 &&
	    json_integer_value(more) <= UINT32_MAX) {
		view_ask(v, (uint32_t)json_integer_value(more));
		return;
	}
	if (v->busy_hms > v->hms || v->loading)
		v->hms = v->busy_hms;
	view_settle(v, true);
}

static void view_ask(view_t *v, uint32_t from)
{
	char set[32];
	snprintf(set, sizeof set, "%u:*", (unsigned)from);
	json_t *req = bus_env_new("storaged.message.list");
	json_object_set_new(req, "address", json_string(v->address));
	json_object_set_new(req, "mailbox", json_string(v->mailbox));
	json_object_set_new(req, "uids", json_string(set));
	json_object_set_new(req, "compact", json_true());
	if (!v->loading)
		json_object_set_new(req, "changedsince", json_integer((json_int_t)v->hms));
	bus_call_opts_t opts = { (int)v->d->conf.bus_timeout_ms, -1 };
	bus_call(v->d->bus, "storaged", &req, NULL, 0, &opts, view_page, v);
}

void view_load(view_t *v)
{
	if (v->busy || v->state == V_BROKEN) {
		v->reload = v->state != V_BROKEN;
		return;
	}
	v->d->stats.view_loads++;
	v->busy = true;
	v->loading = true;
	v->reload = false;
	v->again = false;
	v->busy_hms = 0;
	v->nnext = 0;
	view_ask(v, 1);
}

void view_refresh(view_t *v)
{
	if (v->state != V_READY)
		return;
	if (v->busy) {
		v->again = true;
		return;
	}
	v->d->stats.view_catchups++;
	v->busy = true;
	v->busy_hms = 0;
	view_ask(v, 1);
}

/* ---- references and events -------------------------------------------------------------- */

static size_t view_key(char *key, size_t cap, const char *address, const char *mailbox)
{
	size_t a = strlen(address), m = strlen(mailbox);
	if (a + 1 + m > cap)
		return 0;
	memcpy(key, address, a + 1);
	memcpy(key + a + 1, mailbox, m);
	return a + 1 + m;
}

view_t *view_acquire(imapd_t *d, const char *address, const char *mailbox)
{
	char key[IMAPD_NAME_MAX + 512];
	size_t klen = view_key(key, sizeof key, address, mailbox);
	if (klen == 0)
		return NULL;
	if (d->views == NULL)
		d->views = hmap_new();
	view_t *v = hmap_get(d->views, key, klen);
	if (v == NULL) {
		v = xcalloc(1, sizeof *v);
		v->d = d;
		v->key = xmalloc(klen + 1);
		memcpy(v->key, key, klen);
		v->key[klen] = '\0';
		v->klen = klen;
		v->address = v->key;
		v->mailbox = v->key + strlen(address) + 1;
		v->kws = xmalloc(4 * sizeof *v->kws);
		v->kwcap = 4;
		v->kws[v->nkws++] = xstrdup("");
		v->state = V_STALE;
		hmap_put(d->views, v->key, klen, v);
	}
	v->refs++;
	v->orphan = false;
	if (v->state == V_STALE)
		view_load(v);
	return v;
}

/* The oldest view nobody holds, and how many there are. */
struct view_idle {
	view_t *oldest;
	size_t n, msgs;
};

static int view_idle_each(const void *key, size_t klen, void *value, void *arg)
{
	(void)key; (void)klen;
	view_t *v = value;
	struct view_idle *w = arg;
	if (v->refs > 0 || v->orphan)
		return 0;
	w->n++;
	w->msgs += v->cap;
	if (w->oldest == NULL || v->idle_since < w->oldest->idle_since)
		w->oldest = v;
	return 0;
}

/* Lets go of the oldest views nobody holds beyond VIEW_IDLE_MAX of them or
 * VIEW_IDLE_MSGS messages between them. */
static void view_evict(imapd_t *d)
{
	for (;;) {
		struct view_idle w = { NULL, 0, 0 };
		hmap_each(d->views, view_idle_each, &w);
		if (w.oldest == NULL || (w.n <= VIEW_IDLE_MAX && w.msgs <= VIEW_IDLE_MSGS))
			return;
		view_t *v = w.oldest;
		if (v->busy) {
			v->orphan = true;   /* freed when its reply comes (or taken again) */
			continue;
		}
		hmap_del(d->views, v->key, v->klen);
		view_free(v);
	}
}

/*
 * A view nobody holds stays a while (kept by the events like any other):
 * a client that logs out and in again, or SELECTs another mailbox and
 * comes back, finds it loaded. VIEW_IDLE_MAX and VIEW_IDLE_MSGS bound
 * what stays.
 */
void view_release(view_t **vp)
{
	view_t *v = *vp;
	*vp = NULL;
	if (v == NULL || --v->refs > 0)
		return;
	v->idle_since = loop_now(v->d->loop);
	view_evict(v->d);
}

/* Forgets what a view knows of a mailbox that was deleted or renamed
 * here: the next SELECT loads it again. */
void view_forget(imapd_t *d, const char *address, const char *mailbox)
{
	char key[IMAPD_NAME_MAX + 512];
	size_t klen = view_key(key, sizeof key, address, mailbox);
	view_t *v = klen && d->views ? hmap_get(d->views, key, klen) : NULL;
	if (v != NULL && v->state == V_READY)
		v->state = V_STALE;
}

void view_event(imapd_t *d, const char *address, const char *mailbox, uint64_t uv,
		const char *kind, const char *uids, uint64_t hms)
{
	char key[IMAPD_NAME_MAX + 512];
	size_t klen = view_key(key, sizeof key, address, mailbox);
	view_t *v = klen && d->views ? hmap_get(d->views, key, klen) : NULL;
	if (v == NULL || v->state == V_BROKEN || (v->state == V_STALE && !v->loading))
		return;   /* nothing kept: the next SELECT loads it whole */
	bool expunge = strcmp(kind, "expunge") == 0;
	if (v->loading) {
		/* pages already read may predate it: cut the expunged ones again
		 * at the end (view_cut_range records them) and catch up after */
		if (expunge && !uidset_each(uids, view_cut_range, v))
			log_warn("view.bad", "uids=%s", log_quote(uids));
		v->again = true;
		return;
	}
	if (uv != v->uidvalidity) {
		v->state = V_STALE;   /* deleted and made again: load at the next SELECT */
		return;
	}
	if (expunge) {
		if (!uidset_each(uids, view_cut_range, v))
			log_warn("view.bad", "uids=%s", log_quote(uids));
		view_advance(v, hms);
	} else if (hms > v->hms) {
		view_refresh(v);
	}
}

static int view_free_each(const void *key, size_t klen, void *value, void *arg)
{
	(void)key; (void)klen; (void)arg;
	view_free(value);
	return 0;
}

void views_free(imapd_t *d)
{
	if (d->views == NULL)
		return;
	hmap_each(d->views, view_free_each, NULL);
	hmap_free(&d->views);
}
