//! Criterion micro-benchmarks of the hot paths below the network: the value codec, key
//! encoding, SSIN validation, the rules on an in-memory register, and the state machine applying
//! committed entries into RocksDB.
//!
//! ```sh
//! cargo bench --bench micro              # measure (release settings)
//! cargo bench --bench micro -- apply     # only the benchmarks whose name contains "apply"
//! cargo test --bench micro               # run each benchmark once, as CI does
//! ```
//!
//! Every link created here has a foreign key no other link has, so no create is refused and the
//! state machine's store grows across iterations as a real node's does.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload};
use tempfile::TempDir;
use time::Date;
use time::macros::date;

use linkreg::domain::command::{CreateLink, ImportLinks};
use linkreg::domain::query::{self, ForeignKeyQuery, SsinQuery};
use linkreg::domain::{
    Action, Caller, Command, Country, Field, FormatRule, KeyTypeCode, LinkId, MemoryRegister,
    Organization, Outcome, Role, RowOutcome, Ssin, Timestamp, decide,
};
use linkreg::raft::{Entry, Payload, Request, Response, StateMachine};
use linkreg::store::{Store, codec, keys};

/// 2026-12-03 at 10:00 UTC, in milliseconds: the log time of every command.
const T0: i64 = 1_796_292_000_000;
const TODAY: Date = date!(2026 - 12 - 03);
/// Single-create entries per apply call.
const CREATES_PER_BATCH: usize = 100;
/// Rows of the import entry: `linkreg import`'s default batch.
const IMPORT_ROWS: usize = 1000;

/// Rows with SSINs and foreign keys never handed out before: row `n` belongs to its own person
/// (one of about 27 million national-register numbers) and has its own passport number.
#[derive(Default)]
struct FreshRows {
    next: u64,
}

impl FreshRows {
    fn row(&mut self) -> CreateLink {
        let n = self.next;
        self.next += 1;
        let counter = 1 + (n % 998) as u16;
        let day = 1 + (n / 998 % 28) as u8;
        let month = 1 + (n / (998 * 28) % 12) as u8;
        let year = 1930 + (n / (998 * 28 * 12) % 80) as i32;
        let ssin = Ssin::compose(year, month, day, counter).expect("a valid slot");
        CreateLink {
            ssin: ssin.to_string(),
            country: "NL".into(),
            key_type: "PASSPORT".into(),
            value: format!("NX{n:010}"),
            ..Default::default()
        }
    }

    fn rows(&mut self, count: usize) -> Vec<CreateLink> {
        (0..count).map(|_| self.row()).collect()
    }
}

fn command(action: Action, at: i64) -> Command {
    Command {
        caller: Caller {
            organization: Organization::new("Bench", "0123456749").expect("a valid CBE number"),
            role: Role::Writer,
        },
        at: Timestamp(at),
        action,
        context: None,
    }
}

fn import(rows: Vec<CreateLink>) -> Action {
    Action::ImportLinks(ImportLinks { rows })
}

/// A register holding `links` links, and the generator that continues after them.
fn populated_register(links: usize) -> (MemoryRegister, FreshRows) {
    let mut register = MemoryRegister::new();
    let mut fresh = FreshRows::default();
    for i in 0..links {
        let verdict = register.execute(&command(Action::CreateLink(fresh.row()), T0 + i as i64));
        assert!(verdict.is_ok(), "setup create refused: {verdict:?}");
    }
    (register, fresh)
}

fn codec_benches(c: &mut Criterion) {
    let (mut register, mut fresh) = populated_register(0);
    let created = register.execute(&command(Action::CreateLink(fresh.row()), T0));
    let link = match created.map(|d| d.outcome) {
        Ok(Outcome::Link(link)) => link,
        other => panic!("no link created: {other:?}"),
    };
    let link_bytes = codec::encode(&link).expect("a link encodes");
    let import_command = command(import(fresh.rows(IMPORT_ROWS)), T0);
    let import_bytes = codec::encode(&import_command).expect("a command encodes");
    assert_eq!(
        codec::decode::<Command>(&import_bytes).ok(),
        Some(import_command.clone())
    );

    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode_link", |b| {
        b.iter(|| codec::encode(black_box(&link)).expect("encodes"))
    });
    group.bench_function("decode_link", |b| {
        b.iter(|| codec::decode::<linkreg::domain::Link>(black_box(&link_bytes)).expect("decodes"))
    });
    group.throughput(Throughput::Elements(IMPORT_ROWS as u64));
    group.bench_function("encode_import_command_1000_rows", |b| {
        b.iter(|| codec::encode(black_box(&import_command)).expect("encodes"))
    });
    group.bench_function("decode_import_command_1000_rows", |b| {
        b.iter(|| codec::decode::<Command>(black_box(&import_bytes)).expect("decodes"))
    });
    group.finish();
}

