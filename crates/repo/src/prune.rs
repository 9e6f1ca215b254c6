//! Prune: remove the data no snapshot needs, safely while backups run, as a plan
//! ([`PrunePlan`], what `prune --dry-run` shows) and then its application.
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
//!
//! Because the application re-reads what it must before deleting anything, a plan made
//! earlier (even one stored and approved later) is safe to apply: at worst it deletes
//! less than it listed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::{ChunkId, Id};
use crate::index::{IndexFile, PackRecord};
use crate::pack::{self, BlobEntry};
use crate::progress::{Progress, Unit};
use crate::repository::Repository;
use crate::writer::{self, DeletionPlan};

/// How prune decides.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct PruneOptions {
    /// Plan only: [`Repository::prune`] returns the plan's numbers and deletes nothing.
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

/// A pack a plan names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedPack {
    /// The pack.
    pub id: Id,
    /// Its size in bytes.
    pub size: u64,
    /// Bytes of its blobs some snapshot needs.
    pub used_bytes: u64,
}

/// What a prune will do, computed without changing anything.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PrunePlan {
    /// When the plan was made.
    pub created: DateTime<Utc>,
    /// The options it was made with.
    pub max_unused_percent: u32,
    /// Snapshots read.
    pub snapshots: usize,
    /// Distinct chunks some snapshot needs.
    pub chunks_used: usize,
    /// Index entries no snapshot needs.
    pub chunks_unused: usize,
    /// Packs in the index.
    pub packs_total: usize,
    /// Packs no snapshot needs: scheduled for deletion.
    pub delete: Vec<PlannedPack>,
    /// Packs mostly unused: their used chunks are copied into new packs, then the packs
    /// are scheduled for deletion.
    pub repack: Vec<PlannedPack>,
    /// Packs no index file names (left by interrupted writers): deleted when no backup
    /// runs at the time the plan is applied.
    pub orphans: Vec<PlannedPack>,
    /// Packs earlier prunes scheduled and that still wait for running backups to end.
    pub scheduled: Vec<Id>,
    /// Packs kept because of the repository's immutability period.
    pub immutable: Vec<Id>,
    /// The used chunks as the plan saw them, so that applying it at once does not read
    /// every snapshot again (absent in a deserialised plan: then they are read again).
    #[serde(skip)]
    used: Option<Arc<HashSet<ChunkId>>>,
}

impl PrunePlan {
    /// Bytes the plan deletes outright (unused and orphan packs).
    pub fn bytes_to_delete(&self) -> u64 {
        self.delete
            .iter()
            .chain(&self.orphans)
            .map(|p| p.size)
            .sum()
    }
    /// Bytes the plan copies out of repacked packs.
    pub fn bytes_to_repack(&self) -> u64 {
        self.repack.iter().map(|p| p.used_bytes).sum()
    }
}

/// What a prune did (or, for a dry run, would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneReport {
    /// Snapshots read.
    pub snapshots: usize,
    /// Distinct chunks some snapshot needs.
    pub chunks_used: usize,
    /// Index entries no snapshot needs.
    pub chunks_unused: usize,
    /// Packs in the index.
    pub packs_total: usize,
    /// Packs no snapshot needs.
    pub packs_unused: usize,
    /// Packs whose used chunks were copied out.
    pub packs_repacked: usize,
    /// Bytes copied while repacking.
    pub bytes_repacked: u64,
    /// Packs deleted (dry run: that the plan schedules).
    pub packs_deleted: usize,
    /// Bytes of the deleted packs.
    pub bytes_deleted: u64,
    /// Unindexed leftovers deleted.
    pub orphan_packs_deleted: usize,
    /// Packs scheduled for deletion but kept because backups are running.
    pub packs_deferred: usize,
    /// Index files written.
    pub index_files_written: usize,
    /// Index files deleted.
    pub index_files_deleted: usize,
    /// Packs kept because of the repository's immutability period.
    pub packs_immutable: usize,
    /// Writer sessions running at the time.
    pub live_sessions: usize,
    /// True for a dry run.
    pub dry_run: bool,
    /// The plan (dry runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<PrunePlan>,
}

/// Allowance for clock differences between writers and prune.
const CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(2);
/// Maximum entries per rewritten index file.
const INDEX_FILE_ENTRIES: usize = 200_000;

impl Repository {
    /// All chunks any snapshot needs, and the snapshot ids read.
    async fn used_chunks(
        &self,
        progress: Option<&dyn Progress>,
    ) -> Result<(HashSet<ChunkId>, BTreeSet<Id>)> {
        let snaps = self.list_snapshots().await?;
        if let Some(p) = progress {
            p.stage("reading snapshots", Unit::Items, Some(snaps.len() as u64));
        }
        let mut used = HashSet::new();
        let mut ids = BTreeSet::new();
        for s in &snaps {
            used.extend(self.snapshot_chunks(s).await?);
            ids.insert(s.id);
            if let Some(p) = progress {
                p.advance(1);
            }
        }
        Ok((used, ids))
    }

