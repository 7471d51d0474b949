//! The `linkreg` command.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// glibc malloc spent half of each node's CPU in free-list consolidation during a long import
/// (profiled at 4M links); mimalloc keeps per-thread pages instead.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr);
    match args.log_format() {
        cli::LogFormat::Human => logs.init(),
        cli::LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("linkreg: {err:#}");
            ExitCode::from(2)
        }
    }
}
