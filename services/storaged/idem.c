/*
 * idem.c — the idempotency table: a state-changing request's idem key, the
 * type it answered and the reply's fields as JSON (migrations.c, table
 * idempotency). Rows are written in the same transaction as the change they
 * describe, so a stored result always means "done"; errors are never
 * stored, so a retry after an error tries again. Rows live 7 days.
 */
#include "storaged.h"

#include "log.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

int idem_lookup(db_t *db, const char *idem, const char *type, json_t **result_out)
{
	sqlite3_stmt *st = db_prepare(db, "SELECT type, result FROM idempotency WHERE key = ?1");
	int rc = -1;
	*result_out = NULL;
	if (st == NULL)
		goto out;
	sqlite3_bind_text(st, 1, idem, -1, SQLITE_STATIC);
	int s = sqlite3_step(st);
	if (s == SQLITE_DONE) {
		rc = 0;
		goto out;
	}
	if (s != SQLITE_ROW)
		goto out;
	const char *t = (const char *)sqlite3_column_text(st, 0);
	const char *res = (const char *)sqlite3_column_text(st, 1);
	if (t == NULL || strcmp(t, type) != 0) {
		rc = -2;  /* the key was used by another kind of request */
		goto out;
	}
	*result_out = res ? json_loads(res, JSON_REJECT_DUPLICATES, NULL) : NULL;
	rc = *result_out != NULL ? 1 : -1;  /* a corrupt row is an error, not a miss */
out:
	if (rc == -1)
		log_warn("idem", "op=lookup why=%s", log_quote(sqlite3_errmsg(db_handle(db))));
	db_release(db, st);
	return rc;
}

int idem_store(db_t *db, const char *idem, const char *type, const json_t *result)
{
	char *text = json_dumps(result, JSON_COMPACT);
	if (text == NULL)
		return -1;
	int rc = idem_store_text(db, idem, type, text);
	free(text);
	return rc;
}

int idem_store_text(db_t *db, const char *idem, const char *type, const char *text)
{
	int rc = -1;
	sqlite3_stmt *st = db_prepare(db, "INSERT INTO idempotency (key, type, result, created) "
				      "VALUES (?1, ?2, ?3, ?4)");
	if (st != NULL) {
		sqlite3_bind_text(st, 1, idem, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, type, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, text, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 4, (sqlite3_int64)time(NULL));
		rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
	}
	if (rc < 0)
		log_warn("idem", "op=store why=%s", log_quote(sqlite3_errmsg(db_handle(db))));
	db_release(db, st);
	return rc;
}

int idem_prune(db_t *db, int64_t max_age_s)
{
	sqlite3_stmt *st = NULL;
	int rc = -1;
	if (sqlite3_prepare_v2(db_handle(db), "DELETE FROM idempotency WHERE created < ?1",
			       -1, &st, NULL) == SQLITE_OK) {
		sqlite3_bind_int64(st, 1, (sqlite3_int64)(time(NULL) - max_age_s));
		if (sqlite3_step(st) == SQLITE_DONE)
			rc = sqlite3_changes(db_handle(db));
	}
	sqlite3_finalize(st);
	return rc;
}
