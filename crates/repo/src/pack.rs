//! Pack objects: many sealed chunks in one object, with a sealed header at the end that
//! lists them, so that a pack describes itself and the index can be rebuilt from packs.
//!
//! Layout of `packs/<first two hex digits>/<pack id>`:
//! `blob_1 .. blob_n | sealed header | header length (u32 LE) | "COFFPK01"`.
//! Each blob is `seal(aad = chunk id, [compression byte][payload])`. The header plaintext
//! is `count (u32 LE)` then per blob `kind (u8) | chunk id (32) | offset (u32 LE) |
//! length (u32 LE) | raw length (u32 LE)`, sealed with aad `"coffer pack header" | pack id`
//! and no compression byte.

use bytes::Bytes;

use crate::compression::{self, Compression, RAW, ZSTD};
use crate::crypto::{MasterKeys, SEAL_OVERHEAD};
use crate::id::Id;
use crate::limits::MAX_CHUNK;

/// The last 8 bytes of every pack.
pub const PACK_MAGIC: &[u8; 8] = b"COFFPK01";
/// Header length (u32) and magic.
pub const TRAILER_LEN: usize = 4 + 8;
/// One header entry: kind, chunk id, offset, length, raw length.
pub const HEADER_ENTRY_LEN: usize = 1 + 32 + 4 + 4 + 4;
/// Largest sealed blob: a raw chunk of the largest size, its compression byte, the seal.
pub const MAX_SEALED_BLOB: u32 = MAX_CHUNK + 1 + SEAL_OVERHEAD as u32;

/// What a chunk holds: file or block data, or metadata (tree listings, block maps).
/// Kept apart in different packs so metadata can be read without touching bulk data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobKind {
    /// File or block data.
    Data,
    /// Metadata streams (trees, block maps, catalogs, reference lists).
    Meta,
}

impl BlobKind {
    /// The stored byte: 0 data, 1 metadata.
    pub fn to_u8(self) -> u8 {
        match self {
            BlobKind::Data => 0,
            BlobKind::Meta => 1,
        }
    }
    /// The kind a stored byte names, if any.
    pub fn from_u8(b: u8) -> Option<BlobKind> {
        match b {
            0 => Some(BlobKind::Data),
            1 => Some(BlobKind::Meta),
            _ => None,
        }
    }
}

/// One blob's place in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobEntry {
    /// Data or metadata.
    pub kind: BlobKind,
    /// The chunk id (keyed BLAKE3 of the plaintext).
    pub id: Id,
    /// Where the sealed blob starts in the pack.
    pub offset: u32,
    /// Length of the sealed blob.
    pub length: u32,
    /// Length of the chunk's plaintext (after decompression).
    pub raw_length: u32,
}

impl BlobEntry {
    /// Whether the lengths are possible for a sealed chunk: plaintext at most
    /// [`MAX_CHUNK`], sealed blob no shorter than its seal and no longer than the raw
    /// plaintext sealed with its compression byte.
    pub fn validate(&self) -> Result<(), String> {
        if self.raw_length > MAX_CHUNK {
            return Err(format!(
                "chunk {} claims {} bytes, more than the {MAX_CHUNK} allowed",
                self.id.short(),
                self.raw_length
            ));
        }
        let min = SEAL_OVERHEAD as u32 + 1;
        let max = self.raw_length + 1 + SEAL_OVERHEAD as u32;
        if self.length < min || self.length > max {
            return Err(format!(
                "chunk {} has a sealed length of {} for {} plaintext bytes",
                self.id.short(),
                self.length,
                self.raw_length
            ));
        }
        Ok(())
    }

    /// Where the blob ends in the pack.
    pub fn end(&self) -> u64 {
        self.offset as u64 + self.length as u64
    }
}

/// The object path of pack `id`.
pub fn pack_path(id: &Id) -> String {
    let hex = id.to_hex();
    format!("packs/{}/{}", &hex[..2], hex)
}

/// Parses a pack path back into its id.
pub fn pack_id_from_path(path: &str) -> Option<Id> {
    let name = path.rsplit('/').next()?;
    if !path.starts_with("packs/") {
        return None;
    }
    name.parse().ok()
}

fn header_aad(pack: &Id) -> Vec<u8> {
    let mut aad = b"coffer pack header".to_vec();
    aad.extend_from_slice(&pack.0);
    aad
}

/// Encodes a header's plaintext (also the body of a pack record in index files).
pub fn encode_header_entries(entries: &[BlobEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + entries.len() * HEADER_ENTRY_LEN);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        out.extend_from_slice(&encode_entry(e));
    }
    out
}

