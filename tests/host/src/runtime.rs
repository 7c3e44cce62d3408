//! The wasmtime side: one engine with the pooling allocator, every component
//! compiled once and pre-instantiated, and a fresh instance per request.

use crate::bindings::SpinImports;
use crate::faults::{Faults, InstanceFaults};
use crate::keyvalue::KeyValueBackend;
use crate::manifest::{AppConfig, ComponentConfig};
use crate::postgres::PostgresPools;
use crate::routes::{RouteMatch, Router};
use crate::sqlite::{SqliteDatabases, SqliteUsage};
use crate::state::InstanceState;
use crate::stdio::ComponentOutput;
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::header::{HOST, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Cache, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// Concurrent component instances the pool holds: Spin's default (`SPIN_MAX_INSTANCE_COUNT`,
/// from which the pool's other totals follow, and `SPIN_WASMTIME_*` for each total, read
/// as Spin reads them). Requests, chained calls and open
/// event streams each hold one; beyond the limit (or the pool's memories or tables) a
/// request fails with 500, as on Spin.
const POOL_INSTANCES: u32 = 1000;
/// Largest linear memory a component may grow to, and each memory's reservation.
const MAX_LINEAR_MEMORY: usize = 256 << 20;
/// Per-instance metadata limit (components up to ~10 MiB).
const MAX_INSTANCE_SIZE: usize = 10 << 20;

/// The path Spin's HTTP trigger answers itself for health checks.
const HEALTH_PATH: &str = "/.well-known/spin/health";

/// The client address Spin reports for service-chaining requests.
const CHAINED_CLIENT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// A compiled, pre-instantiated component and its manifest settings.
pub(crate) struct LoadedComponent {
    pub(crate) config: ComponentConfig,
    pre: ProxyPre<InstanceState>,
    pub(crate) output: ComponentOutput,
    pub(crate) variables: Arc<BTreeMap<String, String>>,
    pub(crate) sqlite_databases: Arc<BTreeSet<String>>,
    pub(crate) key_value_stores: Arc<BTreeSet<String>>,
    /// Instances started to serve requests, public and chained.
    pub(crate) instances_started: std::sync::atomic::AtomicU64,
}

/// Everything requests need: engine, components, routes, faults.
pub(crate) struct Runtime {
    engine: Engine,
    components: HashMap<String, Arc<LoadedComponent>>,
    router: Router,
    faults: Arc<Faults>,
    sqlite_databases: Arc<SqliteDatabases>,
    sqlite_usage: Arc<SqliteUsage>,
    key_value: Arc<KeyValueBackend>,
    postgres_pools: Arc<PostgresPools>,
}

/// The engine both flavours use: Cranelift, the pooling allocator, the compilation cache.
pub(crate) fn engine() -> Result<Engine> {
    let mut pool = PoolingAllocationConfig::new();
    // Spin 4.0.2's pooling limits (`crates/core/src/lib.rs`), with Spin's environment
    // variables to raise them: a composed component counts every inner component's
    // memories, tables and core instances, so the gateway composed with the four services
    // takes five memories and the tables of all five of the pool's totals.
    let limit = |name: &str, default: u32| {
        std::env::var(name)
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(default)
    };
    let max_instances = limit("SPIN_MAX_INSTANCE_COUNT", POOL_INSTANCES);
    pool.total_component_instances(limit("SPIN_WASMTIME_INSTANCE_COUNT", max_instances))
        .total_core_instances(limit(
            "SPIN_WASMTIME_TOTAL_CORE_INSTANCES",
            4 * max_instances,
        ))
        .total_memories(limit("SPIN_WASMTIME_TOTAL_MEMORIES", max_instances))
        .total_tables(limit("SPIN_WASMTIME_TOTAL_TABLES", 2 * max_instances))
        .total_stacks(limit("SPIN_WASMTIME_TOTAL_STACKS", max_instances))
        .max_component_instance_size(MAX_INSTANCE_SIZE)
        .max_core_instance_size(MAX_INSTANCE_SIZE)
        .max_core_instances_per_component(limit("SPIN_WASMTIME_CORE_INSTANCE_COUNT", 200))
        .max_memories_per_component(limit("SPIN_WASMTIME_INSTANCE_MEMORIES", 32))
        .max_tables_per_component(limit("SPIN_WASMTIME_INSTANCE_TABLES", 64))
        .max_tables_per_module(2)
        .max_memories_per_module(2)
        .table_elements(100_000)
        .max_memory_size(MAX_LINEAR_MEMORY)
        // As Spin: a freed slot's first pages are reset by `memset` and stay mapped, rather
        // than returned to the kernel (`madvise`), whose page faults on the next instance and
        // TLB shootdowns across cores took most of the CPU of a busy run without it.
        .linear_memory_keep_resident(
            limit("SPIN_WASMTIME_LINEAR_MEMORY_KEEP_RESIDENT", 2 << 20) as usize
        )
        .table_keep_resident(limit("SPIN_WASMTIME_TABLE_KEEP_RESIDENT", 1 << 19) as usize);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .memory_reservation(MAX_LINEAR_MEMORY as u64);
    match Cache::from_file(None) {
        Ok(cache) => {
            config.cache(Some(cache));
        }
        Err(e) => eprintln!("[test-host] compilation cache disabled: {e}"),
    }
    Ok(Engine::new(&config)?)
}

impl Runtime {
    /// Compiles and links every component of `app` (blocking: call it off the async
    /// runtime).
    pub(crate) fn new(
        app: AppConfig,
        faults: Arc<Faults>,
        sqlite_databases: SqliteDatabases,
        key_value: KeyValueBackend,
    ) -> Result<Self> {
        sqlite_databases.check_used(app.components.iter().flat_map(|(id, config)| {
            config
                .sqlite_databases
                .iter()
                .map(move |label| (id.as_str(), label.as_str()))
        }))?;
        let engine = engine()?;
        let mut linker = Linker::<InstanceState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        SpinImports::add_to_linker::<_, HasSelf<InstanceState>>(&mut linker, |state| state)?;

        let mut compiled: HashMap<PathBuf, Component> = HashMap::new();
        let mut components = HashMap::new();
        for (id, config) in app.components {
            let component = match compiled.get(&config.source) {
                Some(component) if config.dependencies.is_empty() => component.clone(),
                _ if !config.dependencies.is_empty() => {
                    let root = std::fs::read(&config.source).with_context(|| {
                        format!("component {id:?}: cannot load {}", config.source.display())
                    })?;
                    let composed = crate::compose::compose(&id, root, &config.dependencies)
                        .with_context(|| format!("component {id:?}: composing its dependencies"))?;
                    Component::new(&engine, &composed)
                        .map_err(anyhow::Error::from)
                        .with_context(|| {
                            format!("component {id:?}: composed with its dependencies")
                        })?
                }
                _ => {
                    let component = Component::from_file(&engine, &config.source)
                        .map_err(anyhow::Error::from)
                        .with_context(|| {
                            format!("component {id:?}: cannot load {}", config.source.display())
                        })?;
                    compiled.insert(config.source.clone(), component.clone());
                    component
                }
            };
            let pre = linker
                .instantiate_pre(&component)
                .map_err(anyhow::Error::from)
                .and_then(|pre| ProxyPre::new(pre).map_err(anyhow::Error::from))
                .with_context(|| {
                    format!("component {id:?} cannot run on Spin's HTTP trigger with the imports Spin 4.0.2 provides")
                })?;
            let loaded = LoadedComponent {
                output: ComponentOutput::new(&id),
                variables: Arc::new(config.variables.clone()),
                sqlite_databases: Arc::new(config.sqlite_databases.clone()),
                key_value_stores: Arc::new(config.key_value_stores.clone()),
                instances_started: Default::default(),
                config,
                pre,
            };
            components.insert(id, Arc::new(loaded));
        }

        let (router, warnings) = Router::build(
            app.public_routes
                .iter()
                .map(|(component, route)| (component.as_str(), route.as_str())),
        )?;
        for warning in warnings {
            eprintln!("[test-host] warning: {warning}");
        }
        Ok(Self {
            engine,
            components,
            router,
            faults,
            sqlite_databases: Arc::new(sqlite_databases),
            sqlite_usage: Arc::default(),
            key_value: Arc::new(key_value),
            postgres_pools: Arc::default(),
        })
    }

    /// The `default` key-value store.
    pub(crate) fn key_value(&self) -> &Arc<KeyValueBackend> {
        &self.key_value
    }

    /// The `spin:postgres` connection pools every instance shares.
    pub(crate) fn postgres_pools(&self) -> &Arc<PostgresPools> {
        &self.postgres_pools
    }

    /// The fault-injection switches.
    pub(crate) fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// The application's SQLite databases by label.
    pub(crate) fn sqlite_databases(&self) -> &Arc<SqliteDatabases> {
        &self.sqlite_databases
    }

    /// What the components' SQLite statements have done since it was last taken.
    pub(crate) fn sqlite_usage(&self) -> &Arc<SqliteUsage> {
        &self.sqlite_usage
    }

    /// Whether the engine allocates instances from the pooling allocator.
    pub(crate) fn uses_pooling_allocator(&self) -> bool {
        self.engine.pooling_allocator_metrics().is_some()
    }

    /// A component of the application, public or private.
    pub(crate) fn component(&self, id: &str) -> Option<&Arc<LoadedComponent>> {
        self.components.get(id)
    }

    /// Components with a private trigger.
    /// Every component by id.
    pub(crate) fn components(&self) -> impl Iterator<Item = &Arc<LoadedComponent>> {
        self.components.values()
    }

    /// Serves a request that arrived on the public listener: routes it, adds Spin's
    /// headers and runs the component. Private components are not routable.
    pub(crate) async fn serve_public<B>(
        self: &Arc<Self>,
        mut req: Request<B>,
        client_addr: SocketAddr,
    ) -> Response<HyperOutgoingBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let path = req.uri().path().to_owned();
        if path == HEALTH_PATH {
            return text_response(StatusCode::OK, "OK");
        }
        let Some(route) = self.router.route(&path) else {
            return text_response(StatusCode::NOT_FOUND, "Not Found");
        };
        let Some(component) = self.components.get(&route.component).cloned() else {
            return text_response(StatusCode::NOT_FOUND, "Not Found");
        };
        // As Spin does, a client cannot pretend to be a chained request.
        let spoofed_host = req
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|h| crate::allowed_hosts::service_chaining_target(h).is_some());
        if spoofed_host || !req.headers().contains_key(HOST) {
            req.headers_mut()
                .insert(HOST, HeaderValue::from_static("localhost"));
        }
        let uri = req.uri().clone();
        set_spin_headers(req.headers_mut(), &uri, &route, client_addr);
        self.handle(&component, req).await
    }

    /// Runs a local service-chaining request (`http://<id>.spin.internal/...`) on
    /// `component`, as Spin does: no route lookup, the whole path is the path info.
    pub(crate) async fn serve_chained<B>(
        self: &Arc<Self>,
        component: &Arc<LoadedComponent>,
        mut req: Request<B>,
    ) -> Response<HyperOutgoingBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let route = RouteMatch::synthetic(&component.config.id, req.uri().path());
        let uri = req.uri().clone();
        req.headers_mut().remove(HOST);
        set_spin_headers(req.headers_mut(), &uri, &route, CHAINED_CLIENT_ADDR);
        self.handle(component, req).await
    }

    /// Runs one request on a fresh instance of `component`. Failures (traps, no
    /// response) become a 500 and are logged.
    async fn handle<B>(
        self: &Arc<Self>,
        component: &Arc<LoadedComponent>,
        req: Request<B>,
    ) -> Response<HyperOutgoingBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        match self.try_handle(component, req).await {
            Ok(response) => response,
            Err(e) => {
                eprintln!("[test-host] {}: {e:#}", component.config.id);
                text_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
            }
        }
    }

    async fn try_handle<B>(
        self: &Arc<Self>,
        component: &Arc<LoadedComponent>,
        req: Request<B>,
    ) -> Result<Response<HyperOutgoingBody>>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let faults = self.faults.for_request(req.uri().path());
        component
            .instances_started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let store = self.fresh_store(component, faults);
        handle_on_fresh_instance(store, &component.pre, req, &component.config.id, ()).await
    }

    /// The store every instance of `component` starts from: its own state on the engine.
    fn fresh_store(
        self: &Arc<Self>,
        component: &Arc<LoadedComponent>,
        faults: InstanceFaults,
    ) -> Store<InstanceState> {
        Store::new(
            &self.engine,
            InstanceState::new(self.clone(), component.clone(), faults),
        )
    }

    /// What a request pays before the component runs and after it ends: a fresh
    /// `Store` with the request state, instantiation from the pre-instantiated component
    /// (on the pooling allocator), and dropping the store (returning its slot to the
    /// pool). Measured for the benchmark; nothing of the component is called.
    pub(crate) async fn time_instantiation(
        self: &Arc<Self>,
        component: &Arc<LoadedComponent>,
    ) -> Result<std::time::Duration> {
        let started = std::time::Instant::now();
        let mut store = self.fresh_store(component, InstanceFaults::default());
        component.pre.instantiate_async(&mut store).await?;
        drop(store);
        Ok(started.elapsed())
    }
}

