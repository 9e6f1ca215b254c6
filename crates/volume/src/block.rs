//! Block volumes: a device or raw image as fixed-size aligned blocks.
//!
//! The block map (the snapshot's metadata stream) is
//! `"CBMP0001" | volume size (u64) | block size (u32) | block count (u64)` followed by one
//! record per block: `0x00` (all zeros, not stored) or `0x01 | chunk id (32)`
//! (docs/format.md). It is untrusted input: [`BlockMap::decode`] checks the header
//! against the bytes that follow before reserving anything, and refuses block sizes
//! outside [`MIN_BLOCK_SIZE`]..=[`MAX_BLOCK_SIZE`].

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use coffer_repo::{BlobKind, ChunkId, Id, Repository, Snapshot};
use futures::{StreamExt, TryStreamExt};

use crate::{
    BackupSummary, Error, RestoreSummary, Result, SharedProgress, Unit, io_err, is_zero, joined,
};

const MAGIC: &[u8; 8] = b"CBMP0001";
/// Bytes of the block map's header.
const HEADER_LEN: usize = 28;
/// The smallest block size a block map may have (and a repository may be made with).
pub const MIN_BLOCK_SIZE: u32 = 4096;
/// The largest block size a block map may have: a block is read, written and held in
/// memory whole.
pub const MAX_BLOCK_SIZE: u32 = 64 << 20;
/// Blocks processed at once (read, hashed, compressed, sealed).
const IN_FLIGHT: usize = 6;
/// Pack spans read and decoded at once during a restore (each at most 4 MiB).
const RESTORE_SPANS: usize = 3;
/// Batches of block writes running at once during a restore.
const WRITES_IN_FLIGHT: usize = 2;

/// The decoded block map.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockMap {
    /// The volume's size in bytes.
    pub volume_size: u64,
    /// The size of every block but the last (a power of two).
    pub block_size: u32,
    /// Per block, its chunk; None: an all-zero block.
    pub blocks: Vec<Option<ChunkId>>,
}

impl BlockMap {
    /// Encodes the map as the snapshot's metadata stream.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.blocks.len() * 33);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.volume_size.to_le_bytes());
        out.extend_from_slice(&self.block_size.to_le_bytes());
        out.extend_from_slice(&(self.blocks.len() as u64).to_le_bytes());
        for b in &self.blocks {
            match b {
                None => out.push(0),
                Some(id) => {
                    out.push(1);
                    out.extend_from_slice(&id.0);
                }
            }
        }
        out
    }

    /// Decodes and checks a block map: the header's sizes must agree with each other
    /// and with the records that follow, which must fill the rest exactly. Allocates no
    /// more than the records really present need, whatever the header claims.
    pub fn decode(b: &[u8]) -> Result<BlockMap> {
        let bad = |m: String| Error::BadMetadata(format!("block map: {m}"));
        let (header, records) = match b.split_at_checked(HEADER_LEN) {
            Some((h, r)) if h.starts_with(MAGIC) => (h, r),
            _ => {
                return Err(bad(format!(
                    "no header (a block map starts with the {HEADER_LEN}-byte \"CBMP0001\" header)"
                )));
            }
        };
        let field = |at: usize, len: usize| -> u64 {
            let mut le = [0u8; 8];
            le[..len].copy_from_slice(&header[at..at + len]);
            u64::from_le_bytes(le)
        };
        let (volume_size, block_size, n) = (field(8, 8), field(16, 4) as u32, field(20, 8));
        if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size)
        {
            return Err(bad(format!(
                "block size {block_size} is not a power of two from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE}"
            )));
        }
        if n != volume_size.div_ceil(block_size as u64) {
            return Err(bad(format!(
                "{n} blocks do not make a volume of {volume_size} bytes in blocks of {block_size}"
            )));
        }
        // Every record takes at least one byte: a count beyond the bytes present is a lie,
        // found before anything is reserved for it.
        if n > records.len() as u64 {
            return Err(bad(format!(
                "the header claims {n} blocks, only {} bytes of records follow",
                records.len()
            )));
        }
        let mut blocks = Vec::with_capacity(n as usize);
        let mut rest = records;
        for i in 0..n {
            match rest {
                [0, tail @ ..] => {
                    blocks.push(None);
                    rest = tail;
                }
                [1, tail @ ..] if tail.len() >= 32 => {
                    let (id, tail) = tail.split_at(32);
                    let mut raw = [0u8; 32];
                    raw.copy_from_slice(id);
                    blocks.push(Some(Id(raw)));
                    rest = tail;
                }
                [1, ..] | [] => return Err(bad(format!("record of block {i} is truncated"))),
                [other, ..] => {
                    return Err(bad(format!(
                        "record of block {i} has unknown type {other:#04x} (0x00 zero, 0x01 stored)"
                    )));
                }
            }
        }
        if !rest.is_empty() {
            return Err(bad(format!(
                "{} bytes follow the last block's record",
                rest.len()
            )));
        }
        Ok(BlockMap {
            volume_size,
            block_size,
            blocks,
        })
    }

    /// The length of block `i` (the last one may be short).
    pub fn block_len(&self, i: usize) -> usize {
        let start = i as u64 * self.block_size as u64;
        (self.volume_size - start).min(self.block_size as u64) as usize
    }

    /// Reads and decodes the block map of a block snapshot.
    pub async fn load(repo: &Repository, snap: &Snapshot) -> Result<BlockMap> {
        if snap.kind != coffer_repo::SnapshotKind::Block {
            return Err(Error::Invalid(format!(
                "snapshot {} is a {} snapshot, not a block snapshot",
                snap.id.short(),
                snap.kind
            )));
        }
        BlockMap::decode(&repo.read_stream(&snap.root).await?)
    }
}

