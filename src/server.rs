//! A running node: raft, the peer listener and the client listener, until shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::api::admin::AdminService;
use crate::api::auth::Authenticator;
use crate::api::grpc::LinkRegisterService;
use crate::api::observe::{self, GrpcLayer, Metrics};
use crate::cluster;
use crate::proto::linkreg::cluster_admin_server::ClusterAdminServer;
use crate::proto::linkreg::link_register_server::LinkRegisterServer;
use crate::raft::network::{Faults, PeerTransport};
use crate::raft::node::{NodeError, RaftNode, Tuning};
use crate::raft::{NodeId, NodeInfo};
use crate::service::Service;

/// Client requests are small; a search answer holds a person's few links.
const CLIENT_MESSAGE_MAX: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: NodeId,
    pub data_dir: PathBuf,
    pub client_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// What other members and clients should dial (differs from the bind address in containers).
    pub advertise: NodeInfo,
    pub init: bool,
    pub join: Option<String>,
    pub tuning: Tuning,
    pub write_timeout: Duration,
    /// TLS on the client listener; with a CA, clients must present a certificate it signed.
    pub client_tls: Option<TlsFiles>,
    /// Mutual TLS between members (the CA is required).
    pub peer_tls: Option<TlsFiles>,
}

/// PEM contents of a certificate chain, its key, and optionally a CA for the other side.
#[derive(Clone)]
pub struct TlsFiles {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub ca: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("cert", &format!("{} bytes", self.cert.len()))
            .field("key", &"(redacted)")
            .field(
                "ca",
                &self.ca.as_ref().map(|c| format!("{} bytes", c.len())),
            )
            .finish()
    }
}

