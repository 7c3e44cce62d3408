//! `wasmcloud:postgres/query@0.1.1-draft` as wasmCloud's sqldb-postgres provider (0.10)
//! implements it:
//!
//! - one deadpool-postgres pool per linked component, configured from the link's
//!   `POSTGRES_HOST/PORT/USERNAME/PASSWORD/DATABASE` (and `POSTGRES_POOL_SIZE`);
//! - `query` takes a pooled connection and runs `query_raw(sql, params)`: an unnamed
//!   prepared statement whose parameters the server types, each `pg-value` written with
//!   the binary encoding of its Rust type without a type check (a `big-int` bound to an
//!   `INTEGER` parameter is sent as 8 bytes and the server refuses it);
//! - `query-batch` runs `batch_execute(sql)` (the simple query protocol: several
//!   statements in one implicit transaction unless they contain their own
//!   `BEGIN`/`COMMIT`);
//! - errors are `unexpected("failed to perform query: {error}")`, or
//!   `unexpected("failed to build client from pool: {error}")` when no connection can be
//!   had;
//! - result columns map as the provider maps them: `INT8` -> `int8`, `INT4` -> `int4`,
//!   `INT2` -> `int2`, `TEXT` -> `text`, `VARCHAR` -> `varchar((none, bytes))`, `BOOL` ->
//!   `bool`, `FLOAT4/8` -> `float4/8` (mantissa, exponent, sign), `BYTEA`, `NAME`, `UUID`,
//!   `JSON` and `JSONB` (both as `json`), `NUMERIC`, `DATE`, `TIME`, `TIMESTAMP`,
//!   `TIMESTAMPTZ`, and `BOOL/INT2/INT4/INT8/TEXT` arrays; NULL is `null`. The provider
//!   panics on any other column type (its error text suggests a cast); the test host traps
//!   the calling component instead.

use super::bindings::wasmcloud::postgres::query;
use super::bindings::wasmcloud::postgres::types::{
    self, Date, Offset, PgValue, QueryError, ResultRow, ResultRowEntry, Time, Timestamp,
    TimestampTz,
};
use super::state::LatticeState;
use anyhow::{Context as _, Result, bail};
use bytes::BytesMut;
use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::TryStreamExt;
use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::str::FromStr;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{NoTls, Row};

type BoxError = Box<dyn StdError + Sync + Send>;

/// The connection settings a `wasmcloud:postgres` link carries.
pub(crate) fn link_config(properties: &BTreeMap<String, String>) -> Result<tokio_postgres::Config> {
    let get = |key: &str| {
        properties
            .get(&format!("POSTGRES_{key}"))
            .with_context(|| format!("the postgres link has no POSTGRES_{key}"))
    };
    if properties
        .get("POSTGRES_TLS_REQUIRED")
        .is_some_and(|v| matches!(v.to_lowercase().as_str(), "true" | "yes"))
    {
        bail!("POSTGRES_TLS_REQUIRED is not supported by the test host (no TLS)");
    }
    let mut config = tokio_postgres::Config::new();
    config
        .host(get("HOST")?)
        .port(get("PORT")?.parse().unwrap_or(5432))
        .user(get("USERNAME")?)
        .password(get("PASSWORD")?)
        .dbname(get("DATABASE")?);
    Ok(config)
}

/// `link`'s role (and password, unless `server` has one) on the server and database that
/// `server` names.
pub(crate) fn on_server(
    link: &tokio_postgres::Config,
    server: &tokio_postgres::Config,
) -> tokio_postgres::Config {
    let mut target = server.clone();
    if let Some(user) = link.get_user() {
        target.user(user);
    }
    if let (None, Some(password)) = (server.get_password(), link.get_password()) {
        target.password(password);
    }
    target
}

/// A pool like the provider's: deadpool-postgres with its default size unless the link
/// sets `POSTGRES_POOL_SIZE`, "fast" recycling, no TLS.
pub(crate) fn pool(config: tokio_postgres::Config, size: Option<usize>) -> Result<Pool> {
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let mut builder = Pool::builder(manager).runtime(deadpool_postgres::Runtime::Tokio1);
    if let Some(size) = size {
        builder = builder.max_size(size);
    }
    Ok(builder.build()?)
}

