/*
 * accounts.c — roostctl domain, user, alias, mailbox, rcpt: the mail
 * accounts storaged keeps, their mailboxes and where a recipient's mail goes
 * (proto/schemas/storaged.{domain,user,alias,mailbox,rcpt}.*.json).
 *
 * One table row per subcommand: the message type it sends, the request
 * fields its positional arguments fill, the options it takes and how its
 * reply is printed. A type the schemas mark idempotent carries an idem key,
 * one random token per invocation: the synchronous call resends the same
 * envelope on a retry, so storaged applies the change at most once.
 *
 * Lists storaged sends in pages (domains, users, aliases) are fetched whole,
 * page after page, and printed as one.
 *
 * Passwords come from stdin only (--password-stdin), never from argv,
 * where every user of the machine could read them in ps.
 */
#include "roostctl.h"
#include "bus.h"
#include "envelope.h"
#include "msgtypes.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ACCT_PASSWORD_MAX 1024       /* bytes, as storaged accepts */
#define ACCT_QUOTA_MAX (1ULL << 50)  /* bytes */

enum acct_opt {
	ACCT_OPT_PASSWORD = 1,  /* --password-stdin accepted */
	ACCT_OPT_NEED_PW = 2,   /* --password-stdin required */
	ACCT_OPT_QUOTA = 4,     /* --quota BYTES accepted */
	ACCT_OPT_SUB = 8,       /* sends "subscribed": true */
	ACCT_OPT_UNSUB = 16,    /* sends "subscribed": false */
	ACCT_OPT_BYTES = 32,    /* the last argument is BYTES, sent as quota_bytes */
	ACCT_OPT_OFF = 64,      /* --off instead of the last argument: sends it as null */
};

/* What the command line said, once parsed. */
struct acct_args {
	const char *pos[3];
	int npos;
	bool password_stdin;
	bool has_quota;
	unsigned long long quota;
	bool off;
};

struct acct_verb {
	const char *family;          /* "domain", "user", "alias", "mailbox" */
	const char *verb;            /* "add", ... */
	enum msg_type type;
	int min_pos, max_pos;
	const char *fields[3];       /* request field of each positional argument */
	unsigned opts;
	const char *args_help;       /* "ADDRESS [--password-stdin] ..." */
	int (*print)(const json_t *reply, const struct acct_args *a);
};

static int print_domain_added(const json_t *reply, const struct acct_args *a);
static int print_domains(const json_t *reply, const struct acct_args *a);
static int print_user_added(const json_t *reply, const struct acct_args *a);
static int print_users(const json_t *reply, const struct acct_args *a);
static int print_verify(const json_t *reply, const struct acct_args *a);
static int print_alias_added(const json_t *reply, const struct acct_args *a);
static int print_aliases(const json_t *reply, const struct acct_args *a);
static int print_done(const json_t *reply, const struct acct_args *a);
static int print_mailbox_created(const json_t *reply, const struct acct_args *a);
static int print_mailboxes(const json_t *reply, const struct acct_args *a);
static int print_mailbox_done(const json_t *reply, const struct acct_args *a);
static int print_catchall(const json_t *reply, const struct acct_args *a);
static int print_quota(const json_t *reply, const struct acct_args *a);
static int print_rcpt(const json_t *reply, const struct acct_args *a);