fn encode_entry(e: &BlobEntry) -> [u8; HEADER_ENTRY_LEN] {
    let mut rec = [0u8; HEADER_ENTRY_LEN];
    rec[0] = e.kind.to_u8();
    rec[1..33].copy_from_slice(&e.id.0);
    rec[33..37].copy_from_slice(&e.offset.to_le_bytes());
    rec[37..41].copy_from_slice(&e.length.to_le_bytes());
    rec[41..45].copy_from_slice(&e.raw_length.to_le_bytes());
    rec
}

fn le32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

/// Decodes one 45-byte header entry, validating it ([`BlobEntry::validate`]).
pub fn decode_entry(rec: &[u8]) -> Result<BlobEntry, String> {
    if rec.len() != HEADER_ENTRY_LEN {
        return Err(format!("header entry of {} bytes", rec.len()));
    }
    let kind = BlobKind::from_u8(rec[0]).ok_or_else(|| format!("unknown blob kind {}", rec[0]))?;
    let mut id = [0u8; 32];
    id.copy_from_slice(&rec[1..33]);
    let e = BlobEntry {
        kind,
        id: Id(id),
        offset: le32(&rec[33..37]),
        length: le32(&rec[37..41]),
        raw_length: le32(&rec[41..45]),
    };
    e.validate()?;
    Ok(e)
}

/// Decodes a header's plaintext: exactly `count` valid entries, nothing after them.
pub fn decode_header_entries(b: &[u8]) -> Result<Vec<BlobEntry>, String> {
    if b.len() < 4 {
        return Err("header too short".into());
    }
    let n = le32(b) as usize;
    let want = n
        .checked_mul(HEADER_ENTRY_LEN)
        .and_then(|x| x.checked_add(4));
    if want != Some(b.len()) {
        return Err(format!(
            "header length {} does not fit {n} entries",
            b.len()
        ));
    }
    b[4..]
        .chunks_exact(HEADER_ENTRY_LEN)
        .map(decode_entry)
        .collect()
}

/// The bytes that close a pack: sealed header, its length, the magic.
pub fn encode_trailer(keys: &MasterKeys, pack: &Id, entries: &[BlobEntry]) -> Bytes {
    let sealed = keys.seal(&header_aad(pack), &encode_header_entries(entries));
    let mut out = Vec::with_capacity(sealed.len() + TRAILER_LEN);
    out.extend_from_slice(&sealed);
    out.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    out.extend_from_slice(PACK_MAGIC);
    Bytes::from(out)
}

/// Opens a pack's sealed header.
pub fn open_header(keys: &MasterKeys, pack: &Id, sealed: &[u8]) -> Result<Vec<BlobEntry>, String> {
    let plain = keys
        .open(&header_aad(pack), sealed)
        .map_err(|r| format!("header: {r}"))?;
    decode_header_entries(&plain)
}

/// Checks that every blob lies inside the blob area (before the header) and that no two
/// blobs overlap.
pub fn check_bounds(entries: &[BlobEntry], blob_area_end: u64) -> Result<(), String> {
    let mut spans: Vec<(u64, u64)> = Vec::with_capacity(entries.len());
    for e in entries {
        if e.end() > blob_area_end {
            return Err(format!("blob {} extends past the blob area", e.id.short()));
        }
        spans.push((e.offset as u64, e.end()));
    }
    spans.sort_unstable();
    if spans.windows(2).any(|w| w[1].0 < w[0].1) {
        return Err("blobs overlap".into());
    }
    Ok(())
}

/// Where the header starts, from the trailer (the last [`TRAILER_LEN`] bytes) and pack
/// size.
pub fn header_start(trailer: &[u8], pack_size: u64) -> Result<u64, String> {
    if trailer.len() != TRAILER_LEN || pack_size < TRAILER_LEN as u64 {
        return Err(format!("truncated: only {pack_size} bytes"));
    }
    if &trailer[4..] != PACK_MAGIC {
        return Err("truncated or damaged: no pack trailer at the end".into());
    }
    let hlen = le32(trailer) as u64;
    if hlen < (SEAL_OVERHEAD + 4) as u64 {
        return Err(format!("damaged: header length {hlen} is too short"));
    }
    if hlen + TRAILER_LEN as u64 > pack_size {
        return Err("damaged: header length exceeds the pack".into());
    }
    Ok(pack_size - TRAILER_LEN as u64 - hlen)
}

