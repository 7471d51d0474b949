//! The register's rules: given a view of the current state and a command, decide what changes.
//!
//! [`decide`] is a pure function. It reads through [`RegisterView`] and returns the [`Change`] to
//! persist (the state machine writes it, with its indexes and audit event, in one batch) and the
//! [`Outcome`] to answer. A command the rules refuse yields a [`DomainError`] and changes
//! nothing; because the verdict depends only on the state and the command, every replica reaches
//! the same one.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::command::{
    Action, AddKeyType, Command, CreateLink, DeleteLink, IMPORT_ROWS_MAX, ImportLinks,
    SetFormatRule, SetKeyTypeActive, UpdateLinkValidity,
};
use super::country::Country;
use super::error::{DomainError, Field, TextRule};
use super::foreign_key::{ForeignKey, ForeignKeyValue, FormatRule};
use super::key_type::{KeyType, KeyTypeCode, Labels};
use super::link::{Link, LinkId};
use super::period::ValidityPeriod;
use super::ssin::Ssin;
use super::view::RegisterView;

/// A deletion must say why; the reason goes to the audit trail.
pub const REASON_MAX: usize = 500;

/// What a command changes in the register, with the state before where there was one (the audit
/// trail records both sides).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    LinkCreated {
        link: Link,
    },
    LinkValidityChanged {
        before: Link,
        after: Link,
    },
    LinkDeleted {
        link: Link,
        reason: String,
    },
    KeyTypeAdded {
        key_type: KeyType,
    },
    KeyTypeActiveChanged {
        before: KeyType,
        after: KeyType,
    },
    FormatRuleSet {
        country: Country,
        key_type: KeyTypeCode,
        before: Option<FormatRule>,
        after: Option<FormatRule>,
    },
    /// The rows of an import that created a link, in row order (ids consecutive).
    LinksImported {
        links: Vec<Link>,
    },
}

/// What became of one row of an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RowOutcome {
    Created(LinkId),
    /// The same link (same SSIN, foreign key, overlapping period) was already there.
    AlreadyPresent(LinkId),
    Rejected(DomainError),
}

/// What the caller gets back: the entity as it stands after the command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Link(Link),
    LinkDeleted(LinkId),
    KeyType(KeyType),
    FormatRule {
        country: Country,
        key_type: KeyTypeCode,
        rule: Option<FormatRule>,
    },
    /// One per row of an import, in row order.
    Imported(Vec<RowOutcome>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// `None` when the command asks for the state that already holds (an update to the same
    /// period, activating an active type): nothing to write, no version bump.
    pub change: Option<Change>,
    pub outcome: Outcome,
}

/// The business verdict on one command.
pub type Verdict = Result<Decision, DomainError>;

/// Decides a command against the current state. The outer `Result` is the store failing to
/// answer (not a verdict: the caller must not record anything); the inner one is the verdict.
pub fn decide<V: RegisterView>(view: &V, command: &Command) -> Result<Verdict, V::Error> {
    finish(decide_inner(view, command))
}

/// Internal failure: either a rule (a verdict) or the store (no verdict). Lets `?` work for both.
pub(super) enum Fail<E> {
    Rule(DomainError),
    View(E),
}

impl<E> From<DomainError> for Fail<E> {
    fn from(e: DomainError) -> Self {
        Fail::Rule(e)
    }
}

pub(super) fn read<T, E>(r: Result<T, E>) -> Result<T, Fail<E>> {
    r.map_err(Fail::View)
}

pub(super) fn finish<T, E>(r: Result<T, Fail<E>>) -> Result<Result<T, DomainError>, E> {
    match r {
        Ok(t) => Ok(Ok(t)),
        Err(Fail::Rule(e)) => Ok(Err(e)),
        Err(Fail::View(e)) => Err(e),
    }
}

