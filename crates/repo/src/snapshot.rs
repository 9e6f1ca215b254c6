//! Snapshot manifests: what a backup was of, when, and the chunks it needs; and how the
//! repository stores, lists and finds them.
//!
//! Stored as `snapshots/<BLAKE3 of the stored object>`, sealed (aad "snapshot") JSON.
//! `root` is the kind-specific metadata stream (a block map, a file tree) and `refs` is a
//! repository-level stream listing every chunk the snapshot needs (strictly increasing
//! 32-byte ids), so that prune, check and copy work on any kind of snapshot without
//! parsing its metadata. The refs stream is decoded as it is read and refused at the
//! first id out of order, so a hostile manifest cannot make a reader buffer the same
//! chunk over and over.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::{ChunkId, Id, SnapshotId};
use crate::object::{ObjectKind, read_object, seal_object};
use crate::repository::{Repository, to_json};

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
    /// When the backup was taken.
    pub time: DateTime<Utc>,
    /// What the snapshot holds.
    pub kind: SnapshotKind,
    /// What was backed up (a path, a device, a namespace selection).
    pub source: String,
    /// The machine that wrote the snapshot.
    pub hostname: String,
    /// User tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The snapshot unchanged data was taken from, if any.
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
    /// What the snapshot holds.
    pub kind: SnapshotKind,
    /// What was backed up.
    pub source: String,
    /// User tags.
    pub tags: BTreeMap<String, String>,
    /// The parent snapshot, if any.
    pub parent: Option<SnapshotId>,
    /// The metadata stream's chunks.
    pub root: Vec<ChunkId>,
    /// Kind-specific numbers, stored verbatim.
    pub summary: serde_json::Value,
    /// Overrides the snapshot time (default: now).
    pub time: Option<DateTime<Utc>>,
}

pub(crate) fn snapshot_path(id: &SnapshotId) -> String {
    format!("snapshots/{}", id.to_hex())
}

/// Encodes a sorted list of distinct ids as the refs stream.
pub(crate) fn encode_refs(ids: &[ChunkId]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ids.len() * 32);
    for id in ids {
        out.extend_from_slice(&id.0);
    }
    out
}

/// Decodes the refs stream piece by piece, refusing it at the first id that is not
/// greater than the one before.
#[derive(Default)]
pub(crate) struct RefsDecoder {
    ids: Vec<ChunkId>,
    partial: Vec<u8>,
}

impl RefsDecoder {
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> std::result::Result<(), String> {
        if !self.partial.is_empty() {
            let take = (32 - self.partial.len()).min(bytes.len());
            self.partial.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.partial.len() < 32 {
                return Ok(());
            }
            let id = Id::from_slice(&self.partial);
            self.partial.clear();
            self.push(id)?;
        }
        let whole = bytes.len() / 32 * 32;
        self.ids.reserve(whole / 32);
        for c in bytes[..whole].chunks_exact(32) {
            self.push(Id::from_slice(c))?;
        }
        self.partial.extend_from_slice(&bytes[whole..]);
        Ok(())
    }

    fn push(&mut self, id: ChunkId) -> std::result::Result<(), String> {
        if let Some(last) = self.ids.last()
            && *last >= id
        {
            return Err(format!(
                "refs stream is not strictly increasing at entry {}",
                self.ids.len()
            ));
        }
        self.ids.push(id);
        Ok(())
    }

    pub(crate) fn finish(self) -> std::result::Result<Vec<ChunkId>, String> {
        if !self.partial.is_empty() {
            return Err("refs stream length is not a multiple of 32".into());
        }
        Ok(self.ids)
    }
}

/// Decodes a whole refs stream.
#[cfg(test)]
pub(crate) fn decode_refs(b: &[u8]) -> std::result::Result<Vec<ChunkId>, String> {
    let mut d = RefsDecoder::default();
    d.feed(b)?;
    d.finish()
}

/// Parses a manifest's plaintext (the id is the object's name, set by the caller).
pub(crate) fn decode_manifest(plain: &[u8]) -> std::result::Result<Snapshot, String> {
    serde_json::from_slice(plain).map_err(|e| format!("bad JSON: {e}"))
}

impl Repository {
    /// Reads one manifest; `size` from a listing saves a stat.
    pub(crate) async fn load_snapshot_sized(
        &self,
        id: &SnapshotId,
        size: Option<u64>,
    ) -> Result<Snapshot> {
        let path = snapshot_path(id);
        let (raw, plain) = read_object(
            &**self.storage(),
            self.keys(),
            ObjectKind::Snapshot,
            &path,
            size,
        )
        .await?;
        if Id::of_content(&raw) != *id {
            return Err(Error::corrupt(&path, "content does not match its name"));
        }
        let mut snap = decode_manifest(&plain).map_err(|r| Error::corrupt(&path, r))?;
        snap.id = *id;
        Ok(snap)
    }

