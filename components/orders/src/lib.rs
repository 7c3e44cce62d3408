//! The orders service: places orders, answers order queries, applies staff and customer
//! transitions, and orchestrates the saga (see [`saga`]). Reached only from the gateway
//! and from other services, never from outside.

mod db;
mod live;
mod saga;

use serde_json::{Value, json};
use service_kit::db::{Db, DbError, Migration};
use service_kit::http::{ACTOR_HEADER, ROLE_HEADER, Request, Response, method_not_allowed};
use service_kit::ids::{new_id, now_ms};
use service_kit::messaging::{HandlerError, Messaging};
use service_kit::stream::Streamed;
use service_kit::worker::{Worker, WorkerService, unavailable};
use service_kit::{Env, settings};
use shop_domain::cursor::{decode_cursor, encode_cursor};
use shop_domain::envelope::{Envelope, event_types};
use shop_domain::money::Money;
use shop_domain::order::{OrderAction, OrderStatus, transition};
use shop_domain::time::rfc3339_from_millis;
use shop_domain::validation::{
    OrderContent, PlaceOrder, ValidationError, parse_limit, parse_place_order,
};

use db::queries::{self, HistoryEntry, IdempotencyKey, OrderRecord, OrderSet, OrderView};

/// This component's id.
const NAME: &str = "orders";
/// The services that check every placed order.
const CHECKERS: [&str; 2] = ["balance-checker", "stock-checker"];

/// The orders worker.
#[derive(Default)]
pub struct Orders;

host_bindings::export_service!(WorkerService<Orders>, "shop:orders/service", shop::orders);

impl Worker for Orders {
    const NAME: &'static str = NAME;

    fn migrations() -> Vec<Migration> {
        db::migrations::all()
    }

    fn route(&self, request: &Request, env: &Env, messaging: &Messaging) -> Option<Response> {
        let segments = request.segments();
        let response = match (request.method.as_str(), segments.as_slice()) {
            ("POST", ["orders"]) => place_one(request, env, messaging),
            ("POST", ["orders", "batch"]) => place_batch(request, env, messaging),
            ("GET", ["orders"]) => list(request, env),
            ("GET", ["orders", id]) => get(request, env, id),
            ("POST", ["orders", id, action]) => act(request, env, messaging, id, action),
            (_, ["orders", ..]) => method_not_allowed(),
            _ => return None,
        };
        Some(response)
    }

    fn stream(&self, request: &Request, env: &Env) -> Option<Streamed> {
        live::stream(request, env)
    }

    fn apply(
        &self,
        tx: &Db,
        events: &[&Envelope],
        env: &Env,
        messaging: &Messaging,
    ) -> Result<(), HandlerError> {
        saga::apply(tx, events, env, messaging)
    }

    fn on_tick(&self, env: &Env, messaging: &Messaging) -> Result<(), DbError> {
        saga::time_out_checks(env, messaging)
    }
}

/// Who is calling, as the gateway authenticated them.
struct Caller {
    actor: String,
    staff: bool,
}

impl Caller {
    fn of(request: &Request) -> Caller {
        let role = request.header(ROLE_HEADER).unwrap_or("customer");
        Caller {
            actor: request.header(ACTOR_HEADER).unwrap_or_default().to_owned(),
            staff: matches!(role, "staff" | "admin"),
        }
    }

    fn may_see(&self, order: &OrderRecord) -> bool {
        self.staff || order.customer == self.actor
    }
}

fn correlation(request: &Request) -> String {
    request
        .correlation_id()
        .map_or_else(|| new_id("cor"), str::to_owned)
}

fn forbidden() -> Response {
    Response::problem(
        403,
        "forbidden",
        "Forbidden",
        "this order belongs to another customer",
    )
}

fn order_not_found(id: &str) -> Response {
    Response::problem(
        404,
        "not-found",
        "Order not found",
        &format!("no order {id}"),
    )
}

