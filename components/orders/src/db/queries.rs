//! Reads and writes of the orders tables.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;
use serde_json::Value;
use service_kit::SqlValue;
use service_kit::db::{Db, DbError, Row};
use service_kit::sql_text::{typed_value_rows, value_rows};
use shop_domain::envelope::Envelope;
use shop_domain::order::OrderStatus;
use shop_domain::time::rfc3339_from_millis;

/// Which checker's answer a column holds.
#[derive(Debug, Clone, Copy)]
pub enum Check {
    /// balance-checker's answer.
    Balance,
    /// stock-checker's answer.
    Stock,
}

/// An order row.
#[derive(Debug, Clone)]
pub struct OrderRecord {
    /// Order id.
    pub id: String,
    /// Customer email.
    pub customer: String,
    /// Priced lines as JSON text.
    pub items: String,
    /// Total in cents.
    pub total_cents: i64,
    /// Current status.
    pub status: OrderStatus,
    /// Rejection reason.
    pub reason: Option<String>,
    /// "held" or "rejected" once balance-checker answered.
    pub balance_check: Option<String>,
    /// "held" or "rejected" once stock-checker answered.
    pub stock_check: Option<String>,
    /// When the checks time out (ms).
    pub checks_deadline: i64,
    /// Re-sends of `order.placed` so far.
    pub check_resends: i64,
    /// The last signed `order.placed` envelope sent for it: when placed, or when the checks
    /// were asked again.
    pub placed_event: String,
    /// The voucher issued for it, as JSON text.
    pub voucher: Option<String>,
    /// Correlation id of the request that placed it.
    pub correlation_id: String,
    /// Creation time (ms).
    pub created_at: i64,
}

/// One entry of an order's status history.
#[derive(Debug, Serialize)]
pub struct HistoryEntry {
    /// Status entered.
    pub status: String,
    /// When (RFC 3339).
    pub at: String,
}

/// The API representation of an order.
#[derive(Debug, Serialize)]
pub struct OrderView {
    /// Order id.
    pub id: String,
    /// Customer email.
    pub customer: String,
    /// Lines with their unit prices.
    pub items: Value,
    /// Total in cents.
    pub total_cents: i64,
    /// Current status.
    pub status: &'static str,
    /// Rejection reason, if rejected.
    pub reason: Option<String>,
    /// Every status the order went through.
    pub history: Vec<HistoryEntry>,
    /// The voucher issued for it.
    pub voucher: Option<Value>,
    /// Creation time (RFC 3339).
    pub created_at: String,
}

const COLUMNS: &str = "id, customer, items, total_cents, status, reason, balance_check, stock_check, checks_deadline, \
                       check_resends, placed_event, voucher, correlation_id, created_at";

fn record(row: &Row) -> Result<OrderRecord, DbError> {
    let status = row.text("status")?;
    Ok(OrderRecord {
        id: row.text("id")?,
        customer: row.text("customer")?,
        items: row.text("items")?,
        total_cents: row.i64("total_cents")?,
        status: OrderStatus::parse(&status)
            .ok_or_else(|| DbError(format!("unknown status {status}")))?,
        reason: row.opt_text("reason")?,
        balance_check: row.opt_text("balance_check")?,
        stock_check: row.opt_text("stock_check")?,
        checks_deadline: row.i64("checks_deadline")?,
        check_resends: row.i64("check_resends")?,
        placed_event: row.text("placed_event")?,
        voucher: row.opt_text("voucher")?,
        correlation_id: row.text("correlation_id")?,
        created_at: row.i64("created_at")?,
    })
}

/// The order with `id`.
pub fn load(db: &Db, id: &str) -> Result<Option<OrderRecord>, DbError> {
    db.query_opt(
        &format!("SELECT {COLUMNS} FROM orders WHERE id = $1"),
        &[id.into()],
    )?
    .map(|row| record(&row))
    .transpose()
}

/// The API view of an order, with its history.
pub fn view(db: &Db, order: &OrderRecord) -> Result<OrderView, DbError> {
    let history: Vec<HistoryEntry> = db
        .query(
            "SELECT status, at FROM order_history WHERE order_id = $1 ORDER BY seq",
            &[order.id.as_str().into()],
        )?
        .iter()
        .map(|row| {
            Ok(HistoryEntry {
                status: row.text("status")?,
                at: rfc3339_from_millis(row.i64("at")?),
            })
        })
        .collect::<Result<_, DbError>>()?;
    Ok(view_with(order, history))
}

