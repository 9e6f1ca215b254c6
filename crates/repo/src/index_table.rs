//! The local lookup table the index files are merged into: one sorted file in the cache
//! directory, memory-mapped, so lookups cost a binary search and resident memory stays
//! bounded whatever the number of chunks (the process keeps only the pages it touches,
//! which the kernel can drop). It is rebuilt incrementally (new index files merged into
//! the previous table) and with bounded memory (a k-way merge of sorted runs streams into
//! the new file). Only the list of pack ids of new index files lives on the heap.
//!
//! Table file (all integers little-endian):
//! `"CTBL0002" | n_entries u64 | n_packs u64 | BLAKE3 of everything after the header (32)
//! | fanout: 65537 x u64 | entries: n x 48 bytes (chunk id 32, pack index u32, offset u32,
//! length u32, raw length u31 + kind bit) sorted by chunk id | packs: n_packs x (pack id
//! 32, size u64)`.
//!
//! The cache is local and can be deleted at any time, but it is still read defensively: a
//! file whose sizes, counts or fanout disagree is refused at open (and rebuilt from the
//! repository), every access is bounds-checked, a record naming a pack that does not
//! exist marks the table damaged (the next reload rebuilds it) instead of panicking, and
//! [`IndexTable::verify`] (run by `check`) compares the body with its checksum. A wrong
//! location can at worst make a read fail verification (chunks are checked against their
//! ids); the repository's index files stay the truth.

use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use memmap2::Mmap;

use crate::id::Id;
use crate::index::IndexFile;
use crate::pack::BlobKind;

const TABLE_MAGIC: &[u8; 8] = b"CTBL0002";
const FANOUT: usize = 65536;
const FANOUT_AT: usize = 8 + 8 + 8 + 32;
const TABLE_HEADER: usize = FANOUT_AT + (FANOUT + 1) * 8;
const REC: usize = 48;
const PACK_REC: usize = 40;
const KIND_BIT: u32 = 1 << 31;

/// Where a chunk is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkLocation {
    /// The pack holding it.
    pub pack: Id,
    /// Data or metadata.
    pub kind: BlobKind,
    /// Offset of the sealed blob in the pack.
    pub offset: u32,
    /// Length of the sealed blob.
    pub length: u32,
    /// Length of the plaintext.
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
    /// Set when a lookup met a record that cannot be right; the next reload rebuilds.
    damaged: AtomicBool,
    /// The repository index files merged into this table.
    pub sources: BTreeSet<Id>,
    /// Index files that could not be read when the table was built, with the reason.
    pub unreadable: std::collections::BTreeMap<Id, String>,
    /// The table file, when there is one.
    pub path: Option<PathBuf>,
}

fn le32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn id_of(b: &[u8]) -> Id {
    let mut a = [0u8; 32];
    a.copy_from_slice(&b[..32]);
    Id(a)
}

fn bad(m: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, m.into())
}

impl IndexTable {
    /// A table with nothing in it.
    pub fn empty() -> IndexTable {
        IndexTable {
            map: None,
            n_entries: 0,
            n_packs: 0,
            packs_at: 0,
            damaged: AtomicBool::new(false),
            sources: BTreeSet::new(),
            unreadable: Default::default(),
            path: None,
        }
    }

    /// Number of entries (chunk copies).
    pub fn len(&self) -> usize {
        self.n_entries
    }