/// 202 with the order and its location.
fn accepted(view: &OrderView) -> Response {
    Response::json(202, view).with_header("location", &format!("/api/v1/orders/{}", view.id))
}

/// `POST /orders`: the order as the client sent it, and the gateway's `prices` of its skus.
fn place_one(request: &Request, env: &Env, messaging: &Messaging) -> Response {
    let mut body = match request.json() {
        Ok(body) => body,
        Err(problem) => return problem,
    };
    let prices = take_prices(&mut body);
    let key = request.scoped_idempotency_key();
    place(request, env, messaging, (&body, &prices), key.as_deref())
}

/// Removes the gateway's `prices` (sku to cents) from a placement's body: what remains is
/// the client's order, checked as such (a client cannot send prices: the gateway refuses
/// unknown fields).
fn take_prices(body: &mut Value) -> Value {
    body.as_object_mut()
        .and_then(|fields| fields.remove("prices"))
        .unwrap_or(Value::Null)
}

/// `POST /orders/batch`: the orders as the client sent them, and the gateway's `prices` of
/// all their skus.
fn place_batch(request: &Request, env: &Env, messaging: &Messaging) -> Response {
    let mut body = match request.json() {
        Ok(body) => body,
        Err(problem) => return problem,
    };
    let prices = take_prices(&mut body);
    let Some(items) = body.get("orders").and_then(Value::as_array) else {
        return Response::invalid(&[ValidationError {
            field: "orders".into(),
            message: "must be an array".into(),
        }]);
    };
    let results: Vec<Value> = items
        .iter()
        .map(|item| {
            let answer = place(request, env, messaging, (item, &prices), None);
            let body = answer.json_body().unwrap_or(Value::Null);
            if answer.status == 202 {
                json!({"status": 202, "order": body})
            } else {
                json!({"status": answer.status, "problem": body})
            }
        })
        .collect();
    Response::json(200, &json!({ "results": results }))
}

/// Places one order: validates, prices the lines with `prices`, and stores the order together
/// with its `order.placed` event (and idempotency key) in one statement ([`queries::insert`]).
fn place(
    request: &Request,
    env: &Env,
    messaging: &Messaging,
    (body, prices): (&Value, &Value),
    key: Option<&str>,
) -> Response {
    let order = match parse_place_order(body) {
        Ok(order) => order,
        Err(errors) => return Response::invalid(&errors),
    };
    let caller = Caller::of(request);
    if !caller.staff && order.customer != caller.actor {
        return Response::problem(
            403,
            "forbidden",
            "Forbidden",
            "customers may only place orders for themselves",
        );
    }
    let canonical = canonical_request(&order);
    let correlation_id = correlation(request);
    let (items, total) = match price(&order, prices) {
        Ok(priced) => priced,
        Err(problem) => return problem,
    };
    let now = now_ms();
    let id = new_id("ord");
    let timeout = settings::number(env.config, "check_timeout_ms", 30_000u64);
    let data = json!({"order_id": id, "customer": order.customer, "items": items, "total_cents": total.cents()});
    let placed = messaging.envelope(event_types::ORDER_PLACED, &id, &correlation_id, data);
    let placed_event = match serde_json::to_string(&placed) {
        Ok(text) => text,
        Err(e) => return unavailable(&DbError(e.to_string())),
    };
    let record = OrderRecord {
        id,
        customer: order.customer.clone(),
        items: items.to_string(),
        total_cents: total.cents(),
        status: OrderStatus::Placed,
        reason: None,
        balance_check: None,
        stock_check: None,
        checks_deadline: saga::checks_deadline(now, timeout, 0),
        check_resends: 0,
        placed_event,
        voucher: None,
        correlation_id,
        created_at: now,
    };
    let key = key.map(|scoped_key| IdempotencyKey {
        scoped_key,
        request: &canonical,
    });
    let db = Db::new(env.sql);
    let stored = db.with_lock_wait(settings::client_lock_wait_ms(env.config), || {
        queries::insert(&db, &record, key.as_ref())
    });
    match (stored, key) {
        (Ok(()), _) => {
            messaging.note_written();
            let history = vec![HistoryEntry {
                status: record.status.as_str().to_owned(),
                at: rfc3339_from_millis(now),
            }];
            accepted(&queries::view_with(&record, history))
        }
        // The key may be taken: by this same order placed before (replayed), or by another.
        (Err(e), Some(key)) => match replay(&db, key.scoped_key, &canonical) {
            Ok(Some(answer)) => answer,
            Ok(None) => unavailable(&e),
            Err(e) => unavailable(&e),
        },
        (Err(e), None) => unavailable(&e),
    }
}

