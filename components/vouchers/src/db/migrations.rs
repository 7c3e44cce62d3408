//! The vouchers schema, as versioned migration files.

use service_kit::db::Migration;

/// Every migration of the vouchers service, in order.
pub fn all() -> Vec<Migration> {
    vec![Migration::new(
        1,
        "init",
        include_str!("../../migrations/0001_init.sql"),
    )]
}
