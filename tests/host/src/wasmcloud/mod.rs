//! The wasmCloud flavour: a stand-in for a wasmCloud 1.9.2 lattice running the components
//! of a wadm manifest with the providers it links (http-server, http-client,
//! sqldb-postgres, messaging-nats), on real PostgreSQL and NATS servers.
//!
//! - Components come from the manifest's images: `file://` paths as they are, OCI
//!   references mapped to `<wasm_dir>/<component name with - as _>.wasm`.
//! - Each component runs as N replicas (as on N hosts): HTTP requests to its http-server
//!   address go round-robin to its running replicas, and each replica holds its own NATS
//!   subscriptions (in the link's queue group, so replicas compete for messages).
//!   wadm spreads a spreadscaler's `instances` over the hosts, and a host runs at most its
//!   share of them at a time for a component: each replica runs at most
//!   `ceil(instances / replicas)` invocations at once, and the others wait for a slot
//!   (wasmCloud 1.9.2 makes every invocation wait for a permit, with no limit on the wait
//!   but its 10-minute execution time-out).
//! - Every HTTP request and every message runs on a fresh instance, pre-instantiated on one
//!   engine with the pooling allocator.
//! - Imports: WASI 0.2 (no preopens, sockets denied), `wasi:http` in and out (out: plain
//!   network requests), `wasmcloud:postgres/query` (see `postgres.rs`),
//!   `wasmcloud:messaging` (see `messaging.rs`), `wasi:keyvalue` store and atomics on
//!   JetStream buckets (see `keyvalue.rs`), `wasi:config/store@0.2.0-draft` from the
//!   component's `config` properties, `wasi:logging/logging@0.1.0-draft` on stderr.

mod bindings;
mod keyvalue;
mod manifest;
mod messaging;
mod postgres;
mod runtime;
mod state;
mod wrpc_loss;
pub use wrpc_loss::BodyLoss;

use crate::faults::Faults;
use crate::ticker;
use anyhow::{Context, Result, bail};
use manifest::{ComponentSpec, LatticeSpec};
use runtime::{ComponentPlan, LatticeComponent, LatticeRuntime};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::Row;
use tokio_postgres::types::Type;

/// Where the wasmCloud build of the components lands, relative to the workspace root.
pub const WASMCLOUD_WASM_DIR: &str = "target/wasmcloud/wasm32-wasip2/release";

/// The NATS server used when neither the configuration nor the manifest names one.
const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// How to start a [`Lattice`].
#[derive(Debug, Clone)]
pub struct LatticeConfig {
    /// The wadm manifest (`wadm.yaml` or the rendered `target/wadm.local.yaml`).
    pub manifest: PathBuf,
    /// Where OCI-referenced components are looked up as `<name>.wasm` (`-` becomes `_`);
    /// `None`: [`WASMCLOUD_WASM_DIR`] under the manifest's folder.
    pub wasm_dir: Option<PathBuf>,
    /// A `postgres://` URL whose server and database (`POSTGRES_HOST`, `PORT`, `DATABASE`,
    /// and `PASSWORD` when it has one) replace those of every `wasmcloud:postgres` link;
    /// each link keeps its `POSTGRES_USERNAME`, the service's own role. `None` uses the
    /// links' settings.
    pub database_url: Option<String>,
    /// The NATS server for messaging-nats; `None`: the first `cluster_uris` of the
    /// manifest's handler links, else `nats://127.0.0.1:4222`.
    pub nats_url: Option<String>,
    /// Isolates this lattice from others on the same NATS server: every subject the
    /// components publish, request or subscribe to is sent as `<prefix>.<subject>` (and
    /// seen by components without the prefix); replies to `_INBOX.` subjects are not
    /// prefixed. `None`: subjects as the components name them, as on wasmCloud.
    pub subject_prefix: Option<String>,
    /// Replicas per component name; components not listed run
    /// [`LatticeConfig::worker_replicas`] replicas when they have a messaging handler
    /// link (workers), else one.
    pub replicas: HashMap<String, usize>,
    /// Replicas of each worker not listed in [`LatticeConfig::replicas`].
    pub worker_replicas: usize,
    /// Configuration overrides: each key replaces that property in every component whose
    /// `config` has it (a key no component has is a start error).
    pub overrides: HashMap<String, String>,
    /// Appended to the `bucket` of every `wasi:keyvalue` link (e.g. one set of buckets
    /// per test); see [`Lattice::buckets`].
    pub bucket_suffix: Option<String>,
    /// `None`: no timer. `Some(d)`: every `d`, `POST /internal/tick` to every component
    /// with an http-server link except the entry component (one tick at a time per
    /// component, to a running replica).
    pub tick_interval: Option<Duration>,
    /// `true`: every http-server link listens on an ephemeral `127.0.0.1` port, and
    /// configuration values mentioning a link's manifest address (`127.0.0.1:8081`, or
    /// for `0.0.0.0:P` also `127.0.0.1:P` and `localhost:P`) are rewritten to the bound
    /// one. `false`: listen on the manifest's addresses.
    pub ephemeral_ports: bool,
    /// The component [`Lattice::base_url`] points at.
    pub entry: String,
    /// How long a message invocation may run before the host drops it and frees its slot,
    /// as `wasmcloud --max-execution-time-ms` does (30 s, how the deployment runs its
    /// hosts: infra/wasmcloud/README.md).
    pub max_execution_time: Duration,
}

