//! The rules, exercised through `MemoryRegister` the way the state machine will use them.

use time::macros::{date, datetime};

use super::*;
use crate::domain::caller::{Caller, Role, Timestamp};
use crate::domain::command::{
    AddKeyType, Command, CreateLink, DeleteLink, FormatRuleInput, SetFormatRule, SetKeyTypeActive,
    UpdateLinkValidity,
};
use crate::domain::error::ForeignKeyRule;
use crate::domain::memory::MemoryRegister;
use crate::domain::query::{ForeignKeyQuery, SsinQuery, search_by_foreign_key, search_by_ssin};
use crate::domain::{Organization, SsinRule};

const NOW: Timestamp = Timestamp(1_796_292_000_000); // 2026-12-03T10:00:00Z
const PERSON_A: &str = "85073003328";
const PERSON_B: &str = "75060898009";

fn caller(role: Role) -> Caller {
    Caller {
        organization: Organization::new("Test institution", "0123456749").unwrap(),
        role,
    }
}

fn command(role: Role, action: Action) -> Command {
    Command {
        caller: caller(role),
        at: NOW,
        action,
        context: None,
    }
}

fn create(ssin: &str, value: &str, from: Option<&str>, to: Option<&str>) -> Action {
    Action::CreateLink(CreateLink {
        ssin: ssin.into(),
        country: "nl".into(),
        key_type: "PASSPORT".into(),
        value: value.into(),
        valid_from: from.map(Into::into),
        valid_to: to.map(Into::into),
    })
}

fn created(reg: &mut MemoryRegister, action: Action) -> Link {
    match reg.execute(&command(Role::Writer, action)) {
        Ok(Decision {
            change: Some(Change::LinkCreated { link }),
            outcome: Outcome::Link(answered),
        }) => {
            assert_eq!(link, answered);
            link
        }
        other => panic!("expected a created link, got {other:?}"),
    }
}

/// Runs a command that must be refused, checks that nothing changed, and returns the error.
fn refused(reg: &mut MemoryRegister, role: Role, action: Action) -> DomainError {
    let before = format!("{reg:?}");
    let err = reg
        .execute(&command(role, action))
        .expect_err("the command should be refused");
    assert_eq!(
        format!("{reg:?}"),
        before,
        "a refused command changed the register"
    );
    err
}

#[test]
fn timestamp_constant_is_what_it_says() {
    assert_eq!(NOW.to_datetime(), datetime!(2026-12-03 10:00 UTC));
}

#[test]
fn create_assigns_ids_and_records_who_and_when() {
    let mut reg = MemoryRegister::new();
    let first = created(&mut reg, create(PERSON_A, "nx-123.456", None, None));
    assert_eq!(first.id, LinkId(1));
    assert_eq!(first.version, 1);
    assert_eq!((first.created_at, first.updated_at), (NOW, NOW));
    assert_eq!(first.created_by.name, "Test institution");
    assert_eq!(first.ssin.as_str(), PERSON_A);
    assert_eq!(first.foreign_key.country.code(), "NL");
    assert_eq!(first.foreign_key.value.entered(), "nx-123.456");
    assert_eq!(first.foreign_key.value.normalized(), "NX123456");
    assert_eq!(first.validity, ValidityPeriod::default());
    let second = created(
        &mut reg,
        create(PERSON_A, "NX999999", Some("2020-01-01"), None),
    );
    assert_eq!(second.id, LinkId(2));
    assert_eq!(second.validity.begin(), Some(date!(2020 - 01 - 01)));
}

