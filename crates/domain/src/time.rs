//! Timestamps: RFC 3339 text from Unix milliseconds, without a date crate.

/// Milliseconds in a second.
const MILLIS_PER_SECOND: i64 = 1_000;
/// Seconds in a day.
const SECONDS_PER_DAY: i64 = 86_400;

/// Formats Unix milliseconds as an RFC 3339 UTC timestamp with millisecond
/// precision, e.g. `2026-11-23T03:26:39.123Z`.
///
/// Works for every `i64`, including instants before 1970. Years outside
/// 0000..=9999 (which RFC 3339 cannot express) are written with a sign and
/// at least six digits, as ISO 8601's expanded form does (`+275760-…`).
pub fn rfc3339_from_millis(ms: i64) -> String {
    let seconds = ms.div_euclid(MILLIS_PER_SECOND);
    let millis = ms.rem_euclid(MILLIS_PER_SECOND);
    let days = seconds.div_euclid(SECONDS_PER_DAY);
    let second_of_day = seconds.rem_euclid(SECONDS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let hour = second_of_day / 3_600;
    let minute = second_of_day % 3_600 / 60;
    let second = second_of_day % 60;
    let year = if (0..=9_999).contains(&year) {
        format!("{year:04}")
    } else {
        format!("{year:+07}")
    };
    format!("{year}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}Z")
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day).
///
/// Howard Hinnant's `civil_from_days`; no overflow for any day count that
/// an `i64` of milliseconds can produce (|days| < 1.1e11).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097); // [0, 146096]
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365; // [0, 399]
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100); // [0, 365]
    let month_index = (5 * day_of_year + 2) / 153; // [0, 11], March = 0
    let day = day_of_year - (153 * month_index + 2) / 5 + 1; // [1, 31]
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    }; // [1, 12]
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Both are small and non-negative by construction.
    let month = u32::try_from(month).unwrap_or(1);
    let day = u32::try_from(day).unwrap_or(1);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(rfc3339_from_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339_from_millis(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339_from_millis(1_795_404_399_123),
            "2026-11-23T03:26:39.123Z"
        );
        assert_eq!(
            rfc3339_from_millis(1_700_000_000_000),
            "2023-11-14T22:13:20.000Z"
        );
        assert_eq!(
            rfc3339_from_millis(946_684_799_999),
            "1999-12-31T23:59:59.999Z"
        );
        assert_eq!(
            rfc3339_from_millis(4_107_542_400_000),
            "2100-03-01T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339_from_millis(253_402_300_799_999),
            "9999-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn before_the_epoch() {
        assert_eq!(rfc3339_from_millis(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_from_millis(-86_400_000), "1969-12-31T00:00:00.000Z");
        assert_eq!(
            rfc3339_from_millis(-62_135_596_800_000),
            "0001-01-01T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339_from_millis(-62_167_219_200_000),
            "0000-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn extreme_values_do_not_panic() {
        assert_eq!(
            rfc3339_from_millis(253_402_300_800_000),
            "+010000-01-01T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339_from_millis(-62_167_219_200_001),
            "-000001-12-31T23:59:59.999Z"
        );
        assert_eq!(
            rfc3339_from_millis(i64::MAX),
            "+292278994-08-17T07:12:55.807Z"
        );
        assert_eq!(
            rfc3339_from_millis(i64::MIN),
            "-292275055-05-16T16:47:04.192Z"
        );
    }

    #[test]
    fn every_day_of_a_leap_cycle_is_consecutive() {
        // Walk 400 years day by day and check dates advance correctly.
        let mut previous = civil_from_days(-1);
        for days in 0..146_097 {
            let current = civil_from_days(days);
            let (py, pm, pd) = previous;
            let (y, m, d) = current;
            let next_day = (y, m, d) == (py, pm, pd + 1);
            let next_month =
                (y == py && m == pm + 1 && d == 1) || (y == py + 1 && m == 1 && pm == 12 && d == 1);
            assert!(next_day || next_month, "{previous:?} -> {current:?}");
            previous = current;
        }
    }
}
