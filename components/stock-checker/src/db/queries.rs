//! Reads and writes of products and stock holds.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use service_kit::SqlValue;
use service_kit::db::{Db, DbError, Row};
use service_kit::sql_text::{typed_value_rows, value_rows};

/// A product as the API shows it.
#[derive(Debug, Serialize)]
pub struct Product {
    /// Stock keeping unit.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Unit price in cents.
    pub price_cents: i64,
    /// Units free to sell now.
    pub stock: i64,
    /// Units held for orders being checked.
    pub reserved: i64,
}

/// One line of a stock hold.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeldLine {
    /// Product.
    pub sku: String,
    /// Units held.
    pub quantity: i64,
}

const COLUMNS: &str = "sku, name, price_cents, stock, reserved";

fn product(row: &Row) -> Result<Product, DbError> {
    Ok(Product {
        sku: row.text("sku")?,
        name: row.text("name")?,
        price_cents: row.i64("price_cents")?,
        stock: row.i64("stock")?,
        reserved: row.i64("reserved")?,
    })
}

/// The product with `sku`.
pub fn find(db: &Db, sku: &str) -> Result<Option<Product>, DbError> {
    db.query_opt(
        &format!("SELECT {COLUMNS} FROM products WHERE sku = $1"),
        &[sku.into()],
    )?
    .map(|row| product(&row))
    .transpose()
}

/// A page of products ordered by sku, after `after`.
pub fn page(db: &Db, after: &str, limit: u32) -> Result<Vec<Product>, DbError> {
    db.query(
        &format!("SELECT {COLUMNS} FROM products WHERE sku > $1 ORDER BY sku LIMIT $2"),
        &[after.into(), i64::from(limit).into()],
    )?
    .iter()
    .map(product)
    .collect()
}

/// Creates a product or replaces its name, price and free stock (reservations stay).
pub fn upsert(
    tx: &Db,
    sku: &str,
    name: &str,
    price_cents: i64,
    stock: i64,
    now: i64,
) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO products (sku, name, price_cents, stock, reserved, sold, updated_at) VALUES ($1, $2, $3, $4, 0, 0, $5) \
         ON CONFLICT (sku) DO UPDATE SET name = $2, price_cents = $3, stock = $4, updated_at = $5",
        &[sku.into(), name.into(), price_cents.into(), stock.into(), now.into()],
    )
}

/// The stock held for one order.
#[derive(Debug, Clone)]
pub struct StockHold {
    /// The lines held ("held", "committed"); none for other states.
    pub lines: Vec<HeldLine>,
    /// "held", "committed", "released" or "rejected".
    pub state: String,
    /// Why the check was rejected (`out_of_stock: <sku>`), for "rejected".
    pub reason: Option<String>,
}

/// How one batch moves a product's units: free, reserved and sold.
#[derive(Debug, Clone, Copy, Default)]
struct Moved {
    free: i64,
    reserved: i64,
    sold: i64,
}

/// The holds and free stock one batch of events reads and changes: read in two statements
/// ([`Stockroom::load`]), changed in memory, written back in two ([`Stockroom::save`]), so
/// that a batch holds the write lock for a few host calls whatever its size.
#[derive(Default)]
pub struct Stockroom {
    holds: HashMap<String, StockHold>,
    changed_holds: BTreeMap<String, StockHold>,
    /// Free units per sku as read; a sku without a product has none.
    free: HashMap<String, i64>,
    moved: BTreeMap<String, Moved>,
}

impl Stockroom {
    /// Reads the holds of `order_ids`, and the free stock of `skus` and of those holds' lines.
    pub fn load(db: &Db, order_ids: &[&str], skus: &[&str]) -> Result<Stockroom, DbError> {
        let holds: HashMap<String, StockHold> = db
            .query_in(
                "SELECT order_id, items, state, reason FROM stock_holds WHERE order_id IN",
                order_ids,
            )?
            .iter()
            .map(|row| {
                Ok((
                    row.text("order_id")?,
                    StockHold {
                        lines: serde_json::from_str(&row.text("items")?)
                            .map_err(|e| DbError(e.to_string()))?,
                        state: row.text("state")?,
                        reason: row.opt_text("reason")?,
                    },
                ))
            })
            .collect::<Result<_, DbError>>()?;
        let mut wanted: Vec<String> = skus.iter().map(|sku| (*sku).to_owned()).collect();
        wanted.extend(
            holds
                .values()
                .flat_map(|hold| hold.lines.iter().map(|l| l.sku.clone())),
        );
        wanted.sort_unstable();
        wanted.dedup();
        let mut stockroom = Stockroom {
            holds,
            ..Stockroom::default()
        };
        stockroom.read_free(db, &wanted.iter().map(String::as_str).collect::<Vec<_>>())?;
        Ok(stockroom)
    }

