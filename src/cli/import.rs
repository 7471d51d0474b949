//! `linkreg import FILE` and `linkreg export`: bulk loading and dumping of links.
//!
//! Import streams the file (CSV with a header, or NDJSON) in batches of rows, one `ImportLinks`
//! command (one raft entry) per batch, with several batches in flight. Each batch carries a
//! deterministic (client id, request id): the client id is derived from the file, batch `b` goes
//! to pipeline `b % P` as request `b / P + 1`. A retry after a lost answer is therefore answered
//! from the first attempt, and a re-run after an interruption is answered batch by batch from the
//! sessions (or, once those are gone, row by row as "already present"): nothing is added twice.
//! Every rejected row, the file's own parse errors included, goes to the reject file with its
//! line number; the counts printed at the end satisfy read = accepted + already present + rejected.

use std::any::Any;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use linkreg::proto::linkreg as pb;
use linkreg::proto::linkreg::link_register_client::LinkRegisterClient;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio_stream::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig};
use tonic_types::StatusExt;

use super::connect::{Bearer, TlsArgs, bearer, channel, code_name};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Csv,
    Ndjson,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// CSV with a header (ssin,country,key_type,value,valid_from,valid_to) or NDJSON.
    file: PathBuf,
    /// [default: from the extension: .csv is CSV, anything else NDJSON]
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Client addresses of the nodes, comma-separated; a batch goes to the next one when a node
    /// does not answer.
    #[arg(
        long,
        env = "LINKREG_SERVER",
        default_value = "127.0.0.1:50051",
        value_delimiter = ','
    )]
    server: Vec<String>,
    /// A writer's token.
    #[arg(long, env = "LINKREG_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Rows per batch (one raft entry each), at most 5000.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=5000))]
    batch: u32,
    /// Batches in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    parallel: u32,
    /// Where rejected rows go, one JSON object per line [default: FILE.rejects.ndjson].
    #[arg(long, value_name = "FILE")]
    rejects: Option<PathBuf>,
    /// Give up on a batch no node has answered for this long (the import stops; run it again).
    #[arg(long, default_value = "120", value_name = "SECONDS")]
    retry_for: u64,
    /// Print the final counts as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Client address of the node to read (any member).
    #[arg(long, env = "LINKREG_SERVER", default_value = "127.0.0.1:50051")]
    server: String,
    /// A keeper's token.
    #[arg(long, env = "LINKREG_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Write here instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    #[command(flatten)]
    tls: TlsArgs,
}

/// One row as the file has it: exactly the import's fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Row {
    pub ssin: String,
    pub country: String,
    pub key_type: String,
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<String>,
}

/// A row of the file, or why it could not be read, with its line number.
type Parsed = (u64, Result<Row, String>);

