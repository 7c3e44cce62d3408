//! Signed events between services: a transactional outbox with retries and backoff, an
//! inbox that makes every handler idempotent by event id, and dead letters an admin can
//! inspect and retry.
//!
//! Delivery goes through the host's [`Transport`] (on Spin, a `POST` of the envelope to the
//! destination's [`EVENTS_PATH`]). It is at-least-once: a message is deleted from the
//! outbox only after the receiver accepted it, and the receiver applies each event id once.

use std::borrow::Cow;
use std::cell::RefCell;

use serde::Serialize;
use serde_json::Value;
use shop_domain::envelope::Envelope;
use shop_domain::retry::RetryPolicy;

use crate::db::{Db, DbError, Migration, Row};
use crate::http::Response;
use crate::ids::{new_id, now_ms, random_u64};
use crate::log::{self, Level};
use crate::ports::{Config, Delivery, Env, Transport};

/// The path every service receives events on.
pub const EVENTS_PATH: &str = "/internal/events";
/// The path under which a service receives acknowledgements of its own events, as
/// `{ACKS_PATH}/<outbox id>` with the body `{"status": ..., "detail": ...}` (hosts whose
/// transport answers with [`Delivery::Sent`]).
pub const ACKS_PATH: &str = "/internal/acks";
/// How long a row a pump claimed is left alone before another pump may retry it: long
/// enough for a whole batch to be sent one by one.
const CLAIM_LEASE_MS: i64 = 30_000;
/// How long a freshly written row waits for its writer's first attempt (made right after
/// the writer's response) before a pump may send it: the writer died when it is still there.
const FIRST_SEND_LEASE_MS: i64 = 5_000;
/// How many due messages one pump delivers at most.
const PUMP_BATCH: i64 = 50;

thread_local! {
    /// Outbox rows (table prefix, id) this instance wrote, awaiting their first attempt by
    /// [`Messaging::send_written`]. An instance is one thread; rows of several services
    /// (in tests) are kept apart by prefix.
    static WRITTEN: RefCell<Vec<(String, String)>> = const { RefCell::new(Vec::new()) };
}

/// What became of a failed attempt.
enum Failure {
    /// Scheduled again with backoff.
    Retried,
    /// Out of attempts: a dead letter.
    DeadLettered,
}

/// One claimed outbox row.
struct OutboxMessage {
    id: String,
    destination: String,
    envelope: String,
    attempts: i64,
}

impl OutboxMessage {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        Ok(OutboxMessage {
            id: row.text("id")?,
            destination: row.text("destination")?,
            envelope: row.text("envelope")?,
            attempts: row.i64("attempts")?,
        })
    }
}

/// The outbox row of event `event_id` for `destination`.
fn outbox_id(event_id: &str, destination: &str) -> String {
    format!("{event_id}:{destination}")
}

/// `$1, $2, ..., $n`.
fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a handler could not apply an event.
#[derive(Debug)]
pub enum HandlerError {
    /// A failure that may pass (database busy, I/O): the sender retries.
    Transient(String),
    /// The event can never be applied as it is: it becomes a dead letter at once.
    Permanent(String),
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandlerError::Transient(reason) => write!(f, "transient: {reason}"),
            HandlerError::Permanent(reason) => write!(f, "permanent: {reason}"),
        }
    }
}

impl From<DbError> for HandlerError {
    fn from(e: DbError) -> Self {
        HandlerError::Transient(e.to_string())
    }
}

/// What one pump did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PumpReport {
    /// Messages the receiver accepted.
    pub delivered: u32,
    /// Messages handed to the broker, whose acknowledgement is still to come.
    pub sent: u32,
    /// Messages that failed and were scheduled again.
    pub retried: u32,
    /// Messages that ran out of attempts and became dead letters.
    pub dead_lettered: u32,
}

