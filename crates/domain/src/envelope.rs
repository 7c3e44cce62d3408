//! The signed event envelope exchanged between the pipeline's services.
//!
//! The signature is HMAC-SHA256 (lowercase hex) over a canonical
//! serialization of the envelope's content: the compact JSON array
//! `[id, type, subject, time, correlation_id, data]`, with the keys of every
//! object inside `data` sorted. `attempt` is transport metadata that changes
//! on re-sends and is deliberately not signed; neither is the signature.

use core::fmt;

use hmac::Mac;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::hmac_key::{hmac_sha256, hmac_sha256_digest};

/// Names of the event types carried in [`Envelope::event_type`].
pub mod event_types {
    /// An order was accepted and awaits its checks.
    pub const ORDER_PLACED: &str = "order.placed";
    /// An order passed its checks.
    pub const ORDER_CONFIRMED: &str = "order.confirmed";
    /// An order failed a check.
    pub const ORDER_REJECTED: &str = "order.rejected";
    /// The customer cancelled an order.
    pub const ORDER_CANCELLED: &str = "order.cancelled";
    /// An order was shipped.
    pub const ORDER_SHIPPED: &str = "order.shipped";
    /// An order was delivered.
    pub const ORDER_DELIVERED: &str = "order.delivered";
    /// The customer's balance covers the order and was held.
    pub const BALANCE_HELD: &str = "balance.held";
    /// The customer's balance does not cover the order.
    pub const BALANCE_REJECTED: &str = "balance.rejected";
    /// Stock for the order was held.
    pub const STOCK_HELD: &str = "stock.held";
    /// Stock for the order is insufficient.
    pub const STOCK_REJECTED: &str = "stock.rejected";
    /// A voucher was issued for an order.
    pub const VOUCHER_ISSUED: &str = "voucher.issued";

    /// Every event type above.
    pub const ALL: [&str; 11] = [
        ORDER_PLACED,
        ORDER_CONFIRMED,
        ORDER_REJECTED,
        ORDER_CANCELLED,
        ORDER_SHIPPED,
        ORDER_DELIVERED,
        BALANCE_HELD,
        BALANCE_REJECTED,
        STOCK_HELD,
        STOCK_REJECTED,
        VOUCHER_ISSUED,
    ];
}

/// An event with its metadata and HMAC signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique id of this event (stays the same across re-sends).
    pub id: String,
    /// Event type, one of [`event_types`].
    #[serde(rename = "type")]
    pub event_type: String,
    /// What the event is about, e.g. the order id.
    pub subject: String,
    /// When the event happened, RFC 3339.
    pub time: String,
    /// Id tying together all events caused by one request.
    pub correlation_id: String,
    /// Delivery attempt, starting at 1 (not signed).
    pub attempt: u32,
    /// Event-specific payload.
    pub data: Value,
    /// Lowercase hex HMAC-SHA256 of the canonical content; empty if unsigned.
    pub signature: String,
}

/// Why an envelope's signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureError {
    /// The envelope carries no signature.
    Missing,
    /// The signature is not 64 lowercase hex characters.
    Malformed,
    /// The signature does not match the content and secret.
    Mismatch,
}

impl fmt::Display for SignatureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignatureError::Missing => "envelope signature is missing",
            SignatureError::Malformed => "envelope signature is not lowercase hex HMAC-SHA256",
            SignatureError::Mismatch => "envelope signature does not match",
        })
    }
}

impl std::error::Error for SignatureError {}

/// Bytes that could not be decoded as an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EnvelopeError {
    /// What was wrong, e.g. ``missing field `id` at line 1 column 2``.
    pub message: String,
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid envelope: {}", self.message)
    }
}

impl std::error::Error for EnvelopeError {}

/// Length in hex characters of an HMAC-SHA256 signature.
const SIGNATURE_HEX_CHARS: usize = 64;