/// The checks of a command that need no state: the caller's role, the size of an import. What
/// `decide` refuses first; a front end may run it alone where deciding twice would cost.
pub fn precheck(command: &Command) -> Result<(), DomainError> {
    let required = command.action.required_role();
    let role = command.caller.role;
    if !role.allows(required) {
        return Err(DomainError::PermissionDenied {
            role,
            required,
            action: command.action.name().to_string(),
        });
    }
    if let Action::ImportLinks(import) = &command.action
        && import.rows.len() > IMPORT_ROWS_MAX
    {
        return Err(DomainError::TooManyRows {
            field: Field::Rows,
            max: IMPORT_ROWS_MAX,
            found: import.rows.len(),
        });
    }
    Ok(())
}

fn decide_inner<V: RegisterView>(view: &V, command: &Command) -> Result<Decision, Fail<V::Error>> {
    precheck(command)?;
    match &command.action {
        Action::CreateLink(c) => create_link(view, command, c),
        Action::UpdateLinkValidity(c) => update_validity(view, command, c),
        Action::DeleteLink(c) => delete_link(view, c),
        Action::AddKeyType(c) => add_key_type(view, c),
        Action::SetKeyTypeActive(c) => set_key_type_active(view, c),
        Action::SetFormatRule(c) => set_format_rule(view, c),
        Action::ImportLinks(c) => import_links(view, command, c),
    }
}

fn import_links<V: RegisterView>(
    view: &V,
    command: &Command,
    c: &ImportLinks,
) -> Result<Decision, Fail<V::Error>> {
    let mut pending = Pending::new(view);
    let mut outcomes = Vec::with_capacity(c.rows.len());
    for row in &c.rows {
        let outcome = match new_link(&pending, command, row) {
            Ok(link) => {
                let id = link.id;
                pending.push(link);
                RowOutcome::Created(id)
            }
            Err(Fail::Rule(DomainError::LinkExists { existing })) => {
                RowOutcome::AlreadyPresent(existing)
            }
            Err(Fail::Rule(e)) => RowOutcome::Rejected(e),
            Err(Fail::View(e)) => return Err(Fail::View(e)),
        };
        outcomes.push(outcome);
    }
    Ok(Decision {
        change: (!pending.created.is_empty()).then(|| Change::LinksImported {
            links: pending.created,
        }),
        outcome: Outcome::Imported(outcomes),
    })
}

/// Decides creations one after the other, each against the register as the ones before it left
/// it, without writing anything in between: what the state machine needs for creations that
/// several clients' requests share one log entry (and one write batch) for.
pub struct Creations<'a, V> {
    pending: Pending<'a, V>,
}

impl<'a, V: RegisterView> Creations<'a, V> {
    pub fn new(view: &'a V) -> Self {
        Creations {
            pending: Pending::new(view),
        }
    }

    /// The verdict `decide` would give `command`, a `CreateLink`, had the links created so far
    /// been stored. `None` for any other action: it is not decided here.
    pub fn decide(&mut self, command: &Command) -> Option<Result<Verdict, V::Error>> {
        if !matches!(command.action, Action::CreateLink(_)) {
            return None;
        }
        let verdict = decide_inner(&self.pending, command);
        if let Ok(Decision {
            change: Some(Change::LinkCreated { link }),
            ..
        }) = &verdict
        {
            self.pending.push(link.clone());
        }
        Some(finish(verdict))
    }

    /// The links created so far, in the order they were decided (ids consecutive).
    pub fn into_created(self) -> Vec<Link> {
        self.pending.created
    }
}

/// The register as the next row of an import sees it: the stored state plus the links the
/// earlier rows created. The earlier rows are indexed like the store's own indexes, so a batch
/// costs the same per row whatever its size; each index keeps row order. An import changes
/// neither the catalogue nor the format rules, so what the store says of them is read once per
/// batch (each row read and decoded them again: a tenth of a replica's apply time).
struct Pending<'a, V> {
    base: &'a V,
    created: Vec<Link>,
    by_ssin: HashMap<Ssin, Vec<usize>>,
    by_key: HashMap<(Country, KeyTypeCode, String), Vec<usize>>,
    key_types: RefCell<HashMap<KeyTypeCode, Option<KeyType>>>,
    rules: RefCell<HashMap<(Country, KeyTypeCode), Option<FormatRule>>>,
    first_id: Cell<Option<LinkId>>,
}

