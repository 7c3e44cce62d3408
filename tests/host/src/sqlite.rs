//! `spin:sqlite/sqlite@3.0.0`, as Spin's local databases provide it: every
//! `connection.open` opens a new connection to the SQLite file behind the label, and
//! statements run on tokio's blocking pool. Labels are what Spin 4.0.2 makes of them
//! ([`SqliteDatabases`]): `default` always, others only from a runtime configuration file.
//!
//! Every statement is timed into [`SqliteUsage`], the benchmark's profile of the database.

use crate::bindings::spin::sqlite::sqlite::{self, Error, QueryResult, RowResult, Value};
use crate::faults::{DatabaseFault, Outage};
use crate::manifest::DEFAULT_DATABASE;
use crate::state::InstanceState;
use anyhow::{Context, Result, bail};
use rusqlite::types::{Value as SqlValue, ValueRef};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use wasmtime::component::Resource;

/// The message of injected SQLite faults.
const INJECTED_FAULT: &str = "injected fault";
/// The message of a database outage.
const DATABASE_AWAY: &str = "unable to open database file (injected outage)";
/// The message of a trap chaos mode injects.
pub(crate) const INJECTED_TRAP: &str = "injected trap (chaos mode)";

/// The file Spin keeps the `default` database in, in its state directory.
const DEFAULT_DATABASE_FILE: &str = "sqlite_db.db";

/// The SQLite databases of an application, by label, as Spin 4.0.2 resolves them
/// (`crates/sqlite/src/lib.rs`, `crates/runtime-config/src/lib.rs`): `default` is
/// `<state dir>/sqlite_db.db` unless the runtime configuration file says otherwise; every
/// `[sqlite_database.<label>]` with `type = "spin"` is the file at its `path`, a relative path
/// taken from the directory `spin up` runs in (not the file's own), or, without `path`, a
/// new empty in-memory database at every `open`.
#[derive(Debug, Clone)]
pub(crate) struct SqliteDatabases(BTreeMap<String, Option<PathBuf>>);

impl SqliteDatabases {
    /// The labels `runtime_config` (a parsed runtime configuration file, empty without one)
    /// defines, plus `default` in `state_dir`; relative paths resolve against `working_dir`. Parent directories of the files are created.
    pub(crate) fn from_runtime_config(
        runtime_config: &toml::Table,
        state_dir: &Path,
        working_dir: &Path,
    ) -> Result<Self> {
        let mut databases = BTreeMap::new();
        databases.insert(
            DEFAULT_DATABASE.to_owned(),
            Some(state_dir.join(DEFAULT_DATABASE_FILE)),
        );
        let entries = runtime_config
            .get("sqlite_database")
            .and_then(toml::Value::as_table)
            .cloned()
            .unwrap_or_default();
        for (label, entry) in entries {
            let kind = entry
                .get("type")
                .and_then(toml::Value::as_str)
                .unwrap_or_default();
            let location = match kind {
                "spin" => entry
                    .get("path")
                    .and_then(toml::Value::as_str)
                    .map(|path| working_dir.join(path)),
                "libsql" => bail!("sqlite_database.{label}: libsql is not supported here"),
                other => bail!("sqlite_database.{label}: Unknown database kind: {other}"),
            };
            databases.insert(label, location);
        }
        for path in databases.values().flatten() {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
        }
        Ok(Self(databases))
    }

    /// Fails as `spin up` does when a component uses a label no one defined.
    pub(crate) fn check_used<'a>(
        &self,
        uses: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<()> {
        let missing: Vec<String> = uses
            .into_iter()
            .filter(|(_, label)| !self.0.contains_key(*label))
            .map(|(component, label)| format!("- Component {component} uses database '{label}'"))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        bail!(
            "One or more components use SQLite databases which are not defined.\n\
             Check the spelling, or pass a runtime configuration file that defines these stores.\n\
             Details:\n{}",
            missing.join("\n")
        )
    }

    /// The file behind `label`; `Ok(None)` for an in-memory database.
    pub(crate) fn location(&self, label: &str) -> Option<&Option<PathBuf>> {
        self.0.get(label)
    }

    /// The file behind `label`, for reading it from outside the app; an error for an
    /// undefined label or an in-memory database.
    pub(crate) fn file(&self, label: &str) -> Result<&Path> {
        match self.0.get(label) {
            Some(Some(path)) => Ok(path),
            Some(None) => bail!("SQLite database {label:?} is in memory: nothing to read"),
            None => bail!("no SQLite database {label:?}"),
        }
    }
}

