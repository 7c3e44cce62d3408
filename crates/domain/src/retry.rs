//! Retry policy: how often to retry and how long to wait between attempts.
//!
//! Delays grow exponentially and are jittered with a random number the
//! caller supplies, so this module stays free of any RNG.

use serde::{Deserialize, Serialize};

/// How many attempts to make and how long to back off between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Total attempts allowed, including the first.
    pub max_attempts: u32,
    /// Backoff ceiling before the second attempt, in milliseconds.
    pub base_delay_ms: u64,
    /// Largest backoff ceiling, in milliseconds.
    pub max_delay_ms: u64,
}

impl Default for RetryPolicy {
    /// 5 attempts, backing off from 500 ms up to 60 s.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay_ms: 500,
            max_delay_ms: 60_000,
        }
    }
}

impl RetryPolicy {
    /// Returns the backoff ceiling after attempt number `attempt` (1-based):
    /// `base_delay_ms × 2^(attempt-1)` capped at `max_delay_ms`, without
    /// overflow for any `attempt`. Attempt 0 is treated as 1.
    ///
    /// Non-decreasing in `attempt`.
    pub fn backoff_ceiling_ms(&self, attempt: u32) -> u64 {
        let doublings = attempt.saturating_sub(1);
        let exponential = match 1u64.checked_shl(doublings) {
            Some(factor) => self.base_delay_ms.saturating_mul(factor),
            // 2^doublings does not fit in u64: saturate (unless the base is 0).
            None if self.base_delay_ms == 0 => 0,
            None => u64::MAX,
        };
        exponential.min(self.max_delay_ms)
    }

    /// Returns how long to wait after attempt number `attempt` (1-based)
    /// before the next one, in milliseconds.
    ///
    /// With `ceiling` = [`RetryPolicy::backoff_ceiling_ms`], the delay is
    /// `ceiling/2 + jitter % (ceiling/2 + 1)`, i.e. within
    /// `[ceiling/2, ceiling]`; `jitter` is a random `u64` from the caller.
    pub fn delay_ms(&self, attempt: u32, jitter: u64) -> u64 {
        let ceiling = self.backoff_ceiling_ms(attempt);
        let half = ceiling / 2;
        // half + 1 >= 1, and half + (jitter % (half + 1)) <= 2 * half <= ceiling.
        half + jitter % (half + 1)
    }

    /// Returns true when `attempts_made` has reached `max_attempts`.
    pub fn is_exhausted(&self, attempts_made: u32) -> bool {
        attempts_made >= self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.max_attempts, 5);
        assert_eq!(policy.base_delay_ms, 500);
        assert_eq!(policy.max_delay_ms, 60_000);
    }

    #[test]
    fn ceiling_doubles_then_caps() {
        let policy = RetryPolicy::default();
        let ceilings: Vec<u64> = (1..=10).map(|a| policy.backoff_ceiling_ms(a)).collect();
        assert_eq!(
            ceilings,
            vec![
                500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000
            ]
        );
        assert_eq!(policy.backoff_ceiling_ms(0), 500);
        assert_eq!(policy.backoff_ceiling_ms(64), 60_000);
        assert_eq!(policy.backoff_ceiling_ms(65), 60_000);
        assert_eq!(policy.backoff_ceiling_ms(u32::MAX), 60_000);
    }

    #[test]
    fn ceiling_with_extreme_settings() {
        let huge = RetryPolicy {
            max_attempts: u32::MAX,
            base_delay_ms: u64::MAX,
            max_delay_ms: u64::MAX,
        };
        assert_eq!(huge.backoff_ceiling_ms(1), u64::MAX);
        assert_eq!(huge.backoff_ceiling_ms(u32::MAX), u64::MAX);
        assert_eq!(
            huge.delay_ms(u32::MAX, u64::MAX),
            u64::MAX / 2 + u64::MAX % (u64::MAX / 2 + 1)
        );

        let zero = RetryPolicy {
            max_attempts: 0,
            base_delay_ms: 0,
            max_delay_ms: 0,
        };
        assert_eq!(zero.delay_ms(1, 12345), 0);
        assert_eq!(zero.delay_ms(u32::MAX, u64::MAX), 0);

        let base_above_max = RetryPolicy {
            max_attempts: 3,
            base_delay_ms: 10_000,
            max_delay_ms: 100,
        };
        assert_eq!(base_above_max.backoff_ceiling_ms(1), 100);
    }

    #[test]
    fn delay_is_jittered_within_upper_half() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay_ms(1, 0), 250);
        assert_eq!(policy.delay_ms(1, 250), 500);
        assert_eq!(policy.delay_ms(1, 251), 250);
        assert_eq!(policy.delay_ms(2, 7), 507);
        for jitter in [0, 1, 42, 1_000_003, u64::MAX] {
            for attempt in 0..=70 {
                let ceiling = policy.backoff_ceiling_ms(attempt);
                let delay = policy.delay_ms(attempt, jitter);
                assert!(delay >= ceiling / 2 && delay <= ceiling);
            }
        }
    }

    #[test]
    fn exhaustion() {
        let policy = RetryPolicy::default();
        assert!(!policy.is_exhausted(0));
        assert!(!policy.is_exhausted(4));
        assert!(policy.is_exhausted(5));
        assert!(policy.is_exhausted(6));
        let never = RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        };
        assert!(never.is_exhausted(0));
    }
}
