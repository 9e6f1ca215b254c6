//! Where backups go: BackupRepository (namespaced) and ClusterBackupRepository.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::SecretRef;

/// A repository's location and how to unlock it; the same for both kinds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositorySettings {
    /// A path (inside the operator's and movers' pods) or `s3://BUCKET/PREFIX`, as the
    /// CLI's `--repo` takes it.
    pub location: String,
    /// A Secret with the storage's credentials: for S3 the keys `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, and optionally `AWS_ENDPOINT_URL`, `AWS_REGION`,
    /// `AWS_SESSION_TOKEN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<SecretRef>,
    /// A Secret holding the repository's password (key `password`) or raw key (key `key`,
    /// at least 32 bytes).
    pub key_secret: SecretRef,
    /// Only read: backups to it are refused (a disaster-recovery view of another
    /// cluster's repository).
    #[serde(default)]
    pub read_only: bool,
    /// Create the repository when the location holds none.
    #[serde(default)]
    pub initialize: bool,
    /// The AEAD for a repository created here: `aes-256-gcm` (default) or
    /// `chacha20-poly1305`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<String>,
    /// Compression for a repository created here: `zstd` (default), `zstd:LEVEL` or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
}

/// The spec of a BackupRepository.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "coffer.dev",
    version = "v1alpha1",
    kind = "BackupRepository",
    namespaced,
    status = "RepositoryStatus",
    shortname = "brepo",
    category = "coffer",
    doc = "A backup repository for the applications of one namespace.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Location", type_ = "string", json_path = ".spec.location"),
    printcolumn(name = "Snapshots", type_ = "integer", json_path = ".status.snapshots"),
    printcolumn(name = "Size", type_ = "string", json_path = ".status.size"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct BackupRepositorySpec {
    /// Location and secrets.
    #[serde(flatten)]
    pub settings: RepositorySettings,
}

/// The spec of a ClusterBackupRepository.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "coffer.dev",
    version = "v1alpha1",
    kind = "ClusterBackupRepository",
    status = "RepositoryStatus",
    shortname = "cbrepo",
    category = "coffer",
    doc = "A backup repository for the whole cluster (administrators).",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Location", type_ = "string", json_path = ".spec.location"),
    printcolumn(name = "Snapshots", type_ = "integer", json_path = ".status.snapshots"),
    printcolumn(name = "Size", type_ = "string", json_path = ".status.size"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct ClusterBackupRepositorySpec {
    /// Location and secrets (Secrets name their namespace).
    #[serde(flatten)]
    pub settings: RepositorySettings,
}

/// Whether the operator can use a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RepositoryPhase {
    /// Opened with its key.
    Ready,
    /// Not usable; `message` says why.
    Unavailable,
}

/// What the operator found at the location.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryStatus {
    /// Ready or Unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RepositoryPhase>,
    /// Why it is unavailable (wrong password, unreachable endpoint, not a Coffer
    /// repository), and how to fix it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the operator last opened it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checked_time: Option<Time>,
    /// The repository's id (the same in every cluster that uses it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_id: Option<String>,
    /// Snapshots stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshots: Option<u64>,
    /// Stored size, human-readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions (`Ready`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
