//! State-machine behaviour beyond openraft's suite: exactly-once sessions, audit trail, and
//! snapshots that carry the whole register from one node to another.

use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload, RaftSnapshotBuilder};
use tempfile::TempDir;

use super::*;
use crate::domain::command::{CreateLink, DeleteLink, SetKeyTypeActive, UpdateLinkValidity};
use crate::domain::{
    Action, Caller, Command, DomainError, LinkId, Organization, Outcome, RegisterView, Role,
};
use crate::raft::ClientRequest;

const T0: i64 = 1_796_292_000_000;

struct Node {
    _dir: TempDir,
    store: Arc<Store>,
    sm: StateMachine,
    next_index: u64,
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("db")).unwrap());
        let sm = StateMachine::open(store.clone(), &dir.path().join("snapshots")).unwrap();
        Node {
            _dir: dir,
            store,
            sm,
            next_index: 1,
        }
    }

    async fn apply(&mut self, request: Request) -> Response {
        self.apply_payload(Payload::One(Box::new(request))).await
    }

    async fn apply_payload(&mut self, payload: Payload) -> Response {
        let entry = Entry {
            log_id: openraft::LogId::new(CommittedLeaderId::new(1, 1), self.next_index),
            payload: EntryPayload::Normal(payload),
        };
        self.next_index += 1;
        self.sm.apply([entry]).await.unwrap().remove(0)
    }

    /// A node whose state differs from any populated one.
    async fn with_a_link_of_its_own() -> Node {
        let mut node = Node::new();
        node.apply(request(
            Role::Writer,
            0,
            create("85073003328", "QQ000001"),
            None,
        ))
        .await;
        node
    }

    /// The session record of `client` (of the test organization), if any.
    fn session(&self, client: &str) -> Option<SessionRecord> {
        self.store
            .session::<SessionRecord>(&session_key(&organization(), client))
            .unwrap()
    }

    async fn build_snapshot(&mut self) -> Snapshot<TypeConfig> {
        self.sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap()
    }

    /// Every row of the state machine, for exact comparison between nodes.
    fn rows(&self) -> Vec<(u8, Vec<u8>, Vec<u8>)> {
        let mut rows = Vec::new();
        let steady = self.store.steady().unwrap();
        self.store
            .export_state::<()>(&steady, |cf, k, v| {
                rows.push((cf, k.to_vec(), v.to_vec()));
                Ok(())
            })
            .unwrap()
            .unwrap();
        rows
    }
}

fn organization() -> Organization {
    Organization::new("Test", "0123456749").unwrap()
}

fn request(role: Role, seconds: i64, action: Action, session: Option<(&str, u64)>) -> Request {
    Request {
        command: Command {
            caller: Caller {
                organization: organization(),
                role,
            },
            at: Timestamp(T0 + seconds * 1000),
            action,
            context: None,
        },
        session: session.map(|(client_id, request_id)| ClientRequest {
            client_id: client_id.into(),
            request_id,
        }),
    }
}

fn create(ssin: &str, value: &str) -> Action {
    Action::CreateLink(CreateLink {
        ssin: ssin.into(),
        country: "NL".into(),
        key_type: "PASSPORT".into(),
        value: value.into(),
        ..Default::default()
    })
}

/// A fresh verdict as its replay from the session would read.
fn replay(response: Response) -> Response {
    match response {
        Response::Verdict {
            verdict, log_index, ..
        } => Response::Verdict {
            verdict,
            log_index,
            replayed: true,
        },
        other => other,
    }
}

fn created_id(response: &Response) -> LinkId {
    match response {
        Response::Verdict { verdict: v, .. } => match v.as_ref() {
            Ok(decision) => match &decision.outcome {
                Outcome::Link(link) => link.id,
                other => panic!("not a link: {other:?}"),
            },
            Err(e) => panic!("refused: {e}"),
        },
        other => panic!("no verdict: {other:?}"),
    }
}

