//! The orders database: schema migrations and queries.

pub mod migrations;
pub mod queries;
