//! The shop's benchmark (issue 5), one run that writes `BENCHMARKS.md`:
//!
//! 1. order accept (`POST /api/v1/orders` → 202) on the Spin test host at 1, 32 and 128
//!    connections, next to a hello-world component on the same host and a native hyper
//!    hello-world, as throughput, p50/p99 latency and ratios, and that hello component
//!    calling itself (`/chain/N`), the ceiling of a request that takes N + 1 instances;
//! 2. end to end: orders placed until every one is `confirmed` (SQLite), against a raw
//!    SQLite insert-and-commit loop on the same disk;
//! 3. per-request instantiation cost of the components on the pooling allocator.
//!
//! Run `cargo build --target wasm32-wasip2 --release -p gateway -p orders -p balance-checker
//! -p stock-checker -p vouchers -p bench-hello` first, then `cargo bench -p shop-bench`
//! (`-- --quick` for a short run; `-- --help` for options).

mod load;
mod raw_sqlite;
mod report;
mod targets;

use anyhow::{Context, Result, bail};
use load::{LoadResult, Stop, Workload};
use report::{EndToEnd, Instantiation, Report, RunningAppFigures};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use targets::{Fixture, RunningApp, Shop};
use tokio::runtime::Runtime;

/// Connection counts of the accept and hello-world runs.
const CONNECTIONS: [usize; 4] = [1, 32, 128, 512];
/// The instance pool the servers get unless `SPIN_MAX_INSTANCE_COUNT` says otherwise (Spin's
/// variable, from which the pool's totals follow; Spin's default 1,000 holds about 125
/// composed gateway instances): enough for every connection of the 512-connection runs.
const POOL_INSTANCES: &str = "6000";
/// Chained calls that give as many instances as one order takes through the saga: the
/// accept (the gateway composed with the services), both checkers on `order.placed`, orders
/// on each answer, both checkers on `order.confirmed`.
const SAGA_CHAIN_HOPS: u32 = 6;
/// Chained calls per request of the hello-chain runs (`GET /chain/N`).
const CHAIN_HOPS: [u32; 3] = [1, 2, SAGA_CHAIN_HOPS];
/// Connections of the hello-chain runs (the targets' count).
const CHAIN_CONNECTIONS: usize = 32;
/// Connections placing orders in the end-to-end run.
const END_TO_END_CONNECTIONS: usize = 32;
/// Worker threads of the servers' runtime (the test machine has two cores).
const SERVER_THREADS: usize = 2;
/// Worker threads of the load generator's runtime.
const LOAD_THREADS: usize = 2;

/// How long and how much to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Short runs for CI (`--quick`).
    pub quick: bool,
    /// Unrecorded time before each timed run.
    pub warmup: Duration,
    /// The measured window of each timed run.
    pub measure: Duration,
    /// Orders of the end-to-end run.
    pub end_to_end_orders: usize,
    /// Transactions of the raw SQLite loop.
    pub raw_commits: usize,
    /// Instantiations timed per component.
    pub instantiations: usize,
    /// Where the report goes.
    pub output: PathBuf,
    /// An app already running to measure as well (`SHOP_URL`).
    pub shop_url: Option<String>,
}

const USAGE: &str =
    "usage: cargo bench -p shop-bench -- [--quick] [--seconds N] [--orders N] [--output FILE]
  --quick     2 s per run, 500 end-to-end orders, report to target/BENCHMARKS.quick.md
  --seconds   measured seconds per throughput run (default 10; 2 s warm-up before each)
  --orders    orders of the end-to-end run (default 5000)
  --output    where the report goes (default BENCHMARKS.md at the repository root)
environment:
  SHOP_URL          also measure order accept and end to end on the app running there
                    (http://IP:PORT, started with rate_limit_per_minute=0 on embedded SQLite,
                    e.g. a real `spin up`; the bench ticks it every second)
  SHOP_SPIN_DIR     the directory that app runs in (its SQLite files are read; default: the
                    repository root)
  SHOP_DESCRIPTION  what that app is, for the report (e.g. `spin 4.0.2, SQLite`)";

impl Options {
    fn parse(root: &Path) -> Result<Options> {
        let mut options = Options {
            quick: false,
            warmup: Duration::from_secs(2),
            measure: Duration::from_secs(10),
            end_to_end_orders: 5_000,
            raw_commits: 5_000,
            instantiations: 2_000,
            output: root.join("BENCHMARKS.md"),
            shop_url: std::env::var("SHOP_URL").ok().filter(|url| !url.is_empty()),
        };
        let mut output = None;
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                // cargo bench passes --bench to harness=false benches.
                "--bench" => {}
                "--quick" => {
                    options.quick = true;
                    options.warmup = Duration::from_secs(1);
                    options.measure = Duration::from_secs(2);
                    options.end_to_end_orders = 500;
                    options.raw_commits = 1_000;
                    options.instantiations = 300;
                }
                "--seconds" | "--orders" | "--output" => {
                    let value = args
                        .next()
                        .with_context(|| format!("{arg} needs a value\n{USAGE}"))?;
                    match arg.as_str() {
                        "--seconds" => {
                            options.measure = Duration::from_secs(
                                value
                                    .parse()
                                    .with_context(|| format!("--seconds {value:?}\n{USAGE}"))?,
                            );
                        }
                        "--orders" => {
                            options.end_to_end_orders = value
                                .parse()
                                .with_context(|| format!("--orders {value:?}\n{USAGE}"))?;
                        }
                        _ => output = Some(PathBuf::from(value)),
                    }
                }
                "--help" | "-h" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        options.output = match output {
            Some(path) => path,
            None if options.quick => root.join("target/BENCHMARKS.quick.md"),
            None => options.output,
        };
        Ok(options)
    }
}

