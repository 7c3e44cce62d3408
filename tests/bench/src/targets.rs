//! What the benchmark loads: a native hyper hello-world, the hello-world component and the
//! shop on the Spin test host, and the shop's setup (a product, funded customers, tokens).

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

/// The secret spin.toml's `auth_secret` defaults to (the bench runs on the defaults).
const AUTH_SECRET: &[u8] = b"dev-auth-secret-change-me";
/// The product every benchmark order buys.
pub const SKU: &str = "BENCH-1";
/// Its price.
const PRICE_CENTS: i64 = 100;

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
    config.tick_interval = None;
    config.data_dir = Some(dir.join("hello-data"));
    TestHost::start(config).await
}

/// Starts the shop from `manifest` on the test host as `make serve` runs it (100 ms tick,
/// each service's SQLite file as `runtime_config` defines it, under `data_dir`) but without
/// the gateway's rate limit, which a load test would hit. `data_dir` must be new for each
/// host and outlive it: work still in flight after [`TestHost::shutdown`] (a tick, a
/// delivery) then finds its database instead of a deleted temporary directory.
pub async fn start_shop(
    manifest: PathBuf,
    runtime_config: PathBuf,
    data_dir: PathBuf,
) -> Result<TestHost> {
    let mut config = TestHostConfig::new(manifest);
    config.runtime_config = Some(runtime_config);
    config.data_dir = Some(data_dir);
    config
        .variables
        .insert("rate_limit_per_minute".to_owned(), "0".to_owned());
    TestHost::start(config).await
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

/// The customer placing orders on connection `index`.
fn customer(index: usize) -> String {
    format!("bench{index}@example.com")
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

/// Creates the product with the largest stock and credits `customers` customers with
/// the largest credit, so no benchmark order is rejected.
pub async fn stock_the_shop(host: &TestHost, customers: usize) -> Result<()> {
    let base = host.base_url();
    let staff = token("staff@shop.test", Role::Staff);
    call(
        &base,
        Method::PUT,
        &format!("/api/v1/products/{SKU}"),
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
            &format!("/api/v1/accounts/{}/credit", customer(index)),
            &staff,
            json!({"amount_cents": shop_domain::validation::MAX_CREDIT_CENTS}),
            StatusCode::OK,
        )
        .await
        .with_context(|| format!("crediting {}", customer(index)))?;
    }
    Ok(())
}

/// One workload per connection: customer `i` places an order for one unit of [`SKU`]
/// (`POST /api/v1/orders`, 202 Accepted).
pub fn order_workloads(connections: usize) -> Result<Vec<Workload>> {
    (0..connections)
        .map(|index| {
            let email = customer(index);
            let body = json!({"customer": email, "items": [{"sku": SKU, "quantity": 1}]});
            Ok(Workload {
                method: Method::POST,
                path: "/api/v1/orders".to_owned(),
                headers: vec![
                    (
                        http::header::AUTHORIZATION,
                        HeaderValue::try_from(format!("Bearer {}", token(&email, Role::Customer)))?,
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

/// A `SELECT COUNT(*)`-like query's single number, read straight from `service`'s own
/// SQLite file.
pub fn count(host: &TestHost, service: &str, sql: &str) -> Result<i64> {
    host.sqlite_query(service, sql)?
        .first()
        .and_then(|row| row.first())
        .and_then(serde_json::Value::as_i64)
        .with_context(|| format!("{service}: {sql} gave no number"))
}

/// Waits until no order is `placed` any more and every service's outbox is empty (up to
/// `limit`); returns how long that took.
pub async fn wait_until_settled(host: &TestHost, limit: Duration) -> Result<Duration> {
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
            let outbox = format!("{}_outbox", service.replace('-', "_"));
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
