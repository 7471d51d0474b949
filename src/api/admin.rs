//! The `ClusterAdmin` gRPC service: wire mapping over `crate::cluster`.
//!
//! Errors carry `google.rpc.ErrorInfo` (domain `linkreg`) like those of `LinkRegister`:
//! reason `NOT_LEADER` (`FAILED_PRECONDITION`, with the leader's client address in the
//! `x-linkreg-leader` metadata entry, so tools can retry there), `MEMBERSHIP_REFUSED`
//! (`FAILED_PRECONDITION`), `UNAVAILABLE`, `INTERNAL`, and `INVALID_ARGUMENT` with a
//! `google.rpc.BadRequest` naming the field.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::auth::Authenticator;
use super::grpc::{ERROR_DOMAIN, authorized};
use crate::cluster::{self, ClusterError, MemberStatus};
use crate::domain::Role;
use crate::proto::linkreg as pb;
use crate::proto::linkreg::cluster_admin_server::ClusterAdmin;
use crate::raft::NodeInfo;
use crate::raft::backup::BackupError;
use crate::raft::node::RaftNode;

/// Pieces of a backup file per message: well under the client message limit.
const BACKUP_CHUNK: usize = 1024 * 1024;

pub const LEADER_METADATA: &str = "x-linkreg-leader";

/// Cluster administration is the register keeper's.
pub struct AdminService {
    node: Arc<RaftNode>,
    auth: Authenticator,
}

impl AdminService {
    pub fn new(node: Arc<RaftNode>, auth: Authenticator) -> AdminService {
        AdminService { node, auth }
    }

    fn keeper<T>(&self, request: &Request<T>, action: &str) -> Result<(), Status> {
        authorized(&self.auth, request, Role::Keeper, action).map(|_| ())
    }
}

/// Why an administration request failed: the cluster refused it, or an argument was malformed.
enum AdminError {
    Cluster(ClusterError),
    InvalidArgument {
        field: &'static str,
        rule: &'static str,
    },
}

impl From<ClusterError> for AdminError {
    fn from(e: ClusterError) -> AdminError {
        AdminError::Cluster(e)
    }
}

/// The one mapping of cluster administration errors to gRPC.
fn to_status(e: impl Into<AdminError>) -> Status {
    let mut info = HashMap::new();
    let mut details = ErrorDetails::new();
    let mut leader_addr = None;
    let (code, reason, message) = match e.into() {
        AdminError::InvalidArgument { field, rule } => {
            details.add_bad_request_violation(field, rule);
            info.insert("field".to_string(), field.to_string());
            let message = format!("{field}: {rule}");
            (Code::InvalidArgument, "INVALID_ARGUMENT", message)
        }
        AdminError::Cluster(e) => match &e {
            ClusterError::NotLeader {
                leader_id, leader, ..
            } => {
                if let Some(id) = leader_id {
                    info.insert("leader_id".to_string(), id.to_string());
                }
                leader_addr = leader.as_ref().map(|l| l.client_addr.clone());
                (Code::FailedPrecondition, "NOT_LEADER", e.to_string())
            }
            ClusterError::Refused(_) => (
                Code::FailedPrecondition,
                "MEMBERSHIP_REFUSED",
                e.to_string(),
            ),
            ClusterError::Unavailable(_) => (Code::Unavailable, "UNAVAILABLE", e.to_string()),
            ClusterError::Backup(BackupError::Empty) => (
                Code::FailedPrecondition,
                "NOTHING_TO_BACK_UP",
                e.to_string(),
            ),
            ClusterError::StateMachine(_) | ClusterError::Backup(_) => {
                tracing::error!("cluster administration: {e}");
                let message = "internal error; see the node's log".to_string();
                (Code::Internal, "INTERNAL", message)
            }
        },
    };
    details.set_error_info(reason, ERROR_DOMAIN, info);
    let mut status = Status::with_error_details(code, message, details);
    if let Some(addr) = leader_addr.and_then(|a| a.parse().ok()) {
        status.metadata_mut().insert(LEADER_METADATA, addr);
    }
    status
}

fn member(m: &MemberStatus) -> pb::Member {
    pb::Member {
        id: m.id,
        peer_addr: m.info.peer_addr.clone(),
        client_addr: m.info.client_addr.clone(),
        http_addr: m.info.http_addr.clone(),
        role: if m.voter { "voter" } else { "learner" }.into(),
        matched_index: m.matched_index,
        lag: m.lag,
    }
}

