//! `BENCHMARKS.md`: the machine, the figures, the ratios and whether the targets of issue 5
//! are met, with how each figure was measured and how to re-run.

use crate::Options;
use crate::load::LoadResult;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Target: order accept at 32 connections reaches this share of the hello component's
/// throughput.
const ACCEPT_SHARE_TARGET: f64 = 0.50;
/// Target: order accept p99 at 32 connections stays under this.
const ACCEPT_P99_TARGET: Duration = Duration::from_millis(10);
/// Target: orders per second placed → confirmed.
const END_TO_END_TARGET: f64 = 1_000.0;
/// The connection count the targets are stated at.
const TARGET_CONNECTIONS: usize = 32;
/// Write transactions per order the whole saga may take, amortised (issue 13).
const WRITES_PER_ORDER_TARGET: f64 = 3.0;
/// Target: order accept at these connection counts keeps this share of its throughput at
/// [`TARGET_CONNECTIONS`], with p99 under [`OVERLOAD_P99_TARGET`] and every shed request
/// answered within [`SHED_TARGET`].
const OVERLOAD_CONNECTIONS: [usize; 2] = [128, 512];
/// See [`OVERLOAD_CONNECTIONS`].
const OVERLOAD_SHARE_TARGET: f64 = 0.80;
/// See [`OVERLOAD_CONNECTIONS`].
const OVERLOAD_P99_TARGET: Duration = Duration::from_millis(100);
/// See [`OVERLOAD_CONNECTIONS`].
const SHED_TARGET: Duration = Duration::from_millis(5);

/// Milliseconds with fractions.
pub fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// Timed instantiations of one component.
#[derive(Debug, Clone)]
pub struct Instantiation {
    /// The component.
    pub component: String,
    /// Each instantiation's time, sorted.
    pub times: Vec<Duration>,
}

impl Instantiation {
    /// Sorts `times` of `component`.
    pub fn new(component: &str, mut times: Vec<Duration>) -> Self {
        times.sort_unstable();
        Self {
            component: component.to_owned(),
            times,
        }
    }

    fn percentile(&self, q: f64) -> Duration {
        let rank = (q * self.times.len() as f64).ceil() as usize;
        self.times
            .get(rank.clamp(1, self.times.len().max(1)) - 1)
            .copied()
            .unwrap_or_default()
    }

    fn mean(&self) -> Duration {
        let total: Duration = self.times.iter().sum();
        total / self.times.len().max(1) as u32
    }
}

/// The end-to-end run.
#[derive(Debug, Clone)]
pub struct EndToEnd {
    /// Orders sent.
    pub orders: usize,
    /// Orders accepted (202).
    pub placed: u64,
    /// Connections placing them.
    pub connections: usize,
    /// When the last was accepted, from the first request.
    pub placed_after: Duration,
    /// When the last was confirmed, from the first request.
    pub confirmed_after: Duration,
    /// Per order, milliseconds from `placed` to `confirmed` (order history), sorted.
    pub confirmation_ms: Vec<i64>,
    /// What the components did with SQLite during the run (the test host's record; none
    /// for an app the bench did not start).
    pub sqlite: Option<test_host::SqliteUsageFigures>,
}

impl EndToEnd {
    fn throughput(&self) -> f64 {
        self.placed as f64 / self.confirmed_after.as_secs_f64()
    }

    fn confirmation_percentile(&self, q: f64) -> i64 {
        let rank = (q * self.confirmation_ms.len() as f64).ceil() as usize;
        self.confirmation_ms
            .get(rank.clamp(1, self.confirmation_ms.len().max(1)) - 1)
            .copied()
            .unwrap_or_default()
    }
}

/// Order accept and end to end on an app the bench did not start (`SHOP_URL`).
pub struct RunningAppFigures {
    /// Where it runs.
    pub url: String,
    /// What it is (`SHOP_DESCRIPTION`), possibly empty.
    pub description: String,
    /// `POST /api/v1/orders`, one result per connection count.
    pub accept: Vec<LoadResult>,
    /// Its end-to-end run.
    pub end_to_end: EndToEnd,
}

