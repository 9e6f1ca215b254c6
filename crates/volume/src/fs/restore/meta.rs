//! Metadata of directories, symlinks and device nodes, set last (deepest first, so that
//! a directory's times are not disturbed by its contents), without following symlinks.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use rustix::fs::{AtFlags, FileType, Gid, Mode, Timestamps, Uid, XattrFlags};

use super::super::tree::{Entry, Kind};

/// An owner for chown; `u32::MAX` (which no file can have: it means "unchanged" to the
/// kernel) leaves the owner as it is.
pub(super) fn uid(raw: u32) -> Option<Uid> {
    (raw != u32::MAX).then(|| Uid::from_raw_unchecked(raw))
}

/// A group for chown, as [`uid`].
pub(super) fn gid(raw: u32) -> Option<Gid> {
    (raw != u32::MAX).then(|| Gid::from_raw_unchecked(raw))
}

/// The entry's access and modification times.
pub(super) fn timestamps(e: &Entry) -> Timestamps {
    let ts = |ns: i64| rustix::fs::Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000) as _,
    };
    Timestamps {
        last_access: ts(e.atime_ns),
        last_modification: ts(e.mtime_ns),
    }
}

/// The file type a node entry is created as.
pub(super) fn node_type(kind: Kind) -> FileType {
    match kind {
        Kind::CharDev => FileType::CharacterDevice,
        Kind::BlockDev => FileType::BlockDevice,
        Kind::Fifo => FileType::Fifo,
        _ => FileType::Socket,
    }
}

/// Owner, xattrs, mode and times of a directory, through its open descriptor.
pub(super) fn dir_metadata(dir: BorrowedFd<'_>, e: &Entry) -> io::Result<()> {
    let now = rustix::fs::fstat(dir)?;
    let chowned = now.st_uid != e.uid || now.st_gid != e.gid;
    if chowned {
        rustix::fs::fchown(dir, uid(e.uid), gid(e.gid))?;
    }
    for (name, value) in &e.xattrs {
        rustix::fs::fsetxattr(dir, &name[..], value, XattrFlags::empty())?;
    }
    let mode = e.mode & 0o7777;
    if chowned || now.st_mode & 0o7777 != mode {
        rustix::fs::fchmod(dir, Mode::from_raw_mode(mode))?;
    }
    rustix::fs::futimens(dir, &timestamps(e))?;
    Ok(())
}

/// Owner, xattrs, mode (not for symlinks, which have none) and times of the symlink or
/// device node `name` in `dir`; the calls act on the node itself, never on where a
/// symlink points.
pub(super) fn node_metadata(dir: BorrowedFd<'_>, name: &[u8], e: &Entry) -> io::Result<()> {
    rustix::fs::chownat(dir, name, uid(e.uid), gid(e.gid), AtFlags::SYMLINK_NOFOLLOW)?;
    if !e.xattrs.is_empty() {
        // No *at call sets xattrs: name the node through the directory's descriptor;
        // lsetxattr does not follow a final symlink.
        let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
        path.extend_from_slice(name);
        for (xname, value) in &e.xattrs {
            rustix::fs::lsetxattr(&path[..], &xname[..], value, XattrFlags::empty())?;
        }
    }
    if e.kind != Kind::Symlink {
        // fchmodat follows a final symlink (and Linux has no flag against it): only
        // change the mode of what is verified to be a node of the entry's own type.
        let there = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
        if FileType::from_raw_mode(there.st_mode) != node_type(e.kind) {
            return Err(io::Error::other(
                "changed type while being restored (something else is writing to the target)",
            ));
        }
        rustix::fs::chmodat(
            dir,
            name,
            Mode::from_raw_mode(e.mode & 0o7777),
            AtFlags::empty(),
        )?;
    }
    rustix::fs::utimensat(dir, name, &timestamps(e), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}
