//! Reads and writes of products and stock holds.

use serde::{Deserialize, Serialize};
use service_kit::db::{Db, DbError, Row};

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

/// Moves `quantity` units: `stock += free_delta`, `reserved += reserved_delta`, `sold += sold_delta`.
pub fn adjust(
    tx: &Db,
    sku: &str,
    free_delta: i64,
    reserved_delta: i64,
    sold_delta: i64,
    now: i64,
) -> Result<(), DbError> {
    tx.execute(
        "UPDATE products SET stock = stock + $1, reserved = reserved + $2, sold = sold + $3, updated_at = $4 WHERE sku = $5",
        &[free_delta.into(), reserved_delta.into(), sold_delta.into(), now.into(), sku.into()],
    )
}

/// The stock held for one order.
pub struct StockHold {
    /// The lines held ("held", "committed"); none for other states.
    pub lines: Vec<HeldLine>,
    /// "held", "committed", "released" or "rejected".
    pub state: String,
    /// Why the check was rejected (`out_of_stock: <sku>`), for "rejected".
    pub reason: Option<String>,
}

/// The hold of `order_id`.
pub fn hold(db: &Db, order_id: &str) -> Result<Option<StockHold>, DbError> {
    db.query_opt(
        "SELECT items, state, reason FROM stock_holds WHERE order_id = $1",
        &[order_id.into()],
    )?
    .map(|row| {
        Ok(StockHold {
            lines: serde_json::from_str(&row.text("items")?).map_err(|e| DbError(e.to_string()))?,
            state: row.text("state")?,
            reason: row.opt_text("reason")?,
        })
    })
    .transpose()
}

/// Writes the hold of `order_id` (its lines and reason only when it is new).
pub fn save_hold(tx: &Db, order_id: &str, hold: &StockHold, now: i64) -> Result<(), DbError> {
    let items = serde_json::to_string(&hold.lines).map_err(|e| DbError(e.to_string()))?;
    tx.execute(
        "INSERT INTO stock_holds (order_id, items, state, reason, updated_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (order_id) DO UPDATE SET state = $3, updated_at = $5",
        &[
            order_id.into(),
            items.into(),
            hold.state.as_str().into(),
            hold.reason.clone().into(),
            now.into(),
        ],
    )
}
