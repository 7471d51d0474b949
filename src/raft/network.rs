//! Peer network, client side: openraft's RPCs as calls to the other members' `RaftPeer` gRPC
//! service, with payloads in the store codec. Also the fault injection the test harness uses to
//! drop, delay and partition traffic between chosen nodes (empty in production).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io::SeekFrom;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::storage::Snapshot;
use openraft::{OptionalSend, StorageError, StorageIOError, Vote};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::{NodeId, NodeInfo, TypeConfig};
use crate::proto::raft::Payload;
use crate::proto::raft::raft_peer_client::RaftPeerClient;
use crate::store::codec;

/// Large enough for a snapshot chunk or a full append-entries batch.
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Traffic rules between nodes, consulted before every outgoing peer call.
#[derive(Debug, Default)]
pub struct Faults {
    state: Mutex<FaultState>,
}

#[derive(Debug, Default)]
struct FaultState {
    /// (from, to) pairs whose messages are dropped.
    cut: HashSet<(NodeId, NodeId)>,
    delay: HashMap<(NodeId, NodeId), Duration>,
    /// (from, to) pairs whose messages take their size divided by this many bytes per
    /// millisecond: a slow link, or a peer too busy to take a large message at once.
    throttle: HashMap<(NodeId, NodeId), usize>,
}

impl Faults {
    fn with<T>(&self, f: impl FnOnce(&mut FaultState) -> T) -> T {
        // A poisoned lock only means a test thread panicked while holding it; the sets are
        // still usable.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut state)
    }

    /// Drops every message between `a` and `b`, both ways.
    pub fn cut(&self, a: NodeId, b: NodeId) {
        self.with(|s| {
            s.cut.insert((a, b));
            s.cut.insert((b, a));
        });
    }

    /// Cuts `node` off from each of `others`.
    pub fn isolate(&self, node: NodeId, others: &[NodeId]) {
        for other in others {
            if *other != node {
                self.cut(node, *other);
            }
        }
    }

    pub fn delay(&self, from: NodeId, to: NodeId, by: Duration) {
        self.with(|s| s.delay.insert((from, to), by));
    }

    pub fn throttle(&self, from: NodeId, to: NodeId, bytes_per_ms: usize) {
        self.with(|s| s.throttle.insert((from, to), bytes_per_ms.max(1)));
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.with(|s| {
            s.cut.clear();
            s.delay.clear();
            s.throttle.clear();
        });
    }

    fn transfer_time(&self, from: NodeId, to: NodeId, bytes: usize) -> Option<Duration> {
        self.with(|s| {
            let rate = *s.throttle.get(&(from, to))?;
            Some(Duration::from_millis((bytes / rate) as u64))
        })
    }

    /// Whether `from` may currently reach `to` (the service's forwards obey the same faults).
    pub fn allows(&self, from: NodeId, to: NodeId) -> Result<(), String> {
        self.with(|s| {
            if s.cut.contains(&(from, to)) {
                Err(format!("fault injection: {from} -> {to} cut"))
            } else {
                Ok(())
            }
        })
    }

    fn check(&self, from: NodeId, to: NodeId) -> Result<Option<Duration>, Unreachable> {
        self.with(|s| {
            if s.cut.contains(&(from, to)) {
                Err(Unreachable::new(&std::io::Error::other(format!(
                    "fault injection: {from} -> {to} cut"
                ))))
            } else {
                Ok(s.delay.get(&(from, to)).copied())
            }
        })
    }
}

/// The name every peer certificate carries (as a DNS subject alternative name). Peers are dialled
/// by whatever address the membership holds, so the name checked is this one, not the address:
/// being signed by the cluster's peer CA is what makes a node a member.
pub const PEER_TLS_NAME: &str = "linkreg-peer";

/// How members dial each other: plain, or mutual TLS with the cluster's peer CA.
#[derive(Clone, Default, Debug)]
pub struct PeerTransport {
    tls: Option<ClientTlsConfig>,
}

impl PeerTransport {
    pub fn plain() -> PeerTransport {
        PeerTransport::default()
    }

    /// Mutual TLS: present `cert`/`key`, accept only peers whose certificate `ca` signed.
    pub fn mutual_tls(cert: &[u8], key: &[u8], ca: &[u8]) -> PeerTransport {
        PeerTransport {
            tls: Some(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(ca))
                    .identity(Identity::from_pem(cert, key))
                    .domain_name(PEER_TLS_NAME),
            ),
        }
    }

    /// A gRPC channel to a peer's address (lazily connected, reconnects by itself).
    pub fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone())?;
        }
        Ok(endpoint.connect_lazy())
    }
}

