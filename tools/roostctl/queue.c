/*
 * queue.c — roostctl queue: the outbound mail storaged keeps until smtpd's
 * delivery client has delivered it or given up
 * (proto/schemas/storaged.queue.*.json).
 *
 *   queue list [--after ID] [--limit N]   one line per entry
 *   queue show ID                          the entry, one line per recipient
 *   queue retry ID | --all                 queued recipients due now
 *   queue delete ID                        the entry goes, without a bounce
 *
 * list asks storaged page after page (its reply's next) until the queue,
 * or --limit entries, ran out; with --json it prints one object holding
 * every entry (and next if --limit stopped it early). retry and delete carry
 * this invocation's idempotency key (accounts.c), so a resend after a lost
 * reply changes nothing twice.
 */
#include "roostctl.h"
#include "bus.h"
#include "msgtypes.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QUEUE_ID_MAX 9007199254740991LL  /* 2^53 - 1, as storaged takes */
#define QUEUE_PAGE_MAX 1000              /* entries storaged lists at once */

enum queue_opt {
	QUEUE_OPT_ID = 1,     /* takes ID */
	QUEUE_OPT_ALL = 2,    /* takes --all instead of ID */
	QUEUE_OPT_PAGE = 4,   /* takes --after ID, --limit N */
};

/* What the command line said, once parsed. */
struct queue_args {
	long long id;         /* 0: none given */
	bool all;
	long long after;
	long long limit;      /* 0: every entry */
};

struct queue_verb {
	const char *verb;
	enum msg_type type;
	unsigned opts;
	const char *args_help;
	int (*run)(struct ctl *ctl, const struct queue_verb *v, const struct queue_args *a);
};

static int queue_list(struct ctl *ctl, const struct queue_verb *v, const struct queue_args *a);
static int queue_show(struct ctl *ctl, const struct queue_verb *v, const struct queue_args *a);
static int queue_change(struct ctl *ctl, const struct queue_verb *v, const struct queue_args *a);

static const struct queue_verb verbs[] = {
	{ "list", MSG_STORAGED_QUEUE_LIST, QUEUE_OPT_PAGE, "[--after ID] [--limit N]\n"
	  "         ID, SENDER (<> for a bounce), SIZE, RCPTS, QUEUED, NEXT-ATTEMPT, LEASED|-,\n"
	  "         CREATED, EXPIRES", queue_list },
	{ "show", MSG_STORAGED_QUEUE_SHOW, QUEUE_OPT_ID, "ID\n"
	  "         KEY<TAB>VALUE lines, then per recipient\n"
	  "         rcpt, ADDRESS, STATE, ATTEMPTS, NEXT-ATTEMPT, LAST-ERROR", queue_show },
	{ "retry", MSG_STORAGED_QUEUE_RETRY, QUEUE_OPT_ID | QUEUE_OPT_ALL,
	  "ID | --all   (queued recipients become due now)", queue_change },
	{ "delete", MSG_STORAGED_QUEUE_DELETE, QUEUE_OPT_ID,
	  "ID   (no bounce is sent to the sender)", queue_change },
};

static int queue_usage(FILE *to, const struct queue_verb *v)
{
	const char *lead = "usage:";
	for (size_t i = 0; i < ARRAY_LEN(verbs); i++) {
		if (v != NULL && &verbs[i] != v)
			continue;
		fprintf(to, "%-6s roostctl queue %s %s\n", lead, verbs[i].verb, verbs[i].args_help);
		lead = "";
	}
	fprintf(to, "  lists print one tab-separated line per item, times in UTC;\n"
		"  --json (before the command) prints storaged's reply.\n");
	return to == stdout ? 0 : 2;
}

/* A decimal number min..max, digits only; -1 if s is not one. */
static int queue_number(const char *s, long long min, long long max, long long *out)
{
	char *end;
	if (s[0] < '0' || s[0] > '9')
		return -1;
	errno = 0;
	*out = strtoll(s, &end, 10);
	return errno == 0 && *end == '\0' && *out >= min && *out <= max ? 0 : -1;
}

