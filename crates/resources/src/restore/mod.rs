//! Restore: a plan, then its application.
//!
//! [`plan`] reads the catalog, selects entries, loads only their objects, and turns each
//! into the object to create in the target: converted to a served API version, moved by
//! the namespace mapping, renamed by `--clone`, sanitised, mapped (storage classes, image
//! registries) and transformed. It checks dependencies, compares with what the target
//! holds (the existing-object policy), adds rollback deletions and orders everything (see
//! [`crate::order`]). The result, a [`RestorePlan`], is a value: every object with its
//! action and final body, in order, grouped into steps whose objects do not depend on
//! each other; it serialises to JSON, so it can be printed, reviewed, stored and applied
//! later.
//!
//! [`apply`] runs a plan (or validates it with the server's dry run): deletions first,
//! then step after step, the objects of one step concurrently. One failure is reported
//! and the rest go on; the [`RestoreReport`] holds one typed [`ObjectResult`] per object.
//!
//! The pieces: `select` (which entries the options name), `plan` (the planner),
//! `prepare` (one stored object into the target's object), `clone` (renames, selector
//! labels and Service references of `--clone`), `dependencies` (missing references),
//! `rollback` (what `--rollback` deletes), `apply` (running a plan).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::discovery::{ServedResource, split_api_version};
use crate::sanitize::SanitizeOptions;
use crate::transform::TransformSet;
use crate::{Error, Result};

mod apply;
mod clone;
mod dependencies;
mod plan;
mod prepare;
mod rollback;
mod select;

pub use apply::apply;
pub use clone::{DnsRewrite, ServiceNames, rewrite_service_references};
pub use plan::plan;

/// Version of the [`RestorePlan`] layout.
pub const PLAN_FORMAT: u32 = 1;

/// What to do with an object that already exists in the target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExistingPolicy {
    /// Leave it as it is and report it.
    #[default]
    Skip,
    /// Replace it with the backed-up state (server-assigned fields kept).
    Update,
    /// Delete it and create it again.
    Recreate,
}

impl std::str::FromStr for ExistingPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "skip" => Ok(Self::Skip),
            "update" => Ok(Self::Update),
            "recreate" => Ok(Self::Recreate),
            _ => Err(Error::Invalid(format!(
                "--existing {s:?}: expected skip, update or recreate"
            ))),
        }
    }
}

/// What a plan decides for an object (the JSON strings are part of the CLI's contract).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Create it (it is not in the target).
    Create,
    /// Replace the target's object with the backed-up state.
    Update,
    /// Delete the target's object and create it again.
    Recreate,
    /// Leave it (the reason says why).
    Skip,
    /// Delete a live object the backup did not have (`--rollback`).
    Delete,
}

impl Action {
    /// The word the CLI prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Recreate => "recreate",
            Action::Skip => "skip",
            Action::Delete => "delete",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to an object (the JSON strings are part of the CLI's contract).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Created in the target.
    Created,
    /// Replaced by the backed-up state.
    Updated,
    /// Already equal to the backed-up state; nothing written.
    Unchanged,
    /// Deleted and created again.
    Recreated,
    /// Left alone (see the reason).
    Skipped,
    /// Deleted (rollback), or already gone.
    Deleted,
    /// Not restored (see the reason); the rest went on.
    Failed,
    /// Dry run: the API server's dry run accepted it.
    Planned,
}

impl Outcome {
    /// The word the CLI prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Updated => "updated",
            Outcome::Unchanged => "unchanged",
            Outcome::Recreated => "recreated",
            Outcome::Skipped => "skipped",
            Outcome::Deleted => "deleted",
            Outcome::Failed => "failed",
            Outcome::Planned => "planned",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to restore and how: everything [`plan`] needs besides the snapshot and cluster.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Only objects from these source namespaces (and cluster-scoped ones).
    pub namespaces: Vec<String>,
    /// Source namespace to target namespace.
    pub namespace_mapping: BTreeMap<String, String>,
    /// Only these resource types (kubectl names).
    pub include_resources: Vec<String>,
    /// Never these resource types (kubectl names).
    pub exclude_resources: Vec<String>,
    /// Label selector over the stored objects (kubectl syntax).
    pub selector: Option<String>,
    /// `KIND/NAME` of the only objects to restore.
    pub only: Vec<String>,
    /// Transform rules, applied in order.
    pub transforms: TransformSet,
    /// Storage class OLD to NEW.
    pub storage_class_mapping: BTreeMap<String, String>,
    /// Image registry prefix OLD to NEW.
    pub image_registry_mapping: BTreeMap<String, String>,
    /// None: `update` with `rollback`, `skip` otherwise.
    pub existing: Option<ExistingPolicy>,
    /// Also delete objects in scope that the backup did not have.
    pub rollback: bool,
    /// Rename every restored namespaced object `NAME-SUFFIX` (a clone beside the original).
    pub clone_suffix: Option<String>,
    /// Keep Service node ports.
    pub preserve_node_ports: bool,
}

/// How [`apply`] runs a plan.
#[derive(Clone, Debug)]
pub struct ApplyOptions {
    /// Send everything with `dryRun=All`: validate, change nothing.
    pub dry_run: bool,
    /// How long to wait for a CRD to be Established or a deleted object to be gone.
    pub wait_timeout: Duration,
    /// Requests in flight at once within one step (at least 1).
    pub concurrency: usize,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            dry_run: false,
            wait_timeout: Duration::from_secs(60),
            concurrency: 24,
        }
    }
}

