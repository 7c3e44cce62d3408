//! SQL through Spin: the service's own SQLite database, labelled with its name
//! (`spin:sqlite/sqlite@3.0.0`, defined in `infra/spin/runtime-config.toml`), or, when the
//! service's `<service>_database_url` variable is set (e.g. `orders_database_url`: a service
//! composed into the gateway reads the gateway's variables, so each has its own name),
//! Postgres (`spin:postgres/postgres@4.1.0`)
//! so that many instances share one database.
//!
//! Every SQLite connection that writes runs `PRAGMA synchronous = NORMAL` first (see
//! [`SQLITE_SYNCHRONOUS`]); one that only reads (say, the prices an order is placed at)
//! spares that host call.
//!
//! On Postgres, Spin 4.0.2's `query` never returns when a statement yields no rows (its
//! host keeps the sender of the column list alive while it waits for it; see
//! `crates/factor-outbound-pg/src/client.rs` at tag v4.0.2). Statements without rows
//! (`BEGIN`, `COMMIT`, DDL, writes without `RETURNING`) therefore go through `execute`,
//! and row statements through `query` wrapped so that they always yield at least one row
//! (see [`at_least_one_row`]).
//!
//! Spin connects with TLS unless the URL says `sslmode=disable`, and verifies the server's
//! certificate against the system's roots, or against the PEM in the `database_ca_cert`
//! variable when it is set.

use std::cell::{Cell, RefCell};

use service_kit::ports::{Dialect, Rows};
use service_kit::sql_text::{busy_timeout, first_keyword, returns_rows};
use service_kit::{Config, PortError, Sql, SqlValue};

use crate::bindings::spin::postgres::postgres as pg;
use crate::bindings::spin::sqlite::sqlite;

/// Set on every SQLite connection. With the write-ahead log (which the migrations turn on),
/// `NORMAL` syncs the log at checkpoints instead of at every commit: a commit is still atomic
/// and survives the app or the host process dying, but the last commits before a power loss
/// or an operating-system crash may be rolled back. Each commit holds SQLite's one write
/// lock for a disk sync less, which is what the pipeline's throughput is bound by.
const SQLITE_SYNCHRONOUS: &str = "PRAGMA synchronous = NORMAL";

/// The marker column [`at_least_one_row`] adds: TRUE on the statement's rows, NULL on the
/// stand-in row of an empty result.
const ROW_MARKER: &str = "shop_row_present";

/// The request's connection, opened on first use (transactions live on it). A Postgres
/// connection goes back to Spin's pool when the service waits on others
/// ([`Sql::release`]); the next statement takes one again.
pub struct SpinSql {
    /// The service's own SQLite label (its name; `infra/spin/runtime-config.toml` defines it).
    sqlite_label: &'static str,
    postgres: Option<PostgresAddress>,
    connection: RefCell<Option<Connection>>,
    /// The SQLite lock wait asked for ([`Sql::set_lock_wait`]) and not yet set: set before
    /// the next statement, so that setting it back after a request's last statement costs
    /// no host call.
    lock_wait: Cell<Option<u32>>,
    /// The lock wait the connection has now (SQLite's default when it opened).
    lock_wait_set: Cell<u32>,
    /// Whether the connection has yet to run [`SQLITE_SYNCHRONOUS`]: before its first
    /// statement that is not a `SELECT`.
    synchronous_pending: Cell<bool>,
}

/// Where the Postgres database is: the URL, and the CA certificate (PEM) that signs the
/// server's certificate when it is not one the system trusts.
struct PostgresAddress {
    url: String,
    ca_cert: Option<String>,
}

enum Connection {
    Sqlite(sqlite::Connection),
    Postgres(pg::Connection),
}

impl SpinSql {
    /// Postgres when `<sqlite_label>_database_url` is set, else the SQLite database labelled
    /// `sqlite_label` (the service's name).
    pub fn from_config(config: &dyn Config, sqlite_label: &'static str) -> SpinSql {
        let variable = |key: &str| {
            config
                .get(key)
                .ok()
                .flatten()
                .filter(|value: &String| !value.trim().is_empty())
        };
        SpinSql {
            sqlite_label,
            postgres: variable(&format!("{}_database_url", sqlite_label.replace('-', "_"))).map(
                |url| PostgresAddress {
                    url,
                    ca_cert: variable("database_ca_cert"),
                },
            ),
            connection: RefCell::new(None),
            lock_wait: Cell::new(None),
            lock_wait_set: Cell::new(service_kit::db::DEFAULT_LOCK_WAIT_MS),
            synchronous_pending: Cell::new(false),
        }
    }

