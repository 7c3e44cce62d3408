//! Spin's key-value store `default` through `wasi:keyvalue@0.2.0-draft2` (embedded SQLite by
//! default; Redis when the runtime config says so, for many instances).

use std::cell::OnceCell;

use service_kit::{KeyValue, PortError};

use crate::bindings::wasi::keyvalue0_2_0_draft2::{atomics, store};

/// The store every component that may use key-value lists in `key_value_stores`.
const STORE: &str = "default";

/// The `default` store, opened on first use.
#[derive(Default)]
pub struct SpinKeyValue {
    bucket: OnceCell<Result<store::Bucket, PortError>>,
}

impl SpinKeyValue {
    fn bucket(&self) -> Result<&store::Bucket, PortError> {
        self.bucket
            .get_or_init(|| {
                store::open(STORE).map_err(|e| PortError(format!("key-value open {STORE}: {e:?}")))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl KeyValue for SpinKeyValue {
    fn increment(&self, key: &str, delta: i64) -> Result<i64, PortError> {
        atomics::increment(self.bucket()?, key, delta)
            .map_err(|e| PortError(format!("key-value increment {key}: {e:?}")))
    }

    fn delete(&self, key: &str) -> Result<(), PortError> {
        self.bucket()?
            .delete(key)
            .map_err(|e| PortError(format!("key-value delete {key}: {e:?}")))
    }
}
