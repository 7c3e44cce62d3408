//! Who is calling a service: the actor and role the gateway authenticated, believed only
//! with the gateway's signature (`shop_domain::internal_call`).
//!
//! Every call into a service carries [`SIGNATURE_HEADER`], made by [`signed`] with the
//! deployment's event secret; [`verify`] refuses one without a valid, fresh signature with
//! 401. Two routes need none: `POST /internal/events` (each envelope is signed itself) and
//! `POST /internal/tick` (it names no caller and only does work that is due).

use shop_domain::internal_call::InternalCall;

use crate::http::{ACTOR_HEADER, ROLE_HEADER, Request, Response};
use crate::ids::now_ms;
use crate::messaging::{EVENTS_PATH, TICK_PATH};
use crate::ports::{Config, OutboundRequest};
use crate::settings::event_secret;

/// The header that carries a call's signature: `<unix ms>.<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "x-shop-signature";

/// The header of the client's idempotency key, which the signature covers.
const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// The routes that need no signature: they act for nobody.
const UNSIGNED_PATHS: [&str; 2] = [EVENTS_PATH, TICK_PATH];

/// `request` with its signature added, for a call made now.
pub fn signed(mut request: OutboundRequest, config: &dyn Config) -> OutboundRequest {
    let (path, query) = path_and_query(&request.url);
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or("", |(_, v)| v.as_str())
    };
    let signature = InternalCall {
        method: &request.method,
        path,
        query,
        actor: header(ACTOR_HEADER),
        role: header(ROLE_HEADER),
        idempotency_key: header(IDEMPOTENCY_HEADER),
        body: &request.body,
    }
    .sign(&event_secret(config), now_ms());
    request
        .headers
        .push((SIGNATURE_HEADER.to_owned(), signature));
    request
}

/// `request` (one a host handed over from a message, not from the network) with its
/// signature added, so that it passes [`verify`] like a call from the gateway.
pub fn signed_request(mut request: Request, config: &dyn Config) -> Request {
    let signature = call_of(&request).sign(&event_secret(config), now_ms());
    request
        .headers
        .push((SIGNATURE_HEADER.to_owned(), signature));
    request
}

/// `Ok` when `request` needs no signature or carries a valid, fresh one; otherwise the
/// 401 problem to answer.
pub fn verify(request: &Request, config: &dyn Config) -> Result<(), Response> {
    if UNSIGNED_PATHS.contains(&request.path.as_str()) {
        return Ok(());
    }
    call_of(request)
        .verify(
            &event_secret(config),
            request.header(SIGNATURE_HEADER),
            now_ms(),
        )
        .map_err(|e| {
            Response::problem(
                401,
                "unauthenticated",
                "Not a call from the gateway",
                &format!("{e}: services are called through the gateway"),
            )
        })
}

fn call_of(request: &Request) -> InternalCall<'_> {
    InternalCall {
        method: &request.method,
        path: &request.path,
        query: &request.query,
        actor: request.header(ACTOR_HEADER).unwrap_or_default(),
        role: request.header(ROLE_HEADER).unwrap_or_default(),
        idempotency_key: request.header(IDEMPOTENCY_HEADER).unwrap_or_default(),
        body: &request.body,
    }
}

/// The path and the query of an absolute URL (`http://host/path?query`).
fn path_and_query(url: &str) -> (&str, &str) {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path_and_query = after_scheme
        .find('/')
        .map_or("/", |slash| &after_scheme[slash..]);
    path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::PortError;

    struct Secret;
    impl Config for Secret {
        fn get(&self, key: &str) -> Result<Option<String>, PortError> {
            Ok((key == "event_secret").then(|| "test-secret".to_owned()))
        }
    }

    fn outbound(url: &str) -> OutboundRequest {
        OutboundRequest {
            method: "POST".into(),
            url: url.into(),
            headers: vec![
                (ACTOR_HEADER.into(), "staff@shop.test".into()),
                (ROLE_HEADER.into(), "staff".into()),
            ],
            body: br#"{"amount_cents":5}"#.to_vec(),
        }
    }

    /// The request the service receives for `outbound`.
    fn received(outbound: &OutboundRequest) -> Request {
        let (path, query) = path_and_query(&outbound.url);
        Request {
            method: outbound.method.clone(),
            path: path.into(),
            query: query.into(),
            headers: outbound.headers.clone(),
            body: outbound.body.clone(),
        }
    }

    #[test]
    fn a_signed_call_passes_and_a_changed_one_does_not() {
        let call = signed(
            outbound("http://balance-checker.spin.internal/api/v1/accounts/a%40x.com/credit?x=1"),
            &Secret,
        );
        assert_eq!(received(&call).path, "/api/v1/accounts/a%40x.com/credit");
        assert!(verify(&received(&call), &Secret).is_ok());

        let mut as_admin = received(&call);
        for header in &mut as_admin.headers {
            if header.0 == ROLE_HEADER {
                header.1 = "admin".into();
            }
        }
        assert_eq!(verify(&as_admin, &Secret).unwrap_err().status, 401);
    }

    #[test]
    fn an_unsigned_call_is_refused_except_events_and_ticks() {
        let unsigned = received(&outbound(
            "http://127.0.0.1:8082/api/v1/accounts/a@x.com/credit",
        ));
        assert_eq!(verify(&unsigned, &Secret).unwrap_err().status, 401);
        for path in UNSIGNED_PATHS {
            let request = Request {
                path: path.into(),
                ..unsigned.clone()
            };
            assert!(verify(&request, &Secret).is_ok(), "{path}");
        }
    }

    #[test]
    fn a_handed_over_request_is_signed_for_itself() {
        let request = Request {
            method: "POST".into(),
            path: "/internal/acks/vouchers".into(),
            body: b"{}".to_vec(),
            ..Request::default()
        };
        assert_eq!(verify(&request, &Secret).unwrap_err().status, 401);
        assert!(verify(&signed_request(request, &Secret), &Secret).is_ok());
    }

    #[test]
    fn path_and_query_come_from_the_url() {
        assert_eq!(path_and_query("http://h/a/b?c=d"), ("/a/b", "c=d"));
        assert_eq!(path_and_query("http://h/a"), ("/a", ""));
        assert_eq!(path_and_query("http://h"), ("/", ""));
    }
}