/// Reads rows one at a time; `bytes` follows how far into the file it has got.
fn rows(
    path: &Path,
    format: Format,
    bytes: Arc<AtomicU64>,
) -> anyhow::Result<Box<dyn Iterator<Item = Parsed> + Send>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let counted = Counted {
        inner: file,
        bytes: bytes.clone(),
    };
    match format {
        Format::Ndjson => {
            let lines = BufReader::with_capacity(1 << 20, counted).lines();
            Ok(Box::new(lines.enumerate().filter_map(|(n, line)| {
                let number = n as u64 + 1;
                match line {
                    Err(e) => Some((number, Err(format!("unreadable line: {e}")))),
                    Ok(line) if line.trim().is_empty() => None,
                    Ok(line) => Some((
                        number,
                        serde_json::from_str::<Row>(&line).map_err(|e| format!("not a row: {e}")),
                    )),
                }
            })))
        }
        Format::Csv => {
            let mut reader = csv::ReaderBuilder::new()
                .flexible(true)
                .from_reader(BufReader::with_capacity(1 << 20, counted));
            let headers = reader
                .headers()
                .with_context(|| format!("reading the header of {}", path.display()))?
                .clone();
            let column = |name: &str| headers.iter().position(|h| h.trim() == name);
            let [ssin, country, key_type, value] =
                ["ssin", "country", "key_type", "value"].map(column);
            let (Some(ssin), Some(country), Some(key_type), Some(value)) =
                (ssin, country, key_type, value)
            else {
                bail!(
                    "{}: the header must name ssin, country, key_type and value (and may name \
                     valid_from, valid_to); it is {:?}",
                    path.display(),
                    headers.iter().collect::<Vec<_>>()
                );
            };
            if let Some(unknown) = headers.iter().find(|h| {
                ![
                    "ssin",
                    "country",
                    "key_type",
                    "value",
                    "valid_from",
                    "valid_to",
                ]
                .contains(&h.trim())
            }) {
                bail!(
                    "{}: unknown column {unknown:?} in the header",
                    path.display()
                );
            }
            let (from, to) = (column("valid_from"), column("valid_to"));
            let width = headers.len();
            Ok(Box::new(reader.into_records().map(move |record| {
                let record = match record {
                    Ok(r) => r,
                    Err(e) => {
                        let line = e.position().map_or(0, |p| p.line());
                        return (line, Err(format!("not a CSV record: {e}")));
                    }
                };
                let line = record.position().map_or(0, |p| p.line());
                if record.len() != width {
                    return (
                        line,
                        Err(format!(
                            "{} fields where the header has {width}",
                            record.len()
                        )),
                    );
                }
                let get = |i: usize| record.get(i).unwrap_or_default().to_string();
                let optional = |i: Option<usize>| i.map(get).filter(|v| !v.is_empty());
                (
                    line,
                    Ok(Row {
                        ssin: get(ssin),
                        country: get(country),
                        key_type: get(key_type),
                        value: get(value),
                        valid_from: optional(from),
                        valid_to: optional(to),
                    }),
                )
            })))
        }
    }
}

struct Counted<R> {
    inner: R,
    bytes: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// A batch: its number and its rows with their line numbers.
struct Batch {
    number: u64,
    lines: Vec<u64>,
    rows: Vec<pb::ImportRow>,
}

/// A rejected row, as the reject file records it.
#[derive(Debug, serde::Serialize)]
struct Reject {
    line: u64,
    code: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    field: String,
    reason: String,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    read: u64,
    accepted: u64,
    already_present: u64,
    rejected: u64,
}

type Client = LinkRegisterClient<InterceptedService<Channel, Bearer>>;

/// One attempt at a batch (or a connection): a batch of 5000 rows applies in well under a
/// second on the 2-core reference machine.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest pause between two attempts at a batch.
const PAUSE_MAX: Duration = Duration::from_secs(2);

/// A node's answer to a batch, and whether this run had to send the batch more than once.
struct Answer {
    reply: pb::ImportLinksResponse,
    resent: bool,
}

/// What a pipeline needs to send its batches.
struct Sender {
    servers: Vec<String>,
    tls: Option<ClientTlsConfig>,
    bearer: Bearer,
    client_id: String,
    retry_for: Duration,
}

impl Sender {
    async fn connect(&self, server: usize) -> anyhow::Result<Client> {
        let Some(addr) = self.servers.get(server % self.servers.len().max(1)) else {
            bail!("no --server to send to");
        };
        Ok(LinkRegisterClient::with_interceptor(
            channel(addr, self.tls.as_ref()).await?,
            self.bearer.clone(),
        )
        .max_encoding_message_size(8 * 1024 * 1024)
        .max_decoding_message_size(8 * 1024 * 1024))
    }

