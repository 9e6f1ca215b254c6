//! Kubernetes objects, DESIGN.md layer 4.
//!
//! This crate owns everything about the YAML side of a backup: discovering what a cluster
//! serves, collecting the objects a selection names, storing them in the repository as a
//! `resources` snapshot (one catalog plus one stream per object, so a single object reads
//! back without fetching the rest), and planning and running a restore: ordering,
//! sanitising, API-version conversion, namespace mapping, clone renames, transforms, the
//! existing-object policy, rollback deletions and dependency checks.
//!
//! It does not own volume data (the `volume` crate), the repository format (the `repo`
//! crate) or how workflows are scheduled (the operator). It talks to the API server only
//! through kube-rs, with whatever client the caller built from a kubeconfig.

use thiserror::Error;

/// Errors of the resources layer. Messages are one line, say what is wrong and, where the
/// user can act, what to do.
#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Repo(#[from] coffer_repo::Error),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub mod archive;
pub mod collect;
pub mod convert;
pub mod discovery;
pub mod import;
pub mod order;
pub mod refs;
pub mod restore;
pub mod sanitize;
pub mod selector;
pub mod transform;

pub use archive::{Catalog, Entry};
pub use collect::{BackupSummary, ClusterResources, Selection};
pub use restore::{ExistingPolicy, ObjectResult, RestoreOptions, RestoreReport};
