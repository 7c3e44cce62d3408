//! Shared helpers of the black-box suite: start the app on either flavour of the test host
//! (Spin: `spin.toml` on [`TestHost`]; wasmCloud: `wadm.yaml` on a [`Lattice`] with
//! PostgreSQL and NATS), mint tokens, call the public API, and wait for asynchronous
//! outcomes.
//!
//! The wasmCloud flavour needs PostgreSQL (`DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`: a fresh database is created on that server
//! for each test and dropped at the end) and NATS (`NATS_URL`, default
//! `nats://127.0.0.1:4222`, with JetStream). When one is unreachable its tests are skipped
//! with a notice, or fail in CI (`required_services::skip_or_fail`).
#![allow(dead_code)]

pub mod load;
pub mod real_lattice;
pub mod served;
pub mod services;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shop_domain::auth::{Claims, Role, mint_token};
use test_host::{Faults, Lattice, LatticeConfig, TestHost, TestHostConfig, WASMCLOUD_WASM_DIR};

use real_lattice::RealLattice;
pub use served::ServedDatabase;
use served::{ServedApp, ServedData, Server};

/// The dev secret in spin.toml and wadm.yaml (tests run on the documented defaults).
pub const AUTH_SECRET: &[u8] = b"dev-auth-secret-change-me";
/// The dev event secret in spin.toml and wadm.yaml.
pub const EVENT_SECRET: &[u8] = b"dev-event-secret-change-me";

/// The host a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// The Spin build under `spin.toml`, on the Spin test host (embedded SQLite).
    Spin,
    /// The Spin build under `spin.toml`, on the Spin test host, every service on its own
    /// role and schema of a fresh PostgreSQL database (`<service>_database_url`).
    SpinPostgres,
    /// The wasmCloud build under `wadm.yaml`, on the lattice (Postgres, NATS).
    WasmCloud,
    /// The Spin build under `spin.toml` on a real Spin 4.x (`make real-spin-test`).
    RealSpin(ServedDatabase),
    /// The Spin build under `spin.toml` on `test-host serve`, a process of its own (data on
    /// disk; it can be killed and restarted).
    TestHostProcess(ServedDatabase),
    /// The wasmCloud build as wadm deployed `wadm.yaml` on a real lattice
    /// (`make real-lattice-test`).
    RealLattice,
}

/// Generates, for each scenario `async fn name(flavour: Flavour)`, the tests
/// `spin::name` and `wasmcloud::name` (the latter skipped when its services are missing).
/// Scenarios listed after `real_hosts:` also run on a real Spin, as `real_spin_sqlite::name`
/// and `real_spin_postgres::name`, and on a real wasmCloud lattice, as `real_lattice::name`:
/// ignored unless asked for (`make real-spin-test`, `make real-lattice-test`), as CI has
/// neither host. The others need the test host's fault injection or internal event delivery.
#[allow(unused_macros)]
macro_rules! scenarios {
    (real_hosts: [$($real:ident),* $(,)?], test_host_only: [$($name:ident),* $(,)?] $(,)?) => {
        crate::support::scenarios!($($real,)* $($name),*);

        crate::support::scenarios!(
            @real_host
            /// The scenarios on a real Spin, one instance on its embedded SQLite.
            real_spin_sqlite,
            crate::support::Flavour::RealSpin(crate::support::ServedDatabase::Sqlite),
            "needs a real Spin 4.x on PATH: make real-spin-test",
            [$($real),*]
        );
        crate::support::scenarios!(
            @real_host
            /// The scenarios on a real Spin, two instances on one PostgreSQL database.
            real_spin_postgres,
            crate::support::Flavour::RealSpin(crate::support::ServedDatabase::Postgres),
            "needs a real Spin 4.x on PATH: make real-spin-test",
            [$($real),*]
        );
        crate::support::scenarios!(
            @real_host
            /// The scenarios on a real wasmCloud lattice, one after another on one deployment.
            real_lattice,
            crate::support::Flavour::RealLattice,
            "needs a real wasmCloud lattice with the app deployed: make real-lattice-test",
            [$($real),*]
        );
    };
    (@real_host $(#[$doc:meta])* $module:ident, $flavour:expr, $why:literal, [$($real:ident),*]) => {
        $(#[$doc])*
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = $why]
                async fn $real() {
                    super::$real($flavour).await;
                }
            )*
        }
    };
    ($($name:ident),* $(,)?) => {
        /// The scenarios on the Spin flavour.
        mod spin {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::support::Flavour::Spin).await;
                }
            )*
        }

        /// The scenarios on the wasmCloud flavour.
        mod wasmcloud {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if crate::support::wasmcloud_services().await.is_some() {
                        super::$name(crate::support::Flavour::WasmCloud).await;
                    }
                }
            )*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use scenarios;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The runtime config of the local run: each service's own SQLite database.
