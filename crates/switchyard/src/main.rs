//! The `switchyard` command line: parse the arguments, set up logging and
//! the async runtime, run the subcommand (see [`cli`]) and exit with its
//! code (all listed in [`cli::common::Exit`]).

mod cli;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::common::{Exit, exit_code_of};
use crate::cli::{Cli, LogFormat};

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,switchyard=info"));
    // Colours only on a terminal: a log file or a pipe gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .fmt_fields(switchyard::telemetry::text_log_fields())
            .init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return Exit::Failure.into();
        }
    };
    match runtime.block_on(cli::execute(cli.command)) {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("error: {e:#}");
            if switchyard::store::storage_full(&e) {
                eprintln!(
                    "hint: the disk holding the state directory is full. Free space there and run the command again: nothing is lost (an operation is recorded before it is sent, and one sent without its result recorded is recognised, not repeated, on the next run)."
                );
            }
            exit_code_of(&e)
        }
    }
}
