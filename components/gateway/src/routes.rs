//! The public API (see `openapi.yaml`) and where each call goes.

use std::cell::RefCell;

use serde_json::{Value, json};
use service_kit::http::{
    ACTOR_HEADER, CORRELATION_HEADER, ROLE_HEADER, Request, Response, method_not_allowed,
    not_found, percent_encode,
};
use service_kit::ids::{new_id, now_ms};
use service_kit::messaging::TICK_PATH;
use service_kit::ports::{OutboundRequest, ResponseStream};
use service_kit::slots::Slot;
use service_kit::stream::{BodyStream, ChunkSink, Streamed};
use service_kit::{Env, caller};
use shop_domain::auth::{Claims, Role};
use shop_domain::cursor::decode_cursor;
use shop_domain::order::OrderStatus;
use shop_domain::validation::{
    OrderContent, ValidationError, parse_compat_order, parse_credit, parse_email, parse_limit,
    parse_place_order, parse_product, parse_sku,
};

use crate::auth::{authenticate, forbidden, require_admin, require_self_or_staff, require_staff};

/// The services that keep dead letters.
const MESSAGING_SERVICES: [&str; 4] = ["orders", "balance-checker", "stock-checker", "vouchers"];
/// The most orders one batch may place.
const MAX_BATCH: usize = 100;
/// A price lookup that failed within this many milliseconds is asked once more.
const PRICES_RETRY_WITHIN_MS: i64 = 2_000;
/// When a caller whose keyed write got no answer should send it again, in seconds.
const NO_ANSWER_RETRY_AFTER_S: &str = "1";

/// 502 when `service` cannot be reached.
fn unreachable(service: &str, error: &str) -> Response {
    Response::problem(
        502,
        "bad-gateway",
        "Service unreachable",
        &format!("{service}: {error}"),
    )
}

/// The answer of `service` as the gateway relays it: status, body and the headers a client
/// may see; a call that got no answer is 502.
fn relay(service: &str, answer: Result<Response, service_kit::PortError>) -> Answer {
    match answer {
        Ok(response) => {
            let keep = [
                "content-type",
                "location",
                "idempotent-replayed",
                "retry-after",
                "retry-after-ms",
            ];
            let headers = response
                .headers
                .into_iter()
                .filter(|(n, _)| keep.contains(&n.as_str()))
                .collect();
            Ok(Response {
                status: response.status,
                headers,
                body: response.body,
            })
        }
        Err(e) => Err(unreachable(service, &e.to_string())),
    }
}

/// Relays an upstream event stream until it ends or the client goes away.
struct Relay(Box<dyn ResponseStream>);

impl BodyStream for Relay {
    fn run(mut self: Box<Self>, _env: &Env, sink: &mut dyn ChunkSink) {
        while let Ok(Some(chunk)) = self.0.next_chunk() {
            if sink.send(&chunk).is_err() {
                return;
            }
        }
    }
}

/// A public event stream: all orders (staff) or one order.
pub enum Feed {
    /// `GET /api/v1/orders/events`.
    AllOrders,
    /// `GET /api/v1/orders/{id}/events`.
    Order(String),
}

/// The event stream `request` asks for; `None` for any other request.
pub fn feed(request: &Request) -> Option<Feed> {
    match (request.method.as_str(), request.segments().as_slice()) {
        ("GET", ["api", "v1", "orders", "events"]) => Some(Feed::AllOrders),
        ("GET", ["api", "v1", "orders", id, "events"]) => Some(Feed::Order((*id).to_owned())),
        _ => None,
    }
}

/// Opens `feed` for the caller of `request`: authenticated, rate-limited, relayed from orders.
pub fn stream(request: &Request, env: &Env, feed: Feed) -> Streamed {
    let claims = match authenticate(request, env) {
        Ok(claims) => claims,
        Err(problem) => return Streamed::whole(problem),
    };
    if let Err(problem) = crate::rate_limit::check(request, &claims, env) {
        return Streamed::whole(problem);
    }
    let call = Call {
        request,
        env,
        claims: &claims,
    };
    match feed {
        Feed::AllOrders => match require_staff(&claims) {
            Ok(()) => call.forward_stream("orders", "/orders/events"),
            Err(problem) => Streamed::whole(problem),
        },
        Feed::Order(id) => {
            call.forward_stream("orders", &format!("/orders/{}/events", percent_encode(&id)))
        }
    }
}