pub fn peer_client(channel: Channel) -> RaftPeerClient<Channel> {
    RaftPeerClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

pub fn encode<T: Serialize>(value: &T) -> Result<Payload, tonic::Status> {
    codec::encode(value)
        .map(|data| Payload { data })
        .map_err(|e| tonic::Status::internal(format!("encoding a peer message: {e}")))
}

pub fn decode<T: DeserializeOwned>(payload: &Payload) -> Result<T, tonic::Status> {
    codec::decode(&payload.data)
        .map_err(|e| tonic::Status::invalid_argument(format!("decoding a peer message: {e}")))
}

#[derive(Clone)]
pub struct Network {
    /// An append request larger than this is split (see `PeerConnection::call`).
    pub append_budget: usize,
    pub from: NodeId,
    pub faults: Arc<Faults>,
    pub transport: PeerTransport,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerConnection {
        PeerConnection {
            append_budget: self.append_budget,
            max_append_budget: self.append_budget,
            append_in_flight: false,
            from: self.from,
            target,
            client: self
                .transport
                .channel(&node.peer_addr)
                .map(peer_client)
                .map_err(|e| e.to_string()),
            faults: self.faults.clone(),
        }
    }
}

/// The least an append may be cut down to; a single entry is always sent whatever its size.
const MIN_APPEND_BUDGET: usize = 16 * 1024;

pub struct PeerConnection {
    /// What the next append may carry. openraft bounds every append by the heartbeat interval
    /// and resends the same run after a timeout, so a run too large for the follower to take
    /// in that time would time out for ever: a lagging follower would never catch up (seen
    /// after 4M imported links, with every node idle). An append that timed out halves this;
    /// each one that completes wins a quarter back, up to the configured budget.
    append_budget: usize,
    max_append_budget: usize,
    /// Set while an append is under way; still set at the next call means openraft gave up on
    /// it (dropped the future at its timeout).
    append_in_flight: bool,
    from: NodeId,
    target: NodeId,
    client: Result<RaftPeerClient<Channel>, String>,
    faults: Arc<Faults>,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>;

impl PeerConnection {
    async fn call<Req, Resp, E>(
        &mut self,
        method: Method,
        request: &Req,
        entries: usize,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        if let Some(delay) = self.faults.check(self.from, self.target)? {
            tokio::time::sleep(delay).await;
        }
        let client = match &mut self.client {
            Ok(client) => client,
            Err(reason) => {
                return Err(RPCError::Unreachable(Unreachable::new(
                    &std::io::Error::other(reason.clone()),
                )));
            }
        };
        let network = |e: &dyn std::fmt::Display| {
            RPCError::Network(NetworkError::new(&std::io::Error::other(e.to_string())))
        };
        let payload = encode(request).map_err(|e| network(&e))?;
        let appending = matches!(method, Method::AppendEntries);
        if appending && std::mem::take(&mut self.append_in_flight) {
            self.append_budget =
                (self.append_budget / 2).max(MIN_APPEND_BUDGET.min(self.max_append_budget));
            tracing::debug!(
                target = self.target,
                budget = self.append_budget,
                "append timed out: sending shorter runs"
            );
        }
        // Entries of bulk imports are large: a follower far behind would be sent more than a
        // message may hold, or than it can take within openraft's timeout. Ask openraft for a
        // shorter run instead (it retries at once).
        if appending && payload.data.len() > self.append_budget && entries > 1 {
            let fits = entries as u64 * self.append_budget as u64 / payload.data.len() as u64;
            return Err(PayloadTooLarge::new_entries_hint(fits.max(1)).into());
        }
        let transfer = self
            .faults
            .transfer_time(self.from, self.target, payload.data.len());
        let mut req = tonic::Request::new(payload);
        req.set_timeout(option.hard_ttl());
        self.append_in_flight = appending;
        if let Some(transfer) = transfer {
            tokio::time::sleep(transfer).await;
        }
        let reply = match method {
            Method::AppendEntries => client.append_entries(req).await,
            Method::Vote => client.vote(req).await,
            Method::InstallSnapshot => client.install_snapshot(req).await,
        };
        if appending {
            self.append_in_flight = false;
            self.append_budget =
                (self.append_budget + self.append_budget / 4).min(self.max_append_budget);
        }
        let reply = reply.map_err(|status| match status.code() {
            tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&status)),
            _ => network(&status),
        })?;
        let decoded: Result<Resp, RaftError<NodeId, E>> =
            decode(reply.get_ref()).map_err(|e| network(&e))?;
        decoded.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

#[derive(Clone, Copy)]
enum Method {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        self.call(Method::AppendEntries, &rpc, rpc.entries.len(), &option)
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(Method::InstallSnapshot, &rpc, 0, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call(Method::Vote, &rpc, 0, &option).await
    }

    /// openraft's own sender gives every chunk `install_snapshot_timeout`, the last one too. But
    /// the last chunk is answered only once the receiver has installed the whole snapshot, which
    /// takes time in proportion to the register (about 15 s at 10M links, measured): the leader
    /// gave up on it and sent all 4 GB again. Here the last chunk gets [`INSTALL_TIMEOUT`].
    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        mut snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let signature = snapshot.meta.signature();
        let read_error = |e: std::io::Error| {
            StreamingError::from(StorageError::from(StorageIOError::read_snapshot(
                Some(signature.clone()),
                &e,
            )))
        };
        let file = snapshot.snapshot.as_mut();
        let end = file.seek(SeekFrom::End(0)).await.map_err(read_error)?;
        let chunk = option.snapshot_chunk_size().unwrap_or(MAX_MESSAGE / 2) as u64;
        let mut cancel = std::pin::pin!(cancel);
        let mut offset = 0;
        let mut failures = 0;
        loop {
            file.seek(SeekFrom::Start(offset))
                .await
                .map_err(read_error)?;
            let mut data = Vec::new();
            (&mut *file)
                .take(chunk)
                .read_to_end(&mut data)
                .await
                .map_err(read_error)?;
            let sent = data.len() as u64;
            let done = offset + sent == end;
            let request = InstallSnapshotRequest {
                vote,
                meta: snapshot.meta.clone(),
                offset,
                data,
                done,
            };
            let ttl = if done {
                INSTALL_TIMEOUT
            } else {
                option.hard_ttl()
            };
            let call =
                tokio::time::timeout(ttl, self.install_snapshot(request, RPCOption::new(ttl)));
            let answer = tokio::select! {
                closed = cancel.as_mut() => return Err(closed.into()),
                answer = call => answer,
            };
            let failure: StreamingError<TypeConfig, Fatal<NodeId>> = match answer {
                Ok(Ok(reply)) => {
                    if reply.vote > vote || done {
                        return Ok(SnapshotResponse::new(reply.vote));
                    }
                    offset += sent;
                    failures = 0;
                    continue;
                }
                Ok(Err(RPCError::RemoteError(RemoteError {
                    source: RaftError::APIError(InstallSnapshotError::SnapshotMismatch(mismatch)),
                    ..
                }))) => {
                    tracing::warn!(target = self.target, %mismatch, "snapshot mismatch: starting over");
                    offset = 0;
                    continue;
                }
                Ok(Err(RPCError::RemoteError(RemoteError {
                    target,
                    target_node,
                    source: RaftError::Fatal(fatal),
                }))) => {
                    return Err(RemoteError {
                        target,
                        target_node,
                        source: fatal,
                    }
                    .into());
                }
                Ok(Err(RPCError::PayloadTooLarge(e))) => return Err(NetworkError::new(&e).into()),
                Ok(Err(RPCError::Timeout(e))) => e.into(),
                Ok(Err(RPCError::Unreachable(e))) => e.into(),
                Ok(Err(RPCError::Network(e))) => e.into(),
                Err(_) => NetworkError::new(&std::io::Error::other(format!(
                    "no answer to the snapshot chunk at {offset} within {ttl:?}"
                )))
                .into(),
            };
            failures += 1;
            // A failed last chunk is not sent again into an install that may be running:
            // openraft starts a new transfer.
            if done || failures >= CHUNK_ATTEMPTS {
                return Err(failure);
            }
            tracing::warn!(
                target = self.target,
                offset,
                "snapshot chunk failed ({failure}): retrying"
            );
            tokio::time::sleep(Duration::from_millis(200 * u64::from(failures))).await;
        }
    }
}

/// How long the last chunk of a snapshot may take: the receiver answers it once the whole
/// snapshot is installed. Bounded so that a receiver that died mid-install is given up on.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Attempts at one data chunk before the transfer is abandoned (openraft starts a new one).
const CHUNK_ATTEMPTS: u32 = 3;
