//! Work in flight at the gateway: at most `max_requests_in_flight` API requests are served
//! at once (default [`DEFAULT_MAX_IN_FLIGHT`]; `0` turns the bound off), counted in the
//! key-value store ([`Slots`]). One more is answered 503 `overloaded` at once, before it
//! does any work, saying when to come back: under a flash sale the shop sheds load in a
//! few milliseconds instead of queueing requests for SQLite's write lock (and instances in
//! the host's pool). A store that fails does not stop the shop: the request is served and
//! the failure logged.

use service_kit::http::{Request, Response};
use service_kit::ids::now_ms;
use service_kit::log::{self, Level};
use service_kit::slots::{Slot, Slots};
use service_kit::{Env, settings};

/// The bound when `max_requests_in_flight` is not set.
const DEFAULT_MAX_IN_FLIGHT: i64 = 32;

/// When a shed client should try again. Long against a served request's time on purpose:
/// every refusal still costs an instance and a token check, so at 512 connections clients
/// coming back after 20 ms spent the machine on refusals (the bench served a fifth of what
/// it served at 32); after 500 ms enough come back to keep every slot busy.
const RETRY_AFTER_MS: u64 = 500;

/// The gateway's API requests in flight, counted in `env`'s key-value store.
fn requests<'a>(env: &Env<'a>) -> Slots<'a> {
    Slots::new(
        env.kv,
        "requests",
        settings::number(env.config, "max_requests_in_flight", DEFAULT_MAX_IN_FLIGHT),
    )
}

/// A slot for `request` (hold it until the response is sent, then give it back to
/// `env.kv` with [`Slot::release`]), `None`
/// when the store failed, or the 503 answer when every slot is taken.
pub fn admit(request: &Request, env: &Env) -> Result<Option<Slot>, Response> {
    match requests(env).take(now_ms()) {
        Ok(Some(slot)) => Ok(Some(slot)),
        Ok(None) => Err(Response::overloaded(
            "the shop is serving as many requests as it can; nothing was done",
            RETRY_AFTER_MS,
        )),
        Err(e) => {
            log::write(
                Level::Warn,
                "gateway",
                request.correlation_id().unwrap_or("-"),
                &format!("requests in flight not counted: {e}"),
            );
            Ok(None)
        }
    }
}
