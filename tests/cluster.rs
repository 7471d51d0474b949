//! Real nodes in one process (real RocksDB, real gRPC on loopback) with a network that can be
//! cut between chosen nodes: replication, failover, partitions, restarts, snapshots, membership
//! and exactly-once retries. Every test ends with equal digests on all members.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use linkreg::api::auth::{Authenticator, dev_callers};
use linkreg::cluster::{self, ClusterError};
use linkreg::domain::command::CreateLink;
use linkreg::domain::query::SsinQuery;
use linkreg::domain::{Action, Caller, LinkId, Organization, Outcome, Role, Ssin};
use linkreg::raft::network::Faults;
use linkreg::raft::node::Tuning;
use linkreg::raft::{ClientRequest, NodeInfo};
use linkreg::server::{self, NodeConfig, Running};
use linkreg::service::{Consistency, ServiceError};
use serde_json::Value;
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_linkreg");

struct Member {
    dir: TempDir,
    peer: SocketAddr,
    client: SocketAddr,
    running: Option<Running>,
}

struct Cluster {
    faults: Arc<Faults>,
    members: BTreeMap<u64, Member>,
    tuning: Tuning,
}

fn auth() -> Authenticator {
    Authenticator::fixed(dev_callers())
}

fn tuning() -> Tuning {
    Tuning {
        heartbeat_ms: 50,
        election_min_ms: 300,
        election_max_ms: 600,
        snapshot_every: 1_000_000,
        keep_behind_snapshot: 5,
        purge_batch: 1,
        ..Tuning::default()
    }
}

impl Cluster {
    async fn new(size: u64, tuning: Tuning) -> Cluster {
        let mut cluster = Cluster {
            faults: Arc::new(Faults::default()),
            members: BTreeMap::new(),
            tuning,
        };
        for id in 1..=size {
            cluster.add(id).await;
        }
        cluster
    }

    fn config(&self, id: u64, init: bool, join: Option<String>) -> NodeConfig {
        let m = &self.members[&id];
        NodeConfig {
            id,
            data_dir: m.dir.path().to_path_buf(),
            client_addr: m.client,
            peer_addr: m.peer,
            http_addr: common::free_addr(),
            advertise: NodeInfo {
                peer_addr: m.peer.to_string(),
                client_addr: m.client.to_string(),
                http_addr: String::new(),
            },
            init,
            join,
            tuning: self.tuning.clone(),
            write_timeout: Duration::from_secs(5),
            client_tls: None,
            peer_tls: None,
        }
    }

    /// Starts a new node: the first bootstraps, the others join through node 1.
    async fn add(&mut self, id: u64) {
        self.members.insert(
            id,
            Member {
                dir: tempfile::tempdir().unwrap(),
                peer: common::free_addr(),
                client: common::free_addr(),
                running: None,
            },
        );
        let join = (id != 1).then(|| self.members[&1].peer.to_string());
        let config = self.config(id, id == 1, join);
        let running = server::start(config, auth(), self.faults.clone())
            .await
            .expect("node starts");
        self.members.get_mut(&id).unwrap().running = Some(running);
    }

    /// Starts a node that is not a member yet: neither bootstrapped nor joined.
    async fn start_outside(&mut self, id: u64) {
        self.members.insert(
            id,
            Member {
                dir: tempfile::tempdir().unwrap(),
                peer: common::free_addr(),
                client: common::free_addr(),
                running: None,
            },
        );
        let config = self.config(id, false, None);
        let running = server::start(config, auth(), self.faults.clone())
            .await
            .expect("node starts");
        self.members.get_mut(&id).unwrap().running = Some(running);
    }

    async fn stop(&mut self, id: u64) {
        let running = self
            .members
            .get_mut(&id)
            .unwrap()
            .running
            .take()
            .expect("running");
        running.stop().await;
    }

