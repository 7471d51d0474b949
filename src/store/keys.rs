//! Ordered key encodings. For every key family, byte order equals logical order, so a prefix
//! scan returns rows in the order the rules expect (by link id within one SSIN or foreign key).
//!
//! ```text
//!   links                 id(8, big-endian)
//!   links_by_ssin         ssin(11 ASCII digits) ‖ id(8)
//!   links_by_foreign_key  country(2) ‖ key type ‖ 0x00 ‖ normalized value ‖ 0x00 ‖ id(8)
//!   key_types             'T' ‖ code            (catalogue)
//!                         'R' ‖ country(2) ‖ code   (format rules)
//!   audit                 'L' ‖ link id(8) ‖ log index(8)   (a link's history)
//!                         'C' ‖ log index(8)                (catalogue and format rules)
//!   raft_log              log index(8)
//! ```
//!
//! The variable-length parts end in 0x00, which sorts below every byte they may contain (codes
//! are `[A-Z0-9_]`; values hold no control characters), so `AB` sorts before `ABC` and one key's
//! prefix never matches a longer key.

use crate::domain::{Country, KeyTypeCode, LinkId, Ssin};

const ID_LEN: usize = 8;
pub const SSIN_LEN: usize = 11;
const TERMINATOR: u8 = 0;
pub const KEY_TYPE_TAG: u8 = b'T';
pub const FORMAT_RULE_TAG: u8 = b'R';
pub const AUDIT_LINK_TAG: u8 = b'L';
pub const AUDIT_CATALOGUE_TAG: u8 = b'C';

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed key {key:02x?}: {reason}")]
pub struct KeyError {
    pub key: Vec<u8>,
    pub reason: &'static str,
}

pub fn link(id: LinkId) -> [u8; ID_LEN] {
    id.0.to_be_bytes()
}

pub fn u64_key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

pub fn decode_u64(key: &[u8]) -> Result<u64, KeyError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| KeyError {
        key: key.to_vec(),
        reason: "expected 8 bytes",
    })?;
    Ok(u64::from_be_bytes(bytes))
}

pub fn ssin_prefix(ssin: &Ssin) -> [u8; SSIN_LEN] {
    ssin.ascii()
}

pub fn ssin_index(ssin: &Ssin, id: LinkId) -> Vec<u8> {
    let mut key = Vec::with_capacity(SSIN_LEN + ID_LEN);
    key.extend_from_slice(&ssin.ascii());
    key.extend_from_slice(&link(id));
    key
}

pub fn foreign_key_prefix(country: Country, key_type: &KeyTypeCode, normalized: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + key_type.as_str().len() + normalized.len() + 2 + ID_LEN);
    key.extend_from_slice(country.code().as_bytes());
    key.extend_from_slice(key_type.as_str().as_bytes());
    key.push(TERMINATOR);
    key.extend_from_slice(normalized.as_bytes());
    key.push(TERMINATOR);
    key
}

pub fn foreign_key_index(
    country: Country,
    key_type: &KeyTypeCode,
    normalized: &str,
    id: LinkId,
) -> Vec<u8> {
    let mut key = foreign_key_prefix(country, key_type, normalized);
    key.extend_from_slice(&link(id));
    key
}

/// A foreign-key index key is `country ‖ type ‖ 0 ‖ value ‖ 0 ‖ id`: its prefix, what one search
/// asks for, ends at the second terminator. Country and type never hold 0x00, so the first two
/// zero bytes are always the terminators, whatever bytes the id has.
pub(super) fn foreign_key_search_prefix(key: &[u8]) -> &[u8] {
    let mut zeros = key.iter().enumerate().filter(|(_, b)| **b == TERMINATOR);
    match (zeros.next(), zeros.next()) {
        (Some(_), Some((end, _))) => &key[..=end],
        _ => key,
    }
}

/// Whether `key` holds both terminators, so that it has a search prefix.
pub(super) fn is_foreign_key_row(key: &[u8]) -> bool {
    key.iter().filter(|b| **b == TERMINATOR).take(2).count() == 2
}

