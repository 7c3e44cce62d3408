-- Accept in one statement (Postgres; see 0003_accept_in_one_statement.sql).
ALTER TABLE orders ADD COLUMN idempotency_key TEXT;
ALTER TABLE orders ADD COLUMN idempotent_request TEXT;
UPDATE orders SET idempotency_key = k.scoped_key, idempotent_request = k.request
    FROM order_idempotency_keys k WHERE k.order_id = orders.id;
CREATE UNIQUE INDEX IF NOT EXISTS orders_by_idempotency_key ON orders (idempotency_key);
DROP TABLE order_idempotency_keys;
CREATE FUNCTION orders_placed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO order_history (order_id, seq, status, at) VALUES (NEW.id, 1, NEW.status, NEW.created_at);
    INSERT INTO orders_outbox (id, event_id, event_type, destination, envelope, attempts, next_attempt_at, created_at)
    SELECT (NEW.placed_event::jsonb ->> 'id') || ':' || checkers.destination,
           NEW.placed_event::jsonb ->> 'id', NEW.placed_event::jsonb ->> 'type',
           checkers.destination, NEW.placed_event, 0, NEW.created_at, NEW.created_at
    FROM (VALUES ('balance-checker'), ('stock-checker')) AS checkers (destination);
    RETURN NULL;
END
$$;
CREATE TRIGGER orders_placed AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION orders_placed();
