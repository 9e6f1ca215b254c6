//! The rules a file tree must follow to be restored, and which entries break them.
//!
//! A snapshot's tree is untrusted (anyone holding a key can add snapshots), so before a
//! restore creates anything it decides, per entry, whether the entry is safe and sound:
//! its path is relative and plain (no `..`, `.` or empty components, no NUL); it comes
//! after the previous entry in walk order (so no path appears twice); its parent is a
//! directory entry accepted before it; a hard link names a regular file accepted before
//! it; a file's chunks lie in order inside its size. Refused entries are reported and
//! skipped, and so is everything beneath a refused directory; the rest restores. `check`
//! applies the same rules ([`crate::check`]). docs/format.md lists them for readers.
//!
//! Walk order lets one pass decide everything with memory for the current directory
//! chain only: an entry's parent, if present, is an ancestor of the previous entry.

use std::cmp::Ordering;

use super::tree::{Entry, FileChunk, Kind, walk_order};

/// Longest name of one path component (Linux `NAME_MAX`).
pub const MAX_NAME: usize = 255;
/// Longest symlink target (Linux `PATH_MAX` less its NUL).
pub const MAX_SYMLINK_TARGET: usize = 4095;
/// Longest extended attribute name (Linux `XATTR_NAME_MAX`).
pub const MAX_XATTR_NAME: usize = 255;
/// Largest extended attribute value (Linux `XATTR_SIZE_MAX`).
pub const MAX_XATTR_VALUE: usize = 65536;
/// A file has fewer chunks than this.
pub const MAX_CHUNKS: usize = 1 << 30;
/// A tree has fewer entries than this.
pub const MAX_ENTRIES: usize = (u32::MAX - 2) as usize;

const REFUSED: u32 = u32::MAX;
const NO_PARENT: u32 = u32::MAX - 1;

/// What is wrong with a path (an entry's own, or a hard link's target).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathProblem {
    /// Only the root entry has an empty path.
    #[error("is empty")]
    Empty,
    /// Starts with `/`.
    #[error("is absolute")]
    Absolute,
    /// `//` or a trailing `/`.
    #[error("has an empty component")]
    EmptyComponent,
    /// A `.` component.
    #[error("has a \".\" component")]
    Dot,
    /// A `..` component.
    #[error("has a \"..\" component")]
    DotDot,
    /// A NUL byte.
    #[error("contains a NUL byte")]
    Nul,
    /// A component longer than [`MAX_NAME`].
    #[error("has a component longer than 255 bytes")]
    NameTooLong,
}

