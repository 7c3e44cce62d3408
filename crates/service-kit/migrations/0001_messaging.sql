-- Messaging tables of one service; `{prefix}` is the service's table prefix.
-- Outbox: events written in the same transaction as the state change that caused them,
-- delivered (and re-delivered with backoff) after commit.
CREATE TABLE IF NOT EXISTS {prefix}_outbox (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    destination TEXT NOT NULL,
    envelope TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS {prefix}_outbox_due ON {prefix}_outbox (next_attempt_at);
-- Inbox: ids of events already applied, so a re-delivered event is applied once.
CREATE TABLE IF NOT EXISTS {prefix}_inbox (
    event_id TEXT PRIMARY KEY,
    event_type TEXT NOT NULL,
    processed_at BIGINT NOT NULL
);
-- Dead letters: messages that ran out of attempts or can never be applied.
CREATE TABLE IF NOT EXISTS {prefix}_dead_letters (
    id TEXT PRIMARY KEY,
    event_id TEXT,
    event_type TEXT,
    destination TEXT NOT NULL,
    envelope TEXT NOT NULL,
    reason TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    dead_at BIGINT NOT NULL
);
