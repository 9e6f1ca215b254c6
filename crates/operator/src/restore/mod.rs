//! The restore controller: brings an application back from a backup manifest (named by a
//! Backup, or by id in a repository for disaster recovery), one idempotent step at a
//! time, recording the step reached in `status.step` so that a restarted operator
//! resumes there:
//!
//! 1. `Validate`: the backup or manifest found, the repository opened, the transforms
//!    ConfigMap parsed, mapped StorageClasses present; else Failed, nothing written.
//! 2. `Resources`: the resources layer's plan (namespace mapping, clone, transforms,
//!    mappings, existing-object policy, rollback), adjusted so that each PVC with data in
//!    the backup names a VolumeBackup in its `dataSourceRef` (made here, per target
//!    namespace), then applied: namespaces and cluster objects first, PVCs, workloads.
//! 3. `Volumes`: the volume populator ([`crate::populator`]) fills the PVCs; each one's
//!    outcome is read from it, with a deadline.
//! 4. `Hooks`: commands in the restored pods once they are Ready (module `hooks`).
//! 5. `Finalize`: the restore's VolumeBackups removed, the phase set.
//!
//! Mode `inPlace` (the application is running; module `in_place`) runs `Validate`, then
//! `ScaleDown` (the workloads mounting the PVCs recorded and scaled to zero), `Volumes`
//! (movers write into the existing PVCs), `Resources` (objects back to their backed-up
//! state, PVCs left alone), `ScaleUp` (the recorded replicas given back), `Finalize`.
//!
//! `spec.cancel` (or deleting the Restore) stops it: PVCs it made that are not yet bound
//! are deleted (their prime PVCs and mover pods go with them) and so are its
//! VolumeBackups and mover pods; scaled workloads get their replicas back; nothing
//! half-bound stays.

mod hooks;
mod in_place;
mod init;
mod resources;
mod volumes;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use coffer_api::{
    ItemKind, Restore, RestoreMode, RestorePhase, RestoreSpec, RestoreStatus, Severity, StatusItem,
    VolumeRestorePhase, VolumeRestoreStatus,
};
use coffer_repo::Repository;
use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::{Controller, watcher};
use serde_json::json;

use crate::backup::manifest::{self, BackupManifest};
use crate::context::Context;
use crate::error::{Error, KubeContext, Result};
use crate::names::object_name;
use crate::repository::controller::MANAGER;
use crate::repository::{RepositoryAccess, settings_of};

/// Finalizer of Restores (cleanup of what a stopped restore made).
pub const RESTORE_FINALIZER: &str = "coffer.dev/restore";
/// Label on the objects a Restore made (PVCs it gave a data source, its VolumeBackups):
/// [`restore_label`] of the Restore.
pub const RESTORE_LABEL: &str = "coffer.dev/restore";

/// Annotation on the PVCs a Restore made: the Restore (`namespace/name`), so that their
/// changes wake it.
pub const RESTORED_BY: &str = "coffer.dev/restored-by";

/// The workflow's steps, in order.
pub mod step {
    /// Checks.
    pub const VALIDATE: &str = "Validate";
    /// Kubernetes objects.
    pub const RESOURCES: &str = "Resources";
    /// Volume data.
    pub const VOLUMES: &str = "Volumes";
    /// Mode inPlace: the workloads using the volumes scaled to zero.
    pub const SCALE_DOWN: &str = "ScaleDown";
    /// Mode inPlace: the workloads given their replicas back.
    pub const SCALE_UP: &str = "ScaleUp";
    /// Restore hooks in the restored pods.
    pub const HOOKS: &str = "Hooks";
    /// Cleanup.
    pub const FINALIZE: &str = "Finalize";
}

/// The value of [`RESTORE_LABEL`] for restore `ns/name` (a label value: no `/`).
pub fn restore_label(ns: &str, name: &str) -> String {
    object_name(&[ns, name])
}

