//! gRPC plumbing: bearer tokens, channels to the nodes' client listeners, and the ClusterAdmin
//! calls the nemesis and the final check need (status of every node, leader, health, digests).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use linkreg::proto::linkreg as pb;
use linkreg::proto::linkreg::cluster_admin_client::ClusterAdminClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Bearer {
    pub fn new(token: &str) -> anyhow::Result<Bearer> {
        Ok(Bearer(
            format!("Bearer {}", token.trim())
                .parse()
                .context("the token is not a valid header value")?,
        ))
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// Connects now (so a failure here means nothing was sent), within `timeout`.
pub async fn connect(addr: &str, timeout: Duration) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .with_context(|| format!("server address {addr}"))?
        .connect_timeout(timeout)
        .tcp_nodelay(true);
    match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(anyhow!("connecting to {addr}: {e}")),
        Err(_) => Err(anyhow!("connecting to {addr}: timed out")),
    }
}

/// The stable code of an error: `ErrorInfo.reason` when the server sent one, else the gRPC code.
pub fn reason(status: &tonic::Status) -> Option<String> {
    status.get_details_error_info().map(|i| i.reason)
}

type Admin = ClusterAdminClient<InterceptedService<Channel, Bearer>>;

/// The cluster as the keeper sees it through ClusterAdmin. Node `id` is `servers[id - 1]`.
#[derive(Clone)]
pub struct Cluster {
    servers: Arc<Vec<String>>,
    keeper: Bearer,
    channels: Arc<Mutex<HashMap<usize, Channel>>>,
}

/// Every node's answer to Status (None: no answer in time), by index.
pub type Survey = Vec<Option<pb::StatusResponse>>;

/// A healthy cluster: one leader everyone follows, every expected voter caught up.
#[derive(Debug, Clone, Copy)]
pub struct Health {
    pub leader: u64,
    pub term: u64,
    pub applied: u64,
}

const CALL_TIMEOUT: Duration = Duration::from_millis(1500);

impl Cluster {
    pub fn new(servers: Vec<String>, keeper: Bearer) -> Cluster {
        Cluster {
            servers: Arc::new(servers),
            keeper,
            channels: Arc::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn server(&self, index: usize) -> &str {
        self.servers.get(index).map_or("?", String::as_str)
    }

    /// The ids the cluster should have: 1..=n.
    pub fn ids(&self) -> Vec<u64> {
        (1..=self.servers.len() as u64).collect()
    }

    pub fn index_of(&self, id: u64) -> Option<usize> {
        let i = usize::try_from(id).ok()?.checked_sub(1)?;
        (i < self.servers.len()).then_some(i)
    }

    async fn admin(&self, index: usize) -> anyhow::Result<Admin> {
        let cached = self
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&index)
            .cloned();
        let channel = match cached {
            Some(c) => c,
            None => {
                let c = connect(self.server(index), Duration::from_secs(1)).await?;
                self.channels
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(index, c.clone());
                c
            }
        };
        Ok(ClusterAdminClient::with_interceptor(
            channel,
            self.keeper.clone(),
        ))
    }

    fn forget(&self, index: usize) {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&index);
    }

    fn request<T>(message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        r.set_timeout(CALL_TIMEOUT);
        r
    }