static const struct acct_verb verbs[] = {
	{ "domain", "add", MSG_STORAGED_DOMAIN_ADD, 1, 1, { "name" }, 0, "NAME", print_domain_added },
	{ "domain", "del", MSG_STORAGED_DOMAIN_DEL, 1, 1, { "name" }, 0,
	  "NAME            (deletes its users and aliases too)", print_done },
	{ "domain", "list", MSG_STORAGED_DOMAIN_LIST, 0, 0, { NULL }, 0,
	  "               NAME, USERS, ALIASES, POSTMASTER, CREATED, CATCH-ALL", print_domains },
	{ "domain", "catchall", MSG_STORAGED_DOMAIN_CATCHALL, 1, 2, { "domain", "target" }, ACCT_OPT_OFF,
	  "DOMAIN ADDRESS|--off   (mail for unknown local parts goes to ADDRESS)", print_catchall },
	{ "user", "add", MSG_STORAGED_USER_ADD, 1, 1, { "address" }, ACCT_OPT_PASSWORD | ACCT_OPT_QUOTA,
	  "ADDRESS [--password-stdin] [--quota BYTES]", print_user_added },
	{ "user", "del", MSG_STORAGED_USER_DEL, 1, 1, { "address" }, 0, "ADDRESS", print_done },
	{ "user", "list", MSG_STORAGED_USER_LIST, 0, 1, { "domain" }, 0,
	  "[DOMAIN]      ADDRESS, QUOTA, USED, PASSWORD, CREATED", print_users },
	{ "user", "quota", MSG_STORAGED_USER_QUOTA, 2, 2, { "address", NULL }, ACCT_OPT_BYTES,
	  "ADDRESS BYTES   (0: unlimited; suffix K, M, G or T: KiB, MiB, GiB, TiB)", print_quota },
	{ "user", "passwd", MSG_STORAGED_USER_PASSWD, 1, 1, { "address" },
	  ACCT_OPT_PASSWORD | ACCT_OPT_NEED_PW, "ADDRESS --password-stdin", print_done },
	{ "user", "verify", MSG_STORAGED_USER_VERIFY, 1, 1, { "address" },
	  ACCT_OPT_PASSWORD | ACCT_OPT_NEED_PW,
	  "ADDRESS --password-stdin   (prints valid or invalid; exit 0 if valid, 1 if not)", print_verify },
	{ "alias", "add", MSG_STORAGED_ALIAS_ADD, 2, 2, { "address", "target" }, 0,
	  "ADDRESS TARGET", print_alias_added },
	{ "alias", "del", MSG_STORAGED_ALIAS_DEL, 2, 2, { "address", "target" }, 0,
	  "ADDRESS TARGET", print_done },
	{ "alias", "list", MSG_STORAGED_ALIAS_LIST, 0, 1, { "domain" }, 0,
	  "[DOMAIN]     ADDRESS, TARGET", print_aliases },
	{ "mailbox", "list", MSG_STORAGED_MAILBOX_LIST, 1, 1, { "address" }, 0,
	  "ADDRESS     NAME, SPECIAL-USE, SUBSCRIBED, UIDVALIDITY, UIDNEXT", print_mailboxes },
	{ "mailbox", "create", MSG_STORAGED_MAILBOX_CREATE, 2, 2, { "address", "name" }, 0,
	  "ADDRESS NAME", print_mailbox_created },
	{ "mailbox", "delete", MSG_STORAGED_MAILBOX_DELETE, 2, 2, { "address", "name" }, 0,
	  "ADDRESS NAME", print_mailbox_done },
	{ "mailbox", "rename", MSG_STORAGED_MAILBOX_RENAME, 3, 3, { "address", "from", "to" }, 0,
	  "ADDRESS FROM TO   (its children move too)", print_mailbox_done },
	{ "mailbox", "subscribe", MSG_STORAGED_MAILBOX_SUBSCRIBE, 2, 2, { "address", "name" },
	  ACCT_OPT_SUB, "ADDRESS NAME", print_mailbox_done },
	{ "mailbox", "unsubscribe", MSG_STORAGED_MAILBOX_SUBSCRIBE, 2, 2, { "address", "name" },
	  ACCT_OPT_UNSUB, "ADDRESS NAME", print_mailbox_done },
	{ "rcpt", "", MSG_STORAGED_RCPT_RESOLVE, 1, 1, { "address" }, 0,
	  "ADDRESS   where mail for ADDRESS goes (exit 0 if it is accepted here, 1 if not)",
	  print_rcpt },
};

