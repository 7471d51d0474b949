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

/// A loopback address nobody listens on, below the kernel's ephemeral range.
///
/// Asking the kernel for port 0 hands out a port from the ephemeral range, and between this
/// probe and the node's own bind any outgoing connection (a client, a raft peer, another test)
/// may be given that same port as its local end: CI saw "address in use" that way. Ports below
/// the range are never chosen as a local end, and a counter shared by the process keeps
/// parallel tests apart; the start depends on the process id so that two test processes at
/// once rarely probe the same ports. The range is 11000..21000: the Python tests take
/// 10000..11000 and the compose cluster (`cluster/`) publishes its ports from 21051 on.
pub fn free_addr() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (first, end) = test_ports();
    let span = end - first;
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = first + (start + step) % span;
        let addr = SocketAddr::from(([127, 0, 0, 1], port as u16));
        if TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no free loopback port between {first} and {end}");
}

/// 11000..21000, cut where the kernel's ephemeral range begins; above that range where it
/// begins too low to leave room (some hosts hand out from 1024 on).
fn test_ports() -> (u32, u32) {
    const FIRST: u32 = 11_000;
    const END: u32 = 21_000;
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut bounds = text.split_whitespace().map(|n| n.parse::<u32>().ok());
            Some((bounds.next()??, bounds.next()??))
        })
        .unwrap_or((32_768, 60_999));
    let below = (FIRST, END.min(range.0));
    let above = (range.1 + 1, 65_536);
    if below.1 >= below.0 + 1_000 {
        below
    } else if above.1 >= above.0 + 1_000 {
        above
    } else {
        panic!("the ephemeral range {range:?} leaves no room for test ports beside it")
    }
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
