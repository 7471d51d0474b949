//! `linkreg cluster …`: operator commands against a node's ClusterAdmin service.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use linkreg::api::admin::LEADER_METADATA;
use linkreg::proto::linkreg as pb;
use linkreg::proto::linkreg::cluster_admin_client::ClusterAdminClient;
use serde_json::{Value, json};

use super::connect::{Bearer, TlsArgs, bearer, channel, code_name};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Client address of any node.
    #[arg(
        long,
        global = true,
        env = "LINKREG_SERVER",
        default_value = "127.0.0.1:50051"
    )]
    server: String,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// A keeper's token.
    #[arg(long, global = true, env = "LINKREG_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Leader, term, indexes and every member with its role and replication lag.
    Status,
    /// Add a node as a learner; returns once it has caught up.
    AddLearner {
        #[arg(long)]
        id: u64,
        /// The new node's peer address.
        #[arg(long, value_name = "HOST:PORT")]
        addr: String,
        #[arg(long, value_name = "HOST:PORT", default_value = "")]
        client_addr: String,
        #[arg(long, value_name = "HOST:PORT", default_value = "")]
        http_addr: String,
    },
    /// Make a learner a voter.
    Promote {
        #[arg(long)]
        id: u64,
    },
    /// Remove a member (voter or learner).
    Remove {
        #[arg(long)]
        id: u64,
    },
    /// Build a snapshot on this node now.
    Snapshot,
    /// Hash of the node's whole state at its applied index, to compare replicas.
    Digest,
}

type Client = ClusterAdminClient<InterceptedService<Channel, Bearer>>;

/// What every call of one command carries: the token and the TLS settings.
struct Access {
    bearer: Bearer,
    tls: Option<tonic::transport::ClientTlsConfig>,
}

async fn connect(addr: &str, access: &Access) -> anyhow::Result<Client> {
    Ok(ClusterAdminClient::with_interceptor(
        channel(addr, access.tls.as_ref()).await?,
        access.bearer.clone(),
    ))
}

fn leader_of(status: &tonic::Status) -> Option<String> {
    status
        .metadata()
        .get(LEADER_METADATA)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

pub fn run(args: ClusterArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let access = Access {
            bearer: bearer(args.token.as_deref())?,
            tls: args.tls.config()?,
        };
        let mut server = args.server.clone();
        // Membership changes must run on the leader: follow one redirect.
        for _ in 0..2 {
            let mut client = connect(&server, &access).await?;
            match call(&mut client, &args.command, &access).await {
                Ok(value) => {
                    print(&value, args.json, &args.command);
                    return Ok(ExitCode::SUCCESS);
                }
                Err(status) => {
                    if let Some(leader) = leader_of(&status)
                        && leader != server
                    {
                        server = leader;
                        continue;
                    }
                    bail!("{}: {}", code_name(status.code()), status.message());
                }
            }
        }
        bail!("the leader moved while the command was redirected; run it again")
    })
}

async fn call(
    client: &mut Client,
    command: &ClusterCommand,
    access: &Access,
) -> Result<Value, tonic::Status> {
    Ok(match command {
        ClusterCommand::Status => {
            let mut value = status_json(&client.status(pb::StatusRequest {}).await?.into_inner());
            add_member_progress(&mut value, access).await;
            value
        }
        ClusterCommand::AddLearner {
            id,
            addr,
            client_addr,
            http_addr,
        } => {
            let req = pb::AddLearnerRequest {
                id: *id,
                peer_addr: addr.clone(),
                client_addr: client_addr.clone(),
                http_addr: http_addr.clone(),
            };
            membership_json(&client.add_learner(req).await?.into_inner())
        }
        ClusterCommand::Promote { id } => membership_json(
            &client
                .promote(pb::MemberRequest { id: *id })
                .await?
                .into_inner(),
        ),
        ClusterCommand::Remove { id } => membership_json(
            &client
                .remove(pb::MemberRequest { id: *id })
                .await?
                .into_inner(),
        ),
        ClusterCommand::Snapshot => {
            let r = client.snapshot(pb::SnapshotRequest {}).await?.into_inner();
            json!({ "snapshot_index": r.snapshot_index })
        }
        ClusterCommand::Digest => {
            let r = client.digest(pb::DigestRequest {}).await?.into_inner();
            json!({ "node_id": r.node_id, "applied_index": r.applied_index, "sha256": r.sha256, "rows": r.rows })
        }
    })
}

