//! SQL through Spin's embedded SQLite (`spin:sqlite/sqlite@3.0.0`, database "default").

use std::cell::OnceCell;

use service_kit::ports::Rows;
use service_kit::{PortError, Sql, SqlValue};

use crate::bindings::spin::sqlite::sqlite::{Connection, Value};

/// The database label every service opens: the one Spin provides without runtime config.
const DATABASE: &str = "default";

/// One connection per request, opened on first use (transactions live on it).
#[derive(Default)]
pub struct SpinSql {
    connection: OnceCell<Result<Connection, PortError>>,
}

impl Sql for SpinSql {
    fn execute(&self, statement: &str, params: &[SqlValue]) -> Result<Rows, PortError> {
        let connection = self
            .connection
            .get_or_init(|| {
                Connection::open(DATABASE).map_err(|e| PortError(format!("sqlite open: {e:?}")))
            })
            .as_ref()
            .map_err(Clone::clone)?;
        let params: Vec<Value> = params.iter().map(to_value).collect();
        let result = connection
            .execute(statement, &params)
            .map_err(|e| PortError(format!("sqlite: {e:?}")))?;
        Ok(Rows {
            columns: result.columns,
            rows: result
                .rows
                .into_iter()
                .map(|row| row.values.into_iter().map(from_value).collect())
                .collect(),
        })
    }
}

fn to_value(value: &SqlValue) -> Value {
    match value {
        SqlValue::Integer(v) => Value::Integer(*v),
        SqlValue::Real(v) => Value::Real(*v),
        SqlValue::Text(v) => Value::Text(v.clone()),
        SqlValue::Blob(v) => Value::Blob(v.clone()),
        SqlValue::Null => Value::Null,
    }
}

fn from_value(value: Value) -> SqlValue {
    match value {
        Value::Integer(v) => SqlValue::Integer(v),
        Value::Real(v) => SqlValue::Real(v),
        Value::Text(v) => SqlValue::Text(v),
        Value::Blob(v) => SqlValue::Blob(v),
        Value::Null => SqlValue::Null,
    }
}
