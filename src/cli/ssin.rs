//! `linkreg ssin check`: validate numbers the way the register will.

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use linkreg::domain::period::parse_date;
use linkreg::domain::{Field, Ssin};
use serde_json::json;
use time::OffsetDateTime;

#[derive(Debug, Subcommand)]
pub enum SsinCommand {
    /// Check SSINs: print the normalized form, kind, birth date and sex of each, or the rule it
    /// breaks. Exits with 0 when all are valid, 1 otherwise.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Numbers to check, with or without separators ('.', '-', space).
    #[arg(required = true, value_name = "NUMBER")]
    numbers: Vec<String>,
    /// Print one JSON object per number.
    #[arg(long)]
    json: bool,
    /// Judge "birth date in the future" against this date (YYYY-MM-DD) instead of today.
    #[arg(long, value_name = "DATE")]
    today: Option<String>,
}

pub fn run(command: SsinCommand) -> anyhow::Result<ExitCode> {
    match command {
        SsinCommand::Check(args) => check(args),
    }
}

fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let today = match &args.today {
        Some(text) => parse_date(Field::ValidOn, text).context("reading --today")?,
        None => OffsetDateTime::now_utc().date(),
    };
    let mut out = io::stdout().lock();
    let mut all_valid = true;
    for input in &args.numbers {
        let result = Ssin::parse(input, today);
        all_valid &= result.is_ok();
        let line = if args.json {
            json_line(input, &result)
        } else {
            text_line(input, &result)
        };
        writeln!(out, "{line}").context("writing to standard output")?;
    }
    Ok(if all_valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn text_line(input: &str, result: &Result<Ssin, linkreg::domain::SsinRule>) -> String {
    match result {
        Ok(ssin) => {
            let sex = ssin
                .sex()
                .map_or("sex unknown".to_string(), |s| s.to_string());
            format!(
                "{input}: valid {} ({}), {}, born {}, {sex}",
                ssin,
                ssin.formatted(),
                ssin.kind(),
                ssin.birth_date()
            )
        }
        Err(rule) => format!("{input}: invalid ({}): {rule}", rule.name()),
    }
}

fn json_line(input: &str, result: &Result<Ssin, linkreg::domain::SsinRule>) -> String {
    let value = match result {
        Ok(ssin) => json!({
            "input": input,
            "valid": true,
            "ssin": ssin.to_string(),
            "kind": ssin.kind().to_string(),
            "birth_date": ssin.birth_date().to_string(),
            "sex": ssin.sex().map(|s| s.to_string()),
            "error": null,
        }),
        Err(rule) => json!({
            "input": input,
            "valid": false,
            "ssin": null,
            "kind": null,
            "birth_date": null,
            "sex": null,
            "error": { "rule": rule.name(), "message": rule.to_string() },
        }),
    };
    value.to_string()
}