#[tokio::test]
async fn a_retried_request_is_answered_from_its_session_not_applied_again() {
    let mut node = Node::new();
    let first = node
        .apply(request(
            Role::Writer,
            0,
            create("85073003328", "NX123456"),
            Some(("c1", 7)),
        ))
        .await;
    let id = created_id(&first);
    // The same request again (a client retrying after a lost answer): the recorded answer.
    let retry = node
        .apply(request(
            Role::Writer,
            5,
            create("85073003328", "NX123456"),
            Some(("c1", 7)),
        ))
        .await;
    // The same verdict and log index, marked as answered from the session.
    assert!(matches!(retry, Response::Verdict { replayed: true, .. }));
    assert!(matches!(
        first,
        Response::Verdict {
            replayed: false,
            ..
        }
    ));
    assert_eq!(replay(retry), replay(first.clone()));
    assert_eq!(
        node.store.next_link_id().unwrap(),
        LinkId(id.0 + 1),
        "no second link"
    );
    // Without a session the rules themselves refuse the duplicate.
    let unsessioned = node
        .apply(request(
            Role::Writer,
            6,
            create("85073003328", "NX123456"),
            None,
        ))
        .await;
    assert!(matches!(
        unsessioned,
        Response::Verdict { verdict, .. } if *verdict == Err(DomainError::LinkExists { existing: id })
    ));
    // An older request id than the last one seen is stale.
    let stale = node
        .apply(request(
            Role::Writer,
            7,
            create("75060898009", "ZZ999999"),
            Some(("c1", 6)),
        ))
        .await;
    assert_eq!(stale, Response::Stale { last_request_id: 7 });
    // Another client's request 7 is its own.
    let other = node
        .apply(request(
            Role::Writer,
            8,
            create("75060898009", "ZZ999999"),
            Some(("c2", 7)),
        ))
        .await;
    assert_ne!(created_id(&other), id);
    // A refusal is recorded too, so a retry cannot turn into a success later.
    let refused = node
        .apply(request(
            Role::Reader,
            9,
            create("75060898009", "AA111111"),
            Some(("c3", 1)),
        ))
        .await;
    let again = node
        .apply(request(
            Role::Writer,
            10,
            create("75060898009", "AA111111"),
            Some(("c3", 1)),
        ))
        .await;
    assert_eq!(replay(again), replay(refused));
    // The same id for a different request is not a retry: refused, nothing applied.
    let before = node.store.next_link_id().unwrap();
    let reused = node
        .apply(request(
            Role::Writer,
            11,
            create("17073003384", "BB222222"),
            Some(("c1", 7)),
        ))
        .await;
    assert_eq!(reused, Response::SessionReused { request_id: 7 });
    assert_eq!(node.store.next_link_id().unwrap(), before);
    // Another organization's client "c1" has a session of its own.
    let mut elsewhere = request(
        Role::Writer,
        12,
        create("17073003384", "BB222222"),
        Some(("c1", 7)),
    );
    elsewhere.command.caller.organization = Organization::new("Other", "0206653946").unwrap();
    assert_ne!(created_id(&node.apply(elsewhere).await), id);
}

#[tokio::test]
async fn sessions_expire_by_log_time() {
    let mut node = Node::new();
    node.apply(request(
        Role::Writer,
        0,
        create("85073003328", "NX123456"),
        Some(("old", 1)),
    ))
    .await;
    let day = 24 * 3600;
    node.apply(request(
        Role::Writer,
        day + 3600,
        create("75060898009", "ZZ999999"),
        Some(("new", 1)),
    ))
    .await;
    assert!(node.session("old").is_none());
    assert!(node.session("new").is_some());
}

#[tokio::test]
async fn every_change_leaves_an_audit_event_with_its_command() {
    let mut node = Node::new();
    let id = created_id(
        &node
            .apply(request(
                Role::Writer,
                0,
                create("85073003328", "NX123456"),
                None,
            ))
            .await,
    );
    let update = Action::UpdateLinkValidity(UpdateLinkValidity {
        id: id.0,
        valid_to: Some("2030-01-01".into()),
        ..Default::default()
    });
    node.apply(request(Role::Writer, 1, update.clone(), None))
        .await;
    // A refused command leaves no audit event.
    node.apply(request(Role::Reader, 2, update, None)).await;
    let delete = Action::DeleteLink(DeleteLink {
        id: id.0,
        reason: "wrong person".into(),
    });
    node.apply(request(Role::Keeper, 3, delete, None)).await;
    let deactivate = Action::SetKeyTypeActive(SetKeyTypeActive {
        code: "TAX_NUMBER".into(),
        active: false,
    });
    node.apply(request(Role::Keeper, 4, deactivate, None)).await;

    let history: Vec<AuditEvent> = node
        .store
        .audit_events(&keys::audit_link_prefix(id))
        .unwrap();
    let kinds: Vec<_> = history
        .iter()
        .map(|e| (e.log_index, e.command.action.name(), e.command.caller.role))
        .collect();
    assert_eq!(
        kinds,
        [
            (1, "create_link", Role::Writer),
            (2, "update_link_validity", Role::Writer),
            (4, "delete_link", Role::Keeper)
        ]
    );
    assert!(
        matches!(&history[2].change, Change::LinkDeleted { reason, .. } if reason == "wrong person")
    );
    let catalogue: Vec<AuditEvent> = node
        .store
        .audit_events(&[keys::AUDIT_CATALOGUE_TAG])
        .unwrap();
    assert_eq!(catalogue.len(), 1);
    assert_eq!(catalogue[0].log_index, 5);
}