/// The error every call of an instance with an injected fault gets.
const INJECTED: &str = "failed to perform query: injected fault";

impl LatticeState {
    /// The component's pool; traps when it has no postgres link.
    fn pool(&self) -> wasmtime::Result<Pool> {
        self.require_link(
            self.component.postgres.is_some(),
            "wasmcloud:postgres/query",
        )?;
        Ok(self
            .component
            .postgres
            .clone()
            .expect("checked by require_link"))
    }
}

impl types::Host for LatticeState {}

/// A connection from `pool`, as the provider takes one for every call, or the injected
/// fault when `fail` is set.
async fn client(pool: Pool, fail: bool) -> Result<deadpool_postgres::Object, QueryError> {
    if fail {
        return Err(QueryError::Unexpected(INJECTED.into()));
    }
    pool.get()
        .await
        .map_err(|e| QueryError::Unexpected(format!("failed to build client from pool: {e}")))
}

/// The smallest `s64` that crosses wRPC: its LEB128 decoder (leb128-tokio 0.1, as in
/// wasmCloud 1.9.2) refuses a tenth byte above 0x01, which every value below -2^62 has.
const WRPC_S64_MIN: i64 = -(1 << 62);

/// The parameters as the provider receives them over wRPC: the call fails (the provider
/// drops the invocation, the host cannot decode a result and the caller traps) when one
/// carries an `s64` below [`WRPC_S64_MIN`].
fn check_wrpc_params(params: &[PgValue]) -> wasmtime::Result<()> {
    for param in params {
        if let PgValue::BigInt(n) | PgValue::Int8(n) | PgValue::BigSerial(n) | PgValue::Serial8(n) =
            param
            && *n < WRPC_S64_MIN
        {
            wasmtime::bail!(
                "failed to decode return value 0: the sqldb-postgres provider failed to receive \
                 sync parameters (varint overflows a 64-bit integer): wRPC cannot carry the \
                 s64 {n} (below -2^62)"
            );
        }
    }
    Ok(())
}

impl query::Host for LatticeState {
    async fn query(
        &mut self,
        sql: String,
        params: Vec<PgValue>,
    ) -> wasmtime::Result<Result<Vec<ResultRow>, QueryError>> {
        check_wrpc_params(&params)?;
        let client = match client(self.pool()?, self.fail_postgres).await {
            Ok(client) => client,
            Err(e) => return Ok(Err(e)),
        };
        let rows = match client.query_raw(sql.as_str(), params).await {
            Ok(stream) => stream.try_collect::<Vec<Row>>().await,
            Err(e) => Err(e),
        };
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                return Ok(Err(QueryError::Unexpected(format!(
                    "failed to perform query: {e}"
                ))));
            }
        };
        rows.iter()
            .map(result_row)
            .collect::<Result<Vec<_>, _>>()
            .map(Ok)
            .map_err(|e| {
                wasmtime::format_err!(
                    "the sqldb-postgres provider cannot return this result (it panics): {e}"
                )
            })
    }

    async fn query_batch(&mut self, sql: String) -> wasmtime::Result<Result<(), QueryError>> {
        let client = match client(self.pool()?, self.fail_postgres).await {
            Ok(client) => client,
            Err(e) => return Ok(Err(e)),
        };
        Ok(client
            .batch_execute(&sql)
            .await
            .map_err(|e| QueryError::Unexpected(format!("failed to perform query: {e}"))))
    }
}

/// `f64` from the WIT's `(mantissa, exponent, sign)`, as the provider computes it.
fn f64_from_tuple(&(mantissa, exponent, sign): &(u64, i16, i8)) -> f64 {
    f64::from(sign) * mantissa as f64 * 2f64.powf(f64::from(exponent))
}

/// `num_traits::Float::integer_decode` for `f64`.
fn decode_f64(value: f64) -> (u64, i16, i8) {
    let bits = value.to_bits();
    let sign = if bits >> 63 == 0 { 1 } else { -1 };
    let exponent = ((bits >> 52) & 0x7ff) as i16;
    let fraction = bits & 0x000f_ffff_ffff_ffff;
    let mantissa = if exponent == 0 {
        fraction << 1
    } else {
        fraction | 0x0010_0000_0000_0000
    };
    (mantissa, exponent - (1023 + 52), sign)
}