/// Runs `req` on a fresh instance of `pre` in `store` and returns the response head as soon
/// as the component sets it. The instance runs in its own task so it can keep streaming the
/// body; `guard` is dropped when that task ends (e.g. a concurrency permit). Both flavours
/// serve HTTP through this.
pub(crate) async fn handle_on_fresh_instance<T, B, G>(
    mut store: Store<T>,
    pre: &ProxyPre<T>,
    req: Request<B>,
    id: &str,
    guard: G,
) -> Result<Response<HyperOutgoingBody>>
where
    T: WasiHttpView + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
    G: Send + 'static,
{
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let req = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, req)?;
    let out = store.data_mut().http().new_response_outparam(sender)?;
    let pre = pre.clone();
    let id = id.to_owned();

    let task = tokio::spawn(async move {
        let _guard = guard;
        let result = async {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        }
        .await;
        if let Err(e) = &result {
            eprintln!("[test-host] component {id:?} failed: {e:#}");
        }
        result
    });

    match receiver.await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(code)) => bail!("the component answered with error code {code:?}"),
        Err(_) => match task.await {
            Ok(Ok(())) => bail!("the component returned without setting a response"),
            Ok(Err(_)) => bail!("the component failed before responding (see above)"),
            Err(e) => bail!("the component's task failed: {e}"),
        },
    }
}