async fn populated() -> Node {
    let mut node = Node::new();
    for (i, (ssin, value)) in [
        ("85073003328", "NX123456"),
        ("75060898009", "ZZ999999"),
        ("98472899765", "AB654321"),
    ]
    .into_iter()
    .enumerate()
    {
        node.apply(request(
            Role::Writer,
            i as i64,
            create(ssin, value),
            Some(("c", i as u64)),
        ))
        .await;
    }
    let deactivate = Action::SetKeyTypeActive(SetKeyTypeActive {
        code: "PENSION_NUMBER".into(),
        active: false,
    });
    node.apply(request(Role::Keeper, 9, deactivate, None)).await;
    node
}

#[tokio::test]
async fn a_snapshot_carries_the_whole_register_to_another_node() {
    let mut leader = populated().await;
    let built = leader.build_snapshot().await;
    assert_eq!(built.meta.last_log_id.map(|l| l.index), Some(4));
    let current = leader.sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, built.meta);

    let mut follower = Node::with_a_link_of_its_own().await;
    assert_ne!(follower.rows(), leader.rows());
    let mut receiving = follower.sm.begin_receiving_snapshot().await.unwrap();
    let mut source = current.snapshot;
    tokio::io::copy(&mut source, &mut receiving).await.unwrap();
    follower
        .sm
        .install_snapshot(&current.meta, receiving)
        .await
        .unwrap();

    assert_eq!(
        follower.rows(),
        leader.rows(),
        "follower state differs after install"
    );
    // Readers were kept out while the state was replaced, and are let in again after.
    let links = |node: &Node| {
        let mut links = Vec::new();
        let view = node.store.view().expect("a view after the install");
        view.for_each_link(|link| {
            links.push(link);
            true
        })
        .unwrap();
        links
    };
    assert_eq!(links(&follower), links(&leader));
    assert_eq!(
        follower.sm.applied_state().await.unwrap(),
        leader.sm.applied_state().await.unwrap()
    );
    let installed = follower.sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(installed.meta, current.meta);
    // Sessions travel with the snapshot: a retry on the new node is still recognised.
    let retry = follower
        .apply(request(
            Role::Writer,
            20,
            create("98472899765", "AB654321"),
            Some(("c", 2)),
        ))
        .await;
    assert_eq!(created_id(&retry), LinkId(3));
}

#[tokio::test]
async fn a_damaged_snapshot_is_refused_and_changes_nothing() {
    let mut leader = populated().await;
    leader.build_snapshot().await;
    let current = leader.sm.get_current_snapshot().await.unwrap().unwrap();
    let path = leader.sm.path(CURRENT);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;

    let mut follower = Node::with_a_link_of_its_own().await;
    let before = follower.rows();
    let mut receiving = follower.sm.begin_receiving_snapshot().await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut *receiving, &bytes)
        .await
        .unwrap();
    assert!(
        follower
            .sm
            .install_snapshot(&current.meta, receiving)
            .await
            .is_err()
    );
    assert_eq!(follower.rows(), before);
    assert!(follower.sm.get_current_snapshot().await.unwrap().is_none());
}

#[tokio::test]
async fn an_interrupted_install_is_finished_on_the_next_open() {
    let mut leader = populated().await;
    leader.build_snapshot().await;

    let follower = Node::new();
    // As if the node died after verifying the received file and clearing part of its state.
    std::fs::copy(leader.sm.path(CURRENT), follower.sm.path(INSTALLING_FILE)).unwrap();
    follower.store.set_raft_meta(INSTALLING, &true).unwrap();
    follower.store.clear_state().unwrap();
    let reopened = StateMachine::open(follower.store.clone(), &follower.sm.snapshot_dir).unwrap();
    assert_eq!(follower.rows(), leader.rows());
    assert!(
        follower
            .store
            .raft_meta::<bool>(INSTALLING)
            .unwrap()
            .is_none()
    );
    assert!(reopened.path(CURRENT).exists() && !reopened.path(INSTALLING_FILE).exists());
}

