//! `linkreg serve`: run a node until SIGTERM or SIGINT.
//!
//! Every setting comes from, in order of precedence, a flag, a `LINKREG_*` environment
//! variable, the TOML file given with `--config`, or the default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use linkreg::api::auth::{Authenticator, dev_callers};
use linkreg::raft::NodeInfo;
use linkreg::raft::network::Faults;
use linkreg::raft::node::Tuning;
use linkreg::server::{self, NodeConfig, TlsFiles};
use serde::Deserialize;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (kebab-case keys, e.g. `data-dir`).
    #[arg(long, env = "LINKREG_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// This node's id in the cluster (a positive integer, never reused).
    #[arg(long, env = "LINKREG_ID")]
    id: Option<u64>,
    /// Where the node keeps its state [default: ./data/node-<id>].
    #[arg(long, env = "LINKREG_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Client gRPC listener [default: 127.0.0.1:50051].
    #[arg(long, env = "LINKREG_CLIENT_ADDR", value_name = "HOST:PORT")]
    client_addr: Option<SocketAddr>,
    /// Peer (raft) listener [default: 127.0.0.1:50052].
    #[arg(long, env = "LINKREG_PEER_ADDR", value_name = "HOST:PORT")]
    peer_addr: Option<SocketAddr>,
    /// HTTP listener for SOAP [default: 127.0.0.1:8080].
    #[arg(long, env = "LINKREG_HTTP_ADDR", value_name = "HOST:PORT")]
    http_addr: Option<SocketAddr>,
    /// Client address others should dial [default: --client-addr].
    #[arg(long, env = "LINKREG_ADVERTISE_CLIENT", value_name = "HOST:PORT")]
    advertise_client: Option<String>,
    /// Peer address other members should dial [default: --peer-addr].
    #[arg(long, env = "LINKREG_ADVERTISE_PEER", value_name = "HOST:PORT")]
    advertise_peer: Option<String>,
    /// HTTP address clients should use [default: --http-addr].
    #[arg(long, env = "LINKREG_ADVERTISE_HTTP", value_name = "HOST:PORT")]
    advertise_http: Option<String>,
    /// Bootstrap a one-voter cluster here if this node has no state (a no-op otherwise).
    #[arg(long, env = "LINKREG_INIT")]
    init: bool,
    /// Peer addresses of members, comma-separated: become a voter of that cluster (a no-op when
    /// already one; tried in turn until one answers).
    #[arg(long, env = "LINKREG_JOIN", value_name = "HOST:PORT")]
    join: Option<String>,
    /// Callers file (TOML, token hashes only; see `linkreg callers add`), re-read when it changes.
    #[arg(long, env = "LINKREG_CALLERS", value_name = "FILE")]
    callers: Option<PathBuf>,
    /// TLS certificate chain (PEM) of the client listener.
    #[arg(
        long,
        env = "LINKREG_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(
        long,
        env = "LINKREG_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM) on the client listener.
    #[arg(
        long,
        env = "LINKREG_TLS_CLIENT_CA",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_client_ca: Option<PathBuf>,
    /// This member's peer certificate (PEM, with DNS name `linkreg-peer`): enables mutual TLS
    /// between members.
    #[arg(long, env = "LINKREG_PEER_CERT", value_name = "FILE", requires_all = ["peer_key", "peer_ca"])]
    peer_cert: Option<PathBuf>,
    #[arg(
        long,
        env = "LINKREG_PEER_KEY",
        value_name = "FILE",
        requires = "peer_cert"
    )]
    peer_key: Option<PathBuf>,
    /// The CA that signs every member's peer certificate.
    #[arg(
        long,
        env = "LINKREG_PEER_CA",
        value_name = "FILE",
        requires = "peer_cert"
    )]
    peer_ca: Option<PathBuf>,
    /// Development mode, NOT for production: a self-initializing node (data in ./data) that
    /// accepts the well-known tokens `dev-keeper` and `dev-writer`. Other flags still apply,
    /// except `--callers`, which it excludes.
    #[arg(long, env = "LINKREG_DEV")]
    dev: bool,
    /// Log lines as text for people or as JSON objects for collectors [default: human]. Set
    /// before anything else is read, so not a config file key.
    #[arg(long, env = "LINKREG_LOG_FORMAT", value_enum, value_name = "FORMAT")]
    log_format: Option<super::LogFormat>,
}

impl ServeArgs {
    pub fn log_format(&self) -> super::LogFormat {
        self.log_format.unwrap_or_default()
    }
}

