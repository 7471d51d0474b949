//! Command-line interface. `anyhow` lives here and in `main`, never in the library.

mod backup;
mod bench;
mod callers;
mod client;
mod cluster;
mod connect;
mod r#gen;
mod import;
mod serve;
mod ssin;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// linkreg: a replicated register of links between Belgian SSINs and foreign identification keys.
#[derive(Debug, Parser)]
#[command(name = "linkreg", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node of the register.
    Serve(serve::ServeArgs),
    /// Search, create, update and delete links.
    Link {
        #[command(flatten)]
        client: client::ClientArgs,
        #[command(subcommand)]
        command: client::LinkCommand,
    },
    /// The catalogue of foreign-key types.
    KeyType {
        #[command(flatten)]
        client: client::ClientArgs,
        #[command(subcommand)]
        command: client::KeyTypeCommand,
    },
    /// Allowed formats of foreign keys per country and key type.
    FormatRule {
        #[command(flatten)]
        client: client::ClientArgs,
        #[command(subcommand)]
        command: client::FormatRuleCommand,
    },
    /// Manage the organizations allowed to call the register.
    #[command(subcommand)]
    Callers(callers::CallersCommand),
    /// Administer the cluster: status, membership, snapshots, digests.
    Cluster(cluster::ClusterArgs),
    /// Load links in bulk from a CSV or NDJSON file (writer).
    Import(import::ImportArgs),
    /// Write every link as NDJSON, in the import's format (keeper).
    Export(import::ExportArgs),
    /// Copy a node's state at one point in time into a directory (keeper).
    Backup(backup::BackupArgs),
    /// Seed an empty data directory from a backup, as a new single-voter cluster.
    Restore(backup::RestoreArgs),
    /// Work with SSINs (INSZ/NISS numbers).
    #[command(subcommand)]
    Ssin(ssin::SsinCommand),
    /// Write synthetic links (CSV or NDJSON), the same for the same seed.
    Gen(r#gen::GenArgs),
    /// Load a running cluster and report the throughput and latency its clients see.
    Bench(bench::BenchArgs),
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per line, its fields at the top level, for log collectors.
    Json,
}

impl Cli {
    /// The log format the command asks for: `--log-format` of `serve` and of `restore` (which
    /// takes serve's flags), human otherwise.
    pub fn log_format(&self) -> LogFormat {
        match &self.command {
            Command::Serve(args) => args.log_format(),
            Command::Restore(args) => args.log_format(),
            _ => LogFormat::default(),
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Link { client, command } => client::run(client, client::Call::Link(command)),
        Command::KeyType { client, command } => client::run(client, client::Call::KeyType(command)),
        Command::FormatRule { client, command } => {
            client::run(client, client::Call::FormatRule(command))
        }
        Command::Callers(command) => callers::run(command),
        Command::Cluster(args) => cluster::run(args),
        Command::Import(args) => import::run_import(args),
        Command::Export(args) => import::run_export(args),
        Command::Backup(args) => backup::run_backup(args),
        Command::Restore(args) => backup::run_restore(args),
        Command::Ssin(command) => ssin::run(command),
        Command::Gen(args) => r#gen::run(args),
        Command::Bench(args) => bench::run(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_logs_as_its_log_format_flag_asks() {
        let cli = Cli::try_parse_from([
            "linkreg",
            "restore",
            "--from",
            "backup",
            "--log-format",
            "json",
        ])
        .expect("restore takes serve's flags");
        assert_eq!(cli.log_format(), LogFormat::Json);
    }
}