/// Answers one public request; an admitted API request's slot is left in `in_flight`.
pub fn route(request: &Request, env: &Env, in_flight: &RefCell<Option<Slot>>) -> Response {
    let segments = request.segments();
    if segments.as_slice() == ["healthz"] {
        return if request.method == "GET" {
            Response::json(200, &json!({"status": "ok"}))
        } else {
            method_not_allowed()
        };
    }
    let ["api", "v1", rest @ ..] = segments.as_slice() else {
        return crate::web::serve(request);
    };
    let claims = match authenticate(request, env) {
        Ok(claims) => claims,
        Err(problem) => return problem,
    };
    match crate::admission::admit(request, env) {
        Ok(slot) => *in_flight.borrow_mut() = slot,
        Err(shed) => return shed,
    }
    if let Err(problem) = crate::rate_limit::check(request, &claims, env) {
        return problem;
    }
    let call = Call {
        request,
        env,
        claims: &claims,
    };
    let answer = match (request.method.as_str(), rest) {
        ("GET", ["products"]) => call.list_products(),
        ("GET", ["products", sku]) => call.with_sku(sku, |sku| {
            call.forward(
                "stock-checker",
                "GET",
                &format!("/products/{sku}"),
                Vec::new(),
            )
        }),
        ("PUT", ["products", sku]) => call.put_product(sku),
        (_, ["products", ..]) => Err(method_not_allowed()),
        ("GET", ["accounts", email]) => call.with_email(email, |email| {
            require_self_or_staff(&claims, email)?;
            call.forward(
                "balance-checker",
                "GET",
                &format!("/accounts/{}", percent_encode(email)),
                Vec::new(),
            )
        }),
        ("POST", ["accounts", email, "credit"]) => call.credit(email),
        (_, ["accounts", ..]) => Err(method_not_allowed()),
        ("POST", ["orders"]) => call.place_order(),
        ("POST", ["orders", "batch"]) => call.place_batch(),
        ("POST", ["order"]) => call.place_compat(),
        ("GET", ["orders"]) => call.list_orders(),
        ("GET", ["orders", id]) => call.forward(
            "orders",
            "GET",
            &format!("/orders/{}", percent_encode(id)),
            Vec::new(),
        ),
        ("POST", ["orders", id, action @ ("ship" | "deliver")]) => {
            require_staff(&claims).and_then(|()| {
                call.forward(
                    "orders",
                    "POST",
                    &format!("/orders/{}/{action}", percent_encode(id)),
                    Vec::new(),
                )
            })
        }
        ("POST", ["orders", id, "cancel"]) => call.forward(
            "orders",
            "POST",
            &format!("/orders/{}/cancel", percent_encode(id)),
            Vec::new(),
        ),
        (_, ["orders" | "order", ..]) => Err(method_not_allowed()),
        ("GET", ["vouchers"]) => call.list_vouchers(),
        (_, ["vouchers"]) => Err(method_not_allowed()),
        ("GET", ["admin", "dead-letters"]) => {
            require_admin(&claims).and_then(|()| call.dead_letters())
        }
        ("POST", ["admin", "dead-letters", id, "retry"]) => {
            require_admin(&claims).and_then(|()| call.retry_dead_letter(id))
        }
        ("POST", ["admin", "tick"]) => require_admin(&claims).and_then(|()| call.tick()),
        (_, ["admin", ..]) => Err(method_not_allowed()),
        _ => Err(not_found()),
    };
    answer.unwrap_or_else(|problem| problem)
}

/// One authenticated call.
struct Call<'a> {
    request: &'a Request,
    env: &'a Env<'a>,
    claims: &'a Claims,
}

type Answer = Result<Response, Response>;

