//! Client transactions on a real SQLite file (rusqlite): a write lock held elsewhere sheds
//! them within their wait, where a background transaction waits on.

mod support;

use std::time::{Duration, Instant};

use service_kit::db::{Db, DbError};
use support::Sqlite;

/// Two connections to one fresh database file with a table `t`.
fn two_connections() -> (tempfile::TempDir, rusqlite::Connection, Sqlite) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder
        .execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (x INTEGER)")
        .unwrap();
    let client = Sqlite(rusqlite::Connection::open(&path).unwrap());
    (dir, holder, client)
}

fn busy_timeout(sql: &Sqlite) -> i64 {
    sql.0
        .query_row("PRAGMA busy_timeout", [], |row| row.get(0))
        .unwrap()
}

#[test]
fn a_client_transaction_is_shed_when_the_write_lock_stays_taken() {
    let (_dir, holder, client) = two_connections();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let db = Db::new(&client);
    let started = Instant::now();
    let outcome = db.client_transaction(50, |tx| tx.execute("INSERT INTO t VALUES (1)", &[]));
    let error: DbError = outcome.unwrap_err();
    assert!(error.is_busy(), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // The connection waits as long as before for its other work.
    assert_eq!(busy_timeout(&client), 5_000);
    holder.execute_batch("ROLLBACK").unwrap();
    let count: i64 = holder
        .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 0, "nothing was written");
}

#[test]
fn a_client_transaction_commits_when_the_lock_frees_within_its_wait() {
    let (_dir, holder, client) = two_connections();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        holder.execute_batch("COMMIT").unwrap();
        holder
    });
    let db = Db::new(&client);
    db.client_transaction(2_000, |tx| tx.execute("INSERT INTO t VALUES (1)", &[]))
        .unwrap();
    let holder = release.join().unwrap();
    let count: i64 = holder
        .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 1);
    assert_eq!(busy_timeout(&client), 5_000);
}