/// The cluster a plan was made for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanTarget {
    /// The API server's URL when planned.
    pub server: String,
    /// The kube-system namespace's uid (the cluster's identity), when readable.
    pub uid: Option<String>,
}

/// A restore plan: what [`apply`] will do, object by object, in order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RestorePlan {
    /// [`PLAN_FORMAT`].
    pub format: u32,
    /// The resources snapshot restored.
    pub snapshot_id: String,
    /// The cluster the plan was made against (its live objects decided the actions).
    pub target: PlanTarget,
    /// The existing-object policy (also used when an object appears during the apply).
    pub existing: ExistingPolicy,
    /// Objects that cannot be restored, known at planning time (result `failed`).
    pub failures: Vec<ObjectResult>,
    /// Rollback deletions, run first.
    pub deletions: Vec<PlannedDeletion>,
    /// Every other object, in restore order.
    pub objects: Vec<PlannedObject>,
    /// References to objects neither restored nor present in the target.
    pub missing_dependencies: Vec<String>,
    /// References in free text that `--clone` could not decide (left as they were).
    #[serde(default)]
    pub undecided_references: Vec<String>,
    /// What the planner could not do but did not stop for.
    pub warnings: Vec<String>,
}

/// One object of a plan.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlannedObject {
    /// Objects of one step are independent of each other and are created concurrently;
    /// steps run one after the other.
    pub step: u32,
    /// The kind's rank in the restore order ([`crate::order::rank`]).
    pub rank: u32,
    /// What to do.
    pub action: Action,
    /// The target's API version.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// The kind.
    pub kind: String,
    /// The plural resource name in `api_version`.
    pub resource: String,
    /// Whether the kind is namespaced.
    pub namespaced: bool,
    /// The target namespace.
    pub namespace: Option<String>,
    /// The target name.
    pub name: String,
    /// The stored object's `namespace/name` when the restore moves or renames it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub from: Option<String>,
    /// Why (for skip), in words.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// Conversions, transforms, mappings and clone rewrites applied.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub notes: Vec<String>,
    /// The body sent to the API server (owner references are set at apply time, when
    /// the owners' new uids are known).
    pub object: Value,
    /// The stored object's uid, so that objects it owns can point at its successor.
    #[serde(default)]
    pub stored_uid: Option<String>,
    /// The stored object's owner references.
    #[serde(default)]
    pub owners: Vec<Value>,
    /// The uid of the object already in the target (for skip, update, recreate).
    #[serde(default)]
    pub live_uid: Option<String>,
    /// How the object was sanitised (an update compares the live object cleaned the same
    /// way, to leave equal objects untouched).
    #[serde(default)]
    pub sanitized_with: SanitizeOptions,
}

impl PlannedObject {
    /// The kube-rs description of the object's resource.
    pub fn served(&self) -> ServedResource {
        served_resource(
            &self.api_version,
            &self.kind,
            &self.resource,
            self.namespaced,
        )
    }

