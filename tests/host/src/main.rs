//! `test-host serve`: run the application locally without Spin.

use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::path::PathBuf;
use test_host::{TestHost, TestHostConfig};

const USAGE: &str = "\
usage: test-host serve [--manifest spin.toml] [--listen 127.0.0.1:3000]
                       [--data-dir .spin] [--variable key=value]...
                       [--runtime-config-file FILE]

Runs the components of a Spin manifest the way Spin 4.0.2 would, until Ctrl-C.
Like Spin it has no timer: run infra/spin/ticker.sh beside it.
  --manifest          the Spin manifest (default: spin.toml)
  --listen            address to listen on (default: 127.0.0.1:3000)
  --data-dir          where sqlite_db.db lives (default: .spin next to the manifest)
  --variable k=v      application variable override (repeatable)
  --runtime-config-file  a Spin runtime config: its [sqlite_database.<label>]
                      entries define SQLite labels (relative paths from the current
                      directory, as Spin takes them), its [key_value_store.default]
                      may put key-value on Redis (default: embedded SQLite)";

struct Args {
    manifest: PathBuf,
    listen: SocketAddr,
    data_dir: Option<PathBuf>,
    variables: Vec<(String, String)>,
    runtime_config: Option<PathBuf>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args> {
    match args.next().as_deref() {
        Some("serve") => {}
        Some("-h" | "--help") | None => bail!("{USAGE}"),
        Some(other) => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
    let mut parsed = Args {
        manifest: PathBuf::from("spin.toml"),
        listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
        data_dir: None,
        variables: Vec::new(),
        runtime_config: None,
    };
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            bail!("{USAGE}");
        }
        let Some(value) = args.next() else {
            bail!("{flag} needs a value\n\n{USAGE}");
        };
        match flag.as_str() {
            "--manifest" => parsed.manifest = PathBuf::from(value),
            "--listen" => {
                parsed.listen = value.parse().with_context(|| {
                    format!("--listen {value:?} is not an address like 127.0.0.1:3000")
                })?;
            }
            "--data-dir" => parsed.data_dir = Some(PathBuf::from(value)),
            "--runtime-config-file" => parsed.runtime_config = Some(PathBuf::from(value)),
            "--variable" => {
                let Some((key, val)) = value.split_once('=') else {
                    bail!("--variable {value:?} must look like key=value");
                };
                parsed.variables.push((key.to_owned(), val.to_owned()));
            }
            other => bail!("unknown option {other:?}\n\n{USAGE}"),
        }
    }
    Ok(parsed)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args(std::env::args().skip(1))?;
    let data_dir = args.data_dir.unwrap_or_else(|| {
        args.manifest
            .parent()
            .map(|dir| dir.join(".spin"))
            .unwrap_or_else(|| PathBuf::from(".spin"))
    });
    let mut config = TestHostConfig::new(&args.manifest);
    config.variables = args.variables.into_iter().collect();
    config.data_dir = Some(data_dir);
    config.runtime_config = args.runtime_config;
    config.working_dir = Some(std::env::current_dir().context("no current directory")?);

    let host = TestHost::start_on(config, args.listen).await?;
    println!("Serving {}", host.base_url());
    println!("SQLite data in {}", host.data_dir().display());
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    eprintln!("[test-host] shutting down");
    host.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_flags() {
        let args = parse(&[
            "serve",
            "--manifest",
            "app/spin.toml",
            "--listen",
            "0.0.0.0:8080",
            "--variable",
            "a=b=c",
            "--variable",
            "x=",
        ])
        .unwrap();
        assert_eq!(args.manifest, PathBuf::from("app/spin.toml"));
        assert_eq!(args.listen.port(), 8080);
        assert_eq!(
            args.variables,
            vec![
                ("a".to_string(), "b=c".to_string()),
                ("x".to_string(), String::new())
            ]
        );
        assert!(args.data_dir.is_none());
    }

    #[test]
    fn rejects_bad_input() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["run"]).is_err());
        assert!(parse(&["serve", "--listen"]).is_err());
        assert!(parse(&["serve", "--variable", "novalue"]).is_err());
        assert!(parse(&["serve", "--bogus", "1"]).is_err());
    }
}