    /// Sends one batch until a node gives a definite answer. A stale (or differently used)
    /// request id means an earlier run got further with this pipeline: the batch is sent again
    /// without a session, and its rows come back as already present (or rejected, as before).
    async fn send(
        &self,
        client: &mut Option<(usize, Client)>,
        request_id: u64,
        rows: Vec<pb::ImportRow>,
    ) -> anyhow::Result<Answer> {
        let started = Instant::now();
        let mut sent = 0u32;
        let mut server = client.as_ref().map_or(0, |(s, _)| *s);
        let mut session = true;
        let mut pause = Duration::from_millis(100);
        loop {
            if client.is_none() {
                let connected = tokio::time::timeout(ATTEMPT_TIMEOUT, self.connect(server))
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("connecting timed out")));
                match connected {
                    Ok(c) => *client = Some((server, c)),
                    Err(e) => {
                        if started.elapsed() > self.retry_for {
                            return Err(e.context("no node answered"));
                        }
                        server += 1;
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                }
            }
            let Some((_, c)) = client.as_mut() else {
                continue;
            };
            let request = pb::ImportLinksRequest {
                rows: rows.clone(),
                client_id: session.then(|| self.client_id.clone()),
                request_id: session.then_some(request_id),
            };
            sent += 1;
            // A node that accepted the connection but never answers must not hold the
            // pipeline (and, through it, the whole import) for ever.
            let answered = tokio::time::timeout(ATTEMPT_TIMEOUT, c.import_links(request))
                .await
                .unwrap_or_else(|_| {
                    Err(tonic::Status::deadline_exceeded(
                        "no answer within the attempt timeout",
                    ))
                });
            match answered {
                Ok(reply) => {
                    return Ok(Answer {
                        reply: reply.into_inner(),
                        resent: sent > 1,
                    });
                }
                Err(status) => {
                    let reason = status
                        .get_error_details()
                        .error_info()
                        .map(|i| i.reason.clone());
                    // An earlier run with other --batch/--parallel settings used this request
                    // id for other rows.
                    let reused = status.code() == tonic::Code::InvalidArgument
                        && status.get_error_details().bad_request().is_some_and(|b| {
                            b.field_violations.iter().any(|v| v.field == "request_id")
                        });
                    if session && (reason.as_deref() == Some("STALE_REQUEST") || reused) {
                        session = false;
                        continue;
                    }
                    let retryable = matches!(
                        status.code(),
                        tonic::Code::Unavailable
                            | tonic::Code::DeadlineExceeded
                            | tonic::Code::Unknown
                            | tonic::Code::Cancelled
                            | tonic::Code::Aborted
                    );
                    if !retryable || started.elapsed() > self.retry_for {
                        bail!("{}: {}", code_name(status.code()), status.message());
                    }
                    // Another node may answer; the session makes the retry safe.
                    *client = None;
                    server += 1;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(PAUSE_MAX);
                }
            }
        }
    }
}

fn file_id(path: &Path) -> anyhow::Result<String> {
    let canonical = path
        .canonicalize()
        .with_context(|| format!("locating {}", path.display()))?;
    let len = std::fs::metadata(&canonical)?.len();
    let mut hash = Sha256::new();
    hash.update(canonical.to_string_lossy().as_bytes());
    hash.update(len.to_be_bytes());
    Ok(hex::encode(&hash.finalize()[..8]))
}

fn progress(total: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}% {msg} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

