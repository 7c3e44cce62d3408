//! Crashes: the process serving the app is killed (SIGKILL) in the middle of a load run and
//! started again on the same data. Clients keep sending each order under its
//! `Idempotency-Key` until it is answered, as a real client would. Afterwards every order a
//! client was told is accepted exists exactly once and no other does, every one settles
//! confirmed (every customer is funded, the product stocked), and money and stock add up
//! to the cent and the unit. On the test host as a process of its own: one instance on its
//! SQLite files, and one of two instances on one PostgreSQL database; the same on a real
//! Spin with `make real-spin-test`.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::json;
use shop_domain::auth::Role;
use support::{Flavour, ServedDatabase, start, token};

/// Clients placing orders at once on SQLite.
const CLIENTS: usize = 8;
/// Clients placing orders at once on PostgreSQL. Two instances keep a pool per service (as
/// Spin does, up to 64 clients each) and never close an idle client: measured here, 8
/// clients took all of the server's 100 connections (the test's own reads were refused),
/// 4 held up to 90, 2 about 46.
const POSTGRES_CLIENTS: usize = 2;
/// Orders each client places, one after another.
const ORDERS_PER_CLIENT: usize = 25;
/// The one product's price.
const PRICE_CENTS: i64 = 150;
/// Its stock: ample.
const STOCK: i64 = 1_000_000;
/// Each customer's credit: ample.
const CREDIT_CENTS: i64 = 1_000_000;
/// How long one order may take to be placed, the restart included.
const PLACE_WITHIN: Duration = Duration::from_secs(60);

/// What one client did: each order's key and id, and how many sends got no 202.
struct Placed {
    orders: Vec<(String, String)>,
    sent_again: usize,
}

