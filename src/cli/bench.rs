//! `linkreg bench`: load a running cluster from many concurrent clients and report what they
//! see: throughput, latency percentiles (hdrhistogram, microseconds) and errors by gRPC code.
//!
//! ```text
//!   connect N channels (round-robin over --servers)
//!   → working set: --preload rows of `gen --seed S` created through the API (LINK_EXISTS counts
//!     as present), or with --preload 0 the first --working-set rows of that seed, as imported
//!   → warm-up (ops not counted) → measured window → report
//! ```
//!
//! Creates during the run carry values `BENCH<run id>-<counter>` (a prefix `gen` never produces)
//! so they never meet an existing key. An error never stops a client; the run fails (exit 1) only
//! when nothing succeeded.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use linkreg::api::observe::code_name;
use linkreg::proto::linkreg as pb;
use linkreg::proto::linkreg::link_register_client::LinkRegisterClient;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use super::connect::{Bearer, TlsArgs, bearer, channel};
use super::r#gen::{Generator, Row};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What each client does: create links, search by SSIN, search by foreign key, or a mix of
    /// 90 % searches (half each) and 10 % creates.
    #[arg(long, value_enum, default_value_t = Workload::Mixed)]
    workload: Workload,
    /// Concurrent clients, each with its own connection.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Length of the measured window (e.g. 30s, 2m, 1m30s, 500ms).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Load before measuring, not counted.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    warmup: Duration,
    /// Client addresses of the nodes; clients are spread over them round-robin.
    #[arg(
        long = "servers",
        alias = "server",
        env = "LINKREG_SERVER",
        value_delimiter = ',',
        default_value = "127.0.0.1:50051"
    )]
    servers: Vec<String>,
    /// Consistency of the searches.
    #[arg(long, value_enum, default_value_t = ConsistencyArg::Local)]
    consistency: ConsistencyArg,
    /// A writer's token.
    #[arg(long, env = "LINKREG_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Seed of the working set (the same as `linkreg gen --seed`) and of the clients' choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Links of `gen --seed` to create through the API before measuring (already present ones
    /// are kept). 0: the cluster already holds an import of a `gen` file with this seed.
    #[arg(long, default_value_t = 10_000)]
    preload: usize,
    /// With --preload 0: how many of the seed's first links to query (at most the number
    /// imported).
    #[arg(long, default_value_t = 10_000)]
    working_set: usize,
    /// Concurrent creates while preloading.
    #[arg(long, default_value_t = 64)]
    preload_clients: usize,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    Create,
    SearchSsin,
    SearchKey,
    Mixed,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Create => "create",
            Workload::SearchSsin => "search-ssin",
            Workload::SearchKey => "search-key",
            Workload::Mixed => "mixed",
        }
    }

    fn searches(self) -> bool {
        self != Workload::Create
    }

    fn pick(self, rng: &mut ChaCha8Rng) -> Op {
        match self {
            Workload::Create => Op::Create,
            Workload::SearchSsin => Op::SearchSsin,
            Workload::SearchKey => Op::SearchKey,
            Workload::Mixed => match rng.random_range(0..20) {
                0..9 => Op::SearchSsin,
                9..18 => Op::SearchKey,
                _ => Op::Create,
            },
        }
    }

    fn ops(self) -> &'static [Op] {
        match self {
            Workload::Create => &[Op::Create],
            Workload::SearchSsin => &[Op::SearchSsin],
            Workload::SearchKey => &[Op::SearchKey],
            Workload::Mixed => &[Op::SearchSsin, Op::SearchKey, Op::Create],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ConsistencyArg {
    Local,
    Linearizable,
}

impl ConsistencyArg {
    fn proto(self) -> i32 {
        match self {
            ConsistencyArg::Local => pb::Consistency::Local as i32,
            ConsistencyArg::Linearizable => pb::Consistency::Linearizable as i32,
        }
    }

    fn name(self) -> &'static str {
        match self {
            ConsistencyArg::Local => "local",
            ConsistencyArg::Linearizable => "linearizable",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Create = 0,
    SearchSsin = 1,
    SearchKey = 2,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::SearchSsin => "search_ssin",
            Op::SearchKey => "search_key",
        }
    }
}

