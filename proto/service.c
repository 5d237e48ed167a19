/*
 * service.c — see service.h.
 */
#include "service.h"
#include "bus.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void service_usage(const service_opts_t *opts, FILE *to)
{
	fprintf(to, "usage: %s [--config PATH]\n%s\n\n"
		"  --config PATH  roost.conf to read (default: $ROOST_CONFIG, ./roost.conf,\n"
		"                 /etc/roost/roost.conf); every key can be overridden by\n"
		"                 ROOST_<KEY> in the environment\n"
		"  --version      print the version\n"
		"  --help         this text\n", opts->name, opts->summary);
}

config_t *service_init(const service_opts_t *opts, int argc, char **argv)
{
	const char *path = NULL;
	char err[512];
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			service_usage(opts, stdout);
			exit(0);
		} else if (strcmp(argv[i], "--version") == 0) {
			printf("%s %s\n", opts->name, ROOST_VERSION);
			exit(0);
		} else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
			path = argv[++i];
		} else {
			fprintf(stderr, "%s: unknown argument '%s' (try --help)\n", opts->name, argv[i]);
			exit(2);
		}
	}
	config_t *cfg = config_load(path, err, sizeof err);
	if (cfg == NULL) {
		fprintf(stderr, "%s: %s\n", opts->name, err);
		exit(1);
	}
	int level = log_level_parse(config_get(cfg, "log_level", "info"));
	if (level < 0) {
		fprintf(stderr, "%s: log_level must be debug, info, warn or error\n", opts->name);
		exit(1);
	}
	log_init(opts->name, (enum log_level)level);
	if (bus_configure(cfg, err, sizeof err) < 0) {
		fprintf(stderr, "%s: %s\n", opts->name, err);
		exit(1);
	}
	return cfg;
}

static void service_on_stop(loop_t *loop, int signo, void *arg)
{
	(void)arg;
	log_info("stopping", "signal=%d", signo);
	loop_stop(loop);
}

void service_stop_on_signals(loop_t *loop)
{
	signal(SIGPIPE, SIG_IGN);
	loop_on_signal(loop, SIGTERM, service_on_stop, NULL);
	loop_on_signal(loop, SIGINT, service_on_stop, NULL);
}

int service_mkdir(const char *dir, mode_t mode, gid_t gid, char *err, size_t errlen)
{
	char *p = xstrdup(dir);
	for (char *s = p + 1; *s != '\0'; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, 0755) < 0 && errno != EEXIST) {
			snprintf(err, errlen, "cannot create %s: %s", p, strerror(errno));
			free(p);
			return -1;
		}
		*s = '/';
	}
	free(p);
	if (mkdir(dir, mode) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
		return -1;
	}
	if (gid != (gid_t)-1 && chown(dir, (uid_t)-1, gid) < 0) {
		snprintf(err, errlen, "cannot give %s to group %ld: %s", dir, (long)gid, strerror(errno));
		return -1;
	}
	/* mkdir() honours the umask: set the mode we mean explicitly. */
	if (chmod(dir, mode) < 0) {
		snprintf(err, errlen, "cannot chmod %s: %s", dir, strerror(errno));
		return -1;
	}
	return 0;
}

void service_drop_root(const config_t *cfg)
{
	const char *user = config_get(cfg, "run_user", "");
	if (geteuid() != 0 || user[0] == '\0')
		return;
	struct passwd *pw = getpwnam(user);
	if (pw == NULL)
		fatal("drop_root", "user=%s why=\"no such user\"", log_quote(user));
	if (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0)
		fatal("drop_root", "user=%s error=%s", log_quote(user), log_quote(strerror(errno)));
	log_info("dropped_root", "user=%s uid=%ld", user, (long)pw->pw_uid);
}
