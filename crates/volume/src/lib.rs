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
//! It owns the metadata stream formats (block map, file tree; see docs/format.md), their
//! validation, and the checks `coffer check` runs on them ([`check`]); nothing about
//! storage, which is [`coffer_repo`]'s.
//!
//! A snapshot's metadata is untrusted input: anyone holding a key of a shared repository
//! can add snapshots. Decoders bound their allocations by the bytes they are given and
//! never panic; a tree restore creates, links and replaces nothing outside its target,
//! refuses the entries that would (reporting each, see [`Refusal`]) and restores the rest.

pub mod block;
pub mod check;
pub mod fs;

/// Errors of the data mover; each says what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The repository failed: storage, keys, missing or damaged objects.
    #[error(transparent)]
    Repo(#[from] coffer_repo::Error),
    /// Reading or writing a local file, directory or device failed.
    #[error("{path}: {source}")]
    Io {
        /// The local path concerned.
        path: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The request cannot be carried out as given (wrong kind of snapshot, bad flag or
    /// source); the message says what to change.
    #[error("{0}")]
    Invalid(String),
    /// A snapshot's metadata stream cannot be decoded or contradicts itself as a whole
    /// (single bad entries of a tree are refused instead, see [`Refusal`]).
    #[error("snapshot metadata is damaged: {0}")]
    BadMetadata(String),
    /// A worker task of the engine panicked or was cancelled; the operation stopped and
    /// the process goes on.
    #[error(
        "{task} failed ({source}); the operation was stopped, run it again and report this if it repeats"
    )]
    Task {
        /// Which task: what it was doing.
        task: &'static str,
        /// The task's panic or cancellation.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Results of the data mover.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The result of a joined task, with a panic or cancellation as [`Error::Task`].
pub(crate) fn joined<T>(
    task: &'static str,
    r: std::result::Result<T, tokio::task::JoinError>,
) -> Result<T> {
    r.map_err(|source| Error::Task { task, source })
}

pub(crate) fn io_err(path: &std::path::Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

pub use check::metadata_checks;
pub use coffer_repo::progress::{Progress, SharedProgress, Unit};

/// True when every byte is zero (word-wise for speed).
pub fn is_zero(data: &[u8]) -> bool {
    let (head, words, tail) = unsafe { data.align_to::<u128>() };
    head.iter().all(|&b| b == 0) && words.iter().all(|&w| w == 0) && tail.iter().all(|&b| b == 0)
}

/// Numbers every backup reports (`volume backup --json`, docs/cli.md).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct BackupSummary {
    /// The new snapshot's id (hex).
    pub snapshot_id: String,
    /// The parent snapshot's id (hex), if the backup had one.
    pub parent: Option<String>,
    /// Block or fs.
    pub kind: coffer_repo::SnapshotKind,
    /// The backed-up path.
    pub source: String,
    /// The volume's size (block) or the sum of file sizes (fs).
    pub bytes_total: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Bytes the repository grew by.
    pub bytes_new: u64,
    /// Chunks stored by this backup.
    pub chunks_new: u64,
    /// Chunks the repository had already.
    pub chunks_reused: u64,
    /// Wall time of the whole backup.
    pub duration_s: f64,
    /// Fs: regular files in the tree.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    /// Fs: files the parent showed unchanged (not read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files_unchanged: Option<u64>,
    /// Block: all-zero blocks (not stored).
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
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Status change time, nanoseconds since the epoch.
    pub ctime_ns: i128,
    /// Inode number.
    pub ino: u64,
    /// Device of the file system holding it.
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

/// Numbers every restore reports (`volume restore --json`, docs/cli.md).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RestoreSummary {
    /// The restored snapshot's id (hex).
    pub snapshot_id: String,
    /// Where it was restored.
    pub target: String,
    /// Bytes of data the snapshot holds (of the selected files, for trees).
    pub bytes_total: u64,
    /// Bytes written to the target.
    pub bytes_written: u64,
    /// Block: blocks written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocks_changed: Option<u64>,
    /// Fs: regular files restored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    /// Wall time of the whole restore, until its data was on disk.
    pub duration_s: f64,
    /// Entries the restore refused (damaged or unsafe metadata, or something in the way
    /// in the target), in tree order; everything else was restored. Empty when complete.
    pub refused: Vec<Refusal>,
}

/// An entry a restore did not create, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Refusal {
    /// The entry's path as the tree gives it (lossy UTF-8).
    pub path: String,
    /// What is wrong with it, one line.
    pub reason: String,
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