#[test]
fn roles_are_enforced_by_the_rules() {
    let mut reg = MemoryRegister::new();
    let link = created(&mut reg, create(PERSON_A, "NX123456", None, None));
    let denied = |reg: &mut MemoryRegister, role, action| {
        let err = refused(reg, role, action);
        assert_eq!(err.code(), "PERMISSION_DENIED");
        err
    };
    denied(
        &mut reg,
        Role::Reader,
        create(PERSON_B, "NX777777", None, None),
    );
    let update = Action::UpdateLinkValidity(UpdateLinkValidity {
        id: link.id.0,
        valid_to: Some("2030-01-01".into()),
        ..Default::default()
    });
    denied(&mut reg, Role::Reader, update);
    let delete = Action::DeleteLink(DeleteLink {
        id: link.id.0,
        reason: "duplicate".into(),
    });
    let err = denied(&mut reg, Role::Writer, delete.clone());
    assert!(err.to_string().contains("delete_link"), "{err}");
    denied(&mut reg, Role::Writer, add_type("VISA_NUMBER"));
    denied(
        &mut reg,
        Role::Writer,
        Action::SetKeyTypeActive(SetKeyTypeActive {
            code: "PASSPORT".into(),
            active: false,
        }),
    );
    denied(
        &mut reg,
        Role::Writer,
        set_rule("NL", "PASSPORT", Some((8, 9, None))),
    );
    assert!(reg.execute(&command(Role::Keeper, delete)).is_ok());
}

#[test]
fn each_bad_input_names_its_field_and_changes_nothing() {
    let mut reg = MemoryRegister::new();
    let base = CreateLink {
        ssin: PERSON_A.into(),
        country: "NL".into(),
        key_type: "PASSPORT".into(),
        value: "NX123456".into(),
        valid_from: None,
        valid_to: None,
    };
    let cases: Vec<(CreateLink, &str, Field)> = vec![
        (
            CreateLink {
                ssin: "12345678901".into(),
                ..base.clone()
            },
            "INVALID_SSIN",
            Field::Ssin,
        ),
        (
            CreateLink {
                country: "XX".into(),
                ..base.clone()
            },
            "UNKNOWN_COUNTRY",
            Field::Country,
        ),
        (
            CreateLink {
                key_type: "VISA".into(),
                ..base.clone()
            },
            "UNKNOWN_KEY_TYPE",
            Field::KeyType,
        ),
        (
            CreateLink {
                key_type: "passport".into(),
                ..base.clone()
            },
            "INVALID_KEY_TYPE_CODE",
            Field::KeyType,
        ),
        (
            CreateLink {
                value: "NX12".into(),
                ..base.clone()
            },
            "INVALID_FOREIGN_KEY",
            Field::Value,
        ),
        (
            CreateLink {
                value: "--".into(),
                ..base.clone()
            },
            "INVALID_FOREIGN_KEY",
            Field::Value,
        ),
        (
            CreateLink {
                valid_from: Some("2020-02-30".into()),
                ..base.clone()
            },
            "INVALID_DATE",
            Field::ValidFrom,
        ),
        (
            CreateLink {
                valid_to: Some("soon".into()),
                ..base.clone()
            },
            "INVALID_DATE",
            Field::ValidTo,
        ),
        (
            CreateLink {
                valid_from: Some("2021-01-01".into()),
                valid_to: Some("2020-12-31".into()),
                ..base.clone()
            },
            "INVALID_PERIOD",
            Field::ValidTo,
        ),
    ];
    for (input, code, field) in cases {
        let err = refused(&mut reg, Role::Writer, Action::CreateLink(input.clone()));
        assert_eq!(
            (err.code(), err.field()),
            (code, Some(field)),
            "{input:?}: {err}"
        );
    }
    assert_eq!(
        reg.next_link_id().unwrap(),
        LinkId(1),
        "refusals consume no id"
    );
    // The input that all cases varied is itself fine.
    created(&mut reg, Action::CreateLink(base));
}

#[test]
fn future_birth_dates_are_judged_at_the_command_time() {
    let mut reg = MemoryRegister::new();
    let unborn = Ssin::compose(2026, 12, 5, 1).unwrap().as_str();
    let err = refused(
        &mut reg,
        Role::Writer,
        create(&unborn, "NX123456", None, None),
    );
    assert!(matches!(
        err,
        DomainError::InvalidSsin {
            rule: SsinRule::FutureDate { .. },
            ..
        }
    ));
    let later = Command {
        at: Timestamp::from_datetime(datetime!(2026-12-05 08:00 UTC)),
        ..command(Role::Writer, create(&unborn, "NX123456", None, None))
    };
    assert!(reg.execute(&later).is_ok());
}

