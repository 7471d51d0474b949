//! The clients: writers that create links and move their validity, and a keeper that deletes
//! them, each with its own session (client id + increasing request id), one request at a time.
//!
//! An operation is retried with the same session against the next server, with backoff, until it
//! gets an answer or its deadline passes; the session makes every retry safe. After an operation
//! whose outcome stays unknown the client starts a new session: the old one's last request is
//! unresolved, and nothing may be sent on it again.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use linkreg::proto::linkreg as pb;
use linkreg::proto::linkreg::link_register_client::LinkRegisterClient;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::history::{
    Action, AttemptRecord, AttemptResult, History, OpRecord, Outcome, Record, Validity,
};
use crate::net::{Bearer, connect, reason};
use crate::rng::Rng;

/// The country and key type every link of the test uses (the default format rule applies: five
/// characters or more, one of them a digit).
pub const COUNTRY: &str = "NL";
pub const KEY_TYPE: &str = "PASSPORT";
pub const VALID_FROM: &str = "2020-01-01";

/// What the clients share with each other and with the nemesis.
pub struct Shared {
    pub start: Instant,
    pub run: String,
    pub history: Arc<History>,
    pub servers: Vec<String>,
    pub ssins: Vec<String>,
    pub op_timeout: Duration,
    pub attempt_timeout: Duration,
    pub stop: AtomicBool,
    next_op: AtomicU64,
    /// Acknowledged links the keeper may delete.
    deletable: Mutex<Vec<u64>>,
    ops: Mutex<Vec<OpRecord>>,
    /// (start of the acknowledged attempt, acknowledgement), both in ms since the start.
    acks: Mutex<Vec<(u64, u64)>>,
    reads: Mutex<ReadBacks>,
}

/// Linearizable reads of links just acknowledged, on a random node: each must find its link
/// (nobody can have deleted it yet: the keeper learns of a link only after this read).
#[derive(Debug, Clone, Default)]
pub struct ReadBacks {
    pub found: u64,
    /// The read answered that the link does not exist: a stale read, a violation.
    pub stale: Vec<String>,
    /// No answer in time (the node was down, cut off, without a leader): nothing to check.
    pub unanswered: u64,
}

impl Shared {
    pub fn new(
        run: String,
        history: Arc<History>,
        servers: Vec<String>,
        ssins: Vec<String>,
        op_timeout: Duration,
        attempt_timeout: Duration,
    ) -> Shared {
        Shared {
            start: Instant::now(),
            run,
            history,
            servers,
            ssins,
            op_timeout,
            attempt_timeout,
            stop: AtomicBool::new(false),
            next_op: AtomicU64::new(1),
            deletable: Mutex::default(),
            ops: Mutex::default(),
            acks: Mutex::default(),
            reads: Mutex::default(),
        }
    }

    pub fn read_backs(&self) -> ReadBacks {
        self.reads.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// When the first write whose acknowledged attempt started at or after `t_ms` was
    /// acknowledged.
    pub fn first_ack_after(&self, t_ms: u64) -> Option<u64> {
        let acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        acks.iter()
            .filter(|(started, _)| *started >= t_ms)
            .map(|(_, acked)| *acked)
            .min()
    }

    pub fn ops(&self) -> Vec<OpRecord> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn record(&self, op: &OpRecord) {
        if let (Outcome::Acknowledged, Some(started)) = (op.outcome, op.acked_attempt_ms) {
            self.acks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((started, op.completed_ms));
        }
        self.history.write(&Record::Op(op.clone()));
        self.ops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(op.clone());
    }
}

/// One attempt's result, with what the server said.
struct Tried {
    result: AttemptResult,
    grpc: Option<String>,
    reason: Option<String>,
    message: Option<String>,
    link_id: Option<u64>,
    log_index: Option<u64>,
}

impl Tried {
    fn failed(result: AttemptResult, message: String) -> Tried {
        Tried {
            result,
            grpc: None,
            reason: None,
            message: Some(message),
            link_id: None,
            log_index: None,
        }
    }
}

/// What an error status means for the write that got it.
fn classify(status: &tonic::Status) -> AttemptResult {
    let reason = reason(status);
    let reason = reason.as_deref();
    let session_field = status.get_details_bad_request().is_some_and(|b| {
        b.field_violations
            .iter()
            .any(|v| v.field == "request_id" || v.field == "client_id")
    });
    match status.code() {
        // The server's own UNAVAILABLE: nothing was applied (a transport failure carries no
        // ErrorInfo and may have been applied).
        Code::Unavailable if reason == Some("UNAVAILABLE") => AttemptResult::NotApplied,
        Code::FailedPrecondition if reason == Some("STALE_REQUEST") => {
            AttemptResult::SessionAnomaly
        }
        Code::InvalidArgument if session_field => AttemptResult::SessionAnomaly,
        Code::NotFound
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::InvalidArgument
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::OutOfRange
        | Code::Unimplemented => AttemptResult::Refused,
        _ => AttemptResult::Maybe,
    }
}

pub struct Client {
    name: String,
    bearer: Bearer,
    rng: Rng,
    shared: Arc<Shared>,
    session: u32,
    client_id: String,
    request_id: u64,
    channels: HashMap<usize, Channel>,
}

impl Client {
    pub fn new(name: &str, bearer: Bearer, rng: Rng, shared: Arc<Shared>) -> Client {
        let mut c = Client {
            name: name.to_string(),
            bearer,
            rng,
            shared,
            session: 0,
            client_id: String::new(),
            request_id: 0,
            channels: HashMap::new(),
        };
        c.new_session();
        c
    }

