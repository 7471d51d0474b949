//! `linkreg link|key-type|format-rule …`: the register's client, over the LinkRegister API.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use linkreg::proto::linkreg as pb;
use linkreg::proto::linkreg::link_register_client::LinkRegisterClient;
use serde_json::{Value, json};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use super::connect::{Bearer, TlsArgs, bearer, channel, code_name};

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Client address of a node; repeat to list several (the next is tried when one is
    /// unavailable).
    #[arg(
        long = "server",
        global = true,
        env = "LINKREG_SERVER",
        value_delimiter = ',',
        default_value = "127.0.0.1:50051"
    )]
    servers: Vec<String>,
    /// Your token.
    #[arg(long, global = true, env = "LINKREG_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print one JSON document instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Debug, Subcommand)]
pub enum LinkCommand {
    /// Link an SSIN to a foreign key.
    Create {
        #[arg(long)]
        ssin: String,
        #[arg(long)]
        country: String,
        #[arg(long = "type")]
        key_type: String,
        #[arg(long)]
        value: String,
        /// First day of validity (YYYY-MM-DD).
        #[arg(long)]
        from: Option<String>,
        /// Last day of validity (YYYY-MM-DD).
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        retry: RetryArgs,
    },
    /// One link by id.
    Get {
        id: u64,
        #[arg(long)]
        linearizable: bool,
    },
    /// Links of an SSIN (--ssin), or holding a foreign key (--country and --key).
    Search {
        #[arg(long, conflicts_with = "key")]
        ssin: Option<String>,
        #[arg(long)]
        country: Option<String>,
        #[arg(long, requires = "country")]
        key: Option<String>,
        #[arg(long = "type")]
        key_type: Option<String>,
        #[arg(long)]
        valid_on: Option<String>,
        #[arg(long)]
        linearizable: bool,
    },
    /// Replace a link's validity period (both ends; an absent end is open).
    Update {
        id: u64,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        expected_version: Option<u64>,
        #[command(flatten)]
        retry: RetryArgs,
    },
    /// Delete a link (keeper).
    Delete {
        id: u64,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        retry: RetryArgs,
    },
    /// Every change of a link, with who made it.
    History { id: u64 },
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// With --request-id: makes retries of this write safe.
    #[arg(long, requires = "request_id")]
    client_id: Option<String>,
    #[arg(long, requires = "client_id")]
    request_id: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum KeyTypeCommand {
    List,
    /// Add a key type (keeper).
    Add {
        code: String,
        #[arg(long)]
        nl: String,
        #[arg(long)]
        fr: String,
        #[arg(long)]
        de: String,
        #[arg(long)]
        en: String,
    },
    /// Accept new links of this type again (keeper).
    Activate {
        code: String,
    },
    /// Refuse new links of this type; existing ones stay (keeper).
    Deactivate {
        code: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum FormatRuleCommand {
    List,
    /// Set (or with --remove, drop) the format of one country's key type (keeper).
    Set {
        #[arg(long)]
        country: String,
        #[arg(long = "type")]
        key_type: String,
        #[arg(long, required_unless_present = "remove")]
        min: Option<u32>,
        #[arg(long, required_unless_present = "remove")]
        max: Option<u32>,
        /// Regular expression the whole normalized value must match.
        #[arg(long)]
        pattern: Option<String>,
        #[arg(long, conflicts_with_all = ["min", "max", "pattern"])]
        remove: bool,
    },
}

#[derive(Debug)]
pub enum Call {
    Link(LinkCommand),
    KeyType(KeyTypeCommand),
    FormatRule(FormatRuleCommand),
}

type Client = LinkRegisterClient<InterceptedService<Channel, Bearer>>;

impl Call {
    /// A write without a client session: sending it again may apply it twice.
    fn is_unprotected_write(&self) -> bool {
        let unprotected = |r: &RetryArgs| r.client_id.is_none();
        match self {
            Call::Link(LinkCommand::Create { retry, .. })
            | Call::Link(LinkCommand::Update { retry, .. })
            | Call::Link(LinkCommand::Delete { retry, .. }) => unprotected(retry),
            Call::Link(_) | Call::KeyType(KeyTypeCommand::List) => false,
            Call::KeyType(_) => true,
            Call::FormatRule(FormatRuleCommand::List) => false,
            Call::FormatRule(_) => true,
        }
    }
}

/// Whether another server may be asked after `status`: always when the server said it applied
/// nothing (its own UNAVAILABLE); after a transport failure only when repeating cannot apply a
/// write twice (a read, or a write with a client session).
fn may_try_next(status: &tonic::Status, call: &Call) -> bool {
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    let declared = status
        .get_details_error_info()
        .is_some_and(|i| i.reason == "UNAVAILABLE");
    declared || !call.is_unprotected_write()
}

fn consistency(linearizable: bool) -> i32 {
    if linearizable {
        pb::Consistency::Linearizable as i32
    } else {
        pb::Consistency::Local as i32
    }
}

pub fn run(args: ClientArgs, call: Call) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let bearer = bearer(args.token.as_deref())?;
        let tls = args.tls.config()?;
        let mut last_error = None;
        for server in &args.servers {
            let mut client = match channel(server, tls.as_ref()).await {
                Ok(ch) => LinkRegisterClient::with_interceptor(ch, bearer.clone()),
                Err(e) => {
                    eprintln!("{server}: {e:#}; trying the next server");
                    last_error = Some(format!("{e:#}"));
                    continue;
                }
            };
            match execute(&mut client, &call).await {
                Ok(value) => {
                    print(&value, args.json, &call);
                    return Ok(ExitCode::SUCCESS);
                }
                Err(status) if may_try_next(&status, &call) => {
                    eprintln!("{server}: {}; trying the next server", status.message());
                    last_error = Some(status.message().to_string());
                }
                Err(status) => {
                    report(&status, args.json);
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        bail!("no server could answer: {}", last_error.unwrap_or_default())
    })
}

/// One line (or JSON document) naming the stable code, the field and the link at fault.
fn report(status: &tonic::Status, as_json: bool) {
    let info = status.get_details_error_info();
    let reason = info.as_ref().map(|i| i.reason.clone()).unwrap_or_default();
    let field = status
        .get_details_bad_request()
        .and_then(|b| b.field_violations.first().map(|v| v.field.clone()));
    let link = info.and_then(|i| i.metadata.get("link_id").cloned());
    if as_json {
        let doc = json!({ "error": { "code": reason, "grpc": format!("{:?}", status.code()), "field": field, "link_id": link, "message": status.message() } });
        println!("{doc}");
    } else {
        let mut line = format!(
            "error: {reason} ({}): {}",
            code_name(status.code()),
            status.message()
        );
        if let Some(link) = link {
            line.push_str(&format!(" [link {link}]"));
        }
        eprintln!("{line}");
    }
}

async fn execute(client: &mut Client, call: &Call) -> Result<Value, tonic::Status> {
    Ok(match call {
        Call::Link(command) => link_call(client, command).await?,
        Call::KeyType(command) => key_type_call(client, command).await?,
        Call::FormatRule(command) => format_rule_call(client, command).await?,
    })
}

async fn link_call(client: &mut Client, command: &LinkCommand) -> Result<Value, tonic::Status> {
    Ok(match command {
        LinkCommand::Create {
            ssin,
            country,
            key_type,
            value,
            from,
            to,
            retry,
        } => {
            let r = client
                .create_link(pb::CreateLinkRequest {
                    ssin: ssin.clone(),
                    country: country.clone(),
                    key_type: key_type.clone(),
                    value: value.clone(),
                    valid_from: from.clone(),
                    valid_to: to.clone(),
                    client_id: retry.client_id.clone(),
                    request_id: retry.request_id,
                })
                .await?
                .into_inner();
            json!({ "link": r.link.as_ref().map(link_json), "log_index": r.log_index })
        }
        LinkCommand::Get { id, linearizable } => {
            let r = client
                .get_link(pb::GetLinkRequest {
                    id: *id,
                    consistency: consistency(*linearizable),
                })
                .await?
                .into_inner();
            json!({ "link": r.link.as_ref().map(link_json), "read": read_json(r.read.as_ref()) })
        }
        LinkCommand::Search {
            ssin,
            country,
            key,
            key_type,
            valid_on,
            linearizable,
        } => {
            let r = match (ssin, key) {
                (Some(ssin), None) => client
                    .search_links_by_ssin(pb::SearchLinksBySsinRequest {
                        ssin: ssin.clone(),
                        country: country.clone(),
                        key_type: key_type.clone(),
                        valid_on: valid_on.clone(),
                        consistency: consistency(*linearizable),
                    })
                    .await?
                    .into_inner(),
                (None, Some(key)) => client
                    .search_links_by_foreign_key(pb::SearchLinksByForeignKeyRequest {
                        country: country.clone().unwrap_or_default(),
                        value: key.clone(),
                        key_type: key_type.clone(),
                        valid_on: valid_on.clone(),
                        consistency: consistency(*linearizable),
                    })
                    .await?
                    .into_inner(),
                _ => {
                    return Err(tonic::Status::invalid_argument(
                        "give --ssin, or --country and --key",
                    ));
                }
            };
            json!({ "links": r.links.iter().map(link_json).collect::<Vec<_>>(), "read": read_json(r.read.as_ref()) })
        }
        LinkCommand::Update {
            id,
            from,
            to,
            expected_version,
            retry,
        } => {
            let r = client
                .update_link_validity(pb::UpdateLinkValidityRequest {
                    id: *id,
                    valid_from: from.clone(),
                    valid_to: to.clone(),
                    expected_version: *expected_version,
                    client_id: retry.client_id.clone(),
                    request_id: retry.request_id,
                })
                .await?
                .into_inner();
            json!({ "link": r.link.as_ref().map(link_json), "log_index": r.log_index })
        }
        LinkCommand::Delete { id, reason, retry } => {
            let r = client
                .delete_link(pb::DeleteLinkRequest {
                    id: *id,
                    reason: reason.clone(),
                    client_id: retry.client_id.clone(),
                    request_id: retry.request_id,
                })
                .await?
                .into_inner();
            json!({ "deleted": r.id, "log_index": r.log_index })
        }
        LinkCommand::History { id } => {
            let r = client
                .get_link_history(pb::GetLinkHistoryRequest {
                    id: *id,
                    ..Default::default()
                })
                .await?
                .into_inner();
            let events: Vec<Value> = r
                .events
                .iter()
                .map(|e| {
                    json!({
                        "log_index": e.log_index, "at": e.at, "action": e.action,
                        "caller": e.caller_organization, "caller_cbe": e.caller_cbe, "role": e.caller_role,
                        "before": e.before.as_ref().map(link_json), "after": e.after.as_ref().map(link_json),
                        "reason": e.reason,
                    })
                })
                .collect();
            json!({ "events": events })
        }
    })
}

async fn key_type_call(
    client: &mut Client,
    command: &KeyTypeCommand,
) -> Result<Value, tonic::Status> {
    let set_active = |code: &String, active| pb::SetKeyTypeActiveRequest {
        code: code.clone(),
        active,
        ..Default::default()
    };
    let r = match command {
        KeyTypeCommand::List => {
            let r = client
                .list_key_types(pb::ListKeyTypesRequest::default())
                .await?
                .into_inner();
            return Ok(
                json!({ "key_types": r.key_types.iter().map(key_type_json).collect::<Vec<_>>() }),
            );
        }
        KeyTypeCommand::Add {
            code,
            nl,
            fr,
            de,
            en,
        } => client
            .add_key_type(pb::AddKeyTypeRequest {
                code: code.clone(),
                label_nl: nl.clone(),
                label_fr: fr.clone(),
                label_de: de.clone(),
                label_en: en.clone(),
                ..Default::default()
            })
            .await?
            .into_inner(),
        KeyTypeCommand::Activate { code } => client
            .set_key_type_active(set_active(code, true))
            .await?
            .into_inner(),
        KeyTypeCommand::Deactivate { code } => client
            .set_key_type_active(set_active(code, false))
            .await?
            .into_inner(),
    };
    Ok(
        json!({ "key_types": r.key_type.as_ref().map(key_type_json).into_iter().collect::<Vec<_>>(), "log_index": r.log_index }),
    )
}

async fn format_rule_call(
    client: &mut Client,
    command: &FormatRuleCommand,
) -> Result<Value, tonic::Status> {
    Ok(match command {
        FormatRuleCommand::List => {
            let r = client
                .list_format_rules(pb::ListFormatRulesRequest::default())
                .await?
                .into_inner();
            let rules: Vec<Value> = r
                .rules
                .iter()
                .map(|c| json!({ "country": c.country, "key_type": c.key_type, "rule": c.rule.as_ref().map(rule_json) }))
                .collect();
            json!({ "rules": rules, "default_rule": r.default_rule.as_ref().map(rule_json) })
        }
        FormatRuleCommand::Set {
            country,
            key_type,
            min,
            max,
            pattern,
            remove,
        } => {
            let rule = (!remove).then(|| pb::FormatRule {
                min_length: min.unwrap_or_default(),
                max_length: max.unwrap_or_default(),
                pattern: pattern.clone(),
            });
            let r = client
                .set_format_rule(pb::SetFormatRuleRequest {
                    country: country.clone(),
                    key_type: key_type.clone(),
                    rule,
                    ..Default::default()
                })
                .await?
                .into_inner();
            let rules = vec![
                json!({ "country": r.country, "key_type": r.key_type, "rule": r.rule.as_ref().map(rule_json) }),
            ];
            json!({ "rules": rules, "log_index": r.log_index })
        }
    })
}

fn link_json(l: &pb::Link) -> Value {
    json!({
        "id": l.id, "ssin": l.ssin, "country": l.country, "key_type": l.key_type, "value": l.value,
        "normalized_value": l.normalized_value, "valid_from": l.valid_from, "valid_to": l.valid_to,
        "created_by": l.created_by, "created_by_cbe": l.created_by_cbe, "created_at": l.created_at,
        "updated_at": l.updated_at, "version": l.version,
    })
}

fn read_json(r: Option<&pb::ReadInfo>) -> Value {
    r.map_or(
        Value::Null,
        |r| json!({ "node_id": r.node_id, "applied_index": r.applied_index }),
    )
}

fn key_type_json(k: &pb::KeyType) -> Value {
    json!({ "code": k.code, "active": k.active, "nl": k.label_nl, "fr": k.label_fr, "de": k.label_de, "en": k.label_en })
}

fn rule_json(r: &pb::FormatRule) -> Value {
    json!({ "min_length": r.min_length, "max_length": r.max_length, "pattern": r.pattern })
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print(value: &Value, as_json: bool, call: &Call) {
    if as_json {
        println!("{value}");
        return;
    }
    let links: Vec<&Value> = match (value.get("links"), value.get("link")) {
        (Some(Value::Array(list)), _) => list.iter().collect(),
        (_, Some(link)) if !link.is_null() => vec![link],
        _ => Vec::new(),
    };
    if matches!(call, Call::Link(LinkCommand::History { .. })) {
        for e in value["events"].as_array().into_iter().flatten() {
            println!(
                "#{:<8} {}  {:<22} {} ({}, {}){}",
                text(&e["log_index"]),
                text(&e["at"]),
                text(&e["action"]),
                text(&e["caller"]),
                text(&e["caller_cbe"]),
                text(&e["role"]),
                e["reason"]
                    .as_str()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
        }
    } else if let Some(deleted) = value.get("deleted") {
        println!("deleted link {}", text(deleted));
    } else if let Some(types) = value.get("key_types") {
        println!("{:<26} {:<8} LABEL (en)", "CODE", "ACTIVE");
        for k in types.as_array().into_iter().flatten() {
            println!(
                "{:<26} {:<8} {}",
                text(&k["code"]),
                text(&k["active"]),
                text(&k["en"])
            );
        }
    } else if let Some(rules) = value.get("rules") {
        println!(
            "{:<8} {:<26} {:>4} {:>4}  PATTERN",
            "COUNTRY", "TYPE", "MIN", "MAX"
        );
        for r in rules.as_array().into_iter().flatten() {
            let rule = &r["rule"];
            println!(
                "{:<8} {:<26} {:>4} {:>4}  {}",
                text(&r["country"]),
                text(&r["key_type"]),
                text(&rule["min_length"]),
                text(&rule["max_length"]),
                text(&rule["pattern"])
            );
        }
        if let Some(d) = value.get("default_rule") {
            println!(
                "default: at least {} characters, pattern {}",
                text(&d["min_length"]),
                text(&d["pattern"])
            );
        }
    } else {
        println!(
            "{:<8} {:<11} {:<4} {:<24} {:<22} {:<11} {:<11} {:>3}",
            "ID", "SSIN", "CTRY", "TYPE", "VALUE", "FROM", "TO", "VER"
        );
        for l in links {
            println!(
                "{:<8} {:<11} {:<4} {:<24} {:<22} {:<11} {:<11} {:>3}",
                text(&l["id"]),
                text(&l["ssin"]),
                text(&l["country"]),
                text(&l["key_type"]),
                text(&l["value"]),
                text(&l["valid_from"]),
                text(&l["valid_to"]),
                text(&l["version"])
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::Parser;
    use tonic_types::{ErrorDetails, StatusExt};

    use super::*;

    #[derive(Parser)]
    struct Line {
        #[command(subcommand)]
        link: LinkCommand,
    }

    fn link(args: &[&str]) -> Call {
        let line = Line::try_parse_from(std::iter::once("link").chain(args.iter().copied()));
        Call::Link(line.expect("a valid command line").link)
    }

    #[test]
    fn only_a_retry_that_cannot_apply_a_write_twice_goes_to_the_next_server() {
        let create = [
            "create",
            "--ssin",
            "85073003328",
            "--country",
            "NL",
            "--type",
            "PASSPORT",
            "--value",
            "NX123456",
        ];
        let unprotected = link(&create);
        let with_session =
            link(&[&create[..], &["--client-id", "c", "--request-id", "1"]].concat());
        let read = link(&["get", "1"]);
        // A connection that broke mid-call: the write may or may not have been applied.
        let broken = tonic::Status::unavailable("connection reset");
        assert!(!may_try_next(&broken, &unprotected));
        assert!(may_try_next(&broken, &with_session));
        assert!(may_try_next(&broken, &read));
        // The server's own UNAVAILABLE: nothing was applied.
        let mut details = ErrorDetails::new();
        details.set_error_info("UNAVAILABLE", "linkreg", HashMap::new());
        let declared =
            tonic::Status::with_error_details(tonic::Code::Unavailable, "no leader", details);
        assert!(may_try_next(&declared, &unprotected));
        assert!(!may_try_next(&tonic::Status::internal("x"), &read));
    }
}