    /// Opens the connection. A Postgres one comes from Spin's pool, which does not roll
    /// back what an instance that trapped left open on it: that transaction is ended first,
    /// or this request's statements would join it (and, say, send an outbox row that is
    /// never committed).
    fn open(&self) -> Result<Connection, PortError> {
        match &self.postgres {
            Some(address) => open_postgres(address)
                .map(|connection| {
                    let _ = connection.execute("ROLLBACK", &[]);
                    Connection::Postgres(connection)
                })
                .map_err(|e| PortError(format!("postgres open: {}", pg_error(&e)))),
            None => {
                let connection = sqlite::Connection::open(self.sqlite_label)
                    .map_err(|e| PortError(format!("sqlite open: {e:?}")))?;
                self.synchronous_pending.set(true);
                Ok(Connection::Sqlite(connection))
            }
        }
    }
}

impl Sql for SpinSql {
    fn execute(&self, statement: &str, params: &[SqlValue]) -> Result<Rows, PortError> {
        let mut slot = self.connection.borrow_mut();
        let connection = match &mut *slot {
            Some(connection) => connection,
            empty => empty.insert(self.open()?),
        };
        match connection {
            Connection::Sqlite(connection) => {
                if self.synchronous_pending.get() && first_keyword(statement) != "SELECT" {
                    connection
                        .execute(SQLITE_SYNCHRONOUS, &[])
                        .map_err(|e| PortError(format!("sqlite: {e:?}")))?;
                    self.synchronous_pending.set(false);
                }
                if let Some(ms) = self.lock_wait.take()
                    && ms != self.lock_wait_set.get()
                {
                    connection
                        .execute(&busy_timeout(ms), &[])
                        .map_err(|e| PortError(format!("sqlite: {e:?}")))?;
                    self.lock_wait_set.set(ms);
                }
                let params: Vec<sqlite::Value> = params.iter().map(to_sqlite).collect();
                let result = connection
                    .execute(statement, &params)
                    .map_err(|e| PortError(format!("sqlite: {e:?}")))?;
                Ok(Rows {
                    columns: result.columns,
                    rows: result
                        .rows
                        .into_iter()
                        .map(|row| row.values.into_iter().map(from_sqlite).collect())
                        .collect(),
                })
            }
            Connection::Postgres(connection) => {
                let params: Vec<pg::ParameterValue> = params.iter().map(to_postgres).collect();
                let failed = |e: pg::Error| PortError(format!("postgres: {}", pg_error(&e)));
                if !returns_rows(statement) {
                    connection.execute(statement, &params).map_err(failed)?;
                    return Ok(Rows::default());
                }
                let result = connection
                    .query(&at_least_one_row(statement), &params)
                    .map_err(failed)?;
                let mut columns: Vec<String> = result.columns.into_iter().map(|c| c.name).collect();
                let marker = columns.pop();
                debug_assert_eq!(marker.as_deref(), Some(ROW_MARKER));
                let rows = result
                    .rows
                    .into_iter()
                    .filter_map(|mut row| {
                        let present = row.pop();
                        matches!(present, Some(pg::DbValue::Boolean(true)))
                            .then(|| row.into_iter().map(from_postgres).collect())
                    })
                    .collect();
                Ok(Rows { columns, rows })
            }
        }
    }

    /// Hands a Postgres connection back to Spin's pool, which holds at most 64 per address
    /// and never closes one: four services on one server would otherwise keep a connection
    /// each for every request waiting on another service, and run out of the server's
    /// `max_connections`. SQLite keeps its connection (it is no server's).
    fn release(&self) {
        let mut slot = self.connection.borrow_mut();
        if matches!(*slot, Some(Connection::Postgres(_))) {
            *slot = None;
        }
    }

