//! A blocking client of the gateway's HTTP API, and the failures that decide the exit code.

use std::fmt;
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::{Method, Url};
use serde_json::Value;

/// How long one ordinary call (a batch of 100 orders included) may take.
const CALL_TIMEOUT: Duration = Duration::from_mins(2);
/// How long an event stream may stay silent; the server sends keep-alives every 15 s.
const STREAM_READ_TIMEOUT: Duration = Duration::from_mins(1);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The page size asked for when following `next_cursor`.
const PAGE_SIZE: &str = "100";

/// Why a command failed; each kind has its own exit code.
#[derive(Debug)]
pub enum Failure {
    /// The API refused the request (4xx other than 404): exit 3.
    Refused {
        /// The HTTP status.
        status: u16,
        /// The problem's title and detail.
        message: String,
    },
    /// Something was not found (a 404, or nothing to act on): exit 4.
    NotFound {
        /// What was not found.
        message: String,
    },
    /// A 5xx, an answer that cannot be read, or no answer at all: exit 5.
    Server {
        /// What went wrong.
        message: String,
    },
    /// `order watch` saw the order end rejected or cancelled: exit 6.
    OrderEnded {
        /// The order id.
        id: String,
        /// `rejected` or `cancelled`.
        status: String,
        /// The rejection reason, when there is one.
        reason: Option<String>,
    },
}

impl Failure {
    /// The process exit code for this failure.
    pub const fn exit_code(&self) -> u8 {
        match self {
            Failure::Refused { .. } => 3,
            Failure::NotFound { .. } => 4,
            Failure::Server { .. } => 5,
            Failure::OrderEnded { .. } => 6,
        }
    }

    /// A failure for a non-2xx `status` with `body`, described by the problem it carries.
    pub fn from_answer(status: u16, body: &[u8]) -> Failure {
        let message = problem_message(status, body);
        match status {
            404 => Failure::NotFound { message },
            400..=499 => Failure::Refused { status, message },
            _ => Failure::Server { message },
        }
    }

    /// A failure to reach `url` or to read its answer.
    fn unreachable(url: &Url, error: &reqwest::Error) -> Failure {
        let mut message = format!("cannot reach {}", without_query(url));
        let mut source: Option<&dyn std::error::Error> = Some(error);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = cause.source();
        }
        Failure::Server { message }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused { status, message } => write!(f, "refused ({status}): {message}"),
            Failure::NotFound { message } => write!(f, "not found: {message}"),
            Failure::Server { message } => write!(f, "{message}"),
            Failure::OrderEnded { id, status, reason } => match reason {
                Some(reason) => write!(f, "order {id} was {status}: {reason}"),
                None => write!(f, "order {id} was {status}"),
            },
        }
    }
}

impl std::error::Error for Failure {}

/// `title: detail` of a problem+json document; `None` when it has neither.
pub fn describe_problem(problem: &Value) -> Option<String> {
    let title = problem["title"].as_str().unwrap_or_default();
    let detail = problem["detail"].as_str().unwrap_or_default();
    match (title.is_empty(), detail.is_empty()) {
        (false, false) => Some(format!("{title}: {detail}")),
        (false, true) => Some(title.to_owned()),
        (true, false) => Some(detail.to_owned()),
        (true, true) => None,
    }
}

/// One line describing a problem+json answer, or the start of any other body.
fn problem_message(status: u16, body: &[u8]) -> String {
    if let Some(message) = serde_json::from_slice::<Value>(body)
        .ok()
        .as_ref()
        .and_then(describe_problem)
    {
        return message;
    }
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {text}")
    }
}

/// `url` without its query, for messages.
fn without_query(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.to_string()
}

/// A successful answer.
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status (2xx).
    pub status: u16,
    /// True when the server replayed an earlier answer (`Idempotent-Replayed: true`).
    pub replayed: bool,
    /// The JSON body; `Null` when the body is empty.
    pub body: Value,
}

/// The gateway's API as one bearer-token holder sees it.
pub struct Api {
    /// The HTTP client (connection pool, time limits).
    client: Client,
    /// The gateway's base URL; `/api/v1/...` is appended to its path.
    base: Url,
    /// The bearer token sent with every request.
    token: String,
}

impl Api {
    /// A client of the gateway at `base` sending `token`.
    pub fn new(base: Url, token: String) -> anyhow::Result<Api> {
        let client = Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .user_agent(concat!("shopctl/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Api {
            client,
            base,
            token,
        })
    }

