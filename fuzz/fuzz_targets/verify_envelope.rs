//! Fuzzes what a service does with the bytes of an incoming event
//! (`service_kit::messaging` inbox): decode the envelope, then verify its signature.
//!
//! Checks: nothing panics; a decoded envelope encodes and decodes back to itself; an
//! envelope verifies only if its signature is exactly the one signing its content
//! computes (so arbitrary bytes never verify unless they carry that signature).

#![no_main]

use libfuzzer_sys::fuzz_target;
use shop_domain::envelope::{Envelope, SignatureError};

/// The secret the seed corpus is signed with, so seeds reach the matching path.
const SECRET: &[u8] = b"fuzz-event-secret";

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = Envelope::decode(data) else {
        return;
    };
    assert_eq!(Envelope::decode(&envelope.encode()).as_ref(), Ok(&envelope));
    let expected = envelope.clone().signed(SECRET).signature;
    match envelope.verify(SECRET) {
        Ok(()) => assert_eq!(envelope.signature, expected),
        Err(SignatureError::Missing) => assert!(envelope.signature.is_empty()),
        Err(SignatureError::Malformed) => assert!(
            envelope.signature.len() != 64
                || !envelope
                    .signature
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        ),
        Err(SignatureError::Mismatch) => assert_ne!(envelope.signature, expected),
    }
});
