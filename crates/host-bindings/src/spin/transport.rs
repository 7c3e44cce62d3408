//! Events between services on Spin: a `POST` of the envelope to the destination's
//! `/internal/events` through local service chaining (`http://<id>.spin.internal`).

use service_kit::http::CORRELATION_HEADER;
use service_kit::messaging::EVENTS_PATH;
use service_kit::ports::OutboundRequest;
use service_kit::{Delivery, HttpClient, Transport};

use crate::http::WasiHttpClient;

/// Delivers events by local service chaining; a 2xx answer is the receiver's acceptance.
pub struct ChainingTransport;

impl Transport for ChainingTransport {
    fn deliver(
        &self,
        destination: &str,
        body: Vec<u8>,
        correlation_id: &str,
        _outbox_id: &str,
    ) -> Result<Delivery, String> {
        let request = OutboundRequest {
            method: "POST".into(),
            url: format!("{}{EVENTS_PATH}", super::service_url(destination)),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                (CORRELATION_HEADER.into(), correlation_id.into()),
            ],
            body,
        };
        match WasiHttpClient.send(request) {
            Ok(response) if response.is_success() => Ok(Delivery::Accepted),
            Ok(response) => Err(format!(
                "{destination} answered {}: {}",
                response.status,
                String::from_utf8_lossy(&response.body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            )),
            Err(e) => Err(format!("{destination} unreachable: {e}")),
        }
    }
}
