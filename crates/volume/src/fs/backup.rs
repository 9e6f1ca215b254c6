//! File-tree backup: walks a directory, reads the files that changed since the parent
//! snapshot as content-defined chunks of their data extents, and stores the tree.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use coffer_repo::{BlobKind, Id, Repository, Snapshot};
use futures::{StreamExt, TryStreamExt};

use super::tree::{Entry, FileChunk, Kind, encode_tree, load_tree, walk_order};
use super::validate::Validation;
use crate::{BackupSummary, Error, Result, SharedProgress, Unit, io_err, joined};

/// Large files or batches of small files read at once.
const FILES_IN_FLIGHT: usize = 8;
/// Files up to this size are read, chunked, hashed and sealed in one blocking task: one
/// hand-off per file rather than several per chunk, which is what a tree of many small
/// files costs most.
const SMALL_FILE: u64 = 1 << 20;
/// A batch of small files ends at this many bytes or files.
const BATCH_BYTES: u64 = 2 << 20;
const BATCH_FILES: usize = 128;

fn ns(sec: i64, nsec: i64) -> i64 {
    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
}

fn rel_bytes(root: &Path, p: &Path) -> Vec<u8> {
    p.strip_prefix(root)
        .unwrap_or(p)
        .as_os_str()
        .as_bytes()
        .to_vec()
}

fn read_xattrs(path: &Path) -> Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)> {
    let mut out = Vec::new();
    if let Ok(names) = xattr::list(path) {
        for name in names {
            if let Ok(Some(v)) = xattr::get(path, &name) {
                out.push((
                    serde_bytes::ByteBuf::from(name.as_bytes().to_vec()),
                    serde_bytes::ByteBuf::from(v),
                ));
            }
        }
    }
    out.sort();
    out
}

/// Data extents of a file (offset, length), from SEEK_DATA/SEEK_HOLE. A file with as
/// many bytes allocated as its size (`allocated`, from st_blocks) has no holes: one
/// extent, without asking.
fn data_extents(file: &mut File, size: u64, allocated: u64) -> std::io::Result<Vec<(u64, u64)>> {
    use std::os::fd::AsRawFd;
    if allocated >= size {
        return Ok(vec![(0, size)]);
    }
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut pos: i64 = 0;
    while (pos as u64) < size {
        // SAFETY: lseek on an open descriptor.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // no data after pos
            }
            if e.raw_os_error() == Some(libc::EINVAL) {
                return Ok(vec![(0, size)]); // file system without SEEK_DATA
            }
            return Err(e);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let end = if hole < 0 {
            size as i64
        } else {
            hole.min(size as i64)
        };
        if end > data {
            out.push((data as u64, (end - data) as u64));
        }
        pos = end;
    }
    file.seek(SeekFrom::Start(0))?;
    Ok(out)
}

/// What and how to back up.
pub struct FsBackup<'a> {
    /// The directory to back up.
    pub source: &'a Path,
    /// Tags recorded in the snapshot.
    pub tags: BTreeMap<String, String>,
    /// The snapshot whose unchanged files need not be read again.
    pub parent: Option<Snapshot>,
    /// Read every file even when the parent shows it unchanged.
    pub force: bool,
    /// Where progress is reported.
    pub progress: SharedProgress,
}