    fn new_session(&mut self) {
        self.session += 1;
        self.client_id = format!("chaos-{}-{}-s{}", self.shared.run, self.name, self.session);
        self.request_id = 0;
    }

    async fn channel(&mut self, index: usize, server: &str) -> Result<Channel, String> {
        if let Some(c) = self.channels.get(&index) {
            return Ok(c.clone());
        }
        let c = connect(server, Duration::from_secs(1))
            .await
            .map_err(|e| format!("{e:#}"))?;
        self.channels.insert(index, c.clone());
        Ok(c)
    }

    async fn attempt(&mut self, index: usize, action: &Action, timeout: Duration) -> Tried {
        let server = self.shared.servers[index].clone();
        let channel = match self.channel(index, &server).await {
            Ok(c) => c,
            Err(e) => return Tried::failed(AttemptResult::NotSent, e),
        };
        let mut client = LinkRegisterClient::with_interceptor(channel, self.bearer.clone());
        let (client_id, request_id) = (Some(self.client_id.clone()), Some(self.request_id));
        let call = async {
            match action {
                Action::Create {
                    ssin,
                    value,
                    validity,
                } => client
                    .create_link(with_timeout(
                        pb::CreateLinkRequest {
                            ssin: ssin.clone(),
                            country: COUNTRY.into(),
                            key_type: KEY_TYPE.into(),
                            value: value.clone(),
                            valid_from: validity.from.clone(),
                            valid_to: validity.to.clone(),
                            client_id,
                            request_id,
                        },
                        timeout,
                    ))
                    .await
                    .map(|r| {
                        let r = r.into_inner();
                        (r.link.map(|l| l.id), r.log_index)
                    }),
                Action::Update { link_id, validity } => client
                    .update_link_validity(with_timeout(
                        pb::UpdateLinkValidityRequest {
                            id: *link_id,
                            valid_from: validity.from.clone(),
                            valid_to: validity.to.clone(),
                            expected_version: None,
                            client_id,
                            request_id,
                        },
                        timeout,
                    ))
                    .await
                    .map(|r| {
                        let r = r.into_inner();
                        (r.link.map(|l| l.id), r.log_index)
                    }),
                Action::Delete { link_id } => client
                    .delete_link(with_timeout(
                        pb::DeleteLinkRequest {
                            id: *link_id,
                            reason: "chaos test".into(),
                            client_id,
                            request_id,
                        },
                        timeout,
                    ))
                    .await
                    .map(|r| {
                        let r = r.into_inner();
                        (Some(r.id), r.log_index)
                    }),
            }
        };
        match bounded(timeout, call).await {
            Err(_) => {
                self.channels.remove(&index);
                Tried::failed(AttemptResult::Maybe, "client-side timeout".into())
            }
            Ok(Ok((link_id, log_index))) => Tried {
                result: AttemptResult::Ok,
                grpc: None,
                reason: None,
                message: None,
                link_id,
                log_index: Some(log_index),
            },
            Ok(Err(status)) => {
                let reason = reason(&status);
                if reason.is_none() && status.code() != Code::DeadlineExceeded {
                    // Not the server's answer: the connection is suspect, make a new one.
                    self.channels.remove(&index);
                }
                Tried {
                    result: classify(&status),
                    grpc: Some(format!("{:?}", status.code())),
                    reason,
                    message: Some(status.message().to_string()),
                    link_id: None,
                    log_index: None,
                }
            }
        }
    }

