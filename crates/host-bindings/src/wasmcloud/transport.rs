//! Events between services on wasmCloud: a NATS request to `shop.events.<destination>`
//! through the messaging-nats provider; the receiver's reply says whether it applied it.

use serde_json::Value;
use service_kit::settings;
use service_kit::{Config, Transport};

use crate::bindings::wasmcloud::messaging::consumer;

/// The subject prefix; a service's events arrive on `shop.events.<service>`.
pub const EVENTS_SUBJECT_PREFIX: &str = "shop.events.";

/// Delivers events as NATS requests; a reply with a 2xx status is the receiver's acceptance.
pub struct NatsTransport {
    timeout_ms: u32,
}

impl NatsTransport {
    /// Waits `event_timeout_ms` (default 5000) for each reply.
    pub fn from_config(config: &dyn Config) -> NatsTransport {
        NatsTransport {
            timeout_ms: settings::number(config, "event_timeout_ms", 5_000u32),
        }
    }
}

impl Transport for NatsTransport {
    fn deliver(
        &self,
        destination: &str,
        body: Vec<u8>,
        _correlation_id: &str,
    ) -> Result<(), String> {
        let subject = format!("{EVENTS_SUBJECT_PREFIX}{destination}");
        let reply = consumer::request(&subject, &body, self.timeout_ms)
            .map_err(|e| format!("{subject}: {e}"))?;
        let answer: Value = serde_json::from_slice(&reply.body)
            .map_err(|e| format!("{subject}: unreadable reply: {e}"))?;
        match answer["status"].as_u64() {
            Some(status) if (200..300).contains(&status) => Ok(()),
            Some(status) => Err(format!(
                "{destination} answered {status}: {}",
                answer["detail"].as_str().unwrap_or("")
            )),
            None => Err(format!("{subject}: reply without a status")),
        }
    }
}
