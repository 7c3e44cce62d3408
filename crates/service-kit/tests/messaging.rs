//! The messaging core against a real SQLite file (rusqlite), with two services wired by an
//! in-process transport that hands each batch to the receiving service's `receive`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

mod support;

use serde_json::{Value, json};
use service_kit::db::{Db, DbError, migrate};
use service_kit::http::Response;
use service_kit::messaging::{
    Acknowledgement, DeliveryAnswer, EnvelopeResult, HandlerError, Messaging, Outcome,
};
use service_kit::ports::{OutboundRequest, ResponseStream};
use service_kit::{Config, Delivery, Env, KeyValue, PortError, Services, Transport};
use shop_domain::envelope::Envelope;
use support::Sqlite;

struct Settings(HashMap<&'static str, &'static str>);

impl Config for Settings {
    fn get(&self, key: &str) -> Result<Option<String>, PortError> {
        Ok(self.0.get(key).map(|v| (*v).to_owned()))
    }
}

/// Hands every delivery to the receiver's `receive`: applies events by recording their
/// ids (and the size of each batch), fails while `failures` is above zero, and refuses
/// for good the events whose subject is `refused`.
struct Receiver<'a> {
    env: Env<'a>,
    failures: Cell<u32>,
    applied: RefCell<Vec<String>>,
    batches: RefCell<Vec<usize>>,
}

impl Receiver<'_> {
    /// The receiver's answer to `batch`.
    fn answer(&self, batch: &[u8]) -> service_kit::http::Response {
        let messaging = Messaging::new(&self.env, "receiver");
        let size = serde_json::from_slice::<Vec<Value>>(batch).map_or(0, |b| b.len());
        self.batches.borrow_mut().push(size);
        messaging.receive(batch, |tx, events| {
            for event in events {
                if self.failures.get() > 0 {
                    self.failures.set(self.failures.get() - 1);
                    return Err(HandlerError::Transient("injected".into()));
                }
                if event.subject == "refused" {
                    return Err(HandlerError::Permanent("refused".into()));
                }
                tx.execute(
                    "INSERT INTO applied (event_id) VALUES ($1)",
                    &[event.id.as_str().into()],
                )?;
                self.applied.borrow_mut().push(event.id.clone());
            }
            Ok(())
        })
    }
}

impl Transport for Receiver<'_> {
    fn deliver(
        &self,
        destination: &str,
        batch: Vec<u8>,
        _correlation_id: &str,
    ) -> Result<Delivery, String> {
        assert_eq!(destination, "receiver");
        Ok(Delivery::Answered(self.answer(&batch)))
    }
}

/// Publishes an `order.placed` event about `subject` to `receiver`, in a transaction of its own.
fn publish_placed(messaging: &Messaging, db: &Db, subject: &str) -> Envelope {
    db.transaction(|tx| {
        messaging.publish(tx, "order.placed", subject, "c1", json!({}), &["receiver"])
    })
    .unwrap()
}

/// One delivery of `envelopes`, as a sender encodes it.
fn batch_of(envelopes: &[&Envelope]) -> Vec<u8> {
    serde_json::to_vec(envelopes).unwrap()
}

/// The per-envelope results of a receiver's answer.
fn results(response: &service_kit::http::Response) -> Vec<EnvelopeResult> {
    serde_json::from_slice::<DeliveryAnswer>(&response.body)
        .unwrap()
        .results
}

fn open(dir: &tempfile::TempDir, service: &str) -> Sqlite {
    let sql = Sqlite(rusqlite::Connection::open(dir.path().join("db.sqlite")).unwrap());
    let db = Db::new(&sql);
    migrate(
        &db,
        &Messaging::migration_scope(service),
        &Messaging::migrations(service),
    )
    .unwrap();
    // Running it again changes nothing.
    migrate(
        &db,
        &Messaging::migration_scope(service),
        &Messaging::migrations(service),
    )
    .unwrap();
    db.execute(
        "CREATE TABLE IF NOT EXISTS applied (event_id TEXT PRIMARY KEY)",
        &[],
    )
    .unwrap();
    sql
}

fn settings() -> Settings {
    Settings(HashMap::from([
        ("retry_max_attempts", "3"),
        ("retry_base_delay_ms", "0"),
        ("retry_max_delay_ms", "0"),
    ]))
}

fn count(sql: &Sqlite, table: &str) -> i64 {
    Db::new(sql)
        .query_opt(&format!("SELECT COUNT(*) AS n FROM {table}"), &[])
        .unwrap()
        .unwrap()
        .i64("n")
        .unwrap()
}

