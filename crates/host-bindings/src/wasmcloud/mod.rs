//! wasmCloud 1.x: configuration and logging from the host, SQL through the sqldb-postgres
//! provider (with optimistic transactions, see `service_kit::optimistic`), and events as
//! NATS requests through the messaging-nats provider.
//!
//! Events: the sender's outbox requests `shop.events.<destination>`; the destination's
//! subscription (a queue group per service, set on the link in `wadm.yaml`) hands the
//! message to [`handle_message`], which applies it like `POST /internal/events` and then
//! publishes a reply with the outcome's status. Only a 2xx reply removes the event from the
//! sender's outbox: core NATS does not redeliver, so the outbox does.

mod config;
mod kv;
mod log;
mod sql;
mod transport;

use serde_json::json;
use service_kit::http::Request;
use service_kit::messaging::EVENTS_PATH;
use service_kit::optimistic::OptimisticSql;
use service_kit::{Config, Env, Service};

use crate::bindings::wasi::http::types::{IncomingRequest, ResponseOutparam};
use crate::bindings::wasmcloud::messaging::consumer;
use crate::bindings::wasmcloud::messaging::types::BrokerMessage;

/// How services address each other on wasmCloud: the URL in the `<name>_url` config value
/// (e.g. `orders_url = http://127.0.0.1:8081`, the address of orders' http-server link).
pub fn service_url(component: &str) -> String {
    let key = format!("{}_url", component.replace('-', "_"));
    match config::WasmcloudConfig.get(&key) {
        Ok(Some(url)) if !url.trim().is_empty() => url.trim_end_matches('/').to_owned(),
        _ => format!("http://{component}.unconfigured.invalid"),
    }
}

/// Runs `work` with the ports bound to this host.
fn with_env<T>(work: impl FnOnce(&Env) -> T) -> T {
    log::install();
    let sql = OptimisticSql::new(sql::ProviderPostgres);
    let transport = transport::NatsTransport::from_config(&config::WasmcloudConfig);
    let kv = kv::ProviderKeyValue::default();
    let env = Env {
        sql: &sql,
        http: &crate::http::WasiHttpClient,
        config: &config::WasmcloudConfig,
        service_url,
        transport: &transport,
        kv: &kv,
    };
    work(&env)
}

/// Serves one HTTP request with service `S`, then runs its after-response work.
pub fn serve<S: Service + Default>(request: IncomingRequest, out: ResponseOutparam) {
    with_env(|env| crate::http::answer(&S::default(), request, out, env));
}

/// Applies one event from NATS with service `S` (as `POST /internal/events`), replies
/// with the outcome's status when the sender asked for a reply, then delivers what the
/// event caused.
pub fn handle_message<S: Service + Default>(message: BrokerMessage) -> Result<(), String> {
    with_env(|env| {
        let service = S::default();
        let request = Request {
            method: "POST".into(),
            path: EVENTS_PATH.into(),
            query: String::new(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: message.body,
        };
        let response = service.handle(request, env);
        let detail: String = String::from_utf8_lossy(&response.body)
            .chars()
            .take(300)
            .collect();
        if let Some(reply_to) = message.reply_to {
            let reply = BrokerMessage {
                subject: reply_to,
                body: json!({"status": response.status, "detail": detail})
                    .to_string()
                    .into_bytes(),
                reply_to: None,
            };
            if let Err(e) = consumer::publish(&reply) {
                service_kit::log::write(
                    service_kit::log::Level::Warn,
                    "messaging",
                    "-",
                    &format!("reply to {} failed: {e}", message.subject),
                );
            }
        }
        service.after_response(env);
        if response.is_success() {
            Ok(())
        } else {
            Err(format!(
                "{} answered {}: {detail}",
                message.subject, response.status
            ))
        }
    })
}
