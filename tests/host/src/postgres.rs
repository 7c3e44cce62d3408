//! `spin:postgres/postgres@4.1.0`, as Spin 4.0.2 implements it (its
//! `spin-factor-outbound-pg` crate, which serves 4.x guests through its semver-compatible
//! 4.2.0 bindings), over tokio-postgres.
//!
//! - `connection.open(address)` (and `connection-builder`, which may add a root CA) checks
//!   every host of the address against the component's `allowed_outbound_hosts` (scheme
//!   `postgres`, default port 5432), then takes a client from the app-wide pool of that
//!   address and CA: deadpool-postgres, at most 64 clients, "clean" recycling, no wait
//!   limit, as Spin's `PooledTokioClientFactory`. The client goes back to the pool when the
//!   resource is dropped or the instance ends, and "clean" recycling does not roll back: a
//!   transaction a trapped instance left open is still open for the next instance that gets
//!   the same client. A 65th concurrent `open` waits for a client to come back.
//! - TLS unless the address says `sslmode=disable`: native-tls with the system's roots (and
//!   the builder's CA), verifying the certificate and the host name, as Spin does. A server
//!   with a self-signed certificate fails the handshake when the URL allows TLS (tokio-postgres'
//!   default `sslmode=prefer` included).
//! - `query` never returns when the statement yields no rows: Spin 4.0.2 waits for the
//!   column list on a channel whose sender only sends with the first row and is dropped
//!   only after the wait (`crates/factor-outbound-pg/src/client.rs`). The host logs that it
//!   reproduces the hang. `execute` answers commands and writes without rows.
//! - Parameters and results use the same Rust types Spin uses with tokio-postgres, so the
//!   same type checks apply (an `int64` parameter needs a `BIGINT` column, `db-null` fits
//!   any column, a `TIMESTAMPTZ` column cannot be read as `datetime`, ...).
//! - Errors are Spin's: `query-failed(db-error)` with the SQLSTATE in `code` for errors the
//!   server reports while preparing or binding a statement and for every `execute` error;
//!   errors raised while a `query` runs (unique violations, serialization failures on
//!   `COMMIT`, ...) are `query-failed(text)` holding the error chain, without the code.

use crate::allowed_hosts::AllowedHosts;
use crate::bindings::spin::postgres::postgres::{
    self as pg, Column, DbDataType, DbError, DbValue, Error, ParameterValue, QueryError,
    RangeBoundKind, RowSet,
};
use crate::faults::DatabaseFault;
use crate::sqlite::INJECTED_TRAP;
use crate::state::InstanceState;
use anyhow::{Context as _, anyhow};
use bytes::{BufMut, BytesMut};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use futures_util::TryStreamExt;
use postgres_range::{BoundSided, BoundType, Normalizable, Range, RangeBound};
use std::collections::HashMap;
use std::error::Error as StdError;
use std::pin::pin;
use std::sync::Mutex;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{NoTls, Row};
use wasmtime::component::Resource;

/// Spin's limit on a buffered query result (`spin_world::MAX_HOST_BUFFERED_BYTES`).
const MAX_RESULT_BYTES: usize = 128 << 20;

/// The message of a serialization failure chaos mode injects.
const INJECTED_SERIALIZATION_FAILURE: &str =
    "could not serialize access due to concurrent update (injected by chaos mode)";

/// The scheme `allowed_outbound_hosts` entries must name for Postgres.
const SCHEME: &str = "postgres";

/// Clients in one address's pool (Spin's `CONNECTION_POOL_SIZE`).
pub(crate) const POOL_SIZE: usize = 64;

/// The host side of a `connection` resource: a client taken from its address's pool,
/// returned there (transaction and all) when the resource is dropped.
pub struct Connection {
    client: Object,
}

/// The host side of a `connection-builder` resource: an address and an optional root CA.
pub struct ConnectionBuilder {
    address: String,
    root_ca: Option<RootCa>,
}

/// A root certificate from `set-ca-root`, with the PEM text that keys its pool.
#[derive(Clone)]
struct RootCa {
    certificate: native_tls::Certificate,
    pem: String,
}

/// The app's connection pools, one per address and root CA (Spin keeps up to 16 in a cache;
/// the test host keeps every one it made).
#[derive(Default)]
pub(crate) struct PostgresPools {
    pools: Mutex<HashMap<(String, Option<String>), Pool>>,
}

