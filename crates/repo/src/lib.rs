//! Coffer's backup repository (DESIGN.md layer 1).
//!
//! Owns everything about how backups are stored: the storage backends (through OpenDAL),
//! key slots and encryption, chunk ids, compression, pack files, the index, snapshot
//! manifests, retention (forget), garbage collection (prune), verification (check) and
//! copying between repositories. It knows nothing about volumes, files or Kubernetes:
//! the layers above hand it chunks and an opaque metadata stream per snapshot, plus the
//! list of chunks each snapshot needs (tracked by the [`Writer`]).
//!
//! The on-storage format is specified in docs/format.md; the modules follow it:
//! [`crypto`] (sealing and key slots), [`pack`] (pack objects), [`index`] (index files and
//! the local memory-mapped lookup table), [`snapshot`] (manifests), [`writer`] (sessions),
//! and the maintenance modules.

pub mod backend;
pub mod check;
pub mod copy;
pub mod crypto;
pub mod error;
pub mod forget;
pub mod id;
pub mod index;
pub mod pack;
pub mod progress;
pub mod prune;
pub mod repository;
pub mod scale;
pub mod snapshot;
pub mod stats;
pub mod writer;

pub use backend::{Backend, Location};
pub use check::{CheckOptions, CheckReport};
pub use copy::CopyReport;
pub use crypto::{Encryption, KdfParams, KeySlot, Secret, SlotKind};
pub use error::{Error, Result};
pub use forget::{Decision, RetentionPolicy, apply_policy};
pub use id::{ChunkId, Id, PackId, SnapshotId};
pub use pack::{BlobKind, Compression};
pub use progress::{Progress, SharedProgress, Unit};
pub use prune::{PruneOptions, PruneReport};
pub use repository::{ChunkerParams, InitOptions, ParentChoice, RepoConfig, Repository};
pub use snapshot::{NewSnapshot, Snapshot, SnapshotKind};
pub use stats::RepoStats;
pub use writer::{Added, SealedChunk, WriteStats, Writer};

/// This machine's name, recorded in snapshots and key slots.
pub(crate) fn hostname() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".to_string())
}
