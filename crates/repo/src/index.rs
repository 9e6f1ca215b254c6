//! Index files: which pack holds each chunk, at which offset.
//!
//! `index/<BLAKE3 of the stored object>` files each describe some packs (every writer
//! session adds one or more; prune replaces many with fewer and names the ones it
//! supersedes). Their plaintext, before compression and sealing with aad "index":
//!
//! ```text
//! "CIDX0001" | n_superseded u32 | superseded index ids (32 each)
//! | n_packs u32 | per pack: pack id (32) | pack size u64 | n u32 | n x header entry (45)
//! ```
//! (all integers little-endian; header entries as in packs). The local lookup table the
//! index files are merged into is [`crate::index_table`].

use crate::error::Error;
use crate::id::Id;
use crate::pack::{BlobEntry, HEADER_ENTRY_LEN, TRAILER_LEN, decode_entry};

const INDEX_MAGIC: &[u8; 8] = b"CIDX0001";

/// The packs one index file describes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IndexFile {
    /// Index files this one replaces (prune's consolidated files).
    pub supersedes: Vec<Id>,
    /// The packs described.
    pub packs: Vec<PackRecord>,
}

/// One pack in an index file.
#[derive(Clone, Debug, PartialEq)]
pub struct PackRecord {
    /// The pack's id (its object name).
    pub id: Id,
    /// The pack object's size in bytes.
    pub size: u64,
    /// The pack's blobs, as its header lists them.
    pub blobs: Vec<BlobEntry>,
}

impl PackRecord {
    /// Whether the record is possible: every blob valid and inside the pack's blob area
    /// (before the trailer).
    pub fn validate(&self) -> Result<(), String> {
        let area = self.size.checked_sub(TRAILER_LEN as u64).ok_or_else(|| {
            format!(
                "pack {} of {} bytes is too small",
                self.id.short(),
                self.size
            )
        })?;
        for b in &self.blobs {
            b.validate()?;
            if b.end() > area {
                return Err(format!(
                    "chunk {} lies past the end of pack {}",
                    b.id.short(),
                    self.id.short()
                ));
            }
        }
        Ok(())
    }
}

impl IndexFile {
    /// The plaintext encoding.
    pub fn encode(&self) -> Vec<u8> {
        let entries: usize = self.packs.iter().map(|p| p.blobs.len()).sum();
        let mut out = Vec::with_capacity(
            16 + self.supersedes.len() * 32 + self.packs.len() * 44 + entries * HEADER_ENTRY_LEN,
        );
        out.extend_from_slice(INDEX_MAGIC);
        out.extend_from_slice(&(self.supersedes.len() as u32).to_le_bytes());
        for s in &self.supersedes {
            out.extend_from_slice(&s.0);
        }
        out.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for p in &self.packs {
            out.extend_from_slice(&p.id.0);
            out.extend_from_slice(&p.size.to_le_bytes());
            out.extend_from_slice(&crate::pack::encode_header_entries(&p.blobs));
        }
        out
    }