/// A sender's messaging wired to a receiver on the same database file.
struct Wiring<'a> {
    messaging: &'a Messaging<'a>,
    db: &'a Db<'a>,
    receiver: &'a Receiver<'a>,
    sender_sql: &'a Sqlite,
    receiver_sql: &'a Sqlite,
    /// The database file both use.
    file: std::path::PathBuf,
}

/// Runs `test` with a sender wired to a receiver that fails its first `failures` deliveries.
fn with_wiring(failures: u32, test: impl FnOnce(Wiring)) {
    let dir = tempfile::tempdir().unwrap();
    let (sender_sql, receiver_sql) = (open(&dir, "sender"), open(&dir, "receiver"));
    let config = settings();
    let receiver = Receiver {
        env: env_of(&receiver_sql, &config, &Nowhere),
        failures: Cell::new(failures),
        applied: RefCell::new(Vec::new()),
        batches: RefCell::new(Vec::new()),
    };
    let env = env_of(&sender_sql, &config, &receiver);
    let messaging = Messaging::new(&env, "sender");
    let db = Db::new(&sender_sql);
    test(Wiring {
        messaging: &messaging,
        db: &db,
        receiver: &receiver,
        sender_sql: &sender_sql,
        receiver_sql: &receiver_sql,
        file: dir.path().join("db.sqlite"),
    });
}

/// The ports of a service on `sql` that sends events through `transport` and nothing else.
fn env_of<'a>(sql: &'a Sqlite, config: &'a Settings, transport: &'a dyn Transport) -> Env<'a> {
    Env {
        sql,
        services: &NoNetwork,
        config,
        transport,
        kv: &NoNetwork,
    }
}

#[test]
fn events_exist_exactly_when_their_transaction_commits_and_are_applied_once() {
    with_wiring(
        0,
        |Wiring {
             messaging,
             db,
             receiver,
             sender_sql,
             receiver_sql,
             ..
         }| {
            let rolled_back: Result<(), DbError> = db.transaction(|tx| {
                messaging.publish(
                    tx,
                    "order.placed",
                    "o1",
                    "c1",
                    json!({"n": 1}),
                    &["receiver"],
                )?;
                Err(DbError("the state change failed".into()))
            });
            assert!(rolled_back.is_err());
            assert_eq!(
                count(sender_sql, "sender_outbox"),
                0,
                "no event without its state change"
            );

            let envelope = db
                .transaction(|tx| {
                    messaging.publish(
                        tx,
                        "order.placed",
                        "o1",
                        "c1",
                        json!({"n": 1}),
                        &["receiver"],
                    )
                })
                .unwrap();
            assert_eq!(count(sender_sql, "sender_outbox"), 1);
            let report = messaging.send_written().unwrap();
            assert_eq!(report.delivered, 1, "the rolled-back row is not there");
            assert_eq!(
                messaging.send_written().unwrap(),
                Default::default(),
                "a request that wrote nothing sends nothing"
            );
            assert_eq!(
                messaging.pump().unwrap(),
                Default::default(),
                "nothing left to pump"
            );
            assert_eq!(count(sender_sql, "sender_outbox"), 0);
            assert_eq!(*receiver.applied.borrow(), vec![envelope.id.clone()]);

            // The same event again is recognised and not applied twice.
            let again = receiver.answer(&batch_of(&[&envelope]));
            assert_eq!(again.status, 200);
            assert_eq!(results(&again)[0].status, Outcome::Duplicate);
            assert_eq!(receiver.applied.borrow().len(), 1);
            assert_eq!(count(receiver_sql, "receiver_inbox"), 1);
        },
    );
}

#[test]
fn failures_are_retried_then_dead_lettered_and_an_admin_retry_delivers() {
    with_wiring(
        5,
        |Wiring {
             messaging,
             db,
             receiver,
             sender_sql,
             ..
         }| {
            publish_placed(messaging, db, "o1");

            assert_eq!(messaging.send_written().unwrap().retried, 1);
            assert_eq!(messaging.pump().unwrap().retried, 1);
            assert_eq!(
                messaging.pump().unwrap().dead_lettered,
                1,
                "the third attempt is the last"
            );
            let dead = messaging.dead_letters().unwrap();
            assert_eq!(dead.len(), 1);
            assert_eq!(dead[0].attempts, 3);
            assert!(
                dead[0].reason.contains("receiver failed it: injected"),
                "{}",
                dead[0].reason
            );
            assert_eq!(count(sender_sql, "sender_outbox"), 0);

            receiver.failures.set(0);
            let local_id = dead[0].id.strip_prefix("sender:").unwrap();
            assert!(messaging.retry_dead_letter(local_id).unwrap());
            assert!(
                !messaging.retry_dead_letter(local_id).unwrap(),
                "gone from the dead letters"
            );
            assert_eq!(messaging.pump().unwrap().delivered, 1);
            assert_eq!(receiver.applied.borrow().len(), 1);
            assert!(messaging.dead_letters().unwrap().is_empty());
        },
    );
}

