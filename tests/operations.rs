//! Operator procedures against real nodes: backup and restore, restarts and joins.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use linkreg::api::auth::Callers;
use linkreg::domain::{Caller, LinkId, Organization, RegisterView, Role};
use linkreg::raft::AuditEvent;
use linkreg::raft::state_machine;
use linkreg::server::{NodeConfig, Running};
use linkreg::store::keys;
use serde_json::Value;

const SSINS: [&str; 3] = ["85073003328", "75260898052", "01490700185"];

fn callers() -> Callers {
    let caller = |role| Caller {
        organization: Organization::new("Operations", "0123456749").unwrap(),
        role,
    };
    Callers::from_tokens(&[
        ("writer-token", caller(Role::Writer)),
        ("keeper-token", caller(Role::Keeper)),
    ])
}

async fn start(config: NodeConfig) -> Running {
    common::serve(config, callers()).await
}

/// Three nodes: the first initialized, the others joined through it.
async fn cluster(dir: &Path, ids: [u64; 3]) -> Vec<Running> {
    let (nodes, _) = cluster_with_configs(dir, ids).await;
    nodes
}

async fn cluster_with_configs(dir: &Path, ids: [u64; 3]) -> (Vec<Running>, Vec<NodeConfig>) {
    let first = common::config(
        ids[0],
        &dir.join(ids[0].to_string()),
        true,
        None,
        Duration::from_secs(10),
    );
    let join = Some(first.advertise.peer_addr.clone());
    let mut configs = vec![first];
    for id in &ids[1..] {
        configs.push(common::config(
            *id,
            &dir.join(id.to_string()),
            false,
            join.clone(),
            Duration::from_secs(10),
        ));
    }
    let mut nodes = Vec::new();
    for config in &configs {
        nodes.push(start(config.clone()).await);
    }
    (nodes, configs)
}

fn linkreg(args: &[&str], token: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_linkreg"))
        .args(args)
        .env("LINKREG_TOKEN", token)
        .env_remove("LINKREG_SERVER")
        .output()
        .expect("the linkreg binary runs")
}