/// Everything one bench run found.
pub struct Report {
    root: PathBuf,
    options: Options,
    started: String,
    load_before: String,
    busy_before: String,
    load_after: String,
    /// Native hyper hello-world, one result per connection count.
    pub native_hello: Vec<LoadResult>,
    /// The hello component on the test host.
    pub hello_component: Vec<LoadResult>,
    /// The hello component calling itself `hops` times per request (`GET /chain/{hops}`),
    /// at [`crate::CHAIN_CONNECTIONS`].
    pub hello_chain: Vec<(u32, LoadResult)>,
    /// `POST /api/v1/orders` on the shop.
    pub order_accept: Vec<LoadResult>,
    /// The end-to-end run.
    pub end_to_end: Option<EndToEnd>,
    /// The raw SQLite loop: commits and their time.
    pub raw_sqlite: Option<(usize, Duration)>,
    /// Instantiation times per component.
    pub instantiations: Vec<Instantiation>,
    /// The same on a running app, when `SHOP_URL` named one.
    pub running_app: Option<RunningAppFigures>,
}

/// A command's trimmed standard output, or `unknown`.
fn command_output(program: &str, args: &[&str], dir: &Path) -> String {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn load_average(root: &Path) -> String {
    command_output("uptime", &[], root)
}

/// The processes using the most CPU besides this one (`ps`, %CPU over each process's
/// lifetime), one per line as `%CPU command`, or `unknown`.
fn busiest_other_processes(root: &Path) -> String {
    let own = std::process::id().to_string();
    let listing = command_output("ps", &["-eo", "pid=,pcpu=,comm=", "--sort=-pcpu"], root);
    let busiest: Vec<String> = listing
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (pid, cpu, command) = (fields.next()?, fields.next()?, fields.next()?);
            (pid != own && cpu != "0.0").then(|| format!("{cpu}% {command}"))
        })
        .take(5)
        .collect();
    if busiest.is_empty() {
        "none".to_owned()
    } else {
        busiest.join(", ")
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// A run's cell: `req/s (p50 / p99 ms)`, with its errors and the rate and p99 of the answers
/// shed with 503 when there were any.
fn rate_cell(r: &LoadResult) -> String {
    if r.ok == 0 {
        return format!(
            "0 (no request completed in the window, {} errors)",
            r.errors
        );
    }
    let mut errors = if r.errors > 0 {
        format!(", {} errors", r.errors)
    } else {
        String::new()
    };
    if !r.shed.is_empty() {
        errors.push_str(&format!(
            ", {:.0}/s shed with 503 (p99 {:.2} ms)",
            r.shed.len() as f64 / r.elapsed.as_secs_f64(),
            millis(crate::load::percentile(&r.shed, 0.99))
        ));
    }
    format!(
        "{:.0} ({:.2} / {:.2}{errors})",
        r.throughput(),
        millis(r.percentile(0.50)),
        millis(r.percentile(0.99))
    )
}

fn yes_no(met: bool) -> &'static str {
    if met { "**met**" } else { "**not met**" }
}

impl Report {
    /// An empty report; notes the date and the machine's load now.
    pub fn new(root: &Path, options: &Options) -> Self {
        Self {
            root: root.to_owned(),
            options: options.clone(),
            started: command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"], root),
            load_before: load_average(root),
            busy_before: busiest_other_processes(root),
            load_after: String::new(),
            native_hello: Vec::new(),
            hello_component: Vec::new(),
            hello_chain: Vec::new(),
            order_accept: Vec::new(),
            end_to_end: None,
            raw_sqlite: None,
            instantiations: Vec::new(),
            running_app: None,
        }
    }

    /// Notes the machine's load at the end.
    pub fn finish(&mut self) {
        self.load_after = load_average(&self.root);
    }

