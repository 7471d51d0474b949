//! The request checks that need no register, driven by the corpus in `tests/soap/corpus/`
//! (`ok-…` files pass, `bad-<REASON>-…` files fail with that fault reason) and fuzzed by
//! mutating the corpus: whatever arrives, the answer is a verdict, never a panic.

use std::path::PathBuf;

use proptest::prelude::*;

use super::envelope::Version;
use super::messages::Operation;
use super::{SoapError, inspect};

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/soap/corpus");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("the corpus directory")
        .map(|entry| {
            let path = entry.expect("a corpus entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("a UTF-8 file name")
                .to_string();
            (name, std::fs::read(&path).expect("a corpus file"))
        })
        .collect();
    files.sort();
    files
}

fn version_of(name: &str) -> Version {
    if name.contains("soap12") {
        Version::Soap12
    } else {
        Version::Soap11
    }
}

#[test]
fn the_corpus_gets_the_verdicts_its_names_announce() {
    let files = corpus();
    assert!(files.len() >= 20, "corpus too small: {}", files.len());
    for (name, bytes) in files {
        let outcome = inspect(&bytes, version_of(&name), None);
        if name.starts_with("ok-") {
            assert!(outcome.is_ok(), "{name}: {:?}", outcome.err());
        } else {
            let expected = name
                .strip_prefix("bad-")
                .and_then(|rest| rest.split('-').next())
                .expect("bad-<REASON>-… file name");
            match outcome {
                Ok(_) => panic!("{name} was accepted"),
                Err(e) => assert_eq!(e.fault().reason_code, expected, "{name}: {e}"),
            }
        }
    }
}

#[test]
fn faults_name_the_problem() {
    let find = |needle: &str| {
        corpus()
            .into_iter()
            .find(|(name, _)| name.contains(needle))
            .expect("a corpus file")
    };
    let diagnostic = |needle: &str| {
        let (name, bytes) = find(needle);
        inspect(&bytes, version_of(&name), None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert!(diagnostic("xxe").contains("DOCTYPE"));
    assert!(diagnostic("missing-customer").contains("informationCustomer"));
    assert!(diagnostic("unknown-element").contains("admin"));
    assert!(diagnostic("id-not-a-number").contains("xs:unsignedLong"));
    assert!(diagnostic("not-utf8").contains("UTF-8"));
    assert!(diagnostic("header").contains("Transaction"));
}

#[test]
fn the_soap_action_must_agree_with_the_body() {
    let (name, bytes) = corpus()
        .into_iter()
        .find(|(name, _)| name == "ok-create-soap11.xml")
        .expect("a create request");
    let version = version_of(&name);
    let right = Operation::CreateLink.action();
    assert!(inspect(&bytes, version, Some(right)).is_ok());
    assert!(inspect(&bytes, version, Some(String::new())).is_ok());
    let wrong = inspect(&bytes, version, Some(Operation::DeleteLink.action()));
    assert!(matches!(wrong, Err(SoapError::ActionMismatch { .. })));
}

#[test]
fn a_soap12_request_is_refused_as_soap11_and_the_reverse() {
    for (name, bytes) in corpus().into_iter().filter(|(n, _)| n.starts_with("ok-")) {
        let other = match version_of(&name) {
            Version::Soap11 => Version::Soap12,
            Version::Soap12 => Version::Soap11,
        };
        let e = inspect(&bytes, other, None).err();
        assert!(
            matches!(e, Some(SoapError::VersionMismatch(_))),
            "{name}: {e:?}"
        );
    }
}

/// A corpus file mutated: bytes replaced, inserted, removed, or the file cut short.
fn mutated() -> impl Strategy<Value = (String, Vec<u8>)> {
    let files = corpus();
    (
        0..files.len(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..8),
    )
        .prop_map(move |(i, edits)| {
            let (name, mut bytes) = files[i].clone();
            for (at, byte, kind) in edits {
                if bytes.is_empty() {
                    break;
                }
                let at = at.index(bytes.len());
                match kind {
                    0 => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    2 => {
                        bytes.remove(at);
                    }
                    _ => bytes.truncate(at),
                }
            }
            (name, bytes)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn mutated_requests_get_a_verdict_not_a_panic((name, bytes) in mutated()) {
        match inspect(&bytes, version_of(&name), None) {
            Ok((_, request)) => prop_assert!(Operation::ALL.contains(&request.operation)),
            Err(e) => {
                let fault = e.fault();
                prop_assert!(!fault.reason_code.is_empty() && !fault.diagnostic.is_empty());
            }
        }
    }

    #[test]
    fn arbitrary_bytes_get_a_verdict_not_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = inspect(&bytes, Version::Soap11, None);
    }
}
