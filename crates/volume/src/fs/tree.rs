//! The file tree format: the metadata stream of a file-system snapshot, one [`Entry`] per
//! directory, file, link or device node, in walk order.
//!
//! The stream is one MessagePack array of entries, each a positional array (not a map) of
//! the fields of [`Entry`] in declaration order, chunks as `[offset, len, id]`; the byte
//! layout and the rules a valid tree follows are in docs/format.md ("File tree"), the
//! rules' code in [`validate`](super::validate).
//!
//! The stream is untrusted: decoding allocates in proportion to the bytes given, whatever
//! lengths they claim, and fails with [`Error::BadMetadata`] rather than panicking.

use std::fmt;

use coffer_repo::{Repository, Snapshot};
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::{Error, Result};

/// What an entry is. Encoded as its lowercase name (a MessagePack str).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A regular file; its data is in `chunks`.
    File,
    /// A directory.
    Dir,
    /// A symbolic link; `target` is what it points to (never followed by a restore).
    Symlink,
    /// A further name of a regular file listed earlier (`target` is that file's path).
    Hardlink,
    /// A character device node (`rdev`).
    CharDev,
    /// A block device node (`rdev`).
    BlockDev,
    /// A named pipe.
    Fifo,
    /// A unix socket (restored as a socket node).
    Socket,
}

impl Kind {
    /// The name the format uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::Hardlink => "hardlink",
            Kind::CharDev => "chardev",
            Kind::BlockDev => "blockdev",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
        }
    }
}

/// One chunk of a file: `len` bytes at `offset` are the chunk `id`. Encoded as
/// `[offset, len, id]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileChunk {
    /// Where the chunk's bytes go in the file.
    pub offset: u64,
    /// How many bytes the chunk holds (its plaintext length).
    pub len: u32,
    /// The chunk's id in the repository.
    #[serde(with = "serde_bytes")]
    pub id: [u8; 32],
}

/// One entry of a file tree. Encoded as a 14-element array of these fields in this order.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the backed-up root, as raw bytes ("" is the root itself).
    #[serde(with = "serde_bytes")]
    pub path: Vec<u8>,
    /// What the entry is.
    pub kind: Kind,
    /// `st_mode` as `lstat` reported it (type and permission bits; a restore uses the
    /// permission bits, the type comes from `kind`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Access time, nanoseconds since the epoch.
    pub atime_ns: i64,
    /// For change detection only (not restored).
    pub ctime_ns: i64,
    /// Inode number, for change detection only.
    pub ino: u64,
    /// File size (regular files), else 0.
    pub size: u64,
    /// Device number (device nodes).
    pub rdev: u64,
    /// Symlink target, or the earlier path of a hard link; empty otherwise.
    #[serde(with = "serde_bytes", default)]
    pub target: Vec<u8>,
    /// Extended attributes (name, value), all namespaces readable, sorted.
    #[serde(deserialize_with = "growing_vec")]
    pub xattrs: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)>,
    /// Data extents' chunks in offset order; holes are gaps.
    #[serde(deserialize_with = "growing_vec")]
    pub chunks: Vec<FileChunk>,
}