/// Sets the `spin-*` request headers Spin's HTTP trigger passes to components.
fn set_spin_headers(
    headers: &mut HeaderMap,
    uri: &Uri,
    route: &RouteMatch,
    client_addr: SocketAddr,
) {
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_owned();
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut values = vec![
        (
            "spin-full-url".to_owned(),
            format!("http://{host}{path_and_query}"),
        ),
        ("spin-path-info".to_owned(), route.path_info.clone()),
        ("spin-matched-route".to_owned(), route.raw_route.clone()),
        ("spin-base-path".to_owned(), "/".to_owned()),
        (
            "spin-raw-component-route".to_owned(),
            route.raw_route.clone(),
        ),
        (
            "spin-component-route".to_owned(),
            route.route_or_prefix().to_owned(),
        ),
        ("spin-client-addr".to_owned(), client_addr.to_string()),
    ];
    for (name, value) in &route.captures {
        values.push((
            format!("spin-path-match-{}", name.to_ascii_lowercase()),
            value.clone(),
        ));
    }
    for (name, value) in values {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            headers.insert(name, value);
        }
    }
}

/// A plain-text response generated by the host itself.
pub(crate) fn text_response(status: StatusCode, text: &'static str) -> Response<HyperOutgoingBody> {
    let mut response = Response::new(
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    response
}