impl LatticeConfig {
    /// Defaults for `manifest`: the links' database and NATS server, two replicas per
    /// worker, no overrides, a 100 ms tick, ephemeral ports, `gateway` as the entry, 30 s
    /// of execution per message.
    pub fn new(manifest: impl Into<PathBuf>) -> Self {
        Self {
            manifest: manifest.into(),
            wasm_dir: None,
            database_url: None,
            nats_url: None,
            subject_prefix: None,
            replicas: HashMap::new(),
            worker_replicas: 2,
            overrides: HashMap::new(),
            bucket_suffix: None,
            tick_interval: Some(Duration::from_millis(100)),
            ephemeral_ports: true,
            entry: "gateway".to_owned(),
            max_execution_time: Duration::from_secs(30),
        }
    }
}

/// A running lattice: the components' HTTP listeners, their NATS subscriptions, Postgres
/// pools and the timer. Stop it with [`Lattice::shutdown`]; dropping it stops it abruptly.
pub struct Lattice {
    runtime: Arc<LatticeRuntime>,
    faults: Arc<Faults>,
    addresses: BTreeMap<String, SocketAddr>,
    entry: String,
    /// Each Postgres-linked component's connection settings, by component name.
    databases: BTreeMap<String, tokio_postgres::Config>,
    buckets: Vec<String>,
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    tickers: Vec<JoinHandle<()>>,
}

/// Rewrites mentions of the manifest addresses in `value` to the bound ones.
fn rewrite_addresses(value: &str, moved: &[(String, SocketAddr)]) -> String {
    let mut value = value.to_owned();
    for (original, bound) in moved {
        let mut mentions = vec![original.clone()];
        if let Some(port) = original.strip_prefix("0.0.0.0:") {
            mentions.push(format!("127.0.0.1:{port}"));
            mentions.push(format!("localhost:{port}"));
        }
        for mention in mentions {
            value = value.replace(&mention, &bound.to_string());
        }
    }
    value
}

fn replicas_of(config: &LatticeConfig, spec: &ComponentSpec) -> usize {
    config
        .replicas
        .get(&spec.name)
        .copied()
        .unwrap_or(if spec.is_worker() {
            config.worker_replicas
        } else {
            1
        })
}

