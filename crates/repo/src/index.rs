//! The index: which pack holds each chunk, at which offset.
//!
//! In the repository, `index/<BLAKE3 of the stored object>` files each describe some packs
//! (every writer session adds one or more; prune replaces many with fewer and names the
//! ones it supersedes). Their plaintext, before compression and sealing with aad "index":
//!
//! ```text
//! "CIDX0001" | n_superseded u32 | superseded index ids (32 each)
//! | n_packs u32 | per pack: pack id (32) | pack size u64 | n u32 | n x header entry (45)
//! ```
//! (all integers little-endian; header entries as in packs).
//!
//! Locally, the index is merged into one sorted table file in the cache directory and
//! memory-mapped, so lookups cost a binary search and resident memory stays bounded
//! whatever the number of chunks: the process only keeps the pages it touches, which the
//! kernel can drop. The table is rebuilt incrementally (merging new index files into the
//! previous table) and with bounded memory (each index file is sorted alone; then a k-way
//! merge streams them into the table). Only the list of pack ids lives on the heap.
//!
//! Table file: `"CTBL0001" | n_entries u64 | n_packs u64 | fanout: 65537 x u64 |
//! entries: n x 48 bytes (chunk id 32, pack index u32, offset u32, length u32, raw length
//! u31 + kind bit) sorted by chunk id | packs: n_packs x (pack id 32, size u64)`.

use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::Error;
use crate::id::Id;
use crate::pack::{BlobEntry, BlobKind, HEADER_ENTRY_LEN};

const INDEX_MAGIC: &[u8; 8] = b"CIDX0001";
const TABLE_MAGIC: &[u8; 8] = b"CTBL0001";
const FANOUT: usize = 65536;
const TABLE_HEADER: usize = 8 + 8 + 8 + (FANOUT + 1) * 8;
const REC: usize = 48;
const KIND_BIT: u32 = 1 << 31;

/// The packs one index file describes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IndexFile {
    pub supersedes: Vec<Id>,
    pub packs: Vec<PackRecord>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PackRecord {
    pub id: Id,
    pub size: u64,
    pub blobs: Vec<BlobEntry>,
}