impl Entry {
    /// An entry with this path, kind and mode (file-type bits included) and every other
    /// field zero or empty: what tests and crafted trees start from.
    pub fn new(path: impl Into<Vec<u8>>, kind: Kind, mode: u32) -> Entry {
        Entry {
            path: path.into(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            atime_ns: 0,
            ctime_ns: 0,
            ino: 0,
            size: 0,
            rdev: 0,
            target: Vec::new(),
            xattrs: Vec::new(),
            chunks: Vec::new(),
        }
    }
}

/// Encodes a tree as the snapshot's metadata stream.
pub fn encode_tree(entries: &[Entry]) -> Vec<u8> {
    // Plain data (byte strings, integers, an enum of unit variants) into memory: the
    // encoder has nothing that can fail.
    rmp_serde::to_vec(entries).expect("a file tree always encodes")
}

/// The fewest bytes one encoded entry takes (a 1-byte array header and 14 fields of at
/// least 1 byte each): no more entries than this fits are reserved up front.
const MIN_ENTRY_BYTES: usize = 15;

/// Decodes a tree from its metadata stream. The tree is not validated: see
/// [`validate`](super::validate::Validation::of) for what a restore accepts.
pub fn decode_tree(b: &[u8]) -> Result<Vec<Entry>> {
    let bad = |e: &dyn fmt::Display| Error::BadMetadata(format!("file tree: {e}"));
    // Read through a slice that advances, so that what follows the array shows. (Byte
    // strings are copied out of it as they come, never reserved by a claimed length.)
    let mut unread = b;
    let mut de = rmp_serde::Deserializer::new(&mut unread);
    let entries = TreeSeed {
        reserve: b.len() / MIN_ENTRY_BYTES,
    }
    .deserialize(&mut de)
    .map_err(|e| bad(&e))?;
    drop(de);
    let rest = unread.len();
    if rest != 0 {
        return Err(bad(&format_args!(
            "{rest} bytes follow the array of entries"
        )));
    }
    Ok(entries)
}

/// Reads the tree of a file-system snapshot.
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

/// The order of the walk (depth first, siblings by name) on relative paths: component
/// by component, so "a/b" comes before "a-c" although '/' sorts after '-'.
pub(crate) fn walk_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.split(|&c| c == b'/').cmp(b.split(|&c| c == b'/'))
}

/// The top-level array: reserves room for no more entries than the input can hold, and
/// names the entry an error is in.
struct TreeSeed {
    reserve: usize,
}

impl<'de> DeserializeSeed<'de> for TreeSeed {
    type Value = Vec<Entry>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Entry>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for TreeSeed {
    type Value = Vec<Entry>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of file tree entries")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Entry>, A::Error> {
        let claimed = seq.size_hint().unwrap_or(0);
        let mut out = Vec::with_capacity(claimed.min(self.reserve));
        loop {
            match seq.next_element::<Entry>() {
                Ok(Some(e)) => out.push(e),
                Ok(None) => return Ok(out),
                Err(e) => return Err(de::Error::custom(format_args!("entry {}: {e}", out.len()))),
            }
        }
    }
}

/// Decodes an array into a Vec that grows with what it really holds: a claimed length
/// reserves at most a few elements (serde alone would reserve up to 1 MiB).
fn growing_vec<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Growing<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Growing<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(8));
            while let Some(x) = seq.next_element()? {
                out.push(x);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Growing(std::marker::PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of docs/format.md ("File tree"), byte for byte: entries are positional
    /// arrays, integers in their shortest form, chunks `[offset, len, id]`.
    #[test]
    fn encoding_is_the_documented_layout() {
        let root = Entry {
            path: Vec::new(),
            kind: Kind::Dir,
            mode: 0o40755,
            uid: 0,
            gid: 0,
            mtime_ns: 1_700_000_000_000_000_000,
            atime_ns: 1_700_000_000_000_000_000,
            ctime_ns: 0,
            ino: 2,
            size: 0,
            rdev: 0,
            target: Vec::new(),
            xattrs: Vec::new(),
            chunks: Vec::new(),
        };
        let file = Entry {
            path: b"a".to_vec(),
            kind: Kind::File,
            mode: 0o100644,
            uid: 1000,
            gid: 1000,
            ino: 3,
            size: 5,
            xattrs: vec![(b"user.k".to_vec().into(), b"v".to_vec().into())],
            chunks: vec![FileChunk {
                offset: 0,
                len: 5,
                id: [0xab; 32],
            }],
            ..root.clone()
        };
        let documented = concat!(
            "929ec400a3646972cd41ed0000cf17979cfe362a0000cf17979cfe362a000000020000c4009090",
            "9ec40161a466696c65cd81a4cd03e8cd03e8cf17979cfe362a0000cf17979cfe362a0000000305",
            "00c4009192c406757365722e6bc4017691930005c420",
            "abababababababababababababababababababababababababababababababab",
        );
        let tree = vec![root, file];
        let encoded = encode_tree(&tree);
        let hex: String = encoded.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, documented);
        assert_eq!(decode_tree(&encoded).unwrap(), tree);
        // Trailing bytes and extra elements are not part of the format.
        let mut longer = encoded.clone();
        longer.push(0xc0);
        assert!(decode_tree(&longer).is_err());
        let mut extra = encoded.clone();
        extra[1] = 0x9f; // the root entry claims 15 elements
        assert!(decode_tree(&extra).is_err());
    }
}
