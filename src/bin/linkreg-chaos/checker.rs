//! The verdict on a run: what the clients were told (the operation records) against what every
//! node holds at the end (its links, its digest). Pure: no I/O, so it is unit-tested with small
//! hand-made histories.
//!
//! Rules, checked on each node separately:
//!
//! - an acknowledged create is present exactly once, with the id it was acknowledged with,
//!   unless a delete of that id was acknowledged (then absent) or has an unknown outcome (then
//!   either); missing otherwise, or present after an acknowledged delete, is **lost**;
//! - a create with an unknown outcome is present at most once;
//! - any value present twice is a **duplicate**; a link whose value no client sent is a
//!   **phantom**;
//! - a create or update that was refused, or answered "nothing applied" on every attempt, must
//!   not show (a **contract** violation: UNAVAILABLE promises nothing was applied);
//! - a surviving link's validity is the last acknowledged update's, or that of an update with an
//!   unknown outcome sent after it (the initial validity when no update was acknowledged); any
//!   other value is a lost update (counted in **lost**).
//!
//! - an update or delete refused as LINK_NOT_FOUND must concern a link a delete had been sent
//!   for by then (a **contract** violation otherwise: the register denied an acknowledged link).
//!
//! Then across nodes: every node holds the same links (id, value, validity, version), and
//! reports the same digest at the same applied index.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::history::{Action, NodeState, ObservedLink, OpRecord, Outcome, Validity};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Lost,
    Duplicate,
    Phantom,
    Contract,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub lost: usize,
    pub duplicates: usize,
    pub phantoms: usize,
    pub contract: usize,
    pub acked_creates: usize,
    pub acked_updates: usize,
    pub acked_deletes: usize,
    pub unknown_ops: usize,
    /// Creates with an unknown outcome found present (once) / absent, on the first node.
    pub unknown_creates_present: usize,
    pub unknown_creates_absent: usize,
    pub nodes_equal: bool,
    pub digests_equal: bool,
    /// One line per problem, naming the nodes it was seen on.
    pub problems: Vec<String>,
}

impl Verdict {
    pub fn acknowledged(&self) -> usize {
        self.acked_creates + self.acked_updates + self.acked_deletes
    }

    pub fn passed(&self) -> bool {
        self.lost == 0
            && self.duplicates == 0
            && self.phantoms == 0
            && self.contract == 0
            && self.nodes_equal
            && self.digests_equal
    }
}

/// The operations, indexed the ways the rules need.
struct Index<'a> {
    creates: HashMap<&'a str, &'a OpRecord>,
    updates: HashMap<u64, Vec<&'a OpRecord>>,
    deletes: HashMap<u64, Vec<&'a OpRecord>>,
}

fn index(ops: &[OpRecord]) -> Index<'_> {
    let mut ix = Index {
        creates: HashMap::new(),
        updates: HashMap::new(),
        deletes: HashMap::new(),
    };
    for op in ops {
        match &op.action {
            Action::Create { value, .. } => {
                ix.creates.insert(value.as_str(), op);
            }
            Action::Update { link_id, .. } => ix.updates.entry(*link_id).or_default().push(op),
            Action::Delete { link_id } => ix.deletes.entry(*link_id).or_default().push(op),
        }
    }
    for list in ix.updates.values_mut() {
        list.sort_by_key(|op| (op.invoked_ms, op.op));
    }
    ix
}

/// Problems found on one node: (kind, key) → description.
type Found = BTreeMap<(Kind, String), String>;

fn note(found: &mut Found, kind: Kind, key: String, what: String) {
    found.entry((kind, key)).or_insert(what);
}

fn check_node(ix: &Index<'_>, node: &NodeState) -> Found {
    let mut found = Found::new();
    let mut by_value: HashMap<&str, Vec<&ObservedLink>> = HashMap::new();
    for link in &node.links {
        by_value.entry(link.value.as_str()).or_default().push(link);
    }
    for (value, links) in &by_value {
        if !ix.creates.contains_key(value) {
            for l in links {
                note(
                    &mut found,
                    Kind::Phantom,
                    format!("{value}#{}", l.id),
                    format!("link {} value {value} was never sent by any client", l.id),
                );
            }
        }
        if links.len() > 1 {
            let ids: Vec<u64> = links.iter().map(|l| l.id).collect();
            note(
                &mut found,
                Kind::Duplicate,
                value.to_string(),
                format!(
                    "value {value} is present {} times: links {ids:?}",
                    links.len()
                ),
            );
        }
    }
    for (value, create) in &ix.creates {
        let present = by_value.get(value).map(Vec::as_slice).unwrap_or_default();
        match create.outcome {
            Outcome::Acknowledged => check_acked_create(ix, create, value, present, &mut found),
            Outcome::Unknown => {}
            Outcome::Refused | Outcome::Failed => {
                if let Some(l) = present.first() {
                    note(
                        &mut found,
                        Kind::Contract,
                        value.to_string(),
                        format!(
                            "create op {} of {value} ended {:?} ({}) but link {} holds it",
                            create.op,
                            create.outcome,
                            create.code.as_deref().unwrap_or("-"),
                            l.id
                        ),
                    );
                }
            }
        }
    }
    found
}

