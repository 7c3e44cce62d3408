//! Infallible construction of HMAC-SHA256 instances.

use hmac::{Hmac, Mac, digest::KeyInit};
use sha2::{Digest, Sha256};

/// HMAC with SHA-256.
pub(crate) type HmacSha256 = Hmac<Sha256>;

/// SHA-256 block size in bytes: HMAC keys are hashed down (if longer) and
/// zero-padded to this length.
const BLOCK_SIZE: usize = 64;

/// Returns an HMAC-SHA256 instance keyed with `secret` (any length, including empty).
///
/// Builds the block-sized key exactly as RFC 2104 does (hash keys longer
/// than the block, zero-pad the rest), so the result equals
/// `Hmac::new_from_slice(secret)` without a fallible call.
pub(crate) fn hmac_sha256(secret: &[u8]) -> HmacSha256 {
    let mut block = [0u8; BLOCK_SIZE];
    if secret.len() > BLOCK_SIZE {
        let digest = Sha256::digest(secret);
        block[..digest.len()].copy_from_slice(&digest);
    } else {
        block[..secret.len()].copy_from_slice(secret);
    }
    <HmacSha256 as KeyInit>::new(&block.into())
}

/// Returns HMAC-SHA256(secret, message).
pub(crate) fn hmac_sha256_digest(secret: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = hmac_sha256(secret);
    mac.update(message);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(secret: &[u8], message: &[u8]) -> [u8; 32] {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(secret).expect("hmac accepts any key");
        mac.update(message);
        mac.finalize().into_bytes().into()
    }

    #[test]
    fn matches_rfc4231_test_case_2() {
        let tag = hmac_sha256_digest(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(tag),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn matches_rfc4231_test_case_6_long_key() {
        let key = [0xaau8; 131];
        let tag = hmac_sha256_digest(
            &key,
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            hex::encode(tag),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn equals_new_from_slice_for_all_key_lengths() {
        for length in 0..200usize {
            let key: Vec<u8> = (0..length).map(|i| (i * 7 + 3) as u8).collect();
            assert_eq!(
                hmac_sha256_digest(&key, b"message"),
                reference(&key, b"message"),
                "key length {length}"
            );
        }
    }
}
