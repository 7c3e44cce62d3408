//! WASI 0.2 HTTP: reading incoming requests, writing responses, and outbound requests.

use service_kit::http::{BODY_TIMEOUT, INCOMPLETE_BODY, Request, Response};
use service_kit::ports::{OutboundRequest, ResponseStream, read_whole};
use service_kit::stream::{ChunkSink, Streamed};
use service_kit::{Env, HttpClient, PortError, Service, Services};

use crate::bindings::wasi::clocks::monotonic_clock;
use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingBody, IncomingRequest, IncomingResponse,
    Method, OutgoingBody, OutgoingRequest, OutgoingResponse, RequestOptions, ResponseOutparam,
    Scheme,
};
use crate::bindings::wasi::io::poll::{Pollable, poll};
use crate::bindings::wasi::io::streams::{InputStream, OutputStream, StreamError};

/// The largest request or response body read, in bytes.
const MAX_BODY: usize = 1024 * 1024;
/// The most bytes one blocking write may carry.
const WRITE_CHUNK: usize = 4096;

/// Converts an incoming request; a body over [`MAX_BODY`] is answered 413.
pub fn read_request(request: IncomingRequest) -> Result<Request, Response> {
    let method = method_name(&request.method());
    let path_with_query = request.path_with_query().unwrap_or_else(|| "/".into());
    let (path, query) = match path_with_query.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (path_with_query, String::new()),
    };
    let headers = header_list(&request.headers());
    let body = match request.consume() {
        Ok(_) if declares_no_body(&method, &headers) => Vec::new(),
        Ok(body) => read_body(body).map_err(|e| match e {
            BodyError::TooLarge => {
                Response::problem(413, "too-large", "Body too large", "the body exceeds 1 MiB")
            }
            BodyError::TimedOut => Response::problem(
                408,
                BODY_TIMEOUT,
                "Request body too slow",
                "the body did not arrive in full within 5 s",
            ),
            BodyError::Io(detail) => Response::problem(400, "bad-body", "Unreadable body", &detail),
        })?,
        Err(()) => Vec::new(),
    };
    start_budget(&headers);
    if let Some(problem) = length_mismatch(&headers, body.len()) {
        return Err(Response::problem(
            503,
            INCOMPLETE_BODY,
            "Request body lost",
            &format!("{problem}: part of the body was lost on the way; send the request again"),
        )
        .with_header("retry-after", "1"));
    }
    Ok(Request {
        method,
        path,
        query,
        headers,
        body,
    })
}

/// Whether a request says it has no body: `content-length: 0`, or a `GET` or `HEAD` without
/// a `content-length` or `transfer-encoding`. Its body is not waited for: wasmCloud 1.9.2's
/// transport can lose the end of an empty body, which would hold the request until the
/// body time-out.
fn declares_no_body(method: &str, headers: &[(String, String)]) -> bool {
    let header = |wanted: &str| {
        headers
            .iter()
            .find(|(name, _)| name == wanted)
            .map(|(_, v)| v.trim())
    };
    match header("content-length") {
        Some(length) => length == "0",
        None => matches!(method, "GET" | "HEAD") && header("transfer-encoding").is_none(),
    }
}

enum BodyError {
    TooLarge,
    TimedOut,
    Io(String),
}

/// How long a request body may take to arrive in full.
const BODY_TIMEOUT_NS: u64 = 5_000_000_000;

fn read_body(body: IncomingBody) -> Result<Vec<u8>, BodyError> {
    let mut bytes = Vec::new();
    {
        let stream = body
            .stream()
            .map_err(|()| BodyError::Io("body stream unavailable".into()))?;
        let deadline = monotonic_clock::now().saturating_add(BODY_TIMEOUT_NS);
        while let Some(chunk) = read_chunk(&stream, deadline)? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > MAX_BODY {
                return Err(BodyError::TooLarge);
            }
        }
    }
    IncomingBody::finish(body);
    Ok(bytes)
}

/// The next chunk of `stream` (`None` at its end), waiting at most until `deadline`
/// (monotonic-clock nanoseconds). A body that stops arriving (a peer gone quiet, a message a
/// transport lost) ends in [`BodyError::TimedOut`] instead of blocking the instance for good.
fn read_chunk(stream: &InputStream, deadline: u64) -> Result<Option<Vec<u8>>, BodyError> {
    loop {
        match stream.read(64 * 1024) {
            Ok(chunk) if !chunk.is_empty() => return Ok(Some(chunk)),
            Ok(_) => wait_until(&stream.subscribe(), deadline)?,
            Err(StreamError::Closed) => return Ok(None),
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(BodyError::Io(e.to_debug_string()));
            }
        }
    }
}

