-- Orders, their status history and the idempotency keys that created them.
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    customer TEXT NOT NULL,
    items TEXT NOT NULL,
    total_cents BIGINT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    balance_check TEXT,
    stock_check TEXT,
    checks_deadline BIGINT NOT NULL,
    check_resends BIGINT NOT NULL DEFAULT 0,
    placed_event TEXT NOT NULL,
    voucher TEXT,
    correlation_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_by_created ON orders (created_at, id);
CREATE INDEX IF NOT EXISTS orders_by_customer ON orders (customer, created_at, id);
CREATE INDEX IF NOT EXISTS orders_by_status ON orders (status, checks_deadline);
CREATE TABLE IF NOT EXISTS order_history (
    order_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    status TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (order_id, seq)
);
CREATE TABLE IF NOT EXISTS order_idempotency_keys (
    scoped_key TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    order_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
