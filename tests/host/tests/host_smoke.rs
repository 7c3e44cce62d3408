//! Smoke tests of the test host itself, against the fixture component in
//! `fixtures/echo` (built for wasm32-wasip2 on first use) and `fixtures/spin.toml`.

mod common;

use common::{call, config, get, request, start};
use serde_json::json;
use std::collections::HashMap;
use test_host::TestHost;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_public_components_and_hides_private_ones() {
    let host = start(config()).await;
    assert!(host.uses_pooling_allocator());

    let (status, body) = request(&host, "POST", "/echo/hello?x=1", "payload").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("component=front"), "{body}");
    assert!(body.contains("method=Method::Post"), "{body}");
    assert!(body.contains("path=/echo/hello?x=1"), "{body}");
    assert!(body.contains("path-info=/hello"), "{body}");
    assert!(body.contains("body=payload"), "{body}");

    let (status, body) = get(&host, "/nodb/a/b").await;
    assert_eq!(status, 200);
    assert!(body.contains("component=nodb"), "{body}");

    assert_eq!(
        get(&host, "/back").await.0,
        404,
        "private components are not routable"
    );
    assert_eq!(get(&host, "/internal/tick").await.0, 404);
    assert_eq!(get(&host, "/nothing-here").await.0, 404);
    assert_eq!(get(&host, "/.well-known/spin/health").await.0, 200);

    // A trap is a 500 for that request only.
    assert_eq!(get(&host, "/echo/trap").await.0, 500);
    assert_eq!(get(&host, "/echo/after-trap").await.0, 200);

    // Many concurrent connections, each on its own instance from the pool.
    let host = std::sync::Arc::new(host);
    let requests: Vec<_> = (0..48)
        .map(|i| {
            let host = host.clone();
            tokio::spawn(async move { get(&host, &format!("/echo/n/{i}")).await })
        })
        .collect();
    for (i, handle) in requests.into_iter().enumerate() {
        let (status, body) = handle.await.expect("task");
        assert_eq!(status, 200);
        assert!(body.contains(&format!("path=/echo/n/{i}")), "{body}");
    }
    match std::sync::Arc::try_unwrap(host) {
        Ok(host) => host.shutdown().await,
        Err(_) => panic!("host still shared"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_persists_and_enforces_labels() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config();
    cfg.data_dir = Some(data_dir.path().to_path_buf());
    let host = start(cfg.clone()).await;

    assert_eq!(
        get(&host, "/echo/sql").await,
        (200, "count=1 rowid=1 changes=1".into())
    );
    assert_eq!(
        get(&host, "/echo/sql").await,
        (200, "count=2 rowid=2 changes=1".into())
    );
    // Every component with the label shares the one `default` database.
    assert_eq!(
        call(&host, "back", "GET", "/sql").await,
        (200, "count=3 rowid=3 changes=1".into())
    );

    let (status, body) = get(&host, "/nodb/sql").await;
    assert_eq!(status, 500);
    assert!(body.contains("AccessDenied"), "{body}");

    let rows = host
        .sqlite_query("default", "SELECT id, what FROM hits ORDER BY id")
        .expect("query");
    assert_eq!(
        rows,
        vec![
            vec![json!(1), json!("front")],
            vec![json!(2), json!("front")],
            vec![json!(3), json!("back")],
        ]
    );
    assert!(host.sqlite_query("orders", "SELECT 1").is_err());
    host.shutdown().await;
    assert!(data_dir.path().join("sqlite_db.db").exists());

    // The file outlives the host, as .spin/sqlite_db.db outlives `spin up`.
    let host = start(cfg).await;
    assert_eq!(
        get(&host, "/echo/sql").await,
        (200, "count=4 rowid=4 changes=1".into())
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_serves_rendered_templates_and_overrides() {
    let host = start(config()).await;
    assert_eq!(
        get(&host, "/echo/config?key=message").await,
        (200, "hello from front".into())
    );
    assert_eq!(
        get(&host, "/echo/config?key=token").await,
        (200, "s3cret".into())
    );
    assert_eq!(
        get(&host, "/echo/config?key=nope").await,
        (404, "missing".into())
    );
    assert_eq!(
        get(&host, "/echo/config?key=MESSAGE").await,
        (404, "missing".into())
    );
    // Variables are per component.
    assert_eq!(
        get(&host, "/nodb/config?key=message").await,
        (404, "missing".into())
    );
    host.shutdown().await;

    let mut cfg = config();
    cfg.variables.insert("greeting".into(), "hi".into());
    let host = start(cfg).await;
    assert_eq!(
        get(&host, "/echo/config?key=message").await,
        (200, "hi from front".into())
    );
    host.shutdown().await;

    if std::env::var_os("SPIN_VARIABLE_SECRET_TOKEN").is_none() {
        let mut cfg = config();
        cfg.variables = HashMap::new();
        let error = match TestHost::start(cfg).await {
            Ok(_) => panic!("a required variable without a value must stop the start"),
            Err(e) => format!("{e:#}"),
        };
        assert!(error.contains("secret_token"), "{error}");
    }
}

/// Runs on a current-thread runtime on purpose: the host must not need more.
#[tokio::test]
async fn service_chaining_follows_allowed_outbound_hosts() {
    let host = start(config()).await;

    let (status, body) = get(&host, "/echo/chain/back/ping?x=1").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("200 component=back"), "{body}");
    assert!(body.contains("path=/ping?x=1"), "{body}");
    assert!(body.contains("path-info=/ping"), "{body}");

    // front may only call back.
    assert_eq!(
        get(&host, "/echo/chain/nodb/x").await,
        (502, "ErrorCode::HttpRequestDenied".into())
    );
    // "http://self" does not grant service chaining.
    assert_eq!(
        call(&host, "back", "GET", "/chain/front/x").await,
        (502, "ErrorCode::HttpRequestDenied".into())
    );
    // A wildcard allows any component, but not one that does not exist.
    let (status, body) = get(&host, "/nodb/chain/back/y").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("200 component=back"), "{body}");
    assert_eq!(
        get(&host, "/nodb/chain/ghost/y").await,
        (502, "ErrorCode::HttpRequestDenied".into())
    );
    // A trapping callee is a 500 response for the caller, not a trap.
    assert_eq!(
        get(&host, "/nodb/chain/back/trap").await,
        (200, "500 Internal Server Error".into())
    );

    assert!(
        host.call_component("ghost", "GET", "/", &[], Vec::new())
            .await
            .is_err()
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_fail_exactly_the_requested_event_deliveries() {
    let host = start(config()).await;
    let faults = host.faults();

    faults.fail_event_handler("back", Some(2));
    let (status, body) = call(&host, "back", "POST", "/internal/events").await;
    assert_eq!(status, 500);
    assert!(body.contains("injected fault"), "{body}");
    assert_eq!(call(&host, "back", "POST", "/internal/events").await.0, 500);
    assert_eq!(call(&host, "back", "POST", "/internal/events").await.0, 200);
    assert_eq!(faults.injected_count("back"), 2);

    // Only event deliveries to that component are affected.
    faults.fail_event_handler("back", Some(1));
    assert_eq!(call(&host, "back", "GET", "/sql").await.0, 200);
    assert_eq!(
        call(&host, "front", "POST", "/internal/events").await.0,
        200
    );
    assert_eq!(call(&host, "back", "POST", "/internal/events").await.0, 500);
    assert_eq!(call(&host, "back", "POST", "/internal/events").await.0, 200);

    faults.fail_event_handler("back", None);
    for _ in 0..3 {
        assert_eq!(call(&host, "back", "POST", "/internal/events").await.0, 500);
    }
    faults.clear();
    assert_eq!(call(&host, "back", "POST", "/internal/events").await.0, 200);
    assert_eq!(faults.injected_count("back"), 6);
    assert_eq!(faults.injected_count("front"), 0);

    let events = host
        .sqlite_query(
            "default",
            "SELECT what, COUNT(*) FROM events GROUP BY what ORDER BY what",
        )
        .expect("query");
    assert_eq!(
        events,
        vec![
            vec![json!("back"), json!(3)],
            vec![json!("front"), json!(1)]
        ]
    );
    host.shutdown().await;
}
