//! Vouchers: which orders earn one, and the voucher's code.

use serde::{Deserialize, Serialize};

use crate::hmac_key::hmac_sha256_digest;
use crate::money::Money;

/// Number of hex characters of the HMAC kept in a voucher code.
const CODE_HEX_CHARS: usize = 12;

/// Rule for issuing vouchers: orders totalling at least `threshold` earn a
/// voucher worth `value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VoucherPolicy {
    /// Smallest order total that earns a voucher.
    pub threshold: Money,
    /// Value of the voucher issued.
    pub value: Money,
}

impl Default for VoucherPolicy {
    /// A 5.00 voucher for orders of 100.00 or more.
    fn default() -> Self {
        VoucherPolicy {
            threshold: Money::from_cents(10_000),
            value: Money::from_cents(500),
        }
    }
}

impl VoucherPolicy {
    /// Returns the voucher value earned by an order of `order_total`, or
    /// `None` if the total is below the threshold.
    pub fn voucher_for(&self, order_total: Money) -> Option<Money> {
        (order_total >= self.threshold).then_some(self.value)
    }
}

/// Returns the voucher code for `order_id`: `V-` followed by the first 12
/// upper-case hex characters of HMAC-SHA256(`secret`, `order_id`).
///
/// Deterministic, so re-processing the same order yields the same code.
pub fn voucher_code(order_id: &str, secret: &[u8]) -> String {
    let digest = hmac_sha256_digest(secret, order_id.as_bytes());
    let hex = hex::encode_upper(digest);
    format!("V-{}", hex.get(..CODE_HEX_CHARS).unwrap_or(&hex))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy() {
        let policy = VoucherPolicy::default();
        assert_eq!(policy.threshold, Money::from_cents(10_000));
        assert_eq!(policy.value, Money::from_cents(500));
    }

    #[test]
    fn voucher_only_at_or_above_threshold() {
        let policy = VoucherPolicy::default();
        assert_eq!(policy.voucher_for(Money::from_cents(9_999)), None);
        assert_eq!(
            policy.voucher_for(Money::from_cents(10_000)),
            Some(Money::from_cents(500))
        );
        assert_eq!(
            policy.voucher_for(Money::from_cents(i64::MAX)),
            Some(Money::from_cents(500))
        );
        assert_eq!(policy.voucher_for(Money::from_cents(-1)), None);
    }

    #[test]
    fn custom_policy() {
        let policy = VoucherPolicy {
            threshold: Money::ZERO,
            value: Money::from_cents(1),
        };
        assert_eq!(policy.voucher_for(Money::ZERO), Some(Money::from_cents(1)));
    }

    #[test]
    fn code_matches_hmac_prefix() {
        // HMAC-SHA256("Jefe", "what do ya want for nothing?") = 5bdcc146bf60...
        assert_eq!(
            voucher_code("what do ya want for nothing?", b"Jefe"),
            "V-5BDCC146BF60"
        );
    }

    #[test]
    fn code_is_deterministic_and_keyed() {
        let code = voucher_code("order-1", b"secret");
        assert_eq!(code, voucher_code("order-1", b"secret"));
        assert_eq!(code.len(), 2 + CODE_HEX_CHARS);
        assert!(code.starts_with("V-"));
        assert!(
            code[2..]
                .chars()
                .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c))
        );
        assert_ne!(code, voucher_code("order-2", b"secret"));
        assert_ne!(code, voucher_code("order-1", b"other"));
        assert_eq!(voucher_code("", b"").len(), 14);
    }
}
