//! The faults, injected with the docker CLI (and docker-compose for replacing a member), and the
//! loop that injects one, holds it, heals it and waits for the cluster to be healthy again.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde_json::Value;

use crate::history::{FaultRecord, Record};
use crate::net::Cluster;
use crate::rng::Rng;
use crate::workload::Shared;

/// The peer port every member listens on inside its container (compose.yaml).
const PEER_PORT: u16 = 7000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `docker kill -s KILL` the leader, later `docker start` it.
    KillLeader,
    /// `docker pause` a follower, later unpause it.
    PauseFollower,
    /// Disconnect a random node from the peer network: clients still reach it.
    IsolateNode,
    /// Disconnect the leader from the peer network: it still takes client writes, which must
    /// not be acknowledged.
    IsolateLeader,
    /// Kill every node at once, then start them all.
    RestartAll,
    /// Remove a follower from the membership, destroy its container and volume, and recreate it:
    /// it joins again as a fresh node with the same id.
    RemoveReadd,
}

pub const ALL: [Fault; 6] = [
    Fault::KillLeader,
    Fault::PauseFollower,
    Fault::IsolateNode,
    Fault::IsolateLeader,
    Fault::RestartAll,
    Fault::RemoveReadd,
];

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillLeader => "kill-leader",
            Fault::PauseFollower => "pause-follower",
            Fault::IsolateNode => "isolate-node",
            Fault::IsolateLeader => "isolate-leader",
            Fault::RestartAll => "restart-all",
            Fault::RemoveReadd => "remove-readd",
        }
    }

    /// Whether applying this fault to `targets` takes away the leader, so that no write can be
    /// acknowledged until a new one is elected or the old one is back: the run then insists on
    /// an acknowledged write after the fault.
    pub fn loses_leader(self, leader: Option<u64>, targets: &[u64]) -> bool {
        match self {
            Fault::KillLeader | Fault::IsolateLeader | Fault::RestartAll => true,
            Fault::IsolateNode => leader.is_some_and(|l| targets.contains(&l)),
            Fault::PauseFollower | Fault::RemoveReadd => false,
        }
    }

    pub fn parse(s: &str) -> Result<Fault, String> {
        ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| {
            let names: Vec<&str> = ALL.iter().map(|f| f.name()).collect();
            format!("unknown fault {s:?}; known: {}", names.join(", "))
        })
    }
}

/// How one container is wired, read from docker before any fault.
#[derive(Debug, Clone)]
struct Member {
    id: u64,
    container: String,
    service: String,
    volume: Option<String>,
    /// Its aliases on the peer network, restored on reconnect.
    aliases: Vec<String>,
}

pub struct Docker {
    compose: Vec<String>,
    compose_file: PathBuf,
    project: String,
    peer_network: String,
}