impl Call<'_> {
    /// Sends the call on to `service` as the authenticated caller and relays its answer.
    fn forward(&self, service: &str, method: &str, path: &str, body: Vec<u8>) -> Answer {
        relay(
            service,
            self.env
                .services
                .call(service, self.outbound(method, path, body, None)),
        )
    }

    /// As [`Call::forward`] for a request the receiver deduplicates by its
    /// `Idempotency-Key` (`key`: the caller's, or one made here): when the call fails without
    /// an answer (lost, timed out, cut short), it is sent once more with the same key, and
    /// the receiver either applies it or replays what it did the first time.
    ///
    /// When the second try fails too and `key` is the caller's own, the answer is 503
    /// `no-answer` with `Retry-After`: whether the write was applied is not known, and the
    /// caller may find out safely by sending it again under the same key. Without a key of
    /// the caller's, no such resend is possible, so the failure stays 502.
    fn forward_keyed(
        &self,
        service: &str,
        path: &str,
        body: Vec<u8>,
        key: &str,
        callers_key: bool,
    ) -> Answer {
        let request = self.outbound("POST", path, body, Some(key));
        let call = || self.env.services.call(service, request.clone());
        match call().or_else(|_| call()) {
            Err(e) if callers_key => Err(Response::problem(
                503,
                "no-answer",
                "Service did not answer",
                &format!("{service}: {e}"),
            )
            .with_header("retry-after", NO_ANSWER_RETRY_AFTER_S)),
            answer => relay(service, answer),
        }
    }

    /// As [`Call::forward`] for a `GET` of an event stream, relayed chunk by chunk.
    fn forward_stream(&self, service: &str, path: &str) -> Streamed {
        let mut upstream = match self
            .env
            .services
            .open(service, self.outbound("GET", path, Vec::new(), None))
        {
            Ok(upstream) => upstream,
            Err(e) => return Streamed::whole(unreachable(service, &e.to_string())),
        };
        let keep = ["content-type", "cache-control", "x-accel-buffering"];
        let headers = upstream
            .headers()
            .iter()
            .filter(|(n, _)| keep.contains(&n.as_str()))
            .cloned()
            .collect();
        if upstream.status() == 200 {
            return Streamed {
                status: 200,
                headers,
                body: Box::new(Relay(upstream)),
            };
        }
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = upstream.next_chunk() {
            body.extend_from_slice(&chunk);
        }
        Streamed::whole(Response {
            status: upstream.status(),
            headers,
            body,
        })
    }

    /// The request to a service on behalf of the authenticated caller, with the caller's
    /// `Idempotency-Key` or `idempotency_key` in its place, signed (`service_kit::caller`):
    /// the service believes the actor and role only so.
    fn outbound(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        idempotency_key: Option<&str>,
    ) -> OutboundRequest {
        let mut headers = vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            (ACTOR_HEADER.to_owned(), self.claims.sub.clone()),
            (
                ROLE_HEADER.to_owned(),
                role_name(self.claims.role).to_owned(),
            ),
            (
                CORRELATION_HEADER.to_owned(),
                self.request.correlation_id().unwrap_or_default().to_owned(),
            ),
        ];
        let idempotency_key = idempotency_key.or_else(|| self.request.header("idempotency-key"));
        if let Some(key) = idempotency_key {
            headers.push(("idempotency-key".to_owned(), key.to_owned()));
        }
        if let Some(value) = self.request.header("last-event-id") {
            headers.push(("last-event-id".to_owned(), value.to_owned()));
        }
        caller::signed(
            OutboundRequest {
                method: method.into(),
                url: path.to_owned(),
                headers,
                body,
            },
            self.env.config,
        )
    }

    fn json(&self) -> Result<Value, Response> {
        self.request.json()
    }

    fn with_sku(&self, raw: &str, then: impl FnOnce(&str) -> Answer) -> Answer {
        let sku = parse_sku("sku", &service_kit::http::percent_decode(raw))
            .map_err(|e| Response::invalid(&[e]))?;
        then(&sku)
    }

    fn with_email(&self, raw: &str, then: impl FnOnce(&str) -> Answer) -> Answer {
        let email = parse_email("email", &service_kit::http::percent_decode(raw))
            .map_err(|e| Response::invalid(&[e]))?;
        then(&email)
    }

    fn list_products(&self) -> Answer {
        let mut query = Vec::new();
        if let Some(limit) = self.request.query_param("limit") {
            parse_limit(Some(&limit)).map_err(|e| Response::invalid(&[e]))?;
            query.push(format!("limit={}", percent_encode(&limit)));
        }
        if let Some(cursor) = self.request.query_param("cursor") {
            decode_cursor(&cursor).map_err(|e| Response::invalid(&[e]))?;
            query.push(format!("cursor={}", percent_encode(&cursor)));
        }
        self.forward(
            "stock-checker",
            "GET",
            &format!("/products?{}", query.join("&")),
            Vec::new(),
        )
    }

    fn put_product(&self, raw_sku: &str) -> Answer {
        require_staff(self.claims)?;
        self.with_sku(raw_sku, |sku| {
            let product = parse_product(&self.json()?).map_err(|e| Response::invalid(&e))?;
            let body = json!({"name": product.name, "price_cents": product.price_cents, "stock": product.stock});
            self.forward("stock-checker", "PUT", &format!("/products/{sku}"), body.to_string().into_bytes())
        })
    }

    fn credit(&self, raw_email: &str) -> Answer {
        require_staff(self.claims)?;
        self.with_email(raw_email, |email| {
            let amount = parse_credit(&self.json()?).map_err(|e| Response::invalid(&e))?;
            let body = json!({"amount_cents": amount}).to_string().into_bytes();
            self.forward_idempotent(
                "balance-checker",
                &format!("/accounts/{}/credit", percent_encode(email)),
                body,
            )
        })
    }

    fn place_order(&self) -> Answer {
        let body = self.json()?;
        self.place(&body)
    }

    /// Places one order: checked here, its skus priced by stock-checker, then stored by
    /// orders (the order as the client sent it, with `prices`).
    fn place(&self, body: &Value) -> Answer {
        let order = parse_place_order(body).map_err(|e| Response::invalid(&e))?;
        require_self_or_staff(self.claims, &order.customer)?;
        let skus = match &order.content {
            OrderContent::Items(lines) => lines.iter().map(|line| line.sku.clone()).collect(),
            OrderContent::Value(_) => Vec::new(),
        };
        let mut priced = body.clone();
        priced["prices"] = self.prices(skus)?;
        self.forward_idempotent("orders", "/orders", priced.to_string().into_bytes())
    }

    /// The unit prices (sku to cents) of `skus` in stock-checker's catalogue; a sku it does
    /// not have is left out. A price list changes nothing: asked once more when the call
    /// failed at once without an answer (cut short, refused); one that got no answer in its
    /// whole time-out is not waited for twice (503, the client sends the order again).
    fn prices(&self, mut skus: Vec<String>) -> Result<Value, Response> {
        skus.sort();
        skus.dedup();
        if skus.is_empty() {
            return Ok(json!({}));
        }
        let request = self.outbound(
            "POST",
            "/internal/prices",
            json!({"skus": skus}).to_string().into_bytes(),
            None,
        );
        let ask = || self.env.services.call("stock-checker", request.clone());
        let unavailable = |detail: &str| {
            Response::problem(503, "unavailable", "Catalogue unavailable", detail)
                .with_header("retry-after", NO_ANSWER_RETRY_AFTER_S)
        };
        let asked_at = now_ms();
        let answer = match ask() {
            Err(_) if now_ms() - asked_at < PRICES_RETRY_WITHIN_MS => ask(),
            first => first,
        };
        match answer {
            Ok(answer) if answer.is_success() => match answer.json_body() {
                Some(list) if list["prices"].is_object() => Ok(list["prices"].clone()),
                _ => Err(unavailable("stock-checker answered without a price list")),
            },
            Ok(answer) => Err(unavailable(&format!(
                "stock-checker answered {}",
                answer.status
            ))),
            Err(e) => Err(unavailable(&format!("stock-checker: {e}"))),
        }
    }

    /// A write the receiver deduplicates by `Idempotency-Key`, under the caller's key or,
    /// without one, one of the gateway's own: either makes the write safe to send again when
    /// its answer is lost ([`Call::forward_keyed`]); the caller is not told of a replay it
    /// did not ask for.
    fn forward_idempotent(&self, service: &str, path: &str, body: Vec<u8>) -> Answer {
        if let Some(key) = self.request.header("idempotency-key")
            && (key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(Response::invalid(&[ValidationError {
                field: "Idempotency-Key".into(),
                message: "must be 1 to 255 visible ASCII characters".into(),
            }]));
        }
        let (key, own_key) = match self.request.header("idempotency-key") {
            Some(key) => (key.to_owned(), false),
            None => (new_id("gwk"), true),
        };
        let mut answer = self.forward_keyed(service, path, body, &key, !own_key)?;
        if own_key {
            answer
                .headers
                .retain(|(name, _)| name != "idempotent-replayed");
        }
        Ok(answer)
    }

    fn place_compat(&self) -> Answer {
        let email = self.request.query_param("email");
        let value = self.request.query_param("value");
        let order = parse_compat_order(email.as_deref(), value.as_deref())
            .map_err(|e| Response::invalid(&e))?;
        let cents = match order.content {
            OrderContent::Value(value) => value.cents(),
            OrderContent::Items(_) => return Err(not_found()),
        };
        self.place(&json!({"customer": order.customer, "value_cents": cents}))
    }

    fn place_batch(&self) -> Answer {
        let body = self.json()?;
        let orders = match &body {
            Value::Array(list) => list.clone(),
            Value::Object(map) => map
                .get("orders")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        if orders.is_empty() || orders.len() > MAX_BATCH {
            return Err(Response::invalid(&[ValidationError {
                field: "orders".into(),
                message: format!("must be a non-empty list of at most {MAX_BATCH} orders"),
            }]));
        }
        if !self.claims.role.allows_staff() {
            let foreign = orders.iter().any(|o| {
                o.get("customer").and_then(Value::as_str) != Some(self.claims.sub.as_str())
            });
            if foreign {
                return Err(forbidden("customers may only place orders for themselves"));
            }
        }
        let skus = orders
            .iter()
            .filter_map(|order| order.get("items").and_then(Value::as_array))
            .flatten()
            .filter_map(|line| line.get("sku").and_then(Value::as_str))
            .filter_map(|sku| parse_sku("sku", sku).ok())
            .collect();
        let prices = self.prices(skus)?;
        self.forward(
            "orders",
            "POST",
            "/orders/batch",
            json!({"orders": orders, "prices": prices})
                .to_string()
                .into_bytes(),
        )
    }

    fn list_orders(&self) -> Answer {
        let mut query = Vec::new();
        let mut errors = Vec::new();
        if let Some(customer) = self.request.query_param("customer") {
            match parse_email("customer", &customer) {
                Ok(customer) => {
                    require_self_or_staff(self.claims, &customer)?;
                    query.push(format!("customer={}", percent_encode(&customer)));
                }
                Err(e) => errors.push(e),
            }
        }
        if let Some(status) = self.request.query_param("status") {
            match OrderStatus::parse(&status) {
                Some(status) => query.push(format!("status={}", status.as_str())),
                None => errors.push(ValidationError {
                    field: "status".into(),
                    message: format!("unknown status {status}"),
                }),
            }
        }
        if let Some(limit) = self.request.query_param("limit") {
            match parse_limit(Some(&limit)) {
                Ok(limit) => query.push(format!("limit={limit}")),
                Err(e) => errors.push(e),
            }
        }
        if let Some(cursor) = self.request.query_param("cursor") {
            match decode_cursor(&cursor) {
                Ok(_) => query.push(format!("cursor={}", percent_encode(&cursor))),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(Response::invalid(&errors));
        }
        self.forward(
            "orders",
            "GET",
            &format!("/orders?{}", query.join("&")),
            Vec::new(),
        )
    }

    fn list_vouchers(&self) -> Answer {
        let customer = match self.request.query_param("customer") {
            Some(customer) => {
                Some(parse_email("customer", &customer).map_err(|e| Response::invalid(&[e]))?)
            }
            None if self.claims.role.allows_staff() => None,
            None => Some(self.claims.sub.clone()),
        };
        let query = match &customer {
            Some(customer) => {
                require_self_or_staff(self.claims, customer)?;
                format!("?customer={}", percent_encode(customer))
            }
            None => String::new(),
        };
        self.forward("vouchers", "GET", &format!("/vouchers{query}"), Vec::new())
    }

    fn dead_letters(&self) -> Answer {
        let mut items = Vec::new();
        for service in MESSAGING_SERVICES {
            let answer = self.forward(service, "GET", "/internal/dead-letters", Vec::new())?;
            match answer.json_body() {
                Some(Value::Array(list)) if answer.is_success() => items.extend(list),
                _ => {
                    return Err(Response::problem(
                        502,
                        "bad-gateway",
                        "Dead letters unavailable",
                        &format!("{service} answered {}", answer.status),
                    ));
                }
            }
        }
        Ok(Response::json(200, &json!({"items": items})))
    }

    /// Runs every service's time-driven work now (re-deliveries, check time-outs): what a
    /// ticker or Spin's cron trigger calls when there is no traffic.
    fn tick(&self) -> Answer {
        let mut reports = serde_json::Map::new();
        for service in MESSAGING_SERVICES {
            let answer = self.forward(service, "POST", TICK_PATH, Vec::new())?;
            reports.insert(
                service.to_owned(),
                answer.json_body().unwrap_or(Value::Null),
            );
        }
        Ok(Response::json(200, &Value::Object(reports)))
    }

    fn retry_dead_letter(&self, id: &str) -> Answer {
        let decoded = service_kit::http::percent_decode(id);
        let Some((service, local)) = decoded.split_once(':') else {
            return Err(not_found());
        };
        if !MESSAGING_SERVICES.contains(&service) || local.is_empty() {
            return Err(not_found());
        }
        self.forward(
            service,
            "POST",
            &format!("/internal/dead-letters/{}/retry", percent_encode(local)),
            Vec::new(),
        )
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Customer => "customer",
        Role::Staff => "staff",
        Role::Admin => "admin",
    }
}
