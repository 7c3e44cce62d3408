//! What the benchmark loads: a native hyper hello-world, the hello-world component and the
//! shop on the Spin test host or an app already running (`SHOP_URL`), and the shop's setup
//! (a product, funded customers, tokens), named apart for each run.

use crate::load::Workload;
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use shop_domain::auth::{Claims, Role, mint_token};
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use test_host::{TestHost, TestHostConfig};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The secret spin.toml's `auth_secret` defaults to (the bench runs on the defaults).
const AUTH_SECRET: &[u8] = b"dev-auth-secret-change-me";
/// The price of the product every benchmark order buys.
const PRICE_CENTS: i64 = 100;
/// How often the bench ticks the shop, as `infra/spin/ticker.sh` does.
const TICK_EVERY: Duration = Duration::from_secs(1);

/// Starts a native hyper HTTP/1.1 server on `127.0.0.1:0` answering every request with
/// 200 `hello` (keep-alive, no Nagle: as the test host's listener), on the current runtime.
pub async fn start_native_hello() -> Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|_request| async {
                    let mut response =
                        hyper::Response::new(Full::new(Bytes::from_static(b"hello")));
                    response.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain"),
                    );
                    Ok::<_, Infallible>(response)
                });
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// Starts the test host on a one-component app, `hello` at `/...`, from `wasm`. The
/// manifest and the host's data directory go to `dir`.
pub async fn start_hello_component(wasm: &Path, dir: &Path) -> Result<TestHost> {
    let manifest = dir.join("spin.toml");
    std::fs::write(
        &manifest,
        format!(
            "spin_manifest_version = 2\n\n[application]\nname = \"bench-hello\"\n\n\
             [[trigger.http]]\nroute = \"/...\"\ncomponent = \"hello\"\n\n\
             [component.hello]\nsource = {:?}\n\
             allowed_outbound_hosts = [\"http://hello.spin.internal\"]\n",
            wasm.display().to_string()
        ),
    )?;
    let mut config = TestHostConfig::new(manifest);
    config.data_dir = Some(dir.join("hello-data"));
    TestHost::start(config).await
}

/// Starts the shop from `manifest` on the test host as `make serve` runs it (each service's
/// SQLite file as `runtime_config` defines it, under `data_dir`) but without the gateway's
/// rate limit, which a load test would hit, and ticks it every second (on the current
/// runtime). `data_dir` must be new for each
/// host and outlive it: work still in flight after [`TestHost::shutdown`] (a tick, a
/// delivery) then finds its database instead of a deleted temporary directory.
pub async fn start_shop(
    manifest: PathBuf,
    runtime_config: PathBuf,
    data_dir: PathBuf,
) -> Result<Shop> {
    let mut config = TestHostConfig::new(manifest);
    config.runtime_config = Some(runtime_config);
    config.data_dir = Some(data_dir);
    config
        .variables
        .insert("rate_limit_per_minute".to_owned(), "0".to_owned());
    let host = TestHost::start(config).await?;
    let ticker = Ticker::start(host.addr())?;
    Ok(Shop::TestHost(host, ticker))
}

/// A bearer token for `email` with `role`, valid for a day.
fn token(email: &str, role: Role) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64;
    mint_token(
        &Claims {
            sub: email.to_owned(),
            role,
            exp: now + 86_400,
        },
        AUTH_SECRET,
    )
}

/// The shop a run loads.
pub enum Shop {
    /// The test host, started by [`start_shop`], and its ticker.
    TestHost(TestHost, Ticker),
    /// An app the bench did not start, e.g. a real `spin up` (`SHOP_URL`).
    Running(RunningApp),
}

/// An app already running at `base_url` on embedded SQLite, its files where
/// `infra/spin/runtime-config.toml` puts them under `working_dir` (where `spin up` runs).
/// The bench ticks it every second while it is loaded, as `infra/spin/ticker.sh` would.
pub struct RunningApp {
    base_url: String,
    working_dir: PathBuf,
    runtime_config: PathBuf,
    _ticker: Ticker,
}

