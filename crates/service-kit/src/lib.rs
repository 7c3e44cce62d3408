//! What every shop service shares, whatever host runs it.
//!
//! A service is a [`Service`]: it gets a host-neutral [`http::Request`] and an [`Env`] of
//! ports to the host's capabilities (SQL, outbound HTTP, configuration) and answers a
//! [`http::Response`]. Each host binds the ports once (see the `spin-host` crate); the
//! services never touch host bindings themselves.
#![deny(missing_docs)]

pub mod caller;
pub mod db;
pub mod http;
pub mod ids;
pub mod log;
pub mod messaging;
pub mod optimistic;
pub mod ports;
pub mod settings;
pub mod slots;
pub mod sql_text;
pub mod stream;
pub mod worker;

pub use ports::{
    Config, Delivery, Env, HttpClient, KeyValue, PortError, Services, Sql, SqlValue, Transport,
};

/// A shop service: one component's request handling, written against ports only.
pub trait Service {
    /// The component id, e.g. `orders` (the `service` of its log lines).
    fn name(&self) -> &'static str;

    /// Answers one request.
    fn handle(&self, request: http::Request, env: &Env) -> http::Response;

    /// Answers a streaming route (Server-Sent Events); `None` when `request` is not one,
    /// and then the host calls [`Service::handle`].
    fn stream(&self, _request: &http::Request, _env: &Env) -> Option<stream::Streamed> {
        None
    }

    /// Work done after the response has been sent (e.g. delivering the outbox), so that
    /// callers do not wait for it.
    fn after_response(&self, _env: &Env) {}
}
