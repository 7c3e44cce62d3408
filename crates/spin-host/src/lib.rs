//! Binds shop services to Spin 4.x. A component crate only writes
//! `spin_host::export_service!(MyService);`.
//!
//! Imports are pinned to what Spin 4.0.2 provides (see `wit/world.wit`):
//! `wasi:http@0.2.6` in and out, `spin:sqlite/sqlite@3.0.0` (the interface spin-sdk 5.2's
//! `sqlite3` module binds) or `spin:postgres/postgres@4.0.0` (when the `database_url`
//! variable is set), and `wasi:config/store@0.2.0-draft-2024-09-27`.
#![deny(missing_docs)]

/// Bindings generated from `wit/world.wit` (world `spin-bindings`).
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "shop:platform/spin-bindings",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_spin_bindings",
        default_bindings_module: "spin_host::bindings",
        generate_all,
    });
}

mod config;
mod http;
mod sql;
mod transport;

use bindings::wasi::http::types::{IncomingRequest, ResponseOutparam};
use service_kit::{Env, Service};

/// How services address each other on Spin: local service chaining.
pub fn service_url(component: &str) -> String {
    format!("http://{component}.spin.internal")
}

/// Serves one request with service `S`: converts it, answers it, then runs the
/// service's after-response work while the caller already has its answer.
pub fn serve<S: Service + Default>(request: IncomingRequest, out: ResponseOutparam) {
    let sql = sql::SpinSql::from_config(&config::SpinConfig);
    let env = Env {
        sql: &sql,
        http: &http::WasiHttpClient,
        config: &config::SpinConfig,
        service_url,
        transport: &transport::ChainingTransport,
    };
    let service = S::default();
    let response = match http::read_request(request) {
        Ok(request) => service.handle(request, &env),
        Err(problem) => problem,
    };
    http::write_response(out, response);
    service.after_response(&env);
}

/// Exports `$service` (a `service_kit::Service + Default`) as this component's
/// `wasi:http/incoming-handler`.
#[macro_export]
macro_rules! export_service {
    ($service:ty) => {
        struct ShopComponent;
        impl $crate::bindings::exports::wasi::http::incoming_handler::Guest for ShopComponent {
            fn handle(
                request: $crate::bindings::wasi::http::types::IncomingRequest,
                out: $crate::bindings::wasi::http::types::ResponseOutparam,
            ) {
                $crate::serve::<$service>(request, out)
            }
        }
        $crate::bindings::export_spin_bindings!(ShopComponent with_types_in $crate::bindings);
    };
}