    fn at(results: &[LoadResult], connections: usize) -> Option<&LoadResult> {
        results.iter().find(|r| r.connections == connections)
    }

    /// The Markdown text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let commit = command_output("git", &["rev-parse", "--short", "HEAD"], &self.root);
        let dirty = command_output(
            "git",
            &["status", "--porcelain", "--untracked-files=no"],
            &self.root,
        );
        let commit = if dirty.is_empty() || dirty == "unknown" {
            commit
        } else {
            format!("{commit} with uncommitted changes")
        };
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        let _ = writeln!(out, "# Benchmarks\n");
        let _ = writeln!(
            out,
            "Written by `make bench` (`cargo bench -p shop-bench`{}); do not edit by hand.\n",
            if self.options.quick {
                " -- --quick"
            } else {
                ""
            }
        );
        let _ = writeln!(out, "| | |\n| --- | --- |");
        let _ = writeln!(out, "| date | {} |", self.started);
        let _ = writeln!(out, "| commit | {commit} |");
        let _ = writeln!(
            out,
            "| machine | {}, {cores} cores visible, `{}` |",
            cpu_model(),
            command_output("uname", &["-sr"], &self.root)
        );
        let _ = writeln!(
            out,
            "| toolchain | {} |",
            command_output("rustc", &["-V"], &self.root)
        );
        let _ = writeln!(out, "| load before | `{}` |", self.load_before);
        let _ = writeln!(
            out,
            "| busiest other processes at the start | {} |",
            self.busy_before
        );
        let _ = writeln!(out, "| load after | `{}` |", self.load_after);
        let _ = writeln!(
            out,
            "| runs | {} s measured after {} s warm-up per throughput figure; servers on {} tokio threads, load generator on {} in the same process |\n",
            self.options.measure.as_secs(),
            self.options.warmup.as_secs(),
            crate::SERVER_THREADS,
            crate::LOAD_THREADS
        );
        let _ = writeln!(
            out,
            "The machine is shared: a load average above the core count means other work (builds, \
             tests) took CPU from these runs, and every figure below is lower than on a quiet machine. \
             The ratios compare runs made minutes apart under the same kind of load.\n"
        );

