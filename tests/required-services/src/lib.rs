//! What a test does when a server it needs (PostgreSQL, NATS, Redis, a real host) does not
//! answer: outside CI it says so on the terminal and passes; in CI, where `.ci/run` starts
//! every service and sets `CI=true`, it fails. Every suite decides through this one crate.

use std::io::Write;

/// Whether this run must have every service: `CI` set to anything but empty, `0` or `false`.
pub fn services_required() -> bool {
    required_by(std::env::var("CI").ok().as_deref())
}

fn required_by(ci: Option<&str>) -> bool {
    !matches!(ci.map(str::trim), None | Some("" | "0" | "false"))
}

/// Fails the test when services are required ([`services_required`]); otherwise writes
/// `SKIPPED: <why>` straight to the terminal (not through the harness's output capture,
/// which hides what a passing test prints) and returns, for the caller to skip.
pub fn skip_or_fail(why: &str) {
    if services_required() {
        panic!("CI needs this test's services: {why}");
    }
    let _ = writeln!(std::io::stderr().lock(), "\nSKIPPED: {why}\n");
}

#[cfg(test)]
mod tests {
    use super::required_by;

    #[test]
    fn ci_requires_services_unless_unset_empty_zero_or_false() {
        for ci in [Some("true"), Some("1"), Some("yes"), Some("TRUE")] {
            assert!(required_by(ci), "{ci:?}");
        }
        for ci in [None, Some(""), Some(" "), Some("0"), Some("false")] {
            assert!(!required_by(ci), "{ci:?}");
        }
    }
}
