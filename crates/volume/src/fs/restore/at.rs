//! Creating entries beneath directory descriptors, never following a symlink.
//!
//! Every name handed to the kernel here is one path component, resolved in a directory
//! this restore holds open: the target itself, or a directory opened from it one
//! component at a time with `O_NOFOLLOW | O_DIRECTORY`. So neither a symlink the restore
//! created nor one already in the target can redirect a create, write, link or delete
//! outside the target. What is found in the way is replaced when it is not a directory
//! (the snapshot's entry wins, as a restore should), and left alone, with the entry
//! refused, when it is a directory (it may hold data the snapshot does not have).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::super::tree::Entry;
use super::super::validate::{Validation, file_name};

/// How a directory is opened: to create in it and to set its own metadata.
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Opens the directory `name` in `dir`; a symlink or anything else fails.
pub(super) fn open_dir(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty())?)
}

/// Makes the directory `name` in `dir`, or takes the directory already there, and opens
/// it. A non-directory found there (a file, a symlink) is replaced. Made directories are
/// private to the owner until the restore sets their mode last.
pub(super) fn make_dir(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<OwnedFd> {
    match rustix::fs::mkdirat(dir, name, Mode::RWXU) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    match rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(Errno::NOTDIR | Errno::LOOP) => {
            rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
            rustix::fs::mkdirat(dir, name, Mode::RWXU)?;
            open_dir(dir, name)
        }
        Err(e) => Err(e.into()),
    }
}

/// Creates a non-directory named `name` in `dir` with `make`. When the name exists, what
/// is there is removed and `make` runs again, unless it is a directory: then `Ok(None)`.
pub(super) fn replacing<T>(
    dir: BorrowedFd<'_>,
    name: &[u8],
    mut make: impl FnMut() -> rustix::io::Result<T>,
) -> io::Result<Option<T>> {
    match make() {
        Ok(t) => return Ok(Some(t)),
        Err(Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let there = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(there.st_mode) == FileType::Directory {
        return Ok(None);
    }
    rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
    Ok(Some(make()?))
}

/// Creates the regular file `name` in `dir` for writing, as a new inode: whatever was
/// there (a symlink, or a hard link to a file elsewhere) is replaced, never written
/// through. `Ok(None)`: a directory is in the way.
pub(super) fn create_file(
    dir: BorrowedFd<'_>,
    name: &[u8],
    mode: u32,
) -> io::Result<Option<std::fs::File>> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    replacing(dir, name, || {
        rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(mode))
    })
    .map(|f| f.map(std::fs::File::from))
}

/// Opens again a file this restore created (`create_file`) and closed in between.
pub(super) fn reopen_file(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<std::fs::File> {
    let flags = OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(dir, name, flags, Mode::empty())?.into())
}

/// Open directories of a restore, by entry index: a few recently used ones kept open, so
/// that creating or writing an entry costs one call relative to its directory, and a
/// directory not kept is reopened from its nearest open ancestor (or the target) one
/// component at a time.
pub(super) struct DirCache {
    root: Arc<OwnedFd>,
    open: Vec<(usize, Arc<OwnedFd>)>,
    capacity: usize,
}

impl DirCache {
    /// A cache over the target directory `root`, keeping up to `capacity` others open.
    pub(super) fn new(root: Arc<OwnedFd>, capacity: usize) -> DirCache {
        DirCache {
            root,
            open: Vec::with_capacity(capacity),
            capacity: capacity.max(1),
        }
    }

    /// The accepted directory entry `dir` of `entries`, open (the root entry is the
    /// target).
    pub(super) fn get(
        &mut self,
        dir: usize,
        entries: &[Entry],
        valid: &Validation,
    ) -> io::Result<Arc<OwnedFd>> {
        if let Some(fd) = self.cached(dir, entries) {
            return Ok(fd);
        }
        // Up to the nearest directory kept open, then down again.
        let mut chain = vec![dir];
        let mut base = loop {
            let below = chain[chain.len() - 1];
            let parent = valid
                .parent(below)
                .ok_or_else(|| io::Error::other("not a directory this restore accepted"))?;
            if let Some(fd) = self.cached(parent, entries) {
                break fd;
            }
            chain.push(parent);
        };
        for &d in chain.iter().rev() {
            let fd = open_dir(base.as_fd(), file_name(&entries[d].path))?;
            base = self.insert(d, fd);
        }
        Ok(base)
    }

    fn cached(&mut self, dir: usize, entries: &[Entry]) -> Option<Arc<OwnedFd>> {
        if entries[dir].path.is_empty() {
            return Some(self.root.clone());
        }
        let pos = self.open.iter().rposition(|(d, _)| *d == dir)?;
        if pos + 1 != self.open.len() {
            let hit = self.open.remove(pos);
            self.open.push(hit);
        }
        self.open.last().map(|(_, fd)| fd.clone())
    }

    /// Keeps `fd`, the open directory entry `dir`, dropping the least recently used.
    pub(super) fn insert(&mut self, dir: usize, fd: OwnedFd) -> Arc<OwnedFd> {
        if self.open.len() >= self.capacity {
            self.open.remove(0);
        }
        let fd = Arc::new(fd);
        self.open.push((dir, fd.clone()));
        fd
    }
}
