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
	{ 2, "mailboxes",
	  "CREATE TABLE counters (\n"
	  "  name TEXT PRIMARY KEY,                -- 'uidvalidity'\n"
	  "  value INTEGER NOT NULL\n"
	  ");\n"
	  "CREATE TABLE mailboxes (\n"
	  "  id INTEGER PRIMARY KEY,\n"
	  "  user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,\n"
	  "  name TEXT NOT NULL,                   -- UTF-8, '/'-separated hierarchy; \"INBOX\" is the inbox\n"
	  "  special_use TEXT,                     -- '\\Sent' '\\Drafts' '\\Junk' '\\Trash' '\\Archive' or NULL\n"
	  "  subscribed INTEGER NOT NULL DEFAULT 1,\n"
	  "  uidvalidity INTEGER NOT NULL,\n"
	  "  uidnext INTEGER NOT NULL DEFAULT 1,\n"
	  "  highestmodseq INTEGER NOT NULL DEFAULT 1,\n"
	  "  created INTEGER NOT NULL,\n"
	  "  UNIQUE (user_id, name)\n"
	  ");\n"
	  "INSERT INTO counters(name, value) VALUES ('uidvalidity', 0);\n"
	  "-- users that exist already get their default mailboxes (same set as user.add creates),\n"
	  "-- numbered from max(counter + 1, now) so that each has its own UIDVALIDITY\n"
	  "INSERT INTO mailboxes (user_id, name, special_use, uidvalidity, created)\n"
	  "  SELECT u.id, m.column2, m.column3,\n"
	  "         (SELECT max(c.value + 1, CAST(strftime('%s', 'now') AS INTEGER))\n"
	  "            FROM counters c WHERE c.name = 'uidvalidity')\n"
	  "           + row_number() OVER (ORDER BY u.id, m.column1) - 1,\n"
	  "         CAST(strftime('%s', 'now') AS INTEGER)\n"
	  "  FROM users u CROSS JOIN (VALUES (1, 'INBOX', NULL), (2, 'Sent', '\\Sent'),\n"
	  "    (3, 'Drafts', '\\Drafts'), (4, 'Junk', '\\Junk'), (5, 'Trash', '\\Trash'),\n"
	  "    (6, 'Archive', '\\Archive')) m;\n"
	  "UPDATE counters SET value = max(value, (SELECT coalesce(max(uidvalidity), 0) FROM mailboxes))\n"
	  "  WHERE name = 'uidvalidity';\n" },
};

const size_t db_migrations_count = ARRAY_LEN(db_migrations);
