//! The gateway's calls into the services on Spin: the services are the gateway's component
//! dependencies (`spin.toml`), composed into it when Spin loads the app, so a call is a
//! function call into the service's `shop:<service>/api` export within the same instance.
//!
//! A composition has no cycles, so a service cannot call another: the gateway, the root,
//! relays their events. After its response it asks each service it called for the event
//! batches that service has due (`finish`), hands each batch to its destination's
//! `POST /internal/events`, and answers the sender with the destination's answer on
//! `POST /internal/acks/<destination>`; the destinations it called are asked in turn, so a
//! placed order can run its whole saga in the request that placed it. Event streams still
//! go by local service chaining: a function returns once.
//!
//! At most `max_relays_in_flight` requests relay at once (default 2, counted in the
//! key-value store, see [`Slots`]): a relay takes every due batch, so a few relays carry a
//! busy shop's events in big batches, and a request that finds them all running ends with
//! its response, its events left due for them (or the next tick). A tick always relays:
//! the batches its pump took are leased to it.

use std::cell::{Cell, RefCell};

use service_kit::caller;
use service_kit::http::{CORRELATION_HEADER, Response};
use service_kit::ids::now_ms;
use service_kit::messaging::{ACKS_PATH, Acknowledgement, EVENTS_PATH, TICK_PATH};
use service_kit::ports::{OutboundRequest, ResponseStream};
use service_kit::settings;
use service_kit::slots::Slots;
use service_kit::{PortError, Services};

use super::config::SpinConfig;
use super::kv::SpinKeyValue;
use super::transport::Taken;
use crate::bindings::shop;
use crate::http::HttpServices;

/// How many rounds the relay runs after one request at most (a round asks every service
/// called in the round before). A placed order's saga takes four; what is left when the
/// bound is reached stays due for the next request's relay or the tick.
const MAX_RELAY_ROUNDS: usize = 16;

/// How many requests relay at once when `max_relays_in_flight` is not set.
const DEFAULT_MAX_RELAYS: i64 = 2;

/// Calls the services composed with the gateway, remembers which were called, and relays
/// the events those calls caused ([`Services::finish`]).
#[derive(Default)]
pub struct ComposedServices {
    called: RefCell<Vec<&'static str>>,
    /// Whether a service was ticked: its pump's batches must be relayed.
    ticked: Cell<bool>,
}

/// Calls `$module::call` with `$request` converted to that package's record type.
macro_rules! call_api {
    ($module:path, $request:expr) => {{
        use $module as api;
        let answer = api::call(&api::Request {
            method: $request.method,
            path_with_query: $request.url,
            headers: $request.headers,
            body: $request.body,
        });
        Response {
            status: answer.status,
            headers: answer.headers,
            body: answer.body,
        }
    }};
}

/// Calls `$module::finish` and converts the batches it hands over.
macro_rules! finish_api {
    ($module:path) => {{
        use $module as api;
        api::finish()
            .into_iter()
            .map(|delivery| Taken {
                destination: delivery.destination,
                batch: delivery.batch,
                correlation_id: delivery.correlation_id,
            })
            .collect()
    }};
}

/// Calls `service`'s API; its name as the composition knows it, and its answer.
fn call_service(
    service: &str,
    request: OutboundRequest,
) -> Result<(&'static str, Response), PortError> {
    Ok(match service {
        "orders" => ("orders", call_api!(shop::orders::api, request)),
        "balance-checker" => (
            "balance-checker",
            call_api!(shop::balance_checker::api, request),
        ),
        "stock-checker" => (
            "stock-checker",
            call_api!(shop::stock_checker::api, request),
        ),
        "vouchers" => ("vouchers", call_api!(shop::vouchers::api, request)),
        other => return Err(PortError(format!("no service {other:?} is composed"))),
    })
}

/// Lets `service` do its after-response work and takes the event batches it hands over.
fn finish_service(service: &'static str) -> Vec<Taken> {
    match service {
        "orders" => finish_api!(shop::orders::api),
        "balance-checker" => finish_api!(shop::balance_checker::api),
        "stock-checker" => finish_api!(shop::stock_checker::api),
        _ => finish_api!(shop::vouchers::api),
    }
}

impl ComposedServices {
    /// Relays what the services called hand over, then what the services those batches
    /// went to hand over, for at most [`MAX_RELAY_ROUNDS`] rounds.
    fn relay_rounds(&self) {
        for _ in 0..MAX_RELAY_ROUNDS {
            let called = self.called.take();
            if called.is_empty() {
                return;
            }
            for sender in called {
                for delivery in finish_service(sender) {
                    self.relay(sender, delivery);
                }
            }
        }
    }

    /// Delivers `delivery`, handed over by `sender`, to its destination and answers the
    /// sender with the destination's answer. A destination that is not composed fails every
    /// envelope (the sender retries, then dead-letters them).
    fn relay(&self, sender: &'static str, delivery: Taken) {
        let headers = vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            (CORRELATION_HEADER.to_owned(), delivery.correlation_id),
        ];
        let events = OutboundRequest {
            method: "POST".into(),
            url: EVENTS_PATH.into(),
            headers: headers.clone(),
            body: delivery.batch,
        };
        let answer = self
            .call(&delivery.destination, events.clone())
            .unwrap_or_else(|e| {
                Response::problem(503, "unavailable", "Destination unavailable", &e.0)
            });
        let acknowledgement = Acknowledgement::of(&events.body, &answer);
        let ack = caller::signed(
            OutboundRequest {
                method: "POST".into(),
                url: format!("{ACKS_PATH}/{}", delivery.destination),
                headers,
                body: serde_json::to_vec(&acknowledgement).unwrap_or_default(),
            },
            &SpinConfig,
        );
        // An acknowledgement that is not taken (the sender's database busy) leaves the
        // batch leased: it is sent again after the lease, and the destination skips what
        // it applied.
        let _ = call_service(sender, ack);
    }
}

impl Services for ComposedServices {
    fn call(&self, service: &str, request: OutboundRequest) -> Result<Response, PortError> {
        if request.url == TICK_PATH {
            self.ticked.set(true);
        }
        let (name, answer) = call_service(service, request)?;
        let mut called = self.called.borrow_mut();
        if !called.contains(&name) {
            called.push(name);
        }
        Ok(answer)
    }

    fn open(
        &self,
        service: &str,
        request: OutboundRequest,
    ) -> Result<Box<dyn ResponseStream>, PortError> {
        HttpServices {
            service_url: super::service_url,
        }
        .open(service, request)
    }

    fn finish(&self) {
        if self.called.borrow().is_empty() {
            return;
        }
        let kv = SpinKeyValue::default();
        let relays = Slots::new(
            &kv,
            "relays",
            settings::number(&SpinConfig, "max_relays_in_flight", DEFAULT_MAX_RELAYS),
        );
        let slot = match relays.take(now_ms()) {
            Ok(Some(slot)) => Some(slot),
            Ok(None) if !self.ticked.get() => return,
            // A tick, or a store that failed: relay uncounted.
            Ok(None) | Err(_) => None,
        };
        self.relay_rounds();
        if let Some(slot) = slot {
            slot.release(&kv);
        }
    }
}
