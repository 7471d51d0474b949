//! TLS on the client listener (with client certificates required) and mutual TLS between
//! members, with certificates made here by a throwaway CA.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use linkreg::api::auth::{Authenticator, dev_callers};
use linkreg::proto::linkreg as pb;
use linkreg::proto::linkreg::link_register_client::LinkRegisterClient;
use linkreg::raft::NodeInfo;
use linkreg::raft::network::Faults;
use linkreg::raft::network::{PEER_TLS_NAME, PeerTransport, encode, peer_client};
use linkreg::raft::node::Tuning;
use linkreg::server::{self, NodeConfig, Running, TlsFiles};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

fn new_ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// (certificate PEM, key PEM) for the given subject alternative names.
fn leaf(ca: &CertifiedIssuer<'static, KeyPair>, names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, ca)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

fn config(
    id: u64,
    init: bool,
    join: Option<String>,
    peer: SocketAddr,
    client: SocketAddr,
    dir: &std::path::Path,
) -> NodeConfig {
    NodeConfig {
        id,
        data_dir: dir.to_path_buf(),
        client_addr: client,
        peer_addr: peer,
        http_addr: common::free_addr(),
        advertise: NodeInfo {
            peer_addr: peer.to_string(),
            client_addr: client.to_string(),
            http_addr: String::new(),
        },
        init,
        join,
        tuning: Tuning {
            heartbeat_ms: 50,
            election_min_ms: 300,
            election_max_ms: 600,
            ..Tuning::default()
        },
        write_timeout: Duration::from_secs(5),
        client_tls: None,
        peer_tls: None,
    }
}

async fn start(config: NodeConfig) -> Running {
    server::start(
        config,
        Authenticator::fixed(dev_callers()),
        Arc::new(Faults::default()),
    )
    .await
    .unwrap()
}

fn create(n: u32) -> tonic::Request<pb::CreateLinkRequest> {
    let mut r = tonic::Request::new(pb::CreateLinkRequest {
        ssin: "85073003328".into(),
        country: "NL".into(),
        key_type: "PASSPORT".into(),
        value: format!("NX{n:06}"),
        ..Default::default()
    });
    r.metadata_mut()
        .insert("authorization", "Bearer dev-writer".parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_listener_speaks_tls_and_requires_client_certificates() {
    let ca = new_ca();
    let (server_cert, server_key) = leaf(&ca, &["127.0.0.1", "localhost"]);
    let (client_cert, client_key) = leaf(&ca, &["client.example"]);
    let dir = tempfile::tempdir().unwrap();
    let (peer, client) = (common::free_addr(), common::free_addr());
    let mut cfg = config(1, true, None, peer, client, dir.path());
    cfg.client_tls = Some(TlsFiles {
        cert: server_cert.into_bytes(),
        key: server_key.into_bytes(),
        ca: Some(ca.pem().into_bytes()),
    });
    let running = start(cfg).await;
    running
        .node
        .raft
        .wait(Some(Duration::from_secs(10)))
        .current_leader(1, "leader")
        .await
        .unwrap();

    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.pem()));
    let url = format!("https://{client}");
    // With a client certificate: served.
    let with_cert = tls
        .clone()
        .identity(Identity::from_pem(&client_cert, &client_key));
    let channel = Endpoint::from_shared(url.clone())
        .unwrap()
        .tls_config(with_cert)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let created = LinkRegisterClient::new(channel)
        .create_link(create(1))
        .await
        .unwrap();
    assert_eq!(created.into_inner().link.unwrap().ssin, "85073003328");
    // Without one, or without TLS at all: refused.
    let refused = async {
        let channel = Endpoint::from_shared(url.clone())
            .ok()?
            .tls_config(tls.clone())
            .ok()?
            .connect()
            .await
            .ok()?;
        LinkRegisterClient::new(channel)
            .create_link(create(2))
            .await
            .ok()
    };
    assert!(
        refused.await.is_none(),
        "a client without a certificate was served"
    );
    let plain = async {
        let channel = Endpoint::from_shared(format!("http://{client}"))
            .ok()?
            .connect()
            .await
            .ok()?;
        LinkRegisterClient::new(channel)
            .create_link(create(3))
            .await
            .ok()
    };
    assert!(plain.await.is_none(), "a plaintext client was served");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_authenticate_each_other_with_the_peer_ca() {
    let ca = new_ca();
    let peer_tls = || {
        let (cert, key) = leaf(&ca, &[PEER_TLS_NAME]);
        Some(TlsFiles {
            cert: cert.into_bytes(),
            key: key.into_bytes(),
            ca: Some(ca.pem().into_bytes()),
        })
    };
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (p1, c1, p2, c2) = (
        common::free_addr(),
        common::free_addr(),
        common::free_addr(),
        common::free_addr(),
    );
    let mut cfg1 = config(1, true, None, p1, c1, d1.path());
    cfg1.peer_tls = peer_tls();
    let n1 = start(cfg1).await;
    n1.node
        .raft
        .wait(Some(Duration::from_secs(10)))
        .current_leader(1, "leader")
        .await
        .unwrap();
    let mut cfg2 = config(2, false, Some(p1.to_string()), p2, c2, d2.path());
    cfg2.peer_tls = peer_tls();
    let n2 = start(cfg2).await;
    // Replication runs over mutual TLS.
    let id = n1
        .service
        .write(
            linkreg::domain::Caller {
                organization: linkreg::domain::Organization::new("T", "0123456749").unwrap(),
                role: linkreg::domain::Role::Writer,
            },
            linkreg::domain::Action::CreateLink(linkreg::domain::command::CreateLink {
                ssin: "85073003328".into(),
                country: "NL".into(),
                key_type: "PASSPORT".into(),
                value: "NX123456".into(),
                ..Default::default()
            }),
            None,
        )
        .await
        .unwrap()
        .log_index;
    n2.node
        .raft
        .wait(Some(Duration::from_secs(10)))
        .applied_index_at_least(id, "replicated")
        .await
        .unwrap();

    // A node whose certificate another CA signed, or one without TLS, is not let in.
    let rogue_ca = new_ca();
    let (cert, key) = leaf(&rogue_ca, &[PEER_TLS_NAME]);
    let rogue = PeerTransport::mutual_tls(cert.as_bytes(), key.as_bytes(), ca.pem().as_bytes());
    let join = encode(&(9u64, NodeInfo::default())).unwrap();
    let mut client = peer_client(rogue.channel(&p1.to_string()).unwrap());
    assert!(
        client.join(join.clone()).await.is_err(),
        "a foreign certificate was accepted"
    );
    let mut plain = peer_client(PeerTransport::plain().channel(&p1.to_string()).unwrap());
    assert!(
        plain.join(join).await.is_err(),
        "a plaintext peer was accepted"
    );
    let members = linkreg::cluster::status(&n1.node).members;
    assert_eq!(members.iter().map(|m| m.id).collect::<Vec<_>>(), [1, 2]);
    n2.stop().await;
    n1.stop().await;
}
