//! Events that must not change anything, on both flavours: tampered ones (dead-lettered as
//! `bad_signature`), replays of an event id already applied (answered `duplicate`), and
//! events that arrive out of order (ignored when they are a normal late answer,
//! dead-lettered with a reason when they can never apply). Each scenario checks the
//! balances, stock and orders afterwards. `pipeline.rs` covers the first duplicate
//! delivery and a signature made with the wrong secret.

mod support;

use serde_json::{Value, json};
use shop_domain::auth::Role;
use shop_domain::envelope::Envelope;
use support::{App, EVENT_SECRET, Flavour, scenarios, start, token};

scenarios!(
    a_tampered_event_is_dead_lettered_and_never_applied,
    a_replayed_event_id_is_never_applied_twice,
    out_of_order_events_are_ignored_or_dead_lettered,
);

/// An event signed with the app's event secret, as a service of the app would send it.
fn signed(id: &str, event_type: &str, order_id: &str, data: Value) -> Vec<u8> {
    let mut envelope = Envelope::new(
        id,
        event_type,
        order_id,
        "2026-11-23T00:00:00.000Z",
        "cor_event_rejection",
        data,
    );
    envelope.sign(EVENT_SECRET);
    serde_json::to_vec(&envelope).unwrap()
}

/// The `order.placed` envelope orders stored for order `id`.
async fn placed_event(app: &App, id: &str) -> Value {
    let rows = app
        .query(
            "orders",
            &format!("SELECT placed_event FROM orders WHERE id = '{id}'"),
        )
        .await
        .unwrap();
    serde_json::from_str(rows[0][0].as_str().unwrap()).unwrap()
}

/// The `(event_id, event_type)` rows of `prefix`'s inbox.
async fn inbox(app: &App, prefix: &str) -> Vec<(String, String)> {
    app.query(
        &prefix.replace('_', "-"),
        &format!("SELECT event_id, event_type FROM {prefix}_inbox ORDER BY event_id"),
    )
    .await
    .unwrap()
    .into_iter()
    .map(|row| {
        (
            row[0].as_str().unwrap().to_owned(),
            row[1].as_str().unwrap().to_owned(),
        )
    })
    .collect()
}

async fn a_tampered_event_is_dead_lettered_and_never_applied(flavour: Flavour) {
    let app = start(flavour).await;
    let tam = "tam@example.com";
    app.credit(tam, 10_000).await;
    let order = app
        .place(&json!({"customer": tam, "value_cents": 3_000}))
        .await;
    let id = order["id"].as_str().unwrap().to_owned();
    app.wait_status(&id, "confirmed").await;
    app.wait_quiet().await;
    let placed = placed_event(&app, &id).await;

    // Each keeps the original signature over changed content.
    let tamper = |change: &dyn Fn(&mut Value)| {
        let mut envelope = placed.clone();
        change(&mut envelope);
        serde_json::to_vec(&envelope).unwrap()
    };
    let tampered = [
        (
            "a smaller total",
            tamper(&|e: &mut Value| e["data"]["total_cents"] = json!(1)),
        ),
        (
            "another customer",
            tamper(&|e: &mut Value| e["data"]["customer"] = json!("mallory@example.com")),
        ),
        (
            "a fresh event id",
            tamper(&|e: &mut Value| e["id"] = json!("evt_tampered_fresh_id")),
        ),
        (
            "another order id",
            tamper(&|e: &mut Value| e["data"]["order_id"] = json!("ord_tampered")),
        ),
        (
            "no signature",
            tamper(&|e: &mut Value| e["signature"] = json!("")),
        ),
        (
            "a made-up signature",
            tamper(&|e: &mut Value| e["signature"] = json!("0".repeat(64))),
        ),
    ];
    for (what, envelope) in &tampered {
        let (status, body) = app.deliver_event("balance-checker", envelope.clone()).await;
        assert_eq!(
            (status, &body["reason"]),
            (202, &json!("bad_signature")),
            "{what}: {body}"
        );
    }
    // `attempt` is transport metadata, deliberately unsigned: a changed one is the same event.
    let (status, body) = app
        .deliver_event(
            "balance-checker",
            tamper(&|e: &mut Value| e["attempt"] = json!(99)),
        )
        .await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("duplicate")),
        "{body}"
    );

    app.wait_quiet().await;
    assert_eq!(
        app.account(tam).await,
        json!({"customer": tam, "balance_cents": 7_000, "held_cents": 0})
    );
    assert_eq!(app.account("mallory@example.com").await["balance_cents"], 0);
    assert_eq!(
        app.count("balance-checker", "SELECT COUNT(*) FROM credit_holds")
            .await,
        1
    );
    assert_eq!(app.count("orders", "SELECT COUNT(*) FROM orders").await, 1);
    let dead = app.dead_letters().await;
    assert_eq!(dead.len(), tampered.len(), "{dead:?}");
    assert!(
        dead.iter()
            .all(|d| d["reason"] == "bad_signature" && d["service"] == "balance-checker"),
        "{dead:?}"
    );
}