#[test]
fn identical_link_is_refused_with_the_existing_id() {
    let mut reg = MemoryRegister::new();
    let first = created(
        &mut reg,
        create(PERSON_A, "NX123456", Some("2020-01-01"), Some("2024-12-31")),
    );
    // Same key spelled differently, overlapping by one day.
    let err = refused(
        &mut reg,
        Role::Writer,
        create(PERSON_A, "nx 123-456", Some("2024-12-31"), None),
    );
    assert_eq!(err, DomainError::LinkExists { existing: first.id });
    assert_eq!(err.link_id(), Some(first.id));
    // Same person and key in a later, disjoint period is a new link.
    created(
        &mut reg,
        create(PERSON_A, "NX123456", Some("2025-01-01"), None),
    );
}

#[test]
fn a_key_linked_to_another_person_conflicts_while_periods_overlap() {
    let mut reg = MemoryRegister::new();
    let a = created(
        &mut reg,
        create(PERSON_A, "NX123456", None, Some("2022-06-30")),
    );
    let err = refused(
        &mut reg,
        Role::Writer,
        create(PERSON_B, "NX123456", Some("2022-06-30"), None),
    );
    assert_eq!(err, DomainError::LinkConflict { existing: a.id });
    assert_eq!(err.code(), "LINK_CONFLICT");
    // A passport number reissued after the first holder's period ended.
    created(
        &mut reg,
        create(PERSON_B, "NX123456", Some("2022-07-01"), None),
    );
    // The same value under another type or another country is another key.
    let mut other_type = CreateLink {
        ssin: PERSON_B.into(),
        country: "NL".into(),
        key_type: "IDENTITY_CARD".into(),
        value: "NX123456".into(),
        ..Default::default()
    };
    created(&mut reg, Action::CreateLink(other_type.clone()));
    other_type.country = "DE".into();
    created(&mut reg, Action::CreateLink(other_type));
}

fn update(id: LinkId, from: Option<&str>, to: Option<&str>, expected: Option<u64>) -> Action {
    Action::UpdateLinkValidity(UpdateLinkValidity {
        id: id.0,
        valid_from: from.map(Into::into),
        valid_to: to.map(Into::into),
        expected_version: expected,
    })
}

#[test]
fn update_changes_only_the_period_and_bumps_the_version() {
    let mut reg = MemoryRegister::new();
    let link = created(
        &mut reg,
        create(PERSON_A, "NX123456", Some("2020-01-01"), None),
    );
    let later = Timestamp(NOW.0 + 60_000);
    let verdict = reg.execute(&Command {
        at: later,
        ..command(
            Role::Writer,
            update(link.id, Some("2020-01-01"), Some("2025-12-31"), Some(1)),
        )
    });
    let Ok(Decision {
        change: Some(Change::LinkValidityChanged { before, after }),
        outcome: Outcome::Link(answered),
    }) = verdict
    else {
        panic!("expected a validity change, got {verdict:?}");
    };
    assert_eq!(before, link);
    assert_eq!(after, answered);
    assert_eq!(after.version, 2);
    assert_eq!(after.updated_at, later);
    assert_eq!(after.created_at, link.created_at);
    assert_eq!(after.validity.end(), Some(date!(2025 - 12 - 31)));
    assert_eq!(
        (&after.ssin, &after.foreign_key),
        (&link.ssin, &link.foreign_key)
    );
    assert_eq!(reg.link(link.id).unwrap(), Some(after));
}

#[test]
fn update_to_the_same_period_changes_nothing() {
    let mut reg = MemoryRegister::new();
    let link = created(
        &mut reg,
        create(PERSON_A, "NX123456", Some("2020-01-01"), None),
    );
    let decision = reg
        .execute(&command(
            Role::Writer,
            update(link.id, Some("2020-01-01"), None, None),
        ))
        .unwrap();
    assert_eq!(decision.change, None);
    assert_eq!(decision.outcome, Outcome::Link(link.clone()));
    assert_eq!(reg.link(link.id).unwrap().unwrap().version, 1);
}