impl PostgresPools {
    /// The pool for `address` (parsed as `config`) with `root_ca`, made on first use.
    fn pool(
        &self,
        address: &str,
        config: tokio_postgres::Config,
        root_ca: Option<RootCa>,
    ) -> anyhow::Result<Pool> {
        let key = (
            address.to_owned(),
            root_ca.as_ref().map(|ca| ca.pem.clone()),
        );
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pool) = pools.get(&key) {
            return Ok(pool.clone());
        }
        let recycling = ManagerConfig {
            recycling_method: RecyclingMethod::Clean,
        };
        let manager = if config.get_ssl_mode() == SslMode::Disable {
            Manager::from_config(config, NoTls, recycling)
        } else {
            let mut builder = native_tls::TlsConnector::builder();
            if let Some(root_ca) = root_ca {
                builder.add_root_certificate(root_ca.certificate);
            }
            let connector = postgres_native_tls::MakeTlsConnector::new(builder.build()?);
            Manager::from_config(config, connector, recycling)
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .context("building Postgres connection pool")?;
        pools.insert(key, pool.clone());
        Ok(pool)
    }
}

// The WIT `error` is large, and it is what the bindings return everywhere.
#[allow(clippy::result_large_err)]
impl InstanceState {
    fn pg_client(&self, connection: &Resource<Connection>) -> Result<&Object, Error> {
        self.table
            .get(connection)
            .map(|c| &c.client)
            .map_err(|_| Error::ConnectionFailed("no connection found".to_owned()))
    }

    /// Checks `address` against `allowed_outbound_hosts` and takes a client from its pool.
    async fn open_pooled(
        &mut self,
        address: &str,
        root_ca: Option<RootCa>,
    ) -> Result<Resource<Connection>, Error> {
        let component = self.component.config.id.clone();
        let config =
            check_address(&self.component.config.allowed_hosts, address).inspect_err(|e| {
                if let Error::ConnectionFailed(why) = e {
                    let hint = if why.contains("not permitted") {
                        " (not in allowed_outbound_hosts)"
                    } else {
                        ""
                    };
                    eprintln!("[test-host] {component}: Postgres connection denied: {why}{hint}");
                }
            })?;
        let client = async {
            let pool = self.postgres_pools.pool(address, config, root_ca)?;
            anyhow::Ok(pool.get().await?)
        }
        .await
        .map_err(|e| Error::ConnectionFailed(format!("{e:?}")))?;
        self.table
            .push(Connection { client })
            .map_err(|_| Error::ConnectionFailed("too many connections".to_owned()))
    }
}

/// Parses `address` and checks each of its hosts against `allowed`, as Spin does: a
/// host's port is the one at the same position, or the only one given, or 5432.
#[allow(clippy::result_large_err)]
pub(crate) fn check_address(
    allowed: &AllowedHosts,
    address: &str,
) -> Result<tokio_postgres::Config, Error> {
    let config: tokio_postgres::Config = address
        .parse()
        .map_err(|e: tokio_postgres::Error| Error::ConnectionFailed(e.to_string()))?;
    let ports = config.get_ports();
    for (i, host) in config.get_hosts().iter().enumerate() {
        match host {
            Host::Tcp(name) => {
                let port = ports
                    .get(i)
                    .or_else(|| (ports.len() == 1).then(|| &ports[0]))
                    .copied();
                if !allowed.allows(SCHEME, name, port) {
                    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                    return Err(Error::ConnectionFailed(format!(
                        "address postgres://{name}{port} is not permitted"
                    )));
                }
            }
            #[cfg(unix)]
            Host::Unix(_) => {
                return Err(Error::ConnectionFailed(
                    "Unix sockets are not supported on WebAssembly".to_owned(),
                ));
            }
        }
    }
    Ok(config)
}

impl pg::HostConnectionBuilder for InstanceState {
    async fn new(&mut self, address: String) -> wasmtime::Result<Resource<ConnectionBuilder>> {
        Ok(self.table.push(ConnectionBuilder {
            address,
            root_ca: None,
        })?)
    }

