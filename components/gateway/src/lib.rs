//! The gateway: the only public HTTP entry. It authenticates every API call, validates
//! input at the edge, gives every request a correlation id (echoed in `X-Correlation-Id`),
//! limits each caller's request rate, and forwards to the service that owns the data.
//! `/healthz` and the browser dashboards (`/`, `/customer`, `/staff`, `/admin`, `/assets/*`)
//! need no token.

mod admission;
mod auth;
mod rate_limit;
mod routes;
mod web;

use std::cell::RefCell;

use service_kit::Env;
use service_kit::Service;
use service_kit::http::{CORRELATION_HEADER, Request, Response};
use service_kit::ids::new_id;
use service_kit::slots::Slot;
use service_kit::stream::Streamed;

/// The gateway service, for one request.
#[derive(Default)]
pub struct Gateway {
    /// The slot of the requests in flight this request holds ([`admission`]).
    in_flight: RefCell<Option<Slot>>,
}

host_bindings::export_gateway!(Gateway);

impl Service for Gateway {
    fn name(&self) -> &'static str {
        "gateway"
    }

    fn handle(&self, request: Request, env: &Env) -> Response {
        let (request, correlation_id) = with_correlation_id(request);
        let mut response = routes::route(&request, env, &self.in_flight);
        response
            .headers
            .retain(|(name, _)| name != CORRELATION_HEADER);
        response.with_header(CORRELATION_HEADER, &correlation_id)
    }

    fn stream(&self, request: &Request, env: &Env) -> Option<Streamed> {
        let feed = routes::feed(request)?;
        let (request, correlation_id) = with_correlation_id(request.clone());
        let mut streamed = routes::stream(&request, env, feed);
        streamed
            .headers
            .retain(|(name, _)| name != CORRELATION_HEADER);
        Some(streamed.with_header(CORRELATION_HEADER, &correlation_id))
    }

    /// The request is no longer in flight; the services it called deliver what the calls
    /// wrote, now that the client has its answer.
    fn after_response(&self, env: &Env) {
        if let Some(slot) = self.in_flight.take() {
            slot.release(env.kv);
        }
        env.services.finish();
    }
}

/// The request with its correlation id (the client's if valid, else a new one) set.
fn with_correlation_id(mut request: Request) -> (Request, String) {
    let correlation_id = match request.correlation_id() {
        Some(id) if valid_correlation_id(id) => id.to_owned(),
        _ => new_id("cor"),
    };
    request
        .headers
        .retain(|(name, _)| name != CORRELATION_HEADER);
    request
        .headers
        .push((CORRELATION_HEADER.into(), correlation_id.clone()));
    (request, correlation_id)
}

/// A correlation id a client may choose: 1 to 128 visible ASCII characters.
fn valid_correlation_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}
