//! Observability on the HTTP listener: Prometheus metrics, liveness and readiness.
//!
//! ```text
//!   gRPC client listener ─► GrpcLayer (tower, keyed by request path) ─┐
//!   SOAP router ─► handler tags its response with a soap::Exchange ───┤ record
//!                    └► measure_soap (axum middleware) reads the tag ─┘   ▼
//!                                                                    Metrics (one per node)
//!   raft metrics watch ─► follow_raft: snapshot / purge / leader-change counts ─┘   │
//!   GET /metrics ─► encode: request families + NodeCollector (raft, RocksDB, /proc, read
//!                   at scrape time)                                                  ◄┘
//!   GET /healthz ─► 200 while the process answers
//!   GET /readyz  ─► 200 when a leader is known and everything known committed is applied
//! ```
//!
//! Nothing here is a global: several nodes in one process (the tests) each have their own
//! [`Metrics`]. See DESIGN.md beside this file for the choices.

mod grpc_layer;
mod metrics;
mod process;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;

use crate::api::soap::Exchange;
use crate::raft::NodeId;
use crate::raft::node::RaftNode;

pub use grpc_layer::{GrpcLayer, GrpcMetricsService, ObservedBody};
pub use metrics::{Format, Metrics, NodeFacts, code_name};

/// Why a node is not ready to serve local reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("no leader is known")]
    NoLeader,
    #[error("applied index {applied:?} is behind the known committed index {committed:?}")]
    Behind {
        applied: Option<u64>,
        committed: Option<u64>,
    },
    #[error("the node is shutting down")]
    Draining,
}

/// Ready when this node knows a leader and has applied everything it knows to be committed, so
/// that a local read is not behind what it could serve. The one readiness rule: gRPC health
/// and `/readyz` both use it.
pub fn readiness(
    leader: Option<NodeId>,
    applied: Option<u64>,
    committed: Option<u64>,
) -> Result<(), NotReady> {
    if leader.is_none() {
        Err(NotReady::NoLeader)
    } else if applied < committed {
        Err(NotReady::Behind { applied, committed })
    } else {
        Ok(())
    }
}

/// [`readiness`] of a running node, from its raft metrics and commit index.
pub fn node_readiness(node: &RaftNode) -> Result<(), NotReady> {
    let (leader, applied) = {
        let metrics = node.raft.metrics();
        let m = metrics.borrow();
        (m.current_leader, m.last_applied.map(|l| l.index))
    };
    readiness(leader, applied, *node.committed.borrow())
}

struct Http {
    metrics: Arc<Metrics>,
    node: Arc<RaftNode>,
    draining: watch::Receiver<bool>,
}

/// `/metrics`, `/healthz` and `/readyz`, to merge into the HTTP listener's router. `draining`
/// turns true when the node starts shutting down: from then on it is not ready.
pub fn router(
    metrics: Arc<Metrics>,
    node: Arc<RaftNode>,
    draining: watch::Receiver<bool>,
) -> Router {
    let state = Arc::new(Http {
        metrics,
        node,
        draining,
    });
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Measures the SOAP router: every response its handler tagged with an [`Exchange`].
pub fn measure_soap(router: Router, metrics: Arc<Metrics>) -> Router {
    router.layer(axum::middleware::from_fn_with_state(metrics, soap_exchange))
}

async fn soap_exchange(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    if let Some(exchange) = response.extensions().get::<Exchange>() {
        metrics.soap_finished(exchange, started.elapsed());
    }
    response
}

async fn scrape(State(http): State<Arc<Http>>, headers: HeaderMap) -> Response {
    let format = Format::accepted(
        headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default(),
    );
    let metrics = http.metrics.clone();
    // RocksDB properties and /proc are read while encoding: cheap, but blocking calls.
    let why = match tokio::task::spawn_blocking(move || metrics.encode(format)).await {
        Ok(Ok(text)) => {
            return ([(header::CONTENT_TYPE, format.content_type())], text).into_response();
        }
        Ok(Err(e)) => format!("encoding the metrics: {e}"),
        Err(e) => format!("metrics task: {e}"),
    };
    tracing::error!("{why}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "cannot encode the metrics\n",
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(http): State<Arc<Http>>) -> Response {
    let ready = if *http.draining.borrow() {
        Err(NotReady::Draining)
    } else {
        node_readiness(&http.node)
    };
    match ready {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

/// Counts what raft's metrics show changing: a new snapshot (built here or installed from the
/// leader), a purge of the log, a change of leader. Runs until raft stops or `stop` turns true.
pub async fn follow_raft(
    node: Arc<RaftNode>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut watch = node.raft.metrics();
    let mut seen = metrics::Seen::of(&watch.borrow_and_update());
    loop {
        tokio::select! {
            changed = watch.changed() => if changed.is_err() { break },
            _ = stop.wait_for(|s| *s) => break,
        }
        let now = metrics::Seen::of(&watch.borrow_and_update());
        metrics.raft_changed(&seen, &now);
        seen = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_a_leader_and_everything_committed_applied() {
        assert_eq!(readiness(None, Some(3), Some(3)), Err(NotReady::NoLeader));
        assert_eq!(
            readiness(Some(1), Some(2), Some(3)),
            Err(NotReady::Behind {
                applied: Some(2),
                committed: Some(3)
            })
        );
        assert_eq!(
            readiness(Some(1), None, Some(0)),
            Err(NotReady::Behind {
                applied: None,
                committed: Some(0)
            })
        );
        assert_eq!(readiness(Some(1), Some(3), Some(3)), Ok(()));
        // The commit index a node has heard of may trail what it applied.
        assert_eq!(readiness(Some(1), Some(4), Some(3)), Ok(()));
        assert_eq!(readiness(Some(2), None, None), Ok(()));
    }
}