impl TlsFiles {
    fn server_config(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new().identity(Identity::from_pem(&self.cert, &self.key));
        match &self.ca {
            Some(ca) => config.client_ca_root(Certificate::from_pem(ca)),
            None => config,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Join(#[from] cluster::ClusterError),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    #[error("TLS: {0}")]
    Tls(String),
}

/// A started node with its listeners; dropping the shutdown sender or sending `true` stops them.
pub struct Running {
    pub node: Arc<RaftNode>,
    pub service: Arc<Service>,
    pub client_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    pub http_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    /// Stops health reporting from the raft metrics: from then on the node is NOT_SERVING.
    draining: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<Result<(), ListenerError>>>,
    health: HealthReporter,
}

type ListenerError = Box<dyn std::error::Error + Send + Sync>;

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// Accepted connections with Nagle's algorithm off: small replies (a search, a raft append
/// acknowledgement) otherwise wait for the peer's delayed ACK, some 40 ms.
fn nodelay(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Starts raft and both listeners. Listening starts before bootstrap or join, because joining
/// needs the leader to reach this node's peer listener.
pub async fn start(
    config: NodeConfig,
    auth: Authenticator,
    faults: Arc<Faults>,
) -> Result<Running, ServerError> {
    let peer_listener = bind(config.peer_addr).await?;
    let client_listener = bind(config.client_addr).await?;
    let http_listener = bind(config.http_addr).await?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|source| ServerError::Bind {
            addr: config.http_addr,
            source,
        })?;
    let peer_addr = peer_listener
        .local_addr()
        .map_err(|source| ServerError::Bind {
            addr: config.peer_addr,
            source,
        })?;
    let client_addr = client_listener
        .local_addr()
        .map_err(|source| ServerError::Bind {
            addr: config.client_addr,
            source,
        })?;
    let transport = match &config.peer_tls {
        Some(TlsFiles {
            cert,
            key,
            ca: Some(ca),
        }) => PeerTransport::mutual_tls(cert, key, ca),
        Some(_) => {
            return Err(ServerError::Tls(
                "peer TLS needs a CA: members must authenticate each other".into(),
            ));
        }
        None => PeerTransport::plain(),
    };
    let node = Arc::new(
        RaftNode::start(
            config.id,
            config.advertise.clone(),
            &config.data_dir,
            &config.tuning,
            faults,
            transport,
        )
        .await?,
    );
    let service = Arc::new(Service::new(node.clone(), config.write_timeout));
    let (shutdown, signal) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let mut peer = tonic::transport::Server::builder();
    if let Some(tls) = &config.peer_tls {
        peer = peer
            .tls_config(tls.server_config())
            .map_err(|e| ServerError::Tls(e.to_string()))?;
    }
    let peer = peer
        .add_service(node.peer_service())
        .serve_with_incoming_shutdown(nodelay(peer_listener), stopped(signal.clone()));
    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;
    let admin = ClusterAdminServer::new(AdminService::new(node.clone(), auth.clone()))
        .max_decoding_message_size(CLIENT_MESSAGE_MAX)
        .max_encoding_message_size(CLIENT_MESSAGE_MAX);
    let advertised_http = if config.advertise.http_addr.is_empty() {
        http_addr.to_string()
    } else {
        config.advertise.http_addr.clone()
    };
    let mut metrics = Metrics::new();
    metrics.observe_node(node.clone());
    metrics.observe_service(service.clone());
    let metrics = Arc::new(metrics);
    let (draining, drain_signal) = watch::channel(false);
    let soap = crate::api::soap::router(service.clone(), auth.clone(), &advertised_http);
    let routes = observe::measure_soap(soap, metrics.clone()).merge(observe::router(
        metrics.clone(),
        node.clone(),
        drain_signal.clone(),
    ));
    use axum::serve::ListenerExt;
    let http_listener = http_listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let http = axum::serve(http_listener, routes).with_graceful_shutdown(stopped(signal.clone()));
    let register = LinkRegisterServer::new(LinkRegisterService::new(service.clone(), auth))
        .max_decoding_message_size(CLIENT_MESSAGE_MAX)
        .max_encoding_message_size(CLIENT_MESSAGE_MAX);
    let mut client = tonic::transport::Server::builder();
    if let Some(tls) = &config.client_tls {
        client = client
            .tls_config(tls.server_config())
            .map_err(|e| ServerError::Tls(e.to_string()))?;
    }
    let client = client
        .layer(GrpcLayer::new(metrics.clone()))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(register)
        .add_service(admin)
        .serve_with_incoming_shutdown(nodelay(client_listener), stopped(signal.clone()));
    tokio::spawn(report_health(node.clone(), health.clone(), drain_signal));
    tokio::spawn(observe::follow_raft(node.clone(), metrics, signal));
    let tasks = vec![
        tokio::spawn(async move { peer.await.map_err(ListenerError::from) }),
        tokio::spawn(async move { client.await.map_err(ListenerError::from) }),
        tokio::spawn(async move { http.await.map_err(ListenerError::from) }),
    ];
    let running = Running {
        node,
        service,
        client_addr,
        peer_addr,
        http_addr,
        shutdown,
        draining,
        tasks,
        health,
    };
    if config.init && running.node.initialize_if_new().await? {
        tracing::info!(node = config.id, "initialized a new single-voter cluster");
    }
    if let Some(peers) = config.join.clone() {
        if cluster::is_voter(&running.node).await {
            // Already a voter: it must come up even when the listed peers are down (a whole
            // cluster restarting at once), so the check that nothing changed runs aside.
            let node = running.node.clone();
            tokio::spawn(async move {
                match cluster::join(&node, &peers, Duration::from_secs(600)).await {
                    Ok(()) => tracing::info!(node = node.id, "still a voter (checked via {peers})"),
                    Err(e) => tracing::warn!(node = node.id, "re-checking membership: {e}"),
                }
            });
        } else {
            cluster::join(&running.node, &peers, Duration::from_secs(120)).await?;
            tracing::info!(
                node = config.id,
                "member of the cluster reached through {peers}"
            );
        }
    }
    Ok(running)
}

/// How long a stopping node keeps answering (NOT_SERVING) before it closes its listeners.
const DRAIN: Duration = Duration::from_millis(300);

/// The services whose health is reported: the whole server ("") and the client API.
const HEALTH_SERVICES: [&str; 2] = ["", "linkreg.v1.LinkRegister"];

async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    for service in HEALTH_SERVICES {
        reporter.set_service_status(service, status).await;
    }
}

/// SERVING while the node is ready ([`observe::readiness`]: it knows a leader and has applied
/// everything it knows to be committed); NOT_SERVING otherwise and from shutdown.
async fn report_health(
    node: Arc<RaftNode>,
    reporter: HealthReporter,
    mut stop: watch::Receiver<bool>,
) {
    let mut metrics = node.raft.metrics();
    let mut committed = node.committed.clone();
    let mut last = None;
    loop {
        let status = {
            let m = metrics.borrow_and_update();
            let applied = m.last_applied.map(|l| l.index);
            let known = *committed.borrow_and_update();
            if observe::readiness(m.current_leader, applied, known).is_ok() {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            }
        };
        if last != Some(status) {
            set_health(&reporter, status).await;
            last = Some(status);
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { break },
            changed = committed.changed() => if changed.is_err() { break },
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    set_health(&reporter, ServingStatus::NotServing).await;
}

impl Running {
    /// Stops listening and shuts raft down; the store closes when the last handle goes.
    pub async fn stop(self) {
        let _ = self.draining.send(true);
        set_health(&self.health, ServingStatus::NotServing).await;
        // Keep answering for a moment: health checkers and load balancers polling the node
        // then see NOT_SERVING and move traffic away, instead of only a refused connection
        // they cannot tell from a crash.
        tokio::time::sleep(DRAIN).await;
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("listener stopped with an error: {e}"),
                Err(e) => tracing::warn!("listener task failed: {e}"),
            }
        }
        self.node.shutdown().await;
    }
}