/// Opens the database at `location` (a file, or a new in-memory database).
fn open_location(location: Option<PathBuf>) -> rusqlite::Result<rusqlite::Connection> {
    match location {
        Some(path) => rusqlite::Connection::open(path),
        None => rusqlite::Connection::open_in_memory(),
    }
}

/// The host side of a `connection` resource. Dropping the last reference closes the
/// connection, which rolls back any open transaction.
pub struct Connection {
    inner: Arc<Mutex<rusqlite::Connection>>,
    /// When this connection's open transaction took SQLite's write lock.
    transaction_began: Option<Instant>,
    /// The open transaction's statements so far, after its `BEGIN`.
    transaction_calls: CallFigures,
}

/// How many characters of a statement's text [`SqliteUsageFigures::by_statement`] keys on.
pub const STATEMENT_KEY_CHARS: usize = 72;

/// What a set of `spin:sqlite` calls took (one statement text's, or one transaction's).
#[derive(Debug, Default, Clone, Copy)]
pub struct CallFigures {
    /// Calls.
    pub calls: u64,
    /// Time SQLite spent running them on the blocking thread, waits for its locks included.
    pub in_sqlite: Duration,
    /// Time from each call reaching the host until it returned to the guest: `in_sqlite`
    /// plus the hand-off to a blocking thread and the wait for a runtime worker to resume
    /// the instance.
    pub host_calls: Duration,
}

impl CallFigures {
    /// Counts one call that took `host_call`, `in_sqlite` of it in SQLite.
    pub fn add_call(&mut self, in_sqlite: Duration, host_call: Duration) {
        self.calls += 1;
        self.in_sqlite += in_sqlite;
        self.host_calls += host_call;
    }

    /// The figures of both sets together.
    pub fn plus(self, other: CallFigures) -> CallFigures {
        CallFigures {
            calls: self.calls + other.calls,
            in_sqlite: self.in_sqlite + other.in_sqlite,
            host_calls: self.host_calls + other.host_calls,
        }
    }
}

/// One write transaction: how long it held SQLite's write lock and what filled that time.
#[derive(Debug, Clone, Copy)]
pub struct TransactionRecord {
    /// From `BEGIN` returning until `COMMIT` or `ROLLBACK` returned. What is neither in
    /// `calls.host_calls` is the guest's own time between statements.
    pub held: Duration,
    /// Its statements after `BEGIN`, `COMMIT` or `ROLLBACK` included.
    pub calls: CallFigures,
}

/// What the components' statements did, accumulated over every connection.
#[derive(Debug, Default, Clone)]
pub struct SqliteUsageFigures {
    /// Statements run, `BEGIN` included.
    pub statements: u64,
    /// Time spent running statements other than `BEGIN`, in SQLite (waits for its lock
    /// included) and on the blocking pool.
    pub statement_time: Duration,
    /// Time `BEGIN` statements waited for SQLite's write lock.
    pub begin_wait: Duration,
    /// Every write transaction opened by `BEGIN`, in the order they ended.
    pub transactions: Vec<TransactionRecord>,
    /// Writes (`INSERT`, `UPDATE`, `DELETE`) run outside `BEGIN` ... `COMMIT`: each is a
    /// write transaction of its own, which takes the write lock for that one statement.
    pub single_statement_writes: u64,
    /// Per statement text (its first [`STATEMENT_KEY_CHARS`] characters).
    pub by_statement: HashMap<String, CallFigures>,
}

impl SqliteUsageFigures {
    /// Write transactions of both kinds: opened by `BEGIN`, and single-statement writes.
    pub fn write_transactions(&self) -> u64 {
        self.transactions.len() as u64 + self.single_statement_writes
    }
}

/// The recorder behind [`SqliteUsageFigures`], shared by every instance of a host.
#[derive(Debug, Default)]
pub struct SqliteUsage(Mutex<SqliteUsageFigures>);