/* The usage of one family (every verb), or of one verb if v is not NULL. */
static int acct_usage(FILE *to, const char *family, const struct acct_verb *v)
{
	const char *lead = "usage:";
	for (size_t i = 0; i < ARRAY_LEN(verbs); i++) {
		if (strcmp(verbs[i].family, family) != 0 || (v != NULL && &verbs[i] != v))
			continue;
		fprintf(to, "%-6s roostctl %s %s%s%s\n", lead, family, verbs[i].verb,
			verbs[i].verb[0] != '\0' ? " " : "", verbs[i].args_help);
		lead = "";
	}
	fprintf(to, "  lists print one tab-separated line per item; --json (before the command)\n"
		"  prints storaged's reply. Passwords are read from stdin (one line), never argv.\n");
	return to == stdout ? 0 : 2;
}

/*
 * A request envelope of type: the run's idempotency key (ctl_idem) on a
 * type that changes state.
 */
json_t *acct_env_new(enum msg_type type, const char *what)
{
	const struct msgtype *mt = &msgtypes[type];
	json_t *req = bus_env_new(mt->name);
	if (!(mt->flags & MSGF_IDEMPOTENT))
		return req;
	const char *idem = ctl_idem();
	if (idem == NULL) {
		json_decref(req);
		ctl_fail("%s: no random idempotency key: %s", what, strerror(errno));
		return NULL;
	}
	json_object_set_new(req, "idem", json_string(idem));
	return req;
}

/*
 * Reads the password: one line of stdin, its newline (and a CR before it)
 * stripped. Returns a malloc'd string, or NULL after printing why.
 */
static char *acct_read_password(const char *what)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n = getline(&line, &cap, stdin);
	if (n < 0) {
		free(line);
		ctl_fail("%s: --password-stdin: no password on stdin", what);
		return NULL;
	}
	if (n > 0 && line[n - 1] == '\n')
		line[--n] = '\0';
	if (n > 0 && line[n - 1] == '\r')
		line[--n] = '\0';
	if (n == 0 || n > ACCT_PASSWORD_MAX) {
		explicit_bzero(line, cap);
		free(line);
		ctl_fail("%s: the password must be 1..%d bytes", what, ACCT_PASSWORD_MAX);
		return NULL;
	}
	return line;
}

/* BYTES (--quota, user quota): decimal digits, then K, M, G or T for
 * KiB, MiB, GiB, TiB if wanted; at most 2^50. */
static int acct_parse_quota(const char *s, unsigned long long *out)
{
	static const char units[] = "KMGT";
	const char *unit;
	char *end;
	int shift = 0;
	if (s[0] < '0' || s[0] > '9')
		return -1;
	errno = 0;
	unsigned long long n = strtoull(s, &end, 10);
	if (*end != '\0' && end[1] == '\0' && (unit = strchr(units, toupper((unsigned char)*end))) != NULL) {
		shift = 10 * (int)(unit - units + 1);
		end++;
	}
	if (errno != 0 || *end != '\0' || n > (ACCT_QUOTA_MAX >> shift))
		return -1;
	*out = n << shift;
	return 0;
}

/* Parses BYTES into a->quota; 0, or 1 after printing why. */
static int acct_quota_arg(const char *what, const char *s, struct acct_args *a)
{
	if (acct_parse_quota(s, &a->quota) < 0)
		return ctl_fail("%s: the quota is a number of bytes (suffix K, M, G or T allowed), "
				"0 (unlimited) to %llu", what, ACCT_QUOTA_MAX);
	a->has_quota = true;
	return 0;
}

/*
 * Fills a from argv (after the verb); 0, or 1 after printing why not.
 * Options are "--word" only, so "-@example.org" is an address (a local
 * part may start with '-'); "--" ends the options.
 */
