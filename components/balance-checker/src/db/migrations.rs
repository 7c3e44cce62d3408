//! The balance-checker schema, as versioned migration files.

use service_kit::db::Migration;

/// Every migration of the balance-checker service, in order.
pub fn all() -> Vec<Migration> {
    vec![
        Migration::new(1, "init", include_str!("../../migrations/0001_init.sql")),
        Migration::new(
            2,
            "credit_never_negative",
            include_str!("../../migrations/0002_credit_never_negative.sql"),
        ),
        Migration::new(
            3,
            "credit_idempotency_keys",
            include_str!("../../migrations/0003_credit_idempotency_keys.sql"),
        ),
    ]
}