/// A message that could not be delivered or applied.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Id, unique across services: `{service}:{local id}`.
    pub id: String,
    /// The service holding it.
    pub service: String,
    /// The event's id, when the message could be decoded.
    pub event_id: Option<String>,
    /// The event's type, when known.
    pub event_type: Option<String>,
    /// The service it was meant for.
    pub destination: String,
    /// Why it is dead.
    pub reason: String,
    /// Delivery attempts made.
    pub attempts: i64,
    /// When it died (RFC 3339).
    pub dead_at: String,
    /// The message itself (JSON when it parses, else text).
    pub message: Value,
}

/// An event a handler answers another with: its type and data ([`Messaging::reply`]).
pub struct Reply {
    /// The answer's event type.
    pub event_type: &'static str,
    /// The answer's data.
    pub data: Value,
}

/// One service's messaging over its own database tables.
pub struct Messaging<'a> {
    db: Db<'a>,
    transport: &'a dyn Transport,
    service: &'a str,
    prefix: String,
    /// Where the event secret is read, at each use (so its dev-default warning comes only
    /// when an event is signed or verified, not on every tick).
    config: &'a dyn Config,
    retry: RetryPolicy,
}

impl<'a> Messaging<'a> {
    /// Messaging for `service` (a component id such as `balance-checker`), configured from `env`.
    pub fn new(env: &Env<'a>, service: &'a str) -> Self {
        Messaging {
            db: Db::new(env.sql),
            transport: env.transport,
            service,
            prefix: table_prefix(service),
            config: env.config,
            retry: crate::settings::retry_policy(env.config),
        }
    }

    /// The secret that signs and verifies this service's events.
    fn secret(&self) -> Vec<u8> {
        crate::settings::event_secret(self.config)
    }

    /// The versioned migrations that create this service's messaging tables.
    pub fn migrations(service: &str) -> Vec<Migration> {
        vec![Migration {
            version: 1,
            name: "messaging",
            sql: Cow::Owned(
                include_str!("../migrations/0001_messaging.sql")
                    .replace("{prefix}", &table_prefix(service)),
            ),
        }]
    }

    /// The scope under which the messaging migrations of `service` are recorded.
    pub fn migration_scope(service: &str) -> String {
        format!("{service}.messaging")
    }

    /// Creates, signs and stores an event for each destination, inside the caller's
    /// transaction `tx`, so the event exists exactly when the state change does.
    pub fn publish(
        &self,
        tx: &Db,
        event_type: &str,
        subject: &str,
        correlation_id: &str,
        data: Value,
        destinations: &[&str],
    ) -> Result<Envelope, DbError> {
        let envelope = Envelope::new(
            new_id("evt"),
            event_type.to_owned(),
            subject.to_owned(),
            shop_domain::time::rfc3339_from_millis(now_ms()),
            correlation_id.to_owned(),
            data,
        )
        .signed(&self.secret());
        self.store(tx, &envelope, destinations)?;
        Ok(envelope)
    }

    /// Publishes `reply` about `subject` to `destination` as the answer to event `cause`
    /// (same correlation id), inside the caller's transaction `tx`.
    pub fn reply(
        &self,
        tx: &Db,
        cause: &Envelope,
        subject: &str,
        reply: Reply,
        destination: &str,
    ) -> Result<Envelope, DbError> {
        self.publish(
            tx,
            reply.event_type,
            subject,
            &cause.correlation_id,
            reply.data,
            &[destination],
        )
    }

