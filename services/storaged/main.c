/*
 * storaged — Roost's storage service (DESIGN.md "Processes"): the only
 * process that writes the database. It answers the accounts requests
 * (storaged.{domain,user,alias}.*, accounts.c), the mailbox requests
 * (storaged.mailbox.*, mailbox.c) and the outbound queue's
 * (storaged.queue.*, queue.c), and runs storaged.control like every
 * service.
 *
 * Table of contents: configuration, the data directory (0750), umask 077
 * (the database holds password hashes), the database, the KDF pool, the
 * bus worker and its control worker, dropping root, the loop.
 */
#include "storaged.h"

#include "config.h"
#include "log.h"
#include "service.h"
#include "util.h"

#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	static const service_opts_t opts = { "storaged", "The Roost storage service: accounts, "
					     "and later mailboxes and messages." };
	char err[512], path[4096];
	config_t *cfg = service_init(&opts, argc, argv);
	const char *data = config_data_dir(cfg);
	const char *dir = config_bus_dir(cfg);
	if (service_mkdir(data, 0750, (gid_t)-1, err, sizeof err) < 0)
		fatal("data_dir", "why=%s", log_quote(err));
	umask(077);  /* roost.db and its WAL hold password hashes */
	if (snprintf(path, sizeof path, "%s/roost.db", data) >= (int)sizeof path)
		fatal("data_dir", "data_dir=%s why=\"too long\"", log_quote(data));
	db_t *db = db_open(path, err, sizeof err);
	if (db == NULL)
		fatal("db", "why=%s", log_quote(err));
	int pruned = idem_prune(db, IDEM_MAX_AGE_S);

	loop_t *loop = loop_new();
	kdfpool_t *kdf = kdfpool_new(loop, KDFPOOL_DEFAULT_THREADS);
	if (kdf == NULL)
		fatal("kdfpool", "why=\"cannot start the password hashing threads\"");
	accounts_t *acc = accounts_new(db, kdf);
	bus_control_t *ctl = bus_control_new(loop, dir, "storaged", accounts_stats, NULL, acc);
	bus_worker_t *w = bus_worker_new(loop, dir, "storaged", accounts_handlers, acc, 0);
	if (w == NULL || ctl == NULL)
		fatal("bus", "bus_dir=%s why=\"cannot create bus sockets\"", log_quote(dir));
	accounts_set_control(acc, ctl);
	service_drop_root(cfg);
	service_stop_on_signals(loop);
	log_info("ready", "db=%s schema=%d idem_pruned=%d pid=%d", log_quote(path), db_version(db),
		 pruned, (int)getpid());

	loop_run(loop);

	/* The pool first: its last callbacks still reply through the worker. */
	kdfpool_free(&kdf);
	bus_worker_free(&w);
	bus_control_free(&ctl);
	accounts_free(&acc);
	loop_free(&loop);
	db_close(&db);
	bus_zmq_term();
	config_free(&cfg);
	log_info("stopped", "pid=%d", (int)getpid());
	return 0;
}
