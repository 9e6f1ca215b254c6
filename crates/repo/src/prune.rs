//! Prune: remove the data no snapshot needs, safely while backups run.
//!
//! There is no exclusive lock. Safety comes from a two-step protocol with writer sessions
//! (see [`crate::writer`]):
//! 1. Prune computes what is unused, repacks the still-used chunks out of mostly-unused
//!    packs, and writes a *deletion plan* naming the packs to delete.
//! 2. It then lists the live writer sessions. A session that started before the plan was
//!    written might have deduplicated against a doomed pack, so while one is alive the plan's
//!    packs stay (they are deleted by a later prune). Sessions that start after the plan
//!    read it and never reuse its packs; at commit every session re-reads the plans and
//!    stores again any chunk it took from a doomed pack.
//! 3. Before deleting, prune re-reads the snapshots and the index and keeps any pack that
//!    holds the only copy of a chunk some snapshot needs.
//!
//! The index is then rewritten without the deleted packs (the new index file names the
//! files it supersedes; readers skip those), and only then are packs and old index files
//! deleted. A prune killed at any step leaves a repository that checks clean.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::Utc;
use serde::Serialize;

use crate::error::Result;
use crate::id::{ChunkId, Id};
use crate::index::{IndexFile, PackRecord};
use crate::pack::{self, BlobEntry};
use crate::repository::Repository;
use crate::writer::{self, DeletionPlan};

#[derive(Clone, Copy, Debug)]
pub struct PruneOptions {
    pub dry_run: bool,
    /// Repack packs whose unused share exceeds this percentage.
    pub max_unused_percent: u32,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            dry_run: false,
            max_unused_percent: 10,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneReport {
    pub snapshots: usize,
    pub chunks_used: usize,
    pub chunks_unused: usize,
    pub packs_total: usize,
    pub packs_unused: usize,
    pub packs_repacked: usize,
    pub bytes_repacked: u64,
    pub packs_deleted: usize,
    pub bytes_deleted: u64,
    pub orphan_packs_deleted: usize,
    /// Packs scheduled for deletion but kept because backups are running.
    pub packs_deferred: usize,
    pub index_files_written: usize,
    pub index_files_deleted: usize,
    /// Packs kept because of the repository's immutability period.
    pub packs_immutable: usize,
    pub live_sessions: usize,
    pub dry_run: bool,
}

/// Allowance for clock differences between writers and prune.
const CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(2);
/// Maximum entries per rewritten index file.
const INDEX_FILE_ENTRIES: usize = 200_000;

impl Repository {
    /// All chunks any snapshot needs.
    async fn used_chunks(&self) -> Result<(HashSet<ChunkId>, BTreeSet<Id>)> {
        let snaps = self.list_snapshots().await?;
        let mut used = HashSet::new();
        let mut ids = BTreeSet::new();
        for s in &snaps {
            used.extend(self.snapshot_chunks(s).await?);
            ids.insert(s.id);
        }
        Ok((used, ids))
    }