async fn a_replayed_event_id_is_never_applied_twice(flavour: Flavour) {
    let app = start(flavour).await;
    let rey = "rey@example.com";
    app.product("CUP", 1_000, 5).await;
    app.credit(rey, 10_000).await;
    let order = app
        .place(&json!({"customer": rey, "items": [{"sku": "CUP", "quantity": 2}]}))
        .await;
    let id = order["id"].as_str().unwrap().to_owned();
    app.wait_status(&id, "confirmed").await;
    let cancelled = app
        .post(
            &format!("/api/v1/orders/{id}/cancel"),
            &token(rey, Role::Customer),
            &json!({}),
        )
        .await;
    assert_eq!(cancelled.status, 200, "{cancelled:?}");
    app.wait_quiet().await;
    let settled = json!({"customer": rey, "balance_cents": 10_000, "held_cents": 0});
    assert_eq!(app.account(rey).await, settled);
    assert_eq!(app.stock("CUP").await["stock"], 5);

    // Every event each service applied, replayed with its id: placed, confirmed and
    // cancelled at both checkers, both holds at orders.
    let data = json!({"order_id": id, "customer": rey, "total_cents": 2_000,
                      "items": [{"sku": "CUP", "quantity": 2, "price_cents": 1_000}],
                      "amount_cents": 2_000});
    let mut replayed = Vec::new();
    for (service, prefix) in [
        ("balance-checker", "balance_checker"),
        ("stock-checker", "stock_checker"),
        ("orders", "orders"),
    ] {
        for (event_id, event_type) in inbox(&app, prefix).await {
            let envelope = signed(&event_id, &event_type, &id, data.clone());
            let (status, body) = app.deliver_event(service, envelope).await;
            assert_eq!(
                (status, &body["status"]),
                (200, &json!("duplicate")),
                "{service} {event_type}: {body}"
            );
            replayed.push(event_type);
        }
    }
    replayed.sort();
    assert_eq!(
        replayed,
        [
            "balance.held",
            "order.cancelled",
            "order.cancelled",
            "order.confirmed",
            "order.confirmed",
            "order.placed",
            "order.placed",
            "stock.held",
        ]
    );

    // The same facts re-sent under fresh ids (as a second sender would): applied as
    // events, but the per-order holds make them change nothing.
    for (n, event_type) in ["order.placed", "order.confirmed", "order.cancelled"]
        .into_iter()
        .enumerate()
    {
        for checker in ["balance-checker", "stock-checker"] {
            let envelope = signed(&format!("evt_resent_{n}"), event_type, &id, data.clone());
            let (status, body) = app.deliver_event(checker, envelope).await;
            assert_eq!(
                (status, &body["status"]),
                (200, &json!("processed")),
                "{checker} {event_type}: {body}"
            );
        }
    }
    app.wait_quiet().await;
    assert_eq!(app.account(rey).await, settled, "no second refund or hold");
    let cup = app.stock("CUP").await;
    assert_eq!(cup["stock"], 5, "no second release or hold: {cup}");
    assert_eq!(app.order(&id).await["status"], "cancelled");
    assert!(app.dead_letters().await.is_empty());
}