/// Waits for `ready` or `deadline`, whichever comes first; the deadline is an error.
fn wait_until(ready: &Pollable, deadline: u64) -> Result<(), BodyError> {
    let timer = monotonic_clock::subscribe_instant(deadline);
    if poll(&[ready, &timer]).contains(&0) {
        Ok(())
    } else {
        Err(BodyError::TimedOut)
    }
}

/// Why a body of `received` bytes does not match its `content-length` header, if it does not:
/// a transport that lost part of it must not pass for a shorter message.
fn length_mismatch(headers: &[(String, String)], received: usize) -> Option<String> {
    let declared = headers
        .iter()
        .find(|(name, _)| name == "content-length")?
        .1
        .trim();
    match declared.parse::<usize>() {
        Ok(expected) if expected == received => None,
        _ => Some(format!(
            "content-length is {declared} but {received} bytes arrived"
        )),
    }
}

/// Answers `request` with `service` (streamed when it streams that route); the caller has
/// its answer when this returns.
pub fn answer<S: Service>(service: &S, request: IncomingRequest, out: ResponseOutparam, env: &Env) {
    match read_request(request) {
        Ok(request) => match service.stream(&request, env) {
            Some(streamed) => write_streamed(out, streamed, env),
            None => {
                let correlation_id = request.correlation_id().map(str::to_owned);
                let response = service.handle(request, env);
                write_response(
                    out,
                    response.without_internals(service.name(), correlation_id.as_deref()),
                );
            }
        },
        Err(problem) => write_response(out, problem),
    }
}

/// Answers one call made as a function (a service composed with its caller): the request
/// as its caller sent it, `path_with_query` split as an HTTP request's would be.
pub fn answer_call<S: Service>(
    service: &S,
    method: String,
    path_with_query: &str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    env: &Env,
) -> Response {
    let (path, query) = path_with_query
        .split_once('?')
        .unwrap_or((path_with_query, ""));
    start_budget(&headers);
    let request = Request {
        method,
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
        body,
    };
    let correlation_id = request.correlation_id().map(str::to_owned);
    service
        .handle(request, env)
        .without_internals(service.name(), correlation_id.as_deref())
}

/// Sends `response` through `out`, with its `content-length` so that a receiver can tell a
/// whole body from a cut one.
pub fn write_response(out: ResponseOutparam, response: Response) {
    let headers = if matches!(response.status, 100..=199 | 204 | 304) {
        response.headers
    } else {
        with_content_length(response.headers, response.body.len())
    };
    if let Some(body) = start_response(out, response.status, &headers) {
        let _ = write_body(body, &response.body);
    }
}

/// `headers` with `content-length: length` (replacing any given).
fn with_content_length(mut headers: Vec<(String, String)>, length: usize) -> Vec<(String, String)> {
    headers.retain(|(name, _)| !name.eq_ignore_ascii_case("content-length"));
    headers.push(("content-length".into(), length.to_string()));
    headers
}

/// Sends a streamed answer through `out`: the head at once, then the body as `env`-using
/// code produces it, flushed chunk by chunk.
pub fn write_streamed(out: ResponseOutparam, streamed: Streamed, env: &Env) {
    let Some(body) = start_response(out, streamed.status, &streamed.headers) else {
        return;
    };
    if let Ok(stream) = body.write() {
        streamed.body.run(env, &mut WasiSink { stream: &stream });
    }
    let _ = OutgoingBody::finish(body, None);
}

/// Sets the response head on `out` and returns the body to write.
fn start_response(
    out: ResponseOutparam,
    status: u16,
    headers: &[(String, String)],
) -> Option<OutgoingBody> {
    let outgoing = OutgoingResponse::new(fields(headers).unwrap_or_else(|_| Fields::new()));
    let _ = outgoing.set_status_code(status);
    let body = outgoing.body().ok()?;
    ResponseOutparam::set(out, Ok(outgoing));
    Some(body)
}

/// Writes streamed chunks to a response body.
struct WasiSink<'a> {
    stream: &'a OutputStream,
}

