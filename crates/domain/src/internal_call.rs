//! Signed internal calls: the gateway vouches for the caller it authenticated.
//!
//! A service takes the caller's identity (actor and role) from the gateway's request. On
//! a host where a service's listener is reachable by other local processes (wasmCloud's
//! http-server links on 127.0.0.1), a bare header would let anyone act as staff or admin.
//! So the gateway signs each call with HMAC-SHA256 over what the service acts on (method,
//! path, query, actor, role, idempotency key, the time and the body's SHA-256), and the
//! service refuses a call whose signature is missing, forged or older than
//! [`MAX_AGE_MS`]. The key is the deployment's event secret, kept apart from event
//! signatures by the `shop-internal-call/v1` tag that starts every signed text.

use hmac::Mac;
use sha2::{Digest, Sha256};

use crate::hmac_key::{hmac_sha256, hmac_sha256_digest};

/// How far a call's time may lie from the receiver's clock, either way.
pub const MAX_AGE_MS: i64 = 30_000;

/// What a call's signature covers.
#[derive(Debug, Clone, Copy)]
pub struct InternalCall<'a> {
    /// Upper-case method.
    pub method: &'a str,
    /// Path without query.
    pub path: &'a str,
    /// Raw query string, possibly empty.
    pub query: &'a str,
    /// Who the gateway authenticated (empty for none).
    pub actor: &'a str,
    /// Their role (empty for none).
    pub role: &'a str,
    /// The client's idempotency key (empty for none).
    pub idempotency_key: &'a str,
    /// The body bytes.
    pub body: &'a [u8],
}

/// Why a call's signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallSignatureError {
    /// The call carries no signature.
    Missing,
    /// The signature is not `<unix ms>.<64 lower-case hex digits>`.
    Malformed,
    /// Its time is more than [`MAX_AGE_MS`] away from now.
    Stale,
    /// It does not match the call and the secret.
    Mismatch,
}

impl std::fmt::Display for CallSignatureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CallSignatureError::Missing => "the call is not signed",
            CallSignatureError::Malformed => "the call's signature is malformed",
            CallSignatureError::Stale => "the call's signature is too old or from the future",
            CallSignatureError::Mismatch => "the call's signature does not match",
        })
    }
}

impl InternalCall<'_> {
    /// The text the signature covers, for a call made at `at_ms`.
    fn signed_text(&self, at_ms: i64) -> Vec<u8> {
        let body_hash = hex::encode(Sha256::digest(self.body));
        [
            "shop-internal-call/v1",
            self.method,
            self.path,
            self.query,
            self.actor,
            self.role,
            self.idempotency_key,
            &at_ms.to_string(),
            &body_hash,
        ]
        .iter()
        .map(|part| format!("{}:{part}", part.len()))
        .collect::<Vec<_>>()
        .join("\n")
        .into_bytes()
    }

    /// The signature of this call made at `at_ms`: `<at_ms>.<hex HMAC>`.
    pub fn sign(&self, secret: &[u8], at_ms: i64) -> String {
        let tag = hmac_sha256_digest(secret, &self.signed_text(at_ms));
        format!("{at_ms}.{}", hex::encode(tag))
    }

    /// Checks `signature` (as [`InternalCall::sign`] makes it) against this call, `secret`
    /// and the receiver's clock `now_ms`, comparing in constant time.
    pub fn verify(
        &self,
        secret: &[u8],
        signature: Option<&str>,
        now_ms: i64,
    ) -> Result<(), CallSignatureError> {
        let signature = signature.ok_or(CallSignatureError::Missing)?;
        let (at, tag) = signature
            .split_once('.')
            .ok_or(CallSignatureError::Malformed)?;
        let at_ms: i64 = at.parse().map_err(|_| CallSignatureError::Malformed)?;
        let is_lowercase_hex = tag
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if tag.len() != 64 || !is_lowercase_hex {
            return Err(CallSignatureError::Malformed);
        }
        if (now_ms - at_ms).abs() > MAX_AGE_MS {
            return Err(CallSignatureError::Stale);
        }
        let tag = hex::decode(tag).map_err(|_| CallSignatureError::Malformed)?;
        let mut mac = hmac_sha256(secret);
        mac.update(&self.signed_text(at_ms));
        mac.verify_slice(&tag)
            .map_err(|_| CallSignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"internal-secret";
    const NOW: i64 = 1_800_000_000_000;

    fn call() -> InternalCall<'static> {
        InternalCall {
            method: "POST",
            path: "/api/v1/accounts/a@example.com/credit",
            query: "",
            actor: "staff@shop.test",
            role: "staff",
            idempotency_key: "",
            body: br#"{"amount_cents":500}"#,
        }
    }

    #[test]
    fn a_signed_call_verifies_within_the_window() {
        let signature = call().sign(SECRET, NOW);
        assert_eq!(call().verify(SECRET, Some(&signature), NOW), Ok(()));
        assert_eq!(
            call().verify(SECRET, Some(&signature), NOW + MAX_AGE_MS),
            Ok(())
        );
        assert_eq!(
            call().verify(SECRET, Some(&signature), NOW + MAX_AGE_MS + 1),
            Err(CallSignatureError::Stale)
        );
        assert_eq!(
            call().verify(SECRET, Some(&signature), NOW - MAX_AGE_MS - 1),
            Err(CallSignatureError::Stale)
        );
    }

    #[test]
    fn every_signed_part_and_the_secret_matter() {
        let signature = call().sign(SECRET, NOW);
        let changed = [
            InternalCall {
                method: "PUT",
                ..call()
            },
            InternalCall {
                path: "/api/v1/accounts/b@example.com/credit",
                ..call()
            },
            InternalCall {
                query: "x=1",
                ..call()
            },
            InternalCall {
                actor: "mallory@example.com",
                ..call()
            },
            InternalCall {
                role: "admin",
                ..call()
            },
            InternalCall {
                idempotency_key: "k",
                ..call()
            },
            InternalCall {
                body: br#"{"amount_cents":50000}"#,
                ..call()
            },
        ];
        for forged in changed {
            assert_eq!(
                forged.verify(SECRET, Some(&signature), NOW),
                Err(CallSignatureError::Mismatch),
                "{forged:?}"
            );
        }
        assert_eq!(
            call().verify(b"another secret", Some(&signature), NOW),
            Err(CallSignatureError::Mismatch)
        );
        // The parts are length-prefixed: moving text from one part to the next changes it.
        let shifted = InternalCall {
            actor: "staff@shop.tes",
            role: "tstaff",
            ..call()
        };
        assert_eq!(
            shifted.verify(SECRET, Some(&signature), NOW),
            Err(CallSignatureError::Mismatch)
        );
    }

    #[test]
    fn missing_and_malformed_signatures_are_refused() {
        assert_eq!(
            call().verify(SECRET, None, NOW),
            Err(CallSignatureError::Missing)
        );
        for bad in [
            "",
            "abc",
            "12.zz",
            &format!("{NOW}.{}", "A".repeat(64)),
            &format!("x.{}", "a".repeat(64)),
        ] {
            assert_eq!(
                call().verify(SECRET, Some(bad), NOW),
                Err(CallSignatureError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn an_event_signature_key_is_not_a_call_signature() {
        // The same secret signs events; the tag keeps the two kinds of text apart.
        let text = call().signed_text(NOW);
        assert!(text.starts_with(b"21:shop-internal-call/v1\n"));
    }
}
