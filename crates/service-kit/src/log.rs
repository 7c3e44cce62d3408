//! Structured log lines (one JSON object per line on stderr), each with its correlation id.

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
    let level = match level {
        Level::Info => "info",
        Level::Warn => "warn",
    };
    let line = serde_json::json!({
        "level": level,
        "service": service,
        "correlation_id": correlation_id,
        "message": message,
    });
    eprintln!("{line}");
}