    /// "Deployment/web (namespace shop)".
    pub fn display(&self) -> String {
        display(&self.kind, self.namespace.as_deref(), &self.name)
    }

    /// The result of this object with `outcome`.
    pub fn result(&self, outcome: Outcome, reason: Option<String>) -> ObjectResult {
        ObjectResult {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            from: self.from.clone(),
            action: self.action,
            result: outcome,
            reason: reason.or_else(|| self.reason.clone()),
            notes: self.notes.clone(),
        }
    }
}

/// A live object `--rollback` deletes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlannedDeletion {
    /// API version of the live object.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// The kind.
    pub kind: String,
    /// The plural resource name.
    pub resource: String,
    /// Whether the kind is namespaced.
    pub namespaced: bool,
    /// Its namespace.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// Why it goes.
    pub reason: String,
}

impl PlannedDeletion {
    fn served(&self) -> ServedResource {
        served_resource(
            &self.api_version,
            &self.kind,
            &self.resource,
            self.namespaced,
        )
    }

    fn result(&self, outcome: Outcome, reason: String) -> ObjectResult {
        ObjectResult {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            from: None,
            action: Action::Delete,
            result: outcome,
            reason: Some(reason),
            notes: Vec::new(),
        }
    }
}

/// What requests to a resource need (the rest of discovery does not matter to a plan).
fn served_resource(
    api_version: &str,
    kind: &str,
    resource: &str,
    namespaced: bool,
) -> ServedResource {
    let (group, version) = split_api_version(api_version);
    ServedResource {
        group: group.to_string(),
        version: version.to_string(),
        kind: kind.to_string(),
        resource: resource.to_string(),
        singular: String::new(),
        short_names: Vec::new(),
        namespaced,
        verbs: Vec::new(),
        status_subresource: false,
    }
}

/// The outcome for one object.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ObjectResult {
    /// API version of the object as restored.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// The kind.
    pub kind: String,
    /// The target namespace.
    pub namespace: Option<String>,
    /// The target name.
    pub name: String,
    /// The stored object's namespace/name when the restore moved or renamed it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub from: Option<String>,
    /// What was planned.
    pub action: Action,
    /// What happened.
    pub result: Outcome,
    /// Why (for skip, failed, delete), in words.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// Conversions and transforms applied.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub notes: Vec<String>,
}

impl ObjectResult {
    /// "Deployment/web (namespace shop)", as failure summaries name objects.
    pub fn display(&self) -> String {
        display(&self.kind, self.namespace.as_deref(), &self.name)
    }
}

fn display(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{kind}/{name} (namespace {ns})"),
        None => format!("{kind}/{name}"),
    }
}

/// A restore's report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RestoreReport {
    /// The resources snapshot restored.
    pub snapshot_id: String,
    /// Whether this was the server's dry run.
    pub dry_run: bool,
    /// One result per object, in execution order (planning failures, rollback
    /// deletions, then the objects).
    pub results: Vec<ObjectResult>,
    /// References that point at objects neither restored nor present in the target.
    pub missing_dependencies: Vec<String>,
    /// References in free text that `--clone` could not decide (left as they were).
    #[serde(default)]
    pub undecided_references: Vec<String>,
    /// What the restore could not do but did not stop for.
    pub warnings: Vec<String>,
    /// Count per result.
    pub summary: BTreeMap<String, usize>,
    /// Whether every object succeeded.
    pub success: bool,
}

impl RestoreReport {
    /// The results that failed.
    pub fn failed(&self) -> impl Iterator<Item = &ObjectResult> {
        self.results.iter().filter(|r| r.result == Outcome::Failed)
    }
}

/// Plans and applies in one go (what `coffer resources restore` does without
/// `--dry-run`); returns the plan with the report.
pub async fn restore(
    repo: &coffer_repo::Repository,
    snap: &coffer_repo::Snapshot,
    cluster: &crate::Cluster,
    opts: &RestoreOptions,
    apply_opts: &ApplyOptions,
    progress: &coffer_repo::progress::SharedProgress,
) -> Result<(RestorePlan, RestoreReport)> {
    let plan = plan(repo, snap, cluster, opts, progress).await?;
    let report = apply(cluster, &plan, apply_opts, progress).await?;
    Ok((plan, report))
}