#[test]
fn update_refusals() {
    let mut reg = MemoryRegister::new();
    let a = created(
        &mut reg,
        create(PERSON_A, "NX123456", None, Some("2019-12-31")),
    );
    let a2 = created(
        &mut reg,
        create(PERSON_A, "NX123456", Some("2022-01-01"), None),
    );
    let b = created(
        &mut reg,
        create(PERSON_B, "NX123456", Some("2020-01-01"), Some("2021-12-31")),
    );

    let err = refused(&mut reg, Role::Writer, update(LinkId(99), None, None, None));
    assert_eq!(
        (err.code(), err.field()),
        ("LINK_NOT_FOUND", Some(Field::Id))
    );

    let err = refused(
        &mut reg,
        Role::Writer,
        update(a.id, None, Some("2018-01-01"), Some(7)),
    );
    assert_eq!(
        err,
        DomainError::VersionMismatch {
            field: Field::ExpectedVersion,
            id: a.id,
            expected: 7,
            actual: 1
        }
    );
    // Stretching A's first link into B's period.
    let err = refused(
        &mut reg,
        Role::Writer,
        update(a.id, None, Some("2020-03-01"), None),
    );
    assert_eq!(err, DomainError::LinkConflict { existing: b.id });
    // Stretching B's link into A's later one.
    let err = refused(
        &mut reg,
        Role::Writer,
        update(b.id, Some("2020-01-01"), None, None),
    );
    assert_eq!(err, DomainError::LinkConflict { existing: a2.id });
    // Opening A's later link backwards over its earlier one makes them the same link.
    let err = refused(
        &mut reg,
        Role::Writer,
        update(a2.id, Some("2019-06-01"), None, None),
    );
    assert_eq!(err, DomainError::LinkExists { existing: a.id });
    let err = refused(
        &mut reg,
        Role::Writer,
        update(a.id, Some("2019-01-01"), Some("2018-01-01"), None),
    );
    assert_eq!(err.code(), "INVALID_PERIOD");
    // Shrinking never conflicts, and a link never conflicts with itself.
    assert!(
        reg.execute(&command(
            Role::Writer,
            update(b.id, Some("2020-06-01"), Some("2021-06-30"), Some(1))
        ))
        .is_ok()
    );
}

#[test]
fn keeper_deletes_with_a_reason() {
    let mut reg = MemoryRegister::new();
    let a = created(&mut reg, create(PERSON_A, "NX123456", None, None));
    let delete = |id: LinkId, reason: &str| {
        Action::DeleteLink(DeleteLink {
            id: id.0,
            reason: reason.into(),
        })
    };
    let err = refused(&mut reg, Role::Keeper, delete(a.id, "  "));
    assert_eq!(
        (err.code(), err.field()),
        ("INVALID_TEXT", Some(Field::Reason))
    );
    let err = refused(&mut reg, Role::Keeper, delete(LinkId(42), "typo"));
    assert_eq!(err.code(), "LINK_NOT_FOUND");
    let decision = reg
        .execute(&command(
            Role::Keeper,
            delete(a.id, " entered for the wrong person "),
        ))
        .unwrap();
    assert_eq!(decision.outcome, Outcome::LinkDeleted(a.id));
    assert_eq!(
        decision.change,
        Some(Change::LinkDeleted {
            link: a.clone(),
            reason: "entered for the wrong person".into()
        })
    );
    assert_eq!(reg.link(a.id).unwrap(), None);
    // The key is free again, and ids are never reused.
    let b = created(&mut reg, create(PERSON_B, "NX123456", None, None));
    assert_eq!(b.id, LinkId(2));
}

fn add_type(code: &str) -> Action {
    Action::AddKeyType(AddKeyType {
        code: code.into(),
        label_nl: "Visumnummer".into(),
        label_fr: "Numéro de visa".into(),
        label_de: "Visumnummer".into(),
        label_en: "Visa number".into(),
    })
}