/// The same order placed again under the same key; a different order under it is a 422.
fn replay(db: &Db, key: &str, canonical: &str) -> Result<Option<Response>, DbError> {
    let Some((stored, order_id)) = queries::find_idempotency_key(db, key)? else {
        return Ok(None);
    };
    if stored != canonical {
        return Ok(Some(Response::idempotency_key_reused()));
    }
    Ok(queries::load(db, &order_id)?
        .map(|order| queries::view(db, &order))
        .transpose()?
        .map(|view| accepted(&view).with_header("idempotent-replayed", "true")))
}

fn canonical_request(order: &PlaceOrder) -> String {
    let content = match &order.content {
        OrderContent::Items(lines) => json!({"items": lines}),
        OrderContent::Value(value) => json!({"value_cents": value.cents()}),
    };
    json!({"customer": order.customer, "content": content}).to_string()
}

/// Prices the order's lines with the unit prices the gateway looked up in stock-checker's
/// catalogue (`prices`: sku to cents, sent with the order): the lines with unit prices, and
/// the total. A sku without a price is not in the catalogue.
fn price(order: &PlaceOrder, prices: &Value) -> Result<(Value, Money), Response> {
    let lines = match &order.content {
        OrderContent::Value(value) => return Ok((Value::Array(Vec::new()), *value)),
        OrderContent::Items(lines) => lines,
    };
    let mut priced = Vec::new();
    let mut total = Money::ZERO;
    let mut unknown = Vec::new();
    for line in lines {
        let Some(unit) = prices[&line.sku].as_i64() else {
            unknown.push(ValidationError {
                field: "items".into(),
                message: format!("unknown sku {}", line.sku),
            });
            continue;
        };
        let line_total = Money::from_cents(unit)
            .checked_mul(line.quantity)
            .and_then(|t| total.checked_add(t));
        let Some(sum) = line_total else {
            return Err(Response::invalid(&[ValidationError {
                field: "items".into(),
                message: "order total overflows".into(),
            }]));
        };
        total = sum;
        priced.push(json!({"sku": line.sku, "quantity": line.quantity, "price_cents": unit}));
    }
    if !unknown.is_empty() {
        return Err(Response::invalid(&unknown));
    }
    Ok((Value::Array(priced), total))
}

fn get(request: &Request, env: &Env, id: &str) -> Response {
    let db = Db::new(env.sql);
    match queries::load(&db, id) {
        Ok(Some(order)) if Caller::of(request).may_see(&order) => {
            match queries::view(&db, &order) {
                Ok(view) => Response::json(200, &view),
                Err(e) => unavailable(&e),
            }
        }
        Ok(Some(_)) => forbidden(),
        Ok(None) => order_not_found(id),
        Err(e) => unavailable(&e),
    }
}

