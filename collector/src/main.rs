//! The `leakscope` binary: parse the command line, run it, exit with its code.

use clap::Parser;
use leakscope::cli::{execute, Cli, CommandError};
use std::process::ExitCode;

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => exit_code(code),
        Err(err) => {
            eprintln!("leakscope: error: {err:#}");
            let code = err
                .downcast_ref::<CommandError>()
                .map_or(2, CommandError::exit_code);
            exit_code(code)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    Ok(execute(cli)?)
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))
}

/// Diagnostics (symbolization problems and the like) go to stderr at `warn` level;
/// `LEAKSCOPE_LOG` takes a tracing filter such as `debug` or `leakscope=trace`.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LEAKSCOPE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