/// The link id of an index row found under `prefix`: exactly the prefix and a link id. Rows
/// under one prefix are then in link id order, which a search's batched read relies on.
pub fn index_link_id(prefix: &[u8], key: &[u8]) -> Result<LinkId, KeyError> {
    match key.strip_prefix(prefix) {
        Some(id) if id.len() == ID_LEN => decode_u64(id).map(LinkId),
        _ => Err(KeyError {
            key: key.to_vec(),
            reason: "not its search prefix followed by a link id",
        }),
    }
}

pub fn key_type(code: &KeyTypeCode) -> Vec<u8> {
    let mut key = vec![KEY_TYPE_TAG];
    key.extend_from_slice(code.as_str().as_bytes());
    key
}

pub fn format_rule(country: Country, code: &KeyTypeCode) -> Vec<u8> {
    let mut key = vec![FORMAT_RULE_TAG];
    key.extend_from_slice(country.code().as_bytes());
    key.extend_from_slice(code.as_str().as_bytes());
    key
}

/// Audit key of a change to one link: all events of a link are one prefix, in log order.
pub fn audit_link(id: LinkId, index: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + 2 * ID_LEN);
    key.push(AUDIT_LINK_TAG);
    key.extend_from_slice(&link(id));
    key.extend_from_slice(&u64_key(index));
    key
}

pub fn audit_link_prefix(id: LinkId) -> Vec<u8> {
    let mut key = vec![AUDIT_LINK_TAG];
    key.extend_from_slice(&link(id));
    key
}

pub fn audit_catalogue(index: u64) -> Vec<u8> {
    let mut key = vec![AUDIT_CATALOGUE_TAG];
    key.extend_from_slice(&u64_key(index));
    key
}

/// (country, key type) of a format-rule key.
pub fn decode_format_rule(key: &[u8]) -> Result<(Country, KeyTypeCode), KeyError> {
    let malformed = |reason| KeyError {
        key: key.to_vec(),
        reason,
    };
    let rest = key
        .strip_prefix(&[FORMAT_RULE_TAG])
        .ok_or_else(|| malformed("not a format-rule key"))?;
    if rest.len() < 2 {
        return Err(malformed("too short for a country"));
    }
    let (country, code) = rest.split_at(2);
    let country = std::str::from_utf8(country)
        .ok()
        .and_then(|c| Country::parse(c).ok())
        .ok_or_else(|| malformed("unknown country"))?;
    let code = std::str::from_utf8(code)
        .ok()
        .and_then(|c| KeyTypeCode::parse(crate::domain::Field::KeyType, c).ok())
        .ok_or_else(|| malformed("invalid key type code"))?;
    Ok((country, code))
}

