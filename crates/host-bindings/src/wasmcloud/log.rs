//! Log lines go to the host's `wasi:logging/logging@0.1.0-draft`.

use service_kit::log::{Level, set_sink};

use crate::bindings::wasi::logging::logging;

/// Routes `service_kit::log` lines to wasi:logging, with the service as context.
pub fn install() {
    set_sink(|level, service, line| {
        let level = match level {
            Level::Info => logging::Level::Info,
            Level::Warn => logging::Level::Warn,
        };
        logging::log(level, service, line);
    });
}
