//! Check: verify the repository's structure and, optionally, every stored byte.
//!
//! Structure: every index file opens; every indexed pack exists with the indexed size and
//! a header that agrees with the index; every snapshot opens and every chunk it needs is
//! indexed; every deletion plan opens; key slots that cannot be used are reported as
//! warnings (anyone with write access can add one); the local index cache matches its
//! checksum (a damaged one is rebuilt). With `read_data` (all packs, or a random fraction), whole packs are read and
//! every blob is decrypted, decompressed and hashed. Damage is reported per pack, with the
//! snapshots that need a chunk whose only copies are damaged.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::{ChunkId, Id, SnapshotId};
use crate::pack;
use crate::progress::{Progress, Unit};
use crate::repository::Repository;
use crate::snapshot::{Snapshot, SnapshotKind};

/// What `check` verifies beyond the structure.
#[derive(Clone, Default)]
pub struct CheckOptions {
    /// Fraction of packs (0..=1) whose every byte is read and verified; None reads none.
    pub read_data: Option<f64>,
    /// Kind-specific checks of snapshots' metadata (block maps, file trees, catalogs),
    /// supplied by the layers that own those formats: the repository cannot read them.
    pub metadata: Vec<Arc<dyn MetadataCheck>>,
}

/// A check of the metadata stream of snapshots of some kinds, by the layer that owns the
/// format: it decodes the stream as a restore would and reports everything a restore
/// would refuse or get wrong.
pub trait MetadataCheck: Send + Sync {
    /// Whether this check reads snapshots of `kind`.
    fn handles(&self, kind: &SnapshotKind) -> bool;
    /// The problems found in `snap`'s metadata, each one line; empty when it is valid.
    /// `Err` only when the check itself could not run (storage unreachable).
    fn check<'a>(
        &'a self,
        repo: &'a Repository,
        snap: &'a Snapshot,
    ) -> BoxFuture<'a, Result<Vec<String>>>;
}

/// What `check` found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    /// Problems that lose data or make snapshots unrestorable, one line each.
    pub errors: Vec<String>,
    /// Things worth knowing that lose nothing (leftovers, unusable key slots).
    pub warnings: Vec<String>,
    /// Snapshots checked.
    pub snapshots: usize,
    /// Index files checked.
    pub index_files: usize,
    /// Packs in the index.
    pub packs: usize,
    /// Packs read whole.
    pub packs_read: usize,
    /// Bytes read while reading packs whole.
    pub bytes_read: u64,
    /// Index entries.
    pub chunks: usize,
    /// Packs found missing, truncated or with damaged blobs.
    pub damaged_packs: Vec<Id>,
    /// Snapshots that cannot be fully restored.
    pub affected_snapshots: Vec<SnapshotId>,
}