fn runtime(threads: usize, name: &str) -> Result<Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()?)
}

/// A built `.wasm` the bench needs, or an error naming the build command.
fn wasm(root: &Path, name: &str) -> Result<PathBuf> {
    let path = root.join("target/wasm32-wasip2/release").join(name);
    if !path.exists() {
        bail!(
            "{} is missing: run `cargo build --target wasm32-wasip2 --release -p gateway -p orders \
             -p balance-checker -p stock-checker -p vouchers -p bench-hello` first",
            path.display()
        );
    }
    Ok(path)
}

fn print_run(label: &str, result: &LoadResult) {
    eprintln!(
        "[bench] {label:<16} {:>4} conns: {:>9.0} req/s  p50 {:>8.3} ms  p99 {:>8.3} ms  errors {}  shed {}",
        result.connections,
        result.throughput(),
        report::millis(result.percentile(0.50)),
        report::millis(result.percentile(0.99)),
        result.errors,
        result.shed.len()
    );
}

fn main() -> Result<()> {
    if std::env::var_os("SPIN_MAX_INSTANCE_COUNT").is_none() {
        // SAFETY: no other thread runs yet.
        unsafe { std::env::set_var("SPIN_MAX_INSTANCE_COUNT", POOL_INSTANCES) };
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()?;
    let options = Options::parse(&root)?;
    let hello_wasm = wasm(&root, "bench_hello.wasm")?;
    wasm(&root, "gateway.wasm")?;
    wasm(&root, "orders.wasm")?;
    let manifest = root.join("spin.toml");
    let runtime_config = root.join("infra/spin/runtime-config.toml");

    let mut report = Report::new(&root, &options);
    let servers = runtime(SERVER_THREADS, "bench-server")?;
    let clients = runtime(LOAD_THREADS, "bench-load")?;
    let scratch = tempfile::Builder::new().prefix("shop-bench-").tempdir()?;
    let timed = Stop::Timed {
        warmup: options.warmup,
        measure: options.measure,
    };

    // The raw SQLite baseline first, while the process is otherwise idle.
    let raw = raw_sqlite::insert_and_commit_loop(scratch.path(), options.raw_commits)?;
    report.raw_sqlite = Some((options.raw_commits, raw));
    eprintln!(
        "[bench] raw SQLite: {} commits in {raw:?}",
        options.raw_commits
    );

    // Hello-world: native hyper, then the component on the test host.
    let native = servers.block_on(targets::start_native_hello())?;
    for connections in CONNECTIONS {
        let result = clients.block_on(load::run(
            native,
            vec![Workload::get("/"); connections],
            timed,
        ))?;
        print_run("native hello", &result);
        report.native_hello.push(result);
    }
    let hello = servers.block_on(targets::start_hello_component(&hello_wasm, scratch.path()))?;
    let hello_addr = hello.base_url().trim_start_matches("http://").parse()?;
    for connections in CONNECTIONS {
        let result = clients.block_on(load::run(
            hello_addr,
            vec![Workload::get("/"); connections],
            timed,
        ))?;
        print_run("hello component", &result);
        report.hello_component.push(result);
    }
    for hops in CHAIN_HOPS {
        let result = clients.block_on(load::run(
            hello_addr,
            vec![Workload::get(&format!("/chain/{hops}")); CHAIN_CONNECTIONS],
            timed,
        ))?;
        print_run(&format!("hello chain {hops}"), &result);
        report.hello_chain.push((hops, result));
    }
    let hello_instantiation =
        servers.block_on(hello.time_instantiations("hello", options.instantiations))?;
    report
        .instantiations
        .push(Instantiation::new("hello (bench)", hello_instantiation));
    servers.block_on(hello.shutdown());

    // Order accept on the shop, letting the pipeline settle between runs.
    let shop = servers.block_on(targets::start_shop(
        manifest.clone(),
        runtime_config.clone(),
        scratch.path().join("shop-accept"),
    ))?;
    report.order_accept = clients.block_on(order_accept(&shop, timed))?;
    let Shop::TestHost(host, _) = &shop else {
        unreachable!("started on the test host")
    };
    for component in ["gateway", "orders"] {
        let times =
            servers.block_on(host.time_instantiations(component, options.instantiations))?;
        report
            .instantiations
            .push(Instantiation::new(component, times));
    }
    servers.block_on(shop.shutdown());

    // End to end on a fresh database.
    let shop = servers.block_on(targets::start_shop(
        manifest,
        runtime_config.clone(),
        scratch.path().join("shop-end-to-end"),
    ))?;
    report.end_to_end = Some(clients.block_on(end_to_end(&shop, options.end_to_end_orders))?);
    servers.block_on(shop.shutdown());

    // The same two on an app the bench did not start.
    if let Some(url) = &options.shop_url {
        let working_dir = match std::env::var_os("SHOP_SPIN_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => root.clone(),
        };
        let shop = clients.block_on(async {
            RunningApp::new(url, working_dir, runtime_config).map(Shop::Running)
        })?;
        let accept = clients.block_on(order_accept(&shop, timed))?;
        let end_to_end = clients.block_on(end_to_end(&shop, options.end_to_end_orders))?;
        report.running_app = Some(RunningAppFigures {
            url: url.clone(),
            description: std::env::var("SHOP_DESCRIPTION").unwrap_or_default(),
            accept,
            end_to_end,
        });
        drop(shop);
    }

    report.finish();
    let text = report.render();
    if let Some(dir) = options.output.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&options.output, &text)
        .with_context(|| format!("cannot write {}", options.output.display()))?;
    println!("{text}");
    eprintln!("[bench] wrote {}", options.output.display());
    Ok(())
}

