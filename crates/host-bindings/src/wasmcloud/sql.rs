//! SQL through wasmCloud's sqldb-postgres provider (`wasmcloud:postgres/query@0.1.1-draft`):
//! each `query` runs on a pooled connection, `query-batch` runs a script as one transaction.

use service_kit::optimistic::BatchSql;
use service_kit::ports::Rows;
use service_kit::{PortError, SqlValue};

use crate::bindings::wasmcloud::postgres::query;
use crate::bindings::wasmcloud::postgres::types::{PgValue, QueryError};

/// The provider's Postgres, as linked in `wadm.yaml`.
pub struct ProviderPostgres;

impl BatchSql for ProviderPostgres {
    fn query(&self, statement: &str, params: &[SqlValue]) -> Result<Rows, PortError> {
        let params: Vec<PgValue> = params.iter().map(to_pg).collect();
        let rows = query::query(statement, &params)
            .map_err(|e| PortError(format!("postgres: {}", query_error(e))))?;
        let columns = rows
            .first()
            .map(|row| row.iter().map(|entry| entry.column_name.clone()).collect())
            .unwrap_or_default();
        Ok(Rows {
            columns,
            rows: rows
                .into_iter()
                .map(|row| row.into_iter().map(|entry| from_pg(entry.value)).collect())
                .collect(),
        })
    }

    fn batch(&self, script: &str) -> Result<(), PortError> {
        query::query_batch(script).map_err(|e| PortError(format!("postgres: {}", query_error(e))))
    }
}

fn query_error(error: QueryError) -> String {
    match error {
        QueryError::InvalidParams(e) | QueryError::InvalidQuery(e) | QueryError::Unexpected(e) => e,
    }
}

fn to_pg(value: &SqlValue) -> PgValue {
    match value {
        SqlValue::Integer(v) => PgValue::BigInt(*v),
        SqlValue::Real(v) => PgValue::Double(encode_f64(*v)),
        SqlValue::Text(v) => PgValue::Text(v.clone()),
        SqlValue::Blob(v) => PgValue::Bytea(v.clone()),
        SqlValue::Null => PgValue::Null,
    }
}

fn from_pg(value: PgValue) -> SqlValue {
    match value {
        PgValue::Null => SqlValue::Null,
        PgValue::BigInt(v) | PgValue::Int8(v) | PgValue::BigSerial(v) | PgValue::Serial8(v) => {
            SqlValue::Integer(v)
        }
        PgValue::Integer(v) | PgValue::Int(v) | PgValue::Int4(v) => SqlValue::Integer(v.into()),
        PgValue::SmallInt(v) | PgValue::Int2(v) | PgValue::SmallSerial(v) | PgValue::Serial2(v) => {
            SqlValue::Integer(v.into())
        }
        PgValue::Serial(v) | PgValue::Serial4(v) => SqlValue::Integer(v.into()),
        PgValue::Bool(v) | PgValue::Boolean(v) => SqlValue::Integer(v.into()),
        PgValue::Double(v) | PgValue::Float8(v) | PgValue::Real(v) | PgValue::Float4(v) => {
            SqlValue::Real(decode_f64(v))
        }
        PgValue::Numeric(v) | PgValue::Decimal(v) => match v.parse::<i64>() {
            Ok(integer) => SqlValue::Integer(integer),
            Err(_) => SqlValue::Text(v),
        },
        PgValue::Text(v)
        | PgValue::Name(v)
        | PgValue::Json(v)
        | PgValue::Jsonb(v)
        | PgValue::Uuid(v) => SqlValue::Text(v),
        PgValue::Varchar((_, bytes)) | PgValue::Char((_, bytes)) => {
            SqlValue::Text(String::from_utf8_lossy(&bytes).into_owned())
        }
        PgValue::Bytea(v) => SqlValue::Blob(v),
        other => SqlValue::Text(format!("{other:?}")),
    }
}

/// `f64` as (mantissa, exponent, sign), the provider's `hashable-f64`.
fn encode_f64(value: f64) -> (u64, i16, i8) {
    let bits = value.to_bits();
    let sign: i8 = if bits >> 63 == 0 { 1 } else { -1 };
    let raw_exponent = ((bits >> 52) & 0x7ff) as i16;
    let fraction = bits & 0x000f_ffff_ffff_ffff;
    let mantissa = if raw_exponent == 0 {
        fraction << 1
    } else {
        fraction | 0x0010_0000_0000_0000
    };
    (mantissa, raw_exponent - 1075, sign)
}

/// The inverse of [`encode_f64`].
fn decode_f64((mantissa, exponent, sign): (u64, i16, i8)) -> f64 {
    f64::from(sign) * (mantissa as f64) * 2f64.powi(exponent.into())
}
