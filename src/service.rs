//! The one entry point both front ends call. Writes go through raft (forwarded to the leader
//! when this node is not it); reads are answered from this node's state machine, optionally after
//! a ReadIndex round so they are linearizable.
//!
//! ```text
//!   write ─► leader known? ──no──► wait (bounded) for an election
//!              │ yes          (a creation first joins a group: group.rs)
//!              ├─ self:  raft.client_write
//!              └─ other: RaftPeer.Forward ─► leader's raft.client_write
//!   read  ─► [linearizable: read index from the leader, wait until applied here] ─► local store
//! ```
//!
//! Retries inside the service are limited to attempts that cannot have been applied (no leader
//! known, or refused by a non-leader before appending). A write whose fate is unknown (timeout,
//! connection lost after sending) is retried only when it carries a client session, whose
//! recorded answer makes the retry safe; otherwise it is reported as `OutcomeUnknown`.

mod group;
mod route;

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::time::Instant;

use crate::domain::query::{self, ForeignKeyQuery, SsinQuery};
use crate::domain::rules::{decide, precheck};
use crate::domain::{
    Action, Caller, Command, Country, DomainError, Field, FormatRule, KeyType, KeyTypeCode, Link,
    LinkId, RegisterView, RequestContext, Timestamp, Verdict,
};
use crate::raft::node::RaftNode;
use crate::raft::rounds::{RoundCounts, Rounds};
use crate::raft::{AuditEvent, ClientRequest, LogId, NodeId, NodeInfo, Payload, Request, Response};
use crate::store::{StoreError, View};
use group::Creations;
pub use group::GroupCounts;
use route::{Attempt, Route};

pub const CLIENT_ID_MAX: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("no leader reachable within {0:?}; the request was not applied, retry")]
    Unavailable(Duration),
    #[error("this node is not a member of any cluster yet; it has nothing to answer from")]
    NotInCluster,
    #[error("this node is installing a snapshot of the register; ask another node or retry")]
    Replacing,
    #[error("the outcome is unknown ({0}); retry with a client id and request id to learn it")]
    OutcomeUnknown(String),
    #[error("request {request_id} is older than this client's last request {last_request_id}")]
    StaleRequest {
        request_id: u64,
        last_request_id: u64,
    },
    #[error("{field}: {rule}")]
    InvalidSession {
        field: &'static str,
        rule: &'static str,
    },
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("internal: {0}")]
    Internal(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// This node's applied state: fastest, possibly behind the leader by replication lag.
    #[default]
    Local,
    /// Reflects every write acknowledged before the read started.
    Linearizable,
}

/// Who asks, on what terms, and how long they will wait.
#[derive(Debug, Clone)]
pub struct Call {
    pub caller: Caller,
    pub context: Option<RequestContext>,
    /// The client's own deadline; the node's write timeout applies when it is later or absent.
    pub deadline: Option<Instant>,
}

impl From<Caller> for Call {
    fn from(caller: Caller) -> Call {
        Call {
            caller,
            context: None,
            deadline: None,
        }
    }
}

/// How a read is answered.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    pub consistency: Consistency,
    /// The client's own deadline, as for writes.
    pub deadline: Option<Instant>,
}

impl From<Consistency> for ReadOptions {
    fn from(consistency: Consistency) -> ReadOptions {
        ReadOptions {
            consistency,
            deadline: None,
        }
    }
}

/// The exactly-once session of a write: both parts or neither.
pub fn session(
    client_id: Option<String>,
    request_id: Option<u64>,
) -> Result<Option<ClientRequest>, ServiceError> {
    let invalid = |field, rule| Err(ServiceError::InvalidSession { field, rule });
    match (client_id, request_id) {
        (None, None) => Ok(None),
        (Some(client_id), Some(request_id)) => {
            let session = ClientRequest {
                client_id,
                request_id,
            };
            check_session(&session)?;
            Ok(Some(session))
        }
        (Some(_), None) => invalid("request_id", "is required with client_id"),
        (None, Some(_)) => invalid("client_id", "is required with request_id"),
    }
}