    fn read_free(&mut self, db: &Db, skus: &[&str]) -> Result<(), DbError> {
        for sku in skus {
            self.free.insert((*sku).to_owned(), 0);
        }
        for row in db.query_in("SELECT sku, stock FROM products WHERE sku IN", skus)? {
            self.free.insert(row.text("sku")?, row.i64("stock")?);
        }
        Ok(())
    }

    /// The hold of `order_id`, if the order was seen.
    pub fn hold(&self, order_id: &str) -> Option<StockHold> {
        self.changed_holds
            .get(order_id)
            .or_else(|| self.holds.get(order_id))
            .cloned()
    }

    /// Changes the hold of `order_id` (its lines and reason are kept only when it is new).
    pub fn set_hold(&mut self, order_id: &str, hold: StockHold) {
        self.changed_holds.insert(order_id.to_owned(), hold);
    }

    /// Units of `sku` free now (read now if [`Stockroom::load`] did not).
    pub fn free(&mut self, db: &Db, sku: &str) -> Result<i64, DbError> {
        if !self.free.contains_key(sku) {
            self.read_free(db, &[sku])?;
        }
        let moved = self.moved.get(sku).map_or(0, |m| m.free);
        Ok(self.free[sku] + moved)
    }

    /// Moves units of `sku`: `free`, `reserved` and `sold` change by these amounts.
    pub fn adjust(&mut self, sku: &str, free: i64, reserved: i64, sold: i64) {
        let moved = self.moved.entry(sku.to_owned()).or_default();
        moved.free += free;
        moved.reserved += reserved;
        moved.sold += sold;
    }

    /// Writes every moved product and changed hold: one statement each.
    pub fn save(&self, tx: &Db, now: i64) -> Result<(), DbError> {
        if !self.moved.is_empty() {
            let params: Vec<SqlValue> = std::iter::once(now.into())
                .chain(self.moved.iter().flat_map(|(sku, moved)| {
                    [
                        sku.as_str().into(),
                        moved.free.into(),
                        moved.reserved.into(),
                        moved.sold.into(),
                    ]
                }))
                .collect();
            tx.execute(
                &format!(
                    "UPDATE products SET stock = products.stock + moved.free, \
                     reserved = products.reserved + moved.reserved, sold = products.sold + moved.sold, \
                     updated_at = $1 FROM (SELECT column1 AS sku, column2 AS free, column3 AS reserved, \
                     column4 AS sold FROM (VALUES {}) AS v) AS moved WHERE products.sku = moved.sku",
                    typed_value_rows(2, self.moved.len(), &["TEXT", "BIGINT", "BIGINT", "BIGINT"])
                ),
                &params,
            )?;
        }
        if !self.changed_holds.is_empty() {
            let mut params: Vec<SqlValue> = Vec::with_capacity(self.changed_holds.len() * 5);
            for (order_id, hold) in &self.changed_holds {
                let items =
                    serde_json::to_string(&hold.lines).map_err(|e| DbError(e.to_string()))?;
                params.extend([
                    order_id.as_str().into(),
                    items.into(),
                    hold.state.as_str().into(),
                    hold.reason.clone().into(),
                    now.into(),
                ]);
            }
            tx.execute(
                &format!(
                    "INSERT INTO stock_holds (order_id, items, state, reason, updated_at) VALUES {} \
                     ON CONFLICT (order_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                    value_rows(self.changed_holds.len(), 5)
                ),
                &params,
            )?;
        }
        Ok(())
    }
}