    /// True when the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.n_entries == 0
    }

    /// True when a lookup found a record that cannot be right (the table is rebuilt at
    /// the next reload).
    pub fn is_damaged(&self) -> bool {
        self.damaged.load(Ordering::Relaxed)
    }

    fn mark_damaged(&self) {
        self.damaged.store(true, Ordering::Relaxed);
    }

    /// Every pack the table knows, with its size.
    pub fn packs(&self) -> impl Iterator<Item = (Id, u64)> + '_ {
        (0..self.n_packs).filter_map(|i| self.pack_at(i))
    }

    /// Number of packs.
    pub fn pack_count(&self) -> usize {
        self.n_packs
    }

    /// The pack with table index `i`.
    pub fn pack_at(&self, i: usize) -> Option<(Id, u64)> {
        if i >= self.n_packs {
            return None;
        }
        let at = self.packs_at + i * PACK_REC;
        let r = self.map.as_ref()?.get(at..at + PACK_REC)?;
        Some((id_of(r), le64(&r[32..])))
    }

    fn fanout(&self, i: usize) -> usize {
        let at = FANOUT_AT + i * 8;
        self.map
            .as_ref()
            .and_then(|m| m.get(at..at + 8))
            .map_or(0, |b| le64(b) as usize)
    }

    fn record(&self, i: usize) -> Option<&[u8]> {
        if i >= self.n_entries {
            return None;
        }
        let at = TABLE_HEADER + i * REC;
        self.map.as_ref()?.get(at..at + REC)
    }

    fn pack_index_of(rec: &[u8]) -> usize {
        le32(&rec[32..36]) as usize
    }

    fn decode(&self, rec: &[u8]) -> Option<ChunkLocation> {
        let Some((pack, _)) = self.pack_at(Self::pack_index_of(rec)) else {
            self.mark_damaged();
            return None;
        };
        let raw = le32(&rec[44..48]);
        Some(ChunkLocation {
            pack,
            offset: le32(&rec[36..40]),
            length: le32(&rec[40..44]),
            raw_length: raw & !KIND_BIT,
            kind: if raw & KIND_BIT != 0 {
                BlobKind::Meta
            } else {
                BlobKind::Data
            },
        })
    }

    /// Every stored copy of `id` (usually one; more while prune repacks).
    pub fn lookup(&self, id: &Id) -> Vec<ChunkLocation> {
        if self.n_entries == 0 {
            return Vec::new();
        }
        let bucket = u16::from_be_bytes([id.0[0], id.0[1]]) as usize;
        let (mut lo, mut hi) = (self.fanout(bucket), self.fanout(bucket + 1));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.record(mid) {
                Some(r) if r[..32] < id.0[..] => lo = mid + 1,
                Some(_) => hi = mid,
                None => {
                    self.mark_damaged();
                    return Vec::new();
                }
            }
        }
        let mut out = Vec::new();
        let mut i = lo;
        while let Some(r) = self.record(i) {
            if r[..32] != id.0 {
                break;
            }
            out.extend(self.decode(r));
            i += 1;
        }
        out
    }

    /// Iterates over all entries in id order.
    pub fn iter(&self) -> impl Iterator<Item = (Id, ChunkLocation)> + '_ {
        (0..self.n_entries).filter_map(move |i| {
            let r = self.record(i)?;
            Some((id_of(r), self.decode(r)?))
        })
    }

    /// Opens a table file written by [`build_table`], refusing one whose header, counts,
    /// fanout or size disagree (cheap: the body is checked by [`IndexTable::verify`]).
    pub fn open(path: &Path, sources: BTreeSet<Id>) -> std::io::Result<IndexTable> {
        let file = File::open(path)?;
        // SAFETY: table files are written once to a temporary name and renamed into place;
        // nothing writes to them afterwards. (A file truncated by someone else while
        // mapped would fault on access; the cache directory is the user's own.)
        let map = unsafe { Mmap::map(&file)? };
        if map.len() < TABLE_HEADER || &map[..8] != TABLE_MAGIC {
            return Err(bad("not a table of this version"));
        }
        let n_entries = le64(&map[8..]);
        let n_packs = le64(&map[16..]);
        if n_packs > u32::MAX as u64 {
            return Err(bad("too many packs"));
        }
        let expected = n_entries
            .checked_mul(REC as u64)
            .and_then(|e| e.checked_add(n_packs * PACK_REC as u64))
            .and_then(|e| e.checked_add(TABLE_HEADER as u64));
        if expected != Some(map.len() as u64) {
            return Err(bad("table size does not match its counts"));
        }
        let mut prev = 0u64;
        for i in 0..=FANOUT {
            let f = le64(&map[FANOUT_AT + i * 8..]);
            if f < prev || (i == 0 && f != 0) {
                return Err(bad("fanout is not increasing"));
            }
            prev = f;
        }
        if prev != n_entries {
            return Err(bad("fanout does not end at the entry count"));
        }
        let n_entries = n_entries as usize;
        Ok(IndexTable {
            map: Some(map),
            n_entries,
            n_packs: n_packs as usize,
            packs_at: TABLE_HEADER + n_entries * REC,
            damaged: AtomicBool::new(false),
            sources,
            unreadable: Default::default(),
            path: Some(path.to_path_buf()),
        })
    }

    /// Reads the whole table: the body matches its checksum, entries are sorted and in
    /// their fanout buckets, and every entry names an existing pack. `Err` says what is
    /// wrong (the caller discards the table and rebuilds it).
    pub fn verify(&self) -> Result<(), String> {
        let Some(map) = &self.map else {
            return Ok(());
        };
        let body = &map[TABLE_HEADER..];
        if blake3::hash(body).as_bytes()[..] != map[24..56] {
            return Err("the table's checksum does not match".into());
        }
        let mut prev: Option<&[u8]> = None;
        for bucket in 0..FANOUT {
            for i in self.fanout(bucket)..self.fanout(bucket + 1) {
                let r = self.record(i).ok_or("record out of bounds")?;
                if u16::from_be_bytes([r[0], r[1]]) as usize != bucket {
                    return Err(format!("entry {i} is in the wrong bucket"));
                }
                if prev.is_some_and(|p| p[..32] > r[..32]) {
                    return Err(format!("entry {i} is out of order"));
                }
                if Self::pack_index_of(r) >= self.n_packs {
                    return Err(format!("entry {i} names a pack that does not exist"));
                }
                prev = Some(r);
            }
        }
        Ok(())
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
/// Entries naming a pack the table does not have, or out of order (a damaged table), are
/// dropped too, so the merged table is always well formed.
struct TableRun<'a> {
    table: &'a IndexTable,
    pos: usize,
    renumber: &'a [u32],
    last: Option<Id>,
}