impl CheckReport {
    /// True when no error was found.
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

impl Repository {
    /// Verifies the repository; reports "reading" (packs read whole) and "snapshots"
    /// stages to `progress`.
    pub async fn check(&self, opts: CheckOptions, progress: &dyn Progress) -> Result<CheckReport> {
        let mut r = CheckReport::default();
        let mut damaged: BTreeMap<Id, String> = BTreeMap::new();
        let mut bad_blobs: HashSet<(Id, ChunkId)> = HashSet::new();
        let mut partly_damaged: HashSet<Id> = HashSet::new();

        // Key slots: a slot that cannot be used hides nothing (every slot is tried), but
        // it is reported, since anyone with write access to keys/ can add one.
        let mut slot_problems: BTreeMap<String, String> = BTreeMap::new();
        for e in self.list_keys().await? {
            if let Some(p) = e.problem {
                slot_problems.insert(e.id, p);
            }
        }
        for p in self.key_slot_problems() {
            slot_problems
                .entry(p.id.clone())
                .or_insert_with(|| p.problem.clone());
        }
        for (id, p) in &slot_problems {
            let msg = format!(
                "key slot {:?} is unusable and skipped: {p}",
                crate::keys::short(id)
            );
            progress.warn(&format!("keys/{id}"), &msg);
            r.warnings.push(msg);
        }
        // Deletion plans: writers and prune refuse to run past one they cannot read.
        if let Err(e) = crate::writer::load_deletion_plans(self).await {
            r.errors.push(format!("deletion plans: {e}"));
        }

        // Index files, one by one, so a damaged one is named.
        let index_ids: Vec<Id> = self
            .storage()
            .list("index/")
            .await?
            .iter()
            .filter_map(|o| o.path.rsplit('/').next()?.parse().ok())
            .collect();
        r.index_files = index_ids.len();
        let mut indexed: HashMap<Id, (u64, Vec<pack::BlobEntry>)> = HashMap::new();
        for id in &index_ids {
            match self.load_index_file(id).await {
                Ok(f) => {
                    for p in f.packs {
                        indexed.insert(p.id, (p.size, p.blobs));
                    }
                }
                Err(e) => r.errors.push(format!("index file {}: {e}", id.short())),
            }
        }
        if let Err(e) = self.reload_index().await {
            r.errors.push(format!("cannot load the index: {e}"));
            return Ok(r);
        }
        match self.verify_index_cache().await {
            Ok(Some(problem)) => {
                let msg =
                    format!("the local index cache was damaged ({problem}) and has been rebuilt");
                progress.warn("index cache", &msg);
                r.warnings.push(msg);
            }
            Ok(None) => {}
            Err(e) => r
                .errors
                .push(format!("cannot rebuild the local index cache: {e}")),
        }
        let table = self.index();
        r.chunks = table.len();

        // Packs: existence and size.
        let listed: HashMap<Id, u64> = self
            .storage()
            .list("packs/")
            .await?
            .into_iter()
            .filter_map(|o| pack::pack_id_from_path(&o.path).map(|id| (id, o.size)))
            .collect();
        let table_packs: Vec<(Id, u64)> = table.packs().collect();
        r.packs = table_packs.len();
        for (pack, size) in &table_packs {
            match listed.get(pack) {
                None => {
                    damaged.insert(*pack, "missing".into());
                }
                Some(actual) if actual != size => {
                    damaged.insert(
                        *pack,
                        format!("size {actual} differs from the indexed {size} (truncated or overwritten)"),
                    );
                }
                Some(_) => {}
            }
        }
        let table_set: HashSet<Id> = table_packs.iter().map(|(p, _)| *p).collect();
        let unindexed = listed.keys().filter(|p| !table_set.contains(p)).count();
        if unindexed > 0 {
            r.warnings.push(format!(
                "{unindexed} packs are not in the index (left by interrupted or running backups; prune removes them)"
            ));
        }

        // Pack headers agree with the index (structure), unless the pack is read whole below.
        let read_set: HashSet<Id> = match opts.read_data {
            None => HashSet::new(),
            Some(f) if f >= 1.0 => table_set.clone(),
            Some(f) => table_packs
                .iter()
                .filter(|_| rand::random::<f64>() < f)
                .map(|(p, _)| *p)
                .collect(),
        };
        let header_checks: Vec<(Id, u64)> = table_packs
            .iter()
            .filter(|(p, _)| !damaged.contains_key(p) && !read_set.contains(p))
            .copied()
            .collect();
        let results: Vec<(Id, Result<Vec<pack::BlobEntry>>)> = futures::stream::iter(header_checks)
            .map(|(p, size)| async move { (p, self.read_pack_header(&p, size).await) })
            .buffer_unordered(8)
            .collect()
            .await;
        for (p, res) in results {
            match res {
                Ok(entries) => {
                    if let Some(msg) = compare_with_index(indexed.get(&p), &entries) {
                        damaged.insert(p, msg);
                    }
                }
                Err(Error::Corrupt { reason, .. }) => {
                    damaged.insert(p, reason);
                }
                Err(e) => return Err(e),
            }
        }

        // Read data.
        let to_read: Vec<(Id, u64)> = table_packs
            .iter()
            .filter(|(p, _)| read_set.contains(p) && !damaged.contains_key(p))
            .copied()
            .collect();
        progress.stage("reading", Unit::Items, Some(to_read.len() as u64));
        let mut reads = futures::stream::iter(to_read)
            .map(|(p, _)| {
                let expected = indexed.get(&p).map(|(_, b)| b.clone()).unwrap_or_default();
                async move { (p, self.verify_pack(&p, expected).await) }
            })
            .buffer_unordered(2);
        while let Some((p, res)) = reads.next().await {
            progress.advance(1);
            match res {
                Ok((bytes, bad)) => {
                    r.packs_read += 1;
                    r.bytes_read += bytes;
                    if !bad.is_empty() {
                        let first = &bad[0];
                        damaged.insert(
                            p,
                            format!(
                                "{} damaged blob(s), e.g. chunk {}: {}",
                                bad.len(),
                                first.0.short(),
                                first.1
                            ),
                        );
                        bad_blobs.extend(bad.iter().map(|(id, _)| (p, *id)));
                        partly_damaged.insert(p);
                    }
                }
                Err(Error::Corrupt { reason, .. }) => {
                    damaged.insert(p, reason);
                }
                Err(Error::MissingObject { .. }) => {
                    damaged.insert(p, "missing".into());
                }
                Err(e) => return Err(e),
            }
        }

        // Chunks with no intact copy. A pack whose header or object is bad loses all its
        // chunks; a pack with some bad blobs loses only those.
        let damaged_whole: HashSet<Id> = damaged
            .keys()
            .filter(|p| !partly_damaged.contains(*p))
            .copied()
            .collect();
        let copy_ok = |id: &ChunkId, pack: &Id| -> bool {
            !damaged_whole.contains(pack) && !bad_blobs.contains(&(*pack, *id))
        };
        let chunk_ok =
            |id: &ChunkId| -> bool { table.lookup(id).iter().any(|l| copy_ok(id, &l.pack)) };
        // Which damaged packs each affected snapshot depends on.
        let mut affected_by_pack: HashMap<Id, Vec<SnapshotId>> = HashMap::new();

        // Snapshots.
        let snap_ids = self.snapshot_ids().await?;
        r.snapshots = snap_ids.len();
        progress.stage("snapshots", Unit::Items, Some(snap_ids.len() as u64));
        for sid in snap_ids {
            progress.advance(1);
            let snap = match self.load_snapshot(&sid).await {
                Ok(s) => s,
                Err(e) => {
                    r.errors.push(format!("snapshot {}: {e}", sid.short()));
                    r.affected_snapshots.push(sid);
                    continue;
                }
            };
            let needed = match self.snapshot_chunks(&snap).await {
                Ok(n) => n,
                Err(e) => {
                    r.errors.push(format!(
                        "snapshot {}: cannot read its chunk list: {e}",
                        sid.short()
                    ));
                    r.affected_snapshots.push(sid);
                    continue;
                }
            };
            let missing: Vec<&ChunkId> = needed
                .iter()
                .filter(|id| table.lookup(id).is_empty())
                .collect();
            if let Some(first) = missing.first() {
                r.errors.push(format!(
                    "snapshot {} needs {} chunk(s) missing from the index, e.g. {}",
                    sid.short(),
                    missing.len(),
                    first.short()
                ));
                r.affected_snapshots.push(sid);
                continue;
            }
            for m in opts.metadata.iter().filter(|m| m.handles(&snap.kind)) {
                let problems = m.check(self, &snap).await?;
                if !problems.is_empty() {
                    r.errors.extend(
                        problems
                            .iter()
                            .map(|p| format!("snapshot {} ({}): {p}", sid.short(), snap.kind)),
                    );
                    if !r.affected_snapshots.contains(&sid) {
                        r.affected_snapshots.push(sid);
                    }
                }
            }
            let mut blamed: HashSet<Id> = HashSet::new();
            for id in needed.iter().filter(|id| !chunk_ok(id)) {
                blamed.extend(table.lookup(id).iter().map(|l| l.pack));
            }
            if !blamed.is_empty() {
                r.affected_snapshots.push(sid);
                for p in blamed {
                    affected_by_pack.entry(p).or_default().push(sid);
                }
            }
        }

        for (p, why) in &damaged {
            let affected: Vec<String> = affected_by_pack
                .get(p)
                .into_iter()
                .flatten()
                .map(|s| s.short())
                .collect();
            r.errors.push(format!(
                "pack {} is damaged: {why}; affected snapshots: {}",
                p.to_hex(),
                if affected.is_empty() {
                    "none".to_string()
                } else {
                    affected.join(", ")
                }
            ));
            r.damaged_packs.push(*p);
        }
        Ok(r)
    }

