//! A load run: clients placing orders at once, a probe of `/healthz` beside them, and the
//! checks that nothing stalled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use shop_domain::auth::Role;

use super::{App, token};

/// `clients` customers place one-item orders for `duration`, each waiting for its answer
/// before the next; `/healthz` is probed every 200 ms. Every order request must be answered
/// within `answer_within`: 202; 503 when a service is saturated (the order is refused); or,
/// when the host lost part of the request (503 `incomplete-body` / 408 `body-timeout`, as
/// wasmCloud 1.9.2 does under load), the gateway got no answer from orders (503 `no-answer`)
/// or the host trapped the instance (a host's plain 500), the client sends the same order
/// again under the same `Idempotency-Key`, as a real client would, up to [`TRIES`] times:
/// every order must then have been placed, exactly once. Every probe must
/// be answered within 10 s; every accepted order must then leave `placed` within 90 s,
/// confirmed (every customer is funded and the product stocked: at most 1% may end
/// `checks_timed_out`, none otherwise rejected), and one more order must confirm. Prints the
/// figures, with the orders whose checks were re-sent and every service's dead letters.
/// How often a client sends one order whose request the host lost or trapped.
const TRIES: usize = 5;

/// What one client's orders got.
#[derive(Default)]
struct Tally {
    /// Answered 202.
    accepted: usize,
    /// Refused with 503: nothing stored.
    shed: usize,
    /// Sent again because the host lost part of the request.
    lost: usize,
    /// Sent again because the gateway got no answer from orders.
    unanswered: usize,
    /// Sent again because the host trapped the instance.
    trapped: usize,
}

