//! The timer: `POST /internal/tick` to every private component on an interval, as a
//! cron trigger or ticker process would on Spin. One tick at a time per component;
//! failures are logged (once per change of outcome) and never stop the timer.

use crate::runtime::{LoadedComponent, Runtime};
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Empty};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};

/// The path every tick is sent to.
const TICK_PATH: &str = "/internal/tick";

/// Ticks `component` every `period` until the task is aborted.
pub(crate) async fn run(runtime: Arc<Runtime>, component: Arc<LoadedComponent>, period: Duration) {
    let id = component.config.id.clone();
    let mut interval = tokio::time::interval_at(Instant::now() + period, period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_failure: Option<String> = None;
    loop {
        interval.tick().await;
        let failure = tick(&runtime, &component).await;
        if failure != last_failure {
            match &failure {
                Some(failure) => eprintln!("[test-host] tick to {id:?} failed: {failure}"),
                None => eprintln!("[test-host] tick to {id:?} succeeds again"),
            }
            last_failure = failure;
        }
    }
}

/// Sends one tick and reads the whole response; `Some(reason)` if it failed.
async fn tick(runtime: &Arc<Runtime>, component: &Arc<LoadedComponent>) -> Option<String> {
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!(
            "http://{}.spin.internal{TICK_PATH}",
            component.config.id
        ))
        .body(Empty::<Bytes>::new());
    let request = match request {
        Ok(request) => request,
        Err(e) => return Some(e.to_string()),
    };
    let response = runtime.serve_chained(component, request).await;
    let status = response.status();
    match response.into_body().collect().await {
        Err(e) => Some(format!("reading the response failed: {e}")),
        Ok(_) if !status.is_success() => Some(format!("status {status}")),
        Ok(_) => None,
    }
}