/// Places one order per `key` for `customer` until the app accepts it, sending the same
/// request again after no answer (the server died under it) or a 503.
async fn place_until_accepted(
    app: &support::App,
    customer: &str,
    sku: &str,
    keys: Vec<String>,
    accepted: &AtomicUsize,
) -> Placed {
    let token = token(customer, Role::Customer);
    let body = json!({"customer": customer, "items": [{"sku": sku, "quantity": 1}]}).to_string();
    let mut placed = Placed {
        orders: Vec::new(),
        sent_again: 0,
    };
    for key in keys {
        let deadline = Instant::now() + PLACE_WITHIN;
        let id = loop {
            let answer = app
                .try_raw(
                    "POST",
                    "/api/v1/orders",
                    Some(&token),
                    Some(body.clone().into_bytes()),
                    &[("idempotency-key", &key)],
                )
                .await;
            match answer {
                Ok(answer) if answer.status == 202 => {
                    break answer.body["id"].as_str().expect("an order id").to_owned();
                }
                // Refused (overloaded, or the instance was starting): nothing stored.
                Ok(answer) if answer.status == 503 => {}
                Ok(answer) => panic!("order {key}: unexpected answer {answer:?}"),
                // No answer: the server died under the request, maybe after storing it.
                Err(_) => {}
            }
            placed.sent_again += 1;
            assert!(
                Instant::now() < deadline,
                "order {key} was not placed within {PLACE_WITHIN:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        accepted.fetch_add(1, Ordering::Relaxed);
        placed.orders.push((key, id));
    }
    placed
}

async fn a_crash_mid_load_loses_and_doubles_nothing(flavour: Flavour) {
    let app = start(flavour).await;
    let run = support::run_id();
    let sku = format!("CRASH-{run}");
    app.product(&sku, PRICE_CENTS, STOCK).await;
    let clients = match flavour {
        Flavour::TestHostProcess(ServedDatabase::Postgres)
        | Flavour::RealSpin(ServedDatabase::Postgres) => POSTGRES_CLIENTS,
        _ => CLIENTS,
    };
    let customers: Vec<String> = (0..clients)
        .map(|client| format!("crash{client}-{run}@example.com"))
        .collect();
    for customer in &customers {
        app.credit(customer, CREDIT_CENTS).await;
    }

    let accepted = AtomicUsize::new(0);
    let total = clients * ORDERS_PER_CLIENT;
    let placing = customers.iter().enumerate().map(|(client, customer)| {
        let keys = (0..ORDERS_PER_CLIENT)
            .map(|n| format!("crash-{run}-{client}-{n}"))
            .collect();
        place_until_accepted(&app, customer, &sku, keys, &accepted)
    });
    let crash = async {
        while accepted.load(Ordering::Relaxed) < total / 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let killed = Instant::now();
        app.crash_and_restart(0).await;
        killed.elapsed()
    };
    let (placed, down) = tokio::join!(join_all(placing), crash);

    let mut answered = HashSet::new();
    for (key, id) in placed.iter().flat_map(|p| &p.orders) {
        assert!(
            answered.insert(id.clone()),
            "{key} was answered with {id}, which another key got too"
        );
    }
    assert_eq!(answered.len(), total);
    let this_run = format!("customer LIKE 'crash%-{run}@example.com'");
    app.wait_until_none(
        "orders",
        &format!("SELECT COUNT(*) FROM orders WHERE status = 'placed' AND {this_run}"),
        Duration::from_secs(90),
        "orders still placed after the crash",
    )
    .await;
    let stored = app
        .query(
            "orders",
            &format!("SELECT id, status FROM orders WHERE {this_run}"),
        )
        .await
        .expect("orders readable");
    let stored_ids: HashSet<String> = stored
        .iter()
        .map(|row| row[0].as_str().expect("an id").to_owned())
        .collect();
    assert_eq!(stored.len(), stored_ids.len());
    let lost: Vec<&String> = answered.difference(&stored_ids).collect();
    assert!(
        lost.is_empty(),
        "accepted orders lost in the crash: {lost:?}"
    );
    let unasked: Vec<&String> = stored_ids.difference(&answered).collect();
    assert!(
        unasked.is_empty(),
        "orders no client was answered with: {unasked:?}"
    );
    for row in &stored {
        assert_eq!(row[1], "confirmed", "{row:?}");
    }
    let keys = app
        .count(
            "orders",
            &format!("SELECT COUNT(DISTINCT idempotency_key) FROM orders WHERE {this_run}"),
        )
        .await;
    assert_eq!(keys as usize, total, "one idempotency key per order");

    // Confirmation commits the holds: wait for the checkers to have applied it.
    app.wait_until_none(
        "balance-checker",
        &format!(
            "SELECT COUNT(*) FROM accounts WHERE held_cents <> 0 AND customer LIKE 'crash%-{run}@example.com'"
        ),
        Duration::from_secs(60),
        "accounts with credit still held",
    )
    .await;
    app.wait_until_none(
        "stock-checker",
        &format!("SELECT COUNT(*) FROM products WHERE reserved <> 0 AND sku = '{sku}'"),
        Duration::from_secs(60),
        "products with stock still reserved",
    )
    .await;
    let spent = PRICE_CENTS * ORDERS_PER_CLIENT as i64;
    for customer in &customers {
        let account = app.account(customer).await;
        assert_eq!(
            account["balance_cents"],
            CREDIT_CENTS - spent,
            "{customer}: {account}"
        );
    }
    let product = app.stock(&sku).await;
    assert_eq!(product["stock"], STOCK - total as i64, "{product}");
    eprintln!(
        "crash: {total} orders from {clients} clients, the server killed after {} and back \
         {down:?} later; {} sends answered otherwise than 202 and sent again; every order \
         stored once and confirmed",
        total / 3,
        placed.iter().map(|p| p.sent_again).sum::<usize>()
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_host_process_on_sqlite() {
    a_crash_mid_load_loses_and_doubles_nothing(Flavour::TestHostProcess(ServedDatabase::Sqlite))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_host_process_one_of_two_on_postgres() {
    if support::services::locate(support::services::Service::Postgres)
        .await
        .is_none()
    {
        required_services::skip_or_fail("no PostgreSQL (DATABASE_URL)");
        return;
    }
    a_crash_mid_load_loses_and_doubles_nothing(Flavour::TestHostProcess(ServedDatabase::Postgres))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real Spin 4.x on PATH: make real-spin-test"]
async fn real_spin_on_sqlite() {
    a_crash_mid_load_loses_and_doubles_nothing(Flavour::RealSpin(ServedDatabase::Sqlite)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real Spin 4.x on PATH: make real-spin-test"]
async fn real_spin_one_of_two_on_postgres() {
    a_crash_mid_load_loses_and_doubles_nothing(Flavour::RealSpin(ServedDatabase::Postgres)).await;
}