/// Backs up the directory `b.source` as a new file-system snapshot.
pub async fn backup(repo: &Repository, b: FsBackup<'_>) -> Result<BackupSummary> {
    let started = Instant::now();
    let root = b.source.to_path_buf();
    let meta = std::fs::symlink_metadata(&root).map_err(|e| io_err(&root, e))?;
    if !meta.is_dir() {
        return Err(Error::Invalid(format!(
            "{} is not a directory",
            root.display()
        )));
    }
    // The parent's tree, in the same walk order as this one: matched by a merge, not a
    // map (a map of a large tree costs as much memory again as the tree).
    let mut parent_entries: Vec<Entry> = match &b.parent {
        Some(p) if !b.force => load_tree(repo, p).await?,
        _ => Vec::new(),
    };
    // Only sound entries of the parent lend their chunks (its tree is untrusted input
    // like any other).
    let parent_valid = Validation::of(&parent_entries);
    let mut parent_at = 0usize;

    // Walk: entries in order, without file contents yet.
    let mut entries: Vec<Entry> = Vec::new();
    // Bytes allocated to each entry (st_blocks): a file with no fewer than its size has
    // no holes to look for.
    let mut allocated: Vec<u64> = Vec::new();
    let mut first_link: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let mut total = 0u64;
    for item in walkdir::WalkDir::new(&root)
        .follow_links(false)
        .sort_by_file_name()
    {
        let item = item.map_err(|e| {
            let p = e
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            Error::Io {
                path: p,
                source: e
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("walk failed")),
            }
        })?;
        let path = item.path();
        let m = item.metadata().map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: e
                .into_io_error()
                .unwrap_or_else(|| std::io::Error::other("stat failed")),
        })?;
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        let mut kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_char_device() {
            Kind::CharDev
        } else if ft.is_block_device() {
            Kind::BlockDev
        } else if ft.is_fifo() {
            Kind::Fifo
        } else {
            Kind::Socket
        };
        let rel = rel_bytes(&root, path);
        let mut target = Vec::new();
        if kind == Kind::Symlink {
            target = std::fs::read_link(path)
                .map_err(|e| io_err(path, e))?
                .as_os_str()
                .as_bytes()
                .to_vec();
        } else if kind != Kind::Dir && m.nlink() > 1 {
            match first_link.get(&(m.dev(), m.ino())) {
                Some(first) => {
                    kind = Kind::Hardlink;
                    target = first.clone();
                }
                None => {
                    first_link.insert((m.dev(), m.ino()), rel.clone());
                }
            }
        }
        if kind == Kind::File {
            total += m.len();
        }
        allocated.push(m.blocks() * 512);
        entries.push(Entry {
            path: rel,
            kind,
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            atime_ns: ns(m.atime(), m.atime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
            ino: m.ino(),
            size: if kind == Kind::File { m.len() } else { 0 },
            rdev: m.rdev(),
            target,
            xattrs: read_xattrs(path),
            chunks: Vec::new(),
        });
    }
    b.progress.stage("reading", Unit::Bytes, Some(total));

    let writer = repo.writer().await?;
    let chunker = repo.config().chunker;
    let mut bytes_read = 0u64;
    let mut unchanged = 0u64;
    // Unchanged files (same size, times and inode as in the parent, chunks still in the
    // repository) keep the parent's chunks; the others become read jobs: small files in
    // batches, each batch one blocking task, and large files alone.
    let mut jobs: Vec<Vec<FileJob>> = Vec::new();
    let mut batch: Vec<FileJob> = Vec::new();
    let mut batch_bytes = 0u64;
    for (i, e) in entries.iter_mut().enumerate() {
        if e.kind != Kind::File || e.size == 0 {
            continue;
        }
        while parent_at < parent_entries.len()
            && walk_order(&parent_entries[parent_at].path, &e.path).is_lt()
        {
            parent_at += 1;
        }
        if parent_at < parent_entries.len()
            && parent_valid.is_accepted(parent_at)
            && let Some(p) = parent_entries.get_mut(parent_at)
            && p.path == e.path
            && p.kind == Kind::File
            && p.size == e.size
            && p.mtime_ns == e.mtime_ns
            && p.ctime_ns == e.ctime_ns
            && p.ino == e.ino
            && p.chunks.iter().all(|c| writer.reuse(&Id(c.id)))
        {
            b.progress.advance(e.size);
            e.chunks = std::mem::take(&mut p.chunks);
            unchanged += 1;
            continue;
        }
        let job = FileJob {
            index: i,
            path: root.join(OsStr::from_bytes(&e.path)),
            size: e.size,
            allocated: allocated[i],
        };
        if e.size > SMALL_FILE {
            jobs.push(vec![job]);
            continue;
        }
        batch_bytes += e.size;
        batch.push(job);
        if batch_bytes >= BATCH_BYTES || batch.len() >= BATCH_FILES {
            jobs.push(std::mem::take(&mut batch));
            batch_bytes = 0;
        }
    }
    if !batch.is_empty() {
        jobs.push(batch);
    }
    drop(parent_entries);
    let results: Vec<Vec<(usize, Vec<FileChunk>, u64)>> = futures::stream::iter(jobs)
        .map(|job| {
            let writer = writer.clone();
            let progress = b.progress.clone();
            async move {
                match job.as_slice() {
                    [one] if one.size > SMALL_FILE => {
                        let (chunks, read) = backup_file(&writer, one, chunker, &progress).await?;
                        Ok(vec![(one.index, chunks, read)])
                    }
                    _ => backup_small_files(&writer, job, chunker, &progress).await,
                }
            }
        })
        .buffer_unordered(FILES_IN_FLIGHT)
        .try_collect()
        .await?;
    for (i, chunks, read) in results.into_iter().flatten() {
        entries[i].chunks = chunks;
        bytes_read += read;
    }
    let n_files = entries.iter().filter(|e| e.kind == Kind::File).count() as u64;
    let root_ids = writer
        .add_stream(BlobKind::Meta, &encode_tree(&entries))
        .await?;
    let summary = BackupSummary {
        kind: coffer_repo::SnapshotKind::Fs,
        source: root.display().to_string(),
        bytes_total: total,
        bytes_read,
        files: Some(n_files),
        files_unchanged: Some(unchanged),
        ..Default::default()
    };
    crate::commit_backup(
        writer,
        summary,
        b.tags,
        b.parent.as_ref(),
        root_ids,
        started,
    )
    .await
}