fn list(request: &Request, env: &Env) -> Response {
    let caller = Caller::of(request);
    let mut errors = Vec::new();
    let customer = request.query_param("customer");
    let customer = if caller.staff {
        customer
    } else {
        Some(caller.actor.clone())
    };
    let status = match request.query_param("status") {
        None => None,
        Some(s) => OrderStatus::parse(&s).or_else(|| {
            errors.push(ValidationError {
                field: "status".into(),
                message: format!("unknown status {s}"),
            });
            None
        }),
    };
    let limit = parse_limit(request.query_param("limit").as_deref()).unwrap_or_else(|e| {
        errors.push(e);
        0
    });
    let after = match request.query_param("cursor") {
        None => None,
        Some(cursor) => match decode_cursor(&cursor)
            .ok()
            .and_then(|key| parse_position(&key))
        {
            Some(position) => Some(position),
            None => {
                errors.push(ValidationError {
                    field: "cursor".into(),
                    message: "invalid cursor".into(),
                });
                None
            }
        },
    };
    if !errors.is_empty() {
        return Response::invalid(&errors);
    }
    let db = Db::new(env.sql);
    let page = queries::list(&db, customer.as_deref(), status, after, limit).and_then(|orders| {
        let views = orders
            .iter()
            .map(|o| queries::view(&db, o))
            .collect::<Result<Vec<_>, _>>()?;
        let next = (orders.len() == limit as usize)
            .then(|| {
                orders
                    .last()
                    .map(|o| encode_cursor(&format!("{}:{}", o.created_at, o.id)))
            })
            .flatten();
        Ok(json!({"items": views, "next_cursor": next}))
    });
    page.map_or_else(|e| unavailable(&e), |page| Response::json(200, &page))
}

fn parse_position(key: &str) -> Option<(i64, String)> {
    let (at, id) = key.split_once(':')?;
    Some((at.parse().ok()?, id.to_owned()))
}

/// Ship, deliver (staff, checked by the gateway) or cancel (the order's customer or staff).
/// An action already applied answers the order as it is: a client may send it again.
fn act(request: &Request, env: &Env, messaging: &Messaging, id: &str, action: &str) -> Response {
    let action = match action {
        "ship" => OrderAction::Ship,
        "deliver" => OrderAction::Deliver,
        "cancel" => OrderAction::Cancel,
        _ => return service_kit::http::not_found(),
    };
    let caller = Caller::of(request);
    if !caller.staff && action != OrderAction::Cancel {
        return Response::problem(
            403,
            "forbidden",
            "Forbidden",
            "only staff may ship or deliver orders",
        );
    }
    let correlation_id = correlation(request);
    let db = Db::new(env.sql);
    let outcome = db.client_transaction(settings::client_lock_wait_ms(env.config), |tx| {
        let mut orders = OrderSet::load(tx, &[id])?;
        let Some(order) = orders.get(id).cloned() else {
            return Ok(order_not_found(id));
        };
        if !caller.may_see(&order) {
            return Ok(forbidden());
        }
        if order.status == action.outcome() {
            // Done already: a client asking again after its answer was lost.
            return Ok(Response::json(200, &queries::view(tx, &order)?));
        }
        let next = match transition(order.status, action) {
            Ok(next) => next,
            Err(e) => {
                return Ok(Response::problem(
                    409,
                    "invalid-transition",
                    "Invalid transition",
                    &e.to_string(),
                ));
            }
        };
        // Every read before the first write (see service_kit::db::Db::transaction).
        let mut view = queries::view(tx, &order)?;
        let now = now_ms();
        orders.set_status(id, next, None, now);
        let data =
            json!({"order_id": id, "customer": order.customer, "total_cents": order.total_cents});
        match next {
            OrderStatus::Cancelled => {
                messaging.publish(
                    tx,
                    event_types::ORDER_CANCELLED,
                    id,
                    &correlation_id,
                    data,
                    &CHECKERS,
                )?;
            }
            OrderStatus::Delivered => {
                messaging.publish(
                    tx,
                    event_types::ORDER_DELIVERED,
                    id,
                    &correlation_id,
                    data,
                    &["vouchers"],
                )?;
            }
            _ => {}
        }
        orders.save(tx, now)?;
        view.status = next.as_str();
        view.history.push(HistoryEntry {
            status: next.as_str().to_owned(),
            at: rfc3339_from_millis(now),
        });
        Ok::<_, DbError>(Response::json(200, &view))
    });
    outcome.unwrap_or_else(|e| unavailable(&e))
}
