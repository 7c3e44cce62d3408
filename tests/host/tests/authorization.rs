//! The authorization matrix: every endpoint of `openapi.yaml` called by every kind of
//! caller (no token, an expired token, a token with a forged signature, the customer the
//! resource belongs to, another customer, staff, admin), each answered with the status the
//! table [`MATRIX`] expects. Refusals must be `application/problem+json`, and every
//! expected status must be one `openapi.yaml` documents for that operation.
//!
//! The endpoint list is checked against `openapi.yaml`: an endpoint added there and not to
//! [`MATRIX`] (or one listed here that the spec lost) fails the test.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{Value, json};
use shop_domain::auth::{Claims, Role, mint_token};
use shop_domain::envelope::Envelope;
use support::{AUTH_SECRET, App, Flavour, admin, scenarios, staff, start_with, token};

scenarios!(every_endpoint_answers_every_caller_as_the_matrix_says);

/// Who calls, in the column order of [`MATRIX`].
#[derive(Debug, Clone, Copy)]
enum Caller {
    /// No `Authorization` header.
    NoToken,
    /// The owner's token, signed with the right secret, expired long ago.
    Expired,
    /// An admin token signed with a guessed secret.
    ForgedSignature,
    /// The customer the resources in the request belong to.
    CustomerSelf,
    /// A customer who owns none of them.
    OtherCustomer,
    /// A staff member.
    Staff,
    /// An admin.
    Admin,
}

/// The callers, in the column order of [`MATRIX`].
const CALLERS: [Caller; 7] = [
    Caller::NoToken,
    Caller::Expired,
    Caller::ForgedSignature,
    Caller::CustomerSelf,
    Caller::OtherCustomer,
    Caller::Staff,
    Caller::Admin,
];

/// Every endpoint of `openapi.yaml` (method, path as written there) and the status each
/// caller gets, in the order of [`CALLERS`]. What each request carries (the owner's email,
/// sku, order or dead letter; query and body) is in [`Fixture::request`].
#[rustfmt::skip]
const MATRIX: &[(&str, &str, [u16; 7])] = &[
    //                                                   none expired forged self other staff admin
    ("GET",  "/healthz",                                [200,  200,    200,  200,  200,  200,  200]),
    ("GET",  "/api/v1/products",                        [401,  401,    401,  200,  200,  200,  200]),
    ("GET",  "/api/v1/products/{sku}",                  [401,  401,    401,  200,  200,  200,  200]),
    ("PUT",  "/api/v1/products/{sku}",                  [401,  401,    401,  403,  403,  200,  200]),
    ("GET",  "/api/v1/accounts/{email}",                [401,  401,    401,  200,  403,  200,  200]),
    ("POST", "/api/v1/accounts/{email}/credit",         [401,  401,    401,  403,  403,  200,  200]),
    ("POST", "/api/v1/orders",                          [401,  401,    401,  202,  403,  202,  202]),
    ("GET",  "/api/v1/orders",                          [401,  401,    401,  200,  403,  200,  200]),
    ("POST", "/api/v1/orders/batch",                    [401,  401,    401,  200,  403,  200,  200]),
    ("POST", "/api/v1/order",                           [401,  401,    401,  202,  403,  202,  202]),
    ("GET",  "/api/v1/orders/{id}",                     [401,  401,    401,  200,  403,  200,  200]),
    ("GET",  "/api/v1/orders/events",                   [401,  401,    401,  403,  403,  200,  200]),
    ("GET",  "/api/v1/orders/{id}/events",              [401,  401,    401,  200,  403,  200,  200]),
    ("POST", "/api/v1/orders/{id}/ship",                [401,  401,    401,  403,  403,  200,  200]),
    ("POST", "/api/v1/orders/{id}/deliver",             [401,  401,    401,  403,  403,  200,  200]),
    ("POST", "/api/v1/orders/{id}/cancel",              [401,  401,    401,  200,  403,  200,  200]),
    ("GET",  "/api/v1/vouchers",                        [401,  401,    401,  200,  403,  200,  200]),
    ("GET",  "/api/v1/admin/dead-letters",              [401,  401,    401,  403,  403,  403,  200]),
    ("POST", "/api/v1/admin/dead-letters/{id}/retry",   [401,  401,    401,  403,  403,  403,  202]),
    ("POST", "/api/v1/admin/tick",                      [401,  401,    401,  403,  403,  403,  200]),
];

