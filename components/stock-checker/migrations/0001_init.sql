-- The catalogue with free and reserved stock, and the reservations of placed orders.
CREATE TABLE IF NOT EXISTS products (
    sku TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    price_cents BIGINT NOT NULL,
    stock BIGINT NOT NULL,
    reserved BIGINT NOT NULL DEFAULT 0,
    sold BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL
);
-- One row per order seen: held, committed, released or rejected (items as JSON).
CREATE TABLE IF NOT EXISTS stock_holds (
    order_id TEXT PRIMARY KEY,
    items TEXT NOT NULL,
    state TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