pub fn runtime_config() -> PathBuf {
    root().join("infra/spin/runtime-config.toml")
}

/// The repository's spin.toml; fails clearly when the components are not built.
pub fn manifest() -> PathBuf {
    let wasm = root().join("target/wasm32-wasip2/release/orders.wasm");
    assert!(
        wasm.exists(),
        "components are not built: run `make build` (cargo build --target wasm32-wasip2 --release) first"
    );
    root().join("spin.toml")
}

/// The repository's wadm.yaml and the folder its OCI images map to; fails clearly when
/// the wasmCloud build is missing.
pub fn wadm_manifest() -> (PathBuf, PathBuf) {
    let wasm_dir = root().join(WASMCLOUD_WASM_DIR);
    assert!(
        wasm_dir.join("orders.wasm").exists(),
        "the wasmCloud build is missing: run `make build-wasmcloud` first"
    );
    (root().join("wadm.yaml"), wasm_dir)
}

/// Where the wasmCloud flavour's services are.
#[derive(Debug, Clone)]
pub struct Services {
    /// A Postgres URL whose server gets a fresh database per test.
    pub database_server: String,
    /// The NATS server.
    pub nats_url: String,
}

/// The services the wasmCloud flavour needs (see [`services::locate`]), or `None` (and a
/// skip notice) when one is missing outside CI; in CI a missing service fails the test
/// (`required_services::skip_or_fail`).
pub async fn wasmcloud_services() -> Option<Services> {
    let postgres = services::locate(services::Service::Postgres).await;
    let nats = services::locate(services::Service::Nats).await;
    match (postgres, nats) {
        (Some(database_server), Some(nats_url)) => Some(Services {
            database_server,
            nats_url,
        }),
        _ => {
            required_services::skip_or_fail(
                "the wasmCloud flavour needs PostgreSQL and NATS (DATABASE_URL, NATS_URL)",
            );
            None
        }
    }
}

fn unique_suffix() -> String {
    format!("{}_{}", std::process::id(), run_id() % 1_000_000_000_000)
}

/// A number no earlier run used (the clock in nanoseconds), for names a test makes up
/// (customers, skus, keys) on an app that other runs may have used.
pub fn run_id() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The services that own a database (the gateway has none), as `spin.toml` names them.
pub const DATABASE_SERVICES: [&str; 4] = ["orders", "balance-checker", "stock-checker", "vouchers"];

/// A fresh database `<prefix>_<unique>` on the server of `server_url`, with every service's
/// role and schema (`infra/postgres/service-schemas.sql`); returns its URL (the server's
/// administrator's role).
pub async fn fresh_database(server_url: &str, prefix: &str) -> String {
    let (client, connection) = tokio_postgres::connect(server_url, tokio_postgres::NoTls)
        .await
        .expect("connect to Postgres");
    tokio::spawn(connection);
    let name = format!("{prefix}_{}", unique_suffix());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    let (server, _) = server_url
        .rsplit_once('/')
        .expect("DATABASE_URL ends with /database");
    let url = format!("{server}/{name}");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect to the new database");
    tokio::spawn(connection);
    client
        .batch_execute(
            &std::fs::read_to_string(root().join("infra/postgres/service-schemas.sql")).unwrap(),
        )
        .await
        .expect("infra/postgres/service-schemas.sql runs");
    url
}

/// The Postgres role (and schema) of `service`: `shop_<service>`, dashes as underscores.
pub fn service_role(service: &str) -> String {
    format!("shop_{}", service.replace('-', "_"))
}

/// `database_url` (any role) as `service`'s own role connects to it.
pub fn service_database(database_url: &str, service: &str) -> tokio_postgres::Config {
    let mut config: tokio_postgres::Config = database_url.parse().expect("a postgres:// URL");
    config.user(service_role(service));
    config
}

