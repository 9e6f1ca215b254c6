//! One backup of an application, and everything about its progress and outcome.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::application::{ApplicationSpec, VolumePolicyKind};
use crate::common::{RepositoryRef, StatusItem};

/// What deleting the Backup object does to its data in the repository.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// The data stays (restorable from the repository, e.g. after `kubectl delete ns`).
    #[default]
    Retain,
    /// The backup is forgotten in the repository too (prune reclaims its space).
    Delete,
}

/// The spec of a Backup.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "coffer.dev",
    version = "v1alpha1",
    kind = "Backup",
    namespaced,
    status = "BackupStatus",
    shortname = "cbk",
    category = "coffer",
    doc = "One backup of an application into a repository.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Application",
        type_ = "string",
        json_path = ".spec.application"
    ),
    printcolumn(name = "Size", type_ = "string", json_path = ".status.size"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// The Application (in this namespace) to back up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
    /// Or the application's definition inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<ApplicationSpec>,
    /// Where to store it.
    pub repository: RepositoryRef,
    /// How long the backup is kept (`720h`, `30d`); omitted: until deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Recorded with the backup in the repository (as snapshot tags).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Set to stop the backup: post hooks run, temporary objects are removed, phase
    /// Canceled.
    #[serde(default)]
    pub cancel: bool,
    /// What deleting this object does to the data (default Retain).
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Where a backup is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BackupPhase {
    /// Accepted, not started.
    New,
    /// Running.
    InProgress,
    /// Done, every item backed up.
    Completed,
    /// Done, some items failed (listed in `items`).
    PartiallyFailed,
    /// Failed; `message` and `items` say why.
    Failed,
    /// Stopped by `cancel: true`.
    Canceled,
    /// The spec cannot run (missing repository or application, bad selector); nothing
    /// was written.
    FailedValidation,
}

impl BackupPhase {
    /// Whether the backup has ended (nothing will change it any more).
    pub fn is_final(self) -> bool {
        !matches!(self, BackupPhase::New | BackupPhase::InProgress)
    }
}

/// Counts of work done and to do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupProgress {
    /// Kubernetes objects stored.
    pub objects: u64,
    /// Volumes whose data is stored (or snapshot kept).
    pub volumes_done: u32,
    /// Volumes to protect.
    pub volumes_total: u32,
    /// Bytes of volume data processed.
    pub bytes_done: u64,
    /// Bytes of volume data to process.
    pub bytes_total: u64,
}

/// Hooks run and failed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookCounts {
    /// Hook executions attempted (per pod and hook).
    pub attempted: u32,
    /// Those that failed.
    pub failed: u32,
}

/// One PVC's outcome in a backup.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStatus {
    /// The PVC.
    pub pvc: String,
    /// Its namespace.
    pub namespace: String,
    /// The policy applied.
    pub mode: VolumePolicyKind,
    /// The VolumeBackup holding its data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_backup: Option<String>,
    /// The VolumeSnapshot taken (kept for `snapshot`, deleted after the copy otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot: Option<String>,
    /// The repository snapshot of its data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// The volume's size in bytes.
    #[serde(default)]
    pub bytes_total: u64,
    /// Bytes read from it.
    #[serde(default)]
    pub bytes_read: u64,
    /// Bytes added to the repository (after deduplication and compression).
    #[serde(default)]
    pub bytes_new: u64,
    /// Whether only changed blocks were read (SnapshotMetadata service).
    #[serde(default)]
    pub changed_blocks: bool,
    /// Why all of it was read, when changed blocks could not be used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_read_reason: Option<String>,
    /// `Filesystem` or `Block`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mode: Option<String>,
    /// The PVC's requested size (`1Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// The PVC's StorageClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// The CSI driver of its PV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// The VolumeSnapshotClass used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_class: Option<String>,
    /// The consistency group (the value of the Application's `consistencyGroupLabel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Where this volume is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<crate::VolumeBackupPhase>,
    /// Why it failed, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Everything about a backup's progress and outcome.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// Where it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupPhase>,
    /// A summary in words (the reason for Failed and FailedValidation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The workflow step reached, so that a restarted operator resumes there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// When it expires (from `ttl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<Time>,
    /// Counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<BackupProgress>,
    /// Every failed or warned object, hook and volume, with its reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<StatusItem>,
    /// Hooks run and failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<HookCounts>,
    /// The repository snapshot of the Kubernetes objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources_snapshot: Option<String>,
    /// Each PVC's outcome.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeStatus>,
    /// The repository id of the backup manifest (everything a restore needs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// Data added to the repository, human-readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Why the backup will end Failed, set as soon as that is known: the post hooks and
    /// the cleanup still run before the phase says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The application's definition as validated when the backup started: every later
    /// step (and the manifest) uses this, not the Application as it is by then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<ApplicationSpec>,
    /// The repository the backup went to (its location), for restores and listings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_location: Option<String>,
    /// Standard conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