/// Why an entry is refused: by the tree's rules, or by what a restore found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryProblem {
    /// The entry's path breaks a path rule.
    #[error("path {0}")]
    Path(PathProblem),
    /// An empty path anywhere but first, or a root entry that is not a directory.
    #[error("the root entry (empty path) must be the first entry and a directory")]
    Root,
    /// The same path as the entry before it.
    #[error("repeats the path of the entry before it")]
    Duplicate,
    /// Not after the previous entry in walk order.
    #[error(
        "is out of order (entries are sorted depth first, siblings by name) or repeats an earlier path"
    )]
    OutOfOrder,
    /// No directory entry for the parent before it.
    #[error("its parent directory has no entry before it")]
    ParentMissing,
    /// The parent path is an entry that is not a directory (a symlink, a file).
    #[error("its parent is not a directory")]
    ParentNotDir,
    /// The parent directory was refused.
    #[error("its parent directory was refused")]
    ParentRefused,
    /// A symlink with an empty, overlong or NUL-holding target.
    #[error("symlink target is empty, longer than 4095 bytes or contains a NUL byte")]
    SymlinkTarget,
    /// A hard link whose target path breaks a path rule.
    #[error("hard link target {0}")]
    LinkTargetPath(PathProblem),
    /// A hard link whose target is not a regular file accepted before it.
    #[error("hard link target is not a regular file restored before it")]
    LinkTargetNotFile,
    /// Something other than a regular file lists chunks.
    #[error("only regular files have data chunks")]
    ChunksOnNonFile,
    /// A file size beyond what a file system can hold (2^63 - 1).
    #[error("file size is beyond 2^63 - 1 bytes")]
    SizeTooLarge,
    /// [`MAX_CHUNKS`] or more chunks.
    #[error("file has 2^30 chunks or more")]
    TooManyChunks,
    /// A chunk of length 0.
    #[error("chunk at offset {offset} is empty")]
    EmptyChunk {
        /// The chunk's offset.
        offset: u64,
    },
    /// A chunk starting before the previous one ended.
    #[error("chunk at offset {offset} overlaps the chunk before it or is out of offset order")]
    ChunkOrder {
        /// The chunk's offset.
        offset: u64,
    },
    /// A chunk reaching past the file's size.
    #[error("chunk at offset {offset} with {len} bytes reaches past the file's size {size}")]
    ChunkPastEnd {
        /// The chunk's offset.
        offset: u64,
        /// The chunk's length.
        len: u32,
        /// The file's size.
        size: u64,
    },
    /// An extended attribute with an empty, overlong or NUL-holding name, or a value
    /// larger than [`MAX_XATTR_VALUE`].
    #[error(
        "extended attribute with an empty, overlong or NUL-holding name, or a value over 64 KiB"
    )]
    Xattr,
    /// More than [`MAX_ENTRIES`] entries.
    #[error("the tree has too many entries")]
    TooManyEntries,
    /// A chunk the repository's index does not hold.
    #[error("chunk {id} at offset {offset} is not in the repository")]
    ChunkMissing {
        /// The chunk id (short hex).
        id: ShortId,
        /// The chunk's offset in the file.
        offset: u64,
    },
    /// A chunk whose stored length differs from the tree's.
    #[error(
        "chunk at offset {offset} holds {stored} bytes in the repository, the tree says {listed}"
    )]
    ChunkLength {
        /// The chunk's offset in the file.
        offset: u64,
        /// Its plaintext length in the repository.
        stored: u32,
        /// Its length in the tree.
        listed: u32,
    },
    /// A chunk missing from the snapshot's reference list (prune may delete it).
    #[error(
        "chunk {id} at offset {offset} is not in the snapshot's reference list (prune may delete it)"
    )]
    ChunkUnreferenced {
        /// The chunk id (short hex).
        id: ShortId,
        /// The chunk's offset in the file.
        offset: u64,
    },
    /// A restore found a directory where this non-directory entry goes; it leaves the
    /// directory and its contents alone.
    #[error("a directory is in the way in the target (remove it to restore this entry)")]
    DirectoryInTheWay,
    /// A hard link whose file was not restored.
    #[error("hard link target was not restored")]
    LinkTargetNotRestored,
}

/// The first 4 bytes of a chunk id, shown as 8 hex digits in messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShortId(pub [u8; 4]);

impl ShortId {
    /// The short form of `id`.
    pub fn of(id: &[u8; 32]) -> ShortId {
        ShortId([id[0], id[1], id[2], id[3]])
    }
}

impl std::fmt::Display for ShortId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Checks a path by the rules for entry paths and hard-link targets.
pub fn check_path(p: &[u8]) -> Result<(), PathProblem> {
    if p.is_empty() {
        return Err(PathProblem::Empty);
    }
    if p[0] == b'/' {
        return Err(PathProblem::Absolute);
    }
    if p.contains(&0) {
        return Err(PathProblem::Nul);
    }
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" => return Err(PathProblem::EmptyComponent),
            b"." => return Err(PathProblem::Dot),
            b".." => return Err(PathProblem::DotDot),
            c if c.len() > MAX_NAME => return Err(PathProblem::NameTooLong),
            _ => {}
        }
    }
    Ok(())
}

