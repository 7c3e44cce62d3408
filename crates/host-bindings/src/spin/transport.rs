//! Events between services on Spin: a `POST` of a batch of envelopes to the destination's
//! `/internal/events` through local service chaining (`http://<id>.spin.internal`).

use service_kit::http::CORRELATION_HEADER;
use service_kit::messaging::EVENTS_PATH;
use service_kit::ports::OutboundRequest;
use service_kit::{Delivery, Services, Transport};

use crate::http::HttpServices;

/// Delivers events by local service chaining; the receiver's answer says, per envelope,
/// what it did.
pub struct ChainingTransport;

impl Transport for ChainingTransport {
    fn deliver(
        &self,
        destination: &str,
        batch: Vec<u8>,
        correlation_id: &str,
    ) -> Result<Delivery, String> {
        let request = OutboundRequest {
            method: "POST".into(),
            url: EVENTS_PATH.into(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                (CORRELATION_HEADER.into(), correlation_id.into()),
            ],
            body: batch,
        };
        HttpServices {
            service_url: super::service_url,
        }
        .call(destination, request)
        .map(Delivery::Answered)
        .map_err(|e| format!("{destination} unreachable: {e}"))
    }
}