impl IndexFile {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(INDEX_MAGIC);
        out.extend_from_slice(&(self.supersedes.len() as u32).to_le_bytes());
        for s in &self.supersedes {
            out.extend_from_slice(&s.0);
        }
        out.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for p in &self.packs {
            out.extend_from_slice(&p.id.0);
            out.extend_from_slice(&p.size.to_le_bytes());
            let enc = crate::pack::encode_header_entries(&p.blobs);
            out.extend_from_slice(&enc);
        }
        out
    }

    pub fn decode(b: &[u8]) -> std::result::Result<IndexFile, String> {
        let mut r = Reader { b, pos: 0 };
        if r.take(8)? != INDEX_MAGIC {
            return Err("not an index (bad magic)".into());
        }
        let ns = r.u32()? as usize;
        let mut supersedes = Vec::with_capacity(ns.min(1 << 16));
        for _ in 0..ns {
            supersedes.push(Id(r.take(32)?.try_into().unwrap()));
        }
        let np = r.u32()? as usize;
        let mut packs = Vec::with_capacity(np.min(1 << 16));
        for _ in 0..np {
            let id = Id(r.take(32)?.try_into().unwrap());
            let size = r.u64()?;
            let n = r.u32()? as usize;
            let body_start = r.pos - 4;
            r.take(n * HEADER_ENTRY_LEN)?;
            let blobs = crate::pack::decode_header_entries(&b[body_start..r.pos])?;
            packs.push(PackRecord { id, size, blobs });
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
        if self.pos + n > self.b.len() {
            return Err("truncated index".into());
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
}

/// Where a chunk is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkLocation {
    pub pack: Id,
    pub kind: BlobKind,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}

/// The merged, memory-mapped index table.
pub struct IndexTable {
    map: Option<Mmap>,
    n_entries: usize,
    /// The pack list lives in the mapped file too (40-byte records after the entries), so
    /// an open table costs no heap memory however large the repository.
    n_packs: usize,
    packs_at: usize,
    /// The repository index files merged into this table.
    pub sources: BTreeSet<Id>,
    pub path: Option<PathBuf>,
}

impl IndexTable {
    pub fn empty() -> IndexTable {
        IndexTable {
            map: None,
            n_entries: 0,
            n_packs: 0,
            packs_at: 0,
            sources: BTreeSet::new(),
            path: None,
        }
    }

    pub fn len(&self) -> usize {
        self.n_entries
    }

    pub fn is_empty(&self) -> bool {
        self.n_entries == 0
    }

    /// Every pack the table knows, with its size.
    pub fn packs(&self) -> impl ExactSizeIterator<Item = (Id, u64)> + '_ {
        (0..self.n_packs).map(|i| self.pack_at(i))
    }

    pub fn pack_count(&self) -> usize {
        self.n_packs
    }

    /// The pack with table index `i`.
    pub fn pack_at(&self, i: usize) -> (Id, u64) {
        let m = self.map.as_ref().expect("a table with packs is mapped");
        let at = self.packs_at + i * 40;
        (
            Id(m[at..at + 32].try_into().unwrap()),
            u64::from_le_bytes(m[at + 32..at + 40].try_into().unwrap()),
        )
    }

    fn fanout(&self, i: usize) -> usize {
        let m = self.map.as_ref().unwrap();
        let at = 24 + i * 8;
        u64::from_le_bytes(m[at..at + 8].try_into().unwrap()) as usize
    }

    fn record(&self, i: usize) -> &[u8] {
        let m = self.map.as_ref().unwrap();
        let at = TABLE_HEADER + i * REC;
        &m[at..at + REC]
    }

    fn decode(&self, rec: &[u8]) -> ChunkLocation {
        let pack_idx = u32::from_le_bytes(rec[32..36].try_into().unwrap()) as usize;
        let raw = u32::from_le_bytes(rec[44..48].try_into().unwrap());
        ChunkLocation {
            pack: self.pack_at(pack_idx).0,
            offset: u32::from_le_bytes(rec[36..40].try_into().unwrap()),
            length: u32::from_le_bytes(rec[40..44].try_into().unwrap()),
            raw_length: raw & !KIND_BIT,
            kind: if raw & KIND_BIT != 0 {
                BlobKind::Meta
            } else {
                BlobKind::Data
            },
        }
    }

    /// Every stored copy of `id` (usually one; more while prune repacks).
    pub fn lookup(&self, id: &Id) -> Vec<ChunkLocation> {
        if self.n_entries == 0 {
            return Vec::new();
        }
        let bucket = u16::from_be_bytes([id.0[0], id.0[1]]) as usize;
        let (mut lo, mut hi) = (self.fanout(bucket), self.fanout(bucket + 1));
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.record(mid)[..32] < id.0[..] {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut out = Vec::new();
        let mut i = lo;
        while i < self.n_entries && self.record(i)[..32] == id.0 {
            out.push(self.decode(self.record(i)));
            i += 1;
        }
        out
    }

    /// Iterates over all entries in id order.
    pub fn iter(&self) -> impl Iterator<Item = (Id, ChunkLocation)> + '_ {
        (0..self.n_entries).map(move |i| {
            let r = self.record(i);
            (Id(r[..32].try_into().unwrap()), self.decode(r))
        })
    }

    /// Opens a table file written by [`build_table`].
    pub fn open(path: &Path, sources: BTreeSet<Id>) -> std::io::Result<IndexTable> {
        let file = File::open(path)?;
        // SAFETY: table files are written once to a temporary name and renamed into place;
        // nothing writes to them afterwards.
        let map = unsafe { Mmap::map(&file)? };
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
        if map.len() < TABLE_HEADER || &map[..8] != TABLE_MAGIC {
            return Err(bad("bad table magic"));
        }
        let n_entries = u64::from_le_bytes(map[8..16].try_into().unwrap()) as usize;
        let n_packs = u64::from_le_bytes(map[16..24].try_into().unwrap()) as usize;
        let packs_at = TABLE_HEADER + n_entries * REC;
        if map.len() != packs_at + n_packs * 40 {
            return Err(bad("table size does not match its counts"));
        }
        Ok(IndexTable {
            map: Some(map),
            n_entries,
            n_packs,
            packs_at,
            sources,
            path: Some(path.to_path_buf()),
        })
    }
}

