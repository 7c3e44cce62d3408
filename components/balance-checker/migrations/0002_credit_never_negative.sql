-- The schema itself refuses negative credit: a write that would overspend, or release
-- more than was held, fails its transaction instead of committing. SQLite adds a CHECK
-- only by rebuilding the table; the same statements do it on PostgreSQL.
CREATE TABLE accounts_checked (
    customer TEXT PRIMARY KEY,
    balance_cents BIGINT NOT NULL DEFAULT 0 CHECK (balance_cents >= 0),
    held_cents BIGINT NOT NULL DEFAULT 0 CHECK (held_cents >= 0),
    spent_cents BIGINT NOT NULL DEFAULT 0 CHECK (spent_cents >= 0),
    credited_cents BIGINT NOT NULL DEFAULT 0 CHECK (credited_cents >= 0),
    updated_at BIGINT NOT NULL
);
INSERT INTO accounts_checked (customer, balance_cents, held_cents, spent_cents, credited_cents, updated_at)
    SELECT customer, balance_cents, held_cents, spent_cents, credited_cents, updated_at FROM accounts;
DROP TABLE accounts;
ALTER TABLE accounts_checked RENAME TO accounts;
