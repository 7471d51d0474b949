//! One node's registry: request families recorded as calls finish, raft event counters, and
//! collectors that read raft, RocksDB and the process when scraped.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use prost::Message;
use tonic::Code;

use super::process::ProcessCollector;
use crate::api::soap::Exchange;
use crate::cluster;
use crate::raft::node::RaftNode;
use crate::raft::{LogId, NodeId};
use crate::service::Service;
use crate::store::stats::ColumnFamilyStats;

/// Latency buckets in seconds: from a fast local read to a write that waited out an election.
const LATENCY_BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// The gRPC package whose services are measured (the client API and cluster admin).
const MEASURED_PACKAGE: &str = "linkreg.v1";

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcCodeLabels {
    service: String,
    rpc: String,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    service: String,
    rpc: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcErrorLabels {
    service: String,
    rpc: String,
    code: &'static str,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationStatusLabels {
    operation: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationErrorLabels {
    operation: &'static str,
    kind: &'static str,
    code: String,
}

/// The handles of one RPC, looked up once per call by its request path.
#[derive(Debug)]
pub struct Rpc {
    service: String,
    rpc: String,
    ok: Counter,
    duration: Histogram,
}

/// Which exposition format a scraper asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4, what every Prometheus-compatible scraper reads.
    Prometheus,
    /// OpenMetrics 1.0 text, for scrapers that ask for it.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for.
    pub fn accepted(accept: &str) -> Format {
        if accept.contains("application/openmetrics-text") {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// What `follow_raft` compares between two raft metrics updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seen {
    pub snapshot: Option<LogId>,
    pub purged: Option<LogId>,
    pub leader: Option<NodeId>,
}

impl Seen {
    pub fn of(m: &openraft::RaftMetrics<NodeId, crate::raft::NodeInfo>) -> Seen {
        Seen {
            snapshot: m.snapshot,
            purged: m.purged,
            leader: m.current_leader,
        }
    }
}

pub struct Metrics {
    registry: Registry,
    rpcs: HashMap<String, Arc<Rpc>>,
    grpc_requests: Family<RpcCodeLabels, Counter>,
    grpc_errors: Family<RpcErrorLabels, Counter>,
    soap_requests: Family<OperationStatusLabels, Counter>,
    soap_duration: Family<OperationLabels, Histogram, fn() -> Histogram>,
    soap_errors: Family<OperationErrorLabels, Counter>,
    snapshots: Counter,
    purges: Counter,
    leader_changes: Counter,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("rpcs", &self.rpcs.len())
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with the request families and process facts; add a node with
    /// [`Metrics::observe_node`].
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let grpc_requests = Family::<RpcCodeLabels, Counter>::default();
        let grpc_duration = Family::<RpcLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let grpc_errors = Family::<RpcErrorLabels, Counter>::default();
        let soap_requests = Family::<OperationStatusLabels, Counter>::default();
        let soap_duration =
            Family::<OperationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        let soap_errors = Family::<OperationErrorLabels, Counter>::default();
        registry.register(
            "linkreg_grpc_requests",
            "gRPC calls of the client listener by RPC and gRPC status code",
            grpc_requests.clone(),
        );
        registry.register_with_unit(
            "linkreg_grpc_request_duration",
            "Time from receiving a gRPC call to its last response frame",
            Unit::Seconds,
            grpc_duration.clone(),
        );
        registry.register(
            "linkreg_grpc_errors",
            "gRPC calls that ended in an error, by RPC, gRPC code and the ErrorInfo reason \
             (the stable code, e.g. LINK_EXISTS)",
            grpc_errors.clone(),
        );
        registry.register(
            "linkreg_soap_requests",
            "SOAP requests by operation and reply status (FAULT for a fault); operation \
             \"unknown\" when the request was refused before its operation was known",
            soap_requests.clone(),
        );
        registry.register_with_unit(
            "linkreg_soap_request_duration",
            "Time from receiving a SOAP request to its complete reply",
            Unit::Seconds,
            soap_duration.clone(),
        );
        registry.register(
            "linkreg_soap_errors",
            "SOAP requests not carried out: kind \"refusal\" (a NO_RESULT status, code = its \
             stable code) or \"fault\" (code = the fault's reasonCode)",
            soap_errors.clone(),
        );
        let snapshots = Counter::default();
        let purges = Counter::default();
        let leader_changes = Counter::default();
        registry.register(
            "linkreg_raft_snapshots",
            "Snapshots this node took or installed since it started (changes of its snapshot)",
            snapshots.clone(),
        );
        registry.register(
            "linkreg_raft_purges",
            "Purges of this node's log since it started (changes of its purged log id)",
            purges.clone(),
        );
        registry.register(
            "linkreg_raft_leader_changes",
            "Times this node saw a new leader since it started",
            leader_changes.clone(),
        );
        registry.register_collector(Box::new(ProcessCollector));
        let mut rpcs = HashMap::new();
        for (service, rpc) in measured_rpcs() {
            let path = format!("/{service}/{rpc}");
            let ok = grpc_requests.get_or_create_owned(&RpcCodeLabels {
                service: service.clone(),
                rpc: rpc.clone(),
                code: code_name(Code::Ok),
            });
            let duration = grpc_duration.get_or_create_owned(&RpcLabels {
                service: service.clone(),
                rpc: rpc.clone(),
            });
            let handles = Rpc {
                service,
                rpc,
                ok,
                duration,
            };
            rpcs.insert(path, Arc::new(handles));
        }
        Metrics {
            registry,
            rpcs,
            grpc_requests,
            grpc_errors,
            soap_requests,
            soap_duration,
            soap_errors,
            snapshots,
            purges,
            leader_changes,
        }
    }

    /// Adds the raft and storage facts of `node`, read at every scrape.
    pub fn observe_node(&mut self, node: Arc<RaftNode>) {
        self.registry
            .register_collector(Box::new(NodeCollector { node }));
    }

    /// Adds the service's group-commit counts, read at every scrape.
    pub fn observe_service(&mut self, service: Arc<Service>) {
        self.registry
            .register_collector(Box::new(GroupCollector { service }));
    }

    /// The handles of the RPC at a request path, if it is one that is measured.
    pub fn rpc(&self, path: &str) -> Option<Arc<Rpc>> {
        self.rpcs.get(path).cloned()
    }

    /// Records a finished gRPC call; `reason` is its ErrorInfo reason, if it carried one.
    pub fn grpc_finished(&self, rpc: &Rpc, code: Code, reason: Option<String>, elapsed: Duration) {
        rpc.duration.observe(elapsed.as_secs_f64());
        if code == Code::Ok {
            rpc.ok.inc();
            return;
        }
        let code = code_name(code);
        self.grpc_requests
            .get_or_create(&RpcCodeLabels {
                service: rpc.service.clone(),
                rpc: rpc.rpc.clone(),
                code,
            })
            .inc();
        self.grpc_errors
            .get_or_create(&RpcErrorLabels {
                service: rpc.service.clone(),
                rpc: rpc.rpc.clone(),
                code,
                reason: reason.unwrap_or_default(),
            })
            .inc();
    }

    /// Records a finished SOAP exchange.
    pub fn soap_finished(&self, exchange: &Exchange, elapsed: Duration) {
        let operation = exchange.operation.unwrap_or("unknown");
        self.soap_duration
            .get_or_create(&OperationLabels { operation })
            .observe(elapsed.as_secs_f64());
        self.soap_requests
            .get_or_create(&OperationStatusLabels {
                operation,
                status: exchange.status,
            })
            .inc();
        if let Some(code) = &exchange.code {
            let kind = if exchange.status == Exchange::FAULT {
                "fault"
            } else {
                "refusal"
            };
            self.soap_errors
                .get_or_create(&OperationErrorLabels {
                    operation,
                    kind,
                    code: code.clone(),
                })
                .inc();
        }
    }

    /// Counts what changed between two raft metrics updates.
    pub fn raft_changed(&self, before: &Seen, after: &Seen) {
        if after.snapshot != before.snapshot && after.snapshot.is_some() {
            self.snapshots.inc();
        }
        if after.purged != before.purged && after.purged.is_some() {
            self.purges.inc();
        }
        if after.leader != before.leader && after.leader.is_some() {
            self.leader_changes.inc();
        }
    }

    pub fn encode(&self, format: Format) -> Result<String, fmt::Error> {
        let mut text = String::new();
        match format {
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?
            }
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut text, &self.registry)?
            }
        }
        Ok(text)
    }
}

