//! Per-caller request limits: at most `rate_limit_per_minute` authenticated requests per
//! caller per minute (default 1200; `0` turns the limit off), counted in the key-value store.
//! A store that fails does not stop the shop: the request is served and the failure logged.

use service_kit::http::{Request, Response};
use service_kit::ids::now_ms;
use service_kit::log::{self, Level};
use service_kit::{Env, settings};
use shop_domain::auth::Claims;
use shop_domain::rate_limit::{Decision, RateLimit};

/// The limit when `rate_limit_per_minute` is not set.
const DEFAULT_PER_MINUTE: i64 = 1200;

/// `Ok` when `claims.sub` may make this request, else the 429 answer.
pub fn check(request: &Request, claims: &Claims, env: &Env) -> Result<(), Response> {
    let limit = RateLimit {
        per_minute: settings::number(env.config, "rate_limit_per_minute", DEFAULT_PER_MINUTE),
    };
    if !limit.is_enabled() {
        return Ok(());
    }
    let now = now_ms();
    let window = RateLimit::window(now);
    let count = match env.kv.increment(&RateLimit::key(&claims.sub, window), 1) {
        Ok(count) => count,
        Err(e) => {
            log::write(
                Level::Warn,
                "gateway",
                request.correlation_id().unwrap_or("-"),
                &format!("rate limit not applied: {e}"),
            );
            return Ok(());
        }
    };
    if count == 1 {
        // The caller's first request in this window: the last window's counter is done.
        let _ = env.kv.delete(&RateLimit::key(&claims.sub, window - 1));
    }
    match limit.decide(count, now) {
        Decision::Allow => Ok(()),
        Decision::Limit { retry_after_secs } => Err(Response::problem(
            429,
            "rate-limited",
            "Too many requests",
            &format!(
                "at most {} requests per minute; retry in {retry_after_secs} s",
                limit.per_minute
            ),
        )
        .with_header("retry-after", &retry_after_secs.to_string())),
    }
}
