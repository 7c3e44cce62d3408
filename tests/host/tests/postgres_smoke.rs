//! `spin:postgres/postgres@4.1.0` in the test host, against the real PostgreSQL on this
//! machine: `DATABASE_URL` if set and reachable, else
//! `postgres://postgres@127.0.0.1:5432/test`. Without a reachable server the tests that
//! need one print `SKIPPED: no Postgres ...` and pass, unless `CI` is set, where they fail
//! (`required_services::skip_or_fail`).
//! Every test works on its own table and drops it at the end.

mod common;

use common::{config, get, request, start};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use test_host::{TestHost, TestHostConfig};
use tokio_postgres::NoTls;
use tokio_postgres::config::Host;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A direct client for setup and assertions, and the URL it reached.
struct Db {
    url: String,
    client: tokio_postgres::Client,
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The first reachable database, or `None` after a skip notice (a failure in CI:
/// `required_services`).
async fn database() -> Option<Db> {
    let mut tried = Vec::new();
    let candidates = std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .into_iter()
        .chain([DEFAULT_URL.to_owned()]);
    for url in candidates {
        match connect(&url).await {
            Ok(client) => return Some(Db { url, client }),
            Err(e) => tried.push(format!("{url}: {e}")),
        }
    }
    required_services::skip_or_fail(&format!("no Postgres reachable ({})", tried.join("; ")));
    None
}

/// `host:port` of the URL's first host, for `postgres://{{ pg_host }}`.
fn host_and_port(url: &str) -> String {
    let config: tokio_postgres::Config = url.parse().expect("DATABASE_URL");
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        _ => panic!("{url}: the tests need a TCP host"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// The fixture on `url` without TLS (`sslmode=disable`), as the project's deployments connect.
fn pg_config(url: &str) -> TestHostConfig {
    pg_config_at(url, &format!("{url}?sslmode=disable"))
}

/// The fixture with `pg_address` = `address`, allowed to reach the host of `url`.
fn pg_config_at(url: &str, address: &str) -> TestHostConfig {
    let mut config = config();
    config.variables.insert("pg_address".into(), address.into());
    config
        .variables
        .insert("pg_host".into(), host_and_port(url));
    config
}

/// A table name no other test (or concurrent run) uses.
fn unique_table(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "test_host_{tag}_{}_{nanos}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

async fn drop_table(db: &Db, table: &str) {
    let _ = db
        .client
        .batch_execute(&format!("DROP TABLE IF EXISTS {table}"))
        .await;
}

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// `POST /pg/pgq` (query) or `/pg/pgx` (execute) with a statement and parameter lines.
async fn sql(host: &TestHost, execute: bool, statement: &str, params: &[&str]) -> (u16, String) {
    let path = if execute { "/pg/pgx" } else { "/pg/pgq" };
    let mut body = statement.to_owned();
    for param in params {
        body.push('\n');
        body.push_str(param);
    }
    request(host, "POST", path, &body).await
}

async fn query_ok(host: &TestHost, statement: &str, params: &[&str]) -> Value {
    let (status, body) = sql(host, false, statement, params).await;
    assert_eq!(status, 200, "{statement}: {body}");
    parse(&body)
}

async fn query_err(host: &TestHost, execute: bool, statement: &str, params: &[&str]) -> String {
    let (status, body) = sql(host, execute, statement, params).await;
    assert_eq!(status, 500, "{statement} should fail: {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_round_trip_with_null_parameter() {
    let Some(db) = database().await else { return };
    let table = unique_table("round_trip");
    let host = start(pg_config(&db.url)).await;

    let (status, body) = get(&host, &format!("/pg/pg?table={table}&id=1&name=widget")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        parse(&body),
        json!({
            "inserted": 1,
            "columns": [["id", "int64"], ["name", "str"], ["qty", "int32"]],
            "rows": [[1, "widget", null]],
        })
    );
    let (status, body) = get(&host, &format!("/pg/pg?table={table}&id=2&name=gadget")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        parse(&body)["rows"],
        json!([[1, "widget", null], [2, "gadget", null]])
    );

    // Committed: another session sees both rows, with a real NULL in the INTEGER column.
    let rows = db
        .client
        .query(
            &format!("SELECT id, name FROM {table} WHERE qty IS NULL ORDER BY id"),
            &[],
        )
        .await
        .expect("select");
    let seen: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(seen, vec![(1, "widget".into()), (2, "gadget".into())]);

    // A duplicate key through `execute` is a structured error with its SQLSTATE.
    let (status, body) = get(&host, &format!("/pg/pg?table={table}&id=1")).await;
    assert_eq!(status, 500);
    assert!(
        body.starts_with("insert: query-failed db-error 23505: duplicate key"),
        "{body}"
    );

    // Many instances at once, each with its own connection.
    let host = std::sync::Arc::new(host);
    let requests: Vec<_> = (10..26)
        .map(|id| {
            let (host, table) = (host.clone(), table.clone());
            tokio::spawn(async move { get(&host, &format!("/pg/pg?table={table}&id={id}")).await })
        })
        .collect();
    for handle in requests {
        let (status, body) = handle.await.expect("task");
        assert_eq!(status, 200, "{body}");
    }
    let count: i64 = db
        .client
        .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 18);
    drop_table(&db, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_outside_allowed_outbound_hosts_are_refused() {
    // No server needed: the check happens before connecting.
    let mut cfg = config();
    cfg.variables.insert(
        "pg_address".into(),
        "postgres://u@127.0.0.1:5432/test".into(),
    );
    let host = start(cfg.clone()).await;
    // `front` has no postgres:// entry at all.
    assert_eq!(
        get(&host, "/echo/pg?table=t").await,
        (
            500,
            "open: connection-failed: address postgres://127.0.0.1:5432 is not permitted".into()
        )
    );
    host.shutdown().await;

    // `pg` allows `postgres://{{ pg_host }}`: the template follows the override.
    cfg.variables
        .insert("pg_host".into(), "127.0.0.1:6543".into());
    let host = start(cfg.clone()).await;
    assert_eq!(
        get(&host, "/pg/pg?table=t").await,
        (
            500,
            "open: connection-failed: address postgres://127.0.0.1:5432 is not permitted".into()
        )
    );
    host.shutdown().await;

    // Unix sockets are refused as in Spin.
    cfg.variables.insert(
        "pg_address".into(),
        "postgres:///test?host=/var/run/postgresql".into(),
    );
    let host = start(cfg).await;
    assert_eq!(
        get(&host, "/pg/pg?table=t").await,
        (
            500,
            "open: connection-failed: Unix sockets are not supported on WebAssembly".into()
        )
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_left_open_stays_open_on_the_pooled_connection() {
    let Some(db) = database().await else { return };
    let table = unique_table("dropped");
    let host = start(pg_config(&db.url)).await;
    let (status, body) = get(&host, &format!("/pg/pg?table={table}&id=1")).await;
    assert_eq!(status, 200, "{body}");

    // As on Spin 4.0.2: the connection goes back to the pool with its transaction open
    // ("clean" recycling does not roll back), and the next instance gets that connection.
    let (status, body) = get(&host, &format!("/pg/pg-drop?table={table}&id=2")).await;
    assert_eq!((status, body.as_str()), (200, "dropped after inserting 1"));
    let seen = query_ok(&host, &format!("SELECT id FROM {table} ORDER BY id"), &[]).await;
    assert_eq!(
        seen["rows"],
        json!([[1], [2]]),
        "the next instance runs inside the abandoned transaction"
    );
    let outside: Vec<i64> = db
        .client
        .query(&format!("SELECT id FROM {table} ORDER BY id"), &[])
        .await
        .expect("select")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(outside, vec![1], "nothing is committed");

    // A `ROLLBACK` first (what `Db::transaction` does) ends it.
    let (status, body) = sql(&host, true, "ROLLBACK", &[]).await;
    assert_eq!(status, 200, "{body}");
    let seen = query_ok(&host, &format!("SELECT id FROM {table} ORDER BY id"), &[]).await;
    assert_eq!(seen["rows"], json!([[1]]));
    drop_table(&db, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_without_rows_never_answers_as_on_spin_4_0_2() {
    let Some(db) = database().await else { return };
    let host = start(pg_config(&db.url)).await;
    let one = query_ok(&host, "SELECT 1::BIGINT AS one", &[]).await;
    assert_eq!(one["rows"], json!([[1]]));

    let request = sql(&host, false, "SELECT 1::BIGINT AS one WHERE false", &[]);
    assert!(
        tokio::time::timeout(Duration::from_secs(3), request)
            .await
            .is_err(),
        "Spin 4.0.2's query never returns an empty row set; nor may the test host's"
    );
    // The same statement through `execute` answers.
    let (status, body) = sql(&host, true, "SELECT 1::BIGINT AS one WHERE false", &[]).await;
    assert_eq!((status, body.as_str()), (200, "{\"affected\":0}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_used_unless_the_address_disables_it() {
    let Some(db) = database().await else { return };
    let ssl = db
        .client
        .query_one("SHOW ssl", &[])
        .await
        .expect("SHOW ssl")
        .get::<_, String>(0);
    // tokio-postgres' default is sslmode=prefer: TLS when the server offers it, verified
    // against the system's roots and the host name, as Spin's native-tls connector does.
    let host = start(pg_config_at(&db.url, &db.url)).await;
    let (status, body) = sql(&host, false, "SELECT 1::BIGINT AS one", &[]).await;
    if ssl == "on" {
        assert_eq!(status, 500, "{body}");
        assert!(
            body.starts_with("open: connection-failed: ") && body.contains("certificate"),
            "a server certificate no system root signs fails the handshake: {body}"
        );
    } else {
        assert_eq!(
            status, 200,
            "without TLS on the server, prefer connects plainly: {body}"
        );
    }
    let host = start(pg_config(&db.url)).await;
    let (status, body) = sql(&host, false, "SELECT 1::BIGINT AS one", &[]).await;
    assert_eq!(status, 200, "sslmode=disable connects without TLS: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serialization_failures_carry_sqlstate_40001_through_execute() {
    let Some(db) = database().await else { return };
    let table = unique_table("conflict");
    let host = start(pg_config(&db.url)).await;
    assert_eq!(
        get(&host, &format!("/pg/pg?table={table}&id=1")).await.0,
        200
    );

    let (status, body) = get(
        &host,
        &format!("/pg/pg-conflict?table={table}&commit=execute"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("query-failed db-error 40001: could not serialize access"),
        "{body}"
    );

    // Through `query`, an error raised while the statement runs is text, as in Spin.
    db.client
        .batch_execute(&format!("DELETE FROM {table} WHERE id > 1"))
        .await
        .expect("reset");
    let (status, body) = get(
        &host,
        &format!("/pg/pg-conflict?table={table}&commit=query"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("query-failed text: "), "{body}");
    assert!(body.contains("could not serialize access"), "{body}");
    drop_table(&db, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_and_errors_map_like_spin() {
    let Some(db) = database().await else { return };
    let host = start(pg_config(&db.url)).await;

    let result = query_ok(
        &host,
        "SELECT 1::int2 AS a, 2::int4 AS b, 3::int8 AS c, true AS d, 1.5::float4 AS e, \
         2.5::float8 AS f, 'x'::text AS g, 'y'::varchar AS h, 'z'::char(2) AS i, \
         '\\x0102'::bytea AS j, 12.50::numeric AS k, NULL::int4 AS l, 'n'::name AS m",
        &[],
    )
    .await;
    let types: Vec<&str> = result["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[1].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "int16",
            "int32",
            "int64",
            "boolean",
            "floating32",
            "floating64",
            "str",
            "str",
            "str",
            "binary",
            "DbDataType::Decimal",
            "int32",
            "other(name)"
        ]
    );
    assert_eq!(
        result["rows"],
        json!([[
            1,
            2,
            3,
            true,
            1.5,
            2.5,
            "x",
            "y",
            "z ",
            {"binary": "0102"},
            {"decimal": "12.50"},
            null,
            {"unsupported": "6e"}
        ]])
    );

    // Parameters, including db-null for a typed parameter.
    assert_eq!(
        query_ok(
            &host,
            "SELECT $1::int8 + 1, $2::text, $3::int4",
            &["i64:41", "str:hi", "null"]
        )
        .await["rows"],
        json!([[42, "hi", null]])
    );
    assert_eq!(
        query_ok(
            &host,
            "SELECT $1::date, $2::numeric, $3::jsonb",
            &["date:2024-02-29", "decimal:1.25", "json:{\"a\":1}"]
        )
        .await["rows"],
        json!([[{"other": "DbValue::Date((2024, 2, 29))"}, {"decimal": "1.25"}, {"jsonb": "{\"a\":1}"}]])
    );
    // No rows: a_query_without_rows_never_answers_as_on_spin_4_0_2.

    // An int64 parameter needs a BIGINT: tokio-postgres refuses it before sending.
    let body = query_err(&host, false, "SELECT $1::int4", &["i64:1"]).await;
    assert!(body.starts_with("query: query-failed text: "), "{body}");
    assert!(body.contains("WrongType"), "{body}");
    // Invalid parameter values: bad-parameter for query, value-conversion-failed for execute.
    let body = query_err(&host, false, "SELECT $1::uuid", &["uuid:nope"]).await;
    assert!(
        body.starts_with("query: bad-parameter: invalid UUID nope"),
        "{body}"
    );
    let body = query_err(&host, true, "SELECT $1::uuid", &["uuid:nope"]).await;
    assert!(
        body.starts_with("execute: value-conversion-failed: invalid UUID nope"),
        "{body}"
    );
    // Errors while preparing are structured; errors while a query runs are text.
    let body = query_err(&host, false, "SELECT * FROM test_host_no_such_table", &[]).await;
    assert!(
        body.starts_with("query: query-failed db-error 42P01: "),
        "{body}"
    );
    let runtime_error = "SELECT 1 / (random() * 0)::int";
    let body = query_err(&host, false, runtime_error, &[]).await;
    assert!(
        body.starts_with("query: query-failed text: db error"),
        "{body}"
    );
    assert!(body.contains("division by zero"), "{body}");
    let body = query_err(&host, true, runtime_error, &[]).await;
    assert!(
        body.starts_with("execute: query-failed db-error 22012: division by zero"),
        "{body}"
    );
    // TIMESTAMP reads as a date-time; TIMESTAMPTZ fails, as in Spin.
    assert_eq!(
        query_ok(&host, "SELECT '2024-01-02 03:04:05'::timestamp", &[]).await["rows"],
        json!([[{"other": "DbValue::Datetime((2024, 1, 2, 3, 4, 5, 0))"}]])
    );
    let body = query_err(&host, false, "SELECT now()", &[]).await;
    assert!(body.starts_with("query: query-failed text: "), "{body}");
    assert!(body.contains("timestamptz"), "{body}");
    // execute answers the affected rows.
    let (status, body) = sql(&host, true, "SELECT generate_series(1, 3)", &[]).await;
    assert_eq!((status, parse(&body)), (200, json!({"affected": 3})));
}
