//! The vouchers service: when an order is delivered with a total at or above the
//! threshold (variable `voucher_threshold_cents`, default 100.00) it issues one voucher
//! (`voucher_value_cents`, default 5.00) for that order, at most once, and tells orders.

mod db {
    //! The vouchers database: schema migrations.
    pub mod migrations;
}

use serde::Serialize;
use serde_json::json;
use service_kit::db::{Db, DbError, Migration};
use service_kit::http::{Request, Response, method_not_allowed};
use service_kit::ids::now_ms;
use service_kit::messaging::{HandlerError, Messaging, Reply};
use service_kit::worker::{Worker, WorkerService, unavailable};
use service_kit::{Env, settings};
use shop_domain::envelope::{Envelope, event_types};
use shop_domain::money::Money;
use shop_domain::time::rfc3339_from_millis;
use shop_domain::validation::parse_email;
use shop_domain::voucher::{VoucherPolicy, voucher_code};

/// The vouchers worker.
#[derive(Default)]
pub struct Vouchers;

host_bindings::export_service!(
    WorkerService<Vouchers>,
    "shop:vouchers/service",
    shop::vouchers
);

/// A voucher as the API shows it.
#[derive(Debug, Serialize)]
struct VoucherView {
    code: String,
    order_id: String,
    customer: String,
    value_cents: i64,
    issued_at: String,
}

impl Worker for Vouchers {
    const NAME: &'static str = "vouchers";

    fn migrations() -> Vec<Migration> {
        db::migrations::all()
    }

    fn route(&self, request: &Request, env: &Env, _messaging: &Messaging) -> Option<Response> {
        let response = match (request.method.as_str(), request.segments().as_slice()) {
            ("GET", ["vouchers"]) => list(request, env),
            (_, ["vouchers", ..]) => method_not_allowed(),
            _ => return None,
        };
        Some(response)
    }

    /// Vouchers are few (delivered orders over the threshold): each is issued on its own.
    fn apply(
        &self,
        tx: &Db,
        events: &[&Envelope],
        env: &Env,
        messaging: &Messaging,
    ) -> Result<(), HandlerError> {
        events
            .iter()
            .try_for_each(|event| issue(tx, event, env, messaging))
    }
}

/// Issues the voucher `event` (an `order.delivered`) earns, once per order, and tells orders.
fn issue(tx: &Db, event: &Envelope, env: &Env, messaging: &Messaging) -> Result<(), HandlerError> {
    if event.event_type != event_types::ORDER_DELIVERED {
        return Err(HandlerError::Permanent(format!(
            "vouchers does not handle {}",
            event.event_type
        )));
    }
    let (Some(order_id), Some(customer), Some(total)) = (
        event.data["order_id"].as_str(),
        event.data["customer"].as_str(),
        event.data["total_cents"].as_i64(),
    ) else {
        return Err(HandlerError::Permanent(
            "order.delivered without order_id, customer or total_cents".into(),
        ));
    };
    let policy = policy(env);
    let Some(value) = policy.voucher_for(Money::from_cents(total)) else {
        return Ok(());
    };
    let existing = tx.query_opt(
        "SELECT code FROM vouchers WHERE order_id = $1",
        &[order_id.into()],
    )?;
    if existing.is_some() {
        return Ok(());
    }
    let code = voucher_code(order_id, &settings::event_secret(env.config));
    let now = now_ms();
    tx.execute(
            "INSERT INTO vouchers (code, order_id, customer, value_cents, issued_at) VALUES ($1, $2, $3, $4, $5)",
            &[code.as_str().into(), order_id.into(), customer.into(), value.cents().into(), now.into()],
        )?;
    let issued = Reply {
        event_type: event_types::VOUCHER_ISSUED,
        data: json!({
            "order_id": order_id,
            "customer": customer,
            "code": code,
            "value_cents": value.cents(),
            "issued_at": rfc3339_from_millis(now),
        }),
    };
    messaging.reply(tx, event, order_id, issued, "orders")?;
    Ok(())
}

fn policy(env: &Env) -> VoucherPolicy {
    let default = VoucherPolicy::default();
    VoucherPolicy {
        threshold: Money::from_cents(settings::number(
            env.config,
            "voucher_threshold_cents",
            default.threshold.cents(),
        )),
        value: Money::from_cents(settings::number(
            env.config,
            "voucher_value_cents",
            default.value.cents(),
        )),
    }
}

fn list(request: &Request, env: &Env) -> Response {
    let customer = match request
        .query_param("customer")
        .map(|c| parse_email("customer", &c))
    {
        None => None,
        Some(Ok(customer)) => Some(customer),
        Some(Err(e)) => return Response::invalid(&[e]),
    };
    let rows = Db::new(env.sql).query(
        "SELECT code, order_id, customer, value_cents, issued_at FROM vouchers \
         WHERE (CAST($1 AS TEXT) IS NULL OR customer = $1) ORDER BY issued_at, code",
        &[customer.into()],
    );
    let vouchers = rows.and_then(|rows| {
        rows.iter()
            .map(|row| {
                Ok(VoucherView {
                    code: row.text("code")?,
                    order_id: row.text("order_id")?,
                    customer: row.text("customer")?,
                    value_cents: row.i64("value_cents")?,
                    issued_at: rfc3339_from_millis(row.i64("issued_at")?),
                })
            })
            .collect::<Result<Vec<_>, DbError>>()
    });
    vouchers.map_or_else(|e| unavailable(&e), |list| Response::json(200, &list))
}
