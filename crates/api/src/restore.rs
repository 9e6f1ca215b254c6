//! One restore of a backup: what to bring back, where, and how; everything about its
//! progress and outcome in status.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::application::ExecHook;
use crate::backup::HookCounts;
use crate::common::{RepositoryRef, StatusItem};

/// Where the restored application goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RestoreMode {
    /// The target does not hold the application (deleted, another namespace, another
    /// cluster): objects are created, PVCs are filled by Coffer's volume populator.
    #[default]
    New,
    /// The application is running: its workloads are scaled down, its PVCs overwritten
    /// with the backed-up data, and scaled back up.
    InPlace,
}

/// What to do with an object that already exists in the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExistingObjects {
    /// Leave it as it is and report it.
    Skip,
    /// Replace it with the backed-up state.
    Update,
    /// Delete it and create it again.
    Recreate,
}

/// A ConfigMap holding resource-modifier rules (Coffer's or Velero's format, as
/// `coffer resources restore --transform` takes them), in the Restore's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransformsRef {
    /// The ConfigMap's name; every key holds one rules file, applied in key order.
    pub config_map: String,
}

/// Which PVCs get their data back (by the names they had when backed up).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeFilter {
    /// Only these PVCs (`name` or `namespace/name`); empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Never these PVCs: restored as objects without data (empty volumes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

/// Hooks run in restored pods.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreHookGroup {
    /// A name for status and events.
    pub name: String,
    /// Which restored pods (target namespaces); omitted: every restored pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
    /// Commands run once the pod is Ready, in the order listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post: Vec<RestoreExecHook>,
    /// Containers injected first into the restored pods (and the pod templates of
    /// restored workloads) the selector matches: they run to completion before the
    /// application starts on its restored data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init: Vec<InitContainer>,
}

/// An init container a restore injects.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InitContainer {
    /// Its name (a container of that name already in the pod is left as it is).
    pub name: String,
    /// Its image.
    pub image: String,
    /// Its command and arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// The pod's volumes it mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<k8s_openapi::api::core::v1::VolumeMount>,
}

/// A command run in a restored pod once it is ready.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreExecHook {
    /// The command.
    pub exec: ExecHook,
    /// How long to wait for the pod to be Ready (`5m`); default 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_timeout: Option<String>,
}

/// The spec of a Restore.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "coffer.dev",
    version = "v1alpha1",
    kind = "Restore",
    namespaced,
    status = "RestoreStatus",
    shortname = "crs",
    category = "coffer",
    doc = "One restore of a backup (from a Backup object, or from a repository's manifest).",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Backup", type_ = "string", json_path = ".spec.backup"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Size", type_ = "string", json_path = ".status.size"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// The Backup (in this namespace) to restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// Or a repository (with `manifest`): disaster recovery with no Backup object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<RepositoryRef>,
    /// The backup manifest's id in `repository` (as `coffer snapshots` lists it; a
    /// unique prefix is enough).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// `new` (default) or `inPlace`.
    #[serde(default)]
    pub mode: RestoreMode,
    /// Source namespace to target namespace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub namespace_mapping: BTreeMap<String, String>,
    /// Only these resource types (kubectl names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_resources: Vec<String>,
    /// Never these resource types.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_resources: Vec<String>,
    /// Only these objects (`KIND/NAME`, `KIND/NAMESPACE/NAME`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub only: Vec<String>,
    /// Only stored objects with these labels (kubectl syntax: `app=web,tier!=db`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<String>,
    /// What to do with objects that exist (default: skip; update with `rollback`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existing: Option<ExistingObjects>,
    /// Also delete the objects in scope that did not exist at backup time.
    #[serde(default)]
    pub rollback: bool,
    /// Restore beside the original: every namespaced object renamed `NAME-SUFFIX`, and
    /// every reference to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone: Option<String>,
    /// Resource-modifier rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transforms: Option<TransformsRef>,
    /// StorageClass OLD to NEW.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub storage_class_mapping: BTreeMap<String, String>,
    /// Image registry prefix OLD to NEW.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub image_registry_mapping: BTreeMap<String, String>,
    /// Which PVCs get their data back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<VolumeFilter>,
    /// Hooks run in restored pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<RestoreHookGroup>,
    /// Set to stop the restore: its temporary objects are removed, phase Canceled.
    #[serde(default)]
    pub cancel: bool,
}

