//! The timer: `POST /internal/tick` to components on an interval, as a cron trigger or
//! ticker process would. One tick at a time per component; failures are logged (once per
//! change of outcome) and never stop the timer. The wasmCloud lattice ticks every worker
//! (Spin has no timer: the app's ticker posts the gateway's admin tick).

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Empty};
use std::future::Future;
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// The path every tick is sent to.
pub(crate) const TICK_PATH: &str = "/internal/tick";

/// Calls `tick` every `period` until the task is aborted; `tick` answers `Some(reason)`
/// when it failed. `id` names the component in log lines.
pub(crate) async fn run_with<F, Fut>(id: String, period: Duration, mut tick: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<String>>,
{
    let mut interval = tokio::time::interval_at(Instant::now() + period, period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_failure: Option<String> = None;
    loop {
        interval.tick().await;
        let failure = tick().await;
        if failure != last_failure {
            match &failure {
                Some(failure) => eprintln!("[test-host] tick to {id:?} failed: {failure}"),
                None => eprintln!("[test-host] tick to {id:?} succeeds again"),
            }
            last_failure = failure;
        }
    }
}

/// A tick request for `authority` (the body is empty).
pub(crate) fn tick_request(authority: &str) -> Option<Request<Empty<Bytes>>> {
    Request::builder()
        .method(Method::POST)
        .uri(format!("http://{authority}{TICK_PATH}"))
        .body(Empty::<Bytes>::new())
        .ok()
}

/// Reads the whole response to a tick; `Some(reason)` if it failed.
pub(crate) async fn outcome(response: Response<HyperOutgoingBody>) -> Option<String> {
    let status = response.status();
    match response.into_body().collect().await {
        Err(e) => Some(format!("reading the response failed: {e}")),
        Ok(_) if !status.is_success() => Some(format!("status {status}")),
        Ok(_) => None,
    }
}
