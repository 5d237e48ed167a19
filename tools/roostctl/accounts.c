/*
 * accounts.c — roostctl domain, user, alias, mailbox: the mail accounts
 * storaged keeps and their mailboxes
 * (proto/schemas/storaged.{domain,user,alias,mailbox}.*.json).
 *
 * One table row per subcommand: the message type it sends, the request
 * fields its positional arguments fill, the options it takes and how its
 * reply is printed. A type the schemas mark idempotent carries an idem key,
 * one random token per invocation: the synchronous call resends the same
 * envelope on a retry, so storaged applies the change at most once.
 *
 * Passwords come from stdin only (--password-stdin), never from argv,
 * where every user of the machine could read them in ps.
 */
#include "roostctl.h"
#include "bus.h"
#include "envelope.h"
#include "msgtypes.h"
#include "util.h"

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
};

/* What the command line said, once parsed. */
struct acct_args {
	const char *pos[3];
	int npos;
	bool password_stdin;
	bool has_quota;
	unsigned long long quota;
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

static const struct acct_verb verbs[] = {
	{ "domain", "add", MSG_STORAGED_DOMAIN_ADD, 1, 1, { "name" }, 0, "NAME", print_domain_added },
	{ "domain", "del", MSG_STORAGED_DOMAIN_DEL, 1, 1, { "name" }, 0,
	  "NAME            (deletes its users and aliases too)", print_done },
	{ "domain", "list", MSG_STORAGED_DOMAIN_LIST, 0, 0, { NULL }, 0,
	  "               NAME, USERS, ALIASES, POSTMASTER, CREATED", print_domains },
	{ "user", "add", MSG_STORAGED_USER_ADD, 1, 1, { "address" }, ACCT_OPT_PASSWORD | ACCT_OPT_QUOTA,
	  "ADDRESS [--password-stdin] [--quota BYTES]", print_user_added },
	{ "user", "del", MSG_STORAGED_USER_DEL, 1, 1, { "address" }, 0, "ADDRESS", print_done },
	{ "user", "list", MSG_STORAGED_USER_LIST, 0, 1, { "domain" }, 0,
	  "[DOMAIN]      ADDRESS, QUOTA, USED, PASSWORD, CREATED", print_users },
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
};

/* The usage of one family (every verb), or of one verb if v is not NULL. */
static int acct_usage(FILE *to, const char *family, const struct acct_verb *v)
{
	const char *lead = "usage:";
	for (size_t i = 0; i < ARRAY_LEN(verbs); i++) {
		if (strcmp(verbs[i].family, family) != 0 || (v != NULL && &verbs[i] != v))
			continue;
		fprintf(to, "%-6s roostctl %s %s %s\n", lead, family, verbs[i].verb, verbs[i].args_help);
		lead = "";
	}
	fprintf(to, "  lists print one tab-separated line per item; --json (before the command)\n"
		"  prints storaged's reply. Passwords are read from stdin (one line), never argv.\n");
	return to == stdout ? 0 : 2;
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

/* --quota BYTES: decimal digits only, at most 2^50. */
static int acct_parse_quota(const char *s, unsigned long long *out)
{
	char *end;
	if (s[0] < '0' || s[0] > '9')
		return -1;
	errno = 0;
	*out = strtoull(s, &end, 10);
	return errno == 0 && *end == '\0' && *out <= ACCT_QUOTA_MAX ? 0 : -1;
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
			if (i + 1 >= argc || acct_parse_quota(argv[++i], &a->quota) < 0)
				return ctl_fail("%s: --quota wants a number of bytes, 0 (unlimited) to %llu",
						what, ACCT_QUOTA_MAX);
			a->has_quota = true;
		} else if (strncmp(argv[i], "--password", 10) == 0 && strcmp(argv[i], "--password-stdin") != 0) {
			/* Refused on purpose, and not echoed: argv is visible to every local user. */
			return ctl_fail("%s: passwords are read from stdin: use --password-stdin", what);
		} else {
			return ctl_fail("%s: unknown option '%s' (try --help)", what, argv[i]);
		}
	}
	if (a->npos < v->min_pos)
		return ctl_fail("%s: missing %s (try --help)", what, v->args_help);
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
	const struct msgtype *mt = &msgtypes[v->type];
	json_t *req = bus_env_new(mt->name);
	for (int i = 0; i < a->npos; i++)
		json_object_set_new(req, v->fields[i], json_string(a->pos[i]));
	if (a->has_quota)
		json_object_set_new(req, "quota_bytes", json_integer((json_int_t)a->quota));
	if (v->opts & (ACCT_OPT_SUB | ACCT_OPT_UNSUB))
		json_object_set_new(req, "subscribed", json_boolean(v->opts & ACCT_OPT_SUB));
	if (mt->flags & MSGF_IDEMPOTENT) {
		const char *idem = ctl_idem();
		if (idem == NULL) {
			json_decref(req);
			ctl_fail("%s: no random idempotency key: %s", what, strerror(errno));
			return NULL;
		}
		json_object_set_new(req, "idem", json_string(idem));
	}
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

/* Runs one verb of a family: parse, request, call, print. */
static int acct_run(struct ctl *ctl, const struct acct_verb *v, int argc, char **argv)
{
	char what[32];
	struct acct_args a = { 0 };
	snprintf(what, sizeof what, "%s %s", v->family, v->verb);
	for (int i = 0; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
			return acct_usage(stdout, v->family, v);
	if (acct_parse(v, what, argc, argv, &a) != 0)
		return 1;
	json_t *req = acct_request_new(v, what, &a);
	if (req == NULL)
		return 1;
	json_t *reply = ctl_storaged_new(ctl, what, &req, NULL, NULL);
	if (reply == NULL)
		return 1;
	int rc;
	if (ctl->json) {
		json_dumpf(reply, stdout, JSON_COMPACT);
		fputc('\n', stdout);
		/* verify's exit status says the answer in both modes */
		rc = v->type == MSG_STORAGED_USER_VERIFY && !json_is_true(json_object_get(reply, "valid"));
	} else {
		rc = v->print(reply, &a);
		if (json_is_true(json_object_get(reply, "truncated")))
			fprintf(stderr, "roostctl: %s %s: list cut short to fit one reply%s\n", v->family,
				v->verb, v->type == MSG_STORAGED_MAILBOX_LIST ? "" : "; list one domain at a time");
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

/* ---- human output --------------------------------------------------- */

/* Unix seconds as "2024-11-25T13:00:00Z" into buf. */
static const char *acct_time(const json_t *t, char *buf, size_t size)
{
	time_t s = (time_t)json_integer_value(t);
	struct tm tm;
	if (gmtime_r(&s, &tm) == NULL || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, size, "%lld", (long long)s);
	return buf;
}

static const char *str(const json_t *obj, const char *key)
{
	const char *s = json_string_value(json_object_get(obj, key));
	return s ? s : "-";
}

static long long num(const json_t *obj, const char *key)
{
	return (long long)json_integer_value(json_object_get(obj, key));
}

static int print_domain_added(const json_t *reply, const struct acct_args *a)
{
	(void)a;
	printf("domain %s added\n", str(json_object_get(reply, "domain"), "name"));
	return 0;
}

static int print_domains(const json_t *reply, const struct acct_args *a)
{
	(void)a;
	size_t i;
	json_t *d;
	char when[32];
	json_array_foreach(json_object_get(reply, "domains"), i, d)
		printf("%s\t%lld\t%lld\t%s\t%s\n", str(d, "name"), num(d, "users"), num(d, "aliases"),
		       str(d, "postmaster"), acct_time(json_object_get(d, "created"), when, sizeof when));
	return 0;
}

static int print_user_added(const json_t *reply, const struct acct_args *a)
{
	const json_t *u = json_object_get(reply, "user");
	printf("user %s added%s\n", str(u, "address"),
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
		long long q = num(u, "quota_bytes");
		if (q == 0)
			snprintf(quota, sizeof quota, "unlimited");
		else
			snprintf(quota, sizeof quota, "%lld", q);
		printf("%s\t%s\t%lld\t%s\t%s\n", str(u, "address"), quota, num(u, "used_bytes"),
		       json_is_true(json_object_get(u, "has_password")) ? "password" : "no-password",
		       acct_time(json_object_get(u, "created"), when, sizeof when));
	}
	return 0;
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
	printf("alias %s -> %s added\n", str(al, "address"), str(al, "target"));
	return 0;
}

static int print_aliases(const json_t *reply, const struct acct_args *a)
{
	(void)a;
	size_t i;
	json_t *al;
	json_array_foreach(json_object_get(reply, "aliases"), i, al)
		printf("%s\t%s\n", str(al, "address"), str(al, "target"));
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
	printf("mailbox %s of %s created (uidvalidity %lld)\n", str(m, "name"), a->pos[0],
	       num(m, "uidvalidity"));
	return 0;
}

/* NAME, SPECIAL-USE or -, yes|no (subscribed), UIDVALIDITY, UIDNEXT. */
static int print_mailboxes(const json_t *reply, const struct acct_args *a)
{
	(void)a;
	size_t i;
	json_t *m;
	json_array_foreach(json_object_get(reply, "mailboxes"), i, m)
		printf("%s\t%s\t%s\t%lld\t%lld\n", str(m, "name"), str(m, "special_use"),
		       json_is_true(json_object_get(m, "subscribed")) ? "yes" : "no",
		       num(m, "uidvalidity"), num(m, "uidnext"));
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
