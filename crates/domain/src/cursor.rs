//! Opaque pagination cursors.
//!
//! A cursor is the base64url (no padding) encoding of `c1:` followed by
//! the key of the last item on the previous page. The `c1:` prefix versions
//! the format and catches arbitrary strings passed as cursors.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::validation::ValidationError;

/// Format marker at the start of every decoded cursor.
const CURSOR_PREFIX: &str = "c1:";

/// Returns the opaque cursor for resuming after `key`.
pub fn encode_cursor(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{CURSOR_PREFIX}{key}"))
}

/// Returns the key inside a cursor made by [`encode_cursor`], or a
/// [`ValidationError`] for field `cursor` with message `invalid cursor`.
pub fn decode_cursor(cursor: &str) -> Result<String, ValidationError> {
    let invalid = || ValidationError::new("cursor", "invalid cursor");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    text.strip_prefix(CURSOR_PREFIX)
        .map(str::to_owned)
        .ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for key in [
            "",
            "order-42",
            "2026-01-01T00:00:00.000Z|ord_1",
            "ünïcode ✓",
            "c1:nested",
        ] {
            let cursor = encode_cursor(key);
            assert!(
                cursor
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
            assert_eq!(decode_cursor(&cursor), Ok(key.to_owned()));
        }
    }

    #[test]
    fn known_encoding() {
        assert_eq!(encode_cursor("abc"), "YzE6YWJj");
        assert_eq!(decode_cursor("YzE6YWJj"), Ok("abc".into()));
    }

    #[test]
    fn rejects_foreign_strings() {
        let expected = ValidationError::new("cursor", "invalid cursor");
        for bad in [
            "",
            "not base64!",
            "YWJj",       // "abc": no c1: prefix
            "YzE6YWJj==", // padded
            "YzE6YWJ",    // "c1:ab" with non-zero trailing bits
            "_w",         // 0xff: not UTF-8
        ] {
            assert_eq!(decode_cursor(bad), Err(expected.clone()), "{bad}");
        }
    }
}