/// `num_traits::Float::integer_decode` for `f32`.
fn decode_f32(value: f32) -> (u64, i16, i8) {
    let bits = value.to_bits();
    let sign = if bits >> 31 == 0 { 1 } else { -1 };
    let exponent = ((bits >> 23) & 0xff) as i16;
    let fraction = bits & 0x007f_ffff;
    let mantissa = if exponent == 0 {
        fraction << 1
    } else {
        fraction | 0x0080_0000
    };
    (u64::from(mantissa), exponent - (127 + 23), sign)
}

fn naive_date(date: &Date) -> Result<NaiveDate, BoxError> {
    match date {
        // As the provider does (both infinities become the maximum date).
        Date::PositiveInfinity | Date::NegativeInfinity => Ok(NaiveDate::MAX),
        Date::Ymd((year, month, day)) => NaiveDate::from_ymd_opt(*year, *month, *day)
            .ok_or_else(|| format!("failed to build date from ymd ({year}/{month}/{day})").into()),
    }
}

fn naive_time(time: &Time) -> Result<NaiveTime, BoxError> {
    NaiveTime::from_hms_micro_opt(time.hour, time.min, time.sec, time.micro).ok_or_else(|| {
        format!(
            "failed to convert time [{}h {}m {}s {}micro]",
            time.hour, time.min, time.sec, time.micro
        )
        .into()
    })
}

fn naive_timestamp(timestamp: &Timestamp) -> Result<NaiveDateTime, BoxError> {
    if !matches!(timestamp.date, Date::Ymd(_)) {
        return Err("negative/positive infinite date times are not supported".into());
    }
    Ok(NaiveDateTime::new(
        naive_date(&timestamp.date)?,
        naive_time(&timestamp.time)?,
    ))
}

fn wit_date(date: NaiveDate) -> Date {
    match date {
        NaiveDate::MAX => Date::PositiveInfinity,
        NaiveDate::MIN => Date::NegativeInfinity,
        date => Date::Ymd((date.year(), date.month(), date.day())),
    }
}

fn wit_time(time: NaiveTime) -> Time {
    Time {
        hour: time.hour(),
        min: time.minute(),
        sec: time.second(),
        micro: time.nanosecond() / 1_000,
    }
}

fn wit_timestamp(timestamp: NaiveDateTime) -> Timestamp {
    Timestamp {
        date: wit_date(timestamp.date()),
        time: wit_time(timestamp.time()),
    }
}

/// Checks a `(length, bytes)` value against its declared length.
fn sized(len: u32, bytes: &[u8], exact: bool) -> Result<&[u8], BoxError> {
    let fits = if exact {
        bytes.len() == len as usize
    } else {
        bytes.len() <= len as usize
    };
    if fits {
        Ok(bytes)
    } else {
        Err(format!(
            "value of {} bytes does not match its size {len}",
            bytes.len()
        )
        .into())
    }
}

