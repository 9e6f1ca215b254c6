//! One PVC's data in a repository: what a Backup made of a volume, and what Coffer's
//! volume populator fills a new PVC from.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::RepositoryRef;

/// The spec of a VolumeBackup: the source volume's shape and where its data is.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "coffer.dev",
    version = "v1alpha1",
    kind = "VolumeBackup",
    namespaced,
    status = "VolumeBackupStatus",
    shortname = "cvb",
    category = "coffer",
    doc = "One PVC's data in a repository (made by a Backup; a PVC's dataSourceRef may name it).",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "PVC", type_ = "string", json_path = ".spec.sourcePvc"),
    printcolumn(name = "Size", type_ = "string", json_path = ".spec.size"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct VolumeBackupSpec {
    /// The Backup that made it (the owner).
    pub backup: String,
    /// The PVC it is a copy of.
    pub source_pvc: String,
    /// The PVC's namespace.
    pub source_namespace: String,
    /// The PVC's requested size (a quantity, `10Gi`).
    pub size: String,
    /// `Filesystem` or `Block`.
    pub volume_mode: String,
    /// The PVC's StorageClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// The PVC's access modes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_modes: Vec<String>,
    /// The PVC's labels, restored with it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The repository holding the data.
    pub repository: RepositoryRef,
    /// The repository snapshot of the data, once copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// Set on the VolumeBackups a Restore makes in its target namespaces: the Restore
    /// (`namespace/name`). The populator then resolves `repository` in the Restore's
    /// namespace, and only while that Restore maps its namespace here: a namespace
    /// cannot name another namespace's data on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<String>,
}

/// Where the copy of one volume is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum VolumeBackupPhase {
    /// Waiting for its snapshot or a free data mover.
    Pending,
    /// A data mover is copying it.
    InProgress,
    /// The data is in the repository.
    Completed,
    /// The copy failed; `message` says why.
    Failed,
    /// Stopped with its Backup.
    Canceled,
}

/// The copy's progress.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeBackupStatus {
    /// Where it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<VolumeBackupPhase>,
    /// Why it failed, or a note on how it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The data mover pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mover_pod: Option<String>,
    /// Bytes to process.
    #[serde(default)]
    pub bytes_total: u64,
    /// Bytes processed so far (updated every few seconds).
    #[serde(default)]
    pub bytes_done: u64,
    /// Bytes read from the volume.
    #[serde(default)]
    pub bytes_read: u64,
    /// Bytes added to the repository.
    #[serde(default)]
    pub bytes_new: u64,
    /// Whether only changed blocks were read.
    #[serde(default)]
    pub changed_blocks: bool,
    /// Why the whole volume was read when changed blocks could not be used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_read_reason: Option<String>,
    /// When the copy started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// When the data mover last reported (at least every few seconds while it runs); a
    /// mover silent for long is taken as lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    /// The repository snapshot the data was written to (also in spec once complete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// The repository snapshot unchanged data came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_snapshot_id: Option<String>,
}