    /// Prune refuses while an index file cannot be read: its packs would look unused.
    fn refuse_if_index_unreadable(&self) -> Result<()> {
        if let Some((id, why)) = self.unreadable_index_files().into_iter().next() {
            return Err(Error::PruneUnsafe(format!(
                "index file {} cannot be read ({why}); run `coffer check` and repair or remove it first",
                id.short()
            )));
        }
        Ok(())
    }

    /// Plans a prune: what is unused, what to repack, which leftovers to remove. Changes
    /// nothing. Reports a "reading snapshots" stage.
    pub async fn plan_prune(
        &self,
        opts: &PruneOptions,
        progress: &dyn Progress,
    ) -> Result<PrunePlan> {
        // Listing packs before anything else: a pack written after this point is never
        // taken for a leftover.
        let listed: HashMap<Id, crate::storage::ObjectInfo> = self
            .storage()
            .list("packs/")
            .await?
            .into_iter()
            .filter_map(|o| pack::pack_id_from_path(&o.path).map(|id| (id, o)))
            .collect();
        let old_plans = writer::load_deletion_plans(self).await?;
        self.reload_index().await?;
        self.refuse_if_index_unreadable()?;
        let table = self.index();
        let (used, seen_snapshots) = self.used_chunks(Some(progress)).await?;

        let scheduled: HashSet<Id> = old_plans
            .iter()
            .flat_map(|(_, p)| p.packs.iter().copied())
            .collect();
        let is_immutable = immutability(self, &listed);

        #[derive(Default)]
        struct Usage {
            total: u64,
            used: u64,
        }
        let mut usage: HashMap<Id, Usage> = HashMap::new();
        let mut seen_used: HashSet<ChunkId> = HashSet::new();
        let mut chunks_unused = 0;
        for (id, loc) in table.iter() {
            let u = usage.entry(loc.pack).or_default();
            u.total += loc.length as u64;
            if used.contains(&id) {
                u.used += loc.length as u64;
                seen_used.insert(id);
            } else {
                chunks_unused += 1;
            }
        }
        let sizes: HashMap<Id, u64> = table.packs().collect();
        let planned = |id: &Id, used_bytes: u64| PlannedPack {
            id: *id,
            size: sizes.get(id).copied().unwrap_or(0),
            used_bytes,
        };
        let (mut delete, mut repack, mut immutable) = (Vec::new(), Vec::new(), Vec::new());
        for (pack, u) in &usage {
            if scheduled.contains(pack) {
                continue;
            }
            let unused = u.total - u.used;
            let wasteful = u.used == 0
                || (u.used < u.total && unused * 100 > u.total * opts.max_unused_percent as u64);
            if !wasteful {
                continue;
            }
            if is_immutable(pack) {
                immutable.push(*pack);
            } else if u.used == 0 {
                delete.push(planned(pack, 0));
            } else {
                repack.push(planned(pack, u.used));
            }
        }
        let orphans: Vec<PlannedPack> = listed
            .iter()
            .filter(|(p, _)| !sizes.contains_key(p) && !is_immutable(p))
            .map(|(p, o)| PlannedPack {
                id: *p,
                size: o.size,
                used_bytes: 0,
            })
            .collect();
        for v in [&mut delete, &mut repack] {
            v.sort_by_key(|p| p.id);
        }
        immutable.sort();
        let mut scheduled: Vec<Id> = scheduled.into_iter().collect();
        scheduled.sort();
        Ok(PrunePlan {
            created: Utc::now(),
            max_unused_percent: opts.max_unused_percent,
            snapshots: seen_snapshots.len(),
            chunks_used: seen_used.len(),
            chunks_unused,
            packs_total: usage.len(),
            delete,
            repack,
            orphans,
            scheduled,
            immutable,
            used: Some(Arc::new(used)),
        })
    }

    /// Plans and, unless `opts.dry_run`, applies a prune.
    pub async fn prune(&self, opts: PruneOptions, progress: &dyn Progress) -> Result<PruneReport> {
        let plan = self.plan_prune(&opts, progress).await?;
        if opts.dry_run {
            return Ok(PruneReport {
                snapshots: plan.snapshots,
                chunks_used: plan.chunks_used,
                chunks_unused: plan.chunks_unused,
                packs_total: plan.packs_total,
                packs_unused: plan.delete.len(),
                packs_repacked: plan.repack.len(),
                bytes_repacked: plan.bytes_to_repack(),
                packs_deleted: plan.delete.len() + plan.repack.len(),
                bytes_deleted: plan.bytes_to_delete(),
                packs_immutable: plan.immutable.len(),
                dry_run: true,
                plan: Some(plan),
                ..Default::default()
            });
        }
        self.apply_prune(&plan, progress).await
    }

