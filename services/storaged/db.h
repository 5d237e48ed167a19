/*
 * db.h — storaged's SQLite database: opening, pragmas, schema migrations.
 *
 * storaged is the only process that writes mail to disk, and it does so in
 * one SQLite database (DESIGN.md "Processes"). db_open() returns a handle
 * that is ready to use: WAL journal, synchronous=FULL (a COMMIT returns only
 * once it is on disk, so "stored" may be replied after it), foreign keys on,
 * a 5 s busy timeout, and the schema brought up to the newest version this
 * binary knows. The schema version is PRAGMA user_version.
 *
 * Ownership: db_open*() returns a new db_t; db_close() frees it (and its
 * cached statements) and nulls the caller's pointer. db_handle() is
 * borrowed and lives as long as the db_t; so do statements from
 * db_prepare(), which go back with db_release(). One thread only (the
 * connection is opened without a mutex).
 */
#ifndef ROOST_STORAGED_DB_H
#define ROOST_STORAGED_DB_H

#include <stddef.h>
#include <sqlite3.h>

typedef struct db db_t;

/* One schema step. Versions run 1, 2, 3... with no gaps; sql may hold
 * several statements and comments and must not BEGIN or COMMIT itself. */
struct db_migration {
	int version;
	const char *name;
	const char *sql;
};

/* The real schema (migrations.c), oldest first. */
extern const struct db_migration db_migrations[];
extern const size_t db_migrations_count;

/* Opens (creating if missing) path with the real migrations; NULL and a
 * one-line "<path>: ..." in err on failure (nothing leaks). */
db_t *db_open(const char *path, char *err, size_t errlen);

/* The same with a given migration table (tests). Each missing migration is
 * applied in its own transaction together with its user_version; a failed
 * one is rolled back and the open fails. A database newer than the last
 * migration is refused untouched. */
db_t *db_open_with(const char *path, const struct db_migration *migs, size_t n,
		   char *err, size_t errlen);

/* Closes the database and sets *db to NULL; NULL or *db == NULL is a no-op. */
void db_close(db_t **db);

/*
 * A prepared statement for sql, from a cache of statements prepared once:
 * hand it back with db_release (never sqlite3_finalize), which resets it
 * and clears its bindings. NULL if sql does not prepare (the reason is
 * sqlite3_errmsg(db_handle(db))).
 */
sqlite3_stmt *db_prepare(db_t *db, const char *sql);
/* Gives back a statement from db_prepare (NULL is fine); the database's
 * error code stays that of the statement's last step. */
void db_release(db_t *db, sqlite3_stmt *st);
/* Runs sql (one statement, no parameters) through the cache: 0, or -1
 * with the error in sqlite3_extended_errcode(db_handle(db)). */
int db_run(db_t *db, const char *sql);
/* Statements in the cache (tests). */
size_t db_cached(const db_t *db);

/* The SQLite connection (borrowed). */
sqlite3 *db_handle(db_t *db);

/* The schema version after db_open (PRAGMA user_version). */
int db_version(db_t *db);

/* Runs PRAGMA integrity_check: 0 if "ok", else -1 with the first problem
 * (or the SQLite error) in err. */
int db_integrity_check(db_t *db, char *err, size_t errlen);

#endif
