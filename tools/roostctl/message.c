/*
 * message.c — roostctl message: the messages of a user's mailbox as
 * storaged keeps them (proto/schemas/storaged.message.*.json).
 *
 *   get USER MAILBOX UID            the raw message on stdout, fetched in
 *                                   pieces of at most 1 MiB (never whole
 *                                   in memory, however large)
 *   list USER MAILBOX [--uids SET]  UID, flags, size, date, from, subject
 *   search USER MAILBOX --subject T --from T --body T --unseen (ANDed)
 *   flag USER MAILBOX UIDS +FLAG|-FLAG...
 *   expunge USER MAILBOX            deletes the messages flagged \Deleted
 *   copy|move USER MAILBOX UIDS TO
 *
 * One table row per verb: its positional arguments, options and runner.
 * Every state-changing request carries an idem key derived from this
 * run's (ctl_idem), so a resend after a timeout changes nothing twice.
 * --json (before the command, or among the verb's options) prints
 * storaged's reply (list: one object with every page's messages).
 */
#include "roostctl.h"
#include "bus.h"
#include "seqset.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MSG_PIECE (1024 * 1024)   /* bytes per storaged.message.fetch */
#define MSG_POS_MAX 16

enum { OPT_UIDS = 1, OPT_SEARCH = 2 };

/* What the command line said. */
struct msg_args {
	const char *pos[MSG_POS_MAX];
	int npos;
	const char *uids;
	json_t *criteria;       /* search: the options as an "and" array */
};

struct msg_verb;
typedef int (*msg_run_fn)(struct ctl *ctl, const struct msg_verb *v, struct msg_args *a);

struct msg_verb {
	const char *verb;
	int min_pos, max_pos;
	unsigned opts;
	const char *args_help;
	msg_run_fn run;
};

static int msg_get(struct ctl *ctl, const struct msg_verb *v, struct msg_args *a);
static int msg_list(struct ctl *ctl, const struct msg_verb *v, struct msg_args *a);
static int msg_search(struct ctl *ctl, const struct msg_verb *v, struct msg_args *a);
static int msg_flag(struct ctl *ctl, const struct msg_verb *v, struct msg_args *a);
static int msg_expunge(struct ctl *ctl, const struct msg_verb *v, struct msg_args *a);
static int msg_copy(struct ctl *ctl, const struct msg_verb *v, struct msg_args *a);

static const struct msg_verb verbs[] = {
	{ "get", 3, 3, 0, "USER MAILBOX UID       the raw message on stdout", msg_get },
	{ "list", 2, 2, OPT_UIDS, "USER MAILBOX [--uids SET]   UID, FLAGS, SIZE, DATE, FROM, SUBJECT",
	  msg_list },
	{ "search", 2, 2, OPT_SEARCH, "USER MAILBOX [--subject TEXT] [--from TEXT] [--body TEXT] "
	  "[--unseen]\n                     the UIDs matching all the options, as a set", msg_search },
	{ "flag", 4, MSG_POS_MAX, 0, "USER MAILBOX UIDS +FLAG|-FLAG...\n                     "
	  "'+\\Seen' adds \\Seen, '-$Work' removes the keyword $Work", msg_flag },
	{ "expunge", 2, 2, 0, "USER MAILBOX   deletes the messages flagged \\Deleted", msg_expunge },
	{ "copy", 4, 4, 0, "USER MAILBOX UIDS TO", msg_copy },
	{ "move", 4, 4, 0, "USER MAILBOX UIDS TO", msg_copy },
};

static int msg_usage(FILE *to, const struct msg_verb *v)
{
	const char *lead = "usage:";
	for (size_t i = 0; i < ARRAY_LEN(verbs); i++) {
		if (v != NULL && &verbs[i] != v)
			continue;
		fprintf(to, "%-6s roostctl message %s %s\n", lead, verbs[i].verb, verbs[i].args_help);
		lead = "";
	}
	fprintf(to, "  USER is an address; UIDS an IMAP set (\"1:5,7,9:*\"). Lists print one\n"
		"  tab-separated line per message; --json prints storaged's reply.\n");
	return to == stdout ? 0 : 2;
}