impl Lattice {
    /// Loads the manifest, connects to NATS, compiles and pre-instantiates every
    /// component, binds the http-server addresses and starts every replica.
    pub async fn start(config: LatticeConfig) -> Result<Lattice> {
        let wasm_dir = config.wasm_dir.clone().unwrap_or_else(|| {
            config
                .manifest
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join(WASMCLOUD_WASM_DIR)
        });
        let spec = LatticeSpec::load(&config.manifest, &wasm_dir)?;
        for warning in &spec.warnings {
            eprintln!("[test-host] warning: {warning}");
        }
        for key in config.overrides.keys() {
            if !spec.components.iter().any(|c| c.config.contains_key(key)) {
                bail!("override {key:?}: no component has this configuration property");
            }
        }
        for name in config.replicas.keys() {
            if !spec.components.iter().any(|c| &c.name == name) {
                bail!("replicas for {name:?}: the manifest has no such component");
            }
        }
        if !spec
            .components
            .iter()
            .any(|c| c.name == config.entry && c.http_address.is_some())
        {
            bail!(
                "the entry component {:?} has no http-server link in the manifest",
                config.entry
            );
        }

        let mut listeners = Vec::new();
        let mut moved = Vec::new();
        for component in &spec.components {
            let Some(address) = &component.http_address else {
                continue;
            };
            let bind = if config.ephemeral_ports {
                SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
            } else {
                address.parse().with_context(|| {
                    format!("{}: address {address:?} is not host:port", component.name)
                })?
            };
            let listener = TcpListener::bind(bind)
                .await
                .with_context(|| format!("{}: cannot listen on {bind}", component.name))?;
            let bound = listener.local_addr()?;
            moved.push((address.clone(), bound));
            listeners.push((component.name.clone(), listener));
        }
        let addresses: BTreeMap<String, SocketAddr> = listeners
            .iter()
            .zip(&moved)
            .map(|((name, _), (_, bound))| (name.clone(), *bound))
            .collect();

        let nats_url = config
            .nats_url
            .clone()
            .or_else(|| {
                spec.components
                    .iter()
                    .find_map(|c| c.cluster_uris.first().cloned())
            })
            .unwrap_or_else(|| DEFAULT_NATS_URL.to_owned());
        let nats = async_nats::ConnectOptions::new()
            .name("test-host messaging-nats")
            .connect(&nats_url)
            .await
            .with_context(|| format!("cannot connect to NATS at {nats_url}"))?;
        let jetstream = async_nats::jetstream::new(nats.clone());

        let database_override = config
            .database_url
            .as_deref()
            .map(tokio_postgres::Config::from_str)
            .transpose()
            .context("database_url is not a postgres:// URL")?;
        let mut databases = BTreeMap::new();
        let mut plans = Vec::new();
        let mut used_buckets = Vec::new();
        for component in spec.components {
            let mut properties = component.config.clone();
            for (key, value) in properties.iter_mut() {
                if let Some(value_override) = config.overrides.get(key) {
                    value.clone_from(value_override);
                }
                if config.ephemeral_ports {
                    *value = rewrite_addresses(value, &moved);
                }
            }
            let postgres = match &component.postgres {
                Some(link) => {
                    let linked = postgres::link_config(link)
                        .with_context(|| format!("component {:?}", component.name))?;
                    let target = match &database_override {
                        Some(server) => postgres::on_server(&linked, server),
                        None => linked,
                    };
                    databases.insert(component.name.clone(), target.clone());
                    let size = link.get("POSTGRES_POOL_SIZE").and_then(|s| s.parse().ok());
                    Some(postgres::pool(target, size)?)
                }
                None => None,
            };
            let mut buckets = BTreeMap::new();
            for link in &component.keyvalue {
                let Some(bucket) = link.config.get("bucket") else {
                    bail!(
                        "component {:?}: key-value link {:?} has no bucket",
                        component.name,
                        link.name
                    );
                };
                let bucket = format!("{bucket}{}", config.bucket_suffix.as_deref().unwrap_or(""));
                used_buckets.push(bucket.clone());
                // The provider creates a missing bucket only when the link asks it to.
                let create = link
                    .config
                    .get("enable_bucket_auto_create")
                    .is_some_and(|v| v.eq_ignore_ascii_case("true"));
                let store = keyvalue::open_link(&jetstream, &bucket, create).await;
                if let Err(e) = &store {
                    eprintln!(
                        "[test-host] warning: {}: key-value link {:?} failed, bucket {bucket:?}: {e}",
                        component.name, link.name
                    );
                }
                buckets.insert(link.name.clone(), store);
            }
            plans.push(ComponentPlan {
                keyvalue: buckets,
                replicas: replicas_of(&config, &component),
                spec: component,
                config: properties,
                postgres,
            });
        }

        let faults = Arc::new(Faults::default());
        let runtime_faults = faults.clone();
        let subject_prefix = config.subject_prefix.clone();
        let max_execution_time = config.max_execution_time;
        let runtime = tokio::task::spawn_blocking(move || {
            LatticeRuntime::new(
                plans,
                nats,
                subject_prefix,
                runtime_faults,
                max_execution_time,
            )
        })
        .await
        .context("component compilation panicked")??;
        let runtime = Arc::new(runtime);

        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut lattice = Lattice {
            runtime: runtime.clone(),
            faults,
            addresses,
            entry: config.entry.clone(),
            databases,
            buckets: used_buckets,
            shutdown,
            servers: Vec::new(),
            tickers: Vec::new(),
        };
        let components: Vec<Arc<LatticeComponent>> = runtime.components().cloned().collect();
        for component in &components {
            lattice.start_component(&component.spec.name).await?;
        }
        for (name, listener) in listeners {
            let component = runtime.component(&name)?.clone();
            let runtime = runtime.clone();
            lattice.servers.push(tokio::spawn(crate::server::serve(
                listener,
                move |req, _client_addr| {
                    let runtime = runtime.clone();
                    let component = component.clone();
                    async move { runtime.serve_http(&component, req).await }
                },
                shutdown_rx.clone(),
            )));
        }
        if let Some(period) = config.tick_interval {
            for component in components {
                let Some(address) = lattice.addresses.get(&component.spec.name).copied() else {
                    continue;
                };
                if component.spec.name == config.entry {
                    continue;
                }
                let runtime = runtime.clone();
                lattice.tickers.push(tokio::spawn(async move {
                    let authority = address.to_string();
                    ticker::run_with(component.spec.name.clone(), period, || {
                        tick(&runtime, &component, &authority)
                    })
                    .await;
                }));
            }
        }
        Ok(lattice)
    }

