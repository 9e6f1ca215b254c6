//! The repository's error type. Every variant's message is one line that says what is
//! wrong and, where the user can act, what to do about it. Variants are typed so that a
//! caller (the operator) can react to a kind of failure without parsing messages.

use crate::id::Id;

/// A boxed error from a storage implementation.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Result with the repository's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the repository.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The location string or the storage settings are unusable.
    #[error("invalid repository location {location:?}: {reason}")]
    BadLocation {
        /// The location as given.
        location: String,
        /// What is wrong with it.
        reason: String,
    },

    /// No repository marker at the location.
    #[error("no Coffer repository at {0} (create one with `coffer repo init`)")]
    NotARepository(String),

    /// `init` found a repository already there.
    #[error("a repository already exists at {0}")]
    AlreadyExists(String),

    /// No key slot of the secret's kind opens with the secret.
    #[error(
        "wrong password or key: no key slot of the repository at {location} opens with it{}",
        skipped_note(*.skipped)
    )]
    WrongSecret {
        /// The repository.
        location: String,
        /// Slots not tried because they are invalid (see `coffer key list`).
        skipped: usize,
    },

    /// A raw key file is too short to be a key.
    #[error(
        "key file holds {len} bytes; a raw key needs at least 32 random bytes (e.g. `head -c 32 /dev/urandom > key`)"
    )]
    KeyFileTooShort {
        /// Bytes the key file holds.
        len: usize,
    },

    /// The repository's format version is not this code's.
    #[error(
        "repository at {location} uses format version {found}, this coffer reads version {supported}"
    )]
    UnsupportedVersion {
        /// The repository.
        location: String,
        /// Version in the marker.
        found: u32,
        /// Version this code reads.
        supported: u32,
    },

    /// The storage cannot be reached (network, DNS, timeouts).
    #[error("storage unreachable at {location}: {source}")]
    Unreachable {
        /// The repository.
        location: String,
        /// The storage's error.
        #[source]
        source: BoxError,
    },

    /// The storage has no room for an object.
    #[error(
        "storage is full while writing {path}: free space on {location} and run again (nothing written so far is lost)"
    )]
    StorageFull {
        /// The repository.
        location: String,
        /// Object being written.
        path: String,
    },

    /// The storage refused access.
    #[error("permission denied for {path} at {location}: {source}")]
    PermissionDenied {
        /// The repository.
        location: String,
        /// Object accessed.
        path: String,
        /// The storage's error.
        #[source]
        source: BoxError,
    },

    /// Any other storage failure.
    #[error("storage error for {path} at {location}: {source}")]
    Storage {
        /// The repository.
        location: String,
        /// Object accessed.
        path: String,
        /// The storage's error.
        #[source]
        source: BoxError,
    },

    /// A create-if-absent write found the name taken.
    #[error("object {path} already exists at {location}")]
    ObjectExists {
        /// The repository.
        location: String,
        /// Object written.
        path: String,
    },

    /// An object the repository needs is not there.
    #[error("object {path} is missing from the repository (run `coffer check`)")]
    MissingObject {
        /// Object path.
        path: String,
    },

    /// An object's content is not what the format allows (damaged, truncated, or written
    /// by something that is not Coffer).
    #[error("object {path} is damaged: {reason} (run `coffer check --read-data`)")]
    Corrupt {
        /// Object path.
        path: String,
        /// What is wrong.
        reason: String,
    },

    /// One stored chunk does not decrypt or verify.
    #[error("chunk {chunk} is damaged in pack {pack}: {reason} (run `coffer check --read-data`)")]
    DamagedChunk {
        /// The chunk.
        chunk: Id,
        /// The pack holding it.
        pack: Id,
        /// What is wrong.
        reason: String,
    },

    /// A chunk a snapshot needs is in no index file.
    #[error(
        "chunk {0} is not in the repository index (the snapshot needs data the repository lost; run `coffer check`)"
    )]
    ChunkNotFound(Id),

    /// A metadata stream would be larger than the caller allows.
    #[error(
        "a metadata stream of {size} bytes exceeds the {limit} allowed (a damaged or hostile snapshot; run `coffer check`)"
    )]
    StreamTooLarge {
        /// The stream's size by the index.
        size: u64,
        /// The limit.
        limit: u64,
    },

    /// No snapshot matches an id prefix.
    #[error("no snapshot matches {0:?} (list them with `coffer snapshots`)")]
    SnapshotNotFound(String),

    /// Several snapshots match an id prefix.
    #[error("snapshot id prefix {0:?} is ambiguous; give more digits")]
    AmbiguousSnapshot(String),

    /// A named parent snapshot is of another kind than the backup.
    #[error("parent {parent} is a {parent_kind} snapshot; this backup is {kind}")]
    ParentKindMismatch {
        /// The parent's short id.
        parent: String,
        /// The parent's kind.
        parent_kind: String,
        /// The backup's kind.
        kind: String,
    },

    /// No key slot matches an id prefix.
    #[error("no key slot matches {0:?} (list them with `coffer key list`)")]
    KeyNotFound(String),

    /// Several key slots match an id prefix.
    #[error("key id prefix {0:?} is ambiguous; give more digits")]
    AmbiguousKey(String),

    /// `key remove` of the slot this session unlocked with.
    #[error(
        "refusing to remove the key slot this command was unlocked with; unlock with another key to remove it"
    )]
    KeyInUse,

    /// `key remove` of the last usable slot.
    #[error("refusing to remove the last key slot")]
    LastKey,

    /// A deletion the repository's immutability period forbids.
    #[error(
        "snapshot {snapshot} is younger than the repository's {days}-day immutability period; it cannot be forgotten before {until}"
    )]
    Immutable {
        /// The snapshot's short id.
        snapshot: String,
        /// The period in days.
        days: u32,
        /// When it may be forgotten (UTC, `YYYY-MM-DD HH:MM`).
        until: String,
    },

    /// A writer session that failed earlier was used again.
    #[error("this backup session failed earlier: {0}")]
    SessionFailed(String),

    /// A prune removed data a running backup reused, and it could not be stored again.
    #[error("a prune removed data this backup relied on while it ran ({0}); run the backup again")]
    PrunedDuringBackup(String),

    /// `copy` to a repository that does not share this one's chunk-id key.
    #[error(
        "the repository at {0} was not created as a copy of this one (chunk ids differ); let `coffer copy --to` create the target at an empty location"
    )]
    NotACopyTarget(String),

    /// Prune cannot run safely (an index file or snapshot it must read is unreadable).
    #[error("prune refused: {0}")]
    PruneUnsafe(String),

    /// An option given to the library is out of range.
    #[error("invalid {option}: {reason}")]
    InvalidOption {
        /// The option's name.
        option: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },

    /// The local cache cannot be used.
    #[error("local cache error at {path}: {source}")]
    Cache {
        /// File or directory.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A task of the repository's own panicked or was cancelled; the operation stops
    /// with this error instead of taking the process down.
    #[error("internal error while {task}: {reason} (please report this)")]
    TaskFailed {
        /// What the task was doing.
        task: &'static str,
        /// The panic message or cancellation.
        reason: String,
    },
}

fn skipped_note(skipped: usize) -> String {
    if skipped == 0 {
        String::new()
    } else {
        format!(" ({skipped} invalid key slot(s) skipped; see `coffer key list`)")
    }
}

impl Error {
    pub(crate) fn corrupt(path: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn task(task: &'static str, e: tokio::task::JoinError) -> Error {
        let reason = if e.is_panic() {
            let p = e.into_panic();
            p.downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .map(|s| format!("panicked: {s}"))
                .unwrap_or_else(|| "panicked".to_string())
        } else {
            "cancelled".to_string()
        };
        Error::TaskFailed { task, reason }
    }
}