        self.render_targets(&mut out);
        self.render_accept(&mut out);
        self.render_chain(&mut out);
        self.render_end_to_end(&mut out);
        self.render_running_app(&mut out);
        self.render_instantiation(&mut out);
        Self::render_expected_limits(&mut out);
        let _ = writeln!(out, "## Re-run\n");
        let _ = writeln!(
            out,
            "```sh\nmake bench            # builds the components and the hello component, runs everything, rewrites BENCHMARKS.md\n\
             cargo bench -p shop-bench -- --quick    # a short run, report in target/BENCHMARKS.quick.md\n\
             make bench-real-spin  # the same, and order accept and end to end on a real `spin up` (SHOP_URL)\n\
             cargo bench -p shop-bench -- --help\n```"
        );
        out
    }

    fn render_targets(&self, out: &mut String) {
        let _ = writeln!(out, "## Targets (issues 5 and 13)\n");
        let _ = writeln!(
            out,
            "| target | measured | | the topology's ceiling (hello chain, no work) |\n| --- | --- | --- | --- |"
        );
        // Order accept is one instance (the gateway composed with the services): its
        // ceiling is the hello component itself.
        let hello_at_target = Self::at(&self.hello_component, TARGET_CONNECTIONS);
        let accept_ceiling = match hello_at_target {
            Some(_) => "100% (one instance)".to_owned(),
            None => "—".to_owned(),
        };
        let accept_p99_ceiling = hello_at_target.map_or_else(
            || "—".to_owned(),
            |hello| {
                format!(
                    "p99 {:.2} ms (one instance)",
                    millis(hello.percentile(0.99))
                )
            },
        );
        let saga_ceiling = self.chain(crate::SAGA_CHAIN_HOPS).map_or_else(
            || "—".to_owned(),
            |chain| {
                format!(
                    "{:.0} orders/s (N = {})",
                    chain.throughput(),
                    crate::SAGA_CHAIN_HOPS
                )
            },
        );
        if let (Some(accept), Some(hello)) = (
            Self::at(&self.order_accept, TARGET_CONNECTIONS),
            Self::at(&self.hello_component, TARGET_CONNECTIONS),
        ) {
            let share = accept.throughput() / hello.throughput();
            let _ = writeln!(
                out,
                "| order accept ≥ {:.0}% of the hello component's throughput at {TARGET_CONNECTIONS} connections | {:.0}% ({:.0} vs {:.0} req/s) | {} | {} |",
                ACCEPT_SHARE_TARGET * 100.0,
                share * 100.0,
                accept.throughput(),
                hello.throughput(),
                yes_no(share >= ACCEPT_SHARE_TARGET),
                accept_ceiling
            );
            let p99 = accept.percentile(0.99);
            let _ = writeln!(
                out,
                "| order accept p99 < {} ms at {TARGET_CONNECTIONS} connections | {:.2} ms | {} | {} |",
                ACCEPT_P99_TARGET.as_millis(),
                millis(p99),
                yes_no(accept.ok > 0 && p99 < ACCEPT_P99_TARGET),
                accept_p99_ceiling
            );
        }
        if let Some(at_target) = Self::at(&self.order_accept, TARGET_CONNECTIONS) {
            for connections in OVERLOAD_CONNECTIONS {
                let Some(run) = Self::at(&self.order_accept, connections) else {
                    continue;
                };
                let share = run.throughput() / at_target.throughput().max(f64::MIN_POSITIVE);
                let p99 = run.percentile(0.99);
                let slowest_shed = run.shed.last().copied().unwrap_or_default();
                let _ = writeln!(
                    out,
                    "| order accept at {connections} connections: ≥ {:.0}% of the {TARGET_CONNECTIONS}-connection throughput, p99 < {} ms, every 503 within {} ms, no other error | {:.0}% ({:.0} req/s), p99 {:.2} ms, {} shed (slowest {:.2} ms), {} errors | {} | — |",
                    OVERLOAD_SHARE_TARGET * 100.0,
                    OVERLOAD_P99_TARGET.as_millis(),
                    SHED_TARGET.as_millis(),
                    share * 100.0,
                    run.throughput(),
                    millis(p99),
                    run.shed.len(),
                    millis(slowest_shed),
                    run.errors,
                    yes_no(
                        share >= OVERLOAD_SHARE_TARGET
                            && p99 < OVERLOAD_P99_TARGET
                            && slowest_shed <= SHED_TARGET
                            && run.errors == 0
                    ),
                );
            }
        }
        if let Some(e2e) = &self.end_to_end {
            let _ = writeln!(
                out,
                "| end to end ≥ {END_TO_END_TARGET:.0} orders/s placed → confirmed | {:.0} orders/s | {} | {} |",
                e2e.throughput(),
                yes_no(e2e.throughput() >= END_TO_END_TARGET),
                saga_ceiling
            );
            if let Some(usage) = &e2e.sqlite {
                let writes = usage.write_transactions() as f64 / e2e.placed.max(1) as f64;
                let _ = writeln!(
                    out,
                    "| write transactions per order ≤ {WRITES_PER_ORDER_TARGET:.0}, amortised (`BEGIN` ... `COMMIT` and single-statement writes, every service) | {writes:.2} | {} | — |",
                    yes_no(writes <= WRITES_PER_ORDER_TARGET)
                );
            }
        }
        let _ = writeln!(out);
    }

    fn render_accept(&self, out: &mut String) {
        let _ = writeln!(out, "## Order accept against hello-world\n");
        let _ = writeln!(
            out,
            "Each connection is a keep-alive HTTP/1.1 connection sending its next request as soon as the \
             answer is read; latency is per request, client side. *native hello* is a hyper server \
             answering 200 `hello`; *hello component* is `tests/bench/hello` (a `wasi:http` incoming \
             handler answering 200 `hello`, wasip2 1.0.1 / WASI 0.2.4) served by the test host exactly as \
             it serves the shop (routing, Spin headers, a fresh instance per request, pooling allocator); \
             *order accept* is `POST /api/v1/orders` (one item, a customer's own token, 202) on the shop \
             (`spin.toml`, `rate_limit_per_minute=0`, the admin tick every second): one instance, the \
             gateway composed with the services, verifies the token, reads the prices from \
             stock-checker and calls orders, which validates and stores the order in one statement (a \
             trigger writes its first history entry and its `order.placed` outbox rows). At most 32 \
             such requests are served at once (`max_requests_in_flight`), the next answered 503 at \
             once, and a connection so refused waits as its `Retry-After-Ms` asks (500 ms) before \
             sending again. After its response an instance relays every due event, if fewer than 2 \
             others are relaying (`max_relays_in_flight`), so the orders run through the pipeline in \
             the background while the run goes on; the next run starts once every order is settled. \
             The servers' instance pool is sized for 512 connections (`SPIN_MAX_INSTANCE_COUNT=6000`; \
             Spin's default holds about 125 of the composed gateway).\n"
        );
        let _ = writeln!(
            out,
            "| connections | native hello req/s (p50 / p99 ms) | hello component req/s (p50 / p99 ms) | order accept req/s (p50 / p99 ms) | accept / hello component | accept / native | hello component / native |"
        );
        let _ = writeln!(out, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        for connections in crate::CONNECTIONS {
            let cell = |results: &[LoadResult]| {
                Self::at(results, connections).map_or_else(|| "—".to_owned(), rate_cell)
            };
            let rate =
                |results: &[LoadResult]| Self::at(results, connections).map(LoadResult::throughput);
            let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.1}%", a / b * 100.0),
                _ => "—".to_owned(),
            };
            let (native, hello, accept) = (
                rate(&self.native_hello),
                rate(&self.hello_component),
                rate(&self.order_accept),
            );
            let _ = writeln!(
                out,
                "| {connections} | {} | {} | {} | {} | {} | {} |",
                cell(&self.native_hello),
                cell(&self.hello_component),
                cell(&self.order_accept),
                ratio(accept, hello),
                ratio(accept, native),
                ratio(hello, native)
            );
        }
        let _ = writeln!(out);
    }

    /// The hello component's throughput at the targets' connection count.
    fn hello_throughput(&self) -> Option<f64> {
        Self::at(&self.hello_component, TARGET_CONNECTIONS).map(LoadResult::throughput)
    }

    fn chain(&self, hops: u32) -> Option<&LoadResult> {
        self.hello_chain
            .iter()
            .find(|(h, _)| *h == hops)
            .map(|(_, result)| result)
    }

    fn render_chain(&self, out: &mut String) {
        let _ = writeln!(out, "## The topology's ceiling: chained hello components\n");
        let _ = writeln!(
            out,
            "*hello chain N* is `GET /chain/N` on the hello component above: each instance first calls \
             `/chain/N-1` on itself by local service chaining (`http://hello.spin.internal`, as the shop's \
             services called each other before they were composed) and answers with that answer, so a request is N + 1 fresh \
             instances and N chained calls with no other work, at {} connections. Order accept is one \
             instance: the gateway composed with the services (Spin component dependencies), whose \
             calls into them are function calls; an order's saga took seven instances when its services \
             were apart (the accept, both checkers on `order.placed`, orders on each answer, both \
             checkers on `order.confirmed`: N = 6). These rates are what the shop's topology allows on this host before any of its \
             own work: no SQL, no JSON, no signatures.\n",
            crate::CHAIN_CONNECTIONS
        );
        let hello = self.hello_throughput();
        let _ = writeln!(
            out,
            "| chained calls N | instances per request | req/s (p50 / p99 ms) | instances/s | req/s / hello component |\n| ---: | ---: | ---: | ---: | ---: |"
        );
        for (hops, result) in &self.hello_chain {
            let rate = result.throughput();
            let share =
                hello.map_or_else(|| "—".to_owned(), |h| format!("{:.1}%", rate / h * 100.0));
            let _ = writeln!(
                out,
                "| {hops} | {} | {} | {:.0} | {share} |",
                hops + 1,
                rate_cell(result),
                rate * f64::from(hops + 1),
            );
        }
        if let Some(saga_chain) = self.chain(crate::SAGA_CHAIN_HOPS) {
            let _ = writeln!(
                out,
                "\nSo with no work at all, seven instances per order allow at most {:.0} orders a second \
                 (the end-to-end target is {END_TO_END_TARGET:.0}).",
                saga_chain.throughput()
            );
        }
        let _ = writeln!(out);
    }

    fn render_end_to_end(&self, out: &mut String) {
        let _ = writeln!(out, "## End to end: placed → confirmed (SQLite)\n");
        let Some(e2e) = &self.end_to_end else {
            return;
        };
        let _ = writeln!(
            out,
            "On a fresh database, {} connections place {} orders (one item each) as fast as they are \
             accepted; the figure is orders accepted divided by the time from the first request until \
             the last of them is `confirmed` (the bench polls the `orders` table every 10 ms). Each \
             order takes the whole saga: orders stores it with its outbox rows in one statement; after \
             its response an accepting instance (at most 2 at once) relays the due `order.placed` \
             events to balance-checker and stock-checker (function calls into the composed services), \
             each holds credit or stock in one transaction per batch and answers with an event, and \
             orders confirms, then tells both checkers to deduct. What the relays leave is sent by \
             the next relaying request or the tick.\n",
            e2e.connections, e2e.orders
        );
        self.render_end_to_end_table(out, e2e);
        let _ = writeln!(
            out,
            "\nThe raw loop is one rusqlite connection committing single-row inserts into a fresh file \
             in the temporary directory the test host also uses, with the shop's settings (WAL, \
             `synchronous=NORMAL`).\n"
        );
        if let Some(usage) = &e2e.sqlite {
            render_sqlite_profile(out, e2e, usage);
        }
    }

    /// The end-to-end figures of `e2e` as a table, against the raw SQLite loop.
    fn render_end_to_end_table(&self, out: &mut String, e2e: &EndToEnd) {
        let raw_rate = self
            .raw_sqlite
            .map(|(commits, time)| commits as f64 / time.as_secs_f64());
        let _ = writeln!(out, "| | |\n| --- | ---: |");
        let _ = writeln!(
            out,
            "| orders accepted | {} of {} |",
            e2e.placed, e2e.orders
        );
        let _ = writeln!(
            out,
            "| last accepted after | {:.2} s |",
            e2e.placed_after.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "| last confirmed after | {:.2} s |",
            e2e.confirmed_after.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "| **end-to-end throughput** | **{:.0} orders/s** |",
            e2e.throughput()
        );
        let _ = writeln!(
            out,
            "| placed → confirmed per order (order history), p50 / p99 | {} / {} ms |",
            e2e.confirmation_percentile(0.50),
            e2e.confirmation_percentile(0.99)
        );
        if let (Some(raw_rate), Some((commits, _))) = (raw_rate, self.raw_sqlite) {
            let _ = writeln!(
                out,
                "| raw SQLite insert-and-commit loop ({commits} transactions) | {raw_rate:.0} commits/s |"
            );
            let _ = writeln!(
                out,
                "| end to end / raw loop | {:.1}% |",
                e2e.throughput() / raw_rate * 100.0
            );
        }
    }

    /// Order accept and end to end on the app at `SHOP_URL`, beside the test host's figures.
    fn render_running_app(&self, out: &mut String) {
        let Some(app) = &self.running_app else {
            return;
        };
        let what = if app.description.is_empty() {
            String::new()
        } else {
            format!(" ({})", app.description)
        };
        let _ = writeln!(out, "## The same on a running app: {}{what}\n", app.url);
        let _ = writeln!(
            out,
            "`SHOP_URL` named an app the bench did not start (`make bench-real-spin` starts a real \
             `spin up` of `spin.toml` on embedded SQLite, `rate_limit_per_minute=0`). The bench \
             loads it with the same requests as the test host above and ticks it every second, \
             as `infra/spin/ticker.sh` does; it reads the orders from the app's SQLite files.\n"
        );
        let _ = writeln!(
            out,
            "| connections | order accept req/s (p50 / p99 ms) | test host req/s (p50 / p99 ms) |\n| ---: | ---: | ---: |"
        );
        for connections in crate::CONNECTIONS {
            let cell = |results: &[LoadResult]| {
                Self::at(results, connections).map_or_else(|| "—".to_owned(), rate_cell)
            };
            let _ = writeln!(
                out,
                "| {connections} | {} | {} |",
                cell(&app.accept),
                cell(&self.order_accept)
            );
        }
        let _ = writeln!(
            out,
            "\nEnd to end, {} connections:\n",
            app.end_to_end.connections
        );
        self.render_end_to_end_table(out, &app.end_to_end);
        let _ = writeln!(out);
    }

    /// What limits the shop's figures, from the profile above and the figures.
    fn render_expected_limits(out: &mut String) {
        let _ = writeln!(out, "{}", include_str!("limits.md"));
    }

    fn render_instantiation(&self, out: &mut String) {
        let _ = writeln!(out, "## Per-request instantiation (pooling allocator)\n");
        let _ = writeln!(
            out,
            "Measured in the test host (`TestHost::time_instantiations`), one after another on an \
             otherwise idle host: a fresh `Store` with the request's state, `ProxyPre::instantiate_async` \
             from the pre-instantiated component on the engine the host serves with (pooling allocator, \
             compilation cache), and dropping the store, which returns the slot to the pool. This is \
             what every request, chained call and tick pays before and after the component's code runs.\n"
        );
        let _ = writeln!(
            out,
            "| component | instantiations | mean µs | p50 µs | p99 µs |\n| --- | ---: | ---: | ---: | ---: |"
        );
        for entry in &self.instantiations {
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} | {:.1} | {:.1} |",
                entry.component,
                entry.times.len(),
                entry.mean().as_secs_f64() * 1e6,
                entry.percentile(0.50).as_secs_f64() * 1e6,
                entry.percentile(0.99).as_secs_f64() * 1e6
            );
        }
        let _ = writeln!(out);
    }
}

