//! wasmCloud 1.x: configuration and logging from the host, SQL through the sqldb-postgres
//! provider (with optimistic transactions, see `service_kit::optimistic`), and events as
//! NATS requests through the messaging-nats provider.
//!
//! Events: the sender's outbox publishes a batch to `shop.events.<destination>` with the
//! reply subject `shop.acks.<sender>.<destination>`; the destination's subscription (a
//! queue group per service, set on the link in `wadm.yaml`) hands the message to
//! [`handle_message`], which applies it like `POST /internal/events` and publishes the
//! answer (status and per-envelope results) to the reply subject. The sender's
//! subscription to `shop.acks.<sender>.>` hands that acknowledgement to [`handle_message`]
//! too, which applies it to the outbox like `POST /internal/acks/<destination>`: only a
//! settled event leaves the outbox. Core NATS does not redeliver, so the outbox does, when
//! an acknowledgement does not come.

mod config;
mod kv;
mod log;
mod sql;
mod transport;

use service_kit::http::Request;
use service_kit::messaging::{ACKS_PATH, Acknowledgement, EVENTS_PATH};
use service_kit::optimistic::OptimisticSql;
use service_kit::{Config, Env, Service, caller};

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

/// Runs `work` with the ports bound to this host, for service `service`.
fn with_env<T>(service: &'static str, work: impl FnOnce(&Env) -> T) -> T {
    log::install();
    let sql = OptimisticSql::new(sql::ProviderPostgres);
    let transport = transport::NatsTransport::new(service);
    let kv = kv::ProviderKeyValue::default();
    let env = Env {
        sql: &sql,
        services: &crate::http::HttpServices { service_url },
        config: &config::WasmcloudConfig,
        transport: &transport,
        kv: &kv,
    };
    work(&env)
}

/// Serves one HTTP request with service `S`, then runs its after-response work.
pub fn serve<S: Service + Default>(request: IncomingRequest, out: ResponseOutparam) {
    let service = S::default();
    with_env(service.name(), |env| {
        crate::http::answer(&service, request, out, env);
        service.after_response(env);
    });
}

/// Handles one message from NATS with service `S`: an acknowledgement of one of its own
/// deliveries (subject `shop.acks.<service>.<destination>`) goes to `POST
/// /internal/acks/<destination>`; a batch of events is applied as `POST /internal/events`,
/// the answer published to the reply subject, and what it caused then sent.
pub fn handle_message<S: Service + Default>(message: BrokerMessage) -> Result<(), String> {
    let service = S::default();
    with_env(service.name(), |env| {
        let ack_prefix = format!("{}{}.", transport::ACKS_SUBJECT_PREFIX, service.name());
        let path = match message.subject.strip_prefix(&ack_prefix) {
            Some(destination) => format!("{ACKS_PATH}/{destination}"),
            None => EVENTS_PATH.to_owned(),
        };
        // Handed over by the host from a subscription, not from the network: signed here so
        // that it passes the check every call from the network must (service_kit::caller).
        // (An acknowledgement on NATS is the receiver's answer; NATS itself is the trust
        // boundary there.)
        let request = caller::signed_request(
            Request {
                method: "POST".into(),
                path,
                query: String::new(),
                headers: vec![("content-type".into(), "application/json".into())],
                body: message.body,
            },
            env.config,
        );
        let response = service.handle(request.clone(), env);
        let detail: String = String::from_utf8_lossy(&response.body)
            .chars()
            .take(300)
            .collect();
        if let Some(reply_to) = message.reply_to {
            let ack = Acknowledgement::of(&request.body, &response);
            let reply = BrokerMessage {
                subject: reply_to,
                body: serde_json::to_vec(&ack).unwrap_or_default(),
                reply_to: None,
            };
            if let Err(e) = consumer::publish(&reply) {
                service_kit::log::write(
                    service_kit::log::Level::Warn,
                    service.name(),
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