/// The API view of an order with the given history (no database read: for answers
/// computed inside a transaction after its writes).
pub fn view_with(order: &OrderRecord, history: Vec<HistoryEntry>) -> OrderView {
    OrderView {
        id: order.id.clone(),
        customer: order.customer.clone(),
        items: serde_json::from_str(&order.items).unwrap_or(Value::Array(Vec::new())),
        total_cents: order.total_cents,
        status: order.status.as_str(),
        reason: order.reason.clone(),
        history,
        voucher: order
            .voucher
            .as_deref()
            .and_then(|v| serde_json::from_str(v).ok()),
        created_at: rfc3339_from_millis(order.created_at),
    }
}

/// The idempotency key an order was placed under, and the request it answered.
pub struct IdempotencyKey<'k> {
    /// The client's key, scoped to its caller.
    pub scoped_key: &'k str,
    /// The request placed under it, in canonical form.
    pub request: &'k str,
}

/// Stores a new order in status `placed`, under `key` when the client gave one, in one
/// statement: the schema's trigger writes its first history entry and its `order.placed`
/// outbox rows (migration 3). Fails when `key` is taken (the caller replays it) and, on
/// SQLite, when the write lock is not had within the connection's lock wait.
pub fn insert(db: &Db, order: &OrderRecord, key: Option<&IdempotencyKey>) -> Result<(), DbError> {
    db.execute(
        &format!("INSERT INTO orders ({COLUMNS}, updated_at, idempotency_key, idempotent_request) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, $15, $16)"),
        &[
            order.id.as_str().into(),
            order.customer.as_str().into(),
            order.items.as_str().into(),
            order.total_cents.into(),
            order.status.as_str().into(),
            order.reason.clone().into(),
            order.balance_check.clone().into(),
            order.stock_check.clone().into(),
            order.checks_deadline.into(),
            order.check_resends.into(),
            order.placed_event.as_str().into(),
            order.voucher.clone().into(),
            order.correlation_id.as_str().into(),
            order.created_at.into(),
            key.map(|k| k.scoped_key.to_owned()).into(),
            key.map(|k| k.request.to_owned()).into(),
        ],
    )
}

/// One status change, as live tracking sends it.
#[derive(Debug, Clone)]
pub struct StatusEvent {
    /// Its place in the global order of status changes (the SSE id).
    pub event_id: i64,
    /// The order that changed.
    pub order_id: String,
    /// Its place in that order's history.
    pub seq: i64,
}

/// How many history rows one assignment numbers at most.
const ASSIGN_BATCH: i64 = 500;

/// Gives committed history rows that have no event id the next ids, in the order they
/// happened (each order's rows in history order). Runs in its own transaction; a concurrent
/// assignment makes one of them conflict and run again. Returns how many rows it numbered.
pub fn assign_event_ids(db: &Db) -> Result<usize, DbError> {
    db.transaction(|tx| {
        let next = tx
            .query_opt(
                "SELECT COALESCE(MAX(event_id), 0) AS last FROM order_history",
                &[],
            )?
            .map_or(Ok(0), |row| row.i64("last"))?
            + 1;
        let pending = tx
            .query(
                "SELECT order_id, seq, at FROM order_history WHERE event_id IS NULL \
                 ORDER BY at, order_id, seq LIMIT $1",
                &[ASSIGN_BATCH.into()],
            )?
            .iter()
            .map(|row| Ok((row.text("order_id")?, row.i64("seq")?, row.i64("at")?)))
            .collect::<Result<Vec<_>, DbError>>()?;
        let ordered = shop_domain::order::in_history_order(pending);
        for (id, (order_id, seq)) in (next..).zip(&ordered) {
            tx.execute(
                "UPDATE order_history SET event_id = $1 WHERE order_id = $2 AND seq = $3",
                &[id.into(), order_id.as_str().into(), (*seq).into()],
            )?;
        }
        Ok(ordered.len())
    })
}

/// Status changes after `after` (of one order, or of all), oldest first.
pub fn events_after(
    db: &Db,
    order_id: Option<&str>,
    after: i64,
    limit: i64,
) -> Result<Vec<StatusEvent>, DbError> {
    db.query(
        "SELECT event_id, order_id, seq FROM order_history \
         WHERE event_id > $1 AND (CAST($2 AS TEXT) IS NULL OR order_id = $2) ORDER BY event_id LIMIT $3",
        &[after.into(), order_id.map(str::to_owned).into(), limit.into()],
    )?
    .iter()
    .map(|row| {
        Ok(StatusEvent {
            event_id: row.i64("event_id")?,
            order_id: row.text("order_id")?,
            seq: row.i64("seq")?,
        })
    })
    .collect()
}