    /// Reads one manifest.
    pub async fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        self.load_snapshot_sized(id, None).await
    }

    pub(crate) async fn write_snapshot(&self, snap: &Snapshot) -> Result<SnapshotId> {
        let sealed = seal_object(self.keys(), ObjectKind::Snapshot, &to_json(snap));
        let id = Id::of_content(&sealed);
        self.storage()
            .write_new(&snapshot_path(&id), Bytes::from(sealed))
            .await?;
        Ok(id)
    }

    /// The ids and stored sizes of all snapshots, from a listing.
    pub(crate) async fn snapshot_listing(&self) -> Result<Vec<(SnapshotId, u64)>> {
        let listed = self.storage().list("snapshots/").await?;
        Ok(listed
            .iter()
            .filter_map(|o| Some((o.path.strip_prefix("snapshots/")?.parse().ok()?, o.size)))
            .collect())
    }

    /// The ids of all snapshots, from a listing.
    pub async fn snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        Ok(self
            .snapshot_listing()
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    /// All snapshots, oldest first.
    pub async fn list_snapshots(&self) -> Result<Vec<Snapshot>> {
        let listing = self.snapshot_listing().await?;
        let mut snaps: Vec<Snapshot> = futures::stream::iter(listing)
            .map(|(id, size)| async move { self.load_snapshot_sized(&id, Some(size)).await })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        snaps.sort_by(|a, b| a.time.cmp(&b.time).then(a.id.cmp(&b.id)));
        Ok(snaps)
    }

    /// The snapshot named by a unique id prefix, or "latest".
    pub async fn find_snapshot(&self, prefix: &str) -> Result<Snapshot> {
        if prefix == "latest" {
            return self
                .list_snapshots()
                .await?
                .pop()
                .ok_or_else(|| Error::SnapshotNotFound(prefix.into()));
        }
        let p = prefix.to_ascii_lowercase();
        if p.is_empty() || !p.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::SnapshotNotFound(prefix.into()));
        }
        let found: Vec<(SnapshotId, u64)> = self
            .snapshot_listing()
            .await?
            .into_iter()
            .filter(|(id, _)| id.to_hex().starts_with(&p))
            .collect();
        match found.as_slice() {
            [] => Err(Error::SnapshotNotFound(prefix.into())),
            [(one, size)] => self.load_snapshot_sized(one, Some(*size)).await,
            _ => Err(Error::AmbiguousSnapshot(prefix.into())),
        }
    }

    /// The parent an incremental backup of (`kind`, `source`, `tags`) compares against:
    /// none, the newest snapshot with the same kind, source and tags
    /// ([`ParentChoice::Auto`]), or a named one, which must be of the same kind.
    pub async fn resolve_parent(
        &self,
        choice: &ParentChoice,
        kind: &SnapshotKind,
        source: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<Option<Snapshot>> {
        match choice {
            ParentChoice::None => Ok(None),
            ParentChoice::Auto => Ok(self
                .list_snapshots()
                .await?
                .into_iter()
                .rev()
                .find(|s| &s.kind == kind && s.source == source && &s.tags == tags)),
            ParentChoice::Id(id) => {
                let s = self.find_snapshot(id).await?;
                if &s.kind != kind {
                    return Err(Error::ParentKindMismatch {
                        parent: s.id.short(),
                        parent_kind: s.kind.to_string(),
                        kind: kind.to_string(),
                    });
                }
                Ok(Some(s))
            }
        }
    }

    /// Every chunk a snapshot needs: its metadata, its reference list's chunks and the
    /// chunks the list names; sorted, distinct.
    pub async fn snapshot_chunks(&self, snap: &Snapshot) -> Result<Vec<ChunkId>> {
        let path = snapshot_path(&snap.id);
        let mut decoder = RefsDecoder::default();
        let mut parts = futures::stream::iter(0..snap.refs.len())
            .map(|i| self.read_chunk(&snap.refs[i]))
            .buffered(4);
        while let Some(part) = parts.next().await {
            decoder.feed(&part?).map_err(|r| Error::corrupt(&path, r))?;
        }
        let mut ids = decoder.finish().map_err(|r| Error::corrupt(&path, r))?;
        ids.extend(snap.refs.iter().copied());
        ids.extend(snap.root.iter().copied());
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }
}

/// Which snapshot an incremental backup takes unchanged data from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ParentChoice {
    /// None: read everything.
    #[default]
    None,
    /// The newest snapshot of the same kind, source and tags.
    Auto,
    /// A snapshot id or unique prefix (or "latest").
    Id(String),
}