impl Envelope {
    /// Creates an unsigned envelope for a first delivery (`attempt` 1).
    pub fn new(
        id: impl Into<String>,
        event_type: impl Into<String>,
        subject: impl Into<String>,
        time: impl Into<String>,
        correlation_id: impl Into<String>,
        data: Value,
    ) -> Envelope {
        Envelope {
            id: id.into(),
            event_type: event_type.into(),
            subject: subject.into(),
            time: time.into(),
            correlation_id: correlation_id.into(),
            attempt: 1,
            data,
            signature: String::new(),
        }
    }

    /// Returns the bytes the signature covers: compact JSON of
    /// `[id, type, subject, time, correlation_id, data]`, object keys in
    /// `data` sorted recursively.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let content = Value::Array(vec![
            Value::String(self.id.clone()),
            Value::String(self.event_type.clone()),
            Value::String(self.subject.clone()),
            Value::String(self.time.clone()),
            Value::String(self.correlation_id.clone()),
            sorted_keys(&self.data),
        ]);
        // Display of a Value is its compact JSON, identical to serde_json::to_vec.
        content.to_string().into_bytes()
    }

    /// Computes the signature for `secret` and stores it in `signature`.
    pub fn sign(&mut self, secret: &[u8]) {
        self.signature = hex::encode(hmac_sha256_digest(secret, &self.canonical_bytes()));
    }

    /// Returns the envelope signed with `secret`.
    pub fn signed(mut self, secret: &[u8]) -> Self {
        self.sign(secret);
        self
    }

    /// Checks the signature against the content and `secret`, comparing in
    /// constant time.
    pub fn verify(&self, secret: &[u8]) -> Result<(), SignatureError> {
        if self.signature.is_empty() {
            return Err(SignatureError::Missing);
        }
        let is_lowercase_hex = self
            .signature
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if self.signature.len() != SIGNATURE_HEX_CHARS || !is_lowercase_hex {
            return Err(SignatureError::Malformed);
        }
        let tag = hex::decode(&self.signature).map_err(|_| SignatureError::Malformed)?;
        let mut mac = hmac_sha256(secret);
        mac.update(&self.canonical_bytes());
        mac.verify_slice(&tag).map_err(|_| SignatureError::Mismatch)
    }

    /// Returns a copy for delivery attempt number `attempt`; the signature
    /// stays valid because `attempt` is not signed.
    pub fn with_attempt(&self, attempt: u32) -> Envelope {
        Envelope {
            attempt,
            ..self.clone()
        }
    }

    /// Returns the envelope as a JSON object value.
    pub fn to_value(&self) -> Value {
        let mut object = Map::new();
        object.insert("id".into(), Value::String(self.id.clone()));
        object.insert("type".into(), Value::String(self.event_type.clone()));
        object.insert("subject".into(), Value::String(self.subject.clone()));
        object.insert("time".into(), Value::String(self.time.clone()));
        object.insert(
            "correlation_id".into(),
            Value::String(self.correlation_id.clone()),
        );
        object.insert("attempt".into(), Value::from(self.attempt));
        object.insert("data".into(), self.data.clone());
        object.insert("signature".into(), Value::String(self.signature.clone()));
        Value::Object(object)
    }

    /// Returns the envelope as compact JSON bytes, readable by [`decode`].
    pub fn encode(&self) -> Vec<u8> {
        self.to_value().to_string().into_bytes()
    }

    /// Parses an envelope from JSON bytes; same as [`decode`].
    pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        decode(bytes)
    }
}

/// Parses an envelope from JSON bytes. Malformed JSON, missing fields and
/// wrongly typed fields are errors; unknown fields are ignored. The
/// signature is not checked (see [`Envelope::verify`]).
pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
    serde_json::from_slice(bytes).map_err(|error| EnvelopeError {
        message: error.to_string(),
    })
}

