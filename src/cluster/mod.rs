//! Cluster administration: bootstrap and join, membership changes, status, snapshots and the
//! replica digest. Works through the raft API only; never writes column families itself.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};

use crate::raft::backup::{self, BackupError, BackupFile};
use crate::raft::network::{decode, encode, peer_client};
use crate::raft::node::{ChangeGuard, RaftNode};
use crate::raft::peer::JoinResult;
use crate::raft::state_machine::{self, Digest};
use crate::raft::{NodeId, NodeInfo, StateMachineError};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("node {node} is not the leader{}", leader_hint(.leader_id, .leader))]
    NotLeader {
        node: NodeId,
        leader_id: Option<NodeId>,
        leader: Option<NodeInfo>,
    },
    #[error("refused: {0}")]
    Refused(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("state machine: {0}")]
    StateMachine(StateMachineError),
    #[error("backup: {0}")]
    Backup(BackupError),
}

/// A node installing a snapshot has no whole state to digest or back up: a retryable
/// unavailability, not a failure of its state machine.
fn installing() -> ClusterError {
    ClusterError::Unavailable("this node is installing a snapshot of the register; retry".into())
}

impl From<StateMachineError> for ClusterError {
    fn from(e: StateMachineError) -> ClusterError {
        match e {
            StateMachineError::Store(StoreError::Replacing) => installing(),
            e => ClusterError::StateMachine(e),
        }
    }
}

impl From<BackupError> for ClusterError {
    fn from(e: BackupError) -> ClusterError {
        match e {
            BackupError::Store(StoreError::Replacing)
            | BackupError::StateMachine(StateMachineError::Store(StoreError::Replacing)) => {
                installing()
            }
            e => ClusterError::Backup(e),
        }
    }
}

fn leader_hint(id: &Option<NodeId>, node: &Option<NodeInfo>) -> String {
    match (id, node) {
        (Some(id), Some(n)) => format!("; the leader is node {id} (client {})", n.client_addr),
        (Some(id), None) => format!("; the leader is node {id}"),
        _ => "; no leader is known".into(),
    }
}

/// A raft role as status replies and `/metrics` name it: clients and dashboards match on these
/// strings, so they are spelled in this one place.
pub const fn state_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

/// Every role's name, for a gauge that shows all of them (0 but for the current one).
pub const STATE_NAMES: [&str; 5] = [
    state_name(ServerState::Leader),
    state_name(ServerState::Follower),
    state_name(ServerState::Candidate),
    state_name(ServerState::Learner),
    state_name(ServerState::Shutdown),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    pub id: NodeId,
    pub info: NodeInfo,
    pub voter: bool,
    pub matched_index: Option<u64>,
    pub lag: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub node_id: NodeId,
    pub state: &'static str,
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub members: Vec<MemberStatus>,
    pub membership_log_index: u64,
}

/// This node's view of the cluster.
///
/// `matched_index` and `lag` (the leader's last log index minus the member's matched index) come
/// from the leader's replication state: only the leader knows how far each member's log matches
/// its own, so on any other node they are `None` rather than a guess. A node cannot fetch them
/// from the leader for its caller: no peer RPC carries them, and the leader's `ClusterAdmin`
/// wants a keeper's token, which nodes do not hold. `linkreg cluster status`, which has the
/// operator's token, asks the leader (found among the members) and shows the leader's numbers
/// wherever it is pointed; see `src/cli/cluster.rs`.
pub fn status(node: &RaftNode) -> Status {
    let m = node.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .map(|(id, info)| {
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(id))
                .and_then(|l| l.as_ref().map(|l| l.index));
            MemberStatus {
                id: *id,
                info: info.clone(),
                voter: voters.contains(id),
                matched_index: matched,
                lag: match (m.last_log_index, matched) {
                    (Some(last), Some(matched)) => Some(last.saturating_sub(matched)),
                    _ => None,
                },
            }
        })
        .collect();
    Status {
        node_id: node.id,
        state: state_name(m.state),
        leader_id: m.current_leader,
        term: m.current_term,
        last_log_index: m.last_log_index,
        applied_index: m.last_applied.map(|l| l.index),
        snapshot_index: m.snapshot.map(|l| l.index),
        purged_index: m.purged.map(|l| l.index),
        members,
        membership_log_index: m.membership_config.log_id().map_or(0, |l| l.index),
    }
}

fn write_error(
    node: &RaftNode,
    e: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>,
) -> ClusterError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ClusterError::NotLeader {
            node: node.id,
            leader_id: f.leader_id,
            leader: f.leader_node,
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::InProgress(p),
        )) => ClusterError::Refused(format!(
            "another membership change is in progress: its entry at log index {} is not \
             committed yet (the last committed membership is at {})",
            p.membership_log_id.map_or(0, |l| l.index),
            p.committed.map_or(0, |l| l.index),
        )),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            ClusterError::Refused(c.to_string())
        }
        RaftError::Fatal(f) => ClusterError::Unavailable(f.to_string()),
    }
}

