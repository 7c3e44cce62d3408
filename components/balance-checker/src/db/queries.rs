//! Reads and writes of accounts and credit holds.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use service_kit::SqlValue;
use service_kit::db::{Db, DbError, Row};
use service_kit::sql_text::value_rows;

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
#[derive(Debug, Clone, Default)]
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
#[derive(Debug, Clone)]
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
    Ok(accounts(db, &[customer])?
        .remove(customer)
        .unwrap_or_default())
}

/// The accounts of `customers` that have a row, by customer.
fn accounts(db: &Db, customers: &[&str]) -> Result<HashMap<String, Account>, DbError> {
    db.query_in(
        "SELECT customer, balance_cents, held_cents, spent_cents, credited_cents FROM accounts \
         WHERE customer IN",
        customers,
    )?
    .iter()
    .map(|row| Ok((row.text("customer")?, account_of(row)?)))
    .collect()
}

fn account_of(row: &Row) -> Result<Account, DbError> {
    Ok(Account {
        balance_cents: row.i64("balance_cents")?,
        held_cents: row.i64("held_cents")?,
        spent_cents: row.i64("spent_cents")?,
        credited_cents: row.i64("credited_cents")?,
    })
}

/// The holds and accounts one batch of events reads and changes: read in two statements
/// ([`Ledger::load`]), changed in memory, written back in two ([`Ledger::save`]), so that
/// a batch holds the write lock for a few host calls whatever its size.
#[derive(Default)]
pub struct Ledger {
    holds: HashMap<String, Hold>,
    accounts: HashMap<String, Account>,
    changed_holds: BTreeMap<String, Hold>,
    changed_accounts: BTreeMap<String, Account>,
}

impl Ledger {
    /// Reads the holds of `order_ids`, and the accounts of `customers` and of those holds.
    pub fn load(db: &Db, order_ids: &[&str], customers: &[&str]) -> Result<Ledger, DbError> {
        let holds: HashMap<String, Hold> = db
            .query_in(
                "SELECT order_id, customer, amount_cents, state FROM credit_holds WHERE order_id IN",
                order_ids,
            )?
            .iter()
            .map(|row| {
                Ok((
                    row.text("order_id")?,
                    Hold {
                        customer: row.text("customer")?,
                        amount_cents: row.i64("amount_cents")?,
                        state: row.text("state")?,
                    },
                ))
            })
            .collect::<Result<_, DbError>>()?;
        let mut wanted: Vec<&str> = customers.to_vec();
        wanted.extend(holds.values().map(|hold| hold.customer.as_str()));
        wanted.sort_unstable();
        wanted.dedup();
        let accounts = accounts(db, &wanted)?;
        Ok(Ledger {
            holds,
            accounts,
            ..Ledger::default()
        })
    }

    /// The hold of `order_id`, if the order was seen.
    pub fn hold(&self, order_id: &str) -> Option<Hold> {
        self.changed_holds
            .get(order_id)
            .or_else(|| self.holds.get(order_id))
            .cloned()
    }

    /// Changes the hold of `order_id`.
    pub fn set_hold(&mut self, order_id: &str, hold: Hold) {
        self.changed_holds.insert(order_id.to_owned(), hold);
    }

    /// The account of `customer` (read now if [`Ledger::load`] did not).
    pub fn account(&mut self, db: &Db, customer: &str) -> Result<Account, DbError> {
        if let Some(account) = self.changed_accounts.get(customer) {
            return Ok(account.clone());
        }
        if !self.accounts.contains_key(customer) {
            let account = account(db, customer)?;
            self.accounts.insert(customer.to_owned(), account);
        }
        Ok(self.accounts[customer].clone())
    }

    /// Changes the account of `customer`.
    pub fn set_account(&mut self, customer: &str, account: Account) {
        self.changed_accounts.insert(customer.to_owned(), account);
    }

    /// Writes every changed account and hold: one statement each.
    pub fn save(&self, tx: &Db, now: i64) -> Result<(), DbError> {
        if !self.changed_accounts.is_empty() {
            let params: Vec<SqlValue> = self
                .changed_accounts
                .iter()
                .flat_map(|(customer, account)| {
                    [
                        customer.as_str().into(),
                        account.balance_cents.into(),
                        account.held_cents.into(),
                        account.spent_cents.into(),
                        account.credited_cents.into(),
                        now.into(),
                    ]
                })
                .collect();
            tx.execute(
                &format!(
                    "INSERT INTO accounts (customer, balance_cents, held_cents, spent_cents, credited_cents, updated_at) \
                     VALUES {} ON CONFLICT (customer) DO UPDATE SET balance_cents = excluded.balance_cents, \
                     held_cents = excluded.held_cents, spent_cents = excluded.spent_cents, \
                     credited_cents = excluded.credited_cents, updated_at = excluded.updated_at",
                    value_rows(self.changed_accounts.len(), 6)
                ),
                &params,
            )?;
        }
        if !self.changed_holds.is_empty() {
            let params: Vec<SqlValue> = self
                .changed_holds
                .iter()
                .flat_map(|(order_id, hold)| {
                    [
                        order_id.as_str().into(),
                        hold.customer.as_str().into(),
                        hold.amount_cents.into(),
                        hold.state.as_str().into(),
                        now.into(),
                    ]
                })
                .collect();
            tx.execute(
                &format!(
                    "INSERT INTO credit_holds (order_id, customer, amount_cents, state, updated_at) VALUES {} \
                     ON CONFLICT (order_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                    value_rows(self.changed_holds.len(), 5)
                ),
                &params,
            )?;
        }
        Ok(())
    }
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
