//! The orders schema, as versioned migration files.

use service_kit::db::Migration;

/// Every migration of the orders service, in order.
pub fn all() -> Vec<Migration> {
    vec![
        Migration::new(1, "init", include_str!("../../migrations/0001_init.sql")),
        Migration::new(
            2,
            "order_events",
            include_str!("../../migrations/0002_order_events.sql"),
        ),
        Migration::per_dialect(
            3,
            "accept_in_one_statement",
            include_str!("../../migrations/0003_accept_in_one_statement.sql"),
            include_str!("../../migrations/0003_accept_in_one_statement.postgres.sql"),
        ),
    ]
}
