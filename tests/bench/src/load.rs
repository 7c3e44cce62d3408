//! The load generator: N keep-alive HTTP/1.1 connections, each sending its request again
//! as soon as the previous answer is read, for a fixed time or a fixed count. Every
//! request's latency is kept, so percentiles are exact. A connection whose request was
//! shed (503) waits as the answer's `Retry-After-Ms` asks before sending again, as a
//! well-behaved client does.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// The request one connection sends over and over, and the status it must get.
#[derive(Debug, Clone)]
pub struct Workload {
    /// HTTP method.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// Headers besides `host`.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The request body.
    pub body: Bytes,
    /// The status a successful answer has; any other counts as an error.
    pub expect: StatusCode,
}

impl Workload {
    /// `GET path`, expecting 200.
    pub fn get(path: &str) -> Self {
        Self {
            method: Method::GET,
            path: path.to_owned(),
            headers: Vec::new(),
            body: Bytes::new(),
            expect: StatusCode::OK,
        }
    }
}

/// When a run ends.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// Send for `warmup` without recording, then record for `measure`.
    Timed {
        /// Unrecorded time first (connections, caches, pools warm up).
        warmup: Duration,
        /// The measured window.
        measure: Duration,
    },
    /// Each connection sends exactly this many requests, all recorded.
    Count(usize),
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Connections used.
    pub connections: usize,
    /// Recorded answers with the expected status.
    pub ok: u64,
    /// Recorded answers with another status (503 aside), or failed requests.
    pub errors: u64,
    /// Latency of every recorded 503 (load shed), sorted.
    pub shed: Vec<Duration>,
    /// The measured window.
    pub elapsed: Duration,
    /// Latency of every recorded successful request, sorted.
    pub latencies: Vec<Duration>,
}

impl LoadResult {
    /// Successful requests per second.
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// The `q` quantile (0..=1) of the latencies (nearest rank), zero when nothing was
    /// recorded.
    pub fn percentile(&self, q: f64) -> Duration {
        percentile(&self.latencies, q)
    }
}

/// The `q` quantile (0..=1) of sorted `latencies` (nearest rank), zero when empty.
pub fn percentile(latencies: &[Duration], q: f64) -> Duration {
    if latencies.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * latencies.len() as f64).ceil() as usize;
    latencies[rank.clamp(1, latencies.len()) - 1]
}

/// What one connection recorded.
#[derive(Default)]
struct ConnectionRecord {
    ok: u64,
    errors: u64,
    latencies: Vec<Duration>,
    shed: Vec<Duration>,
    first_error: Option<String>,
}

/// Runs `workloads.len()` connections to `addr`, connection `i` sending `workloads[i]`.
/// A timed run where no request completed in the window returns 0 successes (and says so
/// on stderr); a counted run where none succeeded fails.
pub async fn run(addr: SocketAddr, workloads: Vec<Workload>, stop: Stop) -> Result<LoadResult> {
    let connections = workloads.len();
    let started = Instant::now();
    let (record_from, deadline) = match stop {
        Stop::Timed { warmup, measure } => (started + warmup, Some(started + warmup + measure)),
        Stop::Count(_) => (started, None),
    };
    let count = match stop {
        Stop::Count(count) => Some(count),
        Stop::Timed { .. } => None,
    };
    let tasks: Vec<_> = workloads
        .into_iter()
        .map(|workload| tokio::spawn(connection(addr, workload, record_from, deadline, count)))
        .collect();
    let mut total = ConnectionRecord::default();
    for task in tasks {
        let record = task.await.context("a load connection panicked")?;
        total.ok += record.ok;
        total.errors += record.errors;
        total.latencies.extend(record.latencies);
        total.shed.extend(record.shed);
        if total.first_error.is_none() {
            total.first_error = record.first_error;
        }
    }
    let elapsed = match deadline {
        Some(deadline) => deadline - record_from,
        None => started.elapsed(),
    };
    if let Some(error) = &total.first_error {
        eprintln!("[bench] {} errors; the first: {error}", total.errors);
    }
    if total.ok == 0 {
        let why = total.first_error.map_or_else(
            || "no request completed in the measured window".to_owned(),
            |error| format!("the first error: {error}"),
        );
        match stop {
            // A timed run where nothing completed is a figure (0 req/s), not a failure.
            Stop::Timed { .. } => eprintln!(
                "[bench] 0 requests recorded on {connections} connections to {addr} ({} errors; {why})",
                total.errors
            ),
            Stop::Count(_) => bail!(
                "0 requests recorded on {connections} connections to {addr} ({} errors; {why})",
                total.errors
            ),
        }
    }
    total.latencies.sort_unstable();
    total.shed.sort_unstable();
    Ok(LoadResult {
        connections,
        ok: total.ok,
        errors: total.errors,
        shed: total.shed,
        elapsed,
        latencies: total.latencies,
    })
}

type Sender = http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Result<Sender> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One keep-alive connection's loop; reconnects after a failed request.
async fn connection(
    addr: SocketAddr,
    workload: Workload,
    record_from: Instant,
    deadline: Option<Instant>,
    count: Option<usize>,
) -> ConnectionRecord {
    let mut record = ConnectionRecord::default();
    let mut sender: Option<Sender> = None;
    let mut sent = 0usize;
    loop {
        if count.is_some_and(|count| sent >= count)
            || deadline.is_some_and(|deadline| Instant::now() >= deadline)
        {
            return record;
        }
        sent += 1;
        let started = Instant::now();
        let outcome = async {
            let conn = match &mut sender {
                Some(conn) => conn,
                None => sender.insert(connect(addr).await?),
            };
            conn.ready().await?;
            let mut request = Request::builder()
                .method(workload.method.clone())
                .uri(&workload.path)
                .header(http::header::HOST, addr.to_string());
            for (name, value) in &workload.headers {
                request = request.header(name, value);
            }
            let response = conn
                .send_request(request.body(Full::new(workload.body.clone()))?)
                .await?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get("retry-after-ms")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .map(Duration::from_millis);
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, retry_after, body))
        }
        .await;
        let finished = Instant::now();
        let latency = finished - started;
        // A request counts in the window it completes in (as wrk counts), so runs whose
        // latency exceeds the warm-up still record what completed.
        let recorded =
            finished >= record_from && deadline.is_none_or(|deadline| finished <= deadline);
        match outcome {
            Ok((status, _, _)) if status == workload.expect => {
                if recorded {
                    record.ok += 1;
                    record.latencies.push(latency);
                }
            }
            Ok((StatusCode::SERVICE_UNAVAILABLE, retry_after, _)) => {
                if recorded {
                    record.shed.push(latency);
                }
                if let Some(wait) = retry_after {
                    tokio::time::sleep(wait).await;
                }
            }
            Ok((status, _, body)) => {
                if recorded {
                    record.errors += 1;
                }
                record
                    .first_error
                    .get_or_insert_with(|| format!("{status}: {}", String::from_utf8_lossy(&body)));
            }
            Err(e) => {
                if recorded {
                    record.errors += 1;
                }
                record.first_error.get_or_insert_with(|| format!("{e:#}"));
                sender = None;
            }
        }
    }
}
