//! Binds shop services to their host. A service's crate only writes
//! `host_bindings::export_service!(Orders, "shop:orders/service", shop::orders);` (the
//! gateway's `host_bindings::export_gateway!(Gateway);`) and picks the host with a feature:
//!
//! - `spin` (Spin 4.0.2, world `spin-service` in `wit/world.wit`): `wasi:http@0.2.6` in and
//!   out, `spin:sqlite/sqlite@3.0.0` or `spin:postgres/postgres@4.1.0` (when the
//!   service's `<service>_database_url` variable is set),
//!   `wasi:config/store@0.2.0-draft-2024-09-27`; each service also exports its API
//!   (`shop:<service>/api`, `wit/services.wit`), which the gateway imports: Spin composes
//!   the services into the gateway, which also relays the events between them.
//! - `wasmcloud` (wasmCloud 1.9.2, world `wasmcloud-service`): `wasi:http@0.2.6` in and out,
//!   `wasmcloud:postgres/query@0.1.1-draft`, `wasmcloud:messaging@0.2.0` (events as NATS
//!   requests, and a handler for them), `wasi:config/store@0.2.0-draft` and
//!   `wasi:logging/logging@0.1.0-draft`.
//!
//! What both hosts share (WASI HTTP) is in [`http`]; each host's own glue is in its module.
#![deny(missing_docs)]

#[cfg(all(feature = "spin", feature = "wasmcloud"))]
compile_error!("enable exactly one host feature: `spin` or `wasmcloud`");
#[cfg(not(any(feature = "spin", feature = "wasmcloud")))]
compile_error!("enable a host feature: `spin` or `wasmcloud`");

/// Bindings generated from `wit/world.wit` for the host chosen by feature.
#[allow(missing_docs)]
pub mod bindings {
    #[cfg(feature = "spin")]
    wit_bindgen::generate!({
        world: "shop:platform/spin-bindings",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_host_bindings",
        default_bindings_module: "host_bindings::bindings",
        generate_all,
    });
    #[cfg(feature = "wasmcloud")]
    wit_bindgen::generate!({
        world: "shop:platform/wasmcloud-bindings",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_host_bindings",
        default_bindings_module: "host_bindings::bindings",
        generate_all,
    });
}

pub mod http;
#[cfg(feature = "spin")]
pub mod spin;
#[cfg(feature = "wasmcloud")]
pub mod wasmcloud;

#[cfg(feature = "spin")]
pub use spin::{serve, serve_gateway, service_url};
#[cfg(feature = "wasmcloud")]
pub use wasmcloud::{handle_message, serve, serve as serve_gateway, service_url};

/// The bindings generator, for the worlds components generate themselves ([`export_api`]).
#[doc(hidden)]
pub use wit_bindgen;

/// Exports `$service` (a `service_kit::Service + Default`) as this component's
/// `wasi:http/incoming-handler`, on wasmCloud also as its `wasmcloud:messaging/handler`, and
/// on Spin as its API for the gateway: the export of world `$world` (e.g.
/// `"shop:orders/service"`, package `shop::orders` in `wit/services.wit`).
#[macro_export]
macro_rules! export_service {
    ($service:ty, $world:literal, $namespace:ident :: $package:ident) => {
        $crate::export_http!($service, $crate::serve::<$service>);
        $crate::export_api!($service, $world, $namespace::$package);
    };
}

/// Exports the gateway `$service`: as [`export_service`], with its calls into the services
/// composed with it on Spin, and no API of its own.
#[macro_export]
macro_rules! export_gateway {
    ($service:ty) => {
        $crate::export_http!($service, $crate::serve_gateway::<$service>);
    };
}

/// The HTTP export (and a host's other handlers), answered by `$serve`.
#[doc(hidden)]
#[macro_export]
macro_rules! export_http {
    ($service:ty, $serve:expr) => {
        struct ShopComponent;
        impl $crate::bindings::exports::wasi::http::incoming_handler::Guest for ShopComponent {
            fn handle(
                request: $crate::bindings::wasi::http::types::IncomingRequest,
                out: $crate::bindings::wasi::http::types::ResponseOutparam,
            ) {
                $serve(request, out)
            }
        }
        $crate::export_host_handlers!(ShopComponent, $service);
        $crate::bindings::export_host_bindings!(ShopComponent with_types_in $crate::bindings);
    };
}

/// A service's API on Spin: world `$world` generated in the component, its
/// `shop:<package>/api` export answered by `$service`.
#[cfg(feature = "spin")]
#[doc(hidden)]
#[macro_export]
macro_rules! export_api {
    ($service:ty, $world:literal, $namespace:ident :: $package:ident) => {
        mod service_api {
            #[allow(unused_imports)]
            use super::*;

            $crate::wit_bindgen::generate!({
                world: $world,
                path: "../../wit",
                runtime_path: "host_bindings::wit_bindgen::rt",
            });

            use exports::$namespace::$package::api;

            struct ServiceApi;

            impl api::Guest for ServiceApi {
                fn call(request: api::Request) -> api::Response {
                    let answer = $crate::spin::call::<$service>(
                        request.method,
                        &request.path_with_query,
                        request.headers,
                        request.body,
                    );
                    api::Response {
                        status: answer.status,
                        headers: answer.headers,
                        body: answer.body,
                    }
                }

                fn finish() -> Vec<api::Delivery> {
                    $crate::spin::finish::<$service>()
                        .into_iter()
                        .map(|taken| api::Delivery {
                            destination: taken.destination,
                            batch: taken.batch,
                            correlation_id: taken.correlation_id,
                        })
                        .collect()
                }
            }

            export!(ServiceApi);
        }
    };
}

/// A service's API on wasmCloud: none yet (the gateway calls the services over HTTP).
#[cfg(feature = "wasmcloud")]
#[doc(hidden)]
#[macro_export]
macro_rules! export_api {
    ($service:ty, $world:literal, $namespace:ident :: $package:ident) => {};
}

/// The handlers a host exports besides HTTP: none on Spin.
#[cfg(feature = "spin")]
#[doc(hidden)]
#[macro_export]
macro_rules! export_host_handlers {
    ($component:ident, $service:ty) => {};
}

/// The handlers a host exports besides HTTP: events from NATS on wasmCloud.
#[cfg(feature = "wasmcloud")]
#[doc(hidden)]
#[macro_export]
macro_rules! export_host_handlers {
    ($component:ident, $service:ty) => {
        impl $crate::bindings::exports::wasmcloud::messaging::handler::Guest for $component {
            fn handle_message(
                message: $crate::bindings::wasmcloud::messaging::types::BrokerMessage,
            ) -> Result<(), String> {
                $crate::handle_message::<$service>(message)
            }
        }
    };
}
