//! The stock-checker service: owns the catalogue. For every placed order it reserves all
//! lines or none (rejecting with `out_of_stock` naming the sku), turns the reservation
//! into a sale when the order is confirmed, and returns the units when the order is
//! rejected or cancelled. It also prices order lines for orders.

mod db;

use serde_json::{Value, json};
use service_kit::Env;
use service_kit::db::{Db, DbError, Migration};
use service_kit::http::{Request, Response, method_not_allowed, percent_decode};
use service_kit::ids::now_ms;
use service_kit::messaging::{HandlerError, Messaging, Reply, data_text};
use service_kit::settings;
use service_kit::worker::{Worker, WorkerService, unavailable};
use shop_domain::cursor::{decode_cursor, encode_cursor};
use shop_domain::envelope::{Envelope, event_types};
use shop_domain::order::RejectReason;
use shop_domain::validation::{ValidationError, parse_limit, parse_product, parse_sku};

use db::queries::{self, HeldLine, StockHold, Stockroom};

/// The stock-checker worker.
#[derive(Default)]
pub struct StockChecker;

host_bindings::export_service!(
    WorkerService<StockChecker>,
    "shop:stock-checker/service",
    shop::stock_checker
);

impl Worker for StockChecker {
    const NAME: &'static str = "stock-checker";

    fn migrations() -> Vec<Migration> {
        db::migrations::all()
    }

    fn route(&self, request: &Request, env: &Env, _messaging: &Messaging) -> Option<Response> {
        let segments = request.segments();
        let response = match (request.method.as_str(), segments.as_slice()) {
            ("GET", ["products"]) => list(request, env),
            ("GET", ["products", sku]) => show(env, &percent_decode(sku)),
            ("PUT", ["products", sku]) => save(request, env, &percent_decode(sku)),
            (_, ["products", ..]) => method_not_allowed(),
            ("POST", ["internal", "prices"]) => prices(request, env),
            _ => return None,
        };
        Some(response)
    }

    fn apply(
        &self,
        tx: &Db,
        events: &[&Envelope],
        _env: &Env,
        messaging: &Messaging,
    ) -> Result<(), HandlerError> {
        let order_ids = events
            .iter()
            .map(|event| data_text(event, "order_id"))
            .collect::<Result<Vec<_>, _>>()?;
        let skus: Vec<&str> = events
            .iter()
            .filter_map(|event| event.data["items"].as_array())
            .flatten()
            .filter_map(|line| line["sku"].as_str())
            .collect();
        let mut stockroom = Stockroom::load(tx, &order_ids, &skus)?;
        for (event, order_id) in events.iter().zip(order_ids) {
            match event.event_type.as_str() {
                event_types::ORDER_PLACED => {
                    reserve(tx, &mut stockroom, order_id, event, messaging)
                }
                event_types::ORDER_CONFIRMED => commit(&mut stockroom, order_id),
                event_types::ORDER_REJECTED | event_types::ORDER_CANCELLED => {
                    release(&mut stockroom, order_id);
                    Ok(())
                }
                other => Err(HandlerError::Permanent(format!(
                    "stock-checker does not handle {other}"
                ))),
            }?;
        }
        stockroom.save(tx, now_ms())?;
        Ok(())
    }
}

fn show(env: &Env, sku: &str) -> Response {
    let sku = match parse_sku("sku", sku) {
        Ok(sku) => sku,
        Err(e) => return Response::invalid(&[e]),
    };
    match queries::find(&Db::new(env.sql), &sku) {
        Ok(Some(product)) => Response::json(200, &product),
        Ok(None) => Response::problem(
            404,
            "not-found",
            "Product not found",
            &format!("no product {sku}"),
        ),
        Err(e) => unavailable(&e),
    }
}

fn list(request: &Request, env: &Env) -> Response {
    let limit = match parse_limit(request.query_param("limit").as_deref()) {
        Ok(limit) => limit,
        Err(e) => return Response::invalid(&[e]),
    };
    let after = match request.query_param("cursor").map(|c| decode_cursor(&c)) {
        None => String::new(),
        Some(Ok(after)) => after,
        Some(Err(e)) => return Response::invalid(&[e]),
    };
    match queries::page(&Db::new(env.sql), &after, limit) {
        Ok(items) => {
            let next = (items.len() == limit as usize)
                .then(|| items.last().map(|p| encode_cursor(&p.sku)))
                .flatten();
            Response::json(200, &json!({"items": items, "next_cursor": next}))
        }
        Err(e) => unavailable(&e),
    }
}

fn save(request: &Request, env: &Env, sku: &str) -> Response {
    let sku = match parse_sku("sku", sku) {
        Ok(sku) => sku,
        Err(e) => return Response::invalid(&[e]),
    };
    let input = match request.json().map(|body| parse_product(&body)) {
        Ok(Ok(input)) => input,
        Ok(Err(errors)) => return Response::invalid(&errors),
        Err(problem) => return problem,
    };
    let outcome =
        Db::new(env.sql).client_transaction(settings::client_lock_wait_ms(env.config), |tx| {
            let existing = queries::find(tx, &sku)?;
            queries::upsert(
                tx,
                &sku,
                &input.name,
                input.price_cents.cents(),
                input.stock,
                now_ms(),
            )?;
            // What the upsert wrote, computed rather than read back (reads come first).
            let product = queries::Product {
                sku: sku.clone(),
                name: input.name.clone(),
                price_cents: input.price_cents.cents(),
                stock: input.stock,
                reserved: existing.as_ref().map_or(0, |p| p.reserved),
            };
            Ok::<_, DbError>(Response::json(
                if existing.is_some() { 200 } else { 201 },
                &product,
            ))
        });
    outcome.unwrap_or_else(|e| unavailable(&e))
}