#[test]
fn key_type_catalogue_grows_and_deactivated_types_refuse_new_links() {
    let mut reg = MemoryRegister::new();
    let decision = reg
        .execute(&command(Role::Keeper, add_type("VISA_NUMBER")))
        .unwrap();
    let Outcome::KeyType(visa) = decision.outcome else {
        panic!("{decision:?}")
    };
    assert!(visa.active);
    assert_eq!(visa.labels.fr, "Numéro de visa");
    let err = refused(&mut reg, Role::Keeper, add_type("VISA_NUMBER"));
    assert_eq!(
        (err.code(), err.field()),
        ("KEY_TYPE_EXISTS", Some(Field::Code))
    );
    let err = refused(&mut reg, Role::Keeper, add_type("visa"));
    assert_eq!(
        (err.code(), err.field()),
        ("INVALID_KEY_TYPE_CODE", Some(Field::Code))
    );
    let mut unlabeled = add_type("RESIDENCE_PERMIT");
    if let Action::AddKeyType(a) = &mut unlabeled {
        a.label_de.clear();
    }
    let err = refused(&mut reg, Role::Keeper, unlabeled);
    assert_eq!(err.field(), Some(Field::LabelDe));

    let passport = created(&mut reg, create(PERSON_A, "NX123456", None, None));
    let set_active = |active| {
        Action::SetKeyTypeActive(SetKeyTypeActive {
            code: "PASSPORT".into(),
            active,
        })
    };
    let decision = reg
        .execute(&command(Role::Keeper, set_active(false)))
        .unwrap();
    assert!(matches!(
        decision.change,
        Some(Change::KeyTypeActiveChanged { .. })
    ));
    let err = refused(
        &mut reg,
        Role::Writer,
        create(PERSON_B, "NX777777", None, None),
    );
    assert_eq!(
        (err.code(), err.field()),
        ("KEY_TYPE_INACTIVE", Some(Field::KeyType))
    );
    // Existing links stay, can be found, and their validity can still be corrected.
    assert_eq!(reg.link(passport.id).unwrap().as_ref(), Some(&passport));
    assert!(
        reg.execute(&command(
            Role::Writer,
            update(passport.id, None, Some("2030-01-01"), None)
        ))
        .is_ok()
    );
    // Deactivating twice is no change; reactivating restores creation.
    let decision = reg
        .execute(&command(Role::Keeper, set_active(false)))
        .unwrap();
    assert_eq!(decision.change, None);
    reg.execute(&command(Role::Keeper, set_active(true)))
        .unwrap();
    created(&mut reg, create(PERSON_B, "NX777777", None, None));
    let err = refused(
        &mut reg,
        Role::Keeper,
        Action::SetKeyTypeActive(SetKeyTypeActive {
            code: "NOPE".into(),
            active: true,
        }),
    );
    assert_eq!(
        (err.code(), err.field()),
        ("UNKNOWN_KEY_TYPE", Some(Field::Code))
    );
}

fn set_rule(country: &str, key_type: &str, rule: Option<(u16, u16, Option<&str>)>) -> Action {
    Action::SetFormatRule(SetFormatRule {
        country: country.into(),
        key_type: key_type.into(),
        rule: rule.map(|(min_length, max_length, pattern)| FormatRuleInput {
            min_length,
            max_length,
            pattern: pattern.map(Into::into),
        }),
    })
}

