-- Customer credit and the holds placed orders keep on it.
-- Invariant per customer: credited = balance + held + spent.
CREATE TABLE IF NOT EXISTS accounts (
    customer TEXT PRIMARY KEY,
    balance_cents BIGINT NOT NULL DEFAULT 0,
    held_cents BIGINT NOT NULL DEFAULT 0,
    spent_cents BIGINT NOT NULL DEFAULT 0,
    credited_cents BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL
);
-- One row per order seen: held, committed, released or rejected. A row written by a
-- release that overtook its order.placed makes that late order.placed a no-op.
CREATE TABLE IF NOT EXISTS credit_holds (
    order_id TEXT PRIMARY KEY,
    customer TEXT NOT NULL,
    amount_cents BIGINT NOT NULL,
    state TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