/// A regular file to read, as the walk saw it.
struct FileJob {
    /// Its entry's position in the tree.
    index: usize,
    path: PathBuf,
    size: u64,
    /// st_blocks * 512.
    allocated: u64,
}

/// Reads, chunks, hashes and seals a batch of small files in one blocking task, then
/// stores their chunks. Returns (entry index, chunks, bytes read) per file.
async fn backup_small_files(
    writer: &coffer_repo::Writer,
    jobs: Vec<FileJob>,
    p: coffer_repo::ChunkerParams,
    progress: &SharedProgress,
) -> Result<Vec<(usize, Vec<FileChunk>, u64)>> {
    let w = writer.clone();
    let sealed = tokio::task::spawn_blocking(move || {
        jobs.into_iter()
            .map(|job| {
                let mut out = Vec::new();
                let mut read = || -> std::io::Result<()> {
                    let mut file = File::open(&job.path)?;
                    for (start, len) in data_extents(&mut file, job.size, job.allocated)? {
                        chunk_extent(&file, start, len, p, &mut |offset, data| {
                            out.push((offset, w.seal(BlobKind::Data, &data)));
                            true
                        })?;
                    }
                    Ok(())
                };
                read().map_err(|e| io_err(&job.path, e))?;
                Ok((job.index, out))
            })
            .collect::<Result<Vec<_>>>()
    })
    .await;
    let sealed = joined("reading a batch of small files", sealed)??;
    let mut files = Vec::with_capacity(sealed.len());
    for (index, file) in sealed {
        let mut chunks = Vec::with_capacity(file.len());
        let mut read = 0u64;
        for (offset, chunk) in file {
            let len = chunk.raw_len();
            read += len as u64;
            progress.advance(len as u64);
            let added = writer.store(chunk).await?;
            chunks.push(FileChunk {
                offset,
                len,
                id: added.id.0,
            });
        }
        files.push((index, chunks, read));
    }
    Ok(files)
}

