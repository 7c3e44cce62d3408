//! Configuration from the component's named configs through `wasi:config/store@0.2.0-draft`.

use service_kit::{Config, PortError};

use crate::bindings::wasi::config0_2_0_draft::store;

/// Reads the component's configuration (the `config` properties in `wadm.yaml`).
pub struct WasmcloudConfig;

impl Config for WasmcloudConfig {
    fn get(&self, key: &str) -> Result<Option<String>, PortError> {
        store::get(key).map_err(|e| PortError(format!("config {key}: {e:?}")))
    }
}
