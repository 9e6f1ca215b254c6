//! Keeping the local lookup table ([`crate::index_table`]) in step with the repository's
//! index files: incremental merges of new files, a full rebuild when files were removed
//! or the cached table is damaged, and memory bounded however large the index is.
//!
//! An index file that cannot be read (damaged, or not Coffer's) is skipped, not fatal:
//! backups go on (they store again what only that file described), restores of chunks
//! only it names fail clearly, `check` reports it and prune refuses to run until it is
//! repaired or removed (its packs would otherwise look unreferenced).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{self, IndexFile};
use crate::index_table::{self, IndexTable};
use crate::object::{ObjectKind, read_object, seal_object};
use crate::repository::Repository;

/// Tables up to this size are checked against their checksum each time a process opens
/// them (a few milliseconds); larger ones only by `check`.
const VERIFY_ON_OPEN: u64 = 64 << 20;
/// Index entries merged in memory before a sorted run is written out.
const MERGE_BATCH_ENTRIES: usize = 200_000;

/// The cache's pointer to the current table.
#[derive(Serialize, Deserialize)]
struct Pointer {
    table: String,
    sources: Vec<Id>,
    #[serde(default)]
    unreadable: BTreeMap<Id, String>,
}

fn valid_table_name(name: &str) -> bool {
    name.strip_prefix("table-")
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl Repository {
    /// Index files that could not be read at the last reload, with the reason.
    pub fn unreadable_index_files(&self) -> BTreeMap<Id, String> {
        self.index().unreadable.clone()
    }

    /// Re-reads the repository's index files (incrementally, through the local cache).
    pub async fn reload_index(&self) -> Result<()> {
        let listed = self.storage().list("index/").await?;
        let current: BTreeSet<Id> = listed
            .iter()
            .filter_map(|o| o.path.strip_prefix("index/")?.parse().ok())
            .collect();
        let base = self.index();
        let known: BTreeSet<Id> = base
            .sources
            .iter()
            .chain(base.unreadable.keys())
            .copied()
            .collect();
        if known == current && !base.is_damaged() && (base.path.is_some() || current.is_empty()) {
            return Ok(());
        }
        let dir = &self.inner.cache_dir;
        std::fs::create_dir_all(dir).map_err(|e| index::cache_error(dir, e))?;
        // A cached table from an earlier run of any process.
        let base = if base.path.is_none() || base.is_damaged() {
            if let Some(p) = base.path.as_ref().filter(|_| base.is_damaged()) {
                let _ = std::fs::remove_file(p);
            }
            std::sync::Arc::new(self.cached_table().unwrap_or_else(IndexTable::empty))
        } else {
            base
        };
        // Merge the new index files into the cached table (or, when files it holds were
        // removed, everything from scratch), a bounded batch at a time.
        let base_usable = base.sources.is_subset(&current);
        let mut unreadable: BTreeMap<Id, String> = base
            .unreadable
            .iter()
            .filter(|(id, _)| base_usable && current.contains(id))
            .map(|(id, r)| (*id, r.clone()))
            .collect();
        let known: BTreeSet<Id> = base
            .sources
            .iter()
            .chain(unreadable.keys())
            .copied()
            .collect();
        let (start, ids): (Option<&IndexTable>, Vec<Id>) = if base_usable {
            (Some(&*base), current.difference(&known).copied().collect())
        } else {
            (None, current.iter().copied().collect())
        };
        let merged = self.merge_index_files(start, &ids).await?;
        let mut table = merged.table;
        unreadable.extend(merged.unreadable);
        let merged_superseded = merged
            .superseded
            .iter()
            .any(|s| ids.contains(s) || start.is_some_and(|b| b.sources.contains(s)));
        if merged_superseded {
            // Prune replaced index files that are merged in: rebuild without them.
            if let Some(p) = &table.path {
                let _ = std::fs::remove_file(p);
            }
            let keep: Vec<Id> = current
                .iter()
                .copied()
                .filter(|i| !merged.superseded.contains(i))
                .collect();
            let again = self.merge_index_files(None, &keep).await?;
            table = again.table;
            unreadable = again.unreadable;
        }
        // Superseded files count as sources (their entries left out): they stay listed
        // until prune deletes them, and must not be merged again.
        let sources: BTreeSet<Id> = current
            .iter()
            .filter(|i| !unreadable.contains_key(i))
            .copied()
            .collect();
        let table = self.publish_table(table, sources, unreadable)?;
        self.set_index(table);
        Ok(())
    }

    /// Merges index files into `base` (or into nothing) with memory bounded however large
    /// the repository: files are loaded `MERGE_BATCH_ENTRIES` entries at a time; each full
    /// batch is written out as a sorted run (a small table), and one final pass merges
    /// the base, the runs and the last batch through their mappings (an external merge
    /// sort, linear in the index size).
    async fn merge_index_files(&self, base: Option<&IndexTable>, ids: &[Id]) -> Result<Merged> {
        let dir = &self.inner.cache_dir;
        let private = format!("{}.{}", std::process::id(), Id::random().short());
        let mut superseded = BTreeSet::new();
        let mut unreadable = BTreeMap::new();
        let mut runs: Vec<IndexTable> = Vec::new();
        let mut loads = futures::stream::iter(ids.iter().copied())
            .map(|id| async move { (id, self.load_index_file(&id).await) })
            .buffered(2);
        let mut batch: Vec<IndexFile> = Vec::new();
        let mut batch_entries = 0usize;
        let result = async {
            while let Some((id, file)) = loads.next().await {
                let file = match file {
                    Ok(f) => f,
                    Err(Error::Corrupt { reason, .. }) => {
                        tracing::warn!("index file {} skipped: {reason}", id.short());
                        unreadable.insert(id, reason);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                superseded.extend(file.supersedes.iter().copied());
                batch_entries += file.packs.iter().map(|p| p.blobs.len()).sum::<usize>();
                batch.push(file);
                if batch_entries >= MERGE_BATCH_ENTRIES {
                    let out = dir.join(format!("merge-{private}.run{}", runs.len()));
                    runs.push(build_and_open(&out, &[], &batch)?);
                    batch.clear();
                    batch_entries = 0;
                }
            }
            let out = dir.join(format!("merge-{private}.table"));
            let mut bases: Vec<&IndexTable> = base.into_iter().collect();
            bases.extend(runs.iter());
            build_and_open(&out, &bases, &batch)
        }
        .await;
        for r in &runs {
            if let Some(p) = &r.path {
                let _ = std::fs::remove_file(p);
            }
        }
        Ok(Merged {
            table: result?,
            superseded,
            unreadable,
        })
    }

    /// Moves a merged table to its shared name in the cache and records it as current
    /// for the next process.
    fn publish_table(
        &self,
        mut table: IndexTable,
        sources: BTreeSet<Id>,
        unreadable: BTreeMap<Id, String>,
    ) -> Result<IndexTable> {
        let dir = &self.inner.cache_dir;
        let mut name_hasher = blake3::Hasher::new();
        for s in &sources {
            name_hasher.update(&s.0);
        }
        let name = format!("table-{}", &name_hasher.finalize().to_hex()[..32]);
        let path = dir.join(&name);
        let err = |e| index::cache_error(&path, e);
        let Some(from) = table.path.clone() else {
            return Err(index::cache_error(
                &path,
                std::io::Error::other("merged table has no file"),
            ));
        };
        // The mapping stays valid across the rename (and if another process later removes
        // the file), so the table is not reopened.
        std::fs::rename(&from, &path).map_err(err)?;
        table.path = Some(path.clone());
        table.sources = sources.clone();
        table.unreadable = unreadable.clone();
        let pointer = Pointer {
            table: name.clone(),
            sources: sources.into_iter().collect(),
            unreadable,
        };
        let current = dir.join("current");
        let tmp = dir.join(format!("current.tmp{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec(&pointer).unwrap_or_default()).map_err(err)?;
        std::fs::rename(&tmp, &current).map_err(err)?;
        // Older tables are dead weight (as large as the index); processes still using one
        // keep their mapping. Merge files of crashed processes go after an hour.
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let file = e.file_name();
                let file = file.to_string_lossy();
                let stale_table = file.starts_with("table-") && file != name.as_str();
                let old_merge = file.starts_with("merge-")
                    && e.metadata().and_then(|m| m.modified()).is_ok_and(|t| {
                        t.elapsed().unwrap_or_default() > std::time::Duration::from_secs(3600)
                    });
                if stale_table || old_merge {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(table)
    }

    /// The table the cache's pointer names, if it is sound; a damaged one is removed.
    fn cached_table(&self) -> Option<IndexTable> {
        let dir = &self.inner.cache_dir;
        let raw = std::fs::read(dir.join("current")).ok()?;
        let pointer: Pointer = serde_json::from_slice(&raw).ok()?;
        if !valid_table_name(&pointer.table) {
            return None;
        }
        let path = dir.join(&pointer.table);
        let mut table = match IndexTable::open(&path, pointer.sources.into_iter().collect()) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("cached index table {} rebuilt: {e}", path.display());
                let _ = std::fs::remove_file(&path);
                return None;
            }
        };
        let small = std::fs::metadata(&path).is_ok_and(|m| m.len() <= VERIFY_ON_OPEN);
        if small && let Err(e) = table.verify() {
            tracing::warn!("cached index table {} rebuilt: {e}", path.display());
            let _ = std::fs::remove_file(&path);
            return None;
        }
        table.unreadable = pointer.unreadable;
        Some(table)
    }

    /// Checks the whole local table against its checksum and structure; a damaged table
    /// is removed and rebuilt from the repository. Returns what was wrong, if anything.
    pub async fn verify_index_cache(&self) -> Result<Option<String>> {
        let table = self.index();
        let problem = {
            let t = table.clone();
            tokio::task::spawn_blocking(move || t.verify().err())
                .await
                .map_err(|e| Error::task("verifying the index cache", e))?
        };
        if problem.is_some() {
            if let Some(p) = &table.path {
                let _ = std::fs::remove_file(p);
            }
            self.set_index(IndexTable::empty());
            self.reload_index().await?;
        }
        Ok(problem)
    }

    pub(crate) async fn load_index_file(&self, id: &Id) -> Result<IndexFile> {
        let path = index::index_path(id);
        let (raw, plain) = read_object(
            &**self.storage(),
            self.keys(),
            ObjectKind::Index,
            &path,
            None,
        )
        .await?;
        if Id::of_content(&raw) != *id {
            return Err(Error::corrupt(&path, "content does not match its name"));
        }
        IndexFile::decode(&plain).map_err(|r| Error::corrupt(&path, r))
    }

    /// Writes an index file as given; returns its id. Backups never need this (their
    /// writer indexes the packs it stores); it is for tools that build index files
    /// themselves: repair, and the synthetic scale tests of the index.
    pub async fn write_index_file(&self, file: &IndexFile) -> Result<Id> {
        let sealed = seal_object(self.keys(), ObjectKind::Index, &file.encode());
        let id = Id::of_content(&sealed);
        self.storage()
            .write_new(&index::index_path(&id), Bytes::from(sealed))
            .await?;
        Ok(id)
    }
}

struct Merged {
    table: IndexTable,
    superseded: BTreeSet<Id>,
    unreadable: BTreeMap<Id, String>,
}

fn build_and_open(out: &Path, bases: &[&IndexTable], files: &[IndexFile]) -> Result<IndexTable> {
    index_table::build_table(out, bases, &|_| true, files)
        .map_err(|e| index::cache_error(out, e))?;
    IndexTable::open(out, BTreeSet::new()).map_err(|e| index::cache_error(out, e))
}