    async fn restart(&mut self, id: u64) {
        let config = self.config(id, false, None);
        let mut attempts = 0;
        let running = loop {
            // The previous instance's RocksDB lock goes once its last task has ended.
            match server::start(config.clone(), auth(), self.faults.clone()).await {
                Ok(r) => break r,
                Err(e) if attempts < 50 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = e;
                }
                Err(e) => panic!("node {id} does not restart: {e}"),
            }
        };
        self.members.get_mut(&id).unwrap().running = Some(running);
    }

    fn node(&self, id: u64) -> &Running {
        self.members[&id].running.as_ref().expect("running")
    }

    fn running(&self) -> Vec<u64> {
        self.members
            .iter()
            .filter(|(_, m)| m.running.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// The leader as seen by a majority-side node, waiting for an election if needed.
    async fn leader(&self, among: &[u64]) -> u64 {
        for _ in 0..200 {
            for id in among {
                let s = cluster::status(&self.node(*id).node);
                if s.state == "leader" && among.contains(&s.node_id) {
                    return s.node_id;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no leader among {among:?}");
    }

    /// Waits until every running node has applied the same index, then checks their digests.
    async fn converge(&self) -> u64 {
        let ids = self.running();
        for _ in 0..300 {
            let applied: Vec<_> = ids
                .iter()
                .map(|id| cluster::status(&self.node(*id).node).applied_index)
                .collect();
            let last: Vec<_> = ids
                .iter()
                .map(|id| cluster::status(&self.node(*id).node).last_log_index)
                .collect();
            if applied.windows(2).all(|w| w[0] == w[1]) && applied.first() == last.iter().max() {
                let mut digests = Vec::with_capacity(ids.len());
                for id in &ids {
                    digests.push(cluster::digest(&self.node(*id).node).await.unwrap());
                }
                for (id, d) in ids.iter().zip(&digests) {
                    assert_eq!(
                        d.sha256, digests[0].sha256,
                        "node {id} differs from node {}",
                        ids[0]
                    );
                    assert_eq!(d.applied, digests[0].applied);
                }
                return applied[0].unwrap_or(0);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nodes {ids:?} did not converge");
    }

    async fn shutdown(mut self) {
        for id in self.running() {
            self.stop(id).await;
        }
    }
}

fn writer() -> Caller {
    Caller {
        organization: Organization::new("Test institution", "0123456749").unwrap(),
        role: Role::Writer,
    }
}

/// A distinct valid SSIN per n (national register numbers born 1950-1999).
fn ssin(n: u64) -> String {
    let year = 1950 + (n % 50) as i32;
    let month = 1 + ((n / 50) % 12) as u8;
    let day = 1 + ((n / 600) % 28) as u8;
    let counter = 1 + (n % 997) as u16;
    Ssin::compose(year, month, day, counter).unwrap().as_str()
}

fn create(n: u64) -> Action {
    Action::CreateLink(CreateLink {
        ssin: ssin(n),
        country: "NL".into(),
        key_type: "PASSPORT".into(),
        value: format!("NX{n:07}"),
        ..Default::default()
    })
}

fn session(client: &str, request: u64) -> Option<ClientRequest> {
    Some(ClientRequest {
        client_id: client.into(),
        request_id: request,
    })
}

async fn create_at(
    c: &Cluster,
    node: u64,
    n: u64,
    s: Option<ClientRequest>,
) -> Result<LinkId, ServiceError> {
    let outcome = c.node(node).service.write(writer(), create(n), s).await?;
    Ok(created_or_code(&outcome).expect("the rules accept the link"))
}

/// Every acknowledged link is on `node`, exactly once.
async fn assert_links(c: &Cluster, node: u64, acknowledged: &BTreeMap<u64, LinkId>) {
    for (n, id) in acknowledged {
        let q = SsinQuery {
            ssin: ssin(*n),
            ..Default::default()
        };
        let (found, _) = c
            .node(node)
            .service
            .search_by_ssin(&q, Consistency::Local)
            .await
            .unwrap();
        let ids: Vec<_> = found.unwrap().into_iter().map(|l| l.id).collect();
        assert_eq!(ids, [*id], "node {node}, link for person {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_any_node_replicate_to_all() {
    let c = Cluster::new(3, tuning()).await;
    let leader = c.leader(&[1, 2, 3]).await;
    let mut acked = BTreeMap::new();
    let slow = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    for n in 0..30 {
        // A slow link to one follower for a while: the majority still commits.
        if n == 10 {
            c.faults.delay(leader, slow, Duration::from_millis(40));
        } else if n == 20 {
            c.faults.heal();
        }
        let via = 1 + n % 3;
        acked.insert(n, create_at(&c, via, n, None).await.unwrap());
    }
    c.converge().await;
    for id in [1, 2, 3] {
        assert_links(&c, id, &acked).await;
    }
    let status = cluster::status(&c.node(leader).node);
    assert_eq!(status.members.iter().filter(|m| m.voter).count(), 3);
    // A linearizable read on a follower sees a write acknowledged just before.
    let follower = slow;
    let id = create_at(&c, leader, 100, None).await.unwrap();
    let (found, meta) = c
        .node(follower)
        .service
        .get_link(id.0, Consistency::Linearizable)
        .await
        .unwrap();
    assert!(
        found.is_ok(),
        "linearizable read missed an acknowledged write"
    );
    assert_eq!(meta.node_id, follower);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_linearizable_reads_on_a_lagging_follower_see_the_writes_acknowledged_before() {
    let c = Cluster::new(3, tuning()).await;
    let leader = c.leader(&[1, 2, 3]).await;
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    // The follower hears of every entry late, so a local read there would often miss a write
    // just acknowledged. Readers arrive while others' read-index rounds are under way: each
    // must wait for a round that began after it, never take the answer of a running one.
    c.faults.delay(leader, follower, Duration::from_millis(30));
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..16u64 {
        let (at_leader, at_follower) = (
            c.node(leader).service.clone(),
            c.node(follower).service.clone(),
        );
        clients.spawn(async move {
            for k in 0..5 {
                let n = 3_000 + client * 10 + k;
                let outcome = at_leader.write(writer(), create(n), None).await.unwrap();
                let id = created_or_code(&outcome).expect("the rules accept the link");
                let (found, meta) = at_follower
                    .get_link(id.0, Consistency::Linearizable)
                    .await
                    .expect("the follower answers");
                assert!(
                    found.is_ok(),
                    "client {client}: a linearizable read missed link {} acknowledged before it",
                    id.0
                );
                assert_eq!(meta.node_id, follower);
            }
        });
    }
    while let Some(client) = clients.join_next().await {
        client.unwrap();
    }
    c.faults.heal();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_crash_writes_continue_and_the_old_leader_catches_up() {
    let mut c = Cluster::new(3, tuning()).await;
    let mut acked = BTreeMap::new();
    for n in 0..10 {
        acked.insert(n, create_at(&c, 1, n, None).await.unwrap());
    }
    let old = c.leader(&[1, 2, 3]).await;
    c.stop(old).await;
    let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != old).collect();
    for n in 10..20 {
        acked.insert(
            n,
            create_at(&c, rest[(n % 2) as usize], n, None)
                .await
                .unwrap(),
        );
    }
    c.restart(old).await;
    c.converge().await;
    for id in [1, 2, 3] {
        assert_links(&c, id, &acked).await;
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_commits_nothing_and_loses_no_acknowledged_write() {
    let c = Cluster::new(3, tuning()).await;
    let mut acked = BTreeMap::new();
    for n in 0..5 {
        acked.insert(n, create_at(&c, 1, n, None).await.unwrap());
    }
    let old = c.leader(&[1, 2, 3]).await;
    let majority: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != old).collect();
    c.faults.isolate(old, &[1, 2, 3]);
    // The minority side cannot commit: the write is not acknowledged.
    let lost = create_at(&c, old, 50, session("minority", 1)).await;
    assert!(
        lost.is_err(),
        "an isolated leader acknowledged a write: {lost:?}"
    );
    let new = c.leader(&majority).await;
    assert_ne!(new, old);
    for n in 5..10 {
        acked.insert(
            n,
            create_at(&c, majority[(n % 2) as usize], n, None)
                .await
                .unwrap(),
        );
    }
    c.faults.heal();
    c.converge().await;
    for id in [1, 2, 3] {
        assert_links(&c, id, &acked).await;
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_gives_one_link_across_a_failover() {
    let mut c = Cluster::new(3, tuning()).await;
    let leader = c.leader(&[1, 2, 3]).await;
    let first = create_at(&c, leader, 7, session("client-a", 1))
        .await
        .unwrap();
    c.stop(leader).await;
    let other = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    // The client never saw the answer and retries through another node.
    let retried = create_at(&c, other, 7, session("client-a", 1))
        .await
        .unwrap();
    assert_eq!(retried, first);
    c.restart(leader).await;
    c.converge().await;
    let mut acked = BTreeMap::new();
    acked.insert(7, first);
    for id in [1, 2, 3] {
        assert_links(&c, id, &acked).await;
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_member_catches_up_through_a_snapshot_after_the_log_was_purged() {
    let tuning = Tuning {
        snapshot_every: 20,
        keep_behind_snapshot: 5,
        // Shorter than any install: the last chunk, answered once the snapshot is installed,
        // must not be bound by it (it was, and a large register's learner never caught up).
        snapshot_chunk_ms: 1,
        ..tuning()
    };
    let mut c = Cluster::new(3, tuning).await;
    let mut acked = BTreeMap::new();
    for n in 0..60 {
        acked.insert(n, create_at(&c, 1, n, None).await.unwrap());
    }
    let leader = c.leader(&[1, 2, 3]).await;
    cluster::snapshot(&c.node(leader).node).await.unwrap();
    let status = cluster::status(&c.node(leader).node);
    assert!(
        status.purged_index.unwrap_or(0) > 10,
        "log was not purged: {status:?}"
    );
    c.add(4).await;
    c.converge().await;
    let joined = cluster::status(&c.node(4).node);
    assert!(
        joined.snapshot_index.is_some(),
        "node 4 did not get a snapshot: {joined:?}"
    );
    assert_links(&c, 4, &acked).await;
    let leader_view = cluster::status(&c.node(c.leader(&[1, 2, 3, 4]).await).node);
    assert_eq!(leader_view.members.iter().filter(|m| m.voter).count(), 4);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_add_promote_remove() {
    let mut c = Cluster::new(1, tuning()).await;
    create_at(&c, 1, 1, None).await.unwrap();
    let err = cluster::remove(&c.node(1).node, 1).await.unwrap_err();
    assert!(err.to_string().contains("last voter"), "{err}");
    // Nodes 2 and 3 run but are not yet members.
    for id in [2, 3] {
        c.start_outside(id).await;
        let info = c.node(id).node.info.clone();
        let s = cluster::add_learner(&c.node(1).node, id, info)
            .await
            .unwrap();
        assert!(s.members.iter().any(|m| m.id == id && !m.voter));
        let s = cluster::promote(&c.node(1).node, id).await.unwrap();
        assert!(s.members.iter().any(|m| m.id == id && m.voter));
    }
    create_at(&c, 2, 2, None).await.unwrap();
    c.converge().await;
    // Refusals say why.
    let leader = c.leader(&[1, 2, 3]).await;
    let err = cluster::remove(&c.node(leader).node, 9).await.unwrap_err();
    assert!(err.to_string().contains("not a member"), "{err}");
    let gone = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let s = cluster::remove(&c.node(leader).node, gone).await.unwrap();
    assert!(s.members.iter().all(|m| m.id != gone));
    assert_eq!(s.members.iter().filter(|m| m.voter).count(), 2);
    // A removed member is shut down; the two that remain go on committing and agree.
    c.stop(gone).await;
    let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != gone).collect();
    let mut acked = BTreeMap::new();
    for n in 10..14 {
        let via = rest[(n % 2) as usize];
        acked.insert(n, create_at(&c, via, n, None).await.unwrap());
    }
    assert_eq!(c.running(), rest);
    c.converge().await;
    for id in &rest {
        assert_links(&c, *id, &acked).await;
    }
    c.shutdown().await;
}

/// `linkreg cluster status --json` against `asked`, run as an operator would.
async fn cli_status(c: &Cluster, asked: u64) -> Value {
    let server = c.members[&asked].client.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["cluster", "--json", "--server", &server, "status"])
            .env("LINKREG_TOKEN", "dev-keeper")
            .env_remove("LINKREG_TLS_CA")
            .output()
            .expect("linkreg cluster runs")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "cluster status on node {asked}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON status")
}

/// Per member id: (applied index, matched index, lag) as `cluster status` shows them.
type Progress = BTreeMap<u64, (Option<u64>, Option<u64>, Option<u64>)>;

fn progress(status: &Value) -> Progress {
    status["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            let n = |f: &str| m[f].as_u64();
            (
                n("id").unwrap(),
                (n("applied_index"), n("matched_index"), n("lag")),
            )
        })
        .collect()
}

/// Asks `asked` until its status shows exactly `expected` for every member, with the lag taken
/// from `leader`; fails with the last answer after 20 s.
async fn wait_progress(c: &Cluster, asked: u64, leader: u64, expected: &Progress) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = cli_status(c, asked).await;
        if progress(&status) == *expected && status["lag_from"] == leader {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "asked on node {asked}: expected {expected:?} from leader {leader}, got {:?} from {}",
            progress(&status),
            status["lag_from"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn last_log_index(c: &Cluster, id: u64) -> u64 {
    cluster::status(&c.node(id).node).last_log_index.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_shows_every_members_applied_index_and_lag_wherever_asked() {
    let c = Cluster::new(3, tuning()).await;
    let leader = c.leader(&[1, 2, 3]).await;
    let followers: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    let (cut, other) = (followers[0], followers[1]);
    for n in 0..5 {
        create_at(&c, leader, n, None).await.unwrap();
    }
    c.converge().await;
    // All caught up: every member has applied the leader's last entry, lag 0, on any node.
    let before = last_log_index(&c, leader);
    let caught_up: Progress = [1, 2, 3]
        .into_iter()
        .map(|id| (id, (Some(before), Some(before), Some(0))))
        .collect();
    for asked in [leader, cut, other] {
        wait_progress(&c, asked, leader, &caught_up).await;
    }
    // Without the leader's view a follower knows no member's progress: the CLI asks the leader.
    let own = cluster::status(&c.node(other).node);
    assert!(own.members.iter().all(|m| m.lag.is_none()), "{own:?}");

    // One follower is cut off: it stays where it was while the other two go on.
    c.faults.isolate(cut, &[1, 2, 3]);
    for n in 5..12 {
        create_at(&c, leader, n, None).await.unwrap();
    }
    let last = last_log_index(&c, leader);
    assert!(last >= before + 7);
    let mut behind = caught_up.clone();
    for id in [leader, other] {
        behind.insert(id, (Some(last), Some(last), Some(0)));
    }
    behind.insert(cut, (Some(before), Some(before), Some(last - before)));
    // The same numbers on the leader, on the other follower, and on the cut-off node itself
    // (which no longer knows who leads; the leader is found among the members).
    for asked in [leader, other, cut] {
        let status = wait_progress(&c, asked, leader, &behind).await;
        assert_eq!(status["node_id"], asked);
    }
    let lost = cli_status(&c, cut).await;
    assert_ne!(lost["state"], "leader");

    // Healed, it catches up (perhaps under a new leader, as its elections raised the term).
    c.faults.heal();
    c.converge().await;
    let leader = c.leader(&[1, 2, 3]).await;
    let last = last_log_index(&c, leader);
    let healed: Progress = [1, 2, 3]
        .into_iter()
        .map(|id| (id, (Some(last), Some(last), Some(0))))
        .collect();
    for asked in [1, 2, 3] {
        wait_progress(&c, asked, leader, &healed).await;
    }
    c.converge().await;
    c.shutdown().await;
}

fn in_progress(err: &ClusterError) -> bool {
    matches!(err, ClusterError::Refused(_))
        && err
            .to_string()
            .contains("another membership change is in progress")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_membership_change_at_a_time_and_a_refused_one_says_why() {
    let mut c = Cluster::new(3, tuning()).await;
    c.start_outside(4).await;
    let old = c.leader(&[1, 2, 3]).await;
    let followers: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != old).collect();
    // Cut off from everyone, the leader still believes it leads but can commit nothing: a
    // membership change it starts stays in progress.
    c.faults.isolate(old, &[1, 2, 3, 4]);
    let node = c.node(old).node.clone();
    let info = c.node(4).node.info.clone();
    let first = tokio::spawn(async move { cluster::add_learner(&node, 4, info).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cluster::status(&c.node(old).node)
        .members
        .iter()
        .any(|m| m.id == 4)
    {
        assert!(Instant::now() < deadline, "the change was never appended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cluster::status(&c.node(old).node).state, "leader");
    assert!(!first.is_finished(), "committed without a quorum");

    // While the first change runs, a second one on that node is refused at once.
    let err = cluster::remove(&c.node(old).node, followers[0])
        .await
        .unwrap_err();
    assert!(in_progress(&err), "{err}");
    assert!(err.to_string().contains(&format!("on node {old}")), "{err}");
    let err = cluster::promote(&c.node(old).node, 4).await.unwrap_err();
    assert!(in_progress(&err), "{err}");

    // The first caller gives up; its entry is still uncommitted, so raft refuses the next
    // change, and says so in the same words.
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    let err = cluster::remove(&c.node(old).node, followers[0])
        .await
        .unwrap_err();
    assert!(in_progress(&err), "{err}");
    assert!(err.to_string().contains("not committed yet"), "{err}");

    // Once the majority has its own leader and the partition heals, the uncommitted change is
    // discarded: nothing refused was applied, and changes go through again one after the other.
    let leader = c.leader(&followers).await;
    c.faults.heal();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let members: Vec<_> = cluster::status(&c.node(old).node)
            .members
            .iter()
            .map(|m| (m.id, m.voter))
            .collect();
        if members == [(1, true), (2, true), (3, true)] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "membership on node {old}: {members:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let info = c.node(4).node.info.clone();
    cluster::add_learner(&c.node(leader).node, 4, info)
        .await
        .unwrap();
    let s = cluster::promote(&c.node(leader).node, 4).await.unwrap();
    assert_eq!(s.members.iter().filter(|m| m.voter).count(), 4);
    create_at(&c, 4, 1, None).await.unwrap();
    c.converge().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_follower_catches_up_from_the_log() {
    let mut c = Cluster::new(3, tuning()).await;
    let leader = c.leader(&[1, 2, 3]).await;
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let mut acked = BTreeMap::new();
    for n in 0..5 {
        acked.insert(n, create_at(&c, leader, n, None).await.unwrap());
    }
    c.stop(follower).await;
    for n in 5..25 {
        acked.insert(n, create_at(&c, leader, n, None).await.unwrap());
    }
    c.restart(follower).await;
    c.converge().await;
    assert_links(&c, follower, &acked).await;
    let s = cluster::status(&c.node(follower).node);
    assert_eq!(
        s.snapshot_index, None,
        "caught up from the log, not a snapshot"
    );
    c.shutdown().await;
}

/// Imports of many rows per entry to a follower that fell behind: what the leader has to send
/// exceeds the append budget (made small here), so every append is refused locally with a hint
/// and openraft sends shorter runs until the follower has caught up from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_large_import_entries_catches_up_from_the_log() {
    let c = Cluster::new(
        3,
        Tuning {
            append_budget: 24 * 1024,
            ..tuning()
        },
    )
    .await;
    let cut = fall_behind_by_eight_imports(&c).await;
    c.faults.heal();
    c.converge().await;
    assert_caught_up_from_the_log(&c, cut);
    c.shutdown().await;
}

/// The same backlog, within the append budget, to a follower that takes it slowly: the whole
/// run needs three times openraft's append timeout (the heartbeat interval), one entry less
/// than half. openraft resends a timed-out run unchanged, so without shorter runs after a
/// timeout the follower would never catch up (what stopped a 10M-link import at 4M).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_too_slow_for_the_whole_backlog_catches_up_in_shorter_runs() {
    let c = Cluster::new(3, tuning()).await;
    let cut = fall_behind_by_eight_imports(&c).await;
    c.faults.heal();
    // About 20 KiB per entry, 160 KiB in all: 160 ms at 1 KiB/ms against a 50 ms timeout.
    for other in [1, 2, 3] {
        if other != cut {
            c.faults.throttle(other, cut, 1024);
        }
    }
    c.converge().await;
    assert_caught_up_from_the_log(&c, cut);
    c.shutdown().await;
}

/// Cuts a follower off, imports eight entries of 200 rows each, and returns the follower.
async fn fall_behind_by_eight_imports(c: &Cluster) -> u64 {
    use linkreg::domain::RowOutcome;
    use linkreg::domain::command::ImportLinks;
    let leader = c.leader(&[1, 2, 3]).await;
    let cut = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    c.converge().await;
    c.faults.isolate(cut, &[1, 2, 3]);
    let rows_per_batch = 200;
    let mut created = 0;
    for batch in 0..8u64 {
        let rows = (0..rows_per_batch)
            .map(|i| match create(10_000 + batch * rows_per_batch + i) {
                Action::CreateLink(row) => row,
                _ => unreachable!("create builds a CreateLink"),
            })
            .collect();
        let outcome = c
            .node(leader)
            .service
            .write(writer(), Action::ImportLinks(ImportLinks { rows }), None)
            .await
            .unwrap();
        match outcome.verdict.unwrap().outcome {
            Outcome::Imported(rows) => {
                created += rows
                    .iter()
                    .filter(|r| matches!(r, RowOutcome::Created(_)))
                    .count()
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(created, 8 * rows_per_batch as usize);
    // Eight entries of some 20 KiB each: several times what one append may carry.
    cut
}

fn assert_caught_up_from_the_log(c: &Cluster, cut: u64) {
    use linkreg::domain::RegisterView;
    let store = &c.node(cut).node.store;
    assert_eq!(store.next_link_id().unwrap().0 - 1, 8 * 200);
    assert_eq!(cluster::status(&c.node(cut).node).snapshot_index, None);
}

/// The verdict's created link, or the refusal's code.
fn created_or_code(outcome: &linkreg::service::WriteOutcome) -> Result<LinkId, &'static str> {
    match &outcome.verdict {
        Ok(linkreg::domain::Decision {
            outcome: Outcome::Link(link),
            ..
        }) => Ok(link.id),
        Ok(other) => panic!("unexpected outcome {other:?}"),
        Err(e) => Err(e.code()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_share_log_entries_and_each_gets_its_own_answer() {
    let c = Cluster::new(3, tuning()).await;
    let leader = c.leader(&[1, 2, 3]).await;
    let before = last_log_index(&c, leader);
    let mut writes = tokio::task::JoinSet::new();
    let spawn = |writes: &mut tokio::task::JoinSet<_>, via: u64, n: u64, s| {
        let service = c.node(via).service.clone();
        writes.spawn(async move { (n, service.write(writer(), create(n), s).await) });
    };
    const PEOPLE: u64 = 150;
    for n in 0..PEOPLE {
        // Every node takes writes: a follower's groups are forwarded whole.
        let s = (n % 2 == 0).then(|| format!("client-{n}"));
        spawn(&mut writes, 1 + n % 3, n, s.and_then(|s| session(&s, 1)));
    }
    // The same link asked for twice at once through two nodes: one creates, one is told it
    // exists, whichever comes first in the log.
    spawn(&mut writes, 1, 1000, None);
    spawn(&mut writes, 2, 1000, None);
    // One request sent twice at once (a client retrying too early): one link, the same answer.
    spawn(&mut writes, 3, 2000, session("retrier", 1));
    spawn(&mut writes, 3, 2000, session("retrier", 1));

    let mut acked = BTreeMap::new();
    let mut twice: BTreeMap<u64, Vec<Result<LinkId, &str>>> = BTreeMap::new();
    while let Some(done) = writes.join_next().await {
        let (n, result) = done.expect("a write task");
        let answer = created_or_code(&result.expect("every write is answered"));
        if n < PEOPLE {
            acked.insert(n, answer.expect("the rules accept the link"));
        } else {
            twice.entry(n).or_default().push(answer);
        }
    }
    let mut same = twice.remove(&1000).unwrap();
    same.sort();
    assert!(
        matches!(same.as_slice(), [Ok(_), Err("LINK_EXISTS")]),
        "{same:?}"
    );
    let retried = twice.remove(&2000).unwrap();
    assert!(
        retried[0].is_ok() && retried[0] == retried[1],
        "{retried:?}"
    );
    acked.insert(1000, same[0].unwrap());
    acked.insert(2000, retried[0].unwrap());

    // Creations were grouped: all of them were waiting at once, so each node sends a few
    // groups (9 entries here, against 154 without group commit); a quarter leaves room for a
    // slow machine that cuts smaller groups.
    let entries = last_log_index(&c, leader) - before;
    let writes = PEOPLE + 4;
    assert!(
        entries * 4 <= writes,
        "{entries} entries for {writes} creations"
    );
    c.converge().await;
    for id in [1, 2, 3] {
        assert_links(&c, id, &acked).await;
    }
    // Ids are dense: the register created exactly one link per accepted creation.
    let mut ids: Vec<u64> = acked.values().map(|id| id.0).collect();
    ids.sort();
    let first = ids[0];
    assert_eq!(ids, (first..first + ids.len() as u64).collect::<Vec<_>>());
    c.shutdown().await;
}
