//! `wasi:keyvalue@0.2.0-draft2` (store and atomics) with Spin's semantics: a component may
//! open only the stores listed in its `key_value_stores`; Spin provides `default` on an
//! embedded SQLite file (`<data_dir>/sqlite_key_value.db`), and a runtime configuration file
//! can put it on Redis (`[key_value_store.default] type = "redis"`, `url = ...`), which is how
//! many Spin processes share one store, or in memory (`type = "spin"` without a `path`:
//! gone when the process ends). Counters are kept as Spin keeps them: eight little-endian
//! bytes in SQLite, decimal text on Redis.

use crate::bindings::wasi::keyvalue::atomics::{self, CasError};
use crate::bindings::wasi::keyvalue::store::{self, Error, KeyResponse};
use crate::state::InstanceState;
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::OnceCell;
use wasmtime::component::Resource;

/// The store label Spin always provides.
pub(crate) const DEFAULT_STORE: &str = "default";

/// Where the `default` store keeps its data.
pub(crate) enum KeyValueBackend {
    /// An SQLite file, like Spin's embedded default.
    Sqlite(Mutex<rusqlite::Connection>),
    /// A Redis server, connected on first use.
    Redis {
        /// The server's URL.
        url: String,
        /// The shared connection.
        connection: OnceCell<redis::aio::ConnectionManager>,
    },
}

impl KeyValueBackend {
    /// The embedded default in `data_dir`.
    pub(crate) fn sqlite(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join("sqlite_key_value.db");
        let connection = rusqlite::Connection::open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Self::sqlite_on(connection)
    }

    /// An SQLite store in memory, as Spin makes a `type = "spin"` store with no `path`.
    fn sqlite_in_memory() -> Result<Self> {
        Self::sqlite_on(rusqlite::Connection::open_in_memory()?)
    }

    /// The store on `connection`, its table created.
    fn sqlite_on(connection: rusqlite::Connection) -> Result<Self> {
        connection.execute_batch(
            "CREATE TABLE IF NOT EXISTS spin_key_value (store TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (store, key))",
        )?;
        Ok(KeyValueBackend::Sqlite(Mutex::new(connection)))
    }

    /// The `default` store as a parsed Spin runtime configuration file sets it, or the
    /// embedded SQLite default when the file does not mention it (or there is none).
    pub(crate) fn from_runtime_config(
        runtime_config: &toml::Table,
        data_dir: &Path,
    ) -> Result<Self> {
        let Some(store) = runtime_config
            .get("key_value_store")
            .and_then(|stores| stores.get(DEFAULT_STORE))
        else {
            return Self::sqlite(data_dir);
        };
        match store.get("type").and_then(toml::Value::as_str) {
            Some("redis") => {
                let url = store
                    .get("url")
                    .and_then(toml::Value::as_str)
                    .context("key_value_store.default: a redis store needs `url`")?;
                Ok(KeyValueBackend::Redis {
                    url: url.to_owned(),
                    connection: OnceCell::new(),
                })
            }
            Some("spin") | None => match store.get("path") {
                None => Self::sqlite_in_memory(),
                Some(_) => bail!("key_value_store.default: a `path` is not supported here"),
            },
            Some(other) => bail!("key_value_store.default: type {other:?} is not supported here"),
        }
    }

    async fn redis(&self) -> Result<redis::aio::ConnectionManager, Error> {
        let KeyValueBackend::Redis { url, connection } = self else {
            return Err(Error::Other("not a redis store".into()));
        };
        connection
            .get_or_try_init(|| async {
                let client = redis::Client::open(url.as_str()).map_err(other)?;
                redis::aio::ConnectionManager::new(client)
                    .await
                    .map_err(other)
            })
            .await
            .cloned()
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        match self {
            KeyValueBackend::Sqlite(connection) => sqlite(connection, |c| read(c, key)),
            KeyValueBackend::Redis { .. } => {
                let mut redis = self.redis().await?;
                redis::cmd("GET")
                    .arg(key)
                    .query_async(&mut redis)
                    .await
                    .map_err(other)
            }
        }
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        match self {
            KeyValueBackend::Sqlite(connection) => sqlite(connection, |c| write(c, key, value)),
            KeyValueBackend::Redis { .. } => {
                let mut redis = self.redis().await?;
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .query_async(&mut redis)
                    .await
                    .map_err(other)
            }
        }
    }

    async fn delete(&self, key: &str) -> Result<(), Error> {
        match self {
            KeyValueBackend::Sqlite(connection) => sqlite(connection, |c| {
                c.execute(
                    "DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2",
                    (DEFAULT_STORE, key),
                )
                .map(|_| ())
            }),
            KeyValueBackend::Redis { .. } => {
                let mut redis = self.redis().await?;
                redis::cmd("DEL")
                    .arg(key)
                    .query_async(&mut redis)
                    .await
                    .map_err(other)
            }
        }
    }