/// The test host's record of the end-to-end run's SQLite work: what one order costs the
/// databases, and how long transactions hold their database's write lock.
fn render_sqlite_profile(out: &mut String, e2e: &EndToEnd, usage: &test_host::SqliteUsageFigures) {
    let orders = e2e.placed.max(1) as f64;
    let mut held: Vec<Duration> = usage.transactions.iter().map(|t| t.held).collect();
    held.sort();
    let calls = usage
        .transactions
        .iter()
        .fold(test_host::CallFigures::default(), |sum, t| {
            sum.plus(t.calls)
        });
    let quantile = |q: f64| {
        let rank = (q * held.len() as f64).ceil() as usize;
        held.get(rank.clamp(1, held.len().max(1)) - 1)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let held_total: f64 = held.iter().map(Duration::as_secs_f64).sum();
    let non_begin = usage.statements.saturating_sub(held.len() as u64).max(1);
    let _ = writeln!(
        out,
        "### Profile: the database's share (test host record)
"
    );
    let _ = writeln!(
        out,
        "Recorded by the test host for every `spin:sqlite` call of the run above \
         (`TestHost::sqlite_usage`), over every service's database: a transaction holds its database's write lock from its `BEGIN \
         IMMEDIATE` returning until its `COMMIT` returns.\n"
    );
    let _ = writeln!(out, "| | |\n| --- | ---: |");
    let _ = writeln!(
        out,
        "| statements per order | {:.1} |",
        usage.statements as f64 / orders
    );
    let _ = writeln!(
        out,
        "| write transactions per order: `BEGIN IMMEDIATE` ... `COMMIT` | {:.2} |",
        held.len() as f64 / orders
    );
    let _ = writeln!(
        out,
        "| write transactions per order: single statements (outbox claims and deletes) | {:.2} |",
        usage.single_statement_writes as f64 / orders
    );
    let _ = writeln!(
        out,
        "| write lock held per transaction, p50 / p99 | {:.2} / {:.2} ms |",
        quantile(0.50),
        quantile(0.99)
    );
    let _ = writeln!(
        out,
        "| write lock held, share of the run | {:.0}% |",
        held_total / e2e.confirmed_after.as_secs_f64() * 100.0
    );
    let share = |part: Duration| part.as_secs_f64() / held_total.max(f64::MIN_POSITIVE) * 100.0;
    let held_sum: Duration = held.iter().sum();
    let _ = writeln!(
        out,
        "| statements per transaction after its `BEGIN` (`COMMIT` included) | {:.1} |",
        calls.calls as f64 / held.len().max(1) as f64
    );
    let _ = writeln!(
        out,
        "| of the write lock's time: SQLite running the statements | {:.0}% |",
        share(calls.in_sqlite)
    );
    let _ = writeln!(
        out,
        "| of the write lock's time: host calls around them (hand-off to a blocking thread, wait for a runtime worker to resume the instance) | {:.0}% |",
        share(calls.host_calls.saturating_sub(calls.in_sqlite))
    );
    let _ = writeln!(
        out,
        "| of the write lock's time: the guest's own code between statements | {:.0}% |",
        share(held_sum.saturating_sub(calls.host_calls))
    );
    let _ = writeln!(
        out,
        "| mean time of a statement other than `BEGIN` (on the blocking pool, waits for locks included) | {:.3} ms |",
        usage.statement_time.as_secs_f64() * 1000.0 / non_begin as f64
    );
    let _ = writeln!(
        out,
        "| mean wait of a `BEGIN IMMEDIATE` for the write lock | {:.2} ms |\n",
        usage.begin_wait.as_secs_f64() * 1000.0 / held.len().max(1) as f64
    );
    render_statements(out, usage, orders);
}

/// How many statement texts the per-statement table lists.
const STATEMENTS_LISTED: usize = 16;

/// The statements that took the most host-call time, with SQLite's share of each.
fn render_statements(out: &mut String, usage: &test_host::SqliteUsageFigures, orders: f64) {
    let mut statements: Vec<_> = usage.by_statement.iter().collect();
    statements.sort_by_key(|(_, figures)| std::cmp::Reverse(figures.host_calls));
    let _ = writeln!(
        out,
        "The statements that took the most time, by text (its first {} characters): \
         *in SQLite* is the time SQLite ran them, waits for its locks included (a fresh \
         connection's first statement also reads the schema); *host call* adds the hand-off to \
         a blocking thread and the wait for a runtime worker to resume the instance.\n",
        test_host::STATEMENT_KEY_CHARS
    );
    let _ = writeln!(
        out,
        "| statement | calls per order | in SQLite, mean µs | host call, mean µs | host-call time, s |\n| --- | ---: | ---: | ---: | ---: |"
    );
    for (text, figures) in statements.into_iter().take(STATEMENTS_LISTED) {
        let calls = figures.calls.max(1) as f64;
        let _ = writeln!(
            out,
            "| `{}` | {:.2} | {:.0} | {:.0} | {:.1} |",
            text.replace('|', "\\|"),
            figures.calls as f64 / orders,
            figures.in_sqlite.as_secs_f64() * 1e6 / calls,
            figures.host_calls.as_secs_f64() * 1e6 / calls,
            figures.host_calls.as_secs_f64()
        );
    }
    let _ = writeln!(out);
}