impl TableRun<'_> {
    fn new_index(&self, rec: &[u8]) -> u32 {
        self.renumber
            .get(IndexTable::pack_index_of(rec))
            .copied()
            .unwrap_or(u32::MAX)
    }

    fn skip_dropped(&mut self) {
        while let Some(rec) = self.table.record(self.pos) {
            let in_order = self.last.is_none_or(|l| l.0[..] <= rec[..32]);
            if self.new_index(rec) != u32::MAX && in_order {
                break;
            }
            if !in_order {
                self.table.mark_damaged();
            }
            self.pos += 1;
        }
    }
}

impl Run for TableRun<'_> {
    fn peek(&self) -> Option<(Id, Id, u32, ChunkLocationRaw)> {
        let rec = self.table.record(self.pos)?;
        let (pack, _) = self.table.pack_at(IndexTable::pack_index_of(rec))?;
        Some((
            id_of(rec),
            pack,
            self.new_index(rec),
            ChunkLocationRaw {
                offset: le32(&rec[36..40]),
                length: le32(&rec[40..44]),
                raw: le32(&rec[44..48]),
            },
        ))
    }
    fn advance(&mut self) {
        self.last = self.table.record(self.pos).map(id_of);
        self.pos += 1;
        self.skip_dropped();
    }
}

