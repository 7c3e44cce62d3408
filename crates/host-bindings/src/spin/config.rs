//! Configuration from Spin variables through `wasi:config/store`.

use service_kit::{Config, PortError};

use crate::bindings::wasi::config0_2_0_draft_2024_09_27::store;

/// Reads the component's variables.
pub struct SpinConfig;

impl Config for SpinConfig {
    fn get(&self, key: &str) -> Result<Option<String>, PortError> {
        store::get(key).map_err(|e| PortError(format!("config {key}: {e:?}")))
    }
}