    /// Stores `envelope` in the outbox, one row per destination.
    ///
    /// The rows are written already claimed for their first attempt, which
    /// [`Messaging::send_written`] makes after the response; only when that does not
    /// happen (the instance died) does a pump send them, once [`FIRST_SEND_LEASE_MS`] has passed.
    fn store(&self, tx: &Db, envelope: &Envelope, destinations: &[&str]) -> Result<(), DbError> {
        let text = serde_json::to_string(envelope).map_err(|e| DbError(e.to_string()))?;
        let now = now_ms();
        for destination in destinations {
            let id = outbox_id(&envelope.id, destination);
            tx.execute(
                &format!(
                    "INSERT INTO {}_outbox (id, event_id, event_type, destination, envelope, attempts, next_attempt_at, created_at) \
                     VALUES ($1, $2, $3, $4, $5, 1, $6, $7) ON CONFLICT (id) DO NOTHING",
                    self.prefix
                ),
                &[
                    id.as_str().into(),
                    envelope.id.as_str().into(),
                    envelope.event_type.as_str().into(),
                    (*destination).into(),
                    text.as_str().into(),
                    (now + FIRST_SEND_LEASE_MS).into(),
                    now.into(),
                ],
            )?;
            self.remember_written(id);
        }
        Ok(())
    }

    /// Notes an outbox row this instance wrote, for [`Messaging::send_written`].
    fn remember_written(&self, id: String) {
        WRITTEN.with(|written| written.borrow_mut().push((self.prefix.clone(), id)));
    }

    /// Makes the first delivery attempt of the outbox rows this instance wrote (rows of
    /// transactions that rolled back no longer exist and are skipped). Each row is sent by
    /// its writer, so concurrent instances never contend for fresh messages; one statement
    /// then removes every delivered row.
    pub fn send_written(&self) -> Result<PumpReport, DbError> {
        let ids: Vec<String> = WRITTEN.with(|written| {
            let mut written = written.borrow_mut();
            let (own, others) = written
                .drain(..)
                .partition(|(prefix, _)| *prefix == self.prefix);
            *written = others;
            own.into_iter().map(|(_, id)| id).collect()
        });
        let mut report = PumpReport::default();
        if ids.is_empty() {
            return Ok(report);
        }
        let rows = self.db.query(
            &format!(
                "SELECT id, destination, envelope, attempts FROM {}_outbox WHERE id IN ({})",
                self.prefix,
                placeholders(ids.len())
            ),
            &ids.iter().map(|id| id.as_str().into()).collect::<Vec<_>>(),
        )?;
        let mut delivered = Vec::new();
        for row in rows {
            let message = OutboxMessage::from_row(&row)?;
            self.attempt(message, &mut delivered, &mut report)?;
        }
        self.delete(&delivered)?;
        Ok(report)
    }

    /// Delivers the messages that are due: retries after a failed attempt, and rows whose
    /// writer died before sending them. Never holds a transaction while sending.
    ///
    /// A read comes first, since a claim is a write that waits for SQLite's write lock even
    /// when nothing is due; then one statement claims up to [`PUMP_BATCH`] due rows, so that
    /// a pump takes the lock once. A concurrent pump's claim re-checks `next_attempt_at`
    /// under the row's lock and skips what this one claimed.
    pub fn pump(&self) -> Result<PumpReport, DbError> {
        let mut report = PumpReport::default();
        let now = now_ms();
        let due = self.db.query_opt(
            &format!(
                "SELECT id FROM {}_outbox WHERE next_attempt_at <= $1 LIMIT 1",
                self.prefix
            ),
            &[now.into()],
        )?;
        if due.is_none() {
            return Ok(report);
        }
        let claimed = self.db.query(
            &format!(
                "UPDATE {p}_outbox SET attempts = attempts + 1, next_attempt_at = $1 \
                 WHERE next_attempt_at <= $2 AND id IN \
                 (SELECT id FROM {p}_outbox WHERE next_attempt_at <= $2 ORDER BY next_attempt_at LIMIT $3) \
                 RETURNING id, destination, envelope, attempts",
                p = self.prefix
            ),
            &[(now + CLAIM_LEASE_MS).into(), now.into(), PUMP_BATCH.into()],
        )?;
        let mut delivered = Vec::new();
        for row in claimed {
            self.attempt(OutboxMessage::from_row(&row)?, &mut delivered, &mut report)?;
        }
        self.delete(&delivered)?;
        Ok(report)
    }