    /// Runs one operation to its outcome and records it.
    pub async fn perform(&mut self, action: Action) -> OpRecord {
        self.request_id += 1;
        let shared = self.shared.clone();
        let op = shared.next_op.fetch_add(1, Ordering::Relaxed);
        let invoked_ms = shared.now_ms();
        let deadline = Instant::now() + shared.op_timeout;
        let n = shared.servers.len().max(1);
        let first = self.rng.below(n as u64) as usize;
        let mut record = OpRecord {
            op,
            client: self.name.clone(),
            client_id: self.client_id.clone(),
            request_id: self.request_id,
            action: action.clone(),
            invoked_ms,
            completed_ms: invoked_ms,
            outcome: Outcome::Failed,
            code: None,
            link_id: None,
            log_index: None,
            attempts: 0,
            acked_attempt_ms: None,
        };
        let mut maybe_applied = false;
        let mut backoff = Duration::from_millis(50);
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining < Duration::from_millis(100) {
                break;
            }
            let index = (first + record.attempts as usize) % n;
            record.attempts += 1;
            let started_ms = shared.now_ms();
            let tried = self
                .attempt(index, &action, shared.attempt_timeout.min(remaining))
                .await;
            shared.history.write(&Record::Attempt(AttemptRecord {
                op,
                client_id: self.client_id.clone(),
                request_id: self.request_id,
                attempt: record.attempts,
                server: shared.servers[index].clone(),
                started_ms,
                elapsed_ms: shared.now_ms().saturating_sub(started_ms),
                result: tried.result,
                grpc: tried.grpc.clone(),
                reason: tried.reason.clone(),
                message: tried.message.clone(),
            }));
            match tried.result {
                AttemptResult::Ok => {
                    record.outcome = Outcome::Acknowledged;
                    record.link_id = tried.link_id;
                    record.log_index = tried.log_index;
                    record.acked_attempt_ms = Some(started_ms);
                    record.code = None;
                    return self.finish(record);
                }
                AttemptResult::Refused => {
                    record.outcome = Outcome::Refused;
                    record.code = tried.reason.or(tried.grpc);
                    return self.finish(record);
                }
                AttemptResult::SessionAnomaly => {
                    eprintln!(
                        "chaos: SESSION ANOMALY {} request {} op {op}: {:?} {}",
                        self.client_id,
                        self.request_id,
                        tried.reason,
                        tried.message.as_deref().unwrap_or("")
                    );
                    maybe_applied = true;
                    record.code = tried.reason.or(tried.grpc);
                    break;
                }
                AttemptResult::Maybe => {
                    maybe_applied = true;
                    record.code = tried.reason.or(tried.grpc).or(tried.message);
                }
                AttemptResult::NotSent | AttemptResult::NotApplied => {
                    record.code = tried.reason.or(tried.grpc).or(tried.message);
                }
            }
            let jitter = Duration::from_millis(self.rng.below(50));
            tokio::time::sleep(
                backoff.min(deadline.saturating_duration_since(Instant::now())) + jitter,
            )
            .await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
        record.outcome = if maybe_applied {
            Outcome::Unknown
        } else {
            Outcome::Failed
        };
        self.finish(record)
    }

    fn finish(&mut self, mut record: OpRecord) -> OpRecord {
        record.completed_ms = self.shared.now_ms();
        self.shared.record(&record);
        if record.outcome == Outcome::Unknown {
            self.new_session();
        }
        record
    }

    /// A linearizable `GetLink` of a link acknowledged to this client, on a random node, to run
    /// beside the client (a writer waiting for it would delay its next write and stretch the
    /// measured time to the first acknowledged write after a fault). Then the keeper may learn
    /// of the link: until the read, nobody can have deleted it.
    fn read_back(&mut self, link_id: u64) -> impl Future<Output = ()> + Send + 'static {
        let n = self.shared.servers.len().max(1);
        let index = self.rng.below(n as u64) as usize;
        let server = self.shared.servers[index].clone();
        let cached = self.channels.get(&index).cloned();
        let (bearer, shared, name) = (self.bearer.clone(), self.shared.clone(), self.name.clone());
        async move {
            let found = async {
                let channel = match cached {
                    Some(c) => c,
                    None => connect(&server, Duration::from_secs(1)).await.ok()?,
                };
                let mut client = LinkRegisterClient::with_interceptor(channel, bearer);
                let request = pb::GetLinkRequest {
                    id: link_id,
                    consistency: pb::Consistency::Linearizable as i32,
                };
                let timeout = shared.attempt_timeout;
                match bounded(timeout, client.get_link(with_timeout(request, timeout))).await {
                    Ok(Ok(reply)) => Some(reply.into_inner().link.map(|l| l.id) == Some(link_id)),
                    Ok(Err(status)) if reason(&status).as_deref() == Some("LINK_NOT_FOUND") => {
                        Some(false)
                    }
                    Ok(Err(_)) | Err(_) => None,
                }
            }
            .await;
            let at_ms = shared.now_ms();
            {
                let mut reads = shared.reads.lock().unwrap_or_else(|p| p.into_inner());
                match found {
                    Some(true) => reads.found += 1,
                    Some(false) => reads.stale.push(format!(
                        "a linearizable read of link {link_id} on {server} at {at_ms} ms, after \
                         its creation was acknowledged to {name}, did not find it"
                    )),
                    None => reads.unanswered += 1,
                }
            }
            shared
                .deletable
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(link_id);
        }
    }