impl ChunkSink for WasiSink<'_> {
    fn send(&mut self, chunk: &[u8]) -> Result<(), PortError> {
        for part in chunk.chunks(WRITE_CHUNK) {
            self.stream
                .blocking_write_and_flush(part)
                .map_err(|e| PortError(format!("client gone: {e:?}")))?;
        }
        Ok(())
    }
}

fn write_body(body: OutgoingBody, bytes: &[u8]) -> Result<(), String> {
    {
        let stream = body
            .write()
            .map_err(|()| "body stream unavailable".to_string())?;
        for chunk in bytes.chunks(WRITE_CHUNK) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| format!("{e:?}"))?;
        }
    }
    OutgoingBody::finish(body, None).map_err(|e| format!("{e:?}"))
}

/// `fields` as (lower-case name, value) pairs.
fn header_list(fields: &Fields) -> Vec<(String, String)> {
    fields
        .entries()
        .into_iter()
        .map(|(name, value)| {
            (
                name.to_ascii_lowercase(),
                String::from_utf8_lossy(&value).into_owned(),
            )
        })
        .collect()
}

fn fields(headers: &[(String, String)]) -> Result<Fields, String> {
    let list: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(n, v)| (n.clone(), v.clone().into_bytes()))
        .collect();
    Fields::from_list(&list).map_err(|e| format!("{e:?}"))
}

fn method_name(method: &Method) -> String {
    match method {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(other) => other.to_ascii_uppercase(),
    }
}

fn method_of(name: &str) -> Method {
    match name {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_owned()),
    }
}

/// How long a call to another service may take to connect.
const CONNECT_TIMEOUT_NS: u64 = 2_000_000_000;
/// The longest silence inside an answer's body (live streams send a keep-alive every
/// `stream_heartbeat_ms`, 15 s by default).
const BETWEEN_BYTES_TIMEOUT_NS: u64 = 60_000_000_000;
/// How much later than this component's own deadline the host's time-out for the answer's
/// head fires: the component gives up first, so the failure it reports is its own.
const HOST_TIMEOUT_SLACK_NS: u64 = 1_000_000_000;

/// The host's time-outs for a call whose head is due `head_budget` ns from now.
fn request_options(head_budget: u64) -> RequestOptions {
    let options = RequestOptions::new();
    // A host that cannot honour a time-out refuses to set it; the call then runs without.
    let _ = options.set_connect_timeout(Some(CONNECT_TIMEOUT_NS));
    let _ = options.set_first_byte_timeout(Some(head_budget + HOST_TIMEOUT_SLACK_NS));
    let _ = options.set_between_bytes_timeout(Some(BETWEEN_BYTES_TIMEOUT_NS));
    options
}

/// Outbound HTTP through `wasi:http/outgoing-handler`, each call bounded by time-outs.
pub struct WasiHttpClient;

impl HttpClient for WasiHttpClient {
    fn open(&self, request: OutboundRequest) -> Result<Box<dyn ResponseStream>, PortError> {
        Ok(Box::new(start_call(request, false)?))
    }

    /// As [`HttpClient::open`], but the whole answer, head and body, must have arrived by
    /// the call's deadline ([`call_deadline`]): a buffered answer is a small document.
    /// A request whose body never arrived whole is sent once more: its receiver answered so
    /// ([`Response::body_not_received`]), or the host could not send the body
    /// ([`BODY_ABORTED`]). So is a `GET` whose answer's head arrived but whose body broke
    /// off (cut short, or failed): a read changes nothing, so asking twice is safe
    /// (wasmCloud 1.9.2's transport cuts answers under load and right after a deploy).
    /// An answer of the receiver's host instead of the receiver ([`Response::is_host_failure`]:
    /// its instance trapped) is no answer: an error, and for a `GET` a reason to ask again.
    fn send(&self, request: OutboundRequest) -> Result<Response, PortError> {
        match start_call(request.clone(), true) {
            Ok(stream) => match read_whole(Box::new(stream)).and_then(from_receiver) {
                Ok(answer) if !answer.body_not_received() => return Ok(answer),
                Ok(_) => {}
                Err(_) if request.method == "GET" => {}
                Err(e) => return Err(e),
            },
            Err(e) if e.0.starts_with(BODY_ABORTED) => {}
            Err(e) => return Err(e),
        }
        read_whole(Box::new(start_call(request, true)?)).and_then(from_receiver)
    }
}

