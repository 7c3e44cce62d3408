//! The order pipeline end to end, black box over HTTP, against the real `.wasm` files, on
//! both flavours of the test host: `spin::<scenario>` runs the Spin build under `spin.toml`
//! (embedded SQLite), `wasmcloud::<scenario>` the wasmCloud build under `wadm.yaml` on a
//! lattice with two replicas per worker, PostgreSQL and NATS.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shop_domain::auth::{Claims, Role, mint_token};
use shop_domain::envelope::Envelope;
use support::{EVENT_SECRET, Flavour, admin, scenarios, staff, start, start_with, token};

scenarios!(
    real_hosts: [
        happy_path_reaches_a_voucher_and_moves_money_and_stock,
        voucher_threshold_is_inclusive_at_100,
        insufficient_balance_rejects_and_releases_stock,
        out_of_stock_rejects_without_partial_deduction,
        cancel_releases_holds_and_refunds_confirmed_orders,
        idempotency_key_replays_the_same_order,
        a_credit_sent_again_under_its_key_is_applied_once,
        batch_answers_per_item,
        bad_input_gets_problems_and_changes_nothing,
        cursors_page_through_products_and_orders,
        health_compat_route_and_correlation_ids,
        the_schema_refuses_negative_stock_and_credit,
    ],
    test_host_only: [
        duplicate_events_are_applied_once,
        a_handler_that_fails_twice_then_succeeds,
        a_poison_message_becomes_a_dead_letter_and_admin_retry_delivers_it,
        a_forged_signature_is_never_applied,
        checks_that_never_answer_time_the_order_out,
        lost_answers_are_recovered_by_asking_the_checkers_again,
        requests_beyond_the_bound_in_flight_are_shed_at_once,
    ],
);

fn customer(name: &str) -> String {
    format!("{name}@example.com")
}

