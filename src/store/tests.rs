//! The RocksDB store against the in-memory model: same commands, same verdicts, same state.

use proptest::prelude::*;
use rocksdb::WriteBatch;

use super::*;
use crate::domain::command::{
    AddKeyType, CreateLink, DeleteLink, FormatRuleInput, SetFormatRule, SetKeyTypeActive,
    UpdateLinkValidity,
};
use crate::domain::{
    Action, Caller, Command, MemoryRegister, Organization, Role, Timestamp, Verdict, decide,
};

const SSINS: [&str; 3] = ["85073003328", "75060898009", "98472899765"];
const COUNTRIES: [&str; 4] = ["NL", "be", "DE", "XX"];
const KEY_TYPES: [&str; 4] = ["PASSPORT", "TAX_NUMBER", "VISA_NUMBER", "bad"];
const VALUES: [&str; 5] = ["NX123456", "nx-123.456", "AB12", "ZZ999999", "12345"];
const DATES: [Option<&str>; 5] = [
    None,
    Some("2020-01-01"),
    Some("2021-06-30"),
    Some("2022-12-31"),
    Some("30/12/2022"),
];

fn execute(store: &Store, command: &Command) -> Result<Verdict, StoreError> {
    let verdict = decide(store, command)?;
    if let Ok(decision) = &verdict
        && let Some(change) = &decision.change
    {
        let mut batch = WriteBatch::default();
        store.stage(&mut batch, change)?;
        store.write_synced(batch)?;
    }
    Ok(verdict)
}

/// A valid creation: a Dutch tax number for the first SSIN.
fn tax_number_link() -> Action {
    Action::CreateLink(CreateLink {
        ssin: SSINS[0].into(),
        country: "NL".into(),
        key_type: "TAX_NUMBER".into(),
        value: "123-456-789".into(),
        ..Default::default()
    })
}

fn command(role: Role, seconds: i64, action: Action) -> Command {
    Command {
        caller: Caller {
            organization: Organization::new("Test", "0123456749").unwrap(),
            role,
        },
        at: Timestamp(1_796_292_000_000 + seconds * 1000),
        action,
        context: None,
    }
}

fn action() -> impl Strategy<Value = Action> {
    let pick = |n: usize| 0..n;
    prop_oneof![
        5 => (pick(3), pick(4), pick(4), pick(5), pick(5), pick(5)).prop_map(|(s, c, k, v, f, t)| {
            Action::CreateLink(CreateLink {
                ssin: SSINS[s].into(),
                country: COUNTRIES[c].into(),
                key_type: KEY_TYPES[k].into(),
                value: VALUES[v].into(),
                valid_from: DATES[f].map(Into::into),
                valid_to: DATES[t].map(Into::into),
            })
        }),
        3 => (1u64..8, pick(5), pick(5), prop::option::of(1u64..4)).prop_map(|(id, f, t, v)| {
            Action::UpdateLinkValidity(UpdateLinkValidity {
                id,
                valid_from: DATES[f].map(Into::into),
                valid_to: DATES[t].map(Into::into),
                expected_version: v,
            })
        }),
        1 => (1u64..8).prop_map(|id| Action::DeleteLink(DeleteLink { id, reason: "test".into() })),
        1 => pick(4).prop_map(|k| Action::AddKeyType(AddKeyType {
            code: KEY_TYPES[k].into(),
            label_nl: "nl".into(),
            label_fr: "fr".into(),
            label_de: "de".into(),
            label_en: "en".into(),
        })),
        1 => (pick(4), any::<bool>()).prop_map(|(k, active)| {
            Action::SetKeyTypeActive(SetKeyTypeActive { code: KEY_TYPES[k].into(), active })
        }),
        1 => (pick(4), pick(4), prop::option::of((1u16..9, Just("[A-Z]{2}[0-9]+")))).prop_map(|(c, k, rule)| {
            Action::SetFormatRule(SetFormatRule {
                country: COUNTRIES[c].into(),
                key_type: KEY_TYPES[k].into(),
                rule: rule.map(|(min, pattern)| FormatRuleInput {
                    min_length: min,
                    max_length: 12,
                    pattern: Some(pattern.into()),
                }),
            })
        }),
    ]
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![1 => Just(Role::Reader), 4 => Just(Role::Writer), 3 => Just(Role::Keeper)]
}