/// The namespaces restore `r` restores into (recorded at validation).
pub fn targets(r: &Restore) -> BTreeSet<String> {
    r.status
        .as_ref()
        .map(|s| s.target_namespaces.iter().cloned().collect())
        .unwrap_or_default()
}

/// Runs the restore controller until the stream ends.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    Controller::new(
        Api::<Restore>::all(client.clone()),
        watcher::Config::default(),
    )
    // A restored PVC bound or given up on by the populator wakes its Restore.
    .watches(
        Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::all(client),
        watcher::Config::default().labels(RESTORE_LABEL),
        |p| {
            let (ns, name) = p.annotations().get(RESTORED_BY)?.split_once('/')?;
            Some(kube::runtime::reflector::ObjectRef::<Restore>::new(name).within(ns))
        },
    )
    .run(reconcile, error_policy, ctx)
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!(error = %e, "restore reconcile");
        }
    })
    .await;
}

fn error_policy(r: Arc<Restore>, e: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(restore = %r.name_any(), error = %e, "restore reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(r: Arc<Restore>, ctx: Arc<Context>) -> Result<Action> {
    crate::context::with_finalizer(
        ctx,
        r,
        RESTORE_FINALIZER,
        |r, ctx| Box::pin(async move { apply_or_give_up(&r, &ctx).await }),
        |r, ctx| {
            Box::pin(async move {
                if !r
                    .status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(RestorePhase::is_final)
                {
                    stop(&ctx, &r).await?;
                }
                Ok(Action::await_change())
            })
        },
    )
    .await
}

/// Undoes what a restore that stops early has in flight: PVCs it made that are not filled,
/// its VolumeBackups and mover pods, and the replicas of the workloads it scaled down.
async fn stop(ctx: &Context, r: &Restore) -> Result<()> {
    volumes::remove_unfinished(ctx, r).await?;
    in_place::remove_movers(ctx, r).await?;
    in_place::scale_up(ctx, &r.status.clone().unwrap_or_default()).await
}

/// An error the user must fix: the restore fails at once with it.
fn is_permanent(e: &Error) -> bool {
    matches!(e, Error::Invalid(_) | Error::Secret(_))
        || matches!(e, Error::Kube { source: kube::Error::Api(s), .. } if matches!(s.code, 400 | 403 | 422))
}

/// Runs the workflow; a transient error is retried until the step has failed for
/// longer than the retry deadline, a permanent one ends the restore at once.
async fn apply_or_give_up(r: &Restore, ctx: &Context) -> Result<Action> {
    let uid = r.uid().unwrap_or_default();
    let err = match apply(r, ctx).await {
        Ok(a) => {
            ctx.failing_since.lock().expect("not poisoned").remove(&uid);
            return Ok(a);
        }
        Err(e) => e,
    };
    let since = *ctx
        .failing_since
        .lock()
        .expect("not poisoned")
        .entry(uid.clone())
        .or_insert_with(std::time::Instant::now);
    if !is_permanent(&err) && since.elapsed() < ctx.config.deadlines.step_retry {
        return Err(err);
    }
    ctx.failing_since.lock().expect("not poisoned").remove(&uid);
    let fresh = fresh(ctx, r).await?;
    let mut st = fresh.status.clone().unwrap_or_default();
    if st.phase.is_some_and(RestorePhase::is_final) {
        return Ok(Action::await_change());
    }
    let current = st.step.clone().unwrap_or_else(|| step::VALIDATE.into());
    let reason = if current == step::VALIDATE {
        err.to_string()
    } else {
        format!("step {current} failed: {err}")
    };
    // Failing is the end whatever happens: a cleanup that fails too is reported with it.
    if let Err(e) = stop(ctx, &fresh).await {
        st.items.push(item(
            ItemKind::Workflow,
            &current,
            None,
            format!("cleaning up after the failure failed too: {e}"),
        ));
    }
    st.items
        .push(item(ItemKind::Workflow, &current, None, reason.clone()));
    finish(ctx, &fresh, st, RestorePhase::Failed, reason).await
}

async fn fresh(ctx: &Context, r: &Restore) -> Result<Restore> {
    let api: Api<Restore> = Api::namespaced(ctx.client.clone(), &r.namespace().unwrap_or_default());
    api.get_status(&r.name_any())
        .await
        .kube_ctx(|| format!("reading Restore {}", r.name_any()))
}

async fn write_status(ctx: &Context, r: &Restore, st: &RestoreStatus) -> Result<()> {
    let api: Api<Restore> = Api::namespaced(ctx.client.clone(), &r.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": coffer_api::API_VERSION, "kind": "Restore",
        "status": st,
    });
    api.patch_status(
        &r.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .kube_ctx(|| format!("writing the status of Restore {}", r.name_any()))?;
    Ok(())
}

fn item(kind: ItemKind, name: &str, namespace: Option<&str>, reason: String) -> StatusItem {
    StatusItem {
        kind,
        severity: Severity::Error,
        name: name.to_string(),
        namespace: namespace.map(str::to_string),
        reason,
    }
}

/// Ends the restore with `phase`.
async fn finish(
    ctx: &Context,
    r: &Restore,
    mut st: RestoreStatus,
    phase: RestorePhase,
    message: String,
) -> Result<Action> {
    st.phase = Some(phase);
    st.message = Some(message.clone());
    st.step = None;
    st.completion_time = Some(crate::time::now());
    write_status(ctx, r, &st).await?;
    let type_ = if phase == RestorePhase::Completed {
        EventType::Normal
    } else {
        EventType::Warning
    };
    ctx.event(r, type_, &format!("{phase:?}"), message).await;
    Ok(Action::await_change())
}

async fn apply(r: &Restore, ctx: &Context) -> Result<Action> {
    // The status as it is now, not as the watch cache last saw it: a step is never run
    // twice from a stale view.
    let r = fresh(ctx, r).await?;
    let mut st = r.status.clone().unwrap_or_default();
    if st.phase.is_some_and(RestorePhase::is_final) {
        return Ok(Action::await_change());
    }
    if r.spec.cancel {
        stop(ctx, &r).await?;
        return finish(
            ctx,
            &r,
            st,
            RestorePhase::Canceled,
            "canceled: the PVCs not yet filled, the restore's VolumeBackups and movers were removed, scaled workloads got their replicas back"
                .into(),
        )
        .await;
    }
    let in_place = r.spec.mode == RestoreMode::InPlace;
    match st.step.clone().as_deref() {
        None | Some(step::VALIDATE) => {
            if st.phase.is_none() {
                st.phase = Some(RestorePhase::New);
                st.step = Some(step::VALIDATE.into());
                write_status(ctx, &r, &st).await?;
            }
            let source = validate(ctx, &r).await?;
            st.phase = Some(RestorePhase::InProgress);
            st.start_time = Some(crate::time::now());
            st.manifest = Some(source.manifest_id.clone());
            st.resources_snapshot = source.manifest.resources_snapshot.clone();
            st.target_namespaces = target_namespaces(&r.spec, &source.manifest)
                .into_iter()
                .collect();
            st.step = Some(if in_place {
                st.volumes = in_place::volumes(ctx, &r.spec, &source).await?;
                for v in st
                    .volumes
                    .iter()
                    .filter(|v| v.phase == Some(VolumeRestorePhase::Failed))
                {
                    st.items.push(item(
                        ItemKind::Volume,
                        &v.pvc,
                        Some(&v.namespace),
                        v.message.clone().unwrap_or_default(),
                    ));
                }
                step::SCALE_DOWN.into()
            } else {
                step::RESOURCES.into()
            });
            write_status(ctx, &r, &st).await?;
            ctx.event(
                &r,
                EventType::Normal,
                "Started",
                format!(
                    "restoring backup {}/{} (manifest {}) into {}",
                    source.manifest.namespace,
                    source.manifest.name,
                    &source.manifest_id[..source.manifest_id.len().min(8)],
                    st.target_namespaces.join(", ")
                ),
            )
            .await;
            Ok(Action::requeue(Duration::from_millis(100)))
        }
        Some(step::SCALE_DOWN) => {
            let clear = in_place::scale_down(ctx, &mut st).await?;
            let waited = st
                .start_time
                .as_ref()
                .map(|t| crate::time::age(&t.0))
                .unwrap_or_default();
            if !clear && waited < ctx.config.deadlines.mover_start {
                write_status(ctx, &r, &st).await?;
                return Ok(Action::requeue(Duration::from_secs(1)));
            }
            if !clear {
                for v in st
                    .volumes
                    .iter_mut()
                    .filter(|v| v.phase == Some(VolumeRestorePhase::Pending))
                {
                    v.phase = Some(VolumeRestorePhase::Failed);
                    v.message = Some(format!(
                        "pods still mount it {}s after their workloads were scaled to zero: see `kubectl get pods -n {}`",
                        waited.as_secs(),
                        v.namespace
                    ));
                    st.items.push(item(
                        ItemKind::Volume,
                        &v.pvc,
                        Some(&v.namespace),
                        v.message.clone().unwrap_or_default(),
                    ));
                }
            }
            st.step = Some(step::VOLUMES.into());
            write_status(ctx, &r, &st).await?;
            Ok(Action::requeue(Duration::from_millis(100)))
        }
        Some(step::RESOURCES) => {
            let source = validate(ctx, &r).await?;
            resources::restore(ctx, &r, &source, &mut st).await?;
            st.step = Some(
                if in_place {
                    step::SCALE_UP
                } else {
                    step::VOLUMES
                }
                .into(),
            );
            write_status(ctx, &r, &st).await?;
            Ok(Action::requeue(Duration::from_millis(100)))
        }
        Some(step::VOLUMES) if in_place => {
            // Polled each second: the repository's reference only, not the repository
            // opened again (its key derivation is deliberately slow).
            let repository = repository_ref(ctx, &r).await?;
            if in_place::movers(ctx, &r, &repository, &mut st).await? {
                st.step = Some(step::RESOURCES.into());
                write_status(ctx, &r, &st).await?;
                return Ok(Action::requeue(Duration::from_millis(100)));
            }
            write_status(ctx, &r, &st).await?;
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        Some(step::SCALE_UP) => {
            in_place::remove_movers(ctx, &r).await?;
            in_place::scale_up(ctx, &st).await?;
            st.step = Some(step::HOOKS.into());
            write_status(ctx, &r, &st).await?;
            Ok(Action::requeue(Duration::from_millis(100)))
        }
        Some(step::HOOKS) => {
            hooks::run(ctx, &r, &mut st).await?;
            st.step = Some(step::FINALIZE.into());
            write_status(ctx, &r, &st).await?;
            Ok(Action::requeue(Duration::from_millis(100)))
        }
        Some(step::VOLUMES) => {
            if volumes::observe(ctx, &mut st).await? {
                st.step = Some(step::HOOKS.into());
                write_status(ctx, &r, &st).await?;
                return Ok(Action::requeue(Duration::from_millis(100)));
            }
            write_status(ctx, &r, &st).await?;
            // The PVCs' changes wake it; this is the fallback.
            Ok(Action::requeue(Duration::from_secs(10)))
        }
        Some(step::FINALIZE) => {
            volumes::remove_volume_backups(ctx, &r).await?;
            let failed_volumes = st
                .volumes
                .iter()
                .filter(|v| v.phase == Some(VolumeRestorePhase::Failed))
                .count();
            let failed_objects = st.objects.as_ref().map_or(0, |o| o.failed);
            let written: u64 = st.volumes.iter().map(|v| v.bytes_written).sum();
            st.size = Some(coffer_repo::human_bytes(written));
            let done = st
                .volumes
                .iter()
                .filter(|v| v.phase == Some(VolumeRestorePhase::Completed))
                .count();
            let failed_hooks = st.hooks.as_ref().map_or(0, |h| h.failed);
            let (phase, message) = if let Some(f) = st.failure.clone() {
                (RestorePhase::Failed, f)
            } else if failed_volumes == 0 && failed_objects == 0 && failed_hooks == 0 {
                (
                    RestorePhase::Completed,
                    format!(
                        "restore completed: {} objects, {done} volumes ({} written)",
                        st.objects
                            .as_ref()
                            .map_or(0, |o| o.created + o.updated + o.skipped),
                        coffer_repo::human_bytes(written)
                    ),
                )
            } else {
                (
                    RestorePhase::PartiallyFailed,
                    format!(
                        "restore partially failed: {failed_objects} objects, {failed_volumes} volumes and {failed_hooks} hooks failed (listed in status.items)"
                    ),
                )
            };
            finish(ctx, &r, st, phase, message).await
        }
        Some(other) => Err(Error::Failed(format!("unknown step {other:?} in status"))),
    }
}

/// What a restore restores from.
pub struct Source {
    /// The repository, open.
    pub repo: Repository,
    /// The reference to it, as the VolumeBackups made in target namespaces carry it
    /// (resolved in the Restore's namespace).
    pub repository: coffer_api::RepositoryRef,
    /// The manifest's id.
    pub manifest_id: String,
    /// The manifest.
    pub manifest: BackupManifest,
}

/// Checks what the spec names and opens it. Every problem a user must fix is
/// `Error::Invalid` with the fix in its message.
async fn validate(ctx: &Context, r: &Restore) -> Result<Source> {
    let ns = r.namespace().unwrap_or_default();
    let spec = &r.spec;
    if spec.mode == RestoreMode::InPlace && spec.clone.is_some() {
        return Err(Error::Invalid(
            "spec.clone makes new objects beside the originals: it goes with mode new, not inPlace"
                .into(),
        ));
    }
    let (repository, manifest_id) = match (&spec.backup, &spec.repository, &spec.manifest) {
        (Some(name), None, None) => {
            let b = Api::<coffer_api::Backup>::namespaced(ctx.client.clone(), &ns)
                .get_opt(name)
                .await
                .kube_ctx(|| format!("reading Backup {ns}/{name}"))?
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "Backup {ns}/{name} does not exist: name one of `kubectl get backups -n {ns}`, or restore from the repository with spec.repository and spec.manifest"
                    ))
                })?;
            let st = b.status.clone().unwrap_or_default();
            use coffer_api::BackupPhase::*;
            match st.phase {
                Some(Completed) | Some(PartiallyFailed) => {}
                other => {
                    return Err(Error::Invalid(format!(
                        "Backup {ns}/{name} is {}: only a Completed or PartiallyFailed backup can be restored{}",
                        other.map_or("New".to_string(), |p| format!("{p:?}")),
                        if other.is_none_or(|p| !p.is_final()) {
                            " (wait for it to end, then create the Restore again)"
                        } else {
                            ""
                        }
                    )));
                }
            }
            let id = st.manifest.ok_or_else(|| {
                Error::Invalid(format!(
                    "Backup {ns}/{name} has no manifest in its status: it was not made by the operator"
                ))
            })?;
            (b.spec.repository.clone(), id)
        }
        (None, Some(repo), Some(id)) => (repo.clone(), id.clone()),
        (None, Some(_), None) => {
            return Err(Error::Invalid(
                "spec.repository needs spec.manifest (a backup manifest id: `coffer snapshots --kind backup`)".into(),
            ));
        }
        (None, None, Some(_)) => {
            return Err(Error::Invalid(
                "spec.manifest needs spec.repository (the BackupRepository or ClusterBackupRepository holding it)".into(),
            ));
        }
        (None, None, None) => {
            return Err(Error::Invalid(
                "name what to restore: spec.backup (a Backup in this namespace), or spec.repository with spec.manifest".into(),
            ));
        }
        (Some(_), _, _) => {
            return Err(Error::Invalid(
                "spec.backup and spec.repository/spec.manifest are alternatives: set only one"
                    .into(),
            ));
        }
    };
    let (settings, secret_ns) =
        settings_of(&ctx.client, &repository, &ns, &ctx.config.namespace).await?;
    let access = RepositoryAccess::resolve(&ctx.client, &settings, &secret_ns).await?;
    let repo = access.open(&ctx.open_options()).await.map_err(|e| {
        Error::Failed(format!(
            "repository {}: {}",
            settings.location,
            crate::repository::unavailable_message(&e)
        ))
    })?;
    let manifest = match manifest::read(&repo, &manifest_id).await {
        Ok(m) => m,
        Err(Error::Repo(coffer_repo::Error::SnapshotNotFound(_))) => {
            return Err(Error::Invalid(format!(
                "manifest {manifest_id} is not in repository {}: list the backups there with `coffer snapshots --kind backup`",
                settings.location
            )));
        }
        Err(e) => return Err(e),
    };
    resources::check_storage_classes(ctx, spec, &manifest).await?;
    Ok(Source {
        repo,
        repository,
        manifest_id,
        manifest,
    })
}