/// Reads one file's data extents in a blocking thread, chunks them with FastCDC and adds
/// the chunks as they come (bounded channel: memory stays a few chunks per file), each
/// sealed on the blocking pool so that one large file uses every core.
async fn backup_file(
    writer: &coffer_repo::Writer,
    f: &FileJob,
    p: coffer_repo::ChunkerParams,
    progress: &SharedProgress,
) -> Result<(Vec<FileChunk>, u64)> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<(u64, Vec<u8>)>>(2);
    let (path_buf, size, allocated) = (f.path.to_path_buf(), f.size, f.allocated);
    let reader = tokio::task::spawn_blocking(move || {
        let run = || -> std::io::Result<()> {
            let mut file = File::open(&path_buf)?;
            for (start, len) in data_extents(&mut file, size, allocated)? {
                if !chunk_extent(&file, start, len, p, &mut |offset, data| {
                    tx.blocking_send(Ok((offset, data))).is_ok()
                })? {
                    return Ok(());
                }
            }
            Ok(())
        };
        if let Err(e) = run() {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let mut chunks = Vec::new();
    let mut read = 0u64;
    while let Some(item) = rx.recv().await {
        let (offset, data) = item.map_err(|e| io_err(&f.path, e))?;
        let len = data.len() as u32;
        read += len as u64;
        progress.advance(len as u64);
        let added = writer.add(BlobKind::Data, Bytes::from(data)).await?;
        chunks.push(FileChunk {
            offset,
            len,
            id: added.id.0,
        });
    }
    joined("reading a file", reader.await)?;
    Ok((chunks, read))
}

/// Bytes read from a file at a time while chunking a large extent.
const READ_WINDOW: usize = 16 * 1024 * 1024;

/// Reads one data extent and cuts it into FastCDC chunks, calling `emit(offset, data)`
/// for each; small extents are read exactly (no fixed-size buffer per file). Returns
/// false if `emit` asked to stop. Boundaries equal a streaming chunker's: a window's last
/// cut is only final at the extent's end, otherwise its bytes carry into the next window.
fn chunk_extent(
    file: &File,
    start: u64,
    len: u64,
    p: coffer_repo::ChunkerParams,
    emit: &mut dyn FnMut(u64, Vec<u8>) -> bool,
) -> std::io::Result<bool> {
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_start = start;
    let mut next_read = start;
    let end = start + len;
    loop {
        let want = (READ_WINDOW.saturating_sub(buf.len()) as u64).min(end - next_read) as usize;
        if want > 0 {
            let old = buf.len();
            buf.resize(old + want, 0);
            file.read_exact_at(&mut buf[old..], next_read)?;
            next_read += want as u64;
        }
        let at_end = next_read == end;
        let cuts: Vec<(usize, usize)> = fastcdc::v2020::FastCDC::new(&buf, p.min, p.avg, p.max)
            .map(|c| (c.offset, c.length))
            .collect();
        let emit_n = if at_end {
            cuts.len()
        } else {
            cuts.len().saturating_sub(1)
        };
        let mut consumed = 0;
        for &(off, l) in &cuts[..emit_n] {
            if !emit(buf_start + off as u64, buf[off..off + l].to_vec()) {
                return Ok(false);
            }
            consumed = off + l;
        }
        if at_end {
            return Ok(true);
        }
        buf.drain(..consumed);
        buf_start += consumed as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_order_is_the_order_of_the_walk() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["a", "a/b", "a-c", "a.d", "ab", "a/b/c", "b", "a-c/x"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("a/b-file"), b"").unwrap();
        let walked: Vec<Vec<u8>> = walkdir::WalkDir::new(dir.path())
            .sort_by_file_name()
            .into_iter()
            .map(|e| rel_bytes(dir.path(), e.unwrap().path()))
            .collect();
        let mut sorted = walked.clone();
        sorted.sort_by(|a, b| walk_order(a, b));
        assert_eq!(walked, sorted);
        assert!(walk_order(b"a/b", b"a-c").is_lt());
    }

    #[test]
    fn windowed_chunking_equals_streaming_chunking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut data = vec![0u8; 40 * 1024 * 1024 + 12345];
        let mut x: u64 = 88172645463325252;
        for b in data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = (x >> 32) as u8;
        }
        std::fs::write(&path, &data).unwrap();
        let p = coffer_repo::ChunkerParams::default();
        let file = File::open(&path).unwrap();
        let mut got = Vec::new();
        chunk_extent(&file, 0, data.len() as u64, p, &mut |off, d| {
            got.push((off, d.len()));
            true
        })
        .unwrap();
        let want: Vec<(u64, usize)> =
            fastcdc::v2020::StreamCDC::new(&data[..], p.min, p.avg, p.max)
                .map(|c| {
                    let c = c.unwrap();
                    (c.offset, c.length)
                })
                .collect();
        assert_eq!(got, want);
        // An extent in the middle of the file gets absolute offsets.
        let mut mid = Vec::new();
        chunk_extent(&file, 1000, 5000, p, &mut |off, d| {
            mid.push((off, d));
            true
        })
        .unwrap();
        assert_eq!(mid.len(), 1);
        assert_eq!(mid[0].0, 1000);
        assert_eq!(mid[0].1, &data[1000..6000]);
    }
}
