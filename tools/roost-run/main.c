/*
 * roost-run — the supervisor behind `make run` (DESIGN.md "Interfaces"):
 * the whole stack as local processes, without Docker.
 *
 * Table of contents: arguments, configuration and logging, where the
 * programs are (next to our own executable), the data directory, the
 * environment every child inherits (so all agree on the directories),
 * the program list, then supervise.c runs them until SIGTERM or Ctrl-C.
 * Every start-up error is one line on stderr and exit 1 (2 for usage).
 */
#include "supervise.h"
#include "bus.h"
#include "config.h"
#include "log.h"
#include "service.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void usage(void)
{
	printf("usage: roost-run [--config PATH]\n"
	       "Runs the Roost services as local processes (make run): busd first, the others\n"
	       "once busd answers. Prints one line when all have registered with busd,\n"
	       "restarts a service that exits (after 1 s, doubling up to 30 s), and on\n"
	       "SIGTERM or Ctrl-C stops them all (SIGKILL after 10 s) and exits 0.\n"
	       "Programs are taken from the directory that holds roost-run.\n\n"
	       "configuration (roost.conf key, or ROOST_<KEY> in the environment):\n"
	       "  services   programs to start, separated by spaces or commas; default: those\n"
	       "             of \"" SUPERVISE_DEFAULT "\" that are built.\n"
	       "             A program named here must exist. busd is always started.\n"
	       "  data_dir   data directory, created with mode 0750 if missing (./var)\n"
	       "  bus_dir    directory of the bus sockets (<data_dir>/bus)\n"
	       "  listen     address the listeners bind (127.0.0.1)\n"
	       "  log_level  debug, info, warn or error (info)\n"
	       "ROOST_DATA_DIR, ROOST_BUS_DIR and ROOST_LISTEN are exported to the services\n"
	       "unless already set, so that every one of them agrees.\n\n"
	       "  --config PATH  roost.conf to read (default: $ROOST_CONFIG, ./roost.conf,\n"
	       "                 /etc/roost/roost.conf)\n"
	       "  --version      print the version\n"
	       "  --help         this text\n");
}

__attribute__((format(printf, 2, 3), noreturn))
static void die(int code, const char *fmt, ...)
{
	va_list ap;
	fputs("roost-run: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(code);
}

/* --help, --version, --config PATH; returns the config path or NULL. */
static const char *parse_args(int argc, char **argv)
{
	const char *path = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage();
			exit(0);
		} else if (strcmp(argv[i], "--version") == 0) {
			printf("roost-run %s\n", ROOST_VERSION);
			exit(0);
		} else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
			path = argv[++i];
		} else {
			die(2, "unknown argument '%s' (try --help)", argv[i]);
		}
	}
	return path;
}

/* The programs live next to us (build/bin), wherever we are started from. */
static void bin_dir(char *buf, size_t len)
{
	ssize_t n = readlink("/proc/self/exe", buf, len - 1);
	if (n < 0)
		die(1, "cannot read /proc/self/exe: %s", strerror(errno));
	buf[n] = '\0';
	char *dir = dirname(buf);  /* may point into buf, or be "." */
	memmove(buf, dir, strlen(dir) + 1);
}

/* Creates the data directory (0750) only when missing: an existing one
 * keeps the mode its operator gave it. */
static void data_dir(const char *dir)
{
	struct stat st;
	char err[512];
	if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode))
		return;
	if (service_mkdir(dir, 0750, (gid_t)-1, err, sizeof err) < 0)
		die(1, "data_dir: %s", err);
}

int main(int argc, char **argv)
{
	char err[512], bin[PATH_MAX];
	const char *path = parse_args(argc, argv);
	config_t *cfg = config_load(path, err, sizeof err);
	if (cfg == NULL)
		die(1, "%s", err);
	int level = log_level_parse(config_get(cfg, "log_level", "info"));
	if (level < 0)
		die(1, "log_level must be debug, info, warn or error");
	log_init("roost-run", (enum log_level)level);
	if (bus_configure(cfg, err, sizeof err) < 0)
		die(1, "%s", err);
	bin_dir(bin, sizeof bin);
	supervisor_t *sup = supervise_new(bin, config_bus_dir(cfg));
	/* A blank list is as good as none: the default applies. */
	const char *list = config_get(cfg, "services", NULL);
	bool strict = list != NULL && list[strspn(list, " ,\t")] != '\0';
	if (supervise_add_list(sup, strict ? list : SUPERVISE_DEFAULT, strict, err, sizeof err) < 0)
		die(1, "%s", err);

	bus_endpoints_t ep;
	if (bus_endpoints_init(&ep, config_bus_dir(cfg)) < 0)
		die(1, "bus_dir %s is too long for a Unix socket path", config_bus_dir(cfg));
	data_dir(config_data_dir(cfg));

	/* The children read the same config; these make sure they agree even
	 * where a default could differ (containers default to /run/roost). */
	if (config_path(cfg) != NULL)
		setenv("ROOST_CONFIG", config_path(cfg), 1);
	setenv("ROOST_DATA_DIR", config_data_dir(cfg), 0);
	setenv("ROOST_BUS_DIR", config_bus_dir(cfg), 0);
	setenv("ROOST_LISTEN", config_get(cfg, "listen", "127.0.0.1"), 0);
	config_free(&cfg);

	int rc = supervise_run(sup);
	supervise_free(&sup);
	bus_zmq_term();
	if (rc < 0)
		return 1;
	printf("roost: stopped\n");
	fflush(stdout);
	return 0;
}