/// The smallest key greater than every key starting with `prefix`, or `None` when no such key
/// exists (the prefix is all 0xFF): the exclusive upper bound of a prefix scan.
pub fn prefix_upper_bound(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut bound = prefix.to_vec();
    while let Some(last) = bound.pop() {
        if last < u8::MAX {
            bound.push(last + 1);
            return Some(bound);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Field;
    use proptest::prelude::*;

    fn country(i: usize) -> Country {
        const CODES: [&str; 6] = ["AT", "BE", "DE", "FR", "NL", "US"];
        Country::parse(CODES[i % CODES.len()]).unwrap()
    }

    fn code_strategy() -> impl Strategy<Value = KeyTypeCode> {
        "[A-Z0-9_]{2,6}".prop_map(|s| KeyTypeCode::parse(Field::KeyType, &s).unwrap())
    }

    fn value_strategy() -> impl Strategy<Value = String> {
        // Normalized values: uppercase, no separators, no control characters, any script.
        "[A-Z0-9ÉÖ]{1,6}"
    }

    proptest! {
        #[test]
        fn u64_keys_sort_numerically(a: u64, b: u64) {
            prop_assert_eq!(a.cmp(&b), u64_key(a).cmp(&u64_key(b)));
            prop_assert_eq!(decode_u64(&u64_key(a)).unwrap(), a);
        }

        #[test]
        fn foreign_key_index_sorts_by_country_type_value_id(
            a in (0usize..6, code_strategy(), value_strategy(), any::<u64>()),
            b in (0usize..6, code_strategy(), value_strategy(), any::<u64>()),
        ) {
            let (ca, cb) = (country(a.0), country(b.0));
            let ka = foreign_key_index(ca, &a.1, &a.2, LinkId(a.3));
            let kb = foreign_key_index(cb, &b.1, &b.2, LinkId(b.3));
            let logical = (ca, a.1.as_str(), a.2.as_bytes(), a.3)
                .cmp(&(cb, b.1.as_str(), b.2.as_bytes(), b.3));
            prop_assert_eq!(ka.cmp(&kb), logical);
            // A prefix scan for one key never returns another.
            let pa = foreign_key_prefix(ca, &a.1, &a.2);
            prop_assert_eq!(index_link_id(&pa, &ka).unwrap(), LinkId(a.3));
            prop_assert_eq!(kb.starts_with(&pa), (ca, &a.1, &a.2) == (cb, &b.1, &b.2));
        }

        #[test]
        fn prefix_upper_bound_is_tight(prefix in proptest::collection::vec(any::<u8>(), 0..6), tail in proptest::collection::vec(any::<u8>(), 0..6)) {
            let mut key = prefix.clone();
            key.extend_from_slice(&tail);
            match prefix_upper_bound(&prefix) {
                Some(bound) => {
                    prop_assert!(key < bound);
                    prop_assert!(prefix < bound);
                    prop_assert!(!bound.starts_with(&prefix));
                }
                None => prop_assert!(prefix.iter().all(|b| *b == u8::MAX)),
            }
        }
    }

    #[test]
    fn ssin_index_sorts_by_ssin_then_id() {
        let today = time::macros::date!(2026 - 12 - 03);
        let a = Ssin::parse("75060898009", today).unwrap();
        let b = Ssin::parse("85073003328", today).unwrap();
        assert!(ssin_index(&a, LinkId(u64::MAX)) < ssin_index(&b, LinkId(0)));
        assert!(ssin_index(&a, LinkId(255)) < ssin_index(&a, LinkId(256)));
        assert!(ssin_index(&a, LinkId(7)).starts_with(&ssin_prefix(&a)));
        assert_eq!(
            index_link_id(&ssin_prefix(&b), &ssin_index(&b, LinkId(42))).unwrap(),
            LinkId(42)
        );
    }

    #[test]
    fn shorter_values_sort_first_and_do_not_prefix_longer_ones() {
        let be = Country::parse("BE").unwrap();
        let t = KeyTypeCode::parse(Field::KeyType, "PASSPORT").unwrap();
        let short = foreign_key_index(be, &t, "AB", LinkId(u64::MAX));
        let long = foreign_key_index(be, &t, "ABC", LinkId(0));
        assert!(short < long);
        assert!(!long.starts_with(&foreign_key_prefix(be, &t, "AB")));
        assert!(index_link_id(&[1], &[1, 2]).is_err());
        assert_eq!(decode_format_rule(&format_rule(be, &t)).unwrap(), (be, t));
        assert!(decode_format_rule(b"RB").is_err());
        assert!(decode_format_rule(b"RQQPASSPORT").is_err());
        assert!(decode_format_rule(b"TBEPASSPORT").is_err());
        assert_eq!(prefix_upper_bound(&[1, 0xFF]), Some(vec![2]));
        assert!(audit_link(LinkId(1), 900) < audit_link(LinkId(1), 1000));
        assert!(audit_link(LinkId(1), u64::MAX) < audit_link(LinkId(2), 0));
        assert!(audit_link(LinkId(256), 3).starts_with(&audit_link_prefix(LinkId(256))));
        assert!(!audit_link(LinkId(256), 3).starts_with(&audit_link_prefix(LinkId(1))));
        assert_eq!(prefix_upper_bound(&[0xFF, 0xFF]), None);
    }
}
