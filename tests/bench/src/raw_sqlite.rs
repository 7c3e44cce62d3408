//! The baseline of the end-to-end figure: how many insert-and-commit transactions one
//! connection gets through on a SQLite file with the settings the shop's database runs
//! with on the test host (rusqlite's defaults, `journal_mode=WAL` as the migrations set it,
//! `synchronous=NORMAL` as every service connection sets it).

use anyhow::Result;
use std::path::Path;
use std::time::{Duration, Instant};

/// Commits `count` single-row transactions to a fresh `raw.db` in `dir`; returns the time
/// they took.
pub fn insert_and_commit_loop(dir: &Path, count: usize) -> Result<Duration> {
    let mut conn = rusqlite::Connection::open(dir.join("raw.db"))?;
    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
    conn.execute_batch("PRAGMA synchronous=NORMAL")?;
    conn.execute_batch(
        "CREATE TABLE orders (id TEXT PRIMARY KEY, customer TEXT NOT NULL, items TEXT NOT NULL, \
         total_cents BIGINT NOT NULL, status TEXT NOT NULL, created_at BIGINT NOT NULL)",
    )?;
    let started = Instant::now();
    for index in 0..count {
        let tx = conn.transaction()?;
        tx.prepare_cached(
            "INSERT INTO orders (id, customer, items, total_cents, status, created_at) \
             VALUES (?1, ?2, ?3, ?4, 'placed', ?5)",
        )?
        .execute(rusqlite::params![
            format!("ord_{index:012}"),
            "bench0@example.com",
            r#"[{"sku":"BENCH-1","quantity":1,"price_cents":100}]"#,
            100,
            index as i64,
        ])?;
        tx.commit()?;
    }
    Ok(started.elapsed())
}
