//! `linkreg callers add`: register an organization and print its token, once.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use linkreg::api::auth::add_caller;
use linkreg::domain::Role;

#[derive(Debug, Subcommand)]
pub enum CallersCommand {
    /// Add a caller with a new token; the token is printed once and stored only as a hash.
    Add(AddArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Organization name.
    name: String,
    /// Its CBE enterprise number (e.g. 0123.456.749).
    #[arg(long)]
    cbe: String,
    /// reader, writer or keeper.
    #[arg(long)]
    role: String,
    /// The callers file the nodes read.
    #[arg(long, env = "LINKREG_CALLERS", default_value = "callers.toml")]
    file: PathBuf,
}

pub fn run(command: CallersCommand) -> anyhow::Result<ExitCode> {
    match command {
        CallersCommand::Add(args) => {
            let role = Role::parse(&args.role).with_context(|| {
                format!("--role {:?}: one of reader, writer, keeper", args.role)
            })?;
            let token = add_caller(&args.file, &args.name, &args.cbe, role)?;
            println!("{token}");
            eprintln!(
                "added {} ({role}) to {}; the token above is shown only now",
                args.name,
                args.file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