#[test]
fn a_bad_signature_or_garbage_is_dead_lettered_by_the_receiver_and_never_applied() {
    let dir = tempfile::tempdir().unwrap();
    let receiver_sql = open(&dir, "receiver");
    let config = settings();
    let env = env_of(&receiver_sql, &config, &Nowhere);
    let messaging = Messaging::new(&env, "receiver");
    let forged =
        shop_domain::envelope::Envelope::new("e1", "order.placed", "o1", "t", "c", json!({}))
            .signed(b"wrong");
    let answer = messaging.receive(&batch_of(&[&forged]), |_, _| {
        panic!("a forged event must not be applied")
    });
    assert_eq!(answer.status, 200, "settled: nothing to send again");
    assert_eq!(
        results(&answer),
        vec![EnvelopeResult {
            event_id: Some("e1".into()),
            status: Outcome::DeadLettered,
            reason: Some("bad_signature".into()),
        }]
    );
    let answer = messaging.receive(b"{not json", |_, _| panic!("garbage must not be applied"));
    assert_eq!(answer.status, 202);
    let reasons: Vec<String> = messaging
        .dead_letters()
        .unwrap()
        .into_iter()
        .map(|d| d.reason)
        .collect();
    assert_eq!(reasons.len(), 2);
    assert!(reasons.iter().any(|r| r == "bad_signature"));
    assert!(reasons.iter().any(|r| r.starts_with("malformed")));
    assert_eq!(count(&receiver_sql, "receiver_inbox"), 0);
}

/// A transport for services that must not send events.
struct Nowhere;

impl Transport for Nowhere {
    fn deliver(
        &self,
        destination: &str,
        _batch: Vec<u8>,
        _correlation_id: &str,
    ) -> Result<Delivery, String> {
        Err(format!("unexpected event for {destination}"))
    }
}

/// A client for services that must not send anything.
struct NoNetwork;

impl Services for NoNetwork {
    fn call(&self, service: &str, request: OutboundRequest) -> Result<Response, PortError> {
        Err(PortError(format!(
            "unexpected call to {service}{}",
            request.url
        )))
    }

    fn open(
        &self,
        service: &str,
        request: OutboundRequest,
    ) -> Result<Box<dyn ResponseStream>, PortError> {
        Err(PortError(format!(
            "unexpected call to {service}{}",
            request.url
        )))
    }
}

impl KeyValue for NoNetwork {
    fn increment(&self, key: &str, _delta: i64) -> Result<i64, PortError> {
        Err(PortError(format!("unexpected key-value use of {key}")))
    }

    fn delete(&self, key: &str) -> Result<(), PortError> {
        Err(PortError(format!("unexpected key-value use of {key}")))
    }
}

/// A broker: takes every batch without an answer and remembers the event ids it got.
#[derive(Default)]
struct Broker {
    sent: RefCell<Vec<String>>,
}

impl Transport for Broker {
    fn deliver(
        &self,
        _destination: &str,
        batch: Vec<u8>,
        _correlation_id: &str,
    ) -> Result<Delivery, String> {
        let batch: Vec<Envelope> = serde_json::from_slice(&batch).unwrap();
        self.sent
            .borrow_mut()
            .extend(batch.into_iter().map(|envelope| envelope.id));
        Ok(Delivery::Sent)
    }
}

/// The acknowledgement a receiver sends for event `event_id` with `status`.
fn ack(event_id: &str, status: Outcome) -> Acknowledgement {
    let results = vec![EnvelopeResult {
        event_id: Some(event_id.to_owned()),
        status,
        reason: (status == Outcome::Failed).then(|| "busy".to_owned()),
    }];
    Acknowledgement {
        status: if status == Outcome::Failed { 503 } else { 200 },
        answer: DeliveryAnswer { results },
    }
}

