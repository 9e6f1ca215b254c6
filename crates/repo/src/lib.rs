//! Coffer's backup repository (DESIGN.md layer 1).
//!
//! Owns everything about how backups are stored: the storage (a [`Storage`] trait, with
//! OpenDAL for the local filesystem and S3), key slots and encryption, chunk ids,
//! compression, pack files, the index, snapshot manifests, retention (forget), garbage
//! collection (prune), verification (check) and copying between repositories. It knows
//! nothing about volumes, files or Kubernetes: the layers above hand it chunks and an
//! opaque metadata stream per snapshot, plus the list of chunks each snapshot needs
//! (tracked by the [`Writer`]).
//!
//! It is built to run inside a long-lived operator as well as the CLI: it reads no
//! process environment (the caller passes the storage settings, cache directory and
//! names in [`OpenOptions`] and [`StorageOptions`]), never prints (long work reports
//! through [`Progress`]), treats everything read from storage as untrusted input (every
//! decoder bounds its allocations by what it was given, see [`limits`]), turns a
//! panicking task into [`Error::TaskFailed`], and makes destructive operations a
//! serialisable plan ([`ForgetPlan`], [`PrunePlan`]) applied in a second step.
//!
//! The on-storage format is specified in docs/format.md; the modules follow it:
//! [`crypto`] (sealing), [`keyslot`] and [`keys`] (key slots), [`pack`] (pack objects),
//! [`index`] (index files), [`index_table`] (the local memory-mapped lookup table),
//! [`snapshot`] (manifests), [`writer`] (sessions), [`stream`] (metadata streams written
//! in pieces), and the maintenance modules.

pub mod check;
pub mod compression;
pub mod copy;
pub mod crypto;
pub mod error;
pub mod forget;
pub mod id;
pub mod index;
mod index_cache;
pub mod index_table;
pub mod keys;
pub mod keyslot;
pub mod limits;
mod object;
pub mod pack;
pub mod progress;
pub mod prune;
mod read;
pub mod repository;
pub mod scale;
pub mod snapshot;
pub mod stats;
pub mod storage;
pub mod stream;
pub mod writer;

pub use check::{CheckOptions, CheckReport, MetadataCheck};
pub use compression::Compression;
pub use copy::CopyReport;
pub use crypto::Encryption;
pub use error::{Error, Result};
pub use forget::{
    Decision, ForgetPlan, ForgetReport, ForgetRequest, RetentionPolicy, apply_policy,
};
pub use id::{ChunkId, Id, PackId, SnapshotId};
pub use index_table::ChunkLocation;
pub use keys::{KeyEntry, SlotProblem};
pub use keyslot::{KdfParams, KeySlot, Secret, SlotKind};
pub use pack::BlobKind;
pub use progress::{Progress, SharedProgress, Unit};
pub use prune::{PruneOptions, PrunePlan, PruneReport};
pub use repository::{ChunkerParams, InitOptions, OpenOptions, RepoConfig, Repository};
pub use snapshot::{NewSnapshot, ParentChoice, Snapshot, SnapshotKind};
pub use stats::{RepoStats, human_bytes};
pub use storage::{
    Location, ObjectInfo, ObjectWriter, OpendalStorage, S3Options, Storage, StorageOptions,
};
pub use stream::StreamWriter;
pub use writer::{Added, SealedChunk, WriteStats, Writer};
