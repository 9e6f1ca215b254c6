//! What makes up an application: the objects (a selection), how each of its volumes is
//! protected, and the hooks that make its data consistent.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which objects belong to an application, with the resources layer's semantics
/// (`coffer resources backup` takes the same choices as flags).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Selection {
    /// Namespaces to take objects from; empty: the namespace of the Application (or
    /// Backup). Namespaces other than the resource's own need a ClusterBackupRepository.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Only objects with these labels; omitted: every object of the namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
    /// Objects matching any of these selectors too (Velero's orLabelSelectors).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub or_label_selectors: Vec<LabelSelector>,
    /// Only these resources (`deployments`, `configmaps`, `certificates.cert-manager.io`);
    /// empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub included_resources: Vec<String>,
    /// Never these resources.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_resources: Vec<String>,
    /// These objects by name, in addition to what the selectors match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<ObjectRef>,
    /// Cluster-scoped objects: `auto` (those the selected objects need: CRDs, bound PVs,
    /// their StorageClasses, ClusterRoles of RoleBindings), `include` or `exclude`.
    #[serde(default)]
    pub cluster_resources: ClusterResources,
}

/// One object by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// The kind (`ConfigMap`) or resource (`configmaps`, `deployments.apps`).
    pub kind: String,
    /// The object's name.
    pub name: String,
    /// Its namespace; omitted: the selection's namespace (or cluster-scoped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// How cluster-scoped objects are chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ClusterResources {
    /// Those the selected namespaced objects need.
    #[default]
    Auto,
    /// All cluster-scoped objects the selectors match.
    Include,
    /// None.
    Exclude,
}

/// How a PVC's data is protected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum VolumePolicyKind {
    /// A CSI snapshot, kept in the cluster; nothing copied to the repository.
    Snapshot,
    /// A CSI snapshot copied to the repository by a data mover, then deleted (except the
    /// one kept as the next backup's changed-block base).
    #[default]
    SnapshotAndCopy,
    /// The mounted volume copied while the application is quiesced (storage without
    /// snapshots).
    Live,
    /// Not protected.
    Exclude,
}

/// The policy for the PVCs a selector matches (the first matching entry wins; PVCs no
/// entry matches get `snapshotAndCopy`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumePolicy {
    /// Which PVCs; omitted: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// What to do with them.
    #[serde(default)]
    pub policy: VolumePolicyKind,
    /// The VolumeSnapshotClass to use; omitted: the class of the PVC's driver marked
    /// default, else the only one of that driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_class: Option<String>,
}

/// What a failed hook does to the workflow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OnError {
    /// The backup fails (post hooks still run).
    #[default]
    Fail,
    /// The failure is recorded and the backup goes on (PartiallyFailed at the end).
    Continue,
}

/// A command run in a container of each selected pod, through the API server's exec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecHook {
    /// The container; omitted: the pod's first container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The command and its arguments (no shell unless the command is one).
    pub command: Vec<String>,
    /// What a failure (non-zero exit, timeout, missing container) does.
    #[serde(default)]
    pub on_error: OnError,
    /// How long the command may run (`30s`, `2m`, `1h`); default 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// One hook (Velero's shape: an `exec` entry).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Hook {
    /// The command to run.
    pub exec: ExecHook,
}

/// Hooks for the pods a selector matches: `pre` run in order before the snapshots, `post`
/// after them (always, also when a pre hook or a snapshot failed).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookGroup {
    /// A name for status and events.
    pub name: String,
    /// Namespaces of the pods; empty: the application's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Which pods; omitted: every pod of the application's namespaces. Pods run in name
    /// order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
    /// Run before the snapshots (quiesce), in the order listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pre: Vec<Hook>,
    /// Run after the snapshots (unquiesce), in the order listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post: Vec<Hook>,
}

/// The spec of an Application.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "coffer.dev",
    version = "v1alpha1",
    kind = "Application",
    namespaced,
    status = "ApplicationStatus",
    shortname = "capp",
    category = "coffer",
    doc = "What makes up an application: its objects, how its volumes are protected, its hooks.",
    printcolumn(
        name = "Last backup",
        type_ = "string",
        json_path = ".status.lastBackup"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.lastBackupPhase"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSpec {
    /// The objects.
    #[serde(flatten)]
    pub selection: Selection,
    /// Policies for its PVCs, first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumePolicy>,
    /// PVCs that share a value of this label form one consistency group: one
    /// VolumeGroupSnapshot instead of a VolumeSnapshot each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency_group_label: Option<String>,
    /// Hooks around the snapshots.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookGroup>,
}

/// What the operator last did with an Application.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationStatus {
    /// The last Backup of it that ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<String>,
    /// How that Backup ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_phase: Option<crate::BackupPhase>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// The last Backup of it that Completed (the newest restorable one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_completed_backup: Option<String>,
}
