//! Bearer tokens: HS256 JSON Web Tokens carrying a subject, role and expiry.
//!
//! Only HS256 is accepted; the header's `alg` must be exactly `"HS256"`
//! (`typ` may be present), so `alg: none` and algorithm-confusion tokens are
//! refused before the signature is even looked at.

use core::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::hmac_key::{hmac_sha256, hmac_sha256_digest};

/// What a token holder may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Places and cancels their own orders.
    Customer,
    /// Manages products, ships and delivers orders.
    Staff,
    /// Everything staff can do, and more.
    Admin,
}

impl Role {
    /// Returns the lowercase wire name, e.g. `"staff"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Staff => "staff",
            Role::Admin => "admin",
        }
    }

    /// Parses a lowercase wire name; `None` for anything else.
    pub fn parse(name: &str) -> Option<Role> {
        [Role::Customer, Role::Staff, Role::Admin]
            .into_iter()
            .find(|role| role.as_str() == name)
    }

    /// Returns true for roles with staff permissions (staff and admin).
    pub const fn allows_staff(&self) -> bool {
        matches!(self, Role::Staff | Role::Admin)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The claims a token carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: who the token was issued to (the customer's email or a staff id).
    pub sub: String,
    /// What the subject may do.
    pub role: Role,
    /// Expiry as Unix seconds; the token is invalid from this instant on.
    pub exp: i64,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthError {
    /// Not three base64url segments of JSON objects.
    Malformed,
    /// The header names an algorithm other than HS256.
    UnsupportedAlgorithm,
    /// The signature does not match.
    BadSignature,
    /// `exp` is at or before the current time.
    Expired,
    /// The claims are missing, mistyped, or `sub` is empty.
    InvalidClaims,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthError::Malformed => "malformed token",
            AuthError::UnsupportedAlgorithm => "unsupported token algorithm",
            AuthError::BadSignature => "bad token signature",
            AuthError::Expired => "token expired",
            AuthError::InvalidClaims => "invalid token claims",
        })
    }
}

impl std::error::Error for AuthError {}

/// The only accepted algorithm.
const ALGORITHM: &str = "HS256";

/// Returns an HS256 token for `claims`, signed with `secret`.
pub fn mint_token(claims: &Claims, secret: &[u8]) -> String {
    let mut header = Map::new();
    header.insert("alg".into(), Value::String(ALGORITHM.into()));
    header.insert("typ".into(), Value::String("JWT".into()));

    let mut payload = Map::new();
    payload.insert("sub".into(), Value::String(claims.sub.clone()));
    payload.insert("role".into(), Value::String(claims.role.as_str().into()));
    payload.insert("exp".into(), Value::from(claims.exp));

    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(Value::Object(header).to_string()),
        URL_SAFE_NO_PAD.encode(Value::Object(payload).to_string())
    );
    let signature = hmac_sha256_digest(secret, signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// Verifies an HS256 `token` against `secret` at `now_unix_secs` and
/// returns its claims.
///
/// Checks, in order: three segments with a JSON-object header
/// ([`AuthError::Malformed`]), `alg` is `HS256`
/// ([`AuthError::UnsupportedAlgorithm`]), the signature in constant time
/// ([`AuthError::BadSignature`]), the claims and a non-empty `sub`
/// ([`AuthError::InvalidClaims`]), and finally `exp > now_unix_secs`
/// ([`AuthError::Expired`]).
pub fn verify_token(token: &str, secret: &[u8], now_unix_secs: i64) -> Result<Claims, AuthError> {
    let mut segments = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(AuthError::Malformed);
    };

    let header = decode_json_object(header_b64)?;
    check_header(&header)?;

    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| AuthError::Malformed)?;
    let mut mac = hmac_sha256(secret);
    mac.update(header_b64.as_bytes());
    mac.update(b".");
    mac.update(payload_b64.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| AuthError::BadSignature)?;

    let payload = decode_json_object(payload_b64)?;
    let claims: Claims =
        serde_json::from_value(Value::Object(payload)).map_err(|_| AuthError::InvalidClaims)?;
    if claims.sub.is_empty() {
        return Err(AuthError::InvalidClaims);
    }
    if claims.exp <= now_unix_secs {
        return Err(AuthError::Expired);
    }
    Ok(claims)
}

