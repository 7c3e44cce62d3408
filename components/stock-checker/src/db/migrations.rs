//! The stock-checker schema, as versioned migration files.

use std::borrow::Cow;

use service_kit::db::Migration;

/// Every migration of the stock-checker service, in order.
pub fn all() -> Vec<Migration> {
    vec![Migration {
        version: 1,
        name: "init",
        sql: Cow::Borrowed(include_str!("../../migrations/0001_init.sql")),
    }]
}
