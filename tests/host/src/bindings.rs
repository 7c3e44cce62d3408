//! Host bindings, generated from the project's WIT, for the Spin-specific interfaces
//! the components import: `spin:sqlite/sqlite@3.0.0`, `spin:postgres/postgres@4.1.0`,
//! `wasi:config/store@0.2.0-draft-2024-09-27` and `wasi:keyvalue@0.2.0-draft2`.

wasmtime::component::bindgen!({
    path: [
        "../../wit/deps/spin-sqlite@3.0.0",
        "../../wit/deps/spin-postgres@4.1.0",
        "../../wit/deps/wasi-config@0.2.0-draft-2024-09-27",
        "../../wit/deps/wasi-keyvalue@0.2.0-draft2",
        "wit",
    ],
    world: "test-host:host/spin-imports",
    // Database calls may trap: chaos mode kills instances there (see `Faults`).
    imports: {
        default: async,
        "spin:sqlite/sqlite.[method]connection.execute": async | trappable,
        "spin:postgres/postgres.[method]connection.query": async | trappable,
        "spin:postgres/postgres.[method]connection.execute": async | trappable,
        // A full resource table traps, as it does in Spin.
        "spin:postgres/postgres.[constructor]connection-builder": async | trappable,
    },
    with: {
        "spin:sqlite/sqlite.connection": crate::sqlite::Connection,
        "spin:postgres/postgres.connection": crate::postgres::Connection,
        "spin:postgres/postgres.connection-builder": crate::postgres::ConnectionBuilder,
        "wasi:keyvalue/store.bucket": crate::keyvalue::Bucket,
        "wasi:keyvalue/atomics.cas": crate::keyvalue::Cas,
    },
    require_store_data_send: true,
});