impl<'a, V> Pending<'a, V> {
    fn new(base: &'a V) -> Self {
        Pending {
            base,
            created: Vec::new(),
            by_ssin: HashMap::new(),
            by_key: HashMap::new(),
            key_types: RefCell::default(),
            rules: RefCell::default(),
            first_id: Cell::new(None),
        }
    }

    fn push(&mut self, link: Link) {
        let at = self.created.len();
        self.by_ssin.entry(link.ssin).or_default().push(at);
        let fk = &link.foreign_key;
        let key = (
            fk.country,
            fk.key_type.clone(),
            fk.value.normalized().to_string(),
        );
        self.by_key.entry(key).or_default().push(at);
        self.created.push(link);
    }

    fn links_at(&self, positions: Option<&Vec<usize>>) -> Vec<Link> {
        positions
            .into_iter()
            .flatten()
            .filter_map(|at| self.created.get(*at).cloned())
            .collect()
    }
}

impl<V: RegisterView> RegisterView for Pending<'_, V> {
    type Error = V::Error;

    fn link(&self, id: LinkId) -> Result<Option<Link>, Self::Error> {
        // Created ids are consecutive in row order.
        let first = self.created.first().map_or(u64::MAX, |l| l.id.0);
        let found =
            id.0.checked_sub(first)
                .and_then(|at| usize::try_from(at).ok())
                .and_then(|at| self.created.get(at))
                .filter(|l| l.id == id);
        match found {
            Some(link) => Ok(Some(link.clone())),
            None => self.base.link(id),
        }
    }

    fn links_by_ssin(&self, ssin: &Ssin) -> Result<Vec<Link>, Self::Error> {
        let mut links = self.base.links_by_ssin(ssin)?;
        links.extend(self.links_at(self.by_ssin.get(ssin)));
        Ok(links)
    }

    fn links_by_foreign_key(
        &self,
        country: Country,
        key_type: &KeyTypeCode,
        normalized_value: &str,
    ) -> Result<Vec<Link>, Self::Error> {
        let mut links = self
            .base
            .links_by_foreign_key(country, key_type, normalized_value)?;
        let key = (country, key_type.clone(), normalized_value.to_string());
        links.extend(self.links_at(self.by_key.get(&key)));
        Ok(links)
    }

    fn key_type(&self, code: &KeyTypeCode) -> Result<Option<KeyType>, Self::Error> {
        if let Some(known) = self.key_types.borrow().get(code) {
            return Ok(known.clone());
        }
        let found = self.base.key_type(code)?;
        self.key_types
            .borrow_mut()
            .insert(code.clone(), found.clone());
        Ok(found)
    }

    fn key_types(&self) -> Result<Vec<KeyType>, Self::Error> {
        self.base.key_types()
    }

    fn format_rule(
        &self,
        country: Country,
        key_type: &KeyTypeCode,
    ) -> Result<Option<FormatRule>, Self::Error> {
        let key = (country, key_type.clone());
        if let Some(known) = self.rules.borrow().get(&key) {
            return Ok(known.clone());
        }
        let found = self.base.format_rule(country, key_type)?;
        self.rules.borrow_mut().insert(key, found.clone());
        Ok(found)
    }

    fn format_rules(&self) -> Result<Vec<(Country, KeyTypeCode, FormatRule)>, Self::Error> {
        self.base.format_rules()
    }

    fn next_link_id(&self) -> Result<LinkId, Self::Error> {
        let base = match self.first_id.get() {
            Some(id) => id,
            None => {
                let id = self.base.next_link_id()?;
                self.first_id.set(Some(id));
                id
            }
        };
        Ok(LinkId(base.0 + self.created.len() as u64))
    }
}