    /// Sends one claimed outbox row. Accepted, its id joins `delivered`; sent without an
    /// answer, it stays until its acknowledgement (or its lease runs out); failed, it is
    /// scheduled again with backoff or, out of attempts, becomes a dead letter.
    fn attempt(
        &self,
        message: OutboxMessage,
        delivered: &mut Vec<String>,
        report: &mut PumpReport,
    ) -> Result<(), DbError> {
        match self.deliver(
            &message.id,
            &message.destination,
            &message.envelope,
            message.attempts,
        ) {
            Ok(Delivery::Accepted) => {
                delivered.push(message.id);
                report.delivered += 1;
            }
            Ok(Delivery::Sent) => report.sent += 1,
            Err(error) => match self.record_failure(message, &error)? {
                Failure::Retried => report.retried += 1,
                Failure::DeadLettered => report.dead_lettered += 1,
            },
        }
        Ok(())
    }

    /// A failed attempt of `message`: scheduled again with backoff or, out of attempts, a
    /// dead letter.
    fn record_failure(&self, message: OutboxMessage, error: &str) -> Result<Failure, DbError> {
        let OutboxMessage {
            id,
            destination,
            envelope,
            attempts,
        } = message;
        let correlation = correlation_of(&envelope);
        let attempt_number = u32::try_from(attempts).unwrap_or(u32::MAX);
        if self.retry.is_exhausted(attempt_number) {
            log::write(
                Level::Warn,
                self.service,
                &correlation,
                &format!("dead letter {id} after {attempts} attempts: {error}"),
            );
            self.db.transaction(|tx| {
                self.insert_dead_letter(tx, &envelope, &destination, error, attempts)?;
                tx.execute(
                    &format!("DELETE FROM {}_outbox WHERE id = $1", self.prefix),
                    &[id.as_str().into()],
                )
            })?;
            Ok(Failure::DeadLettered)
        } else {
            let delay = self.retry.delay_ms(attempt_number, random_u64());
            log::write(
                Level::Warn,
                self.service,
                &correlation,
                &format!("delivery {id} attempt {attempts} failed, retry in {delay} ms: {error}"),
            );
            self.db.execute(
                &format!(
                    "UPDATE {}_outbox SET next_attempt_at = $1, last_error = $2 WHERE id = $3",
                    self.prefix
                ),
                &[
                    (now_ms() + i64::try_from(delay).unwrap_or(i64::MAX / 2)).into(),
                    error.into(),
                    id.as_str().into(),
                ],
            )?;
            Ok(Failure::Retried)
        }
    }

    /// The receiver's outcome for outbox row `outbox_id`, sent after a [`Delivery::Sent`]:
    /// a 2xx `status` removes the row, another is a failed attempt (`detail` says why).
    /// An acknowledgement of a row that is gone (acknowledged before, or dead) changes
    /// nothing. Returns whether the row was still there.
    pub fn acknowledge(&self, outbox_id: &str, status: u16, detail: &str) -> Result<bool, DbError> {
        let Some(row) = self.db.query_opt(
            &format!(
                "SELECT id, destination, envelope, attempts FROM {}_outbox WHERE id = $1",
                self.prefix
            ),
            &[outbox_id.into()],
        )?
        else {
            return Ok(false);
        };
        let message = OutboxMessage::from_row(&row)?;
        if (200..300).contains(&status) {
            self.delete(&[message.id])?;
        } else {
            let error = format!("{} answered {status}: {detail}", message.destination);
            self.record_failure(message, &error)?;
        }
        Ok(true)
    }

    /// Whether the outbox is still retrying event `event_id` for `destination`: an attempt
    /// failed and the row waits for the next one (it is gone once delivered or dead).
    pub fn is_retrying(&self, db: &Db, event_id: &str, destination: &str) -> Result<bool, DbError> {
        let row = db.query_opt(
            &format!(
                "SELECT id FROM {}_outbox WHERE id = $1 AND last_error IS NOT NULL",
                self.prefix
            ),
            &[outbox_id(event_id, destination).into()],
        )?;
        Ok(row.is_some())
    }

