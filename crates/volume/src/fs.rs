//! File-system trees: every entry with its metadata, file contents as content-defined
//! chunks of their data extents (holes are skipped, so sparse files stay sparse).
//!
//! The file tree (the snapshot's metadata stream) is a MessagePack array of [`Entry`] in
//! depth-first order with each directory's children sorted by name; field names and
//! meanings are documented on the struct and in docs/format.md.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};

use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use coffer_repo::{BlobKind, Id, Repository, Snapshot};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::{BackupSummary, Error, RestoreSummary, Result, SharedProgress, Unit, io_err};

/// Large files or batches of small files read at once.
const FILES_IN_FLIGHT: usize = 8;
/// Files up to this size are read, chunked, hashed and sealed in one blocking task: one
/// hand-off per file rather than several per chunk, which is what a tree of many small
/// files costs most.
const SMALL_FILE: u64 = 1 << 20;
/// A batch of small files ends at this many bytes or files.
const BATCH_BYTES: u64 = 2 << 20;
const BATCH_FILES: usize = 128;
/// Pack spans read and decoded at once during a restore (each at most 4 MiB).
const RESTORE_SPANS: usize = 2;
/// Files kept open while restoring contents.
const OPEN_FILES: usize = 64;

/// Restore writes run in this many independent lanes, files assigned to lanes by their
/// directory (creating files in one directory serialises in the kernel anyway), so that
/// file creation, the bulk of a small-file restore's cost, uses every core.
const WRITE_LANES: usize = 4;
/// Batches of writes queued or running at once, over all lanes.
const WRITES_IN_FLIGHT: usize = 3;
/// A restore starts flushing the target's file system in the background after every
/// this many bytes written.
const FLUSH_EVERY: u64 = 256 << 20;

/// One lane of a restore's file writes: each of its files is created on its first write,
/// kept in a small cache of open descriptors (least recently used evicted), and finished
/// (size, owner, mode, xattrs, times) through its descriptor when its last chunk is
/// written, so a file costs one open and no path lookups beyond it.
struct FileWriter {
    target: std::sync::Arc<PathBuf>,
    entries: std::sync::Arc<Vec<Entry>>,
    /// Per entry: chunk writes still to come, with `CREATED` set once the file exists.
    /// Only the entry's own lane touches it (under that lane's lock).
    pending: std::sync::Arc<Vec<std::sync::atomic::AtomicU32>>,
    open: Vec<(usize, File)>,
}

const CREATED: u32 = 1 << 31;

impl FileWriter {
    fn write(&mut self, entry: usize, offset: u64, data: &[u8]) -> Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        let e = &self.entries[entry];
        let path = || self.target.join(OsStr::from_bytes(&e.path));
        let pending = &self.pending[entry];
        let file = match self.open.iter().position(|(i, _)| *i == entry) {
            Some(pos) => {
                let hit = self.open.remove(pos);
                self.open.push(hit);
                &self.open.last().expect("just pushed").1
            }
            None => {
                if self.open.len() >= OPEN_FILES {
                    self.open.remove(0);
                }
                let first = pending.load(Relaxed) & CREATED == 0;
                let file = OpenOptions::new()
                    .write(true)
                    .create(first)
                    .truncate(first)
                    .mode(creation_mode(e))
                    .open(path())
                    .map_err(|err| io_err(&path(), err))?;
                pending.fetch_or(CREATED, Relaxed);
                self.open.push((entry, file));
                &self.open.last().expect("just pushed").1
            }
        };
        file.write_all_at(data, offset)
            .map_err(|err| io_err(&path(), err))?;
        if pending.fetch_sub(1, Relaxed) & !CREATED == 1 {
            let pos = self
                .open
                .iter()
                .position(|(i, _)| *i == entry)
                .expect("open");
            let (_, file) = self.open.remove(pos);
            finish_file(&file, e).map_err(|err| io_err(&path(), err))?;
        }
        Ok(())
    }
}