/* A search option as a criterion (new reference), or NULL if opt is none. */
static json_t *msg_criterion(const char *opt, const char *val)
{
	static const struct { const char *opt, *field; } headers[] = {
		{ "--subject", "subject" }, { "--from", "from" },
	};
	for (size_t i = 0; i < ARRAY_LEN(headers); i++)
		if (strcmp(opt, headers[i].opt) == 0)
			return json_pack("{s:{s:s, s:s}}", "header", "field", headers[i].field,
					 "contains", val);
	if (strcmp(opt, "--body") == 0)
		return json_pack("{s:s}", "body", val);
	return NULL;
}

/* Fills a from argv (after the verb); 0, or 1 after printing why not.
 * Options are "--word"; "-\Seen" is an argument; "--" ends the options. */
static int msg_parse(struct ctl *ctl, const struct msg_verb *v, const char *what, int argc,
		     char **argv, struct msg_args *a)
{
	bool opts = true;
	for (int i = 0; i < argc; i++) {
		const char *s = argv[i];
		bool opt = opts && strncmp(s, "--", 2) == 0;
		json_t *c;
		if (opt && s[2] == '\0')
			opts = false;
		else if (!opt && s[0] == '\0')
			return ctl_fail("%s: empty argument (try --help)", what);
		else if (!opt && a->npos < v->max_pos)
			a->pos[a->npos++] = s;
		else if (!opt)
			return ctl_fail("%s: unexpected argument '%s' (try --help)", what, s);
		else if (strcmp(s, "--json") == 0)
			ctl->json = true;
		else if (strcmp(s, "--uids") == 0 && (v->opts & OPT_UIDS) && i + 1 < argc)
			a->uids = argv[++i];
		else if (strcmp(s, "--unseen") == 0 && (v->opts & OPT_SEARCH))
			json_array_append_new(a->criteria, json_pack("{s:s}", "unflag", "\\Seen"));
		else if ((v->opts & OPT_SEARCH) && i + 1 < argc && (c = msg_criterion(s, argv[i + 1])))
			json_array_append_new(a->criteria, c), i++;
		else
			return ctl_fail("%s: unknown option '%s' or its value missing (try --help)", what, s);
	}
	if (a->npos < v->min_pos)
		return ctl_fail("%s: missing arguments: %s (try --help)", what, v->args_help);
	if ((v->opts & OPT_SEARCH) && json_array_size(a->criteria) == 0)
		return ctl_fail("%s: give at least one of --subject, --from, --body, --unseen", what);
	return 0;
}

/* A request of type storaged.message.<verb> for USER MAILBOX (new reference). */
static json_t *msg_request_new(const char *verb, const struct msg_args *a)
{
	char type[64];
	snprintf(type, sizeof type, "storaged.message.%s", verb);
	json_t *req = bus_env_new(type);
	json_object_set_new(req, "address", json_string(a->pos[0]));
	json_object_set_new(req, "mailbox", json_string(a->pos[1]));
	return req;
}

/* Adds this run's idem key, with a suffix for the n-th change of the run. */
static int msg_idem(json_t *req, const char *what, int n)
{
	const char *idem = ctl_idem();
	char key[48];
	if (idem == NULL) {
		json_decref(req);
		return ctl_fail("%s: no random idempotency key: %s", what, strerror(errno));
	}
	snprintf(key, sizeof key, "%s-%d", idem, n);
	json_object_set_new(req, "idem", json_string(key));
	return 0;
}

static void msg_print_json(const json_t *j)
{
	json_dumpf(j, stdout, JSON_COMPACT);
	fputc('\n', stdout);
}