/// Size of a regular file or block device.
pub fn volume_size(path: &Path, file: &File) -> Result<u64> {
    let meta = file.metadata().map_err(|e| io_err(path, e))?;
    if meta.file_type().is_block_device() {
        use std::io::{Seek, SeekFrom};
        let mut f = file;
        return f.seek(SeekFrom::End(0)).map_err(|e| io_err(path, e));
    }
    if !meta.is_file() {
        return Err(Error::Invalid(format!(
            "{} is neither a regular file nor a block device",
            path.display()
        )));
    }
    Ok(meta.len())
}

/// What and how to back up.
pub struct BlockBackup<'a> {
    /// The block device or image file.
    pub source: &'a Path,
    /// Tags recorded in the snapshot.
    pub tags: BTreeMap<String, String>,
    /// The snapshot unchanged blocks come from.
    pub parent: Option<Snapshot>,
    /// Byte ranges changed since the parent: only blocks touching them are read.
    pub changed_ranges: Option<Vec<std::ops::Range<u64>>>,
    /// Byte ranges that hold data (a SnapshotMetadata service's allocated ranges): blocks
    /// touching none of them are recorded as zero blocks without being read. Ignored when
    /// `changed_ranges` is given.
    pub allocated_ranges: Option<Vec<std::ops::Range<u64>>>,
    /// Read every block even when the parent shows the image file unchanged.
    pub force: bool,
    /// Where progress is reported.
    pub progress: SharedProgress,
}

enum Plan {
    Read,
    Reuse(Option<ChunkId>),
}

/// Which of `n_blocks` blocks of `block_size` bytes the byte `ranges` touch; a range
/// past the volume's end (`size`) is an error (`what` names the ranges in it).
fn touched_blocks(
    ranges: &[std::ops::Range<u64>],
    size: u64,
    block_size: u32,
    n_blocks: usize,
    what: &str,
) -> Result<Vec<bool>> {
    let mut touched = vec![false; n_blocks];
    for r in ranges {
        if r.is_empty() {
            continue;
        }
        if r.end > size {
            return Err(Error::Invalid(format!(
                "{what} range at offset {} with length {} reaches past the volume's end ({size} bytes)",
                r.start,
                r.end - r.start
            )));
        }
        let first = (r.start / block_size as u64) as usize;
        let last = ((r.end - 1) / block_size as u64) as usize;
        for t in &mut touched[first..=last] {
            *t = true;
        }
    }
    Ok(touched)
}

