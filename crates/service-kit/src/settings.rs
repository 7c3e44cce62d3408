//! Typed configuration values with documented development defaults.

use std::str::FromStr;

use shop_domain::retry::RetryPolicy;

use crate::ports::{Config, KeyValue};

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

/// How long, in milliseconds, a write a client waits on may wait for SQLite's write lock
/// before it is shed (`client_lock_wait_ms`, default 250; see
/// [`crate::db::Db::client_transaction`]).
pub fn client_lock_wait_ms(config: &dyn Config) -> u32 {
    number(config, "client_lock_wait_ms", 250)
}

/// The secret that signs and verifies events (`event_secret`).
pub fn event_secret(config: &dyn Config) -> Vec<u8> {
    text(config, "event_secret", DEV_EVENT_SECRET).into_bytes()
}

/// The secret that signs and verifies bearer tokens (`auth_secret`).
pub fn auth_secret(config: &dyn Config) -> Vec<u8> {
    text(config, "auth_secret", DEV_AUTH_SECRET).into_bytes()
}

/// Logs a warning (through [`crate::log`]: stderr on Spin, `wasi:logging` on wasmCloud) for
/// each of `auth_secret` and `event_secret` that has its documented development default, at
/// most once a minute for `service` across all its instances.
///
/// A `wasi:http` component has no startup hook and Spin and wasmCloud make a fresh instance
/// for every request, so no instance can remember that it warned. The minute's first
/// instance is the one whose increment of a counter in the key-value store `kv` returns 1;
/// it also removes the previous minute's counter. The gateway calls this on every
/// authenticated request: every service reads the same two variables.
pub fn warn_on_dev_secrets(config: &dyn Config, kv: &dyn KeyValue, service: &str) {
    let on_defaults: Vec<&str> = [
        ("auth_secret", DEV_AUTH_SECRET),
        ("event_secret", DEV_EVENT_SECRET),
    ]
    .into_iter()
    .filter(|(key, dev_default)| text(config, key, dev_default) == *dev_default)
    .map(|(key, _)| key)
    .collect();
    if on_defaults.is_empty() {
        return;
    }
    let minute = crate::ids::now_ms() / 60_000;
    let counter = |minute: i64| format!("dev-secret-warning/{service}/{minute}");
    match kv.increment(&counter(minute), 1) {
        Ok(1) => {
            let _ = kv.delete(&counter(minute - 1));
        }
        Ok(_) => return,
        // Without the store nothing can be rate-limited; a warning too many beats none.
        Err(_) => {}
    }
    for key in on_defaults {
        crate::log::write(
            crate::log::Level::Warn,
            service,
            "-",
            &format!(
                "{key} is the documented development default: anyone can forge {what}; \
                 set the {key} variable outside local runs (this warning repeats at most \
                 once a minute)",
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

    /// A key-value store in memory.
    #[derive(Default)]
    struct Counters(Mutex<HashMap<String, i64>>);

    impl KeyValue for Counters {
        fn increment(&self, key: &str, delta: i64) -> Result<i64, PortError> {
            let mut map = self.0.lock().unwrap();
            let value = map.entry(key.to_owned()).or_default();
            *value += delta;
            Ok(*value)
        }

        fn delete(&self, key: &str) -> Result<(), PortError> {
            self.0.lock().unwrap().remove(key);
            Ok(())
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
    fn dev_secrets_warn_once_a_minute_across_instances_and_overrides_never() {
        crate::log::set_sink(|_, _, line| LINES.lock().unwrap().push(line.to_owned()));
        let kv = Counters::default();
        let overridden = Settings(HashMap::from([
            ("auth_secret", "a-real-auth-secret"),
            ("event_secret", "a-real-event-secret"),
        ]));
        assert_eq!(auth_secret(&overridden), b"a-real-auth-secret");
        assert_eq!(event_secret(&overridden), b"a-real-event-secret");
        warn_on_dev_secrets(&overridden, &kv, "gateway");
        assert_eq!(warnings_about("auth_secret"), 0);
        assert_eq!(warnings_about("event_secret"), 0);

        let defaults = Settings(HashMap::new());
        assert_eq!(auth_secret(&defaults), DEV_AUTH_SECRET.as_bytes());
        assert_eq!(event_secret(&defaults), DEV_EVENT_SECRET.as_bytes());
        // Each call stands for a fresh instance serving one request.
        for _ in 0..100 {
            warn_on_dev_secrets(&defaults, &kv, "gateway");
        }
        let warned = warnings_about("auth_secret");
        assert!(
            (1..=2).contains(&warned),
            "{warned} warnings in 100 requests (one per minute, two if the minute turned)"
        );
        assert_eq!(warnings_about("event_secret"), warned);
        assert!(
            kv.0.lock().unwrap().len() <= 1,
            "old minutes' counters are removed"
        );
    }
}