fn key_benches(c: &mut Criterion) {
    let ssin = Ssin::parse("85073003328", TODAY).expect("a valid SSIN");
    let country = Country::parse("NL").expect("a known country");
    let key_type = KeyTypeCode::parse(Field::KeyType, "PASSPORT").expect("a valid code");
    let id = LinkId(123_456_789);
    let prefix = keys::foreign_key_prefix(country, &key_type, "NX1234567");

    let mut group = c.benchmark_group("keys");
    group.bench_function("link", |b| b.iter(|| keys::link(black_box(id))));
    group.bench_function("ssin_index", |b| {
        b.iter(|| keys::ssin_index(black_box(&ssin), black_box(id)))
    });
    group.bench_function("foreign_key_index", |b| {
        b.iter(|| {
            keys::foreign_key_index(
                black_box(country),
                black_box(&key_type),
                black_box("NX1234567"),
                black_box(id),
            )
        })
    });
    group.bench_function("prefix_upper_bound", |b| {
        b.iter(|| keys::prefix_upper_bound(black_box(&prefix)))
    });
    group.finish();
}

fn ssin_benches(c: &mut Criterion) {
    let cases = [
        ("national_register", "85073003328", true),
        ("national_register_formatted", "85.07.30-033.28", true),
        ("bis", "98472899765", true),
        ("invalid_checksum", "85073003329", false),
    ];
    let mut group = c.benchmark_group("ssin_parse");
    for (name, input, valid) in cases {
        assert_eq!(Ssin::parse(input, TODAY).is_ok(), valid, "{input}");
        group.bench_function(name, |b| {
            b.iter(|| Ssin::parse(black_box(input), black_box(TODAY)))
        });
    }
    group.finish();
}