async fn happy_path_reaches_a_voucher_and_moves_money_and_stock(flavour: Flavour) {
    let app = start(flavour).await;
    let alice = customer("alice");
    app.product("WIDGET-1", 6_000, 10).await;
    app.credit(&alice, 20_000).await;

    let placed = app
        .place(&json!({"customer": alice, "items": [{"sku": "WIDGET-1", "quantity": 2}]}))
        .await;
    assert_eq!(placed["status"], "placed");
    assert_eq!(placed["total_cents"], 12_000);
    let id = placed["id"].as_str().unwrap().to_owned();

    let confirmed = app.wait_status(&id, "confirmed").await;
    assert_eq!(confirmed["items"][0]["price_cents"], 6_000);
    app.wait_quiet().await;
    assert_eq!(
        app.account(&alice).await,
        json!({"customer": alice, "balance_cents": 8_000, "held_cents": 0})
    );
    let widget = app.stock("WIDGET-1").await;
    assert_eq!(
        (widget["stock"].as_i64(), widget["reserved"].as_i64()),
        (Some(8), Some(0))
    );

    app.ship_and_deliver(&id).await;
    let delivered = app
        .wait_order(&id, "voucher", |o| !o["voucher"].is_null())
        .await;
    assert_eq!(delivered["status"], "delivered");
    assert_eq!(delivered["voucher"]["value_cents"], 500);
    let statuses: Vec<&str> = delivered["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["placed", "confirmed", "shipped", "delivered"]);

    let vouchers = app
        .get(
            &format!("/api/v1/vouchers?customer={alice}"),
            &token(&alice, Role::Customer),
        )
        .await;
    assert_eq!(vouchers.status, 200);
    assert_eq!(vouchers.body.as_array().unwrap().len(), 1);
    assert_eq!(vouchers.body[0]["order_id"], id.as_str());
    assert_eq!(vouchers.body[0]["code"], delivered["voucher"]["code"]);
}

async fn voucher_threshold_is_inclusive_at_100(flavour: Flavour) {
    let app = start(flavour).await;
    let bob = customer("bob");
    app.credit(&bob, 100_000).await;
    let mut ids = Vec::new();
    for value in [9_999, 10_000] {
        let order = app
            .place(&json!({"customer": bob, "value_cents": value}))
            .await;
        let id = order["id"].as_str().unwrap().to_owned();
        app.wait_status(&id, "confirmed").await;
        app.ship_and_deliver(&id).await;
        ids.push(id);
    }
    app.wait_quiet().await;
    let below = app.order(&ids[0]).await;
    let at = app
        .wait_order(&ids[1], "voucher", |o| !o["voucher"].is_null())
        .await;
    assert_eq!(below["status"], "delivered");
    assert!(
        below["voucher"].is_null(),
        "99.99 must not earn a voucher: {below}"
    );
    assert_eq!(at["voucher"]["value_cents"], 500);
    assert_eq!(
        app.count("vouchers", "SELECT COUNT(*) FROM vouchers").await,
        1
    );
}

async fn insufficient_balance_rejects_and_releases_stock(flavour: Flavour) {
    let app = start(flavour).await;
    let carol = customer("carol");
    app.product("LAMP", 5_000, 3).await;
    app.credit(&carol, 4_999).await;
    let order = app
        .place(&json!({"customer": carol, "items": [{"sku": "LAMP", "quantity": 1}]}))
        .await;
    let rejected = app
        .wait_status(order["id"].as_str().unwrap(), "rejected")
        .await;
    assert_eq!(rejected["reason"], "insufficient_balance");
    app.wait_quiet().await;
    assert_eq!(app.account(&carol).await["balance_cents"], 4_999);
    assert_eq!(app.account(&carol).await["held_cents"], 0);
    let lamp = app.stock("LAMP").await;
    assert_eq!(
        (lamp["stock"].as_i64(), lamp["reserved"].as_i64()),
        (Some(3), Some(0))
    );
}

async fn out_of_stock_rejects_without_partial_deduction(flavour: Flavour) {
    let app = start(flavour).await;
    let dave = customer("dave");
    app.product("CUP", 500, 10).await;
    app.product("PLATE", 700, 1).await;
    app.credit(&dave, 50_000).await;
    let order = app
        .place(&json!({"customer": dave, "items": [{"sku": "CUP", "quantity": 3}, {"sku": "PLATE", "quantity": 2}]}))
        .await;
    let rejected = app
        .wait_status(order["id"].as_str().unwrap(), "rejected")
        .await;
    assert_eq!(rejected["reason"], "out_of_stock: PLATE");
    app.wait_quiet().await;
    assert_eq!(app.stock("CUP").await["stock"], 10, "no partial deduction");
    assert_eq!(app.stock("PLATE").await["stock"], 1);
    assert_eq!(
        app.account(&dave).await,
        json!({"customer": dave, "balance_cents": 50_000, "held_cents": 0})
    );
}

async fn cancel_releases_holds_and_refunds_confirmed_orders(flavour: Flavour) {
    let app = start(flavour).await;
    let erin = customer("erin");
    app.product("BOOK", 2_000, 5).await;
    app.credit(&erin, 10_000).await;
    let erin_token = token(&erin, Role::Customer);

    let order = app
        .place(&json!({"customer": erin, "items": [{"sku": "BOOK", "quantity": 2}]}))
        .await;
    let id = order["id"].as_str().unwrap().to_owned();
    app.wait_status(&id, "confirmed").await;
    app.wait_quiet().await;
    assert_eq!(app.account(&erin).await["balance_cents"], 6_000);

    // Another customer may not cancel it.
    let mallory = app
        .post(
            &format!("/api/v1/orders/{id}/cancel"),
            &token("mallory@example.com", Role::Customer),
            &json!({}),
        )
        .await;
    mallory.assert_problem(403);

    let cancelled = app
        .post(
            &format!("/api/v1/orders/{id}/cancel"),
            &erin_token,
            &json!({}),
        )
        .await;
    assert_eq!(cancelled.status, 200, "{cancelled:?}");
    assert_eq!(cancelled.body["status"], "cancelled");
    // Sent again (its answer lost, say): the same order, nothing released twice.
    let again = app
        .post(
            &format!("/api/v1/orders/{id}/cancel"),
            &erin_token,
            &json!({}),
        )
        .await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.body, cancelled.body);
    app.wait_quiet().await;
    assert_eq!(
        app.account(&erin).await,
        json!({"customer": erin, "balance_cents": 10_000, "held_cents": 0})
    );
    let book = app.stock("BOOK").await;
    assert_eq!(
        (book["stock"].as_i64(), book["reserved"].as_i64()),
        (Some(5), Some(0))
    );

    // A shipped order can no longer be cancelled.
    let second = app
        .place(&json!({"customer": erin, "value_cents": 1_000}))
        .await;
    let second_id = second["id"].as_str().unwrap().to_owned();
    app.wait_status(&second_id, "confirmed").await;
    assert_eq!(
        app.post(
            &format!("/api/v1/orders/{second_id}/ship"),
            &staff(),
            &json!({})
        )
        .await
        .status,
        200
    );
    app.post(
        &format!("/api/v1/orders/{second_id}/cancel"),
        &erin_token,
        &json!({}),
    )
    .await
    .assert_problem(409);
}

