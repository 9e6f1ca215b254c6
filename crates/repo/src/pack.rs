//! Pack objects: many sealed chunks in one object, with a sealed header at the end that
//! lists them, so that a pack describes itself and the index can be rebuilt from packs.
//!
//! Layout of `packs/<first two hex digits>/<pack id>`:
//! `blob_1 .. blob_n | sealed header | header length (u32 LE) | "COFFPK01"`.
//! Each blob is `seal(aad = chunk id, [compression byte][payload])`. The header plaintext
//! is `count (u32 LE)` then per blob `kind (u8) | chunk id (32) | offset (u32 LE) |
//! length (u32 LE) | raw length (u32 LE)`, sealed with aad `"coffer pack header" | pack id`.

use bytes::Bytes;

use crate::crypto::MasterKeys;
use crate::id::Id;

pub const PACK_MAGIC: &[u8; 8] = b"COFFPK01";
pub const TRAILER_LEN: usize = 4 + 8;
pub const HEADER_ENTRY_LEN: usize = 1 + 32 + 4 + 4 + 4;

/// What a chunk holds: file or block data, or metadata (tree listings, block maps).
/// Kept apart in different packs so metadata can be read without touching bulk data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobKind {
    Data,
    Meta,
}

impl BlobKind {
    pub fn to_u8(self) -> u8 {
        match self {
            BlobKind::Data => 0,
            BlobKind::Meta => 1,
        }
    }
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
    pub kind: BlobKind,
    pub id: Id,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}

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

pub fn encode_header_entries(entries: &[BlobEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + entries.len() * HEADER_ENTRY_LEN);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        out.push(e.kind.to_u8());
        out.extend_from_slice(&e.id.0);
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.length.to_le_bytes());
        out.extend_from_slice(&e.raw_length.to_le_bytes());
    }
    out
}

pub fn decode_header_entries(b: &[u8]) -> Result<Vec<BlobEntry>, String> {
    if b.len() < 4 {
        return Err("header too short".into());
    }
    let n = u32::from_le_bytes(b[..4].try_into().unwrap()) as usize;
    if b.len() != 4 + n * HEADER_ENTRY_LEN {
        return Err(format!(
            "header length {} does not fit {n} entries",
            b.len()
        ));
    }
    let mut out = Vec::with_capacity(n);
    for rec in b[4..].chunks_exact(HEADER_ENTRY_LEN) {
        let kind = BlobKind::from_u8(rec[0]).ok_or("unknown blob kind")?;
        out.push(BlobEntry {
            kind,
            id: Id(rec[1..33].try_into().unwrap()),
            offset: u32::from_le_bytes(rec[33..37].try_into().unwrap()),
            length: u32::from_le_bytes(rec[37..41].try_into().unwrap()),
            raw_length: u32::from_le_bytes(rec[41..45].try_into().unwrap()),
        });
    }
    Ok(out)
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

/// Checks that every blob lies inside the blob area (before the header).
pub fn check_bounds(entries: &[BlobEntry], blob_area_end: u64) -> Result<(), String> {
    for e in entries {
        if e.offset as u64 + e.length as u64 > blob_area_end {
            return Err(format!("blob {} extends past the blob area", e.id));
        }
    }
    Ok(())
}

/// Where the header starts, from the trailer (the last TRAILER_LEN bytes) and pack size.
pub fn header_start(trailer: &[u8], pack_size: u64) -> Result<u64, String> {
    if trailer.len() != TRAILER_LEN || pack_size < TRAILER_LEN as u64 {
        return Err(format!("truncated: only {pack_size} bytes"));
    }
    if &trailer[4..] != PACK_MAGIC {
        return Err("truncated or damaged: no pack trailer at the end".into());
    }
    let hlen = u32::from_le_bytes(trailer[..4].try_into().unwrap()) as u64;
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

/// Compression of a blob's payload; the first plaintext byte says which was used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Zstd(i32),
}

impl std::str::FromStr for Compression {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "none" => Ok(Compression::None),
            "zstd" => Ok(Compression::Zstd(3)),
            _ => {
                if let Some(l) = s.strip_prefix("zstd:")
                    && let Ok(level) = l.parse::<i32>()
                    && (-7..=22).contains(&level)
                {
                    return Ok(Compression::Zstd(level));
                }
                Err(crate::Error::Invalid(format!(
                    "unknown compression {s:?}: use zstd, zstd:LEVEL (-7..22) or none"
                )))
            }
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Zstd(l) => write!(f, "zstd:{l}"),
        }
    }
}

