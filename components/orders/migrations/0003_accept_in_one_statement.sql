-- Accept in one statement (SQLite; 0003_accept_in_one_statement.postgres.sql is the same on
-- Postgres). An order's row carries the idempotency key it was placed under and the request
-- that key answered, and a trigger writes the order's first history entry and its
-- `order.placed` outbox rows (the envelope is the row's `placed_event`, one row per checker
-- as `CHECKERS` in src/lib.rs) in the same statement: the accept holds the write lock for
-- one host call instead of a transaction's eight.
ALTER TABLE orders ADD COLUMN idempotency_key TEXT;
ALTER TABLE orders ADD COLUMN idempotent_request TEXT;
UPDATE orders SET
    idempotency_key = (SELECT scoped_key FROM order_idempotency_keys k WHERE k.order_id = orders.id),
    idempotent_request = (SELECT request FROM order_idempotency_keys k WHERE k.order_id = orders.id);
CREATE UNIQUE INDEX IF NOT EXISTS orders_by_idempotency_key ON orders (idempotency_key);
DROP TABLE order_idempotency_keys;
CREATE TRIGGER IF NOT EXISTS orders_placed AFTER INSERT ON orders FOR EACH ROW BEGIN
    INSERT INTO order_history (order_id, seq, status, at) VALUES (NEW.id, 1, NEW.status, NEW.created_at);
    INSERT INTO orders_outbox (id, event_id, event_type, destination, envelope, attempts, next_attempt_at, created_at)
    SELECT json_extract(NEW.placed_event, '$.id') || ':' || checkers.destination,
           json_extract(NEW.placed_event, '$.id'), json_extract(NEW.placed_event, '$.type'),
           checkers.destination, NEW.placed_event, 0, NEW.created_at, NEW.created_at
    FROM (SELECT 'balance-checker' AS destination UNION ALL SELECT 'stock-checker') AS checkers;
END;