pub fn run_import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let format = args.format.unwrap_or(
        if args.file.extension().and_then(|e| e.to_str()) == Some("csv") {
            Format::Csv
        } else {
            Format::Ndjson
        },
    );
    let total = std::fs::metadata(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?
        .len();
    let rejects_path = args.rejects.clone().unwrap_or_else(|| {
        let mut name = args.file.clone().into_os_string();
        name.push(".rejects.ndjson");
        PathBuf::from(name)
    });
    let bytes = Arc::new(AtomicU64::new(0));
    let source = rows(&args.file, format, bytes.clone())?;
    let mut rejects = BufWriter::new(
        File::create(&rejects_path)
            .with_context(|| format!("creating {}", rejects_path.display()))?,
    );
    let id = file_id(&args.file)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let started = Instant::now();
    let bar = progress(total);
    let result = runtime.block_on(import(&args, &id, source, &mut rejects, &bar, &bytes));
    bar.finish_and_clear();
    rejects.flush()?;
    let (counts, failure) = match result {
        Ok(counts) => (counts, None),
        Err((counts, e)) => (counts, Some(e)),
    };
    let seconds = started.elapsed().as_secs_f64();
    let rate = counts.read as f64 / seconds.max(1e-9);
    let balanced = counts.read == counts.accepted + counts.already_present + counts.rejected;
    if args.json {
        println!(
            "{}",
            json!({
                "read": counts.read, "accepted": counts.accepted,
                "already_present": counts.already_present, "rejected": counts.rejected,
                "rejects_file": rejects_path, "seconds": seconds, "rows_per_second": rate,
                "complete": failure.is_none(),
            })
        );
    } else {
        println!(
            "import: read {} = accepted {} + already present {} + rejected {} (see {}) in {seconds:.1} s, {rate:.0} rows/s",
            counts.read,
            counts.accepted,
            counts.already_present,
            counts.rejected,
            rejects_path.display()
        );
    }
    match failure {
        None if !balanced => bail!("the counts do not add up: {counts:?}"),
        None => Ok(ExitCode::SUCCESS),
        Some(e) => Err(e.context(
            "the import stopped; what was sent is in the register, and running the same \
             command again adds nothing twice",
        )),
    }
}