fn file_run(file: &IndexFile, pack_index: &HashMap<Id, u32>) -> VecRun {
    let mut entries = Vec::new();
    for p in &file.packs {
        let Some(&dest) = pack_index.get(&p.id) else {
            continue;
        };
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

/// Writes the body through a hasher, for the header's checksum.
struct Hashing<W: Write> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
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
        for i in 0..base.pack_count() {
            match base.pack_at(i) {
                Some((id, _)) if keep_base_pack(&id) => {
                    renumber.push(n_packs);
                    n_packs += 1;
                }
                _ => renumber.push(u32::MAX),
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
        for (i, r) in renumber.iter().enumerate() {
            if *r != u32::MAX
                && let Some((id, _)) = base.pack_at(i)
                && candidates.contains_key(&id)
            {
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
            last: None,
        };
        r.skip_dropped();
        runs.push(Box::new(r));
    }
    for f in files {
        runs.push(Box::new(file_run(f, &pack_index)));
    }

    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let file = File::create(&tmp)?;
    let mut file_w = BufWriter::with_capacity(1 << 20, file);
    // Header placeholder; rewritten once the counts, checksum and fanout are known.
    file_w.write_all(&vec![0u8; TABLE_HEADER])?;
    let mut w = Hashing {
        inner: file_w,
        hasher: blake3::Hasher::new(),
    };
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
        let Some((_, _, dest, loc)) = runs[i].peek() else {
            continue;
        };
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
        for (i, r) in renumber.iter().enumerate() {
            if *r != u32::MAX
                && let Some((id, size)) = base.pack_at(i)
            {
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
    let checksum = w.hasher.finalize();
    let mut file = w.inner.into_inner().map_err(|e| e.into_error())?;
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(0))?;
    let mut header = Vec::with_capacity(TABLE_HEADER);
    header.extend_from_slice(TABLE_MAGIC);
    header.extend_from_slice(&n.to_le_bytes());
    header.extend_from_slice(&total_packs.to_le_bytes());
    header.extend_from_slice(checksum.as_bytes());
    for f in &fanout {
        header.extend_from_slice(&f.to_le_bytes());
    }
    file.write_all(&header)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::PackRecord;
    use crate::pack::BlobEntry;
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
        t1.verify().unwrap();
        let p2 = dir.path().join("t2");
        build_table(&p2, &[&t1], &|_| true, std::slice::from_ref(&f2)).unwrap();
        let t2 = IndexTable::open(&p2, BTreeSet::new()).unwrap();
        t2.verify().unwrap();
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
        assert!(!t3.is_damaged());
    }

    /// A small table's bytes and the ids it holds.
    fn small_table(dir: &Path, n: usize) -> (Vec<u8>, Vec<Id>) {
        let ids: Vec<Id> = (0..n)
            .map(|i| Id(*blake3::hash(&[i as u8]).as_bytes()))
            .collect();
        let f = IndexFile {
            supersedes: vec![],
            packs: vec![
                PackRecord {
                    id: Id([1; 32]),
                    size: 10_000,
                    blobs: ids[..n / 2].iter().map(|id| entry(*id, 0)).collect(),
                },
                PackRecord {
                    id: Id([2; 32]),
                    size: 10_000,
                    blobs: ids[n / 2..].iter().map(|id| entry(*id, 7)).collect(),
                },
            ],
        };
        let p = dir.join("table");
        build_table(&p, &[], &|_| true, &[f]).unwrap();
        (std::fs::read(&p).unwrap(), ids)
    }

    /// Opens `bytes` as a table and uses it every way the repository does: nothing may
    /// panic or read out of bounds, whatever the bytes.
    fn exercise(dir: &Path, bytes: &[u8], ids: &[Id]) -> bool {
        let p = dir.join("mutated");
        let _ = std::fs::remove_file(&p);
        std::fs::write(&p, bytes).unwrap();
        let Ok(t) = IndexTable::open(&p, BTreeSet::new()) else {
            return false;
        };
        for id in ids {
            let _ = t.lookup(id);
        }
        let _ = t.iter().count();
        let _ = t.packs().count();
        let _ = t.verify();
        let out = dir.join("merged");
        let _ = std::fs::remove_file(&out);
        build_table(&out, &[&t], &|_| true, &[]).unwrap();
        IndexTable::open(&out, BTreeSet::new())
            .unwrap()
            .verify()
            .unwrap();
        true
    }

    proptest! {
        #![proptest_config(crate::limits::proptest_cases(64))]

        #[test]
        fn corrupt_tables_are_refused_or_harmless(
            flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4),
            cut in any::<prop::sample::Index>(),
            huge in any::<u64>(),
            field in 0usize..3,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let (bytes, ids) = small_table(dir.path(), 40);
            prop_assert!(exercise(dir.path(), &bytes, &ids));
            // Bit flips anywhere: refused at open, or usable without panics; and
            // verify() catches every flip in the body.
            let mut flipped = bytes.clone();
            let mut in_body = false;
            for (at, bit) in &flips {
                let i = at.index(flipped.len());
                flipped[i] ^= 1 << bit;
                in_body |= i >= TABLE_HEADER;
            }
            if exercise(dir.path(), &flipped, &ids) && in_body && flipped != bytes {
                let p = dir.path().join("mutated");
                let t = IndexTable::open(&p, BTreeSet::new()).unwrap();
                prop_assert!(t.verify().is_err());
            }
            // Truncated anywhere: refused.
            let c = cut.index(bytes.len());
            prop_assert!(!exercise(dir.path(), &bytes[..c], &ids));
            // A count set huge: refused.
            let mut long = bytes.clone();
            let at = [8, 16, FANOUT_AT + 8 * 65536][field];
            long[at..at + 8].copy_from_slice(&huge.to_le_bytes());
            if long != bytes {
                prop_assert!(!exercise(dir.path(), &long, &ids));
            }
        }
    }
}