/// Every (service, method) of the measured package, from the compiled-in descriptor set: an
/// RPC added to the proto is measured without touching this file. Only these paths get label
/// sets, so a client sending made-up paths cannot grow the registry.
fn measured_rpcs() -> Vec<(String, String)> {
    let set = match prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET) {
        Ok(set) => set,
        Err(e) => {
            tracing::error!(
                "the compiled-in descriptor set does not decode ({e}): no gRPC metrics"
            );
            return Vec::new();
        }
    };
    let mut rpcs = Vec::new();
    for file in set.file.iter().filter(|f| f.package() == MEASURED_PACKAGE) {
        for service in &file.service {
            for method in &service.method {
                rpcs.push((
                    format!("{MEASURED_PACKAGE}.{}", service.name()),
                    method.name().to_string(),
                ));
            }
        }
    }
    rpcs
}

/// The canonical name of a gRPC status code, as the gRPC specification spells it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Raft and storage facts of one node at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    pub node_id: NodeId,
    /// One of [`cluster::STATE_NAMES`].
    pub state: &'static str,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub last_log: Option<u64>,
    pub committed: Option<u64>,
    pub applied: Option<u64>,
    pub snapshot: Option<u64>,
    pub purged: Option<u64>,
    pub ready: bool,
    /// Per member other than this node: its matched index and lag, known on the leader only.
    pub followers: Vec<(NodeId, Option<u64>, Option<u64>)>,
    pub voters: usize,
    pub learners: usize,
    pub column_families: Vec<ColumnFamilyStats>,
}

