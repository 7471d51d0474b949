//! The one place values are encoded: serde + bincode 2 behind a leading format-version byte, so a
//! later format can be told apart from this one instead of being misread.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Bumped whenever the encoding of any stored value changes incompatibly.
pub const FORMAT_VERSION: u8 = 1;

/// Largest value we ever decode. A corrupted length prefix must fail, not allocate gigabytes.
const MAX_VALUE: usize = 64 * 1024 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_VALUE>()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("empty value")]
    Empty,
    #[error("format version {found} is not {FORMAT_VERSION}; written by another release?")]
    Version { found: u8 },
    #[error("cannot encode: {0}")]
    Encode(String),
    #[error("cannot decode: {0}")]
    Decode(String),
    #[error("{0} bytes left over after the value")]
    Trailing(usize),
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![FORMAT_VERSION];
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(out)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::Version { found: version });
    }
    let (value, read) = bincode::serde::decode_from_slice(body, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if read != body.len() {
        return Err(CodecError::Trailing(body.len() - read));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{KeyType, key_type::seed_catalogue};

    #[test]
    fn round_trip_with_version_byte() {
        let k = seed_catalogue().remove(0);
        let bytes = encode(&k).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode::<KeyType>(&bytes).unwrap(), k);
    }

    #[test]
    fn damaged_values_are_errors_not_panics() {
        let bytes = encode(&seed_catalogue().remove(0)).unwrap();
        assert_eq!(decode::<KeyType>(&[]), Err(CodecError::Empty));
        let mut other = bytes.clone();
        other[0] = 9;
        assert_eq!(
            decode::<KeyType>(&other),
            Err(CodecError::Version { found: 9 })
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode::<KeyType>(&longer), Err(CodecError::Trailing(1)));
        for cut in 1..bytes.len() {
            assert!(
                decode::<KeyType>(&bytes[..cut]).is_err(),
                "truncated at {cut}"
            );
        }
        // A huge length prefix is refused by the limit rather than allocated.
        let huge = [
            FORMAT_VERSION,
            0xFD,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0x7F,
        ];
        assert!(matches!(
            decode::<String>(&huge),
            Err(CodecError::Decode(_))
        ));
    }
}