impl SqliteUsage {
    /// The figures so far; starts afresh.
    pub fn take(&self) -> SqliteUsageFigures {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn record(&self, f: impl FnOnce(&mut SqliteUsageFigures)) {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

fn io_error(error: impl std::fmt::Display) -> Error {
    Error::Io(error.to_string())
}

impl InstanceState {
    fn connection(
        &self,
        resource: &Resource<Connection>,
    ) -> Result<Arc<Mutex<rusqlite::Connection>>, Error> {
        self.table
            .get(resource)
            .map(|c| c.inner.clone())
            .map_err(|_| Error::InvalidConnection)
    }
}

/// Runs `f` on the connection without blocking the async runtime.
async fn on_blocking_pool<R: Send + 'static>(
    inner: Arc<Mutex<rusqlite::Connection>>,
    f: impl FnOnce(&rusqlite::Connection) -> Result<R, Error> + Send + 'static,
) -> Result<R, Error> {
    timed_on_blocking_pool(inner, f).await.0
}

/// [`on_blocking_pool`], with the time `f` took on the blocking thread.
async fn timed_on_blocking_pool<R: Send + 'static>(
    inner: Arc<Mutex<rusqlite::Connection>>,
    f: impl FnOnce(&rusqlite::Connection) -> Result<R, Error> + Send + 'static,
) -> (Result<R, Error>, Duration) {
    let ran = tokio::task::spawn_blocking(move || {
        let conn = inner.lock().unwrap_or_else(PoisonError::into_inner);
        let started = Instant::now();
        let result = f(&conn);
        (result, started.elapsed())
    })
    .await;
    match ran {
        Ok((result, took)) => (result, took),
        Err(e) => (Err(io_error(e)), Duration::ZERO),
    }
}

fn to_sql(value: Value) -> SqlValue {
    match value {
        Value::Integer(i) => SqlValue::Integer(i),
        Value::Real(r) => SqlValue::Real(r),
        Value::Text(t) => SqlValue::Text(t),
        Value::Blob(b) => SqlValue::Blob(b),
        Value::Null => SqlValue::Null,
    }
}

fn from_sql(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(r) => Value::Real(r),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        ValueRef::Null => Value::Null,
    }
}

fn execute(
    conn: &rusqlite::Connection,
    statement: &str,
    parameters: Vec<Value>,
) -> rusqlite::Result<QueryResult> {
    let mut prepared = conn.prepare_cached(statement)?;
    let columns: Vec<String> = prepared.column_names().map(str::to_owned).collect();
    let mut rows = prepared.query(rusqlite::params_from_iter(
        parameters.into_iter().map(to_sql),
    ))?;
    let mut results = Vec::new();
    while let Some(row) = rows.next()? {
        let values = (0..columns.len())
            .map(|i| row.get_ref(i).map(from_sql))
            .collect::<rusqlite::Result<_>>()?;
        results.push(RowResult { values });
    }
    Ok(QueryResult {
        columns,
        rows: results,
    })
}

impl sqlite::HostConnection for InstanceState {
    async fn open(&mut self, database: String) -> Result<Resource<Connection>, Error> {
        if !self.sqlite.allowed.contains(&database) {
            return Err(Error::AccessDenied);
        }
        let Some(location) = self.sqlite.databases.location(&database).cloned() else {
            return Err(Error::NoSuchDatabase);
        };
        if self
            .database_faults
            .host
            .refuse_during_outage(Outage::Database)
        {
            return Err(Error::Io(DATABASE_AWAY.to_owned()));
        }
        let conn = tokio::task::spawn_blocking(move || open_location(location))
            .await
            .map_err(io_error)?
            .map_err(io_error)?;
        self.table
            .push(Connection {
                inner: Arc::new(Mutex::new(conn)),
                transaction_began: None,
                transaction_calls: CallFigures::default(),
            })
            .map_err(io_error)
    }