impl NodeFacts {
    pub fn of(node: &RaftNode) -> NodeFacts {
        let status = cluster::status(node);
        let committed = *node.committed.borrow();
        let column_families = match node.store.column_family_stats() {
            Ok(stats) => stats,
            Err(e) => {
                tracing::debug!("column family sizes: {e}");
                Vec::new()
            }
        };
        let voters = status.members.iter().filter(|m| m.voter).count();
        NodeFacts {
            node_id: status.node_id,
            state: status.state,
            term: status.term,
            leader: status.leader_id,
            last_log: status.last_log_index,
            committed,
            applied: status.applied_index,
            snapshot: status.snapshot_index,
            purged: status.purged_index,
            ready: super::readiness(status.leader_id, status.applied_index, committed).is_ok(),
            followers: status
                .members
                .iter()
                .filter(|m| m.id != status.node_id)
                .map(|m| (m.id, m.matched_index, m.lag))
                .collect(),
            voters,
            learners: status.members.len() - voters,
            column_families,
        }
    }

    pub fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let e = &mut encoder;
        gauge(
            e,
            "linkreg_raft_node_id",
            "This node's id",
            id(self.node_id),
        )?;
        gauge(e, "linkreg_raft_term", "Current raft term", id(self.term))?;
        gauge(
            e,
            "linkreg_raft_leader_id",
            "Id of the leader this node knows, -1 when it knows none",
            self.leader.map_or(-1, id),
        )?;
        gauge(
            e,
            "linkreg_raft_is_leader",
            "1 when this node is the leader",
            i64::from(self.state == cluster::state_name(ServerState::Leader)),
        )?;
        {
            let mut m = e.encode_descriptor(
                "linkreg_raft_state",
                "Raft role of this node: 1 for the current one",
                None,
                MetricType::Gauge,
            )?;
            for state in cluster::STATE_NAMES {
                let labels = [("state", state)];
                ConstGauge::new(i64::from(self.state == state))
                    .encode(m.encode_family(&labels)?)?;
            }
        }
        let indexes = [
            (
                "linkreg_raft_last_log_index",
                "Index of the last entry in this node's log",
                self.last_log,
            ),
            (
                "linkreg_raft_committed_index",
                "Highest index this node knows to be committed",
                self.committed,
            ),
            (
                "linkreg_raft_applied_index",
                "Index of the last entry applied to this node's state machine",
                self.applied,
            ),
            (
                "linkreg_raft_snapshot_index",
                "Last index covered by this node's snapshot",
                self.snapshot,
            ),
            (
                "linkreg_raft_purged_index",
                "Last index purged from this node's log",
                self.purged,
            ),
        ];
        for (name, help, value) in indexes {
            let help = format!("{help}; -1 when there is none");
            gauge(e, name, &help, value.map_or(-1, id))?;
        }
        gauge(
            e,
            "linkreg_ready",
            "1 when this node knows a leader and has applied everything it knows committed",
            i64::from(self.ready),
        )?;
        {
            let mut m = e.encode_descriptor(
                "linkreg_raft_members",
                "Members of the cluster by kind, as this node's membership has them",
                None,
                MetricType::Gauge,
            )?;
            for (kind, count) in [("voter", self.voters), ("learner", self.learners)] {
                let labels = [("kind", kind)];
                ConstGauge::new(count as i64).encode(m.encode_family(&labels)?)?;
            }
        }
        let matched: Vec<_> = self
            .followers
            .iter()
            .filter_map(|(member, matched, _)| matched.map(|v| (*member, v)))
            .collect();
        let lag: Vec<_> = self
            .followers
            .iter()
            .filter_map(|(member, _, lag)| lag.map(|v| (*member, v)))
            .collect();
        // The leader alone knows these; elsewhere the families are left out.
        if !matched.is_empty() {
            member_gauges(
                e,
                "linkreg_raft_matched_index",
                "Last index the leader knows a member's log matches (on the leader only)",
                &matched,
            )?;
        }
        if !lag.is_empty() {
            member_gauges(
                e,
                "linkreg_raft_replication_lag",
                "Entries a member is behind: the leader's last log index minus the member's \
                 matched index (on the leader only)",
                &lag,
            )?;
        }
        let figures: [(&str, &str, Figure); 3] = [
            (
                "linkreg_rocksdb_sst_bytes",
                "Bytes of SST files of a column family (rocksdb.total-sst-files-size)",
                |s| s.sst_bytes,
            ),
            (
                "linkreg_rocksdb_memtable_bytes",
                "Bytes in memtables of a column family (rocksdb.cur-size-all-mem-tables)",
                |s| s.memtable_bytes,
            ),
            (
                "linkreg_rocksdb_estimated_keys",
                "Estimated keys of a column family (rocksdb.estimate-num-keys)",
                |s| s.estimated_keys,
            ),
        ];
        if !self.column_families.is_empty() {
            for (name, help, figure) in figures {
                let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
                for stats in &self.column_families {
                    if let Some(v) = figure(stats) {
                        let labels = [("cf", stats.name)];
                        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// One figure of a column family's stats.
type Figure = fn(&ColumnFamilyStats) -> Option<u64>;

/// An id or index as a gauge value (they never reach i64::MAX in practice).
fn id(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> Result<(), fmt::Error> {
    let gauge = ConstGauge::new(value);
    let m = e.encode_descriptor(name, help, None, gauge.metric_type())?;
    gauge.encode(m)
}

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), fmt::Error> {
    let counter = ConstCounter::new(value);
    let m = e.encode_descriptor(name, help, None, counter.metric_type())?;
    counter.encode(m)
}

fn member_gauges(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(NodeId, u64)],
) -> Result<(), fmt::Error> {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (member, value) in values {
        let labels = [("member", member.to_string())];
        ConstGauge::new(id(*value)).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

struct NodeCollector {
    node: Arc<RaftNode>,
}

impl fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCollector")
            .field("node", &self.node.id)
            .finish()
    }
}

impl Collector for NodeCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        NodeFacts::of(&self.node).encode(encoder)
    }
}

struct GroupCollector {
    service: Arc<Service>,
}

impl fmt::Debug for GroupCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupCollector").finish_non_exhaustive()
    }
}

impl Collector for GroupCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let counts = self.service.group_counts();
        for (name, help, value) in [
            (
                "linkreg_write_groups",
                "Groups of creations this node sent toward the log (group commit) since it started, \
                 whatever their outcome",
                counts.groups,
            ),
            (
                "linkreg_write_grouped_creations",
                "Creations in those groups: divided by linkreg_write_groups, the mean number of \
                 creations that shared one log entry and one fsync",
                counts.creations,
            ),
        ] {
            counter(&mut encoder, name, help, value)?;
        }
        let reads = self.service.read_round_counts();
        for (name, help, value) in [
            (
                "linkreg_linearizable_read_rounds",
                "Read-index rounds this node ran for its linearizable reads since it started \
                 (asked of the leader, or confirmed by this node when it leads)",
                reads.rounds,
            ),
            (
                "linkreg_linearizable_reads",
                "Linearizable reads that waited for those rounds: divided by \
                 linkreg_linearizable_read_rounds, the mean number of reads one round served",
                reads.callers,
            ),
        ] {
            counter(&mut encoder, name, help, value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