/// The Spin variables that put every service on its own role and schema of the database
/// `database_url` (`<service>_database_url`, without TLS) and allow its `host:port`.
pub fn spin_postgres_variables(database_url: &str) -> Vec<(String, String)> {
    let (scheme_and_user, rest) = database_url
        .split_once('@')
        .expect("a URL like postgres://user@host:port/db");
    let scheme = scheme_and_user
        .split_once("://")
        .expect("a postgres:// URL")
        .0;
    let host = rest.split('/').next().expect("host:port").to_owned();
    let mut variables: Vec<(String, String)> = DATABASE_SERVICES
        .iter()
        .map(|service| {
            (
                format!("{}_database_url", service.replace('-', "_")),
                format!(
                    "{scheme}://{}@{rest}?sslmode=disable",
                    service_role(service)
                ),
            )
        })
        .collect();
    variables.push(("database_host".into(), host));
    variables
}

/// Drops the database `url` names, closing the sessions still attached to it.
pub async fn drop_database(url: &str) {
    let (server, name) = url.rsplit_once('/').expect("url ends with /database");
    let (client, connection) =
        tokio_postgres::connect(&format!("{server}/postgres"), tokio_postgres::NoTls)
            .await
            .expect("connect");
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .expect("drop database");
}

/// The app on a fresh database, with fast retries so failure paths finish quickly.
pub async fn start(flavour: Flavour) -> App {
    start_with(flavour, &[]).await
}

