//! The lattice's wasmtime side: every component compiled once and pre-instantiated on
//! one engine with the pooling allocator, run as N replicas (as N wasmCloud hosts would
//! each run it), with a fresh instance per HTTP request and per message.

use super::bindings::WasmcloudHostPre;
use super::bindings::wasmcloud::messaging::types::BrokerMessage;
use super::keyvalue::LinkedStore;
use super::manifest::ComponentSpec;
use super::messaging;
use super::state::LatticeState;
use super::wrpc_loss::{ArrivingBody, CutAnswer};
use crate::faults::Faults;
use crate::runtime::{handle_on_fresh_instance, text_response};
use crate::stdio::ComponentOutput;
use anyhow::{Context, Result};
use bytes::Bytes;
use deadpool_postgres::Pool;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Body;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// One replica of a component: its own subscriptions, concurrency limit and counters.
pub(crate) struct Replica {
    running: AtomicBool,
    /// Concurrent invocations allowed: its share of the spreadscaler's `instances`.
    instances: Arc<Semaphore>,
    handled: AtomicU64,
    subscriptions: Mutex<Vec<JoinHandle<()>>>,
}

impl Replica {
    fn subscriptions(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A compiled, pre-instantiated component with its links and replicas.
pub(crate) struct LatticeComponent {
    /// What the manifest says about it.
    pub(crate) spec: ComponentSpec,
    /// Its configuration after overrides and address rewriting (`wasi:config/store`).
    pub(crate) config: BTreeMap<String, String>,
    /// Its stdout and stderr.
    pub(crate) output: ComponentOutput,
    /// The pool behind its `wasmcloud:postgres` link.
    pub(crate) postgres: Option<Pool>,
    /// The buckets behind its `wasi:keyvalue` links, by link name.
    pub(crate) keyvalue: BTreeMap<String, LinkedStore>,
    proxy: ProxyPre<LatticeState>,
    handler: Option<WasmcloudHostPre<LatticeState>>,
    replicas: Vec<Replica>,
    next_replica: AtomicUsize,
}

/// What the lattice's invocations share: engine, components, NATS, faults.
pub(crate) struct LatticeRuntime {
    engine: Engine,
    components: BTreeMap<String, Arc<LatticeComponent>>,
    /// The NATS connection messaging-nats uses for every component.
    pub(crate) nats: async_nats::Client,
    /// Prepended (with a `.`) to every subject the components use on NATS.
    subject_prefix: Option<String>,
    pub(crate) faults: Arc<Faults>,
    /// How long a message invocation may run (`--max-execution-time-ms`).
    max_execution_time: Duration,
}

/// How to build one component of the lattice.
pub(crate) struct ComponentPlan {
    /// From the manifest.
    pub(crate) spec: ComponentSpec,
    /// Final configuration.
    pub(crate) config: BTreeMap<String, String>,
    /// Its Postgres pool, when linked.
    pub(crate) postgres: Option<Pool>,
    /// Its key-value buckets, by link name.
    pub(crate) keyvalue: BTreeMap<String, LinkedStore>,
    /// How many replicas run it.
    pub(crate) replicas: usize,
}

impl LatticeRuntime {
    /// Compiles and links every planned component (blocking: call it off the async
    /// threads). Replicas start stopped; see [`LatticeRuntime::start_replica`].
    pub(crate) fn new(
        plans: Vec<ComponentPlan>,
        nats: async_nats::Client,
        subject_prefix: Option<String>,
        faults: Arc<Faults>,
        max_execution_time: Duration,
    ) -> Result<Self> {
        let engine = crate::runtime::engine()?;
        let mut linker = Linker::<LatticeState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        super::bindings::WasmcloudHost::add_to_linker::<_, HasSelf<LatticeState>>(
            &mut linker,
            |state| state,
        )?;

        let mut compiled: HashMap<PathBuf, Component> = HashMap::new();
        let mut components = BTreeMap::new();
        for plan in plans {
            let name = plan.spec.name.clone();
            let wasm = &plan.spec.wasm;
            let component = match compiled.get(wasm) {
                Some(component) => component.clone(),
                None => {
                    let component = Component::from_file(&engine, wasm)
                        .map_err(anyhow::Error::from)
                        .with_context(|| {
                            format!(
                                "component {name:?}: cannot load {} (image {})",
                                wasm.display(),
                                plan.spec.image
                            )
                        })?;
                    compiled.insert(wasm.clone(), component.clone());
                    component
                }
            };
            let pre = linker
                .instantiate_pre(&component)
                .map_err(anyhow::Error::from)
                .with_context(|| {
                    format!("component {name:?} imports what the lattice does not provide")
                })?;
            let proxy = ProxyPre::new(pre.clone())
                .map_err(anyhow::Error::from)
                .with_context(|| {
                    format!("component {name:?} does not export wasi:http/incoming-handler")
                })?;
            let handler = if plan.spec.is_worker() {
                Some(
                    WasmcloudHostPre::new(pre)
                        .map_err(anyhow::Error::from)
                        .with_context(|| {
                            format!(
                                "component {name:?} has a messaging handler link but does not export wasmcloud:messaging/handler@0.2.0"
                            )
                        })?,
                )
            } else {
                None
            };
            // The replicas share the spreadscaler's instances, as wadm spreads them over hosts.
            let instances =
                (plan.spec.instances.unwrap_or(1).max(1) as usize).div_ceil(plan.replicas.max(1));
            let replicas = (0..plan.replicas)
                .map(|_| Replica {
                    running: AtomicBool::new(false),
                    instances: Arc::new(Semaphore::new(instances)),
                    handled: AtomicU64::new(0),
                    subscriptions: Mutex::new(Vec::new()),
                })
                .collect();
            let loaded = LatticeComponent {
                output: ComponentOutput::new(&name),
                spec: plan.spec,
                config: plan.config,
                postgres: plan.postgres,
                keyvalue: plan.keyvalue,
                proxy,
                handler,
                replicas,
                next_replica: AtomicUsize::new(0),
            };
            components.insert(name, Arc::new(loaded));
        }
        Ok(Self {
            engine,
            components,
            nats,
            subject_prefix,
            faults,
            max_execution_time,
        })
    }

    /// The subject sent to NATS for the component's `subject`: prefixed, except replies
    /// to request inboxes (`_INBOX.`), which must reach the requester unchanged.
    pub(crate) fn wire(&self, subject: &str) -> String {
        match &self.subject_prefix {
            Some(prefix) if !subject.starts_with("_INBOX.") => format!("{prefix}.{subject}"),
            _ => subject.to_owned(),
        }
    }

    /// The subject a component sees for a message that arrived on `subject`.
    pub(crate) fn strip_wire<'a>(&self, subject: &'a str) -> &'a str {
        self.subject_prefix
            .as_deref()
            .and_then(|prefix| subject.strip_prefix(prefix))
            .and_then(|rest| rest.strip_prefix('.'))
            .unwrap_or(subject)
    }

