//! The stock-checker schema, as versioned migration files.

use service_kit::db::Migration;

/// Every migration of the stock-checker service, in order.
pub fn all() -> Vec<Migration> {
    vec![
        Migration::new(1, "init", include_str!("../../migrations/0001_init.sql")),
        Migration::new(
            2,
            "hold_reason",
            include_str!("../../migrations/0002_hold_reason.sql"),
        ),
        Migration::new(
            3,
            "stock_never_negative",
            include_str!("../../migrations/0003_stock_never_negative.sql"),
        ),
    ]
}
