//! Typed configuration values with documented development defaults.

use std::str::FromStr;

use shop_domain::retry::RetryPolicy;

use crate::ports::Config;

/// The development default of `event_secret`; a real deployment must override it.
pub const DEV_EVENT_SECRET: &str = "dev-event-secret-change-me";
/// The development default of `auth_secret`; a real deployment must override it.
pub const DEV_AUTH_SECRET: &str = "dev-auth-secret-change-me";

/// The value of `key`, or `default` when unset or empty.
pub fn text(config: &dyn Config, key: &str, default: &str) -> String {
    match config.get(key) {
        Ok(Some(v)) if !v.trim().is_empty() => v,
        _ => default.to_owned(),
    }
}

/// The value of `key` parsed as a number, or `default` when unset or unparsable.
pub fn number<T: FromStr>(config: &dyn Config, key: &str, default: T) -> T {
    match config.get(key) {
        Ok(Some(v)) => v.trim().parse().unwrap_or(default),
        _ => default,
    }
}

/// The secret that signs and verifies events (`event_secret`).
pub fn event_secret(config: &dyn Config) -> Vec<u8> {
    text(config, "event_secret", DEV_EVENT_SECRET).into_bytes()
}

/// The message retry policy (`retry_max_attempts`, `retry_base_delay_ms`, `retry_max_delay_ms`).
pub fn retry_policy(config: &dyn Config) -> RetryPolicy {
    let default = RetryPolicy::default();
    RetryPolicy {
        max_attempts: number(config, "retry_max_attempts", default.max_attempts).max(1),
        base_delay_ms: number(config, "retry_base_delay_ms", default.base_delay_ms),
        max_delay_ms: number(config, "retry_max_delay_ms", default.max_delay_ms),
    }
}