    pub async fn prune(&self, opts: PruneOptions) -> Result<PruneReport> {
        let mut report = PruneReport {
            dry_run: opts.dry_run,
            ..Default::default()
        };
        // Listing packs before anything else: any pack written after this point is not
        // considered an orphan by this run.
        let listed_packs: HashMap<Id, crate::backend::ObjectInfo> = self
            .backend()
            .list("packs/")
            .await?
            .into_iter()
            .filter_map(|o| pack::pack_id_from_path(&o.path).map(|id| (id, o)))
            .collect();
        let old_plans = writer::load_deletion_plans(self).await?;
        self.reload_index().await?;
        let table = self.index();
        let (used, seen_snapshots) = self.used_chunks().await?;
        report.snapshots = seen_snapshots.len();

        let doomed_before: HashSet<Id> = old_plans
            .iter()
            .flat_map(|(_, p)| p.packs.iter().copied())
            .collect();
        let immutable_limit = (self.config().immutable_days > 0)
            .then(|| Utc::now() - chrono::Duration::days(self.config().immutable_days as i64));
        let is_immutable = |pack: &Id| match (immutable_limit, listed_packs.get(pack)) {
            (Some(limit), Some(o)) => o.modified.is_none_or(|m| m > limit),
            (Some(_), None) => false,
            (None, _) => false,
        };

        // Usage per pack.
        #[derive(Default)]
        struct Usage {
            total: u64,
            used: u64,
            used_blobs: Vec<(ChunkId, crate::index::ChunkLocation)>,
            blobs: usize,
        }
        let mut usage: HashMap<Id, Usage> = HashMap::new();
        let mut seen_used: HashSet<ChunkId> = HashSet::new();
        for (id, loc) in table.iter() {
            let u = usage.entry(loc.pack).or_default();
            u.total += loc.length as u64;
            u.blobs += 1;
            if used.contains(&id) {
                u.used += loc.length as u64;
                u.used_blobs.push((id, loc));
                seen_used.insert(id);
            } else {
                report.chunks_unused += 1;
            }
        }
        report.chunks_used = seen_used.len();
        report.packs_total = usage.len();

        let mut new_doomed: Vec<Id> = Vec::new();
        let mut to_repack: Vec<Id> = Vec::new();
        for (pack, u) in &usage {
            if doomed_before.contains(pack) {
                continue;
            }
            if u.used == 0 {
                report.packs_unused += 1;
                if is_immutable(pack) {
                    report.packs_immutable += 1;
                } else {
                    new_doomed.push(*pack);
                }
            } else if u.used < u.total
                && (u.total - u.used) * 100 > u.total * opts.max_unused_percent as u64
            {
                if is_immutable(pack) {
                    report.packs_immutable += 1;
                } else {
                    to_repack.push(*pack);
                }
            }
        }
        report.packs_repacked = to_repack.len();
        if opts.dry_run {
            report.packs_deleted = new_doomed.len() + to_repack.len();
            return Ok(report);
        }

        // Repack the used chunks of mostly-unused packs into new packs.
        let w = self.writer_for("prune").await?;
        let own_session = w.session_id();
        let avoid: HashSet<Id> = doomed_before
            .iter()
            .chain(to_repack.iter())
            .chain(new_doomed.iter())
            .copied()
            .collect();
        w.exclude_packs(avoid.iter().copied());
        for pack in &to_repack {
            for (id, loc) in &usage[pack].used_blobs {
                let elsewhere = table.lookup(id).iter().any(|l| !avoid.contains(&l.pack));
                if elsewhere {
                    continue;
                }
                let data = self.read_chunk_at(id, loc).await?;
                report.bytes_repacked += data.len() as u64;
                w.add(loc.kind, data).await?;
            }
            new_doomed.push(*pack);
        }
        report.index_files_written += w.clone().finish().await?.len();

        // Step 1: publish the plan before looking at sessions.
        let new_plan = if new_doomed.is_empty() {
            None
        } else {
            let plan = DeletionPlan {
                created: Utc::now(),
                packs: new_doomed.clone(),
            };
            Some((writer::write_deletion_plan(self, &plan).await?, plan))
        };

        // Step 2: which plans' packs may go now.
        let starts = writer::live_session_starts(self, Some(own_session)).await?;
        report.live_sessions = starts.len();
        let oldest_live = starts.iter().min().copied();
        let mut all_plans = old_plans.clone();
        if let Some(p) = &new_plan {
            all_plans.push(p.clone());
        }
        let mut candidates: HashSet<Id> = HashSet::new();
        for (_, plan) in &all_plans {
            let ripe = match oldest_live {
                None => true,
                Some(oldest) => oldest > plan.created + CLOCK_SKEW,
            };
            if ripe {
                candidates.extend(plan.packs.iter().copied());
            }
        }
        let all_doomed: HashSet<Id> = all_plans
            .iter()
            .flat_map(|(_, p)| p.packs.iter().copied())
            .collect();
        report.packs_deferred = all_doomed.difference(&candidates).count();

        // Step 3: re-read snapshots and index; keep any pack with the only copy of a needed chunk.
        self.reload_index().await?;
        let table = self.index();
        let (used_now, _) = self.used_chunks().await?;
        let mut deletable: HashSet<Id> = HashSet::new();
        let mut by_pack: HashMap<Id, Vec<(ChunkId, u32)>> = HashMap::new();
        for (id, loc) in table.iter() {
            if candidates.contains(&loc.pack) {
                by_pack.entry(loc.pack).or_default().push((id, loc.length));
            }
        }
        for pack in &candidates {
            let blobs = by_pack.get(pack).map(|v| v.as_slice()).unwrap_or(&[]);
            let safe = blobs.iter().all(|(id, _)| {
                !used_now.contains(id)
                    || table
                        .lookup(id)
                        .iter()
                        .any(|l| !all_doomed.contains(&l.pack))
            });
            if safe {
                deletable.insert(*pack);
            }
        }

        // Orphans: packs listed at the start that no index names, when no backup runs.
        let indexed: HashSet<Id> = table.packs().map(|(id, _)| id).collect();
        let orphans: Vec<Id> = if starts.is_empty() {
            listed_packs
                .keys()
                .filter(|p| !indexed.contains(p) && !is_immutable(p))
                .copied()
                .collect()
        } else {
            Vec::new()
        };

        if !deletable.is_empty() {
            // Rewrite the index without the deleted packs, superseding every current file.
            let mut packs: HashMap<Id, PackRecord> = HashMap::new();
            let sizes: HashMap<Id, u64> = table.packs().collect();
            for (id, loc) in table.iter() {
                if deletable.contains(&loc.pack) {
                    continue;
                }
                packs
                    .entry(loc.pack)
                    .or_insert_with(|| PackRecord {
                        id: loc.pack,
                        size: sizes[&loc.pack],
                        blobs: Vec::new(),
                    })
                    .blobs
                    .push(BlobEntry {
                        kind: loc.kind,
                        id,
                        offset: loc.offset,
                        length: loc.length,
                        raw_length: loc.raw_length,
                    });
            }
            let superseded: Vec<Id> = table.sources.iter().copied().collect();
            let mut files: Vec<IndexFile> = Vec::new();
            let mut current = IndexFile::default();
            let mut n = 0;
            for (_, rec) in packs {
                n += rec.blobs.len();
                current.packs.push(rec);
                if n >= INDEX_FILE_ENTRIES {
                    files.push(std::mem::take(&mut current));
                    n = 0;
                }
            }
            files.push(current);
            // Only the last file supersedes: until it exists, readers keep the old files.
            files.last_mut().unwrap().supersedes = superseded.clone();
            for f in &files {
                self.write_index_file(f).await?;
                report.index_files_written += 1;
            }
            for pack in &deletable {
                let size = sizes.get(pack).copied().unwrap_or(0);
                self.backend().delete(&pack::pack_path(pack)).await?;
                report.packs_deleted += 1;
                report.bytes_deleted += size;
            }
            for old in &superseded {
                self.backend()
                    .delete(&crate::index::index_path(old))
                    .await?;
                report.index_files_deleted += 1;
            }
        }
        for pack in &orphans {
            let size = listed_packs.get(pack).map(|o| o.size).unwrap_or(0);
            self.backend().delete(&pack::pack_path(pack)).await?;
            report.orphan_packs_deleted += 1;
            report.bytes_deleted += size;
        }

        // Plans: keep what is not deleted yet in one new plan, drop the old ones.
        let remaining: Vec<Id> = all_doomed
            .iter()
            .filter(|p| !deletable.contains(p))
            .copied()
            .collect();
        let plan_paths: Vec<String> = all_plans.iter().map(|(p, _)| p.clone()).collect();
        let still_needed = !remaining.is_empty();
        if still_needed && plan_paths.len() > 1 {
            let created = all_plans
                .iter()
                .map(|(_, p)| p.created)
                .min()
                .unwrap_or_else(Utc::now);
            let plan = DeletionPlan {
                created,
                packs: remaining,
            };
            writer::write_deletion_plan(self, &plan).await?;
            for p in &plan_paths {
                self.backend().delete(p).await?;
            }
        } else if !still_needed {
            for p in &plan_paths {
                self.backend().delete(p).await?;
            }
        }

        self.cleanup_stale(&starts).await?;
        w.abort().await;
        self.reload_index().await?;
        Ok(report)
    }

    /// Removes session markers of long-dead writers and leftovers of interrupted writes.
    async fn cleanup_stale(&self, live: &[chrono::DateTime<Utc>]) -> Result<()> {
        let day = chrono::Duration::days(1);
        let now = Utc::now();
        for o in self.backend().list("sessions/").await? {
            if o.modified.is_some_and(|m| now - m > day) {
                self.backend().delete(&o.path).await?;
            }
        }
        if self.backend().is_local() && live.is_empty() {
            for o in self.backend().list(".tmp/").await? {
                if o.modified
                    .is_some_and(|m| now - m > chrono::Duration::hours(1))
                {
                    self.backend().delete(&o.path).await?;
                }
            }
        }
        Ok(())
    }
}
