/*
 * supervise.c — see supervise.h. One single-threaded loop (proto/loop.h):
 * SIGCHLD, SIGTERM and SIGINT arrive through the loop's self-pipe, the
 * rest are timers, and busd is asked with the asynchronous bus client, so
 * nothing here ever blocks and nothing busy-waits.
 *
 * Each program is one child with a small state machine:
 *
 *   WAITING --busd answers busd.status.get--> RUNNING   (busd starts at once)
 *   RUNNING --exits, not stopping-----------> BACKOFF   (1 s, 2 s, ... 30 s)
 *   BACKOFF --timer-------------------------> RUNNING
 *   RUNNING --exits while stopping----------> DONE
 *   WAITING, BACKOFF --stop-----------------> DONE
 *
 * Readiness: every 200 ms (one call in flight at most) we ask busd for
 * busd.status.get; once every started program's bus service is listed
 * there, the ready line goes to stdout, once. Stopping: SIGTERM to every
 * running child, SIGKILL to whatever is left after 10 s, then the loop ends
 * when the last child has been reaped.
 *
 * Messages produced: busd.status.get (to busd). Consumed: its reply.
 */
#include "supervise.h"
#include "bus.h"
#include "log.h"
#include "loop.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define SUP_MAX_CHILDREN 16
#define SUP_NAME_MAX 32
#define SUP_POLL_MS 200          /* busd.status.get interval until ready */
#define SUP_STATUS_TIMEOUT_MS 1000
#define SUP_READY_WARN_MS 30000  /* warn if not ready by then */
#define SUP_STOP_GRACE_MS 10000  /* SIGTERM, then SIGKILL after this */
#define SUP_BACKOFF_MIN_MS 1000
#define SUP_BACKOFF_MAX_MS 30000
#define SUP_STABLE_MS 60000      /* a child that ran this long resets its backoff */

/* Programs whose bus service is not named like the program. */
static const struct {
	const char *program;
	const char *service;
} sup_service_names[] = {
	{ "echo-worker", "echo" },
	{ "smtpd", "smtpd.control" },   /* smtpd serves no requests: only its control worker */
	{ "imapd", "imapd.control" },   /* imapd likewise */
};

enum child_state { CHILD_WAITING, CHILD_RUNNING, CHILD_BACKOFF, CHILD_DONE };

struct child {
	supervisor_t *sup;
	char name[SUP_NAME_MAX + 1];          /* program */
	char service[BUS_SERVICE_MAX + 1];    /* what it registers with busd */
	char *path;                           /* bin_dir/name */
	char *exec_failed;                    /* message the child writes if execv fails */
	enum child_state state;
	pid_t pid;
	int64_t started;                      /* monotonic ms of the last start */
	int64_t backoff_ms;                   /* delay before the next restart */
	loop_timer_t *timer;                  /* the restart timer in BACKOFF */
	bool registered;                      /* listed by the last busd.status.get */
};

struct supervisor {
	char *bin_dir, *bus_dir;
	struct child children[SUP_MAX_CHILDREN];
	size_t n;
	loop_t *loop;
	bus_client_t *bus;
	uint64_t status_call;                 /* busd.status.get in flight, 0 if none */
	loop_timer_t *poll, *warn, *kill;
	bool busd_up, ready, stopping;
	int devnull;
};

static void child_start(struct child *c);

supervisor_t *supervise_new(const char *bin_dir, const char *bus_dir)
{
	supervisor_t *sup = xcalloc(1, sizeof *sup);
	sup->bin_dir = xstrdup(bin_dir);
	sup->bus_dir = xstrdup(bus_dir);
	sup->devnull = -1;
	return sup;
}

void supervise_free(supervisor_t **supp)
{
	supervisor_t *sup = *supp;
	if (sup == NULL)
		return;
	for (size_t i = 0; i < sup->n; i++) {
		free(sup->children[i].path);
		free(sup->children[i].exec_failed);
	}
	free(sup->bin_dir);
	free(sup->bus_dir);
	free(sup);
	*supp = NULL;
}

/* ---- the program list ----------------------------------------------------- */

static const char *sup_service_of(const char *program)
{
	for (size_t i = 0; i < ARRAY_LEN(sup_service_names); i++)
		if (strcmp(sup_service_names[i].program, program) == 0)
			return sup_service_names[i].service;
	return program;
}

/* Program names are plain file names: no path may sneak in through config. */
static bool sup_name_ok(const char *name)
{
	if (name[0] == '\0' || name[0] == '.' || strlen(name) > SUP_NAME_MAX)
		return false;
	return strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789-_.") == strlen(name);
}