/// Calls into other services over HTTP: each a request of its own to the address
/// `service_url` gives (local service chaining on Spin, a listener's address on wasmCloud).
pub struct HttpServices {
    /// The base URL of a service, e.g. `http://orders.spin.internal`.
    pub service_url: fn(&str) -> String,
}

impl HttpServices {
    fn addressed(&self, service: &str, mut request: OutboundRequest) -> OutboundRequest {
        request.url = format!("{}{}", (self.service_url)(service), request.url);
        request
    }
}

impl Services for HttpServices {
    fn call(&self, service: &str, request: OutboundRequest) -> Result<Response, PortError> {
        WasiHttpClient.send(self.addressed(service, request))
    }

    fn open(
        &self,
        service: &str,
        request: OutboundRequest,
    ) -> Result<Box<dyn ResponseStream>, PortError> {
        WasiHttpClient.open(self.addressed(service, request))
    }
}

/// `answer` when the receiver gave it; an error when its host did because the receiver's
/// instance failed.
fn from_receiver(answer: Response) -> Result<Response, PortError> {
    if answer.is_host_failure() {
        return Err(PortError(format!(
            "its instance failed: its host answered {}",
            answer.status
        )));
    }
    Ok(answer)
}

/// The longest wait for an answer's head, enforced by this component itself (a host whose
/// transport lost the call, as wasmCloud 1.9.2's wRPC over NATS can under load, never
/// answers): a service that has not started to answer by then is overloaded or stuck, and
/// the caller answers 503 instead of waiting on.
const HEAD_TIMEOUT_NS: u64 = 10_000_000_000;

/// The header carrying how long, in milliseconds, the caller waits for this request's
/// answer. A service gives its own calls less ([`BUDGET_MARGIN_NS`]), so down a chain each
/// callee gives up, and answers, before its caller does.
pub const BUDGET_HEADER: &str = "x-shop-budget-ms";

/// What a callee's budget leaves its caller to answer in.
const BUDGET_MARGIN_NS: u64 = 1_000_000_000;