fn ok_json(out: &Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn create(server: &Running, n: usize) -> u64 {
    let value = format!("P{n:07}");
    let out = linkreg(
        &[
            "link",
            "create",
            "--json",
            "--server",
            &server.client_addr.to_string(),
            "--ssin",
            SSINS[n % SSINS.len()],
            "--country",
            "FR",
            "--type",
            "PASSPORT",
            "--value",
            &value,
        ],
        "writer-token",
    );
    ok_json(&out)["link"]["id"].as_u64().unwrap()
}

fn backup(server: &Running, out: &Path, token: &str) -> Output {
    linkreg(
        &[
            "backup",
            "--json",
            "--server",
            &server.client_addr.to_string(),
            "--out",
            out.to_str().unwrap(),
        ],
        token,
    )
}

/// `linkreg restore` with the same addresses `config` will serve on.
fn restore(from: &Path, config: &NodeConfig) -> Output {
    linkreg(
        &[
            "restore",
            "--json",
            "--from",
            from.to_str().unwrap(),
            "--id",
            &config.id.to_string(),
            "--data-dir",
            config.data_dir.to_str().unwrap(),
            "--client-addr",
            &config.client_addr.to_string(),
            "--peer-addr",
            &config.peer_addr.to_string(),
            "--http-addr",
            &config.http_addr.to_string(),
        ],
        "",
    )
}

/// Waits until every node has applied the same index, then returns each one's digest.
async fn settled_digests(nodes: &[Running]) -> Vec<state_machine::Digest> {
    let target = nodes[0].node.raft.metrics().borrow().last_log_index;
    for node in nodes {
        node.node
            .raft
            .wait(Some(Duration::from_secs(20)))
            .applied_index_at_least(target, "caught up")
            .await
            .unwrap();
    }
    nodes
        .iter()
        .map(|n| state_machine::digest(&n.node.store).unwrap())
        .collect()
}

/// Every link's foreign-key value, sorted.
fn values(node: &Running) -> Vec<String> {
    let store = &node.node.store;
    let mut values = Vec::new();
    for id in 1..store.next_link_id().unwrap().0 {
        if let Some(link) = store.link(LinkId(id)).unwrap() {
            values.push(link.foreign_key.value.normalized().to_string());
        }
    }
    values.sort();
    values
}

fn events(store: &linkreg::store::Store, id: u64) -> usize {
    store
        .audit_events::<AuditEvent>(&keys::audit_link_prefix(LinkId(id)))
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_seeds_a_new_cluster_equal_to_the_source_at_the_backups_index() {
    let dir = tempfile::tempdir().unwrap();
    let source = cluster(&dir.path().join("source"), [1, 2, 3]).await;
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(create(&source[n % 3], n));
    }
    let before = settled_digests(&source).await;
    assert!(before.iter().all(|d| *d == before[0]), "{before:?}");

    // From a follower: every member holds the whole register.
    let out_dir = dir.path().join("backup");
    let manifest = ok_json(&tokio::task::block_in_place(|| {
        backup(&source[2], &out_dir, "keeper-token")
    }));
    assert_eq!(manifest["source_node"], 3);
    assert_eq!(
        manifest["applied_index"].as_u64(),
        before[2].applied.map(|l| l.index)
    );
    assert_eq!(manifest["sha256"].as_str(), Some(before[2].sha256.as_str()));
    assert_eq!(manifest["rows"].as_u64(), Some(before[2].rows));
    assert!(out_dir.join("linkreg.snap").is_file());
    let stored: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("backup.json")).unwrap()).unwrap();
    assert_eq!(stored["sha256"], manifest["sha256"]);
    // The node keeps no copy once the backup has been streamed.
    let leftovers: Vec<_> = std::fs::read_dir(&source[2].node.snapshot_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("backup-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Written after the backup: must not be in the restored cluster.
    let after_backup = create(&source[0], 1000);
    assert_eq!(after_backup, ids.iter().max().unwrap() + 1);
    let expected_values = {
        let mut v: Vec<String> = (0..20).map(|n| format!("P{n:07}")).collect();
        v.sort();
        v
    };

    let target = dir.path().join("restored");
    let seed_config = common::config(7, &target.join("7"), false, None, Duration::from_secs(10));
    let report = ok_json(&tokio::task::block_in_place(|| {
        restore(&out_dir, &seed_config)
    }));
    assert_eq!(report["sha256"], manifest["sha256"]);
    assert_eq!(report["applied_index"], manifest["applied_index"]);

    let seed = start(seed_config).await;
    seed.node
        .raft
        .wait(Some(Duration::from_secs(10)))
        .current_leader(7, "the restored node elects itself")
        .await
        .unwrap();
    let join = Some(seed.node.info.peer_addr.clone());
    let mut restored = vec![seed];
    for id in [8, 9] {
        let config = common::config(
            id,
            &target.join(id.to_string()),
            false,
            join.clone(),
            Duration::from_secs(10),
        );
        restored.push(start(config).await);
    }
    let membership = restored[0]
        .node
        .raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .clone();
    assert_eq!(membership.voter_ids().collect::<Vec<_>>(), [7, 8, 9]);

    let digests = settled_digests(&restored).await;
    for d in &digests {
        assert_eq!(d.sha256, before[2].sha256, "{digests:?}");
        assert_eq!(d.rows, before[2].rows);
        // The new cluster went on past the backup's index (its own election and joins).
        assert!(d.applied > before[2].applied, "{d:?}");
    }
    for node in &restored {
        assert_eq!(values(node), expected_values);
    }
    // Link ids continue where the backup stopped: nothing is reused within the restored data.
    assert_eq!(create(&restored[1], 2000), after_backup);
    let digests = settled_digests(&restored).await;
    assert!(digests.iter().all(|d| *d == digests[0]), "{digests:?}");
    assert_ne!(digests[0].sha256, before[2].sha256);

    for node in restored.into_iter().chain(source) {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_during_writes_is_one_consistent_point() {
    let dir = tempfile::tempdir().unwrap();
    let source = start(common::config(
        1,
        &dir.path().join("source"),
        true,
        None,
        Duration::from_secs(10),
    ))
    .await;
    let addr = source.client_addr;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let value = format!("W{n:07}");
                let out = linkreg(
                    &[
                        "link",
                        "create",
                        "--json",
                        "--server",
                        &addr.to_string(),
                        "--ssin",
                        SSINS[n % SSINS.len()],
                        "--country",
                        "NL",
                        "--type",
                        "PASSPORT",
                        "--value",
                        &value,
                    ],
                    "writer-token",
                );
                assert_eq!(out.status.code(), Some(0), "{out:?}");
                n += 1;
            }
            n
        })
    };
    // Let some writes land, then back up while they continue.
    while source.node.store.next_link_id().unwrap().0 < 10 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out_dir = dir.path().join("backup");
    let manifest = ok_json(&tokio::task::block_in_place(|| {
        backup(&source, &out_dir, "keeper-token")
    }));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = tokio::task::block_in_place(|| writer.join().unwrap());
    let total = source.node.store.next_link_id().unwrap().0 - 1;
    assert_eq!(total, written as u64);

    let config = common::config(
        5,
        &dir.path().join("restored"),
        false,
        None,
        Duration::from_secs(10),
    );
    ok_json(&tokio::task::block_in_place(|| restore(&out_dir, &config)));
    let restored = start(config).await;
    let store = &restored.node.store;
    let kept = store.next_link_id().unwrap().0 - 1;
    assert!(kept >= 9 && kept <= total, "kept {kept} of {total}");
    // A prefix of the creates, each link with both of its index rows, and nothing after it.
    for id in 1..=kept {
        let link = store
            .link(LinkId(id))
            .unwrap()
            .expect("every link up to the cut");
        let by_ssin = store.links_by_ssin(&link.ssin).unwrap();
        assert!(by_ssin.iter().any(|l| l.id == link.id));
        let key = &link.foreign_key;
        let by_key = store
            .links_by_foreign_key(key.country, &key.key_type, key.value.normalized())
            .unwrap();
        assert_eq!(by_key.len(), 1);
    }
    assert!(store.link(LinkId(kept + 1)).unwrap().is_none());
    // The audit trail stops at the same point as the data.
    assert_eq!(events(store, kept), 1, "the last kept link's create event");
    assert_eq!(events(store, kept + 1), 0);
    assert_eq!(
        state_machine::digest(store).unwrap().sha256,
        manifest["sha256"].as_str().unwrap()
    );
    restored.stop().await;
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn damaged_or_misused_backups_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let source = start(common::config(
        1,
        &dir.path().join("source"),
        true,
        None,
        Duration::from_secs(10),
    ))
    .await;
    create(&source, 1);
    let good = dir.path().join("good");

    // Only the keeper may take a copy of the whole register.
    let refused = tokio::task::block_in_place(|| backup(&source, &good, "writer-token"));
    assert_ne!(refused.status.code(), Some(0));
    assert!(
        stderr(&refused).contains("permission denied"),
        "{refused:?}"
    );
    assert!(!good.join("linkreg.snap").exists());

    ok_json(&tokio::task::block_in_place(|| {
        backup(&source, &good, "keeper-token")
    }));
    // A second backup never overwrites the first.
    let again = tokio::task::block_in_place(|| backup(&source, &good, "keeper-token"));
    assert_ne!(again.status.code(), Some(0));
    assert!(stderr(&again).contains("not empty"), "{again:?}");

    // One flipped byte (here in the checksum itself): refused, and no state is created.
    let damaged = dir.path().join("damaged");
    std::fs::create_dir(&damaged).unwrap();
    let mut bytes = std::fs::read(good.join("linkreg.snap")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(damaged.join("linkreg.snap"), &bytes).unwrap();
    let config = common::config(
        4,
        &dir.path().join("n4"),
        false,
        None,
        Duration::from_secs(10),
    );
    let out = tokio::task::block_in_place(|| restore(&damaged, &config));
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("checksum"), "{out:?}");
    assert!(!config.data_dir.join("db").exists());
    assert!(!config.data_dir.join("snapshots").exists());

    // A manifest that does not describe the file (a mix-up of two backups): refused.
    let mixed = dir.path().join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    std::fs::copy(good.join("linkreg.snap"), mixed.join("linkreg.snap")).unwrap();
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(good.join("backup.json")).unwrap()).unwrap();
    manifest["sha256"] = Value::String("00".repeat(32));
    std::fs::write(mixed.join("backup.json"), manifest.to_string()).unwrap();
    let out = tokio::task::block_in_place(|| restore(&mixed, &config));
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("differs"), "{out:?}");
    assert!(!config.data_dir.join("db").exists());

    // Restoring over a node's existing state: refused, the state untouched.
    source.stop().await;
    let source_dir = dir.path().join("source");
    let before = {
        let store = linkreg::store::Store::open(&source_dir.join("db")).unwrap();
        state_machine::digest(&store).unwrap()
    };
    let mut over = config.clone();
    over.data_dir = source_dir.clone();
    let out = tokio::task::block_in_place(|| restore(&good, &over));
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("already holds"), "{out:?}");
    let store = linkreg::store::Store::open(&source_dir.join("db")).unwrap();
    assert_eq!(state_machine::digest(&store).unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn voters_restart_while_the_peer_they_join_through_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, configs) = cluster_with_configs(dir.path(), [1, 2, 3]).await;
    let id = create(&nodes[1], 1);
    for node in nodes {
        node.stop().await;
    }
    // Nodes 2 and 3 name only node 1 in --join, and node 1 stays down: as voters they must come
    // up anyway and elect a leader between them.
    let started = std::time::Instant::now();
    let mut restarted = Vec::new();
    for config in &configs[1..] {
        restarted.push(start(config.clone()).await);
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let leader = restarted[0]
        .node
        .raft
        .wait(Some(Duration::from_secs(20)))
        // A restarted node first believes in the leader its stored vote names (node 1).
        .metrics(
            |m| matches!(m.current_leader, Some(2 | 3)),
            "a leader among 2 and 3",
        )
        .await
        .unwrap()
        .current_leader;
    assert!(matches!(leader, Some(2 | 3)), "{leader:?}");
    let second = create(&restarted[1], 2);
    assert_eq!(second, id + 1);

    // A new node whose --join list starts with an address nobody listens on joins through the
    // next one.
    let mut config = common::config(
        4,
        &dir.path().join("4"),
        false,
        None,
        Duration::from_secs(10),
    );
    config.join = Some(format!(
        "{},{}",
        common::free_addr(),
        configs[2].advertise.peer_addr
    ));
    let fourth = start(config).await;
    let voters: Vec<u64> = fourth
        .node
        .raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    assert_eq!(voters, [1, 2, 3, 4]);
    restarted.push(fourth);
    // Node 1 comes back as a follower (its --init is a no-op on a node with state).
    let mut first = configs[0].clone();
    first.init = false;
    restarted.push(start(first).await);
    let digests = settled_digests(&restarted).await;
    assert!(digests.iter().all(|d| *d == digests[0]), "{digests:?}");
    assert_eq!(values(&restarted[3]), ["P0000001", "P0000002"]);
    for node in restarted {
        node.stop().await;
    }
}