    async fn set_ca_root(
        &mut self,
        builder: Resource<ConnectionBuilder>,
        certificate: String,
    ) -> Result<(), Error> {
        let root_ca = native_tls::Certificate::from_pem(certificate.as_bytes())
            .map_err(|e| Error::Other(format!("invalid root certificate: {e}")))?;
        let builder = self
            .table
            .get_mut(&builder)
            .map_err(|_| Error::ConnectionFailed("no builder found".to_owned()))?;
        builder.root_ca = Some(RootCa {
            certificate: root_ca,
            pem: certificate,
        });
        Ok(())
    }

    async fn build(
        &mut self,
        builder: Resource<ConnectionBuilder>,
    ) -> Result<Resource<Connection>, Error> {
        let (address, root_ca) = self
            .table
            .get(&builder)
            .map(|b| (b.address.clone(), b.root_ca.clone()))
            .map_err(|_| Error::ConnectionFailed("no builder found".to_owned()))?;
        self.open_pooled(&address, root_ca).await
    }

    async fn drop(&mut self, builder: Resource<ConnectionBuilder>) -> wasmtime::Result<()> {
        self.table.delete(builder)?;
        Ok(())
    }
}

impl pg::HostConnection for InstanceState {
    async fn open(&mut self, address: String) -> Result<Resource<Connection>, Error> {
        self.open_pooled(&address, None).await
    }

    async fn query(
        &mut self,
        connection: Resource<Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<RowSet, Error>> {
        if let Err(injected) = self.injected_fault(&connection).await? {
            return Ok(Err(injected));
        }
        Ok(self.run_query(&connection, &statement, params).await)
    }

    async fn execute(
        &mut self,
        connection: Resource<Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        if let Err(injected) = self.injected_fault(&connection).await? {
            return Ok(Err(injected));
        }
        Ok(self.run_execute(&connection, &statement, params).await)
    }

    async fn drop(&mut self, connection: Resource<Connection>) -> wasmtime::Result<()> {
        self.table.delete(connection)?;
        Ok(())
    }
}

impl pg::Host for InstanceState {}

// The WIT `error` is large, and it is what the bindings return everywhere.
#[allow(clippy::result_large_err)]
impl InstanceState {
    /// What chaos mode does to this database call: a trap (`Err`), a serialization failure
    /// (`Ok(Err(..))`), or the connection ended by the server before the statement runs
    /// (`Ok(Ok(()))`: the statement then meets the closed connection).
    async fn injected_fault(
        &mut self,
        connection: &Resource<Connection>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let Some(fault) = self.database_faults.next_call() else {
            return Ok(Ok(()));
        };
        self.database_faults.count(fault);
        match fault {
            DatabaseFault::Trap => Err(wasmtime::Error::msg(INJECTED_TRAP)),
            DatabaseFault::SerializationFailure => {
                Ok(Err(Error::QueryFailed(QueryError::DbError(DbError {
                    as_text: format!("db error: ERROR: {INJECTED_SERIALIZATION_FAILURE}"),
                    severity: "ERROR".to_owned(),
                    code: "40001".to_owned(),
                    message: INJECTED_SERIALIZATION_FAILURE.to_owned(),
                    detail: None,
                    extras: Vec::new(),
                }))))
            }
            DatabaseFault::Disconnect => {
                if let Ok(client) = self.pg_client(connection) {
                    // The backend ends itself, rolling back what its transaction did; the
                    // answer is the error of a connection that is gone.
                    let _ = client
                        .batch_execute("SELECT pg_terminate_backend(pg_backend_pid())")
                        .await;
                }
                Ok(Ok(()))
            }
        }
    }

    async fn run_query(
        &mut self,
        connection: &Resource<Connection>,
        statement: &str,
        params: Vec<ParameterValue>,
    ) -> Result<RowSet, Error> {
        let client = self.pg_client(connection)?;
        let params =
            to_sql_parameters(&params).map_err(|e| Error::BadParameter(format!("{e:?}")))?;
        let stream = client
            .query_raw(statement, params)
            .await
            .map_err(query_failed)?;
        let mut stream = pin!(stream);

        let mut columns = None;
        let mut rows = Vec::new();
        let mut byte_count = std::mem::size_of::<RowSet>();
        let result: anyhow::Result<()> = async {
            while let Some(row) = stream.try_next().await? {
                if columns.is_none() {
                    columns = Some(infer_columns(&row));
                }
                let row = convert_row(&row)?;
                byte_count += row.iter().map(memory_size).sum::<usize>();
                if byte_count > MAX_RESULT_BYTES {
                    anyhow::bail!("query result exceeds limit of {MAX_RESULT_BYTES} bytes");
                }
                rows.push(row);
            }
            Ok(())
        }
        .await;
        result.map_err(|e| Error::QueryFailed(QueryError::Text(format!("{e:?}"))))?;
        let Some(columns) = columns else {
            // Spin 4.0.2 awaits the column list here, which only the first row sends.
            eprintln!(
                "[test-host] {}: spin:postgres query returned no rows, which Spin 4.0.2 never \
                 answers: this call hangs, as it would there. Run statements without rows \
                 through `execute`. Statement: {statement}",
                self.component.config.id
            );
            return std::future::pending().await;
        };
        Ok(RowSet { columns, rows })
    }