/// Decodes a base64url segment holding a JSON object.
fn decode_json_object(segment: &str) -> Result<Map<String, Value>, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| AuthError::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(AuthError::Malformed),
    }
}

/// Accepts only `{"alg":"HS256"}` headers, optionally with a string `typ`.
fn check_header(header: &Map<String, Value>) -> Result<(), AuthError> {
    match header.get("alg") {
        Some(Value::String(alg)) if alg == ALGORITHM => {}
        Some(_) => return Err(AuthError::UnsupportedAlgorithm),
        None => return Err(AuthError::Malformed),
    }
    if header.get("typ").is_some_and(|typ| !typ.is_string()) {
        return Err(AuthError::Malformed);
    }
    // Critical extensions must be understood (RFC 7515 §4.1.11); we support none.
    if header.contains_key("crit") {
        return Err(AuthError::UnsupportedAlgorithm);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"token-secret";
    const NOW: i64 = 1_800_000_000;

    fn claims(role: Role) -> Claims {
        Claims {
            sub: "ada@example.com".into(),
            role,
            exp: NOW + 3600,
        }
    }

    fn b64(text: &str) -> String {
        URL_SAFE_NO_PAD.encode(text)
    }

    /// Builds a token from raw header and payload JSON, signed with SECRET.
    fn raw_token(header: &str, payload: &str) -> String {
        let input = format!("{}.{}", b64(header), b64(payload));
        let signature = hmac_sha256_digest(SECRET, input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    const PAYLOAD: &str = r#"{"sub":"ada@example.com","role":"customer","exp":1800003600}"#;

    #[test]
    fn roles() {
        assert!(!Role::Customer.allows_staff());
        assert!(Role::Staff.allows_staff());
        assert!(Role::Admin.allows_staff());
        for role in [Role::Customer, Role::Staff, Role::Admin] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
            assert_eq!(
                serde_json::to_string(&role).expect("serializes"),
                format!("\"{role}\"")
            );
        }
        assert_eq!(Role::parse("Admin"), None);
    }

    #[test]
    fn round_trip() {
        for role in [Role::Customer, Role::Staff, Role::Admin] {
            let token = mint_token(&claims(role), SECRET);
            assert_eq!(token.split('.').count(), 3);
            assert_eq!(verify_token(&token, SECRET, NOW), Ok(claims(role)));
        }
    }

    #[test]
    fn header_is_hs256_jwt() {
        let token = mint_token(&claims(Role::Staff), SECRET);
        let header = token.split('.').next().expect("header");
        let decoded = URL_SAFE_NO_PAD.decode(header).expect("base64");
        let value: Value = serde_json::from_slice(&decoded).expect("json");
        assert_eq!(value, serde_json::json!({"alg": "HS256", "typ": "JWT"}));
    }

    #[test]
    fn compatible_with_standard_jwt_vector() {
        // Structure of jwt.io's HS256 example with our claim set, signed by hand.
        let token = raw_token(r#"{"alg":"HS256"}"#, PAYLOAD);
        let verified = verify_token(&token, SECRET, NOW).expect("valid");
        assert_eq!(verified.role, Role::Customer);
        assert_eq!(verified.exp, 1_800_003_600);
    }

    #[test]
    fn expiry_is_exclusive() {
        let token = mint_token(&claims(Role::Customer), SECRET);
        assert!(verify_token(&token, SECRET, NOW + 3599).is_ok());
        assert_eq!(
            verify_token(&token, SECRET, NOW + 3600),
            Err(AuthError::Expired)
        );
        assert_eq!(
            verify_token(&token, SECRET, i64::MAX),
            Err(AuthError::Expired)
        );
    }

    #[test]
    fn wrong_secret_or_tampering() {
        let token = mint_token(&claims(Role::Customer), SECRET);
        assert_eq!(
            verify_token(&token, b"other", NOW),
            Err(AuthError::BadSignature)
        );

        let parts: Vec<&str> = token.split('.').collect();
        let forged_payload = b64(r#"{"sub":"ada@example.com","role":"admin","exp":1800003600}"#);
        let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert_eq!(
            verify_token(&forged, SECRET, NOW),
            Err(AuthError::BadSignature)
        );

        let empty_signature = format!("{}.{}.", parts[0], parts[1]);
        assert_eq!(
            verify_token(&empty_signature, SECRET, NOW),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn other_algorithms_are_refused() {
        for header in [
            r#"{"alg":"none"}"#,
            r#"{"alg":"HS512"}"#,
            r#"{"alg":"RS256"}"#,
            r#"{"alg":"hs256"}"#,
            r#"{"alg":null}"#,
            r#"{"alg":"HS256","crit":["exp"]}"#,
        ] {
            assert_eq!(
                verify_token(&raw_token(header, PAYLOAD), SECRET, NOW),
                Err(AuthError::UnsupportedAlgorithm),
                "{header}"
            );
        }
        let none = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(PAYLOAD));
        assert_eq!(
            verify_token(&none, SECRET, NOW),
            Err(AuthError::UnsupportedAlgorithm)
        );
    }

    #[test]
    fn typ_is_optional() {
        assert!(verify_token(&raw_token(r#"{"alg":"HS256"}"#, PAYLOAD), SECRET, NOW).is_ok());
        assert!(
            verify_token(
                &raw_token(r#"{"typ":"JWT","alg":"HS256"}"#, PAYLOAD),
                SECRET,
                NOW
            )
            .is_ok()
        );
        assert_eq!(
            verify_token(
                &raw_token(r#"{"alg":"HS256","typ":1}"#, PAYLOAD),
                SECRET,
                NOW
            ),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn malformed_tokens() {
        for token in [
            "",
            "abc",
            "a.b",
            "a.b.c.d",
            "..",
            "!!!.e30.sig",
            "e30.e30.e30", // header {} has no alg
        ] {
            assert_eq!(
                verify_token(token, SECRET, NOW),
                Err(AuthError::Malformed),
                "{token}"
            );
        }
        // Header that is JSON but not an object.
        assert_eq!(
            verify_token(&raw_token("[]", PAYLOAD), SECRET, NOW),
            Err(AuthError::Malformed)
        );
        // Padded base64 is not base64url without padding.
        let token = mint_token(&claims(Role::Customer), SECRET);
        let padded = format!("{token}=");
        assert_eq!(
            verify_token(&padded, SECRET, NOW),
            Err(AuthError::Malformed)
        );
        // Payload that is not JSON, correctly signed.
        let input = format!("{}.{}", b64(r#"{"alg":"HS256"}"#), b64("not json"));
        let signature = URL_SAFE_NO_PAD.encode(hmac_sha256_digest(SECRET, input.as_bytes()));
        assert_eq!(
            verify_token(&format!("{input}.{signature}"), SECRET, NOW),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn invalid_claims() {
        for payload in [
            r#"{"sub":"","role":"customer","exp":1800003600}"#,
            r#"{"role":"customer","exp":1800003600}"#,
            r#"{"sub":"a","role":"owner","exp":1800003600}"#,
            r#"{"sub":"a","role":"customer","exp":"1800003600"}"#,
            r#"{"sub":"a","role":"customer","exp":1800003600.5}"#,
            r#"{"sub":"a","role":"customer"}"#,
            r#"{"sub":7,"role":"customer","exp":1800003600}"#,
        ] {
            assert_eq!(
                verify_token(&raw_token(r#"{"alg":"HS256"}"#, payload), SECRET, NOW),
                Err(AuthError::InvalidClaims),
                "{payload}"
            );
        }
        // Extra claims are ignored.
        let extra = r#"{"sub":"a","role":"staff","exp":1800003600,"iat":1}"#;
        assert!(verify_token(&raw_token(r#"{"alg":"HS256"}"#, extra), SECRET, NOW).is_ok());
    }

    #[test]
    fn error_messages() {
        assert_eq!(AuthError::Expired.to_string(), "token expired");
        assert_eq!(AuthError::BadSignature.to_string(), "bad token signature");
        assert_eq!(AuthError::Malformed.to_string(), "malformed token");
        assert_eq!(
            AuthError::UnsupportedAlgorithm.to_string(),
            "unsupported token algorithm"
        );
        assert_eq!(AuthError::InvalidClaims.to_string(), "invalid token claims");
    }
}