/// Where a restore is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RestorePhase {
    /// Accepted, not started.
    New,
    /// Running.
    InProgress,
    /// Done, everything restored.
    Completed,
    /// Done, some items failed (listed in `items`).
    PartiallyFailed,
    /// Failed; `message` and `items` say why.
    Failed,
    /// Stopped by `cancel: true`.
    Canceled,
}

impl RestorePhase {
    /// Whether the restore has ended.
    pub fn is_final(self) -> bool {
        !matches!(self, RestorePhase::New | RestorePhase::InProgress)
    }
}

/// How a volume's data came back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RestoreMethod {
    /// A new PVC filled by Coffer's volume populator.
    Populator,
    /// A data mover wrote into an existing PVC.
    Mover,
    /// A data mover wrote only the blocks that differ into an existing Block PVC.
    Delta,
}

/// Where one volume's restore is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum VolumeRestorePhase {
    /// Waiting (for its PVC, a node, a free mover).
    Pending,
    /// The data is being written.
    InProgress,
    /// The PVC holds the backed-up data.
    Completed,
    /// It failed; `message` says why.
    Failed,
    /// Not restored (excluded, or no data in the backup).
    Skipped,
}

/// One PVC's restore.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRestoreStatus {
    /// The PVC restored (its target name).
    pub pvc: String,
    /// Its target namespace.
    pub namespace: String,
    /// The PVC it was backed up from (`namespace/name`).
    pub source: String,
    /// The VolumeBackup the populator filled it from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_backup: Option<String>,
    /// The repository snapshot of its data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// How the data came back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<RestoreMethod>,
    /// Where it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<VolumeRestorePhase>,
    /// The volume's size in bytes.
    #[serde(default)]
    pub bytes_total: u64,
    /// Bytes written to it.
    #[serde(default)]
    pub bytes_written: u64,
    /// How long writing the data took, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// Why it failed, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A workload a restore in place scaled to zero.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaledWorkload {
    /// `Deployment`, `StatefulSet` or `ReplicaSet`.
    pub kind: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its replicas before the restore (given back at the end).
    pub replicas: i32,
}

/// Counts of objects restored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectCounts {
    /// Objects created.
    pub created: u64,
    /// Objects updated or recreated.
    pub updated: u64,
    /// Objects left as they were (existing, or regenerated by a controller).
    pub skipped: u64,
    /// Objects deleted (rollback).
    pub deleted: u64,
    /// Objects that failed (each listed in `items`).
    pub failed: u64,
}

/// Everything about a restore's progress and outcome.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    /// Where it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RestorePhase>,
    /// A summary in words (the reason for Failed).
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
    /// The backup manifest restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// The resources snapshot restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources_snapshot: Option<String>,
    /// The namespaces restored into (after the mapping), decided at validation; the
    /// volume populator fills PVCs of this restore only there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_namespaces: Vec<String>,
    /// Objects per outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<ObjectCounts>,
    /// Mode inPlace: the workloads scaled to zero while their volumes are written, with
    /// the replicas they get back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scaled: Vec<ScaledWorkload>,
    /// Each PVC's restore.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeRestoreStatus>,
    /// Every failed or warned object, hook and volume, with its reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<StatusItem>,
    /// Hooks run and failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<HookCounts>,
    /// What the restore could not do but did not stop for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Volume data written, human-readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Why the restore will end Failed, set as soon as that is known (cleanup still
    /// runs before the phase says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}
