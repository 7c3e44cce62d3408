//! `world-check --wit DIR --world NAME COMPONENT.wasm...`: checks that each component
//! targets world `NAME` of the WIT package in `DIR` the way Spin, wasmCloud and wasmtime
//! link it. Imports are matched by semver-compatible version, then type-checked
//! structurally (wit-component's `targets` with `semver_compatible`): a component built by
//! a newer Rust whose standard library imports `wasi:io/poll@0.2.12` targets a world that
//! vendors WASI 0.2.6, as it runs on Spin 4.0.2, while an import the world lacks, a
//! function it does not have at that version, or a type that differs fails the check.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use wit_parser::Resolve;

const USAGE: &str = "usage: world-check --wit DIR --world NAME COMPONENT.wasm...";

/// What to check: the WIT directory, the world's name and the components.
struct Args {
    wit: PathBuf,
    world: String,
    components: Vec<PathBuf>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args> {
    let (mut wit, mut world, mut components) = (None, None, Vec::new());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--wit" => wit = args.next().map(PathBuf::from),
            "--world" => world = args.next(),
            "-h" | "--help" => bail!("{USAGE}"),
            flag if flag.starts_with("--") => bail!("unknown option {flag}\n{USAGE}"),
            _ => components.push(PathBuf::from(arg)),
        }
    }
    match (wit, world) {
        (Some(wit), Some(world)) if !components.is_empty() => Ok(Args {
            wit,
            world,
            components,
        }),
        _ => bail!("{USAGE}"),
    }
}

/// Checks one component file against `world` of the package at `wit`.
fn check(resolve: &Resolve, world: wit_parser::WorldId, component: &PathBuf) -> Result<()> {
    let bytes = std::fs::read(component).with_context(|| format!("reading {component:?}"))?;
    wit_component::targets(resolve, world, &bytes, true)
}

fn run(args: Args) -> Result<()> {
    let mut resolve = Resolve::default();
    let (package, _) = resolve
        .push_dir(&args.wit)
        .with_context(|| format!("reading the WIT in {:?}", args.wit))?;
    let world = resolve.select_world(&[package], Some(&args.world))?;
    let package_name = &resolve.packages[package].name;
    let mut failed = 0;
    for component in &args.components {
        match check(&resolve, world, component) {
            Ok(()) => println!(
                "{}: targets {package_name}/{} (imports matched by semver)",
                component.display(),
                args.world
            ),
            Err(e) => {
                failed += 1;
                eprintln!(
                    "{}: does not target {package_name}/{}: {e:#}",
                    component.display(),
                    args.world
                );
            }
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} components do not target their world",
            args.components.len()
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    match parse_args(std::env::args().skip(1)).and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("world-check: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wit_component::{ComponentEncoder, StringEncoding, dummy_module, embed_component_metadata};
    use wit_parser::ManglingAndAbi;

    /// A host's world: `example:clock/now@0.2.6` with one function.
    const HOST_WIT: &str = "
        package example:clock@0.2.6;
        interface now { now: func() -> u64; }
        world host { import now; }
    ";

    /// A component that imports `example:clock/now` at `version`, with `extra` functions.
    fn component(version: &str, extra: &str) -> Vec<u8> {
        let mut resolve = Resolve::default();
        let package = resolve
            .push_str(
                "component.wit",
                &format!(
                    "package example:clock@{version};
                     interface now {{ now: func() -> u64; {extra} }}
                     world guest {{ import now; }}"
                ),
            )
            .unwrap();
        let world = resolve.select_world(&[package], Some("guest")).unwrap();
        let mut module = dummy_module(&resolve, world, ManglingAndAbi::Standard32);
        embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8, false)
            .unwrap();
        ComponentEncoder::default()
            .module(&module)
            .unwrap()
            .validate(true)
            .encode()
            .unwrap()
    }

    fn check_bytes(bytes: &[u8]) -> Result<()> {
        let mut resolve = Resolve::default();
        let package = resolve.push_str("host.wit", HOST_WIT).unwrap();
        let world = resolve.select_world(&[package], Some("host")).unwrap();
        wit_component::targets(&resolve, world, bytes, true)
    }

    #[test]
    fn a_newer_patch_version_of_an_import_targets_the_world() {
        check_bytes(&component("0.2.6", "")).unwrap();
        check_bytes(&component("0.2.12", "")).unwrap();
    }

    #[test]
    fn an_incompatible_version_or_a_missing_function_does_not() {
        assert!(check_bytes(&component("0.3.0", "")).is_err());
        assert!(check_bytes(&component("0.2.12", "later: func();")).is_err());
    }

    #[test]
    fn arguments_are_required() {
        assert!(parse_args(["--wit", "wit"].map(String::from).into_iter()).is_err());
        let args = parse_args(
            ["--wit", "wit", "--world", "w", "a.wasm"]
                .map(String::from)
                .into_iter(),
        )
        .unwrap();
        assert_eq!(args.components, [PathBuf::from("a.wasm")]);
    }
}
