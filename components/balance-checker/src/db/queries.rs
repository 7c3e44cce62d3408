//! Reads and writes of accounts and credit holds.

use serde::Serialize;
use service_kit::db::{Db, DbError};

/// A customer's credit as the API shows it.
#[derive(Debug, Serialize)]
pub struct AccountView {
    /// Customer email.
    pub customer: String,
    /// Credit free to spend now.
    pub balance_cents: i64,
    /// Credit held for orders being checked.
    pub held_cents: i64,
}

/// The full account row.
#[derive(Debug)]
pub struct Account {
    /// Free credit.
    pub balance_cents: i64,
    /// Held credit.
    pub held_cents: i64,
    /// Credit spent on confirmed orders.
    pub spent_cents: i64,
    /// All credit ever added.
    pub credited_cents: i64,
}

/// A hold's state and amount.
#[derive(Debug)]
pub struct Hold {
    /// Customer whose credit it holds.
    pub customer: String,
    /// Amount held.
    pub amount_cents: i64,
    /// "held", "committed", "released" or "rejected".
    pub state: String,
}

/// The account of `customer` (all zero when it never got credit).
pub fn account(db: &Db, customer: &str) -> Result<Account, DbError> {
    let row = db.query_opt(
        "SELECT balance_cents, held_cents, spent_cents, credited_cents FROM accounts WHERE customer = $1",
        &[customer.into()],
    )?;
    Ok(match row {
        Some(row) => Account {
            balance_cents: row.i64("balance_cents")?,
            held_cents: row.i64("held_cents")?,
            spent_cents: row.i64("spent_cents")?,
            credited_cents: row.i64("credited_cents")?,
        },
        None => Account {
            balance_cents: 0,
            held_cents: 0,
            spent_cents: 0,
            credited_cents: 0,
        },
    })
}

/// Writes an account row.
pub fn save_account(tx: &Db, customer: &str, account: &Account, now: i64) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO accounts (customer, balance_cents, held_cents, spent_cents, credited_cents, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (customer) DO UPDATE SET balance_cents = $2, held_cents = $3, \
         spent_cents = $4, credited_cents = $5, updated_at = $6",
        &[
            customer.into(),
            account.balance_cents.into(),
            account.held_cents.into(),
            account.spent_cents.into(),
            account.credited_cents.into(),
            now.into(),
        ],
    )
}

/// The hold of `order_id`, if the order was seen.
pub fn hold(db: &Db, order_id: &str) -> Result<Option<Hold>, DbError> {
    db.query_opt(
        "SELECT customer, amount_cents, state FROM credit_holds WHERE order_id = $1",
        &[order_id.into()],
    )?
    .map(|row| {
        Ok(Hold {
            customer: row.text("customer")?,
            amount_cents: row.i64("amount_cents")?,
            state: row.text("state")?,
        })
    })
    .transpose()
}

/// Writes the hold of `order_id`.
pub fn save_hold(tx: &Db, order_id: &str, hold: &Hold, now: i64) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO credit_holds (order_id, customer, amount_cents, state, updated_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (order_id) DO UPDATE SET state = $4, updated_at = $5",
        &[order_id.into(), hold.customer.as_str().into(), hold.amount_cents.into(), hold.state.as_str().into(), now.into()],
    )
}

/// The request a credit's idempotency key was first used with, if it was.
pub fn find_credit_key(db: &Db, scoped_key: &str) -> Result<Option<String>, DbError> {
    db.query_opt(
        "SELECT request FROM credit_idempotency_keys WHERE scoped_key = $1",
        &[scoped_key.into()],
    )?
    .map(|row| row.text("request"))
    .transpose()
}

/// Stores a credit's idempotency key with the request it answered.
pub fn insert_credit_key(
    tx: &Db,
    scoped_key: &str,
    request: &str,
    now: i64,
) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO credit_idempotency_keys (scoped_key, request, created_at) VALUES ($1, $2, $3)",
        &[scoped_key.into(), request.into(), now.into()],
    )
}
