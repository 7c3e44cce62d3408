//! A wasmtime-based stand-in for Spin 4.0.2 that runs the very `.wasm` files a
//! `spin.toml` references, providing what Spin provides to WASI 0.2 HTTP components:
//!
//! - `wasi:cli`, clocks, random, io and filesystem (no preopens; sockets denied),
//!   with component stdout/stderr written to the host's stderr as `[component-id] ...`;
//! - `wasi:http/incoming-handler` called on a fresh instance per request, routed by
//!   the manifest's `[[trigger.http]]` routes (private components are reachable only
//!   through local service chaining);
//! - `wasi:http/outgoing-handler`, enforcing `allowed_outbound_hosts`, with
//!   `http://<id>.spin.internal` dispatched in-process;
//! - `spin:sqlite/sqlite@3.0.0` with the `default` database (`<data_dir>/sqlite_db.db`);
//! - `spin:postgres/postgres@4.1.0`: pooled connections as Spin pools them (TLS unless
//!   `sslmode=disable`), to addresses `allowed_outbound_hosts` allows;
//! - `wasi:config/store@0.2.0-draft-2024-09-27` serving `[component.ID.variables]`.
//!
//! Like Spin it has no timer (the app's ticker posts its admin tick, as beside `spin up`).
//! On top of Spin it offers direct calls into components ([`TestHost::call_component`]),
//! direct reads of the database ([`TestHost::sqlite_query`]) and fault injection
//! ([`Faults`]).
//!
//! The second flavour, [`Lattice`], stands in for a wasmCloud 1.9.2 lattice: it runs the
//! components of a wadm manifest as replicas and supplies what the linked providers
//! supply (http-server, http-client, sqldb-postgres on a real PostgreSQL, messaging-nats
//! on a real NATS server), plus `wasi:config` and `wasi:logging` from the host.

#![warn(missing_docs)]

mod allowed_hosts;
mod bindings;
mod compose;
mod faults;
mod keyvalue;
mod manifest;
mod outbound;
mod postgres;
mod routes;
mod runtime;
mod server;
mod sqlite;
pub use sqlite::{CallFigures, STATEMENT_KEY_CHARS, SqliteUsageFigures, TransactionRecord};
mod state;
mod stdio;
mod ticker;
mod variables;
mod wasi_config;
mod wasmcloud;

pub use faults::{ChaosFigures, ChaosSettings, Faults, Outage, SplitMix64};
pub use wasmcloud::{BodyLoss, Lattice, LatticeConfig, WASMCLOUD_WASM_DIR, query_postgres};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use keyvalue::KeyValueBackend;
use manifest::AppConfig;
use runtime::Runtime;
use rusqlite::types::ValueRef;
use sqlite::SqliteDatabases;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How to start a [`TestHost`].
#[derive(Debug, Clone)]
pub struct TestHostConfig {
    /// Path to `spin.toml`; component `source` paths are relative to its folder.
    pub manifest: PathBuf,
    /// Application-variable overrides, like `spin up --variable k=v`; they win over
    /// `SPIN_VARIABLE_<NAME>` environment variables and manifest defaults.
    pub variables: HashMap<String, String>,
    /// Where SQLite files go (`<data_dir>/sqlite_db.db`, like Spin's
    /// `.spin/sqlite_db.db`); `None` uses a fresh temporary directory that lives as
    /// long as the host.
    pub data_dir: Option<PathBuf>,
    /// A Spin runtime configuration file (`spin up --runtime-config-file`); the host reads
    /// its `[key_value_store.default]` (`type = "redis"` with `url`) and its
    /// `[sqlite_database.<label>]` entries. `None`: embedded stores, SQLite `default` only.
    pub runtime_config: Option<PathBuf>,
    /// The directory `spin up` would run in: relative SQLite `path`s of the runtime
    /// configuration resolve against it, as Spin resolves them against its working
    /// directory. `None`: the data directory.
    pub working_dir: Option<PathBuf>,
}

impl TestHostConfig {
    /// Defaults for `manifest`: no variable overrides and a temporary data directory.
    pub fn new(manifest: impl Into<PathBuf>) -> Self {
        Self {
            manifest: manifest.into(),
            variables: HashMap::new(),
            data_dir: None,
            runtime_config: None,
            working_dir: None,
        }
    }
}