/// Reads, batches, sends and counts. On failure, returns the counts so far with the error.
async fn import(
    args: &ImportArgs,
    id: &str,
    source: Box<dyn Iterator<Item = Parsed> + Send>,
    rejects: &mut impl Write,
    bar: &ProgressBar,
    bytes: &AtomicU64,
) -> Result<Counts, (Counts, anyhow::Error)> {
    let mut counts = Counts::default();
    let setup = (|| Ok::<_, anyhow::Error>((bearer(args.token.as_deref())?, args.tls.config()?)))();
    let (bearer, tls) = setup.map_err(|e| (counts, e))?;
    let pipelines = args.parallel as u64;
    let batch_size = args.batch as usize;
    // Parsing runs on a blocking thread; local rejects come back through the same channel.
    let (parsed_tx, mut parsed_rx) = mpsc::channel::<Result<Batch, (u64, String)>>(64);
    let reader = tokio::task::spawn_blocking(move || {
        let mut number = 0;
        let mut batch = Batch {
            number,
            lines: Vec::with_capacity(batch_size),
            rows: Vec::with_capacity(batch_size),
        };
        for (line, row) in source {
            match row {
                Ok(row) => {
                    batch.lines.push(line);
                    batch.rows.push(pb::ImportRow {
                        ssin: row.ssin,
                        country: row.country,
                        key_type: row.key_type,
                        value: row.value,
                        valid_from: row.valid_from,
                        valid_to: row.valid_to,
                    });
                    if batch.rows.len() == batch_size {
                        number += 1;
                        let full = std::mem::replace(
                            &mut batch,
                            Batch {
                                number,
                                lines: Vec::with_capacity(batch_size),
                                rows: Vec::with_capacity(batch_size),
                            },
                        );
                        if parsed_tx.blocking_send(Ok(full)).is_err() {
                            return;
                        }
                    }
                }
                Err(reason) => {
                    if parsed_tx.blocking_send(Err((line, reason))).is_err() {
                        return;
                    }
                }
            }
        }
        if !batch.rows.is_empty() {
            let _ = parsed_tx.blocking_send(Ok(batch));
        }
    });
    // One task per pipeline, each sending its batches in order. A pipeline never waits to
    // report: its reports go to an unbounded channel that the main loop drains before anything
    // else, so a pipeline always gets back to its queue, and the main loop, waiting for room in
    // that queue, always gets it. (With a bounded report channel the main loop, waiting for room
    // in a full pipeline, stopped draining the reports, the pipeline waited for room among the
    // reports, and both waited for ever.) The reports in the channel never exceed the batches
    // handed out, at most three per pipeline when the main loop hands out one more.
    let (done_tx, mut reports) = mpsc::unbounded_channel::<Report>();
    let mut senders = Vec::new();
    let mut tasks = JoinSet::new();
    // Which pipeline each task is, and how to stop it.
    let mut lane_of = std::collections::HashMap::new();
    let mut handles: Vec<AbortHandle> = Vec::new();
    for lane in 0..pipelines as usize {
        let (tx, mut rx) = mpsc::channel::<Batch>(2);
        let sender = Sender {
            servers: args.server.clone(),
            tls: tls.clone(),
            bearer: bearer.clone(),
            client_id: format!("import-{id}-{lane}"),
            retry_for: Duration::from_secs(args.retry_for),
        };
        let done = done_tx.clone();
        let handle = tasks.spawn(async move {
            // Spread the pipelines over the nodes from the start. Bounded like every attempt: a
            // node that accepts the connection but never completes the handshake must not hold
            // the pipeline; `send` connects again (elsewhere) when this did not work.
            let mut client = match tokio::time::timeout(ATTEMPT_TIMEOUT, sender.connect(lane)).await
            {
                Ok(Ok(c)) => Some((lane, c)),
                _ => None,
            };
            while let Some(batch) = rx.recv().await {
                let request_id = batch.number / pipelines + 1;
                let reply = sender.send(&mut client, request_id, batch.rows).await;
                let failed = reply.is_err();
                let report = Report {
                    lane,
                    number: batch.number,
                    lines: batch.lines,
                    reply,
                };
                if done.send(report).is_err() {
                    return;
                }
                if failed {
                    // Every batch handed to this pipeline is accounted for, sent or not: the
                    // main loop waits for each one's report.
                    rx.close();
                    while let Some(batch) = rx.recv().await {
                        let report = Report {
                            lane,
                            number: batch.number,
                            lines: batch.lines,
                            reply: Err(anyhow::anyhow!("not sent: an earlier batch failed")),
                        };
                        if done.send(report).is_err() {
                            return;
                        }
                    }
                    return;
                }
            }
        });
        lane_of.insert(handle.id(), lane);
        handles.push(handle);
        senders.push(tx);
    }
    drop(done_tx);
    let mut lanes: Vec<Lane> = (0..pipelines).map(|_| Lane::default()).collect();
    // The longest a pipeline can rightly go without reporting while it owes a batch: its first
    // connection, then `send`'s retries until `retry_for`, and the attempts (a connection, a
    // request, a resend without session) and the pause under way when that time ran out.
    let stall_limit = Duration::from_secs(args.retry_for) + 4 * ATTEMPT_TIMEOUT + PAUSE_MAX;
    // The batch read and not yet handed to its pipeline: the main loop waits for room in that
    // pipeline's queue while it keeps taking reports.
    let mut pending: Option<Batch> = None;
    let mut reading = true;
    let mut reports_open = true;
    let mut failure: Option<anyhow::Error> = None;
    loop {
        let owed: usize = lanes.iter().map(|l| l.owed.len()).sum();
        if owed == 0 && (failure.is_some() || (!reading && pending.is_none())) {
            break;
        }
        let target = pending
            .as_ref()
            .map(|b| (b.number % pipelines) as usize)
            .unwrap_or(0);
        let hand_out = failure.is_none() && pending.is_some() && !lanes[target].closed;
        let deadline = lanes
            .iter()
            .filter(|l| !l.owed.is_empty())
            .map(|l| l.since + stall_limit)
            .min();
        tokio::select! {
            // Reports first: a pipeline's reports are in the channel before its task ends, so
            // an ended pipeline's batches are all settled before its end is looked at.
            biased;
            report = reports.recv(), if reports_open => {
                let Some(report) = report else {
                    // Every pipeline has ended; how each one ended is settled below.
                    reports_open = false;
                    continue;
                };
                let lane = &mut lanes[report.lane];
                if lane.abandoned {
                    // Given up as stalled: its batches are already settled as not counted.
                    continue;
                }
                let owed = lane.owed.pop_front();
                let Some(owed) = owed.filter(|o| o.number == report.number) else {
                    let e = anyhow::anyhow!(
                        "pipeline {} reported batch {} which it was not the next to owe",
                        report.lane,
                        report.number
                    );
                    return Err((counts, e));
                };
                lane.since = tokio::time::Instant::now();
                match report.reply {
                    Ok(answer) => tally(&mut counts, &report.lines, &answer, rejects).map_err(|e| (counts, e))?,
                    Err(e) => {
                        // The batch's rows were read but their fate is unknown: not counted.
                        counts.read -= owed.rows;
                        failure.get_or_insert(e);
                    }
                }
                bar.set_position(bytes.load(Ordering::Relaxed));
                let rate = counts.read as f64 / bar.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!("{} rows, {rate:.0} rows/s", counts.read));
            }
            Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let (id, ended) = match joined {
                    Ok((id, ())) => (id, Ok(())),
                    Err(e) => (e.id(), Err(e)),
                };
                let Some(&lane) = lane_of.get(&id) else { continue };
                // A pipeline ends on its own only after reporting a failure and every batch
                // queued behind it. One that ends otherwise (a panic drops its queue with the
                // batches in it) would leave those batches unreported for ever.
                let state = &mut lanes[lane];
                state.closed = true;
                let lost = std::mem::take(&mut state.owed);
                for batch in &lost {
                    counts.read -= batch.rows;
                }
                let how = match ended {
                    _ if state.abandoned => continue,
                    Ok(()) if lost.is_empty() && failure.is_some() => continue,
                    Ok(()) => "ended".to_string(),
                    Err(e) if e.is_panic() => format!("panicked ({})", panic_message(e.into_panic())),
                    Err(e) => format!("was cancelled ({e})"),
                };
                let e = match lost.front() {
                    Some(first) => anyhow::anyhow!(
                        "pipeline {lane} {how} with {} batches unanswered, the first from line {}",
                        lost.len(),
                        first.first_line
                    ),
                    None => anyhow::anyhow!("pipeline {lane} {how} before the end of the file"),
                };
                failure.get_or_insert(e);
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                // Cannot happen while each attempt is bounded; if it does, stop with the cause
                // instead of waiting for ever. Only the stalled pipelines are given up: the others
                // still report what they were sent.
                let now = tokio::time::Instant::now();
                for (lane, state) in lanes.iter_mut().enumerate() {
                    let Some(first) = state.owed.front() else { continue };
                    if state.since + stall_limit > now {
                        continue;
                    }
                    failure.get_or_insert(anyhow::anyhow!(
                        "pipeline {lane} has reported nothing for {} s while it owes {} batches, \
                         the first from line {}: given up",
                        stall_limit.as_secs(),
                        state.owed.len(),
                        first.first_line
                    ));
                    for batch in state.owed.drain(..) {
                        counts.read -= batch.rows;
                    }
                    state.abandoned = true;
                    state.closed = true;
                    handles[lane].abort();
                }
            }
            permit = senders[target].reserve(), if hand_out => match (permit, pending.take()) {
                (Ok(permit), Some(batch)) => {
                    let state = &mut lanes[target];
                    if state.owed.is_empty() {
                        state.since = tokio::time::Instant::now();
                    }
                    let rows = batch.rows.len() as u64;
                    state.owed.push_back(Owed {
                        number: batch.number,
                        first_line: batch.lines.first().copied().unwrap_or(0),
                        rows,
                    });
                    counts.read += rows;
                    permit.send(batch);
                }
                (Err(_), batch) => {
                    // That pipeline stopped after a failure, which it reports itself (or, had it
                    // panicked, its end does): the batch is never sent, nor counted.
                    lanes[target].closed = true;
                    pending = batch;
                }
                (Ok(_), None) => {}
            },
            parsed = parsed_rx.recv(), if reading && pending.is_none() && failure.is_none() => match parsed {
                Some(Ok(batch)) => pending = Some(batch),
                Some(Err((line, reason))) => {
                    counts.read += 1;
                    counts.rejected += 1;
                    write_reject(rejects, &Reject { line, code: "UNREADABLE_ROW".into(), field: String::new(), reason })
                        .map_err(|e| (counts, e))?;
                }
                None => reading = false,
            },
            else => {
                // Nothing left that could ever answer: say so rather than wait.
                failure.get_or_insert(anyhow::anyhow!(
                    "every pipeline has ended with {owed} batches unanswered"
                ));
                break;
            }
        }
    }
    drop(senders);
    drop(parsed_rx);
    // The reader stops at its next send now; a reader that panicked has read only part of the
    // file, which must not pass for a complete import.
    if let Err(e) = reader.await {
        let how = if e.is_panic() {
            format!("panicked ({})", panic_message(e.into_panic()))
        } else {
            e.to_string()
        };
        failure.get_or_insert(anyhow::anyhow!("reading the file {how}"));
    }
    match failure {
        None => Ok(counts),
        Some(e) => Err((counts, e)),
    }
}

