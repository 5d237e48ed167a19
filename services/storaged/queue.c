/*
 * queue.c — the outbound queue (migration 3's queue and queue_rcpts).
 *
 * queue_add puts a stored blob on the queue for its recipients; it runs
 * inside storaged.message.store's savepoint, so a message is queued in
 * the same commit that stores its bytes.
 */
#include "storaged.h"

#include "util.h"

#include <string.h>
#include <time.h>

#define QUEUE_RCPTS_MAX 1000
#define QUEUE_LIFETIME_S (5 * 24 * 3600)

int64_t queue_add(accounts_t *a, int64_t blob_id, const char *sender, const json_t *rcpts,
		  const char *origin, struct acc_err *e)
{
	char addr[ACC_ADDR_MAX];
	size_t i;
	json_t *r;
	int64_t now = (int64_t)time(NULL);
	if (sender[0] != '\0' && acc_name_check(sender, true, addr, NULL) != NULL) {
		acc_set(e, "invalid", "enqueue: sender is not an address");
		return -1;
	}
	if (!json_is_array(rcpts) || json_array_size(rcpts) < 1 ||
	    json_array_size(rcpts) > QUEUE_RCPTS_MAX) {
		acc_set(e, "invalid", "enqueue: 1..%d recipients", QUEUE_RCPTS_MAX);
		return -1;
	}
	if (acc_run(a, acc_prep(a, "INSERT INTO queue (blob_id, sender, origin, created, expires) "
				"VALUES (?1, ?2, ?3, ?4, ?5)", "issii", blob_id,
				sender[0] ? addr : "", origin, now, now + QUEUE_LIFETIME_S)) != SQLITE_DONE) {
		acc_set(e, "internal", "database error");
		return -1;
	}
	int64_t id = sqlite3_last_insert_rowid(db_handle(a->db));
	json_array_foreach(rcpts, i, r) {
		const char *s = json_string_value(r);
		if (s == NULL || acc_name_check(s, true, addr, NULL) != NULL) {
			acc_set(e, "invalid", "enqueue: recipients[%zu] is not an address", i);
			return -1;
		}
		int rc = acc_run(a, acc_prep(a, "INSERT INTO queue_rcpts (queue_id, rcpt, next_attempt) "
					     "VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING", "isi", id,
					     addr, now));
		if (rc != SQLITE_DONE) {
			acc_set(e, "internal", "database error");
			return -1;
		}
	}
	return id;
}