/* Fills a from argv (after the verb); 0, or 1 after printing why not. */
static int queue_parse(const struct queue_verb *v, const char *what, int argc, char **argv,
		       struct queue_args *a)
{
	for (int i = 0; i < argc; i++) {
		const char *arg = argv[i], *val = i + 1 < argc ? argv[i + 1] : "";
		if (strcmp(arg, "--all") == 0 && (v->opts & QUEUE_OPT_ALL)) {
			a->all = true;
		} else if (strcmp(arg, "--after") == 0 && (v->opts & QUEUE_OPT_PAGE)) {
			if (queue_number(val, 0, QUEUE_ID_MAX, &a->after) < 0)
				return ctl_fail("%s: --after wants a queue id", what);
			i++;
		} else if (strcmp(arg, "--limit") == 0 && (v->opts & QUEUE_OPT_PAGE)) {
			if (queue_number(val, 1, QUEUE_ID_MAX, &a->limit) < 0)
				return ctl_fail("%s: --limit wants a number of entries, 1 or more", what);
			i++;
		} else if (arg[0] == '-') {
			return ctl_fail("%s: unknown option '%s' (try --help)", what, arg);
		} else if ((v->opts & QUEUE_OPT_ID) && a->id == 0) {
			if (queue_number(arg, 1, QUEUE_ID_MAX, &a->id) < 0)
				return ctl_fail("%s: '%s' is not a queue id (a number from queue list)", what, arg);
		} else {
			return ctl_fail("%s: unexpected argument '%s' (try --help)", what, arg);
		}
	}
	if ((v->opts & QUEUE_OPT_ID) && a->id == 0 && !a->all)
		return ctl_fail("%s: missing %s", what, (v->opts & QUEUE_OPT_ALL) ? "ID or --all" : "ID");
	if (a->id != 0 && a->all)
		return ctl_fail("%s: ID or --all, not both", what);
	return 0;
}

/* The request of v with a's fields (new reference), or NULL after printing why. */
static json_t *queue_request_new(const struct queue_verb *v, const char *what,
				 const struct queue_args *a, long long after, long long limit)
{
	json_t *req = acct_env_new(v->type, what);
	if (req == NULL)
		return NULL;
	if (a->id != 0)
		json_object_set_new(req, "queue_id", json_integer(a->id));
	if (a->all)
		json_object_set_new(req, "all", json_true());
	if (after != 0)
		json_object_set_new(req, "after", json_integer(after));
	if (limit != 0)
		json_object_set_new(req, "limit", json_integer(limit));
	return req;
}

/* Sends v's request; the ok reply (new reference) or NULL after one line. */
static json_t *queue_call_new(struct ctl *ctl, const struct queue_verb *v, const struct queue_args *a,
			      long long after, long long limit)
{
	char what[32];
	snprintf(what, sizeof what, "queue %s", v->verb);
	json_t *req = queue_request_new(v, what, a, after, limit);
	return req != NULL ? ctl_storaged_call_new(ctl, what, &req, NULL, NULL) : NULL;
}

static void queue_print_json(const json_t *j)
{
	json_dumpf(j, stdout, JSON_COMPACT);
	fputc('\n', stdout);
}

/* ---- list ------------------------------------------------------------------- */

/* A time field (unix s) as UTC, "-" if null. */
static const char *queue_time(const json_t *obj, const char *key, char *buf, size_t size)
{
	const json_t *t = json_object_get(obj, key);
	return json_is_integer(t) ? acct_when((long long)json_integer_value(t), buf, size) : "-";
}

/* The sender as SMTP writes it: <> for a bounce. */
static const char *queue_sender(const json_t *e)
{
	const char *s = acct_str(e, "sender");
	return s[0] != '\0' ? s : "<>";
}

static void queue_print_entry(const json_t *e)
{
	char next[32], created[32], expires[32];
	printf("%lld\t%s\t%lld\t%lld\t%lld\t%s\t%s\t%s\t%s\n", acct_num(e, "id"), queue_sender(e),
	       acct_num(e, "size"), acct_num(e, "rcpts"), acct_num(e, "queued"),
	       queue_time(e, "next_attempt", next, sizeof next),
	       json_is_true(json_object_get(e, "leased")) ? "leased" : "-",
	       queue_time(e, "created", created, sizeof created),
	       queue_time(e, "expires", expires, sizeof expires));
}