fn check_acked_create(
    ix: &Index<'_>,
    create: &OpRecord,
    value: &str,
    present: &[&ObservedLink],
    found: &mut Found,
) {
    let id = create.link_id;
    let deletes = id
        .and_then(|id| ix.deletes.get(&id))
        .map(Vec::as_slice)
        .unwrap_or_default();
    let delete_acked = deletes.iter().find(|d| d.outcome == Outcome::Acknowledged);
    let delete_maybe = deletes
        .iter()
        .any(|d| matches!(d.outcome, Outcome::Acknowledged | Outcome::Unknown));
    let Some(link) = present.first() else {
        if !delete_maybe {
            note(
                found,
                Kind::Lost,
                value.to_string(),
                format!(
                    "acknowledged create op {} of {value} (link {}) is missing",
                    create.op,
                    id.map_or("?".into(), |i| i.to_string())
                ),
            );
        }
        return;
    };
    if Some(link.id) != id {
        note(
            found,
            Kind::Lost,
            value.to_string(),
            format!(
                "acknowledged create op {} of {value} answered link {:?}, but the link holding \
                 it is {}",
                create.op, id, link.id
            ),
        );
        return;
    }
    if let Some(d) = delete_acked {
        note(
            found,
            Kind::Lost,
            format!("delete:{}", link.id),
            format!(
                "acknowledged delete op {} of link {} ({value}) is not reflected: the link is \
                 still there",
                d.op, link.id
            ),
        );
        return;
    }
    let Action::Create { validity, .. } = &create.action else {
        return;
    };
    check_validity(ix, link, validity, found);
}

fn check_validity(ix: &Index<'_>, link: &ObservedLink, initial: &Validity, found: &mut Found) {
    let updates = ix
        .updates
        .get(&link.id)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let validity_of = |op: &OpRecord| match &op.action {
        Action::Update { validity, .. } => Some(validity.clone()),
        _ => None,
    };
    let last_acked = updates
        .iter()
        .rposition(|u| u.outcome == Outcome::Acknowledged);
    let (expected, later) = match last_acked {
        Some(p) => (validity_of(updates[p]), &updates[p + 1..]),
        None => (Some(initial.clone()), updates),
    };
    let mut allowed: BTreeSet<Validity> = expected.iter().cloned().collect();
    allowed.extend(
        later
            .iter()
            .filter(|u| u.outcome == Outcome::Unknown)
            .filter_map(|u| validity_of(u)),
    );
    if allowed.contains(&link.validity) {
        return;
    }
    let not_applied = updates.iter().find(|u| {
        matches!(u.outcome, Outcome::Refused | Outcome::Failed)
            && validity_of(u).as_ref() == Some(&link.validity)
    });
    let expected = expected.map_or("?".into(), |v| v.to_string());
    match not_applied {
        Some(u) => note(
            found,
            Kind::Contract,
            format!("update:{}", link.id),
            format!(
                "link {} shows validity {} of update op {}, which ended {:?} ({}); expected {}",
                link.id,
                link.validity,
                u.op,
                u.outcome,
                u.code.as_deref().unwrap_or("-"),
                expected
            ),
        ),
        None => note(
            found,
            Kind::Lost,
            format!("update:{}", link.id),
            format!(
                "link {} ({}) shows validity {}, expected {} (the last acknowledged update, \
                 or an unknown one sent after it)",
                link.id, link.value, link.validity, expected
            ),
        ),
    }
}

/// Refusals that only a deleted link may get: "not found" for a link no delete had been sent for
/// when the answer came. Seen by the client, not on a node: the key names no node.
fn check_refusals(ix: &Index<'_>, ops: &[OpRecord]) -> Found {
    let mut found = Found::new();
    for op in ops {
        let link_id = match &op.action {
            Action::Update { link_id, .. } | Action::Delete { link_id } => *link_id,
            Action::Create { .. } => continue,
        };
        if op.outcome != Outcome::Refused || op.code.as_deref() != Some("LINK_NOT_FOUND") {
            continue;
        }
        let deleted_before = ix.deletes.get(&link_id).is_some_and(|ds| {
            ds.iter()
                .any(|d| d.op != op.op && d.invoked_ms <= op.completed_ms)
        });
        if !deleted_before {
            note(
                &mut found,
                Kind::Contract,
                format!("not-found:{}", op.op),
                format!(
                    "op {} ({} of link {link_id}) was refused LINK_NOT_FOUND, but no delete of \
                     that link had been sent",
                    op.op,
                    match op.action {
                        Action::Update { .. } => "update",
                        _ => "delete",
                    }
                ),
            );
        }
    }
    found
}