/// Gives a written file (truncated when first opened) its size (a hole at its end has no
/// chunk that would extend it),
/// owner, xattrs, mode and times, through its descriptor.
fn finish_file(file: &File, e: &Entry) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let written_to = e.chunks.iter().map(|c| c.offset + c.len as u64).max();
    if written_to.unwrap_or(0) < e.size {
        file.set_len(e.size)?;
    }
    let fd = file.as_raw_fd();
    // Owner and mode are usually right already (the file was created with its mode, by
    // its owner); each change would dirty the inode in the journal once more, so only
    // what differs is changed. A chown clears set-id bits, so the mode follows it.
    let created = file.metadata()?;
    let chowned = created.uid() != e.uid || created.gid() != e.gid;
    // SAFETY: syscalls on an open descriptor.
    if chowned && unsafe { libc::fchown(fd, e.uid, e.gid) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    for (name, value) in &e.xattrs {
        xattr::FileExt::set_xattr(file, OsStr::from_bytes(name), value)?;
    }
    let mode = e.mode & 0o7777;
    // SAFETY: as above.
    if (chowned || created.mode() & 0o7777 != mode) && unsafe { libc::fchmod(fd, mode) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let times = [timespec(e.atime_ns), timespec(e.mtime_ns)];
    // SAFETY: as above; times has two elements.
    if unsafe { libc::futimens(fd, times.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The permission bits a restored file is created with: its own, so that `finish_file`
/// rarely needs a chmod, but writable by its owner, so that a read-only file closed
/// between two of its chunks can be opened again.
fn creation_mode(e: &Entry) -> u32 {
    (e.mode & 0o777) | 0o200
}

fn timespec(ns: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000),
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// A further name of a file listed earlier (`target` is that path).
    Hardlink,
    CharDev,
    BlockDev,
    Fifo,
    Socket,
}

/// One chunk of a file: `len` bytes at `offset` are the chunk `id`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileChunk {
    pub offset: u64,
    pub len: u32,
    #[serde(with = "serde_bytes")]
    pub id: [u8; 32],
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the backed-up root, as raw bytes ("" is the root itself).
    #[serde(with = "serde_bytes")]
    pub path: Vec<u8>,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub atime_ns: i64,
    /// For change detection only (not restored).
    pub ctime_ns: i64,
    pub ino: u64,
    pub size: u64,
    pub rdev: u64,
    /// Symlink target, or the earlier path of a hard link.
    #[serde(with = "serde_bytes", default)]
    pub target: Vec<u8>,
    /// Extended attributes (name, value), all namespaces readable.
    pub xattrs: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)>,
    /// Data extents' chunks in offset order; holes are gaps.
    pub chunks: Vec<FileChunk>,
}

pub fn encode_tree(entries: &[Entry]) -> Vec<u8> {
    rmp_serde::to_vec(entries).expect("tree encodes")
}

pub fn decode_tree(b: &[u8]) -> Result<Vec<Entry>> {
    rmp_serde::from_slice(b).map_err(|e| Error::BadMetadata(format!("file tree: {e}")))
}

pub async fn load_tree(repo: &Repository, snap: &Snapshot) -> Result<Vec<Entry>> {
    if snap.kind != coffer_repo::SnapshotKind::Fs {
        return Err(Error::Invalid(format!(
            "snapshot {} is a {} snapshot, not a file-system snapshot",
            snap.id.short(),
            snap.kind
        )));
    }
    decode_tree(&repo.read_stream(&snap.root).await?)
}

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

pub struct FsBackup<'a> {
    pub source: &'a Path,
    pub tags: BTreeMap<String, String>,
    pub parent: Option<Snapshot>,
    /// Read every file even when the parent shows it unchanged.
    pub force: bool,
    pub progress: SharedProgress,
}

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
        if let Some(p) = parent_entries.get_mut(parent_at)
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

/// The order of the walk (depth first, siblings by name) on relative paths: component
/// by component, so "a/b" comes before "a-c" although '/' sorts after '-'.
fn walk_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.split(|&c| c == b'/').cmp(b.split(|&c| c == b'/'))
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
    .await
    .expect("reader panicked")?;
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
    reader.await.expect("reader panicked");
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

pub struct FsRestore<'a> {
    pub target: &'a Path,
    pub include: Vec<String>,
    pub progress: SharedProgress,
}