/// The repository a restore reads, as its spec names it (directly, or through its Backup).
async fn repository_ref(ctx: &Context, r: &Restore) -> Result<coffer_api::RepositoryRef> {
    if let Some(repo) = &r.spec.repository {
        return Ok(repo.clone());
    }
    let ns = r.namespace().unwrap_or_default();
    let name = r.spec.backup.clone().unwrap_or_default();
    let b = Api::<coffer_api::Backup>::namespaced(ctx.client.clone(), &ns)
        .get(&name)
        .await
        .kube_ctx(|| format!("reading Backup {ns}/{name}"))?;
    Ok(b.spec.repository)
}

/// The namespaces the backup's objects and volumes go to.
fn target_namespaces(spec: &RestoreSpec, m: &BackupManifest) -> BTreeSet<String> {
    let mut sources: BTreeSet<String> =
        m.application.selection.namespaces.iter().cloned().collect();
    if sources.is_empty() {
        sources.insert(m.namespace.clone());
    }
    sources.extend(m.volumes.iter().map(|v| v.namespace.clone()));
    sources
        .into_iter()
        .map(|n| spec.namespace_mapping.get(&n).cloned().unwrap_or(n))
        .collect()
}

/// The volume status entry of a PVC about to be restored.
fn pending_volume(
    target_ns: &str,
    target: &str,
    v: &coffer_api::VolumeStatus,
) -> VolumeRestoreStatus {
    VolumeRestoreStatus {
        pvc: target.to_string(),
        namespace: target_ns.to_string(),
        source: format!("{}/{}", v.namespace, v.pvc),
        snapshot_id: v.snapshot_id.clone(),
        phase: Some(VolumeRestorePhase::Pending),
        bytes_total: v.bytes_total,
        ..Default::default()
    }
}

/// Compile-time check: every step's future is Send for any lifetime (the controller
/// spawns them; a closure over references inside a stream breaks that).
#[allow(dead_code, clippy::too_many_arguments)]
fn send_probe(
    r: &Restore,
    ctx: &Context,
    source: &Source,
    st: &mut RestoreStatus,
    c: &coffer_resources::client::Cluster,
    p: &coffer_resources::restore::RestorePlan,
    o: &coffer_resources::restore::RestoreOptions,
    snap: &coffer_repo::Snapshot,
) {
    fn s<T: Send>(_: T) {}
    let progress = coffer_repo::progress::none();
    s(coffer_resources::restore::plan(
        &source.repo,
        snap,
        c,
        o,
        &progress,
    ));
    s(coffer_resources::restore::apply(
        c,
        p,
        &Default::default(),
        &progress,
    ));
    s(apply_or_give_up(r, ctx));
    s(validate(ctx, r));
    s(volumes::observe(ctx, st));
    s(volumes::remove_unfinished(ctx, r));
    s(in_place::scale_down(ctx, st));
    s(in_place::movers(ctx, r, &source.repository, st));
    s(stop(ctx, r));
    s(hooks::run(ctx, r, st));
}
