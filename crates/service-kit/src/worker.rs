//! The plumbing every event-driven service shares: the caller's signature checked
//! ([`crate::caller`]), migrations, the internal event, tick and dead-letter routes, and
//! delivering the outbox after each response.

use shop_domain::envelope::Envelope;

use crate::Service;
use crate::caller;
use crate::db::{Db, DbError, Migration, migrate, schema_is_current};
use crate::http::{Request, Response, method_not_allowed, not_found};
use crate::messaging::{Acknowledgement, EVENTS_PATH, HandlerError, Messaging};
use crate::ports::Env;
use crate::stream::Streamed;

/// One event-driven service: its schema, its own routes and its event handler.
pub trait Worker: Default {
    /// The component id, e.g. `stock-checker` (also its messaging table prefix).
    const NAME: &'static str;

    /// The service's own versioned migrations.
    fn migrations() -> Vec<Migration>;

    /// Answers the service's own routes; `None` when no route matches.
    fn route(&self, request: &Request, env: &Env, messaging: &Messaging) -> Option<Response>;

    /// Answers the service's own streaming routes; `None` when no route matches. An
    /// implementation that matches calls [`WorkerService::prepare`] before using the database.
    fn stream(&self, _request: &Request, _env: &Env) -> Option<Streamed> {
        None
    }

    /// Applies verified, not yet applied events, in delivery order, inside transaction
    /// `tx`; events they cause are published through `messaging` in the same transaction.
    /// A batch is applied as a whole or not at all: an implementation reads the rows the
    /// batch needs in a few statements, changes them in memory and writes them in a few,
    /// so that the write lock is held for a handful of host calls whatever the batch's size.
    fn apply(
        &self,
        tx: &Db,
        events: &[&Envelope],
        env: &Env,
        messaging: &Messaging,
    ) -> Result<(), HandlerError>;

    /// Time-driven work (e.g. timeouts), run on every tick.
    fn on_tick(&self, _env: &Env, _messaging: &Messaging) -> Result<(), DbError> {
        Ok(())
    }
}

/// Adapts a [`Worker`] to a [`Service`].
#[derive(Default)]
pub struct WorkerService<W: Worker>(W);

impl<W: Worker> WorkerService<W> {
    /// Brings the service's tables up to date (cheap once they are).
    pub fn prepare(env: &Env) -> Result<(), DbError> {
        let db = Db::new(env.sql);
        let messaging_scope = Messaging::migration_scope(W::NAME);
        let messaging_migrations = Messaging::migrations(W::NAME);
        let own_migrations = W::migrations();
        if schema_is_current(
            &db,
            &[
                (&messaging_scope, &messaging_migrations),
                (W::NAME, &own_migrations),
            ],
        ) {
            return Ok(());
        }
        migrate(&db, &messaging_scope, &messaging_migrations)?;
        migrate(&db, W::NAME, &own_migrations)
    }
}

impl<W: Worker> Service for WorkerService<W> {
    fn name(&self) -> &'static str {
        W::NAME
    }

    fn handle(&self, request: Request, env: &Env) -> Response {
        if let Err(refused) = caller::verify(&request, env.config) {
            return refused;
        }
        if let Err(e) = Self::prepare(env) {
            return unavailable(&e);
        }
        let messaging = Messaging::new(env, W::NAME);
        let segments = request.segments();
        match (request.method.as_str(), segments.as_slice()) {
            ("POST", _) if request.path == EVENTS_PATH => messaging
                .receive(&request.body, |tx, events| {
                    self.0.apply(tx, events, env, &messaging)
                }),
            (_, _) if request.path == EVENTS_PATH => method_not_allowed(),
            ("POST", ["internal", "tick"]) => {
                let ticked = self
                    .0
                    .on_tick(env, &messaging)
                    .and_then(|()| messaging.pump());
                match ticked {
                    Ok(report) => Response::json(200, &report),
                    Err(e) => unavailable(&e),
                }
            }
            ("POST", ["internal", "acks", destination]) => {
                let Ok(ack) = serde_json::from_slice::<Acknowledgement>(&request.body) else {
                    return Response::problem(
                        400,
                        "bad-acknowledgement",
                        "Bad acknowledgement",
                        "expected {\"status\": <number>, \"answer\": <the receiver's answer>}",
                    );
                };
                match messaging.acknowledge(destination, &ack) {
                    Ok(_) => Response::empty(204),
                    Err(e) => unavailable(&e),
                }
            }
            ("GET", ["internal", "dead-letters"]) => match messaging.dead_letters() {
                Ok(list) => Response::json(200, &list),
                Err(e) => unavailable(&e),
            },
            ("POST", ["internal", "dead-letters", id, "retry"]) => {
                match messaging.retry_dead_letter(id) {
                    Ok(true) => Response::json(
                        202,
                        &serde_json::json!({"status": "retrying", "id": format!("{}:{id}", W::NAME)}),
                    ),
                    Ok(false) => not_found(),
                    Err(e) => unavailable(&e),
                }
            }
            _ => self
                .0
                .route(&request, env, &messaging)
                .unwrap_or_else(not_found),
        }
    }

    fn stream(&self, request: &Request, env: &Env) -> Option<Streamed> {
        if let Err(refused) = caller::verify(request, env.config) {
            return Some(Streamed::whole(refused));
        }
        self.0.stream(request, env)
    }

    /// Sends the events this request wrote. Retries and rows whose writer died are left to
    /// the tick's pump: a pump in every instance would have hundreds of instances under load
    /// each take SQLite's write lock to claim the same due rows.
    fn after_response(&self, env: &Env) {
        let _ = Messaging::new(env, W::NAME).send_written();
    }
}

/// 503 for a database failure (the caller may retry). A write lock not had in time
/// ([`DbError::is_busy`]) is load shed ([`Response::overloaded`]).
pub fn unavailable(error: &DbError) -> Response {
    if error.is_busy() {
        return Response::overloaded(
            "more writes are waiting than the database can take; nothing was done",
            SHED_RETRY_AFTER_MS,
        );
    }
    Response::problem(
        503,
        "unavailable",
        "Service unavailable",
        &error.to_string(),
    )
}

/// When a client whose write was shed should try again.
const SHED_RETRY_AFTER_MS: u64 = 250;