    /// The URL of `/api/v1/<segments…>?<query>`; each segment is percent-encoded.
    pub fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// `GET /api/v1/<segments>`.
    pub fn get(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<Value, Failure> {
        self.send(Method::GET, segments, query, None, None)
            .map(|reply| reply.body)
    }

    /// `POST /api/v1/<segments>` with an optional JSON body.
    pub fn post(&self, segments: &[&str], body: Option<&Value>) -> Result<Value, Failure> {
        self.send(Method::POST, segments, &[], body, None)
            .map(|reply| reply.body)
    }

    /// Sends one request and reads the whole answer; any non-2xx answer is a [`Failure`].
    pub fn send(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<Reply, Failure> {
        let url = self.url(segments, query);
        let mut request = self.request(method, &url);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().map_err(|e| Failure::unreachable(&url, &e))?;
        let status = response.status().as_u16();
        let replayed = response
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"true"));
        let bytes = response
            .bytes()
            .map_err(|e| Failure::unreachable(&url, &e))?;
        if !(200..300).contains(&status) {
            return Err(Failure::from_answer(status, &bytes));
        }
        let body = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| Failure::Server {
                message: format!("unreadable answer from {}: {e}", without_query(&url)),
            })?
        };
        Ok(Reply {
            status,
            replayed,
            body,
        })
    }

    /// Every item of a paged list (`{"items": [...], "next_cursor": ...}`), page after page.
    pub fn get_all(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<Vec<Value>, Failure> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut page_query = query.to_vec();
            page_query.push(("limit", PAGE_SIZE));
            if let Some(cursor) = &cursor {
                page_query.push(("cursor", cursor));
            }
            let page = self.get(segments, &page_query)?;
            let Some(list) = page["items"].as_array() else {
                return Err(Failure::Server {
                    message: format!(
                        "unreadable answer from {}: no items list",
                        without_query(&self.url(segments, &[]))
                    ),
                });
            };
            items.extend(list.iter().cloned());
            match page["next_cursor"].as_str() {
                // A repeated cursor would loop forever; the list is complete as far as it goes.
                Some(next) if !next.is_empty() && cursor.as_deref() != Some(next) => {
                    cursor = Some(next.to_owned());
                }
                _ => return Ok(items),
            }
        }
    }

    /// Opens the event stream at `/api/v1/<segments>`, resuming after `last_event_id`.
    pub fn open_stream(&self, segments: &[&str], last_event_id: i64) -> Result<Response, Failure> {
        let url = self.url(segments, &[]);
        let response = self
            .request(Method::GET, &url)
            .timeout(STREAM_READ_TIMEOUT)
            .header("accept", "text/event-stream")
            .header("last-event-id", last_event_id.to_string())
            .send()
            .map_err(|e| Failure::unreachable(&url, &e))?;
        let status = response.status().as_u16();
        if status == 200 {
            return Ok(response);
        }
        let bytes = response.bytes().unwrap_or_default();
        Err(Failure::from_answer(status, &bytes))
    }

    /// A request with the bearer token.
    fn request(&self, method: Method, url: &Url) -> RequestBuilder {
        self.client
            .request(method, url.clone())
            .bearer_auth(&self.token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> Api {
        Api::new(Url::parse(base).expect("url"), "t".into()).expect("client")
    }

    #[test]
    fn urls_encode_segments_and_keep_a_base_path() {
        let api = client("http://127.0.0.1:3000");
        assert_eq!(
            api.url(&["accounts", "a b@x.com", "credit"], &[]).as_str(),
            "http://127.0.0.1:3000/api/v1/accounts/a%20b@x.com/credit"
        );
        assert_eq!(
            api.url(
                &["orders", "../admin"],
                &[("status", "placed"), ("customer", "a+b@x.com")]
            )
            .as_str(),
            "http://127.0.0.1:3000/api/v1/orders/..%2Fadmin?status=placed&customer=a%2Bb%40x.com"
        );
        let prefixed = client("http://shop.internal/gateway/?q=1");
        assert_eq!(
            prefixed.url(&["products"], &[]).as_str(),
            "http://shop.internal/gateway/api/v1/products"
        );
    }

    #[test]
    fn answers_map_to_exit_codes() {
        let problem = br#"{"type":"x","title":"Invalid request","status":422,"detail":"amount_cents: must be at least 1"}"#;
        let refused = Failure::from_answer(422, problem);
        assert_eq!(refused.exit_code(), 3);
        assert_eq!(
            refused.to_string(),
            "refused (422): Invalid request: amount_cents: must be at least 1"
        );
        assert_eq!(Failure::from_answer(401, b"").exit_code(), 3);
        assert_eq!(Failure::from_answer(429, b"").exit_code(), 3);
        assert_eq!(Failure::from_answer(404, b"{}").exit_code(), 4);
        assert_eq!(
            Failure::from_answer(404, b"{}").to_string(),
            "not found: HTTP 404: {}"
        );
        assert_eq!(
            Failure::from_answer(502, b"<html>\nbad\n</html>").exit_code(),
            5
        );
        assert_eq!(
            Failure::from_answer(502, b"<html>\nbad\n</html>").to_string(),
            "HTTP 502: <html> bad </html>"
        );
        assert_eq!(Failure::from_answer(302, b"").exit_code(), 5);
    }
}