/// Asks each member for its own applied index: the leader only knows what it has replicated.
async fn add_member_progress(status: &mut Value, access: &Access) {
    let Some(members) = status["members"].as_array_mut() else {
        return;
    };
    for member in members {
        let addr = member["client_addr"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let own = async {
            let mut client = connect(&addr, access).await.ok()?;
            let request = client.status(pb::StatusRequest {});
            tokio::time::timeout(Duration::from_secs(2), request)
                .await
                .ok()?
                .ok()
        };
        let reply = if addr.is_empty() { None } else { own.await };
        member["reachable"] = json!(reply.is_some());
        member["applied_index"] = json!(reply.and_then(|r| r.into_inner().applied_index));
    }
}

fn members_json(members: &[pb::Member]) -> Value {
    members
        .iter()
        .map(|m| {
            json!({
                "id": m.id, "role": m.role, "peer_addr": m.peer_addr, "client_addr": m.client_addr,
                "http_addr": m.http_addr, "matched_index": m.matched_index, "lag": m.lag,
            })
        })
        .collect()
}

fn status_json(s: &pb::StatusResponse) -> Value {
    json!({
        "node_id": s.node_id, "state": s.state, "leader_id": s.leader_id, "term": s.term,
        "last_log_index": s.last_log_index, "applied_index": s.applied_index,
        "snapshot_index": s.snapshot_index, "purged_index": s.purged_index,
        "members": members_json(&s.members),
    })
}

fn membership_json(m: &pb::MembershipResponse) -> Value {
    json!({ "log_index": m.log_index, "members": members_json(&m.members) })
}

fn opt(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print(value: &Value, as_json: bool, command: &ClusterCommand) {
    if as_json {
        println!("{value}");
        return;
    }
    match command {
        ClusterCommand::Status => {
            println!(
                "node {} is {}; leader {}, term {}, last log {}, applied {}, snapshot {}, purged {}",
                opt(&value["node_id"]),
                opt(&value["state"]),
                opt(&value["leader_id"]),
                opt(&value["term"]),
                opt(&value["last_log_index"]),
                opt(&value["applied_index"]),
                opt(&value["snapshot_index"]),
                opt(&value["purged_index"]),
            );
            print_members(&value["members"]);
        }
        ClusterCommand::AddLearner { .. }
        | ClusterCommand::Promote { .. }
        | ClusterCommand::Remove { .. } => {
            println!(
                "membership changed at log index {}",
                opt(&value["log_index"])
            );
            print_members(&value["members"]);
        }
        ClusterCommand::Snapshot => {
            println!("snapshot at log index {}", opt(&value["snapshot_index"]))
        }
        ClusterCommand::Digest => println!(
            "node {} at applied index {}: sha256 {} over {} rows",
            opt(&value["node_id"]),
            opt(&value["applied_index"]),
            opt(&value["sha256"]),
            opt(&value["rows"]),
        ),
    }
}

fn print_members(members: &Value) {
    println!(
        "{:<4} {:<8} {:<22} {:<22} {:>8} {:>8} {:>6}",
        "ID", "ROLE", "PEER", "CLIENT", "APPLIED", "MATCHED", "LAG"
    );
    for m in members.as_array().into_iter().flatten() {
        let applied = match &m["reachable"] {
            Value::Bool(false) => "down".to_string(),
            _ => opt(&m["applied_index"]),
        };
        println!(
            "{:<4} {:<8} {:<22} {:<22} {:>8} {:>8} {:>6}",
            opt(&m["id"]),
            opt(&m["role"]),
            opt(&m["peer_addr"]),
            opt(&m["client_addr"]),
            applied,
            opt(&m["matched_index"]),
            opt(&m["lag"]),
        );
    }
}
