//! `wasi:keyvalue@0.2.0-draft` `store` and `atomics` as wasmCloud's keyvalue-nats provider
//! (0.3) implements them, on NATS JetStream key-value buckets:
//!
//! - each `wasi:keyvalue` link opens the bucket named by its `bucket` config on the
//!   lattice's NATS connection; `store.open(identifier)` names a link (`default` unless
//!   the link has a `name`), not a bucket, and only fails on use: an unknown identifier
//!   is `other("No NATS Kv store found for bucket id (link name): ...")`, a link whose
//!   bucket could not be opened `other("consumer component not linked: ...")`;
//! - `get`/`set`/`exists` read and put the latest revision, `delete` purges the key,
//!   `list-keys` returns every key after `cursor` keys, with no next cursor;
//! - `atomics.increment` reads the entry (an empty or deleted one counts as 0, a value that
//!   is not a decimal `u64` fails), writes `value + delta` only if the revision is still the
//!   one read, and tries 5 times with a short backoff before answering
//!   `other("Failed to increment the value after 5 attempts")`.
//!
//! Failures the provider raises as transport errors (the lookup in `increment`, reading
//! the entry, a non-numeric value) trap the component, as they would on wasmCloud.

use super::bindings::wasi::keyvalue::atomics;
use super::bindings::wasi::keyvalue::store::{self, Error, KeyResponse};
use super::state::LatticeState;
use async_nats::jetstream::kv;
use futures_util::TryStreamExt;
use std::time::Duration;
use wasmtime::component::Resource;

/// The provider's base backoff between increment attempts.
const BACKOFF_BASE_MS: u64 = 5;
/// Increment attempts before giving up.
const INCREMENT_ATTEMPTS: u32 = 5;

/// The host side of a `bucket` resource: the link name it was opened with.
pub struct Bucket {
    link: String,
}

/// What a component's `wasi:keyvalue` link resolved to at start.
pub(crate) type LinkedStore = Result<kv::Store, String>;

impl LatticeState {
    /// The store behind `bucket`, as the provider looks it up.
    fn store(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<Result<kv::Store, Error>> {
        let link = &self.table.get(bucket)?.link;
        Ok(match self.component.keyvalue.get(link) {
            None => Err(Error::Other(format!(
                "No NATS Kv store found for bucket id (link name): {link}"
            ))),
            Some(Err(_)) => Err(Error::Other(format!(
                "consumer component not linked: {}",
                self.component.spec.name
            ))),
            Some(Ok(store)) => Ok(store.clone()),
        })
    }
}

impl store::Host for LatticeState {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<Bucket>, Error>> {
        self.require_link(!self.component.keyvalue.is_empty(), "wasi:keyvalue/store")?;
        Ok(Ok(self.table.push(Bucket { link: identifier })?))
    }
}

impl store::HostBucket for LatticeState {
    async fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        Ok(match self.store(&bucket)? {
            Ok(store) => store
                .get(key)
                .await
                .map(|value| value.map(|bytes| bytes.to_vec()))
                .map_err(|e| Error::Other(e.to_string())),
            Err(e) => Err(e),
        })
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        Ok(match self.store(&bucket)? {
            Ok(store) => store
                .put(key, value.into())
                .await
                .map(|_| ())
                .map_err(|e| Error::Other(e.to_string())),
            Err(e) => Err(e),
        })
    }

    async fn delete(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<(), Error>> {
        Ok(match self.store(&bucket)? {
            Ok(store) => store
                .purge(key)
                .await
                .map_err(|e| Error::Other(e.to_string())),
            Err(e) => Err(e),
        })
    }

    async fn exists(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, Error>> {
        Ok(self.get(bucket, key).await?.map(|value| value.is_some()))
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> wasmtime::Result<Result<KeyResponse, Error>> {
        let store = match self.store(&bucket)? {
            Ok(store) => store,
            Err(e) => return Ok(Err(e)),
        };
        let keys = match store.keys().await {
            Ok(keys) => keys,
            Err(e) => return Ok(Err(Error::Other(e.to_string()))),
        };
        let skip = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX);
        let keys: Result<Vec<String>, _> = keys.try_collect().await;
        Ok(keys
            .map(|keys| KeyResponse {
                keys: keys.into_iter().skip(skip).collect(),
                cursor: None,
            })
            .map_err(|e| Error::Other(e.to_string())))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for LatticeState {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let linked = self.component.spec.keyvalue.iter().any(|link| link.atomics);
        self.require_link(linked, "wasi:keyvalue/atomics")?;
        let store = self
            .store(&bucket)?
            .map_err(|e| wasmtime::format_err!("keyvalue-nats: {e:?}"))?;
        for attempt in 0..INCREMENT_ATTEMPTS {
            let entry = store
                .entry(key.clone())
                .await
                .map_err(|e| wasmtime::format_err!("keyvalue-nats: {e}"))?;
            let (current, revision) = match &entry {
                Some(entry) if !entry.value.is_empty() => {
                    let current = std::str::from_utf8(&entry.value)
                        .ok()
                        .and_then(|text| text.parse::<u64>().ok())
                        .ok_or_else(|| {
                            wasmtime::format_err!(
                                "keyvalue-nats: Cannot increment a non-numerical value"
                            )
                        })?;
                    (current, entry.revision)
                }
                _ => (0, entry.as_ref().map_or(0, |entry| entry.revision)),
            };
            let value = current
                .checked_add(delta)
                .ok_or_else(|| wasmtime::format_err!("keyvalue-nats: increment overflows"))?;
            if store
                .update(key.clone(), value.to_string().into(), revision)
                .await
                .is_ok()
            {
                return Ok(Ok(value));
            }
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(
                    BACKOFF_BASE_MS * 2u64.pow(attempt - 1),
                ))
                .await;
            }
        }
        Ok(Err(Error::Other(
            "Failed to increment the value after 5 attempts".to_owned(),
        )))
    }
}

/// Opens the bucket of one `wasi:keyvalue` link (creating it first when `create` is set or
/// the link says `enable_bucket_auto_create: "true"`).
pub(crate) async fn open_link(
    jetstream: &async_nats::jetstream::Context,
    bucket: &str,
    create: bool,
) -> LinkedStore {
    if create
        && jetstream.get_key_value(bucket).await.is_err()
        && let Err(e) = jetstream
            .create_key_value(kv::Config {
                bucket: bucket.to_owned(),
                ..Default::default()
            })
            .await
    {
        eprintln!("[test-host] warning: cannot create key-value bucket {bucket:?}: {e}");
    }
    jetstream
        .get_key_value(bucket)
        .await
        .map_err(|e| e.to_string())
}
