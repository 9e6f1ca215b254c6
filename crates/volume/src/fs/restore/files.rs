//! File contents: the lanes that create files on their first chunk, write chunks where
//! they belong and finish each file (size, owner, xattrs, mode, times) through its
//! descriptor after its last chunk.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use super::super::tree::Entry;
use super::super::validate::{EntryProblem, Validation, file_name};
use super::at::{self, DirCache};
use super::meta::{gid, timestamps, uid};
use crate::{Error, Result, SharedProgress};

/// Files kept open per lane while restoring contents.
const OPEN_FILES: usize = 64;
/// Directories kept open per lane.
const OPEN_DIRS: usize = 16;

/// `pending` bits: the file exists (created by this restore).
pub(super) const CREATED: u32 = 1 << 31;
/// `pending` bits: the entry was refused while restoring; nothing more is done to it.
pub(super) const FAILED: u32 = 1 << 30;
/// `pending` bits: chunk writes still to come.
const COUNT: u32 = FAILED - 1;

/// What every lane shares: the tree, its validation and per-entry progress.
#[derive(Clone)]
pub(super) struct Shared {
    pub(super) target: Arc<PathBuf>,
    pub(super) entries: Arc<Vec<Entry>>,
    pub(super) valid: Arc<Validation>,
    /// Per entry: chunk writes still to come (files), with `CREATED` and `FAILED` bits.
    /// A file's bits change only in its own lane.
    pub(super) pending: Arc<Vec<AtomicU32>>,
    pub(super) progress: SharedProgress,
}

impl Shared {
    /// The target path of entry `i`, for messages.
    pub(super) fn path_of(&self, i: usize) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        self.target
            .join(std::ffi::OsStr::from_bytes(&self.entries[i].path))
    }

    /// An I/O error about entry `i`.
    pub(super) fn io_err(&self, i: usize, source: std::io::Error) -> Error {
        crate::io_err(&self.path_of(i), source)
    }
}

/// One lane of a restore's file writes: each of its files is created on its first write,
/// kept in a small cache of open descriptors (least recently used evicted), and finished
/// when its last chunk is written, so a file costs one open relative to its directory.
pub(super) struct FileWriter {
    shared: Shared,
    dirs: DirCache,
    open: Vec<(usize, File)>,
    /// Entries this lane refused: (index, why).
    pub(super) refused: Vec<(u32, EntryProblem)>,
}

impl FileWriter {
    /// A lane writing below the target directory `root`.
    pub(super) fn new(shared: Shared, root: Arc<std::os::fd::OwnedFd>) -> FileWriter {
        FileWriter {
            shared,
            dirs: DirCache::new(root, OPEN_DIRS),
            open: Vec::new(),
            refused: Vec::new(),
        }
    }

    /// Writes the chunk of `len` bytes at `offset` of file `entry`; returns the bytes
    /// written (0 when the entry was refused).
    pub(super) fn write(
        &mut self,
        entry: usize,
        offset: u64,
        len: u32,
        data: &[u8],
    ) -> Result<u64> {
        let sh = &self.shared;
        let pending = &sh.pending[entry];
        if pending.load(Relaxed) & FAILED != 0 {
            return Ok(0);
        }
        if data.len() != len as usize {
            // The restore compared every chunk's length with the index before starting;
            // a chunk that decodes to another length means the index itself lies.
            return Err(Error::BadMetadata(format!(
                "{}: chunk at offset {offset} decoded to {} bytes, the tree and index say {len}",
                sh.path_of(entry).display(),
                data.len()
            )));
        }
        let pos = match self.open.iter().rposition(|(i, _)| *i == entry) {
            Some(pos) => pos,
            None => {
                if self.open.len() >= OPEN_FILES {
                    self.open.remove(0);
                }
                let e = &sh.entries[entry];
                let parent = sh.valid.parent(entry).unwrap_or(0);
                let dir = self
                    .dirs
                    .get(parent, &sh.entries, &sh.valid)
                    .map_err(|err| sh.io_err(parent, err))?;
                let name = file_name(&e.path);
                let file = if pending.load(Relaxed) & CREATED == 0 {
                    match at::create_file(std::os::fd::AsFd::as_fd(&*dir), name, creation_mode(e))
                        .map_err(|err| sh.io_err(entry, err))?
                    {
                        Some(file) => file,
                        None => {
                            pending.fetch_or(FAILED, Relaxed);
                            let problem = EntryProblem::DirectoryInTheWay;
                            sh.progress
                                .warn(&String::from_utf8_lossy(&e.path), &problem.to_string());
                            self.refused.push((entry as u32, problem));
                            return Ok(0);
                        }
                    }
                } else {
                    at::reopen_file(std::os::fd::AsFd::as_fd(&*dir), name)
                        .map_err(|err| sh.io_err(entry, err))?
                };
                pending.fetch_or(CREATED, Relaxed);
                self.open.push((entry, file));
                self.open.len() - 1
            }
        };
        self.open[pos]
            .1
            .write_all_at(data, offset)
            .map_err(|err| sh.io_err(entry, err))?;
        if pending.fetch_sub(1, Relaxed) & COUNT == 1 {
            let (_, file) = self.open.remove(pos);
            finish_file(&file, &sh.entries[entry]).map_err(|err| sh.io_err(entry, err))?;
        }
        Ok(data.len() as u64)
    }
}

/// Gives a written file (new when first opened) its size (a hole at its end has no chunk
/// that would extend it), owner, xattrs, mode and times, through its descriptor.
pub(super) fn finish_file(file: &File, e: &Entry) -> std::io::Result<()> {
    use rustix::fs::{Mode, XattrFlags};
    let written_to = e.chunks.last().map(|c| c.offset + c.len as u64);
    if written_to.unwrap_or(0) < e.size {
        file.set_len(e.size)?;
    }
    // Owner and mode are usually right already (the file was created with its mode, by
    // its owner); each change would dirty the inode in the journal once more, so only
    // what differs is changed. A chown clears set-id bits, so the mode follows it.
    let created = rustix::fs::fstat(file)?;
    let chowned = created.st_uid != e.uid || created.st_gid != e.gid;
    if chowned {
        rustix::fs::fchown(file, uid(e.uid), gid(e.gid))?;
    }
    for (name, value) in &e.xattrs {
        rustix::fs::fsetxattr(file, &name[..], value, XattrFlags::empty())?;
    }
    let mode = e.mode & 0o7777;
    if chowned || created.st_mode & 0o7777 != mode {
        rustix::fs::fchmod(file, Mode::from_raw_mode(mode))?;
    }
    rustix::fs::futimens(file, &timestamps(e))?;
    Ok(())
}

/// The permission bits a restored file is created with: its own, so that `finish_file`
/// rarely needs a chmod, but writable by its owner, so that a read-only file closed
/// between two of its chunks can be opened again.
pub(super) fn creation_mode(e: &Entry) -> u32 {
    (e.mode & 0o777) | 0o200
}
