//! Shared helpers of the black-box suite: start the app from `spin.toml` on the test
//! host, mint tokens, call the public API, and wait for asynchronous outcomes.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shop_domain::auth::{Claims, Role, mint_token};
use test_host::{TestHost, TestHostConfig};

/// The dev secret in spin.toml (tests run on the documented defaults).
pub const AUTH_SECRET: &[u8] = b"dev-auth-secret-change-me";
/// The dev event secret in spin.toml.
pub const EVENT_SECRET: &[u8] = b"dev-event-secret-change-me";

/// The repository's spin.toml; fails clearly when the components are not built.
pub fn manifest() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let wasm = root.join("target/wasm32-wasip2/release/orders.wasm");
    assert!(
        wasm.exists(),
        "components are not built: run `make build` (cargo build --target wasm32-wasip2 --release) first"
    );
    root.join("spin.toml")
}

/// The app on a fresh database, with fast retries so failure paths finish quickly.
pub async fn start() -> App {
    start_with(&[]).await
}

/// As [`start`], with extra variable overrides.
pub async fn start_with(variables: &[(&str, &str)]) -> App {
    let mut config = TestHostConfig::new(manifest());
    let mut vars: HashMap<String, String> = [
        ("retry_base_delay_ms", "20"),
        ("retry_max_delay_ms", "200"),
        ("retry_max_attempts", "4"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in variables {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    config.variables = vars;
    config.tick_interval = Some(Duration::from_millis(50));
    let host = TestHost::start(config).await.expect("test host starts");
    App {
        base: host.base_url(),
        host,
        client: reqwest::Client::new(),
    }
}

/// A running app and a client for it.
pub struct App {
    /// The host running the components.
    pub host: TestHost,
    /// Its base URL.
    pub base: String,
    client: reqwest::Client,
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
    /// Sends a request with an optional token, raw body and extra headers.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
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
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body read");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
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
            let pending: i64 = ["orders", "balance_checker", "stock_checker", "vouchers"]
                .iter()
                .map(|p| self.count(&format!("SELECT COUNT(*) FROM {p}_outbox")))
                .sum();
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

    /// A COUNT(*) read straight from the app's database.
    pub fn count(&self, sql: &str) -> i64 {
        match self.host.sqlite_query("default", sql) {
            Ok(rows) => rows
                .first()
                .and_then(|r| r.first())
                .and_then(Value::as_i64)
                .unwrap_or(0),
            Err(_) => 0,
        }
    }

    /// Dead letters as the admin API lists them.
    pub async fn dead_letters(&self) -> Vec<Value> {
        let answer = self.get("/api/v1/admin/dead-letters", &admin()).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.body["items"].as_array().cloned().unwrap_or_default()
    }
}