    /// Whether the engine allocates instances from the pooling allocator.
    pub(crate) fn uses_pooling_allocator(&self) -> bool {
        self.engine.pooling_allocator_metrics().is_some()
    }

    /// The component called `name`.
    pub(crate) fn component(&self, name: &str) -> Result<&Arc<LatticeComponent>> {
        self.components
            .get(name)
            .with_context(|| format!("the lattice has no component {name:?}"))
    }

    /// Every component, by name.
    pub(crate) fn components(&self) -> impl Iterator<Item = &Arc<LatticeComponent>> {
        self.components.values()
    }

    fn replica(component: &LatticeComponent, index: usize) -> Result<&Replica> {
        component.replicas.get(index).with_context(|| {
            format!(
                "component {:?} has {} replicas, not {}",
                component.spec.name,
                component.replicas.len(),
                index + 1
            )
        })
    }

    /// Starts replica `index` of `component`: it takes HTTP requests and subscribes to
    /// its subjects. Starting a running replica does nothing.
    pub(crate) async fn start_replica(
        self: &Arc<Self>,
        component: &Arc<LatticeComponent>,
        index: usize,
    ) -> Result<()> {
        let replica = Self::replica(component, index)?;
        if replica.running.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let mut tasks = Vec::new();
        for subscription in &component.spec.subscriptions {
            match messaging::subscribe(self, component, index, subscription).await {
                Ok(task) => tasks.push(task),
                Err(e) => {
                    for task in tasks {
                        task.abort();
                    }
                    replica.running.store(false, Ordering::SeqCst);
                    return Err(e);
                }
            }
        }
        *replica.subscriptions() = tasks;
        Ok(())
    }

    /// Stops replica `index` of `component`: no more HTTP requests, its subscriptions are
    /// dropped and the message handlers it is running are cancelled (those messages are
    /// lost, as on wasmCloud). HTTP requests it is serving finish.
    pub(crate) fn stop_replica(&self, component: &LatticeComponent, index: usize) -> Result<()> {
        let replica = Self::replica(component, index)?;
        replica.running.store(false, Ordering::SeqCst);
        for task in replica.subscriptions().drain(..) {
            task.abort();
        }
        Ok(())
    }