fn parse_country(field: Field, input: &str) -> Result<Country, DomainError> {
    Country::parse(input).map_err(|e| DomainError::UnknownCountry {
        field,
        value: e.input,
    })
}

/// A key type that exists in the catalogue.
pub(super) fn known_key_type<V: RegisterView>(
    view: &V,
    field: Field,
    input: &str,
) -> Result<KeyType, Fail<V::Error>> {
    let code = KeyTypeCode::parse(field, input)?;
    read(view.key_type(&code))?.ok_or_else(|| {
        Fail::Rule(DomainError::UnknownKeyType {
            field,
            code: code.to_string(),
        })
    })
}

fn create_link<V: RegisterView>(
    view: &V,
    command: &Command,
    c: &CreateLink,
) -> Result<Decision, Fail<V::Error>> {
    let link = new_link(view, command, c)?;
    Ok(Decision {
        change: Some(Change::LinkCreated { link: link.clone() }),
        outcome: Outcome::Link(link),
    })
}

/// The link `c` asks for, once every rule has passed.
fn new_link<V: RegisterView>(
    view: &V,
    command: &Command,
    c: &CreateLink,
) -> Result<Link, Fail<V::Error>> {
    let ssin = Ssin::parse(&c.ssin, command.at.belgian_date_bound()).map_err(|rule| {
        DomainError::InvalidSsin {
            field: Field::Ssin,
            rule,
        }
    })?;
    let country = parse_country(Field::Country, &c.country)?;
    let key_type = known_key_type(view, Field::KeyType, &c.key_type)?;
    if !key_type.active {
        return Err(DomainError::KeyTypeInactive {
            field: Field::KeyType,
            code: key_type.code.to_string(),
        }
        .into());
    }
    let value = ForeignKeyValue::parse(&c.value)?;
    let rule =
        read(view.format_rule(country, &key_type.code))?.unwrap_or_else(FormatRule::default_rule);
    rule.check(country, &key_type.code, &value)?;
    let validity = ValidityPeriod::parse(c.valid_from.as_deref(), c.valid_to.as_deref())?;
    let foreign_key = ForeignKey {
        country,
        key_type: key_type.code,
        value,
    };
    check_overlaps(view, &ssin, &foreign_key, &validity, None)?;
    Ok(Link {
        id: read(view.next_link_id())?,
        ssin,
        foreign_key,
        validity,
        created_by: command.caller.organization.clone(),
        created_at: command.at,
        updated_at: command.at,
        version: 1,
    })
}

/// One foreign key designates one person at a time. An overlapping link of the same SSIN is the
/// same link again (`LINK_EXISTS`); of another SSIN it is a contradiction (`LINK_CONFLICT`).
fn check_overlaps<V: RegisterView>(
    view: &V,
    ssin: &Ssin,
    foreign_key: &ForeignKey,
    validity: &ValidityPeriod,
    except: Option<LinkId>,
) -> Result<(), Fail<V::Error>> {
    let candidates = read(view.links_by_foreign_key(
        foreign_key.country,
        &foreign_key.key_type,
        foreign_key.value.normalized(),
    ))?;
    let overlapping = || {
        candidates
            .iter()
            .filter(|l| Some(l.id) != except && l.validity.overlaps(validity))
    };
    if let Some(same) = overlapping().find(|l| l.ssin == *ssin) {
        return Err(DomainError::LinkExists { existing: same.id }.into());
    }
    if let Some(other) = overlapping().next() {
        return Err(DomainError::LinkConflict { existing: other.id }.into());
    }
    Ok(())
}

fn existing_link<V: RegisterView>(view: &V, id: u64) -> Result<Link, Fail<V::Error>> {
    read(view.link(LinkId(id)))?.ok_or_else(|| {
        Fail::Rule(DomainError::LinkNotFound {
            field: Field::Id,
            id: LinkId(id),
        })
    })
}

