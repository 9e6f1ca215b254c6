//! Sealed metadata objects (config, index files, snapshot manifests, session markers,
//! deletion plans) and bounded reads of everything small the repository stores.
//!
//! A sealed object is `seal(aad = its kind's name, [compression byte][payload])`: the
//! byte is 0 (payload stored as is) or 1 (payload is one zstd frame that declares its
//! content size). Writers always compress; readers accept both. Each kind has a largest
//! plaintext ([`crate::limits`]); larger objects are refused before they are read, and a
//! frame that declares more is refused before it is decompressed.

use bytes::Bytes;

use crate::compression::{self, RAW, ZSTD};
use crate::crypto::MasterKeys;
use crate::error::{Error, Result};
use crate::limits;
use crate::storage::Storage;

/// The kinds of sealed metadata objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ObjectKind {
    Config,
    Index,
    Snapshot,
    Session,
    Deletions,
}

impl ObjectKind {
    /// The associated data the object is sealed with.
    pub(crate) fn aad(self) -> &'static [u8] {
        match self {
            ObjectKind::Config => b"config",
            ObjectKind::Index => b"index",
            ObjectKind::Snapshot => b"snapshot",
            ObjectKind::Session => b"session",
            ObjectKind::Deletions => b"deletions",
        }
    }

    /// Largest plaintext readers accept.
    pub(crate) fn max_plaintext(self) -> usize {
        match self {
            ObjectKind::Config => limits::MAX_CONFIG,
            ObjectKind::Index => limits::MAX_INDEX,
            ObjectKind::Snapshot => limits::MAX_SNAPSHOT,
            ObjectKind::Session => limits::MAX_SESSION,
            ObjectKind::Deletions => limits::MAX_DELETIONS,
        }
    }

    /// Largest stored object readers accept.
    pub(crate) fn max_stored(self) -> u64 {
        limits::max_sealed(self.max_plaintext())
    }
}

/// Compresses (zstd) and seals a metadata object.
pub(crate) fn seal_object(keys: &MasterKeys, kind: ObjectKind, plain: &[u8]) -> Vec<u8> {
    match compression::compress(3, plain) {
        Some(frame) => keys.seal_with(kind.aad(), frame.len() + 1, |out| {
            out.push(ZSTD);
            out.extend_from_slice(&frame);
        }),
        None => keys.seal_with(kind.aad(), plain.len() + 1, |out| {
            out.push(RAW);
            out.extend_from_slice(plain);
        }),
    }
}

/// Opens a sealed metadata object, decompressing at most the kind's limit.
pub(crate) fn open_object(
    keys: &MasterKeys,
    kind: ObjectKind,
    sealed: &[u8],
) -> std::result::Result<Vec<u8>, String> {
    if sealed.len() as u64 > kind.max_stored() {
        return Err(format!(
            "{} bytes, more than the {} allowed",
            sealed.len(),
            kind.max_stored()
        ));
    }
    let mut body = keys.open(kind.aad(), sealed)?;
    match body.first() {
        Some(&RAW) if body.len() - 1 <= kind.max_plaintext() => {
            body.remove(0);
            Ok(body)
        }
        Some(&RAW) => Err(format!(
            "plaintext of {} bytes, more than the {} allowed",
            body.len() - 1,
            kind.max_plaintext()
        )),
        Some(&ZSTD) => compression::decompress_bounded(&body[1..], None, kind.max_plaintext()),
        Some(b) => Err(format!("unknown compression byte {b}")),
        None => Err("empty plaintext".into()),
    }
}

/// Reads an object of at most `limit` bytes; a larger one is refused without reading it.
/// `known_size` (from a listing) saves the stat.
pub(crate) async fn read_bounded(
    storage: &dyn Storage,
    path: &str,
    known_size: Option<u64>,
    limit: u64,
) -> Result<Bytes> {
    let size = match known_size {
        Some(s) => s,
        None => match storage.stat(path).await? {
            Some(info) => info.size,
            None => {
                return Err(Error::MissingObject {
                    path: path.to_string(),
                });
            }
        },
    };
    let too_large = |size: u64| {
        Error::corrupt(
            path,
            format!("{size} bytes, more than the {limit} an object of its kind may have"),
        )
    };
    if size > limit {
        return Err(too_large(size));
    }
    let data = storage.read(path).await?;
    // The object may have been replaced between the stat and the read.
    if data.len() as u64 > limit {
        return Err(too_large(data.len() as u64));
    }
    Ok(data)
}

/// Reads and opens a sealed metadata object.
pub(crate) async fn read_object(
    storage: &dyn Storage,
    keys: &MasterKeys,
    kind: ObjectKind,
    path: &str,
    known_size: Option<u64>,
) -> Result<(Bytes, Vec<u8>)> {
    let raw = read_bounded(storage, path, known_size, kind.max_stored()).await?;
    let plain = open_object(keys, kind, &raw).map_err(|r| Error::corrupt(path, r))?;
    Ok((raw, plain))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Encryption;
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_limits() {
        let keys = MasterKeys::generate(Encryption::Aes256Gcm);
        let plain = b"{\"a\":1}".repeat(100);
        let sealed = seal_object(&keys, ObjectKind::Snapshot, &plain);
        assert_eq!(
            open_object(&keys, ObjectKind::Snapshot, &sealed).unwrap(),
            plain
        );
        // The kind is bound.
        assert!(open_object(&keys, ObjectKind::Index, &sealed).is_err());
        // A small object that decompresses past its kind's limit is refused.
        let big = vec![b' '; limits::MAX_CONFIG + 1];
        let bomb = seal_object(&keys, ObjectKind::Config, &big);
        assert!(bomb.len() < 1024);
        let err = open_object(&keys, ObjectKind::Config, &bomb).unwrap_err();
        assert!(err.contains("declares"), "{err}");
        // Raw payloads are read too, within the limit.
        let raw = keys.seal(b"config", &[&[RAW][..], b"xyz"].concat());
        assert_eq!(
            open_object(&keys, ObjectKind::Config, &raw).unwrap(),
            b"xyz"
        );
    }

    proptest! {
        #![proptest_config(crate::limits::proptest_cases(500))]

        #[test]
        fn sealed_objects_round_trip_and_mutations_fail(
            plain in proptest::collection::vec(any::<u8>(), 0..4000),
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
            cut in any::<prop::sample::Index>(),
        ) {
            let keys = MasterKeys::generate(Encryption::ChaCha20Poly1305);
            let sealed = seal_object(&keys, ObjectKind::Index, &plain);
            prop_assert_eq!(open_object(&keys, ObjectKind::Index, &sealed).unwrap(), plain);
            let mut bad = sealed.clone();
            let i = flip.index(bad.len());
            bad[i] ^= 1 << bit;
            prop_assert!(open_object(&keys, ObjectKind::Index, &bad).is_err());
            let c = cut.index(sealed.len());
            prop_assert!(open_object(&keys, ObjectKind::Index, &sealed[..c]).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let keys = MasterKeys::generate(Encryption::Aes256Gcm);
            prop_assert!(open_object(&keys, ObjectKind::Snapshot, &bytes).is_err());
        }
    }
}