/// One sorted input of a table merge: (chunk id, pack id, pack index in the new table,
/// location).
trait Run {
    fn peek(&self) -> Option<(Id, Id, u32, ChunkLocationRaw)>;
    fn advance(&mut self);
}

#[derive(Clone, Copy)]
struct ChunkLocationRaw {
    offset: u32,
    length: u32,
    raw: u32,
}

/// A decoded index file held as a sorted vector (index files are bounded in size).
struct VecRun {
    entries: Vec<(Id, Id, u32, ChunkLocationRaw)>,
    pos: usize,
}

impl Run for VecRun {
    fn peek(&self) -> Option<(Id, Id, u32, ChunkLocationRaw)> {
        self.entries.get(self.pos).copied()
    }
    fn advance(&mut self) {
        self.pos += 1;
    }
}

/// The entries of an existing table, with its packs renumbered (`u32::MAX`: dropped).
struct TableRun<'a> {
    table: &'a IndexTable,
    pos: usize,
    renumber: &'a [u32],
}

impl TableRun<'_> {
    fn pack_index(&self) -> usize {
        let rec = self.table.record(self.pos);
        u32::from_le_bytes(rec[32..36].try_into().unwrap()) as usize
    }

    fn skip_dropped(&mut self) {
        while self.pos < self.table.n_entries && self.renumber[self.pack_index()] == u32::MAX {
            self.pos += 1;
        }
    }
}

impl Run for TableRun<'_> {
    fn peek(&self) -> Option<(Id, Id, u32, ChunkLocationRaw)> {
        if self.pos >= self.table.n_entries {
            return None;
        }
        let rec = self.table.record(self.pos);
        let old = self.pack_index();
        Some((
            Id(rec[..32].try_into().unwrap()),
            self.table.pack_at(old).0,
            self.renumber[old],
            ChunkLocationRaw {
                offset: u32::from_le_bytes(rec[36..40].try_into().unwrap()),
                length: u32::from_le_bytes(rec[40..44].try_into().unwrap()),
                raw: u32::from_le_bytes(rec[44..48].try_into().unwrap()),
            },
        ))
    }
    fn advance(&mut self) {
        self.pos += 1;
        self.skip_dropped();
    }
}

fn file_run(file: &IndexFile, pack_index: &HashMap<Id, u32>) -> VecRun {
    let mut entries = Vec::new();
    for p in &file.packs {
        let dest = pack_index[&p.id];
        for b in &p.blobs {
            let raw = b.raw_length
                | if b.kind == BlobKind::Meta {
                    KIND_BIT
                } else {
                    0
                };
            entries.push((
                b.id,
                p.id,
                dest,
                ChunkLocationRaw {
                    offset: b.offset,
                    length: b.length,
                    raw,
                },
            ));
        }
    }
    entries.sort_unstable_by_key(|e| (e.0, e.1));
    VecRun { entries, pos: 0 }
}

