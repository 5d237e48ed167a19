/*
 * supervise.h — the child management behind `make run` (DESIGN.md
 * "Interfaces"): start the programs, watch busd until every one has
 * registered, restart crashes with backoff, stop them all on a signal.
 *
 * Ownership: supervise_new returns a new supervisor released with
 * supervise_free; every string parameter is borrowed (copied if kept).
 */
#ifndef ROOST_RUN_SUPERVISE_H
#define ROOST_RUN_SUPERVISE_H

#include <stddef.h>

/* What `make run` starts when roost.conf / ROOST_SERVICES say nothing. */
#define SUPERVISE_DEFAULT "busd storaged smtpd imapd dkimd policyd"

typedef struct supervisor supervisor_t;

/* A supervisor for programs in bin_dir whose busd serves bus_dir. */
supervisor_t *supervise_new(const char *bin_dir, const char *bus_dir);
void supervise_free(supervisor_t **sup);

/*
 * Adds the programs of list (names separated by spaces or commas). With
 * strict, a name that is not in bin_dir is an error (-1, one line in err);
 * without, it is skipped (the default list names services not built yet).
 * busd is always added, and always started first.
 */
int supervise_add_list(supervisor_t *sup, const char *list, int strict, char *err, size_t errlen);

/*
 * Starts busd, then the others once busd answers; prints the ready line;
 * restarts crashed children; returns 0 after SIGTERM or SIGINT once every
 * child has been stopped and reaped, -1 if the loop itself failed.
 */
int supervise_run(supervisor_t *sup);

#endif
