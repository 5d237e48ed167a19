/*
 * storaged — Roost's storage service (DESIGN.md "Processes"): the only
 * process that writes the database. It answers the accounts requests
 * (storaged.{domain,user,alias}.*, accounts.c), the mailbox and message
 * requests (storaged.mailbox.*, mailbox.c; storaged.message.*, message.c),
 * the outbound queue's (storaged.queue.*, queue.c) and the online backups
 * (storaged.backup.*, backup.c), and runs storaged.control like every
 * service.
 *
 * Table of contents: configuration, the data directory (0750), umask 077
 * (the database holds password hashes), the data directory's lock (one
 * storaged per data_dir; roostctl restore takes it too), the database and
 * its checkpoint thread, the KDF pool, backups, the bus worker and its control worker, dropping root,
 * the loop.
 */
#include "storaged.h"

#include "ckpt.h"

#include "config.h"
#include "datadir.h"
#include "log.h"
#include "service.h"
#include "util.h"

#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	static const service_opts_t opts = { "storaged", "The Roost storage service: accounts, "
					     "mailboxes, messages and the outbound queue." };
	char err[512], path[4096];
	config_t *cfg = service_init(&opts, argc, argv);
	const char *data = config_data_dir(cfg);
	const char *dir = config_bus_dir(cfg);
	if (service_mkdir(data, 0750, (gid_t)-1, err, sizeof err) < 0)
		fatal("data_dir", "why=%s", log_quote(err));
	umask(077);  /* roost.db and its WAL hold password hashes */
	int lock = datadir_lock(data, err, sizeof err);
	if (lock == -2)
		fatal("data_dir", "data_dir=%s why=\"another storaged uses this data_dir\"", log_quote(data));
	if (lock < 0)
		fatal("data_dir", "why=%s", log_quote(err));
	if (snprintf(path, sizeof path, "%s/roost.db", data) >= (int)sizeof path)
		fatal("data_dir", "data_dir=%s why=\"too long\"", log_quote(data));
	db_t *db = db_open(path, err, sizeof err);
	if (db == NULL)
		fatal("db", "why=%s", log_quote(err));
	ckpt_t *ckpt = ckpt_start(db, path, err, sizeof err);
	if (ckpt == NULL)
		fatal("db", "why=%s", log_quote(err));
	int pruned = idem_prune(db, IDEM_MAX_AGE_S);
	int orphans = message_gc(db);  /* blobs a crash left half-written */
	long max_size, min_free;
	if (config_get_int(cfg, "max_message_size", 64L << 20, 0, 1L << 40, &max_size, err,
			   sizeof err) < 0 ||
	    config_get_int(cfg, "min_free_space", 64L << 20, 0, 1L << 40, &min_free, err,
			   sizeof err) < 0)
		fatal("config", "why=%s", log_quote(err));

	loop_t *loop = loop_new();
	kdfpool_t *kdf = kdfpool_new(loop, KDFPOOL_DEFAULT_THREADS);
	if (kdf == NULL)
		fatal("kdfpool", "why=\"cannot start the password hashing threads\"");
	bus_pub_t *pub = bus_pub_new(dir);  /* storaged.mailbox.changed */
	accounts_t *acc = accounts_new(loop, db, kdf, pub);
	acc->max_message_size = max_size;
	acc->min_free_space = min_free;
	acc->data_dir = data;
	acc->backup = backup_new(loop, db, data);
	acc->ckpt = ckpt;
	bus_control_t *ctl = bus_control_new(loop, dir, "storaged", accounts_stats, NULL, acc);
	bus_worker_t *w = bus_worker_new(loop, dir, "storaged", accounts_handlers, acc, 0);
	if (w == NULL || ctl == NULL || pub == NULL)
		fatal("bus", "bus_dir=%s why=\"cannot create bus sockets\"", log_quote(dir));
	accounts_set_control(acc, ctl);
	service_drop_root(cfg);
	service_stop_on_signals(loop);
	log_info("ready", "db=%s schema=%d idem_pruned=%d blobs_dropped=%d pid=%d", log_quote(path),
		 db_version(db), pruned, orphans, (int)getpid());

	loop_run(loop);

	/* The pool first: its last callbacks still reply through the worker;
	 * then the last batch commits and replies. */
	kdfpool_free(&kdf);
	acc_flush(acc);
	bus_worker_free(&w);
	bus_control_free(&ctl);
	backup_free(&acc->backup);
	accounts_free(&acc);
	bus_pub_free(&pub);
	loop_free(&loop);
	ckpt_stop(&ckpt);
	db_close(&db);
	bus_zmq_term();
	config_free(&cfg);
	close(lock);
	log_info("stopped", "pid=%d", (int)getpid());
	return 0;
}