/// Returns `value` with the keys of every object, at any depth, in sorted order.
fn sorted_keys(value: &Value) -> Value {
    match value {
        Value::Object(object) => {
            let mut entries: Vec<(&String, &Value)> = object.iter().collect();
            entries.sort_by_key(|(key, _)| *key);
            let mut sorted = Map::new();
            for (key, inner) in entries {
                sorted.insert(key.clone(), sorted_keys(inner));
            }
            Value::Object(sorted)
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted_keys).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"event-secret";

    fn sample() -> Envelope {
        Envelope::new(
            "evt-1",
            event_types::ORDER_PLACED,
            "order-42",
            "2026-01-02T03:04:05.678Z",
            "corr-9",
            json!({"total_cents": 1500, "customer": "ada@example.com", "items": [{"sku": "A", "quantity": 1}]}),
        )
    }

    #[test]
    fn new_is_unsigned_first_attempt() {
        let envelope = sample();
        assert_eq!(envelope.attempt, 1);
        assert!(envelope.signature.is_empty());
        assert_eq!(envelope.verify(SECRET), Err(SignatureError::Missing));
    }

    #[test]
    fn sign_then_verify() {
        let envelope = sample().signed(SECRET);
        assert_eq!(envelope.signature.len(), 64);
        assert!(
            envelope
                .signature
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(envelope.verify(SECRET), Ok(()));
        assert_eq!(envelope.verify(b"other"), Err(SignatureError::Mismatch));
    }

    #[test]
    fn canonical_bytes_layout() {
        let envelope = Envelope::new(
            "i",
            "t",
            "s",
            "tm",
            "c",
            json!({"b": 1, "a": {"d": [{"z": 1, "y": 2}], "c": null}}),
        );
        assert_eq!(
            String::from_utf8(envelope.canonical_bytes()).expect("utf8"),
            r#"["i","t","s","tm","c",{"a":{"c":null,"d":[{"y":2,"z":1}]},"b":1}]"#
        );
    }

    #[test]
    fn signature_is_hmac_of_canonical_bytes() {
        let envelope = sample().signed(SECRET);
        let expected = hex::encode(hmac_sha256_digest(SECRET, &envelope.canonical_bytes()));
        assert_eq!(envelope.signature, expected);
    }

    #[test]
    fn known_signature_vector() {
        let envelope = Envelope::new("i", "t", "s", "tm", "c", json!(null)).signed(b"k");
        // HMAC-SHA256("k", "[\"i\",\"t\",\"s\",\"tm\",\"c\",null]")
        let expected = hex::encode(hmac_sha256_digest(b"k", br#"["i","t","s","tm","c",null]"#));
        assert_eq!(envelope.signature, expected);
    }

    #[test]
    fn attempt_is_not_signed() {
        let envelope = sample().signed(SECRET);
        let resent = envelope.with_attempt(4);
        assert_eq!(resent.attempt, 4);
        assert_eq!(resent.verify(SECRET), Ok(()));
    }

    #[test]
    fn every_content_field_is_signed() {
        let signed = sample().signed(SECRET);
        let tampered: Vec<Envelope> = vec![
            Envelope {
                id: "evt-2".into(),
                ..signed.clone()
            },
            Envelope {
                event_type: event_types::ORDER_CONFIRMED.into(),
                ..signed.clone()
            },
            Envelope {
                subject: "order-43".into(),
                ..signed.clone()
            },
            Envelope {
                time: "2026-01-02T03:04:05.679Z".into(),
                ..signed.clone()
            },
            Envelope {
                correlation_id: "corr-8".into(),
                ..signed.clone()
            },
            Envelope {
                data: json!({"total_cents": 1}),
                ..signed.clone()
            },
        ];
        for envelope in tampered {
            assert_eq!(
                envelope.verify(SECRET),
                Err(SignatureError::Mismatch),
                "{envelope:?}"
            );
        }
    }

    #[test]
    fn fields_cannot_be_shifted_between_positions() {
        let a = Envelope::new("ab", "c", "s", "t", "x", json!(1)).signed(SECRET);
        let b = Envelope {
            id: "a".into(),
            event_type: "bc".into(),
            ..a.clone()
        };
        assert_eq!(b.verify(SECRET), Err(SignatureError::Mismatch));
    }

    #[test]
    fn data_key_order_does_not_matter() {
        let first: Value = serde_json::from_str(r#"{"b":1,"a":{"y":2,"x":1}}"#).expect("json");
        let second: Value = serde_json::from_str(r#"{"a":{"x":1,"y":2},"b":1}"#).expect("json");
        let signed = Envelope::new("i", "t", "s", "tm", "c", first).signed(SECRET);
        let reordered = Envelope {
            data: second,
            ..signed.clone()
        };
        assert_eq!(reordered.verify(SECRET), Ok(()));
    }

    #[test]
    fn malformed_signatures() {
        let signed = sample().signed(SECRET);
        let upper = Envelope {
            signature: signed.signature.to_uppercase(),
            ..signed.clone()
        };
        assert_eq!(upper.verify(SECRET), Err(SignatureError::Malformed));
        let short = Envelope {
            signature: signed.signature[..62].into(),
            ..signed.clone()
        };
        assert_eq!(short.verify(SECRET), Err(SignatureError::Malformed));
        let not_hex = Envelope {
            signature: "g".repeat(64),
            ..signed.clone()
        };
        assert_eq!(not_hex.verify(SECRET), Err(SignatureError::Malformed));
        let multibyte = Envelope {
            signature: "é".repeat(32),
            ..signed.clone()
        };
        assert_eq!(multibyte.verify(SECRET), Err(SignatureError::Malformed));
        let mut flipped = signed.signature.clone().into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        let flipped = Envelope {
            signature: String::from_utf8(flipped).expect("ascii"),
            ..signed
        };
        assert_eq!(flipped.verify(SECRET), Err(SignatureError::Mismatch));
    }

    #[test]
    fn json_shape_and_round_trip() {
        let envelope = sample().signed(SECRET);
        let value = serde_json::to_value(&envelope).expect("serializes");
        assert_eq!(value, envelope.to_value());
        assert_eq!(value["type"], json!("order.placed"));
        assert!(value.get("event_type").is_none());
        let decoded = decode(&envelope.encode()).expect("decodes");
        assert_eq!(decoded, envelope);
        assert_eq!(decoded.verify(SECRET), Ok(()));
        assert_eq!(
            Envelope::decode(&serde_json::to_vec(&envelope).expect("bytes")),
            Ok(envelope)
        );
    }

    #[test]
    fn decode_errors() {
        let error = decode(b"not json").unwrap_err();
        assert!(!error.message.is_empty());
        assert!(error.to_string().starts_with("invalid envelope: "));

        let mut value = sample().to_value();
        value.as_object_mut().expect("object").remove("data");
        let error = decode(value.to_string().as_bytes()).unwrap_err();
        assert!(error.message.contains("data"), "{}", error.message);

        let mut value = sample().to_value();
        value["attempt"] = json!(-1);
        assert!(decode(value.to_string().as_bytes()).is_err());

        let mut value = sample().to_value();
        value.as_object_mut().expect("object").remove("type");
        assert!(
            decode(value.to_string().as_bytes())
                .unwrap_err()
                .message
                .contains("type")
        );

        assert!(decode(b"[]").is_err());
        assert!(decode(b"").is_err());
    }

    #[test]
    fn decode_ignores_unknown_fields_and_accepts_null_data() {
        let mut value = sample().to_value();
        value["extra"] = json!("ignored");
        value["data"] = json!(null);
        let decoded = decode(value.to_string().as_bytes()).expect("decodes");
        assert_eq!(decoded.data, Value::Null);
    }

    #[test]
    fn event_type_names() {
        assert_eq!(event_types::ALL.len(), 11);
        assert_eq!(event_types::VOUCHER_ISSUED, "voucher.issued");
        assert_eq!(event_types::STOCK_REJECTED, "stock.rejected");
        let mut unique = event_types::ALL.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 11);
    }
}