fn check_session(session: &ClientRequest) -> Result<(), ServiceError> {
    let rule = if session.client_id.trim().is_empty() {
        "must not be empty"
    } else if session.client_id.chars().count() > CLIENT_ID_MAX {
        "must not be longer than 128 characters"
    } else {
        return Ok(());
    };
    Err(ServiceError::InvalidSession {
        field: "client_id",
        rule,
    })
}

/// Which node answered a read, and how far its state had got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadMeta {
    pub node_id: NodeId,
    pub applied_index: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    pub verdict: Verdict,
    /// The entry that decided the command; `None` for input refused before replication.
    pub log_index: Option<u64>,
    /// The verdict was recorded in the client's session by an earlier attempt of the request.
    pub replayed: bool,
}

pub struct Service {
    node: Arc<RaftNode>,
    write_timeout: Duration,
    route: Route,
    creations: Creations,
    /// Read indexes for linearizable reads, one round for all the readers waiting.
    reads: Rounds<Option<Option<LogId>>>,
}

fn now() -> Timestamp {
    Timestamp::from_datetime(OffsetDateTime::now_utc())
}

impl Service {
    pub fn new(node: Arc<RaftNode>, write_timeout: Duration) -> Service {
        let route = Route::new(node.clone());
        let reads = {
            let route = route.clone();
            Rounds::new(move || {
                let route = route.clone();
                async move { route.read_index().await }
            })
        };
        Service {
            node,
            write_timeout,
            creations: Creations::new(route.clone()),
            route,
            reads,
        }
    }

    pub fn node(&self) -> &Arc<RaftNode> {
        &self.node
    }

    /// How well linearizable reads share their read-index rounds on this node: rounds run and
    /// the reads that waited for them.
    pub fn read_round_counts(&self) -> RoundCounts {
        self.reads.counts()
    }

    /// How well group commit is working on this node: groups sent and the creations in them.
    pub fn group_counts(&self) -> GroupCounts {
        self.creations.counts()
    }

    /// Replicates one command and returns the verdict every node reached on it. A refused write
    /// is logged here, once, with its code and caller.
    pub async fn write(
        &self,
        call: impl Into<Call>,
        action: Action,
        session: Option<ClientRequest>,
    ) -> Result<WriteOutcome, ServiceError> {
        let call = call.into();
        let caller = call.caller.clone();
        let name = action.name();
        let result = self.replicate(call, action, session).await;
        log_refusal(&caller, name, &result);
        result
    }