/// One membership change at a time per node: see [`crate::raft::node::ChangeLock`].
fn begin_change(node: &RaftNode) -> Result<ChangeGuard, ClusterError> {
    node.membership_change.try_begin().ok_or_else(|| {
        ClusterError::Refused(format!(
            "another membership change is in progress on node {}; run this one when it has \
             finished",
            node.id
        ))
    })
}

/// Adds a learner and waits until it has caught up with the log.
pub async fn add_learner(
    node: &RaftNode,
    id: NodeId,
    info: NodeInfo,
) -> Result<Status, ClusterError> {
    let _change = begin_change(node)?;
    node.raft
        .add_learner(id, info, true)
        .await
        .map_err(|e| write_error(node, e))?;
    Ok(status(node))
}

pub async fn promote(node: &RaftNode, id: NodeId) -> Result<Status, ClusterError> {
    let _change = begin_change(node)?;
    let change = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
    node.raft
        .change_membership(change, false)
        .await
        .map_err(|e| write_error(node, e))?;
    Ok(status(node))
}

/// Removes a voter or a learner from the cluster.
pub async fn remove(node: &RaftNode, id: NodeId) -> Result<Status, ClusterError> {
    let _change = begin_change(node)?;
    let current = status(node);
    let member = current
        .members
        .iter()
        .find(|m| m.id == id)
        .ok_or_else(|| ClusterError::Refused(format!("node {id} is not a member")))?;
    let change = if member.voter {
        if current.members.iter().filter(|m| m.voter).count() == 1 {
            return Err(ClusterError::Refused(format!(
                "node {id} is the last voter"
            )));
        }
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    node.raft
        .change_membership(change, false)
        .await
        .map_err(|e| write_error(node, e))?;
    Ok(status(node))
}

/// Builds a snapshot now and waits for it (up to a minute).
pub async fn snapshot(node: &RaftNode) -> Result<Option<u64>, ClusterError> {
    let applied = node.raft.metrics().borrow().last_applied;
    node.raft
        .trigger()
        .snapshot()
        .await
        .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
    let index = applied.map(|l| l.index);
    let m = node
        .raft
        .wait(Some(Duration::from_secs(60)))
        .metrics(|m| m.snapshot.map(|s| s.index) >= index, "snapshot built")
        .await
        .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
    Ok(m.snapshot.map(|s| s.index))
}

/// Writes a point-in-time backup of this node's state into its snapshot directory; the file is
/// removed when the returned handle is dropped.
pub async fn backup(node: &RaftNode) -> Result<BackupFile, ClusterError> {
    let store = node.store.clone();
    let dir = node.snapshot_dir.clone();
    tokio::task::spawn_blocking(move || backup::create(&store, &dir))
        .await
        .map_err(|e| ClusterError::Unavailable(format!("backup task: {e}")))?
        .map_err(ClusterError::from)
}

/// Hashes the whole state on a blocking thread: it reads every row, and waits for a snapshot
/// install under way to finish.
pub async fn digest(node: &RaftNode) -> Result<Digest, ClusterError> {
    let store = node.store.clone();
    tokio::task::spawn_blocking(move || state_machine::digest(&store))
        .await
        .map_err(|e| ClusterError::Unavailable(format!("digest task: {e}")))?
        .map_err(ClusterError::from)
}

/// Whether this node's own membership lists it as a voter: it has been one, and unless it was
/// removed while it was down, still is. Asked of raft's core, so it reflects the log and state
/// machine that raft loaded at start-up.
pub async fn is_voter(node: &RaftNode) -> bool {
    let id = node.id;
    node.raft
        .with_raft_state(move |state| {
            state
                .membership_state
                .effective()
                .membership()
                .voter_ids()
                .any(|v| v == id)
        })
        .await
        .unwrap_or(false)
}

/// Asks the cluster to make this node a voter, through any of `peers` (comma-separated peer
/// addresses of members, tried in turn), following redirects to the leader. A no-op for a node
/// that already is one.
pub async fn join(node: &RaftNode, peers: &str, timeout: Duration) -> Result<(), ClusterError> {
    let peers: Vec<&str> = peers
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if peers.is_empty() {
        return Err(ClusterError::Refused("--join names no peer address".into()));
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut next = 0;
    let mut target = peers[0].to_string();
    loop {
        let attempt = async {
            let mut client =
                peer_client(node.transport.channel(&target).map_err(|e| e.to_string())?);
            let reply = client
                .join(encode(&(node.id, node.info.clone())).map_err(|e| e.to_string())?)
                .await
                .map_err(|e| e.to_string())?;
            decode::<JoinResult>(reply.get_ref()).map_err(|e| e.to_string())
        }
        .await;
        // Unless the answer names the leader, the next attempt goes to the next listed peer.
        next = (next + 1) % peers.len();
        let mut redirected = false;
        match attempt {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                if let Some(leader) = f.leader_node {
                    target = leader.peer_addr;
                    redirected = true;
                }
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                tracing::info!("join refused for now ({e}); retrying");
            }
            Ok(Err(e)) => tracing::info!("join failed ({e}); retrying"),
            Err(e) => tracing::info!("cannot reach {target} to join ({e}); retrying"),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ClusterError::Unavailable(format!(
                "could not join through {} within {timeout:?}",
                peers.join(", ")
            )));
        }
        if !redirected {
            target = peers[next].to_string();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