/// Order accept (`POST /api/v1/orders`) on `shop` at each of [`CONNECTIONS`], the pipeline
/// settling between runs.
async fn order_accept(shop: &Shop, timed: Stop) -> Result<Vec<LoadResult>> {
    let fixture = Fixture::new();
    fixture
        .stock(shop, *CONNECTIONS.iter().max().unwrap_or(&1))
        .await?;
    let mut results = Vec::new();
    for connections in CONNECTIONS {
        let result = load::run(shop.addr()?, fixture.order_workloads(connections)?, timed).await?;
        print_run("order accept", &result);
        results.push(result);
        let settled = targets::wait_until_settled(shop, Duration::from_secs(600)).await?;
        eprintln!("[bench] the pipeline settled {settled:?} after the run");
    }
    Ok(results)
}

/// `orders` orders placed on `shop` over [`END_TO_END_CONNECTIONS`] connections, timed until
/// every accepted one is `confirmed`; with the test host's record of its SQLite work.
async fn end_to_end(shop: &Shop, orders: usize) -> Result<EndToEnd> {
    let fixture = Fixture::new();
    let run = fixture.orders_of_run();
    fixture.stock(shop, END_TO_END_CONNECTIONS).await?;
    // Warm every component and table once, then wait until those orders are confirmed.
    load::run(
        shop.addr()?,
        fixture.order_workloads(END_TO_END_CONNECTIONS)?,
        Stop::Count(1),
    )
    .await?;
    targets::wait_until_settled(shop, Duration::from_secs(60)).await?;
    let confirmed_sql = format!("SELECT COUNT(*) FROM orders WHERE status = 'confirmed' AND {run}");
    let before = targets::count(shop, "orders", &confirmed_sql)?;
    if let Shop::TestHost(host, _) = shop {
        host.sqlite_usage();
    }
    let per_connection = orders.div_ceil(END_TO_END_CONNECTIONS);
    let orders = per_connection * END_TO_END_CONNECTIONS;
    let started = Instant::now();
    let placing = load::run(
        shop.addr()?,
        fixture.order_workloads(END_TO_END_CONNECTIONS)?,
        Stop::Count(per_connection),
    )
    .await?;
    let placed_after = started.elapsed();
    print_run("e2e placing", &placing);
    let confirmed_after = loop {
        let confirmed = targets::count(shop, "orders", &confirmed_sql)? - before;
        if confirmed >= placing.ok as i64 {
            break started.elapsed();
        }
        let rejected = targets::count(
            shop,
            "orders",
            &format!("SELECT COUNT(*) FROM orders WHERE status = 'rejected' AND {run}"),
        )?;
        if rejected > 0 {
            bail!("{rejected} benchmark orders were rejected");
        }
        if started.elapsed() > Duration::from_secs(900) {
            bail!(
                "only {confirmed} of {} orders confirmed after 15 minutes",
                placing.ok
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let sqlite = match shop {
        Shop::TestHost(host, _) => Some(host.sqlite_usage()),
        Shop::Running(_) => None,
    };
    let confirmation_ms: Vec<i64> = shop
        .query(
            "orders",
            &format!(
                "SELECT c.at - p.at FROM order_history p JOIN order_history c \
                 ON c.order_id = p.order_id AND c.status = 'confirmed' \
                 WHERE p.status = 'placed' AND p.order_id IN (SELECT id FROM orders WHERE {run}) \
                 ORDER BY 1"
            ),
        )?
        .iter()
        .filter_map(|row| row.first().and_then(serde_json::Value::as_i64))
        .collect();
    Ok(EndToEnd {
        orders,
        placed: placing.ok,
        connections: END_TO_END_CONNECTIONS,
        placed_after,
        confirmed_after,
        confirmation_ms,
        sqlite,
    })
}
