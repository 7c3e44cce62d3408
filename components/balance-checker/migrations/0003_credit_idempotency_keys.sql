-- The idempotency keys credits were applied under (scoped to the caller), with the request
-- each answered: a credit sent again under its key is applied once.
CREATE TABLE IF NOT EXISTS credit_idempotency_keys (
    scoped_key TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
