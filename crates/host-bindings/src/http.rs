//! WASI 0.2 HTTP: reading incoming requests, writing responses, and outbound requests.

use service_kit::http::{Request, Response};
use service_kit::ports::{OutboundRequest, ResponseStream};
use service_kit::stream::{ChunkSink, Streamed};
use service_kit::{Env, HttpClient, PortError, Service};

use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, IncomingResponse, Method, OutgoingBody, OutgoingRequest,
    OutgoingResponse, RequestOptions, ResponseOutparam, Scheme,
};
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
    let headers = request
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| {
            (
                name.to_ascii_lowercase(),
                String::from_utf8_lossy(&value).into_owned(),
            )
        })
        .collect();
    let body = match request.consume() {
        Ok(body) => read_body(body).map_err(|e| match e {
            BodyError::TooLarge => {
                Response::problem(413, "too-large", "Body too large", "the body exceeds 1 MiB")
            }
            BodyError::Io(detail) => Response::problem(400, "bad-body", "Unreadable body", &detail),
        })?,
        Err(()) => Vec::new(),
    };
    Ok(Request {
        method,
        path,
        query,
        headers,
        body,
    })
}

enum BodyError {
    TooLarge,
    Io(String),
}

fn read_body(body: IncomingBody) -> Result<Vec<u8>, BodyError> {
    let mut bytes = Vec::new();
    {
        let stream = body
            .stream()
            .map_err(|()| BodyError::Io("body stream unavailable".into()))?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    bytes.extend_from_slice(&chunk);
                    if bytes.len() > MAX_BODY {
                        return Err(BodyError::TooLarge);
                    }
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(BodyError::Io(e.to_debug_string()));
                }
            }
        }
    }
    IncomingBody::finish(body);
    Ok(bytes)
}

/// Answers `request` with `service` (streamed when it streams that route), then runs the
/// service's after-response work while the caller already has its answer.
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
    service.after_response(env);
}

/// Sends `response` through `out`.
pub fn write_response(out: ResponseOutparam, response: Response) {
    if let Some(body) = start_response(out, response.status, &response.headers) {
        let _ = write_body(body, &response.body);
    }
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
/// How long a call may wait for the answer's head: a service that has not started to answer
/// by then is overloaded or stuck, and the caller answers 503 instead of waiting on.
const FIRST_BYTE_TIMEOUT_NS: u64 = 10_000_000_000;
/// The longest silence inside an answer's body (live streams send a keep-alive every
/// `stream_heartbeat_ms`, 15 s by default).
const BETWEEN_BYTES_TIMEOUT_NS: u64 = 60_000_000_000;

/// The time-outs every outbound call runs with.
fn request_options() -> RequestOptions {
    let options = RequestOptions::new();
    // A host that cannot honour a time-out refuses to set it; the call then runs without.
    let _ = options.set_connect_timeout(Some(CONNECT_TIMEOUT_NS));
    let _ = options.set_first_byte_timeout(Some(FIRST_BYTE_TIMEOUT_NS));
    let _ = options.set_between_bytes_timeout(Some(BETWEEN_BYTES_TIMEOUT_NS));
    options
}

/// Outbound HTTP through `wasi:http/outgoing-handler`, each call bounded by time-outs.
pub struct WasiHttpClient;

impl HttpClient for WasiHttpClient {
    fn open(&self, request: OutboundRequest) -> Result<Box<dyn ResponseStream>, PortError> {
        let (scheme, rest) = request
            .url
            .split_once("://")
            .ok_or_else(|| PortError(format!("not an absolute URL: {}", request.url)))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let outgoing = OutgoingRequest::new(fields(&request.headers).map_err(PortError)?);
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
        let future = outgoing_handler::handle(outgoing, Some(request_options()))
            .map_err(|e| PortError(format!("{e:?}")))?;
        write_body(body, &request.body).map_err(PortError)?;
        future.subscribe().block();
        let incoming = match future.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(code))) => return Err(PortError(format!("{code:?}"))),
            Some(Err(())) | None => return Err(PortError("response already taken".into())),
        };
        let status = incoming.status();
        let headers = incoming
            .headers()
            .entries()
            .into_iter()
            .map(|(n, v)| {
                (
                    n.to_ascii_lowercase(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect();
        let body = incoming
            .consume()
            .map_err(|()| PortError("response body already taken".into()))?;
        let stream = body
            .stream()
            .map_err(|()| PortError("response body stream unavailable".into()))?;
        Ok(Box::new(WasiResponseStream {
            status,
            headers,
            stream: Some(stream),
            body: Some(body),
            _response: incoming,
        }))
    }
}

/// An outbound response being read. Fields drop in order: stream, body, response.
struct WasiResponseStream {
    status: u16,
    headers: Vec<(String, String)>,
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
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => Ok(Some(chunk)),
            Err(StreamError::Closed) => {
                self.stream = None;
                if let Some(body) = self.body.take() {
                    IncomingBody::finish(body);
                }
                Ok(None)
            }
            Err(StreamError::LastOperationFailed(e)) => Err(PortError(e.to_debug_string())),
        }
    }
}