    /// Reads a whole pack and verifies every blob; returns (bytes, damaged blobs).
    async fn verify_pack(
        &self,
        p: &Id,
        expected: Vec<pack::BlobEntry>,
    ) -> Result<(u64, Vec<(ChunkId, String)>)> {
        let path = pack::pack_path(p);
        let data = self.storage().read(&path).await?;
        let keys = self.inner.clone();
        let pid = *p;
        tokio::task::spawn_blocking(move || {
            let entries =
                pack::parse_pack(&keys.keys, &pid, &data).map_err(|r| Error::corrupt(&path, r))?;
            let mut bad = Vec::new();
            for e in &entries {
                let sealed = &data[e.offset as usize..e.offset as usize + e.length as usize];
                if let Err(reason) = pack::open_blob(&keys.keys, &e.id, sealed, e.raw_length) {
                    bad.push((e.id, reason));
                }
            }
            // Index entries that point into this pack but are not in its header.
            if let Some(msg) = compare_with_index(Some(&(0, expected)), &entries) {
                bad.push((Id::default(), msg));
            }
            Ok((data.len() as u64, bad))
        })
        .await
        .map_err(|e| Error::task("verifying a pack", e))?
    }
}

/// Compares a pack's header with what the index files say about the pack.
fn compare_with_index(
    indexed: Option<&(u64, Vec<pack::BlobEntry>)>,
    header: &[pack::BlobEntry],
) -> Option<String> {
    let in_header: HashMap<ChunkId, (u32, u32)> = header
        .iter()
        .map(|e| (e.id, (e.offset, e.length)))
        .collect();
    for e in indexed.map(|(_, b)| b.as_slice()).unwrap_or(&[]) {
        match in_header.get(&e.id) {
            Some(&(o, l)) if o == e.offset && l == e.length => {}
            _ => {
                return Some(format!(
                    "header does not list chunk {} where the index puts it",
                    e.id.short()
                ));
            }
        }
    }
    None
}