/// The whole verdict over every node's final state.
pub fn check(ops: &[OpRecord], nodes: &[NodeState]) -> Verdict {
    let ix = index(ops);
    let mut v = Verdict::default();
    for op in ops {
        match (op.outcome, &op.action) {
            (Outcome::Acknowledged, Action::Create { .. }) => v.acked_creates += 1,
            (Outcome::Acknowledged, Action::Update { .. }) => v.acked_updates += 1,
            (Outcome::Acknowledged, Action::Delete { .. }) => v.acked_deletes += 1,
            (Outcome::Unknown, _) => v.unknown_ops += 1,
            _ => {}
        }
    }
    let mut all: BTreeMap<(Kind, String), (String, Vec<u64>)> = BTreeMap::new();
    for (key, what) in check_refusals(&ix, ops) {
        all.insert(key, (what, Vec::new()));
    }
    for node in nodes {
        for (key, what) in check_node(&ix, node) {
            all.entry(key)
                .or_insert_with(|| (what, Vec::new()))
                .1
                .push(node.node_id);
        }
    }
    for ((kind, _), (what, on)) in &all {
        match kind {
            Kind::Lost => v.lost += 1,
            Kind::Duplicate => v.duplicates += 1,
            Kind::Phantom => v.phantoms += 1,
            Kind::Contract => v.contract += 1,
        }
        if on.is_empty() {
            v.problems.push(format!("{kind:?}: {what}"));
        } else {
            v.problems.push(format!("{kind:?} on nodes {on:?}: {what}"));
        }
    }
    if let Some(first) = nodes.first() {
        let values: BTreeSet<&str> = first.links.iter().map(|l| l.value.as_str()).collect();
        for (value, op) in &ix.creates {
            if op.outcome == Outcome::Unknown {
                if values.contains(value) {
                    v.unknown_creates_present += 1;
                } else {
                    v.unknown_creates_absent += 1;
                }
            }
        }
    }
    v.nodes_equal = !nodes.is_empty();
    let canonical = |n: &NodeState| {
        let mut links = n.links.clone();
        links.sort();
        links
    };
    if let Some(first) = nodes.first() {
        let reference = canonical(first);
        for other in &nodes[1..] {
            let theirs = canonical(other);
            if theirs != reference {
                v.nodes_equal = false;
                v.problems.push(format!(
                    "node {} holds {} links, node {} holds {}; they differ{}",
                    first.node_id,
                    reference.len(),
                    other.node_id,
                    theirs.len(),
                    first_difference(&reference, &theirs)
                ));
            }
        }
    }
    let digests: BTreeSet<(Option<u64>, &str)> = nodes
        .iter()
        .map(|n| (n.applied_index, n.sha256.as_str()))
        .collect();
    v.digests_equal = digests.len() == 1 && nodes.iter().all(|n| n.applied_index.is_some());
    if !v.digests_equal {
        let each: Vec<String> = nodes
            .iter()
            .map(|n| format!("node {} {:?} {}", n.node_id, n.applied_index, n.sha256))
            .collect();
        v.problems
            .push(format!("digests differ: {}", each.join("; ")));
    }
    v
}