    /// Applies a prune plan: repacks, schedules and (when no backup that could depend on
    /// them runs) deletes. Everything is checked again against the repository as it is
    /// now, so an older plan is safe. Reports "reading snapshots", "repacking" and
    /// "deleting" stages.
    pub async fn apply_prune(
        &self,
        plan: &PrunePlan,
        progress: &dyn Progress,
    ) -> Result<PruneReport> {
        let mut report = PruneReport {
            snapshots: plan.snapshots,
            chunks_used: plan.chunks_used,
            chunks_unused: plan.chunks_unused,
            packs_total: plan.packs_total,
            packs_unused: plan.delete.len(),
            packs_immutable: plan.immutable.len(),
            ..Default::default()
        };
        let old_plans = writer::load_deletion_plans(self).await?;
        self.reload_index().await?;
        self.refuse_if_index_unreadable()?;
        let table = self.index();
        let used = match &plan.used {
            Some(u) => u.clone(),
            None => Arc::new(self.used_chunks(Some(progress)).await?.0),
        };
        let doomed_before: HashSet<Id> = old_plans
            .iter()
            .flat_map(|(_, p)| p.packs.iter().copied())
            .collect();
        // The plan's packs that are still indexed and not already scheduled.
        let indexed: HashSet<Id> = table.packs().map(|(id, _)| id).collect();
        let still_open =
            |p: &&PlannedPack| indexed.contains(&p.id) && !doomed_before.contains(&p.id);
        let mut new_doomed: Vec<Id> = plan
            .delete
            .iter()
            .filter(still_open)
            .map(|p| p.id)
            .collect();
        let to_repack: Vec<Id> = plan
            .repack
            .iter()
            .filter(still_open)
            .map(|p| p.id)
            .collect();

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
        let repack_set: HashSet<Id> = to_repack.iter().copied().collect();
        let mut copies: Vec<(ChunkId, crate::index_table::ChunkLocation)> = table
            .iter()
            .filter(|(id, loc)| repack_set.contains(&loc.pack) && used.contains(id))
            .collect();
        copies.sort_by_key(|(_, l)| (l.pack, l.offset));
        progress.stage(
            "repacking",
            Unit::Bytes,
            Some(copies.iter().map(|(_, l)| l.raw_length as u64).sum()),
        );
        let result: Result<()> = async {
            for (id, loc) in &copies {
                let elsewhere = table.lookup(id).iter().any(|l| !avoid.contains(&l.pack));
                if !elsewhere {
                    let data = self.read_chunk_at(id, loc).await?;
                    report.bytes_repacked += data.len() as u64;
                    w.add(loc.kind, data).await?;
                }
                progress.advance(loc.raw_length as u64);
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            w.abort().await;
            return Err(e);
        }
        report.packs_repacked = to_repack.len();
        new_doomed.extend(to_repack.iter().copied());
        report.index_files_written += w.clone().finish().await?.len();

        // Step 1: publish the plan before looking at sessions.
        let new_plan = if new_doomed.is_empty() {
            None
        } else {
            let plan = DeletionPlan {
                created: Utc::now(),
                packs: new_doomed.clone(),
            };
            let paths = writer::write_deletion_plan(self, &plan).await?;
            Some((paths, plan))
        };

        // Step 2: which plans' packs may go now.
        let starts = writer::live_session_starts(self, Some(own_session)).await?;
        report.live_sessions = starts.len();
        let oldest_live = starts.iter().min().copied();
        let mut all_plans: Vec<(Vec<String>, DeletionPlan)> = old_plans
            .into_iter()
            .map(|(path, p)| (vec![path], p))
            .collect();
        if let Some(p) = new_plan {
            all_plans.push(p);
        }
        let mut candidates: HashSet<Id> = HashSet::new();
        for (_, plan) in &all_plans {
            let ripe = match oldest_live {
                None => true,
                Some(oldest) => plan
                    .created
                    .checked_add_signed(CLOCK_SKEW)
                    .is_some_and(|t| oldest > t),
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

        // Step 3: re-read snapshots and index; keep any pack with the only copy of a
        // needed chunk.
        self.reload_index().await?;
        self.refuse_if_index_unreadable()?;
        let table = self.index();
        let (used_now, _) = self.used_chunks(None).await?;
        let mut deletable: HashSet<Id> = HashSet::new();
        let mut by_pack: HashMap<Id, Vec<ChunkId>> = HashMap::new();
        for (id, loc) in table.iter() {
            if candidates.contains(&loc.pack) {
                by_pack.entry(loc.pack).or_default().push(id);
            }
        }
        for pack in &candidates {
            let blobs = by_pack.get(pack).map(|v| v.as_slice()).unwrap_or(&[]);
            let safe = blobs.iter().all(|id| {
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

        // Leftovers the plan found, still unindexed, when no backup runs.
        let indexed: HashSet<Id> = table.packs().map(|(id, _)| id).collect();
        let orphans: Vec<&PlannedPack> = if starts.is_empty() {
            plan.orphans
                .iter()
                .filter(|p| !indexed.contains(&p.id))
                .collect()
        } else {
            Vec::new()
        };

        let sizes: HashMap<Id, u64> = table.packs().collect();
        progress.stage(
            "deleting",
            Unit::Items,
            Some((deletable.len() + orphans.len()) as u64),
        );
        if !deletable.is_empty() {
            // Rewrite the index without the deleted packs, superseding every current file.
            let mut packs: HashMap<Id, PackRecord> = HashMap::new();
            for (id, loc) in table.iter() {
                if deletable.contains(&loc.pack) {
                    continue;
                }
                packs
                    .entry(loc.pack)
                    .or_insert_with(|| PackRecord {
                        id: loc.pack,
                        size: sizes.get(&loc.pack).copied().unwrap_or(0),
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
            current.supersedes = superseded.clone();
            // Only the last file supersedes: until it exists, readers keep the old files.
            files.push(current);
            for f in &files {
                self.write_index_file(f).await?;
                report.index_files_written += 1;
            }
            for pack in &deletable {
                self.storage().delete(&pack::pack_path(pack)).await?;
                report.packs_deleted += 1;
                report.bytes_deleted += sizes.get(pack).copied().unwrap_or(0);
                progress.advance(1);
            }
            for old in &superseded {
                self.storage()
                    .delete(&crate::index::index_path(old))
                    .await?;
                report.index_files_deleted += 1;
            }
        }
        for p in &orphans {
            self.storage().delete(&pack::pack_path(&p.id)).await?;
            report.orphan_packs_deleted += 1;
            report.bytes_deleted += p.size;
            progress.advance(1);
        }

        // Plans: keep what is not deleted yet in one new plan, drop the old ones.
        let remaining: Vec<Id> = all_doomed
            .iter()
            .filter(|p| !deletable.contains(p))
            .copied()
            .collect();
        let plan_paths: Vec<String> = all_plans.iter().flat_map(|(p, _)| p.clone()).collect();
        let still_needed = !remaining.is_empty();
        if still_needed && all_plans.len() > 1 {
            let created = all_plans
                .iter()
                .map(|(_, p)| p.created)
                .min()
                .unwrap_or_else(Utc::now);
            let plan = DeletionPlan {
                created,
                packs: remaining,
            };
            let written = writer::write_deletion_plan(self, &plan).await?;
            for p in plan_paths.iter().filter(|p| !written.contains(p)) {
                self.storage().delete(p).await?;
            }
        } else if !still_needed {
            for p in &plan_paths {
                self.storage().delete(p).await?;
            }
        }

        self.cleanup_stale(&starts).await?;
        w.abort().await;
        self.reload_index().await?;
        Ok(report)
    }

    /// Removes session markers of long-dead writers and leftovers of interrupted writes
    /// (local storage's `.tmp/`).
    async fn cleanup_stale(&self, live: &[chrono::DateTime<Utc>]) -> Result<()> {
        let day = chrono::Duration::days(1);
        let now = Utc::now();
        for o in self.storage().list("sessions/").await? {
            if o.modified.is_some_and(|m| now - m > day) {
                self.storage().delete(&o.path).await?;
            }
        }
        if live.is_empty() {
            for o in self.storage().list(".tmp/").await? {
                if o.modified
                    .is_some_and(|m| now - m > chrono::Duration::hours(1))
                {
                    self.storage().delete(&o.path).await?;
                }
            }
        }
        Ok(())
    }
}

/// Whether a pack is within the repository's immutability period (by its listed time).
fn immutability<'a>(
    repo: &Repository,
    listed: &'a HashMap<Id, crate::storage::ObjectInfo>,
) -> impl Fn(&Id) -> bool + 'a {
    let days = repo.config().immutable_days;
    let limit = (days > 0).then(|| {
        Utc::now()
            .checked_sub_signed(chrono::Duration::days(days as i64))
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    });
    move |pack: &Id| match (limit, listed.get(pack)) {
        (Some(limit), Some(o)) => o.modified.is_none_or(|m| m > limit),
        _ => false,
    }
}
