//! An HTTP listener: HTTP/1.1 with keep-alive, one task per connection, graceful
//! shutdown. Both flavours use it: Spin's public listener and each wasmCloud
//! http-server link.

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// How long shutdown waits for open connections to finish their requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Accepts connections until `shutdown` turns true, then lets open connections finish
/// (up to [`SHUTDOWN_GRACE`]). Every request goes to `handler` with the client's address.
pub(crate) async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<HyperOutgoingBody>> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, client_addr)) => {
                    // Small responses on keep-alive connections must not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    let handler = handler.clone();
                    let mut shutdown = shutdown.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |req| {
                            let response = handler(req, client_addr);
                            async move { Ok::<_, Infallible>(response.await) }
                        });
                        let connection = http1::Builder::new()
                            .keep_alive(true)
                            .serve_connection(TokioIo::new(stream), service);
                        tokio::pin!(connection);
                        let result = tokio::select! {
                            result = connection.as_mut() => result,
                            _ = shutdown.changed() => {
                                connection.as_mut().graceful_shutdown();
                                connection.await
                            }
                        };
                        if let Err(e) = result
                            && !e.is_incomplete_message()
                        {
                            eprintln!("[test-host] connection from {client_addr}: {e}");
                        }
                    });
                }
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    eprintln!("[test-host] accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        eprintln!("[test-host] closing connections still open after {SHUTDOWN_GRACE:?}");
    }
}
