//! Live order tracking: every status change as a Server-Sent Event (`event: status`, `id:`
//! the change's global sequence, `data:` the order as it was then), read from the history
//! table by polling. Each poll first numbers the changes committed since the last one
//! ([`queries::assign_event_ids`]), so ids follow visibility and resuming misses nothing.
//!
//! - `GET /orders/{id}/events` (the owner or staff) starts with the current state, or with
//!   the changes after `Last-Event-ID`, and ends after a terminal status.
//! - `GET /orders/events` (staff) follows all orders; without `Last-Event-ID` it starts with
//!   the last [`STAFF_REPLAY`] changes.
//!
//! A comment line (`: keep-alive`) goes out after `stream_heartbeat_ms` without events, and
//! a stream ends after `stream_max_ms` (the client reconnects with `Last-Event-ID`), so no
//! instance is held forever.

use std::time::Duration;

use serde_json::Value;
use service_kit::db::{Db, DbError};
use service_kit::http::{Request, Response};
use service_kit::ids::now_ms;
use service_kit::stream::{BodyStream, ChunkSink, Streamed, sse_comment, sse_event};
use service_kit::worker::{WorkerService, unavailable};
use service_kit::{Env, settings};
use shop_domain::order::OrderStatus;

use crate::db::queries::{self, StatusEvent};
use crate::{Caller, Orders, forbidden, order_not_found};

/// How many past changes the staff stream starts with.
pub const STAFF_REPLAY: i64 = 100;
/// How many changes one poll reads at most.
const POLL_BATCH: i64 = 100;

/// The streaming routes of orders.
pub fn stream(request: &Request, env: &Env) -> Option<Streamed> {
    let segments = request.segments();
    let order_id = match (request.method.as_str(), segments.as_slice()) {
        ("GET", ["orders", "events"]) => None,
        ("GET", ["orders", id, "events"]) => Some((*id).to_owned()),
        _ => return None,
    };
    Some(open(request, env, order_id).unwrap_or_else(Streamed::whole))
}

fn open(request: &Request, env: &Env, order_id: Option<String>) -> Result<Streamed, Response> {
    WorkerService::<Orders>::prepare(env).map_err(|e| unavailable(&e))?;
    let caller = Caller::of(request);
    match &order_id {
        None if !caller.staff => {
            return Err(Response::problem(
                403,
                "forbidden",
                "Forbidden",
                "only staff may follow all orders",
            ));
        }
        None => {}
        Some(id) => {
            let order = queries::load(&Db::new(env.sql), id)
                .map_err(|e| unavailable(&e))?
                .ok_or_else(|| order_not_found(id))?;
            if !caller.may_see(&order) {
                return Err(forbidden());
            }
        }
    }
    let resume_after = match request.header("last-event-id").map(str::trim) {
        None | Some("") => None,
        Some(id) => Some(
            id.parse::<i64>()
                .ok()
                .filter(|id| *id >= 0)
                .ok_or_else(|| {
                    Response::problem(
                        400,
                        "invalid-last-event-id",
                        "Invalid Last-Event-ID",
                        "Last-Event-ID must be an event id this stream sent",
                    )
                })?,
        ),
    };
    Ok(Streamed::events(Box::new(LiveEvents {
        order_id,
        resume_after,
        poll: Duration::from_millis(settings::number(env.config, "stream_poll_ms", 250)),
        heartbeat_ms: settings::number(env.config, "stream_heartbeat_ms", 15_000),
        max_ms: settings::number(env.config, "stream_max_ms", 300_000),
    })))
}

/// One open stream.
struct LiveEvents {
    order_id: Option<String>,
    resume_after: Option<i64>,
    poll: Duration,
    heartbeat_ms: i64,
    max_ms: i64,
}

/// Why a stream stops early.
enum Stop {
    /// The client went away.
    Gone,
    /// The database failed; the client reconnects and resumes.
    Failed(DbError),
}

impl BodyStream for LiveEvents {
    fn run(self: Box<Self>, env: &Env, sink: &mut dyn ChunkSink) {
        if let Err(Stop::Failed(e)) = self.follow(&Db::new(env.sql), sink) {
            let _ = sink.send(&sse_comment(&format!("stopped: {e}")));
        }
    }
}

impl LiveEvents {
    fn follow(&self, db: &Db, sink: &mut dyn ChunkSink) -> Result<(), Stop> {
        let started = now_ms();
        let mut last = match self.resume_after {
            Some(id) => id,
            None => match self.start(db, sink)? {
                Some(id) => id,
                None => return Ok(()),
            },
        };
        let mut quiet_since = now_ms();
        loop {
            queries::assign_event_ids(db).map_err(Stop::Failed)?;
            let events = queries::events_after(db, self.order_id.as_deref(), last, POLL_BATCH)
                .map_err(Stop::Failed)?;
            for event in &events {
                let terminal = send(db, sink, event)?;
                last = event.event_id;
                if terminal && self.order_id.is_some() {
                    return Ok(());
                }
            }
            let now = now_ms();
            if !events.is_empty() {
                quiet_since = now;
            } else if now - quiet_since >= self.heartbeat_ms {
                sink.send(&sse_comment("keep-alive"))
                    .map_err(|_| Stop::Gone)?;
                quiet_since = now;
            }
            if now - started >= self.max_ms {
                return Ok(());
            }
            if events.len() < usize::try_from(POLL_BATCH).unwrap_or(usize::MAX) {
                db.release();
                std::thread::sleep(self.poll);
            }
        }
    }

    /// Sends where a new stream starts; returns the id to follow from, or `None` when a
    /// single order is already terminal (the stream is complete).
    fn start(&self, db: &Db, sink: &mut dyn ChunkSink) -> Result<Option<i64>, Stop> {
        queries::assign_event_ids(db).map_err(Stop::Failed)?;
        let latest = queries::latest_event(db, self.order_id.as_deref()).map_err(Stop::Failed)?;
        match (&self.order_id, latest) {
            (Some(_), Some(current)) => {
                let terminal = send(db, sink, &current)?;
                Ok((!terminal).then_some(current.event_id))
            }
            (_, None) => Ok(Some(0)),
            (None, Some(head)) => Ok(Some((head.event_id - STAFF_REPLAY).max(0))),
        }
    }
}

/// Sends one change; true when it is a terminal status.
fn send(db: &Db, sink: &mut dyn ChunkSink, event: &StatusEvent) -> Result<bool, Stop> {
    let order = queries::load(db, &event.order_id)
        .map_err(Stop::Failed)?
        .ok_or_else(|| Stop::Failed(DbError(format!("order {} vanished", event.order_id))))?;
    let view = queries::view_as_of(db, &order, event.seq).map_err(Stop::Failed)?;
    let data = serde_json::to_value(&view)
        .unwrap_or(Value::Null)
        .to_string();
    sink.send(&sse_event("status", event.event_id, &data))
        .map_err(|_| Stop::Gone)?;
    Ok(OrderStatus::parse(view.status).is_some_and(OrderStatus::is_terminal))
}
