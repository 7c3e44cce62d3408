//! Secrets: the repository holds no secret but the documented development defaults of
//! `auth_secret` and `event_secret`, and an app running on those defaults says so on
//! stderr, while one with its own secrets does not.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use shop_domain::auth::Role;
use support::{AUTH_SECRET, EVENT_SECRET, manifest};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

/// The documented development defaults (README, spin.toml, wadm.yaml): the only secret
/// values the repository may contain.
const DEV_DEFAULTS: [&str; 2] = ["dev-auth-secret-change-me", "dev-event-secret-change-me"];

/// Orders placed by each app the tests start.
const CALLS: usize = 10;
/// What the warning about each development default says.
const AUTH_WARNING: &str = "auth_secret is the documented development default";
/// What the warning about the event secret says.
const EVENT_WARNING: &str = "event_secret is the documented development default";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `test-host serve` on the repository's spin.toml with `variables`, places [`CALLS`] orders
/// with a staff token signed by `auth_secret`, stops the host and returns
/// everything it wrote to stderr (each component's lines prefixed `[component] `).
async fn stderr_of_calls(variables: &[(&str, &str)], auth_secret: &[u8]) -> String {
    let data_dir = tempfile::tempdir().expect("a data directory");
    let mut command = Command::new(env!("CARGO_BIN_EXE_test-host"));
    command
        .arg("serve")
        .arg("--manifest")
        .arg(manifest())
        .args(["--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir.path())
        .arg("--runtime-config-file")
        .arg(support::runtime_config())
        // The runtime config's relative SQLite paths are taken from here, as Spin takes them.
        .current_dir(data_dir.path())
        .env_remove("SPIN_VARIABLE_AUTH_SECRET")
        .env_remove("SPIN_VARIABLE_EVENT_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, value) in variables {
        command.arg("--variable").arg(format!("{key}={value}"));
    }
    let mut host = command.spawn().expect("test-host starts");
    let mut stdout = BufReader::new(host.stdout.take().unwrap()).lines();
    let base = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = stdout.next_line().await.expect("stdout readable") {
            if let Some(base) = line.strip_prefix("Serving ") {
                return base.to_owned();
            }
        }
        panic!("test-host exited before serving");
    })
    .await
    .expect("test-host serves within 2 minutes");
    let mut stderr = host.stderr.take().unwrap();
    let collector = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });

    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 600;
    let token = shop_domain::auth::mint_token(
        &shop_domain::auth::Claims {
            sub: "staff@shop.test".to_owned(),
            role: Role::Staff,
            exp,
        },
        auth_secret,
    );
    // The gateway verifies the token (auth_secret), orders signs `order.placed`
    // (event_secret) before it answers: a fresh instance of each per call.
    for _ in 0..CALLS {
        let response = reqwest::Client::new()
            .post(format!("{base}/api/v1/orders"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(r#"{"customer": "cara@example.com", "value_cents": 100}"#)
            .send()
            .await
            .expect("the call is answered");
        assert_eq!(response.status().as_u16(), 202, "the order is placed");
    }

    host.start_kill().expect("test-host stops");
    let _ = host.wait().await;
    tokio::time::timeout(Duration::from_secs(30), collector)
        .await
        .expect("stderr closes")
        .expect("stderr read")
}

/// The stderr lines of `component` that contain `warning`.
fn warnings<'a>(stderr: &'a str, component: &str, warning: &str) -> Vec<&'a str> {
    let prefix = format!("[{component}] ");
    stderr
        .lines()
        .filter(|line| line.starts_with(&prefix) && line.contains(warning))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_secrets_are_warned_about_and_overridden_ones_are_not() {
    let defaults = stderr_of_calls(&[], AUTH_SECRET).await;
    // Each call runs on fresh instances, yet the gateway warns about each default at most
    // once a minute (twice when the minute turns during the calls), and no other service
    // repeats it.
    for warning in [AUTH_WARNING, EVENT_WARNING] {
        let gateway = warnings(&defaults, "gateway", warning);
        assert!(
            (1..=2).contains(&gateway.len()),
            "{} warnings in {CALLS} calls: {defaults}",
            gateway.len()
        );
        assert!(gateway[0].contains(r#""level":"warn""#), "{defaults}");
    }
    for service in ["orders", "balance-checker", "stock-checker", "vouchers"] {
        assert!(
            warnings(&defaults, service, "documented development default").is_empty(),
            "{defaults}"
        );
    }

    let own_secrets = [
        ("auth_secret", "a-deployment-auth-secret"),
        ("event_secret", "a-deployment-event-secret"),
    ];
    let overridden = stderr_of_calls(&own_secrets, b"a-deployment-auth-secret").await;
    assert!(
        !overridden.contains("documented development default"),
        "no warning with overridden secrets: {overridden}"
    );
    assert!(
        !overridden.contains(std::str::from_utf8(EVENT_SECRET).unwrap()),
        "{overridden}"
    );
}

/// The files the repository tracks, plus new ones not ignored (what the next commit may
/// hold).
fn repository_files() -> Vec<PathBuf> {
    let output = std::process::Command::new("git")
        .args([
            "ls-files",
            "--cached",
            "--others",
            "--exclude-standard",
            "-z",
        ])
        .current_dir(root())
        .output()
        .expect("git runs");
    assert!(output.status.success(), "git ls-files fails: {output:?}");
    output
        .stdout
        .split(|b| *b == 0)
        .filter(|name| !name.is_empty())
        .map(|name| root().join(String::from_utf8_lossy(name).as_ref()))
        .filter(|path| path.is_file())
        .collect()
}

/// Markers of well-known credential formats, none of which may appear anywhere.
const CREDENTIAL_MARKERS: [&str; 9] = [
    "PRIVATE KEY-----",
    "AKIA",
    "ghp_",
    "github_pat_",
    "xoxb-",
    "xoxp-",
    "sk_live_",
    "glpat-",
    "eyJhbGciOi",
];

/// Whether `value`, given to a key named like a secret or password, is allowed: a
/// documented default, empty, a placeholder, or a reference to a value kept elsewhere
/// (`{{ variable }}`, `$NAME`, `${NAME:-default}` with an allowed default).
fn allowed_secret_value(value: &str) -> bool {
    let value = value.trim();
    if let Some(reference) = value.strip_prefix("${") {
        let reference = reference.trim_end_matches('}');
        return match reference.split_once(":-") {
            Some((_, default)) => allowed_secret_value(default),
            None => true,
        };
    }
    value.is_empty()
        || DEV_DEFAULTS.contains(&value)
        || value.starts_with("{{")
        || value.starts_with('$')
        || value.starts_with('<')
        || value.contains("...")
        || value == "change-me"
        || value == "true"
        || value == "false"
}

/// The values assigned (`key = value`, `key: value`) on `line` to keys whose name ends in
/// `secret` or `password`. Quoted values always count; bare ones only when `bare_values`
/// (configuration and scripts, where a bare word is a value rather than code) and the line
/// is no comment (where it is prose).
fn secret_assignments(line: &str, bare_values: bool) -> Vec<String> {
    let comment = ["#", "//"].iter().any(|c| line.trim_start().starts_with(c));
    let bare_values = bare_values && !comment;
    let bytes = line.as_bytes();
    let is_name = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !is_name(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_name(bytes[i]) {
            i += 1;
        }
        let name = line[start..i].to_ascii_lowercase();
        if !(name.ends_with("secret") || name.ends_with("password")) {
            continue;
        }
        let mut j = i;
        while j < bytes.len() && matches!(bytes[j], b'"' | b'\'' | b'`' | b' ') {
            j += 1;
        }
        let Some(&op) = bytes.get(j) else { continue };
        // Not `==`, `::`, nor the `:-` of a shell `${NAME:-default}` (its default is
        // checked as the value of the key it is assigned to).
        let next = bytes.get(j + 1);
        if !matches!(op, b'=' | b':') || next == Some(&op) || (op == b':' && next == Some(&b'-')) {
            continue;
        }
        let rest = line[j + 1..].trim_start();
        match rest.chars().next() {
            Some(quote @ ('"' | '\'')) => {
                let literal = rest[1..].split(quote).next().unwrap_or_default();
                found.push(literal.to_owned());
            }
            // An inline table (`key = { default = "..." }`): every string in it.
            Some('{') if !rest.starts_with("{{") => {
                let table = rest.split('}').next().unwrap_or_default();
                found.extend(table.split('"').skip(1).step_by(2).map(str::to_owned));
            }
            Some(_) if bare_values => {
                let word = rest
                    .split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | ')' | '`'))
                    .next()
                    .unwrap_or_default();
                found.push(word.to_owned());
            }
            _ => {}
        }
    }
    found
}

#[test]
fn no_secret_but_the_documented_dev_defaults_is_in_the_repository() {
    let mut findings = Vec::new();
    for path in repository_files() {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue; // not text
        };
        let name = path
            .strip_prefix(root())
            .unwrap_or(&path)
            .display()
            .to_string();
        if name == "tests/host/tests/secrets.rs" {
            continue; // the markers above
        }
        let code = [".rs", ".js", ".mjs", ".ts"]
            .iter()
            .any(|ext| name.ends_with(ext));
        for (number, line) in text.lines().enumerate() {
            for marker in CREDENTIAL_MARKERS {
                if line.contains(marker) {
                    findings.push(format!(
                        "{name}:{}: looks like a credential ({marker})",
                        number + 1
                    ));
                }
            }
            for value in secret_assignments(line, !code) {
                if !allowed_secret_value(&value) {
                    findings.push(format!("{name}:{}: secret value {value:?}", number + 1));
                }
            }
        }
    }
    assert!(
        findings.is_empty(),
        "only the documented development defaults {DEV_DEFAULTS:?} may be in the repository:\n{}",
        findings.join("\n")
    );
}

#[test]
fn the_scan_finds_what_it_looks_for() {
    assert_eq!(
        secret_assignments(r#"auth_secret = { default = "prod-s3cret" }"#, true),
        ["prod-s3cret"]
    );
    assert_eq!(
        secret_assignments("EVENT_SECRET: hunter2", true),
        ["hunter2"]
    );
    assert!(secret_assignments("let secret = load();", false).is_empty());
    assert!(secret_assignments("#   AUTH_SECRET: the gateway's secret", true).is_empty());
    assert_eq!(
        secret_assignments("secret=${AUTH_SECRET:-hunter2}", true),
        ["${AUTH_SECRET:-hunter2}"]
    );
    assert!(secret_assignments(r#"text(config, "auth_secret", DEFAULT)"#, true).is_empty());
    assert!(!allowed_secret_value("hunter2"));
    assert!(!allowed_secret_value("${AUTH_SECRET:-hunter2}"));
    assert!(allowed_secret_value(
        "${AUTH_SECRET:-dev-auth-secret-change-me}"
    ));
    assert!(allowed_secret_value("{{ event_secret }}"));
}
