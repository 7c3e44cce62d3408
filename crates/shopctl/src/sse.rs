//! An incremental Server-Sent Events parser (the `text/event-stream` format).
//!
//! Lines end with LF or CRLF; a blank line dispatches the event; lines starting with `:` are
//! comments (keep-alives); `data:` lines are joined with `\n`; one space after the colon is
//! dropped. Unknown fields are ignored.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` name; `message` when absent.
    pub name: String,
    /// The `id:` field, when the event has one.
    pub id: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Turns chunks of a stream into events.
#[derive(Debug, Default)]
pub struct Parser {
    /// Bytes of the current, unfinished line.
    line: Vec<u8>,
    /// The `event:` name of the event being built.
    name: Option<String>,
    /// The `id:` of the event being built.
    id: Option<String>,
    /// The `data:` of the event being built; `None` until a `data:` line arrives.
    data: Option<String>,
}

impl Parser {
    /// A parser at the start of a stream.
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Feeds the next chunk; returns the events it completes, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        for &byte in chunk {
            if byte != b'\n' {
                self.line.push(byte);
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if let Some(event) = self.line_done(&String::from_utf8_lossy(&line)) {
                events.push(event);
            }
        }
        events
    }

    /// Applies one complete line; a blank line dispatches the event, if it has data.
    fn line_done(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            let name = self.name.take();
            let id = self.id.take();
            return self.data.take().map(|data| Event {
                name: name.unwrap_or_else(|| "message".to_owned()),
                id,
                data,
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.name = Some(value.to_owned()),
            "id" => self.id = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, id: Option<&str>, data: &str) -> Event {
        Event {
            name: name.into(),
            id: id.map(Into::into),
            data: data.into(),
        }
    }

    #[test]
    fn events_comments_and_split_chunks() {
        let stream = b": keep-alive\n\nevent: status\nid: 7\ndata: {\"a\":1}\n\n: keep-alive\n\nevent: status\r\nid: 9\r\ndata: x\r\ndata:y\r\n\r\n";
        let whole = Parser::new().push(stream);
        let expected = vec![
            event("status", Some("7"), "{\"a\":1}"),
            event("status", Some("9"), "x\ny"),
        ];
        assert_eq!(whole, expected);
        // Any split into chunks gives the same events.
        for size in 1..stream.len() {
            let mut parser = Parser::new();
            let events: Vec<Event> = stream.chunks(size).flat_map(|c| parser.push(c)).collect();
            assert_eq!(events, expected, "chunks of {size}");
        }
    }

    #[test]
    fn odd_input_is_tolerated() {
        let mut parser = Parser::new();
        assert_eq!(parser.push(b"id: 1\n\n"), vec![], "no data, no event");
        assert_eq!(parser.push(b"data\n\n"), vec![event("message", None, "")]);
        assert_eq!(parser.push(b"retry: 10\nfoo: bar\ndata: \xff\n\n").len(), 1);
        assert_eq!(parser.push(b"data: unfinished"), vec![]);
    }
}