    /// Put off until the next SQLite statement (see [`SpinSql::lock_wait`]).
    fn set_lock_wait(&self, ms: u32) -> Result<(), PortError> {
        self.lock_wait.set(Some(ms));
        Ok(())
    }

    fn dialect(&self) -> Dialect {
        if self.postgres.is_some() {
            Dialect::Postgres
        } else {
            Dialect::Sqlite
        }
    }
}

/// Opens a Postgres connection, trusting `ca_cert` besides the system's roots when given.
fn open_postgres(address: &PostgresAddress) -> Result<pg::Connection, pg::Error> {
    match &address.ca_cert {
        None => pg::Connection::open(&address.url),
        Some(pem) => {
            let builder = pg::ConnectionBuilder::new(&address.url);
            builder.set_ca_root(pem)?;
            builder.build()
        }
    }
}

/// `statement` (one that yields rows) rewritten to yield at least one row, as Spin 4.0.2's
/// `query` needs: its rows each get [`ROW_MARKER`] TRUE as a last column, and an empty
/// result becomes one row of NULLs. The left join of one row with the statement's rows
/// runs as a nested loop over them, so their order is kept.
fn at_least_one_row(statement: &str) -> String {
    format!(
        "WITH shop_rows AS ({statement}) SELECT shop_marked.* FROM (VALUES (TRUE)) AS shop_guard (present) \
         LEFT JOIN (SELECT shop_rows.*, TRUE AS {ROW_MARKER} FROM shop_rows) AS shop_marked ON TRUE"
    )
}

fn to_sqlite(value: &SqlValue) -> sqlite::Value {
    match value {
        SqlValue::Integer(v) => sqlite::Value::Integer(*v),
        SqlValue::Real(v) => sqlite::Value::Real(*v),
        SqlValue::Text(v) => sqlite::Value::Text(v.clone()),
        SqlValue::Blob(v) => sqlite::Value::Blob(v.clone()),
        SqlValue::Null => sqlite::Value::Null,
    }
}

fn from_sqlite(value: sqlite::Value) -> SqlValue {
    match value {
        sqlite::Value::Integer(v) => SqlValue::Integer(v),
        sqlite::Value::Real(v) => SqlValue::Real(v),
        sqlite::Value::Text(v) => SqlValue::Text(v),
        sqlite::Value::Blob(v) => SqlValue::Blob(v),
        sqlite::Value::Null => SqlValue::Null,
    }
}

fn to_postgres(value: &SqlValue) -> pg::ParameterValue {
    match value {
        SqlValue::Integer(v) => pg::ParameterValue::Int64(*v),
        SqlValue::Real(v) => pg::ParameterValue::Floating64(*v),
        SqlValue::Text(v) => pg::ParameterValue::Str(v.clone()),
        SqlValue::Blob(v) => pg::ParameterValue::Binary(v.clone()),
        SqlValue::Null => pg::ParameterValue::DbNull,
    }
}

fn from_postgres(value: pg::DbValue) -> SqlValue {
    match value {
        pg::DbValue::Boolean(v) => SqlValue::Integer(i64::from(v)),
        pg::DbValue::Int8(v) => SqlValue::Integer(i64::from(v)),
        pg::DbValue::Int16(v) => SqlValue::Integer(i64::from(v)),
        pg::DbValue::Int32(v) => SqlValue::Integer(i64::from(v)),
        pg::DbValue::Int64(v) => SqlValue::Integer(v),
        pg::DbValue::Floating32(v) => SqlValue::Real(f64::from(v)),
        pg::DbValue::Floating64(v) => SqlValue::Real(v),
        pg::DbValue::Str(v) | pg::DbValue::Decimal(v) => SqlValue::Text(v),
        pg::DbValue::Binary(v) => SqlValue::Blob(v),
        pg::DbValue::DbNull => SqlValue::Null,
        other => SqlValue::Text(format!("{other:?}")),
    }
}

/// An error's text, with the SQLSTATE code first when the database gave one.
fn pg_error(error: &pg::Error) -> String {
    match error {
        pg::Error::QueryFailed(pg::QueryError::DbError(db)) => {
            format!("{}: {}", db.code, db.message)
        }
        pg::Error::QueryFailed(pg::QueryError::Text(text)) => text.clone(),
        other => format!("{other:?}"),
    }
}