    /// One node's status, or why there is none.
    pub async fn status(&self, index: usize) -> anyhow::Result<pb::StatusResponse> {
        let mut admin = self.admin(index).await?;
        let call = admin.status(Self::request(pb::StatusRequest {}));
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => {
                if reason(&s).is_none() {
                    self.forget(index);
                }
                Err(anyhow!(
                    "{}: status: {:?} {}",
                    self.server(index),
                    s.code(),
                    s.message()
                ))
            }
            Err(_) => {
                self.forget(index);
                Err(anyhow!("{}: status: timed out", self.server(index)))
            }
        }
    }

    /// Asks every node at once.
    pub async fn survey(&self) -> Survey {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..self.len() {
            let me = self.clone();
            tasks.spawn(async move { (i, me.status(i).await.ok()) });
        }
        let mut out = vec![None; self.len()];
        while let Some(done) = tasks.join_next().await {
            if let Ok((i, s)) = done
                && let Some(slot) = out.get_mut(i)
            {
                *slot = s;
            }
        }
        out
    }

    /// The node that says it leads, the highest term winning.
    pub fn leader(survey: &Survey) -> Option<&pb::StatusResponse> {
        survey
            .iter()
            .flatten()
            .filter(|s| s.state == "leader")
            .max_by_key(|s| s.term)
    }

    /// Whether the survey shows a healthy cluster; otherwise why not.
    pub fn judge(&self, survey: &Survey, slack: u64) -> Result<Health, String> {
        let missing: Vec<u64> = survey
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_none())
            .map(|(i, _)| i as u64 + 1)
            .collect();
        if !missing.is_empty() {
            return Err(format!("nodes {missing:?} do not answer"));
        }
        let leader = Self::leader(survey).ok_or("no node is leader")?;
        for s in survey.iter().flatten() {
            if s.leader_id != Some(leader.node_id) || s.term != leader.term {
                return Err(format!(
                    "node {} follows {:?} in term {} (leader {} in term {})",
                    s.node_id, s.leader_id, s.term, leader.node_id, leader.term
                ));
            }
        }
        let voters: BTreeSet<u64> = leader
            .members
            .iter()
            .filter(|m| m.role == "voter")
            .map(|m| m.id)
            .collect();
        let expected: BTreeSet<u64> = self.ids().into_iter().collect();
        if voters != expected || leader.members.len() != expected.len() {
            let members: Vec<String> = leader
                .members
                .iter()
                .map(|m| format!("{}:{}", m.id, m.role))
                .collect();
            return Err(format!(
                "members are {members:?}, expected voters {expected:?}"
            ));
        }
        for m in &leader.members {
            match m.lag {
                Some(lag) if lag <= slack => {}
                lag => return Err(format!("member {} lags {lag:?}", m.id)),
            }
        }
        let applied = leader.applied_index.unwrap_or(0);
        for s in survey.iter().flatten() {
            let own = s.applied_index.unwrap_or(0);
            if own + slack < applied {
                return Err(format!(
                    "node {} has applied {own}, the leader {applied}",
                    s.node_id
                ));
            }
        }
        Ok(Health {
            leader: leader.node_id,
            term: leader.term,
            applied,
        })
    }

    /// Waits until the cluster is healthy (see [`Cluster::judge`]).
    pub async fn wait_healthy(&self, timeout: Duration, slack: u64) -> anyhow::Result<Health> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let survey = self.survey().await;
            let why = match self.judge(&survey, slack) {
                Ok(h) => return Ok(h),
                Err(why) => why,
            };
            if tokio::time::Instant::now() >= deadline {
                bail!("not healthy after {timeout:?}: {why}");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// With no more writes coming: waits until every node has applied the same index, which is
    /// its whole log, twice in a row.
    pub async fn wait_converged(&self, timeout: Duration) -> anyhow::Result<u64> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut previous = None;
        loop {
            let survey = self.survey().await;
            let why = match self.judge(&survey, 0) {
                Err(why) => why,
                Ok(_) => {
                    let points: BTreeSet<(Option<u64>, Option<u64>)> = survey
                        .iter()
                        .flatten()
                        .map(|s| (s.applied_index, s.last_log_index))
                        .collect();
                    match points.iter().next() {
                        Some(&(Some(a), Some(l))) if points.len() == 1 && a == l => {
                            if previous == Some(a) {
                                return Ok(a);
                            }
                            previous = Some(a);
                            "settling".to_string()
                        }
                        _ => format!("applied/last indexes differ: {points:?}"),
                    }
                }
            };
            if tokio::time::Instant::now() >= deadline {
                bail!("nodes did not converge within {timeout:?}: {why}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    pub async fn digest(&self, index: usize) -> anyhow::Result<pb::DigestResponse> {
        let mut admin = self.admin(index).await?;
        let mut request = tonic::Request::new(pb::DigestRequest {});
        request.set_timeout(Duration::from_secs(30));
        admin
            .digest(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| {
                anyhow!(
                    "{}: digest: {:?} {}",
                    self.server(index),
                    s.code(),
                    s.message()
                )
            })
    }

    /// Removes member `id` through the leader, following leader changes, within `timeout`.
    pub async fn remove(&self, id: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let survey = self.survey().await;
            let leader = Self::leader(&survey);
            if leader.is_some_and(|l| l.members.iter().all(|m| m.id != id)) {
                // Done, possibly by an earlier attempt whose answer was lost.
                return Ok(());
            }
            let why = match leader.and_then(|l| self.index_of(l.node_id)) {
                None => "no leader".to_string(),
                // The leader may be restarting or not yet reachable: try again, as for a refusal.
                Some(at) => match self.admin(at).await {
                    Err(e) => format!("{e:#}"),
                    Ok(mut admin) => {
                        let mut request = tonic::Request::new(pb::MemberRequest { id });
                        request.set_timeout(Duration::from_secs(10));
                        match admin.remove(request).await {
                            Ok(_) => return Ok(()),
                            Err(s) => format!("{:?} {:?} {}", s.code(), reason(&s), s.message()),
                        }
                    }
                },
            };
            if tokio::time::Instant::now() >= deadline {
                bail!("could not remove node {id} within {timeout:?}: {why}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
