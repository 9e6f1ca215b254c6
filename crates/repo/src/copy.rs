//! Copy snapshots into another repository (an offsite copy).
//!
//! Chunk ids are keyed, so two repositories only agree on ids when they share the
//! chunk-id key. A copy target is therefore created from its source
//! ([`Repository::init_copy_target`]): same chunk-id key, chunker and block size, but its
//! own data key and key slots, so the copy is encrypted independently. Chunks are
//! decrypted from the source and sealed again for the target; ids and metadata streams
//! stay valid unchanged.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::keyslot::Secret;
use crate::progress::{Progress, Unit};
use crate::repository::{InitOptions, OpenOptions, Repository};
use crate::snapshot::Snapshot;
use crate::storage::Storage;

/// What a copy did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CopyReport {
    /// Snapshots copied (their ids in the source).
    pub copied: Vec<SnapshotId>,
    /// Snapshots the target had already.
    pub skipped: Vec<SnapshotId>,
    /// Chunks the target did not have.
    pub chunks_copied: u64,
    /// Bytes the target grew by.
    pub bytes_stored: u64,
}

const PROBE: &[u8] = b"coffer chunk-id key probe";

impl Repository {
    /// Creates a repository in `storage` that can receive copies of this one's snapshots.
    pub async fn init_copy_target(
        &self,
        storage: Arc<dyn Storage>,
        secret: &Secret,
        mut opts: InitOptions,
        client: &OpenOptions,
    ) -> Result<Repository> {
        let c = self.config();
        opts.chunk_id_key = Some(self.chunk_id_key());
        opts.chunker = c.chunker;
        opts.block_size = c.block_size;
        opts.encryption = c.encryption;
        opts.compression = c.compression();
        Repository::init(storage, secret, opts, client).await
    }

    /// Copies the given snapshots (all when empty) to `target`; snapshots already there
    /// (same original id) are skipped. Reports one "copying" stage per snapshot (chunks
    /// to copy, as items).
    pub async fn copy_to(
        &self,
        target: &Repository,
        ids: &[SnapshotId],
        progress: &dyn Progress,
    ) -> Result<CopyReport> {
        if target.chunk_id(PROBE) != self.chunk_id(PROBE) {
            return Err(Error::NotACopyTarget(target.location().to_string()));
        }
        let snaps: Vec<Snapshot> = if ids.is_empty() {
            self.list_snapshots().await?
        } else {
            let mut v = Vec::new();
            for id in ids {
                v.push(self.load_snapshot(id).await?);
            }
            v
        };
        let existing: std::collections::HashSet<SnapshotId> = target
            .list_snapshots()
            .await?
            .into_iter()
            .map(|s| s.original.unwrap_or(s.id))
            .collect();
        let mut report = CopyReport::default();
        for snap in snaps {
            let original = snap.original.unwrap_or(snap.id);
            if existing.contains(&original) {
                report.skipped.push(snap.id);
                continue;
            }
            let w = target.writer_for("copy").await?;
            let needed = self.snapshot_chunks(&snap).await?;
            let missing: Vec<_> = needed.into_iter().filter(|id| !w.reuse(id)).collect();
            progress.stage(
                &format!("copying {}", snap.id.short()),
                Unit::Items,
                Some(missing.len() as u64),
            );
            let stored: Result<Vec<u64>> = futures::stream::iter(missing)
                .map(|id| {
                    let w = w.clone();
                    async move {
                        let kind = self
                            .locate(&id)
                            .first()
                            .map(|l| l.kind)
                            .ok_or(Error::ChunkNotFound(id))?;
                        let data = self.read_chunk(&id).await?;
                        let n = w.add(kind, data).await?.stored_bytes;
                        progress.advance(1);
                        Ok::<_, Error>(n)
                    }
                })
                .buffer_unordered(4)
                .try_collect()
                .await;
            let stored = match stored {
                Ok(s) => s,
                Err(e) => {
                    w.abort().await;
                    return Err(e);
                }
            };
            report.chunks_copied += stored.len() as u64;
            report.bytes_stored += stored.iter().sum::<u64>();
            let mut copy = snap.clone();
            copy.original = Some(original);
            w.commit_copy(copy).await?;
            report.copied.push(snap.id);
        }
        Ok(report)
    }
}
