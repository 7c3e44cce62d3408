//! Events between services on wasmCloud: a NATS publish of a batch of envelopes to
//! `shop.events.<destination>` through the messaging-nats provider, with the reply subject
//! `shop.acks.<sender>.<destination>`. The receiver publishes its answer there and the
//! sender's own subscription applies it to its outbox ([`super::handle_message`]). No
//! instance waits for another component: with wasmCloud's capped instances per component,
//! a sender waiting on a receiver that waits on the sender would stall both.

use service_kit::{Delivery, Transport};

use crate::bindings::wasmcloud::messaging::consumer;
use crate::bindings::wasmcloud::messaging::types::BrokerMessage;

/// The subject prefix; a service's events arrive on `shop.events.<service>`.
pub const EVENTS_SUBJECT_PREFIX: &str = "shop.events.";
/// The subject prefix of acknowledgements; a sender gets them on `shop.acks.<sender>.<destination>`.
pub const ACKS_SUBJECT_PREFIX: &str = "shop.acks.";

/// Publishes events for `sender`; the acknowledgement comes back as a message.
pub struct NatsTransport {
    sender: &'static str,
}

impl NatsTransport {
    /// A transport for service `sender` (its component id).
    pub fn new(sender: &'static str) -> NatsTransport {
        NatsTransport { sender }
    }
}

impl Transport for NatsTransport {
    fn deliver(
        &self,
        destination: &str,
        batch: Vec<u8>,
        _correlation_id: &str,
    ) -> Result<Delivery, String> {
        let subject = format!("{EVENTS_SUBJECT_PREFIX}{destination}");
        let message = BrokerMessage {
            subject: subject.clone(),
            body: batch,
            reply_to: Some(format!(
                "{ACKS_SUBJECT_PREFIX}{}.{destination}",
                self.sender
            )),
        };
        consumer::publish(&message).map_err(|e| format!("{subject}: {e}"))?;
        Ok(Delivery::Sent)
    }

    /// An acknowledgement comes within seconds or not at all (core NATS: a message or its
    /// reply lost, a receiver that trapped): sent again after 5 s.
    fn answer_wait_ms(&self) -> i64 {
        5_000
    }
}