const RAW: u8 = 0;
const ZSTD: u8 = 1;

/// Compresses `data` (kept raw when compression does not make it smaller) and seals it,
/// compressing straight into the sealed buffer.
pub fn seal_blob(keys: &MasterKeys, id: &Id, data: &[u8], compression: Compression) -> Vec<u8> {
    let level = match compression {
        Compression::Zstd(level) if looks_compressible(data) => Some(level),
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
            if let Some(n) = zstd_compress(level, data, &mut out[start + 1..]) {
                out.truncate(start + 1 + n);
                return;
            }
            out.truncate(start);
        }
        out.push(RAW);
        out.extend_from_slice(data);
    })
}

/// Compression contexts are costly to set up (tables of up to megabytes, cleared on
/// creation) and large to keep, so a few are shared: at most one per core, which is also
/// as many compressions as can usefully run at once. A thread that finds none free waits.
struct CompressorPool {
    /// Idle contexts with the level each was last set to.
    idle: std::sync::Mutex<(Vec<(i32, zstd::bulk::Compressor<'static>)>, usize)>,
    freed: std::sync::Condvar,
    max: usize,
}

static COMPRESSORS: std::sync::LazyLock<CompressorPool> =
    std::sync::LazyLock::new(|| CompressorPool {
        idle: std::sync::Mutex::new((Vec::new(), 0)),
        freed: std::sync::Condvar::new(),
        max: std::thread::available_parallelism().map_or(2, |n| n.get()),
    });

thread_local! {
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// One-shot zstd compression of `data` into `out` (a standard frame with its content
/// size); None when it does not fit.
fn zstd_compress(level: i32, data: &[u8], out: &mut [u8]) -> Option<usize> {
    let pool = &*COMPRESSORS;
    let (mut set_to, mut ctx) = {
        let mut guard = pool.idle.lock().unwrap();
        loop {
            let (idle, created) = &mut *guard;
            if let Some(pos) = idle.iter().position(|(l, _)| *l == level) {
                break idle.swap_remove(pos);
            }
            if let Some(any) = idle.pop() {
                break any;
            }
            if *created < pool.max {
                *created += 1;
                drop(guard);
                match zstd::bulk::Compressor::new(level) {
                    Ok(c) => break (level, c),
                    Err(_) => {
                        pool.idle.lock().unwrap().1 -= 1;
                        return None;
                    }
                }
            }
            guard = pool.freed.wait(guard).unwrap();
        }
    };
    let mut n = None;
    if set_to == level || ctx.set_compression_level(level).is_ok() {
        set_to = level;
        n = ctx.compress_to_buffer(data, out).ok();
    }
    pool.idle.lock().unwrap().0.push((set_to, ctx));
    pool.freed.notify_one();
    n
}

/// One-shot zstd decompression into a buffer of exactly `size` bytes.
fn zstd_decompress(data: &[u8], size: usize) -> Result<Vec<u8>, String> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?);
        }
        let mut out = Vec::with_capacity(size);
        d.as_mut()
            .unwrap()
            .decompress_to_buffer(data, &mut out)
            .map_err(|e| format!("decompression failed: {e}"))?;
        Ok(out)
    })
}

/// Opens a sealed blob and checks that its plaintext hashes to `id`.
pub fn open_blob(
    keys: &MasterKeys,
    id: &Id,
    sealed: &[u8],
    raw_length: u32,
) -> Result<bytes::Bytes, String> {
    let plain = keys.open(&id.0, sealed)?;
    let data = match plain.first() {
        // The plaintext buffer itself, past the marker: no copy.
        Some(&RAW) => bytes::Bytes::from(plain).slice(1..),
        Some(&ZSTD) => {
            // The index knows the size: one-shot decompression into an exact buffer.
            bytes::Bytes::from(zstd_decompress(&plain[1..], raw_length as usize)?)
        }
        _ => return Err("unknown compression marker".into()),
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

/// A cheap pre-check that skips compressing data that will not shrink (random or already
/// compressed): compress a small sample at the fastest level and see if it shrinks.
fn looks_compressible(data: &[u8]) -> bool {
    const SAMPLE: usize = 16 * 1024;
    if data.len() <= 2 * SAMPLE {
        return true;
    }
    let mid = data.len() / 2;
    let samples = [
        &data[..SAMPLE],
        &data[mid..mid + SAMPLE],
        &data[data.len() - SAMPLE..],
    ];
    let mut out = [0u8; SAMPLE * 97 / 100];
    samples
        .iter()
        .any(|s| zstd_compress(1, s, &mut out).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Encryption, MasterKeys};

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
}