/// Writes a new table at `path` merging existing tables (entries of packs for which
/// `keep_base_pack` holds) with the given index files. Several bases make this the final
/// pass of an external merge sort: a large index is merged as sorted runs written a
/// bounded batch at a time, then read back together through their mappings.
pub fn build_table(
    path: &Path,
    bases: &[&IndexTable],
    keep_base_pack: &dyn Fn(&Id) -> bool,
    files: &[IndexFile],
) -> std::io::Result<()> {
    // Pack list: each base's kept packs (renumbered in place, 4 bytes each, no hashing of
    // the whole list) followed by the new files' packs. A pack listed by two bases appears
    // twice in the list, which lookups do not mind; writers never index a pack twice.
    let mut renumbers: Vec<Vec<u32>> = Vec::with_capacity(bases.len());
    let mut n_packs: u32 = 0;
    for base in bases {
        let mut renumber = Vec::with_capacity(base.pack_count());
        for (id, _) in base.packs() {
            if keep_base_pack(&id) {
                renumber.push(n_packs);
                n_packs += 1;
            } else {
                renumber.push(u32::MAX);
            }
        }
        renumbers.push(renumber);
    }
    // New packs, minus any a base already lists (one pack in two index files).
    let mut candidates: HashMap<Id, u64> = HashMap::new();
    for f in files {
        for p in &f.packs {
            candidates.insert(p.id, p.size);
        }
    }
    let mut pack_index: HashMap<Id, u32> = HashMap::new();
    for (base, renumber) in bases.iter().zip(&renumbers) {
        for ((id, _), r) in base.packs().zip(renumber) {
            if *r != u32::MAX && candidates.contains_key(&id) {
                pack_index.insert(id, *r);
            }
        }
    }
    let mut new_packs: Vec<(Id, u64)> = Vec::new();
    for f in files {
        for p in &f.packs {
            if let std::collections::hash_map::Entry::Vacant(v) = pack_index.entry(p.id) {
                v.insert(n_packs + new_packs.len() as u32);
                new_packs.push((p.id, p.size));
            }
        }
    }

    let mut runs: Vec<Box<dyn Run + '_>> = Vec::new();
    for (base, renumber) in bases.iter().zip(&renumbers) {
        let mut r = TableRun {
            table: base,
            pos: 0,
            renumber,
        };
        r.skip_dropped();
        runs.push(Box::new(r));
    }
    for f in files {
        runs.push(Box::new(file_run(f, &pack_index)));
    }

    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let file = File::create(&tmp)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    // Header placeholder; rewritten once the counts and fanout are known.
    w.write_all(&vec![0u8; TABLE_HEADER])?;
    let mut fanout = vec![0u64; FANOUT + 1];
    let mut n: u64 = 0;
    let mut last: Option<(Id, Id)> = None;

    // k-way merge by (chunk id, pack id); identical pairs (one pack in two index files)
    // are written once.
    let mut heap = BinaryHeap::new();
    for (i, r) in runs.iter().enumerate() {
        if let Some((id, pack, _, _)) = r.peek() {
            heap.push(std::cmp::Reverse((id, pack, i)));
        }
    }
    while let Some(std::cmp::Reverse((id, pack, i))) = heap.pop() {
        let (_, _, dest, loc) = runs[i].peek().unwrap();
        runs[i].advance();
        if let Some((nid, npack, _, _)) = runs[i].peek() {
            heap.push(std::cmp::Reverse((nid, npack, i)));
        }
        if last == Some((id, pack)) {
            continue;
        }
        last = Some((id, pack));
        w.write_all(&id.0)?;
        w.write_all(&dest.to_le_bytes())?;
        w.write_all(&loc.offset.to_le_bytes())?;
        w.write_all(&loc.length.to_le_bytes())?;
        w.write_all(&loc.raw.to_le_bytes())?;
        let bucket = u16::from_be_bytes([id.0[0], id.0[1]]) as usize;
        fanout[bucket + 1] += 1;
        n += 1;
    }
    for (base, renumber) in bases.iter().zip(&renumbers) {
        for ((id, size), r) in base.packs().zip(renumber) {
            if *r != u32::MAX {
                w.write_all(&id.0)?;
                w.write_all(&size.to_le_bytes())?;
            }
        }
    }
    for (id, size) in &new_packs {
        w.write_all(&id.0)?;
        w.write_all(&size.to_le_bytes())?;
    }
    let total_packs = n_packs as u64 + new_packs.len() as u64;
    for i in 1..=FANOUT {
        fanout[i] += fanout[i - 1];
    }
    let mut file = w.into_inner().map_err(|e| e.into_error())?;
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(0))?;
    let mut header = Vec::with_capacity(TABLE_HEADER);
    header.extend_from_slice(TABLE_MAGIC);
    header.extend_from_slice(&n.to_le_bytes());
    header.extend_from_slice(&total_packs.to_le_bytes());
    for f in &fanout {
        header.extend_from_slice(&f.to_le_bytes());
    }
    file.write_all(&header)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

