//! Amounts of money as integer minor units (cents).
//!
//! All arithmetic is checked: an operation that would overflow returns
//! `None` instead of wrapping or panicking.

use core::fmt;

use serde::{Deserialize, Serialize};

/// An amount of money in integer minor units (cents); may be negative.
///
/// Serializes as a bare JSON integer of cents.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Money(i64);

impl Money {
    /// Zero cents.
    pub const ZERO: Money = Money(0);

    /// Number of cents in one whole unit of currency.
    pub const CENTS_PER_UNIT: i64 = 100;

    /// Returns the amount of `cents` minor units.
    pub const fn from_cents(cents: i64) -> Money {
        Money(cents)
    }

    /// Returns the amount in minor units (cents).
    pub const fn cents(self) -> i64 {
        self.0
    }

    /// Returns `units` whole units (×100 cents), or `None` if that overflows.
    pub const fn from_whole_units(units: i64) -> Option<Money> {
        match units.checked_mul(Self::CENTS_PER_UNIT) {
            Some(cents) => Some(Money(cents)),
            None => None,
        }
    }

    /// Returns `self + other`, or `None` on overflow.
    pub const fn checked_add(self, other: Money) -> Option<Money> {
        match self.0.checked_add(other.0) {
            Some(cents) => Some(Money(cents)),
            None => None,
        }
    }

    /// Returns `self - other`, or `None` on overflow.
    pub const fn checked_sub(self, other: Money) -> Option<Money> {
        match self.0.checked_sub(other.0) {
            Some(cents) => Some(Money(cents)),
            None => None,
        }
    }

    /// Returns `self × factor` (e.g. unit price × quantity), or `None` on overflow.
    pub const fn checked_mul(self, factor: u32) -> Option<Money> {
        match self.0.checked_mul(factor as i64) {
            Some(cents) => Some(Money(cents)),
            None => None,
        }
    }

    /// Returns true when the amount is below zero.
    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// Returns true when the amount is above zero.
    pub const fn is_positive(self) -> bool {
        self.0 > 0
    }

    /// Returns true when the amount is exactly zero.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Money {
    /// Formats as whole units with two decimals: `123.45`, `-0.05`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        // unsigned_abs handles i64::MIN without overflow.
        let magnitude = self.0.unsigned_abs();
        let per_unit = Self::CENTS_PER_UNIT.unsigned_abs();
        write!(
            f,
            "{sign}{}.{:02}",
            magnitude / per_unit,
            magnitude % per_unit
        )
    }
}

/// Adds up `amounts`, returning `None` if any intermediate sum overflows.
///
/// The sum of no amounts is [`Money::ZERO`].
pub fn sum<I: IntoIterator<Item = Money>>(amounts: I) -> Option<Money> {
    amounts
        .into_iter()
        .try_fold(Money::ZERO, Money::checked_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cents_round_trip() {
        assert_eq!(Money::from_cents(12_345).cents(), 12_345);
        assert_eq!(Money::ZERO.cents(), 0);
        assert_eq!(Money::default(), Money::ZERO);
    }

    #[test]
    fn whole_units_are_multiplied_by_one_hundred() {
        assert_eq!(Money::from_whole_units(7), Some(Money::from_cents(700)));
        assert_eq!(Money::from_whole_units(-3), Some(Money::from_cents(-300)));
        assert_eq!(Money::from_whole_units(i64::MAX), None);
        assert_eq!(Money::from_whole_units(i64::MIN), None);
        assert_eq!(
            Money::from_whole_units(i64::MAX / 100),
            Some(Money::from_cents(i64::MAX / 100 * 100))
        );
    }

    #[test]
    fn checked_add_and_sub_detect_overflow() {
        let one = Money::from_cents(1);
        assert_eq!(one.checked_add(one), Some(Money::from_cents(2)));
        assert_eq!(Money::from_cents(i64::MAX).checked_add(one), None);
        assert_eq!(Money::from_cents(i64::MIN).checked_sub(one), None);
        assert_eq!(
            Money::from_cents(5).checked_sub(Money::from_cents(7)),
            Some(Money::from_cents(-2))
        );
    }

    #[test]
    fn checked_mul_detects_overflow() {
        assert_eq!(
            Money::from_cents(250).checked_mul(4),
            Some(Money::from_cents(1000))
        );
        assert_eq!(Money::from_cents(-250).checked_mul(0), Some(Money::ZERO));
        assert_eq!(Money::from_cents(i64::MAX).checked_mul(2), None);
        assert_eq!(Money::from_cents(i64::MIN).checked_mul(u32::MAX), None);
        assert_eq!(
            Money::from_cents(i64::MAX).checked_mul(1),
            Some(Money::from_cents(i64::MAX))
        );
    }

    #[test]
    fn display_formats_two_decimals() {
        assert_eq!(Money::from_cents(12_345).to_string(), "123.45");
        assert_eq!(Money::from_cents(-5).to_string(), "-0.05");
        assert_eq!(Money::from_cents(0).to_string(), "0.00");
        assert_eq!(Money::from_cents(100).to_string(), "1.00");
        assert_eq!(Money::from_cents(-100).to_string(), "-1.00");
        assert_eq!(Money::from_cents(7).to_string(), "0.07");
        assert_eq!(
            Money::from_cents(i64::MIN).to_string(),
            "-92233720368547758.08"
        );
        assert_eq!(
            Money::from_cents(i64::MAX).to_string(),
            "92233720368547758.07"
        );
    }

    #[test]
    fn sign_predicates() {
        assert!(Money::from_cents(-1).is_negative());
        assert!(Money::from_cents(1).is_positive());
        assert!(Money::ZERO.is_zero());
        assert!(!Money::ZERO.is_positive() && !Money::ZERO.is_negative());
    }

    #[test]
    fn ordering_follows_cents() {
        assert!(Money::from_cents(-1) < Money::ZERO);
        assert!(Money::from_cents(10_000) >= Money::from_cents(10_000));
    }

    #[test]
    fn sum_adds_and_detects_overflow() {
        assert_eq!(sum([]), Some(Money::ZERO));
        assert_eq!(
            sum([1, 2, 3].map(Money::from_cents)),
            Some(Money::from_cents(6))
        );
        assert_eq!(
            sum([Money::from_cents(i64::MAX), Money::from_cents(1)]),
            None
        );
        assert_eq!(
            sum(vec![Money::from_cents(-5), Money::from_cents(5)]),
            Some(Money::ZERO)
        );
    }

    #[test]
    fn serializes_as_bare_integer() {
        let json = serde_json::to_string(&Money::from_cents(1999)).expect("serializes");
        assert_eq!(json, "1999");
        let back: Money = serde_json::from_str("-42").expect("deserializes");
        assert_eq!(back, Money::from_cents(-42));
        assert!(serde_json::from_str::<Money>("1.5").is_err());
        assert!(serde_json::from_str::<Money>("\"12\"").is_err());
    }
}