/// The last component of a valid path: the name an entry gets in its parent.
pub(crate) fn file_name(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// Which entries of a tree may be restored, and where: every entry's parent directory
/// (an index into the tree) or why it is refused.
#[derive(Clone, Debug)]
pub struct Validation {
    /// Per entry: its parent's index, `NO_PARENT` for the root, `REFUSED`.
    parent: Vec<u32>,
    /// The refused entries, in tree order until a restore adds its own findings.
    problems: Vec<(u32, EntryProblem)>,
    /// Accepted hard links: (link, the file it names).
    links: Vec<(u32, u32)>,
}

impl Validation {
    /// Validates `entries` by the tree's rules.
    pub fn of(entries: &[Entry]) -> Validation {
        let mut v = Validation {
            parent: vec![REFUSED; entries.len()],
            problems: Vec::new(),
            links: Vec::new(),
        };
        // Ancestor chain of the last in-order entry: (index, accepted directory).
        let mut chain: Vec<(u32, bool)> = Vec::new();
        let mut last: Option<usize> = None;
        // Accepted regular files, in walk order: hard links find their target here.
        let mut files: Vec<u32> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            if i >= MAX_ENTRIES {
                v.problems.push((i as u32, EntryProblem::TooManyEntries));
                continue;
            }
            match v.check_entry(entries, i, &mut chain, &mut last, &files) {
                Ok(parent) => {
                    v.parent[i] = parent;
                    if e.kind == Kind::File {
                        files.push(i as u32);
                    }
                }
                Err(p) => v.problems.push((i as u32, p)),
            }
        }
        v
    }

    fn check_entry(
        &mut self,
        entries: &[Entry],
        i: usize,
        chain: &mut Vec<(u32, bool)>,
        last: &mut Option<usize>,
        files: &[u32],
    ) -> Result<u32, EntryProblem> {
        let e = &entries[i];
        if e.path.is_empty() {
            if i != 0 {
                return Err(EntryProblem::Root);
            }
            *last = Some(0);
            let ok = e.kind == Kind::Dir && check_contents(e).is_ok();
            chain.push((0, ok));
            return if e.kind != Kind::Dir {
                Err(EntryProblem::Root)
            } else {
                check_contents(e).map(|()| NO_PARENT)
            };
        }
        check_path(&e.path).map_err(EntryProblem::Path)?;
        if let Some(l) = *last {
            match walk_order(&entries[l].path, &e.path) {
                Ordering::Less => {}
                Ordering::Equal => return Err(EntryProblem::Duplicate),
                Ordering::Greater => return Err(EntryProblem::OutOfOrder),
            }
        }
        *last = Some(i);
        // The parent, if it has an entry, is on the chain (it sorts before this entry and
        // every entry between them lies inside it).
        while let Some(&(top, _)) = chain.last() {
            if is_ancestor(&entries[top as usize].path, &e.path) {
                break;
            }
            chain.pop();
        }
        let parent_path = match e.path.iter().rposition(|&b| b == b'/') {
            Some(p) => &e.path[..p],
            None => &b""[..],
        };
        let parent = match chain.last() {
            Some(&(top, ok)) if entries[top as usize].path == parent_path => {
                if !ok && entries[top as usize].kind == Kind::Dir {
                    Err(EntryProblem::ParentRefused)
                } else if !ok {
                    Err(EntryProblem::ParentNotDir)
                } else {
                    Ok(top)
                }
            }
            _ => Err(EntryProblem::ParentMissing),
        };
        let verdict = parent.and_then(|parent| {
            check_contents(e)?;
            if e.kind == Kind::Hardlink {
                check_path(&e.target).map_err(EntryProblem::LinkTargetPath)?;
                let found = files
                    .binary_search_by(|&f| walk_order(&entries[f as usize].path, &e.target))
                    .map_err(|_| EntryProblem::LinkTargetNotFile)?;
                self.links.push((i as u32, files[found]));
            }
            Ok(parent)
        });
        chain.push((i as u32, verdict.is_ok() && e.kind == Kind::Dir));
        verdict
    }

    /// Whether entry `i` may be restored.
    pub fn is_accepted(&self, i: usize) -> bool {
        self.parent[i] != REFUSED
    }

    /// Entry `i`'s parent directory (an index into the tree); None for the root and for
    /// refused entries.
    pub fn parent(&self, i: usize) -> Option<usize> {
        match self.parent[i] {
            REFUSED | NO_PARENT => None,
            p => Some(p as usize),
        }
    }

    /// The refused entries: (index, why).
    pub fn problems(&self) -> &[(u32, EntryProblem)] {
        &self.problems
    }

    /// The accepted hard links: (link's index, its file's index).
    pub fn links(&self) -> &[(u32, u32)] {
        &self.links
    }

    /// Refuses entry `i` for a reason found later (by a restore or a check). Its children
    /// must not be restored either: only refuse entries without accepted children
    /// (anything but directories).
    pub(crate) fn refuse(&mut self, i: usize, problem: EntryProblem) {
        if self.parent[i] != REFUSED {
            self.parent[i] = REFUSED;
            self.problems.push((i as u32, problem));
        }
    }

    /// Whether no entry was refused.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Whether `dir` is a proper ancestor directory of `path` (the root, "", of every path).
fn is_ancestor(dir: &[u8], path: &[u8]) -> bool {
    dir.is_empty() || (path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/')
}

/// The rules on an entry's own fields (not its place in the tree).
fn check_contents(e: &Entry) -> Result<(), EntryProblem> {
    for (name, value) in &e.xattrs {
        if name.is_empty()
            || name.len() > MAX_XATTR_NAME
            || name.contains(&0)
            || value.len() > MAX_XATTR_VALUE
        {
            return Err(EntryProblem::Xattr);
        }
    }
    if e.kind != Kind::File && !e.chunks.is_empty() {
        return Err(EntryProblem::ChunksOnNonFile);
    }
    match e.kind {
        Kind::File => check_chunks(e.size, &e.chunks),
        Kind::Symlink => {
            if e.target.is_empty() || e.target.len() > MAX_SYMLINK_TARGET || e.target.contains(&0) {
                Err(EntryProblem::SymlinkTarget)
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}

/// A file's chunks: non-empty, in offset order without overlap, inside its size.
fn check_chunks(size: u64, chunks: &[FileChunk]) -> Result<(), EntryProblem> {
    if size > i64::MAX as u64 {
        return Err(EntryProblem::SizeTooLarge);
    }
    if chunks.len() >= MAX_CHUNKS {
        return Err(EntryProblem::TooManyChunks);
    }
    let mut end = 0u64;
    for c in chunks {
        if c.len == 0 {
            return Err(EntryProblem::EmptyChunk { offset: c.offset });
        }
        if c.offset < end {
            return Err(EntryProblem::ChunkOrder { offset: c.offset });
        }
        end = match c.offset.checked_add(c.len as u64) {
            Some(e) if e <= size => e,
            _ => {
                return Err(EntryProblem::ChunkPastEnd {
                    offset: c.offset,
                    len: c.len,
                    size,
                });
            }
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: Kind) -> Entry {
        Entry::new(path, kind, 0o644)
    }

    fn link(path: &str, kind: Kind, target: &str) -> Entry {
        Entry {
            target: target.as_bytes().to_vec(),
            ..entry(path, kind)
        }
    }

    fn verdicts(entries: &[Entry]) -> Vec<(String, Option<EntryProblem>)> {
        let v = Validation::of(entries);
        entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let p = v
                    .problems()
                    .iter()
                    .find(|(j, _)| *j as usize == i)
                    .map(|x| x.1);
                assert_eq!(v.is_accepted(i), p.is_none());
                (String::from_utf8_lossy(&e.path).into_owned(), p)
            })
            .collect()
    }

    #[test]
    fn paths_must_be_plain_and_relative() {
        for (p, want) in [
            ("a", Ok(())),
            ("a/b.c/..d/...", Ok(())),
            ("/a", Err(PathProblem::Absolute)),
            ("a//b", Err(PathProblem::EmptyComponent)),
            ("a/", Err(PathProblem::EmptyComponent)),
            ("./a", Err(PathProblem::Dot)),
            ("a/.", Err(PathProblem::Dot)),
            ("..", Err(PathProblem::DotDot)),
            ("a/../../b", Err(PathProblem::DotDot)),
            ("a\0b", Err(PathProblem::Nul)),
            ("", Err(PathProblem::Empty)),
        ] {
            assert_eq!(check_path(p.as_bytes()), want, "{p:?}");
        }
        assert_eq!(check_path(&[b'x'; 256]), Err(PathProblem::NameTooLong));
        assert_eq!(check_path(&[b'x'; 255]), Ok(()));
    }

    #[test]
    fn parents_must_be_directories_accepted_before() {
        use EntryProblem::*;
        let tree = [
            entry("", Kind::Dir),
            entry("a", Kind::Dir),
            entry("a/f", Kind::File),
            link("esc", Kind::Symlink, "/etc"),
            entry("esc/passwd", Kind::File),
            entry("esc/x", Kind::Dir),
            entry("esc/x/y", Kind::File),
            entry("f", Kind::File),
            entry("f", Kind::File),
            entry("g/h", Kind::File),
            entry("z", Kind::Dir),
            entry("b", Kind::File),
            entry("z/../../w", Kind::File),
            entry("z/ok", Kind::File),
        ];
        assert_eq!(
            verdicts(&tree)
                .into_iter()
                .map(|(_, p)| p)
                .collect::<Vec<_>>(),
            vec![
                None,
                None,
                None,
                None,
                Some(ParentNotDir),
                Some(ParentNotDir),
                Some(ParentRefused),
                None,
                Some(Duplicate),
                Some(ParentMissing),
                None,
                Some(OutOfOrder),
                Some(Path(PathProblem::DotDot)),
                None,
            ]
        );
        let v = Validation::of(&tree);
        assert_eq!(v.parent(0), None);
        assert_eq!(v.parent(2), Some(1));
        assert_eq!(v.parent(13), Some(10));
    }

    #[test]
    fn a_tree_must_start_with_its_root_directory() {
        use EntryProblem::*;
        let no_root = [entry("a", Kind::Dir), entry("a/b", Kind::File)];
        assert_eq!(
            verdicts(&no_root)
                .into_iter()
                .map(|(_, p)| p)
                .collect::<Vec<_>>(),
            vec![Some(ParentMissing), Some(ParentRefused)]
        );
        let file_root = [entry("", Kind::File), entry("a", Kind::File)];
        assert_eq!(
            verdicts(&file_root)
                .into_iter()
                .map(|(_, p)| p)
                .collect::<Vec<_>>(),
            vec![Some(Root), Some(ParentNotDir)]
        );
        let late_root = [
            entry("", Kind::Dir),
            entry("a", Kind::File),
            entry("", Kind::Dir),
        ];
        assert_eq!(verdicts(&late_root)[2].1, Some(Root));
    }

    #[test]
    fn hard_links_name_regular_files_accepted_before() {
        use EntryProblem::*;
        let tree = [
            entry("", Kind::Dir),
            entry("d", Kind::Dir),
            entry("d/f", Kind::File),
            link("d/l1", Kind::Hardlink, "d/f"),
            link("d/l2", Kind::Hardlink, "d"),
            link("d/l3", Kind::Hardlink, "d/z"),
            link("d/l4", Kind::Hardlink, "../outside"),
            link("d/l5", Kind::Hardlink, "/etc/shadow"),
            link("d/l6", Kind::Hardlink, "d/l1"),
            link("d/m", Kind::Symlink, "f"),
            link("d/n", Kind::Hardlink, "d/m"),
            entry("d/z", Kind::File),
        ];
        let got: Vec<_> = verdicts(&tree).into_iter().map(|(_, p)| p).collect();
        assert_eq!(
            got,
            vec![
                None,
                None,
                None,
                None,
                Some(LinkTargetNotFile),
                Some(LinkTargetNotFile),
                Some(LinkTargetPath(PathProblem::DotDot)),
                Some(LinkTargetPath(PathProblem::Absolute)),
                Some(LinkTargetNotFile),
                None,
                Some(LinkTargetNotFile),
                None,
            ]
        );
        assert_eq!(Validation::of(&tree).links(), &[(3, 2)]);
    }

    #[test]
    fn chunks_lie_in_order_inside_the_file() {
        let chunk = |offset, len| FileChunk {
            offset,
            len,
            id: [0; 32],
        };
        assert_eq!(check_chunks(10, &[chunk(0, 4), chunk(6, 4)]), Ok(()));
        assert_eq!(
            check_chunks(10, &[chunk(0, 4), chunk(3, 4)]),
            Err(EntryProblem::ChunkOrder { offset: 3 })
        );
        assert_eq!(
            check_chunks(10, &[chunk(6, 4), chunk(0, 4)]),
            Err(EntryProblem::ChunkOrder { offset: 0 })
        );
        assert_eq!(
            check_chunks(10, &[chunk(8, 4)]),
            Err(EntryProblem::ChunkPastEnd {
                offset: 8,
                len: 4,
                size: 10
            })
        );
        assert_eq!(
            check_chunks(u64::MAX / 2, &[chunk(u64::MAX - 1, 4)]),
            Err(EntryProblem::ChunkPastEnd {
                offset: u64::MAX - 1,
                len: 4,
                size: u64::MAX / 2
            })
        );
        assert_eq!(
            check_chunks(10, &[chunk(0, 0)]),
            Err(EntryProblem::EmptyChunk { offset: 0 })
        );
        assert_eq!(check_chunks(u64::MAX, &[]), Err(EntryProblem::SizeTooLarge));
    }
}