    async fn run_execute(
        &mut self,
        connection: &Resource<Connection>,
        statement: &str,
        params: Vec<ParameterValue>,
    ) -> Result<u64, Error> {
        let client = self.pg_client(connection)?;
        let params = to_sql_parameters(&params)
            .map_err(|e| Error::ValueConversionFailed(format!("{e:?}")))?;
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        client.execute(statement, &refs).await.map_err(query_failed)
    }
}

/// A tokio-postgres error as Spin reports it: structured when the server sent one.
fn query_failed(e: tokio_postgres::Error) -> Error {
    let as_text = format!("{e:?}");
    let error = match e.as_db_error() {
        None => QueryError::Text(as_text),
        Some(db) => QueryError::DbError(DbError {
            as_text,
            severity: db.severity().to_owned(),
            code: db.code().code().to_owned(),
            message: db.message().to_owned(),
            detail: db.detail().map(str::to_owned),
            extras: db_error_extras(db),
        }),
    };
    Error::QueryFailed(error)
}

fn db_error_extras(db: &tokio_postgres::error::DbError) -> Vec<(String, String)> {
    let mut extras = Vec::new();
    let mut push = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            extras.push((name.to_owned(), value));
        }
    };
    push("column", db.column().map(str::to_owned));
    push("constraint", db.constraint().map(str::to_owned));
    push("routine", db.routine().map(str::to_owned));
    push("hint", db.hint().map(str::to_owned));
    push("table", db.table().map(str::to_owned));
    push("datatype", db.datatype().map(str::to_owned));
    push("schema", db.schema().map(str::to_owned));
    push("file", db.file().map(str::to_owned));
    push("line", db.line().map(|l| l.to_string()));
    push("where_", db.where_().map(str::to_owned));
    extras
}

// ---- Parameters -------------------------------------------------------------------

/// `db-null`: NULL for a parameter of any type.
#[derive(Debug)]
struct PgNull;

