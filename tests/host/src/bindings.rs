//! Host bindings, generated from the project's WIT, for the Spin-specific interfaces
//! the components import: `spin:sqlite/sqlite@3.0.0`, `spin:postgres/postgres@4.0.0` and
//! `wasi:config/store@0.2.0-draft-2024-09-27`.

wasmtime::component::bindgen!({
    path: [
        "../../wit/deps/spin-sqlite@3.0.0",
        "../../wit/deps/spin-postgres@4.0.0",
        "../../wit/deps/wasi-config@0.2.0-draft-2024-09-27",
        "wit",
    ],
    world: "test-host:host/spin-imports",
    imports: { default: async },
    with: {
        "spin:sqlite/sqlite.connection": crate::sqlite::Connection,
        "spin:postgres/postgres.connection": crate::postgres::Connection,
    },
    require_store_data_send: true,
});