    async fn think(&mut self, lo_ms: u64, hi_ms: u64) {
        tokio::time::sleep(Duration::from_millis(self.rng.between(lo_ms, hi_ms))).await;
    }
}

/// A request carrying `timeout` for the server.
fn with_timeout<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.set_timeout(timeout);
    r
}

/// A call bounded on this side too, a little after the server's own `timeout`: a node whose
/// packets vanish would otherwise hold it until TCP gives up.
async fn bounded<F: Future>(
    timeout: Duration,
    call: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    tokio::time::timeout(timeout + Duration::from_millis(500), call).await
}

/// The `n`th day after 2030-01-01, as the API writes dates.
fn date_after_2030(n: u64) -> String {
    let base =
        time::Date::from_calendar_date(2030, time::Month::January, 1).unwrap_or(time::Date::MIN);
    let days = i64::try_from(n % 20_000).unwrap_or(0);
    base.checked_add(time::Duration::days(days))
        .unwrap_or(base)
        .to_string()
}

/// A writer: creates links with values no one else uses, and moves the validity of the links it
/// created and got acknowledged.
pub async fn writer(mut c: Client, number: usize) {
    let mut own: Vec<u64> = Vec::new();
    let mut read_backs = tokio::task::JoinSet::new();
    let (mut created, mut updated) = (0u64, 0u64);
    while !c.shared.stopped() {
        c.think(10, 60).await;
        let update = if c.rng.chance(30) {
            c.rng.pick(&own).copied()
        } else {
            None
        };
        let action = match update {
            Some(link_id) => {
                updated += 1;
                Action::Update {
                    link_id,
                    validity: Validity {
                        from: Some(VALID_FROM.into()),
                        to: Some(date_after_2030(updated)),
                    },
                }
            }
            None => {
                created += 1;
                let ssin = c.rng.pick(&c.shared.ssins).cloned().unwrap_or_default();
                Action::Create {
                    ssin,
                    // Letters between the numbers: normalization drops separators, and values
                    // must stay distinct after it.
                    value: format!("X{}W{number}N{created}", c.shared.run),
                    validity: Validity {
                        from: Some(VALID_FROM.into()),
                        to: None,
                    },
                }
            }
        };
        let record = c.perform(action).await;
        match (&record.action, record.outcome) {
            (Action::Create { .. }, Outcome::Acknowledged) => {
                if let Some(id) = record.link_id {
                    own.push(id);
                    read_backs.spawn(c.read_back(id));
                }
            }
            (Action::Update { link_id, .. }, Outcome::Refused) => {
                // Deleted by the keeper meanwhile (NOT_FOUND): stop updating it.
                own.retain(|id| id != link_id);
            }
            _ => {}
        }
    }
    // The run's verdict counts every read-back.
    while read_backs.join_next().await.is_some() {}
}

/// The keeper: deletes random acknowledged links.
pub async fn keeper(mut c: Client) {
    while !c.shared.stopped() {
        c.think(100, 400).await;
        let picked = {
            let mut links = c.shared.deletable.lock().unwrap_or_else(|p| p.into_inner());
            if links.is_empty() {
                None
            } else {
                let i = c.rng.below(links.len() as u64) as usize;
                Some(links.swap_remove(i))
            }
        };
        if let Some(link_id) = picked {
            c.perform(Action::Delete { link_id }).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_dates_are_distinct_valid_days() {
        assert_eq!(date_after_2030(0), "2030-01-01");
        assert_eq!(date_after_2030(31), "2030-02-01");
        assert_ne!(date_after_2030(365), date_after_2030(366));
    }

    #[test]
    fn only_the_servers_own_unavailable_means_not_applied() {
        use std::collections::HashMap;
        use tonic_types::ErrorDetails;
        let with = |code, reason: &str| {
            let mut d = ErrorDetails::new();
            d.set_error_info(reason, "linkreg", HashMap::new());
            tonic::Status::with_error_details(code, "x", d)
        };
        assert_eq!(
            classify(&with(Code::Unavailable, "UNAVAILABLE")),
            AttemptResult::NotApplied
        );
        assert_eq!(
            classify(&tonic::Status::unavailable("connection reset")),
            AttemptResult::Maybe
        );
        assert_eq!(
            classify(&with(Code::DeadlineExceeded, "OUTCOME_UNKNOWN")),
            AttemptResult::Maybe
        );
        assert_eq!(
            classify(&with(Code::FailedPrecondition, "STALE_REQUEST")),
            AttemptResult::SessionAnomaly
        );
        assert_eq!(
            classify(&with(Code::NotFound, "LINK_NOT_FOUND")),
            AttemptResult::Refused
        );
    }
}
