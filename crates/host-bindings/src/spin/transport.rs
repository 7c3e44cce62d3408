//! Events between services on Spin: a service composed into the gateway cannot call another
//! (a composition has no cycles), so its events are handed to the gateway, which relays
//! them (see [`super::composed`]). A batch taken for the relay is leased in the outbox like
//! any sent batch: the destination's answer comes back as an acknowledgement, and a batch
//! whose relay never finished (the instance trapped) is sent again after the lease.

use std::cell::RefCell;

use service_kit::{Delivery, Transport};

/// How long a batch handed to the relay stays leased: the relay answers within the same
/// instance, so only an instance that died leaves it waiting this long.
const RELAY_LEASE_MS: i64 = 10_000;

/// One batch of events for the gateway to relay.
pub struct Taken {
    /// The destination service, e.g. `balance-checker`.
    pub destination: String,
    /// A JSON array of signed envelopes.
    pub batch: Vec<u8>,
    /// The first envelope's correlation id.
    pub correlation_id: String,
}

thread_local! {
    /// The batches this instance handed over and the relay has not taken yet.
    static TAKEN: RefCell<Vec<Taken>> = const { RefCell::new(Vec::new()) };
}

/// Hands batches of events to the relay; the receiver's answer arrives later as an
/// acknowledgement (`POST /internal/acks/<destination>`).
pub struct RelayTransport;

impl Transport for RelayTransport {
    fn deliver(
        &self,
        destination: &str,
        batch: Vec<u8>,
        correlation_id: &str,
    ) -> Result<Delivery, String> {
        TAKEN.with(|taken| {
            taken.borrow_mut().push(Taken {
                destination: destination.to_owned(),
                batch,
                correlation_id: correlation_id.to_owned(),
            })
        });
        Ok(Delivery::Sent)
    }

    fn answer_wait_ms(&self) -> i64 {
        RELAY_LEASE_MS
    }
}

/// The batches handed over since the last call, for the relay.
pub fn take() -> Vec<Taken> {
    TAKEN.with(|taken| taken.take())
}
