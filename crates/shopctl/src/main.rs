//! `shopctl`: the shop's public HTTP API from the command line, for people (aligned tables)
//! and scripts (`--json` and meaningful exit codes; see `shopctl --help`).

#![forbid(unsafe_code)]

mod api;
mod cli;
mod commands;
mod orders;
mod output;
mod sse;
mod table;

use std::io;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

use crate::api::{Api, Failure};
use crate::cli::{Cli, Command, Global, OrderCommand};
use crate::output::{Out, note};

/// Exit code of any other failure, e.g. output that could not be written.
const OTHER_FAILURE: u8 = 1;
/// Lifetime of the token minted for one command.
const DEV_TOKEN_TTL_SECS: u32 = 3600;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Order(OrderCommand::Create(create)) = &cli.command
        && create.count > 1
        && create.idempotency_key.is_some()
    {
        Cli::command()
            .error(
                ErrorKind::ArgumentConflict,
                "--idempotency-key applies to a single order; it cannot be used with --count above 1",
            )
            .exit();
    }
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => exit_code(&error),
    }
}

/// Runs the command line's command.
fn run(cli: &Cli) -> anyhow::Result<()> {
    let global = &cli.global;
    let mut out = Out::new(global.json);
    match &cli.command {
        Command::Token { email, ttl } => {
            let token = commands::dev_token(email, global.role.into(), *ttl, &global.auth_secret);
            out.line(&token)?;
            Ok(())
        }
        Command::Product(command) => commands::product(&connect(global)?, &mut out, command),
        Command::Account(command) => commands::account(&connect(global)?, &mut out, command),
        Command::Order(command) => orders::run(&connect(global)?, &mut out, command),
        Command::DeadLetters(command) => {
            commands::dead_letters(&connect(global)?, &mut out, command)
        }
    }
}

/// A client of the API with `--token`, or else with a minted development token.
fn connect(global: &Global) -> anyhow::Result<Api> {
    let token = match &global.token {
        Some(token) if !token.is_empty() => token.clone(),
        _ => commands::dev_token(
            &global.as_email,
            global.role.into(),
            DEV_TOKEN_TTL_SECS,
            &global.auth_secret,
        ),
    };
    Api::new(global.url.clone(), token)
}

/// Reports `error` on stderr and picks the exit code that says what went wrong.
fn exit_code(error: &anyhow::Error) -> ExitCode {
    if let Some(failure) = error.downcast_ref::<Failure>() {
        note(&format!("shopctl: {failure}"));
        return ExitCode::from(failure.exit_code());
    }
    if let Some(io_error) = error.downcast_ref::<io::Error>()
        && io_error.kind() == io::ErrorKind::BrokenPipe
    {
        // The reader went away (`shopctl order list | head`): nothing left to say.
        return ExitCode::SUCCESS;
    }
    note(&format!("shopctl: {error:#}"));
    ExitCode::from(OTHER_FAILURE)
}