/// Writes the dirty data and metadata of the file system holding `file` to disk.
fn syncfs(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: syncfs on an open descriptor.
    if unsafe { libc::syncfs(file.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn cstr(p: &Path) -> std::ffi::CString {
    std::ffi::CString::new(p.as_os_str().as_bytes()).expect("paths have no NUL")
}

fn apply_metadata(path: &Path, e: &Entry) -> std::io::Result<()> {
    let c = cstr(path);
    // SAFETY: syscalls on a NUL-terminated path we own.
    unsafe {
        if libc::lchown(c.as_ptr(), e.uid, e.gid) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    for (name, value) in &e.xattrs {
        let name = OsStr::from_bytes(name);
        xattr::set(path, name, value)?;
    }
    if e.kind != Kind::Symlink {
        // SAFETY: as above.
        if unsafe { libc::chmod(c.as_ptr(), e.mode & 0o7777) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let times = [timespec(e.atime_ns), timespec(e.mtime_ns)];
    // SAFETY: as above; times has two elements.
    if unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

pub async fn restore(
    repo: &Repository,
    snap: &Snapshot,
    r: FsRestore<'_>,
) -> Result<RestoreSummary> {
    let started = Instant::now();
    let entries = load_tree(repo, snap).await?;
    let target = r.target.to_path_buf();
    std::fs::create_dir_all(&target).map_err(|e| io_err(&target, e))?;
    let selected = select(&entries, &r.include)?;
    let total: u64 = entries
        .iter()
        .zip(&selected)
        .filter(|(e, s)| **s && e.kind == Kind::File)
        .map(|(e, _)| e.size)
        .sum();
    r.progress.stage("writing", Unit::Bytes, Some(total));
    let path_of = |e: &Entry| -> PathBuf {
        if e.path.is_empty() {
            target.clone()
        } else {
            target.join(OsStr::from_bytes(&e.path))
        }
    };

    // Create everything but files and hard links; file contents come after, pack by pack.
    let mut files: Vec<usize> = Vec::new();
    for (i, (e, sel)) in entries.iter().zip(&selected).enumerate() {
        if !sel {
            continue;
        }
        if e.kind == Kind::File {
            files.push(i);
            continue;
        }
        let p = path_of(e);
        let res = match e.kind {
            Kind::Dir => std::fs::create_dir_all(&p),
            Kind::Symlink => {
                let _ = std::fs::remove_file(&p);
                std::os::unix::fs::symlink(OsStr::from_bytes(&e.target), &p)
            }
            Kind::File | Kind::Hardlink => Ok(()),
            Kind::CharDev | Kind::BlockDev | Kind::Fifo | Kind::Socket => {
                let _ = std::fs::remove_file(&p);
                let c = cstr(&p);
                // SAFETY: mknod with a NUL-terminated path.
                if unsafe { libc::mknod(c.as_ptr(), e.mode, e.rdev as libc::dev_t) } != 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            }
        };
        res.map_err(|err| io_err(&p, err))?;
    }
    // File contents: chunks fetched pack by pack in large reads and written where they
    // belong; each file is created on its first chunk and finished after its last.
    // Chunks of one file sit together in packs, so a small cache of open files serves
    // nearly every write. Files without chunks (empty, or all holes) are made here.
    // Where each chunk goes, as one sorted list (compact for millions of files).
    let mut places: Vec<(Id, u32, u64)> = Vec::new();
    let mut lane_of = vec![0u8; entries.len()];
    let pending: Vec<std::sync::atomic::AtomicU32> = entries
        .iter()
        .map(|e| std::sync::atomic::AtomicU32::new(e.chunks.len() as u32))
        .collect();
    for &i in &files {
        let e = &entries[i];
        let p = path_of(e);
        if e.chunks.is_empty() {
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(creation_mode(e))
                .open(&p)
                .map_err(|err| io_err(&p, err))?;
            finish_file(&file, e).map_err(|err| io_err(&p, err))?;
            continue;
        }
        lane_of[i] = {
            use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
            let dir = p.parent().unwrap_or(&p);
            (BuildHasherDefault::<DefaultHasher>::default().hash_one(dir) % WRITE_LANES as u64)
                as u8
        };
        places.extend(e.chunks.iter().map(|c| (Id(c.id), i as u32, c.offset)));
    }
    drop(files);
    places.sort_unstable_by_key(|p| p.0);
    let mut order: Vec<Id> = places.iter().map(|p| p.0).collect();
    order.dedup();
    let entries = std::sync::Arc::new(entries);
    let (target_arc, pending) = (
        std::sync::Arc::new(target.clone()),
        std::sync::Arc::new(pending),
    );
    let lanes: std::sync::Arc<Vec<std::sync::Mutex<FileWriter>>> = std::sync::Arc::new(
        (0..WRITE_LANES)
            .map(|_| {
                std::sync::Mutex::new(FileWriter {
                    target: target_arc.clone(),
                    entries: entries.clone(),
                    pending: pending.clone(),
                    open: Vec::new(),
                })
            })
            .collect(),
    );
    let mut written = 0u64;
    // The target's file system, flushed in the background every FLUSH_EVERY bytes so that
    // the disk writes while files are still being created, rather than all at the end.
    let target_fs = File::open(&target).map_err(|e| io_err(&target, e))?;
    let mut flushing: Option<tokio::task::JoinHandle<std::io::Result<()>>> = None;
    let mut flushed_at = 0u64;
    let mut writes_running = futures::stream::FuturesUnordered::new();
    let mut chunks = std::pin::pin!(repo.read_chunks_by_pack(&order, RESTORE_SPANS)?);
    while let Some(batch) = chunks.next().await {
        let mut per_lane: Vec<Vec<(usize, u64, Bytes)>> = vec![Vec::new(); WRITE_LANES];
        for (id, data) in batch? {
            let from = places.partition_point(|p| p.0 < id);
            for &(_, f, offset) in places[from..].iter().take_while(|p| p.0 == id) {
                let f = f as usize;
                per_lane[lane_of[f] as usize].push((f, offset, data.clone()));
            }
        }
        for (lane, writes) in per_lane.into_iter().enumerate() {
            if writes.is_empty() {
                continue;
            }
            let lanes = lanes.clone();
            writes_running.push(tokio::task::spawn_blocking(move || {
                let mut writer = lanes[lane].lock().unwrap();
                let mut n = 0u64;
                for (f, offset, data) in writes {
                    writer.write(f, offset, &data)?;
                    n += data.len() as u64;
                }
                Ok::<_, Error>(n)
            }));
        }
        while writes_running.len() > WRITES_IN_FLIGHT {
            let n = writes_running
                .next()
                .await
                .expect("running")
                .expect("write task panicked")?;
            written += n;
            r.progress.advance(n);
        }
        if written - flushed_at >= FLUSH_EVERY && flushing.as_ref().is_none_or(|f| f.is_finished())
        {
            if let Some(done) = flushing.take() {
                done.await
                    .expect("flush task panicked")
                    .map_err(|e| io_err(&target, e))?;
            }
            flushed_at = written;
            let fs = target_fs.try_clone().map_err(|e| io_err(&target, e))?;
            flushing = Some(tokio::task::spawn_blocking(move || syncfs(&fs)));
        }
    }
    while let Some(done) = writes_running.next().await {
        let n = done.expect("write task panicked")?;
        written += n;
        r.progress.advance(n);
    }
    drop(lanes);
    // Hard links after their first name exists.
    for (e, sel) in entries.iter().zip(&selected) {
        if *sel && e.kind == Kind::Hardlink {
            let p = path_of(e);
            let first = target.join(OsStr::from_bytes(&e.target));
            let _ = std::fs::remove_file(&p);
            std::fs::hard_link(&first, &p).map_err(|err| io_err(&p, err))?;
        }
    }
    // Metadata of the rest last, deepest first, so directory times are not disturbed by
    // their contents.
    for (e, sel) in entries.iter().zip(&selected).rev() {
        if *sel && e.kind != Kind::Hardlink && e.kind != Kind::File {
            let p = path_of(e);
            apply_metadata(&p, e).map_err(|err| io_err(&p, err))?;
        }
    }
    // A restore is done when its data is on disk: flush the target's file system.
    if let Some(done) = flushing.take() {
        done.await
            .expect("flush task panicked")
            .map_err(|e| io_err(&target, e))?;
    }
    syncfs(&target_fs).map_err(|e| io_err(&target, e))?;
    Ok(RestoreSummary {
        snapshot_id: snap.id.to_hex(),
        target: target.display().to_string(),
        bytes_total: total,
        bytes_written: written,
        blocks_changed: None,
        files: Some(
            entries
                .iter()
                .zip(&selected)
                .filter(|(e, s)| **s && e.kind == Kind::File)
                .count() as u64,
        ),
        duration_s: started.elapsed().as_secs_f64(),
    })
}

/// Which entries `--include` globs select: matches, their ancestors, and the contents of
/// matched directories (hard links pull in their first name too).
fn select(entries: &[Entry], include: &[String]) -> Result<Vec<bool>> {
    if include.is_empty() {
        return Ok(vec![true; entries.len()]);
    }
    let mut b = globset::GlobSetBuilder::new();
    for g in include {
        let glob = globset::GlobBuilder::new(g.trim_start_matches('/'))
            .literal_separator(false)
            .build()
            .map_err(|e| Error::Invalid(format!("--include {g:?}: {e}")))?;
        b.add(glob);
    }
    let set = b.build().map_err(|e| Error::Invalid(e.to_string()))?;
    let mut sel = vec![false; entries.len()];
    let mut matched_dirs: Vec<Vec<u8>> = Vec::new();
    let index: HashMap<&[u8], usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.path.as_slice(), i))
        .collect();
    for (i, e) in entries.iter().enumerate() {
        let p = Path::new(OsStr::from_bytes(&e.path));
        let inside = matched_dirs
            .iter()
            .any(|d| e.path.starts_with(d) && e.path.get(d.len()) == Some(&b'/'));
        if inside || (!e.path.is_empty() && set.is_match(p)) {
            sel[i] = true;
            if e.kind == Kind::Dir {
                matched_dirs.push(e.path.clone());
            }
            if e.kind == Kind::Hardlink
                && let Some(&j) = index.get(e.target.as_slice())
            {
                sel[j] = true;
            }
        }
    }
    // Ancestors of everything selected.
    for i in 0..entries.len() {
        if !sel[i] {
            continue;
        }
        let mut p = entries[i].path.as_slice();
        while let Some(pos) = p.iter().rposition(|&c| c == b'/') {
            p = &p[..pos];
            if let Some(&j) = index.get(p) {
                sel[j] = true;
            }
        }
        if let Some(&j) = index.get(&b""[..]) {
            sel[j] = true;
        }
    }
    // A hard link's first name may come after nothing selected it; sel covers it above.
    Ok(sel)
}

/// A change between two file trees.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Change {
    pub path: String,
    /// "added", "removed", "modified" (content) or "metadata".
    pub change: &'static str,
}

pub async fn diff(repo: &Repository, a: &Snapshot, b: &Snapshot) -> Result<Vec<Change>> {
    let ta = load_tree(repo, a).await?;
    let tb = load_tree(repo, b).await?;
    let ma: BTreeMap<&[u8], &Entry> = ta.iter().map(|e| (e.path.as_slice(), e)).collect();
    let mb: BTreeMap<&[u8], &Entry> = tb.iter().map(|e| (e.path.as_slice(), e)).collect();
    let mut out = Vec::new();
    let name = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
    for (p, ea) in &ma {
        match mb.get(p) {
            None => out.push(Change {
                path: name(p),
                change: "removed",
            }),
            Some(eb) => {
                if ea.kind != eb.kind
                    || ea.chunks != eb.chunks
                    || ea.size != eb.size
                    || ea.target != eb.target
                {
                    out.push(Change {
                        path: name(p),
                        change: "modified",
                    });
                } else if ea.mode != eb.mode
                    || ea.uid != eb.uid
                    || ea.gid != eb.gid
                    || ea.mtime_ns != eb.mtime_ns
                    || ea.xattrs != eb.xattrs
                {
                    out.push(Change {
                        path: name(p),
                        change: "metadata",
                    });
                }
            }
        }
    }
    for p in mb.keys() {
        if !ma.contains_key(p) {
            out.push(Change {
                path: name(p),
                change: "added",
            });
        }
    }
    out.sort_by(|x, y| x.path.cmp(&y.path));
    Ok(out)
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
