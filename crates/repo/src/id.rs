//! Identifiers: chunk ids (keyed BLAKE3 of the plaintext) and object ids (random or
//! unkeyed BLAKE3 of an object's stored bytes), all 32 bytes, written as lowercase hex.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 32-byte identifier shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; 32]);

/// The id of a chunk: BLAKE3 keyed with the repository's chunk-id key, over the plaintext.
pub type ChunkId = Id;
/// The id of a snapshot manifest: unkeyed BLAKE3 of the stored (encrypted) object.
pub type SnapshotId = Id;
/// The id of a pack object: random.
pub type PackId = Id;

impl Id {
    /// A random id (pack names, session ids, key slot names).
    pub fn random() -> Id {
        let mut b = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
        Id(b)
    }

    /// Unkeyed BLAKE3 of `data`: the name of content-addressed objects.
    pub fn of_content(data: &[u8]) -> Id {
        Id(*blake3::hash(data).as_bytes())
    }

    /// The id of the first 32 bytes of `b` (callers pass exactly 32; shorter input is
    /// zero-padded rather than a panic).
    pub fn from_slice(b: &[u8]) -> Id {
        let mut a = [0u8; 32];
        let n = b.len().min(32);
        a[..n].copy_from_slice(&b[..n]);
        Id(a)
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex digits, as listings show it.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

/// Error for a string that is not 64 hex digits.
#[derive(Debug, thiserror::Error)]
#[error("not a valid id (64 hex digits expected): {0:?}")]
pub struct ParseIdError(pub String);

impl FromStr for Id {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Id, ParseIdError> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b).map_err(|_| ParseIdError(s.to_string()))?;
        Ok(Id(b))
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = Id::random();
        let parsed: Id = id.to_hex().parse().unwrap();
        assert_eq!(id, parsed);
        assert!("xyz".parse::<Id>().is_err());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<Id>(&json).unwrap(), id);
    }
}