/// A running application: an HTTP listener on `127.0.0.1`, its components, and the
/// timer. Stop it with [`TestHost::shutdown`]; dropping it stops it abruptly.
pub struct TestHost {
    runtime: Arc<Runtime>,
    faults: Arc<Faults>,
    addr: SocketAddr,
    data_dir: PathBuf,
    shutdown: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
    _temp_dir: Option<tempfile::TempDir>,
}

impl TestHost {
    /// Loads the manifest, compiles and pre-instantiates every component, binds
    /// `127.0.0.1:0` and serves the public routes.
    pub async fn start(config: TestHostConfig) -> Result<TestHost> {
        Self::start_on(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Like [`TestHost::start`], listening on `listen`.
    pub async fn start_on(config: TestHostConfig, listen: SocketAddr) -> Result<TestHost> {
        let app = AppConfig::load(&config.manifest, &config.variables)?;
        for warning in &app.warnings {
            eprintln!("[test-host] warning: {warning}");
        }
        let (data_dir, temp_dir) = match config.data_dir {
            Some(dir) => (dir, None),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("test-host-")
                    .tempdir()
                    .context("cannot create a temporary data directory")?;
                (dir.path().to_path_buf(), Some(dir))
            }
        };
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;

        let faults = Arc::new(Faults::default());
        let runtime_config = read_runtime_config(config.runtime_config.as_deref())?;
        let sqlite_databases = SqliteDatabases::from_runtime_config(
            &runtime_config,
            &data_dir,
            config.working_dir.as_deref().unwrap_or(&data_dir),
        )?;
        let key_value = KeyValueBackend::from_runtime_config(&runtime_config, &data_dir)?;
        let runtime_faults = faults.clone();
        let runtime = tokio::task::spawn_blocking(move || {
            Runtime::new(app, runtime_faults, sqlite_databases, key_value)
        })
        .await
        .context("component compilation panicked")??;
        let runtime = Arc::new(runtime);

        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let public = runtime.clone();
        let server = tokio::spawn(server::serve(
            listener,
            move |req, client_addr| {
                let runtime = public.clone();
                async move { runtime.serve_public(req, client_addr).await }
            },
            shutdown_rx,
        ));
        Ok(TestHost {
            runtime,
            faults,
            addr,
            data_dir,
            shutdown,
            server: Some(server),
            _temp_dir: temp_dir,
        })
    }

    /// The listener's base URL, `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The directory holding the application's SQLite file.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Whether components run on wasmtime's pooling allocator (they always should).
    pub fn uses_pooling_allocator(&self) -> bool {
        self.runtime.uses_pooling_allocator()
    }

    /// Calls `component` (public or private) the way another component of the app
    /// would through local service chaining (`http://<component>.spin.internal<path>`),
    /// bypassing routing and `allowed_outbound_hosts`. Returns the status and the
    /// whole body. Used to inject messages a component would otherwise receive from
    /// its peers.
    pub async fn call_component(
        &self,
        component: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<(u16, Vec<u8>)> {
        let Some(target) = self.runtime.component(component).cloned() else {
            bail!("the application has no component {component:?}");
        };
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        let mut request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).context("invalid method")?)
            .uri(format!("http://{component}.spin.internal{path}"))
            .body(Full::new(Bytes::from(body)))
            .context("invalid request")?;
        for (name, value) in headers {
            request.headers_mut().append(
                HeaderName::try_from(*name)
                    .with_context(|| format!("invalid header name {name:?}"))?,
                HeaderValue::try_from(*value)
                    .with_context(|| format!("invalid value for header {name:?}"))?,
            );
        }
        let response = self.runtime.serve_chained(&target, request).await;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .context("reading the component's response failed")?
            .to_bytes();
        Ok((status, body.to_vec()))
    }

    /// Instantiates `component` `count` times, one after another, each on a fresh store
    /// as a request would (pooling allocator), without calling it, and returns how long
    /// each took (store creation, instantiation and drop).
    pub async fn time_instantiations(
        &self,
        component: &str,
        count: usize,
    ) -> Result<Vec<Duration>> {
        let Some(target) = self.runtime.component(component).cloned() else {
            bail!("the application has no component {component:?}");
        };
        let mut times = Vec::with_capacity(count);
        for _ in 0..count {
            times.push(self.runtime.time_instantiation(&target).await?);
        }
        Ok(times)
    }

