-- The schema itself refuses negative stock: a write that would oversell, or release more
-- than was reserved, fails its transaction instead of committing. SQLite adds a CHECK only
-- by rebuilding the table; the same statements do it on PostgreSQL.
CREATE TABLE products_checked (
    sku TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    price_cents BIGINT NOT NULL,
    stock BIGINT NOT NULL CHECK (stock >= 0),
    reserved BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    sold BIGINT NOT NULL DEFAULT 0 CHECK (sold >= 0),
    updated_at BIGINT NOT NULL
);
INSERT INTO products_checked (sku, name, price_cents, stock, reserved, sold, updated_at)
    SELECT sku, name, price_cents, stock, reserved, sold, updated_at FROM products;
DROP TABLE products;
ALTER TABLE products_checked RENAME TO products;
