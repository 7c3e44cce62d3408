//! Where the tests' services are, in this order: the address in `DATABASE_URL`, `NATS_URL`
//! or `REDIS_URL` when it is set; else the machine's own server on the default local port
//! when one answers; else a container started with testcontainers when Docker is
//! available; else none, and the caller skips (or fails in CI: `required_services::skip_or_fail`).

use std::sync::OnceLock;

use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};
use tokio::sync::OnceCell;

/// A service the tests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// PostgreSQL (trust authentication, user `postgres`).
    Postgres,
    /// NATS with JetStream.
    Nats,
    /// Redis.
    Redis,
}

impl Service {
    fn variable(self) -> &'static str {
        match self {
            Service::Postgres => "DATABASE_URL",
            Service::Nats => "NATS_URL",
            Service::Redis => "REDIS_URL",
        }
    }

    fn port(self) -> u16 {
        match self {
            Service::Postgres => 5432,
            Service::Nats => 4222,
            Service::Redis => 6379,
        }
    }

    fn url(self, host: &str, port: u16) -> String {
        match self {
            Service::Postgres => format!("postgres://postgres@{host}:{port}/postgres"),
            Service::Nats => format!("nats://{host}:{port}"),
            Service::Redis => format!("redis://{host}:{port}"),
        }
    }

    fn image(self) -> GenericImage {
        match self {
            Service::Postgres => GenericImage::new("postgres", "16-alpine")
                .with_exposed_port(5432.tcp())
                .with_wait_for(WaitFor::message_on_stderr(
                    "database system is ready to accept connections",
                )),
            Service::Nats => GenericImage::new("nats", "2.11-alpine")
                .with_exposed_port(4222.tcp())
                .with_wait_for(WaitFor::message_on_stderr("Server is ready")),
            Service::Redis => GenericImage::new("redis", "7-alpine")
                .with_exposed_port(6379.tcp())
                .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections")),
        }
    }

    fn cell(self) -> &'static OnceCell<Option<String>> {
        static POSTGRES: OnceCell<Option<String>> = OnceCell::const_new();
        static NATS: OnceCell<Option<String>> = OnceCell::const_new();
        static REDIS: OnceCell<Option<String>> = OnceCell::const_new();
        match self {
            Service::Postgres => &POSTGRES,
            Service::Nats => &NATS,
            Service::Redis => &REDIS,
        }
    }
}

/// The URL of `service`, or `None` (with the reason printed) when there is none.
pub async fn locate(service: Service) -> Option<String> {
    if let Ok(url) = std::env::var(service.variable()) {
        return Some(url);
    }
    service
        .cell()
        .get_or_init(|| async move {
            if answers(service.port()).await {
                return Some(service.url("127.0.0.1", service.port()));
            }
            match start_container(service).await {
                Ok(url) => Some(url),
                Err(e) => {
                    eprintln!(
                        "no {service:?}: {} is not set, nothing answers on 127.0.0.1:{}, and no container could start ({e})",
                        service.variable(),
                        service.port()
                    );
                    None
                }
            }
        })
        .await
        .clone()
}

async fn answers(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

/// Starts `service` in a container that lives as long as the test process.
async fn start_container(service: Service) -> anyhow::Result<String> {
    static CONTAINERS: OnceLock<std::sync::Mutex<Vec<ContainerAsync<GenericImage>>>> =
        OnceLock::new();
    let mut request = service
        .image()
        .with_startup_timeout(std::time::Duration::from_secs(90));
    request = match service {
        Service::Postgres => request.with_env_var("POSTGRES_HOST_AUTH_METHOD", "trust"),
        Service::Nats => request.with_cmd(["-js"]),
        Service::Redis => request,
    };
    let container = request.start().await?;
    let host = container.get_host().await?.to_string();
    let port = container.get_host_port_ipv4(service.port().tcp()).await?;
    CONTAINERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(container);
    Ok(service.url(&host, port))
}