/* Adds one program; 1 if it is not there and !strict (skipped), -1 on error. */
static int sup_add(supervisor_t *sup, const char *name, int strict, char *err, size_t errlen)
{
	if (!sup_name_ok(name)) {
		snprintf(err, errlen, "services: '%s' is not a program name", name);
		return -1;
	}
	for (size_t i = 0; i < sup->n; i++) {
		if (strcmp(sup->children[i].name, name) == 0) {
			snprintf(err, errlen, "services: '%s' is listed twice", name);
			return -1;
		}
	}
	char *path = xasprintf("%s/%s", sup->bin_dir, name);
	if (access(path, X_OK) < 0) {
		free(path);
		/* The default list names services that may not be built yet. */
		if (!strict)
			return 1;
		snprintf(err, errlen, "services: no program '%s' in %s", name, sup->bin_dir);
		return -1;
	}
	if (sup->n == SUP_MAX_CHILDREN) {
		free(path);
		snprintf(err, errlen, "services: more than %d programs", SUP_MAX_CHILDREN);
		return -1;
	}
	struct child *c = &sup->children[sup->n++];
	*c = (struct child){ .sup = sup, .path = path, .state = CHILD_WAITING,
			     .backoff_ms = SUP_BACKOFF_MIN_MS };
	snprintf(c->name, sizeof c->name, "%s", name);
	snprintf(c->service, sizeof c->service, "%s", sup_service_of(name));
	c->exec_failed = xasprintf("roost-run: cannot execute %s\n", path);
	return 0;
}

int supervise_add_list(supervisor_t *sup, const char *list, int strict, char *err, size_t errlen)
{
	/* busd comes first whatever the list says: the others need it. */
	if (sup->n == 0 && sup_add(sup, "busd", 1, err, errlen) < 0)
		return -1;
	char *copy = xstrdup(list), *save = NULL;
	int rc = 0;
	for (char *name = strtok_r(copy, " ,\t", &save); name != NULL && rc == 0;
	     name = strtok_r(NULL, " ,\t", &save)) {
		if (strcmp(name, "busd") == 0)
			continue;
		if (sup_add(sup, name, strict, err, errlen) < 0)
			rc = -1;
	}
	free(copy);
	return rc;
}

/* ---- starting and reaping children ------------------------------------------ */

/*
 * In the child, between fork and exec: only async-signal-safe calls, since
 * ZeroMQ's threads may have held locks at the fork.
 */
__attribute__((noreturn))
static void child_exec(const struct child *c, pid_t parent)
{
	char *argv[] = { c->path, NULL };
	/* If the supervisor dies without stopping us, we stop too... */
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	/* ...unless it died before prctl took effect: then nobody would tell us. */
	if (getppid() != parent)
		_exit(1);
	if (c->sup->devnull >= 0)
		dup2(c->sup->devnull, STDIN_FILENO);
	signal(SIGPIPE, SIG_DFL);  /* ignored by us; exec keeps "ignored" */
	execv(c->path, argv);
	ssize_t w = write(STDERR_FILENO, c->exec_failed, strlen(c->exec_failed));
	(void)w;
	_exit(127);
}

static void child_restart(loop_t *loop, void *arg)
{
	(void)loop;
	struct child *c = arg;
	c->timer = NULL;  /* one-shot: the loop has freed it */
	child_start(c);
}

/* Waits out the backoff, then starts c again; doubles the next wait. */
static void child_backoff(struct child *c)
{
	int64_t delay = c->backoff_ms;
	c->backoff_ms = delay * 2 > SUP_BACKOFF_MAX_MS ? SUP_BACKOFF_MAX_MS : delay * 2;
	c->state = CHILD_BACKOFF;
	c->timer = loop_timer_add(c->sup->loop, delay, false, child_restart, c);
}

static void child_start(struct child *c)
{
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid == 0)
		child_exec(c, parent);
	if (pid < 0) {
		/* Out of processes is transient: try again like after a crash. */
		log_error("child.fork", "program=%s error=%s retry_in_ms=%lld", c->name,
			  log_quote(strerror(errno)), (long long)c->backoff_ms);
		child_backoff(c);
		return;
	}
	c->pid = pid;
	c->state = CHILD_RUNNING;
	c->started = now_ms();
	log_info("child.start", "program=%s pid=%d", c->name, (int)pid);
}

/* "KILL" for SIGKILL: the short name, as kill -l prints it. */
static const char *sup_signame(int signo)
{
	const char *name = sigabbrev_np(signo);
	return name != NULL ? name : "?";
}

