//! Spin scaled out: two instances of the app (two hosts, as two `spin up` processes would
//! be) on one Postgres database, each service on its own role and schema. Orders placed through both gateways are each processed
//! exactly once in effect, whichever instance delivers or receives their events.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{App, Flavour, drop_database, start_with};

/// A fresh database on the tests' PostgreSQL, with the services' roles and schemas; `None`
/// (test skipped loudly) only outside CI when there is no server.
async fn fresh_database() -> Option<String> {
    let Some(server) = support::services::locate(support::services::Service::Postgres).await else {
        required_services::skip_or_fail("no PostgreSQL (DATABASE_URL)");
        return None;
    };
    Some(support::fresh_database(&server, "shop_test").await)
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The app on the test host with every service on its own role and schema of `url`.
async fn instance(url: &str) -> App {
    let variables = support::spin_postgres_variables(url);
    let variables: Vec<(&str, &str)> = variables
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    start_with(Flavour::Spin, &variables).await
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
    let Some(url) = fresh_database().await else {
        return;
    };
    let (a, b) = (instance(&url).await, instance(&url).await);
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
        let pending = scalar(&client, "SELECT (SELECT COUNT(*) FROM shop_orders.orders_outbox) + (SELECT COUNT(*) FROM shop_balance_checker.balance_checker_outbox) + (SELECT COUNT(*) FROM shop_stock_checker.stock_checker_outbox)").await;
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
            "SELECT COUNT(*) FROM shop_balance_checker.credit_holds WHERE state = 'committed'"
        )
        .await,
        40
    );
    assert_eq!(
        scalar(
            &client,
            "SELECT COUNT(*) FROM shop_stock_checker.stock_holds WHERE state = 'committed'"
        )
        .await,
        40
    );
    assert_eq!(
        scalar(
            &client,
            "SELECT COUNT(*) FROM shop_orders.orders WHERE status = 'confirmed'"
        )
        .await,
        40
    );
    // Every event was applied once: 40 placements and 40 confirmations per checker.
    assert_eq!(
        scalar(
            &client,
            "SELECT COUNT(*) FROM shop_balance_checker.balance_checker_inbox"
        )
        .await,
        80
    );
    assert_eq!(
        scalar(
            &client,
            "SELECT COUNT(*) FROM shop_stock_checker.stock_checker_inbox"
        )
        .await,
        80
    );
    assert_eq!(
        scalar(
            &client,
            "SELECT COUNT(*) FROM shop_orders.orders_dead_letters"
        )
        .await,
        0
    );

    // Each service's tables are in its own schema, none in `public`, and no service's role
    // may read another's.
    assert_eq!(
        scalar(
            &client,
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
        .await,
        0
    );
    for service in support::DATABASE_SERVICES {
        let role = support::service_role(service);
        let tables = scalar(
            &client,
            &format!(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '{role}'"
            ),
        )
        .await;
        assert!(tables >= 4, "{role} holds {tables} tables");
    }
    let (vouchers, connection) = support::service_database(&url, "vouchers")
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let denied = vouchers
        .query("SELECT COUNT(*) FROM shop_orders.orders", &[])
        .await
        .expect_err("the vouchers role reads the orders schema");
    assert_eq!(
        denied.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{denied:?}"
    );
    drop(vouchers);

    // Leave nothing behind (a failing run keeps its database for inspection).
    drop(client);
    a.shutdown().await;
    b.shutdown().await;
    drop_database(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_redis_share_each_callers_request_budget() {
    let Some(url) = fresh_database().await else {
        return;
    };
    let Some(redis) = support::services::locate(support::services::Service::Redis).await else {
        required_services::skip_or_fail("no Redis (REDIS_URL)");
        drop_database(&url).await;
        return;
    };
    // infra/spin/runtime-config.redis.toml, on this Redis.
    let dir = tempfile::tempdir().unwrap();
    let runtime_config = dir.path().join("runtime-config.toml");
    let shipped = support::runtime_config().with_file_name("runtime-config.redis.toml");
    std::fs::write(
        &runtime_config,
        std::fs::read_to_string(shipped)
            .unwrap()
            .replace("redis://127.0.0.1:6379", &redis),
    )
    .unwrap();
    let mut hosts = Vec::new();
    for _ in 0..2 {
        let mut config = test_host::TestHostConfig::new(support::manifest());
        config.variables = support::spin_postgres_variables(&url).into_iter().collect();
        config
            .variables
            .insert("rate_limit_per_minute".into(), "4".into());
        config.runtime_config = Some(runtime_config.clone());
        hosts.push(
            test_host::TestHost::start(config)
                .await
                .expect("instance starts"),
        );
    }
    // All five requests in one counting window: wait out a window about to end.
    let into_window = (nanos() / 1_000_000 % 60_000) as u64;
    if into_window > 50_000 {
        tokio::time::sleep(Duration::from_millis(60_000 - into_window + 100)).await;
    }
    // A caller no earlier run has used, so its counter starts at zero.
    let caller = support::token(
        &format!("budget{}@example.com", nanos()),
        shop_domain::auth::Role::Customer,
    );
    let client = reqwest::Client::new();
    let products = |host: &test_host::TestHost| {
        client
            .get(format!("{}/api/v1/products", host.base_url()))
            .bearer_auth(&caller)
            .send()
    };
    for host in [&hosts[0], &hosts[1], &hosts[0], &hosts[1]] {
        assert_eq!(products(host).await.unwrap().status(), 200);
    }
    // Four requests in all through two processes: the fifth is over budget on either.
    assert_eq!(products(&hosts[0]).await.unwrap().status(), 429);
    assert_eq!(products(&hosts[1]).await.unwrap().status(), 429);

    for host in hosts {
        host.shutdown().await;
    }
    drop_database(&url).await;
}