static int acct_parse(const struct acct_verb *v, const char *what, int argc, char **argv,
		      struct acct_args *a)
{
	bool opts = true;
	for (int i = 0; i < argc; i++) {
		bool opt = opts && strncmp(argv[i], "--", 2) == 0;
		if (opt && argv[i][2] == '\0') {
			opts = false;
		} else if (!opt && argv[i][0] == '\0') {
			/* never sent: every field the schemas define is 1 character or more */
			return ctl_fail("%s: empty argument (try --help)", what);
		} else if (!opt && a->npos < v->max_pos) {
			a->pos[a->npos++] = argv[i];
		} else if (!opt) {
			return ctl_fail("%s: unexpected argument '%s' (try --help)", what, argv[i]);
		} else if (strcmp(argv[i], "--password-stdin") == 0 && (v->opts & ACCT_OPT_PASSWORD)) {
			a->password_stdin = true;
		} else if (strcmp(argv[i], "--quota") == 0 && (v->opts & ACCT_OPT_QUOTA)) {
			if (i + 1 >= argc || acct_quota_arg(what, argv[++i], a) != 0)
				return 1;
		} else if (strcmp(argv[i], "--off") == 0 && (v->opts & ACCT_OPT_OFF)) {
			a->off = true;
		} else if (strncmp(argv[i], "--password", 10) == 0 && strcmp(argv[i], "--password-stdin") != 0) {
			/* Refused on purpose, and not echoed: argv is visible to every local user. */
			return ctl_fail("%s: passwords are read from stdin: use --password-stdin", what);
		} else {
			return ctl_fail("%s: unknown option '%s' (try --help)", what, argv[i]);
		}
	}
	if (a->npos < v->min_pos)
		return ctl_fail("%s: missing %s (try --help)", what, v->args_help);
	if ((v->opts & ACCT_OPT_OFF) && a->off == (a->npos == v->max_pos))
		return ctl_fail("%s: wants either %s or --off (try --help)", what, v->fields[v->max_pos - 1]);
	if ((v->opts & ACCT_OPT_BYTES) && acct_quota_arg(what, a->pos[a->npos - 1], a) != 0)
		return 1;
	if ((v->opts & ACCT_OPT_NEED_PW) && !a->password_stdin)
		return ctl_fail("%s: needs --password-stdin (the password is read from stdin, never argv)",
				what);
	return 0;
}

/*
 * The request of verb v with arguments a (new reference), or NULL after
 * printing why. The password, if any, goes in last and is wiped from our
 * buffer at once.
 */
static json_t *acct_request_new(const struct acct_verb *v, const char *what, const struct acct_args *a)
{
	json_t *req = acct_env_new(v->type, what);
	if (req == NULL)
		return NULL;
	for (int i = 0; i < a->npos; i++)
		if (v->fields[i] != NULL)  /* NULL: BYTES, sent as quota_bytes below */
			json_object_set_new(req, v->fields[i], json_string(a->pos[i]));
	if (a->off)
		json_object_set_new(req, v->fields[v->max_pos - 1], json_null());
	if (a->has_quota)
		json_object_set_new(req, "quota_bytes", json_integer((json_int_t)a->quota));
	if (v->opts & (ACCT_OPT_SUB | ACCT_OPT_UNSUB))
		json_object_set_new(req, "subscribed", json_boolean(v->opts & ACCT_OPT_SUB));
	if (a->password_stdin) {
		char *pw = acct_read_password(what);
		if (pw == NULL) {
			json_decref(req);
			return NULL;
		}
		json_object_set_new(req, "password", json_string(pw));
		explicit_bzero(pw, strlen(pw));
		free(pw);
	}
	return req;
}

/* The list of a type's reply if it comes in pages, else NULL. */
static const char *acct_paged(enum msg_type type)
{
	switch (type) {
	case MSG_STORAGED_DOMAIN_LIST: return "domains";
	case MSG_STORAGED_USER_LIST: return "users";
	case MSG_STORAGED_ALIAS_LIST: return "aliases";
	default: return NULL;
	}
}

/* json_equal, where two missing values are the same too. */
static bool acct_same(const json_t *x, const json_t *y)
{
	return x == y || json_equal(x, y);
}

/*
 * Fetches the pages after reply's (a paged list cut short) and appends
 * their items to reply's list, so that reply reads as the whole list. 0,
 * or 1 after printing why (a failed call, or a server that does not go on).
 */
