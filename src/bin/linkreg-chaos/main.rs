//! `linkreg-chaos`: the chaos test of a linkreg cluster running in docker (see cluster/chaos.sh).
//!
//! Writer clients and a keeper write through the cluster the whole time while a nemesis kills,
//! pauses, partitions, restarts and replaces nodes. After the last fault is healed, every node's
//! links are read back and checked against what the clients were told (see `checker`), and the
//! nodes' digests are compared.

mod checker;
mod history;
mod nemesis;
mod net;
mod rng;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use linkreg::domain::Ssin;
use linkreg::proto::linkreg as pb;
use linkreg::proto::linkreg::link_register_client::LinkRegisterClient;

use crate::checker::Verdict;
use crate::history::{FaultRecord, History, NodeState, ObservedLink, Record, Validity};
use crate::nemesis::{Docker, Fault, Nemesis};
use crate::net::{Bearer, Cluster, connect};
use crate::rng::Rng;
use crate::workload::{Client, Shared};

/// Chaos test of a linkreg cluster in docker: concurrent clients with exactly-once sessions,
/// random faults, then a check of every node against the clients' history.
///
/// The last line on stdout is `chaos: cycles=N acknowledged=N lost=N duplicates=N phantoms=N
/// digests=equal|differ max_unavailable_ms=N`, where acknowledged counts every acknowledged
/// write (creates + updates + deletes; stderr gives the split), lost counts acknowledged creates
/// missing, acknowledged deletes or updates not reflected, and max_unavailable_ms is the longest
/// time from a fault that loses the leader (kill-leader, isolate-leader, restart-all, or
/// isolate-node hitting the leader) to the next write acknowledged after it took effect.
///
/// Exit status 0 when everything checks out; 1 when the check fails (lost, duplicate or phantom
/// links, nodes or digests that differ, a refused or "not applied" write that shows, fewer cycles
/// than --cycles, a cluster that never healed); 2 when the test itself could not run.
#[derive(Debug, Parser)]
#[command(name = "linkreg-chaos", verbatim_doc_comment)]
struct Args {
    /// Host addresses of the nodes' client gRPC listeners, node 1 first.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:21051,127.0.0.1:22051,127.0.0.1:23051"
    )]
    servers: Vec<String>,
    /// Their containers, in the same order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "linkreg-node1,linkreg-node2,linkreg-node3"
    )]
    containers: Vec<String>,
    /// The docker network the members talk raft over.
    #[arg(long, default_value = "linkreg_peers")]
    peer_network: String,
    #[arg(long, default_value = "cluster/secrets/keeper.token")]
    keeper_token_file: PathBuf,
    #[arg(long, default_value = "cluster/secrets/writer.token")]
    writer_token_file: PathBuf,
    /// Run the faults for this long (e.g. 180s, 3m) [default: 180s unless --cycles is given].
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Stop after this many fault cycles (with --duration: whichever comes first).
    #[arg(long)]
    cycles: Option<u32>,
    /// Seed of every random choice of the test [default: from the clock; printed].
    #[arg(long)]
    seed: Option<u64>,
    /// Write the history (JSON lines) here.
    #[arg(long)]
    history: Option<PathBuf>,
    /// Writer clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Faults to choose from (comma-separated) [default: all]: kill-leader, pause-follower,
    /// isolate-node, isolate-leader, restart-all, remove-readd.
    #[arg(long, value_delimiter = ',', value_parser = Fault::parse)]
    faults: Vec<Fault>,
    /// Size of the pool of SSINs the links are spread over.
    #[arg(long, default_value_t = 200)]
    ssins: usize,
    /// The compose file and project, to recreate a replaced member.
    #[arg(long, default_value = "cluster/compose.yaml")]
    compose_file: PathBuf,
    #[arg(long, default_value = "linkreg")]
    compose_project: String,
    /// The compose command [default: docker-compose if it runs, else docker compose].
    #[arg(long)]
    compose_cmd: Option<String>,
    /// An operation is retried (same session) until this deadline.
    #[arg(long, value_parser = parse_duration, default_value = "20s")]
    op_timeout: Duration,
    /// Deadline of one attempt: then the next server is tried. Short, because a node that
    /// forwards to a leader that has just been cut off waits out the whole deadline.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    attempt_timeout: Duration,
    /// How long the cluster may take to be healthy after a fault is healed.
    #[arg(long, value_parser = parse_duration, default_value = "120s")]
    heal_timeout: Duration,
    /// Check a history file written earlier (its op and node_state records) and exit.
    #[arg(long, value_name = "FILE")]
    recheck: Option<PathBuf>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit (ms, s, m, h)"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    }
}