/* "exit=3" or "signal=KILL": how a child ended, for the log. */
static const char *sup_describe(int status, char *buf, size_t len)
{
	if (WIFEXITED(status))
		snprintf(buf, len, "exit=%d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "signal=%s", sup_signame(WTERMSIG(status)));
	else
		snprintf(buf, len, "status=%d", status);
	return buf;
}

static bool sup_all_done(const supervisor_t *sup)
{
	for (size_t i = 0; i < sup->n; i++)
		if (sup->children[i].state == CHILD_RUNNING)
			return false;
	return true;
}

static void child_exited(struct child *c, int status)
{
	char how[48];
	int64_t ran = now_ms() - c->started;
	sup_describe(status, how, sizeof how);
	c->registered = false;
	if (c->sup->stopping) {
		c->state = CHILD_DONE;
		log_info("child.stopped", "program=%s pid=%d %s", c->name, (int)c->pid, how);
		if (sup_all_done(c->sup))
			loop_stop(c->sup->loop);
		return;
	}
	/* A child that ran a good while crashed for a new reason: start over. */
	if (ran >= SUP_STABLE_MS)
		c->backoff_ms = SUP_BACKOFF_MIN_MS;
	log_warn("child.exit", "program=%s pid=%d %s ran_ms=%lld restart_in_ms=%lld", c->name,
		 (int)c->pid, how, (long long)ran, (long long)c->backoff_ms);
	c->pid = 0;
	child_backoff(c);
}

static void sup_on_sigchld(loop_t *loop, int signo, void *arg)
{
	(void)loop; (void)signo;
	supervisor_t *sup = arg;
	int status;
	pid_t pid;
	/* Signals coalesce: one SIGCHLD may stand for several exits. */
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (size_t i = 0; i < sup->n; i++) {
			struct child *c = &sup->children[i];
			if (c->state == CHILD_RUNNING && c->pid == pid) {
				child_exited(c, status);
				break;
			}
		}
	}
}

/* ---- readiness: asking busd ------------------------------------------------- */

/* Marks the children whose service busd lists with at least one worker. */
static void sup_mark_registered(supervisor_t *sup, const json_t *reply)
{
	size_t i;
	const json_t *svc;
	for (size_t k = 0; k < sup->n; k++)
		sup->children[k].registered = strcmp(sup->children[k].name, "busd") == 0;
	json_array_foreach(json_object_get(reply, "services"), i, svc) {
		const char *name = json_string_value(json_object_get(svc, "name"));
		if (name == NULL || json_array_size(json_object_get(svc, "workers")) == 0)
			continue;
		for (size_t k = 0; k < sup->n; k++)
			if (strcmp(sup->children[k].service, name) == 0)
				sup->children[k].registered = true;
	}
}

/* The bus service names of the children that are (or are not) registered. */
static void sup_names(const supervisor_t *sup, bool registered, char *buf, size_t len)
{
	size_t o = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < sup->n && o < len; i++) {
		if (sup->children[i].registered != registered)
			continue;
		int m = snprintf(buf + o, len - o, "%s%s", o ? ", " : "", sup->children[i].service);
		o += m > 0 ? (size_t)m : 0;
	}
}

/* The one line `make run` users and the tests wait for. */
static void sup_print_ready(supervisor_t *sup)
{
	char names[512], abs[PATH_MAX];
	sup_names(sup, true, names, sizeof names);
	const char *bus = realpath(sup->bus_dir, abs) ? abs : sup->bus_dir;
	printf("roost: ready \u2014 %s (bus %s)\n", names, bus);
	fflush(stdout);
	sup->ready = true;
	loop_timer_cancel(sup->loop, &sup->poll);
	loop_timer_cancel(sup->loop, &sup->warn);
	log_info("ready", "programs=%zu bus_dir=%s", sup->n, log_quote(bus));
}

static void sup_on_status(json_t **reply, const void *raw, size_t rawlen, void *arg)
{
	(void)raw; (void)rawlen;
	supervisor_t *sup = arg;
	sup->status_call = 0;
	/* No answer yet: busd is still starting (or restarting); ask again. */
	if (sup->stopping || sup->ready || !bus_reply_ok(*reply))
		return;
	if (!sup->busd_up) {
		sup->busd_up = true;
		log_info("busd.up", "bus_dir=%s", log_quote(sup->bus_dir));
		for (size_t i = 0; i < sup->n; i++)
			if (sup->children[i].state == CHILD_WAITING)
				child_start(&sup->children[i]);
	}
	sup_mark_registered(sup, *reply);
	for (size_t i = 0; i < sup->n; i++)
		if (!sup->children[i].registered)
			return;
	sup_print_ready(sup);
}

static void sup_poll(loop_t *loop, void *arg)
{
	(void)loop;
	supervisor_t *sup = arg;
	bus_call_opts_t opts = { .timeout_ms = SUP_STATUS_TIMEOUT_MS, .retries = 0 };
	/* One question at a time: a slow busd must not pile requests up. */
	if (sup->status_call != 0)
		return;
	json_t *req = bus_env_new("busd.status.get");
	sup->status_call = bus_call(sup->bus, "busd", &req, NULL, 0, &opts, sup_on_status, sup);
}

