//! Responses whose body is written while it is produced: Server-Sent Events.
//!
//! A service answers a streaming route from [`crate::Service::stream`] with a [`Streamed`]:
//! status and headers go out first, then the host runs the [`BodyStream`], which writes
//! chunks to a [`ChunkSink`] until it is done or the client has gone.

use crate::http::Response;
use crate::ports::{Env, PortError};

/// Where a streamed body goes.
pub trait ChunkSink {
    /// Sends one chunk to the client now; `Err` once the client is gone.
    fn send(&mut self, chunk: &[u8]) -> Result<(), PortError>;
}

/// A body produced while it is sent.
pub trait BodyStream {
    /// Writes the body to `sink`, chunk by chunk, and returns when it is complete.
    fn run(self: Box<Self>, env: &Env, sink: &mut dyn ChunkSink);
}

/// A streamed answer.
pub struct Streamed {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Box<dyn BodyStream>,
}

impl Streamed {
    /// An event stream (`text/event-stream`, not cached, not buffered by proxies).
    pub fn events(body: Box<dyn BodyStream>) -> Streamed {
        Streamed {
            status: 200,
            headers: vec![
                ("content-type".into(), "text/event-stream".into()),
                ("cache-control".into(), "no-cache".into()),
                ("x-accel-buffering".into(), "no".into()),
            ],
            body,
        }
    }

    /// A whole response, sent as one chunk (e.g. an error before a stream could start).
    pub fn whole(response: Response) -> Streamed {
        Streamed {
            status: response.status,
            headers: response.headers,
            body: Box::new(WholeBody(response.body)),
        }
    }

    /// The same answer with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Streamed {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A body that is already complete.
struct WholeBody(Vec<u8>);

impl BodyStream for WholeBody {
    fn run(self: Box<Self>, _env: &Env, sink: &mut dyn ChunkSink) {
        if !self.0.is_empty() {
            let _ = sink.send(&self.0);
        }
    }
}

/// One Server-Sent Event: `event: <name>`, `id: <id>` and `data:` lines (one per line of
/// `data`), ended by a blank line.
pub fn sse_event(name: &str, id: i64, data: &str) -> Vec<u8> {
    let mut out = format!("event: {name}\nid: {id}\n");
    for line in data.lines() {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out.into_bytes()
}

/// An SSE comment line, which clients ignore and proxies see as traffic (a heartbeat).
pub fn sse_comment(text: &str) -> Vec<u8> {
    format!(": {text}\n\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_have_one_data_line_per_line() {
        assert_eq!(
            String::from_utf8(sse_event("status", 7, "{\"a\":1}\n{\"b\":2}")).unwrap(),
            "event: status\nid: 7\ndata: {\"a\":1}\ndata: {\"b\":2}\n\n"
        );
        assert_eq!(
            String::from_utf8(sse_comment("keep-alive")).unwrap(),
            ": keep-alive\n\n"
        );
    }
}