/// Everything observable through the view, in a comparable form.
fn observe<V: RegisterView>(view: &V) -> String
where
    V::Error: std::fmt::Debug,
{
    let mut out = String::new();
    let next = view.next_link_id().unwrap();
    out += &format!("next {next:?}\n");
    for id in 1..next.0 {
        out += &format!("{id}: {:?}\n", view.link(LinkId(id)).unwrap());
    }
    out += &format!(
        "types {:?}\nrules {:?}\n",
        view.key_types().unwrap(),
        view.format_rules().unwrap()
    );
    let today = time::macros::date!(2026 - 12 - 03);
    for s in SSINS {
        let ssin = Ssin::parse(s, today).unwrap();
        out += &format!("{s} {:?}\n", view.links_by_ssin(&ssin).unwrap());
    }
    for c in ["NL", "BE", "DE"] {
        for k in ["PASSPORT", "TAX_NUMBER", "VISA_NUMBER"] {
            // Also values that are a prefix of a stored one: the foreign-key index's prefix
            // extractor must not let one key's filter answer for another.
            for v in [
                "NX123456", "NX12345", "ZZ999999", "12345", "1234", "AB12", "AB1",
            ] {
                let code = KeyTypeCode::parse(crate::domain::Field::KeyType, k).unwrap();
                let found = view
                    .links_by_foreign_key(Country::parse(c).unwrap(), &code, v)
                    .unwrap();
                out += &format!(
                    "{c}/{k}/{v} {:?}\n",
                    found.iter().map(|l| l.id).collect::<Vec<_>>()
                );
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn store_behaves_like_the_model(steps in prop::collection::vec((role(), action()), 1..30)) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut model = MemoryRegister::new();
        prop_assert_eq!(observe(&store), observe(&model));
        for (i, (role, action)) in steps.into_iter().enumerate() {
            let cmd = command(role, i as i64, action);
            let expected = model.execute(&cmd);
            let actual = execute(&store, &cmd).unwrap();
            prop_assert_eq!(&actual, &expected, "step {}: {:?}", i, cmd.action);
        }
        prop_assert_eq!(observe(&store), observe(&model));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The same, with the rows spread over the memtable and several SST files, where the
    /// filters and prefix extractors decide which files a search reads.
    #[test]
    fn store_behaves_like_the_model_across_flushes(
        steps in prop::collection::vec((role(), action(), any::<bool>()), 1..30),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut model = MemoryRegister::new();
        for (i, (role, action, flush)) in steps.into_iter().enumerate() {
            let cmd = command(role, i as i64, action);
            let expected = model.execute(&cmd);
            let actual = execute(&store, &cmd).unwrap();
            prop_assert_eq!(&actual, &expected, "step {}: {:?}", i, cmd.action);
            if flush {
                for name in cf::ALL {
                    store.db.flush_cf(store.cf(name).unwrap()).unwrap();
                }
            }
        }
        prop_assert_eq!(observe(&store), observe(&model));
    }
}

#[test]
fn state_survives_reopening_and_the_seed_is_written_once() {
    let dir = tempfile::tempdir().unwrap();
    let link = {
        let store = Store::open(dir.path()).unwrap();
        let deactivate = Action::SetKeyTypeActive(SetKeyTypeActive {
            code: "PASSPORT".into(),
            active: false,
        });
        execute(&store, &command(Role::Keeper, 0, deactivate))
            .unwrap()
            .unwrap();
        let create = tax_number_link();
        let decision = execute(&store, &command(Role::Writer, 1, create))
            .unwrap()
            .unwrap();
        decision.change.unwrap().clone()
    };
    let store = Store::open(dir.path()).unwrap();
    let Change::LinkCreated { link } = link else {
        panic!("{link:?}")
    };
    assert_eq!(store.link(link.id).unwrap(), Some(link.clone()));
    assert_eq!(store.next_link_id().unwrap(), LinkId(2));
    let passport = KeyTypeCode::parse(crate::domain::Field::KeyType, "PASSPORT").unwrap();
    assert!(
        !store.key_type(&passport).unwrap().unwrap().active,
        "reopening re-seeded the catalogue"
    );
    assert_eq!(store.key_types().unwrap().len(), 9);
}

#[test]
fn corrupt_rows_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let links = store.cf(cf::LINKS).unwrap();
    store
        .db
        .put_cf(
            links,
            keys::link(LinkId(1)),
            [codec::FORMAT_VERSION, 0xFF, 0x01],
        )
        .unwrap();
    assert!(matches!(
        store.link(LinkId(1)),
        Err(StoreError::Value { cf: "links", .. })
    ));
    // An index row whose link is gone.
    let ssin = Ssin::parse(SSINS[0], time::macros::date!(2026 - 12 - 03)).unwrap();
    let by_ssin = store.cf(cf::LINKS_BY_SSIN).unwrap();
    store
        .db
        .put_cf(by_ssin, keys::ssin_index(&ssin, LinkId(9)), [])
        .unwrap();
    assert!(matches!(
        store.links_by_ssin(&ssin),
        Err(StoreError::DanglingIndex { id: LinkId(9), .. })
    ));
    // A failing store is no verdict: decide reports the store error.
    let create = Action::CreateLink(CreateLink {
        ssin: SSINS[0].into(),
        country: "NL".into(),
        key_type: "PASSPORT".into(),
        value: "NX123456".into(),
        ..Default::default()
    });
    let types = store.cf(cf::KEY_TYPES).unwrap();
    let passport = KeyTypeCode::parse(crate::domain::Field::KeyType, "PASSPORT").unwrap();
    store
        .db
        .put_cf(types, keys::key_type(&passport), b"")
        .unwrap();
    assert!(decide(&store, &command(Role::Writer, 0, create)).is_err());
}

/// Searches run beside the state machine's writes. Through a view, a link deleted between
/// reading its index row and reading the link does not fail the search: each answer is as of
/// one instant, the link whole or absent.
#[test]
fn a_search_beside_deletions_sees_each_link_whole_or_not_at_all() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open(dir.path()).unwrap());
    let create = tax_number_link();
    let decision = execute(&store, &command(Role::Writer, 0, create))
        .unwrap()
        .unwrap();
    let Some(Change::LinkCreated { link }) = decision.change else {
        panic!("a creation creates")
    };
    let fk = link.foreign_key.clone();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, link, stop) = (store.clone(), link.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rounds = 0u32;
            while !stop.load(Ordering::Relaxed) {
                for change in [
                    Change::LinkDeleted {
                        link: link.clone(),
                        reason: "test".into(),
                    },
                    Change::LinkCreated { link: link.clone() },
                ] {
                    let mut batch = WriteBatch::default();
                    store.stage(&mut batch, &change).unwrap();
                    store.write(batch).unwrap();
                }
                rounds += 1;
            }
            rounds
        })
    };
    let (mut seen, mut missed) = (0u32, 0u32);
    for search in 0..4_000 {
        let view = store.view().unwrap();
        let failed = |e: StoreError| panic!("search {search} failed: {e}");
        let by_ssin = view.links_by_ssin(&link.ssin).unwrap_or_else(failed);
        let by_key = view
            .links_by_foreign_key(fk.country, &fk.key_type, fk.value.normalized())
            .unwrap_or_else(failed);
        assert!(
            by_ssin.is_empty() || by_ssin == [link.clone()],
            "{by_ssin:?}"
        );
        // One view, one instant: both searches see the link, or neither does.
        assert_eq!(by_ssin, by_key, "search {search}");
        if by_ssin.is_empty() {
            missed += 1;
        } else {
            seen += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = writer.join().unwrap();
    assert!(
        rounds > 0 && seen > 0,
        "{rounds} writer rounds, {seen} found, {missed} not"
    );
}

/// While the state is replaced wholesale no view is handed out and no export starts; a
/// replacement dropped uncompleted (it failed) keeps them refused.
#[test]
fn no_view_nor_export_while_the_state_is_being_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(store.view().is_some() && store.steady().is_ok());
    let replacement = store.begin_replacing();
    assert!(store.view().is_none(), "a view of a half-loaded snapshot");
    replacement.complete();
    assert!(store.view().is_some() && store.steady().is_ok());
    drop(store.begin_replacing());
    assert!(store.view().is_none(), "a view after a failed replacement");
    assert!(matches!(store.steady(), Err(StoreError::Replacing)));
    store.begin_replacing().complete();
    assert!(store.view().is_some() && store.steady().is_ok());
}

/// A replacement waits for an export under way, so the export reads one whole state.
#[test]
fn a_replacement_waits_for_an_export_under_way() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open(dir.path()).unwrap());
    let steady = store.steady().unwrap();
    let replaced = std::sync::Arc::new(AtomicBool::new(false));
    let replacer = {
        let (store, replaced) = (store.clone(), replaced.clone());
        std::thread::spawn(move || {
            let replacement = store.begin_replacing();
            replaced.store(true, Ordering::SeqCst);
            replacement.complete();
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(
        !replaced.load(Ordering::SeqCst),
        "replaced during an export"
    );
    drop(steady);
    replacer.join().unwrap();
    assert!(replaced.load(Ordering::SeqCst));
}
