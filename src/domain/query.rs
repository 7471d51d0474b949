//! The two searches of the register. Like the commands they take raw inputs and name the field
//! at fault; unlike them they change nothing, so any role may run them.

use time::Date;

use super::country::Country;
use super::error::{DomainError, Field};
use super::foreign_key::ForeignKeyValue;
use super::link::Link;
use super::period::parse_optional_date;
use super::rules::{Fail, finish, known_key_type, read};
use super::ssin::Ssin;
use super::view::RegisterView;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SsinQuery {
    pub ssin: String,
    pub country: Option<String>,
    pub key_type: Option<String>,
    /// Only links whose validity period contains this date.
    pub valid_on: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForeignKeyQuery {
    pub country: String,
    pub value: String,
    /// Without it, the value is looked up under every key type of the catalogue.
    pub key_type: Option<String>,
    pub valid_on: Option<String>,
}

/// Links of one person, ordered by id. `today` bounds the SSIN's birth date, as for commands.
pub fn search_by_ssin<V: RegisterView>(
    view: &V,
    query: &SsinQuery,
    today: Date,
) -> Result<Result<Vec<Link>, DomainError>, V::Error> {
    finish(by_ssin(view, query, today))
}

fn by_ssin<V: RegisterView>(
    view: &V,
    query: &SsinQuery,
    today: Date,
) -> Result<Vec<Link>, Fail<V::Error>> {
    let ssin = Ssin::parse(&query.ssin, today).map_err(|rule| DomainError::InvalidSsin {
        field: Field::Ssin,
        rule,
    })?;
    let country = optional(query.country.as_deref())
        .map(|c| {
            Country::parse(c).map_err(|e| DomainError::UnknownCountry {
                field: Field::Country,
                value: e.input,
            })
        })
        .transpose()?;
    // An unknown type in a filter is almost always a typo: say so rather than find nothing.
    let key_type = optional(query.key_type.as_deref())
        .map(|k| known_key_type(view, Field::KeyType, k).map(|t| t.code))
        .transpose()?;
    let valid_on = parse_optional_date(Field::ValidOn, query.valid_on.as_deref())?;
    let mut links = read(view.links_by_ssin(&ssin))?;
    links.retain(|l| {
        country.is_none_or(|c| l.foreign_key.country == c)
            && key_type
                .as_ref()
                .is_none_or(|k| l.foreign_key.key_type == *k)
            && valid_on.is_none_or(|d| l.validity.contains(d))
    });
    Ok(links)
}

/// Links holding one foreign key, ordered by id.
pub fn search_by_foreign_key<V: RegisterView>(
    view: &V,
    query: &ForeignKeyQuery,
) -> Result<Result<Vec<Link>, DomainError>, V::Error> {
    finish(by_foreign_key(view, query))
}

fn by_foreign_key<V: RegisterView>(
    view: &V,
    query: &ForeignKeyQuery,
) -> Result<Vec<Link>, Fail<V::Error>> {
    let country = Country::parse(&query.country).map_err(|e| DomainError::UnknownCountry {
        field: Field::Country,
        value: e.input,
    })?;
    // Format rules are not applied: they may have changed since older links were made.
    let value = ForeignKeyValue::parse(&query.value)?;
    let key_types = match optional(query.key_type.as_deref()) {
        Some(k) => vec![known_key_type(view, Field::KeyType, k)?.code],
        None => read(view.key_types())?
            .into_iter()
            .map(|t| t.code)
            .collect(),
    };
    let valid_on = parse_optional_date(Field::ValidOn, query.valid_on.as_deref())?;
    let mut links = Vec::new();
    for key_type in &key_types {
        links.extend(read(view.links_by_foreign_key(
            country,
            key_type,
            value.normalized(),
        ))?);
    }
    links.retain(|l| valid_on.is_none_or(|d| l.validity.contains(d)));
    links.sort_by_key(|l| l.id);
    Ok(links)
}

fn optional(input: Option<&str>) -> Option<&str> {
    input.map(str::trim).filter(|s| !s.is_empty())
}