static void sup_warn_late(loop_t *loop, void *arg)
{
	(void)loop;
	supervisor_t *sup = arg;
	char missing[512];
	sup->warn = NULL;  /* one-shot: the loop has freed it */
	if (sup->ready)
		return;
	if (!sup->busd_up)
		snprintf(missing, sizeof missing, "busd");
	else
		sup_names(sup, false, missing, sizeof missing);
	log_warn("ready.late", "waited_ms=%d missing=%s why=\"not registered with busd yet; still waiting\"",
		 SUP_READY_WARN_MS, log_quote(missing));
}

/* ---- stopping ------------------------------------------------------------------ */

static void sup_kill_rest(loop_t *loop, void *arg)
{
	(void)loop;
	supervisor_t *sup = arg;
	sup->kill = NULL;
	for (size_t i = 0; i < sup->n; i++) {
		struct child *c = &sup->children[i];
		if (c->state != CHILD_RUNNING)
			continue;
		log_warn("child.kill", "program=%s pid=%d why=\"still running %d ms after SIGTERM\"",
			 c->name, (int)c->pid, SUP_STOP_GRACE_MS);
		kill(c->pid, SIGKILL);
	}
}

static void sup_on_stop(loop_t *loop, int signo, void *arg)
{
	supervisor_t *sup = arg;
	/* A second Ctrl-C changes nothing: the SIGKILL deadline already runs. */
	if (sup->stopping)
		return;
	sup->stopping = true;
	log_info("stopping", "signal=%s", sup_signame(signo));
	loop_timer_cancel(loop, &sup->poll);
	loop_timer_cancel(loop, &sup->warn);
	for (size_t i = 0; i < sup->n; i++) {
		struct child *c = &sup->children[i];
		loop_timer_cancel(loop, &c->timer);
		if (c->state == CHILD_RUNNING)
			kill(c->pid, SIGTERM);
		else
			c->state = CHILD_DONE;
	}
	if (sup_all_done(sup))
		loop_stop(loop);
	else
		sup->kill = loop_timer_add(loop, SUP_STOP_GRACE_MS, false, sup_kill_rest, sup);
}

/* SIGHUP: every service reloads its certificates and configuration. */
static void sup_on_hup(loop_t *loop, int signo, void *arg)
{
	(void)loop; (void)signo;
	supervisor_t *sup = arg;
	log_info("reload", "forwarding=SIGHUP");
	for (size_t i = 0; i < sup->n; i++)
		if (sup->children[i].state == CHILD_RUNNING)
			kill(sup->children[i].pid, SIGHUP);
}

/* ---- running ------------------------------------------------------------------- */

int supervise_run(supervisor_t *sup)
{
	sup->loop = loop_new();
	/* stdout may be a pipe nobody reads any more: write errors, not death. */
	signal(SIGPIPE, SIG_IGN);
	if (loop_on_signal(sup->loop, SIGCHLD, sup_on_sigchld, sup) < 0 ||
	    loop_on_signal(sup->loop, SIGTERM, sup_on_stop, sup) < 0 ||
	    loop_on_signal(sup->loop, SIGINT, sup_on_stop, sup) < 0 ||
	    loop_on_signal(sup->loop, SIGHUP, sup_on_hup, sup) < 0)
		fatal("signals", "error=%s", log_quote(strerror(errno)));
	sup->devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	sup->bus = bus_client_new(sup->loop, sup->bus_dir);
	if (sup->devnull < 0 || sup->bus == NULL)
		fatal("start", "bus_dir=%s why=\"cannot open /dev/null or the bus client\"",
		      log_quote(sup->bus_dir));
	child_start(&sup->children[0]);  /* busd; the rest once it answers */
	sup->poll = loop_timer_add(sup->loop, SUP_POLL_MS, true, sup_poll, sup);
	sup->warn = loop_timer_add(sup->loop, SUP_READY_WARN_MS, false, sup_warn_late, sup);

	int rc = loop_run(sup->loop);
	/* Should polling itself fail, children still running get SIGTERM from
	 * PR_SET_PDEATHSIG as we exit. */
	if (rc < 0)
		log_error("loop", "error=%s", log_quote(strerror(errno)));

	loop_timer_cancel(sup->loop, &sup->poll);
	loop_timer_cancel(sup->loop, &sup->warn);
	loop_timer_cancel(sup->loop, &sup->kill);
	for (size_t i = 0; i < sup->n; i++)
		loop_timer_cancel(sup->loop, &sup->children[i].timer);
	bus_client_free(&sup->bus);
	loop_free(&sup->loop);
	close(sup->devnull);
	sup->devnull = -1;
	return rc;
}