std::thread_local! {
    /// When the request this instance serves must be answered (monotonic-clock ns), if its
    /// caller said so ([`BUDGET_HEADER`]). An instance serves one request.
    static ANSWER_BY: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// Starts the answer clock from the request's [`BUDGET_HEADER`], if it has one.
fn start_budget(headers: &[(String, String)]) {
    let budget_ms = headers
        .iter()
        .find(|(name, _)| name == BUDGET_HEADER)
        .and_then(|(_, value)| value.trim().parse::<u64>().ok());
    if let Some(ms) = budget_ms {
        let budget = ms.saturating_mul(1_000_000).min(HEAD_TIMEOUT_NS);
        ANSWER_BY.set(Some(monotonic_clock::now().saturating_add(budget)));
    }
}

/// When a call made now must have its answer: [`HEAD_TIMEOUT_NS`] from now, or sooner when
/// the request being served must itself be answered before that.
fn call_deadline() -> u64 {
    let now = monotonic_clock::now();
    let own = now.saturating_add(HEAD_TIMEOUT_NS);
    ANSWER_BY.get().map_or(own, |by| {
        own.min(by.saturating_sub(BUDGET_MARGIN_NS).max(now))
    })
}

/// Sends `request` and waits for the answer's head until the call's deadline
/// ([`call_deadline`], passed on in [`BUDGET_HEADER`]); the body is read by that deadline
/// too when `whole`, else with [`BETWEEN_BYTES_TIMEOUT_NS`] per read.
fn start_call(request: OutboundRequest, whole: bool) -> Result<WasiResponseStream, PortError> {
    let head_deadline = call_deadline();
    let head_budget = head_deadline.saturating_sub(monotonic_clock::now());
    if head_budget == 0 {
        return Err(PortError(format!(
            "no time left to call {}: the request being served is due",
            request.url
        )));
    }
    let (scheme, rest) = request
        .url
        .split_once("://")
        .ok_or_else(|| PortError(format!("not an absolute URL: {}", request.url)))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut headers =
        if request.body.is_empty() && matches!(request.method.as_str(), "GET" | "HEAD") {
            request.headers
        } else {
            with_content_length(request.headers, request.body.len())
        };
    headers.retain(|(name, _)| !name.eq_ignore_ascii_case(BUDGET_HEADER));
    headers.push((BUDGET_HEADER.into(), (head_budget / 1_000_000).to_string()));
    let outgoing = OutgoingRequest::new(fields(&headers).map_err(PortError)?);
    let scheme = if scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let set = outgoing.set_method(&method_of(&request.method)).is_ok()
        && outgoing.set_scheme(Some(&scheme)).is_ok()
        && outgoing.set_authority(Some(authority)).is_ok()
        && outgoing.set_path_with_query(Some(path)).is_ok();
    if !set {
        return Err(PortError(format!("invalid request target {}", request.url)));
    }
    let body = outgoing
        .body()
        .map_err(|()| PortError("request body unavailable".into()))?;
    let future = outgoing_handler::handle(outgoing, Some(request_options(head_budget)))
        .map_err(|e| PortError(format!("{e:?}")))?;
    write_body(body, &request.body).map_err(PortError)?;
    let incoming = wait_for_head(&future, head_deadline, !request.body.is_empty())?;
    let status = incoming.status();
    let headers = header_list(&incoming.headers());
    let body = incoming
        .consume()
        .map_err(|()| PortError("response body already taken".into()))?;
    let stream = body
        .stream()
        .map_err(|()| PortError("response body stream unavailable".into()))?;
    Ok(WasiResponseStream {
        status,
        headers,
        received: 0,
        deadline: whole.then_some(head_deadline),
        stream: Some(stream),
        body: Some(body),
        _response: incoming,
    })
}

/// How a call fails when the host could not send the request's body: wasmCloud 1.9.2's
/// http-client provider, when its wRPC transport loses the body on the way
/// (`infra/wasmcloud/README.md`), aborts the request (hyper's `BodyWriteAborted`) and
/// answers `HTTP-protocol-error`. The receiver then got an incomplete body, which it
/// refuses unread (`incomplete-body`), so the request may be sent again.
const BODY_ABORTED: &str = "request body not sent";

/// The answer's head, or an error when it has not come by `deadline`. A protocol error of
/// a request that carried a body is [`BODY_ABORTED`].
fn wait_for_head(
    future: &FutureIncomingResponse,
    deadline: u64,
    has_body: bool,
) -> Result<IncomingResponse, PortError> {
    wait_until(&future.subscribe(), deadline)
        .map_err(|_| PortError("no answer within the time-out".into()))?;
    match future.get() {
        Some(Ok(Ok(response))) => Ok(response),
        Some(Ok(Err(ErrorCode::HttpProtocolError))) if has_body => Err(PortError(format!(
            "{BODY_ABORTED} (ErrorCode::HttpProtocolError)"
        ))),
        Some(Ok(Err(code))) => Err(PortError(format!("{code:?}"))),
        Some(Err(())) | None => Err(PortError("response already taken".into())),
    }
}

/// An outbound response being read. Fields drop in order: stream, body, response.
struct WasiResponseStream {
    status: u16,
    headers: Vec<(String, String)>,
    /// Body bytes read so far, checked against `content-length` at the end.
    received: usize,
    /// When the whole body must have arrived; `None`: each read waits up to
    /// [`BETWEEN_BYTES_TIMEOUT_NS`].
    deadline: Option<u64>,
    stream: Option<InputStream>,
    body: Option<IncomingBody>,
    _response: IncomingResponse,
}

impl ResponseStream for WasiResponseStream {
    fn status(&self) -> u16 {
        self.status
    }

    fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, PortError> {
        let Some(stream) = &self.stream else {
            return Ok(None);
        };
        let deadline = self
            .deadline
            .unwrap_or_else(|| monotonic_clock::now().saturating_add(BETWEEN_BYTES_TIMEOUT_NS));
        match read_chunk(stream, deadline) {
            Ok(Some(chunk)) => {
                self.received += chunk.len();
                Ok(Some(chunk))
            }
            Ok(None) => {
                self.stream = None;
                if let Some(body) = self.body.take() {
                    IncomingBody::finish(body);
                }
                match length_mismatch(&self.headers, self.received) {
                    Some(problem) if !matches!(self.status, 204 | 304) => {
                        Err(PortError(format!("answer cut short: {problem}")))
                    }
                    _ => Ok(None),
                }
            }
            Err(BodyError::TimedOut) => Err(PortError("answer body stopped arriving".into())),
            Err(BodyError::Io(e)) => Err(PortError(e)),
            Err(BodyError::TooLarge) => Err(PortError("answer body too large".into())),
        }
    }
}