    /// How many instances of each component were started to serve requests (public ones and
    /// chained calls between components) since the host started. A component
    /// composed into another is part of that one's instance, not counted on its own.
    pub fn instances_started(&self) -> std::collections::BTreeMap<String, u64> {
        self.runtime
            .components()
            .map(|component| {
                (
                    component.config.id.clone(),
                    component
                        .instances_started
                        .load(std::sync::atomic::Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// The fault-injection switches for this host.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// What the components' SQLite statements did since the last call (or the start):
    /// statements, their time, and how long each transaction held the write lock.
    pub fn sqlite_usage(&self) -> SqliteUsageFigures {
        self.runtime.sqlite_usage().take()
    }

    /// The file behind SQLite label `label`.
    pub fn sqlite_file(&self, label: &str) -> Result<PathBuf> {
        Ok(self.runtime.sqlite_databases().file(label)?.to_path_buf())
    }

    /// Runs `sql` on a new connection to the file behind SQLite label `label` and returns
    /// every row as JSON values: integers and reals as numbers, text as strings, blobs as
    /// arrays of bytes, NULL as null. Meant for reads in assertions; blocks the calling
    /// thread while SQLite works.
    pub fn sqlite_query(&self, label: &str, sql: &str) -> Result<Vec<Vec<serde_json::Value>>> {
        query_sqlite_file(&self.sqlite_file(label)?, sql)
    }

    /// Stops accepting connections and lets open ones finish (up to 5 s).
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// The name of `service`'s messaging table `table` (`outbox`, `inbox`, `dead_letters`):
/// `<service>_<table>` with dashes as underscores, as `service_kit::messaging` names them.
pub fn messaging_table(service: &str, table: &str) -> String {
    format!("{}_{table}", service.replace('-', "_"))
}

/// The file Spin 4.0.2 keeps SQLite label `label` in, for `spin up` run in `working_dir`
/// with `runtime_config` (a relative `path` there is taken from the working directory).
pub fn spin_sqlite_file(
    runtime_config: &std::path::Path,
    working_dir: &std::path::Path,
    label: &str,
) -> Result<PathBuf> {
    let state_dir = working_dir.join(".spin");
    let runtime_config = read_runtime_config(Some(runtime_config))?;
    Ok(
        SqliteDatabases::from_runtime_config(&runtime_config, &state_dir, working_dir)?
            .file(label)?
            .to_path_buf(),
    )
}

/// The parsed Spin runtime configuration file at `path`; an empty table without one.
pub(crate) fn read_runtime_config(path: Option<&std::path::Path>) -> Result<toml::Table> {
    let Some(path) = path else {
        return Ok(toml::Table::new());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read runtime config {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("runtime config {} is not TOML", path.display()))
}

/// Runs `sql` on the SQLite file at `path` (a Spin app's database) and returns its rows as
/// JSON values.
pub fn query_sqlite_file(path: &std::path::Path, sql: &str) -> Result<Vec<Vec<serde_json::Value>>> {
    let conn = rusqlite::Connection::open(path)?;
    let mut statement = conn.prepare(sql)?;
    let columns = statement.column_count();
    let mut rows = statement.query([])?;
    let mut result = Vec::new();
    while let Some(row) = rows.next()? {
        let values = (0..columns)
            .map(|i| row.get_ref(i).map(to_json))
            .collect::<rusqlite::Result<_>>()?;
        result.push(values);
    }
    Ok(result)
}

fn to_json(value: ValueRef<'_>) -> serde_json::Value {
    match value {
        ValueRef::Null => serde_json::Value::Null,
        ValueRef::Integer(i) => i.into(),
        ValueRef::Real(r) => {
            serde_json::Number::from_f64(r).map_or(serde_json::Value::Null, Into::into)
        }
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
        ValueRef::Blob(b) => b
            .iter()
            .map(|&byte| serde_json::Value::from(byte))
            .collect(),
    }
}
