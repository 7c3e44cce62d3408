//! Signed events between services: a transactional outbox with retries and backoff, an
//! inbox that makes every handler idempotent by event id, and dead letters an admin can
//! inspect and retry.
//!
//! Events travel in batches. A sender claims every due row of its outbox (up to
//! [`PUMP_BATCH`]), its own fresh rows and those other instances wrote alike, and hands
//! each destination one delivery: a JSON array of envelopes for the destination's
//! [`EVENTS_PATH`] (on Spin relayed by the gateway, on wasmCloud a NATS request). The receiver applies the batch in one transaction, with
//! the inbox dedupe intact, and answers per envelope ([`DeliveryAnswer`]). Under load the
//! claims of concurrent instances gather what was written meanwhile, so a batch grows with
//! the load and the write transactions per event fall.
//!
//! Delivery is at-least-once: a row is deleted from the outbox only after the receiver
//! settled its event, and the receiver applies each event id once.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use shop_domain::envelope::Envelope;
use shop_domain::retry::RetryPolicy;

use crate::db::{Db, DbError, Migration, Row};
use crate::http::Response;
use crate::ids::{new_id, now_ms, random_u64};
use crate::log::{self, Level};
use crate::ports::{Config, Delivery, Env, Transport};
use crate::sql_text::{placeholders, placeholders_from, value_rows};

/// The path every service receives event batches on.
pub const EVENTS_PATH: &str = "/internal/events";
/// The path under which a service receives the answers to its own deliveries, as
/// `{ACKS_PATH}/<destination>` with an [`Acknowledgement`] body (hosts whose transport
/// answers with [`Delivery::Sent`]).
pub const ACKS_PATH: &str = "/internal/acks";
/// The path of every service's tick: retries and other work that is due
/// ([`Messaging::pump`]).
pub const TICK_PATH: &str = "/internal/tick";
/// How many due messages one claim takes at most: with few relays in flight (see the
/// gateway's `max_relays_in_flight`), a busy shop's backlog goes in few big batches. A
/// batch of 200 envelopes is about 150 KB, well under NATS's 1 MB message limit.
const PUMP_BATCH: i64 = 200;

thread_local! {
    /// Table prefixes of the services whose outbox this instance wrote to, so that
    /// [`Messaging::send_written`] looks for due rows only after a request that caused
    /// events. An instance is one thread; several services (in tests) are kept apart by prefix.
    static WROTE: RefCell<BTreeSet<String>> = const { RefCell::new(BTreeSet::new()) };
}

/// What became of a failed attempt.
enum Failure {
    /// Scheduled again with backoff.
    Retried,
    /// Out of attempts: a dead letter.
    DeadLettered,
}

/// An outbox row to write: one event for one destination.
struct OutboxRow {
    id: String,
    event_id: String,
    event_type: String,
    destination: String,
    envelope: String,
}

/// One claimed outbox row.
struct OutboxMessage {
    id: String,
    event_id: String,
    destination: String,
    envelope: String,
    attempts: i64,
}

impl OutboxMessage {
    fn from_row(row: &Row) -> Result<Self, DbError> {
        Ok(OutboxMessage {
            id: row.text("id")?,
            event_id: row.text("event_id")?,
            destination: row.text("destination")?,
            envelope: row.text("envelope")?,
            attempts: row.i64("attempts")?,
        })
    }
}

/// The columns [`OutboxMessage::from_row`] reads.
const OUTBOX_COLUMNS: &str = "id, event_id, destination, envelope, attempts";

