//! SQL through Spin: the embedded SQLite database "default" (`spin:sqlite/sqlite@3.0.0`),
//! or, when the `database_url` variable is set, Postgres (`spin:postgres/postgres@4.0.0`)
//! so that many instances share one database.
//!
//! Every SQLite connection runs `PRAGMA synchronous = NORMAL` (see [`SQLITE_SYNCHRONOUS`]).

use std::cell::OnceCell;

use service_kit::ports::{Dialect, Rows};
use service_kit::{Config, PortError, Sql, SqlValue};

use crate::bindings::spin::postgres::postgres as pg;
use crate::bindings::spin::sqlite::sqlite;

/// The SQLite label every service opens: the one Spin provides without runtime config.
const SQLITE_DATABASE: &str = "default";

/// Set on every SQLite connection. With the write-ahead log (which the migrations turn on),
/// `NORMAL` syncs the log at checkpoints instead of at every commit: a commit is still atomic
/// and survives the app or the host process dying, but the last commits before a power loss
/// or an operating-system crash may be rolled back. Each commit holds SQLite's one write
/// lock for a disk sync less, which is what the pipeline's throughput is bound by.
const SQLITE_SYNCHRONOUS: &str = "PRAGMA synchronous = NORMAL";

/// One connection per request, opened on first use (transactions live on it).
pub struct SpinSql {
    postgres_url: Option<String>,
    connection: OnceCell<Result<Connection, PortError>>,
}

enum Connection {
    Sqlite(sqlite::Connection),
    Postgres(pg::Connection),
}

impl SpinSql {
    /// Postgres when `database_url` is set, else the embedded SQLite database.
    pub fn from_config(config: &dyn Config) -> SpinSql {
        let postgres_url = config
            .get("database_url")
            .ok()
            .flatten()
            .filter(|url| !url.trim().is_empty());
        SpinSql {
            postgres_url,
            connection: OnceCell::new(),
        }
    }

    fn connection(&self) -> Result<&Connection, PortError> {
        self.connection
            .get_or_init(|| match &self.postgres_url {
                Some(url) => pg::Connection::open(url)
                    .map(Connection::Postgres)
                    .map_err(|e| PortError(format!("postgres open: {}", pg_error(&e)))),
                None => sqlite::Connection::open(SQLITE_DATABASE)
                    .map_err(|e| PortError(format!("sqlite open: {e:?}")))
                    .and_then(|connection| {
                        connection
                            .execute(SQLITE_SYNCHRONOUS, &[])
                            .map_err(|e| PortError(format!("sqlite: {e:?}")))?;
                        Ok(Connection::Sqlite(connection))
                    }),
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl Sql for SpinSql {
    fn execute(&self, statement: &str, params: &[SqlValue]) -> Result<Rows, PortError> {
        match self.connection()? {
            Connection::Sqlite(connection) => {
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
                let result = connection
                    .query(statement, &params)
                    .map_err(|e| PortError(format!("postgres: {}", pg_error(&e))))?;
                Ok(Rows {
                    columns: result.columns.into_iter().map(|c| c.name).collect(),
                    rows: result
                        .rows
                        .into_iter()
                        .map(|row| row.into_iter().map(from_postgres).collect())
                        .collect(),
                })
            }
        }
    }

    fn dialect(&self) -> Dialect {
        if self.postgres_url.is_some() {
            Dialect::Postgres
        } else {
            Dialect::Sqlite
        }
    }
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