#[test]
fn format_rules_apply_per_country_and_type() {
    let mut reg = MemoryRegister::new();
    let dutch_passport = set_rule(
        "nl",
        "PASSPORT",
        Some((9, 9, Some("[A-Z]{2}[A-Z0-9]{6}[0-9]"))),
    );
    let decision = reg
        .execute(&command(Role::Keeper, dutch_passport.clone()))
        .unwrap();
    assert!(matches!(
        decision.change,
        Some(Change::FormatRuleSet {
            before: None,
            after: Some(_),
            ..
        })
    ));
    assert_eq!(reg.format_rules().unwrap().len(), 1);
    // Setting the same rule again changes nothing.
    assert_eq!(
        reg.execute(&command(Role::Keeper, dutch_passport))
            .unwrap()
            .change,
        None
    );

    let err = refused(
        &mut reg,
        Role::Writer,
        create(PERSON_A, "123456789", None, None),
    );
    assert!(matches!(
        err,
        DomainError::InvalidForeignKey {
            field: Field::Value,
            rule: ForeignKeyRule::Pattern { .. }
        }
    ));
    created(&mut reg, create(PERSON_A, "nx-ab12c3 4", None, None));
    // Other countries keep the default (5 characters, a digit).
    let mut german = CreateLink {
        ssin: PERSON_A.into(),
        country: "DE".into(),
        key_type: "PASSPORT".into(),
        value: "12345".into(),
        ..Default::default()
    };
    created(&mut reg, Action::CreateLink(german.clone()));
    german.value = "ABCDEFG".into();
    assert_eq!(
        refused(&mut reg, Role::Writer, Action::CreateLink(german)).field(),
        Some(Field::Value)
    );
    // Removing the rule restores the default.
    reg.execute(&command(Role::Keeper, set_rule("NL", "PASSPORT", None)))
        .unwrap();
    created(&mut reg, create(PERSON_A, "123456789", None, None));
    assert!(reg.format_rules().unwrap().is_empty());

    let err = refused(
        &mut reg,
        Role::Keeper,
        set_rule("NL", "PASSPORT", Some((10, 9, None))),
    );
    assert_eq!(
        (err.code(), err.field()),
        ("INVALID_FORMAT_RULE", Some(Field::MaxLength))
    );
    let err = refused(
        &mut reg,
        Role::Keeper,
        set_rule("NL", "PASSPORT", Some((1, 9, Some("(")))),
    );
    assert_eq!(err.field(), Some(Field::Pattern));
    let err = refused(
        &mut reg,
        Role::Keeper,
        set_rule("QQ", "PASSPORT", Some((1, 9, None))),
    );
    assert_eq!(err.code(), "UNKNOWN_COUNTRY");
    let err = refused(
        &mut reg,
        Role::Keeper,
        set_rule("NL", "VISA", Some((1, 9, None))),
    );
    assert_eq!(err.code(), "UNKNOWN_KEY_TYPE");
}

#[test]
fn searches_filter_by_country_type_and_date() {
    let mut reg = MemoryRegister::new();
    let nl = created(
        &mut reg,
        create(PERSON_A, "NX123456", None, Some("2020-12-31")),
    );
    let nl2 = created(
        &mut reg,
        create(PERSON_A, "NX123456", Some("2021-01-01"), None),
    );
    let mut de = CreateLink {
        ssin: PERSON_A.into(),
        country: "DE".into(),
        key_type: "TAX_NUMBER".into(),
        value: "12 345 678 901".into(),
        ..Default::default()
    };
    let de_tax = created(&mut reg, Action::CreateLink(de.clone()));
    de.ssin = PERSON_B.into();
    de.key_type = "SOCIAL_SECURITY_NUMBER".into();
    let other_person = created(&mut reg, Action::CreateLink(de));

    let today = date!(2026 - 12 - 03);
    let by_ssin = |q: SsinQuery| match search_by_ssin(&reg, &q, today) {
        Ok(r) => r.map(|links| links.into_iter().map(|l| l.id).collect::<Vec<_>>()),
        Err(never) => match never {},
    };
    let q = |country: Option<&str>, key_type: Option<&str>, valid_on: Option<&str>| SsinQuery {
        ssin: "85.07.30-033.28".into(),
        country: country.map(Into::into),
        key_type: key_type.map(Into::into),
        valid_on: valid_on.map(Into::into),
    };
    assert_eq!(
        by_ssin(q(None, None, None)).unwrap(),
        [nl.id, nl2.id, de_tax.id]
    );
    assert_eq!(by_ssin(q(Some("nl"), None, None)).unwrap(), [nl.id, nl2.id]);
    assert_eq!(
        by_ssin(q(None, Some("TAX_NUMBER"), None)).unwrap(),
        [de_tax.id]
    );
    assert_eq!(
        by_ssin(q(Some("NL"), Some("TAX_NUMBER"), None)).unwrap(),
        []
    );
    assert_eq!(
        by_ssin(q(Some("NL"), None, Some("2020-12-31"))).unwrap(),
        [nl.id]
    );
    assert_eq!(
        by_ssin(q(Some("NL"), None, Some("2021-01-01"))).unwrap(),
        [nl2.id]
    );
    assert_eq!(
        by_ssin(q(None, Some(""), Some(" "))).unwrap().len(),
        3,
        "blank filters are none"
    );
    assert_eq!(
        by_ssin(q(Some("XX"), None, None)).unwrap_err().field(),
        Some(Field::Country)
    );
    assert_eq!(
        by_ssin(q(None, Some("VISA"), None)).unwrap_err().code(),
        "UNKNOWN_KEY_TYPE"
    );
    assert_eq!(
        by_ssin(q(None, None, Some("2021-02-30")))
            .unwrap_err()
            .field(),
        Some(Field::ValidOn)
    );
    let bad = SsinQuery {
        ssin: "85073003329".into(),
        ..Default::default()
    };
    assert_eq!(by_ssin(bad).unwrap_err().code(), "INVALID_SSIN");

    let by_key = |country: &str, value: &str, key_type: Option<&str>, valid_on: Option<&str>| {
        let q = ForeignKeyQuery {
            country: country.into(),
            value: value.into(),
            key_type: key_type.map(Into::into),
            valid_on: valid_on.map(Into::into),
        };
        match search_by_foreign_key(&reg, &q) {
            Ok(r) => r.map(|links| links.into_iter().map(|l| l.id).collect::<Vec<_>>()),
            Err(never) => match never {},
        }
    };
    assert_eq!(
        by_key("NL", "nx.123.456", None, None).unwrap(),
        [nl.id, nl2.id]
    );
    assert_eq!(
        by_key("NL", "NX123456", Some("PASSPORT"), Some("2019-05-01")).unwrap(),
        [nl.id]
    );
    assert_eq!(
        by_key("NL", "NX123456", Some("IDENTITY_CARD"), None).unwrap(),
        []
    );
    // Without a type, every type of the catalogue is searched.
    assert_eq!(
        by_key("de", "12345678901", None, None).unwrap(),
        [de_tax.id, other_person.id]
    );
    assert_eq!(by_key("BE", "12345678901", None, None).unwrap(), []);
    assert_eq!(
        by_key("DE", "\u{1}", None, None).unwrap_err().field(),
        Some(Field::Value)
    );
    assert_eq!(
        by_key("DE", "123", Some("nope"), None).unwrap_err().code(),
        "INVALID_KEY_TYPE_CODE"
    );
}

