//! WASI 0.2 HTTP: reading incoming requests, writing responses, and outbound requests.

use service_kit::http::{Request, Response};
use service_kit::ports::OutboundRequest;
use service_kit::{HttpClient, PortError};

use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};
use crate::bindings::wasi::io::streams::StreamError;

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

/// Sends `response` through `out`.
pub fn write_response(out: ResponseOutparam, response: Response) {
    let headers = fields(&response.headers).unwrap_or_else(|_| Fields::new());
    let outgoing = OutgoingResponse::new(headers);
    let _ = outgoing.set_status_code(response.status);
    let Ok(body) = outgoing.body() else { return };
    ResponseOutparam::set(out, Ok(outgoing));
    let _ = write_body(body, &response.body);
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

/// Outbound HTTP through `wasi:http/outgoing-handler`.
pub struct WasiHttpClient;

impl HttpClient for WasiHttpClient {
    fn send(&self, request: OutboundRequest) -> Result<Response, PortError> {
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
        let future =
            outgoing_handler::handle(outgoing, None).map_err(|e| PortError(format!("{e:?}")))?;
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
        let body = match incoming.consume() {
            Ok(body) => read_body(body).map_err(|e| match e {
                BodyError::TooLarge => PortError("response body too large".into()),
                BodyError::Io(detail) => PortError(detail),
            })?,
            Err(()) => Vec::new(),
        };
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}
