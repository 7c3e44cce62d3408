-- Issued vouchers: at most one per order.
CREATE TABLE IF NOT EXISTS vouchers (
    code TEXT PRIMARY KEY,
    order_id TEXT NOT NULL UNIQUE,
    customer TEXT NOT NULL,
    value_cents BIGINT NOT NULL,
    issued_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS vouchers_by_customer ON vouchers (customer, issued_at);