/* Sends the change *req (stolen) with the run's n-th idem key: the ok reply
 * (new reference; printed already with --json), or NULL after saying why. */
static json_t *msg_change_new(const struct ctl *ctl, const char *what, json_t *req, int n)
{
	if (msg_idem(req, what, n) != 0)
		return NULL;
	json_t *reply = ctl_storaged_call_new(ctl, what, &req, NULL, NULL);
	if (reply != NULL && ctl->json)
		msg_print_json(reply);
	return reply;
}

/* ---- get -------------------------------------------------------------------- */

/* Writes the message to stdout piece by piece: each fetch brings at most
 * 1 MiB, written and freed before the next. */
static int msg_get(struct ctl *ctl, const struct msg_verb *v, struct msg_args *a)
{
	(void)v;
	char *end;
	errno = 0;
	unsigned long long uid = strtoull(a->pos[2], &end, 10);
	if (a->pos[2][0] < '1' || a->pos[2][0] > '9' || *end != '\0' || errno != 0 || uid > 4294967295ULL)
		return ctl_fail("message get: UID must be a number, 1..4294967295");
	long long off = 0, size = -1;
	while (size < 0 || off < size) {
		json_t *req = msg_request_new("fetch", a);
		json_object_set_new(req, "uid", json_integer((json_int_t)uid));
		json_object_set_new(req, "offset", json_integer(off));
		json_object_set_new(req, "length", json_integer(MSG_PIECE));
		void *raw = NULL;
		size_t len = 0;
		json_t *reply = ctl_storaged_call_new(ctl, "message get", &req, &raw, &len);
		if (reply == NULL)
			return 1;
		size = json_integer_value(json_object_get(reply, "size"));
		json_decref(reply);
		if (len == 0 && off < size) {
			free(raw);
			return ctl_fail("message get: storaged sent nothing at offset %lld of %lld", off, size);
		}
		size_t put = len > 0 ? fwrite(raw, 1, len, stdout) : 0;
		free(raw);
		if (put != len)
			return ctl_fail("message get: writing stdout: %s", strerror(errno));
		off += (long long)len;
	}
	if (fflush(stdout) != 0)
		return ctl_fail("message get: writing stdout: %s", strerror(errno));
	return 0;
}

/* ---- list ------------------------------------------------------------------- */

static const char *msg_str(const json_t *obj, const char *key)
{
	const char *s = json_string_value(json_object_get(obj, key));
	return s && s[0] ? s : "-";
}

