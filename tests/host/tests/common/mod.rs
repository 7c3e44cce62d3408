//! Helpers shared by the test host's own integration tests: the fixture component in
//! `fixtures/echo` (built for wasm32-wasip2 on first use), `fixtures/spin.toml`, and
//! plain HTTP/1.1 requests.

#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use test_host::{TestHost, TestHostConfig};
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Builds the fixture component once per test binary (a no-op when it is up to date).
pub fn ensure_fixture_built() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let result = BUILT.get_or_init(|| {
        let crate_dir = fixtures().join("echo");
        let target_dir = crate_dir.join("target");
        let wasm = target_dir.join("wasm32-wasip2/release/test_host_echo_fixture.wasm");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .arg("build")
            .arg("--manifest-path")
            .arg(crate_dir.join("Cargo.toml"))
            .args(["--target", "wasm32-wasip2", "--release", "--target-dir"])
            .arg(&target_dir)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .status();
        match status {
            Ok(status) if status.success() => Ok(()),
            failure if wasm.exists() => {
                eprintln!("warning: rebuilding the fixture failed ({failure:?}); using the existing wasm");
                Ok(())
            }
            failure => Err(format!(
                "cannot build the fixture component ({failure:?}); it needs the wasm32-wasip2 target"
            )),
        }
    });
    if let Err(message) = result {
        panic!("{message}");
    }
}

pub fn config() -> TestHostConfig {
    ensure_fixture_built();
    let mut config = TestHostConfig::new(fixtures().join("spin.toml"));
    config
        .variables
        .insert("secret_token".into(), "s3cret".into());
    config
}

pub async fn start(config: TestHostConfig) -> TestHost {
    match TestHost::start(config).await {
        Ok(host) => host,
        Err(e) => panic!("the test host did not start: {e:#}"),
    }
}

/// One request over a fresh connection: `(status, body)`.
pub async fn request(host: &TestHost, method: &str, path: &str, body: &str) -> (u16, String) {
    let base = host.base_url();
    let authority = base.trim_start_matches("http://").to_owned();
    let stream = TcpStream::connect(&authority).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", authority)
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

pub async fn get(host: &TestHost, path: &str) -> (u16, String) {
    request(host, "GET", path, "").await
}

pub async fn call(host: &TestHost, component: &str, method: &str, path: &str) -> (u16, String) {
    let (status, body) = host
        .call_component(component, method, path, &[("x-test", "1")], Vec::new())
        .await
        .expect("call_component");
    (status, String::from_utf8_lossy(&body).into_owned())
}