/// A pipeline's report on one batch it was handed.
struct Report {
    lane: usize,
    number: u64,
    lines: Vec<u64>,
    reply: anyhow::Result<Answer>,
}

/// A batch handed to a pipeline and not yet reported: its rows are counted as read until the
/// report says what became of them.
struct Owed {
    number: u64,
    first_line: u64,
    rows: u64,
}

/// What the main loop knows of one pipeline.
struct Lane {
    /// In the order handed out, which is the order the pipeline reports them in.
    owed: VecDeque<Owed>,
    /// Since when the pipeline has owed its oldest report: its last report, or the hand-out
    /// that gave it work while it owed nothing.
    since: tokio::time::Instant,
    /// Its queue takes no more batches.
    closed: bool,
    /// Given up as stalled; whatever it still reports is ignored.
    abandoned: bool,
}

impl Default for Lane {
    fn default() -> Self {
        Lane {
            owed: VecDeque::new(),
            since: tokio::time::Instant::now(),
            closed: false,
            abandoned: false,
        }
    }
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_string())
}

fn write_reject(out: &mut impl Write, reject: &Reject) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, reject)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Adds a batch's answer to the counts. An answer replayed from the session although this run
/// sent the batch only once was recorded by an earlier run: its created rows were already there
/// before this run began.
fn tally(
    counts: &mut Counts,
    lines: &[u64],
    answer: &Answer,
    rejects: &mut impl Write,
) -> anyhow::Result<()> {
    let reply = &answer.reply;
    let earlier_run = reply.replayed && !answer.resent;
    if reply.rows.len() != lines.len() {
        bail!(
            "the node answered {} rows for a batch of {}",
            reply.rows.len(),
            lines.len()
        );
    }
    for (line, row) in lines.iter().zip(&reply.rows) {
        match pb::ImportRowStatus::try_from(row.status) {
            Ok(pb::ImportRowStatus::ImportRowCreated) if earlier_run => counts.already_present += 1,
            Ok(pb::ImportRowStatus::ImportRowCreated) => counts.accepted += 1,
            Ok(pb::ImportRowStatus::ImportRowAlreadyPresent) => counts.already_present += 1,
            _ => {
                counts.rejected += 1;
                write_reject(
                    rejects,
                    &Reject {
                        line: *line,
                        code: row.code.clone(),
                        field: row.field.clone(),
                        reason: row.message.clone(),
                    },
                )?;
            }
        }
    }
    Ok(())
}