impl RunningApp {
    /// The app at `base_url` (`http://IP:PORT`), run in `working_dir` with `runtime_config`;
    /// starts ticking it (on the current runtime).
    pub fn new(base_url: &str, working_dir: PathBuf, runtime_config: PathBuf) -> Result<Self> {
        let base_url = base_url.trim_end_matches('/').to_owned();
        let addr: SocketAddr = base_url
            .trim_start_matches("http://")
            .parse()
            .with_context(|| format!("SHOP_URL {base_url:?} is not http://IP:PORT"))?;
        Ok(Self {
            base_url,
            working_dir,
            runtime_config,
            _ticker: Ticker::start(addr)?,
        })
    }
}

/// Posts the admin tick to a shop every [`TICK_EVERY`] until dropped, as
/// `infra/spin/ticker.sh` does beside `spin up`: only ticks send retries.
pub struct Ticker(JoinHandle<()>);

impl Ticker {
    /// Starts ticking the shop at `addr` (on the current runtime).
    pub fn start(addr: SocketAddr) -> Result<Ticker> {
        let tick = Workload {
            method: Method::POST,
            path: "/api/v1/admin/tick".to_owned(),
            headers: vec![(
                http::header::AUTHORIZATION,
                HeaderValue::try_from(format!("Bearer {}", token("bench@shop.test", Role::Admin)))?,
            )],
            body: Bytes::new(),
            expect: StatusCode::OK,
        };
        Ok(Ticker(tokio::spawn(async move {
            loop {
                let _ =
                    crate::load::run(addr, vec![tick.clone()], crate::load::Stop::Count(1)).await;
                tokio::time::sleep(TICK_EVERY).await;
            }
        })))
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Shop {
    /// The app's base URL, `http://IP:PORT`.
    pub fn base_url(&self) -> String {
        match self {
            Shop::TestHost(host, _) => host.base_url(),
            Shop::Running(app) => app.base_url.clone(),
        }
    }

    /// The address the load generator connects to.
    pub fn addr(&self) -> Result<SocketAddr> {
        let base = self.base_url();
        base.trim_start_matches("http://")
            .parse()
            .with_context(|| format!("{base} is not http://IP:PORT"))
    }

    /// Rows of `sql` on `service`'s own SQLite database.
    pub fn query(&self, service: &str, sql: &str) -> Result<Vec<Vec<serde_json::Value>>> {
        match self {
            Shop::TestHost(host, _) => host.sqlite_query(service, sql),
            Shop::Running(app) => test_host::query_sqlite_file(
                &test_host::spin_sqlite_file(&app.runtime_config, &app.working_dir, service)?,
                sql,
            ),
        }
    }

    /// Stops the test host; an app the bench did not start keeps running.
    pub async fn shutdown(self) {
        if let Shop::TestHost(host, ticker) = self {
            drop(ticker);
            host.shutdown().await;
        }
    }
}

/// The product and customers of one bench run, named apart from those of earlier runs on
/// the same app (a running app keeps them).
#[derive(Debug, Clone)]
pub struct Fixture {
    tag: String,
}

impl Fixture {
    /// Names for a run started now.
    pub fn new() -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Self {
            tag: format!("{:x}", now.as_millis()),
        }
    }

    /// The product every order of the run buys.
    pub fn sku(&self) -> String {
        format!("BENCH-{}", self.tag.to_uppercase())
    }

    /// The customer placing orders on connection `index`.
    fn customer(&self, index: usize) -> String {
        format!("bench-{}-{index}@example.com", self.tag)
    }

    /// A SQL condition on `orders.customer` that holds for the run's orders alone.
    pub fn orders_of_run(&self) -> String {
        format!("customer LIKE 'bench-{}-%'", self.tag)
    }

    /// Creates the product with the largest stock and credits `customers` customers with
    /// the largest credit, so no benchmark order is rejected.
    pub async fn stock(&self, shop: &Shop, customers: usize) -> Result<()> {
        let base = shop.base_url();
        let staff = token("staff@shop.test", Role::Staff);
        call(
            &base,
            Method::PUT,
            &format!("/api/v1/products/{}", self.sku()),
            &staff,
            json!({"name": "Bench widget", "price_cents": PRICE_CENTS, "stock": shop_domain::validation::MAX_STOCK}),
            StatusCode::CREATED,
        )
        .await
        .context("creating the product")?;
        for index in 0..customers {
            call(
                &base,
                Method::POST,
                &format!("/api/v1/accounts/{}/credit", self.customer(index)),
                &staff,
                json!({"amount_cents": shop_domain::validation::MAX_CREDIT_CENTS}),
                StatusCode::OK,
            )
            .await
            .with_context(|| format!("crediting {}", self.customer(index)))?;
        }
        Ok(())
    }

    /// One workload per connection: customer `i` places an order for one unit of the
    /// run's product (`POST /api/v1/orders`, 202 Accepted).
    pub fn order_workloads(&self, connections: usize) -> Result<Vec<Workload>> {
        (0..connections)
            .map(|index| {
                let email = self.customer(index);
                let body =
                    json!({"customer": email, "items": [{"sku": self.sku(), "quantity": 1}]});
                Ok(Workload {
                    method: Method::POST,
                    path: "/api/v1/orders".to_owned(),
                    headers: vec![
                        (
                            http::header::AUTHORIZATION,
                            HeaderValue::try_from(format!(
                                "Bearer {}",
                                token(&email, Role::Customer)
                            ))?,
                        ),
                        (
                            http::header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        ),
                    ],
                    body: Bytes::from(body.to_string()),
                    expect: StatusCode::ACCEPTED,
                })
            })
            .collect()
    }
}

/// Sends one request through a short-lived client and fails unless it gets `expect`.
async fn call(
    base: &str,
    method: Method,
    path: &str,
    token: &str,
    body: serde_json::Value,
    expect: StatusCode,
) -> Result<()> {
    let workload = Workload {
        method,
        path: path.to_owned(),
        headers: vec![
            (
                http::header::AUTHORIZATION,
                HeaderValue::try_from(format!("Bearer {token}"))?,
            ),
            (
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
        ],
        body: Bytes::from(body.to_string()),
        expect,
    };
    let addr = base
        .trim_start_matches("http://")
        .parse()
        .context("the host's base URL is http://IP:PORT")?;
    let result = crate::load::run(addr, vec![workload], crate::load::Stop::Count(1)).await?;
    if result.errors > 0 {
        bail!("{path} failed");
    }
    Ok(())
}

/// A `SELECT COUNT(*)`-like query's single number, read straight from `service`'s own
/// SQLite file.
pub fn count(shop: &Shop, service: &str, sql: &str) -> Result<i64> {
    shop.query(service, sql)?
        .first()
        .and_then(|row| row.first())
        .and_then(serde_json::Value::as_i64)
        .with_context(|| format!("{service}: {sql} gave no number"))
}

/// Waits until no order is `placed` any more and every service's outbox is empty (up to
/// `limit`); returns how long that took.
pub async fn wait_until_settled(host: &Shop, limit: Duration) -> Result<Duration> {
    let started = std::time::Instant::now();
    loop {
        let mut pending = count(
            host,
            "orders",
            "SELECT COUNT(*) FROM orders WHERE status = 'placed'",
        )?;
        for service in ["orders", "balance-checker", "stock-checker", "vouchers"] {
            if count(host, service, "SELECT COUNT(*) FROM schema_migrations").is_err() {
                continue; // not called yet, so not migrated: nothing to send
            }
            let outbox = test_host::messaging_table(service, "outbox");
            pending += count(host, service, &format!("SELECT COUNT(*) FROM {outbox}"))?;
        }
        if pending == 0 {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            bail!("{pending} orders or messages still pending after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
