//! What the integration tests share: the `Sql` port on a real SQLite file (rusqlite).

use service_kit::ports::Rows;
use service_kit::{PortError, Sql, SqlValue};

/// The `Sql` port on one rusqlite connection.
pub struct Sqlite(pub rusqlite::Connection);

impl Sql for Sqlite {
    fn execute(&self, statement: &str, params: &[SqlValue]) -> Result<Rows, PortError> {
        let mut stmt = self
            .0
            .prepare(statement)
            .map_err(|e| PortError(e.to_string()))?;
        let columns: Vec<String> = stmt.column_names().map(str::to_owned).collect();
        let values = params.iter().map(|p| match p {
            SqlValue::Integer(v) => rusqlite::types::Value::Integer(*v),
            SqlValue::Real(v) => rusqlite::types::Value::Real(*v),
            SqlValue::Text(v) => rusqlite::types::Value::Text(v.clone()),
            SqlValue::Blob(v) => rusqlite::types::Value::Blob(v.clone()),
            SqlValue::Null => rusqlite::types::Value::Null,
        });
        let width = columns.len();
        let rows = stmt
            .query_map(rusqlite::params_from_iter(values), |row| {
                (0..width)
                    .map(|i| {
                        Ok(match row.get::<_, rusqlite::types::Value>(i)? {
                            rusqlite::types::Value::Integer(v) => SqlValue::Integer(v),
                            rusqlite::types::Value::Real(v) => SqlValue::Real(v),
                            rusqlite::types::Value::Text(v) => SqlValue::Text(v),
                            rusqlite::types::Value::Blob(v) => SqlValue::Blob(v),
                            rusqlite::types::Value::Null => SqlValue::Null,
                        })
                    })
                    .collect()
            })
            .map_err(|e| PortError(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PortError(e.to_string()))?;
        Ok(Rows { columns, rows })
    }
}
