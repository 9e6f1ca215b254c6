//! The repository's error type. Every variant's message is one line that says what is
//! wrong and, where the user can act, what to do about it.

use crate::id::Id;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid repository location {location:?}: {reason}")]
    BadLocation { location: String, reason: String },

    #[error("no Coffer repository at {0} (create one with `coffer repo init`)")]
    NotARepository(String),

    #[error("a repository already exists at {0}")]
    AlreadyExists(String),

    #[error("wrong password or key: no key slot of the repository at {0} opens with it")]
    WrongSecret(String),

    #[error(
        "repository at {location} uses format version {found}, this coffer reads version {supported}"
    )]
    UnsupportedVersion {
        location: String,
        found: u32,
        supported: u32,
    },

    #[error("storage unreachable at {location}: {source}")]
    Unreachable {
        location: String,
        #[source]
        source: Box<opendal::Error>,
    },

    #[error(
        "storage is full while writing {path}: free space on {location} and run again (nothing written so far is lost)"
    )]
    StorageFull { location: String, path: String },

    #[error("permission denied for {path} at {location}: {source}")]
    PermissionDenied {
        location: String,
        path: String,
        #[source]
        source: Box<opendal::Error>,
    },

    #[error("storage error for {path} at {location}: {source}")]
    Storage {
        location: String,
        path: String,
        #[source]
        source: Box<opendal::Error>,
    },

    #[error("object {path} is missing from the repository (run `coffer check`)")]
    MissingObject { path: String },

    #[error("object {path} is damaged: {reason} (run `coffer check --read-data`)")]
    Corrupt { path: String, reason: String },

    #[error("chunk {chunk} is damaged in pack {pack}: {reason} (run `coffer check --read-data`)")]
    DamagedChunk { chunk: Id, pack: Id, reason: String },

    #[error(
        "chunk {0} is not in the repository index (the snapshot needs data the repository lost; run `coffer check`)"
    )]
    ChunkNotFound(Id),

    #[error("no snapshot matches {0:?} (list them with `coffer snapshots`)")]
    SnapshotNotFound(String),

    #[error("snapshot id prefix {0:?} is ambiguous; give more digits")]
    AmbiguousSnapshot(String),

    #[error("no key slot matches {0:?} (list them with `coffer key list`)")]
    KeyNotFound(String),

    #[error("{0}")]
    Refused(String),

    #[error("local cache error at {path}: {source}")]
    Cache {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn corrupt(path: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