async fn idempotency_key_replays_the_same_order(flavour: Flavour) {
    let app = start(flavour).await;
    let fay = customer("fay");
    app.credit(&fay, 10_000).await;
    let fay_token = token(&fay, Role::Customer);
    let body = json!({"customer": fay, "value_cents": 1_500})
        .to_string()
        .into_bytes();
    let first = app
        .raw(
            "POST",
            "/api/v1/orders",
            Some(&fay_token),
            Some(body.clone()),
            &[("idempotency-key", "k-1")],
        )
        .await;
    assert_eq!(first.status, 202, "{first:?}");
    assert!(
        first
            .header("location")
            .unwrap()
            .ends_with(first.body["id"].as_str().unwrap())
    );
    let again = app
        .raw(
            "POST",
            "/api/v1/orders",
            Some(&fay_token),
            Some(body),
            &[("idempotency-key", "k-1")],
        )
        .await;
    assert_eq!(again.status, 202);
    assert_eq!(again.body["id"], first.body["id"]);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let other = json!({"customer": fay, "value_cents": 1_600})
        .to_string()
        .into_bytes();
    app.raw(
        "POST",
        "/api/v1/orders",
        Some(&fay_token),
        Some(other),
        &[("idempotency-key", "k-1")],
    )
    .await
    .assert_problem(422);
    app.wait_quiet().await;
    assert_eq!(app.count("orders", "SELECT COUNT(*) FROM orders").await, 1);
    assert_eq!(
        app.account(&fay).await["balance_cents"],
        8_500,
        "charged once"
    );
}

async fn batch_answers_per_item(flavour: Flavour) {
    let app = start(flavour).await;
    let gil = customer("gil");
    app.product("PEN", 100, 100).await;
    app.credit(&gil, 100_000).await;
    let batch = json!([
        {"customer": gil, "items": [{"sku": "PEN", "quantity": 1}]},
        {"customer": gil, "value_cents": 2_500},
        {"customer": gil, "items": [{"sku": "PEN", "quantity": 0}]},
        {"customer": gil, "items": [{"sku": "NOPE", "quantity": 1}]},
    ]);
    let answer = app.post("/api/v1/orders/batch", &staff(), &batch).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let statuses: Vec<i64> = answer.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [202, 202, 422, 422]);
    for result in answer.body["results"].as_array().unwrap().iter().take(2) {
        app.wait_status(result["order"]["id"].as_str().unwrap(), "confirmed")
            .await;
    }
    assert_eq!(app.count("orders", "SELECT COUNT(*) FROM orders").await, 2);
}

async fn duplicate_events_are_applied_once(flavour: Flavour) {
    let app = start(flavour).await;
    let hal = customer("hal");
    app.product("MUG", 6_000, 5).await;
    app.credit(&hal, 20_000).await;
    let order = app
        .place(&json!({"customer": hal, "items": [{"sku": "MUG", "quantity": 2}]}))
        .await;
    let id = order["id"].as_str().unwrap().to_owned();
    app.wait_status(&id, "confirmed").await;
    app.wait_quiet().await;

    // Re-deliver the very order.placed envelope the checkers already applied.
    let placed = app
        .query(
            "orders",
            &format!("SELECT placed_event FROM orders WHERE id = '{id}'"),
        )
        .await
        .unwrap();
    let placed = placed[0][0].as_str().unwrap().to_owned();
    for checker in ["balance-checker", "stock-checker"] {
        let (status, body) = app
            .deliver_event(checker, placed.clone().into_bytes())
            .await;
        assert_eq!(status, 200);
        assert_eq!(body["status"], "duplicate");
    }
    app.wait_quiet().await;
    assert_eq!(
        app.account(&hal).await["balance_cents"],
        8_000,
        "no double deduction of credit"
    );
    assert_eq!(
        app.stock("MUG").await["stock"],
        3,
        "no double deduction of stock"
    );

    app.ship_and_deliver(&id).await;
    app.wait_order(&id, "voucher", |o| !o["voucher"].is_null())
        .await;
    // The same delivery again, and a second delivery event for the same order: still one voucher.
    let delivered_id = app
        .query("vouchers", "SELECT event_id FROM vouchers_inbox")
        .await
        .unwrap()[0][0]
        .as_str()
        .unwrap()
        .to_owned();
    for event_id in [delivered_id.as_str(), "evt_second_delivery"] {
        let mut envelope = Envelope::new(
            event_id.to_owned(),
            "order.delivered".to_owned(),
            id.clone(),
            "2026-11-23T00:00:00.000Z".to_owned(),
            "cor_test".to_owned(),
            json!({"order_id": id, "customer": hal, "total_cents": 12_000}),
        );
        envelope.sign(EVENT_SECRET);
        let (status, _) = app
            .deliver_event("vouchers", serde_json::to_vec(&envelope).unwrap())
            .await;
        assert_eq!(status, 200);
    }
    app.wait_quiet().await;
    assert_eq!(
        app.count("vouchers", "SELECT COUNT(*) FROM vouchers").await,
        1,
        "at most one voucher per order"
    );
}