fn update_validity<V: RegisterView>(
    view: &V,
    command: &Command,
    c: &UpdateLinkValidity,
) -> Result<Decision, Fail<V::Error>> {
    let link = existing_link(view, c.id)?;
    if let Some(expected) = c.expected_version
        && expected != link.version
    {
        return Err(DomainError::VersionMismatch {
            field: Field::ExpectedVersion,
            id: link.id,
            expected,
            actual: link.version,
        }
        .into());
    }
    let validity = ValidityPeriod::parse(c.valid_from.as_deref(), c.valid_to.as_deref())?;
    if validity == link.validity {
        return Ok(Decision {
            change: None,
            outcome: Outcome::Link(link),
        });
    }
    check_overlaps(
        view,
        &link.ssin,
        &link.foreign_key,
        &validity,
        Some(link.id),
    )?;
    let after = Link {
        validity,
        updated_at: command.at,
        version: link.version + 1,
        ..link.clone()
    };
    Ok(Decision {
        change: Some(Change::LinkValidityChanged {
            before: link,
            after: after.clone(),
        }),
        outcome: Outcome::Link(after),
    })
}

fn delete_link<V: RegisterView>(view: &V, c: &DeleteLink) -> Result<Decision, Fail<V::Error>> {
    let link = existing_link(view, c.id)?;
    let reason = TextRule::check(Field::Reason, &c.reason, REASON_MAX, true)?;
    Ok(Decision {
        outcome: Outcome::LinkDeleted(link.id),
        change: Some(Change::LinkDeleted { link, reason }),
    })
}

fn add_key_type<V: RegisterView>(view: &V, c: &AddKeyType) -> Result<Decision, Fail<V::Error>> {
    let code = KeyTypeCode::parse(Field::Code, &c.code)?;
    if read(view.key_type(&code))?.is_some() {
        return Err(DomainError::KeyTypeExists {
            field: Field::Code,
            code: code.to_string(),
        }
        .into());
    }
    let labels = Labels::new(&c.label_nl, &c.label_fr, &c.label_de, &c.label_en)?;
    let key_type = KeyType {
        code,
        labels,
        active: true,
    };
    Ok(Decision {
        change: Some(Change::KeyTypeAdded {
            key_type: key_type.clone(),
        }),
        outcome: Outcome::KeyType(key_type),
    })
}

fn set_key_type_active<V: RegisterView>(
    view: &V,
    c: &SetKeyTypeActive,
) -> Result<Decision, Fail<V::Error>> {
    let before = known_key_type(view, Field::Code, &c.code)?;
    if before.active == c.active {
        return Ok(Decision {
            change: None,
            outcome: Outcome::KeyType(before),
        });
    }
    let after = KeyType {
        active: c.active,
        ..before.clone()
    };
    Ok(Decision {
        change: Some(Change::KeyTypeActiveChanged {
            before,
            after: after.clone(),
        }),
        outcome: Outcome::KeyType(after),
    })
}

fn set_format_rule<V: RegisterView>(
    view: &V,
    c: &SetFormatRule,
) -> Result<Decision, Fail<V::Error>> {
    let country = parse_country(Field::Country, &c.country)?;
    let key_type = known_key_type(view, Field::KeyType, &c.key_type)?.code;
    let after = c
        .rule
        .as_ref()
        .map(|r| FormatRule::new(r.min_length, r.max_length, r.pattern.as_deref()))
        .transpose()?;
    let before = read(view.format_rule(country, &key_type))?;
    let outcome = Outcome::FormatRule {
        country,
        key_type: key_type.clone(),
        rule: after.clone(),
    };
    let change = (before != after).then_some(Change::FormatRuleSet {
        country,
        key_type,
        before,
        after,
    });
    Ok(Decision { change, outcome })
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
