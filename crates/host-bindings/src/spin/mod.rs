//! Spin 4.x: variables through `wasi:config`, SQLite or Postgres, the services composed
//! into the gateway (calls are function calls, see [`composed`]), and events by local service
//! chaining to the private routes of the other components.

mod composed;
mod config;
mod kv;
mod sql;
mod transport;

use service_kit::{Env, Service, Services};

use crate::bindings::wasi::http::types::{IncomingRequest, ResponseOutparam};
use crate::http::HttpServices;

/// How services address each other on Spin: local service chaining.
pub fn service_url(component: &str) -> String {
    format!("http://{component}.spin.internal")
}

/// Runs `work` with the ports bound to Spin for service `S`, calling other services
/// through `services`.
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
        transport: &transport::ChainingTransport,
        kv: &kv,
    };
    work(&env)
}

/// Serves one request with service `S`: converts it, answers it, then runs the
/// service's after-response work while the caller already has its answer.
pub fn serve<S: Service + Default>(request: IncomingRequest, out: ResponseOutparam) {
    let service = S::default();
    let services = HttpServices { service_url };
    with_env(&service, &services, |env| {
        crate::http::answer(&service, request, out, env)
    });
}

/// As [`serve`] for the gateway, whose calls into the services are function calls into
/// the services composed with it.
pub fn serve_gateway<S: Service + Default>(request: IncomingRequest, out: ResponseOutparam) {
    let service = S::default();
    let services = composed::ComposedServices::default();
    with_env(&service, &services, |env| {
        crate::http::answer(&service, request, out, env)
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

/// Runs service `S`'s after-response work once the gateway has answered its client.
pub fn finish<S: Service + Default>() {
    let service = S::default();
    let services = HttpServices { service_url };
    with_env(&service, &services, |env| service.after_response(env));
}
