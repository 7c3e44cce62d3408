//! `shopctl` end to end: the real binary against the app started from `spin.toml` on the
//! wasmtime test host (the same `.wasm` files Spin runs; build them with `make build`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use shop_domain::auth::{Role, verify_token};
use test_host::{TestHost, TestHostConfig};

/// The development secret the app runs with (spin.toml's default).
const DEV_SECRET: &str = "dev-auth-secret-change-me";
/// How long anything asynchronous may take.
const WAIT: Duration = Duration::from_secs(30);

/// The app on a fresh database, served by the test host on its own runtime.
struct App {
    /// Runs the host's server and tickers.
    runtime: tokio::runtime::Runtime,
    /// The host; taken on drop to shut it down.
    host: Option<TestHost>,
    /// Its base URL.
    url: String,
}

impl App {
    /// Starts the app with fast retries and a 50 ms tick, like the black-box suite.
    fn start() -> App {
        App::start_with(&[])
    }

    /// As [`App::start`], with extra variable overrides.
    fn start_with(overrides: &[(&str, &str)]) -> App {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        assert!(
            root.join("target/wasm32-wasip2/release/orders.wasm")
                .exists(),
            "components are not built: run `make build` first"
        );
        let mut config = TestHostConfig::new(root.join("spin.toml"));
        config.runtime_config = Some(root.join("infra/spin/runtime-config.toml"));
        config.variables = [
            ("retry_base_delay_ms", "20"),
            ("retry_max_delay_ms", "200"),
            ("retry_max_attempts", "4"),
        ]
        .into_iter()
        .chain(overrides.iter().copied())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect::<HashMap<_, _>>();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let host = runtime
            .block_on(TestHost::start(config))
            .expect("test host starts");
        start_ticker(host.addr());
        App {
            url: host.base_url(),
            host: Some(host),
            runtime,
        }
    }

    /// Runs `shopctl --url <app> <args>` to the end; `args` are split on whitespace.
    fn run(&self, args: &str) -> Run {
        shopctl(&format!("--url {} {args}", self.url))
    }

    /// Starts `shopctl --url <app> <args>` with stdout piped.
    fn spawn(&self, args: &str) -> Child {
        command(&format!("--url {} {args}", self.url))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("shopctl starts")
    }