    async fn keys(&self) -> Result<Vec<String>, Error> {
        match self {
            KeyValueBackend::Sqlite(connection) => sqlite(connection, |c| {
                let mut statement =
                    c.prepare("SELECT key FROM spin_key_value WHERE store = ?1 ORDER BY key")?;
                statement
                    .query_map([DEFAULT_STORE], |row| row.get(0))?
                    .collect()
            }),
            KeyValueBackend::Redis { .. } => {
                let mut redis = self.redis().await?;
                redis::cmd("KEYS")
                    .arg("*")
                    .query_async(&mut redis)
                    .await
                    .map_err(other)
            }
        }
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64, Error> {
        match self {
            KeyValueBackend::Sqlite(connection) => sqlite(connection, |c| {
                let tx = c.unchecked_transaction()?;
                let current = match read(&tx, key)? {
                    None => 0,
                    Some(bytes) => bytes.try_into().map(i64::from_le_bytes).map_err(|_| {
                        rusqlite::Error::InvalidParameterName(format!(
                            "{key} does not hold a counter (eight bytes)"
                        ))
                    })?,
                };
                let next = current.checked_add(delta).ok_or_else(|| {
                    rusqlite::Error::InvalidParameterName(format!("{key} would overflow"))
                })?;
                write(&tx, key, &next.to_le_bytes())?;
                tx.commit()?;
                Ok(next)
            }),
            KeyValueBackend::Redis { .. } => {
                let mut redis = self.redis().await?;
                redis::cmd("INCRBY")
                    .arg(key)
                    .arg(delta)
                    .query_async(&mut redis)
                    .await
                    .map_err(other)
            }
        }
    }
}

/// The value of `key` in the SQLite store, if any.
fn read(connection: &rusqlite::Connection, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    connection
        .query_row(
            "SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2",
            (DEFAULT_STORE, key),
            |row| row.get(0),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })
}

/// Sets `key` to `value` in the SQLite store.
fn write(connection: &rusqlite::Connection, key: &str, value: &[u8]) -> rusqlite::Result<()> {
    connection
        .execute(
            "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3) \
             ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
            (DEFAULT_STORE, key, value),
        )
        .map(|_| ())
}

fn other(error: impl std::fmt::Display) -> Error {
    Error::Other(error.to_string())
}

/// Runs `f` on the SQLite store (short statements; the lock is never held across awaits).
fn sqlite<R>(
    connection: &Mutex<rusqlite::Connection>,
    f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<R>,
) -> Result<R, Error> {
    let connection = connection.lock().unwrap_or_else(PoisonError::into_inner);
    f(&connection).map_err(other)
}

/// The host side of a `bucket` resource: an opened store.
pub struct Bucket;

/// The host side of a `cas` resource (compare-and-swap is not offered here).
pub struct Cas;

/// What an instance may use.
pub(crate) struct KeyValueCtx {
    /// The component's `key_value_stores`.
    pub(crate) allowed: Arc<std::collections::BTreeSet<String>>,
    /// The `default` store.
    pub(crate) backend: Arc<KeyValueBackend>,
}

impl store::Host for InstanceState {
    async fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, Error> {
        if !self.key_value.allowed.contains(&identifier) {
            return Err(Error::AccessDenied);
        }
        if identifier != DEFAULT_STORE {
            return Err(Error::NoSuchStore);
        }
        self.table.push(Bucket).map_err(other)
    }
}

impl store::HostBucket for InstanceState {
    async fn get(
        &mut self,
        _bucket: Resource<Bucket>,
        key: String,
    ) -> Result<Option<Vec<u8>>, Error> {
        self.key_value.backend.get(&key).await
    }

    async fn set(
        &mut self,
        _bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), Error> {
        self.key_value.backend.set(&key, &value).await
    }

    async fn delete(&mut self, _bucket: Resource<Bucket>, key: String) -> Result<(), Error> {
        self.key_value.backend.delete(&key).await
    }

    async fn exists(&mut self, _bucket: Resource<Bucket>, key: String) -> Result<bool, Error> {
        Ok(self.key_value.backend.get(&key).await?.is_some())
    }

    async fn list_keys(
        &mut self,
        _bucket: Resource<Bucket>,
        cursor: Option<String>,
    ) -> Result<KeyResponse, Error> {
        if cursor.is_some() {
            return Err(Error::Other("list_keys: cursor not supported".into()));
        }
        Ok(KeyResponse {
            keys: self.key_value.backend.keys().await?,
            cursor: None,
        })
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for InstanceState {
    async fn increment(
        &mut self,
        _bucket: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> Result<i64, Error> {
        self.key_value.backend.increment(&key, delta).await
    }

    async fn swap(&mut self, cas: Resource<Cas>, _value: Vec<u8>) -> Result<(), CasError> {
        let _ = self.table.delete(cas);
        Err(CasError::StoreError(Error::Other(
            "compare-and-swap is not supported by the test host".into(),
        )))
    }
}

impl atomics::HostCas for InstanceState {
    async fn new(
        &mut self,
        _bucket: Resource<Bucket>,
        _key: String,
    ) -> Result<Resource<Cas>, Error> {
        Err(Error::Other(
            "compare-and-swap is not supported by the test host".into(),
        ))
    }

    async fn current(&mut self, _cas: Resource<Cas>) -> Result<Option<Vec<u8>>, Error> {
        Err(Error::Other(
            "compare-and-swap is not supported by the test host".into(),
        ))
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}