    /// Decodes and validates a plaintext. Every count is checked against the bytes left
    /// before anything is allocated for it.
    pub fn decode(b: &[u8]) -> std::result::Result<IndexFile, String> {
        let mut r = Reader { b, pos: 0 };
        if r.take(8)? != INDEX_MAGIC {
            return Err("not an index (bad magic)".into());
        }
        let ns = r.count(32)?;
        let mut supersedes = Vec::with_capacity(ns);
        for _ in 0..ns {
            supersedes.push(r.id()?);
        }
        // A pack record is at least 44 bytes (id, size, count).
        let np = r.count(44)?;
        let mut packs = Vec::with_capacity(np);
        for _ in 0..np {
            let id = r.id()?;
            let size = r.u64()?;
            let n = r.count(HEADER_ENTRY_LEN)?;
            let mut blobs = Vec::with_capacity(n);
            for _ in 0..n {
                blobs.push(decode_entry(r.take(HEADER_ENTRY_LEN)?)?);
            }
            let rec = PackRecord { id, size, blobs };
            rec.validate()?;
            packs.push(rec);
        }
        if r.pos != b.len() {
            return Err("trailing bytes after index".into());
        }
        Ok(IndexFile { supersedes, packs })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or("truncated index")?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn id(&mut self) -> std::result::Result<Id, String> {
        let mut a = [0u8; 32];
        a.copy_from_slice(self.take(32)?);
        Ok(Id(a))
    }
    /// A u32 count of items of at least `item` bytes each, refused when the bytes left
    /// cannot hold them (so a huge count never turns into a huge allocation).
    fn count(&mut self, item: usize) -> std::result::Result<usize, String> {
        let n = self.u32()? as usize;
        let left = self.b.len() - self.pos;
        if n.checked_mul(item).is_none_or(|need| need > left) {
            return Err(format!("count {n} exceeds the {left} bytes left"));
        }
        Ok(n)
    }
}

pub(crate) fn index_path(id: &Id) -> String {
    format!("index/{}", id.to_hex())
}

pub(crate) fn cache_error(path: &std::path::Path, e: std::io::Error) -> Error {
    Error::Cache {
        path: path.display().to_string(),
        source: e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::BlobKind;
    use proptest::prelude::*;

    fn entry(id: Id, offset: u32) -> BlobEntry {
        BlobEntry {
            kind: BlobKind::Data,
            id,
            offset,
            length: 50,
            raw_length: 20,
        }
    }

    #[test]
    fn index_file_round_trip() {
        let f = IndexFile {
            supersedes: vec![Id::random()],
            packs: vec![PackRecord {
                id: Id::random(),
                size: 999,
                blobs: vec![entry(Id::random(), 0), entry(Id::random(), 50)],
            }],
        };
        assert_eq!(IndexFile::decode(&f.encode()).unwrap(), f);
        assert!(IndexFile::decode(&f.encode()[..50]).is_err());
        // A blob past the pack's end is refused.
        let mut past = f.clone();
        past.packs[0].size = 100;
        assert!(IndexFile::decode(&past.encode()).is_err());
    }

    fn file_strategy() -> impl Strategy<Value = IndexFile> {
        let blob = (any::<[u8; 32]>(), 0u32..10_000, 0u32..5_000, any::<bool>()).prop_map(
            |(id, offset, raw, meta)| BlobEntry {
                kind: if meta { BlobKind::Meta } else { BlobKind::Data },
                id: Id(id),
                offset,
                length: raw + 42,
                raw_length: raw,
            },
        );
        let pack =
            (any::<[u8; 32]>(), proptest::collection::vec(blob, 0..8)).prop_map(|(id, blobs)| {
                PackRecord {
                    id: Id(id),
                    size: 20_000,
                    blobs,
                }
            });
        (
            proptest::collection::vec(any::<[u8; 32]>().prop_map(Id), 0..3),
            proptest::collection::vec(pack, 0..5),
        )
            .prop_map(|(supersedes, packs)| IndexFile { supersedes, packs })
    }

    proptest! {
        #![proptest_config(crate::limits::proptest_config())]

        #[test]
        fn round_trips(f in file_strategy()) {
            prop_assert_eq!(IndexFile::decode(&f.encode()).unwrap(), f);
        }

        #[test]
        fn arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..600), magic in any::<bool>()) {
            if magic && bytes.len() >= 8 {
                bytes[..8].copy_from_slice(INDEX_MAGIC);
            }
            let _ = IndexFile::decode(&bytes);
        }

        #[test]
        fn mutations_error_or_decode_valid(
            f in file_strategy(),
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
            cut in any::<prop::sample::Index>(),
            field in any::<prop::sample::Index>(),
            huge in any::<u32>(),
        ) {
            let enc = f.encode();
            let mut bad = enc.clone();
            let i = flip.index(bad.len());
            bad[i] ^= 1 << bit;
            if let Ok(d) = IndexFile::decode(&bad) {
                for p in &d.packs {
                    prop_assert!(p.validate().is_ok());
                }
            }
            let c = cut.index(enc.len());
            prop_assert!(IndexFile::decode(&enc[..c]).is_err());
            // Any 4 bytes set to a huge count: an error or a valid file, never an
            // allocation the input cannot back.
            if enc.len() >= 12 {
                let at = 8 + field.index(enc.len() - 11);
                let mut long = enc.clone();
                long[at..at + 4].copy_from_slice(&huge.to_le_bytes());
                let _ = IndexFile::decode(&long);
            }
        }
    }
}