impl ParentChoice {
    /// `--parent` as the CLI takes it: absent, `auto`, or an id.
    pub fn from_flag(flag: Option<&str>) -> ParentChoice {
        match flag {
            None => ParentChoice::None,
            Some("auto") => ParentChoice::Auto,
            Some(id) => ParentChoice::Id(id.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sorted_ids(n: usize) -> Vec<ChunkId> {
        let mut ids: Vec<ChunkId> = (0..n).map(|_| Id::random()).collect();
        ids.sort();
        ids.dedup();
        ids
    }

    fn manifest_strategy() -> impl Strategy<Value = Snapshot> {
        (
            0i64..4_000_000_000,
            "[a-z]{0,10}",
            ".{0,40}",
            proptest::collection::btree_map("[a-z]{1,5}", ".{0,8}", 0..4),
            proptest::option::of(any::<[u8; 32]>()),
            proptest::collection::vec(any::<[u8; 32]>(), 0..5),
            proptest::collection::vec(any::<[u8; 32]>(), 0..5),
            proptest::option::of(any::<[u8; 32]>()),
            any::<u64>(),
        )
            .prop_map(|(t, kind, source, tags, parent, root, refs, original, n)| {
                Snapshot {
                    id: Id::default(),
                    time: DateTime::from_timestamp(t, 0).unwrap_or_default(),
                    kind: SnapshotKind::from(kind.as_str()),
                    source,
                    hostname: "h".into(),
                    tags,
                    parent: parent.map(Id),
                    root: root.into_iter().map(Id).collect(),
                    refs: refs.into_iter().map(Id).collect(),
                    summary: serde_json::json!({"bytes_total": n}),
                    original: original.map(Id),
                }
            })
    }

    proptest! {
        #![proptest_config(crate::limits::proptest_config())]

        #[test]
        fn refs_round_trip_in_any_pieces(n in 0usize..200, cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6)) {
            let ids = sorted_ids(n);
            let enc = encode_refs(&ids);
            prop_assert_eq!(decode_refs(&enc).unwrap(), ids.clone());
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(enc.len() + 1)).collect();
            points.sort();
            let mut d = RefsDecoder::default();
            let mut at = 0;
            for p in points.into_iter().chain([enc.len()]) {
                d.feed(&enc[at..p]).unwrap();
                at = p;
            }
            prop_assert_eq!(d.finish().unwrap(), ids);
        }

        #[test]
        fn refs_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(ids) = decode_refs(&bytes) {
                prop_assert!(ids.windows(2).all(|w| w[0] < w[1]));
            }
        }

        #[test]
        fn mutated_refs_stay_increasing_or_error(n in 2usize..50, flip in any::<prop::sample::Index>(), bit in 0u8..8, cut in any::<prop::sample::Index>()) {
            let enc = encode_refs(&sorted_ids(n));
            let mut bad = enc.clone();
            let i = flip.index(bad.len());
            bad[i] ^= 1 << bit;
            if let Ok(ids) = decode_refs(&bad) {
                prop_assert!(ids.windows(2).all(|w| w[0] < w[1]));
            }
            let c = cut.index(enc.len());
            if c % 32 != 0 {
                prop_assert!(decode_refs(&enc[..c]).is_err());
            }
            // A duplicated id (what a manifest repeating a refs chunk produces) is refused.
            let mut dup = enc.clone();
            dup.extend_from_slice(&enc[..32]);
            prop_assert!(decode_refs(&dup).is_err());
        }

        #[test]
        fn manifests_round_trip(s in manifest_strategy()) {
            let back = decode_manifest(&to_json(&s)).unwrap();
            prop_assert_eq!(to_json(&back), to_json(&s));
        }

        #[test]
        fn manifest_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_manifest(&bytes);
        }

        #[test]
        fn mutated_manifests_error_or_decode(s in manifest_strategy(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
            let json = to_json(&s);
            let mut bad = json.clone();
            let i = at.index(bad.len());
            bad[i] = byte;
            let _ = decode_manifest(&bad);
            let c = cut.index(json.len());
            prop_assert!(decode_manifest(&json[..c]).is_err());
        }
    }

    #[test]
    fn deeply_nested_summary_is_an_error_not_a_stack_overflow() {
        let mut json = String::from(
            r#"{"time":"2026-01-01T00:00:00Z","kind":"fs","source":"","hostname":"","parent":null,"root":[],"refs":[],"summary":"#,
        );
        json.push_str(&"[".repeat(100_000));
        assert!(decode_manifest(json.as_bytes()).is_err());
    }
}
