//! Spin 4.x: variables through `wasi:config`, SQLite or Postgres, and the services composed
//! into the gateway: the gateway's calls are function calls into them, and the gateway
//! relays the events they write between them (see [`composed`]), all in one instance.
//! The services' own HTTP handlers (private components, reached by local service chaining)
//! serve what a function cannot: the live event streams.

mod composed;
mod config;
mod kv;
mod sql;
mod transport;

use service_kit::{Env, Service, Services};

use crate::bindings::wasi::http::types::{IncomingRequest, ResponseOutparam};
use crate::http::HttpServices;
pub use transport::Taken;

/// How services address each other on Spin: local service chaining.
pub fn service_url(component: &str) -> String {
    format!("http://{component}.spin.internal")
}

/// Runs `work` with the ports bound to Spin for service `S`, calling other services
/// through `services`; events go to the relay ([`transport::RelayTransport`]).
fn with_env<S: Service, T>(
    service: &S,
    services: &dyn Services,
    work: impl FnOnce(&Env) -> T,
) -> T {
    let sql = sql::SpinSql::from_config(&config::SpinConfig, service.name());
    let kv = kv::SpinKeyValue::default();
    let env = Env {
        sql: &sql,
        services,
        config: &config::SpinConfig,
        transport: &transport::RelayTransport,
        kv: &kv,
    };
    work(&env)
}

/// Serves one request to service `S`'s own HTTP handler (a private component on Spin). No
/// after-response work: nothing here relays events, so what the request wrote stays due
/// in the outbox for the gateway's next relay or tick.
pub fn serve<S: Service + Default>(request: IncomingRequest, out: ResponseOutparam) {
    let service = S::default();
    let services = HttpServices { service_url };
    with_env(&service, &services, |env| {
        crate::http::answer(&service, request, out, env)
    });
}

/// Serves one request to the gateway, whose calls into the services are function calls
/// into the services composed with it; after the response, the gateway relays the events
/// those calls caused ([`Service::after_response`]).
pub fn serve_gateway<S: Service + Default>(request: IncomingRequest, out: ResponseOutparam) {
    let service = S::default();
    let services = composed::ComposedServices::default();
    with_env(&service, &services, |env| {
        crate::http::answer(&service, request, out, env);
        service.after_response(env);
    });
}

/// Answers one call of the gateway into service `S` (its `shop:<service>/api` export).
pub fn call<S: Service + Default>(
    method: String,
    path_with_query: &str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
) -> service_kit::http::Response {
    let service = S::default();
    let services = HttpServices { service_url };
    with_env(&service, &services, |env| {
        crate::http::answer_call(&service, method, path_with_query, headers, body, env)
    })
}

/// Runs service `S`'s after-response work once the gateway has answered its client, and
/// hands the gateway the event batches to relay: those this work took from the outbox and
/// those the calls before it took (a tick's).
pub fn finish<S: Service + Default>() -> Vec<Taken> {
    let service = S::default();
    let services = HttpServices { service_url };
    with_env(&service, &services, |env| service.after_response(env));
    transport::take()
}
