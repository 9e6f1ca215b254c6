//! Coffer's data mover (DESIGN.md layer 2): backs up one volume into a repository and
//! restores it.
//!
//! Two kinds of volume:
//! - [`block`]: a block device or raw image as fixed-size aligned blocks. All-zero blocks
//!   are never stored and restore as holes; with a list of changed byte ranges only the
//!   blocks touching them are read, the rest comes from the parent snapshot.
//! - [`fs`]: a directory tree with its metadata (ownership, modes, times, xattrs, hard
//!   links, symlinks, device nodes, sparse files); files unchanged since the parent
//!   snapshot are not read again.
//!
//! It owns the metadata stream formats (block map, file tree; see docs/format.md) and
//! nothing about storage, which is [`coffer_repo`]'s.

pub mod block;
pub mod fs;

/// Errors of the data mover; each says what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Repo(#[from] coffer_repo::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("snapshot metadata is damaged: {0}")]
    BadMetadata(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(path: &std::path::Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

pub use coffer_repo::progress::{Progress, SharedProgress, Unit};

/// True when every byte is zero (word-wise for speed).
pub fn is_zero(data: &[u8]) -> bool {
    let (head, words, tail) = unsafe { data.align_to::<u128>() };
    head.iter().all(|&b| b == 0) && words.iter().all(|&w| w == 0) && tail.iter().all(|&b| b == 0)
}

/// Numbers every backup reports (`volume backup --json`).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct BackupSummary {
    pub snapshot_id: String,
    pub parent: Option<String>,
    pub kind: coffer_repo::SnapshotKind,
    pub source: String,
    pub bytes_total: u64,
    pub bytes_read: u64,
    pub bytes_new: u64,
    pub chunks_new: u64,
    pub chunks_reused: u64,
    pub duration_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files_unchanged: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocks_zero: Option<u64>,
    /// For image files: what identified the file at backup time, so that the next backup
    /// can see it unchanged without reading it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_stat: Option<SourceStat>,
}

/// A regular file's identity and change times; equal values mean unchanged content (the
/// same rule restic and coffer's file-tree mode use).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceStat {
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub ino: u64,
    pub dev: u64,
}

impl SourceStat {
    /// The stat of a regular file; None for devices and others (whose times say nothing
    /// about their content).
    pub fn of(meta: &std::fs::Metadata) -> Option<SourceStat> {
        use std::os::unix::fs::MetadataExt;
        meta.is_file().then(|| SourceStat {
            size: meta.len(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
            ino: meta.ino(),
            dev: meta.dev(),
        })
    }
}

/// Numbers every restore reports.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RestoreSummary {
    pub snapshot_id: String,
    pub target: String,
    pub bytes_total: u64,
    pub bytes_written: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocks_changed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    pub duration_s: f64,
}

/// Fills the writer's numbers into `summary`, commits the snapshot (the summary is stored
/// in it) and records the new snapshot's id and the total duration.
pub(crate) async fn commit_backup(
    writer: coffer_repo::Writer,
    mut summary: BackupSummary,
    tags: std::collections::BTreeMap<String, String>,
    parent: Option<&coffer_repo::Snapshot>,
    root: Vec<coffer_repo::ChunkId>,
    started: std::time::Instant,
) -> Result<BackupSummary> {
    let stats = writer.stats();
    summary.parent = parent.map(|p| p.id.to_hex());
    summary.bytes_new = stats.bytes_new_stored;
    summary.chunks_new = stats.chunks_new;
    summary.chunks_reused = stats.chunks_reused;
    summary.duration_s = started.elapsed().as_secs_f64();
    let snap = writer
        .commit(coffer_repo::NewSnapshot {
            kind: summary.kind.clone(),
            source: summary.source.clone(),
            tags,
            parent: parent.map(|p| p.id),
            root,
            summary: serde_json::to_value(&summary).expect("summary serializes"),
            time: None,
        })
        .await?;
    summary.snapshot_id = snap.id.to_hex();
    summary.duration_s = started.elapsed().as_secs_f64();
    Ok(summary)
}
