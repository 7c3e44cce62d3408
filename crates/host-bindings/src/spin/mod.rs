//! Spin 4.x: variables through `wasi:config`, SQLite or Postgres, and events by local
//! service chaining to the private routes of the other components.

mod config;
mod kv;
mod sql;
mod transport;

use service_kit::{Env, Service};

use crate::bindings::wasi::http::types::{IncomingRequest, ResponseOutparam};

/// How services address each other on Spin: local service chaining.
pub fn service_url(component: &str) -> String {
    format!("http://{component}.spin.internal")
}

/// Serves one request with service `S`: converts it, answers it, then runs the
/// service's after-response work while the caller already has its answer.
pub fn serve<S: Service + Default>(request: IncomingRequest, out: ResponseOutparam) {
    let service = S::default();
    let sql = sql::SpinSql::from_config(&config::SpinConfig, service.name());
    let kv = kv::SpinKeyValue::default();
    let env = Env {
        sql: &sql,
        http: &crate::http::WasiHttpClient,
        config: &config::SpinConfig,
        service_url,
        transport: &transport::ChainingTransport,
        kv: &kv,
    };
    crate::http::answer(&service, request, out, &env);
}