/// The customer the fixture's resources belong to.
const OWNER: &str = "alice@example.com";
/// A customer who owns nothing in the fixture.
const OTHER: &str = "bob@example.com";
/// The fixture's product.
const SKU: &str = "WIDGET-1";

/// The operations of `openapi.yaml`: `(METHOD, path)` to the statuses it documents.
fn openapi_operations() -> BTreeMap<(String, String), BTreeSet<u16>> {
    let spec_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi.yaml");
    let text = std::fs::read_to_string(&spec_path).expect("openapi.yaml is readable");
    let spec: serde_yaml::Value = serde_yaml::from_str(&text).expect("openapi.yaml parses");
    let paths = spec["paths"].as_mapping().expect("openapi.yaml has paths");
    let methods = [
        "get", "put", "post", "delete", "patch", "head", "options", "trace",
    ];
    let mut operations = BTreeMap::new();
    for (path, item) in paths {
        let path = path.as_str().expect("a path is a string");
        for method in methods {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let statuses = operation["responses"]
                .as_mapping()
                .map(|responses| {
                    responses
                        .keys()
                        .filter_map(|code| match code {
                            serde_yaml::Value::String(code) => code.parse().ok(),
                            serde_yaml::Value::Number(code) => code.as_u64().map(|c| c as u16),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            operations.insert((method.to_uppercase(), path.to_owned()), statuses);
        }
    }
    operations
}

#[test]
fn the_matrix_lists_exactly_the_endpoints_of_openapi_yaml() {
    let in_spec: BTreeSet<(String, String)> = openapi_operations().into_keys().collect();
    let in_matrix: BTreeSet<(String, String)> = MATRIX
        .iter()
        .map(|(method, path, _)| ((*method).to_owned(), (*path).to_owned()))
        .collect();
    assert_eq!(in_matrix.len(), MATRIX.len(), "an endpoint is listed twice");
    let missing: Vec<_> = in_spec.difference(&in_matrix).collect();
    let unknown: Vec<_> = in_matrix.difference(&in_spec).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "openapi.yaml endpoints missing from MATRIX: {missing:?}; MATRIX endpoints not in openapi.yaml: {unknown:?}"
    );
}

#[test]
fn every_expected_status_is_documented_in_openapi_yaml() {
    let operations = openapi_operations();
    let mut undocumented = Vec::new();
    for (method, path, statuses) in MATRIX {
        let Some(documented) = operations.get(&((*method).to_owned(), (*path).to_owned())) else {
            continue; // reported by the_matrix_lists_exactly_the_endpoints_of_openapi_yaml
        };
        for status in statuses {
            if !documented.contains(status) {
                undocumented.push(format!("{method} {path}: {status}"));
            }
        }
    }
    undocumented.dedup();
    assert!(
        undocumented.is_empty(),
        "statuses the matrix expects but openapi.yaml does not document: {undocumented:#?}"
    );
}

/// The resources the matrix's requests act on, all belonging to [`OWNER`].
struct Fixture {
    /// A confirmed order, for the read-only order endpoints.
    order_id: String,
    /// Confirmed orders, one per caller, to ship.
    to_ship: Vec<String>,
    /// Shipped orders, one per caller, to deliver.
    to_deliver: Vec<String>,
    /// Confirmed orders, one per caller, to cancel.
    to_cancel: Vec<String>,
    /// A dead letter (`<service>:<id>`) to retry.
    dead_letter_id: String,
}

impl Fixture {
    /// A product, a credited owner with orders in the states the endpoints need, and a
    /// dead letter (an event with a forged signature).
    async fn create(app: &App) -> Fixture {
        app.product(SKU, 1_000, 1_000).await;
        app.credit(OWNER, 10_000_000).await;
        let mut orders = Vec::new();
        for _ in 0..1 + 3 * CALLERS.len() {
            let order = app
                .place(&json!({"customer": OWNER, "items": [{"sku": SKU, "quantity": 1}]}))
                .await;
            orders.push(order["id"].as_str().unwrap().to_owned());
        }
        for id in &orders {
            app.wait_status(id, "confirmed").await;
        }
        let order_id = orders.remove(0);
        let to_cancel = orders.split_off(2 * CALLERS.len());
        let to_deliver = orders.split_off(CALLERS.len());
        for id in &to_deliver {
            let shipped = app
                .post(&format!("/api/v1/orders/{id}/ship"), &staff(), &json!({}))
                .await;
            assert_eq!(shipped.status, 200, "{shipped:?}");
        }

        let mut forged = Envelope::new(
            "evt_matrix_forged",
            "order.placed",
            "ord_matrix_forged",
            "2026-11-23T00:00:00.000Z",
            "cor_matrix",
            json!({"order_id": "ord_matrix_forged", "customer": OWNER, "total_cents": 1, "items": []}),
        );
        forged.sign(b"not-the-event-secret");
        let (status, _) = app
            .deliver_event("balance-checker", serde_json::to_vec(&forged).unwrap())
            .await;
        assert_eq!(status, 202, "a forged event is dead-lettered");
        let dead = app.dead_letters().await;
        assert_eq!(dead.len(), 1, "{dead:?}");
        Fixture {
            order_id,
            to_ship: orders,
            to_deliver,
            to_cancel,
            dead_letter_id: dead[0]["id"].as_str().unwrap().to_owned(),
        }
    }

    /// The concrete path and JSON body for one call of `method template`. Each call of a
    /// state-changing order action gets an order of its own, so that every caller meets
    /// the same state and only its authorization decides the answer.
    fn request(&mut self, method: &str, template: &str) -> (String, Option<Value>) {
        let one_order = json!({"customer": OWNER, "value_cents": 100});
        let (path, body) = match (method, template) {
            ("GET", "/api/v1/orders") => (format!("{template}?customer={OWNER}"), None),
            ("POST", "/api/v1/orders") => (template.to_owned(), Some(one_order)),
            ("POST", "/api/v1/orders/batch") => (template.to_owned(), Some(json!([one_order]))),
            ("POST", "/api/v1/order") => (format!("{template}?email={OWNER}&value=1"), None),
            ("GET", "/api/v1/vouchers") => (format!("{template}?customer={OWNER}"), None),
            ("PUT", "/api/v1/products/{sku}") => (
                template.to_owned(),
                Some(json!({"name": "Widget", "price_cents": 1_000, "stock": 1_000})),
            ),
            ("POST", "/api/v1/accounts/{email}/credit") => {
                (template.to_owned(), Some(json!({"amount_cents": 100})))
            }
            _ => (template.to_owned(), None),
        };
        let id = match template {
            "/api/v1/orders/{id}/ship" => self.to_ship.pop().expect("an order to ship"),
            "/api/v1/orders/{id}/deliver" => self.to_deliver.pop().expect("an order to deliver"),
            "/api/v1/orders/{id}/cancel" => self.to_cancel.pop().expect("an order to cancel"),
            "/api/v1/admin/dead-letters/{id}/retry" => self.dead_letter_id.clone(),
            _ => self.order_id.clone(),
        };
        let path = path
            .replace("{sku}", SKU)
            .replace("{email}", OWNER)
            .replace("{id}", &id);
        (path, body)
    }
}

/// The bearer token `caller` presents, if any.
fn bearer(caller: Caller) -> Option<String> {
    let far_future = i64::from(u32::MAX);
    match caller {
        Caller::NoToken => None,
        Caller::Expired => Some(mint_token(
            &Claims {
                sub: OWNER.to_owned(),
                role: Role::Customer,
                exp: 1_000,
            },
            AUTH_SECRET,
        )),
        Caller::ForgedSignature => Some(mint_token(
            &Claims {
                sub: "admin@shop.test".to_owned(),
                role: Role::Admin,
                exp: far_future,
            },
            b"a-guessed-secret",
        )),
        Caller::CustomerSelf => Some(token(OWNER, Role::Customer)),
        Caller::OtherCustomer => Some(token(OTHER, Role::Customer)),
        Caller::Staff => Some(staff()),
        Caller::Admin => Some(admin()),
    }
}

/// Sends one request and returns what is wrong with its answer, if anything. Event
/// streams are dropped after their head (an open stream only ends after `stream_max_ms`).
async fn check(
    client: &reqwest::Client,
    app: &App,
    method: &str,
    path: &str,
    body: Option<Value>,
    caller: Caller,
    expected: u16,
) -> Option<String> {
    let mut request = client.request(method.parse().unwrap(), format!("{}{path}", app.base));
    if let Some(token) = bearer(caller) {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let what = format!("{method} {path} as {caller:?}");
    if content_type == "text/event-stream" {
        return (status != expected).then(|| format!("{what}: {status}, expected {expected}"));
    }
    let text = response.text().await.expect("body read");
    if status != expected {
        return Some(format!("{what}: {status}, expected {expected}: {text}"));
    }
    if status >= 400 {
        let problem: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if content_type != "application/problem+json" || problem["status"] != status {
            return Some(format!(
                "{what}: {status} is not a problem+json: {content_type} {text}"
            ));
        }
    }
    None
}

async fn every_endpoint_answers_every_caller_as_the_matrix_says(flavour: Flavour) {
    // No rate limit: the fixture's polling as staff is not what this test is about.
    let app = start_with(flavour, &[("rate_limit_per_minute", "0")]).await;
    let mut fixture = Fixture::create(&app).await;
    let client = reqwest::Client::new();
    let mut wrong = Vec::new();
    for (method, template, expected) in MATRIX {
        for (caller, expected) in CALLERS.into_iter().zip(*expected) {
            let (path, body) = fixture.request(method, template);
            if let Some(problem) = check(&client, &app, method, &path, body, caller, expected).await
            {
                wrong.push(problem);
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} calls answered unlike the matrix:\n{}",
        wrong.len(),
        MATRIX.len() * CALLERS.len(),
        wrong.join("\n")
    );

    // Only the allowed calls changed anything: 22 fixture orders plus one per allowed
    // placement (single, batch, compatibility route: self, staff, admin); the allowed
    // ships, deliveries and cancellations (staff and admin; the owner may also cancel).
    app.wait_quiet().await;
    let orders_in = |status: &str| {
        let app = &app;
        let sql = format!("SELECT COUNT(*) FROM orders WHERE status = '{status}'");
        async move { app.count("orders", &sql).await }
    };
    assert_eq!(app.count("orders", "SELECT COUNT(*) FROM orders").await, 31);
    assert_eq!(orders_in("cancelled").await, 3);
    assert_eq!(orders_in("delivered").await, 2);
    // Shipped: the two the matrix shipped, and the fixture's shipped orders it did not
    // deliver (all but two).
    let fixture_shipped = CALLERS.len() as i64;
    assert_eq!(orders_in("shipped").await, 2 + fixture_shipped - 2);
    let dead = app.dead_letters().await;
    assert_eq!(
        dead.len(),
        1,
        "only the forged fixture event is dead: {dead:?}"
    );
    assert_eq!(dead[0]["reason"], "bad_signature");
}

/// On wasmCloud each service listens on 127.0.0.1 for the gateway (its http-server link),
/// where any local process can reach it. Every call there that claims to come from an
/// admin without the gateway's signature, with a malformed one, or with one made with a
/// guessed secret, is refused with 401 and changes nothing. (Services check the signature
/// before they route, so these entry points stand for all of them; events carry their
/// own signatures, see `event_rejection.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasmcloud_services_refuse_calls_the_gateway_did_not_sign() {
    if support::wasmcloud_services().await.is_none() {
        return;
    }
    let app = start_with(Flavour::WasmCloud, &[]).await;
    let buyer = "unsigned@example.com";
    app.credit(buyer, 10_000).await;
    app.product("UNSIGNED-1", 500, 3).await;
    let order = app
        .place(&json!({"customer": buyer, "items": [{"sku": "UNSIGNED-1", "quantity": 1}]}))
        .await;
    let id = order["id"].as_str().expect("an order id");
    app.wait_status(id, "confirmed").await;
    app.wait_quiet().await;
    let before = (
        app.account(buyer).await,
        app.stock("UNSIGNED-1").await,
        app.order(id).await["status"].clone(),
    );

    let ack = json!({"status": 200, "answer": {"results": []}});
    let entry_points: Vec<(&str, &str, String, Value)> = vec![
        (
            "balance-checker",
            "POST",
            format!("/accounts/{buyer}/credit"),
            json!({"amount_cents": 100_000}),
        ),
        (
            "balance-checker",
            "GET",
            format!("/accounts/{buyer}"),
            Value::Null,
        ),
        (
            "stock-checker",
            "PUT",
            "/products/UNSIGNED-1".into(),
            json!({"name": "Mine", "price_cents": 1, "stock": 1000}),
        ),
        (
            "stock-checker",
            "POST",
            "/internal/prices".into(),
            json!({"skus": ["UNSIGNED-1"]}),
        ),
        (
            "orders",
            "POST",
            "/orders".into(),
            json!({"customer": buyer, "items": [{"sku": "UNSIGNED-1", "quantity": 1}]}),
        ),
        ("orders", "POST", format!("/orders/{id}/cancel"), json!({})),
        ("orders", "GET", "/orders".into(), Value::Null),
        ("orders", "GET", "/orders/events".into(), Value::Null),
        (
            "vouchers",
            "GET",
            format!("/vouchers?customer={buyer}"),
            Value::Null,
        ),
    ]
    .into_iter()
    .chain(
        ["orders", "balance-checker", "stock-checker", "vouchers"]
            .into_iter()
            .flat_map(|service| {
                [
                    (
                        service,
                        "GET",
                        "/internal/dead-letters".to_owned(),
                        Value::Null,
                    ),
                    (
                        service,
                        "POST",
                        format!("/internal/dead-letters/{service}:x/retry"),
                        json!({}),
                    ),
                    (
                        service,
                        "POST",
                        "/internal/acks/vouchers".to_owned(),
                        ack.clone(),
                    ),
                ]
            }),
    )
    .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let client = reqwest::Client::new();
    for (service, method, path, body) in &entry_points {
        let base = app.lattice().url(service).expect("the service listens");
        let (path_only, query) = path.split_once('?').unwrap_or((path, ""));
        let body_bytes = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let guessed = shop_domain::InternalCall {
            method,
            path: path_only,
            query,
            actor: "admin@shop.test",
            role: "admin",
            idempotency_key: "",
            body: &body_bytes,
        }
        .sign(b"a-guessed-secret", now);
        for signature in [None, Some("1.not-hex".to_owned()), Some(guessed)] {
            let mut request = client
                .request(method.parse().unwrap(), format!("{base}{path}"))
                .header("x-shop-actor", "admin@shop.test")
                .header("x-shop-role", "admin")
                .header("content-type", "application/json")
                .body(body_bytes.clone());
            if let Some(signature) = &signature {
                request = request.header("x-shop-signature", signature);
            }
            let answer = request.send().await.expect("the service answers");
            assert_eq!(
                answer.status().as_u16(),
                401,
                "{service} {method} {path} with signature {signature:?}"
            );
        }
    }
    let after = (
        app.account(buyer).await,
        app.stock("UNSIGNED-1").await,
        app.order(id).await["status"].clone(),
    );
    assert_eq!(before, after, "a refused call changed nothing");
    assert_eq!(
        app.count("orders", "SELECT COUNT(*) FROM orders").await,
        1,
        "no order was placed behind the gateway"
    );
    app.shutdown().await;
}