impl ToSql for PgNull {
    fn to_sql(
        &self,
        _ty: &Type,
        _out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        Ok(IsNull::Yes)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// `interval`, in Postgres' binary layout (microseconds, days, months).
#[derive(Debug)]
struct Interval(pg::Interval);

impl ToSql for Interval {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        out.put_i64(self.0.micros);
        out.put_i32(self.0.days);
        out.put_i32(self.0.months);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Interval {
    fn from_sql(_ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        let bytes: [u8; 16] = raw
            .try_into()
            .map_err(|_| "unexpected binary format for Postgres INTERVAL")?;
        let [
            m0,
            m1,
            m2,
            m3,
            m4,
            m5,
            m6,
            m7,
            d0,
            d1,
            d2,
            d3,
            n0,
            n1,
            n2,
            n3,
        ] = bytes;
        Ok(Self(pg::Interval {
            micros: i64::from_be_bytes([m0, m1, m2, m3, m4, m5, m6, m7]),
            days: i32::from_be_bytes([d0, d1, d2, d3]),
            months: i32::from_be_bytes([n0, n1, n2, n3]),
        }))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
}

/// A decimal usable as a range bound (`numrange`), like Spin's `RangeableDecimal`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
struct RangeableDecimal(rust_decimal::Decimal);

impl ToSql for RangeableDecimal {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        self.0.to_sql(ty, out)
    }

    fn accepts(ty: &Type) -> bool {
        <rust_decimal::Decimal as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for RangeableDecimal {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(Self(rust_decimal::Decimal::from_sql(ty, raw)?))
    }

    fn accepts(ty: &Type) -> bool {
        <rust_decimal::Decimal as FromSql>::accepts(ty)
    }
}

impl Normalizable for RangeableDecimal {
    fn normalize<S: BoundSided>(bound: RangeBound<S, Self>) -> RangeBound<S, Self> {
        bound
    }
}

type WitRange<T> = (Option<(T, RangeBoundKind)>, Option<(T, RangeBoundKind)>);

fn bound_type(kind: RangeBoundKind) -> BoundType {
    match kind {
        RangeBoundKind::Inclusive => BoundType::Inclusive,
        RangeBoundKind::Exclusive => BoundType::Exclusive,
    }
}

fn bound_kind(bound: BoundType) -> RangeBoundKind {
    match bound {
        BoundType::Inclusive => RangeBoundKind::Inclusive,
        BoundType::Exclusive => RangeBoundKind::Exclusive,
    }
}

fn range_to_pg<T: Normalizable + PartialOrd>((lower, upper): WitRange<T>) -> Range<T> {
    Range::new(
        lower.map(|(v, kind)| RangeBound::new(v, bound_type(kind))),
        upper.map(|(v, kind)| RangeBound::new(v, bound_type(kind))),
    )
}

fn range_from_pg<T: Normalizable + PartialOrd, W>(
    range: &Range<T>,
    convert: impl Fn(&T) -> W,
) -> WitRange<W> {
    (
        range
            .lower()
            .map(|b| (convert(&b.value), bound_kind(b.type_))),
        range
            .upper()
            .map(|b| (convert(&b.value), bound_kind(b.type_))),
    )
}

fn decimal(text: &str) -> anyhow::Result<rust_decimal::Decimal> {
    rust_decimal::Decimal::from_str_exact(text).with_context(|| format!("invalid decimal {text}"))
}

fn date(&(y, m, d): &(i32, u8, u8)) -> anyhow::Result<chrono::NaiveDate> {
    chrono::NaiveDate::from_ymd_opt(y, m.into(), d.into())
        .ok_or_else(|| anyhow!("invalid date y={y}, m={m}, d={d}"))
}

fn time(&(h, min, s, ns): &(u8, u8, u8, u32)) -> anyhow::Result<chrono::NaiveTime> {
    chrono::NaiveTime::from_hms_nano_opt(h.into(), min.into(), s.into(), ns)
        .ok_or_else(|| anyhow!("invalid time {h}:{min}:{s}:{ns}"))
}

/// A parameter as the tokio-postgres value Spin binds for it.
fn to_sql_parameter(value: &ParameterValue) -> anyhow::Result<Box<dyn ToSql + Send + Sync>> {
    Ok(match value {
        ParameterValue::Boolean(v) => Box::new(*v),
        ParameterValue::Int8(v) => Box::new(*v),
        ParameterValue::Int16(v) => Box::new(*v),
        ParameterValue::Int32(v) => Box::new(*v),
        ParameterValue::Int64(v) => Box::new(*v),
        ParameterValue::Floating32(v) => Box::new(*v),
        ParameterValue::Floating64(v) => Box::new(*v),
        ParameterValue::Str(v) => Box::new(v.clone()),
        ParameterValue::Binary(v) => Box::new(v.clone()),
        ParameterValue::Date(v) => Box::new(date(v)?),
        ParameterValue::Time(v) => Box::new(time(v)?),
        ParameterValue::Datetime((y, mon, d, h, min, s, ns)) => Box::new(
            chrono::NaiveDateTime::new(date(&(*y, *mon, *d))?, time(&(*h, *min, *s, *ns))?),
        ),
        ParameterValue::Timestamp(v) => Box::new(
            chrono::DateTime::<chrono::Utc>::from_timestamp(*v, 0)
                .ok_or_else(|| anyhow!("invalid epoch timestamp {v}"))?,
        ),
        ParameterValue::Uuid(v) => {
            Box::new(uuid::Uuid::parse_str(v).with_context(|| format!("invalid UUID {v}"))?)
        }
        ParameterValue::Jsonb(v) => Box::new(
            serde_json::from_slice::<serde_json::Value>(v)
                .with_context(|| format!("invalid JSON {}", String::from_utf8_lossy(v)))?,
        ),
        ParameterValue::Decimal(v) => Box::new(decimal(v)?),
        ParameterValue::RangeInt32(v) => Box::new(range_to_pg(*v)),
        ParameterValue::RangeInt64(v) => Box::new(range_to_pg(*v)),
        ParameterValue::RangeDecimal((lower, upper)) => {
            let bound = |b: &Option<(String, RangeBoundKind)>| {
                b.as_ref()
                    .map(|(v, kind)| Ok::<_, anyhow::Error>((RangeableDecimal(decimal(v)?), *kind)))
                    .transpose()
            };
            Box::new(range_to_pg((bound(lower)?, bound(upper)?)))
        }
        ParameterValue::ArrayInt32(v) => Box::new(v.clone()),
        ParameterValue::ArrayInt64(v) => Box::new(v.clone()),
        ParameterValue::ArrayDecimal(v) => Box::new(
            v.iter()
                .map(|d| d.as_deref().map(decimal).transpose())
                .collect::<anyhow::Result<Vec<_>>>()?,
        ),
        ParameterValue::ArrayStr(v) => Box::new(v.clone()),
        ParameterValue::Interval(v) => Box::new(Interval(*v)),
        ParameterValue::DbNull => Box::new(PgNull),
    })
}

fn to_sql_parameters(
    params: &[ParameterValue],
) -> anyhow::Result<Vec<Box<dyn ToSql + Send + Sync>>> {
    params.iter().map(to_sql_parameter).collect()
}

// ---- Results ----------------------------------------------------------------------

/// The WIT data type Spin reports for a column type.
fn data_type(ty: &Type) -> DbDataType {
    match *ty {
        Type::BOOL => DbDataType::Boolean,
        Type::BYTEA => DbDataType::Binary,
        Type::FLOAT4 => DbDataType::Floating32,
        Type::FLOAT8 => DbDataType::Floating64,
        Type::INT2 => DbDataType::Int16,
        Type::INT4 => DbDataType::Int32,
        Type::INT8 => DbDataType::Int64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR => DbDataType::Str,
        Type::TIMESTAMP | Type::TIMESTAMPTZ => DbDataType::Datetime,
        Type::DATE => DbDataType::Date,
        Type::TIME => DbDataType::Time,
        Type::UUID => DbDataType::Uuid,
        Type::JSONB => DbDataType::Jsonb,
        Type::NUMERIC => DbDataType::Decimal,
        Type::INT4_RANGE => DbDataType::RangeInt32,
        Type::INT8_RANGE => DbDataType::RangeInt64,
        Type::NUM_RANGE => DbDataType::RangeDecimal,
        Type::INT4_ARRAY => DbDataType::ArrayInt32,
        Type::INT8_ARRAY => DbDataType::ArrayInt64,
        Type::NUMERIC_ARRAY => DbDataType::ArrayDecimal,
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY => DbDataType::ArrayStr,
        Type::INTERVAL => DbDataType::Interval,
        _ => DbDataType::Other(ty.name().to_owned()),
    }
}

fn infer_columns(row: &Row) -> Vec<Column> {
    row.columns()
        .iter()
        .map(|c| Column {
            name: c.name().to_owned(),
            data_type: data_type(c.type_()),
        })
        .collect()
}

/// Any value, as its raw binary representation (`db-value::unsupported`).
struct Other(Vec<u8>);

impl<'a> FromSql<'a> for Other {
    fn from_sql(_ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(Self(raw.to_vec()))
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

/// Reads column `index` as `T` (NULL is `db-null`) and converts it.
fn value<'a, T: FromSql<'a>>(
    row: &'a Row,
    index: usize,
    convert: impl FnOnce(T) -> anyhow::Result<DbValue>,
) -> anyhow::Result<DbValue> {
    match row.try_get::<_, Option<T>>(index)? {
        Some(v) => convert(v),
        None => Ok(DbValue::DbNull),
    }
}

fn datetime(v: chrono::NaiveDateTime) -> anyhow::Result<DbValue> {
    use chrono::{Datelike, Timelike};
    Ok(DbValue::Datetime((
        v.year(),
        v.month().try_into()?,
        v.day().try_into()?,
        v.hour().try_into()?,
        v.minute().try_into()?,
        v.second().try_into()?,
        v.nanosecond(),
    )))
}

fn convert_entry(row: &Row, index: usize) -> anyhow::Result<DbValue> {
    use chrono::{Datelike, Timelike};
    let ok = |v| Ok(v);
    match *row.columns()[index].type_() {
        Type::BOOL => value(row, index, |v| ok(DbValue::Boolean(v))),
        Type::BYTEA => value(row, index, |v| ok(DbValue::Binary(v))),
        Type::FLOAT4 => value(row, index, |v| ok(DbValue::Floating32(v))),
        Type::FLOAT8 => value(row, index, |v| ok(DbValue::Floating64(v))),
        Type::INT2 => value(row, index, |v| ok(DbValue::Int16(v))),
        Type::INT4 => value(row, index, |v| ok(DbValue::Int32(v))),
        Type::INT8 => value(row, index, |v| ok(DbValue::Int64(v))),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR => value(row, index, |v| ok(DbValue::Str(v))),
        // As in Spin, both read as a naive date-time, which tokio-postgres only accepts
        // for TIMESTAMP: a TIMESTAMPTZ column fails the query.
        Type::TIMESTAMP | Type::TIMESTAMPTZ => value(row, index, datetime),
        Type::DATE => value(row, index, |v: chrono::NaiveDate| {
            Ok(DbValue::Date((
                v.year(),
                v.month().try_into()?,
                v.day().try_into()?,
            )))
        }),
        Type::TIME => value(row, index, |v: chrono::NaiveTime| {
            Ok(DbValue::Time((
                v.hour().try_into()?,
                v.minute().try_into()?,
                v.second().try_into()?,
                v.nanosecond(),
            )))
        }),
        Type::UUID => value(row, index, |v: uuid::Uuid| ok(DbValue::Uuid(v.to_string()))),
        Type::JSONB => value(row, index, |v: serde_json::Value| {
            Ok(DbValue::Jsonb(
                serde_json::to_vec(&v).context("invalid JSON from database")?,
            ))
        }),
        Type::NUMERIC => value(row, index, |v: rust_decimal::Decimal| {
            ok(DbValue::Decimal(v.to_string()))
        }),
        Type::INT4_RANGE => value(row, index, |v: Range<i32>| {
            ok(DbValue::RangeInt32(range_from_pg(&v, |b| *b)))
        }),
        Type::INT8_RANGE => value(row, index, |v: Range<i64>| {
            ok(DbValue::RangeInt64(range_from_pg(&v, |b| *b)))
        }),
        Type::NUM_RANGE => value(row, index, |v: Range<RangeableDecimal>| {
            ok(DbValue::RangeDecimal(range_from_pg(&v, |b| {
                b.0.to_string()
            })))
        }),
        Type::INT4_ARRAY => value(row, index, |v| ok(DbValue::ArrayInt32(v))),
        Type::INT8_ARRAY => value(row, index, |v| ok(DbValue::ArrayInt64(v))),
        Type::NUMERIC_ARRAY => value(row, index, |v: Vec<Option<rust_decimal::Decimal>>| {
            ok(DbValue::ArrayDecimal(
                v.iter().map(|d| d.map(|d| d.to_string())).collect(),
            ))
        }),
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY => {
            value(row, index, |v| ok(DbValue::ArrayStr(v)))
        }
        Type::INTERVAL => value(row, index, |v: Interval| ok(DbValue::Interval(v.0))),
        _ => value(row, index, |v: Other| ok(DbValue::Unsupported(v.0))),
    }
}

fn convert_row(row: &Row) -> anyhow::Result<Vec<DbValue>> {
    (0..row.len()).map(|i| convert_entry(row, i)).collect()
}

/// Roughly the host memory a value takes, for [`MAX_RESULT_BYTES`].
fn memory_size(value: &DbValue) -> usize {
    let heap = match value {
        DbValue::Str(s) | DbValue::Uuid(s) | DbValue::Decimal(s) => s.len(),
        DbValue::Binary(b) | DbValue::Jsonb(b) | DbValue::Unsupported(b) => b.len(),
        DbValue::RangeDecimal((lower, upper)) => {
            lower.as_ref().map_or(0, |b| b.0.len()) + upper.as_ref().map_or(0, |b| b.0.len())
        }
        DbValue::ArrayInt32(v) => v.len() * std::mem::size_of::<Option<i32>>(),
        DbValue::ArrayInt64(v) => v.len() * std::mem::size_of::<Option<i64>>(),
        DbValue::ArrayDecimal(v) | DbValue::ArrayStr(v) => v
            .iter()
            .map(|s| std::mem::size_of::<Option<String>>() + s.as_ref().map_or(0, String::len))
            .sum(),
        _ => 0,
    };
    std::mem::size_of::<DbValue>() + heap
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn denied(allowed: &[&str], address: &str) -> Option<String> {
        match check_address(&hosts(allowed), address) {
            Ok(_) => None,
            Err(Error::ConnectionFailed(why)) => Some(why),
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }

    #[test]
    fn addresses_follow_allowed_outbound_hosts() {
        let url = "postgres://postgres@127.0.0.1:5432/test";
        assert_eq!(denied(&["postgres://127.0.0.1:5432"], url), None);
        assert_eq!(denied(&["postgres://127.0.0.1"], url), None, "default port");
        assert_eq!(denied(&["postgres://*:5432"], url), None);
        assert_eq!(denied(&["*://*:*"], url), None);
        assert_eq!(
            denied(&["postgres://127.0.0.1:5433"], url).as_deref(),
            Some("address postgres://127.0.0.1:5432 is not permitted")
        );
        assert!(denied(&["http://127.0.0.1:5432"], url).is_some());
        assert!(denied(&[], url).is_some());
        // No port in the address: tokio-postgres fills in 5432.
        assert_eq!(
            denied(&["postgres://db.internal:5432"], "postgres://db.internal/x"),
            None
        );
        assert_eq!(
            denied(
                &["postgres://db.internal:5433"],
                "postgres://u@db.internal/x"
            )
            .as_deref(),
            Some("address postgres://db.internal:5432 is not permitted")
        );
        // Every host of a multi-host address must be allowed.
        let multi = "postgres://u@a:5432,b:5433/x";
        assert!(denied(&["postgres://a:5432"], multi).is_some());
        assert_eq!(
            denied(&["postgres://a:5432", "postgres://b:5433"], multi),
            None
        );
        // Key-value form, Unix sockets and garbage.
        assert_eq!(
            denied(
                &["postgres://localhost:5432"],
                "host=localhost user=postgres dbname=x"
            ),
            None
        );
        assert_eq!(
            denied(&["*://*:*"], "postgres:///x?host=/var/run/postgresql").as_deref(),
            Some("Unix sockets are not supported on WebAssembly")
        );
        assert!(denied(&["*://*:*"], "postgres://u@h:notaport/x").is_some());
    }

    #[test]
    fn parameters_convert_like_spin() {
        let ok = [
            ParameterValue::Boolean(true),
            ParameterValue::Int64(1),
            ParameterValue::Str("x".into()),
            ParameterValue::DbNull,
            ParameterValue::Date((2024, 2, 29)),
            ParameterValue::Datetime((2024, 2, 29, 23, 59, 59, 0)),
            ParameterValue::Timestamp(0),
            ParameterValue::Uuid("67e55044-10b1-426f-9247-bb680e5fe0c8".into()),
            ParameterValue::Jsonb(b"{\"a\":1}".to_vec()),
            ParameterValue::Decimal("12.50".into()),
            ParameterValue::RangeInt32((Some((1, RangeBoundKind::Inclusive)), None)),
            ParameterValue::RangeDecimal((None, Some(("2.5".into(), RangeBoundKind::Exclusive)))),
            ParameterValue::ArrayDecimal(vec![Some("1".into()), None]),
            ParameterValue::Interval(pg::Interval {
                micros: 1,
                days: 2,
                months: 3,
            }),
        ];
        assert!(to_sql_parameters(&ok).is_ok());
        for bad in [
            ParameterValue::Date((2023, 2, 29)),
            ParameterValue::Time((24, 0, 0, 0)),
            ParameterValue::Uuid("nope".into()),
            ParameterValue::Jsonb(b"{".to_vec()),
            ParameterValue::Decimal("1.2.3".into()),
        ] {
            assert!(to_sql_parameter(&bad).is_err(), "{bad:?}");
        }
        assert!(PgNull::accepts(&Type::INT4) && PgNull::accepts(&Type::TIMESTAMPTZ));
        assert!(
            !<i64 as ToSql>::accepts(&Type::INT4),
            "int64 needs BIGINT, as in Spin"
        );
    }
}
