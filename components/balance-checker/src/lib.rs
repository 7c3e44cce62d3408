//! The balance-checker service: owns customer credit. For every placed order it holds
//! the total if the free credit suffices (else rejects with `insufficient_balance`),
//! commits the hold when the order is confirmed, and releases it when the order is
//! rejected or cancelled.

mod db;

use serde_json::json;
use service_kit::Env;
use service_kit::db::{Db, DbError, Migration};
use service_kit::http::{Request, Response, method_not_allowed, percent_decode};
use service_kit::ids::now_ms;
use service_kit::messaging::{HandlerError, Messaging, Reply, data_text};
use service_kit::settings;
use service_kit::worker::{Worker, WorkerService, unavailable};
use shop_domain::envelope::{Envelope, event_types};
use shop_domain::order::RejectReason;
use shop_domain::validation::{ValidationError, parse_credit, parse_email};

use db::queries::{self, Account, AccountView, Hold, Ledger};

/// The balance-checker worker.
#[derive(Default)]
pub struct BalanceChecker;

host_bindings::export_service!(
    WorkerService<BalanceChecker>,
    "shop:balance-checker/service",
    shop::balance_checker
);

impl Worker for BalanceChecker {
    const NAME: &'static str = "balance-checker";

    fn migrations() -> Vec<Migration> {
        db::migrations::all()
    }