    /// The entry component's base URL, `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        self.url(&self.entry)
            .expect("the entry component has an http-server link (checked at start)")
    }

    /// The base URL of `component`'s http-server link, if it has one.
    pub fn url(&self, component: &str) -> Option<String> {
        self.addresses
            .get(component)
            .map(|address| format!("http://{address}"))
    }

    /// The key-value buckets the lattice's links use (after [`LatticeConfig::bucket_suffix`]).
    pub fn buckets(&self) -> &[String] {
        &self.buckets
    }

    /// Whether components run on wasmtime's pooling allocator (they always should).
    pub fn uses_pooling_allocator(&self) -> bool {
        self.runtime.uses_pooling_allocator()
    }

    /// The fault-injection switches for this lattice.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// How many messages each replica of `component` has handled (its
    /// `handle-message` returned, `Ok` or `Err`; traps and cancelled invocations are not
    /// counted), indexed by replica.
    pub fn handled_counts(&self, component: &str) -> Result<Vec<u64>> {
        Ok(LatticeRuntime::handled_counts(
            self.runtime.component(component)?,
        ))
    }

    /// Which replicas of `component` are running, indexed by replica.
    pub fn running_replicas(&self, component: &str) -> Result<Vec<bool>> {
        Ok(LatticeRuntime::running(self.runtime.component(component)?))
    }

    /// Stops replica `index` of `component`: it takes no more HTTP requests, its NATS
    /// subscriptions are dropped and the handlers it is running are cancelled (their
    /// messages are lost, as on wasmCloud).
    pub fn stop_replica(&self, component: &str, index: usize) -> Result<()> {
        self.runtime
            .stop_replica(self.runtime.component(component)?, index)
    }

    /// Starts (again) replica `index` of `component`: it resubscribes and takes HTTP
    /// requests. Returns once the subscriptions are registered with the NATS server.
    pub async fn start_replica(&self, component: &str, index: usize) -> Result<()> {
        let target = self.runtime.component(component)?.clone();
        self.runtime.start_replica(&target, index).await
    }

    /// Stops every replica of `component` (see [`Lattice::stop_replica`]).
    pub fn stop_component(&self, component: &str) -> Result<()> {
        let target = self.runtime.component(component)?;
        for index in 0..LatticeRuntime::running(target).len() {
            self.runtime.stop_replica(target, index)?;
        }
        Ok(())
    }

    /// Starts every replica of `component` (see [`Lattice::start_replica`]).
    pub async fn start_component(&self, component: &str) -> Result<()> {
        let target = self.runtime.component(component)?.clone();
        for index in 0..LatticeRuntime::running(&target).len() {
            self.runtime.start_replica(&target, index).await?;
        }
        Ok(())
    }

    /// Sends a NATS request on the lattice's connection, as a component's
    /// `consumer.request` would (with the subject prefix), and returns the reply's body.
    pub async fn request(
        &self,
        subject: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>> {
        let reply = tokio::time::timeout(
            timeout,
            self.runtime
                .nats
                .request(self.runtime.wire(subject), body.into()),
        )
        .await
        .with_context(|| format!("no reply on {subject} within {timeout:?}"))?
        .with_context(|| format!("request on {subject} failed"))?;
        Ok(reply.payload.to_vec())
    }

    /// Runs `sql` on a new connection to `component`'s database, as its link connects (its
    /// own role, so its own schema), and returns every row as JSON values: integers and
    /// floats as numbers, text types as strings, `NUMERIC` as a string, JSON as JSON,
    /// `BYTEA` as arrays of bytes, NULL as null. Meant for reads in assertions.
    pub async fn sql_query(&self, component: &str, sql: &str) -> Result<Vec<Vec<Value>>> {
        let Some(database) = self.databases.get(component) else {
            bail!("component {component:?} is not linked to Postgres");
        };
        query_postgres(database, sql).await
    }

    /// Stops listening (open connections finish, up to 5 s), the timer and every replica.
    pub async fn shutdown(mut self) {
        self.stop_tasks();
        let _ = self.shutdown.send(true);
        for server in self.servers.drain(..) {
            let _ = server.await;
        }
    }

    fn stop_tasks(&mut self) {
        for ticker in self.tickers.drain(..) {
            ticker.abort();
        }
        let components: Vec<String> = self
            .runtime
            .components()
            .map(|c| c.spec.name.clone())
            .collect();
        for component in components {
            let _ = self.stop_component(&component);
        }
    }
}