/// Unit prices of the requested skus; unknown skus are left out.
fn prices(request: &Request, env: &Env) -> Response {
    let body = match request.json() {
        Ok(body) => body,
        Err(problem) => return problem,
    };
    let Some(skus) = body["skus"].as_array() else {
        return Response::invalid(&[ValidationError {
            field: "skus".into(),
            message: "must be an array".into(),
        }]);
    };
    let db = Db::new(env.sql);
    let mut prices = serde_json::Map::new();
    for sku in skus.iter().filter_map(Value::as_str) {
        match queries::find(&db, sku) {
            Ok(Some(product)) => {
                prices.insert(sku.to_owned(), product.price_cents.into());
            }
            Ok(None) => {}
            Err(e) => return unavailable(&e),
        }
    }
    Response::json(200, &json!({"prices": prices}))
}

/// Reserves every line or none; answers orders either way. An order checked before
/// (orders asks again when no answer came) gets the same answer again.
fn reserve(
    tx: &Db,
    stockroom: &mut Stockroom,
    order_id: &str,
    event: &Envelope,
    messaging: &Messaging,
) -> Result<(), HandlerError> {
    let answer = match stockroom.hold(order_id) {
        Some(hold) => match hold.state.as_str() {
            "held" | "committed" => held(order_id),
            "rejected" => rejected(
                order_id,
                // Rejections recorded before reasons were kept name no sku.
                hold.reason.unwrap_or_else(|| {
                    RejectReason::OutOfStock { sku: String::new() }
                        .code()
                        .to_owned()
                }),
            ),
            // Released before it was checked: the order has ended, nothing to answer.
            _ => return Ok(()),
        },
        None => reserve_lines(tx, stockroom, order_id, event)?,
    };
    messaging.reply(tx, event, order_id, answer, "orders")?;
    Ok(())
}

fn held(order_id: &str) -> Reply {
    Reply {
        event_type: event_types::STOCK_HELD,
        data: json!({"order_id": order_id}),
    }
}

fn rejected(order_id: &str, reason: String) -> Reply {
    Reply {
        event_type: event_types::STOCK_REJECTED,
        data: json!({"order_id": order_id, "reason": reason}),
    }
}

/// Decides a first check: reserves every line when all are in stock, and records the hold
/// (or the rejection and its reason) so that the check is answered the same way when asked
/// again.
fn reserve_lines(
    tx: &Db,
    stockroom: &mut Stockroom,
    order_id: &str,
    event: &Envelope,
) -> Result<Reply, HandlerError> {
    let lines: Vec<HeldLine> = serde_json::from_value(event.data["items"].clone())
        .map_err(|e| HandlerError::Permanent(format!("order.placed with invalid items: {e}")))?;
    let mut short = None;
    for line in &lines {
        let free = stockroom.free(tx, &line.sku)?;
        if line.quantity <= 0 || free < line.quantity {
            short = Some(line.sku.clone());
            break;
        }
    }
    let (hold, answer) = match short {
        None => {
            for line in &lines {
                stockroom.adjust(&line.sku, -line.quantity, line.quantity, 0);
            }
            let hold = StockHold {
                lines,
                state: "held".into(),
                reason: None,
            };
            (hold, held(order_id))
        }
        Some(sku) => {
            let reason = RejectReason::OutOfStock { sku }.to_string();
            let hold = StockHold {
                lines: Vec::new(),
                state: "rejected".into(),
                reason: Some(reason.clone()),
            };
            (hold, rejected(order_id, reason))
        }
    };
    stockroom.set_hold(order_id, hold);
    Ok(answer)
}

/// The order is confirmed: reserved units are sold.
fn commit(stockroom: &mut Stockroom, order_id: &str) -> Result<(), HandlerError> {
    let Some(mut hold) = stockroom.hold(order_id) else {
        return Err(HandlerError::Permanent(format!(
            "order.confirmed for {order_id} without a hold"
        )));
    };
    if hold.state != "held" {
        return Ok(());
    }
    for line in &hold.lines {
        stockroom.adjust(&line.sku, 0, -line.quantity, line.quantity);
    }
    hold.state = "committed".into();
    stockroom.set_hold(order_id, hold);
    Ok(())
}

/// The order is rejected or cancelled: reserved or sold units become free again.
fn release(stockroom: &mut Stockroom, order_id: &str) {
    let Some(mut hold) = stockroom.hold(order_id) else {
        // The release overtook order.placed: remember it so the late placement reserves nothing.
        let hold = StockHold {
            lines: Vec::new(),
            state: "released".into(),
            reason: None,
        };
        stockroom.set_hold(order_id, hold);
        return;
    };
    let (free, reserved, sold) = match hold.state.as_str() {
        "held" => (1, -1, 0),
        "committed" => (1, 0, -1),
        _ => return,
    };
    for line in &hold.lines {
        stockroom.adjust(
            &line.sku,
            free * line.quantity,
            reserved * line.quantity,
            sold * line.quantity,
        );
    }
    hold.state = "released".into();
    stockroom.set_hold(order_id, hold);
}