    /// Messages each replica of `component` has handled (its handler returned).
    pub(crate) fn handled_counts(component: &LatticeComponent) -> Vec<u64> {
        component
            .replicas
            .iter()
            .map(|r| r.handled.load(Ordering::SeqCst))
            .collect()
    }

    /// Which replicas of `component` are running.
    pub(crate) fn running(component: &LatticeComponent) -> Vec<bool> {
        component
            .replicas
            .iter()
            .map(|r| r.running.load(Ordering::SeqCst))
            .collect()
    }

    /// The next running replica of `component`, round-robin.
    fn pick_replica(component: &LatticeComponent) -> Option<&Replica> {
        let count = component.replicas.len();
        let start = component.next_replica.fetch_add(1, Ordering::Relaxed);
        (0..count)
            .map(|offset| &component.replicas[(start + offset) % count])
            .find(|replica| replica.running.load(Ordering::SeqCst))
    }

    /// Serves an HTTP request that crossed the lattice's transport: its body arrives as
    /// [`Faults::lose_request_bodies`] says, and its answer loses its body when
    /// [`Faults::cut_answers`] says so.
    pub(crate) async fn serve_http<B>(
        self: &Arc<Self>,
        component: &Arc<LatticeComponent>,
        req: Request<B>,
    ) -> Response<HyperOutgoingBody>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let name = &component.spec.name;
        let has_body = super::wrpc_loss::declares_body(req.headers());
        let loss = self.faults.take_body_loss(name, has_body);
        let response = self
            .serve_on_replica(component, req.map(|body| ArrivingBody::new(body, loss)))
            .await;
        if self.faults.take_cut_answer(name) {
            response.map(|_| {
                CutAnswer::default()
                    .map_err(|never| match never {})
                    .boxed_unsync()
            })
        } else {
            response
        }
    }

    /// Serves an HTTP request on a running replica of `component` (round-robin); the
    /// host's own timer calls this directly, its requests crossing no transport. Failures
    /// (no running replica, traps, no response) become 503 or 500 and are logged.
    pub(crate) async fn serve_on_replica<B>(
        self: &Arc<Self>,
        component: &Arc<LatticeComponent>,
        req: Request<B>,
    ) -> Response<HyperOutgoingBody>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let name = &component.spec.name;
        let Some(replica) = Self::pick_replica(component) else {
            eprintln!("[test-host] {name}: no running replica for {}", req.uri());
            return text_response(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
        };
        let Ok(permit) = replica.instances.clone().acquire_owned().await else {
            return text_response(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
        };
        let state = LatticeState::new(self.clone(), component.clone(), false);
        let store = Store::new(&self.engine, state);
        match handle_on_fresh_instance(store, &component.proxy, req, name, permit).await {
            Ok(response) => response,
            Err(e) => {
                eprintln!("[test-host] {name}: {e:#}");
                text_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
            }
        }
    }

    /// Runs `handle-message` for `message` on a fresh instance of `component` on behalf of
    /// replica `index`. Errors and traps are logged; the message is not retried.
    pub(crate) async fn handle_message(
        self: &Arc<Self>,
        component: &Arc<LatticeComponent>,
        index: usize,
        message: BrokerMessage,
    ) {
        let name = &component.spec.name;
        let (Some(handler), Some(replica)) = (&component.handler, component.replicas.get(index))
        else {
            return;
        };
        let Ok(_permit) = replica.instances.acquire().await else {
            return;
        };
        let fail_postgres = self.faults.take_message(name);
        let hangs = self.faults.take_hung_message(name);
        let state = LatticeState::new(self.clone(), component.clone(), fail_postgres);
        let mut store = Store::new(&self.engine, state);
        let invocation = async {
            if hangs {
                // An import call whose result the transport lost: it never returns.
                std::future::pending::<()>().await;
            }
            let instance = handler.instantiate_async(&mut store).await?;
            instance
                .wasmcloud_messaging_handler()
                .call_handle_message(&mut store, &message)
                .await
        };
        // As the host does: the invocation is dropped, and its slot freed, when it runs
        // longer than the max execution time.
        let Ok(result) = tokio::time::timeout(self.max_execution_time, invocation).await else {
            eprintln!(
                "[test-host] {name}: component invocation timed out (handle-message for {:?})",
                message.subject
            );
            return;
        };
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!(
                "[test-host] {name}: handle-message for {:?} returned an error: {e}",
                message.subject
            ),
            Err(e) => {
                eprintln!(
                    "[test-host] {name}: handle-message for {:?} trapped (the message is lost): {e:#}",
                    message.subject
                );
                return;
            }
        }
        replica.handled.fetch_add(1, Ordering::SeqCst);
    }
}