    /// Runs a read-only `args` (with `--json`) until `done` holds for its output. Exit 5
    /// is tolerated meanwhile: under a burst of events the test host may briefly run out
    /// of component instances and answer 500.
    fn poll(&self, args: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let run = self.run(&format!("{args} --json"));
            if run.code != Some(5) {
                let value = run.ok().json();
                if done(&value) {
                    return value;
                }
            }
            assert!(
                Instant::now() < deadline,
                "shopctl {args} never got there; last answer: {}",
                self.run(&args.replace("--json", ""))
                    .stdout
                    .lines()
                    .map(|line| line.split_whitespace().nth(2).unwrap_or_default())
                    .fold(HashMap::<&str, usize>::new(), |mut counts, status| {
                        *counts.entry(status).or_default() += 1;
                        counts
                    })
                    .into_iter()
                    .map(|(status, n)| format!("{status}={n}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until order `id` has `status`.
    fn wait_status(&self, id: &str, status: &str) -> Value {
        self.poll(&format!("order show {id}"), |order| {
            order["status"] == status
        })
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(host) = self.host.take() {
            self.runtime.block_on(host.shutdown());
        }
    }
}

/// Posts the gateway's admin tick every 50 ms from a thread, as `infra/spin/ticker.sh` does
/// beside `spin up` (the test host, like Spin, has no timer); it stops when the app is gone.
fn start_ticker(addr: std::net::SocketAddr) {
    use std::io::{Read, Write};
    let token = shop_domain::auth::mint_token(
        &shop_domain::auth::Claims {
            sub: "ticker@shop.test".into(),
            role: Role::Admin,
            exp: (SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 3600) as i64,
        },
        b"dev-auth-secret-change-me",
    );
    thread::spawn(move || {
        while let Ok(mut stream) = std::net::TcpStream::connect(addr) {
            let request = format!(
                "POST /api/v1/admin/tick HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            let _ = stream.write_all(request.as_bytes());
            let _ = stream.read_to_end(&mut Vec::new());
            thread::sleep(Duration::from_millis(50));
        }
    });
}

/// The binary with `args` (split on whitespace) and none of the caller's SHOP_* variables.
fn command(args: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shopctl"));
    command
        .args(args.split_whitespace())
        .env_remove("SHOP_URL")
        .env_remove("SHOP_TOKEN")
        .env_remove("SHOP_AUTH_SECRET");
    command
}

/// Runs `shopctl <args>` to the end.
fn shopctl(args: &str) -> Run {
    let output = command(args).output().expect("shopctl runs");
    Run {
        args: args.to_owned(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// What one run printed, and how it exited.
#[derive(Debug)]
struct Run {
    /// The arguments, for messages.
    args: String,
    /// The exit code.
    code: Option<i32>,
    /// Standard output.
    stdout: String,
    /// Standard error.
    stderr: String,
}

impl Run {
    /// Asserts exit code `code`.
    fn code(self, code: i32) -> Run {
        assert_eq!(
            self.code,
            Some(code),
            "exit code of shopctl {}: {self:#?}",
            self.args
        );
        self
    }

    /// Asserts success.
    fn ok(self) -> Run {
        self.code(0)
    }

    /// Stdout as JSON.
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("shopctl {} printed no JSON ({e}): {self:#?}", self.args))
    }

    /// The stdout lines.
    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

/// The ids of a `--json` list.
fn ids(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|o| o["id"].as_str().expect("id").to_owned())
        .collect()
}

/// The `id` of a `--json` order.
fn id(order: &Value) -> String {
    order["id"].as_str().expect("id").to_owned()
}

/// Collects a child's stdout lines as they come.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (send, receive) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                return;
            }
        }
    });
    receive
}

/// Waits for `child` to exit; kills it and fails after [`WAIT`].
fn exit_code(child: &mut Child) -> Option<i32> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().expect("child status") {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("shopctl did not exit in time");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Unix seconds now.
fn now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    i64::try_from(secs).expect("in range")
}

#[test]
fn tokens_are_minted_for_the_subject_role_and_lifetime() {
    let run = shopctl("token alice@example.com --role customer --ttl 600").ok();
    let claims = verify_token(run.stdout.trim(), DEV_SECRET.as_bytes(), now()).expect("valid");
    assert_eq!(claims.sub, "alice@example.com");
    assert_eq!(claims.role, Role::Customer);
    assert!(
        (now() + 590..=now() + 600).contains(&claims.exp),
        "{claims:?}"
    );
    assert_eq!(run.stderr.lines().count(), 1, "one warning line: {run:#?}");
    assert!(run.stderr.contains("development secret"), "{run:#?}");

    let run = shopctl("token ops --auth-secret s3cret").ok();
    let claims = verify_token(run.stdout.trim(), b"s3cret", now()).expect("--auth-secret");
    assert_eq!((claims.sub.as_str(), claims.role), ("ops", Role::Admin));
    assert_eq!(run.stderr, "", "no warning with a real secret");
    assert!(verify_token(run.stdout.trim(), DEV_SECRET.as_bytes(), now()).is_err());

    let output = command("token ops")
        .env("SHOP_AUTH_SECRET", "from-env")
        .output()
        .expect("runs");
    let token = String::from_utf8_lossy(&output.stdout);
    assert!(verify_token(token.trim(), b"from-env", now()).is_ok());

    shopctl("token ops --ttl 0").code(2);
    shopctl("token ops --role owner").code(2);
}

#[test]
fn products_accounts_orders_and_exit_codes() {
    let app = App::start();

    // A fresh app has no dead letters: the table is its header only.
    let run = app.run("dead-letters list").ok();
    assert_eq!(run.lines().len(), 1, "{run:#?}");
    assert!(run.stdout.starts_with("ID "), "{run:#?}");
    let letters = app.run("dead-letters list --json").ok().json();
    assert_eq!(letters["items"], json!([]));

    // Products.
    let put = "product put WIDGET-1 --name Widget --price-cents 6000 --stock 10";
    let run = app.run(put).ok();
    assert!(
        run.stdout.starts_with("created product WIDGET-1\n"),
        "{run:#?}"
    );
    let run = app.run(put).ok();
    assert!(
        run.stdout.starts_with("replaced product WIDGET-1\n"),
        "{run:#?}"
    );
    app.run("product put EMPTY-1 --name Gone --price-cents 100 --stock 0")
        .ok();
    let run = app.run("product list").ok();
    let lines = run.lines();
    assert_eq!(lines.len(), 3, "{run:#?}");
    assert!(lines[0].starts_with("SKU "), "{run:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("WIDGET-1") && l.contains("60.00")),
        "{run:#?}"
    );
    let products = app.run("product list --json").ok().json();
    let skus: Vec<&str> = products["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| p["sku"].as_str().expect("sku"))
        .collect();
    assert_eq!(skus, ["EMPTY-1", "WIDGET-1"]);

    // Accounts.
    let alice = "alice@example.com";
    let run = app
        .run(&format!("account credit {alice} --amount-cents 50000"))
        .ok();
    assert!(
        run.stdout.contains(alice) && run.stdout.contains("500.00"),
        "{run:#?}"
    );
    let account = app.run(&format!("account show {alice} --json")).ok().json();
    assert_eq!(account["balance_cents"], 50000);

    // Orders: the seed form, and order lines with an idempotency key.
    let by_value = app
        .run(&format!(
            "order create --customer {alice} --value 150 --json"
        ))
        .ok()
        .json();
    assert_eq!(by_value["total_cents"], 15000);
    assert_eq!(by_value["status"], "placed");
    let by_items =
        format!("order create --customer {alice} --item WIDGET-1:2 --idempotency-key k-1 --json");
    let first = app.run(&by_items).ok().json();
    assert_eq!(first["total_cents"], 12000);
    assert_eq!(first["items"][0]["sku"], "WIDGET-1");
    let again = app.run(&by_items).ok();
    assert_eq!(again.json()["id"], first["id"], "same key, same order");
    assert!(
        again.stderr.contains("idempotency key was used before"),
        "{again:#?}"
    );

    let (value_id, items_id) = (id(&by_value), id(&first));
    app.wait_status(&value_id, "confirmed");
    app.wait_status(&items_id, "confirmed");
    let listed = app
        .run(&format!("order list --customer {alice} --json"))
        .ok()
        .json();
    assert_eq!(
        ids(&listed),
        [value_id.clone(), items_id.clone()],
        "oldest first"
    );
    let confirmed = app.run("order list --status confirmed --json").ok().json();
    assert_eq!(ids(&confirmed).len(), 2);
    let run = app.run("order list").ok();
    assert_eq!(run.lines().len(), 3, "{run:#?}");
    assert!(
        run.lines()[1].contains(&value_id) && run.lines()[1].contains("150.00"),
        "{run:#?}"
    );
    let run = app.run(&format!("order show {items_id}")).ok();
    for text in ["confirmed", "WIDGET-1", "120.00", "placed"] {
        assert!(run.stdout.contains(text), "{text}: {run:#?}");
    }

    // Exit codes: 4 not found, 3 refused, 5 unreachable, 2 usage.
    let run = app.run("order show ord_missing").code(4);
    assert!(run.stderr.contains("not found"), "{run:#?}");
    let run = app
        .run(&format!("account credit {alice} --amount-cents -5"))
        .code(3);
    assert!(
        run.stderr.contains("422") && run.stderr.contains("amount_cents"),
        "{run:#?}"
    );
    let mallory = "--as mallory@example.com --role customer";
    let run = app.run(&format!("{mallory} account show {alice}")).code(3);
    assert!(run.stderr.contains("403"), "{run:#?}");
    app.run(&format!("order cancel {items_id}")).ok();
    let run = app.run(&format!("order ship {items_id}")).code(3);
    assert!(run.stderr.contains("409"), "{run:#?}");
    shopctl("--url http://127.0.0.1:1 product list").code(5);
    app.run(&format!(
        "order create --customer {alice} --value 1 --item WIDGET-1:1"
    ))
    .code(2);

    // An order rejected for missing stock: watch prints its changes and exits 6.
    let rejected = app
        .run(&format!(
            "order create --customer {alice} --item EMPTY-1:1 --json"
        ))
        .ok()
        .json();
    let rejected_id = id(&rejected);
    let run = app.run(&format!("order watch {rejected_id}")).code(6);
    let last = run.lines().last().copied().unwrap_or_default();
    assert!(
        last.contains(&rejected_id) && last.contains("rejected") && last.contains("out_of_stock"),
        "{run:#?}"
    );
    assert!(run.stderr.contains("rejected"), "{run:#?}");
}

#[test]
fn a_batch_of_120_orders_goes_in_chunks_with_a_summary() {
    let app = App::start();
    let bob = "bob@example.com";
    app.run(&format!("account credit {bob} --amount-cents 20000"))
        .ok();

    // A small batch, as JSON: the API's per-item results, the summary on stderr.
    let run = app
        .run(&format!(
            "order create --customer {bob} --value 1 --count 3 --json"
        ))
        .ok();
    let results = run.json()["results"].as_array().expect("results").clone();
    assert_eq!(results.len(), 3);
    assert!(
        results
            .iter()
            .all(|r| r["status"] == 202 && r["order"]["total_cents"] == 100),
        "{results:?}"
    );
    assert!(run.stderr.contains("accepted 3, refused 0"), "{run:#?}");

    // Refused one by one (an unknown SKU): every item is refused, nothing is placed.
    let run = app
        .run(&format!(
            "order create --customer {bob} --item NOPE-1:1 --count 120"
        ))
        .code(3);
    assert!(
        run.stdout
            .starts_with("accepted 0, refused 120 of 120 orders\n"),
        "{run:#?}"
    );
    assert!(run.stdout.contains("unknown sku NOPE-1"), "{run:#?}");
    assert!(run.stderr.contains("120 of 120 orders refused"), "{run:#?}");

    // 120 orders: a chunk of 100 and one of 20.
    let run = app
        .run(&format!(
            "order create --customer {bob} --value 1 --count 120"
        ))
        .ok();
    assert_eq!(
        run.stdout, "accepted 120, refused 0 of 120 orders\n",
        "{run:#?}"
    );
    let all = app.poll(&format!("order list --customer {bob}"), |list| {
        ids(list).len() == 123
    });
    assert_eq!(ids(&all).len(), 123, "every page followed");
}

#[test]
fn watch_follows_an_order_live_until_deliver_earliest_delivers_it() {
    // Streams end after 400 ms, so watch must resume with Last-Event-ID on the way.
    let app = App::start_with(&[("stream_max_ms", "400")]);
    let carol = "carol@example.com";
    app.run("product put LAMP-1 --name Lamp --price-cents 5000 --stock 5")
        .ok();
    app.run(&format!("account credit {carol} --amount-cents 100000"))
        .ok();
    app.run("order deliver-earliest").code(4);

    let order = format!("order create --customer {carol} --item LAMP-1:1 --json");
    let earliest = id(&app.run(&order).ok().json());
    let mut watch = app.spawn(&format!("order watch {earliest}"));
    let lines = lines_of(&mut watch);
    let mut seen: Vec<String> = Vec::new();
    while !seen.last().is_some_and(|line| line.contains("confirmed")) {
        seen.push(
            lines
                .recv_timeout(WAIT)
                .expect("placed, then confirmed, live"),
        );
    }

    // A later order, already shipped: the earliest undelivered is still the confirmed one.
    let later = id(&app.run(&order).ok().json());
    app.wait_status(&later, "confirmed");
    app.run(&format!("order ship {later}")).ok();
    thread::sleep(Duration::from_millis(1000));
    let run = app.run("order deliver-earliest").ok();
    assert!(
        run.stdout
            .starts_with(&format!("shipped and delivered order {earliest} ")),
        "{run:#?}"
    );

    assert_eq!(exit_code(&mut watch), Some(0), "watch ends after delivery");
    seen.extend(lines.iter());
    let statuses: Vec<&str> = seen
        .iter()
        .map(|line| {
            assert!(line.contains(&earliest), "{line}");
            line.split_whitespace().nth(2).unwrap_or_default()
        })
        .collect();
    assert_eq!(
        statuses,
        ["placed", "confirmed", "shipped", "delivered"],
        "each change once, across reconnections"
    );

    let run = app.run("order deliver-earliest --json").ok();
    assert_eq!(run.json()["id"], later.as_str());
    assert_eq!(run.json()["status"], "delivered");
    app.run("order deliver-earliest").code(4);
}
