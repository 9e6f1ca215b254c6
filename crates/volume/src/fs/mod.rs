//! File-system trees: every entry with its metadata, file contents as content-defined
//! chunks of their data extents (holes are skipped, so sparse files stay sparse).
//!
//! The seams:
//! - [`tree`]: the format of the snapshot's metadata stream (a MessagePack array of
//!   [`Entry`], docs/format.md) and its decoding;
//! - [`validate`]: the rules a tree must follow to be restored (the tree is untrusted);
//! - [`backup`](mod@backup): walking a directory and storing what changed;
//! - [`restore`](mod@restore): recreating a tree under a target directory;
//! - `select`: which entries `--include` globs pick;
//! - [`diff`](mod@diff): what changed between two trees.

pub mod backup;
pub mod diff;
pub mod restore;
mod select;
pub mod tree;
pub mod validate;

pub use backup::{FsBackup, backup};
pub use diff::{Change, ChangeKind, diff};
pub use restore::{FsRestore, restore};
pub use tree::{Entry, FileChunk, Kind, decode_tree, encode_tree, load_tree};
pub use validate::{EntryProblem, PathProblem, Validation};