    async fn execute(
        &mut self,
        connection: Resource<Connection>,
        statement: String,
        parameters: Vec<Value>,
    ) -> wasmtime::Result<Result<QueryResult, Error>> {
        // Serialization failures and disconnects are PostgreSQL's: SQLite has neither.
        if self.database_faults.next_call() == Some(DatabaseFault::Trap) {
            self.database_faults.count(DatabaseFault::Trap);
            return Err(wasmtime::Error::msg(INJECTED_TRAP));
        }
        if self.database_faults.host.fails_inbox_read(&statement) {
            return Ok(Err(Error::Io(INJECTED_FAULT.to_owned())));
        }
        if self
            .database_faults
            .host
            .refuse_during_outage(Outage::Database)
        {
            return Ok(Err(Error::Io(DATABASE_AWAY.to_owned())));
        }
        let inner = match self.connection(&connection) {
            Ok(inner) => inner,
            Err(e) => return Ok(Err(e)),
        };
        let keyword = statement
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let statement_key: String = statement.chars().take(STATEMENT_KEY_CHARS).collect();
        let started = Instant::now();
        let (result, in_sqlite) = timed_on_blocking_pool(inner, move |conn| {
            execute(conn, &statement, parameters).map_err(io_error)
        })
        .await;
        let ended = Instant::now();
        let took = ended - started;
        let mut single_statement_write = false;
        let ended_transaction = match self.table.get_mut(&connection) {
            Ok(c) if keyword == "BEGIN" => {
                c.transaction_began = result.is_ok().then_some(ended);
                c.transaction_calls = CallFigures::default();
                None
            }
            Ok(c) => {
                if c.transaction_began.is_some() {
                    c.transaction_calls.add_call(in_sqlite, took);
                } else {
                    single_statement_write =
                        ["INSERT", "UPDATE", "DELETE"].contains(&keyword.as_str());
                }
                if keyword == "COMMIT" || keyword == "ROLLBACK" || keyword == "END" {
                    c.transaction_began.take().map(|began| TransactionRecord {
                        held: ended - began,
                        calls: std::mem::take(&mut c.transaction_calls),
                    })
                } else {
                    None
                }
            }
            Err(_) => None,
        };
        self.sqlite.usage.record(|figures| {
            figures.statements += 1;
            figures.single_statement_writes += u64::from(single_statement_write);
            if keyword == "BEGIN" {
                figures.begin_wait += took;
            } else {
                figures.statement_time += took;
            }
            figures
                .by_statement
                .entry(statement_key)
                .or_default()
                .add_call(in_sqlite, took);
            if let Some(transaction) = ended_transaction {
                figures.transactions.push(transaction);
            }
        });
        Ok(result)
    }

    async fn last_insert_rowid(&mut self, connection: Resource<Connection>) -> i64 {
        match self.connection(&connection) {
            Ok(inner) => on_blocking_pool(inner, |conn| Ok(conn.last_insert_rowid()))
                .await
                .unwrap_or(0),
            Err(_) => 0,
        }
    }

    async fn changes(&mut self, connection: Resource<Connection>) -> u64 {
        match self.connection(&connection) {
            Ok(inner) => on_blocking_pool(inner, |conn| Ok(conn.changes()))
                .await
                .unwrap_or(0),
            Err(_) => 0,
        }
    }

    async fn drop(&mut self, connection: Resource<Connection>) -> wasmtime::Result<()> {
        self.table.delete(connection)?;
        Ok(())
    }
}

impl sqlite::Host for InstanceState {}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> toml::Table {
        crate::read_runtime_config(Some(path)).unwrap()
    }

    #[test]
    fn without_a_runtime_config_only_default_exists_and_other_labels_fail_as_on_spin() {
        let dir = tempfile::tempdir().unwrap();
        let databases =
            SqliteDatabases::from_runtime_config(&toml::Table::new(), dir.path(), dir.path())
                .unwrap();
        assert_eq!(
            databases.location("default"),
            Some(&Some(dir.path().join("sqlite_db.db")))
        );
        databases.check_used([("orders", "default")]).unwrap();
        let refused = databases
            .check_used([("orders", "orders"), ("vouchers", "default")])
            .unwrap_err()
            .to_string();
        assert!(
            refused
                .starts_with("One or more components use SQLite databases which are not defined."),
            "{refused}"
        );
        assert!(
            refused.ends_with("- Component orders uses database 'orders'"),
            "{refused}"
        );
    }

    #[test]
    fn runtime_config_labels_take_relative_paths_from_the_working_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (state, work) = (dir.path().join("state"), dir.path().join("work"));
        let config = dir.path().join("config").join("runtime-config.toml");
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        std::fs::write(
            &config,
            "[sqlite_database.orders]\ntype = \"spin\"\npath = \"data/orders.db\"\n\n\
             [sqlite_database.scratch]\ntype = \"spin\"\n",
        )
        .unwrap();
        let databases =
            SqliteDatabases::from_runtime_config(&read(&config), &state, &work).unwrap();
        assert_eq!(
            databases.location("orders"),
            Some(&Some(work.join("data/orders.db")))
        );
        assert!(work.join("data").is_dir(), "the file's folder is made");
        assert_eq!(
            databases.location("scratch"),
            Some(&None),
            "no path: in memory"
        );
        assert_eq!(
            databases.location("default"),
            Some(&Some(state.join("sqlite_db.db")))
        );
        databases
            .check_used([("orders", "orders"), ("x", "scratch"), ("y", "default")])
            .unwrap();

        std::fs::write(&config, "[sqlite_database.orders]\ntype = \"postgres\"\n").unwrap();
        let refused = SqliteDatabases::from_runtime_config(&read(&config), &state, &work)
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("Unknown database kind: postgres"),
            "{refused}"
        );
    }
}