static int acct_all_pages(const struct ctl *ctl, const struct acct_verb *v, const char *what,
			  const struct acct_args *a, json_t *reply)
{
	const char *key = acct_paged(v->type);
	json_t *list = json_object_get(reply, key), *page = json_incref(reply);
	int rc = 0;
	while (rc == 0 && json_is_true(json_object_get(page, "truncated"))) {
		json_t *next = json_object_get(page, "next"), *next_target = json_object_get(page, "next_target");
		json_t *req = json_is_string(next) ? acct_request_new(v, what, a) : NULL, *more;
		if (req == NULL) {
			rc = ctl_fail("%s: storaged cut the list short without saying where it goes on", what);
			break;
		}
		json_object_set(req, "after", next);
		if (next_target != NULL)
			json_object_set(req, "after_target", next_target);
		if ((more = ctl_storaged_call_new(ctl, what, &req, NULL, NULL)) == NULL) {
			rc = 1;
			break;
		}
		/* A page must move on, or we would ask for it forever. */
		if (json_is_true(json_object_get(more, "truncated")) &&
		    (json_array_size(json_object_get(more, key)) == 0 ||
		     (acct_same(json_object_get(more, "next"), next) &&
		      acct_same(json_object_get(more, "next_target"), next_target))))
			rc = ctl_fail("%s: storaged sent a page that does not go on", what);
		json_array_extend(list, json_object_get(more, key));
		json_decref(page);
		page = more;
	}
	json_decref(page);
	json_object_set_new(reply, "truncated", json_false());
	json_object_del(reply, "next");
	json_object_del(reply, "next_target");
	return rc;
}

/* The exit status a reply means: verify and rcpt say their answer with it. */
static int acct_status(enum msg_type type, const json_t *reply)
{
	if (type == MSG_STORAGED_USER_VERIFY)
		return !json_is_true(json_object_get(reply, "valid"));
	if (type == MSG_STORAGED_RCPT_RESOLVE)
		return !json_is_true(json_object_get(reply, "found"));
	return 0;
}