#[test]
fn a_sent_event_stays_in_the_outbox_until_its_acknowledgement() {
    let dir = tempfile::tempdir().unwrap();
    let sql = open(&dir, "sender");
    let config = settings();
    let broker = Broker::default();
    let env = env_of(&sql, &config, &broker);
    let messaging = Messaging::new(&env, "sender");
    let db = Db::new(&sql);
    for order in ["o1", "o2"] {
        publish_placed(&messaging, &db, order);
    }
    let report = messaging.send_written().unwrap();
    assert_eq!((report.sent, report.delivered), (2, 0));
    assert_eq!(broker.sent.borrow().len(), 2, "one batch of both");
    assert_eq!(
        count(&sql, "sender_outbox"),
        2,
        "nothing is gone before its acknowledgement"
    );

    let sent = broker.sent.borrow().clone();
    assert!(
        messaging
            .acknowledge("receiver", &ack(&sent[0], Outcome::Processed))
            .unwrap()
    );
    assert_eq!(count(&sql, "sender_outbox"), 1);
    assert!(
        !messaging
            .acknowledge("receiver", &ack(&sent[0], Outcome::Processed))
            .unwrap(),
        "a second acknowledgement changes nothing"
    );
    assert!(
        !messaging
            .acknowledge("elsewhere", &ack(&sent[1], Outcome::Processed))
            .unwrap(),
        "an acknowledgement from another destination does not settle the row"
    );

    // A failed outcome is a failed attempt: retried with backoff, then a dead letter.
    for _ in 0..3 {
        messaging
            .acknowledge("receiver", &ack(&sent[1], Outcome::Failed))
            .unwrap();
        db.execute("UPDATE sender_outbox SET attempts = attempts + 1", &[])
            .unwrap();
    }
    assert_eq!(count(&sql, "sender_outbox"), 0);
    let dead = messaging.dead_letters().unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].reason.contains("receiver failed it: busy"),
        "{dead:?}"
    );
}

#[test]
fn events_written_by_several_requests_go_in_one_batch_applied_in_one_transaction() {
    with_wiring(
        0,
        |Wiring {
             messaging,
             db,
             receiver,
             sender_sql,
             receiver_sql,
             ..
         }| {
            for order in ["o1", "o2", "o3"] {
                publish_placed(messaging, db, order);
            }
            let report = messaging.send_written().unwrap();
            assert_eq!(report.delivered, 3);
            assert_eq!(
                *receiver.batches.borrow(),
                vec![3],
                "one delivery of all three"
            );
            assert_eq!(count(sender_sql, "sender_outbox"), 0);
            assert_eq!(count(receiver_sql, "receiver_inbox"), 3);
            assert_eq!(count(receiver_sql, "applied"), 3);
        },
    );
}

#[test]
fn a_batch_answers_per_envelope_and_one_refused_event_does_not_hold_back_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let receiver_sql = open(&dir, "receiver");
    let config = settings();
    let receiver = Receiver {
        env: env_of(&receiver_sql, &config, &Nowhere),
        failures: Cell::new(0),
        applied: RefCell::new(Vec::new()),
        batches: RefCell::new(Vec::new()),
    };
    let secret = service_kit::settings::event_secret(&config);
    let event = |id: &str, subject: &str| {
        Envelope::new(id, "order.placed", subject, "t", "c", json!({})).signed(&secret)
    };
    let (first, refused, last) = (event("e1", "o1"), event("e2", "refused"), event("e3", "o3"));
    let forged = Envelope::new("e4", "order.placed", "o4", "t", "c", json!({})).signed(b"wrong");

    let answer = receiver.answer(&batch_of(&[&first, &refused, &forged, &last, &first]));
    assert_eq!(answer.status, 200, "every envelope settled");
    let outcomes: Vec<(Option<String>, Outcome)> = results(&answer)
        .into_iter()
        .map(|r| (r.event_id, r.status))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (Some("e1".into()), Outcome::Processed),
            (Some("e2".into()), Outcome::DeadLettered),
            (Some("e4".into()), Outcome::DeadLettered),
            (Some("e3".into()), Outcome::Processed),
            (Some("e1".into()), Outcome::Duplicate),
        ],
        "in the batch's order; a repeat inside the batch is a duplicate"
    );
    assert_eq!(count(&receiver_sql, "applied"), 2, "e1 and e3, once each");
    assert_eq!(count(&receiver_sql, "receiver_inbox"), 2);
    let reasons: Vec<String> = Messaging::new(&receiver.env, "receiver")
        .dead_letters()
        .unwrap()
        .into_iter()
        .map(|d| d.reason)
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "refused"));
    assert!(reasons.iter().any(|r| r == "bad_signature"));

    // A transient failure fails only its own envelope (the first failure is the batch's
    // transaction, the second e5's own); the sender retries that one.
    receiver.failures.set(2);
    let again = receiver.answer(&batch_of(&[&event("e5", "o5"), &event("e6", "o6")]));
    assert_eq!(again.status, 503);
    let statuses: Vec<Outcome> = results(&again).into_iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![Outcome::Failed, Outcome::Processed]);
}