/// `n` valid SSINs, the same every run.
fn ssin_pool(n: usize) -> Vec<String> {
    (0u32..)
        .map(|i| {
            Ssin::compose(
                1950 + (i % 50) as i32,
                1 + (i % 12) as u8,
                1 + (i % 28) as u8,
                1 + (i % 997) as u16,
            )
        })
        .filter_map(Result::ok)
        .map(|s| s.as_str())
        .take(n)
        .collect()
}

fn read_token(path: &PathBuf) -> anyhow::Result<Bearer> {
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    Bearer::new(&token).with_context(|| path.display().to_string())
}

fn summary(cycles: u32, v: &Verdict, max_unavailable_ms: u64) -> String {
    format!(
        "chaos: cycles={cycles} acknowledged={} lost={} duplicates={} phantoms={} digests={} \
         max_unavailable_ms={max_unavailable_ms}",
        v.acknowledged(),
        v.lost,
        v.duplicates,
        v.phantoms,
        if v.digests_equal { "equal" } else { "differ" },
    )
}

/// The cycles whose fault took the leader away and after which no write was acknowledged.
fn without_ack(records: &[FaultRecord]) -> Vec<u32> {
    records
        .iter()
        .filter(|r| r.loses_leader && r.unavailable_ms.is_none())
        .map(|r| r.cycle)
        .collect()
}

