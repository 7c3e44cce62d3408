//! Typed configuration values with documented development defaults.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// Whether this instance already warned that `auth_secret` is the development default.
static WARNED_DEV_AUTH_SECRET: AtomicBool = AtomicBool::new(false);
/// Whether this instance already warned that `event_secret` is the development default.
static WARNED_DEV_EVENT_SECRET: AtomicBool = AtomicBool::new(false);

/// The secret that signs and verifies events (`event_secret`), read by `service`; warns
/// when it is the development default (see [`warn_on_dev_secret`]).
pub fn event_secret(config: &dyn Config, service: &str) -> Vec<u8> {
    let secret = text(config, "event_secret", DEV_EVENT_SECRET);
    warn_on_dev_secret(
        service,
        "event_secret",
        &secret,
        DEV_EVENT_SECRET,
        &WARNED_DEV_EVENT_SECRET,
    );
    secret.into_bytes()
}

/// The secret that signs and verifies bearer tokens (`auth_secret`), read by `service`;
/// warns when it is the development default (see [`warn_on_dev_secret`]).
pub fn auth_secret(config: &dyn Config, service: &str) -> Vec<u8> {
    let secret = text(config, "auth_secret", DEV_AUTH_SECRET);
    warn_on_dev_secret(
        service,
        "auth_secret",
        &secret,
        DEV_AUTH_SECRET,
        &WARNED_DEV_AUTH_SECRET,
    );
    secret.into_bytes()
}

/// Logs a warning (through [`crate::log`]: stderr on Spin, `wasi:logging` on wasmCloud)
/// when the secret `key` has its documented development default `dev_default`, once per
/// component instance (`warned` remembers it).
///
/// A `wasi:http` or `wasmcloud:messaging` component has no startup hook: configuration can
/// only be read while serving a request or message. So the warning comes at the first use of
/// the secret in an instance. Spin, wasmCloud and the test host create a fresh instance for
/// every request and message, so an app on the defaults warns on each one that reads a secret.
fn warn_on_dev_secret(
    service: &str,
    key: &str,
    value: &str,
    dev_default: &str,
    warned: &AtomicBool,
) {
    if value == dev_default && !warned.swap(true, Ordering::Relaxed) {
        crate::log::write(
            crate::log::Level::Warn,
            service,
            "-",
            &format!(
                "{key} is the documented development default {dev_default:?}: \
                 anyone can forge {what}; set the {key} variable outside local runs",
                what = if key == "auth_secret" {
                    "bearer tokens"
                } else {
                    "events"
                },
            ),
        );
    }
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use crate::ports::PortError;

    /// Log lines the test sink received.
    static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

    struct Settings(HashMap<&'static str, &'static str>);

    impl Config for Settings {
        fn get(&self, key: &str) -> Result<Option<String>, PortError> {
            Ok(self.0.get(key).map(|v| (*v).to_owned()))
        }
    }

    fn warnings_about(key: &str) -> usize {
        LINES
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains("\"warn\"") && line.contains(key))
            .count()
    }

    #[test]
    fn dev_secrets_warn_once_per_instance_and_overrides_never() {
        crate::log::set_sink(|_, _, line| LINES.lock().unwrap().push(line.to_owned()));
        let overridden = Settings(HashMap::from([
            ("auth_secret", "a-real-auth-secret"),
            ("event_secret", "a-real-event-secret"),
        ]));
        assert_eq!(auth_secret(&overridden, "gateway"), b"a-real-auth-secret");
        assert_eq!(event_secret(&overridden, "orders"), b"a-real-event-secret");
        assert_eq!(warnings_about("auth_secret"), 0);
        assert_eq!(warnings_about("event_secret"), 0);

        let defaults = Settings(HashMap::new());
        for _ in 0..3 {
            assert_eq!(
                auth_secret(&defaults, "gateway"),
                DEV_AUTH_SECRET.as_bytes()
            );
            assert_eq!(
                event_secret(&defaults, "orders"),
                DEV_EVENT_SECRET.as_bytes()
            );
        }
        assert_eq!(warnings_about("auth_secret"), 1);
        assert_eq!(warnings_about("event_secret"), 1);
    }
}
