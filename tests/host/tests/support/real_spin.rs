//! The app on a real Spin 4.x (`spin` on PATH), for `make real-spin-test`: `spin up` of the
//! repository's `spin.toml` with the built components, either one instance on its embedded
//! SQLite or two instances on one fresh PostgreSQL database, which the client alternates
//! between. A task posts `/api/v1/admin/tick` every 50 ms, as `infra/spin/ticker.sh` does
//! beside a real deployment.
//!
//! Not part of CI (Spin cannot be installed from the package registries): the real-Spin
//! tests are `#[ignore]`d, with a reason naming `make real-spin-test`.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::{admin, manifest};

/// The database a real-Spin app runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RealSpinDatabase {
    /// One instance on Spin's embedded SQLite, a database per service
    /// (`infra/spin/runtime-config.toml`).
    Sqlite,
    /// Two instances on one PostgreSQL database, each service on its own role and schema
    /// (`<service>_database_url`).
    Postgres,
}

/// Where a real-Spin app keeps its data, for reads in assertions.
pub enum RealDatabase {
    /// The directory the instance runs in: the runtime config's relative SQLite paths are
    /// taken from it.
    Sqlite(PathBuf),
    /// The database's URL, without TLS.
    Postgres(String),
}

/// Running `spin up` processes of one app.
pub struct RealSpin {
    processes: Vec<Child>,
    /// Their base URLs.
    pub bases: Vec<String>,
    /// Where the app's data is.
    pub database: RealDatabase,
    /// Each instance's state directory (logs, SQLite).
    state_dirs: Vec<tempfile::TempDir>,
    ticker: JoinHandle<()>,
}

/// Whether a Spin 4.x binary is on PATH.
pub fn spin_version() -> Option<String> {
    let output = Command::new("spin").arg("--version").output().ok()?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && version.starts_with("spin 4.")).then_some(version)
}

impl RealSpin {
    /// Starts the app on a real Spin with `variables`; `database_server` is the Postgres
    /// server on which the Postgres variant gets a fresh database.
    pub async fn start(
        database: RealSpinDatabase,
        variables: &HashMap<String, String>,
        database_server: Option<&str>,
    ) -> RealSpin {
        let version = spin_version()
            .expect("these tests need a Spin 4.x binary on PATH (make real-spin-test)");
        eprintln!("real Spin: {version}");
        let mut variables = variables.clone();
        let (instances, real_database) = match database {
            RealSpinDatabase::Sqlite => (1, None),
            RealSpinDatabase::Postgres => {
                let server = database_server.expect("a Postgres server for the Postgres variant");
                let url = super::fresh_database(server, "shop_real_spin").await;
                variables.extend(super::spin_postgres_variables(&url));
                (2, Some(url))
            }
        };
        let mut processes = Vec::new();
        let mut bases = Vec::new();
        let mut state_dirs = Vec::new();
        for _ in 0..instances {
            let port = free_port();
            let state_dir = tempfile::tempdir().expect("a state directory");
            let log = std::fs::File::create(state_dir.path().join("spin.log")).expect("a log file");
            let mut command = Command::new("spin");
            command
                .arg("up")
                .arg("--from")
                .arg(manifest())
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--state-dir")
                .arg(state_dir.path())
                .arg("--runtime-config-file")
                .arg(super::runtime_config())
                .current_dir(state_dir.path());
            for (key, value) in &variables {
                command.arg("--variable").arg(format!("{key}={value}"));
            }
            let child = command
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("spin up starts");
            processes.push(child);
            bases.push(format!("http://127.0.0.1:{port}"));
            state_dirs.push(state_dir);
        }
        for (base, dir) in bases.iter().zip(&state_dirs) {
            wait_healthy(base, dir.path()).await;
        }
        let database = match real_database {
            Some(url) => RealDatabase::Postgres(url),
            None => RealDatabase::Sqlite(state_dirs[0].path().to_path_buf()),
        };
        let ticker = tokio::spawn(tick(bases.clone()));
        RealSpin {
            processes,
            bases,
            database,
            state_dirs,
            ticker,
        }
    }

    /// The Postgres database the app ran on, to drop at the end.
    pub fn postgres_url(&self) -> Option<&str> {
        match &self.database {
            RealDatabase::Postgres(url) => Some(url),
            RealDatabase::Sqlite(_) => None,
        }
    }
}

impl Drop for RealSpin {
    /// Stops the ticker and every `spin up`; prints the tail of each log when the test failed.
    fn drop(&mut self) {
        self.ticker.abort();
        for child in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for dir in &self.state_dirs {
                let log = std::fs::read_to_string(dir.path().join("spin.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!(
                    "--- last lines of {}:\n{}",
                    dir.path().join("spin.log").display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
    }
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Waits until `base` answers `/healthz` (Spin compiles the components first).
async fn wait_healthy(base: &str, state_dir: &std::path::Path) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(response) = client.get(format!("{base}/healthz")).send().await
            && response.status().is_success()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "spin up did not answer on {base} within 120 s; its log: {}",
            std::fs::read_to_string(state_dir.join("spin.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Posts the admin tick to each instance in turn, every 50 ms.
pub(super) async fn tick(bases: Vec<String>) {
    let client = reqwest::Client::new();
    let token = admin();
    for base in bases.iter().cycle() {
        let _ = client
            .post(format!("{base}/api/v1/admin/tick"))
            .bearer_auth(&token)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