impl Drop for Lattice {
    fn drop(&mut self) {
        self.stop_tasks();
        let _ = self.shutdown.send(true);
        for server in self.servers.drain(..) {
            server.abort();
        }
    }
}

/// Sends one tick to a running replica of `component`; nothing while none runs.
async fn tick(
    runtime: &Arc<LatticeRuntime>,
    component: &Arc<LatticeComponent>,
    authority: &str,
) -> Option<String> {
    if !LatticeRuntime::running(component).contains(&true) {
        return None;
    }
    let Some(request) = ticker::tick_request(authority) else {
        return Some(format!("cannot build a request for {authority}"));
    };
    ticker::outcome(runtime.serve_on_replica(component, request).await).await
}

/// Runs `sql` on the Postgres database `database` (without TLS) and returns its rows as
/// JSON values.
pub async fn query_postgres(
    database: &tokio_postgres::Config,
    sql: &str,
) -> Result<Vec<Vec<Value>>> {
    let (client, connection) = database
        .connect(tokio_postgres::NoTls)
        .await
        .context("cannot connect to the database")?;
    let connection = tokio::spawn(connection);
    let rows = client.query(sql, &[]).await;
    drop(client);
    let _ = connection.await;
    rows.with_context(|| format!("query {sql:?} failed"))?
        .iter()
        .map(|row| (0..row.len()).map(|i| json_value(row, i)).collect())
        .collect()
}

/// Column `i` of `row` as JSON.
fn json_value(row: &Row, i: usize) -> Result<Value> {
    fn get<'a, T: tokio_postgres::types::FromSql<'a> + Into<Value>>(
        row: &'a Row,
        i: usize,
    ) -> Result<Value> {
        Ok(row
            .try_get::<_, Option<T>>(i)?
            .map_or(Value::Null, Into::into))
    }
    let ty = row.columns()[i].type_();
    match *ty {
        Type::BOOL => get::<bool>(row, i),
        Type::INT2 => get::<i16>(row, i),
        Type::INT4 => get::<i32>(row, i),
        Type::INT8 => get::<i64>(row, i),
        Type::FLOAT4 => get::<f32>(row, i),
        Type::FLOAT8 => get::<f64>(row, i),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => get::<String>(row, i),
        Type::JSON | Type::JSONB => get::<Value>(row, i),
        Type::BYTEA => get::<Vec<u8>>(row, i),
        Type::NUMERIC => Ok(row
            .try_get::<_, Option<rust_decimal::Decimal>>(i)?
            .map_or(Value::Null, |d| d.to_string().into())),
        ref other => bail!(
            "column {:?} has type {other}, which sql_query does not convert; cast it to text",
            row.columns()[i].name()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_mentions_of_moved_addresses() {
        let moved = vec![
            (
                "127.0.0.1:8081".to_owned(),
                SocketAddr::from(([127, 0, 0, 1], 40001)),
            ),
            (
                "0.0.0.0:8000".to_owned(),
                SocketAddr::from(([127, 0, 0, 1], 40000)),
            ),
        ];
        assert_eq!(
            rewrite_addresses("http://127.0.0.1:8081/x", &moved),
            "http://127.0.0.1:40001/x"
        );
        assert_eq!(
            rewrite_addresses("http://localhost:8000", &moved),
            "http://127.0.0.1:40000"
        );
        assert_eq!(rewrite_addresses("untouched", &moved), "untouched");
    }
}
