//! The order saga: the checkers' answers confirm or reject a placed order, confirmation
//! commits the holds, rejection releases them, and checks that do not answer in time
//! are asked again (a new `order.placed`, which a checker that already decided answers
//! once more) a bounded number of times and then time the order out.

use serde_json::json;
use service_kit::Env;
use service_kit::db::{Db, DbError};
use service_kit::ids::now_ms;
use service_kit::log::{self, Level};
use service_kit::messaging::{HandlerError, Messaging, data_text};
use service_kit::settings;
use shop_domain::envelope::{Envelope, event_types};
use shop_domain::order::{OrderAction, OrderStatus, RejectReason, transition};

use crate::CHECKERS;
use crate::db::queries::{self, Check, OrderRecord, OrderSet};

/// How many overdue orders one tick handles at most.
const TICK_BATCH: i64 = 50;

/// Applies a batch of events addressed to orders, inside transaction `tx`: the orders they
/// name are read at once, changed in memory and written back at once ([`OrderSet`]).
pub fn apply(
    tx: &Db,
    events: &[&Envelope],
    _env: &Env,
    messaging: &Messaging,
) -> Result<(), HandlerError> {
    let ids = events
        .iter()
        .map(|event| data_text(event, "order_id"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut orders = OrderSet::load(tx, &ids)?;
    for (event, order_id) in events.iter().zip(ids) {
        apply_event(tx, &mut orders, order_id, event, messaging)?;
    }
    orders.save(tx, now_ms())?;
    Ok(())
}

/// Applies one event to the order it names.
fn apply_event(
    tx: &Db,
    orders: &mut OrderSet,
    order_id: &str,
    event: &Envelope,
    messaging: &Messaging,
) -> Result<(), HandlerError> {
    let order = orders.get(order_id).cloned().ok_or_else(|| {
        HandlerError::Permanent(format!("{} for unknown order {order_id}", event.event_type))
    })?;
    let check_result = [
        event_types::BALANCE_HELD,
        event_types::STOCK_HELD,
        event_types::BALANCE_REJECTED,
        event_types::STOCK_REJECTED,
    ]
    .contains(&event.event_type.as_str());
    if check_result && order.status != OrderStatus::Placed {
        // A late or re-sent answer: the order already moved on, so it changes nothing.
        return Ok(());
    }
    match event.event_type.as_str() {
        event_types::BALANCE_HELD => held(tx, orders, &order, Check::Balance, event, messaging)?,
        event_types::STOCK_HELD => held(tx, orders, &order, Check::Stock, event, messaging)?,
        event_types::BALANCE_REJECTED | event_types::STOCK_REJECTED => {
            let check = if event.event_type == event_types::BALANCE_REJECTED {
                Check::Balance
            } else {
                Check::Stock
            };
            orders.set_check(&order.id, check, "rejected");
            let reason = event.data["reason"].as_str().unwrap_or("rejected");
            reject(tx, orders, &order, reason, &event.correlation_id, messaging)?;
        }
        event_types::VOUCHER_ISSUED if order.status != OrderStatus::Delivered => {
            return Err(HandlerError::Permanent(format!(
                "voucher.issued for order {} in status {}",
                order.id,
                order.status.as_str()
            )));
        }
        // One voucher per order: a second one (another event id) changes nothing.
        event_types::VOUCHER_ISSUED if order.voucher.is_some() => {}
        event_types::VOUCHER_ISSUED => {
            let voucher = json!({
                "code": event.data["code"],
                "value_cents": event.data["value_cents"],
                "issued_at": event.data["issued_at"],
            });
            orders.set_voucher(&order.id, &voucher);
        }
        other => {
            return Err(HandlerError::Permanent(format!(
                "orders does not handle {other}"
            )));
        }
    }
    Ok(())
}

fn held(
    tx: &Db,
    orders: &mut OrderSet,
    order: &OrderRecord,
    check: Check,
    event: &Envelope,
    messaging: &Messaging,
) -> Result<(), DbError> {
    orders.set_check(&order.id, check, "held");
    let (balance, stock) = match check {
        Check::Balance => (Some("held"), order.stock_check.as_deref()),
        Check::Stock => (order.balance_check.as_deref(), Some("held")),
    };
    if order.status != OrderStatus::Placed || balance != Some("held") || stock != Some("held") {
        return Ok(());
    }
    if let Ok(next) = transition(order.status, OrderAction::Confirm) {
        orders.set_status(&order.id, next, None, now_ms());
        let data = json!({"order_id": order.id, "customer": order.customer, "total_cents": order.total_cents});
        messaging.publish(
            tx,
            event_types::ORDER_CONFIRMED,
            &order.id,
            &event.correlation_id,
            data,
            &CHECKERS,
        )?;
    }
    Ok(())
}

/// Rejects a placed order (first reason wins) and tells both checkers to release.
fn reject(
    tx: &Db,
    orders: &mut OrderSet,
    order: &OrderRecord,
    reason: &str,
    correlation_id: &str,
    messaging: &Messaging,
) -> Result<(), DbError> {
    let Ok(next) = transition(order.status, OrderAction::Reject) else {
        return Ok(());
    };
    orders.set_status(&order.id, next, Some(reason), now_ms());
    let data = json!({"order_id": order.id, "customer": order.customer, "reason": reason});
    messaging.publish(
        tx,
        event_types::ORDER_REJECTED,
        &order.id,
        correlation_id,
        data,
        &CHECKERS,
    )?;
    Ok(())
}

/// Asks the checkers that have not answered by the deadline again, up to
/// `check_resends` times, waiting longer after each question ([`checks_deadline`]), then
/// rejects the order with `checks_timed_out`. While the last
/// question is still being retried by the outbox (the checker or the transport is away),
/// the deadline moves on instead: only a checker silent after it was asked counts.
pub fn time_out_checks(env: &Env, messaging: &Messaging) -> Result<(), DbError> {
    let db = Db::new(env.sql);
    let timeout = settings::number(env.config, "check_timeout_ms", 30_000u64);
    let max_resends = settings::number(env.config, "check_resends", 2i64);
    for overdue in queries::overdue(&db, now_ms(), TICK_BATCH)? {
        db.transaction(|tx| {
            // Re-read inside the transaction: another instance may have handled it.
            let mut orders = OrderSet::load(tx, &[&overdue.id])?;
            let Some(order) = orders.get(&overdue.id).cloned() else {
                return Ok(());
            };
            let now = now_ms();
            if order.status != OrderStatus::Placed || order.checks_deadline > now {
                return Ok(());
            }
            let placed: Envelope =
                serde_json::from_str(&order.placed_event).map_err(|e| DbError(e.to_string()))?;
            let silent: Vec<&str> = [
                (order.balance_check.as_ref(), CHECKERS[0]),
                (order.stock_check.as_ref(), CHECKERS[1]),
            ]
            .into_iter()
            .filter(|(answer, _)| answer.is_none())
            .map(|(_, checker)| checker)
            .collect();
            let mut on_its_way = false;
            for checker in &silent {
                on_its_way |= messaging.is_retrying(tx, &placed.id, checker)?;
            }
            if on_its_way {
                // The last question has not reached a checker yet (its delivery failed and
                // is retried): the checker has not been silent, so the clock starts again.
                let deadline = checks_deadline(now, timeout, order.check_resends);
                queries::set_deadline(tx, &order.id, deadline)?;
            } else if order.check_resends < max_resends {
                let resends = order.check_resends + 1;
                // A new event asks again: a checker that already decided answers once more,
                // so a lost answer is recovered as well as a lost question.
                let asked = messaging.publish(
                    tx,
                    event_types::ORDER_PLACED,
                    &order.id,
                    &order.correlation_id,
                    placed.data,
                    &silent,
                )?;
                let deadline = checks_deadline(now, timeout, resends);
                queries::set_asked_again(tx, &order.id, &asked, resends, deadline)?;
                log::write(
                    Level::Warn,
                    "orders",
                    &order.correlation_id,
                    &format!("checks of {} re-sent ({resends})", order.id),
                );
            } else {
                let reason = RejectReason::ChecksTimedOut.to_string();
                reject(
                    tx,
                    &mut orders,
                    &order,
                    &reason,
                    &order.correlation_id,
                    messaging,
                )?;
                orders.save(tx, now)?;
                log::write(
                    Level::Warn,
                    "orders",
                    &order.correlation_id,
                    &format!("order {} timed out", order.id),
                );
            }
            Ok::<_, DbError>(())
        })?;
    }
    Ok(())
}

/// When the checkers' answers are due, at `now`, for an order asked again `resends` times:
/// [`shop_domain::order::check_wait_ms`] after its latest question.
pub fn checks_deadline(now: i64, timeout_ms: u64, resends: i64) -> i64 {
    let asked = u32::try_from(resends.saturating_add(1)).unwrap_or(u32::MAX);
    let wait = shop_domain::order::check_wait_ms(timeout_ms, asked);
    now.saturating_add(i64::try_from(wait).unwrap_or(i64::MAX))
}