fn membership(status: cluster::Status) -> pb::MembershipResponse {
    pb::MembershipResponse {
        members: status.members.iter().map(member).collect(),
        log_index: status.membership_log_index,
    }
}

#[tonic::async_trait]
impl ClusterAdmin for AdminService {
    type BackupStream = ReceiverStream<Result<pb::BackupChunk, Status>>;

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.keeper(&req, "cluster_status")?;
        let s = cluster::status(&self.node);
        Ok(Response::new(pb::StatusResponse {
            node_id: s.node_id,
            state: s.state.into(),
            leader_id: s.leader_id,
            term: s.term,
            last_log_index: s.last_log_index,
            applied_index: s.applied_index,
            snapshot_index: s.snapshot_index,
            purged_index: s.purged_index,
            members: s.members.iter().map(member).collect(),
        }))
    }

    async fn add_learner(
        &self,
        req: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.keeper(&req, "add_learner")?;
        let r = req.into_inner();
        if r.id == 0 {
            return Err(to_status(AdminError::InvalidArgument {
                field: "id",
                rule: "node ids start at 1",
            }));
        }
        if r.peer_addr.trim().is_empty() {
            return Err(to_status(AdminError::InvalidArgument {
                field: "peer_addr",
                rule: "must not be empty",
            }));
        }
        let info = NodeInfo {
            peer_addr: r.peer_addr,
            client_addr: r.client_addr,
            http_addr: r.http_addr,
        };
        let status = cluster::add_learner(&self.node, r.id, info)
            .await
            .map_err(to_status)?;
        Ok(Response::new(membership(status)))
    }

    async fn promote(
        &self,
        req: Request<pb::MemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.keeper(&req, "promote")?;
        let status = cluster::promote(&self.node, req.get_ref().id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(membership(status)))
    }

    async fn remove(
        &self,
        req: Request<pb::MemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.keeper(&req, "remove")?;
        let status = cluster::remove(&self.node, req.get_ref().id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(membership(status)))
    }

    async fn snapshot(
        &self,
        req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        self.keeper(&req, "cluster_snapshot")?;
        let index = cluster::snapshot(&self.node).await.map_err(to_status)?;
        Ok(Response::new(pb::SnapshotResponse {
            snapshot_index: index,
        }))
    }

    async fn digest(
        &self,
        req: Request<pb::DigestRequest>,
    ) -> Result<Response<pb::DigestResponse>, Status> {
        self.keeper(&req, "cluster_digest")?;
        let d = cluster::digest(&self.node).await.map_err(to_status)?;
        Ok(Response::new(pb::DigestResponse {
            node_id: self.node.id,
            applied_index: d.applied.map(|l| l.index),
            sha256: d.sha256,
            rows: d.rows,
        }))
    }

    async fn backup(
        &self,
        req: Request<pb::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        self.keeper(&req, "cluster_backup")?;
        let file = cluster::backup(&self.node).await.map_err(to_status)?;
        let info = &file.info;
        let header = pb::BackupHeader {
            node_id: self.node.id,
            applied_index: info.last_log_id.index,
            applied_term: info.last_log_id.leader_id.term,
            sha256: info.digest.sha256.clone(),
            rows: info.digest.rows,
            bytes: info.bytes,
        };
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let chunk = |part| Ok(pb::BackupChunk { part: Some(part) });
            if tx
                .send(chunk(pb::backup_chunk::Part::Header(header)))
                .await
                .is_err()
            {
                return;
            }
            // `file` lives until the stream ends, then removes the backup from the node's disk.
            let mut input = match tokio::fs::File::open(&file.path).await {
                Ok(input) => input,
                Err(e) => {
                    tracing::error!("opening backup {}: {e}", file.path.display());
                    let _ = tx.send(Err(Status::internal("backup file vanished"))).await;
                    return;
                }
            };
            let mut sent = 0u64;
            loop {
                let mut buf = vec![0u8; BACKUP_CHUNK];
                let n = match input.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        tracing::error!("reading backup {}: {e}", file.path.display());
                        let _ = tx
                            .send(Err(Status::internal("reading the backup failed")))
                            .await;
                        return;
                    }
                };
                buf.truncate(n);
                sent += n as u64;
                if tx
                    .send(chunk(pb::backup_chunk::Part::Data(buf)))
                    .await
                    .is_err()
                {
                    tracing::warn!("backup stream abandoned by the client after {sent} bytes");
                    return;
                }
            }
            tracing::info!(
                index = file.info.last_log_id.index,
                bytes = sent,
                "backup streamed"
            );
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