/* Runs one verb of a family: parse, request, call, print. */
static int acct_run(struct ctl *ctl, const struct acct_verb *v, int argc, char **argv)
{
	char what[32];
	struct acct_args a = { 0 };
	snprintf(what, sizeof what, "%s%s%s", v->family, v->verb[0] != '\0' ? " " : "", v->verb);
	for (int i = 0; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
			return acct_usage(stdout, v->family, v);
	if (acct_parse(v, what, argc, argv, &a) != 0)
		return 1;
	json_t *req = acct_request_new(v, what, &a);
	if (req == NULL)
		return 1;
	json_t *reply = ctl_storaged_call_new(ctl, what, &req, NULL, NULL);
	if (reply == NULL)
		return 1;
	if (acct_paged(v->type) != NULL && acct_all_pages(ctl, v, what, &a, reply) != 0) {
		json_decref(reply);
		return 1;
	}
	int rc;
	if (ctl->json) {
		json_dumpf(reply, stdout, JSON_COMPACT);
		fputc('\n', stdout);
		rc = acct_status(v->type, reply);  /* verify and rcpt: the answer, in both modes */
	} else {
		rc = v->print(reply, &a);
		if (json_is_true(json_object_get(reply, "truncated")))  /* a list that has no pages */
			fprintf(stderr, "roostctl: %s: list cut short to fit one reply\n", what);
	}
	json_decref(reply);
	return rc;
}

/* The family's dispatch: argv[0] is the family, argv[1] the verb. */
static int acct_family(struct ctl *ctl, const char *family, int argc, char **argv)
{
	if (argc < 2)
		return acct_usage(stderr, family, NULL);
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
		return acct_usage(stdout, family, NULL);
	for (size_t i = 0; i < ARRAY_LEN(verbs); i++)
		if (strcmp(verbs[i].family, family) == 0 && strcmp(verbs[i].verb, argv[1]) == 0)
			return acct_run(ctl, &verbs[i], argc - 2, argv + 2);
	return ctl_fail("%s: unknown subcommand '%s' (try roostctl %s --help)", family, argv[1], family);
}

int cmd_domain(struct ctl *ctl, int argc, char **argv)
{
	return acct_family(ctl, "domain", argc, argv);
}

int cmd_user(struct ctl *ctl, int argc, char **argv)
{
	return acct_family(ctl, "user", argc, argv);
}

int cmd_alias(struct ctl *ctl, int argc, char **argv)
{
	return acct_family(ctl, "alias", argc, argv);
}

int cmd_mailbox(struct ctl *ctl, int argc, char **argv)
{
	return acct_family(ctl, "mailbox", argc, argv);
}

/* rcpt has no verb: argv[0] is "rcpt", the address follows. */
int cmd_rcpt(struct ctl *ctl, int argc, char **argv)
{
	for (size_t i = 0; i < ARRAY_LEN(verbs); i++)
		if (strcmp(verbs[i].family, "rcpt") == 0)
			return argc < 2 ? acct_usage(stderr, "rcpt", NULL) : acct_run(ctl, &verbs[i], argc - 1, argv + 1);
	return 1;
}

/* ---- human output --------------------------------------------------- */

const char *acct_when(long long secs, char *buf, size_t size)
{
	time_t s = (time_t)secs;
	struct tm tm;
	if (gmtime_r(&s, &tm) == NULL || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, size, "%lld", secs);
	return buf;
}

/* A JSON integer of unix seconds as acct_when writes it. */
static const char *acct_time(const json_t *t, char *buf, size_t size)
{
	return acct_when((long long)json_integer_value(t), buf, size);
}

const char *acct_str(const json_t *obj, const char *key)
{
	const char *s = json_string_value(json_object_get(obj, key));
	return s ? s : "-";
}

long long acct_num(const json_t *obj, const char *key)
{
	return (long long)json_integer_value(json_object_get(obj, key));
}

static int print_domain_added(const json_t *reply, const struct acct_args *a)
{
	(void)a;
	printf("domain %s added\n", acct_str(json_object_get(reply, "domain"), "name"));
	return 0;
}

static int print_domains(const json_t *reply, const struct acct_args *a)
{
	(void)a;
	size_t i;
	json_t *d;
	char when[32];
	json_array_foreach(json_object_get(reply, "domains"), i, d)
		printf("%s\t%lld\t%lld\t%s\t%s\t%s\n", acct_str(d, "name"), acct_num(d, "users"), acct_num(d, "aliases"),
		       acct_str(d, "postmaster"), acct_time(json_object_get(d, "created"), when, sizeof when),
		       acct_str(d, "catchall"));
	return 0;
}

static int print_catchall(const json_t *reply, const struct acct_args *a)
{
	(void)a;
	const char *target = json_string_value(json_object_get(reply, "catchall"));
	if (target != NULL)
		printf("catch-all of %s: %s\n", acct_str(reply, "domain"), target);
	else
		printf("catch-all of %s off\n", acct_str(reply, "domain"));
	return 0;
}

static int print_user_added(const json_t *reply, const struct acct_args *a)
{
	const json_t *u = json_object_get(reply, "user");
	printf("user %s added%s\n", acct_str(u, "address"),
	       a->password_stdin ? "" : " (no password yet: roostctl user passwd)");
	return 0;
}

static int print_users(const json_t *reply, const struct acct_args *a)
{
	(void)a;
	size_t i;
	json_t *u;
	char when[32], quota[32];
	json_array_foreach(json_object_get(reply, "users"), i, u) {
		long long q = acct_num(u, "quota_bytes");
		if (q == 0)
			snprintf(quota, sizeof quota, "unlimited");
		else
			snprintf(quota, sizeof quota, "%lld", q);
		printf("%s\t%s\t%lld\t%s\t%s\n", acct_str(u, "address"), quota, acct_num(u, "used_bytes"),
		       json_is_true(json_object_get(u, "has_password")) ? "password" : "no-password",
		       acct_time(json_object_get(u, "created"), when, sizeof when));
	}
	return 0;
}

static int print_quota(const json_t *reply, const struct acct_args *a)
{
	(void)a;
	const json_t *u = json_object_get(reply, "user");
	long long q = acct_num(u, "quota_bytes");
	if (q == 0)
		printf("quota of %s: unlimited (%lld bytes used)\n", acct_str(u, "address"), acct_num(u, "used_bytes"));
	else
		printf("quota of %s: %lld bytes (%lld used)\n", acct_str(u, "address"), q, acct_num(u, "used_bytes"));
	return 0;
}

/* One "key<TAB>value" line per fact, one per delivery and forward. */
static int print_rcpt(const json_t *reply, const struct acct_args *a)
{
	size_t i;
	json_t *x;
	(void)a;
	printf("address\t%s\n", acct_str(reply, "address"));
	printf("local\t%s\n", json_is_true(json_object_get(reply, "local")) ? "yes" : "no");
	printf("found\t%s\n", json_is_true(json_object_get(reply, "found")) ? "yes" : "no");
	if (json_object_get(reply, "via") != NULL)
		printf("via\t%s\n", acct_str(reply, "via"));
	if (json_object_get(reply, "tag") != NULL)
		printf("tag\t%s\n", acct_str(reply, "tag"));
	json_array_foreach(json_object_get(reply, "deliveries"), i, x)
		printf("deliver\t%s\n", json_string_value(x));
	json_array_foreach(json_object_get(reply, "forwards"), i, x)
		printf("forward\t%s\n", json_string_value(x));
	return acct_status(MSG_STORAGED_RCPT_RESOLVE, reply);
}

static int print_verify(const json_t *reply, const struct acct_args *a)
{
	(void)a;
	bool valid = json_is_true(json_object_get(reply, "valid"));
	puts(valid ? "valid" : "invalid");
	return valid ? 0 : 1;
}

static int print_alias_added(const json_t *reply, const struct acct_args *a)
{
	(void)a;
	const json_t *al = json_object_get(reply, "alias");
	printf("alias %s -> %s added\n", acct_str(al, "address"), acct_str(al, "target"));
	return 0;
}

static int print_aliases(const json_t *reply, const struct acct_args *a)
{
	(void)a;
	size_t i;
	json_t *al;
	json_array_foreach(json_object_get(reply, "aliases"), i, al)
		printf("%s\t%s\n", acct_str(al, "address"), acct_str(al, "target"));
	return 0;
}

/* del and passwd: what was done, in the operator's words. */
static int print_done(const json_t *reply, const struct acct_args *a)
{
	(void)reply;
	if (a->npos == 2)
		printf("%s -> %s deleted\n", a->pos[0], a->pos[1]);
	else if (a->password_stdin)
		printf("password of %s changed\n", a->pos[0]);
	else
		printf("%s deleted\n", a->pos[0]);
	return 0;
}

static int print_mailbox_created(const json_t *reply, const struct acct_args *a)
{
	const json_t *m = json_object_get(reply, "mailbox");
	printf("mailbox %s of %s created (uidvalidity %lld)\n", acct_str(m, "name"), a->pos[0],
	       acct_num(m, "uidvalidity"));
	return 0;
}

/* NAME, SPECIAL-USE or -, yes|no (subscribed), UIDVALIDITY, UIDNEXT. */
static int print_mailboxes(const json_t *reply, const struct acct_args *a)
{
	(void)a;
	size_t i;
	json_t *m;
	json_array_foreach(json_object_get(reply, "mailboxes"), i, m)
		printf("%s\t%s\t%s\t%lld\t%lld\n", acct_str(m, "name"), acct_str(m, "special_use"),
		       json_is_true(json_object_get(m, "subscribed")) ? "yes" : "no",
		       acct_num(m, "uidvalidity"), acct_num(m, "uidnext"));
	return 0;
}

/* delete, rename, subscribe, unsubscribe: what was done, in the operator's words. */
static int print_mailbox_done(const json_t *reply, const struct acct_args *a)
{
	const json_t *sub = json_object_get(reply, "subscribed");
	if (a->npos == 3)
		printf("mailbox %s of %s renamed to %s\n", a->pos[1], a->pos[0], a->pos[2]);
	else if (json_is_boolean(sub))
		printf("mailbox %s of %s %s\n", a->pos[1], a->pos[0],
		       json_is_true(sub) ? "subscribed" : "unsubscribed");
	else
		printf("mailbox %s of %s deleted\n", a->pos[1], a->pos[0]);
	return 0;
}