pub fn run_export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(BufWriter::new(
            File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let count = runtime.block_on(async {
        let tls = args.tls.config()?;
        let mut client = LinkRegisterClient::with_interceptor(
            channel(&args.server, tls.as_ref()).await?,
            bearer(args.token.as_deref())?,
        )
        .max_decoding_message_size(8 * 1024 * 1024);
        let fail = |s: tonic::Status| anyhow::anyhow!("{}: {}", code_name(s.code()), s.message());
        let mut stream = client
            .export_links(pb::ExportLinksRequest {})
            .await
            .map_err(fail)?
            .into_inner();
        let mut count = 0u64;
        while let Some(chunk) = stream.next().await {
            for link in chunk.map_err(fail)?.links {
                let row = Row {
                    ssin: link.ssin,
                    country: link.country,
                    key_type: link.key_type,
                    value: link.value,
                    valid_from: link.valid_from,
                    valid_to: link.valid_to,
                };
                serde_json::to_writer(&mut out, &row)?;
                out.write_all(b"\n")?;
                count += 1;
            }
        }
        Ok::<_, anyhow::Error>(count)
    })?;
    out.flush()?;
    eprintln!("export: {count} links from {}", args.server);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(format: Format, text: &str) -> Vec<Parsed> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows");
        std::fs::write(&path, text).unwrap();
        rows(&path, format, Arc::default()).unwrap().collect()
    }

    fn row(ssin: &str, value: &str, from: Option<&str>) -> Row {
        Row {
            ssin: ssin.into(),
            country: "FR".into(),
            key_type: "PASSPORT".into(),
            value: value.into(),
            valid_from: from.map(str::to_string),
            valid_to: None,
        }
    }

    #[test]
    fn csv_rows_carry_their_line_numbers_and_empty_cells_are_absent() {
        let parsed = parse(
            Format::Csv,
            "ssin,country,key_type,value,valid_from,valid_to\n\
             85073003328,FR,PASSPORT,AB12345,,\n\
             85073003328,FR,PASSPORT,AB12346,2020-01-01,\n\
             only,three,fields\n",
        );
        assert_eq!(parsed[0], (2, Ok(row("85073003328", "AB12345", None))));
        assert_eq!(
            parsed[1],
            (3, Ok(row("85073003328", "AB12346", Some("2020-01-01"))))
        );
        assert_eq!(parsed[2].0, 4);
        assert!(parsed[2].1.as_ref().unwrap_err().contains("3 fields"));
    }

    #[test]
    fn a_csv_header_without_the_required_columns_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.csv");
        std::fs::write(&path, "ssin,country,value\n1,2,3\n").unwrap();
        let err = rows(&path, Format::Csv, Arc::default()).err().unwrap();
        assert!(err.to_string().contains("key_type"), "{err}");
        std::fs::write(&path, "ssin,country,key_type,value,colour\n").unwrap();
        let err = rows(&path, Format::Csv, Arc::default()).err().unwrap();
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn ndjson_lines_that_are_not_rows_are_rejected_with_their_line() {
        let parsed = parse(
            Format::Ndjson,
            "{\"ssin\":\"85073003328\",\"country\":\"FR\",\"key_type\":\"PASSPORT\",\"value\":\"AB12345\"}\n\
             \n\
             not json\n\
             {\"ssin\":\"1\",\"country\":\"FR\",\"key_type\":\"PASSPORT\",\"value\":\"X\",\"extra\":1}\n",
        );
        assert_eq!(parsed.len(), 3, "the blank line is no row");
        assert_eq!(parsed[0], (1, Ok(row("85073003328", "AB12345", None))));
        assert_eq!(parsed[1].0, 3);
        assert!(parsed[1].1.is_err());
        assert_eq!(parsed[2].0, 4);
        assert!(parsed[2].1.as_ref().unwrap_err().contains("extra"));
    }

    #[test]
    fn exported_rows_read_back_as_the_same_rows() {
        let original = vec![
            row("85073003328", "AB12345", Some("2020-01-01")),
            row("75260898052", "ZZ 99 88", None),
        ];
        let text: String = original
            .iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect();
        let parsed: Vec<Row> = parse(Format::Ndjson, &text)
            .into_iter()
            .map(|(_, r)| r.unwrap())
            .collect();
        assert_eq!(parsed, original);
    }
}