    /// Removes delivered rows from the outbox, in one statement.
    fn delete(&self, ids: &[String]) -> Result<(), DbError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.db.execute(
            &format!(
                "DELETE FROM {}_outbox WHERE id IN ({})",
                self.prefix,
                placeholders(ids.len())
            ),
            &ids.iter().map(|id| id.as_str().into()).collect::<Vec<_>>(),
        )
    }

    /// Sends outbox row `id`, with its attempt count in the (unsigned) `attempt` field.
    fn deliver(
        &self,
        id: &str,
        destination: &str,
        envelope_text: &str,
        attempts: i64,
    ) -> Result<Delivery, String> {
        let body = match serde_json::from_str::<Value>(envelope_text) {
            Ok(mut value) => {
                if value.is_object() {
                    value["attempt"] = Value::from(attempts);
                }
                serde_json::to_vec(&value).unwrap_or_else(|_| envelope_text.as_bytes().to_vec())
            }
            Err(_) => envelope_text.as_bytes().to_vec(),
        };
        self.transport
            .deliver(destination, body, &correlation_of(envelope_text), id)
    }

    /// Handles a `POST /internal/events` body: verifies the signature, skips events already
    /// applied, and runs `handler` in a transaction together with the inbox record and any
    /// events the handler publishes. Bad messages become dead letters (answered 202);
    /// transient failures answer 503 so the sender retries.
    pub fn receive(
        &self,
        body: &[u8],
        mut handler: impl FnMut(&Db, &Envelope) -> Result<(), HandlerError>,
    ) -> Response {
        let raw = String::from_utf8_lossy(body).into_owned();
        let envelope = match Envelope::decode(body) {
            Ok(envelope) => envelope,
            Err(e) => return self.reject(&raw, &format!("malformed: {e}"), "-"),
        };
        if envelope.verify(&self.secret()).is_err() {
            return self.reject(&raw, "bad_signature", &envelope.correlation_id);
        }
        let outcome = self.db.transaction(|tx| {
            let seen = tx.query_opt(
                &format!(
                    "SELECT event_id FROM {}_inbox WHERE event_id = $1",
                    self.prefix
                ),
                &[envelope.id.as_str().into()],
            )?;
            if seen.is_some() {
                return Ok(false);
            }
            handler(tx, &envelope)?;
            tx.execute(
                &format!(
                    "INSERT INTO {}_inbox (event_id, event_type, processed_at) VALUES ($1, $2, $3)",
                    self.prefix
                ),
                &[
                    envelope.id.as_str().into(),
                    envelope.event_type.as_str().into(),
                    now_ms().into(),
                ],
            )?;
            Ok(true)
        });
        match outcome {
            Ok(applied) => {
                let status = if applied { "processed" } else { "duplicate" };
                log::write(
                    Level::Info,
                    self.service,
                    &envelope.correlation_id,
                    &format!("{} {} {status}", envelope.event_type, envelope.id),
                );
                Response::json(
                    200,
                    &serde_json::json!({"status": status, "event_id": envelope.id}),
                )
            }
            Err(HandlerError::Permanent(reason)) => {
                self.reject(&raw, &reason, &envelope.correlation_id)
            }
            Err(HandlerError::Transient(reason)) => {
                log::write(
                    Level::Warn,
                    self.service,
                    &envelope.correlation_id,
                    &format!("{} {} failed: {reason}", envelope.event_type, envelope.id),
                );
                Response::problem(503, "handler-failed", "Event handler failed", &reason)
            }
        }
    }

    fn reject(&self, raw: &str, reason: &str, correlation: &str) -> Response {
        log::write(
            Level::Warn,
            self.service,
            correlation,
            &format!("message rejected to dead letters: {reason}"),
        );
        match self
            .db
            .transaction(|tx| self.insert_dead_letter(tx, raw, self.service, reason, 1))
        {
            Ok(()) => Response::json(
                202,
                &serde_json::json!({"status": "dead_lettered", "reason": reason}),
            ),
            Err(e) => Response::problem(
                503,
                "handler-failed",
                "Could not record dead letter",
                &e.to_string(),
            ),
        }
    }

    fn insert_dead_letter(
        &self,
        tx: &Db,
        raw: &str,
        destination: &str,
        reason: &str,
        attempts: i64,
    ) -> Result<(), DbError> {
        let parsed: Option<Value> = serde_json::from_str(raw).ok();
        let field = |name: &str| {
            parsed
                .as_ref()
                .and_then(|v| v.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        tx.execute(
            &format!(
                "INSERT INTO {}_dead_letters (id, event_id, event_type, destination, envelope, reason, attempts, dead_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                self.prefix
            ),
            &[
                new_id("dl").into(),
                field("id").into(),
                field("type").into(),
                destination.into(),
                raw.into(),
                reason.into(),
                attempts.into(),
                now_ms().into(),
            ],
        )
    }

    /// This service's dead letters, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, DbError> {
        let rows = self.db.query(
            &format!(
                "SELECT id, event_id, event_type, destination, envelope, reason, attempts, dead_at FROM {}_dead_letters ORDER BY dead_at, id",
                self.prefix
            ),
            &[],
        )?;
        rows.iter().map(|row| self.dead_letter(row)).collect()
    }

    fn dead_letter(&self, row: &Row) -> Result<DeadLetter, DbError> {
        let text = row.text("envelope")?;
        Ok(DeadLetter {
            id: format!("{}:{}", self.service, row.text("id")?),
            service: self.service.to_owned(),
            event_id: row.opt_text("event_id")?,
            event_type: row.opt_text("event_type")?,
            destination: row.text("destination")?,
            reason: row.text("reason")?,
            attempts: row.i64("attempts")?,
            dead_at: shop_domain::time::rfc3339_from_millis(row.i64("dead_at")?),
            message: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        })
    }

    /// Puts dead letter `local_id` back in the outbox for immediate delivery with fresh
    /// attempts. Returns false when there is no such dead letter.
    pub fn retry_dead_letter(&self, local_id: &str) -> Result<bool, DbError> {
        self.db.transaction(|tx| {
            let Some(row) = tx.query_opt(
                &format!("SELECT event_id, event_type, destination, envelope FROM {}_dead_letters WHERE id = $1", self.prefix),
                &[local_id.into()],
            )?
            else {
                return Ok(false);
            };
            let now = now_ms();
            tx.execute(
                &format!(
                    "INSERT INTO {}_outbox (id, event_id, event_type, destination, envelope, attempts, next_attempt_at, created_at) \
                     VALUES ($1, $2, $3, $4, $5, 0, $6, $6)",
                    self.prefix
                ),
                &[
                    format!("{local_id}:retry").into(),
                    row.opt_text("event_id")?.unwrap_or_else(|| local_id.to_owned()).into(),
                    row.opt_text("event_type")?.unwrap_or_else(|| "unknown".to_owned()).into(),
                    row.text("destination")?.into(),
                    row.text("envelope")?.into(),
                    now.into(),
                ],
            )?;
            tx.execute(&format!("DELETE FROM {}_dead_letters WHERE id = $1", self.prefix), &[local_id.into()])?;
            Ok(true)
        })
    }
}

/// The text field `name` of an event's data; an event without it can never be applied.
pub fn data_text<'e>(event: &'e Envelope, name: &str) -> Result<&'e str, HandlerError> {
    event.data[name]
        .as_str()
        .ok_or_else(|| HandlerError::Permanent(format!("{} without {name}", event.event_type)))
}

/// The table prefix of a service: its id with `-` replaced by `_`.
pub fn table_prefix(service: &str) -> String {
    service.replace('-', "_")
}

fn correlation_of(envelope_text: &str) -> String {
    serde_json::from_str::<Value>(envelope_text)
        .ok()
        .and_then(|v| {
            v.get("correlation_id")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "-".to_owned())
}