/// The fast-retry settings every test runs with, plus `extra`.
fn settings(extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut settings: HashMap<String, String> = [
        ("retry_base_delay_ms", "20"),
        ("retry_max_delay_ms", "200"),
        ("retry_max_attempts", "4"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in extra {
        settings.insert((*k).to_owned(), (*v).to_owned());
    }
    settings
}

/// As [`start`], with extra settings: Spin variables or wasmCloud config overrides.
pub async fn start_with(flavour: Flavour, extra: &[(&str, &str)]) -> App {
    match flavour {
        Flavour::Spin => {
            let mut config = TestHostConfig::new(manifest());
            config.runtime_config = Some(runtime_config());
            config.variables = settings(extra);
            let host = TestHost::start(config).await.expect("test host starts");
            App::new(Host::Spin(host, None), None)
        }
        Flavour::SpinPostgres => {
            let server = services::locate(services::Service::Postgres)
                .await
                .expect("the Spin flavour on PostgreSQL needs PostgreSQL (DATABASE_URL)");
            let url = fresh_database(&server, "shop_spin").await;
            let mut config = TestHostConfig::new(manifest());
            config.runtime_config = Some(runtime_config());
            config.variables = settings(extra);
            config.variables.extend(spin_postgres_variables(&url));
            let host = TestHost::start(config).await.expect("test host starts");
            let cleanup = Cleanup {
                database_url: url.clone(),
                nats_url: String::new(),
                buckets: Vec::new(),
            };
            App::new(Host::Spin(host, Some(url)), Some(cleanup))
        }
        Flavour::WasmCloud => {
            let services = wasmcloud_services()
                .await
                .expect("the wasmCloud flavour's services are reachable");
            let mut config = lattice_config(&services, 2).await;
            config.overrides = settings(extra);
            let lattice = Lattice::start(config.clone())
                .await
                .unwrap_or_else(|e| panic!("the lattice did not start: {e:#}"));
            let cleanup = Cleanup {
                database_url: config.database_url.clone().expect("set above"),
                nats_url: services.nats_url,
                buckets: lattice.buckets().to_vec(),
            };
            App::new(Host::WasmCloud(Box::new(lattice)), Some(cleanup))
        }
        Flavour::RealSpin(database) => serve(Server::Spin, database, extra).await,
        Flavour::TestHostProcess(database) => serve(Server::TestHost, database, extra).await,
        Flavour::RealLattice => App::new(Host::RealLattice(RealLattice::attach().await), None),
    }
}

/// The app served by processes of `server` on `database`.
async fn serve(server: Server, database: ServedDatabase, extra: &[(&str, &str)]) -> App {
    let postgres = match database {
        ServedDatabase::Sqlite => None,
        ServedDatabase::Postgres => Some(
            services::locate(services::Service::Postgres)
                .await
                .expect("the Postgres variant needs PostgreSQL (DATABASE_URL)"),
        ),
    };
    let served = ServedApp::start(server, database, &settings(extra), postgres.as_deref()).await;
    let cleanup = served.postgres_url().map(|url| Cleanup {
        database_url: url.to_owned(),
        nats_url: String::new(),
        buckets: Vec::new(),
    });
    App::new(Host::Served(served), cleanup)
}

/// A lattice configuration for `wadm.yaml` on a fresh database, with its own NATS subject
/// prefix and key-value buckets (so tests running at once do not meet), `worker_replicas`
/// replicas per worker and a 50 ms tick.
pub async fn lattice_config(services: &Services, worker_replicas: usize) -> LatticeConfig {
    let (manifest, wasm_dir) = wadm_manifest();
    let suffix = unique_suffix();
    let mut config = LatticeConfig::new(manifest);
    config.wasm_dir = Some(wasm_dir);
    config.database_url = Some(fresh_database(&services.database_server, "shop_wc").await);
    config.nats_url = Some(services.nats_url.clone());
    config.subject_prefix = Some(format!("test_{suffix}"));
    config.bucket_suffix = Some(format!("_{suffix}"));
    config.worker_replicas = worker_replicas;
    config.tick_interval = Some(Duration::from_millis(50));
    config
}

/// What a wasmCloud test leaves behind and removes at the end.
pub struct Cleanup {
    /// Its database.
    pub database_url: String,
    /// The NATS server holding its buckets.
    pub nats_url: String,
    /// Its key-value buckets.
    pub buckets: Vec<String>,
}

impl Cleanup {
    /// Drops the database and deletes the buckets.
    pub async fn run(self) {
        drop_database(&self.database_url).await;
        if self.buckets.is_empty() {
            return;
        }
        if let Ok(client) = async_nats::connect(&self.nats_url).await {
            let jetstream = async_nats::jetstream::new(client);
            for bucket in &self.buckets {
                let _ = jetstream.delete_key_value(bucket).await;
            }
        }
    }
}

/// The host running the app.
pub enum Host {
    /// The Spin flavour, with the URL of its PostgreSQL database when it runs on one.
    Spin(TestHost, Option<String>),
    /// The wasmCloud flavour.
    WasmCloud(Box<Lattice>),
    /// A real Spin, or the test host as a process of its own.
    Served(ServedApp),
    /// A deployment on a real wasmCloud lattice.
    RealLattice(RealLattice),
}

/// A running app and a client for it.
pub struct App {
    /// The host running the components (`None` once shut down).
    host: Option<Host>,
    /// Its base URL (the first instance's, where there are several).
    pub base: String,
    /// Every instance's base URL; requests go to each in turn.
    bases: Vec<String>,
    /// Requests sent so far (which instance is next).
    sent: std::sync::atomic::AtomicUsize,
    client: reqwest::Client,
    cleanup: Option<Cleanup>,
    /// On the Spin flavour, the task that posts the admin tick every 50 ms, as
    /// `infra/spin/ticker.sh` does beside `spin up` (the test host, like Spin, has no timer).
    ticker: Option<AbortOnDrop>,
}

/// A task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A response: status, headers and JSON body (Null when empty or not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a 4xx problem+json answer with `status`.
    pub fn assert_problem(&self, status: u16) {
        assert_eq!(self.status, status, "unexpected answer: {self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        assert_eq!(self.body["status"], status, "{self:?}");
        assert!(self.body["title"].is_string(), "{self:?}");
    }
}

/// A bearer token for `email` with `role`, valid for an hour.
pub fn token(email: &str, role: Role) -> String {
    let exp = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600) as i64;
    mint_token(
        &Claims {
            sub: email.to_owned(),
            role,
            exp,
        },
        AUTH_SECRET,
    )
}

pub fn staff() -> String {
    token("staff@shop.test", Role::Staff)
}

pub fn admin() -> String {
    token("admin@shop.test", Role::Admin)
}

impl App {
    /// An app on `host`; `cleanup` runs when it is shut down or dropped.
    pub fn new(host: Host, cleanup: Option<Cleanup>) -> App {
        let bases = match &host {
            Host::Spin(host, _) => vec![host.base_url()],
            Host::WasmCloud(lattice) => vec![lattice.base_url()],
            Host::Served(served) => served.bases.clone(),
            Host::RealLattice(lattice) => vec![lattice.base.clone()],
        };
        let ticker = matches!(host, Host::Spin(..))
            .then(|| AbortOnDrop(tokio::spawn(served::tick(bases.clone()))));
        App {
            ticker,
            host: Some(host),
            base: bases[0].clone(),
            bases,
            sent: Default::default(),
            client: reqwest::Client::new(),
            cleanup,
        }
    }

    fn host(&self) -> &Host {
        self.host.as_ref().expect("the app is running")
    }

    /// The lattice of a wasmCloud app.
    pub fn lattice(&self) -> &Lattice {
        match self.host() {
            Host::WasmCloud(lattice) => lattice,
            _ => panic!("not a wasmCloud app on the test host"),
        }
    }

    /// The URL of the PostgreSQL database of a Spin app on the test host that runs on one.
    pub fn postgres_url(&self) -> Option<&str> {
        match self.host() {
            Host::Spin(_, url) => url.as_deref(),
            _ => None,
        }
    }

    /// Which flavour runs the app.
    pub fn flavour(&self) -> Flavour {
        match self.host() {
            Host::Spin(_, None) => Flavour::Spin,
            Host::Spin(_, Some(_)) => Flavour::SpinPostgres,
            Host::WasmCloud(_) => Flavour::WasmCloud,
            Host::Served(served) => {
                let database = match served.data {
                    ServedData::Sqlite(_) => ServedDatabase::Sqlite,
                    ServedData::Postgres(_) => ServedDatabase::Postgres,
                };
                match served.server {
                    Server::Spin => Flavour::RealSpin(database),
                    Server::TestHost => Flavour::TestHostProcess(database),
                }
            }
            Host::RealLattice(_) => Flavour::RealLattice,
        }
    }

    /// Stops the Spin flavour's ticker (to count the instances requests start alone).
    pub fn stop_ticker(&mut self) {
        drop(self.ticker.take());
    }

    /// How many instances of each component the Spin flavour started so far.
    pub fn instances_started(&self) -> std::collections::BTreeMap<String, u64> {
        match self.host() {
            Host::Spin(host, _) => host.instances_started(),
            _ => panic!("only the Spin flavour of the test host counts instances"),
        }
    }

    /// The host's fault-injection switches.
    pub fn faults(&self) -> &Faults {
        match self.host() {
            Host::Spin(host, _) => host.faults(),
            Host::WasmCloud(lattice) => lattice.faults(),
            Host::Served(_) | Host::RealLattice(_) => {
                panic!("a real host has no fault injection")
            }
        }
    }

    /// Stops the host and removes what the test created.
    pub async fn shutdown(mut self) {
        drop(self.ticker.take());
        match self.host.take() {
            Some(Host::Spin(host, _)) => host.shutdown().await,
            Some(Host::WasmCloud(lattice)) => lattice.shutdown().await,
            Some(Host::Served(served)) => drop(served),
            Some(Host::RealLattice(lattice)) => drop(lattice),
            None => {}
        }
        if let Some(cleanup) = self.cleanup.take() {
            cleanup.run().await;
        }
    }

    /// Hands a signed event envelope to `component`'s event handler as its peers would, as
    /// a batch of one (Spin: `POST /internal/events` through service chaining; wasmCloud: a
    /// NATS request to `shop.events.<component>`). Returns the envelope's result (its
    /// `status`: `processed`, `duplicate`, `dead_lettered` or `failed`, and any `reason`)
    /// with the status a delivery of it alone is answered with: 200 when applied now or
    /// before, 202 when dead-lettered, 503 when it failed.
    pub async fn deliver_event(&self, component: &str, envelope: Vec<u8>) -> (u16, Value) {
        let envelope: Value = serde_json::from_slice(&envelope)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&envelope).into_owned()));
        let batch = serde_json::to_vec(&[envelope]).unwrap();
        let answer: Value = match self.host() {
            Host::Spin(host, _) => {
                let (_, body) = host
                    .call_component(
                        component,
                        "POST",
                        "/internal/events",
                        &[("content-type", "application/json")],
                        batch,
                    )
                    .await
                    .expect("event delivered");
                serde_json::from_slice(&body).unwrap_or(Value::Null)
            }
            Host::WasmCloud(lattice) => {
                let reply = lattice
                    .request(
                        &format!("shop.events.{component}"),
                        batch,
                        Duration::from_secs(10),
                    )
                    .await
                    .expect("event delivered");
                let reply: Value = serde_json::from_slice(&reply).expect("a JSON reply");
                reply["answer"].clone()
            }
            Host::Served(_) | Host::RealLattice(_) => {
                panic!("a real host's event routes are private")
            }
        };
        let result = answer["results"][0].clone();
        let status = match result["status"].as_str() {
            Some("processed" | "duplicate") => 200,
            Some("dead_lettered") => 202,
            _ => 503,
        };
        (status, result)
    }

    /// The SQLite file of `service` on a Spin app on embedded SQLite (test host or real).
    pub fn sqlite_file(&self, service: &str) -> PathBuf {
        match self.host() {
            Host::Spin(host, None) => host.sqlite_file(service),
            Host::Served(served) => match &served.data {
                ServedData::Sqlite(working_dir) => {
                    test_host::spin_sqlite_file(&runtime_config(), working_dir, service)
                }
                ServedData::Postgres(_) => panic!("a Spin app on Postgres has no SQLite file"),
            },
            _ => panic!("not a Spin app"),
        }
        .expect("the service's SQLite file")
    }

    /// Reads rows straight from `service`'s database as JSON values: its own SQLite file on
    /// Spin, its own role's schema on Postgres (wasmCloud, real Spin's Postgres variant).
    pub async fn query(&self, service: &str, sql: &str) -> anyhow::Result<Vec<Vec<Value>>> {
        match self.host() {
            Host::Spin(host, None) => host.sqlite_query(service, sql),
            Host::Spin(_, Some(url)) => {
                // As the administrator, whose reserved connection slots are left when the
                // services' pools (64 clients each, never shrinking: Spin's) hold the rest.
                let mut config: tokio_postgres::Config = url.parse()?;
                config.options(format!("-c search_path={}", service_role(service)));
                test_host::query_postgres(&config, sql).await
            }
            Host::WasmCloud(lattice) => lattice.sql_query(service, sql).await,
            Host::Served(served) => match &served.data {
                ServedData::Sqlite(working_dir) => test_host::query_sqlite_file(
                    &test_host::spin_sqlite_file(&runtime_config(), working_dir, service)?,
                    sql,
                ),
                ServedData::Postgres(url) => {
                    test_host::query_postgres(&service_database(url, service), sql).await
                }
            },
            Host::RealLattice(lattice) => {
                test_host::query_postgres(&service_database(&lattice.database_url, service), sql)
                    .await
            }
        }
    }

    /// Sends a request with an optional token, raw body and extra headers.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Answer {
        self.try_raw(method, path, token, body, headers)
            .await
            .expect("request sent and answered")
    }

    /// [`App::raw`], or the transport's error when no answer came (nothing listens, the
    /// connection broke).
    pub async fn try_raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Result<Answer, reqwest::Error> {
        let turn = self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let base = &self.bases[turn % self.bases.len()];
        let mut request = self
            .client
            .request(method.parse().unwrap(), format!("{base}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// Kills instance `instance` of a served app (SIGKILL) and starts it again on the same
    /// data; returns once it answers.
    pub async fn crash_and_restart(&self, instance: usize) {
        match self.host() {
            Host::Served(served) => served.crash_and_restart(instance).await,
            _ => panic!("only a served app runs in processes of its own"),
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.raw("GET", path, Some(token), None, &[]).await
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Answer {
        self.raw(
            "POST",
            path,
            Some(token),
            Some(body.to_string().into_bytes()),
            &[],
        )
        .await
    }

    pub async fn put(&self, path: &str, token: &str, body: &Value) -> Answer {
        self.raw(
            "PUT",
            path,
            Some(token),
            Some(body.to_string().into_bytes()),
            &[],
        )
        .await
    }

    /// Creates a product as staff.
    pub async fn product(&self, sku: &str, price_cents: i64, stock: i64) {
        let answer = self
            .put(
                &format!("/api/v1/products/{sku}"),
                &staff(),
                &json!({"name": sku, "price_cents": price_cents, "stock": stock}),
            )
            .await;
        assert!(answer.status == 200 || answer.status == 201, "{answer:?}");
    }

    /// Credits a customer as staff.
    pub async fn credit(&self, email: &str, amount_cents: i64) {
        let answer = self
            .post(
                &format!("/api/v1/accounts/{email}/credit"),
                &staff(),
                &json!({"amount_cents": amount_cents}),
            )
            .await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }

    /// The account of `email` as staff sees it.
    pub async fn account(&self, email: &str) -> Value {
        let answer = self
            .get(&format!("/api/v1/accounts/{email}"), &staff())
            .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.body
    }

    /// The product `sku` as staff sees it.
    pub async fn stock(&self, sku: &str) -> Value {
        let answer = self.get(&format!("/api/v1/products/{sku}"), &staff()).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.body
    }

    /// Places an order as its customer; asserts 202 and returns the order.
    pub async fn place(&self, body: &Value) -> Value {
        let customer = body["customer"].as_str().unwrap();
        let answer = self
            .post("/api/v1/orders", &token(customer, Role::Customer), body)
            .await;
        assert_eq!(answer.status, 202, "{answer:?}");
        answer.body
    }

    /// Ships and then delivers order `id` as staff.
    pub async fn ship_and_deliver(&self, id: &str) {
        for action in ["ship", "deliver"] {
            let answer = self
                .post(
                    &format!("/api/v1/orders/{id}/{action}"),
                    &staff(),
                    &json!({}),
                )
                .await;
            assert_eq!(answer.status, 200, "{action}: {answer:?}");
        }
    }

    /// The order `id` as staff sees it.
    pub async fn order(&self, id: &str) -> Value {
        let answer = self.get(&format!("/api/v1/orders/{id}"), &staff()).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.body
    }

    /// Waits (up to 15 s) until order `id` satisfies `done`, and returns it.
    pub async fn wait_order(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let order = self.order(id).await;
            if done(&order) {
                return order;
            }
            assert!(
                Instant::now() < deadline,
                "order {id} never became {what}: {order}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until order `id` has `status`.
    pub async fn wait_status(&self, id: &str, status: &str) -> Value {
        self.wait_order(id, status, |o| o["status"] == status).await
    }

    /// Waits until every service's outbox is empty (all messages delivered or dead).
    pub async fn wait_quiet(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let mut pending = 0;
            for service in DATABASE_SERVICES {
                let outbox = test_host::messaging_table(service, "outbox");
                pending += self
                    .count(service, &format!("SELECT COUNT(*) FROM {outbox}"))
                    .await;
            }
            if pending == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{pending} messages still pending"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the COUNT(*) `sql` on `service`'s database reads 0; fails after
    /// `within`, saying how many `what` were left.
    pub async fn wait_until_none(&self, service: &str, sql: &str, within: Duration, what: &str) {
        let deadline = Instant::now() + within;
        loop {
            let left = self.count(service, sql).await;
            if left == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "{left} {what} after {within:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A COUNT(*) read straight from `service`'s database: 0 while the service has not
    /// migrated its database yet (no `schema_migrations`). A service may be applying its
    /// migrations right now, so a failing read is tried again for up to 2 s; one that
    /// still fails, e.g. on a table of another service's, fails the test.
    pub async fn count(&self, service: &str, sql: &str) -> i64 {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match self.query(service, sql).await {
                Ok(rows) => {
                    return rows
                        .first()
                        .and_then(|r| r.first())
                        .and_then(Value::as_i64)
                        .unwrap_or_else(|| panic!("{service}: {sql} gave no count: {rows:?}"));
                }
                Err(e) => {
                    let migrating = self
                        .query(service, "SELECT COUNT(*) FROM schema_migrations")
                        .await
                        .is_ok();
                    if !migrating {
                        return 0;
                    }
                    assert!(Instant::now() < deadline, "{service}: {sql}: {e:#}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Dead letters as the admin API lists them.
    pub async fn dead_letters(&self) -> Vec<Value> {
        let answer = self.get("/api/v1/admin/dead-letters", &admin()).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.body["items"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for App {
    /// Stops the host, then removes the test's database and buckets on a helper thread
    /// (a failing test's database goes too: each run starts fresh).
    fn drop(&mut self) {
        drop(self.ticker.take());
        drop(self.host.take());
        if let Some(cleanup) = self.cleanup.take() {
            let cleaner = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the cleanup")
                    .block_on(cleanup.run());
            });
            let _ = cleaner.join();
        }
    }
}
