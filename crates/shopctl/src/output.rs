//! Standard output and standard error: tables or JSON, and one-line notes.

use std::io::{self, Write};

use serde_json::Value;

use crate::table::{Table, money};

/// Where results go: standard output, as tables or (with `--json`) as the API's JSON.
pub struct Out {
    /// `--json`: print the API's JSON rather than tables.
    json: bool,
    /// Standard output, locked for the whole run.
    stdout: io::StdoutLock<'static>,
}

impl Out {
    /// Output as tables, or as JSON when `json`.
    pub fn new(json: bool) -> Out {
        Out {
            json,
            stdout: io::stdout().lock(),
        }
    }

    /// True when results are printed as JSON.
    pub const fn json(&self) -> bool {
        self.json
    }

    /// Prints a JSON document, pretty.
    pub fn document(&mut self, value: &Value) -> io::Result<()> {
        let text = serde_json::to_string_pretty(value).map_err(io::Error::other)?;
        writeln!(self.stdout, "{text}")
    }

    /// Prints a JSON document on one line (one event of a stream) and flushes it.
    pub fn json_line(&mut self, value: &Value) -> io::Result<()> {
        writeln!(self.stdout, "{value}")?;
        self.stdout.flush()
    }

    /// Prints a line of text and flushes it.
    pub fn line(&mut self, text: &str) -> io::Result<()> {
        writeln!(self.stdout, "{text}")?;
        self.stdout.flush()
    }

    /// Prints a table.
    pub fn table(&mut self, table: &Table) -> io::Result<()> {
        self.stdout.write_all(table.render().as_bytes())
    }
}

/// Writes a one-line note to standard error; a closed standard error is ignored.
pub fn note(text: &str) {
    let _ = writeln!(io::stderr(), "{text}");
}

/// A JSON value as a table cell: strings as they are, `null` as blank, anything else as JSON.
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// A JSON amount of cents as a table cell, e.g. `15000` → `150.00`.
pub fn cents(value: &Value) -> String {
    value.as_i64().map_or_else(|| text(value), money)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cells() {
        assert_eq!(text(&json!(null)), "");
        assert_eq!(text(&json!("a")), "a");
        assert_eq!(text(&json!(3)), "3");
        assert_eq!(text(&json!({"a": 1})), r#"{"a":1}"#);
        assert_eq!(cents(&json!(15000)), "150.00");
        assert_eq!(cents(&json!(null)), "");
        assert_eq!(cents(&json!("n/a")), "n/a");
    }
}
