//! Per-caller request limits in fixed one-minute windows, counted in a key-value store.
//!
//! The gateway increments `key(actor, window)` for every authenticated request and asks
//! [`RateLimit::decide`] whether the new count is still allowed. Windows are fixed (not
//! sliding) so that one atomic increment per request is all the store has to do.

/// The length of one counting window, in milliseconds.
pub const WINDOW_MS: i64 = 60_000;

/// How many requests one caller may make per window; `0` turns the limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per caller per minute.
    pub per_minute: i64,
}

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Serve it.
    Allow,
    /// Refuse it (429); the caller may retry after this many whole seconds.
    Limit {
        /// Seconds until the window ends, at least 1.
        retry_after_secs: i64,
    },
}

impl RateLimit {
    /// True when requests are counted at all.
    pub fn is_enabled(&self) -> bool {
        self.per_minute > 0
    }

    /// The window that `now_ms` falls in.
    pub fn window(now_ms: i64) -> i64 {
        now_ms.div_euclid(WINDOW_MS)
    }

    /// The counter key of `actor` in `window`. The actor is hex-encoded so that the key
    /// only uses characters every store accepts (NATS key-value allows `[-/_=.a-zA-Z0-9]`).
    pub fn key(actor: &str, window: i64) -> String {
        let hex: String = actor.bytes().map(|b| format!("{b:02x}")).collect();
        format!("rate_{hex}_{window}")
    }

    /// Whether the request that made the count `count` (at `now_ms`) is allowed.
    pub fn decide(&self, count: i64, now_ms: i64) -> Decision {
        if !self.is_enabled() || count <= self.per_minute {
            return Decision::Allow;
        }
        let window_end = (Self::window(now_ms) + 1) * WINDOW_MS;
        let millis_left = window_end - now_ms;
        Decision::Limit {
            retry_after_secs: ((millis_left + 999) / 1000).max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_up_to_the_limit_then_limits_until_the_window_ends() {
        let limit = RateLimit { per_minute: 3 };
        let now = 5 * WINDOW_MS + 59_001;
        assert_eq!(limit.decide(3, now), Decision::Allow);
        assert_eq!(
            limit.decide(4, now),
            Decision::Limit {
                retry_after_secs: 1
            }
        );
        assert_eq!(
            limit.decide(4, 5 * WINDOW_MS),
            Decision::Limit {
                retry_after_secs: 60
            }
        );
    }

    #[test]
    fn zero_turns_the_limit_off() {
        let off = RateLimit { per_minute: 0 };
        assert!(!off.is_enabled());
        assert_eq!(off.decide(i64::MAX, 0), Decision::Allow);
    }

    #[test]
    fn windows_and_keys_follow_the_clock() {
        assert_eq!(RateLimit::window(0), 0);
        assert_eq!(RateLimit::window(WINDOW_MS - 1), 0);
        assert_eq!(RateLimit::window(WINDOW_MS), 1);
        assert_eq!(RateLimit::window(-1), -1);
        assert_eq!(RateLimit::key("a@b.c", 7), "rate_6140622e63_7");
        let key = RateLimit::key("Zoë+tag@example.com", 29_000_000);
        assert!(key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    }
}