/// Where callers come from.
#[derive(Debug, PartialEq, Eq)]
pub enum CallerSource {
    File(PathBuf),
    Dev,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    id: Option<u64>,
    data_dir: Option<PathBuf>,
    client_addr: Option<SocketAddr>,
    peer_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    advertise_client: Option<String>,
    advertise_peer: Option<String>,
    advertise_http: Option<String>,
    init: Option<bool>,
    join: Option<String>,
    callers: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    peer_cert: Option<PathBuf>,
    peer_key: Option<PathBuf>,
    peer_ca: Option<PathBuf>,
}

fn read_pem(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
}

fn tls_files(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    what: &str,
) -> anyhow::Result<Option<TlsFiles>> {
    match (cert, key) {
        (None, None) if ca.is_none() => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert: read_pem(&cert, &format!("{what} certificate"))?,
            key: read_pem(&key, &format!("{what} key"))?,
            ca: ca
                .map(|ca| read_pem(&ca, &format!("{what} CA")))
                .transpose()?,
        })),
        _ => bail!("{what} TLS needs both a certificate and a key"),
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

fn advertised(explicit: Option<String>, bind: SocketAddr, flag: &str) -> anyhow::Result<String> {
    match explicit {
        Some(addr) => Ok(addr),
        None if bind.ip().is_unspecified() => {
            bail!("--{flag} is required when listening on {bind}: other nodes cannot dial it")
        }
        None => Ok(bind.to_string()),
    }
}

pub fn resolve(args: ServeArgs) -> anyhow::Result<(NodeConfig, CallerSource)> {
    let (config, callers) = resolve_node(args)?;
    Ok((config, callers?))
}

/// The node's settings, and separately its callers: `restore` needs the first only.
pub fn resolve_node(args: ServeArgs) -> anyhow::Result<(NodeConfig, anyhow::Result<CallerSource>)> {
    let file = match &args.config {
        Some(path) => read_file(path)?,
        None => FileConfig::default(),
    };
    let dev = args.dev;
    let id = args
        .id
        .or(file.id)
        .or(dev.then_some(1))
        .context("--id is required (or `id` in the config file, or LINKREG_ID)")?;
    if id == 0 {
        bail!("--id: node ids start at 1");
    }
    let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let client_addr = args
        .client_addr
        .or(file.client_addr)
        .unwrap_or(loopback(50051));
    let peer_addr = args.peer_addr.or(file.peer_addr).unwrap_or(loopback(50052));
    let http_addr = args.http_addr.or(file.http_addr).unwrap_or(loopback(8080));
    let advertise = NodeInfo {
        peer_addr: advertised(
            args.advertise_peer.or(file.advertise_peer),
            peer_addr,
            "advertise-peer",
        )?,
        client_addr: advertised(
            args.advertise_client.or(file.advertise_client),
            client_addr,
            "advertise-client",
        )?,
        http_addr: advertised(
            args.advertise_http.or(file.advertise_http),
            http_addr,
            "advertise-http",
        )?,
    };
    let join = args.join.or(file.join);
    // A dev node starts its own cluster unless told to join one.
    let init = args.init || file.init.unwrap_or(false) || (dev && join.is_none());
    if init && join.is_some() {
        bail!("--init and --join exclude each other: a node either starts a cluster or joins one");
    }
    let callers = match (args.callers.or(file.callers), dev) {
        // Either set of callers would silently drop the other: the dev tokens (and the warning
        // that they are public) or the real callers file. Say so instead of picking one.
        (Some(_), true) => Err(anyhow::anyhow!(
            "--dev and --callers exclude each other: development mode accepts only the \
             well-known development tokens; drop --dev to use a callers file"
        )),
        (Some(path), false) => Ok(CallerSource::File(path)),
        (None, true) => Ok(CallerSource::Dev),
        (None, false) => Err(anyhow::anyhow!(
            "--callers FILE is required (create one with `linkreg callers add`), or use --dev"
        )),
    };
    let default_dir = if dev && id == 1 {
        PathBuf::from("data")
    } else {
        PathBuf::from(format!("data/node-{id}"))
    };
    let config = NodeConfig {
        id,
        data_dir: args.data_dir.or(file.data_dir).unwrap_or(default_dir),
        client_addr,
        peer_addr,
        http_addr,
        advertise,
        init,
        join,
        tuning: Tuning::default(),
        write_timeout: Duration::from_secs(10),
        client_tls: tls_files(
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
            args.tls_client_ca.or(file.tls_client_ca),
            "client listener",
        )?,
        peer_tls: {
            let peer = tls_files(
                args.peer_cert.or(file.peer_cert),
                args.peer_key.or(file.peer_key),
                args.peer_ca.or(file.peer_ca),
                "peer",
            )?;
            if peer.as_ref().is_some_and(|p| p.ca.is_none()) {
                bail!("--peer-ca is required with --peer-cert: members must verify each other");
            }
            peer
        },
    };
    Ok((config, callers))
}