/// Reads the blob list from a whole pack's bytes, checking it against the pack size.
pub fn parse_pack(keys: &MasterKeys, pack: &Id, data: &[u8]) -> Result<Vec<BlobEntry>, String> {
    if data.len() < TRAILER_LEN {
        return Err(format!("truncated: only {} bytes", data.len()));
    }
    let size = data.len() as u64;
    let start = header_start(&data[data.len() - TRAILER_LEN..], size)? as usize;
    let entries = open_header(keys, pack, &data[start..data.len() - TRAILER_LEN])?;
    check_bounds(&entries, start as u64)?;
    Ok(entries)
}

/// Compresses `data` (kept raw when compression does not make it smaller) and seals it,
/// compressing straight into the sealed buffer.
pub fn seal_blob(keys: &MasterKeys, id: &Id, data: &[u8], compression: Compression) -> Vec<u8> {
    let level = match compression {
        Compression::Zstd(level) if compression::looks_compressible(data) => Some(level),
        _ => None,
    };
    keys.seal_with(&id.0, data.len() + 1, |out| {
        let start = out.len();
        if let Some(level) = level {
            out.push(ZSTD);
            // Room for output strictly smaller than the input: zstd gives up (an error)
            // as soon as it would not save anything.
            let limit = data.len().saturating_sub(1);
            out.resize(start + 1 + limit, 0);
            if let Some(n) = compression::compress_into(level, data, &mut out[start + 1..]) {
                out.truncate(start + 1 + n);
                return;
            }
            out.truncate(start);
        }
        out.push(RAW);
        out.extend_from_slice(data);
    })
}

