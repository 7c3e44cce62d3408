//! Host bindings, generated from the project's vendored WIT, for what a wasmCloud 1.9.2
//! host and its providers give the components besides WASI and `wasi:http`:
//! `wasmcloud:postgres/query@0.1.1-draft` (sqldb-postgres), `wasmcloud:messaging@0.2.0`
//! (messaging-nats: `consumer` imported, `handler` exported), `wasi:keyvalue@0.2.0-draft`
//! `store` and `atomics` (keyvalue-nats), `wasi:config/store@0.2.0-draft` and
//! `wasi:logging/logging@0.1.0-draft`.

wasmtime::component::bindgen!({
    inline: "
        package test-host:wasmcloud;

        world wasmcloud-host {
            import wasmcloud:postgres/query@0.1.1-draft;
            import wasmcloud:messaging/consumer@0.2.0;
            import wasi:keyvalue/store@0.2.0-draft;
            import wasi:keyvalue/atomics@0.2.0-draft;
            import wasi:config/store@0.2.0-draft;
            import wasi:logging/logging@0.1.0-draft;
            export wasmcloud:messaging/handler@0.2.0;
        }
    ",
    path: [
        "../../wit/deps/wasmcloud-postgres@0.1.1-draft",
        "../../wit/deps/wasmcloud-messaging@0.2.0",
        "../../wit/deps/wasi-config@0.2.0-draft",
        "../../wit/deps/wasi-logging@0.1.0-draft",
        "../../wit/deps/wasi-keyvalue@0.2.0-draft",
    ],
    world: "test-host:wasmcloud/wasmcloud-host",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "wasi:keyvalue/store.bucket": super::keyvalue::Bucket,
    },
    require_store_data_send: true,
});
