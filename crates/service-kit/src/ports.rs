//! Ports: the small traits through which services use host capabilities.

use std::fmt;

/// A failure reported by a host capability (database, network, configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortError(pub String);

impl fmt::Display for PortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PortError {}

/// A value bound to, or read from, a SQL statement.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// A 64-bit signed integer.
    Integer(i64),
    /// A floating-point number (never used for money).
    Real(f64),
    /// UTF-8 text.
    Text(String),
    /// Raw bytes.
    Blob(Vec<u8>),
    /// SQL NULL.
    Null,
}

impl From<i64> for SqlValue {
    fn from(value: i64) -> Self {
        SqlValue::Integer(value)
    }
}

impl From<&str> for SqlValue {
    fn from(value: &str) -> Self {
        SqlValue::Text(value.to_owned())
    }
}

impl From<String> for SqlValue {
    fn from(value: String) -> Self {
        SqlValue::Text(value)
    }
}

impl From<Option<String>> for SqlValue {
    fn from(value: Option<String>) -> Self {
        value.map_or(SqlValue::Null, SqlValue::Text)
    }
}

/// The rows a statement returned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// One vector of values per row.
    pub rows: Vec<Vec<SqlValue>>,
}

/// The SQL database behind a [`Sql`] port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite (Spin's embedded default).
    Sqlite,
    /// PostgreSQL (many instances on one database).
    Postgres,
}

/// One SQL connection. Parameters are written `$1`, `$2`, ... and integer columns are
/// `BIGINT`, which both SQLite and Postgres accept.
pub trait Sql {
    /// Runs one statement with its parameters.
    fn execute(&self, statement: &str, params: &[SqlValue]) -> Result<Rows, PortError>;

    /// Which database this is.
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    /// Whether a transaction may read after it wrote (not where writes are buffered until
    /// commit, see [`crate::optimistic`]).
    fn reads_after_writes(&self) -> bool {
        true
    }

    /// Lets go of a pooled connection before the request waits on something else (another
    /// service, a timer); the next statement takes one again. Never called inside a
    /// transaction.
    fn release(&self) {}

    /// Sets how long this SQLite connection's statements wait for a lock. A connection
    /// may put it off until its next statement, so that a wait set back after some work
    /// costs nothing when no statement follows (an instance ends with its request).
    fn set_lock_wait(&self, ms: u32) -> Result<(), PortError> {
        self.execute(&crate::sql_text::busy_timeout(ms), &[])
            .map(drop)
    }
}

/// An HTTP request to another service or host.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    /// Method, e.g. "POST".
    pub method: String,
    /// Absolute URL, e.g. "http://orders.spin.internal/internal/events" (for [`Services`],
    /// the path and query only).
    pub url: String,
    /// Header names and values.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// An outbound response whose body is read as it arrives.
pub trait ResponseStream {
    /// Status code.
    fn status(&self) -> u16;
    /// Headers, names in lower case.
    fn headers(&self) -> &[(String, String)];
    /// The next chunk of the body, `None` at its end; waits for the chunk to arrive.
    fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, PortError>;
}

/// The largest response body [`HttpClient::send`] reads, in bytes.
pub const MAX_RESPONSE_BODY: usize = 1024 * 1024;

/// Outbound HTTP.
pub trait HttpClient {
    /// Sends a request; the answer's body is read from the returned stream.
    fn open(&self, request: OutboundRequest) -> Result<Box<dyn ResponseStream>, PortError>;

    /// Sends a request and reads the whole response (at most [`MAX_RESPONSE_BODY`] bytes).
    fn send(&self, request: OutboundRequest) -> Result<crate::http::Response, PortError> {
        read_whole(self.open(request)?)
    }
}

/// Reads the rest of `stream` into a response (at most [`MAX_RESPONSE_BODY`] bytes).
pub fn read_whole(mut stream: Box<dyn ResponseStream>) -> Result<crate::http::Response, PortError> {
    let mut body = Vec::new();
    while let Some(chunk) = stream.next_chunk()? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_RESPONSE_BODY {
            return Err(PortError("response body too large".into()));
        }
    }
    Ok(crate::http::Response {
        status: stream.status(),
        headers: stream.headers().to_vec(),
        body,
    })
}

/// Calls into the app's services: the gateway's forwards and price lookups.
///
/// A request's `url` is the path with its query (`/orders?limit=10`); the host decides how
/// it reaches the service (on Spin, a function call into the service composed with the
/// gateway, and local service chaining for an event stream; on wasmCloud, HTTP to the
/// service's listener).
pub trait Services {
    /// Sends `request` to `service` and reads its whole answer.
    fn call(
        &self,
        service: &str,
        request: OutboundRequest,
    ) -> Result<crate::http::Response, PortError>;

    /// Sends `request` to `service`; the answer's body is read as it arrives (an event
    /// stream).
    fn open(
        &self,
        service: &str,
        request: OutboundRequest,
    ) -> Result<Box<dyn ResponseStream>, PortError>;

    /// Lets every service called so far do its after-response work (see
    /// [`crate::Service::after_response`]) now that the caller has its answer, and, on Spin,
    /// relays the events they hand over between the composed services. Nothing to do where
    /// each call is a request of its own.
    fn finish(&self) {}
}

/// How far a [`Transport`] got with one batch of events.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// The receiver answered while the sender waited: its body is a
    /// [`crate::messaging::DeliveryAnswer`] when it could read the batch.
    Answered(crate::http::Response),
    /// Handed to the broker without waiting: the receiver's answer comes back later as an
    /// acknowledgement ([`crate::messaging::Messaging::acknowledge`]); until then the rows
    /// stay, and are sent again when their lease runs out.
    Sent,
}

/// Carries batches of signed events to other services (on Spin: handed to the gateway,
/// which relays them; on wasmCloud: a NATS publish); either way answered later by an
/// acknowledgement.
pub trait Transport {
    /// Hands `batch` (a JSON array of envelopes) to `destination`'s event handler; the
    /// reason when it could not. `correlation_id` is the first envelope's, for the logs.
    fn deliver(
        &self,
        destination: &str,
        batch: Vec<u8>,
        correlation_id: &str,
    ) -> Result<Delivery, String>;

    /// How long rows claimed for a delivery are left alone before any sender may send them
    /// again: the longest an answer may take to come. By default 30 s, for an answer given
    /// while the sender waits (a whole batch applied by the receiver).
    fn answer_wait_ms(&self) -> i64 {
        30_000
    }
}

/// A key-value store with atomic counters (Spin's key-value store, wasmCloud's keyvalue
/// provider), for data that may be lost or approximate, like request counts.
pub trait KeyValue {
    /// Adds `delta` to the counter at `key` (missing counts as 0) and returns the new value.
    fn increment(&self, key: &str, delta: i64) -> Result<i64, PortError>;

    /// Removes `key`; removing a missing key is not an error.
    fn delete(&self, key: &str) -> Result<(), PortError>;
}

/// Read-only configuration (Spin variables, wasmCloud config).
pub trait Config {
    /// The value of `key`, or `None` when it is not set.
    fn get(&self, key: &str) -> Result<Option<String>, PortError>;
}

/// The ports a service is given for one request.
pub struct Env<'a> {
    /// The service's SQL database.
    pub sql: &'a dyn Sql,
    /// Calls into the other services.
    pub services: &'a dyn Services,
    /// Configuration.
    pub config: &'a dyn Config,
    /// How events reach other services.
    pub transport: &'a dyn Transport,
    /// The key-value store.
    pub kv: &'a dyn KeyValue,
}