fn report(v: &Verdict) {
    eprintln!(
        "chaos: acknowledged creates={} updates={} deletes={}; unknown outcomes={} (creates \
         present {}, absent {}); contract violations={}; nodes {}",
        v.acked_creates,
        v.acked_updates,
        v.acked_deletes,
        v.unknown_ops,
        v.unknown_creates_present,
        v.unknown_creates_absent,
        v.contract,
        if v.nodes_equal { "equal" } else { "DIFFER" },
    );
    for p in v.problems.iter().take(100) {
        eprintln!("chaos: PROBLEM {p}");
    }
    if v.problems.len() > 100 {
        eprintln!("chaos: ... and {} more problems", v.problems.len() - 100);
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(path) = &args.recheck {
        return match history::read(path) {
            Ok((ops, nodes)) => {
                let v = checker::check(&ops, &nodes);
                report(&v);
                println!("{}", summary(0, &v, 0));
                if v.passed() && v.acked_creates > 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                eprintln!("chaos: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("chaos: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("chaos: cannot run: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The whole test; Ok(passed).
async fn run(args: Args) -> anyhow::Result<bool> {
    if args.servers.len() != args.containers.len() || args.servers.is_empty() {
        bail!("--servers and --containers must list the same nodes, in the same order");
    }
    let keeper = read_token(&args.keeper_token_file)?;
    let writer = read_token(&args.writer_token_file)?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut rng = Rng::new(seed);
    let run_tag = format!("{:06X}", rng.next_u64() & 0xFF_FFFF);
    let duration = match (args.duration, args.cycles) {
        (Some(d), _) => Some(d),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(180)),
    };
    let faults = if args.faults.is_empty() {
        nemesis::ALL.to_vec()
    } else {
        args.faults.clone()
    };
    eprintln!(
        "chaos: seed {seed} (run {run_tag}), {} writers + 1 keeper, faults {:?}, {}",
        args.clients,
        faults.iter().map(|f| f.name()).collect::<Vec<_>>(),
        match (duration, args.cycles) {
            (Some(d), Some(c)) => format!("up to {c} cycles or {d:?}"),
            (Some(d), None) => format!("for {d:?}"),
            (None, Some(c)) => format!("{c} cycles"),
            (None, None) => unreachable!("a default duration is set"),
        }
    );
    let history = Arc::new(History::create(args.history.as_deref())?);
    history.write(&Record::Start {
        seed,
        run: run_tag.clone(),
        servers: args.servers.clone(),
        containers: args.containers.clone(),
        clients: args.clients,
        unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    });

    let cluster = Cluster::new(args.servers.clone(), keeper.clone());
    let health = cluster
        .wait_healthy(args.heal_timeout, 5)
        .await
        .context("the cluster is not healthy before the test")?;
    for i in 0..cluster.len() {
        let s = cluster.status(i).await?;
        if s.node_id != i as u64 + 1 {
            bail!(
                "{} is node {}, expected node {} (list --servers in node order)",
                cluster.server(i),
                s.node_id,
                i + 1
            );
        }
    }
    eprintln!(
        "chaos: cluster healthy: leader {} in term {}, applied {}",
        health.leader, health.term, health.applied
    );
    let shared = Arc::new(Shared::new(
        run_tag,
        history.clone(),
        args.servers.clone(),
        ssin_pool(args.ssins),
        args.op_timeout,
        args.attempt_timeout,
    ));
    let docker = Docker::new(
        args.compose_cmd.clone(),
        args.compose_file.clone(),
        args.compose_project.clone(),
        args.peer_network.clone(),
    )
    .await?;
    let mut nemesis = Nemesis::new(
        docker,
        cluster.clone(),
        &args.containers,
        shared.clone(),
        rng.fork(1),
        faults,
        args.heal_timeout,
    )
    .await?;

    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..args.clients {
        let c = Client::new(
            &format!("w{w}"),
            writer.clone(),
            rng.fork(100 + w as u64),
            shared.clone(),
        );
        tasks.spawn(workload::writer(c, w));
    }
    tasks.spawn(workload::keeper(Client::new(
        "keeper",
        keeper.clone(),
        rng.fork(99),
        shared.clone(),
    )));

    let started = Instant::now();
    let mut quiet = rng.fork(2);
    let mut records = Vec::new();
    let mut failure: Option<String> = None;
    let mut cycle = 0;
    loop {
        if args.cycles.is_some_and(|n| cycle >= n)
            || duration.is_some_and(|d| started.elapsed() >= d)
        {
            break;
        }
        // Some calm between faults: the workload alone.
        tokio::time::sleep(Duration::from_millis(quiet.between(500, 3000))).await;
        cycle += 1;
        match nemesis.cycle(cycle, args.cycles).await {
            Ok(r) => records.push(r),
            Err(e) => {
                failure = Some(format!("cycle {cycle}: {e:#}"));
                break;
            }
        }
    }
    let cycles_done = records.len() as u32;
    shared
        .stop
        .store(true, std::sync::atomic::Ordering::Relaxed);
    eprintln!("chaos: faults over after {cycles_done} cycles; letting the clients finish");
    while tasks.join_next().await.is_some() {}

    // The final heal: everything running and connected, the nodes at the same applied index.
    let mut healed = failure.is_none();
    if let Err(e) = nemesis.heal_all().await {
        eprintln!("chaos: final heal: {e:#}");
        healed = false;
    }
    let converged = match cluster.wait_healthy(args.heal_timeout, 50).await {
        Ok(_) => cluster.wait_converged(Duration::from_secs(60)).await,
        Err(e) => Err(e),
    };
    let applied = match converged {
        Ok(a) => a,
        Err(e) => {
            let msg = format!("the cluster never healed: {e:#}");
            eprintln!("chaos: {msg}");
            let ops = shared.ops();
            history.write(&Record::Verdict {
                summary: msg.clone(),
                problems: vec![],
            });
            let v = checker::check(&ops, &[]);
            let line = summary(cycles_done, &v, 0);
            println!("{line}");
            return Ok(false);
        }
    };
    eprintln!("chaos: every node has applied index {applied}; reading every link on every node");
    let mut nodes = Vec::new();
    for i in 0..cluster.len() {
        nodes.push(read_node(&cluster, i, &shared.ssins, &writer, applied).await?);
    }
    for n in &nodes {
        history.write(&Record::NodeState(n.clone()));
    }
    let ops = shared.ops();
    let verdict = checker::check(&ops, &nodes);
    let tally = Nemesis::tally(&records);
    eprintln!("chaos: faults injected: {tally:?}");
    let max_unavailable = records
        .iter()
        .filter_map(|r| r.unavailable_ms)
        .max()
        .unwrap_or(0);
    let without_ack = without_ack(&records);
    report(&verdict);
    let mut problems = verdict.problems.clone();
    if let Some(f) = &failure {
        eprintln!("chaos: FAILED: {f}");
        problems.push(f.clone());
    }
    if !healed {
        problems.push("the final heal failed".into());
    }
    if let Some(n) = args.cycles
        && cycles_done < n
    {
        let msg = format!("only {cycles_done} of {n} cycles ran");
        eprintln!("chaos: FAILED: {msg}");
        problems.push(msg);
    }
    if !without_ack.is_empty() {
        let msg = format!("no write was acknowledged after the faults of cycles {without_ack:?}");
        eprintln!("chaos: FAILED: {msg}");
        problems.push(msg);
    }
    let reads = shared.read_backs();
    eprintln!(
        "chaos: linearizable reads after acknowledged creates: found={} stale={} unanswered={}",
        reads.found,
        reads.stale.len(),
        reads.unanswered
    );
    for stale in &reads.stale {
        eprintln!("chaos: PROBLEM {stale}");
        problems.push(stale.clone());
    }
    // Every node down for the whole run would leave the read check vacuous.
    if reads.found == 0 {
        let msg = "no linearizable read was answered: the reads checked nothing".to_string();
        eprintln!("chaos: FAILED: {msg}");
        problems.push(msg);
    }
    // A run in which nothing was acknowledged (a wrong token, say) would check nothing.
    let exercised = verdict.acked_creates > 0;
    if !exercised {
        let msg = "no create was acknowledged: the run checked nothing".to_string();
        eprintln!("chaos: FAILED: {msg}");
        problems.push(msg);
    }
    let line = summary(cycles_done, &verdict, max_unavailable);
    history.write(&Record::Verdict {
        summary: line.clone(),
        problems: problems.clone(),
    });
    let passed = verdict.passed()
        && exercised
        && reads.stale.is_empty()
        && reads.found > 0
        && failure.is_none()
        && healed
        && without_ack.is_empty()
        && args.cycles.is_none_or(|n| cycles_done >= n);
    eprintln!("chaos: {}", if passed { "PASSED" } else { "FAILED" });
    println!("{line}");
    Ok(passed)
}

/// Every link of the pool's SSINs as node `index` holds them, and its digest, all at `applied`.
async fn read_node(
    cluster: &Cluster,
    index: usize,
    ssins: &[String],
    token: &Bearer,
    applied: u64,
) -> anyhow::Result<NodeState> {
    let server = cluster.server(index).to_string();
    let channel = connect(&server, Duration::from_secs(3)).await?;
    let mut client = LinkRegisterClient::with_interceptor(channel, token.clone());
    let mut links = Vec::new();
    for ssin in ssins {
        let mut tries = 0;
        let reply = loop {
            tries += 1;
            let mut request = tonic::Request::new(pb::SearchLinksBySsinRequest {
                ssin: ssin.clone(),
                consistency: pb::Consistency::Local as i32,
                ..Default::default()
            });
            request.set_timeout(Duration::from_secs(10));
            match client.search_links_by_ssin(request).await {
                Ok(r) => break r.into_inner(),
                Err(s) if tries < 5 => {
                    eprintln!(
                        "chaos: {server}: search {ssin}: {:?} {}; retrying",
                        s.code(),
                        s.message()
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(s) => bail!("{server}: search {ssin}: {:?} {}", s.code(), s.message()),
            }
        };
        let at = reply.read.as_ref().and_then(|r| r.applied_index);
        if at != Some(applied) {
            bail!(
                "{server} answered at applied index {at:?}, expected {applied}: something wrote after the clients stopped"
            );
        }
        links.extend(reply.links.into_iter().map(|l| ObservedLink {
            id: l.id,
            ssin: l.ssin,
            value: l.value,
            validity: Validity {
                from: l.valid_from,
                to: l.valid_to,
            },
            version: l.version,
        }));
    }
    let digest = cluster.digest(index).await?;
    if digest.applied_index != Some(applied) {
        return Err(anyhow!(
            "{server}: digest at {:?}, expected {applied}",
            digest.applied_index
        ));
    }
    Ok(NodeState {
        node_id: digest.node_id,
        applied_index: digest.applied_index,
        sha256: digest.sha256,
        rows: digest.rows,
        links,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("180s"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("3m"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("3 weeks").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn the_ssin_pool_is_valid_distinct_and_stable() {
        let pool = ssin_pool(200);
        assert_eq!(pool.len(), 200);
        let distinct: std::collections::BTreeSet<_> = pool.iter().collect();
        assert_eq!(distinct.len(), 200);
        let today = time::macros::date!(2026 - 01 - 01);
        for s in &pool {
            assert!(Ssin::parse(s, today).is_ok(), "{s}");
        }
        assert_eq!(pool, ssin_pool(200));
    }

    #[test]
    fn isolating_the_leader_needs_a_write_acknowledged_after_it() {
        let record = |cycle, fault: Fault, target, unavailable_ms| FaultRecord {
            cycle,
            fault: fault.name().to_string(),
            nodes: vec![target],
            injected_ms: 0,
            held_ms: 0,
            healed_ms: 0,
            healthy_ms: Some(0),
            loses_leader: fault.loses_leader(Some(1), &[target]),
            unavailable_ms,
            note: None,
        };
        let records = [
            record(1, Fault::IsolateNode, 1, None),
            record(2, Fault::IsolateNode, 2, None),
            record(3, Fault::KillLeader, 1, None),
            record(4, Fault::IsolateNode, 1, Some(800)),
            record(5, Fault::PauseFollower, 3, None),
        ];
        assert_eq!(without_ack(&records), [1, 3]);
    }

    #[test]
    fn the_summary_line_has_the_promised_shape() {
        let v = Verdict {
            acked_creates: 3,
            acked_updates: 2,
            acked_deletes: 1,
            digests_equal: true,
            nodes_equal: true,
            ..Verdict::default()
        };
        assert_eq!(
            summary(20, &v, 1234),
            "chaos: cycles=20 acknowledged=6 lost=0 duplicates=0 phantoms=0 digests=equal \
             max_unavailable_ms=1234"
        );
    }
}
