//! One attempt at getting a payload into the log: on this node when it leads, else through the
//! leader's `RaftPeer.Forward`. What the attempt may have done decides whether a retry is safe.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use openraft::error::{ClientWriteError, RaftError};
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::proto::raft::raft_peer_client::RaftPeerClient;
use crate::raft::network::{decode, encode, peer_client};
use crate::raft::node::{READ_INDEX_ROUND, RaftNode};
use crate::raft::peer::{ReadIndexResult, WriteResult};
use crate::raft::{LogId, NodeId, NodeInfo, Payload, Response};

#[derive(Debug, Clone)]
pub(super) enum Attempt {
    Done(Response),
    /// Refused before being appended: safe to send again.
    NotLeader,
    /// Sent, fate unknown.
    Unknown(String),
}

/// Shared by the service and its group-commit task.
#[derive(Clone)]
pub(super) struct Route {
    node: Arc<RaftNode>,
    peers: Arc<Mutex<HashMap<String, RaftPeerClient<Channel>>>>,
}

impl Route {
    pub(super) fn new(node: Arc<RaftNode>) -> Route {
        Route {
            node,
            peers: Arc::default(),
        }
    }

    /// The leader this node knows of, if any, with its addresses.
    pub(super) fn known_leader(&self) -> Option<(NodeId, NodeInfo)> {
        let metrics = self.node.raft.metrics();
        let m = metrics.borrow();
        let id = m.current_leader?;
        let info = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, info))
    }

    /// Sends `payload` to `leader` (this node or another) and waits until `deadline` at most.
    pub(super) async fn attempt(
        &self,
        leader: (NodeId, &NodeInfo),
        payload: Payload,
        deadline: Instant,
    ) -> Attempt {
        if leader.0 == self.node.id {
            self.here(payload, deadline).await
        } else {
            self.at(leader.1, payload, deadline).await
        }
    }

    async fn here(&self, payload: Payload, deadline: Instant) -> Attempt {
        let result = tokio::time::timeout_at(deadline, self.node.raft.client_write(payload)).await;
        match result {
            Err(_) => Attempt::Unknown("timed out waiting for the commit".into()),
            Ok(Ok(r)) => Attempt::Done(r.data),
            Ok(Err(e)) => classify(e),
        }
    }

    pub(super) fn peer(&self, addr: &str) -> Result<RaftPeerClient<Channel>, String> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = peers.get(addr) {
            return Ok(client.clone());
        }
        let client = peer_client(
            self.node
                .transport
                .channel(addr)
                .map_err(|e| e.to_string())?,
        );
        peers.insert(addr.to_string(), client.clone());
        Ok(client)
    }

    async fn at(&self, leader: &NodeInfo, payload: Payload, deadline: Instant) -> Attempt {
        let mut client = match self.peer(&leader.peer_addr) {
            Ok(c) => c,
            Err(e) => return Attempt::Unknown(e),
        };
        if let Err(e) = self.node.faults_allow(leader) {
            return Attempt::Unknown(e);
        }
        let payload = match encode(&payload) {
            Ok(p) => p,
            Err(e) => return Attempt::Unknown(e.to_string()),
        };
        let mut grpc = tonic::Request::new(payload);
        grpc.set_timeout(deadline.saturating_duration_since(Instant::now()));
        // The timeout header tells the leader when to give up, but the client side does not
        // enforce it: a leader whose packets vanish would hold this call until TCP gives up.
        let reply = match tokio::time::timeout_at(deadline, client.forward(grpc)).await {
            Err(_) => return Attempt::Unknown("timed out forwarding to the leader".into()),
            Ok(Ok(reply)) => reply,
            Ok(Err(status)) if never_delivered(&status) => return Attempt::NotLeader,
            Ok(Err(status)) => {
                return Attempt::Unknown(format!("forwarding to the leader: {status}"));
            }
        };
        match decode::<WriteResult>(reply.get_ref()) {
            Ok(Ok((response, _))) => Attempt::Done(response),
            Ok(Err(e)) => classify(e),
            Err(status) => Attempt::Unknown(status.to_string()),
        }
    }

    /// The leader's read index, its leadership confirmed by a quorum after this call; `None`
    /// when no leader is known or it could not confirm within [`READ_INDEX_ROUND`].
    pub(super) async fn read_index(&self) -> Option<Option<LogId>> {
        let (leader, info) = self.known_leader()?;
        if leader == self.node.id {
            // Each node-level round ends within READ_INDEX_ROUND; this bounds the wait for the
            // one under way and ours, whatever happens to them.
            let bound = Instant::now() + 2 * READ_INDEX_ROUND;
            let answer = tokio::time::timeout_at(bound, self.node.read_index.next()).await;
            return answer.ok().flatten().flatten()?.ok();
        }
        let deadline = Instant::now() + READ_INDEX_ROUND;
        // Bounded on this side too: a leader whose packets vanish would hold the call until
        // TCP gives up.
        tokio::time::timeout_at(deadline, self.remote_read_index(&info, deadline))
            .await
            .ok()
            .flatten()
    }

    async fn remote_read_index(
        &self,
        leader: &NodeInfo,
        deadline: Instant,
    ) -> Option<Option<LogId>> {
        self.node.faults_allow(leader).ok()?;
        let mut client = self.peer(&leader.peer_addr).ok()?;
        let mut grpc = tonic::Request::new(encode(&()).ok()?);
        grpc.set_timeout(deadline.saturating_duration_since(Instant::now()));
        let reply = client.read_index(grpc).await.ok()?;
        decode::<ReadIndexResult>(reply.get_ref()).ok()?.ok()
    }
}

/// A refused TCP connection carried no request: the leader we knew is gone, ask again.
fn never_delivered(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = e.source();
    }
    false
}

fn classify(e: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>) -> Attempt {
    match e {
        // Refused by a node that is not (or no longer) leader; openraft answers so before
        // appending, or after the entry was truncated away by a newer leader.
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => Attempt::NotLeader,
        other => Attempt::Unknown(other.to_string()),
    }
}