/// Backs up the block device or image `b.source` as a new block snapshot.
pub async fn backup(repo: &Repository, b: BlockBackup<'_>) -> Result<BackupSummary> {
    let started = Instant::now();
    let file = File::open(b.source).map_err(|e| io_err(b.source, e))?;
    let size = volume_size(b.source, &file)?;
    let block_size = repo.config().block_size;
    if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
        return Err(Error::Invalid(format!(
            "the repository's block size {block_size} is outside {MIN_BLOCK_SIZE}..={MAX_BLOCK_SIZE}, which block maps allow; back up block volumes to a repository made with a block size in that range"
        )));
    }
    let n_blocks = size.div_ceil(block_size as u64) as usize;
    b.progress.stage("reading", Unit::Bytes, Some(size));

    let parent_map = match &b.parent {
        Some(p) => Some(BlockMap::load(repo, p).await?),
        None => None,
    };
    let mut plans: Vec<Plan> = (0..n_blocks).map(|_| Plan::Read).collect();
    // An image file whose size, times and inode match the parent's is not read again:
    // every block comes from the parent (restic skips unchanged files the same way).
    let stat = file.metadata().ok().and_then(|m| crate::SourceStat::of(&m));
    let parent_stat: Option<crate::SourceStat> = b
        .parent
        .as_ref()
        .and_then(|p| p.summary.get("source_stat"))
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    if let (false, None, Some(pm), Some(st)) = (b.force, &b.changed_ranges, &parent_map, stat)
        && parent_stat == Some(st)
        && pm.volume_size == size
        && pm.block_size == block_size
    {
        for (plan, block) in plans.iter_mut().zip(&pm.blocks) {
            *plan = Plan::Reuse(*block);
        }
    }
    if let Some(ranges) = &b.changed_ranges {
        let Some(pm) = &parent_map else {
            return Err(Error::Invalid(
                "--changed-ranges needs a parent snapshot (--parent ID or auto) to take unchanged blocks from".into(),
            ));
        };
        if pm.volume_size != size || pm.block_size != block_size {
            return Err(Error::Invalid(format!(
                "parent snapshot has volume size {} and block size {}, this volume {} and {}: changed ranges cannot apply; back up without --changed-ranges",
                pm.volume_size, pm.block_size, size, block_size
            )));
        }
        let touched = touched_blocks(ranges, size, block_size, n_blocks, "changed")?;
        for (i, t) in touched.iter().enumerate() {
            if !t {
                plans[i] = Plan::Reuse(pm.blocks[i]);
            }
        }
    } else if let Some(ranges) = &b.allocated_ranges {
        let touched = touched_blocks(ranges, size, block_size, n_blocks, "allocated")?;
        for (i, t) in touched.iter().enumerate() {
            if !t {
                plans[i] = Plan::Reuse(None);
            }
        }
    }

    let writer = repo.writer().await?;
    let file = std::sync::Arc::new(file);
    let mut bytes_read = 0u64;
    let mut zero_blocks = 0u64;
    let source = b.source.to_path_buf();
    let results: Vec<(Option<ChunkId>, u64)> = futures::stream::iter(plans.into_iter().enumerate())
        .map(|(i, plan)| {
            let writer = writer.clone();
            let file = file.clone();
            let source = source.clone();
            let progress = b.progress.clone();
            let len = ((size - i as u64 * block_size as u64).min(block_size as u64)) as usize;
            async move {
                // The parent's block, when it is a zero block or its chunk is still there.
                let reused = match plan {
                    Plan::Reuse(None) => Some(None),
                    Plan::Reuse(Some(id)) if writer.reuse(&id) => Some(Some(id)),
                    Plan::Reuse(Some(_)) | Plan::Read => None,
                };
                if let Some(id) = reused {
                    progress.advance(len as u64);
                    return Ok::<_, Error>((id, 0));
                }
                let offset = i as u64 * block_size as u64;
                let read = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; len];
                    file.read_exact_at(&mut buf, offset).map(|_| buf)
                })
                .await;
                let data = joined("reading a block", read)?.map_err(|e| io_err(&source, e))?;
                progress.advance(len as u64);
                if is_zero(&data) {
                    return Ok((None, len as u64));
                }
                let added = writer.add(BlobKind::Data, Bytes::from(data)).await?;
                Ok((Some(added.id), len as u64))
            }
        })
        .buffered(IN_FLIGHT)
        .try_collect()
        .await?;
    let mut blocks = Vec::with_capacity(n_blocks);
    for (id, read) in results {
        bytes_read += read;
        if id.is_none() {
            zero_blocks += 1;
        }
        blocks.push(id);
    }
    let map = BlockMap {
        volume_size: size,
        block_size,
        blocks,
    };
    let root = writer.add_stream(BlobKind::Meta, &map.encode()).await?;
    let summary = BackupSummary {
        kind: coffer_repo::SnapshotKind::Block,
        source: b.source.display().to_string(),
        bytes_total: size,
        bytes_read,
        blocks_zero: Some(zero_blocks),
        source_stat: stat,
        ..Default::default()
    };
    crate::commit_backup(writer, summary, b.tags, b.parent.as_ref(), root, started).await
}