fn first_difference(a: &[ObservedLink], b: &[ObservedLink]) -> String {
    let (sa, sb): (BTreeSet<_>, BTreeSet<_>) = (a.iter().collect(), b.iter().collect());
    let only_a = sa.difference(&sb).next();
    let only_b = sb.difference(&sa).next();
    format!(" (first only in the former: {only_a:?}; only in the latter: {only_b:?})")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn period(to: Option<&str>) -> Validity {
        Validity {
            from: Some("2020-01-01".into()),
            to: to.map(str::to_string),
        }
    }

    fn op(n: u64, action: Action, outcome: Outcome, link_id: Option<u64>) -> OpRecord {
        OpRecord {
            op: n,
            client: "writer-0".into(),
            client_id: "c".into(),
            request_id: n,
            action,
            invoked_ms: n * 10,
            completed_ms: n * 10 + 5,
            outcome,
            code: None,
            link_id,
            log_index: None,
            attempts: 1,
            acked_attempt_ms: None,
        }
    }

    fn create(n: u64, value: &str, outcome: Outcome, link_id: Option<u64>) -> OpRecord {
        let action = Action::Create {
            ssin: "85073003328".into(),
            value: value.into(),
            validity: period(None),
        };
        op(n, action, outcome, link_id)
    }

    fn update(n: u64, link_id: u64, to: &str, outcome: Outcome) -> OpRecord {
        let action = Action::Update {
            link_id,
            validity: period(Some(to)),
        };
        op(n, action, outcome, Some(link_id))
    }

    fn delete(n: u64, link_id: u64, outcome: Outcome) -> OpRecord {
        op(n, Action::Delete { link_id }, outcome, Some(link_id))
    }

    fn link(id: u64, value: &str, to: Option<&str>) -> ObservedLink {
        ObservedLink {
            id,
            ssin: "85073003328".into(),
            value: value.into(),
            validity: period(to),
            version: 1,
        }
    }

    fn node(id: u64, links: Vec<ObservedLink>) -> NodeState {
        NodeState {
            node_id: id,
            applied_index: Some(42),
            sha256: "abc".into(),
            rows: 0,
            links,
        }
    }

    fn three(links: Vec<ObservedLink>) -> Vec<NodeState> {
        (1..=3).map(|i| node(i, links.clone())).collect()
    }

    #[test]
    fn a_clean_history_passes() {
        let ops = vec![
            create(1, "A1", Outcome::Acknowledged, Some(1)),
            create(2, "A2", Outcome::Acknowledged, Some(2)),
            update(3, 1, "2031-01-01", Outcome::Acknowledged),
            delete(4, 2, Outcome::Acknowledged),
            update(5, 2, "2032-01-01", Outcome::Refused),
        ];
        let v = check(&ops, &three(vec![link(1, "A1", Some("2031-01-01"))]));
        assert!(v.passed(), "{v:?}");
        assert_eq!(v.acknowledged(), 4);
        assert_eq!(
            (v.acked_creates, v.acked_updates, v.acked_deletes),
            (2, 1, 1)
        );
    }

    #[test]
    fn a_lost_create_is_detected() {
        let ops = vec![
            create(1, "A1", Outcome::Acknowledged, Some(1)),
            create(2, "A2", Outcome::Acknowledged, Some(2)),
        ];
        let v = check(&ops, &three(vec![link(1, "A1", None)]));
        assert_eq!(v.lost, 1, "{v:?}");
        assert!(!v.passed());
        assert!(v.problems[0].contains("A2"), "{:?}", v.problems);
        assert!(v.problems[0].contains("[1, 2, 3]"), "{:?}", v.problems);
    }

    #[test]
    fn a_create_missing_after_an_unknown_delete_is_fine_but_not_without_one() {
        let ops = vec![
            create(1, "A1", Outcome::Acknowledged, Some(1)),
            delete(2, 1, Outcome::Unknown),
        ];
        assert!(check(&ops, &three(vec![])).passed());
        assert!(check(&ops, &three(vec![link(1, "A1", None)])).passed());
        let refused_delete = vec![
            create(1, "A1", Outcome::Acknowledged, Some(1)),
            delete(2, 1, Outcome::Refused),
        ];
        assert_eq!(check(&refused_delete, &three(vec![])).lost, 1);
    }

    #[test]
    fn an_acknowledged_delete_that_did_not_happen_is_lost() {
        let ops = vec![
            create(1, "A1", Outcome::Acknowledged, Some(1)),
            delete(2, 1, Outcome::Acknowledged),
        ];
        let v = check(&ops, &three(vec![link(1, "A1", None)]));
        assert_eq!(v.lost, 1, "{v:?}");
    }

    #[test]
    fn a_duplicate_is_detected() {
        let ops = vec![create(1, "A1", Outcome::Unknown, None)];
        let v = check(&ops, &three(vec![link(1, "A1", None), link(2, "A1", None)]));
        assert_eq!(v.duplicates, 1, "{v:?}");
        assert!(!v.passed());
    }

    #[test]
    fn a_phantom_is_detected() {
        let ops = vec![create(1, "A1", Outcome::Acknowledged, Some(1))];
        let v = check(
            &ops,
            &three(vec![link(1, "A1", None), link(7, "NEVER1", None)]),
        );
        assert_eq!(v.phantoms, 1, "{v:?}");
        assert_eq!(v.lost, 0);
        assert!(!v.passed());
    }

    #[test]
    fn an_unknown_create_present_once_or_absent_is_fine() {
        let ops = vec![
            create(1, "A1", Outcome::Unknown, None),
            create(2, "A2", Outcome::Unknown, None),
        ];
        let v = check(&ops, &three(vec![link(5, "A1", None)]));
        assert!(v.passed(), "{v:?}");
        assert_eq!(
            (v.unknown_creates_present, v.unknown_creates_absent),
            (1, 1)
        );
        assert_eq!(v.unknown_ops, 2);
    }

    #[test]
    fn a_create_answered_not_applied_must_not_show() {
        let ops = vec![create(1, "A1", Outcome::Failed, None)];
        let v = check(&ops, &three(vec![link(1, "A1", None)]));
        assert_eq!(v.contract, 1, "{v:?}");
        assert!(!v.passed());
    }

    #[test]
    fn the_last_acknowledged_update_or_a_later_unknown_one_shows() {
        let ops = vec![
            create(1, "A1", Outcome::Acknowledged, Some(1)),
            update(2, 1, "2031-01-01", Outcome::Unknown),
            update(3, 1, "2032-01-01", Outcome::Acknowledged),
            update(4, 1, "2033-01-01", Outcome::Unknown),
        ];
        for ok in ["2032-01-01", "2033-01-01"] {
            let v = check(&ops, &three(vec![link(1, "A1", Some(ok))]));
            assert!(v.passed(), "{ok}: {v:?}");
        }
        for lost in ["2031-01-01", "2039-01-01"] {
            let v = check(&ops, &three(vec![link(1, "A1", Some(lost))]));
            assert_eq!(v.lost, 1, "{lost}: {v:?}");
        }
        let v = check(&ops, &three(vec![link(1, "A1", None)]));
        assert_eq!(
            v.lost, 1,
            "the initial validity after an acknowledged update: {v:?}"
        );
    }

    #[test]
    fn without_an_acknowledged_update_the_initial_validity_or_an_unknown_one_shows() {
        let ops = vec![
            create(1, "A1", Outcome::Acknowledged, Some(1)),
            update(2, 1, "2031-01-01", Outcome::Unknown),
            update(3, 1, "2032-01-01", Outcome::Failed),
        ];
        assert!(check(&ops, &three(vec![link(1, "A1", None)])).passed());
        assert!(check(&ops, &three(vec![link(1, "A1", Some("2031-01-01"))])).passed());
        let v = check(&ops, &three(vec![link(1, "A1", Some("2032-01-01"))]));
        assert_eq!(v.contract, 1, "{v:?}");
    }

    #[test]
    fn not_found_is_only_right_for_a_link_a_delete_was_sent_for() {
        let mut refused = update(3, 1, "2031-01-01", Outcome::Refused);
        refused.code = Some("LINK_NOT_FOUND".into());
        let ops = vec![
            create(1, "A1", Outcome::Acknowledged, Some(1)),
            delete(2, 1, Outcome::Acknowledged),
            refused.clone(),
        ];
        assert!(check(&ops, &three(vec![])).passed());
        let ops = vec![create(1, "A1", Outcome::Acknowledged, Some(1)), refused];
        let v = check(&ops, &three(vec![link(1, "A1", None)]));
        assert_eq!(v.contract, 1, "{v:?}");
        assert!(
            v.problems[0].starts_with("Contract: op 3"),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn nodes_that_differ_or_digests_that_differ_fail() {
        let ops = vec![
            create(1, "A1", Outcome::Acknowledged, Some(1)),
            create(2, "A2", Outcome::Unknown, None),
        ];
        let mut nodes = three(vec![link(1, "A1", None)]);
        nodes[2].links.push(link(2, "A2", None));
        let v = check(&ops, &nodes);
        assert!(!v.nodes_equal, "{v:?}");
        assert!(!v.passed());

        let mut nodes = three(vec![link(1, "A1", None)]);
        nodes[1].sha256 = "other".into();
        let v = check(&ops, &nodes);
        assert!(v.nodes_equal && !v.digests_equal, "{v:?}");
        let mut nodes = three(vec![link(1, "A1", None)]);
        nodes[1].applied_index = Some(43);
        assert!(!check(&ops, &nodes).digests_equal);
    }

    #[test]
    fn a_problem_seen_on_one_node_only_names_that_node() {
        let ops = vec![create(1, "A1", Outcome::Acknowledged, Some(1))];
        let mut nodes = three(vec![link(1, "A1", None)]);
        nodes[1].links.clear();
        let v = check(&ops, &nodes);
        assert_eq!(v.lost, 1, "{v:?}");
        assert!(v.problems.iter().any(|p| p.contains("nodes [2]")), "{v:?}");
    }
}
