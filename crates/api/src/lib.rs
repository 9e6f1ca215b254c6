//! Coffer's Kubernetes API, group `coffer.dev`, version `v1alpha1` (DESIGN.md layer 5):
//! the custom resources that users write and the operator reconciles.
//!
//! - [`BackupRepository`] (namespaced, for application owners) and
//!   [`ClusterBackupRepository`] (for administrators): where backups go and how to unlock
//!   the repository.
//! - [`Application`]: what makes up an application (a selection of objects, policies for
//!   its volumes, hooks).
//! - [`Backup`]: one backup of an application, with its whole progress and outcome in
//!   status.
//! - [`VolumeBackup`]: one PVC's data in a repository, made by a Backup; also the kind a
//!   PVC's `dataSourceRef` names for Coffer's volume populator.
//! - [`Restore`]: one restore of a backup (from a Backup, or from a repository's manifest
//!   for disaster recovery), with its progress and outcome in status.
//!
//! This crate owns the types, their serialised shape (field names are a contract with
//! users' YAML) and the generated CRDs ([`crds`], committed under deploy/crds/). It does
//! not act on them: that is the operator's job.

// `printcolumn(type_ = "string")` repeated across columns of one kind reads to clippy as a
// duplicated attribute; it is kube-derive's syntax.
#![allow(clippy::duplicated_attributes)]

pub mod application;
pub mod backup;
pub mod common;
pub mod repository;
pub mod restore;
pub mod volume_backup;

pub use application::{
    Application, ApplicationSpec, ApplicationStatus, ClusterResources, ExecHook, Hook, HookGroup,
    ObjectRef, OnError, Selection, VolumePolicy, VolumePolicyKind,
};
pub use backup::{
    Backup, BackupPhase, BackupProgress, BackupSpec, BackupStatus, DeletionPolicy, HookCounts,
    VolumeStatus,
};
pub use common::{ItemKind, RepositoryKind, RepositoryRef, SecretRef, Severity, StatusItem};
pub use repository::{
    BackupRepository, BackupRepositorySpec, ClusterBackupRepository, ClusterBackupRepositorySpec,
    RepositoryPhase, RepositorySettings, RepositoryStatus,
};
pub use restore::{
    ExistingObjects, InitContainer, ObjectCounts, Restore, RestoreExecHook, RestoreHookGroup,
    RestoreMethod, RestoreMode, RestorePhase, RestoreSpec, RestoreStatus, ScaledWorkload,
    TransformsRef, VolumeFilter, VolumeRestorePhase, VolumeRestoreStatus,
};
pub use volume_backup::{VolumeBackup, VolumeBackupPhase, VolumeBackupSpec, VolumeBackupStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group.
pub const GROUP: &str = "coffer.dev";
/// The API version.
pub const VERSION: &str = "v1alpha1";
/// `group/version`, as `apiVersion` fields carry it.
pub const API_VERSION: &str = "coffer.dev/v1alpha1";

/// Every CRD of this API, in the order they install.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        BackupRepository::crd(),
        ClusterBackupRepository::crd(),
        Application::crd(),
        Backup::crd(),
        VolumeBackup::crd(),
        Restore::crd(),
    ]
}

/// A CRD's file name under deploy/crds/: `<plural>.<group>.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// A CRD as YAML, the way deploy/crds/ holds it.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> String {
    serde_yaml::to_string(crd).expect("a CRD serialises to YAML")
}
