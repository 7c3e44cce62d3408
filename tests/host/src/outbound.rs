//! Outgoing HTTP (`wasi:http/outgoing-handler`) with Spin's rules: requests must
//! match the component's `allowed_outbound_hosts`; `<id>.spin.internal` requests
//! are dispatched in-process to that component (local service chaining);
//! `self.alt` requests go through the application's own router; anything else is
//! sent over the network by wasmtime-wasi-http's default client.

use crate::allowed_hosts::service_chaining_target;
use crate::runtime::{LoadedComponent, Runtime};
use http::Request;
use http_body_util::BodyExt;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// The client address self-requests appear to come from.
const SELF_CLIENT_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// The host some SDKs use to address the application itself.
const SELF_HOST: &str = "self.alt";

/// What a request's body I/O resolves to.
pub(crate) type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;
/// What [`WasiHttpHooks::send_request`] returns.
pub(crate) type SendFuture =
    Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send>;

/// The `wasi:http` hooks of one instance.
pub(crate) struct OutboundHttp {
    runtime: Arc<Runtime>,
    caller: Arc<LoadedComponent>,
}

impl OutboundHttp {
    /// Hooks for an instance of `caller`.
    pub(crate) fn new(runtime: Arc<Runtime>, caller: Arc<LoadedComponent>) -> Self {
        Self { runtime, caller }
    }

    fn deny(&self, uri: &http::Uri, why: &str) -> SendFuture {
        eprintln!(
            "[test-host] {}: outbound request to {uri} denied: {why}",
            self.caller.config.id
        );
        Box::new(async { Err(Error::HttpRequestDenied) })
    }
}

fn completed(
    response: http::Response<WasiBody>,
) -> Result<(http::Response<WasiBody>, IoFuture), Error> {
    Ok((response, Box::new(async { Ok(()) }) as IoFuture))
}

impl WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        request: Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: IoFuture,
    ) -> SendFuture {
        // Errors while the guest consumes the response are reported by the body itself.
        drop(fut);
        let uri = request.uri().clone();
        let scheme = uri.scheme_str().unwrap_or("http").to_owned();
        let Some(authority) = uri.authority().cloned() else {
            return self.deny(&uri, "the URL has no host");
        };
        let host = authority.host().to_ascii_lowercase();
        let port = authority.port_u16();
        let allowed = &self.caller.config.allowed_hosts;

        if let Some(target) = service_chaining_target(&host) {
            if !allowed.allows(&scheme, &host, port) {
                return self.deny(
                    &uri,
                    "service chaining needs \"http://<id>.spin.internal\" or \
                     \"http://*.spin.internal\" in allowed_outbound_hosts (\"self\" does not grant it)",
                );
            }
            let Some(target) = self.runtime.component(target).cloned() else {
                return self.deny(&uri, "no such component in the application");
            };
            let runtime = self.runtime.clone();
            return Box::new(
                async move { completed(runtime.serve_chained(&target, request).await) },
            );
        }

        if host == SELF_HOST {
            if !allowed.allows_self() {
                return self.deny(&uri, "\"http://self\" is not in allowed_outbound_hosts");
            }
            let runtime = self.runtime.clone();
            return Box::new(async move {
                completed(runtime.serve_public(request, SELF_CLIENT_ADDR).await)
            });
        }

        if !allowed.allows(&scheme, &host, port) {
            return self.deny(&uri, "the host is not in allowed_outbound_hosts");
        }
        send_over_network(request, options)
    }
}

/// Sends `request` over the network with wasmtime-wasi-http's default client (plain
/// HTTP or TLS, as the URL says). Also the whole of outgoing HTTP on the wasmCloud lattice.
pub(crate) fn send_over_network(
    request: Request<WasiBody>,
    options: Option<RequestOptions>,
) -> SendFuture {
    Box::new(async move {
        let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
        Ok((
            response.map(BodyExt::boxed_unsync),
            Box::new(io) as IoFuture,
        ))
    })
}