/// Parses `30s`, `2m`, `1m30s`, `500ms`, `1h`, `1.5s`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad = || format!("{text:?} is not a duration such as 30s, 2m, 1m30s or 500ms");
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|_| bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let value: f64 = number.parse().map_err(|_| bad())?;
        let scale = match unit {
            "ms" => 0.001,
            "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += Duration::try_from_secs_f64(value * scale).map_err(|_| bad())?;
        rest = tail.trim_start();
    }
    Ok(total)
}

type Client = LinkRegisterClient<InterceptedService<Channel, Bearer>>;

/// `CODE (REASON): message`, the reason being the register's stable code when it gave one.
fn describe(status: &tonic::Status) -> String {
    let reason = status
        .get_details_error_info()
        .map(|i| format!(" ({})", i.reason))
        .unwrap_or_default();
    format!("{}{reason}: {}", code_name(status.code()), status.message())
}

/// Microseconds from 1 µs to one minute at three significant digits; longer calls are counted
/// as one minute (the channel gives up after 30 s anyway).
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Counters every client adds to. Histograms sit behind a mutex each: a lock per operation is
/// far below what a gRPC round trip costs.
struct Stats {
    latency: [Mutex<Histogram<u64>>; 3],
    ok: [AtomicU64; 3],
    errors: [AtomicU64; 3],
    by_code: Mutex<BTreeMap<String, u64>>,
    by_reason: Mutex<BTreeMap<String, u64>>,
    empty_searches: AtomicU64,
    warmup_ok: [AtomicU64; 3],
    warmup_errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// Both phases, for the live display.
    live_ok: AtomicU64,
    live_errors: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Stats {
    fn new() -> Stats {
        Stats {
            latency: [(); 3].map(|_| Mutex::new(histogram())),
            ok: Default::default(),
            errors: Default::default(),
            by_code: Mutex::default(),
            by_reason: Mutex::default(),
            empty_searches: AtomicU64::new(0),
            warmup_ok: Default::default(),
            warmup_errors: AtomicU64::new(0),
            first_error: Mutex::default(),
            live_ok: AtomicU64::new(0),
            live_errors: AtomicU64::new(0),
        }
    }

    fn note_first_error(&self, status: &tonic::Status) {
        let mut first = lock(&self.first_error);
        if first.is_none() {
            *first = Some(describe(status));
        }
    }

    fn record(
        &self,
        op: Op,
        measured: bool,
        latency: Duration,
        outcome: Result<bool, tonic::Status>,
    ) {
        let i = op as usize;
        match outcome {
            Ok(found) => {
                self.live_ok.fetch_add(1, Ordering::Relaxed);
                if !measured {
                    self.warmup_ok[i].fetch_add(1, Ordering::Relaxed);
                    return;
                }
                self.ok[i].fetch_add(1, Ordering::Relaxed);
                if !found {
                    self.empty_searches.fetch_add(1, Ordering::Relaxed);
                }
                let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                lock(&self.latency[i]).saturating_record(micros.max(1));
            }
            Err(status) => {
                self.live_errors.fetch_add(1, Ordering::Relaxed);
                self.note_first_error(&status);
                if !measured {
                    self.warmup_errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                self.errors[i].fetch_add(1, Ordering::Relaxed);
                *lock(&self.by_code)
                    .entry(code_name(status.code()).to_string())
                    .or_default() += 1;
                if let Some(info) = status.get_details_error_info() {
                    *lock(&self.by_reason).entry(info.reason).or_default() += 1;
                }
            }
        }
    }
}

/// What every client shares.
struct Plan {
    workload: Workload,
    consistency: i32,
    working: Vec<Row>,
    run_id: u32,
    seed: u64,
    creates: AtomicU64,
    measure_from: Instant,
    end: Instant,
    stats: Stats,
}

async fn create(client: &mut Client, row: &Row) -> Result<(), tonic::Status> {
    client
        .create_link(pb::CreateLinkRequest {
            ssin: row.ssin.to_string(),
            country: row.country.to_string(),
            key_type: row.key_type.to_string(),
            value: row.value.clone(),
            valid_from: row.valid_from.map(|d| d.to_string()),
            valid_to: row.valid_to.map(|d| d.to_string()),
            client_id: None,
            request_id: None,
        })
        .await
        .map(|_| ())
}

/// One operation; `Ok(false)` is a search that found nothing.
async fn operate(
    client: &mut Client,
    plan: &Plan,
    op: Op,
    rng: &mut ChaCha8Rng,
    fresh: &mut Generator,
) -> Result<bool, tonic::Status> {
    match op {
        Op::Create => {
            let mut row = match fresh.next() {
                Some(row) => row,
                None => {
                    *fresh = Generator::new(rng.random());
                    fresh
                        .next()
                        .ok_or_else(|| tonic::Status::internal("generator is empty"))?
                }
            };
            let n = plan.creates.fetch_add(1, Ordering::Relaxed);
            row.value = format!("BENCH{:08X}-{n:010}", plan.run_id);
            create(client, &row).await.map(|()| true)
        }
        Op::SearchSsin => {
            let row = &plan.working[rng.random_range(0..plan.working.len())];
            let r = client
                .search_links_by_ssin(pb::SearchLinksBySsinRequest {
                    ssin: row.ssin.to_string(),
                    consistency: plan.consistency,
                    ..Default::default()
                })
                .await?;
            Ok(!r.get_ref().links.is_empty())
        }
        Op::SearchKey => {
            let row = &plan.working[rng.random_range(0..plan.working.len())];
            let r = client
                .search_links_by_foreign_key(pb::SearchLinksByForeignKeyRequest {
                    country: row.country.to_string(),
                    value: row.value.clone(),
                    key_type: Some(row.key_type.to_string()),
                    valid_on: None,
                    consistency: plan.consistency,
                })
                .await?;
            Ok(!r.get_ref().links.is_empty())
        }
    }
}

async fn client_loop(mut client: Client, plan: Arc<Plan>, index: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(
        plan.seed
            ^ (u64::from(plan.run_id) << 32)
            ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let mut fresh = Generator::new(rng.random());
    loop {
        let start = Instant::now();
        if start >= plan.end {
            break;
        }
        let op = plan.workload.pick(&mut rng);
        let outcome = operate(&mut client, &plan, op, &mut rng, &mut fresh).await;
        plan.stats
            .record(op, start >= plan.measure_from, start.elapsed(), outcome);
    }
}

#[derive(Default)]
struct PreloadCounts {
    created: AtomicU64,
    existing: AtomicU64,
    errors: AtomicU64,
    by_code: Mutex<BTreeMap<String, u64>>,
    first_error: Mutex<Option<String>>,
}

/// How the working set got into the cluster.
struct Preload {
    created: u64,
    existing: u64,
    errors: u64,
    by_code: BTreeMap<String, u64>,
    first_error: Option<String>,
    seconds: f64,
}

/// Creates `rows` with `tasks` concurrent callers; a link already there counts as present.
async fn preload(
    clients: &[Client],
    rows: Arc<Vec<Row>>,
    tasks: usize,
    bar: &ProgressBar,
) -> Preload {
    let started = Instant::now();
    let counts = Arc::new(PreloadCounts::default());
    let tasks = tasks.clamp(1, rows.len().max(1));
    let mut set = tokio::task::JoinSet::new();
    for k in 0..tasks {
        let mut client = clients[k % clients.len()].clone();
        let rows = rows.clone();
        let counts = counts.clone();
        let bar = bar.clone();
        set.spawn(async move {
            for row in rows.iter().skip(k).step_by(tasks) {
                let counter = match create(&mut client, row).await {
                    Ok(()) => &counts.created,
                    Err(s) if s.code() == tonic::Code::AlreadyExists => &counts.existing,
                    Err(s) => {
                        *lock(&counts.by_code)
                            .entry(code_name(s.code()).to_string())
                            .or_default() += 1;
                        lock(&counts.first_error).get_or_insert_with(|| describe(&s));
                        &counts.errors
                    }
                };
                counter.fetch_add(1, Ordering::Relaxed);
                bar.inc(1);
            }
        });
    }
    while set.join_next().await.is_some() {}
    Preload {
        created: counts.created.load(Ordering::Relaxed),
        existing: counts.existing.load(Ordering::Relaxed),
        errors: counts.errors.load(Ordering::Relaxed),
        by_code: lock(&counts.by_code).clone(),
        first_error: lock(&counts.first_error).clone(),
        seconds: started.elapsed().as_secs_f64(),
    }
}

fn run_id() -> u32 {
    let mut bytes = [0u8; 4];
    match getrandom::fill(&mut bytes) {
        Ok(()) => u32::from_le_bytes(bytes),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ d.as_secs() as u32)
            .unwrap_or(0),
    }
}

fn percentiles(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    json!({
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
        "min": h.min(),
        "mean": (h.mean() * 10.0).round() / 10.0,
    })
}

fn spinner(template: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.clients == 0 {
        bail!("--clients: at least 1");
    }
    if args.duration.is_zero() {
        bail!("--duration: longer than 0");
    }
    if args.servers.is_empty() {
        bail!("--servers: at least one address");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(args))
}

async fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let bearer = bearer(args.token.as_deref())?;
    let tls = args.tls.config()?;
    let mut connecting = tokio::task::JoinSet::new();
    for i in 0..args.clients {
        let server = args.servers[i % args.servers.len()].clone();
        let tls = tls.clone();
        connecting.spawn(async move { (i, channel(&server, tls.as_ref()).await) });
    }
    let mut slots: Vec<Option<Client>> = (0..args.clients).map(|_| None).collect();
    while let Some(joined) = connecting.join_next().await {
        let (i, connected) = joined.context("connecting")?;
        slots[i] = Some(LinkRegisterClient::with_interceptor(
            connected?,
            bearer.clone(),
        ));
    }
    let clients: Vec<Client> = slots.into_iter().flatten().collect();

    // The working set the searches pick from.
    let preload_report;
    let working: Vec<Row> = if !args.workload.searches() {
        preload_report = None;
        Vec::new()
    } else if args.preload > 0 {
        let rows: Arc<Vec<Row>> = Arc::new(Generator::new(args.seed).take(args.preload).collect());
        let bar = ProgressBar::new(rows.len() as u64);
        if let Ok(style) = ProgressStyle::with_template(
            "preload {bar:30} {human_pos}/{human_len} links, {per_sec}, eta {eta}",
        ) {
            bar.set_style(style);
        }
        let report = preload(&clients, rows.clone(), args.preload_clients, &bar).await;
        bar.finish_and_clear();
        if report.created + report.existing == 0 {
            let first = report.first_error.as_deref().unwrap_or("none");
            eprintln!("linkreg bench: preloading failed for every link; first error: {first}");
            return Ok(ExitCode::FAILURE);
        }
        preload_report = Some(report);
        Arc::try_unwrap(rows).unwrap_or_else(|shared| shared.as_ref().clone())
    } else {
        preload_report = None;
        Generator::new(args.seed).take(args.working_set).collect()
    };
    if args.workload.searches() && working.is_empty() {
        bail!("searches need a working set: give --preload N, or --working-set N with --preload 0");
    }

    let measure_from = Instant::now() + args.warmup;
    let plan = Arc::new(Plan {
        workload: args.workload,
        consistency: args.consistency.proto(),
        working,
        run_id: run_id(),
        seed: args.seed,
        creates: AtomicU64::new(0),
        measure_from,
        end: measure_from + args.duration,
        stats: Stats::new(),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for (index, client) in clients.into_iter().enumerate() {
        tasks.spawn(client_loop(client, plan.clone(), index));
    }
    let bar = spinner("{spinner} {elapsed:>4} {msg}");
    let live = {
        let plan = plan.clone();
        let bar = bar.clone();
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let now = Instant::now();
                let ok = plan.stats.live_ok.load(Ordering::Relaxed);
                let errors = plan.stats.live_errors.load(Ordering::Relaxed);
                let rate = (ok - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
                last = (now, ok);
                let phase = if now < plan.measure_from {
                    "warm-up"
                } else {
                    "measuring"
                };
                bar.set_message(format!(
                    "{phase}: {rate:.0} ops/s, {ok} ok, {errors} errors"
                ));
                bar.tick();
            }
        })
    };
    while tasks.join_next().await.is_some() {}
    let elapsed = Instant::now().saturating_duration_since(measure_from);
    live.abort();
    bar.finish_and_clear();

    let report = Report::gather(&args, &plan, elapsed, preload_report);
    if args.json {
        println!("{}", report.json);
    } else {
        print!("{}", report.text());
    }
    if report.ok == 0 {
        let first = lock(&plan.stats.first_error).clone();
        eprintln!(
            "linkreg bench: no operation succeeded; first error: {}",
            first.as_deref().unwrap_or("none (no operation completed)")
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

struct Report {
    json: Value,
    ok: u64,
}

impl Report {
    fn gather(
        args: &BenchArgs,
        plan: &Plan,
        elapsed: Duration,
        preload: Option<Preload>,
    ) -> Report {
        let stats = &plan.stats;
        let seconds = elapsed.as_secs_f64().max(1e-9);
        let rate = |n: u64| (n as f64 / seconds * 10.0).round() / 10.0;
        let mut all = histogram();
        let mut by_op = serde_json::Map::new();
        let (mut ok, mut errors) = (0, 0);
        for &op in args.workload.ops() {
            let i = op as usize;
            let h = lock(&stats.latency[i]);
            // Same bounds everywhere: adding cannot fail.
            let _ = all.add(&*h);
            let (o, e) = (
                stats.ok[i].load(Ordering::Relaxed),
                stats.errors[i].load(Ordering::Relaxed),
            );
            ok += o;
            errors += e;
            by_op.insert(
                op.name().to_string(),
                json!({ "ok": o, "errors": e, "ops_per_s": rate(o), "latency_us": percentiles(&h) }),
            );
        }
        let warmup_ok: u64 = stats
            .warmup_ok
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum();
        let preload = preload.map(|p| {
            json!({
                "links": args.preload,
                "created": p.created,
                "existing": p.existing,
                "errors": p.errors,
                "errors_by_code": p.by_code,
                "first_error": p.first_error,
                "seconds": (p.seconds * 1000.0).round() / 1000.0,
            })
        });
        let working_set = if args.workload.searches() && args.preload == 0 {
            Some(plan.working.len())
        } else {
            None
        };
        let json = json!({
            "workload": args.workload.name(),
            "clients": args.clients,
            "servers": args.servers,
            "consistency": args.consistency.name(),
            "seed": args.seed,
            "run_id": format!("{:08X}", plan.run_id),
            "warmup_s": args.warmup.as_secs_f64(),
            "duration_s": args.duration.as_secs_f64(),
            "elapsed_s": (seconds * 1000.0).round() / 1000.0,
            "preload": preload,
            "working_set": working_set,
            "ops": ok + errors,
            "ok": ok,
            "errors": errors,
            "ops_per_s": rate(ok),
            "errors_by_code": *lock(&stats.by_code),
            "error_reasons": *lock(&stats.by_reason),
            "first_error": *lock(&stats.first_error),
            "searches_empty": stats.empty_searches.load(Ordering::Relaxed),
            "latency_us": percentiles(&all),
            "by_op": by_op,
            "warmup": {
                "ok": warmup_ok,
                "errors": stats.warmup_errors.load(Ordering::Relaxed),
                "creates_ok": stats.warmup_ok[Op::Create as usize].load(Ordering::Relaxed),
            },
        });
        Report { json, ok }
    }

    fn text(&self) -> String {
        let j = &self.json;
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        let mut out = format!(
            "bench {}: {} clients over {}, consistency {}, {} s measured after {} s warm-up\n",
            j["workload"].as_str().unwrap_or(""),
            j["clients"],
            j["servers"]
                .as_array()
                .map(|s| s
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default(),
            j["consistency"].as_str().unwrap_or(""),
            j["elapsed_s"],
            j["warmup_s"],
        );
        if let Some(p) = j["preload"].as_object() {
            out += &format!(
                "preload: {} links in {} s ({} created, {} already there, {} errors)\n",
                p["links"], p["seconds"], p["created"], p["existing"], p["errors"]
            );
            if let Some(first) = p["first_error"].as_str() {
                out += &format!("  first preload error: {first}\n");
            }
        }
        if let Some(w) = j["working_set"].as_u64() {
            out += &format!(
                "working set: the first {w} links of gen --seed {}\n",
                j["seed"]
            );
        }
        out += &format!(
            "ops: {} ok, {} errors, {} ops/s\n",
            n(&j["ok"]),
            n(&j["errors"]),
            j["ops_per_s"]
        );
        let lat = |l: &Value| {
            if l.is_null() {
                "-".to_string()
            } else {
                format!(
                    "p50 {}  p90 {}  p99 {}  p999 {}  max {}",
                    l["p50"], l["p90"], l["p99"], l["p999"], l["max"]
                )
            }
        };
        out += &format!("latency (µs): {}\n", lat(&j["latency_us"]));
        if let Some(ops) = j["by_op"].as_object().filter(|o| o.len() > 1) {
            for (name, o) in ops {
                out += &format!(
                    "  {name:<12} {:>9} ok {:>6} errors {:>10} ops/s   {}\n",
                    n(&o["ok"]),
                    n(&o["errors"]),
                    o["ops_per_s"],
                    lat(&o["latency_us"])
                );
            }
        }
        if n(&j["searches_empty"]) > 0 {
            out += &format!(
                "searches that found nothing: {} (is the working set in the cluster? same --seed as the import?)\n",
                j["searches_empty"]
            );
        }
        if let Some(codes) = j["errors_by_code"].as_object().filter(|c| !c.is_empty()) {
            let list: Vec<String> = codes.iter().map(|(c, k)| format!("{c} {k}")).collect();
            out += &format!("errors by code: {}\n", list.join(", "));
            if let Some(first) = j["first_error"].as_str() {
                out += &format!("first error: {first}\n");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_humantime() {
        let d = |s| parse_duration(s).expect(s);
        assert_eq!(d("30s"), Duration::from_secs(30));
        assert_eq!(d("2m"), Duration::from_secs(120));
        assert_eq!(d("1m30s"), Duration::from_secs(90));
        assert_eq!(d("1m 30s"), Duration::from_secs(90));
        assert_eq!(d("500ms"), Duration::from_millis(500));
        assert_eq!(d("1h"), Duration::from_secs(3600));
        assert_eq!(d("1.5s"), Duration::from_millis(1500));
        assert_eq!(d("10"), Duration::from_secs(10));
        for bad in ["", "s", "10x", "-1s", "1s2", "abc"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mixed_is_ninety_percent_searches_half_by_each_key() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut counts = [0u32; 3];
        for _ in 0..100_000 {
            counts[Workload::Mixed.pick(&mut rng) as usize] += 1;
        }
        let share = |n: u32| f64::from(n) / 100_000.0;
        assert!((0.09..0.11).contains(&share(counts[Op::Create as usize])));
        assert!((0.43..0.47).contains(&share(counts[Op::SearchSsin as usize])));
        assert!((0.43..0.47).contains(&share(counts[Op::SearchKey as usize])));
    }
}
