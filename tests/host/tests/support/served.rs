//! The app served by a separate process: `spin up` of the repository's `spin.toml` on a
//! real Spin 4.x (`spin` on PATH, for `make real-spin-test`), or `test-host serve` of the
//! same manifest (the test host as a user runs it without Spin). Either one instance on
//! the embedded SQLite (files on disk) or two instances on one fresh PostgreSQL database,
//! which the client alternates between. A task posts `/api/v1/admin/tick` every 50 ms, as
//! `infra/spin/ticker.sh` does beside a real deployment. An instance can be killed
//! (SIGKILL) and started again on the same data ([`ServedApp::crash_and_restart`]).
//!
//! The real-Spin tests are not part of CI (Spin cannot be installed from the package
//! registries): they are `#[ignore]`d, with a reason naming `make real-spin-test`.

use std::collections::HashMap;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::{admin, manifest};

/// The program that serves the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// A real Spin 4.x: `spin up`.
    Spin,
    /// This repository's test host: `test-host serve`.
    TestHost,
}

/// The database a served app runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServedDatabase {
    /// One instance on the embedded SQLite, a database per service
    /// (`infra/spin/runtime-config.toml`).
    Sqlite,
    /// Two instances on one PostgreSQL database, each service on its own role and schema
    /// (`<service>_database_url`).
    Postgres,
}

/// Where a served app keeps its data, for reads in assertions.
pub enum ServedData {
    /// The directory the instance runs in: the runtime config's relative SQLite paths are
    /// taken from it.
    Sqlite(PathBuf),
    /// The database's URL, without TLS.
    Postgres(String),
}

/// How one instance was started, to start it again.
struct Launch {
    program: String,
    args: Vec<String>,
    state_dir: tempfile::TempDir,
    base: String,
}

/// Running server processes of one app.
pub struct ServedApp {
    /// Which program serves it.
    pub server: Server,
    processes: Mutex<Vec<Child>>,
    launches: Vec<Launch>,
    /// Their base URLs.
    pub bases: Vec<String>,
    /// Where the app's data is.
    pub data: ServedData,
    ticker: JoinHandle<()>,
}

/// Whether a Spin 4.x binary is on PATH.
pub fn spin_version() -> Option<String> {
    let output = Command::new("spin").arg("--version").output().ok()?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && version.starts_with("spin 4.")).then_some(version)
}

impl ServedApp {
    /// Starts the app under `server` with `variables`; `database_server` is the Postgres
    /// server on which the Postgres variant gets a fresh database.
    pub async fn start(
        server: Server,
        database: ServedDatabase,
        variables: &HashMap<String, String>,
        database_server: Option<&str>,
    ) -> ServedApp {
        let program = match server {
            Server::Spin => {
                let version = spin_version()
                    .expect("these tests need a Spin 4.x binary on PATH (make real-spin-test)");
                eprintln!("real Spin: {version}");
                "spin".to_owned()
            }
            Server::TestHost => env!("CARGO_BIN_EXE_test-host").to_owned(),
        };
        let mut variables = variables.clone();
        let (instances, postgres) = match database {
            ServedDatabase::Sqlite => (1, None),
            ServedDatabase::Postgres => {
                let server = database_server.expect("a Postgres server for the Postgres variant");
                let url = super::fresh_database(server, "shop_served").await;
                variables.extend(super::spin_postgres_variables(&url));
                (2, Some(url))
            }
        };
        let mut launches = Vec::new();
        for _ in 0..instances {
            let port = free_port();
            let state_dir = tempfile::tempdir().expect("a state directory");
            let base = format!("http://127.0.0.1:{port}");
            let mut args: Vec<String> = match server {
                Server::Spin => vec![
                    "up".into(),
                    "--from".into(),
                    manifest().display().to_string(),
                    "--state-dir".into(),
                    state_dir.path().display().to_string(),
                ],
                Server::TestHost => vec![
                    "serve".into(),
                    "--manifest".into(),
                    manifest().display().to_string(),
                    "--data-dir".into(),
                    state_dir.path().display().to_string(),
                ],
            };
            args.extend([
                "--listen".into(),
                format!("127.0.0.1:{port}"),
                "--runtime-config-file".into(),
                super::runtime_config().display().to_string(),
            ]);
            for (key, value) in &variables {
                args.extend(["--variable".into(), format!("{key}={value}")]);
            }
            launches.push(Launch {
                program: program.clone(),
                args,
                state_dir,
                base,
            });
        }
        let processes = launches.iter().map(Launch::spawn).collect();
        for launch in &launches {
            launch.wait_healthy().await;
        }
        let data = match postgres {
            Some(url) => ServedData::Postgres(url),
            None => ServedData::Sqlite(launches[0].state_dir.path().to_path_buf()),
        };
        let bases: Vec<String> = launches.iter().map(|l| l.base.clone()).collect();
        let ticker = tokio::spawn(tick(bases.clone()));
        ServedApp {
            server,
            processes: Mutex::new(processes),
            launches,
            bases,
            data,
            ticker,
        }
    }

    /// The Postgres database the app ran on, to drop at the end.
    pub fn postgres_url(&self) -> Option<&str> {
        match &self.data {
            ServedData::Postgres(url) => Some(url),
            ServedData::Sqlite(_) => None,
        }
    }

    /// Kills instance `instance` with SIGKILL, in whatever it was doing, and starts it
    /// again on the same data and address; returns once it answers `/healthz`.
    pub async fn crash_and_restart(&self, instance: usize) {
        {
            let mut processes = self.processes.lock().unwrap();
            kill_group(&mut processes[instance]);
        }
        let launch = &self.launches[instance];
        let restarted = launch.spawn();
        self.processes.lock().unwrap()[instance] = restarted;
        launch.wait_healthy().await;
    }
}

impl Launch {
    fn log(&self) -> PathBuf {
        self.state_dir.path().join("server.log")
    }

    /// Starts the program in the instance's state directory, appending to its log, in a
    /// process group of its own: `spin up` serves from a child process (`spin trigger
    /// http`), which must die with it.
    fn spawn(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .expect("a log file");
        Command::new(&self.program)
            .args(&self.args)
            .process_group(0)
            .current_dir(self.state_dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", self.program))
    }

    /// Waits until the instance answers `/healthz` (the server compiles the components
    /// first).
    async fn wait_healthy(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(response) = client.get(format!("{}/healthz", self.base)).send().await
                && response.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not answer on {} within 120 s; its log: {}",
                self.program,
                self.base,
                std::fs::read_to_string(self.log()).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Kills `child` and every process of its group (SIGKILL, in whatever they were doing) and
/// reaps it.
fn kill_group(child: &mut Child) {
    let killed = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
    assert!(
        killed.is_ok_and(|status| status.success()) || child.try_wait().is_ok_and(|e| e.is_some()),
        "kill -KILL the process group of {}",
        child.id()
    );
    let _ = child.wait();
}

impl Drop for ServedApp {
    /// Stops the ticker and every server; prints the tail of each log when the test failed.
    fn drop(&mut self) {
        self.ticker.abort();
        for child in self.processes.get_mut().unwrap().iter_mut() {
            kill_group(child);
        }
        if std::thread::panicking() {
            for launch in &self.launches {
                let log = std::fs::read_to_string(launch.log()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!(
                    "--- last lines of {}:\n{}",
                    launch.log().display(),
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