/// The latest status change (of one order, or of all); `None` before the first.
pub fn latest_event(db: &Db, order_id: Option<&str>) -> Result<Option<StatusEvent>, DbError> {
    let row = db.query_opt(
        "SELECT event_id, order_id, seq FROM order_history \
         WHERE event_id IS NOT NULL AND (CAST($1 AS TEXT) IS NULL OR order_id = $1) ORDER BY event_id DESC LIMIT 1",
        &[order_id.map(str::to_owned).into()],
    )?;
    row.map(|row| {
        Ok(StatusEvent {
            event_id: row.i64("event_id")?,
            order_id: row.text("order_id")?,
            seq: row.i64("seq")?,
        })
    })
    .transpose()
}

/// The API view of `order` as it was right after history entry `seq`.
pub fn view_as_of(db: &Db, order: &OrderRecord, seq: i64) -> Result<OrderView, DbError> {
    let mut view = view(db, order)?;
    view.history.truncate(usize::try_from(seq).unwrap_or(0));
    if let Some(status) = view
        .history
        .last()
        .and_then(|entry| OrderStatus::parse(&entry.status))
    {
        view.status = status.as_str();
    }
    Ok(view)
}

/// Records that the checks were asked again with event `asked`, and the new deadline.
pub fn set_asked_again(
    tx: &Db,
    id: &str,
    asked: &Envelope,
    resends: i64,
    deadline: i64,
) -> Result<(), DbError> {
    let asked = serde_json::to_string(asked).map_err(|e| DbError(e.to_string()))?;
    tx.execute(
        "UPDATE orders SET placed_event = $1, check_resends = $2, checks_deadline = $3 WHERE id = $4",
        &[asked.into(), resends.into(), deadline.into(), id.into()],
    )
}

/// Moves the checks' deadline of order `id`.
pub fn set_deadline(tx: &Db, id: &str, deadline: i64) -> Result<(), DbError> {
    tx.execute(
        "UPDATE orders SET checks_deadline = $1 WHERE id = $2",
        &[deadline.into(), id.into()],
    )
}

/// Orders still waiting for checks whose deadline passed.
pub fn overdue(db: &Db, now: i64, limit: i64) -> Result<Vec<OrderRecord>, DbError> {
    db.query(
        &format!("SELECT {COLUMNS} FROM orders WHERE status = 'placed' AND checks_deadline <= $1 ORDER BY checks_deadline LIMIT $2"),
        &[now.into(), limit.into()],
    )?
    .iter()
    .map(record)
    .collect()
}

/// A page of orders, oldest first, after the `(created_at, id)` position `after`.
pub fn list(
    db: &Db,
    customer: Option<&str>,
    status: Option<OrderStatus>,
    after: Option<(i64, String)>,
    limit: u32,
) -> Result<Vec<OrderRecord>, DbError> {
    // Before every order: `created_at` is never negative and ids are never empty. (Not
    // i64::MIN: wasmCloud's wRPC cannot carry an s64 below -2^62.)
    let (after_at, after_id) = after.unwrap_or((-1, String::new()));
    db.query(
        &format!(
            "SELECT {COLUMNS} FROM orders WHERE (CAST($1 AS TEXT) IS NULL OR customer = $1) AND (CAST($2 AS TEXT) IS NULL OR status = $2) \
             AND (created_at > $3 OR (created_at = $3 AND id > $4)) ORDER BY created_at, id LIMIT $5"
        ),
        &[
            customer.map(str::to_owned).into(),
            status.map(|s| s.as_str().to_owned()).into(),
            after_at.into(),
            after_id.into(),
            SqlValue::Integer(i64::from(limit)),
        ],
    )?
    .iter()
    .map(record)
    .collect()
}

/// The request and order stored under an idempotency key.
pub fn find_idempotency_key(
    db: &Db,
    scoped_key: &str,
) -> Result<Option<(String, String)>, DbError> {
    db.query_opt(
        "SELECT idempotent_request, id FROM orders WHERE idempotency_key = $1",
        &[scoped_key.into()],
    )?
    .map(|row| Ok((row.text("idempotent_request")?, row.text("id")?)))
    .transpose()
}

