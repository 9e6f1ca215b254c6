//! Copy snapshots into another repository (an offsite copy).
//!
//! Chunk ids are keyed, so two repositories only agree on ids when they share the
//! chunk-id key. A copy target is therefore created from its source
//! ([`Repository::init_copy_target`]): same chunk-id key, chunker and block size, but its
//! own data key and key slots, so the copy is encrypted independently. Chunks are
//! decrypted from the source and sealed again for the target; ids and metadata streams
//! stay valid unchanged.

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::backend::Location;
use crate::crypto::Secret;
use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::repository::{InitOptions, Repository};
use crate::snapshot::Snapshot;

#[derive(Clone, Debug, Default, Serialize)]
pub struct CopyReport {
    pub copied: Vec<SnapshotId>,
    pub skipped: Vec<SnapshotId>,
    pub chunks_copied: u64,
    pub bytes_stored: u64,
}

const PROBE: &[u8] = b"coffer chunk-id key probe";

impl Repository {
    /// Creates a repository that can receive copies of this one's snapshots.
    pub async fn init_copy_target(
        &self,
        location: &Location,
        secret: &Secret,
        mut opts: InitOptions,
    ) -> Result<Repository> {
        let c = self.config();
        opts.chunk_id_key = Some(self.chunk_id_key());
        opts.chunker = c.chunker;
        opts.block_size = c.block_size;
        opts.encryption = c.encryption;
        opts.compression = c.compression();
        Repository::init(location, secret, opts).await
    }

    /// Copies the given snapshots (all when empty) to `target`; snapshots already there
    /// (same original id) are skipped.
    pub async fn copy_to(&self, target: &Repository, ids: &[SnapshotId]) -> Result<CopyReport> {
        if target.chunk_id(PROBE) != self.chunk_id(PROBE) {
            return Err(Error::Refused(format!(
                "the repository at {} was not created as a copy of this one (chunk ids differ); let `coffer copy --to` create the target at an empty location",
                target.location()
            )));
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
            let stored: Vec<u64> = futures::stream::iter(missing)
                .map(|id| {
                    let w = w.clone();
                    async move {
                        let kind = self
                            .locate(&id)
                            .first()
                            .map(|l| l.kind)
                            .ok_or(Error::ChunkNotFound(id))?;
                        let data = self.read_chunk(&id).await?;
                        Ok::<_, Error>(w.add(kind, data).await?.stored_bytes)
                    }
                })
                .buffer_unordered(4)
                .try_collect()
                .await?;
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