/// The advisory lock key of the service whose tables start with `prefix`: FNV-1a of
/// `shop-events:<prefix>`, as a Postgres `bigint`.
fn events_lock_key(prefix: &str) -> i64 {
    let hash = format!("shop-events:{prefix}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// The outbox row of event `event_id` for `destination`.
fn outbox_id(event_id: &str, destination: &str) -> String {
    format!("{event_id}:{destination}")
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

/// What a receiver did with one envelope of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Applied now.
    Processed,
    /// Applied before: nothing changed.
    Duplicate,
    /// Can never be applied (bad signature, malformed, refused by the handler): kept
    /// among the receiver's dead letters.
    DeadLettered,
    /// Not applied for a reason that may pass: the sender tries again.
    Failed,
}

impl Outcome {
    /// Whether the sender is done with the event.
    fn settles(self) -> bool {
        self != Outcome::Failed
    }
}

/// The receiver's answer for one envelope of a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeResult {
    /// The event's id, when the envelope could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// What became of it.
    pub status: Outcome,
    /// Why it was dead-lettered or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The receiver's answer to one delivery: a result per envelope, in the batch's order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAnswer {
    /// One result per envelope.
    pub results: Vec<EnvelopeResult>,
}

/// A receiver's answer to a delivery as a broker carries it back to the sender
/// (`POST {ACKS_PATH}/<destination>`): the status the receiver answered with and its
/// result per envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Acknowledgement {
    /// The receiver's status.
    pub status: u16,
    /// What the receiver did with each envelope.
    pub answer: DeliveryAnswer,
}

impl Acknowledgement {
    /// The acknowledgement of `batch` answered with `response`: its [`DeliveryAnswer`],
    /// or, when the receiver did not get as far as one (it was unavailable, say), every
    /// envelope of the batch failed with the answer's status and text.
    pub fn of(batch: &[u8], response: &Response) -> Acknowledgement {
        Acknowledgement {
            status: response.status,
            answer: DeliveryAnswer::of(batch, response),
        }
    }
}

impl DeliveryAnswer {
    /// The answer `response` gives to `batch`: its body, or, when the receiver did not get
    /// as far as a [`DeliveryAnswer`] (it was unavailable, say), every envelope of the
    /// batch failed with the response's status and text.
    pub fn of(batch: &[u8], response: &Response) -> DeliveryAnswer {
        serde_json::from_slice(&response.body).unwrap_or_else(|_| {
            let reason = format!(
                "answered {}: {}",
                response.status,
                excerpt(&String::from_utf8_lossy(&response.body))
            );
            let envelopes = serde_json::from_slice::<Vec<Value>>(batch).unwrap_or_default();
            DeliveryAnswer {
                results: envelopes
                    .iter()
                    .filter_map(|envelope| envelope["id"].as_str())
                    .map(|id| EnvelopeResult {
                        event_id: Some(id.to_owned()),
                        status: Outcome::Failed,
                        reason: Some(reason.clone()),
                    })
                    .collect(),
            }
        })
    }
}