    async fn replicate(
        &self,
        call: Call,
        action: Action,
        session: Option<ClientRequest>,
    ) -> Result<WriteOutcome, ServiceError> {
        if let Some(s) = &session {
            check_session(s)?;
        }
        let command = Command {
            caller: call.caller,
            at: now(),
            action,
            context: call.context,
        };
        // Input that is wrong whatever the register holds would be refused alike by every
        // replica: refuse it here, so it never takes a log entry.
        // An import is not decided twice: its rows are refused one by one when applied, and
        // only what needs no state (role, size) is checked here.
        let early = match &command.action {
            Action::ImportLinks(_) => precheck(&command).err(),
            // While this node installs a snapshot the leader alone decides.
            _ => match self.node.store.view() {
                Some(view) => decide(&view, &command)?.err(),
                None => None,
            },
        };
        if let Some(e) = early
            && e.is_input_error()
        {
            return Ok(WriteOutcome {
                verdict: Err(e),
                log_index: None,
                replayed: false,
            });
        }
        let request = Request { command, session };
        let deadline = self.deadline(call.deadline);
        // Once an attempt may have been applied, running out of time is an unknown outcome,
        // never "unavailable" (which promises that nothing was applied).
        let mut uncertain: Option<String> = None;
        let out_of_time = |uncertain: &Option<String>| match uncertain {
            Some(reason) => ServiceError::OutcomeUnknown(reason.clone()),
            None => ServiceError::Unavailable(self.write_timeout),
        };
        loop {
            let (leader, leader_node) = match self.leader(deadline).await {
                Ok(found) => found,
                Err(ServiceError::Unavailable(_)) => return Err(out_of_time(&uncertain)),
                Err(e) => return Err(e),
            };
            let attempt = match &request.command.action {
                Action::CreateLink(_) => self.creations.attempt(request.clone(), deadline).await,
                _ => {
                    let payload = Payload::One(Box::new(request.clone()));
                    let to = (leader, &leader_node);
                    self.route.attempt(to, payload, deadline).await
                }
            };
            match attempt {
                Attempt::Done(response) => {
                    return match response {
                        Response::Verdict {
                            verdict,
                            log_index,
                            replayed,
                        } => Ok(WriteOutcome {
                            verdict: *verdict,
                            log_index: Some(log_index),
                            replayed,
                        }),
                        Response::SessionReused { .. } => Err(ServiceError::InvalidSession {
                            field: "request_id",
                            rule: "was already used by this client for a different request",
                        }),
                        Response::Stale { last_request_id } => Err(ServiceError::StaleRequest {
                            request_id: request.session.as_ref().map_or(0, |s| s.request_id),
                            last_request_id,
                        }),
                        // Not the response itself in the message: it may quote personal data.
                        Response::None => Err(ServiceError::Internal(
                            "a command entry produced no verdict".into(),
                        )),
                        Response::Creates(_) => Err(ServiceError::Internal(
                            "a single command was answered as a group".into(),
                        )),
                    };
                }
                Attempt::NotLeader => {}
                Attempt::Unknown(reason) => {
                    if request.session.is_none() || Instant::now() >= deadline {
                        return Err(ServiceError::OutcomeUnknown(reason));
                    }
                    uncertain = Some(reason);
                }
            }
            if Instant::now() >= deadline {
                return Err(out_of_time(&uncertain));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The node's write timeout from now, or the client's deadline when that comes first.
    fn deadline(&self, client: Option<Instant>) -> Instant {
        let own = Instant::now() + self.write_timeout;
        client.map_or(own, |c| c.min(own))
    }

    /// The current leader, waiting for an election to finish if there is none.
    async fn leader(&self, deadline: Instant) -> Result<(NodeId, NodeInfo), ServiceError> {
        let mut metrics = self.node.raft.metrics();
        loop {
            metrics.mark_unchanged();
            if let Some(leader) = self.route.known_leader() {
                return Ok(leader);
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(ServiceError::Internal("raft has stopped".into())),
                Err(_) => return Err(ServiceError::Unavailable(self.write_timeout)),
            }
        }
    }

    /// Waits until this node has applied everything acknowledged before the call.
    async fn linearize(&self, deadline: Instant) -> Result<(), ServiceError> {
        loop {
            // No leader known: wait for the election (bounded by the deadline).
            self.leader(deadline).await?;
            // The round is bounded by the node (`READ_INDEX_ROUND`): a leader that stopped
            // answering (paused, or its packets dropped) fails it, and the next round asks
            // whoever the others have elected meanwhile. Only the apply wait below may take
            // the whole deadline.
            let read_index = tokio::time::timeout_at(deadline, self.reads.next())
                .await
                .ok()
                .flatten()
                .flatten();
            if let Some(index) = read_index {
                let wanted = index.map(|l| l.index);
                let timeout = deadline.saturating_duration_since(Instant::now());
                self.node
                    .raft
                    .wait(Some(timeout))
                    .applied_index_at_least(wanted, "linearizable read")
                    .await
                    .map_err(|_| ServiceError::Unavailable(self.write_timeout))?;
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ServiceError::Unavailable(self.write_timeout));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every link this node holds, in id order, from one point-in-time view: blocking, for a
    /// blocking task. `visit` returns false to stop.
    pub fn export_links(&self, visit: impl FnMut(Link) -> bool) -> Result<(), ServiceError> {
        if !self.is_member() {
            return Err(ServiceError::NotInCluster);
        }
        Ok(self.view()?.for_each_link(visit)?)
    }

    /// This node's register as of now, unless it is being replaced by a snapshot.
    fn view(&self) -> Result<View<'_>, ServiceError> {
        self.node.store.view().ok_or(ServiceError::Replacing)
    }

    fn is_member(&self) -> bool {
        let metrics = self.node.raft.metrics();
        let m = metrics.borrow();
        m.membership_config.membership().nodes().next().is_some()
    }

    async fn read_meta(&self, options: ReadOptions) -> Result<ReadMeta, ServiceError> {
        // A node never initialized nor joined holds no register: an empty answer from it would
        // read as "no such link", which it cannot know.
        if !self.is_member() {
            return Err(ServiceError::NotInCluster);
        }
        if options.consistency == Consistency::Linearizable {
            self.linearize(self.deadline(options.deadline)).await?;
        }
        let applied = self
            .node
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map(|l| l.index);
        Ok(ReadMeta {
            node_id: self.node.id,
            applied_index: applied,
        })
    }

    pub async fn search_by_ssin(
        &self,
        query: &SsinQuery,
        options: impl Into<ReadOptions>,
    ) -> Result<(Result<Vec<Link>, DomainError>, ReadMeta), ServiceError> {
        let meta = self.read_meta(options.into()).await?;
        let links = query::search_by_ssin(&self.view()?, query, now().belgian_date_bound())?;
        Ok((links, meta))
    }

    pub async fn search_by_foreign_key(
        &self,
        query: &ForeignKeyQuery,
        options: impl Into<ReadOptions>,
    ) -> Result<(Result<Vec<Link>, DomainError>, ReadMeta), ServiceError> {
        let meta = self.read_meta(options.into()).await?;
        let links = query::search_by_foreign_key(&self.view()?, query)?;
        Ok((links, meta))
    }

    pub async fn get_link(
        &self,
        id: u64,
        options: impl Into<ReadOptions>,
    ) -> Result<(Result<Link, DomainError>, ReadMeta), ServiceError> {
        let meta = self.read_meta(options.into()).await?;
        let found = self.view()?.link(LinkId(id))?.ok_or(not_found(id));
        Ok((found, meta))
    }

    /// Every audited change of one link, in log order (also after its deletion).
    pub async fn link_history(
        &self,
        id: u64,
        options: impl Into<ReadOptions>,
    ) -> Result<(Result<Vec<AuditEvent>, DomainError>, ReadMeta), ServiceError> {
        let meta = self.read_meta(options.into()).await?;
        let events = self
            .view()?
            .audit_events(&crate::store::keys::audit_link_prefix(LinkId(id)))?;
        // A link that ever existed has at least its creation event, also once deleted.
        let events = if events.is_empty() {
            Err(not_found(id))
        } else {
            Ok(events)
        };
        Ok((events, meta))
    }

    pub async fn format_rules(
        &self,
        options: impl Into<ReadOptions>,
    ) -> Result<(Vec<(Country, KeyTypeCode, FormatRule)>, ReadMeta), ServiceError> {
        let meta = self.read_meta(options.into()).await?;
        Ok((self.view()?.format_rules()?, meta))
    }

    pub async fn key_types(
        &self,
        options: impl Into<ReadOptions>,
    ) -> Result<(Vec<KeyType>, ReadMeta), ServiceError> {
        let meta = self.read_meta(options.into()).await?;
        Ok((self.view()?.key_types()?, meta))
    }
}

/// One line per write the register refused: the stable code, the field at fault, the caller.
/// Not the message, which may quote personal data (a foreign key's value). Failures that are
/// not refusals (no leader, outcome unknown, storage) are logged where they are mapped.
fn log_refusal(caller: &Caller, action: &str, result: &Result<WriteOutcome, ServiceError>) {
    let (code, field, log_index) = match result {
        // A refusal answered from the session was logged when it was decided.
        Ok(WriteOutcome {
            verdict: Err(e),
            log_index,
            replayed: false,
        }) => (e.code(), e.field().map(Field::as_str), *log_index),
        Err(ServiceError::StaleRequest { .. }) => ("STALE_REQUEST", Some("request_id"), None),
        Err(ServiceError::InvalidSession { field, .. }) => ("INVALID_SESSION", Some(*field), None),
        _ => return,
    };
    tracing::info!(
        code,
        field,
        action,
        organization = %caller.organization.name,
        cbe = caller.organization.cbe.as_str(),
        role = caller.role.as_str(),
        log_index,
        "write refused"
    );
}

fn not_found(id: u64) -> DomainError {
    DomainError::LinkNotFound {
        field: Field::Id,
        id: LinkId(id),
    }
}