#[test]
fn commands_and_verdicts_survive_the_replication_codec() {
    let mut reg = MemoryRegister::new();
    let cmd = command(
        Role::Writer,
        create(PERSON_A, "NX123456", Some("2020-01-01"), Some("2030-12-31")),
    );
    let verdict = reg.execute(&cmd);
    let refusal = reg.execute(&cmd);
    let config = bincode::config::standard();
    let bytes = bincode::serde::encode_to_vec(&cmd, config).unwrap();
    let (back, _): (Command, usize) = bincode::serde::decode_from_slice(&bytes, config).unwrap();
    assert_eq!(back, cmd);
    for v in [verdict, refusal] {
        let bytes = bincode::serde::encode_to_vec(&v, config).unwrap();
        let (back, _): (Verdict, usize) =
            bincode::serde::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(back, v);
    }
}

#[test]
fn input_errors_are_those_no_register_state_can_change() {
    let mut reg = MemoryRegister::new();
    let input =
        |reg: &mut MemoryRegister, role, action| refused(reg, role, action).is_input_error();
    assert!(input(
        &mut reg,
        Role::Writer,
        create("12345678901", "NX123456", None, None)
    ));
    assert!(input(
        &mut reg,
        Role::Writer,
        create(PERSON_A, "NX\u{0}1", None, None)
    ));
    assert!(input(
        &mut reg,
        Role::Writer,
        create(PERSON_A, "NX123456", Some("2020-13-01"), None)
    ));
    assert!(input(
        &mut reg,
        Role::Reader,
        create(PERSON_A, "NX123456", None, None)
    ));
    // These depend on the catalogue, the format rules or the links present.
    assert!(!input(
        &mut reg,
        Role::Writer,
        create(PERSON_A, "NX1", None, None)
    ));
    let mut unknown_type = CreateLink {
        ssin: PERSON_A.into(),
        country: "NL".into(),
        key_type: "VISA".into(),
        value: "NX123456".into(),
        ..Default::default()
    };
    assert!(!input(
        &mut reg,
        Role::Writer,
        Action::CreateLink(unknown_type.clone())
    ));
    unknown_type.key_type = "PASSPORT".into();
    created(&mut reg, Action::CreateLink(unknown_type.clone()));
    assert!(!input(
        &mut reg,
        Role::Writer,
        Action::CreateLink(unknown_type)
    ));
}