/* Every page (or --limit entries): printed as they come, or gathered for --json. */
static int queue_list(struct ctl *ctl, const struct queue_verb *v, const struct queue_args *a)
{
	json_t *all = json_array(), *reply = NULL, *next;
	long long after = a->after, got = 0;
	size_t i;
	json_t *e;
	do {
		long long want = a->limit == 0 ? QUEUE_PAGE_MAX : a->limit - got;
		json_decref(reply);
		reply = queue_call_new(ctl, v, a, after, want < QUEUE_PAGE_MAX ? want : QUEUE_PAGE_MAX);
		if (reply == NULL) {
			json_decref(all);
			return 1;
		}
		json_array_foreach(json_object_get(reply, "entries"), i, e) {
			if (ctl->json)
				json_array_append(all, e);
			else
				queue_print_entry(e);
			got++;
		}
		next = json_object_get(reply, "next");
		after = (long long)json_integer_value(next);
	} while (next != NULL && (a->limit == 0 || got < a->limit));
	if (ctl->json) {
		json_object_set_new(reply, "entries", all);  /* the last reply, every entry */
		queue_print_json(reply);
	} else {
		json_decref(all);
	}
	json_decref(reply);
	return 0;
}

/* ---- show, retry, delete ---------------------------------------------------------- */

static int queue_show(struct ctl *ctl, const struct queue_verb *v, const struct queue_args *a)
{
	char t1[32], t2[32];
	size_t i;
	json_t *r, *reply = queue_call_new(ctl, v, a, 0, 0);
	if (reply == NULL)
		return 1;
	const json_t *e = json_object_get(reply, "entry");
	if (ctl->json) {
		queue_print_json(reply);
	} else {
		printf("id\t%lld\nsender\t%s\norigin\t%s\nsize\t%lld\nsha256\t%s\ncreated\t%s\nexpires\t%s\n",
		       acct_num(e, "id"), queue_sender(e), acct_str(e, "origin"), acct_num(e, "size"),
		       acct_str(e, "sha256"),
		       queue_time(e, "created", t1, sizeof t1), queue_time(e, "expires", t2, sizeof t2));
		if (json_is_true(json_object_get(e, "leased")))
			printf("lease\t%s until %s\n", acct_str(e, "lease_owner"),
			       acct_when(acct_num(e, "lease_until") / 1000, t1, sizeof t1));
		else
			printf("lease\t-\n");
		json_array_foreach(json_object_get(e, "rcpts"), i, r)
			printf("rcpt\t%s\t%s\t%lld\t%s\t%s\n", acct_str(r, "rcpt"), acct_str(r, "state"),
			       acct_num(r, "attempts"), queue_time(r, "next_attempt", t1, sizeof t1),
			       acct_str(r, "last_error"));
		if (json_is_true(json_object_get(reply, "truncated")))
			fprintf(stderr, "roostctl: queue show: recipients cut short to fit one reply\n");
	}
	json_decref(reply);
	return 0;
}

/* retry and delete: what was done, in the operator's words. */
static int queue_change(struct ctl *ctl, const struct queue_verb *v, const struct queue_args *a)
{
	json_t *reply = queue_call_new(ctl, v, a, 0, 0);
	if (reply == NULL)
		return 1;
	if (ctl->json)
		queue_print_json(reply);
	else if (v->type == MSG_STORAGED_QUEUE_DELETE)
		printf("queue entry %lld deleted\n", a->id);
	else
		printf("%lld recipient%s due now\n", acct_num(reply, "updated"),
		       acct_num(reply, "updated") == 1 ? "" : "s");
	json_decref(reply);
	return 0;
}

int cmd_queue(struct ctl *ctl, int argc, char **argv)
{
	char what[32];
	struct queue_args a = { 0 };
	if (argc < 2)
		return queue_usage(stderr, NULL);
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
		return queue_usage(stdout, NULL);
	for (size_t i = 0; i < ARRAY_LEN(verbs); i++) {
		const struct queue_verb *v = &verbs[i];
		if (strcmp(v->verb, argv[1]) != 0)
			continue;
		for (int j = 2; j < argc; j++)
			if (strcmp(argv[j], "--help") == 0 || strcmp(argv[j], "-h") == 0)
				return queue_usage(stdout, v);
		snprintf(what, sizeof what, "queue %s", v->verb);
		if (queue_parse(v, what, argc - 2, argv + 2, &a) != 0)
			return 1;
		return v->run(ctl, v, &a);
	}
	return ctl_fail("queue: unknown subcommand '%s' (try roostctl queue --help)", argv[1]);
}