#[tokio::test]
async fn a_client_back_after_a_day_keeps_the_session_its_new_request_writes() {
    let mut node = Node::new();
    node.apply(request(
        Role::Writer,
        0,
        create("85073003328", "NX123456"),
        Some(("c1", 1)),
    ))
    .await;
    // A day and an hour later: this entry's sweep finds c1's old record expired, while the
    // entry itself records c1's new request.
    let later = 24 * 3600 + 3600 + 1;
    let back = request(
        Role::Writer,
        later,
        create("75060898009", "ZZ999999"),
        Some(("c1", 2)),
    );
    let first = node.apply(back.clone()).await;
    let record = node
        .session("c1")
        .expect("the new request's session record");
    assert_eq!(record.request_id, 2);
    assert_eq!(node.apply(back).await, replay(first));
}

fn verdict_error(response: &Response) -> DomainError {
    match response {
        Response::Verdict { verdict, .. } => match verdict.as_ref() {
            Err(e) => e.clone(),
            Ok(decision) => panic!("not refused: {decision:?}"),
        },
        other => panic!("no verdict: {other:?}"),
    }
}

#[tokio::test]
async fn grouped_creations_are_decided_in_order_each_seeing_the_ones_before_it() {
    let mut node = Node::new();
    let first = request(
        Role::Writer,
        1,
        create("85073003328", "GR000001"),
        Some(("a", 1)),
    );
    let group = vec![
        first.clone(),
        // The same link again, from another client: exists, by the first one.
        request(Role::Writer, 1, create("85073003328", "GR000001"), None),
        // The first request retried inside the same entry: answered from its session.
        first.clone(),
        request(
            Role::Writer,
            2,
            create("75060898009", "GR000002"),
            Some(("b", 9)),
        ),
        // b's older request arriving after it in the same entry: stale, not decided.
        request(
            Role::Writer,
            2,
            create("75060898009", "GR000003"),
            Some(("b", 8)),
        ),
        // Not a creation: never grouped by the service; answered with nothing, changes nothing.
        request(
            Role::Keeper,
            2,
            Action::DeleteLink(DeleteLink {
                id: 1,
                reason: "test".into(),
            }),
            None,
        ),
    ];
    let group_index = node.next_index;
    let Response::Creates(answers) = node.apply_payload(Payload::Creates(group)).await else {
        panic!("a group gets one answer per request");
    };
    assert_eq!(answers.len(), 6);
    let id = created_id(&answers[0]);
    assert!(matches!(
        verdict_error(&answers[1]),
        DomainError::LinkExists { existing } if existing == id
    ));
    assert_eq!(answers[2], replay(answers[0].clone()));
    assert_eq!(created_id(&answers[3]), LinkId(id.0 + 1));
    assert_eq!(answers[4], Response::Stale { last_request_id: 9 });
    assert_eq!(answers[5], Response::None);
    for answer in &answers[..4] {
        let Response::Verdict { log_index, .. } = answer else {
            panic!("no verdict: {answer:?}");
        };
        assert_eq!(*log_index, group_index);
    }

    // Stored as if each creation had had its own entry: both links, their indexes, one audit
    // event each, the next id after them, and the sessions.
    for (id, ssin) in [(id, "85073003328"), (LinkId(id.0 + 1), "75060898009")] {
        let link = node.store.link(id).unwrap().expect("the created link");
        assert_eq!(link.ssin.to_string(), ssin);
        let ssin = link.ssin;
        assert_eq!(node.store.links_by_ssin(&ssin).unwrap(), vec![link]);
        let history: Vec<AuditEvent> = node
            .store
            .audit_events(&crate::store::keys::audit_link_prefix(id))
            .unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].log_index, group_index);
    }
    assert_eq!(node.store.next_link_id().unwrap(), LinkId(id.0 + 2));
    assert_eq!(
        node.apply(request(
            Role::Writer,
            3,
            create("85073003328", "GR000001"),
            Some(("a", 1))
        ))
        .await,
        replay(answers[0].clone())
    );
    let b = node.session("b").expect("b's session");
    assert_eq!((b.request_id, b.log_index), (9, group_index));
}