/// What one pump did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PumpReport {
    /// Messages the receiver settled (applied, already applied, or dead-lettered).
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
    /// Outbox rows the handlers of the batch being applied wrote, kept for one statement
    /// before its commit; `None` outside [`Messaging::apply_together`].
    pending: RefCell<Option<Vec<OutboxRow>>>,
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
            pending: RefCell::new(None),
        }
    }

    /// How long applying a delivery waits for SQLite's write lock: as long as a client's
    /// write (`client_lock_wait_ms`), and not again. A delivery that does not get it is
    /// answered 503 and sent again after the retry backoff, so that under load delivering
    /// instances (each holding a slot of the host's instance pool) end instead of piling up
    /// asleep in the busy handler.
    fn lock_wait_ms(&self) -> u32 {
        crate::settings::client_lock_wait_ms(self.config)
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
            postgres_sql: None,
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
        let envelope = self.envelope(event_type, subject, correlation_id, data);
        self.store(tx, &envelope, destinations)?;
        Ok(envelope)
    }

    /// A new signed event of `event_type` about `subject`, not stored: for a service whose
    /// own schema writes it to the outbox (e.g. a trigger, so that one statement stores
    /// the state and its event), which then calls [`Messaging::note_written`].
    pub fn envelope(
        &self,
        event_type: &str,
        subject: &str,
        correlation_id: &str,
        data: Value,
    ) -> Envelope {
        Envelope::new(
            new_id("evt"),
            event_type.to_owned(),
            subject.to_owned(),
            shop_domain::time::rfc3339_from_millis(now_ms()),
            correlation_id.to_owned(),
            data,
        )
        .signed(&self.secret())
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

    /// Stores `envelope` in the outbox, one row per destination, due at once: the first
    /// sender to claim it (usually the writer, right after its response) delivers it. While
    /// a batch is applied ([`Messaging::apply_together`]) the rows wait and are written with
    /// the batch's other events in one statement before its commit.
    fn store(&self, tx: &Db, envelope: &Envelope, destinations: &[&str]) -> Result<(), DbError> {
        let text = serde_json::to_string(envelope).map_err(|e| DbError(e.to_string()))?;
        let rows = destinations.iter().map(|destination| OutboxRow {
            id: outbox_id(&envelope.id, destination),
            event_id: envelope.id.clone(),
            event_type: envelope.event_type.clone(),
            destination: (*destination).to_owned(),
            envelope: text.clone(),
        });
        let mut pending = self.pending.borrow_mut();
        match pending.as_mut() {
            Some(pending) => pending.extend(rows),
            None => {
                drop(pending);
                self.insert_outbox_rows(tx, &rows.collect::<Vec<_>>())?;
            }
        }
        self.note_written();
        Ok(())
    }

    /// Writes `rows` to the outbox in one statement, due at once.
    fn insert_outbox_rows(&self, tx: &Db, rows: &[OutboxRow]) -> Result<(), DbError> {
        if rows.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let params: Vec<_> = rows
            .iter()
            .flat_map(|row| {
                [
                    row.id.as_str().into(),
                    row.event_id.as_str().into(),
                    row.event_type.as_str().into(),
                    row.destination.as_str().into(),
                    row.envelope.as_str().into(),
                    0_i64.into(),
                    now.into(),
                    now.into(),
                ]
            })
            .collect();
        tx.execute(
            &format!(
                "INSERT INTO {}_outbox (id, event_id, event_type, destination, envelope, attempts, next_attempt_at, created_at) \
                 VALUES {} ON CONFLICT (id) DO NOTHING",
                self.prefix,
                value_rows(rows.len(), 8)
            ),
            &params,
        )
    }

    /// Notes that this request wrote events to the outbox, so that they are sent after
    /// its response ([`Messaging::send_written`]): done by [`Messaging::publish`], and by a
    /// service whose schema stores its events (see [`Messaging::envelope`]).
    pub fn note_written(&self) {
        WROTE.with(|wrote| wrote.borrow_mut().insert(self.prefix.clone()));
    }

    /// After a request that wrote events (even in a transaction that rolled back), sends
    /// what is due, as [`Messaging::pump`] does, but only if the outbox's write lock is free
    /// at once: when another writer holds it, the rows stay due for the next sender (the
    /// next request that writes events, or the timer's pump). Under load the claims of
    /// every writing request would otherwise queue for the lock behind each other, each to
    /// find what the one before took.
    pub fn send_written(&self) -> Result<PumpReport, DbError> {
        let wrote = WROTE.with(|wrote| wrote.borrow_mut().remove(&self.prefix));
        if wrote {
            self.send_due(false)
        } else {
            Ok(PumpReport::default())
        }
    }

    /// Delivers the messages that are due (fresh ones, retries after a failed attempt,
    /// rows whose sender died), one batch per destination, waiting for the outbox's write
    /// lock as long as any write does. Run by the timer.
    pub fn pump(&self) -> Result<PumpReport, DbError> {
        self.send_due(true)
    }

    /// [`Messaging::pump`], with the claim waiting for the write lock or not (`wait`).
    /// Never holds a transaction while sending.
    ///
    /// A read comes first, since a claim is a write that takes SQLite's write lock even
    /// when nothing is due; then one statement claims up to [`PUMP_BATCH`] due rows, for
    /// [`Transport::answer_wait_ms`]. A concurrent claim re-checks `next_attempt_at` under
    /// the row's lock and skips what this one took. One statement then removes every
    /// settled row.
    fn send_due(&self, wait: bool) -> Result<PumpReport, DbError> {
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
        let claim = format!(
            "UPDATE {p}_outbox SET attempts = attempts + 1, next_attempt_at = $1 \
             WHERE next_attempt_at <= $2 AND id IN \
             (SELECT id FROM {p}_outbox WHERE next_attempt_at <= $2 ORDER BY next_attempt_at LIMIT $3) \
             RETURNING {OUTBOX_COLUMNS}",
            p = self.prefix
        );
        let params = [
            (now + self.transport.answer_wait_ms()).into(),
            now.into(),
            PUMP_BATCH.into(),
        ];
        let claimed = if wait {
            self.db.query(&claim, &params)?
        } else {
            match self.db.query_if_unlocked(&claim, &params)? {
                Some(rows) => rows,
                None => return Ok(report),
            }
        };
        let mut batches: Vec<(String, Vec<OutboxMessage>)> = Vec::new();
        for row in &claimed {
            let message = OutboxMessage::from_row(row)?;
            match batches
                .iter_mut()
                .find(|(destination, _)| *destination == message.destination)
            {
                Some((_, messages)) => messages.push(message),
                None => batches.push((message.destination.clone(), vec![message])),
            }
        }
        let mut settled = Vec::new();
        for (destination, messages) in batches {
            self.deliver(&destination, messages, &mut settled, &mut report)?;
        }
        self.delete(&settled)?;
        Ok(report)
    }

    /// Sends claimed `messages` to `destination` as one batch. What the receiver settled
    /// joins `settled`; sent without an answer, they stay until the acknowledgement (or
    /// their lease runs out); failed, each is scheduled again with backoff or, out of
    /// attempts, becomes a dead letter.
    fn deliver(
        &self,
        destination: &str,
        messages: Vec<OutboxMessage>,
        settled: &mut Vec<String>,
        report: &mut PumpReport,
    ) -> Result<(), DbError> {
        let batch: Vec<Value> = messages.iter().map(OutboxMessage::delivered).collect();
        let body = serde_json::to_vec(&batch).map_err(|e| DbError(e.to_string()))?;
        let correlation = correlation_of(&messages[0].envelope);
        self.db.release();
        match self
            .transport
            .deliver(destination, body.clone(), &correlation)
        {
            Ok(Delivery::Sent) => {
                report.sent += u32::try_from(messages.len()).unwrap_or(u32::MAX);
                Ok(())
            }
            Ok(Delivery::Answered(response)) => {
                let answer = DeliveryAnswer::of(&body, &response);
                self.settle(destination, messages, &answer, settled, report)
            }
            Err(error) => {
                for message in messages {
                    self.count_failure(message, &error, report)?;
                }
                Ok(())
            }
        }
    }

    /// Applies the receiver's `answer` to the `messages` delivered to `destination`: a
    /// settled event's row joins `settled`; a failed one, or one the answer does not
    /// mention, is a failed attempt.
    fn settle(
        &self,
        destination: &str,
        messages: Vec<OutboxMessage>,
        answer: &DeliveryAnswer,
        settled: &mut Vec<String>,
        report: &mut PumpReport,
    ) -> Result<(), DbError> {
        let results: HashMap<&str, &EnvelopeResult> = answer
            .results
            .iter()
            .filter_map(|result| Some((result.event_id.as_deref()?, result)))
            .collect();
        for message in messages {
            match results.get(message.event_id.as_str()) {
                Some(result) if result.status.settles() => {
                    settled.push(message.id);
                    report.delivered += 1;
                }
                Some(result) => {
                    let error = format!(
                        "{destination} failed it: {}",
                        result.reason.as_deref().unwrap_or("no reason given")
                    );
                    self.count_failure(message, &error, report)?;
                }
                None => {
                    let error = format!("{destination} answered without it");
                    self.count_failure(message, &error, report)?;
                }
            }
        }
        Ok(())
    }

    /// Records a failed attempt of `message` in `report`.
    fn count_failure(
        &self,
        message: OutboxMessage,
        error: &str,
        report: &mut PumpReport,
    ) -> Result<(), DbError> {
        match self.record_failure(message, error)? {
            Failure::Retried => report.retried += 1,
            Failure::DeadLettered => report.dead_lettered += 1,
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
            ..
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

    /// The receiver's answer to a delivery to `destination` that was [`Delivery::Sent`],
    /// as the broker brought it back: settled events leave the outbox, failed ones are
    /// failed attempts. An answer about rows that are gone (settled before, or dead)
    /// changes nothing. Returns whether any row was still there.
    pub fn acknowledge(&self, destination: &str, ack: &Acknowledgement) -> Result<bool, DbError> {
        let answer = &ack.answer;
        let event_ids: Vec<&str> = answer
            .results
            .iter()
            .filter_map(|result| result.event_id.as_deref())
            .collect();
        if event_ids.is_empty() {
            return Ok(false);
        }
        let mut params = vec![destination.into()];
        params.extend(event_ids.iter().map(|id| (*id).into()));
        let rows = self.db.query(
            &format!(
                "SELECT {OUTBOX_COLUMNS} FROM {}_outbox WHERE destination = $1 AND event_id IN ({})",
                self.prefix,
                placeholders_from(2, event_ids.len())
            ),
            &params,
        )?;
        if rows.is_empty() {
            return Ok(false);
        }
        let messages = rows
            .iter()
            .map(OutboxMessage::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let (mut settled, mut report) = (Vec::new(), PumpReport::default());
        self.settle(destination, messages, answer, &mut settled, &mut report)?;
        self.delete(&settled)?;
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

    /// Removes settled rows from the outbox, in one statement.
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

    /// Handles a `POST /internal/events` body, a JSON array of envelopes: verifies each
    /// signature, dead-letters what can never apply, and applies the rest with ONE call of
    /// `handler`, in ONE transaction together with their inbox records and the events they
    /// cause, skipping event ids already applied. When the handler fails inside that
    /// transaction, the batch is applied again one event per transaction, so that one bad event does
    /// not hold back the others. Where a transaction cannot read after it wrote (wasmCloud's,
    /// see [`crate::optimistic`]), a batch still applies together when its handler reads
    /// everything first, as [`crate::worker::Worker::apply`] asks; one that reads after a
    /// write fails there and its events are applied one per transaction.
    ///
    /// Answers 200 with a [`DeliveryAnswer`] when every event was settled, 503 with one
    /// when some failed for a reason that may pass (the sender retries those), and 202
    /// when the body is not a batch at all (kept as a dead letter).
    pub fn receive(
        &self,
        body: &[u8],
        mut handler: impl FnMut(&Db, &[&Envelope]) -> Result<(), HandlerError>,
    ) -> Response {
        let items = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Array(items)) => items,
            Ok(_) => {
                return self
                    .reject_delivery(body, "malformed: a delivery is a JSON array of envelopes");
            }
            Err(e) => return self.reject_delivery(body, &format!("malformed: {e}")),
        };
        let secret = self.secret();
        let mut results: Vec<Option<EnvelopeResult>> = vec![None; items.len()];
        let mut valid: Vec<(usize, Envelope)> = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            let raw = item.to_string();
            match serde_json::from_value::<Envelope>(item) {
                Err(e) => {
                    results[index] = Some(self.reject(&raw, None, &format!("malformed: {e}"), "-"));
                }
                Ok(envelope) if envelope.verify(&secret).is_err() => {
                    results[index] = Some(self.reject(
                        &raw,
                        Some(&envelope.id),
                        "bad_signature",
                        &envelope.correlation_id,
                    ));
                }
                Ok(envelope) => valid.push((index, envelope)),
            }
        }
        let together = (valid.len() > 1).then(|| self.apply_together(&valid, &mut handler));
        match together {
            Some(Ok(outcomes)) => {
                for ((index, envelope), outcome) in valid.iter().zip(outcomes) {
                    results[*index] = Some(self.applied(envelope, outcome));
                }
            }
            Some(Err(BatchError::Db(e))) => {
                for (index, envelope) in &valid {
                    results[*index] = Some(self.failed(envelope, &e.to_string()));
                }
            }
            Some(Err(BatchError::Handler)) | None => {
                for (index, envelope) in &valid {
                    results[*index] = Some(self.apply_one(envelope, &mut handler));
                }
            }
        }
        let results: Vec<EnvelopeResult> = results.into_iter().flatten().collect();
        let status = if results.iter().all(|r| r.status.settles()) {
            200
        } else {
            503
        };
        Response::json(status, &DeliveryAnswer { results })
    }

    /// Applies `valid` envelopes in one transaction; each applied one's [`Outcome`] in order.
    fn apply_together(
        &self,
        valid: &[(usize, Envelope)],
        handler: &mut impl FnMut(&Db, &[&Envelope]) -> Result<(), HandlerError>,
    ) -> Result<Vec<Outcome>, BatchError> {
        self.db.client_transaction(self.lock_wait_ms(), |tx| {
            self.take_events_lock(tx)?;
            let ids: Vec<&str> = valid.iter().map(|(_, e)| e.id.as_str()).collect();
            let mut seen: HashSet<String> = tx
                .query_in(
                    &format!(
                        "SELECT event_id FROM {}_inbox WHERE event_id IN",
                        self.prefix
                    ),
                    &ids,
                )?
                .iter()
                .map(|row| row.text("event_id"))
                .collect::<Result<_, _>>()?;
            let mut outcomes = Vec::with_capacity(valid.len());
            let mut fresh: Vec<&Envelope> = Vec::new();
            for (_, envelope) in valid {
                if seen.insert(envelope.id.clone()) {
                    fresh.push(envelope);
                    outcomes.push(Outcome::Processed);
                } else {
                    outcomes.push(Outcome::Duplicate);
                }
            }
            *self.pending.borrow_mut() = Some(Vec::new());
            let handled = if fresh.is_empty() {
                Ok(())
            } else {
                handler(tx, &fresh).map_err(|_| BatchError::Handler)
            };
            let caused = self.pending.borrow_mut().take().unwrap_or_default();
            handled?;
            self.insert_outbox_rows(tx, &caused)?;
            self.record_applied(tx, &fresh)?;
            Ok(outcomes)
        })
    }

    /// On Postgres, makes transaction `tx` the service's only one applying events until it
    /// ends (a transaction-level advisory lock keyed by the service), as SQLite's single
    /// writer does: events of concurrent deliveries touch the same rows (a product, an
    /// account) in any order, and without it their transactions deadlock (each found after
    /// Postgres's 1 s `deadlock_timeout`) or lose serialization conflicts over and over.
    fn take_events_lock(&self, tx: &Db) -> Result<(), DbError> {
        // Where writes are buffered until commit (wasmCloud), no transaction holds a lock.
        if tx.dialect() != crate::ports::Dialect::Postgres || !tx.reads_after_writes() {
            return Ok(());
        }
        tx.query(
            "SELECT 1 AS locked FROM pg_advisory_xact_lock($1)",
            &[events_lock_key(&self.prefix).into()],
        )
        .map(drop)
    }

    /// Applies one envelope in its own transaction.
    fn apply_one(
        &self,
        envelope: &Envelope,
        handler: &mut impl FnMut(&Db, &[&Envelope]) -> Result<(), HandlerError>,
    ) -> EnvelopeResult {
        let outcome = self.db.client_transaction(self.lock_wait_ms(), |tx| {
            self.take_events_lock(tx)?;
            let seen = tx.query_opt(
                &format!(
                    "SELECT event_id FROM {}_inbox WHERE event_id = $1",
                    self.prefix
                ),
                &[envelope.id.as_str().into()],
            )?;
            if seen.is_some() {
                return Ok(Outcome::Duplicate);
            }
            handler(tx, &[envelope])?;
            self.record_applied(tx, &[envelope])?;
            Ok(Outcome::Processed)
        });
        match outcome {
            Ok(outcome) => self.applied(envelope, outcome),
            Err(HandlerError::Permanent(reason)) => self.reject(
                &envelope.to_value().to_string(),
                Some(&envelope.id),
                &reason,
                &envelope.correlation_id,
            ),
            Err(HandlerError::Transient(reason)) => self.failed(envelope, &reason),
        }
    }

    /// Records `envelopes` in the inbox, in one statement.
    fn record_applied(&self, tx: &Db, envelopes: &[&Envelope]) -> Result<(), DbError> {
        if envelopes.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let params: Vec<_> = envelopes
            .iter()
            .flat_map(|e| {
                [
                    e.id.as_str().into(),
                    e.event_type.as_str().into(),
                    now.into(),
                ]
            })
            .collect();
        tx.execute(
            &format!(
                "INSERT INTO {}_inbox (event_id, event_type, processed_at) VALUES {}",
                self.prefix,
                value_rows(envelopes.len(), 3)
            ),
            &params,
        )
    }

    /// The result of an envelope applied now or before, logged.
    fn applied(&self, envelope: &Envelope, outcome: Outcome) -> EnvelopeResult {
        self.logged(envelope, outcome, None)
    }

    /// The result of an envelope not applied for a reason that may pass, logged.
    fn failed(&self, envelope: &Envelope, reason: &str) -> EnvelopeResult {
        self.logged(envelope, Outcome::Failed, Some(reason))
    }

    /// The result `outcome` (with `reason`) for `envelope`, logged: a warning when it failed.
    fn logged(
        &self,
        envelope: &Envelope,
        outcome: Outcome,
        reason: Option<&str>,
    ) -> EnvelopeResult {
        let (level, what) = match outcome {
            Outcome::Processed => (Level::Info, "processed"),
            Outcome::Duplicate => (Level::Info, "duplicate"),
            Outcome::DeadLettered => (Level::Warn, "dead-lettered"),
            Outcome::Failed => (Level::Warn, "failed"),
        };
        let because = reason.map(|r| format!(": {r}")).unwrap_or_default();
        log::write(
            level,
            self.service,
            &envelope.correlation_id,
            &format!("{} {} {what}{because}", envelope.event_type, envelope.id),
        );
        EnvelopeResult {
            event_id: Some(envelope.id.clone()),
            status: outcome,
            reason: reason.map(str::to_owned),
        }
    }

    /// Keeps an envelope that can never apply as a dead letter; its result.
    fn reject(
        &self,
        raw: &str,
        event_id: Option<&str>,
        reason: &str,
        correlation: &str,
    ) -> EnvelopeResult {
        log::write(
            Level::Warn,
            self.service,
            correlation,
            &format!("message rejected to dead letters: {reason}"),
        );
        let recorded = self
            .db
            .transaction(|tx| self.insert_dead_letter(tx, raw, self.service, reason, 1));
        EnvelopeResult {
            event_id: event_id.map(str::to_owned),
            status: if recorded.is_ok() {
                Outcome::DeadLettered
            } else {
                Outcome::Failed
            },
            reason: Some(match recorded {
                Ok(()) => reason.to_owned(),
                Err(e) => format!("could not record dead letter: {e}"),
            }),
        }
    }

    /// Keeps a body that is not a batch of envelopes as a dead letter: 202, or 503 when it
    /// could not be recorded.
    fn reject_delivery(&self, body: &[u8], reason: &str) -> Response {
        let result = self.reject(&String::from_utf8_lossy(body), None, reason, "-");
        let status = if result.status.settles() { 202 } else { 503 };
        Response::json(
            status,
            &DeliveryAnswer {
                results: vec![result],
            },
        )
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

/// Why a batch could not be applied in one transaction.
enum BatchError {
    /// A handler refused or failed one of its events: each is applied on its own instead.
    Handler,
    /// The database failed: no event of the batch was applied.
    Db(DbError),
}

impl From<DbError> for BatchError {
    fn from(e: DbError) -> Self {
        BatchError::Db(e)
    }
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchError::Handler => f.write_str("a handler failed"),
            BatchError::Db(e) => e.fmt(f),
        }
    }
}

impl OutboxMessage {
    /// The envelope as it is delivered: with its attempt count in the (unsigned)
    /// `attempt` field; a row that is not an envelope any more goes as its text (the
    /// receiver dead-letters it).
    fn delivered(&self) -> Value {
        match serde_json::from_str::<Value>(&self.envelope) {
            Ok(mut value) if value.is_object() => {
                value["attempt"] = Value::from(self.attempts);
                value
            }
            _ => Value::String(self.envelope.clone()),
        }
    }
}

/// The first 300 characters of `text`.
fn excerpt(text: &str) -> String {
    text.chars().take(300).collect()
}
