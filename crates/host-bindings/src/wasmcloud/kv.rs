//! Key-value through wasmCloud's keyvalue provider (`wasi:keyvalue@0.2.0-draft`): the
//! bucket of the component's default link (e.g. keyvalue-nats with `BUCKET` set).

use std::cell::OnceCell;

use service_kit::{KeyValue, PortError};

use crate::bindings::wasi::keyvalue0_2_0_draft::{atomics, store};

/// The identifier opened: the default link's bucket.
const STORE: &str = "default";

/// The linked bucket, opened on first use.
#[derive(Default)]
pub struct ProviderKeyValue {
    bucket: OnceCell<Result<store::Bucket, PortError>>,
}

impl ProviderKeyValue {
    fn bucket(&self) -> Result<&store::Bucket, PortError> {
        self.bucket
            .get_or_init(|| {
                store::open(STORE).map_err(|e| PortError(format!("key-value open {STORE}: {e:?}")))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl KeyValue for ProviderKeyValue {
    /// The draft interface counts up only: a negative `delta` is refused.
    fn increment(&self, key: &str, delta: i64) -> Result<i64, PortError> {
        let delta = u64::try_from(delta)
            .map_err(|_| PortError(format!("key-value increment {key}: negative delta")))?;
        let value = atomics::increment(self.bucket()?, key, delta)
            .map_err(|e| PortError(format!("key-value increment {key}: {e:?}")))?;
        i64::try_from(value).map_err(|_| PortError(format!("key-value {key}: counter overflow")))
    }

    fn delete(&self, key: &str) -> Result<(), PortError> {
        self.bucket()?
            .delete(key)
            .map_err(|e| PortError(format!("key-value delete {key}: {e:?}")))
    }
}