/// What and how to restore.
pub struct BlockRestore<'a> {
    /// The image file (created or replaced) or block device (at least as large as the
    /// volume) to write.
    pub target: &'a Path,
    /// Write only the blocks that differ from the existing target.
    pub delta: bool,
    /// Where progress is reported.
    pub progress: SharedProgress,
}

/// Restores block snapshot `snap` into `r.target`.
pub async fn restore(
    repo: &Repository,
    snap: &Snapshot,
    r: BlockRestore<'_>,
) -> Result<RestoreSummary> {
    let started = Instant::now();
    let map = BlockMap::load(repo, snap).await?;
    let target = r.target.to_path_buf();
    let existing = std::fs::metadata(&target).ok();
    let is_device = existing
        .as_ref()
        .is_some_and(|m| m.file_type().is_block_device());
    if r.delta && existing.is_none() {
        return Err(Error::Invalid(format!(
            "--delta needs an existing target; {} does not exist (restore without --delta to create it)",
            target.display()
        )));
    }
    let file = if is_device || r.delta {
        OpenOptions::new().read(true).write(true).open(&target)
    } else {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&target)
    }
    .map_err(|e| io_err(&target, e))?;
    if is_device {
        let size = volume_size(&target, &file)?;
        if size < map.volume_size {
            return Err(Error::Invalid(format!(
                "target device {} has {size} bytes, the snapshot needs {}",
                target.display(),
                map.volume_size
            )));
        }
    } else {
        file.set_len(map.volume_size)
            .map_err(|e| io_err(&target, e))?;
    }
    r.progress
        .stage("writing", Unit::Bytes, Some(map.volume_size));
    let file = std::sync::Arc::new(file);
    // Fresh files are sparse already: only non-zero blocks are written. Devices and delta
    // targets compare or overwrite every block.
    let must_visit = is_device || r.delta;
    // 1. The blocks to write: all stored ones, every block of a device, or (--delta)
    //    those whose content differs from the target's.
    let candidates: Vec<usize> = (0..map.blocks.len())
        .filter(|&i| must_visit || map.blocks[i].is_some())
        .collect();
    let skipped: u64 = (0..map.blocks.len())
        .filter(|&i| !must_visit && map.blocks[i].is_none())
        .map(|i| map.block_len(i) as u64)
        .sum();
    r.progress.advance(skipped);
    let todo: Vec<usize> = if r.delta {
        let differs: Vec<Option<usize>> = futures::stream::iter(candidates)
            .map(|i| {
                let (file, target, repo) = (file.clone(), target.clone(), repo.clone());
                let (len, offset, id) = (
                    map.block_len(i),
                    i as u64 * map.block_size as u64,
                    map.blocks[i],
                );
                let progress = r.progress.clone();
                async move {
                    let read = tokio::task::spawn_blocking(move || {
                        let mut buf = vec![0u8; len];
                        file.read_exact_at(&mut buf, offset).map(|_| buf)
                    })
                    .await;
                    let current =
                        joined("reading a target block", read)?.map_err(|e| io_err(&target, e))?;
                    let same = match id {
                        None => is_zero(&current),
                        Some(id) => repo.chunk_id(&current) == id,
                    };
                    if same {
                        progress.advance(len as u64);
                    }
                    Ok::<_, Error>((!same).then_some(i))
                }
            })
            .buffered(IN_FLIGHT)
            .try_collect()
            .await?;
        differs.into_iter().flatten().collect()
    } else {
        candidates
    };
    let mut bytes_written = 0u64;
    let mut blocks_changed = 0u64;
    // 2. Zero blocks: holes in files, zeros on devices.
    for &i in todo.iter().filter(|&&i| map.blocks[i].is_none()) {
        let (len, offset) = (map.block_len(i), i as u64 * map.block_size as u64);
        if is_device || !punch_hole(&file, offset, len as u64) {
            file.write_all_at(&vec![0u8; len], offset)
                .map_err(|e| io_err(&target, e))?;
            bytes_written += len as u64;
        }
        blocks_changed += 1;
        r.progress.advance(len as u64);
    }
    // 3. Data blocks: chunks fetched pack by pack in large reads, each written to every
    //    block that holds it (a chunk can repeat within a volume).
    let mut offsets: std::collections::HashMap<ChunkId, Vec<usize>> =
        std::collections::HashMap::new();
    let mut order = Vec::new();
    for &i in &todo {
        if let Some(id) = map.blocks[i] {
            let e = offsets.entry(id).or_default();
            if e.is_empty() {
                order.push(id);
            }
            e.push(i);
        }
    }
    // Writes run beside the reads and decryption of the next spans (a couple at once),
    // rather than holding them up.
    let mut writes_running = futures::stream::FuturesUnordered::new();
    let mut chunks = std::pin::pin!(repo.read_chunks_by_pack(&order, RESTORE_SPANS)?);
    while let Some(batch) = chunks.next().await {
        let batch = batch?;
        let mut writes = Vec::new();
        for (id, data) in batch {
            for &i in offsets.get(&id).map(Vec::as_slice).unwrap_or_default() {
                let len = map.block_len(i);
                if data.len() != len {
                    return Err(Error::BadMetadata(format!(
                        "block {i} has {} bytes, expected {len}",
                        data.len()
                    )));
                }
                writes.push((i as u64 * map.block_size as u64, data.clone()));
            }
        }
        let f = file.clone();
        writes_running.push(tokio::task::spawn_blocking(move || {
            writes.iter().try_for_each(|(offset, data)| {
                f.write_all_at(data, *offset)?;
                start_writeback(&f, *offset, data.len() as u64);
                Ok::<_, std::io::Error>(())
            })?;
            Ok::<_, std::io::Error>((
                writes.iter().map(|(_, d)| d.len() as u64).sum::<u64>(),
                writes.len() as u64,
            ))
        }));
        while writes_running.len() > WRITES_IN_FLIGHT {
            let Some(done) = writes_running.next().await else {
                break;
            };
            let (n, count) = joined("writing blocks", done)?.map_err(|e| io_err(&target, e))?;
            bytes_written += n;
            blocks_changed += count;
            r.progress.advance(n);
        }
    }
    while let Some(done) = writes_running.next().await {
        let (n, count) = joined("writing blocks", done)?.map_err(|e| io_err(&target, e))?;
        bytes_written += n;
        blocks_changed += count;
        r.progress.advance(n);
    }
    file.sync_all().map_err(|e| io_err(&target, e))?;
    Ok(RestoreSummary {
        snapshot_id: snap.id.to_hex(),
        target: target.display().to_string(),
        bytes_total: map.volume_size,
        bytes_written,
        blocks_changed: Some(blocks_changed),
        files: None,
        duration_s: started.elapsed().as_secs_f64(),
        refused: Vec::new(),
    })
}

/// Starts writing a range back to the device without waiting, so that the final sync
/// finds little left to do and disk writes overlap reading and decrypting.
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall on an open descriptor; failure only loses the head start.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Deallocates a range of a regular file (it then reads as zeros); false if unsupported.
fn punch_hole(file: &File, offset: u64, len: u64) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall on an open descriptor with in-range arguments.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    rc == 0
}

/// Where a block volume is read from, canonicalised for `source`.
pub fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_map_round_trip() {
        let m = BlockMap {
            volume_size: 10_000,
            block_size: 4096,
            blocks: vec![None, Some(Id::random()), None],
        };
        assert_eq!(BlockMap::decode(&m.encode()).unwrap(), m);
        assert!(BlockMap::decode(&m.encode()[..40]).is_err());
    }
}
