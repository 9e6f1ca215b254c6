//! Differences between two file trees, path by path (`coffer diff`).

use std::collections::BTreeMap;

use coffer_repo::{Repository, Snapshot};
use serde::Serialize;

use super::tree::{Entry, load_tree};
use crate::Result;

/// What changed at a path. Serialises as the lowercase name (`"added"`, `"removed"`,
/// `"modified"`, `"metadata"`): `coffer diff --json` prints these strings, a contract.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Only in the second tree.
    Added,
    /// Only in the first tree.
    Removed,
    /// Content changed: kind, size, data chunks or link target.
    Modified,
    /// Same content, other metadata: mode, owner, modification time or xattrs.
    Metadata,
}

impl ChangeKind {
    /// The name as `--json` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Removed => "removed",
            ChangeKind::Modified => "modified",
            ChangeKind::Metadata => "metadata",
        }
    }
}

impl std::fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change between two file trees.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Change {
    /// The entry's path relative to the tree's root (lossy UTF-8).
    pub path: String,
    /// What changed.
    pub change: ChangeKind,
}

/// The changes from snapshot `a` to snapshot `b` (both file-system snapshots), sorted by
/// path.
pub async fn diff(repo: &Repository, a: &Snapshot, b: &Snapshot) -> Result<Vec<Change>> {
    let ta = load_tree(repo, a).await?;
    let tb = load_tree(repo, b).await?;
    Ok(diff_trees(&ta, &tb))
}

/// The changes from tree `ta` to tree `tb`, sorted by path.
pub fn diff_trees(ta: &[Entry], tb: &[Entry]) -> Vec<Change> {
    let ma: BTreeMap<&[u8], &Entry> = ta.iter().map(|e| (e.path.as_slice(), e)).collect();
    let mb: BTreeMap<&[u8], &Entry> = tb.iter().map(|e| (e.path.as_slice(), e)).collect();
    let mut out = Vec::new();
    let change = |p: &[u8], change| Change {
        path: String::from_utf8_lossy(p).into_owned(),
        change,
    };
    for (p, ea) in &ma {
        match mb.get(p) {
            None => out.push(change(p, ChangeKind::Removed)),
            Some(eb) => {
                if ea.kind != eb.kind
                    || ea.chunks != eb.chunks
                    || ea.size != eb.size
                    || ea.target != eb.target
                {
                    out.push(change(p, ChangeKind::Modified));
                } else if ea.mode != eb.mode
                    || ea.uid != eb.uid
                    || ea.gid != eb.gid
                    || ea.mtime_ns != eb.mtime_ns
                    || ea.xattrs != eb.xattrs
                {
                    out.push(change(p, ChangeKind::Metadata));
                }
            }
        }
    }
    for p in mb.keys() {
        if !ma.contains_key(p) {
            out.push(change(p, ChangeKind::Added));
        }
    }
    out.sort_by(|x, y| x.path.cmp(&y.path));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::Kind;

    fn entry(path: &str, kind: Kind, size: u64, mode: u32) -> Entry {
        Entry {
            size,
            ..Entry::new(path, kind, mode)
        }
    }

    #[test]
    fn change_kinds_serialise_as_the_json_contract_strings() {
        let a = [
            entry("", Kind::Dir, 0, 0o755),
            entry("gone", Kind::File, 1, 0o644),
            entry("grown", Kind::File, 1, 0o644),
            entry("chmod", Kind::File, 1, 0o644),
            entry("same", Kind::File, 1, 0o644),
        ];
        let b = [
            entry("", Kind::Dir, 0, 0o755),
            entry("chmod", Kind::File, 1, 0o600),
            entry("grown", Kind::File, 2, 0o644),
            entry("new", Kind::Dir, 0, 0o755),
            entry("same", Kind::File, 1, 0o644),
        ];
        let json = serde_json::to_value(diff_trees(&a, &b)).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"path": "chmod", "change": "metadata"},
                {"path": "gone", "change": "removed"},
                {"path": "grown", "change": "modified"},
                {"path": "new", "change": "added"},
            ])
        );
        for k in [
            ChangeKind::Added,
            ChangeKind::Removed,
            ChangeKind::Modified,
            ChangeKind::Metadata,
        ] {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }
}