#[test]
fn a_writer_leaves_its_events_to_the_next_sender_when_the_outbox_lock_is_taken() {
    with_wiring(
        0,
        |Wiring {
             messaging,
             db,
             receiver,
             sender_sql,
             file,
             ..
         }| {
            publish_placed(messaging, db, "o1");
            let other = rusqlite::Connection::open(file).unwrap();
            other.execute_batch("BEGIN IMMEDIATE").unwrap();
            let started = std::time::Instant::now();
            assert_eq!(
                messaging.send_written().unwrap(),
                Default::default(),
                "another writer holds the lock: nothing claimed, nothing waited for"
            );
            assert!(started.elapsed() < std::time::Duration::from_secs(1));
            assert_eq!(count(sender_sql, "sender_outbox"), 1, "still due");
            other.execute_batch("COMMIT").unwrap();
            assert_eq!(messaging.pump().unwrap().delivered, 1, "the timer sends it");
            assert_eq!(receiver.applied.borrow().len(), 1);
        },
    );
}

/// The `Sql` port of a [`Sqlite`] that keeps the text of every statement it ran.
struct Recording<'a> {
    sql: &'a Sqlite,
    statements: RefCell<Vec<String>>,
}

impl service_kit::Sql for Recording<'_> {
    fn execute(
        &self,
        statement: &str,
        params: &[service_kit::SqlValue],
    ) -> Result<service_kit::ports::Rows, PortError> {
        self.statements.borrow_mut().push(statement.to_owned());
        self.sql.execute(statement, params)
    }
}

#[test]
fn the_events_a_batch_causes_are_written_in_one_statement_before_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let receiver_sql = open(&dir, "receiver");
    let recording = Recording {
        sql: &receiver_sql,
        statements: RefCell::new(Vec::new()),
    };
    let config = settings();
    let env = Env {
        sql: &recording,
        services: &NoNetwork,
        config: &config,
        transport: &Nowhere,
        kv: &NoNetwork,
    };
    let messaging = Messaging::new(&env, "receiver");
    let secret = service_kit::settings::event_secret(&config);
    let event =
        |id: &str| Envelope::new(id, "order.placed", id, "t", "c", json!({})).signed(&secret);
    let fails = Cell::new(false);
    let mut answer_each = |tx: &Db, events: &[&Envelope]| {
        for event in events {
            if fails.get() && event.id == "e5" {
                return Err(HandlerError::Transient("injected".into()));
            }
            let reply = service_kit::messaging::Reply {
                event_type: "stock.held",
                data: json!({"order_id": event.subject}),
            };
            messaging.reply(tx, event, &event.subject, reply, "sender")?;
        }
        Ok(())
    };

    let batch = [event("e1"), event("e2"), event("e3")];
    let answer = messaging.receive(
        &batch_of(&batch.iter().collect::<Vec<_>>()),
        &mut answer_each,
    );
    assert_eq!(answer.status, 200);
    let outbox_inserts: Vec<String> = recording
        .statements
        .borrow()
        .iter()
        .filter(|s| s.starts_with("INSERT INTO receiver_outbox"))
        .cloned()
        .collect();
    assert_eq!(outbox_inserts.len(), 1, "{outbox_inserts:?}");
    let statements = recording.statements.borrow().clone();
    let commit = statements.iter().rposition(|s| s == "COMMIT").unwrap();
    let insert = statements
        .iter()
        .position(|s| s.starts_with("INSERT INTO receiver_outbox"))
        .unwrap();
    assert!(insert < commit, "inside the batch's transaction");
    assert_eq!(count(&receiver_sql, "receiver_outbox"), 3, "one reply each");

    // A batch that fails part-way is applied one event per transaction: the replies of
    // the events that apply are written once, the failed one's not at all.
    fails.set(true);
    let answer = messaging.receive(&batch_of(&[&event("e4"), &event("e5")]), &mut answer_each);
    assert_eq!(answer.status, 503);
    assert_eq!(
        count(&receiver_sql, "receiver_outbox"),
        4,
        "e4's reply only"
    );
}