async fn a_handler_that_fails_twice_then_succeeds(flavour: Flavour) {
    let app = start(flavour).await;
    let ivy = customer("ivy");
    app.credit(&ivy, 10_000).await;
    app.faults().fail_event_handler("balance-checker", Some(2));
    let order = app
        .place(&json!({"customer": ivy, "value_cents": 3_000}))
        .await;
    app.wait_status(order["id"].as_str().unwrap(), "confirmed")
        .await;
    assert_eq!(app.faults().injected_count("balance-checker"), 2);
    app.wait_quiet().await;
    assert_eq!(
        app.account(&ivy).await["balance_cents"],
        7_000,
        "applied exactly once"
    );
    assert!(app.dead_letters().await.is_empty());
}

async fn a_poison_message_becomes_a_dead_letter_and_admin_retry_delivers_it(flavour: Flavour) {
    let app = start(flavour).await;
    let jo = customer("jo");
    app.credit(&jo, 50_000).await;
    let order = app
        .place(&json!({"customer": jo, "value_cents": 20_000}))
        .await;
    let id = order["id"].as_str().unwrap().to_owned();
    app.wait_status(&id, "confirmed").await;
    app.faults().fail_event_handler("vouchers", None);
    app.ship_and_deliver(&id).await;
    app.wait_quiet().await;
    let dead = app.dead_letters().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["event_type"], "order.delivered");
    assert_eq!(dead[0]["destination"], "vouchers");
    assert_eq!(dead[0]["attempts"], 4);
    let reason = dead[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("vouchers failed it: ") && reason.contains("injected fault"),
        "{dead:?}"
    );
    assert!(app.order(&id).await["voucher"].is_null());

    // Only admins see or retry dead letters.
    app.get("/api/v1/admin/dead-letters", &staff())
        .await
        .assert_problem(403);
    let dead_id = dead[0]["id"].as_str().unwrap();
    app.post(
        &format!("/api/v1/admin/dead-letters/{dead_id}/retry"),
        &staff(),
        &json!({}),
    )
    .await
    .assert_problem(403);

    app.faults().clear();
    let retried = app
        .post(
            &format!("/api/v1/admin/dead-letters/{dead_id}/retry"),
            &admin(),
            &json!({}),
        )
        .await;
    assert_eq!(retried.status, 202, "{retried:?}");
    app.wait_order(&id, "voucher", |o| !o["voucher"].is_null())
        .await;
    assert!(app.dead_letters().await.is_empty());
    app.post(
        "/api/v1/admin/dead-letters/orders:dl_missing/retry",
        &admin(),
        &json!({}),
    )
    .await
    .assert_problem(404);
}

async fn a_forged_signature_is_never_applied(flavour: Flavour) {
    let app = start(flavour).await;
    let kim = customer("kim");
    app.credit(&kim, 10_000).await;
    let mut forged = Envelope::new(
        "evt_forged".to_owned(),
        "order.placed".to_owned(),
        "ord_forged".to_owned(),
        "2026-11-23T00:00:00.000Z".to_owned(),
        "cor_forged".to_owned(),
        json!({"order_id": "ord_forged", "customer": kim, "total_cents": 9_000, "items": []}),
    );
    forged.sign(b"not-the-secret");
    let (status, body) = app
        .deliver_event("balance-checker", serde_json::to_vec(&forged).unwrap())
        .await;
    assert_eq!(status, 202);
    assert_eq!(body["reason"], "bad_signature");
    assert_eq!(
        app.account(&kim).await,
        json!({"customer": kim, "balance_cents": 10_000, "held_cents": 0})
    );
    assert_eq!(
        app.count("balance-checker", "SELECT COUNT(*) FROM credit_holds")
            .await,
        0
    );
    let dead = app.dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["reason"], "bad_signature");
    assert_eq!(dead[0]["service"], "balance-checker");
}

async fn checks_that_never_answer_time_the_order_out(flavour: Flavour) {
    let app = start_with(
        flavour,
        &[
            ("check_timeout_ms", "300"),
            ("check_resends", "1"),
            ("retry_max_attempts", "2"),
        ],
    )
    .await;
    let lee = customer("lee");
    app.credit(&lee, 10_000).await;
    app.faults().fail_event_handler("stock-checker", None);
    let order = app
        .place(&json!({"customer": lee, "value_cents": 1_000}))
        .await;
    let rejected = app
        .wait_status(order["id"].as_str().unwrap(), "rejected")
        .await;
    assert_eq!(rejected["reason"], "checks_timed_out");
    app.faults().clear();
    app.wait_quiet().await;
    assert_eq!(
        app.account(&lee).await,
        json!({"customer": lee, "balance_cents": 10_000, "held_cents": 0})
    );
}

