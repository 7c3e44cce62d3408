//! Identifiers, randomness and the wall clock, taken from WASI through `std` and `getrandom`.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, from the host's wall clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A random 64-bit number from the host's secure random source.
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // A host without a random source cannot run the shop at all; fall back to the clock.
    if getrandom::fill(&mut bytes).is_err() {
        return now_ms() as u64;
    }
    u64::from_le_bytes(bytes)
}

/// A new unique id: `prefix` followed by 24 random hex digits, e.g. `ord_5f0c...`.
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 12];
    if getrandom::fill(&mut bytes).is_err() {
        bytes[..8].copy_from_slice(&random_u64().to_le_bytes());
    }
    let mut id = String::with_capacity(prefix.len() + 25);
    id.push_str(prefix);
    id.push('_');
    for b in bytes {
        id.push_str(&format!("{b:02x}"));
    }
    id
}
