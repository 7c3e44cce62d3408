-- A global order of status changes, the ids of live tracking's Server-Sent Events.
-- History rows are written without an id; live tracking assigns ids to committed rows in
-- small transactions of their own (MAX(event_id) + 1 onwards), so ids follow the order in
-- which they became visible and a reader that resumes after an id misses nothing. The
-- unique index makes two concurrent assignments conflict instead of reusing ids.
ALTER TABLE order_history ADD COLUMN event_id BIGINT;
CREATE UNIQUE INDEX IF NOT EXISTS order_history_by_event ON order_history (event_id);