/// Parameters as the provider binds them: the binary encoding of the matching Rust type,
/// whatever type the server inferred (`accepts` is always true).
impl ToSql for PgValue {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            PgValue::Null => Ok(IsNull::Yes),
            PgValue::BigInt(n) | PgValue::Int8(n) | PgValue::BigSerial(n) | PgValue::Serial8(n) => {
                n.to_sql(ty, out)
            }
            PgValue::Int8Array(ns) => ns.to_sql(ty, out),
            PgValue::Bool(b) | PgValue::Boolean(b) => b.to_sql(ty, out),
            PgValue::BoolArray(bs) => bs.to_sql(ty, out),
            PgValue::Double(d) | PgValue::Float8(d) | PgValue::Real(d) | PgValue::Float4(d) => {
                f64_from_tuple(d).to_sql(ty, out)
            }
            PgValue::Float8Array(ds) | PgValue::Float4Array(ds) => ds
                .iter()
                .map(f64_from_tuple)
                .collect::<Vec<_>>()
                .to_sql(ty, out),
            PgValue::Integer(n) | PgValue::Int(n) | PgValue::Int4(n) => n.to_sql(ty, out),
            PgValue::Int4Array(ns) => ns.to_sql(ty, out),
            PgValue::SmallInt(n)
            | PgValue::Int2(n)
            | PgValue::SmallSerial(n)
            | PgValue::Serial2(n) => n.to_sql(ty, out),
            PgValue::Int2Array(ns) | PgValue::Int2Vector(ns) => ns.to_sql(ty, out),
            PgValue::Serial(n) | PgValue::Serial4(n) => n.to_sql(ty, out),
            PgValue::Numeric(s) | PgValue::Decimal(s) | PgValue::Money(s) => {
                rust_decimal::Decimal::from_str(s)
                    .map_err(|_| format!("failed to parse bigint [{s}]"))?
                    .to_sql(ty, out)
            }
            PgValue::Bytea(bytes) => bytes.as_slice().to_sql(ty, out),
            PgValue::ByteaArray(many) => many
                .iter()
                .map(Vec::as_slice)
                .collect::<Vec<_>>()
                .to_sql(ty, out),
            PgValue::Char((len, bytes)) => sized(*len, bytes, true)?.to_sql(ty, out),
            PgValue::Varchar((limit, bytes)) => match limit {
                Some(limit) => sized(*limit, bytes, false)?.to_sql(ty, out),
                None => bytes.as_slice().to_sql(ty, out),
            },
            PgValue::Json(s) | PgValue::Jsonb(s) => serde_json::Value::from_str(s)
                .map_err(|e| format!("failed to parse JSON: {e}"))?
                .to_sql(ty, out),
            PgValue::Name(s) | PgValue::Text(s) | PgValue::Xml(s) | PgValue::TsQuery(s) => {
                s.to_sql(ty, out)
            }
            PgValue::NameArray(ss) | PgValue::TextArray(ss) | PgValue::XmlArray(ss) => {
                ss.to_sql(ty, out)
            }
            PgValue::Uuid(s) => uuid::Uuid::from_str(s)?.to_sql(ty, out),
            PgValue::Date(d) => naive_date(d)?.to_sql(ty, out),
            PgValue::Time(t) => naive_time(t)?.to_sql(ty, out),
            PgValue::Timestamp(ts) => naive_timestamp(ts)?.to_sql(ty, out),
            PgValue::TimestampTz(TimestampTz { timestamp, offset }) => {
                let offset = match offset {
                    Offset::EasternHemisphereSecs(secs) => chrono::FixedOffset::east_opt(*secs),
                    Offset::WesternHemisphereSecs(secs) => chrono::FixedOffset::west_opt(*secs),
                }
                .ok_or("failed to convert the timezone offset")?;
                let local = naive_timestamp(timestamp)?;
                chrono::DateTime::<chrono::FixedOffset>::from_naive_utc_and_offset(local, offset)
                    .with_timezone(&chrono::Utc)
                    .to_sql(ty, out)
            }
            other => Err(format!(
                "the test host does not bind this pg-value (the provider does): {other:?}"
            )
            .into()),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// One result row as the provider returns it.
fn result_row(row: &Row) -> Result<ResultRow, BoxError> {
    row.columns()
        .iter()
        .enumerate()
        .map(|(i, column)| {
            Ok(ResultRowEntry {
                column_name: column.name().to_owned(),
                value: column_value(row, i, column.type_())?,
            })
        })
        .collect()
}

/// Reads column `i` as `T`, NULL as `pg-value::null`.
fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    i: usize,
    wrap: impl FnOnce(T) -> PgValue,
) -> Result<PgValue, BoxError> {
    Ok(row.try_get::<_, Option<T>>(i)?.map_or(PgValue::Null, wrap))
}