pub(crate) fn index_path(id: &Id) -> String {
    format!("index/{}", id.to_hex())
}

pub(crate) fn cache_error(path: &Path, e: std::io::Error) -> Error {
    Error::Cache {
        path: path.display().to_string(),
        source: e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: Id, offset: u32) -> BlobEntry {
        BlobEntry {
            kind: BlobKind::Data,
            id,
            offset,
            length: 10,
            raw_length: 20,
        }
    }

    #[test]
    fn index_file_round_trip() {
        let f = IndexFile {
            supersedes: vec![Id::random()],
            packs: vec![PackRecord {
                id: Id::random(),
                size: 99,
                blobs: vec![entry(Id::random(), 0), entry(Id::random(), 10)],
            }],
        };
        assert_eq!(IndexFile::decode(&f.encode()).unwrap(), f);
        assert!(IndexFile::decode(&f.encode()[..50]).is_err());
    }

    #[test]
    fn table_merge_and_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<Id> = (0..5000).map(|_| Id::random()).collect();
        let pack_a = Id::random();
        let pack_b = Id::random();
        let f1 = IndexFile {
            supersedes: vec![],
            packs: vec![PackRecord {
                id: pack_a,
                size: 1,
                blobs: ids[..3000]
                    .iter()
                    .enumerate()
                    .map(|(i, id)| entry(*id, i as u32))
                    .collect(),
            }],
        };
        let f2 = IndexFile {
            supersedes: vec![],
            packs: vec![PackRecord {
                id: pack_b,
                size: 2,
                blobs: ids[2000..]
                    .iter()
                    .enumerate()
                    .map(|(i, id)| entry(*id, i as u32))
                    .collect(),
            }],
        };
        let p1 = dir.path().join("t1");
        build_table(&p1, &[], &|_| true, std::slice::from_ref(&f1)).unwrap();
        let t1 = IndexTable::open(&p1, BTreeSet::new()).unwrap();
        assert_eq!(t1.len(), 3000);
        let p2 = dir.path().join("t2");
        build_table(&p2, &[&t1], &|_| true, std::slice::from_ref(&f2)).unwrap();
        let t2 = IndexTable::open(&p2, BTreeSet::new()).unwrap();
        assert_eq!(t2.len(), 6000);
        assert_eq!(t2.lookup(&ids[0]).len(), 1);
        assert_eq!(t2.lookup(&ids[2500]).len(), 2);
        assert_eq!(t2.lookup(&ids[4999])[0].pack, pack_b);
        assert!(t2.lookup(&Id::random()).is_empty());
        // Dropping a pack while merging.
        let p3 = dir.path().join("t3");
        build_table(&p3, &[&t2], &|p| *p != pack_a, &[]).unwrap();
        let t3 = IndexTable::open(&p3, BTreeSet::new()).unwrap();
        assert_eq!(t3.len(), 3000);
        assert!(t3.lookup(&ids[0]).is_empty());
        let sorted: Vec<Id> = t3.iter().map(|(id, _)| id).collect();
        assert!(sorted.windows(2).all(|w| w[0] <= w[1]));
    }
}
