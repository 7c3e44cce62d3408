//! Structured log lines (one JSON object per line), each with its correlation id: on
//! stderr, unless the host installed a sink with [`set_sink`].

use std::sync::OnceLock;

/// How serious a log line is.
#[derive(Debug, Clone, Copy)]
pub enum Level {
    /// Normal operation.
    Info,
    /// Something failed and will be retried or needs attention.
    Warn,
}

/// Writes one log line for `service` about the request or message with `correlation_id`.
pub fn write(level: Level, service: &str, correlation_id: &str, message: &str) {
    let line = serde_json::json!({
        "level": match level {
            Level::Info => "info",
            Level::Warn => "warn",
        },
        "service": service,
        "correlation_id": correlation_id,
        "message": message,
    });
    match SINK.get() {
        Some(sink) => sink(level, service, &line.to_string()),
        None => eprintln!("{line}"),
    }
}

/// Where log lines go instead of stderr: `sink(level, service, json_line)`.
pub type Sink = fn(Level, &str, &str);

static SINK: OnceLock<Sink> = OnceLock::new();

/// Sends every later log line to `sink` (the first call wins).
pub fn set_sink(sink: Sink) {
    let _ = SINK.set(sink);
}