/* UID, flags (space-separated, "-" if none), size, INTERNALDATE, from, subject. */
static void msg_print_row(const json_t *m)
{
	char when[32], flags[1024] = "";
	size_t i, o = 0;
	json_t *f;
	time_t t = (time_t)json_integer_value(json_object_get(m, "internaldate"));
	struct tm tm;
	if (gmtime_r(&t, &tm) == NULL || strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(when, sizeof when, "%lld", (long long)t);
	json_array_foreach(json_object_get(m, "flags"), i, f)
		if (o < sizeof flags)
			o += (size_t)snprintf(flags + o, sizeof flags - o, "%s%s", o ? " " : "",
					      json_string_value(f));
	const json_t *h = json_object_get(m, "headers");
	printf("%lld\t%s\t%lld\t%s\t%s\t%s\n", (long long)json_integer_value(json_object_get(m, "uid")),
	       o ? flags : "-", (long long)json_integer_value(json_object_get(m, "size")), when,
	       msg_str(h, "from"), msg_str(h, "subject"));
}

/* The part of set text from UID next on ("*" is star), into out. */
static void msg_set_from(const char *text, uint32_t star, uint32_t next, char *out, size_t cap)
{
	static seqset_t set;
	const char *why;
	size_t o = 0;
	if (seqset_parse(&set, text, star, &why) < 0)
		set.n = 0;   /* storaged took it on the first page: cannot be */
	for (size_t i = 0; i < set.n; i++) {
		if (set.r[i].hi < next)
			continue;
		set.r[i].lo = set.r[i].lo < next ? next : set.r[i].lo;
		set.r[o++] = set.r[i];
	}
	set.n = o;
	if (seqset_format(&set, out, cap) <= 0)
		snprintf(out, cap, "%u", next);   /* nothing left: next itself */
}

/* Every page of storaged.message.list (headers on), printed as it comes,
 * or gathered into one reply for --json. */
static int msg_list(struct ctl *ctl, const struct msg_verb *v, struct msg_args *a)
{
	(void)v;
	static char from[SEQSET_TEXT_MAX + 1];
	json_t *all = NULL;
	const char *uids = a->uids ? a->uids : "1:*";
	for (;;) {
		json_t *req = msg_request_new("list", a);
		json_object_set_new(req, "uids", json_string(uids));
		json_object_set_new(req, "headers", json_true());
		json_t *reply = ctl_storaged_call_new(ctl, "message list", &req, NULL, NULL);
		if (reply == NULL) {
			json_decref(all);
			return 1;
		}
		json_t *msgs = json_object_get(reply, "messages"), *m;
		size_t i;
		if (ctl->json && all == NULL)
			all = json_incref(reply);
		else if (ctl->json)
			json_array_extend(json_object_get(all, "messages"), msgs);
		else
			json_array_foreach(msgs, i, m)
				msg_print_row(m);
		json_int_t next = json_integer_value(json_object_get(reply, "next"));
		json_int_t star = json_integer_value(json_object_get(reply, "uidnext")) - 1;
		json_decref(reply);
		if (next <= 0)
			break;
		msg_set_from(a->uids ? a->uids : "1:*", (uint32_t)star, (uint32_t)next, from, sizeof from);
		uids = from;
	}
	if (all != NULL) {
		json_object_del(all, "next");
		msg_print_json(all);
		json_decref(all);
	}
	return 0;
}

/* ---- search ----------------------------------------------------------------- */

/* The matching UIDs as one set, page after page (storaged cuts at 48 KiB). */
static int msg_search(struct ctl *ctl, const struct msg_verb *v, struct msg_args *a)
{
	(void)v;
	json_int_t from = 1;
	bool first = true;
	json_t *crit = json_array_size(a->criteria) == 1 ? json_incref(json_array_get(a->criteria, 0))
		       : json_pack("{s:O}", "and", a->criteria);
	for (;;) {
		json_t *req = msg_request_new("search", a);
		json_object_set(req, "criteria", crit);
		json_object_set_new(req, "from", json_integer(from));
		json_t *reply = ctl_storaged_call_new(ctl, "message search", &req, NULL, NULL);
		if (reply == NULL) {
			json_decref(crit);
			return 1;
		}
		const char *uids = json_string_value(json_object_get(reply, "uids"));
		if (ctl->json)
			msg_print_json(reply);
		else if (uids != NULL && uids[0] != '\0')
			printf("%s%s", first ? "" : ",", uids), first = false;
		from = json_integer_value(json_object_get(reply, "next"));
		json_decref(reply);
		if (from <= 0)
			break;
	}
	if (!ctl->json && !first)
		putchar('\n');
	json_decref(crit);
	return 0;
}

/* ---- flag, expunge, copy, move -------------------------------------------------- */

/* One storaged.message.flags request for the flags of a that start with sign. */
static int msg_flag_op(struct ctl *ctl, struct msg_args *a, char sign, int n)
{
	json_t *flags = json_array();
	for (int i = 3; i < a->npos; i++)
		if (a->pos[i][0] == sign)
			json_array_append_new(flags, json_string(a->pos[i] + 1));
	if (json_array_size(flags) == 0) {
		json_decref(flags);
		return 0;
	}
	json_t *req = msg_request_new("flags", a);
	json_object_set_new(req, "uids", json_string(a->pos[2]));
	json_object_set_new(req, "op", json_string(sign == '+' ? "add" : "remove"));
	json_object_set_new(req, "flags", flags);
	json_t *reply = msg_change_new(ctl, "message flag", req, n);
	if (reply == NULL)
		return 1;
	if (!ctl->json)
		printf("%c: %zu messages changed (highestmodseq %lld)\n", sign,
		       json_array_size(json_object_get(reply, "changed")),
		       (long long)json_integer_value(json_object_get(reply, "highestmodseq")));
	json_decref(reply);
	return 0;
}

static int msg_flag(struct ctl *ctl, const struct msg_verb *v, struct msg_args *a)
{
	(void)v;
	for (int i = 3; i < a->npos; i++)
		if ((a->pos[i][0] != '+' && a->pos[i][0] != '-') || a->pos[i][1] == '\0')
			return ctl_fail("message flag: '%s': write +FLAG to add or -FLAG to remove",
					a->pos[i]);
	int rc = msg_flag_op(ctl, a, '+', 1);
	return rc != 0 ? rc : msg_flag_op(ctl, a, '-', 2);
}

static int msg_expunge(struct ctl *ctl, const struct msg_verb *v, struct msg_args *a)
{
	(void)v;
	json_t *reply = msg_change_new(ctl, "message expunge", msg_request_new("expunge", a), 1);
	if (reply == NULL)
		return 1;
	const char *gone = msg_str(reply, "expunged");
	if (ctl->json)
		;   /* printed */
	else if (strcmp(gone, "-") == 0)
		printf("nothing to expunge in %s of %s\n", a->pos[1], a->pos[0]);
	else
		printf("expunged %s from %s of %s\n", gone, a->pos[1], a->pos[0]);
	json_decref(reply);
	return 0;
}

static int msg_copy(struct ctl *ctl, const struct msg_verb *v, struct msg_args *a)
{
	bool move = strcmp(v->verb, "move") == 0;
	char what[16];
	snprintf(what, sizeof what, "message %s", v->verb);
	json_t *req = msg_request_new("copy", a);
	json_object_set_new(req, "uids", json_string(a->pos[2]));
	json_object_set_new(req, "to", json_string(a->pos[3]));
	json_object_set_new(req, "move", json_boolean(move));
	json_t *reply = msg_change_new(ctl, what, req, 1);
	if (reply == NULL)
		return 1;
	if (ctl->json)
		;   /* printed */
	else if (strcmp(msg_str(reply, "src"), "-") == 0)
		printf("no messages %s in %s of %s\n", a->pos[2], a->pos[1], a->pos[0]);
	else
		printf("%s %s of %s to %s as %s\n", move ? "moved" : "copied", msg_str(reply, "src"),
		       a->pos[1], a->pos[3], msg_str(reply, "dst"));
	json_decref(reply);
	return 0;
}

/* ---- dispatch ------------------------------------------------------------------- */

int cmd_message(struct ctl *ctl, int argc, char **argv)
{
	if (argc < 2)
		return msg_usage(stderr, NULL);
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
		return msg_usage(stdout, NULL);
	for (size_t i = 0; i < ARRAY_LEN(verbs); i++) {
		const struct msg_verb *v = &verbs[i];
		if (strcmp(v->verb, argv[1]) != 0)
			continue;
		for (int j = 2; j < argc && strcmp(argv[j], "--") != 0; j++)
			if (strcmp(argv[j], "--help") == 0 || strcmp(argv[j], "-h") == 0)
				return msg_usage(stdout, v);
		char what[32];
		snprintf(what, sizeof what, "message %s", v->verb);
		struct msg_args a = { .criteria = json_array() };
		int rc = msg_parse(ctl, v, what, argc - 2, argv + 2, &a);
		if (rc == 0)
			rc = v->run(ctl, v, &a);
		json_decref(a.criteria);
		return rc;
	}
	return ctl_fail("message: unknown subcommand '%s' (try roostctl message --help)", argv[1]);
}