async fn lost_answers_are_recovered_by_asking_the_checkers_again(flavour: Flavour) {
    let app = start_with(
        flavour,
        &[("check_timeout_ms", "1500"), ("check_resends", "2")],
    )
    .await;
    let noa = customer("noa");
    app.credit(&noa, 10_000).await;
    // Orders fails every event until both checkers' answers have become dead letters.
    app.faults().fail_event_handler("orders", None);
    let order = app
        .place(&json!({"customer": noa, "value_cents": 2_500}))
        .await;
    let lost_answers = |dead: &[Value]| {
        let mut lost: Vec<String> = dead
            .iter()
            .filter_map(|letter| letter["event_type"].as_str().map(str::to_owned))
            .filter(|event_type| event_type.ends_with(".held"))
            .collect();
        lost.sort_unstable();
        lost.dedup();
        lost
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while lost_answers(&app.dead_letters().await) != ["balance.held", "stock.held"] {
        assert!(Instant::now() < deadline, "{:#?}", app.dead_letters().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.faults().clear();
    let id = order["id"].as_str().unwrap();
    app.wait_status(id, "confirmed").await;
    app.wait_quiet().await;
    assert_eq!(
        app.account(&noa).await,
        json!({"customer": noa, "balance_cents": 7_500, "held_cents": 0}),
        "held once, spent once"
    );
}

async fn bad_input_gets_problems_and_changes_nothing(flavour: Flavour) {
    let app = start(flavour).await;
    let max = customer("max");
    app.product("BOLT", 100, 10).await;
    app.credit(&max, 1_000).await;
    let max_token = token(&max, Role::Customer);
    let place = |body: &'static str| {
        let app = &app;
        let max_token = max_token.clone();
        async move {
            app.raw(
                "POST",
                "/api/v1/orders",
                Some(&max_token),
                Some(body.as_bytes().to_vec()),
                &[],
            )
            .await
        }
    };
    place("{not json").await.assert_problem(400);
    place(r#"{"customer": "max@example.com", "value_cents": "100"}"#)
        .await
        .assert_problem(422);
    place(r#"{"customer": "max@example.com", "items": [{"sku": "BOLT", "quantity": 0}]}"#)
        .await
        .assert_problem(422);
    place(r#"{"customer": "max@example.com", "items": [{"sku": "BOLT", "quantity": -1}]}"#)
        .await
        .assert_problem(422);
    place(r#"{"customer": "max@example.com", "items": [{"sku": "BOLT", "quantity": 1.5}]}"#)
        .await
        .assert_problem(422);
    place(r#"{"customer": "max@example.com", "value_cents": 99999999999999999999}"#)
        .await
        .assert_problem(422);
    place(r#"{"customer": "max@example.com", "items": [{"sku": "NOPE", "quantity": 1}]}"#)
        .await
        .assert_problem(422);
    place(r#"{"customer": "not-an-email", "value_cents": 100}"#)
        .await
        .assert_problem(422);
    place(r#"{"customer": "max@example.com"}"#)
        .await
        .assert_problem(422);
    let credit = |amount: &'static str| {
        let app = &app;
        async move {
            app.raw(
                "POST",
                "/api/v1/accounts/max@example.com/credit",
                Some(&staff()),
                Some(amount.as_bytes().to_vec()),
                &[],
            )
            .await
        }
    };
    credit(r#"{"amount_cents": 9223372036854775807}"#)
        .await
        .assert_problem(422);
    credit(r#"{"amount_cents": -5}"#).await.assert_problem(422);
    app.put(
        "/api/v1/products/BOLT",
        &staff(),
        &json!({"name": "", "price_cents": -1, "stock": 1}),
    )
    .await
    .assert_problem(422);
    app.put(
        "/api/v1/products/bad%20sku",
        &staff(),
        &json!({"name": "x", "price_cents": 1, "stock": 1}),
    )
    .await
    .assert_problem(422);

    // Authentication and roles.
    app.raw("GET", "/api/v1/orders", None, None, &[])
        .await
        .assert_problem(401);
    app.raw("GET", "/api/v1/orders", Some("not.a.token"), None, &[])
        .await
        .assert_problem(401);
    let expired = mint_token(
        &Claims {
            sub: max.clone(),
            role: Role::Customer,
            exp: 1_000,
        },
        support::AUTH_SECRET,
    );
    app.get("/api/v1/orders", &expired)
        .await
        .assert_problem(401);
    let forged = mint_token(
        &Claims {
            sub: max.clone(),
            role: Role::Admin,
            exp: i64::MAX / 2,
        },
        b"guessed",
    );
    app.get("/api/v1/admin/dead-letters", &forged)
        .await
        .assert_problem(401);
    app.put(
        "/api/v1/products/BOLT",
        &max_token,
        &json!({"name": "x", "price_cents": 1, "stock": 999}),
    )
    .await
    .assert_problem(403);
    app.post(
        &format!("/api/v1/accounts/{max}/credit"),
        &max_token,
        &json!({"amount_cents": 100}),
    )
    .await
    .assert_problem(403);
    app.post(
        "/api/v1/orders",
        &max_token,
        &json!({"customer": "other@example.com", "value_cents": 100}),
    )
    .await
    .assert_problem(403);
    app.get("/api/v1/accounts/other@example.com", &max_token)
        .await
        .assert_problem(403);
    app.get("/api/v1/admin/dead-letters", &max_token)
        .await
        .assert_problem(403);
    app.get("/api/v1/nowhere", &max_token)
        .await
        .assert_problem(404);
    app.raw("DELETE", "/api/v1/orders", Some(&max_token), None, &[])
        .await
        .assert_problem(405);

    app.wait_quiet().await;
    assert_eq!(
        app.count("orders", "SELECT COUNT(*) FROM orders").await,
        0,
        "no order was stored"
    );
    assert_eq!(app.account(&max).await["balance_cents"], 1_000);
    let bolt = app.stock("BOLT").await;
    assert_eq!(
        (bolt["stock"].as_i64(), bolt["price_cents"].as_i64()),
        (Some(10), Some(100))
    );
}

async fn cursors_page_through_products_and_orders(flavour: Flavour) {
    let app = start(flavour).await;
    for sku in ["A-1", "A-2", "A-3", "A-4", "A-5"] {
        app.product(sku, 100, 1).await;
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/products?limit=2".to_owned();
    loop {
        let page = app.get(&path, &staff()).await;
        assert_eq!(page.status, 200, "{page:?}");
        seen.extend(
            page.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["sku"].as_str().unwrap().to_owned()),
        );
        match page.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/products?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ["A-1", "A-2", "A-3", "A-4", "A-5"]);

    let nia = customer("nia");
    app.credit(&nia, 100_000).await;
    let mut placed = Vec::new();
    for value in [100, 200, 300] {
        placed.push(
            app.place(&json!({"customer": nia, "value_cents": value}))
                .await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let nia_token = token(&nia, Role::Customer);
    let mut listed = Vec::new();
    let mut path = "/api/v1/orders?limit=2".to_owned();
    loop {
        let page = app.get(&path, &nia_token).await;
        assert_eq!(page.status, 200, "{page:?}");
        listed.extend(
            page.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["id"].as_str().unwrap().to_owned()),
        );
        match page.body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/orders?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(listed, placed);
    app.get("/api/v1/orders?cursor=garbage!", &nia_token)
        .await
        .assert_problem(422);
    app.get("/api/v1/orders?limit=1000", &nia_token)
        .await
        .assert_problem(422);
}

async fn health_compat_route_and_correlation_ids(flavour: Flavour) {
    let app = start(flavour).await;
    let health = app.raw("GET", "/healthz", None, None, &[]).await;
    assert_eq!(health.status, 200);
    assert!(health.header("x-correlation-id").is_some());

    let ola = customer("ola");
    app.credit(&ola, 20_000).await;
    let answer = app
        .raw(
            "POST",
            &format!("/api/v1/order?email={ola}&value=150"),
            Some(&token(&ola, Role::Customer)),
            None,
            &[("x-correlation-id", "trace-42")],
        )
        .await;
    assert_eq!(answer.status, 202, "{answer:?}");
    assert_eq!(answer.header("x-correlation-id"), Some("trace-42"));
    assert_eq!(answer.body["total_cents"], 15_000);
    let id = answer.body["id"].as_str().unwrap();
    app.wait_status(id, "confirmed").await;
    // The correlation id travels in every event the request caused.
    let events = app
        .query("orders", "SELECT correlation_id FROM orders")
        .await
        .unwrap();
    assert_eq!(events[0][0], "trace-42");
    let inbox = app
        .count(
            "balance-checker",
            "SELECT COUNT(*) FROM balance_checker_inbox",
        )
        .await;
    assert!(inbox >= 1);
}

/// A credit whose answer was lost can be sent again under its `Idempotency-Key`: it is
/// applied once (the gateway does the same with a key of its own when a service's answer
/// is cut short); the key with another amount is refused.
async fn a_credit_sent_again_under_its_key_is_applied_once(flavour: Flavour) {
    let app = start(flavour).await;
    let run = support::run_id();
    let buyer = customer(&format!("credited-{run}"));
    let path = format!("/api/v1/accounts/{buyer}/credit");
    let key = format!("credit-{run}");
    let credit = |amount: i64| {
        let body = json!({"amount_cents": amount}).to_string().into_bytes();
        let (app, path, key) = (&app, &path, &key);
        async move {
            app.raw(
                "POST",
                path,
                Some(&staff()),
                Some(body),
                &[("idempotency-key", key)],
            )
            .await
        }
    };
    let first = credit(700).await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = credit(700).await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body["balance_cents"], 700);
    let other = credit(900).await;
    assert_eq!(other.status, 422, "{other:?}");
    assert_eq!(app.account(&buyer).await["balance_cents"], 700);
}

/// Stock and credit can never go below zero, whatever writes them: the checkers' schemas
/// refuse it (CHECK constraints), so a bug fails its transaction instead of overselling.
async fn the_schema_refuses_negative_stock_and_credit(flavour: Flavour) {
    let app = start(flavour).await;
    let run = support::run_id();
    let (sku, buyer) = (format!("NEG-{run}"), customer(&format!("neg-{run}")));
    app.product(&sku, 500, 2).await;
    app.credit(&buyer, 1_000).await;
    for (service, write) in [
        (
            "stock-checker",
            format!("UPDATE products SET stock = stock - 3 WHERE sku = '{sku}'"),
        ),
        (
            "stock-checker",
            format!("UPDATE products SET reserved = reserved - 1 WHERE sku = '{sku}'"),
        ),
        (
            "balance-checker",
            format!(
                "UPDATE accounts SET balance_cents = balance_cents - 1001 WHERE customer = '{buyer}'"
            ),
        ),
        (
            "balance-checker",
            format!("UPDATE accounts SET held_cents = held_cents - 1 WHERE customer = '{buyer}'"),
        ),
    ] {
        let refused = app.query(service, &write).await;
        assert!(refused.is_err(), "{service} took {write:?}");
    }
    assert_eq!(app.stock(&sku).await["stock"], 2);
    assert_eq!(app.account(&buyer).await["balance_cents"], 1_000);
}

/// A placement that cannot have orders' SQLite write lock within `client_lock_wait_ms` (here
/// another connection holds it) is shed at once: 503 `overloaded` with `Retry-After` and
/// `retry_after_ms`, nothing stored; with the lock free again the same request is placed.
async fn placements_are_shed_while_orders_write_lock_stays_taken(flavour: Flavour) {
    let app = start(flavour).await;
    let buyer = customer("shed");
    app.product("SHED-1", 100, 10).await;
    app.credit(&buyer, 10_000).await;
    let order = json!({"customer": buyer, "items": [{"sku": "SHED-1", "quantity": 1}]});

    // Orders' database migrated first (any request does it), so that only the placement
    // waits for the lock below.
    let token = token(&buyer, Role::Customer);
    assert_eq!(app.get("/api/v1/orders", &token).await.status, 200);
    let holder = rusqlite::Connection::open(app.sqlite_file("orders")).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = Instant::now();
    let answer = app.post("/api/v1/orders", &token, &order).await;
    let waited = started.elapsed();
    holder.execute_batch("ROLLBACK").unwrap();
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(
        answer.body["type"],
        "https://shop.example/problems/overloaded"
    );
    assert_eq!(answer.body["retry_after_ms"], 250);
    assert_eq!(answer.header("retry-after"), Some("1"));
    assert!(waited < Duration::from_secs(2), "shed after {waited:?}");
    let stored = app.count("orders", "SELECT COUNT(*) FROM orders").await;
    assert_eq!(stored, 0, "a shed placement stores nothing");

    app.place(&order).await;
}

/// With `max_requests_in_flight` at 2, a burst of 32 placements at once is served two at
/// a time and the rest shed before they do anything: every answer is 202 or 503
/// `overloaded` saying when to come back (`Retry-After-Ms`, `retry_after_ms`,
/// `Retry-After`), none is a 500, and the orders stored are exactly the accepted ones.
/// Sent again after the wait, every shed placement is accepted.
async fn requests_beyond_the_bound_in_flight_are_shed_at_once(flavour: Flavour) {
    let app = start_with(
        flavour,
        &[
            ("max_requests_in_flight", "2"),
            ("rate_limit_per_minute", "0"),
        ],
    )
    .await;
    let buyer = customer("burst");
    app.product("BURST-1", 100, 1_000).await;
    app.credit(&buyer, 1_000_000).await;
    let order = json!({"customer": buyer, "items": [{"sku": "BURST-1", "quantity": 1}]});
    let token = token(&buyer, Role::Customer);

    let mut accepted = 0;
    let mut shed = Vec::new();
    for _burst in 0..5 {
        let answers = futures_util::future::join_all(
            (0..32).map(|_| app.post("/api/v1/orders", &token, &order)),
        )
        .await;
        for answer in answers {
            match answer.status {
                202 => accepted += 1,
                503 => shed.push(answer),
                _ => panic!("neither accepted nor shed: {answer:?}"),
            }
        }
        if !shed.is_empty() {
            break;
        }
    }
    assert!(!shed.is_empty(), "no placement of 5 bursts of 32 was shed");
    for answer in &shed {
        assert_eq!(
            answer.body["type"], "https://shop.example/problems/overloaded",
            "{answer:?}"
        );
        assert_eq!(answer.body["retry_after_ms"], 500, "{answer:?}");
        assert_eq!(answer.header("retry-after-ms"), Some("500"));
        assert_eq!(answer.header("retry-after"), Some("1"));
    }
    let stored = app.count("orders", "SELECT COUNT(*) FROM orders").await;
    assert_eq!(stored, accepted, "the orders stored are the accepted ones");

    for _ in &shed {
        let mut tries = 0;
        loop {
            let answer = app.post("/api/v1/orders", &token, &order).await;
            if answer.status == 202 {
                break;
            }
            tries += 1;
            assert!(tries < 100, "still shed after {tries} tries: {answer:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let stored = app.count("orders", "SELECT COUNT(*) FROM orders").await;
    assert_eq!(stored, accepted + shed.len() as i64);
}

/// The instances started since `before`, per component that started any.
fn started_since(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
) -> Vec<(String, u64)> {
    after
        .iter()
        .map(|(id, count)| (id.clone(), count - before.get(id).copied().unwrap_or(0)))
        .filter(|(_, count)| *count > 0)
        .collect()
}

/// On Spin the services are composed into the gateway: an API request, whichever services
/// it calls, is one instance of the gateway and none of any service; and the gateway
/// relays the events the services write, so a whole saga, from the placement to the
/// voucher, starts no instance of any service either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_an_api_request_is_one_instance() {
    let mut app = start(Flavour::Spin).await;
    let at_start = app.instances_started();
    let buyer = customer("one-instance");
    let sku = format!("ONE-{}", support::run_id());
    app.product(&sku, 20_000, 5).await;
    app.credit(&buyer, 30_000).await;
    let order = app
        .place(&json!({"customer": buyer, "items": [{"sku": sku, "quantity": 1}]}))
        .await;
    let id = order["id"].as_str().unwrap().to_owned();
    app.wait_status(&id, "confirmed").await;
    app.ship_and_deliver(&id).await;
    app.wait_order(&id, "voucher", |o| !o["voucher"].is_null())
        .await;
    app.wait_quiet().await;
    let saga = started_since(&at_start, &app.instances_started());
    assert!(
        saga.iter().all(|(component, _)| component == "gateway"),
        "instances started by the saga: {saga:?}"
    );
    app.stop_ticker();

    let before = app.instances_started();
    // Orders (the order), balance-checker (the account), stock-checker (the product) and
    // vouchers (the list), each asked once.
    let buyer_token = token(&buyer, Role::Customer);
    assert_eq!(
        app.get(&format!("/api/v1/orders/{id}"), &buyer_token)
            .await
            .status,
        200
    );
    assert_eq!(
        app.get(&format!("/api/v1/accounts/{buyer}"), &buyer_token)
            .await
            .status,
        200
    );
    assert_eq!(
        app.get(&format!("/api/v1/products/{sku}"), &buyer_token)
            .await
            .status,
        200
    );
    assert_eq!(app.get("/api/v1/vouchers", &buyer_token).await.status, 200);
    let started = started_since(&before, &app.instances_started());
    assert_eq!(
        started,
        vec![("gateway".to_owned(), 4)],
        "instances started: {started:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spin_placements_are_shed_while_orders_write_lock_stays_taken() {
    placements_are_shed_while_orders_write_lock_stays_taken(Flavour::Spin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real Spin 4.x on PATH: make real-spin-test"]
async fn real_spin_sqlite_placements_are_shed_while_orders_write_lock_stays_taken() {
    placements_are_shed_while_orders_write_lock_stays_taken(Flavour::RealSpin(
        support::ServedDatabase::Sqlite,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real Spin 4.x on PATH: make real-spin-test"]
async fn real_spin_sqlite_requests_beyond_the_bound_in_flight_are_shed_at_once() {
    requests_beyond_the_bound_in_flight_are_shed_at_once(Flavour::RealSpin(
        support::ServedDatabase::Sqlite,
    ))
    .await;
}
