//! `wasi:config/store@0.2.0-draft-2024-09-27`, served from the component's
//! `[component.ID.variables]` as Spin serves it: an unknown (or invalid) key is
//! `none`, not an error.

use crate::bindings::wasi::config::store::{self, Error};
use crate::state::InstanceState;

impl store::Host for InstanceState {
    async fn get(&mut self, key: String) -> Result<Option<String>, Error> {
        Ok(self.config.get(&key).cloned())
    }

    async fn get_all(&mut self) -> Result<Vec<(String, String)>, Error> {
        Ok(self
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}
