//! The gateway: the only public HTTP entry. It authenticates every call but `/healthz`,
//! validates input at the edge, gives every request a correlation id (echoed in
//! `X-Correlation-Id`), and forwards to the service that owns the data.

mod auth;
mod routes;

use service_kit::Env;
use service_kit::Service;
use service_kit::http::{CORRELATION_HEADER, Request, Response};
use service_kit::ids::new_id;

/// The gateway service.
#[derive(Default)]
pub struct Gateway;

spin_host::export_service!(Gateway);

impl Service for Gateway {
    fn handle(&self, mut request: Request, env: &Env) -> Response {
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
        let mut response = routes::route(&request, env);
        response
            .headers
            .retain(|(name, _)| name != CORRELATION_HEADER);
        response.with_header(CORRELATION_HEADER, &correlation_id)
    }
}

/// A correlation id a client may choose: 1 to 128 visible ASCII characters.
fn valid_correlation_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}
