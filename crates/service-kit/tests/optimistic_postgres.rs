//! [`OptimisticSql`] against a real PostgreSQL, driven the way wasmCloud's sqldb-postgres
//! provider drives it: `query` on any connection, `query-batch` as one simple query.
//!
//! The server comes from `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`).
//! An unreachable server skips these tests with a notice, or fails them in CI
//! (`required_services::skip_or_fail`).

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, NoTls};
use service_kit::SqlValue;
use service_kit::db::{Db, DbError};
use service_kit::optimistic::{BatchSql, OptimisticSql};
use service_kit::ports::{PortError, Rows};

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A client, or `None` (skip) when the server is unreachable outside CI
/// (`required_services::skip_or_fail`).
fn connect() -> Option<Client> {
    match Client::connect(&database_url(), NoTls) {
        Ok(client) => Some(client),
        Err(e) => {
            required_services::skip_or_fail(&format!(
                "PostgreSQL at {} unreachable ({e}); set DATABASE_URL",
                database_url()
            ));
            None
        }
    }
}

/// One session like the provider's: every call on the pool's (here: one) connection.
struct Session(RefCell<Client>);

/// A NULL parameter of whatever type the server inferred (as the provider sends it).
#[derive(Debug)]
struct Null;

impl ToSql for Null {
    fn to_sql(
        &self,
        _: &Type,
        _: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(IsNull::Yes)
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    to_sql_checked!();
}

impl BatchSql for Session {
    fn query(&self, statement: &str, params: &[SqlValue]) -> Result<Rows, PortError> {
        let boxed: Vec<Box<dyn ToSql + Sync>> = params
            .iter()
            .map(|p| -> Box<dyn ToSql + Sync> {
                match p {
                    SqlValue::Integer(v) => Box::new(*v),
                    SqlValue::Real(v) => Box::new(*v),
                    SqlValue::Text(v) => Box::new(v.clone()),
                    SqlValue::Blob(v) => Box::new(v.clone()),
                    SqlValue::Null => Box::new(Null),
                }
            })
            .collect();
        let refs: Vec<&(dyn ToSql + Sync)> = boxed.iter().map(|b| b.as_ref()).collect();
        let rows = self
            .0
            .borrow_mut()
            .query(statement, &refs)
            .map_err(|e| PortError(format!("failed to perform query: {e}")))?;
        let columns = rows
            .first()
            .map(|r| r.columns().iter().map(|c| c.name().to_owned()).collect())
            .unwrap_or_default();
        let rows = rows
            .iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| match *row.columns()[i].type_() {
                        Type::INT8 => row
                            .get::<_, Option<i64>>(i)
                            .map_or(SqlValue::Null, SqlValue::Integer),
                        _ => row
                            .get::<_, Option<String>>(i)
                            .map_or(SqlValue::Null, SqlValue::Text),
                    })
                    .collect()
            })
            .collect();
        Ok(Rows { columns, rows })
    }

    fn batch(&self, script: &str) -> Result<(), PortError> {
        self.0
            .borrow_mut()
            .batch_execute(script)
            .map_err(|e| PortError(format!("failed to perform query: {e}")))
    }
}

/// A fresh table `name` with one account row holding `balance`, and the conflicts table.
fn table(client: &mut Client, name: &str, balance: i64) {
    // Concurrent CREATE TABLE IF NOT EXISTS of one new table can collide: one at a time.
    static SETUP: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = SETUP.lock().unwrap_or_else(|e| e.into_inner());
    client
        .batch_execute(&format!(
            "{}; DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (id TEXT PRIMARY KEY, balance BIGINT NOT NULL, note TEXT)",
            service_kit::optimistic::CREATE_CONFLICTS_TABLE
        ))
        .unwrap();
    client
        .execute(
            &format!("INSERT INTO {name} (id, balance) VALUES ('a', $1)"),
            &[&balance],
        )
        .unwrap();
}

fn balance(db: &Db, name: &str) -> i64 {
    db.query_opt(&format!("SELECT balance FROM {name} WHERE id = 'a'"), &[])
        .unwrap()
        .unwrap()
        .i64("balance")
        .unwrap()
}

#[test]
fn commit_writes_everything_and_rollback_nothing() {
    let Some(mut admin) = connect() else { return };
    table(&mut admin, "opt_commit", 100);
    let sql = OptimisticSql::new(Session(RefCell::new(connect().unwrap())));
    let db = Db::new(&sql);
    db.transaction(|tx| {
        let b = balance(tx, "opt_commit");
        tx.execute(
            "UPDATE opt_commit SET balance = $1 WHERE id = 'a'",
            &[(b - 30).into()],
        )?;
        tx.execute(
            "INSERT INTO opt_commit (id, balance) VALUES ($1, $2)",
            &["b".into(), 30.into()],
        )
    })
    .unwrap();
    assert_eq!(balance(&db, "opt_commit"), 70);
    let failed: Result<(), DbError> = db.transaction(|tx| {
        tx.execute("UPDATE opt_commit SET balance = 0 WHERE id = 'a'", &[])?;
        tx.execute("INSERT INTO opt_commit (id, balance) VALUES ('b', 1)", &[])
    });
    // The provider hides why a script failed; a unique violation is taken for a lost race
    // (every insert here follows a read), tried again, and reported as a conflict.
    assert!(failed.unwrap_err().0.contains("could not serialize access"));
    assert_eq!(
        balance(&db, "opt_commit"),
        70,
        "the failed script changed nothing"
    );
}

