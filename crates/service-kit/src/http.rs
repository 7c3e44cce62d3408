//! Host-neutral HTTP requests and responses, JSON bodies and problem+json errors.

use serde::Serialize;
use serde_json::Value;
use shop_domain::validation::ValidationError;

/// The header carrying the correlation id through requests, events and logs.
pub const CORRELATION_HEADER: &str = "x-correlation-id";
/// The header the gateway uses to tell services who is calling (after authentication).
pub const ACTOR_HEADER: &str = "x-shop-actor";
/// The header the gateway uses to tell services the caller's role.
pub const ROLE_HEADER: &str = "x-shop-role";

/// An incoming HTTP request.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Upper-case method, e.g. "GET".
    pub method: String,
    /// Path without query, e.g. "/api/v1/orders".
    pub path: String,
    /// Raw query string without '?', possibly empty.
    pub query: String,
    /// Headers with lower-case names.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Request {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The decoded value of query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<String> {
        query_pairs(&self.query)
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// The path split on '/', without empty segments.
    pub fn segments(&self) -> Vec<&str> {
        self.path.split('/').filter(|s| !s.is_empty()).collect()
    }

    /// The correlation id sent with the request, if any.
    pub fn correlation_id(&self) -> Option<&str> {
        self.header(CORRELATION_HEADER)
    }

    /// The caller's `Idempotency-Key` scoped to who calls (the gateway's actor), so that
    /// two callers' keys never meet; `None` without a key.
    pub fn scoped_idempotency_key(&self) -> Option<String> {
        self.header("idempotency-key")
            .map(|key| format!("{}\n{key}", self.header(ACTOR_HEADER).unwrap_or_default()))
    }

    /// The body parsed as JSON, or a 400 problem answer.
    pub fn json(&self) -> Result<Value, Response> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Response::problem(400, "malformed-json", "Malformed JSON body", &e.to_string())
        })
    }
}

/// Decodes an `application/x-www-form-urlencoded` query string.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Percent-encodes `value` for use in a path segment or query value.
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes and '+' (as space); invalid escapes are kept as they are.
pub fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `detail` of every 5xx problem a client sees; what failed is in the service's log
/// under the request's correlation id.
pub const SERVER_ERROR_DETAIL: &str = "The service could not complete the request; its log has the cause under this request's correlation id.";

/// What a problem's `type` is made of: this, then its kind.
const PROBLEM_TYPE_BASE: &str = "https://shop.example/problems/";

/// Problem kind (with 503) of a request its receiver did not handle because the body arrived
/// shorter than its `content-length`. The hosts' front servers refuse a client's short body
/// themselves, so a component that sees one had part of it lost inside the host (wasmCloud
/// 1.9.2's wRPC over NATS can lose a message under load).
pub const INCOMPLETE_BODY: &str = "incomplete-body";

/// Problem kind (with 408) of a request its receiver did not handle because the body
/// stopped arriving.
pub const BODY_TIMEOUT: &str = "body-timeout";