async fn run(
    program: &str,
    args: Vec<String>,
    env: Vec<(String, String)>,
) -> anyhow::Result<String> {
    let line = format!("{program} {}", args.join(" "));
    let program = program.to_string();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&program)
            .args(&args)
            .envs(env)
            .stdin(std::process::Stdio::null())
            .output()
    })
    .await
    .context("the docker task panicked")?
    .with_context(|| format!("running {line}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(anyhow!(
            "{line}: {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Docker {
    pub async fn new(
        compose_cmd: Option<String>,
        compose_file: PathBuf,
        project: String,
        peer_network: String,
    ) -> anyhow::Result<Docker> {
        let compose = match compose_cmd {
            Some(c) => c.split_whitespace().map(str::to_string).collect(),
            None => {
                if run("docker-compose", vec!["version".into()], vec![])
                    .await
                    .is_ok()
                {
                    vec!["docker-compose".to_string()]
                } else {
                    vec!["docker".to_string(), "compose".to_string()]
                }
            }
        };
        Ok(Docker {
            compose,
            compose_file,
            project,
            peer_network,
        })
    }

    async fn docker(&self, args: &[&str]) -> anyhow::Result<String> {
        run(
            "docker",
            args.iter().map(|s| s.to_string()).collect(),
            vec![],
        )
        .await
    }

    async fn compose(&self, args: &[&str], env: Vec<(String, String)>) -> anyhow::Result<String> {
        let (program, first) = self
            .compose
            .split_first()
            .ok_or_else(|| anyhow!("empty compose command"))?;
        let mut all: Vec<String> = first.to_vec();
        all.extend([
            "-p".to_string(),
            self.project.clone(),
            "-f".to_string(),
            self.compose_file.display().to_string(),
        ]);
        all.extend(args.iter().map(|s| s.to_string()));
        run(program, all, env).await
    }

    async fn inspect(&self, container: &str) -> anyhow::Result<Value> {
        let out = self.docker(&["inspect", container]).await?;
        let list: Value = serde_json::from_str(&out).context("docker inspect output")?;
        list.get(0)
            .cloned()
            .ok_or_else(|| anyhow!("docker inspect {container}: empty"))
    }

    async fn describe(&self, id: u64, container: &str) -> anyhow::Result<Member> {
        let info = self.inspect(container).await?;
        let short_id: String = info["Id"]
            .as_str()
            .unwrap_or_default()
            .chars()
            .take(12)
            .collect();
        let aliases = info["NetworkSettings"]["Networks"][&self.peer_network]["Aliases"]
            .as_array()
            .ok_or_else(|| anyhow!("{container} is not on network {}", self.peer_network))?
            .iter()
            .filter_map(Value::as_str)
            .filter(|a| *a != short_id)
            .map(str::to_string)
            .collect();
        let service = info["Config"]["Labels"]["com.docker.compose.service"]
            .as_str()
            .map_or_else(|| format!("node{id}"), str::to_string);
        let volume = info["Mounts"].as_array().and_then(|mounts| {
            mounts
                .iter()
                .find(|m| m["Type"] == "volume")
                .and_then(|m| m["Name"].as_str())
                .map(str::to_string)
        });
        Ok(Member {
            id,
            container: container.to_string(),
            service,
            volume,
            aliases,
        })
    }

    /// (running, paused, on the peer network), or None when the container does not exist.
    async fn state(&self, container: &str) -> Option<(bool, bool, bool)> {
        let info = self.inspect(container).await.ok()?;
        let state = &info["State"];
        let on_peers = info["NetworkSettings"]["Networks"]
            .get(&self.peer_network)
            .is_some();
        Some((state["Running"] == true, state["Paused"] == true, on_peers))
    }
}

pub struct Nemesis {
    docker: Docker,
    cluster: Cluster,
    members: Vec<Member>,
    shared: Arc<Shared>,
    rng: Rng,
    faults: Vec<Fault>,
    heal_timeout: Duration,
}

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

impl Nemesis {
    pub async fn new(
        docker: Docker,
        cluster: Cluster,
        containers: &[String],
        shared: Arc<Shared>,
        rng: Rng,
        faults: Vec<Fault>,
        heal_timeout: Duration,
    ) -> anyhow::Result<Nemesis> {
        let mut members = Vec::new();
        for (i, c) in containers.iter().enumerate() {
            members.push(docker.describe(i as u64 + 1, c).await?);
        }
        Ok(Nemesis {
            docker,
            cluster,
            members,
            shared,
            rng,
            faults,
            heal_timeout,
        })
    }

    fn member(&self, id: u64) -> anyhow::Result<&Member> {
        self.members
            .iter()
            .find(|m| m.id == id)
            .ok_or_else(|| anyhow!("no container for node {id}"))
    }

    fn event(&self, message: String) {
        eprintln!("chaos: {message}");
        self.shared.history.write(&Record::Event {
            t_ms: self.shared.now_ms(),
            message,
        });
    }

    async fn connect_peers(&self, m: &Member) -> anyhow::Result<()> {
        let mut args = vec!["network", "connect"];
        for a in &m.aliases {
            args.extend(["--alias", a.as_str()]);
        }
        args.extend([self.docker.peer_network.as_str(), m.container.as_str()]);
        self.docker.docker(&args).await?;
        // The members dial each other by alias: it must survive the reconnection.
        let now = self.docker.describe(m.id, &m.container).await?;
        let missing: Vec<&String> = m
            .aliases
            .iter()
            .filter(|a| !now.aliases.contains(a))
            .collect();
        if !missing.is_empty() {
            bail!("{} lost its aliases {missing:?} on reconnect", m.container);
        }
        Ok(())
    }

    /// Undoes whatever may still be in effect: unpauses, starts and reconnects every node.
    pub async fn heal_all(&self) -> anyhow::Result<()> {
        for m in &self.members {
            match self.docker.state(&m.container).await {
                None => {
                    self.event(format!("{} is missing: recreating it", m.container));
                    self.recreate(m).await?;
                }
                Some((running, paused, on_peers)) => {
                    if paused {
                        self.docker.docker(&["unpause", &m.container]).await?;
                    }
                    if !on_peers {
                        self.connect_peers(m).await?;
                    }
                    if !running {
                        self.docker.docker(&["start", &m.container]).await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn recreate(&self, m: &Member) -> anyhow::Result<()> {
        let mut env = Vec::new();
        if m.id == 1 {
            // compose.yaml starts node1 with --init; a node1 whose data is gone must join the
            // others instead, or it would found a cluster of its own.
            let others: Vec<String> = self
                .members
                .iter()
                .filter(|o| o.id != m.id)
                .filter_map(|o| o.aliases.iter().find(|a| a.ends_with("-peer")))
                .map(|a| format!("{a}:{PEER_PORT}"))
                .collect();
            env.push((
                "NODE1_START".to_string(),
                format!("--join {}", others.join(",")),
            ));
        }
        self.docker
            .compose(&["up", "-d", "--no-deps", &m.service], env)
            .await?;
        Ok(())
    }

    /// One fault: inject, hold, heal, wait for health. Returns its record (also written to the
    /// history), or an error when the cluster did not heal.
    pub async fn cycle(&mut self, cycle: u32, of: Option<u32>) -> anyhow::Result<FaultRecord> {
        let fault = *self.rng.pick(&self.faults).unwrap_or(&Fault::KillLeader);
        let survey = self.cluster.survey().await;
        let leader = Cluster::leader(&survey).map(|l| l.node_id);
        let ids = self.cluster.ids();
        let followers: Vec<u64> = ids.iter().copied().filter(|i| Some(*i) != leader).collect();
        let random = *self.rng.pick(&ids).unwrap_or(&1);
        let follower = self.rng.pick(&followers).copied().unwrap_or(random);
        let hold = self.rng.between(1000, 6000);
        let mut note = None;
        let on_leader = |note: &mut Option<String>| {
            leader.unwrap_or_else(|| {
                *note = Some("no leader known: picked a random node".into());
                random
            })
        };
        let targets: Vec<u64> = match fault {
            Fault::KillLeader | Fault::IsolateLeader => vec![on_leader(&mut note)],
            Fault::PauseFollower | Fault::RemoveReadd => vec![follower],
            Fault::IsolateNode => vec![random],
            Fault::RestartAll => ids.clone(),
        };
        let loses_leader = fault.loses_leader(leader, &targets);
        let members: Vec<Member> = targets
            .iter()
            .map(|id| self.member(*id).cloned())
            .collect::<anyhow::Result<_>>()?;
        let injected_ms = self.shared.now_ms();
        for m in &members {
            match fault {
                Fault::KillLeader | Fault::RestartAll => {
                    self.docker
                        .docker(&["kill", "-s", "KILL", &m.container])
                        .await?;
                }
                Fault::PauseFollower => {
                    self.docker.docker(&["pause", &m.container]).await?;
                }
                Fault::IsolateNode | Fault::IsolateLeader => {
                    self.docker
                        .docker(&[
                            "network",
                            "disconnect",
                            &self.docker.peer_network,
                            &m.container,
                        ])
                        .await?;
                }
                Fault::RemoveReadd => {
                    self.cluster
                        .remove(m.id, Duration::from_secs(30))
                        .await
                        .with_context(|| format!("removing node {}", m.id))?;
                    self.docker
                        .compose(&["rm", "-s", "-f", &m.service], vec![])
                        .await?;
                    if let Some(volume) = &m.volume {
                        self.docker.docker(&["volume", "rm", volume]).await?;
                    }
                }
            }
        }
        // Writes started from here on see the fault in effect.
        let effective_ms = self.shared.now_ms();
        tokio::time::sleep(Duration::from_millis(hold)).await;
        for m in &members {
            match fault {
                Fault::KillLeader | Fault::RestartAll => {
                    self.docker.docker(&["start", &m.container]).await?;
                }
                Fault::PauseFollower => {
                    self.docker.docker(&["unpause", &m.container]).await?;
                }
                Fault::IsolateNode | Fault::IsolateLeader => self.connect_peers(m).await?,
                Fault::RemoveReadd => self.recreate(m).await?,
            }
        }
        let healed_ms = self.shared.now_ms();
        let mut record = FaultRecord {
            cycle,
            fault: fault.name().to_string(),
            nodes: targets.clone(),
            injected_ms,
            held_ms: healed_ms.saturating_sub(injected_ms),
            healed_ms,
            healthy_ms: None,
            loses_leader,
            unavailable_ms: None,
            note,
        };
        let health = self.cluster.wait_healthy(self.heal_timeout, 50).await;
        record.healthy_ms = health.as_ref().ok().map(|_| self.shared.now_ms());
        if loses_leader && health.is_ok() {
            // Some client must get a write through after the fault; give it a moment.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while self.shared.first_ack_after(effective_ms).is_none()
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            record.unavailable_ms = self
                .shared
                .first_ack_after(effective_ms)
                .map(|t| t.saturating_sub(injected_ms));
        }
        self.shared.history.write(&Record::Fault(record.clone()));
        let of = of.map_or(String::new(), |n| format!("/{n}"));
        let on = targets
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(",");
        match &health {
            Ok(h) => {
                let unavailable = match (loses_leader, record.unavailable_ms) {
                    (false, _) => String::new(),
                    (true, Some(ms)) => format!(", next acknowledged write after {ms} ms"),
                    (true, None) => ", no acknowledged write within 30 s of healing".into(),
                };
                eprintln!(
                    "chaos: cycle {cycle}{of} {} on node {on}: held {}, healthy {} after healing \
                     (leader {}, term {}, applied {}){unavailable}{}",
                    fault.name(),
                    secs(record.held_ms),
                    secs(
                        record
                            .healthy_ms
                            .unwrap_or(healed_ms)
                            .saturating_sub(healed_ms)
                    ),
                    h.leader,
                    h.term,
                    h.applied,
                    record
                        .note
                        .as_ref()
                        .map_or(String::new(), |n| format!(" [{n}]")),
                );
            }
            Err(e) => {
                eprintln!(
                    "chaos: cycle {cycle}{of} {} on node {on}: held {}, NEVER HEALED: {e:#}",
                    fault.name(),
                    secs(record.held_ms)
                );
            }
        }
        health.map(|_| record)
    }

    /// Per fault kind: how many cycles injected it.
    pub fn tally(records: &[FaultRecord]) -> BTreeMap<String, usize> {
        let mut t = BTreeMap::new();
        for r in records {
            *t.entry(r.fault.clone()).or_insert(0) += 1;
        }
        t
    }
}
