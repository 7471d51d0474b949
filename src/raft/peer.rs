//! Peer network, server side: the `RaftPeer` gRPC service every member runs on its peer
//! listener. Raft RPCs go straight to openraft; `Forward`, `ReadIndex` and `Join` let a follower
//! or a new node reach the leader through the same channel.

use std::collections::BTreeSet;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, Raft};
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};

use super::network::{decode, encode};
use super::rounds::Rounds;
use super::{LogId, NodeId, NodeInfo, Response, TypeConfig};
use crate::proto::raft::Payload;
use crate::proto::raft::raft_peer_server::RaftPeer;

pub type WriteResult =
    Result<(Response, LogId), RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>>;
pub type ReadIndexResult =
    Result<Option<LogId>, RaftError<NodeId, openraft::error::CheckIsLeaderError<NodeId, NodeInfo>>>;
pub type JoinResult = Result<LogId, RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>>;

pub struct PeerService {
    raft: Raft<TypeConfig>,
    membership_change: super::node::ChangeLock,
    read_index: Rounds<Option<ReadIndexResult>>,
}

impl PeerService {
    pub fn new(
        raft: Raft<TypeConfig>,
        membership_change: super::node::ChangeLock,
        read_index: Rounds<Option<ReadIndexResult>>,
    ) -> PeerService {
        PeerService {
            raft,
            membership_change,
            read_index,
        }
    }
}

/// Adds `id` as a learner (waiting until it has caught up) and then as a voter. Already a voter
/// at the same address: nothing to do. Used by `Join`, under the node's membership lock.
pub async fn join(raft: &Raft<TypeConfig>, id: NodeId, node: NodeInfo) -> JoinResult {
    let metrics = raft.metrics().borrow().clone();
    let config = metrics.membership_config.membership();
    let known = config.get_node(&id).cloned();
    let voter = config.voter_ids().any(|v| v == id);
    let mut last = metrics.membership_config.log_id().unwrap_or_default();
    if known.as_ref() != Some(&node) {
        last = raft.add_learner(id, node, true).await?.log_id;
    }
    if !voter {
        let add = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
        last = raft.change_membership(add, false).await?.log_id;
    }
    Ok(last)
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(
        &self,
        req: GrpcRequest<Payload>,
    ) -> Result<GrpcResponse<Payload>, Status> {
        let rpc = decode(req.get_ref())?;
        let result = self.raft.append_entries(rpc).await;
        Ok(GrpcResponse::new(encode(&result)?))
    }

    async fn vote(&self, req: GrpcRequest<Payload>) -> Result<GrpcResponse<Payload>, Status> {
        let rpc = decode(req.get_ref())?;
        let result = self.raft.vote(rpc).await;
        Ok(GrpcResponse::new(encode(&result)?))
    }

    async fn install_snapshot(
        &self,
        req: GrpcRequest<Payload>,
    ) -> Result<GrpcResponse<Payload>, Status> {
        let rpc = decode(req.get_ref())?;
        let result = self.raft.install_snapshot(rpc).await;
        Ok(GrpcResponse::new(encode(&result)?))
    }

    async fn forward(&self, req: GrpcRequest<Payload>) -> Result<GrpcResponse<Payload>, Status> {
        let payload: super::Payload = decode(req.get_ref())?;
        let result: WriteResult = self
            .raft
            .client_write(payload)
            .await
            .map(|r| (r.data, r.log_id));
        Ok(GrpcResponse::new(encode(&result)?))
    }

    async fn read_index(
        &self,
        _req: GrpcRequest<Payload>,
    ) -> Result<GrpcResponse<Payload>, Status> {
        // Leadership confirmed by a quorum is all the asking follower needs: it waits for its
        // own apply to reach the index. Waiting here for the leader's apply as well would only
        // add the leader's apply lag to every follower read.
        let Some(Some(result)) = self.read_index.next().await else {
            return Err(Status::unavailable(
                "the leader could not confirm its leadership in time; retry",
            ));
        };
        Ok(GrpcResponse::new(encode(&result)?))
    }

    async fn join(&self, req: GrpcRequest<Payload>) -> Result<GrpcResponse<Payload>, Status> {
        let (id, node): (NodeId, NodeInfo) = decode(req.get_ref())?;
        // The joining node retries; a refusal here costs it one round.
        let Some(_change) = self.membership_change.try_begin() else {
            return Err(Status::unavailable(
                "another membership change is in progress; retry",
            ));
        };
        let result = join(&self.raft, id, node).await;
        Ok(GrpcResponse::new(encode(&result)?))
    }
}