/// Opens a sealed blob and checks that its plaintext hashes to `id`. Decompression is
/// bounded by `raw_length` (itself at most [`MAX_CHUNK`]).
pub fn open_blob(
    keys: &MasterKeys,
    id: &Id,
    sealed: &[u8],
    raw_length: u32,
) -> Result<bytes::Bytes, String> {
    if raw_length > MAX_CHUNK {
        return Err(format!("raw length {raw_length} exceeds {MAX_CHUNK}"));
    }
    let plain = keys.open(&id.0, sealed)?;
    let data = match plain.first() {
        // The plaintext buffer itself, past the marker: no copy.
        Some(&RAW) => bytes::Bytes::from(plain).slice(1..),
        Some(&ZSTD) => bytes::Bytes::from(compression::decompress_bounded(
            &plain[1..],
            Some(raw_length as usize),
            raw_length as usize,
        )?),
        Some(b) => return Err(format!("unknown compression byte {b}")),
        None => return Err("empty plaintext".into()),
    };
    if data.len() != raw_length as usize {
        return Err(format!(
            "length {} differs from the index's {raw_length}",
            data.len()
        ));
    }
    if keys.chunk_id(&data) != *id {
        return Err("content does not match its id".into());
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Encryption, MasterKeys};
    use proptest::prelude::*;

    #[test]
    fn blob_round_trip_and_trailer() {
        let keys = MasterKeys::generate(Encryption::Aes256Gcm);
        let text = b"hello hello hello hello hello".repeat(1000);
        let id = keys.chunk_id(&text);
        let sealed = seal_blob(&keys, &id, &text, Compression::Zstd(3));
        assert!(sealed.len() < text.len() / 10, "compressible text shrinks");
        assert_eq!(
            open_blob(&keys, &id, &sealed, text.len() as u32).unwrap(),
            text
        );
        let other = keys.chunk_id(b"x");
        assert!(open_blob(&keys, &other, &sealed, text.len() as u32).is_err());
        // A raw length that disagrees with the frame is refused before decompressing.
        assert!(open_blob(&keys, &id, &sealed, text.len() as u32 + 1).is_err());
        assert!(open_blob(&keys, &id, &sealed, u32::MAX).is_err());

        let pack = Id::random();
        let entries = vec![BlobEntry {
            kind: BlobKind::Data,
            id,
            offset: 0,
            length: sealed.len() as u32,
            raw_length: text.len() as u32,
        }];
        let mut data = sealed.clone();
        data.extend_from_slice(&encode_trailer(&keys, &pack, &entries));
        assert_eq!(parse_pack(&keys, &pack, &data).unwrap(), entries);
        assert!(parse_pack(&keys, &Id::random(), &data).is_err());
        assert!(parse_pack(&keys, &pack, &data[..data.len() - 1]).is_err());
    }

    #[test]
    fn random_data_stays_raw() {
        let keys = MasterKeys::generate(Encryption::ChaCha20Poly1305);
        let mut data = vec![0u8; 200_000];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut data);
        let id = keys.chunk_id(&data);
        let sealed = seal_blob(&keys, &id, &data, Compression::Zstd(3));
        assert_eq!(sealed.len(), data.len() + 1 + crate::crypto::SEAL_OVERHEAD);
        assert_eq!(
            open_blob(&keys, &id, &sealed, data.len() as u32).unwrap(),
            data
        );
    }

    fn entry_strategy() -> impl Strategy<Value = BlobEntry> {
        (
            any::<bool>(),
            any::<[u8; 32]>(),
            any::<u32>(),
            0..=MAX_CHUNK,
            any::<u32>(),
        )
            .prop_map(|(meta, id, offset, raw, l)| {
                let max = raw + 1 + SEAL_OVERHEAD as u32;
                let min = SEAL_OVERHEAD as u32 + 1;
                BlobEntry {
                    kind: if meta { BlobKind::Meta } else { BlobKind::Data },
                    id: Id(id),
                    offset,
                    length: min + l % (max - min + 1),
                    raw_length: raw,
                }
            })
    }

    /// A pack of `n` small random blobs: (bytes, entries).
    fn small_pack(keys: &MasterKeys, pack: &Id, sizes: &[usize]) -> (Vec<u8>, Vec<BlobEntry>) {
        let mut data = Vec::new();
        let mut entries = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let plain = vec![i as u8; n];
            let id = keys.chunk_id(&plain);
            let sealed = seal_blob(keys, &id, &plain, Compression::Zstd(3));
            entries.push(BlobEntry {
                kind: BlobKind::Data,
                id,
                offset: data.len() as u32,
                length: sealed.len() as u32,
                raw_length: n as u32,
            });
            data.extend_from_slice(&sealed);
        }
        data.extend_from_slice(&encode_trailer(keys, pack, &entries));
        (data, entries)
    }

    proptest! {
        #![proptest_config(crate::limits::proptest_config())]

        #[test]
        fn header_entries_round_trip(entries in proptest::collection::vec(entry_strategy(), 0..50)) {
            let enc = encode_header_entries(&entries);
            prop_assert_eq!(decode_header_entries(&enc).unwrap(), entries);
        }

        #[test]
        fn header_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(entries) = decode_header_entries(&bytes) {
                prop_assert_eq!(bytes.len(), 4 + entries.len() * HEADER_ENTRY_LEN);
            }
        }

        #[test]
        fn header_count_set_huge(entries in proptest::collection::vec(entry_strategy(), 0..5), n in any::<u32>()) {
            let mut enc = encode_header_entries(&entries);
            enc[..4].copy_from_slice(&n.to_le_bytes());
            if n as usize != entries.len() {
                prop_assert!(decode_header_entries(&enc).is_err());
            }
        }

        #[test]
        fn trailers_never_panic(trailer in proptest::collection::vec(any::<u8>(), 0..20), size in any::<u64>()) {
            if let Ok(start) = header_start(&trailer, size) {
                prop_assert!(start < size);
            }
        }
    }

    proptest! {
        #![proptest_config(crate::limits::proptest_cases(300))]

        #[test]
        fn mutated_packs_error_or_parse(
            sizes in proptest::collection::vec(0usize..3000, 1..6),
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
            cut in any::<prop::sample::Index>(),
            huge in any::<u32>(),
        ) {
            let keys = MasterKeys::generate(Encryption::Aes256Gcm);
            let pack = Id::random();
            let (data, entries) = small_pack(&keys, &pack, &sizes);
            prop_assert_eq!(parse_pack(&keys, &pack, &data).unwrap(), entries.clone());
            // A flipped bit anywhere: the pack parses (the bit was in a blob) or errors,
            // and every blob then opens or errors.
            let mut bad = data.clone();
            let i = flip.index(bad.len());
            bad[i] ^= 1 << bit;
            if let Ok(found) = parse_pack(&keys, &pack, &bad) {
                for e in found {
                    let sealed = &bad[e.offset as usize..e.end() as usize];
                    let _ = open_blob(&keys, &e.id, sealed, e.raw_length);
                }
            }
            // Truncated anywhere: refused.
            let c = cut.index(data.len());
            prop_assert!(parse_pack(&keys, &pack, &data[..c]).is_err());
            // Header length set huge: refused.
            let mut long = data.clone();
            let at = long.len() - TRAILER_LEN;
            long[at..at + 4].copy_from_slice(&huge.to_le_bytes());
            let real = (data.len() - TRAILER_LEN - entries.iter().map(|e| e.length as usize).sum::<usize>()) as u32;
            if huge != real {
                prop_assert!(parse_pack(&keys, &pack, &long).is_err());
            }
        }
    }
}
