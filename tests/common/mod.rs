//! What the integration tests share: loopback ports, one node's configuration, and a rendering
//! of everything a command can change, to show that a refused one changed nothing.

// Each test binary compiles this module and uses a part of it.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::Duration;

use linkreg::api::auth::{Authenticator, Callers};
use linkreg::domain::{LinkId, RegisterView};
use linkreg::raft::NodeInfo;
use linkreg::raft::network::Faults;
use linkreg::raft::node::Tuning;
use linkreg::server::{self, NodeConfig, Running};

pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A node on fresh loopback ports with elections fast enough for tests.
pub fn config(
    id: u64,
    dir: &Path,
    init: bool,
    join: Option<String>,
    write_timeout: Duration,
) -> NodeConfig {
    let (peer, client, http) = (free_addr(), free_addr(), free_addr());
    NodeConfig {
        id,
        data_dir: dir.to_path_buf(),
        client_addr: client,
        peer_addr: peer,
        http_addr: http,
        advertise: NodeInfo {
            peer_addr: peer.to_string(),
            client_addr: client.to_string(),
            http_addr: http.to_string(),
        },
        init,
        join,
        tuning: Tuning {
            heartbeat_ms: 50,
            election_min_ms: 300,
            election_max_ms: 600,
            ..Tuning::default()
        },
        write_timeout,
        client_tls: None,
        peer_tls: None,
    }
}

/// Starts a node accepting exactly `callers`, without fault injection. A node that initializes
/// its own cluster is its leader once this returns.
pub async fn serve(config: NodeConfig, callers: Callers) -> Running {
    let (id, init) = (config.id, config.init);
    let running = server::start(
        config,
        Authenticator::fixed(callers),
        std::sync::Arc::new(Faults::default()),
    )
    .await
    .expect("the node starts");
    if init {
        running
            .node
            .raft
            .wait(Some(Duration::from_secs(10)))
            .current_leader(id, "leader")
            .await
            .expect("a self-initialized node leads");
    }
    running
}

/// Everything a command could have changed: links, catalogue, format rules.
pub fn register(running: &Running) -> String {
    let store = &running.node.store;
    let mut links = Vec::new();
    for id in 1..store.next_link_id().unwrap().0 {
        links.push(store.link(LinkId(id)).unwrap());
    }
    format!(
        "{links:?}\n{:?}\n{:?}",
        store.key_types().unwrap(),
        store.format_rules().unwrap()
    )
}
