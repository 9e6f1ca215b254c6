//! Snapshot manifests: what a backup was of, when, and the chunks it needs.
//!
//! Stored as `snapshots/<BLAKE3 of the stored object>`, sealed (aad "snapshot") JSON.
//! `root` is the kind-specific metadata stream (a block map, a file tree) and `refs` is a
//! repository-level stream listing every chunk the snapshot needs (sorted 32-byte ids), so
//! that prune, check and copy work on any kind of snapshot without parsing its metadata.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::{ChunkId, SnapshotId};

/// What a snapshot holds, which says how its `root` stream is to be read. Stored as a
/// lowercase string; kinds this version does not know are kept as they are
/// ([`SnapshotKind::Other`]), so that listings, retention, check, copy and prune still
/// handle snapshots written by a newer Coffer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SnapshotKind {
    /// A block device or image: the root is a block map.
    Block,
    /// A file-system tree: the root is a file tree.
    Fs,
    /// Kubernetes objects: the root is a resources catalog.
    Resources,
    /// A kind this version does not know.
    Other(String),
}

impl SnapshotKind {
    /// The stored name.
    pub fn as_str(&self) -> &str {
        match self {
            SnapshotKind::Block => "block",
            SnapshotKind::Fs => "fs",
            SnapshotKind::Resources => "resources",
            SnapshotKind::Other(s) => s,
        }
    }
}

impl From<&str> for SnapshotKind {
    fn from(s: &str) -> SnapshotKind {
        match s {
            "block" => SnapshotKind::Block,
            "fs" => SnapshotKind::Fs,
            "resources" => SnapshotKind::Resources,
            other => SnapshotKind::Other(other.to_string()),
        }
    }
}

impl std::fmt::Display for SnapshotKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for SnapshotKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SnapshotKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SnapshotKind, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(SnapshotKind::from(s.as_ref()))
    }
}

impl Default for SnapshotKind {
    fn default() -> SnapshotKind {
        SnapshotKind::Other(String::new())
    }
}

/// A stored snapshot.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Snapshot {
    /// Name of the manifest object (not stored inside it).
    #[serde(skip)]
    pub id: SnapshotId,
    pub time: DateTime<Utc>,
    /// What the snapshot holds.
    pub kind: SnapshotKind,
    pub source: String,
    pub hostname: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub parent: Option<SnapshotId>,
    /// The kind-specific metadata stream's chunks.
    pub root: Vec<ChunkId>,
    /// The chunks of the reference list (every chunk id this snapshot needs).
    pub refs: Vec<ChunkId>,
    /// Kind-specific numbers (sizes, counts, duration), stored verbatim.
    #[serde(default)]
    pub summary: serde_json::Value,
    /// For snapshots copied from another repository: the id there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<SnapshotId>,
}

/// What a writer commits.
#[derive(Clone, Debug, Default)]
pub struct NewSnapshot {
    pub kind: SnapshotKind,
    pub source: String,
    pub tags: BTreeMap<String, String>,
    pub parent: Option<SnapshotId>,
    pub root: Vec<ChunkId>,
    pub summary: serde_json::Value,
    /// Overrides the snapshot time (default: now).
    pub time: Option<DateTime<Utc>>,
}

pub(crate) fn snapshot_path(id: &SnapshotId) -> String {
    format!("snapshots/{}", id.to_hex())
}

/// Encodes a sorted list of ids as the refs stream.
pub(crate) fn encode_refs(ids: &[ChunkId]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ids.len() * 32);
    for id in ids {
        out.extend_from_slice(&id.0);
    }
    out
}

pub(crate) fn decode_refs(b: &[u8]) -> Result<Vec<ChunkId>, String> {
    if !b.len().is_multiple_of(32) {
        return Err(format!(
            "refs stream length {} is not a multiple of 32",
            b.len()
        ));
    }
    Ok(b.chunks_exact(32)
        .map(|c| crate::Id(c.try_into().unwrap()))
        .collect())
}
