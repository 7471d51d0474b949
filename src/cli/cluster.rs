//! `linkreg cluster …`: operator commands against a node's ClusterAdmin service.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use linkreg::api::admin::LEADER_METADATA;
use linkreg::proto::linkreg as pb;
use linkreg::proto::linkreg::cluster_admin_client::ClusterAdminClient;
use serde_json::{Value, json};

use super::connect::{Bearer, CALL_TIMEOUT, TlsArgs, bearer, channel_waiting, code_name};
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

/// How long a command waits for its answer. Adding a learner answers once it has caught up,
/// which for a large register takes minutes (80 s for 10M links, measured, where the 30 s of
/// the other commands made the CLI report a timeout while the learner went on catching up); a
/// snapshot answers within a minute.
fn patience(command: &ClusterCommand) -> Duration {
    match command {
        ClusterCommand::AddLearner { .. } | ClusterCommand::Promote { .. } => {
            Duration::from_secs(3600)
        }
        ClusterCommand::Snapshot => Duration::from_secs(90),
        _ => CALL_TIMEOUT,
    }
}

async fn connect(addr: &str, access: &Access, patience: Duration) -> anyhow::Result<Client> {
    Ok(ClusterAdminClient::with_interceptor(
        channel_waiting(addr, access.tls.as_ref(), patience).await?,
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
            let mut client = connect(&server, &access, patience(&args.command)).await?;
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

/// Fills in what the asked node cannot know by itself.
///
/// - `applied_index`: each member's own (asked of that member; `reachable` says whether it
///   answered). The leader only knows what it has replicated, not what a member has applied.
/// - `matched_index` and `lag`: the leader's. Only the leader tracks how far each member's log
///   matches its own, so a node that is not the leader reports them as unknown (see
///   `linkreg::cluster::status`). When the asked node is not the leader, they are taken from the
///   leader's own answer: the member among those asked that says it is the leader, the highest
///   term winning, so this works even on a node that has lost touch with the leader. Lag is the
///   leader's last log index minus the member's matched index, the same numbers whichever node
///   is asked. `lag_from` names the leader they come from; null when no leader answered.
async fn add_member_progress(status: &mut Value, access: &Access) {
    let Some(members) = status["members"].as_array_mut() else {
        return;
    };
    let mut replies = Vec::new();
    for member in members {
        let addr = member["client_addr"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let own = async {
            let mut client = connect(&addr, access, CALL_TIMEOUT).await.ok()?;
            let request = client.status(pb::StatusRequest {});
            tokio::time::timeout(Duration::from_secs(2), request)
                .await
                .ok()?
                .ok()
        };
        let reply = if addr.is_empty() { None } else { own.await };
        let reply = reply.map(|r| status_json(&r.into_inner()));
        member["reachable"] = json!(reply.is_some());
        member["applied_index"] = reply
            .as_ref()
            .map_or(Value::Null, |r| r["applied_index"].clone());
        replies.extend(reply);
    }
    apply_leader_view(status, &replies);
}

/// Copies the leader's `matched_index` and `lag` into `status` (see `add_member_progress`).
fn apply_leader_view(status: &mut Value, replies: &[Value]) {
    let leader = if status["state"] == "leader" {
        Some(status.clone())
    } else {
        replies
            .iter()
            .filter(|r| r["state"] == "leader")
            .max_by_key(|r| r["term"].as_u64())
            .cloned()
    };
    status["lag_from"] = leader
        .as_ref()
        .map_or(Value::Null, |l| l["node_id"].clone());
    let Some(members) = status["members"].as_array_mut() else {
        return;
    };
    for member in members {
        let seen = leader.as_ref().and_then(|l| {
            l["members"]
                .as_array()?
                .iter()
                .find(|m| m["id"] == member["id"])
        });
        for field in ["matched_index", "lag"] {
            member[field] = seen.map_or(Value::Null, |m| m[field].clone());
        }
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
            match &value["lag_from"] {
                Value::Null => println!("no leader answered: matched index and lag unknown"),
                leader if *leader != value["node_id"] => {
                    println!("matched index and lag as the leader, node {leader}, sees them")
                }
                _ => {}
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64, state: &str, term: u64, members: Value) -> Value {
        json!({ "node_id": id, "state": state, "term": term, "members": members })
    }

    fn member(id: u64, matched: Option<u64>, lag: Option<u64>) -> Value {
        json!({ "id": id, "matched_index": matched, "lag": lag, "applied_index": 7 })
    }

    fn progress(status: &Value) -> Vec<(u64, Value, Value)> {
        status["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["id"].as_u64().unwrap(),
                    m["matched_index"].clone(),
                    m["lag"].clone(),
                )
            })
            .collect()
    }

    #[test]
    fn the_leaders_own_view_is_kept() {
        let members = json!([member(1, Some(9), Some(0)), member(2, Some(4), Some(5))]);
        let mut status = node(1, "leader", 3, members);
        let before = progress(&status);
        apply_leader_view(&mut status, &[node(2, "follower", 3, json!([]))]);
        assert_eq!(progress(&status), before);
        assert_eq!(status["lag_from"], 1);
    }

    #[test]
    fn a_follower_shows_the_leaders_matched_index_and_lag() {
        let unknown = json!([member(1, None, None), member(2, None, None)]);
        let mut status = node(2, "follower", 3, unknown.clone());
        let leader = node(
            1,
            "leader",
            3,
            json!([member(1, Some(9), Some(0)), member(2, Some(4), Some(5))]),
        );
        apply_leader_view(&mut status, &[leader, node(2, "follower", 3, unknown)]);
        assert_eq!(
            progress(&status),
            [(1, json!(9), json!(0)), (2, json!(4), json!(5))]
        );
        assert_eq!(status["lag_from"], 1);
        // The member's own applied index is left alone.
        assert_eq!(status["members"][1]["applied_index"], 7);
    }

    #[test]
    fn a_deposed_leader_with_a_lower_term_is_not_believed() {
        let mut status = node(3, "candidate", 9, json!([member(3, None, None)]));
        let old = node(1, "leader", 2, json!([member(3, Some(1), Some(40))]));
        let new = node(2, "leader", 4, json!([member(3, Some(30), Some(11))]));
        apply_leader_view(&mut status, &[old, new]);
        assert_eq!(progress(&status), [(3, json!(30), json!(11))]);
        assert_eq!(status["lag_from"], 2);
    }

    #[test]
    fn without_a_leader_matched_index_and_lag_are_unknown() {
        let mut status = node(2, "candidate", 5, json!([member(1, Some(3), Some(1))]));
        apply_leader_view(&mut status, &[node(3, "follower", 5, json!([]))]);
        assert_eq!(progress(&status), [(1, Value::Null, Value::Null)]);
        assert_eq!(status["lag_from"], Value::Null);
    }
}