fn row(ssin: &str, value: &str, from: Option<&str>) -> CreateLink {
    match create(ssin, value, from, None) {
        Action::CreateLink(c) => c,
        _ => unreachable!("create builds a CreateLink"),
    }
}

fn imported(reg: &mut MemoryRegister, rows: Vec<CreateLink>) -> (Vec<RowOutcome>, Vec<Link>) {
    let action = Action::ImportLinks(crate::domain::command::ImportLinks { rows });
    match reg.execute(&command(Role::Writer, action)) {
        Ok(Decision {
            change,
            outcome: Outcome::Imported(outcomes),
        }) => {
            let links = match change {
                Some(Change::LinksImported { links }) => links,
                None => Vec::new(),
                other => panic!("an import changes only links: {other:?}"),
            };
            (outcomes, links)
        }
        other => panic!("expected an import verdict, got {other:?}"),
    }
}

#[test]
fn an_import_decides_each_row_and_a_bad_row_sinks_nothing() {
    let mut reg = MemoryRegister::new();
    let before = created(&mut reg, create(PERSON_A, "NL0000001", None, None));
    let (outcomes, links) = imported(
        &mut reg,
        vec![
            row(PERSON_A, "NL0000002", None),
            // The link made before the import: present, not refused, not added.
            row(PERSON_A, "NL0000001", None),
            row("85073003329", "NL0000003", None),
            // An earlier row of the same batch is seen by the later ones.
            row(PERSON_A, "NL0000002", None),
            row(PERSON_B, "NL0000002", None),
            row(PERSON_B, "NL0000004", Some("2020-01-01")),
        ],
    );
    let first = LinkId(before.id.0 + 1);
    let second = LinkId(before.id.0 + 2);
    assert_eq!(outcomes[0], RowOutcome::Created(first));
    assert_eq!(outcomes[1], RowOutcome::AlreadyPresent(before.id));
    assert!(matches!(
        &outcomes[2],
        RowOutcome::Rejected(DomainError::InvalidSsin {
            field: Field::Ssin,
            ..
        })
    ));
    assert_eq!(outcomes[3], RowOutcome::AlreadyPresent(first));
    assert_eq!(
        outcomes[4],
        RowOutcome::Rejected(DomainError::LinkConflict { existing: first })
    );
    assert_eq!(outcomes[5], RowOutcome::Created(second));
    assert_eq!(
        links.iter().map(|l| l.id).collect::<Vec<_>>(),
        [first, second]
    );
    assert_eq!(reg.links().count(), 3);

    // The same rows again: nothing new.
    let (again, links) = imported(&mut reg, vec![row(PERSON_A, "NL0000002", None)]);
    assert_eq!(again, [RowOutcome::AlreadyPresent(first)]);
    assert!(links.is_empty());
}

#[test]
fn an_import_has_a_size_limit_and_needs_the_writer_role() {
    use crate::domain::command::{IMPORT_ROWS_MAX, ImportLinks};
    let mut reg = MemoryRegister::new();
    let rows = vec![row(PERSON_A, "NL0000002", None); IMPORT_ROWS_MAX + 1];
    let err = refused(
        &mut reg,
        Role::Writer,
        Action::ImportLinks(ImportLinks { rows }),
    );
    assert_eq!(err.code(), "TOO_MANY_ROWS");
    assert_eq!(err.field(), Some(Field::Rows));
    let rows = vec![row(PERSON_A, "NL0000002", None)];
    let err = refused(
        &mut reg,
        Role::Reader,
        Action::ImportLinks(ImportLinks { rows }),
    );
    assert_eq!(err.code(), "PERMISSION_DENIED");
}