async fn out_of_order_events_are_ignored_or_dead_lettered(flavour: Flavour) {
    let app = start(flavour).await;
    let oda = "oda@example.com";
    app.credit(oda, 50_000).await;
    let order = app
        .place(&json!({"customer": oda, "value_cents": 20_000}))
        .await;
    let id = order["id"].as_str().unwrap().to_owned();
    app.wait_status(&id, "confirmed").await;

    // Delivered before shipped: refused, and nothing is sent on.
    app.post(
        &format!("/api/v1/orders/{id}/deliver"),
        &support::staff(),
        &json!({}),
    )
    .await
    .assert_problem(409);
    app.wait_quiet().await;
    assert_eq!(app.order(&id).await["status"], "confirmed");
    assert_eq!(
        app.count("vouchers", "SELECT COUNT(*) FROM vouchers_inbox")
            .await,
        0
    );

    // A voucher for an order not delivered can never apply: dead-lettered with its reason.
    let early_voucher = json!({"order_id": id, "customer": oda, "code": "EARLY",
                               "value_cents": 500, "issued_at": "2026-11-23T00:00:00.000Z"});
    let (status, body) = app
        .deliver_event(
            "orders",
            signed("evt_early_voucher", "voucher.issued", &id, early_voucher),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert!(
        body["reason"].as_str().unwrap().contains("confirmed"),
        "{body}"
    );
    assert!(app.order(&id).await["voucher"].is_null());
    // A confirmation for an order the checker never held: dead-lettered with its reason.
    let (status, body) = app
        .deliver_event(
            "balance-checker",
            signed(
                "evt_confirm_unknown",
                "order.confirmed",
                "ord_never_placed",
                json!({"order_id": "ord_never_placed", "customer": oda, "total_cents": 1}),
            ),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert!(
        body["reason"].as_str().unwrap().contains("without a hold"),
        "{body}"
    );

    app.ship_and_deliver(&id).await;
    let delivered = app
        .wait_order(&id, "voucher", |o| !o["voucher"].is_null())
        .await;
    app.wait_quiet().await;
    let spent = json!({"customer": oda, "balance_cents": 30_000, "held_cents": 0});
    assert_eq!(app.account(oda).await, spent);

    // Check answers arriving after the order ended, and a second voucher: ignored.
    let late = [
        (
            "evt_late_rejection",
            "balance.rejected",
            json!({"order_id": id, "reason": "insufficient_balance"}),
        ),
        (
            "evt_late_stock",
            "stock.rejected",
            json!({"order_id": id, "reason": "out_of_stock: X"}),
        ),
        (
            "evt_late_hold",
            "balance.held",
            json!({"order_id": id, "amount_cents": 20_000}),
        ),
        (
            "evt_second_voucher",
            "voucher.issued",
            json!({"order_id": id, "customer": oda,
            "code": "SECOND", "value_cents": 500, "issued_at": "2026-11-23T00:00:00.000Z"}),
        ),
    ];
    for (event_id, event_type, data) in late {
        let (status, body) = app
            .deliver_event("orders", signed(event_id, event_type, &id, data))
            .await;
        assert_eq!(
            (status, &body["status"]),
            (200, &json!("processed")),
            "{event_type}: {body}"
        );
    }
    app.wait_quiet().await;
    let after = app.order(&id).await;
    assert_eq!(after["status"], "delivered");
    assert_eq!(after["reason"], Value::Null);
    assert_eq!(
        after["voucher"], delivered["voucher"],
        "the first voucher stays"
    );
    assert_eq!(after["history"], delivered["history"]);
    let checks = app
        .query(
            "orders",
            &format!("SELECT balance_check, stock_check FROM orders WHERE id = '{id}'"),
        )
        .await
        .unwrap();
    assert_eq!(checks[0], [json!("held"), json!("held")]);
    assert_eq!(
        app.account(oda).await,
        spent,
        "no refund for a late rejection"
    );
    assert_eq!(
        app.count("vouchers", "SELECT COUNT(*) FROM vouchers").await,
        1
    );
    let mut reasons: Vec<String> = app
        .dead_letters()
        .await
        .iter()
        .map(|d| d["reason"].as_str().unwrap().to_owned())
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].contains("without a hold"), "{reasons:?}");
    assert!(reasons[1].contains("voucher.issued"), "{reasons:?}");
}