fn domain_benches(c: &mut Criterion) {
    // The in-memory register finds links by scanning them all, so its size is part of the cost.
    let mut group = c.benchmark_group("domain");
    group.throughput(Throughput::Elements(1));
    for links in [0, 1000] {
        let (register, mut fresh) = populated_register(links);
        // Deciding does not change the register: the same command can be decided again and again.
        let create = command(Action::CreateLink(fresh.row()), T0);
        group.bench_function(format!("decide_create_link_{links}_links"), |b| {
            b.iter(|| decide(black_box(&register), black_box(&create)).expect("infallible"))
        });
    }
    // What every create for a (country, key type) without a configured rule pays to build the
    // default format rule, whose pattern is a regex compiled each time.
    group.bench_function("format_rule_default", |b| b.iter(FormatRule::default_rule));
    // Deciding and applying into an empty register: the in-memory counterpart of
    // `state_machine/apply_100_create_link_entries`.
    let mut fresh = FreshRows::default();
    group.throughput(Throughput::Elements(CREATES_PER_BATCH as u64));
    group.bench_function("execute_100_create_link", |b| {
        b.iter_batched(
            || {
                let commands: Vec<Command> = (0..CREATES_PER_BATCH)
                    .map(|_| command(Action::CreateLink(fresh.row()), T0))
                    .collect();
                (MemoryRegister::new(), commands)
            },
            |(mut register, commands)| {
                for command in &commands {
                    black_box(register.execute(command).expect("a fresh key is created"));
                }
                // Returned, so that dropping it is not timed.
                register
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// A state machine on a temporary RocksDB, and a runtime to drive its async API.
struct Node {
    _dir: TempDir,
    store: Arc<Store>,
    sm: StateMachine,
    runtime: tokio::runtime::Runtime,
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Arc::new(Store::open(&dir.path().join("db")).expect("the store opens"));
        let sm =
            StateMachine::open(store.clone(), &dir.path().join("snapshots")).expect("the sm opens");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        Node {
            _dir: dir,
            store,
            sm,
            runtime,
        }
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Vec<Response> {
        self.runtime
            .block_on(self.sm.apply(entries))
            .expect("entries apply")
    }
}

/// Committed entries with consecutive log indexes.
#[derive(Default)]
struct Log {
    last_index: u64,
    rows: FreshRows,
}

impl Log {
    fn entry(&mut self, action: Action) -> Entry {
        let request = Request {
            command: command(action, T0 + self.last_index as i64 + 1),
            session: None,
        };
        self.entry_of(Payload::One(Box::new(request)))
    }

    fn entry_of(&mut self, payload: Payload) -> Entry {
        self.last_index += 1;
        Entry {
            log_id: openraft::LogId::new(CommittedLeaderId::new(1, 1), self.last_index),
            payload: EntryPayload::Normal(payload),
        }
    }

    /// One group-commit entry of `count` creations.
    fn grouped_creates(&mut self, count: usize) -> Vec<Entry> {
        let at = T0 + self.last_index as i64 + 1;
        let requests = (0..count)
            .map(|_| Request {
                command: command(Action::CreateLink(self.rows.row()), at),
                session: None,
            })
            .collect();
        vec![self.entry_of(Payload::Creates(requests))]
    }

    fn creates(&mut self, count: usize) -> Vec<Entry> {
        (0..count)
            .map(|_| {
                let row = self.rows.row();
                self.entry(Action::CreateLink(row))
            })
            .collect()
    }

    fn import(&mut self, rows: usize) -> Vec<Entry> {
        let rows = self.rows.rows(rows);
        vec![self.entry(import(rows))]
    }
}

/// Every response is a fresh verdict creating every link it asked for. Returns the responses, so
/// that dropping them is not timed.
fn assert_all_created(responses: Vec<Response>) -> Vec<Response> {
    let answers = responses.iter().flat_map(|r| match r {
        Response::Creates(answers) => answers.iter().collect(),
        one => vec![one],
    });
    for response in answers {
        let Response::Verdict { verdict, .. } = response else {
            panic!("no verdict: {response:?}");
        };
        match verdict.as_ref().as_ref().map(|d| &d.outcome) {
            Ok(Outcome::Link(_)) => {}
            Ok(Outcome::Imported(rows)) => assert!(
                rows.iter().all(|r| matches!(r, RowOutcome::Created(_))),
                "an import row was not created: {rows:?}"
            ),
            other => panic!("not created: {other:?}"),
        }
    }
    responses
}

fn state_machine_benches(c: &mut Criterion) {
    let mut node = Node::new();
    let mut log = Log::default();
    let mut group = c.benchmark_group("state_machine");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    // Checking the responses costs nanoseconds next to the milliseconds of an apply.
    group.throughput(Throughput::Elements(CREATES_PER_BATCH as u64));
    group.bench_function("apply_100_create_link_entries", |b| {
        b.iter_batched(
            || log.creates(CREATES_PER_BATCH),
            |entries| assert_all_created(node.apply(entries)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("apply_one_entry_of_100_grouped_creates", |b| {
        b.iter_batched(
            || log.grouped_creates(CREATES_PER_BATCH),
            |entries| assert_all_created(node.apply(entries)),
            BatchSize::SmallInput,
        )
    });
    group.throughput(Throughput::Elements(IMPORT_ROWS as u64));
    group.bench_function("apply_import_entry_1000_rows", |b| {
        b.iter_batched(
            || log.import(IMPORT_ROWS),
            |entries| assert_all_created(node.apply(entries)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// Searches on a store of 100,000 links (each person one), read from table files: a search's
/// part below the network, what `linkreg bench --workload search-ssin|search-key` adds it to.
fn search_benches(c: &mut Criterion) {
    const LINKS: usize = 100_000;
    let mut node = Node::new();
    let mut log = Log::default();
    for _ in 0..LINKS / IMPORT_ROWS {
        assert_all_created(node.apply(log.import(IMPORT_ROWS)));
    }
    node.store.flush().expect("memtables flush");
    let mut people = FreshRows::default();
    let stored: Vec<CreateLink> = people.rows(LINKS);
    let mut group = c.benchmark_group("search");
    let mut n = 0usize;
    let mut next = || {
        // A stride through the stored rows, so that consecutive searches hit other blocks.
        n = (n + 7_919) % LINKS;
        &stored[n]
    };
    group.bench_function("by_ssin_of_100k", |b| {
        b.iter(|| {
            let row = next();
            let query = SsinQuery {
                ssin: row.ssin.clone(),
                ..Default::default()
            };
            let found =
                query::search_by_ssin(&node.store.view().expect("no install runs"), &query, TODAY)
                    .expect("store reads");
            assert_eq!(found.map(|links| links.len()), Ok(1));
        })
    });
    group.bench_function("by_foreign_key_of_100k", |b| {
        b.iter(|| {
            let row = next();
            let query = ForeignKeyQuery {
                country: row.country.clone(),
                value: row.value.clone(),
                key_type: Some(row.key_type.clone()),
                valid_on: None,
            };
            let found =
                query::search_by_foreign_key(&node.store.view().expect("no install runs"), &query)
                    .expect("store reads");
            assert_eq!(found.map(|links| links.len()), Ok(1));
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    codec_benches,
    key_benches,
    ssin_benches,
    domain_benches,
    state_machine_benches,
    search_benches
);
criterion_main!(benches);
