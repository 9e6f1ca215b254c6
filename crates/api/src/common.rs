//! Types several resources share: references to Secrets and repositories, and the items
//! a status lists.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to a Secret. Namespaced resources read it from their own namespace (a
/// `namespace` given there is refused); cluster-scoped ones need `namespace`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// The Secret's name.
    pub name: String,
    /// The Secret's namespace (cluster-scoped resources only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Which kind of repository a reference names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RepositoryKind {
    /// A BackupRepository in the referrer's namespace.
    #[default]
    BackupRepository,
    /// A ClusterBackupRepository.
    ClusterBackupRepository,
}

/// A reference to a BackupRepository (in the same namespace) or a
/// ClusterBackupRepository.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryRef {
    /// The repository object's name.
    pub name: String,
    /// Its kind (default BackupRepository).
    #[serde(default)]
    pub kind: RepositoryKind,
}

/// What a status item is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ItemKind {
    /// A Kubernetes object being backed up or restored.
    Object,
    /// A hook run in a pod's container.
    Hook,
    /// A volume's snapshot or data.
    Volume,
    /// The workflow itself (validation, the repository, deadlines).
    Workflow,
}

/// How bad a status item is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Severity {
    /// The item failed.
    Error,
    /// The item went through with something the user should know.
    Warning,
}

/// One failed or warned item of a workflow, with a reason a user can act on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusItem {
    /// What the item is.
    pub kind: ItemKind,
    /// Error or warning.
    pub severity: Severity,
    /// Its name: `kind/name` of an object, the hook's name, the PVC's name.
    pub name: String,
    /// Its namespace, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// What went wrong, and what to do about it.
    pub reason: String,
}