/// The orders one batch of events (or one request) reads and changes: read in one
/// statement ([`OrderSet::load`]), changed in memory, written back in two
/// ([`OrderSet::save`]: the rows, and the history entries of the status changes), so that a
/// batch holds the write lock for a few host calls whatever its size.
#[derive(Default)]
pub struct OrderSet {
    orders: HashMap<String, OrderRecord>,
    /// Each loaded order's last history entry.
    last_seq: HashMap<String, i64>,
    changed: BTreeSet<String>,
    /// New history entries: order, seq, status, when.
    history: Vec<(String, i64, OrderStatus, i64)>,
}

impl OrderSet {
    /// Reads the orders with `ids` (unknown ids are left out).
    pub fn load(db: &Db, ids: &[&str]) -> Result<OrderSet, DbError> {
        let mut set = OrderSet::default();
        let rows = db.query_in(
            &format!(
                "SELECT {COLUMNS}, (SELECT COALESCE(MAX(seq), 0) FROM order_history h WHERE h.order_id = orders.id) \
                 AS last_seq FROM orders WHERE id IN"
            ),
            ids,
        )?;
        for row in &rows {
            let order = record(row)?;
            set.last_seq.insert(order.id.clone(), row.i64("last_seq")?);
            set.orders.insert(order.id.clone(), order);
        }
        Ok(set)
    }

    /// The order with `id` as this set has it now.
    pub fn get(&self, id: &str) -> Option<&OrderRecord> {
        self.orders.get(id)
    }

    fn change(&mut self, id: &str) -> Option<&mut OrderRecord> {
        let order = self.orders.get_mut(id)?;
        self.changed.insert(id.to_owned());
        Some(order)
    }

    /// Records a checker's answer ("held" or "rejected").
    pub fn set_check(&mut self, id: &str, check: Check, answer: &str) {
        if let Some(order) = self.change(id) {
            let column = match check {
                Check::Balance => &mut order.balance_check,
                Check::Stock => &mut order.stock_check,
            };
            *column = Some(answer.to_owned());
        }
    }

    /// Moves an order to `status` (with `reason` for rejections) and records it in the
    /// history, at `now`.
    pub fn set_status(&mut self, id: &str, status: OrderStatus, reason: Option<&str>, now: i64) {
        let Some(order) = self.change(id) else {
            return;
        };
        order.status = status;
        if let Some(reason) = reason {
            order.reason = Some(reason.to_owned());
        }
        let seq = self.last_seq.entry(id.to_owned()).or_default();
        *seq += 1;
        self.history.push((id.to_owned(), *seq, status, now));
    }

    /// Attaches the issued voucher.
    pub fn set_voucher(&mut self, id: &str, voucher: &Value) {
        if let Some(order) = self.change(id) {
            order.voucher = Some(voucher.to_string());
        }
    }

    /// Writes the changed orders (one statement) and their new history entries (one more).
    pub fn save(&self, tx: &Db, now: i64) -> Result<(), DbError> {
        if !self.changed.is_empty() {
            let mut params: Vec<SqlValue> = Vec::with_capacity(self.changed.len() * 6 + 1);
            params.push(now.into());
            for id in &self.changed {
                let order = &self.orders[id];
                params.extend([
                    id.as_str().into(),
                    order.status.as_str().into(),
                    order.reason.clone().into(),
                    order.balance_check.clone().into(),
                    order.stock_check.clone().into(),
                    order.voucher.clone().into(),
                ]);
            }
            tx.execute(
                &format!(
                    "UPDATE orders SET status = changed.status, reason = changed.reason, \
                     balance_check = changed.balance_check, stock_check = changed.stock_check, \
                     voucher = changed.voucher, updated_at = $1 FROM (SELECT column1 AS id, column2 AS status, \
                     column3 AS reason, column4 AS balance_check, column5 AS stock_check, column6 AS voucher \
                     FROM (VALUES {}) AS v) AS changed WHERE orders.id = changed.id",
                    typed_value_rows(2, self.changed.len(), &["TEXT"; 6])
                ),
                &params,
            )?;
        }
        if !self.history.is_empty() {
            let params: Vec<SqlValue> = self
                .history
                .iter()
                .flat_map(|(id, seq, status, at)| {
                    [
                        id.as_str().into(),
                        (*seq).into(),
                        status.as_str().into(),
                        (*at).into(),
                    ]
                })
                .collect();
            tx.execute(
                &format!(
                    "INSERT INTO order_history (order_id, seq, status, at) VALUES {}",
                    value_rows(self.history.len(), 4)
                ),
                &params,
            )?;
        }
        Ok(())
    }
}