    fn route(&self, request: &Request, env: &Env, _messaging: &Messaging) -> Option<Response> {
        let segments = request.segments();
        let response = match (request.method.as_str(), segments.as_slice()) {
            ("GET", ["accounts", email]) => show(env, &percent_decode(email)),
            ("POST", ["accounts", email, "credit"]) => credit(request, env, &percent_decode(email)),
            (_, ["accounts", ..]) => method_not_allowed(),
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
        let customers: Vec<&str> = events
            .iter()
            .filter_map(|event| event.data["customer"].as_str())
            .collect();
        let mut ledger = Ledger::load(tx, &order_ids, &customers)?;
        for (event, order_id) in events.iter().zip(order_ids) {
            match event.event_type.as_str() {
                event_types::ORDER_PLACED => check(tx, &mut ledger, order_id, event, messaging),
                event_types::ORDER_CONFIRMED => commit(tx, &mut ledger, order_id),
                event_types::ORDER_REJECTED | event_types::ORDER_CANCELLED => {
                    release(tx, &mut ledger, order_id, event)
                }
                other => Err(HandlerError::Permanent(format!(
                    "balance-checker does not handle {other}"
                ))),
            }?;
        }
        ledger.save(tx, now_ms())?;
        Ok(())
    }
}

fn view(customer: &str, account: &Account) -> AccountView {
    AccountView {
        customer: customer.to_owned(),
        balance_cents: account.balance_cents,
        held_cents: account.held_cents,
    }
}

fn show(env: &Env, email: &str) -> Response {
    let email = match parse_email("email", email) {
        Ok(email) => email,
        Err(e) => return Response::invalid(&[e]),
    };
    match queries::account(&Db::new(env.sql), &email) {
        Ok(account) => Response::json(200, &view(&email, &account)),
        Err(e) => unavailable(&e),
    }
}

fn credit(request: &Request, env: &Env, email: &str) -> Response {
    let email = match parse_email("email", email) {
        Ok(email) => email,
        Err(e) => return Response::invalid(&[e]),
    };
    let amount = match request.json().map(|body| parse_credit(&body)) {
        Ok(Ok(amount)) => amount,
        Ok(Err(errors)) => return Response::invalid(&errors),
        Err(problem) => return problem,
    };
    // A credit sent again under its key (the gateway does when an answer is lost) is
    // applied once.
    let key = request.scoped_idempotency_key();
    let canonical = format!("{email}\n{}", amount.cents());
    let outcome =
        Db::new(env.sql).client_transaction(settings::client_lock_wait_ms(env.config), |tx| {
            if let Some(key) = &key
                && let Some(stored) = queries::find_credit_key(tx, key)?
            {
                if stored != canonical {
                    return Ok(Response::idempotency_key_reused());
                }
                let account = queries::account(tx, &email)?;
                return Ok(Response::json(200, &view(&email, &account))
                    .with_header("idempotent-replayed", "true"));
            }
            let mut ledger = Ledger::load(tx, &[], &[&email])?;
            let mut account = ledger.account(tx, &email)?;
            let (Some(balance), Some(credited)) = (
                account.balance_cents.checked_add(amount.cents()),
                account.credited_cents.checked_add(amount.cents()),
            ) else {
                return Ok(Response::invalid(&[ValidationError {
                    field: "amount_cents".into(),
                    message: "the balance would overflow".into(),
                }]));
            };
            account.balance_cents = balance;
            account.credited_cents = credited;
            ledger.set_account(&email, account.clone());
            ledger.save(tx, now_ms())?;
            if let Some(key) = &key {
                queries::insert_credit_key(tx, key, &canonical, now_ms())?;
            }
            Ok::<_, DbError>(Response::json(200, &view(&email, &account)))
        });
    outcome.unwrap_or_else(|e| unavailable(&e))
}

/// Holds the order's total if the free credit suffices; answers orders either way. An order
/// checked before (orders asks again when no answer came) gets the same answer again.
fn check(
    tx: &Db,
    ledger: &mut Ledger,
    order_id: &str,
    event: &Envelope,
    messaging: &Messaging,
) -> Result<(), HandlerError> {
    let answer = match ledger.hold(order_id) {
        Some(hold) => match hold.state.as_str() {
            "held" | "committed" => held(order_id, hold.amount_cents),
            "rejected" => rejected(order_id),
            // Released before it was checked: the order has ended, nothing to answer.
            _ => return Ok(()),
        },
        None => hold_credit(tx, ledger, order_id, event)?,
    };
    messaging.reply(tx, event, order_id, answer, "orders")?;
    Ok(())
}

fn held(order_id: &str, amount_cents: i64) -> Reply {
    Reply {
        event_type: event_types::BALANCE_HELD,
        data: json!({"order_id": order_id, "amount_cents": amount_cents}),
    }
}

fn rejected(order_id: &str) -> Reply {
    let reason = RejectReason::InsufficientBalance.to_string();
    Reply {
        event_type: event_types::BALANCE_REJECTED,
        data: json!({"order_id": order_id, "reason": reason}),
    }
}

/// Decides a first check: holds the total when the free credit suffices, and records the
/// hold (or the rejection) so that the check is answered the same way when asked again.
fn hold_credit(
    tx: &Db,
    ledger: &mut Ledger,
    order_id: &str,
    event: &Envelope,
) -> Result<Reply, HandlerError> {
    let customer = data_text(event, "customer")?;
    let total = event.data["total_cents"]
        .as_i64()
        .filter(|t| *t >= 0)
        .ok_or_else(|| {
            HandlerError::Permanent("order.placed without a valid total_cents".into())
        })?;
    let mut account = ledger.account(tx, customer)?;
    let sufficient = account.balance_cents >= total;
    if sufficient {
        account.balance_cents -= total;
        account.held_cents += total;
        ledger.set_account(customer, account);
    }
    ledger.set_hold(
        order_id,
        Hold {
            customer: customer.to_owned(),
            amount_cents: if sufficient { total } else { 0 },
            state: if sufficient { "held" } else { "rejected" }.into(),
        },
    );
    Ok(if sufficient {
        held(order_id, total)
    } else {
        rejected(order_id)
    })
}

/// The order is confirmed: held credit becomes spent.
fn commit(tx: &Db, ledger: &mut Ledger, order_id: &str) -> Result<(), HandlerError> {
    let Some(mut hold) = ledger.hold(order_id) else {
        return Err(HandlerError::Permanent(format!(
            "order.confirmed for {order_id} without a hold"
        )));
    };
    if hold.state != "held" {
        return Ok(());
    }
    let mut account = ledger.account(tx, &hold.customer)?;
    account.held_cents -= hold.amount_cents;
    account.spent_cents += hold.amount_cents;
    ledger.set_account(&hold.customer, account);
    hold.state = "committed".into();
    ledger.set_hold(order_id, hold);
    Ok(())
}

/// The order is rejected or cancelled: held or spent credit goes back to the balance.
fn release(
    tx: &Db,
    ledger: &mut Ledger,
    order_id: &str,
    event: &Envelope,
) -> Result<(), HandlerError> {
    let Some(mut hold) = ledger.hold(order_id) else {
        // The release overtook order.placed: remember it so the late placement holds nothing.
        let customer = event.data["customer"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        ledger.set_hold(
            order_id,
            Hold {
                customer,
                amount_cents: 0,
                state: "released".into(),
            },
        );
        return Ok(());
    };
    let mut account = ledger.account(tx, &hold.customer)?;
    match hold.state.as_str() {
        "held" => account.held_cents -= hold.amount_cents,
        "committed" => account.spent_cents -= hold.amount_cents,
        _ => return Ok(()),
    }
    account.balance_cents += hold.amount_cents;
    ledger.set_account(&hold.customer, account);
    hold.state = "released".into();
    ledger.set_hold(order_id, hold);
    Ok(())
}
