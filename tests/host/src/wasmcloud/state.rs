//! The per-invocation store state on the lattice (one fresh `Store<LatticeState>` per HTTP
//! request and per message, as wasmCloud instantiates per invocation), with the host's own
//! interfaces: `wasi:config/store@0.2.0-draft` and `wasi:logging/logging@0.1.0-draft`.

use super::bindings::wasi::config::store::{self, ConfigError};
use super::bindings::wasi::logging::logging::{self, Level};
use super::runtime::{LatticeComponent, LatticeRuntime};
use crate::outbound::{IoFuture, SendFuture, send_over_network};
use http::Request;
use http_body_util::BodyExt;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

/// Outgoing HTTP as the http-client provider does it: plain requests over the network,
/// except a call [`crate::Faults::lose_calls`] loses, which is never answered, and one
/// whose body [`crate::Faults::abort_call_bodies`] loses, which fails with
/// `HTTP-protocol-error` (hyper's `BodyWriteAborted` in the provider).
struct HttpClient {
    runtime: Arc<LatticeRuntime>,
    caller: Arc<LatticeComponent>,
}

impl WasiHttpHooks for HttpClient {
    fn send_request(
        &mut self,
        request: Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: IoFuture,
    ) -> SendFuture {
        // Errors while the guest consumes the response are reported by the body itself.
        drop(fut);
        if self.runtime.faults.take_lost_call(&self.caller.spec.name) {
            // The host takes the whole request; the provider never answers.
            return Box::new(async move {
                let _ = request.into_body().collect().await;
                std::future::pending().await
            });
        }
        if super::wrpc_loss::declares_body(request.headers())
            && self
                .runtime
                .faults
                .take_aborted_call_body(&self.caller.spec.name)
        {
            return Box::new(async move {
                let _ = request.into_body().collect().await;
                Err(wasmtime_wasi_http::Error::HttpProtocolError)
            });
        }
        send_over_network(request, options)
    }
}

/// The `T` of every `Store<T>` on the lattice.
pub(crate) struct LatticeState {
    /// The instance's resources.
    pub(crate) table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    client: HttpClient,
    /// The lattice (NATS connection, faults).
    pub(crate) runtime: Arc<LatticeRuntime>,
    /// The component this instance runs.
    pub(crate) component: Arc<LatticeComponent>,
    /// Set by fault injection: every `wasmcloud:postgres` call fails.
    pub(crate) fail_postgres: bool,
}

impl LatticeState {
    /// State for one invocation of `component`.
    pub(crate) fn new(
        runtime: Arc<LatticeRuntime>,
        component: Arc<LatticeComponent>,
        fail_postgres: bool,
    ) -> Self {
        let mut wasi = WasiCtx::builder();
        wasi.stdout(component.output.clone())
            .stderr(component.output.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        Self {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            client: HttpClient {
                runtime: runtime.clone(),
                caller: component.clone(),
            },
            runtime,
            component,
            fail_postgres,
        }
    }

    /// Fails (traps the component, as wasmCloud does) when the component has no link for
    /// `interface`.
    pub(crate) fn require_link(&self, linked: bool, interface: &str) -> wasmtime::Result<()> {
        if linked {
            Ok(())
        } else {
            Err(wasmtime::format_err!(
                "component {:?} called {interface}, which is not linked in the manifest",
                self.component.spec.name
            ))
        }
    }
}

impl WasiView for LatticeState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for LatticeState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.client,
        }
    }
}

/// Served from the component's `config` properties; an unknown key is `none`.
impl store::Host for LatticeState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, ConfigError>> {
        Ok(Ok(self.component.config.get(&key).cloned()))
    }

    async fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, ConfigError>> {
        Ok(Ok(self
            .component
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()))
    }
}

/// Written to the host's stderr as `[component] level context: message`.
impl logging::Host for LatticeState {
    async fn log(
        &mut self,
        level: Level,
        context: String,
        message: String,
    ) -> wasmtime::Result<()> {
        let level = match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Critical => "critical",
        };
        eprintln!(
            "[{}] {level} {context}: {message}",
            self.component.spec.name
        );
        Ok(())
    }
}
