/*
 * migrations.c — storaged's schema, one migration per change, oldest first.
 *
 * Never edit a migration that has shipped: add the next one. Versions run
 * 1, 2, 3... with no gaps (db_open checks); each is applied in its own
 * transaction with foreign keys off, so a table may be rebuilt (create new,
 * copy, drop old, rename) without cascading into its children. The SQL
 * comments are the schema's documentation.
 */
#include "db.h"

#include "util.h"

const struct db_migration db_migrations[] = {
	{ 1, "domains, users, aliases, idempotency",
	  "CREATE TABLE domains (\n"
	  "  id INTEGER PRIMARY KEY,\n"
	  "  name TEXT NOT NULL UNIQUE,            -- lower-case, checked by storaged\n"
	  "  postmaster TEXT,                      -- local part of the user postmaster@ goes to\n"
	  "  catchall TEXT,                        -- address unknown local parts go to, or NULL\n"
	  "  created INTEGER NOT NULL              -- unix seconds\n"
	  ");\n"
	  "CREATE TABLE users (\n"
	  "  id INTEGER PRIMARY KEY,\n"
	  "  domain_id INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE,\n"
	  "  localpart TEXT NOT NULL,              -- lower-case\n"
	  "  password TEXT,                        -- PHC string ($scrypt$...); NULL: cannot log in\n"
	  "  quota_bytes INTEGER NOT NULL DEFAULT 0,   -- 0: no quota\n"
	  "  used_bytes INTEGER NOT NULL DEFAULT 0,\n"
	  "  created INTEGER NOT NULL,\n"
	  "  UNIQUE (domain_id, localpart)\n"
	  ");\n"
	  "CREATE TABLE aliases (\n"
	  "  id INTEGER PRIMARY KEY,\n"
	  "  domain_id INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE,\n"
	  "  localpart TEXT NOT NULL,\n"
	  "  target TEXT NOT NULL,                 -- full address\n"
	  "  UNIQUE (domain_id, localpart, target)\n"
	  ");\n"
	  "CREATE TABLE idempotency (\n"
	  "  key TEXT PRIMARY KEY,                 -- the request's idem\n"
	  "  type TEXT NOT NULL,                   -- message type it answered\n"
	  "  result TEXT NOT NULL,                 -- the reply's fields, JSON\n"
	  "  created INTEGER NOT NULL\n"
	  ");\n"
	  "CREATE INDEX idempotency_created ON idempotency(created);\n" },
};

const size_t db_migrations_count = ARRAY_LEN(db_migrations);
