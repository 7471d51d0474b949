//! `linkreg backup` and `linkreg restore`: a point-in-time copy of a node's state, and a new
//! cluster seeded from one.
//!
//! A backup directory holds `linkreg.snap` (the state, checksummed) and `backup.json` (what it
//! is: source node, applied index and term, digest, size, when). Nothing is left there under the
//! final name unless the whole file arrived and its digest matched what the node announced.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use linkreg::proto::linkreg as pb;
use linkreg::proto::linkreg::cluster_admin_client::ClusterAdminClient;
use linkreg::raft::backup;
use serde_json::json;
use tokio_stream::StreamExt;

use super::connect::{TlsArgs, bearer, channel, code_name};
use super::serve::{ServeArgs, resolve_node};

const SNAPSHOT_FILE: &str = "linkreg.snap";
const MANIFEST_FILE: &str = "backup.json";

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Client address of the node to copy (any member: each holds the whole register).
    #[arg(long, env = "LINKREG_SERVER", default_value = "127.0.0.1:50051")]
    server: String,
    /// A keeper's token.
    #[arg(long, env = "LINKREG_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Directory to create (or an empty one) for the backup.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A directory written by `linkreg backup`.
    #[arg(long, value_name = "DIR")]
    from: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// The new node's settings, exactly as `linkreg serve` will be given them (id, data
    /// directory, addresses); the data directory must be empty.
    #[command(flatten)]
    node: ServeArgs,
}

impl RestoreArgs {
    pub fn log_format(&self) -> super::LogFormat {
        self.node.log_format()
    }
}

fn fsync_dir(dir: &Path) -> anyhow::Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

fn prepare_out_dir(out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        let mut entries = fs::read_dir(out).with_context(|| format!("--out {}", out.display()))?;
        if entries.next().is_some() {
            bail!(
                "--out {}: the directory is not empty; a backup never overwrites another",
                out.display()
            );
        }
    } else {
        fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    }
    Ok(())
}

pub fn run_backup(args: BackupArgs) -> anyhow::Result<ExitCode> {
    prepare_out_dir(&args.out)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let partial = args.out.join(format!("{SNAPSHOT_FILE}.partial"));
    let result = runtime.block_on(fetch(&args, &partial));
    let header = match result {
        Ok(header) => header,
        Err(e) => {
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
    };
    let info = match backup::verify(&partial) {
        Ok(info) => info,
        Err(e) => {
            let _ = fs::remove_file(&partial);
            bail!("the received backup is damaged ({e}); nothing was kept");
        }
    };
    let announced = (
        header.applied_index,
        header.applied_term,
        header.sha256.as_str(),
        header.rows,
        header.bytes,
    );
    let found = (
        info.last_log_id.index,
        info.last_log_id.leader_id.term,
        info.digest.sha256.as_str(),
        info.digest.rows,
        info.bytes,
    );
    if announced != found {
        let _ = fs::remove_file(&partial);
        bail!(
            "the received backup is not what the node announced (announced index, term, \
             sha256, rows, bytes {announced:?}; received {found:?}); nothing was kept"
        );
    }
    let snapshot = args.out.join(SNAPSHOT_FILE);
    fs::rename(&partial, &snapshot).context("naming the backup file")?;
    let manifest = json!({
        "format": 1,
        "source_node": header.node_id,
        "server": args.server,
        "applied_index": header.applied_index,
        "applied_term": header.applied_term,
        "sha256": header.sha256,
        "rows": header.rows,
        "bytes": header.bytes,
        "created_at": time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        "file": SNAPSHOT_FILE,
    });
    let manifest_path = args.out.join(MANIFEST_FILE);
    let mut out = fs::File::create(&manifest_path)
        .with_context(|| format!("creating {}", manifest_path.display()))?;
    writeln!(out, "{manifest:#}")?;
    out.sync_all()?;
    fsync_dir(&args.out)?;
    if args.json {
        println!("{manifest}");
    } else {
        println!(
            "backup of node {} at applied index {} (term {}): sha256 {} over {} rows, {} bytes, in {}",
            header.node_id,
            header.applied_index,
            header.applied_term,
            header.sha256,
            header.rows,
            header.bytes,
            args.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Streams the node's backup into `partial` (fsynced); returns the header it announced.
async fn fetch(args: &BackupArgs, partial: &Path) -> anyhow::Result<pb::BackupHeader> {
    let tls = args.tls.config()?;
    let mut client = ClusterAdminClient::with_interceptor(
        channel(&args.server, tls.as_ref()).await?,
        bearer(args.token.as_deref())?,
    )
    .max_decoding_message_size(4 * 1024 * 1024);
    let fail = |s: tonic::Status| anyhow::anyhow!("{}: {}", code_name(s.code()), s.message());
    let mut stream = client
        .backup(pb::BackupRequest {})
        .await
        .map_err(fail)?
        .into_inner();
    let header = match stream.next().await {
        Some(Ok(pb::BackupChunk {
            part: Some(pb::backup_chunk::Part::Header(header)),
        })) => header,
        Some(Ok(_)) => bail!("the node sent backup data before describing it"),
        Some(Err(status)) => return Err(fail(status)),
        None => bail!("the node closed the backup stream without sending anything"),
    };
    let mut file = std::io::BufWriter::new(
        fs::File::create(partial).with_context(|| format!("creating {}", partial.display()))?,
    );
    let mut received = 0u64;
    while let Some(chunk) = stream.next().await {
        match chunk.map_err(fail)?.part {
            Some(pb::backup_chunk::Part::Data(data)) => {
                received += data.len() as u64;
                if received > header.bytes {
                    bail!(
                        "the node sent more than the {} bytes it announced",
                        header.bytes
                    );
                }
                file.write_all(&data)?;
            }
            _ => bail!("the node sent a second header in one backup"),
        }
    }
    if received != header.bytes {
        bail!(
            "the backup stream ended after {received} of {} bytes",
            header.bytes
        );
    }
    let file = file.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(header)
}

pub fn run_restore(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let (config, _callers) = resolve_node(args.node)?;
    if config.join.is_some() {
        bail!("--join: a restored node starts a new cluster of its own; the other nodes join it");
    }
    let snapshot = if args.from.is_dir() {
        args.from.join(SNAPSHOT_FILE)
    } else {
        args.from.clone()
    };
    let manifest_path = snapshot.with_file_name(MANIFEST_FILE);
    let manifest: Option<serde_json::Value> = match fs::read(&manifest_path) {
        Ok(bytes) => Some(
            serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", manifest_path.display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", manifest_path.display())),
    };
    // The manifest's digest guards against a backup file swapped or mixed up with another.
    let expected = manifest
        .as_ref()
        .and_then(|m| m["sha256"].as_str().map(str::to_string));
    fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let info = backup::restore(
        &snapshot,
        &config.data_dir,
        config.id,
        config.advertise.clone(),
        expected.as_deref(),
    )
    .with_context(|| format!("restoring {}", snapshot.display()))?;
    let report = json!({
        "node_id": config.id,
        "data_dir": config.data_dir,
        "applied_index": info.last_log_id.index,
        "applied_term": info.last_log_id.leader_id.term,
        "sha256": info.digest.sha256,
        "rows": info.digest.rows,
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "restored into {} as node {}, the only voter of a new cluster, at applied index {}: \
             sha256 {} over {} rows. Start it with `linkreg serve` and the same settings; other \
             nodes then join it with --join {}.",
            config.data_dir.display(),
            config.id,
            info.last_log_id.index,
            info.digest.sha256,
            info.digest.rows,
            config.advertise.peer_addr,
        );
    }
    Ok(ExitCode::SUCCESS)
}
