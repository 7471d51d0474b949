//! Group commit for link creations.
//!
//! openraft 0.9 appends each client write as its own entry and waits for that append's fsync
//! before it takes the next one, so creations from many clients cost one fsync each on every
//! replica, one after the other (measured: one `fdatasync` per create on the leader). Creations
//! that arrive while earlier ones are still on their way are gathered here into one
//! [`Payload::Creates`] entry instead: one append, one fsync per replica and one replication
//! round for the whole group. A follower gathers its own clients' creations the same way and
//! forwards each group to the leader whole.
//!
//! At most [`IN_FLIGHT`] groups are on their way at once; while they are, new creations wait
//! and form the next group. A lone client never waits: its creation leaves at once, alone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use super::route::{Attempt, Route};
use crate::raft::{Payload, Request, Response};

/// Groups on their way at once. openraft appends them one after the other anyway; a second one
/// lets the next group be forwarded and queued while the first is being appended.
const IN_FLIGHT: usize = 2;
/// Creations in one group at most: a few hundred bytes each, far below a message's limit.
const GROUP_MAX: usize = 256;

struct Queued {
    request: Request,
    deadline: Instant,
    answer: oneshot::Sender<Attempt>,
}

pub(super) struct Creations {
    /// The gathering task holds it weakly: a stopped node's store must close when the service
    /// goes, not whenever that task next runs.
    route: Arc<Route>,
    queue: OnceLock<mpsc::UnboundedSender<Queued>>,
    counts: Arc<Counts>,
}

/// Groups this node has sent and the creations they held, since it started: their ratio is the
/// mean group size, i.e. how many creations shared one fsync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCounts {
    pub groups: u64,
    pub creations: u64,
}

#[derive(Default)]
struct Counts {
    groups: AtomicU64,
    creations: AtomicU64,
}

impl Creations {
    pub(super) fn new(route: Route) -> Creations {
        Creations {
            route: Arc::new(route),
            queue: OnceLock::new(),
            counts: Arc::default(),
        }
    }

    pub(super) fn counts(&self) -> GroupCounts {
        GroupCounts {
            groups: self.counts.groups.load(Ordering::Relaxed),
            creations: self.counts.creations.load(Ordering::Relaxed),
        }
    }

    /// One attempt at `request` (a creation) as part of a group. Same meaning as a single
    /// attempt: `NotLeader` only if the group never reached a log.
    pub(super) async fn attempt(&self, request: Request, deadline: Instant) -> Attempt {
        let (answer, answered) = oneshot::channel();
        let queued = Queued {
            request,
            deadline,
            answer,
        };
        // The task lives as long as this sender, so the send fails only during shutdown.
        if self.queue().send(queued).is_err() {
            return Attempt::Unknown("the node is shutting down".into());
        }
        match tokio::time::timeout_at(deadline, answered).await {
            Ok(Ok(attempt)) => attempt,
            Ok(Err(_)) => Attempt::Unknown("the group of this write was dropped".into()),
            Err(_) => Attempt::Unknown("timed out waiting for the commit".into()),
        }
    }

    /// Started on first use, inside the runtime that serves the requests.
    fn queue(&self) -> &mpsc::UnboundedSender<Queued> {
        self.queue.get_or_init(|| {
            let (queue, queued) = mpsc::unbounded_channel();
            let route = Arc::downgrade(&self.route);
            tokio::spawn(gather(route, self.counts.clone(), queued));
            queue
        })
    }
}

/// Cuts groups from the queue: whatever waits when a slot frees up leaves together.
async fn gather(
    route: Weak<Route>,
    counts: Arc<Counts>,
    mut queued: mpsc::UnboundedReceiver<Queued>,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = queued.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut group = vec![first];
        while group.len() < GROUP_MAX {
            match queued.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        // Gone only once the service is: its callers have gone too.
        let Some(route) = route.upgrade() else {
            return;
        };
        let counts = counts.clone();
        tokio::spawn(async move {
            send(&route, &counts, group).await;
            drop(slot);
        });
    }
}

/// One attempt for the whole group; every member gets its own answer, or the group's fate.
async fn send(route: &Route, counts: &Counts, mut group: Vec<Queued>) {
    // A member whose caller gave up (deadline passed) has already been told "unknown"; sending
    // it anyway would be allowed, but is work for no one.
    group.retain(|q| !q.answer.is_closed());
    let Some(deadline) = group.iter().map(|q| q.deadline).max() else {
        return;
    };
    let Some((leader, info)) = route.known_leader() else {
        // Nothing was sent: each member's own retry loop waits for an election.
        for q in group {
            let _ = q.answer.send(Attempt::NotLeader);
        }
        return;
    };
    let (requests, answers): (Vec<Request>, Vec<oneshot::Sender<Attempt>>) =
        group.into_iter().map(|q| (q.request, q.answer)).unzip();
    let count = requests.len();
    counts.groups.fetch_add(1, Ordering::Relaxed);
    counts.creations.fetch_add(count as u64, Ordering::Relaxed);
    let attempt = route
        .attempt((leader, &info), Payload::Creates(requests), deadline)
        .await;
    match attempt {
        Attempt::Done(Response::Creates(each)) if each.len() == count => {
            for (answer, response) in answers.into_iter().zip(each) {
                let _ = answer.send(Attempt::Done(response));
            }
        }
        Attempt::Done(_) => {
            // Not the answer itself in the message: it may quote personal data.
            let reason =
                format!("the leader did not answer a group of {count} creations one by one");
            for answer in answers {
                let _ = answer.send(Attempt::Unknown(reason.clone()));
            }
        }
        fate => {
            for answer in answers {
                let _ = answer.send(fate.clone());
            }
        }
    }
}
