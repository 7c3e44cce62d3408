//! Signs a valid envelope built from fuzzer input, applies fuzzer-chosen byte edits to
//! its wire form, and checks that the result verifies only if the signed content came
//! through unchanged.
//!
//! "Unchanged" is about what the signature covers: id, type, subject, time, correlation
//! id and data (compared as canonical bytes) plus the signature itself. Edits that only
//! touch `attempt` (unsigned by design, so re-deliveries keep their signature), add
//! whitespace or unknown fields, reorder keys or re-escape a string decode to the same
//! content and still verify; every other edit must fail to decode or to verify.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use shop_domain::envelope::Envelope;

const SECRET: &[u8] = b"fuzz-event-secret";

/// A JSON value the fuzzer can build.
#[derive(Debug, Arbitrary)]
enum Json {
    Null,
    Bool(bool),
    Integer(i64),
    Float(f64),
    Text(String),
    List(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn into_value(self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(flag) => Value::Bool(flag),
            Json::Integer(number) => Value::from(number),
            Json::Float(number) => Value::from(number),
            Json::Text(text) => Value::String(text),
            Json::List(items) => Value::Array(items.into_iter().map(Json::into_value).collect()),
            Json::Object(entries) => Value::Object(
                entries
                    .into_iter()
                    .map(|(key, value)| (key, value.into_value()))
                    .collect::<Map<_, _>>(),
            ),
        }
    }
}

/// One edit of the encoded bytes; positions wrap around the current length.
#[derive(Debug, Arbitrary)]
enum Edit {
    Replace { at: usize, byte: u8 },
    Insert { at: usize, byte: u8 },
    Remove { at: usize },
    FlipBit { at: usize, bit: u8 },
}

#[derive(Debug, Arbitrary)]
struct Case {
    id: String,
    event_type: String,
    subject: String,
    time: String,
    correlation_id: String,
    attempt: u32,
    data: Json,
    edits: Vec<Edit>,
}

fuzz_target!(|case: Case| {
    let original = Envelope {
        attempt: case.attempt,
        ..Envelope::new(
            case.id,
            case.event_type,
            case.subject,
            case.time,
            case.correlation_id,
            case.data.into_value(),
        )
    }
    .signed(SECRET);
    let encoded = original.encode();
    assert_eq!(Envelope::decode(&encoded).as_ref(), Ok(&original));
    assert_eq!(original.verify(SECRET), Ok(()));

    let mut bytes = encoded.clone();
    for edit in case.edits {
        apply(&mut bytes, edit);
    }
    let Ok(received) = Envelope::decode(&bytes) else {
        return;
    };
    let content_unchanged = received.canonical_bytes() == original.canonical_bytes()
        && received.signature == original.signature;
    assert_eq!(
        received.verify(SECRET).is_ok(),
        content_unchanged,
        "edited {:?} into {:?}",
        String::from_utf8_lossy(&encoded),
        String::from_utf8_lossy(&bytes)
    );
    if bytes == encoded {
        assert_eq!(received, original);
    }
});

fn apply(bytes: &mut Vec<u8>, edit: Edit) {
    let len = bytes.len();
    match edit {
        Edit::Replace { at, byte } if len > 0 => bytes[at % len] = byte,
        Edit::Insert { at, byte } => bytes.insert(at % (len + 1), byte),
        Edit::Remove { at } if len > 0 => {
            bytes.remove(at % len);
        }
        Edit::FlipBit { at, bit } if len > 0 => bytes[at % len] ^= 1 << (bit % 8),
        _ => {}
    }
}