#[test]
fn a_read_after_a_write_fails_loudly() {
    let Some(mut admin) = connect() else { return };
    table(&mut admin, "opt_raw", 1);
    let sql = OptimisticSql::new(Session(RefCell::new(connect().unwrap())));
    let db = Db::new(&sql);
    let outcome: Result<(), DbError> = db.transaction(|tx| {
        tx.execute("UPDATE opt_raw SET balance = 2", &[])?;
        tx.query("SELECT balance FROM opt_raw", &[]).map(|_| ())
    });
    assert!(outcome.unwrap_err().0.contains("a read after a write"));
    assert_eq!(balance(&db, "opt_raw"), 1, "nothing was written");
}

#[test]
fn a_changed_read_makes_the_commit_conflict_and_the_retry_sees_the_change() {
    let Some(mut admin) = connect() else { return };
    table(&mut admin, "opt_conflict", 100);
    let sql = OptimisticSql::new(Session(RefCell::new(connect().unwrap())));
    let db = Db::new(&sql);
    let mut tries = 0;
    db.transaction(|tx| {
        tries += 1;
        let b = balance(tx, "opt_conflict");
        if tries == 1 {
            // Another instance commits between this transaction's read and its commit.
            admin
                .execute(
                    "UPDATE opt_conflict SET balance = balance + 5 WHERE id = 'a'",
                    &[],
                )
                .unwrap();
        }
        tx.execute(
            "UPDATE opt_conflict SET balance = $1 WHERE id = 'a'",
            &[(b - 10).into()],
        )
    })
    .unwrap();
    assert_eq!(tries, 2);
    assert_eq!(balance(&db, "opt_conflict"), 95, "no update was lost");
}

#[test]
fn text_survives_inlining_byte_for_byte() {
    let Some(mut admin) = connect() else { return };
    table(&mut admin, "opt_text", 0);
    let sql = OptimisticSql::new(Session(RefCell::new(connect().unwrap())));
    let db = Db::new(&sql);
    let nasty = "it's a \\ back'slash\n$1 $$ $shop_check0$ \"quoted\" ünïcødé 🦀 ( , )";
    db.transaction(|tx| {
        tx.query_opt("SELECT note FROM opt_text WHERE id = 'a'", &[])?;
        tx.execute(
            "UPDATE opt_text SET note = $1, balance = $2 WHERE id = 'a'",
            &[nasty.into(), (-5).into()],
        )
    })
    .unwrap();
    // A read of the nasty text inside a transaction must validate at commit too.
    db.transaction(|tx| {
        let note = tx
            .query_opt("SELECT note FROM opt_text WHERE id = 'a'", &[])?
            .unwrap()
            .text("note")?;
        assert_eq!(note, nasty);
        tx.execute(
            "UPDATE opt_text SET balance = balance - 1 WHERE id = 'a'",
            &[],
        )
    })
    .unwrap();
    assert_eq!(balance(&db, "opt_text"), -6);
}

#[test]
fn concurrent_read_modify_writes_lose_no_update() {
    let Some(mut admin) = connect() else { return };
    table(&mut admin, "opt_race", 0);
    let committed = Arc::new(AtomicU32::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let committed = committed.clone();
            std::thread::spawn(move || {
                let sql = OptimisticSql::new(Session(RefCell::new(connect().unwrap())));
                let db = Db::new(&sql);
                for _ in 0..25 {
                    let outcome = db.transaction(|tx| {
                        let b = balance(tx, "opt_race");
                        tx.execute(
                            "UPDATE opt_race SET balance = $1 WHERE id = 'a'",
                            &[(b + 1).into()],
                        )
                    });
                    if outcome.is_ok() {
                        committed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let sql = OptimisticSql::new(Session(RefCell::new(connect().unwrap())));
    let total = balance(&Db::new(&sql), "opt_race");
    let committed = i64::from(committed.load(Ordering::SeqCst));
    assert_eq!(
        total, committed,
        "every committed increment is there, and no other"
    );
    assert!(
        committed >= 90,
        "most increments commit within the retries ({committed})"
    );
}

#[test]
fn migrations_refuse_a_role_without_a_schema_of_its_own() {
    let Some(client) = connect() else { return };
    let sql = OptimisticSql::new(Session(RefCell::new(client)));
    let db = Db::new(&sql);
    // The administrator's role has no schema named after it here: its tables would go to
    // `public`, where every service's would meet.
    let refused = service_kit::db::migrate(&db, "refused", &[]).unwrap_err();
    assert!(
        refused.0.contains("has no schema of its own"),
        "{}",
        refused.0
    );
}