pub fn run(args: ServeArgs) -> anyhow::Result<std::process::ExitCode> {
    let (config, callers) = resolve(args)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let id = config.id;
        let auth = match callers {
            CallerSource::File(path) => Authenticator::watching(path).context("loading callers")?,
            CallerSource::Dev => {
                eprintln!(
                    "WARNING: development mode is NOT for production. Anyone may use the tokens\n  \
                     dev-keeper  (role keeper)\n  dev-writer  (role writer)\n\
                     clients send the header  authorization: Bearer dev-writer"
                );
                Authenticator::fixed(dev_callers())
            }
        };
        let running = server::start(config, auth, Arc::new(Faults::default()))
            .await
            .context("starting the node")?;
        tracing::info!(
            node = id,
            client = %running.client_addr,
            peer = %running.peer_addr,
            "serving"
        );
        shutdown_signal().await;
        tracing::info!(node = id, "shutting down");
        running.stop().await;
        Ok(std::process::ExitCode::SUCCESS)
    })
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM ({e}); only SIGINT stops the node");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

#[cfg(test)]
mod tests {
    use std::sync::{Mutex, MutexGuard};

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        serve: ServeArgs,
    }

    /// clap reads `LINKREG_*` while parsing and the environment is the whole process's: every
    /// test here holds this lock, so the one test that sets variables cannot leak them into
    /// another's parse.
    static ENV: Mutex<()> = Mutex::new(());

    fn lock() -> MutexGuard<'static, ()> {
        ENV.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn parse(args: &[&str]) -> ServeArgs {
        Cmd::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .expect("arguments parse")
            .serve
    }

    fn resolved(args: &[&str]) -> (NodeConfig, CallerSource) {
        resolve(parse(args)).expect("settings resolve")
    }

    fn refused(args: &[&str]) -> String {
        format!(
            "{:#}",
            resolve(parse(args)).expect_err("settings are refused")
        )
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A config file in a fresh directory (kept alive by the returned guard).
    fn config_file(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("linkreg.toml");
        std::fs::write(&path, text).unwrap();
        let path = path.to_str().unwrap().to_string();
        (dir, path)
    }

    const FILE: &str = r#"
        id = 3
        data-dir = "/var/lib/linkreg"
        client-addr = "127.0.0.1:7001"
        peer-addr = "127.0.0.1:7002"
        http-addr = "127.0.0.1:7003"
        advertise-peer = "n3.internal:7002"
        join = "n1.internal:7002"
        callers = "/etc/linkreg/callers.toml"
    "#;

    #[test]
    fn defaults() {
        let _env = lock();
        let (config, callers) = resolved(&["--id", "2", "--callers", "callers.toml"]);
        assert_eq!(config.id, 2);
        assert_eq!(config.data_dir, PathBuf::from("data/node-2"));
        assert_eq!(config.client_addr, addr("127.0.0.1:50051"));
        assert_eq!(config.peer_addr, addr("127.0.0.1:50052"));
        assert_eq!(config.http_addr, addr("127.0.0.1:8080"));
        assert_eq!(
            config.advertise,
            NodeInfo {
                peer_addr: "127.0.0.1:50052".into(),
                client_addr: "127.0.0.1:50051".into(),
                http_addr: "127.0.0.1:8080".into(),
            }
        );
        assert!(!config.init);
        assert_eq!(config.join, None);
        assert!(config.client_tls.is_none() && config.peer_tls.is_none());
        assert_eq!(callers, CallerSource::File("callers.toml".into()));
    }

    #[test]
    fn required_settings_are_named() {
        let _env = lock();
        assert!(refused(&["--callers", "c.toml"]).contains("--id is required"));
        assert!(refused(&["--id", "0", "--callers", "c.toml"]).contains("ids start at 1"));
        assert!(refused(&["--id", "1"]).contains("--callers FILE is required"));
        assert!(
            refused(&["--id", "1", "--callers", "c", "--init", "--join", "h:1"])
                .contains("--init and --join exclude each other")
        );
    }

    #[test]
    fn the_config_file_gives_values_and_flags_override_them() {
        let _env = lock();
        let (_dir, path) = config_file(FILE);
        let (config, callers) = resolved(&["--config", &path]);
        assert_eq!(config.id, 3);
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/linkreg"));
        assert_eq!(config.client_addr, addr("127.0.0.1:7001"));
        assert_eq!(config.peer_addr, addr("127.0.0.1:7002"));
        assert_eq!(config.http_addr, addr("127.0.0.1:7003"));
        assert_eq!(config.advertise.peer_addr, "n3.internal:7002");
        assert_eq!(config.advertise.client_addr, "127.0.0.1:7001");
        assert_eq!(config.join.as_deref(), Some("n1.internal:7002"));
        assert!(!config.init);
        assert_eq!(
            callers,
            CallerSource::File("/etc/linkreg/callers.toml".into())
        );

        let (config, callers) = resolved(&[
            "--config",
            &path,
            "--id",
            "5",
            "--data-dir",
            "here",
            "--client-addr",
            "127.0.0.1:9001",
            "--advertise-peer",
            "n5.internal:7002",
            "--join",
            "n2.internal:7002",
            "--callers",
            "mine.toml",
        ]);
        assert_eq!(config.id, 5);
        assert_eq!(config.data_dir, PathBuf::from("here"));
        assert_eq!(config.client_addr, addr("127.0.0.1:9001"));
        // Not overridden: still the file's.
        assert_eq!(config.peer_addr, addr("127.0.0.1:7002"));
        assert_eq!(config.advertise.peer_addr, "n5.internal:7002");
        assert_eq!(config.advertise.client_addr, "127.0.0.1:9001");
        assert_eq!(config.join.as_deref(), Some("n2.internal:7002"));
        assert_eq!(callers, CallerSource::File("mine.toml".into()));
    }

    #[test]
    fn a_bad_config_file_is_refused_with_its_name() {
        let _env = lock();
        let (_dir, path) = config_file("id = 1\ndata_dir = \"x\"\n");
        let err = refused(&["--config", &path, "--callers", "c"]);
        assert!(
            err.contains("parsing config file") && err.contains(&path),
            "{err}"
        );
        assert!(err.contains("data_dir"), "names the unknown key: {err}");
        let err = refused(&["--config", "/nonexistent/linkreg.toml"]);
        assert!(err.contains("reading config file"), "{err}");
    }

    #[test]
    fn advertised_addresses_default_to_the_listeners_and_can_be_overridden() {
        let _env = lock();
        fn with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
            [&["--id", "1", "--callers", "c.toml"][..], extra].concat()
        }
        let (config, _) = resolved(&with(&[
            "--peer-addr",
            "10.0.0.5:7000",
            "--advertise-client",
            "register.example:443",
            "--advertise-http",
            "soap.example:80",
        ]));
        assert_eq!(
            config.advertise,
            NodeInfo {
                peer_addr: "10.0.0.5:7000".into(),
                client_addr: "register.example:443".into(),
                http_addr: "soap.example:80".into(),
            }
        );
        // Listening on every interface: nobody can dial 0.0.0.0, so the address must be given.
        let err = refused(&with(&["--client-addr", "0.0.0.0:50051"]));
        assert!(err.contains("--advertise-client is required"), "{err}");
        let err = refused(&with(&["--peer-addr", "[::]:50052"]));
        assert!(err.contains("--advertise-peer is required"), "{err}");
        let (config, _) = resolved(&with(&[
            "--peer-addr",
            "0.0.0.0:50052",
            "--advertise-peer",
            "linkreg-1:50052",
        ]));
        assert_eq!(config.peer_addr, addr("0.0.0.0:50052"));
        assert_eq!(config.advertise.peer_addr, "linkreg-1:50052");
    }

    #[test]
    fn dev_mode_defaults_and_what_overrides_them() {
        let _env = lock();
        let (config, callers) = resolved(&["--dev"]);
        assert_eq!(config.id, 1);
        assert_eq!(config.data_dir, PathBuf::from("data"));
        assert!(config.init, "a dev node starts its own cluster");
        assert_eq!(config.join, None);
        assert_eq!(callers, CallerSource::Dev);

        let (config, _) = resolved(&["--dev", "--id", "2"]);
        assert_eq!(config.data_dir, PathBuf::from("data/node-2"));
        let (config, _) = resolved(&["--dev", "--data-dir", "/tmp/dev"]);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/dev"));
        assert!(config.init);
        let (config, _) = resolved(&["--dev", "--init"]);
        assert!(config.init);
        let (config, _) = resolved(&["--dev", "--id", "2", "--join", "127.0.0.1:50052"]);
        assert!(
            !config.init,
            "told to join: it does not start a cluster of its own"
        );
        assert_eq!(config.join.as_deref(), Some("127.0.0.1:50052"));
        let err = refused(&["--dev", "--init", "--join", "127.0.0.1:50052"]);
        assert!(
            err.contains("--init and --join exclude each other"),
            "{err}"
        );
    }

    #[test]
    fn dev_mode_and_a_callers_file_exclude_each_other() {
        let _env = lock();
        let err = refused(&["--dev", "--callers", "callers.toml"]);
        assert!(
            err.contains("--dev and --callers exclude each other"),
            "{err}"
        );
        // Also when the callers file comes from the config file.
        let (_dir, path) = config_file("callers = \"callers.toml\"\n");
        let err = refused(&["--dev", "--config", &path]);
        assert!(
            err.contains("--dev and --callers exclude each other"),
            "{err}"
        );
    }

    /// Removes the variables it set when dropped, also when an assertion fails.
    struct Vars(Vec<&'static str>);

    impl Vars {
        fn set(&mut self, name: &'static str, value: &str) {
            // SAFETY: every test that parses holds `ENV`, the std functions that read the
            // environment synchronise with this one, and no C code in this test binary reads
            // these variables.
            unsafe { std::env::set_var(name, value) };
            self.0.push(name);
        }
    }

    impl Drop for Vars {
        fn drop(&mut self) {
            for name in &self.0 {
                // SAFETY: as in `set`.
                unsafe { std::env::remove_var(name) };
            }
        }
    }

    /// The only test that touches the environment: flag > LINKREG_* > config file > default.
    #[test]
    fn environment_variables_override_the_file_and_flags_override_them() {
        let _env = lock();
        let (_dir, path) = config_file(FILE);
        let mut vars = Vars(Vec::new());
        vars.set("LINKREG_CONFIG", &path);
        vars.set("LINKREG_ID", "4");
        vars.set("LINKREG_CLIENT_ADDR", "127.0.0.1:8001");
        vars.set("LINKREG_ADVERTISE_PEER", "n4.internal:7002");
        vars.set("LINKREG_CALLERS", "env-callers.toml");

        let (config, callers) = resolved(&[]);
        assert_eq!(config.id, 4, "env over file");
        assert_eq!(config.client_addr, addr("127.0.0.1:8001"), "env over file");
        assert_eq!(
            config.advertise.peer_addr, "n4.internal:7002",
            "env over file"
        );
        assert_eq!(config.advertise.client_addr, "127.0.0.1:8001");
        assert_eq!(config.peer_addr, addr("127.0.0.1:7002"), "file, no env");
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/linkreg"));
        assert_eq!(callers, CallerSource::File("env-callers.toml".into()));

        let (config, callers) = resolved(&[
            "--id",
            "5",
            "--client-addr",
            "127.0.0.1:9001",
            "--advertise-peer",
            "n5.internal:7002",
            "--callers",
            "flag-callers.toml",
        ]);
        assert_eq!(config.id, 5, "flag over env");
        assert_eq!(config.client_addr, addr("127.0.0.1:9001"), "flag over env");
        assert_eq!(config.advertise.peer_addr, "n5.internal:7002");
        assert_eq!(callers, CallerSource::File("flag-callers.toml".into()));

        // Without the file, what neither flag nor env sets is the default.
        drop(vars);
        let mut vars = Vars(Vec::new());
        vars.set("LINKREG_ID", "6");
        vars.set("LINKREG_CALLERS", "c.toml");
        let (config, _) = resolved(&[]);
        assert_eq!(config.id, 6);
        assert_eq!(config.peer_addr, addr("127.0.0.1:50052"), "default");
        assert_eq!(config.data_dir, PathBuf::from("data/node-6"), "default");

        // Development mode from the environment, and its conflict with a callers file.
        let err = refused(&["--dev"]);
        assert!(
            err.contains("--dev and --callers exclude each other"),
            "{err}"
        );
        vars.set("LINKREG_DEV", "true");
        let err = refused(&[]);
        assert!(
            err.contains("--dev and --callers exclude each other"),
            "{err}"
        );
        drop(vars);
    }
}
