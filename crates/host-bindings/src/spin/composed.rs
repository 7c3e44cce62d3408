//! The gateway's calls into the services on Spin: the services are the gateway's component
//! dependencies (`spin.toml`), composed into it when Spin loads the app, so a call is a
//! function call into the service's `shop:<service>/api` export within the same instance.
//! Event streams still go by local service chaining: a function returns once.

use std::cell::RefCell;

use service_kit::http::Response;
use service_kit::ports::{OutboundRequest, ResponseStream};
use service_kit::{PortError, Services};

use crate::bindings::shop;
use crate::http::HttpServices;

/// Calls the services composed with the gateway, and remembers which were called so that
/// [`Services::finish`] lets each of them deliver what the calls wrote.
#[derive(Default)]
pub struct ComposedServices {
    called: RefCell<Vec<&'static str>>,
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

impl Services for ComposedServices {
    fn call(&self, service: &str, request: OutboundRequest) -> Result<Response, PortError> {
        let (name, answer) = match service {
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
        };
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
        for service in self.called.take() {
            match service {
                "orders" => shop::orders::api::finish(),
                "balance-checker" => shop::balance_checker::api::finish(),
                "stock-checker" => shop::stock_checker::api::finish(),
                _ => shop::vouchers::api::finish(),
            }
        }
    }
}