fn column_value(row: &Row, i: usize, ty: &Type) -> Result<PgValue, BoxError> {
    match *ty {
        Type::BOOL => get(row, i, PgValue::Bool),
        Type::BOOL_ARRAY => get(row, i, PgValue::BoolArray),
        Type::BYTEA => get(row, i, PgValue::Bytea),
        Type::CHAR => get(row, i, |c: i8| PgValue::Char((1, vec![c as u8]))),
        Type::FLOAT4 => get(row, i, |f: f32| PgValue::Float4(decode_f32(f))),
        Type::FLOAT8 => get(row, i, |f: f64| PgValue::Float8(decode_f64(f))),
        Type::INT2 => get(row, i, PgValue::Int2),
        Type::INT2_ARRAY => get(row, i, PgValue::Int2Array),
        Type::INT4 => get(row, i, PgValue::Int4),
        Type::INT4_ARRAY => get(row, i, PgValue::Int4Array),
        Type::INT8 => get(row, i, PgValue::Int8),
        Type::INT8_ARRAY => get(row, i, PgValue::Int8Array),
        Type::NUMERIC => get(row, i, |d: rust_decimal::Decimal| {
            PgValue::Numeric(d.to_string())
        }),
        Type::JSON | Type::JSONB => get(row, i, |v: serde_json::Value| PgValue::Json(v.to_string())),
        Type::VARCHAR => get(row, i, |s: String| PgValue::Varchar((None, s.into_bytes()))),
        Type::NAME => get(row, i, PgValue::Name),
        Type::TEXT => get(row, i, PgValue::Text),
        Type::TEXT_ARRAY => get(row, i, PgValue::TextArray),
        Type::UUID => get(row, i, |u: uuid::Uuid| PgValue::Uuid(u.to_string())),
        Type::DATE => get(row, i, |d: NaiveDate| PgValue::Date(wit_date(d))),
        Type::TIME => get(row, i, |t: NaiveTime| PgValue::Time(wit_time(t))),
        Type::TIMESTAMP => get(row, i, |t: NaiveDateTime| PgValue::Timestamp(wit_timestamp(t))),
        Type::TIMESTAMPTZ => get(row, i, |t: chrono::DateTime<chrono::Utc>| {
            PgValue::TimestampTz(TimestampTz {
                timestamp: wit_timestamp(t.naive_utc()),
                offset: Offset::WesternHemisphereSecs(0),
            })
        }),
        ref other => Err(format!(
            "unsupported type [{other}], consider using a cast like 'value'::string or 'value'::jsonb"
        )
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_round_trip_through_the_wit_encoding() {
        for value in [0.0, 1.5, -2.25, 1e-300, 123_456.789] {
            assert_eq!(f64_from_tuple(&decode_f64(value)), value);
        }
        for value in [0.0f32, 3.5, -0.125] {
            assert_eq!(f64_from_tuple(&decode_f32(value)), f64::from(value));
        }
    }

    #[test]
    fn a_server_override_keeps_the_links_role() {
        let link: tokio_postgres::Config = "postgres://shop_orders:secret@10.0.0.1:5432/shop"
            .parse()
            .unwrap();
        let server: tokio_postgres::Config = "postgres://postgres@127.0.0.1:5433/shop_test_1"
            .parse()
            .unwrap();
        let target = on_server(&link, &server);
        assert_eq!(target.get_user(), Some("shop_orders"));
        assert_eq!(target.get_password(), Some(&b"secret"[..]));
        assert_eq!(target.get_ports(), [5433]);
        assert_eq!(target.get_dbname(), Some("shop_test_1"));
    }

    #[test]
    fn link_config_needs_every_key_and_no_tls() {
        let mut properties: BTreeMap<String, String> = [
            ("POSTGRES_HOST", "127.0.0.1"),
            ("POSTGRES_PORT", "5433"),
            ("POSTGRES_USERNAME", "postgres"),
            ("POSTGRES_PASSWORD", ""),
            ("POSTGRES_DATABASE", "shop"),
            ("POSTGRES_TLS_REQUIRED", "false"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let config = link_config(&properties).unwrap();
        assert_eq!(config.get_ports(), [5433]);
        assert_eq!(config.get_dbname(), Some("shop"));
        properties.insert("POSTGRES_TLS_REQUIRED".into(), "true".into());
        assert!(link_config(&properties).is_err());
        properties.remove("POSTGRES_DATABASE");
        properties.remove("POSTGRES_TLS_REQUIRED");
        assert!(link_config(&properties).is_err());
    }
}
