//! Spin scaled out: two instances of the app (two hosts, as two `spin up` processes would
//! be) on one Postgres database. Orders placed through both gateways are each processed
//! exactly once in effect, whichever instance delivers or receives their events.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{App, start_with};

/// A fresh database on the machine's Postgres (`DATABASE_URL` names the server to use);
/// `None` (test skipped loudly) only outside CI when no server answers.
async fn fresh_database() -> Option<(String, String)> {
    let server = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let client = match tokio_postgres::connect(&server, tokio_postgres::NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            client
        }
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI needs Postgres at {server}: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: no Postgres at {server} ({e}); set DATABASE_URL");
            return None;
        }
    };
    let name = format!("shop_test_{}_{}", std::process::id(), nanos());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    let (prefix, _) = server
        .rsplit_once('/')
        .expect("DATABASE_URL ends with /database");
    let after_scheme = prefix.split_once("://").map_or(prefix, |(_, rest)| rest);
    let host = after_scheme
        .rsplit_once('@')
        .map_or(after_scheme, |(_, host)| host)
        .to_owned();
    Some((format!("{prefix}/{name}"), host))
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Drops the database `url` names, closing the sessions still attached to it.
async fn drop_database(url: &str) {
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

async fn instance(url: &str, host: &str) -> App {
    start_with(&[("database_url", url), ("database_host", host)]).await
}

/// Places 20 orders through `app`, alternating item and value orders over `customers`.
async fn place_orders(app: &App, customers: &[String], offset: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..20 {
        let customer = &customers[(i + offset) % customers.len()];
        let body = if i % 2 == 0 {
            json!({"customer": customer, "items": [{"sku": "BOLT", "quantity": 2}]})
        } else {
            json!({"customer": customer, "value_cents": 1_000})
        };
        ids.push(app.place(&body).await["id"].as_str().unwrap().to_owned());
    }
    ids
}

async fn scalar(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_postgres_process_every_order_once() {
    let Some((url, host)) = fresh_database().await else {
        return;
    };
    let (a, b) = (instance(&url, &host).await, instance(&url, &host).await);
    a.product("BOLT", 250, 1_000).await;
    let customers: Vec<String> = (0..4).map(|i| format!("buyer{i}@example.com")).collect();
    for customer in &customers {
        b.credit(customer, 100_000).await;
    }

    // 40 orders, half through each instance, concurrently.
    let (from_a, from_b) = tokio::join!(
        place_orders(&a, &customers, 0),
        place_orders(&b, &customers, 1)
    );
    for id in from_a.iter().chain(&from_b) {
        b.wait_status(id, "confirmed").await;
    }

    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let pending = scalar(&client, "SELECT (SELECT COUNT(*) FROM orders_outbox) + (SELECT COUNT(*) FROM balance_checker_outbox) + (SELECT COUNT(*) FROM stock_checker_outbox)").await;
        if pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{pending} messages never delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Each customer paid exactly for their orders: 5 item orders (5.00) and 5 value orders (10.00).
    for customer in &customers {
        assert_eq!(
            b.account(customer).await,
            json!({"customer": customer, "balance_cents": 100_000 - 5 * 500 - 5 * 1_000, "held_cents": 0})
        );
    }
    let bolt = a.stock("BOLT").await;
    assert_eq!(
        (bolt["stock"].as_i64(), bolt["reserved"].as_i64()),
        (Some(1_000 - 20 * 2), Some(0))
    );
    assert_eq!(
        scalar(
            &client,
            "SELECT COUNT(*) FROM credit_holds WHERE state = 'committed'"
        )
        .await,
        40
    );
    assert_eq!(
        scalar(
            &client,
            "SELECT COUNT(*) FROM stock_holds WHERE state = 'committed'"
        )
        .await,
        40
    );
    assert_eq!(
        scalar(
            &client,
            "SELECT COUNT(*) FROM orders WHERE status = 'confirmed'"
        )
        .await,
        40
    );
    // Every event was applied once: 40 placements and 40 confirmations per checker.
    assert_eq!(
        scalar(&client, "SELECT COUNT(*) FROM balance_checker_inbox").await,
        80
    );
    assert_eq!(
        scalar(&client, "SELECT COUNT(*) FROM stock_checker_inbox").await,
        80
    );
    assert_eq!(
        scalar(&client, "SELECT COUNT(*) FROM orders_dead_letters").await,
        0
    );

    // Leave nothing behind (a failing run keeps its database for inspection).
    drop(client);
    a.host.shutdown().await;
    b.host.shutdown().await;
    drop_database(&url).await;
}
