//! The per-request store state: one fresh `Store<InstanceState>` per request, as
//! Spin creates one instance per request.

use crate::faults::{DatabaseFault, Faults, InstanceFaults};
use crate::keyvalue::KeyValueCtx;
use crate::outbound::OutboundHttp;
use crate::postgres::PostgresPools;
use crate::runtime::{LoadedComponent, Runtime};
use crate::sqlite::{SqliteDatabases, SqliteUsage};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// What the `spin:sqlite` implementation needs for one instance.
pub(crate) struct SqliteCtx {
    /// The component's `sqlite_databases`.
    pub(crate) allowed: Arc<BTreeSet<String>>,
    /// The application's databases by label.
    pub(crate) databases: Arc<SqliteDatabases>,
    /// Where statement and transaction times are recorded.
    pub(crate) usage: Arc<SqliteUsage>,
}

/// The faults of one instance's database calls, `spin:sqlite` and `spin:postgres` alike.
pub(crate) struct DatabaseFaults {
    /// The faults this instance runs with.
    pub(crate) faults: InstanceFaults,
    /// The host's fault switches (outages are checked on every call).
    pub(crate) host: Arc<Faults>,
    /// Database calls made so far (to place an injected fault).
    calls: u64,
}

impl DatabaseFaults {
    /// Counts one database call; the fault chaos mode gives it, if any (the caller counts
    /// it with [`DatabaseFaults::count`] when it applies it).
    pub(crate) fn next_call(&mut self) -> Option<DatabaseFault> {
        self.calls += 1;
        match self.faults.fault_at_call {
            Some((at, fault)) if at == self.calls => Some(fault),
            _ => None,
        }
    }

    /// Counts `fault` as injected.
    pub(crate) fn count(&self, fault: DatabaseFault) {
        self.host.count_database_fault(fault, self.faults.serving);
    }
}

/// The `T` of every `Store<T>`.
pub(crate) struct InstanceState {
    pub(crate) table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    outbound: OutboundHttp,
    pub(crate) sqlite: SqliteCtx,
    /// The faults of its database calls.
    pub(crate) database_faults: DatabaseFaults,
    /// What `wasi:keyvalue` serves this instance.
    pub(crate) key_value: KeyValueCtx,
    /// The component's resolved `[component.ID.variables]`, served by `wasi:config`.
    pub(crate) config: Arc<BTreeMap<String, String>>,
    /// The component this instance runs (for `spin:postgres`'s `allowed_outbound_hosts`).
    pub(crate) component: Arc<LoadedComponent>,
    /// The `spin:postgres` connection pools of the whole app.
    pub(crate) postgres_pools: Arc<PostgresPools>,
}

impl InstanceState {
    /// State for one request to `component`, running with `faults`.
    pub(crate) fn new(
        runtime: Arc<Runtime>,
        component: Arc<LoadedComponent>,
        faults: InstanceFaults,
    ) -> Self {
        let mut wasi = WasiCtx::builder();
        wasi.stdout(component.output.clone())
            .stderr(component.output.clone())
            .envs(&component.config.environment)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        Self {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            sqlite: SqliteCtx {
                allowed: component.sqlite_databases.clone(),
                databases: runtime.sqlite_databases().clone(),
                usage: runtime.sqlite_usage().clone(),
            },
            database_faults: DatabaseFaults {
                faults,
                host: runtime.faults().clone(),
                calls: 0,
            },
            key_value: KeyValueCtx {
                allowed: component.key_value_stores.clone(),
                backend: runtime.key_value().clone(),
            },
            config: component.variables.clone(),
            postgres_pools: runtime.postgres_pools().clone(),
            outbound: OutboundHttp::new(runtime, component.clone()),
            component,
        }
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}