pub async fn run(app: &Arc<App>, clients: usize, duration: Duration, answer_within: Duration) {
    app.product("LOAD-1", 100, 1_000_000_000).await;
    for client in 0..clients {
        app.credit(&format!("load{client}@example.com"), 1_000_000_000)
            .await;
    }
    let until = Instant::now() + duration;
    let mut placing = tokio::task::JoinSet::new();
    for client in 0..clients {
        let app = app.clone();
        placing.spawn(async move {
            let customer = format!("load{client}@example.com");
            let token = token(&customer, Role::Customer);
            let body = json!({"customer": customer, "items": [{"sku": "LOAD-1", "quantity": 1}]});
            let mut tally = Tally::default();
            let mut order = 0;
            while Instant::now() < until {
                order += 1;
                let key = format!("load{client}-{order}");
                let mut tries = 0;
                loop {
                    tries += 1;
                    let answer = tokio::time::timeout(
                        answer_within,
                        app.raw(
                            "POST",
                            "/api/v1/orders",
                            Some(&token),
                            Some(body.to_string().into_bytes()),
                            &[("idempotency-key", &key)],
                        ),
                    )
                    .await
                    .unwrap_or_else(|_| panic!("an order request was not answered within {answer_within:?}: the app stalled"));
                    let kind = answer.body["type"].as_str().unwrap_or_default();
                    match answer.status {
                        202 => {
                            tally.accepted += 1;
                            break;
                        }
                        408 | 503
                            if kind.ends_with("/body-timeout")
                                || kind.ends_with("/incomplete-body") =>
                        {
                            tally.lost += 1
                        }
                        // Orders may have stored it: only the same key tells.
                        503 if kind.ends_with("/no-answer") => {
                            tally.unanswered += 1;
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        // Refused: nothing stored, unless an earlier try that the host
                        // trapped got as far as storing it, so such an order is sent again.
                        503 => {
                            tally.shed += 1;
                            if tries == 1 {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        // Not a service's answer (those are problem+json): the host trapped
                        // the instance, as wasmCloud 1.9.2 does when a lost wRPC message cuts
                        // an import's result ("failed to decode return value").
                        500 if answer
                            .header("content-type")
                            .is_some_and(|t| t.starts_with("text/plain")) =>
                        {
                            tally.trapped += 1
                        }
                        other => panic!("unexpected answer {other}: {answer:?}"),
                    }
                    assert!(
                        tries < TRIES,
                        "order {key} was not placed in {TRIES} tries (lost or trapped each time)"
                    );
                }
            }
            tally
        });
    }
    let health = {
        let base = app.base.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut slowest = Duration::ZERO;
            while Instant::now() < until {
                let started = Instant::now();
                let answer = client
                    .get(format!("{base}/healthz"))
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .expect("/healthz answered within 10 s under load");
                assert!(answer.status().is_success(), "{answer:?}");
                slowest = slowest.max(started.elapsed());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            slowest
        })
    };
    let mut all = Tally::default();
    for tally in placing.join_all().await {
        all.accepted += tally.accepted;
        all.shed += tally.shed;
        all.lost += tally.lost;
        all.unanswered += tally.unanswered;
        all.trapped += tally.trapped;
    }
    let Tally {
        accepted,
        shed,
        lost,
        unanswered,
        trapped,
    } = all;
    let slowest_health = health.await.expect("the /healthz probe");
    let seconds = duration.as_secs_f64();
    eprintln!(
        "load: {clients} clients for {seconds:.0} s: {accepted} orders accepted ({:.1}/s), \
         {shed} shed with 503; sent again: {lost} whose body the host lost (503/408, nothing \
         handled), {unanswered} the gateway got no answer for (503 no-answer), {trapped} whose \
         instance the host trapped (500); slowest /healthz \
         {slowest_health:?}",
        accepted as f64 / seconds
    );
    assert!(accepted > 0, "no order was accepted");
    let stored = app
        .count(
            "orders",
            "SELECT COUNT(*) FROM orders WHERE customer LIKE 'load%'",
        )
        .await;
    assert_eq!(
        stored, accepted as i64,
        "each accepted order stored once, sent again or not"
    );

    let started = Instant::now();
    app.wait_until_none(
        "orders",
        "SELECT COUNT(*) FROM orders WHERE status = 'placed'",
        Duration::from_secs(90),
        "orders still placed after the load",
    )
    .await;
    eprintln!(
        "load: every order settled {:?} after the load",
        started.elapsed()
    );
    report_outcomes(app, accepted).await;
    let started = Instant::now();
    let placed = app
        .place(
            &json!({"customer": "load0@example.com", "items": [{"sku": "LOAD-1", "quantity": 1}]}),
        )
        .await;
    app.wait_status(placed["id"].as_str().expect("an order id"), "confirmed")
        .await;
    eprintln!("load: one more order confirmed in {:?}", started.elapsed());
}

/// Prints how the load's orders ended, how many needed their checks re-sent and the dead
/// letters of every service; fails when an order was rejected for a reason other than
/// `checks_timed_out`, or more than 1% of the `accepted` orders were.
async fn report_outcomes(app: &App, accepted: usize) {
    let outcomes = app
        .query(
            "orders",
            "SELECT status, COALESCE(reason, ''), COUNT(*) FROM orders \
             WHERE customer LIKE 'load%' GROUP BY status, reason ORDER BY status, reason",
        )
        .await
        .expect("the orders' outcomes");
    let mut confirmed = 0;
    let mut timed_out = 0;
    let mut described = Vec::new();
    for row in &outcomes {
        let (status, reason) = (row[0].as_str().unwrap_or(""), row[1].as_str().unwrap_or(""));
        let count = row[2].as_i64().expect("a count");
        match (status, reason) {
            ("confirmed", _) => confirmed += count,
            ("rejected", "checks_timed_out") => timed_out += count,
            _ => panic!("{count} load orders ended {status} ({reason}): {outcomes:?}"),
        }
        described.push(format!(
            "{count} {status}{}",
            if reason.is_empty() {
                String::new()
            } else {
                format!(" ({reason})")
            }
        ));
    }
    let resent = app
        .count(
            "orders",
            "SELECT COUNT(*) FROM orders WHERE customer LIKE 'load%' AND check_resends > 0",
        )
        .await;
    let mut dead = Vec::new();
    for service in super::DATABASE_SERVICES {
        let table = test_host::messaging_table(service, "dead_letters");
        let count = app
            .count(service, &format!("SELECT COUNT(*) FROM {table}"))
            .await;
        dead.push(format!("{service} {count}"));
    }
    eprintln!(
        "load: {}; {resent} needed their checks re-sent; dead letters: {}",
        described.join(", "),
        dead.join(", ")
    );
    assert!(
        confirmed + timed_out >= accepted as i64,
        "{accepted} orders accepted, {} found",
        confirmed + timed_out
    );
    assert!(
        timed_out * 100 <= accepted as i64,
        "{timed_out} of {accepted} funded, stocked orders ended checks_timed_out: more than 1%"
    );
}