/// An HTTP response.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, body: &impl Serialize) -> Response {
        match serde_json::to_vec(body) {
            Ok(bytes) => Response {
                status,
                headers: vec![("content-type".into(), "application/json".into())],
                body: bytes,
            },
            Err(e) => Response::problem(500, "internal", "Internal error", &e.to_string()),
        }
    }

    /// An empty response.
    pub fn empty(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// An RFC 9457 `application/problem+json` response; `kind` becomes the type URI's last part.
    pub fn problem(status: u16, kind: &str, title: &str, detail: &str) -> Response {
        Response::problem_with(status, kind, title, detail, &[])
    }

    /// 503 `overloaded`: the work was shed before anything was done (`detail` says what
    /// was full). The client may send it again after `retry_after_ms`, given in the
    /// problem's `retry_after_ms`, in `Retry-After-Ms`, and in `Retry-After` (whole seconds,
    /// as HTTP has it).
    pub fn overloaded(detail: &str, retry_after_ms: u64) -> Response {
        Response::problem_with(
            503,
            "overloaded",
            "Service overloaded",
            detail,
            &[("retry_after_ms", retry_after_ms.into())],
        )
        .with_header("retry-after", &retry_after_ms.div_ceil(1000).to_string())
        .with_header("retry-after-ms", &retry_after_ms.to_string())
    }

    /// 422: an `Idempotency-Key` sent again with a different request than its first.
    pub fn idempotency_key_reused() -> Response {
        Response::problem(
            422,
            "idempotency-key-reused",
            "Idempotency key reused",
            "this Idempotency-Key was already used with a different request",
        )
    }

    /// A 422 problem listing every invalid field.
    pub fn invalid(errors: &[ValidationError]) -> Response {
        let list: Vec<Value> = errors
            .iter()
            .map(|e| serde_json::json!({"field": e.field, "message": e.message}))
            .collect();
        let detail = errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        Response::problem_with(
            422,
            "validation",
            "Invalid request",
            &detail,
            &[("errors", Value::Array(list))],
        )
    }

    /// A problem with `members` beside its `type`, `title`, `status` and `detail`.
    pub(crate) fn problem_with(
        status: u16,
        kind: &str,
        title: &str,
        detail: &str,
        members: &[(&str, Value)],
    ) -> Response {
        let mut body = serde_json::json!({
            "type": format!("{PROBLEM_TYPE_BASE}{kind}"),
            "title": title,
            "status": status,
            "detail": detail,
        });
        for (name, value) in members {
            body[*name] = value.clone();
        }
        Response {
            status,
            headers: vec![("content-type".into(), "application/problem+json".into())],
            body: serde_json::to_vec(&body).unwrap_or_default(),
        }
    }

    /// This response as a client may see it: a 5xx problem's `detail` (a database driver's
    /// or a host's error text) is logged for `service` with the request's correlation id
    /// and replaced by [`SERVER_ERROR_DETAIL`]. Every other response is returned as it is,
    /// shed load too ([`Response::overloaded`], known by its `Retry-After-Ms`): its detail
    /// tells nothing internal, and under load there are thousands a second to log.
    pub fn without_internals(self, service: &str, correlation_id: Option<&str>) -> Response {
        let is_problem = self
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/problem+json"));
        if self.status < 500 || !is_problem || self.header("retry-after-ms").is_some() {
            return self;
        }
        let Ok(mut body) = serde_json::from_slice::<Value>(&self.body) else {
            return self;
        };
        let correlation_id = self
            .header(CORRELATION_HEADER)
            .or(correlation_id)
            .unwrap_or("-");
        if let Some(detail) = body.get("detail").and_then(Value::as_str) {
            if detail == SERVER_ERROR_DETAIL {
                return self;
            }
            crate::log::write(
                crate::log::Level::Warn,
                service,
                correlation_id,
                &format!("answered {}: {detail}", self.status),
            );
        }
        body["detail"] = Value::String(SERVER_ERROR_DETAIL.to_owned());
        Response {
            body: serde_json::to_vec(&body).unwrap_or_default(),
            ..self
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// True for 2xx statuses.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON, if it is JSON.
    pub fn json_body(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// True when this answer is not the receiver's but its host's: a 5xx that is not JSON,
    /// as Spin and wasmCloud answer (plain text) for an instance that trapped; every answer
    /// of a service's own is JSON (a problem, or an event batch's results). Whether the
    /// request was applied is not known.
    pub fn is_host_failure(&self) -> bool {
        self.status >= 500
            && !self.header("content-type").is_some_and(|t| {
                t.split(';')
                    .next()
                    .is_some_and(|media| media.trim().ends_with("json"))
            })
    }

    /// True when this answer says its receiver never got the request's whole body (503
    /// [`INCOMPLETE_BODY`], 408 [`BODY_TIMEOUT`]): nothing was handled, so sending the
    /// request again is safe.
    pub fn body_not_received(&self) -> bool {
        let expected = match self.status {
            503 => INCOMPLETE_BODY,
            408 => BODY_TIMEOUT,
            _ => return false,
        };
        self.json_body().is_some_and(|body| {
            body["type"].as_str() == Some(format!("{PROBLEM_TYPE_BASE}{expected}").as_str())
        })
    }
}

/// 404 for a path no route matches.
pub fn not_found() -> Response {
    Response::problem(404, "not-found", "Not found", "no such resource")
}

/// 405 for a known path with an unsupported method.
pub fn method_not_allowed() -> Response {
    Response::problem(
        405,
        "method-not-allowed",
        "Method not allowed",
        "this method is not supported here",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_decode_escapes() {
        let pairs = query_pairs("email=a%40b.co&value=150&x=a+b&bad=%zz");
        assert_eq!(pairs[0], ("email".into(), "a@b.co".into()));
        assert_eq!(pairs[1], ("value".into(), "150".into()));
        assert_eq!(pairs[2], ("x".into(), "a b".into()));
        assert_eq!(pairs[3], ("bad".into(), "%zz".into()));
    }

    #[test]
    fn percent_encode_round_trips() {
        let raw = "a b@c/d?e=é";
        assert_eq!(percent_decode(&percent_encode(raw)), raw);
    }

    #[test]
    fn trailing_percent_is_kept() {
        assert_eq!(percent_decode("50%"), "50%");
        assert_eq!(percent_decode("5%4"), "5%4");
    }

    #[test]
    fn server_errors_lose_their_internals_and_client_errors_keep_their_detail() {
        let internal = "postgres open: ConnectionFailed(\"error performing TLS handshake\")";
        let concealed = Response::problem(503, "unavailable", "Service unavailable", internal)
            .without_internals("orders", Some("cor_1"));
        let body = concealed.json_body().unwrap();
        assert_eq!(concealed.status, 503);
        assert_eq!(body["detail"], SERVER_ERROR_DETAIL);
        assert_eq!(body["title"], "Service unavailable");
        assert!(!String::from_utf8_lossy(&concealed.body).contains("TLS"));

        let client_error = Response::problem(422, "validation", "Invalid request", "sku: empty");
        assert_eq!(
            client_error.clone().without_internals("orders", None),
            client_error
        );
    }

    #[test]
    fn a_plain_5xx_is_the_hosts_answer_and_a_problem_is_the_services() {
        let trapped = Response {
            status: 500,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: b"Internal Server Error".to_vec(),
        };
        assert!(trapped.is_host_failure());
        assert!(!Response::problem(500, "internal", "t", "d").is_host_failure());
        assert!(!Response::json(503, &serde_json::json!({"results": []})).is_host_failure());
        assert!(!Response::empty(404).is_host_failure());
    }

    #[test]
    fn problem_is_problem_json() {
        let r = Response::problem(404, "not-found", "Not found", "x");
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert_eq!(r.json_body().unwrap()["status"], 404);
    }

    #[test]
    fn only_a_lost_body_problem_says_the_request_was_not_handled() {
        assert!(Response::problem(503, "incomplete-body", "t", "d").body_not_received());
        assert!(Response::problem(408, "body-timeout", "t", "d").body_not_received());
        assert!(!Response::problem(503, "unavailable", "t", "d").body_not_received());
        assert!(!Response::problem(400, "incomplete-body", "t", "d").body_not_received());
        assert!(!Response::empty(503).body_not_received());
    }
}
