//! The backup controller: runs the seed's backup workflow for each Backup object, one
//! idempotent step at a time, recording the step reached in `status.step` so that a
//! restarted operator resumes where it was:
//!
//! 1. `Validate`: repository Ready, application found, selection valid, each PVC's policy
//!    and snapshot class ([`plan`]); else FailedValidation, nothing written.
//! 2. `Resources`: the objects stored in the repository (the resources layer).
//! 3. `PreHooks`: quiesce ([`hooks`]).
//! 4. `Snapshots`: VolumeSnapshots and VolumeGroupSnapshots, awaited ([`snapshots`]).
//! 5. `PostHooks`: unquiesce; always run once the pre hooks ran.
//! 6. `Movers`: data-mover pods copy the snapshots ([`movers`]), at most N at once.
//! 7. `Finalize`: temporary objects removed (snapshots kept for mode `snapshot` and as
//!    the next changed-block base), the manifest written ([`manifest`]), the phase set.
//!
//! `spec.cancel` stops it at any step (post hooks run, temporary objects removed, the
//! repository snapshots it made forgotten: phase Canceled). Deleting a Backup keeps its
//! data unless `deletionPolicy: Delete`. Every wait has a deadline.

pub mod hooks;
pub mod manifest;
pub mod movers;
pub mod plan;
pub mod snapshots;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use coffer_api::{
    ApplicationSpec, Backup, BackupPhase, BackupProgress, BackupStatus, DeletionPolicy, HookCounts,
    ItemKind, Severity, StatusItem, VolumeBackupPhase, VolumePolicyKind, VolumeStatus,
};
use coffer_repo::{Repository, SharedProgress};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::{Controller, watcher};
use serde_json::json;

use crate::context::Context;
use crate::error::{Error, KubeContext, Result};
use crate::metrics::PhaseLabels;
use crate::names::{BACKUP_FINALIZER, BACKUP_LABEL, CBT_BASE_LABEL, REPO_SNAPSHOT_ANNOTATION};
use crate::repository::controller::{MANAGER, human_bytes};
use crate::repository::{RepositoryAccess, settings_of};

/// The workflow's steps, in order.
pub mod step {
    /// Checks.
    pub const VALIDATE: &str = "Validate";
    /// Kubernetes objects.
    pub const RESOURCES: &str = "Resources";
    /// Quiesce.
    pub const PRE_HOOKS: &str = "PreHooks";
    /// Snapshots.
    pub const SNAPSHOTS: &str = "Snapshots";
    /// Unquiesce.
    pub const POST_HOOKS: &str = "PostHooks";
    /// Volumes of policy `live` copied while the application is quiesced.
    pub const LIVE_COPY: &str = "LiveCopy";
    /// Data movement.
    pub const MOVERS: &str = "Movers";
    /// Cleanup and manifest.
    pub const FINALIZE: &str = "Finalize";
}

/// Runs the backup controller until the stream ends.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    Controller::new(
        Api::<Backup>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<coffer_api::VolumeBackup>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<Pod>::all(client),
        watcher::Config::default().labels(crate::names::MOVER_LABEL),
    )
    .run(reconcile, error_policy, ctx)
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!(error = %e, "backup reconcile");
        }
    })
    .await;
}

fn error_policy(b: Arc<Backup>, e: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(backup = %b.name_any(), error = %e, "backup reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(b: Arc<Backup>, ctx: Arc<Context>) -> Result<Action> {
    crate::context::with_finalizer(
        ctx,
        b,
        BACKUP_FINALIZER,
        |b, ctx| Box::pin(async move { apply_or_give_up(&b, &ctx).await }),
        |b, ctx| Box::pin(async move { cleanup(&b, &ctx).await }),
    )
    .await
}

/// Runs the workflow; an error is retried (by the controller's error policy) until the
/// step has failed for longer than the retry deadline, or at once when the API server
/// refuses for good (forbidden, invalid): then the backup fails with the error, after its
/// post hooks if it was quiesced.
async fn apply_or_give_up(b: &Backup, ctx: &Context) -> Result<Action> {
    let uid = b.uid().unwrap_or_default();
    let result = apply(b, ctx).await;
    let err = match result {
        Ok(a) => {
            ctx.failing_since.lock().expect("not poisoned").remove(&uid);
            return Ok(a);
        }
        Err(e) => e,
    };
    let permanent = matches!(&err, Error::Kube { source: kube::Error::Api(s), .. } if matches!(s.code, 400 | 403 | 422));
    let since = *ctx
        .failing_since
        .lock()
        .expect("not poisoned")
        .entry(uid.clone())
        .or_insert_with(std::time::Instant::now);
    if !permanent && since.elapsed() < ctx.config.deadlines.step_retry {
        return Err(err);
    }
    ctx.failing_since.lock().expect("not poisoned").remove(&uid);
    let api: Api<Backup> = Api::namespaced(ctx.client.clone(), &b.namespace().unwrap_or_default());
    let fresh = api
        .get_status(&b.name_any())
        .await
        .kube_ctx(|| format!("reading Backup {}", b.name_any()))?;
    let mut st = fresh.status.clone().unwrap_or_default();
    if st.phase.is_some_and(BackupPhase::is_final) {
        return Ok(Action::await_change());
    }
    let current = st.step.clone().unwrap_or_default();
    let reason = format!("step {current} failed: {err}");
    st.items.push(item(
        ItemKind::Workflow,
        Severity::Error,
        &current,
        None,
        reason.clone(),
    ));
    st.failure = Some(reason);
    if current == step::FINALIZE || current == step::POST_HOOKS {
        // The cleanup (or the unquiesce) itself keeps failing: end here, saying so.
        st.phase = Some(BackupPhase::Failed);
        st.message = st.failure.clone();
        st.completion_time = Some(crate::time::now());
        st.step = None;
        write_status(ctx, &fresh, &st).await?;
        ctx.metrics.backups_in_progress.dec();
        ctx.metrics
            .backups
            .get_or_create(&PhaseLabels {
                phase: "Failed".into(),
            })
            .inc();
        ctx.event(
            &fresh,
            EventType::Warning,
            "Failed",
            st.message.clone().unwrap_or_default(),
        )
        .await;
        return Ok(Action::await_change());
    }
    // Quiesced: the post hooks run first.
    let to = if [step::SNAPSHOTS, step::LIVE_COPY].contains(&current.as_str()) {
        step::POST_HOOKS
    } else {
        step::FINALIZE
    };
    next(ctx, &fresh, st, to).await
}

async fn write_status(ctx: &Context, b: &Backup, st: &BackupStatus) -> Result<()> {
    let api: Api<Backup> = Api::namespaced(ctx.client.clone(), &b.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": coffer_api::API_VERSION, "kind": "Backup",
        "status": st,
    });
    api.patch_status(
        &b.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .kube_ctx(|| format!("writing the status of Backup {}", b.name_any()))?;
    Ok(())
}

fn item(
    kind: ItemKind,
    severity: Severity,
    name: &str,
    ns: Option<&str>,
    reason: String,
) -> StatusItem {
    StatusItem {
        kind,
        severity,
        name: name.to_string(),
        namespace: ns.map(str::to_string),
        reason,
    }
}

async fn apply(b: &Backup, ctx: &Context) -> Result<Action> {
    // The controller's cache can lag behind the status this operator wrote a moment ago:
    // a step must never run twice from a stale status, so read it fresh.
    let api: Api<Backup> = Api::namespaced(ctx.client.clone(), &b.namespace().unwrap_or_default());
    let fresh = api
        .get_status(&b.name_any())
        .await
        .kube_ctx(|| format!("reading Backup {}", b.name_any()))?;
    let b = &fresh;
    let mut st = b.status.clone().unwrap_or_default();
    if st.phase.is_some_and(BackupPhase::is_final) {
        return expire_when_due(b, ctx, &st).await;
    }
    // Made from a manifest found in a repository: its status is being written by the
    // repository controller; it never runs.
    if st.phase.is_none()
        && b.annotations()
            .contains_key(crate::repository::controller::SYNCED_ANNOTATION)
    {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    if st.phase.is_none() || st.phase == Some(BackupPhase::New) {
        st.phase = Some(BackupPhase::InProgress);
        st.start_time = Some(crate::time::now());
        st.step = Some(step::VALIDATE.into());
        if let Some(ttl) = &b.spec.ttl {
            match humantime::parse_duration(ttl) {
                Ok(d) => {
                    st.expiration = chrono::Duration::from_std(d)
                        .ok()
                        .and_then(|d| Utc::now().checked_add_signed(d))
                        .map(crate::time::from_chrono)
                }
                Err(_) => {
                    return finish_validation(
                        ctx,
                        b,
                        st,
                        format!("spec.ttl {ttl:?} is not a duration: use 720h, 30d"),
                    )
                    .await;
                }
            }
        }
        write_status(ctx, b, &st).await?;
        ctx.metrics.backups_in_progress.inc();
        ctx.event(b, EventType::Normal, "Started", "backup started".into())
            .await;
        return Ok(Action::requeue(Duration::ZERO));
    }
    if b.spec.cancel {
        return cancel(b, ctx, st).await;
    }
    let current = st.step.clone().unwrap_or_else(|| step::VALIDATE.into());
    match current.as_str() {
        step::VALIDATE => validate(b, ctx, st).await,
        step::RESOURCES => resources(b, ctx, st).await,
        step::PRE_HOOKS => pre_hooks(b, ctx, st).await,
        step::SNAPSHOTS => take_snapshots(b, ctx, st).await,
        step::POST_HOOKS => post_hooks(b, ctx, st).await,
        step::LIVE_COPY => move_data(b, ctx, st, Movement::Live).await,
        step::MOVERS => move_data(b, ctx, st, Movement::Copies).await,
        _ => finalize(b, ctx, st, false).await,
    }
}

async fn next(ctx: &Context, b: &Backup, mut st: BackupStatus, to: &str) -> Result<Action> {
    st.step = Some(to.to_string());
    write_status(ctx, b, &st).await?;
    Ok(Action::requeue(Duration::ZERO))
}

async fn finish_validation(
    ctx: &Context,
    b: &Backup,
    mut st: BackupStatus,
    message: String,
) -> Result<Action> {
    st.phase = Some(BackupPhase::FailedValidation);
    st.message = Some(message.clone());
    st.completion_time = Some(crate::time::now());
    st.step = None;
    write_status(ctx, b, &st).await?;
    ctx.metrics
        .backups
        .get_or_create(&PhaseLabels {
            phase: "FailedValidation".into(),
        })
        .inc();
    ctx.event(b, EventType::Warning, "FailedValidation", message)
        .await;
    Ok(Action::await_change())
}

async fn validate(b: &Backup, ctx: &Context, mut st: BackupStatus) -> Result<Action> {
    let ns = b.namespace().unwrap_or_default();
    let checked = async {
        plan::repository_ready(&ctx.client, b).await?;
        let app = plan::application(&ctx.client, b).await?;
        plan::selection(&app, &ns)?;
        let (volumes, warnings) = plan::volumes(&ctx.client, &app, &ns).await?;
        Ok::<_, Error>((app, volumes, warnings))
    }
    .await;
    match checked {
        Ok((app, volumes, warnings)) => {
            st.application = Some(app);
            st.items.extend(
                warnings
                    .into_iter()
                    .map(|w| item(ItemKind::Volume, Severity::Warning, "", Some(&ns), w)),
            );
            st.progress = Some(BackupProgress {
                volumes_total: volumes.len() as u32,
                ..Default::default()
            });
            st.volumes = volumes;
            next(ctx, b, st, step::RESOURCES).await
        }
        Err(Error::Invalid(m)) | Err(Error::Secret(m)) => finish_validation(ctx, b, st, m).await,
        Err(Error::Retry(m)) => {
            st.message = Some(m);
            write_status(ctx, b, &st).await?;
            Ok(Action::requeue(Duration::from_secs(3)))
        }
        Err(e) => Err(e),
    }
}

/// The repository a Backup writes to: its access and the open repository.
/// The application's definition this backup runs with: the one recorded at validation
/// (a Backup validated by an older operator has none, and reads it again).
async fn application(ctx: &Context, b: &Backup, st: &BackupStatus) -> Result<ApplicationSpec> {
    match &st.application {
        Some(app) => Ok(app.clone()),
        None => plan::application(&ctx.client, b).await,
    }
}

/// How to reach the repository a Backup names (its settings and Secrets read).
async fn repository_access(ctx: &Context, b: &Backup) -> Result<RepositoryAccess> {
    let (settings, secret_ns) = settings_of(
        &ctx.client,
        &b.spec.repository,
        &b.namespace().unwrap_or_default(),
        &ctx.config.namespace,
    )
    .await?;
    RepositoryAccess::resolve(&ctx.client, &settings, &secret_ns).await
}

async fn open_repository(ctx: &Context, b: &Backup) -> Result<(RepositoryAccess, Repository)> {
    let access = repository_access(ctx, b).await?;
    if access.read_only {
        return Err(Error::Invalid(format!(
            "repository {} is readOnly: back up into another one",
            b.spec.repository.name
        )));
    }
    let repo = access.open(&ctx.open_options()).await?;
    Ok((access, repo))
}

async fn resources(b: &Backup, ctx: &Context, mut st: BackupStatus) -> Result<Action> {
    let ns = b.namespace().unwrap_or_default();
    let done = async {
        let app = application(ctx, b, &st).await?;
        let sel = plan::selection(&app, &ns)?;
        let (access, repo) = open_repository(ctx, b).await?;
        let cluster =
            coffer_resources::client::Cluster::from_client(ctx.client.clone(), "in-cluster", &ns);
        let mut tags = b.spec.labels.clone();
        tags.insert(
            crate::mover::BACKUP_TAG.into(),
            format!("{ns}/{}", b.name_any()),
        );
        let progress: SharedProgress = Arc::new(coffer_repo::progress::NoProgress);
        let summary =
            coffer_resources::collect::backup(&repo, &cluster, &sel, tags, &progress).await?;
        Ok::<_, Error>((summary, access.location_text))
    }
    .await;
    match done {
        Ok((summary, location)) => {
            // The namespaces themselves are always stored; an application is what is in
            // them.
            let selected: usize = summary
                .types
                .iter()
                .filter(|(t, _)| t.as_str() != "namespaces")
                .map(|(_, n)| n)
                .sum();
            if selected == 0 {
                // Nothing matched: the Backup would restore nothing.
                let _ = forget_ids(ctx, b, std::slice::from_ref(&summary.snapshot_id)).await;
                return finish_validation(
                    ctx,
                    b,
                    st,
                    format!(
                        "the selection matches no objects in namespace(s) {}: check the label selector and namespaces",
                        summary.namespaces.join(", ")
                    ),
                )
                .await;
            }
            st.resources_snapshot = Some(summary.snapshot_id.clone());
            st.repository_location = Some(location);
            let progress = st.progress.get_or_insert_with(Default::default);
            progress.objects = summary.objects as u64;
            st.items.extend(
                summary
                    .warnings
                    .into_iter()
                    .map(|w| item(ItemKind::Object, Severity::Warning, "", Some(&ns), w)),
            );
            ctx.event(
                b,
                EventType::Normal,
                "ResourcesStored",
                format!(
                    "{} objects stored as snapshot {}",
                    summary.objects,
                    &summary.snapshot_id[..8.min(summary.snapshot_id.len())]
                ),
            )
            .await;
            next(ctx, b, st, step::PRE_HOOKS).await
        }
        Err(Error::Invalid(m)) | Err(Error::Secret(m)) => finish_validation(ctx, b, st, m).await,
        Err(e) => {
            st.failure = Some(format!("storing the Kubernetes objects failed: {e}"));
            next(ctx, b, st, step::FINALIZE).await
        }
    }
}

async fn run_hooks(
    b: &Backup,
    ctx: &Context,
    st: &mut BackupStatus,
    phase: hooks::Phase,
) -> Result<Option<String>> {
    let ns = b.namespace().unwrap_or_default();
    let app = application(ctx, b, st).await?;
    let namespaces = plan::namespaces(&app, &ns);
    let out = hooks::run(
        &ctx.client,
        &app,
        &namespaces,
        phase,
        ctx.config.deadlines.hook_default,
    )
    .await?;
    let counts = st.hooks.get_or_insert_with(HookCounts::default);
    counts.attempted += out.attempted;
    counts.failed += out.failed;
    for i in &out.items {
        ctx.event(b, EventType::Warning, "HookFailed", i.reason.clone())
            .await;
    }
    st.items.extend(out.items);
    if out.attempted > 0 {
        ctx.event(
            b,
            EventType::Normal,
            match phase {
                hooks::Phase::Pre => "PreHooksRun",
                hooks::Phase::Post => "PostHooksRun",
            },
            format!("{} hook(s) run, {} failed", out.attempted, out.failed),
        )
        .await;
    }
    Ok(out.fatal)
}

async fn pre_hooks(b: &Backup, ctx: &Context, mut st: BackupStatus) -> Result<Action> {
    if let Some(fatal) = run_hooks(b, ctx, &mut st, hooks::Phase::Pre).await? {
        st.failure = Some(fatal);
        return next(ctx, b, st, step::POST_HOOKS).await;
    }
    next(ctx, b, st, step::SNAPSHOTS).await
}

async fn take_snapshots(b: &Backup, ctx: &Context, mut st: BackupStatus) -> Result<Action> {
    let app = application(ctx, b, &st).await?;
    let mut volumes: Vec<VolumeStatus> = st.volumes.clone();
    let result = snapshots::take(
        &ctx.client,
        b,
        &mut volumes,
        app.consistency_group_label.as_deref(),
        ctx.config.deadlines.snapshot_ready,
    )
    .await;
    st.volumes = volumes;
    match result {
        Ok(()) => {
            if !st.volumes.is_empty() {
                ctx.event(
                    b,
                    EventType::Normal,
                    "SnapshotsTaken",
                    format!("{} volume(s) snapshotted", st.volumes.len()),
                )
                .await;
            }
        }
        Err(e) => {
            let reason = format!("taking the snapshots failed: {e}");
            st.items.push(item(
                ItemKind::Volume,
                Severity::Error,
                "",
                None,
                reason.clone(),
            ));
            st.failure = Some(reason);
        }
    }
    let live = st.volumes.iter().any(|v| v.mode == VolumePolicyKind::Live);
    let to = if live && st.failure.is_none() {
        step::LIVE_COPY
    } else {
        step::POST_HOOKS
    };
    next(ctx, b, st, to).await
}

/// Which volumes a data-movement step moves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Movement {
    /// Policy `live`: the mounted PVC itself, between the pre and post hooks.
    Live,
    /// Policy `snapshotAndCopy`: PVCs made from the snapshots, after the post hooks.
    Copies,
}

impl Movement {
    fn takes(self, mode: VolumePolicyKind) -> bool {
        match self {
            Movement::Live => mode == VolumePolicyKind::Live,
            Movement::Copies => mode == VolumePolicyKind::SnapshotAndCopy,
        }
    }
}

async fn post_hooks(b: &Backup, ctx: &Context, mut st: BackupStatus) -> Result<Action> {
    if let Some(fatal) = run_hooks(b, ctx, &mut st, hooks::Phase::Post).await?
        && st.failure.is_none()
    {
        st.failure = Some(fatal);
    }
    let to = if st.failure.is_some() {
        step::FINALIZE
    } else {
        step::MOVERS
    };
    next(ctx, b, st, to).await
}

/// The changed-block plan of block volume `v`: the service of its driver, and the base
/// kept from its previous backup if that is still there.
async fn cbt_plan(ctx: &Context, v: &VolumeStatus) -> Result<Option<movers::CbtPlan>> {
    if v.volume_mode.as_deref() != Some("Block") {
        return Ok(None);
    }
    let Some(driver) = &v.driver else {
        return Ok(None);
    };
    let Some(endpoint) = coffer_cbt::discovery::find(&ctx.client, driver).await? else {
        return Ok(None);
    };
    let snaps: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &v.namespace, &snapshots::vs_ar());
    let mut bases = snaps
        .list(&ListParams::default().labels(&format!("{CBT_BASE_LABEL}={}", v.pvc)))
        .await
        .kube_ctx(|| format!("listing the changed-block bases in {}", v.namespace))?
        .items;
    bases.sort_by_key(|s| s.metadata.creation_timestamp.clone().map(|t| t.0));
    let mut base = None;
    if let Some(s) = bases.last()
        && let Some(parent) = s.annotations().get(REPO_SNAPSHOT_ANNOTATION)
        && let Some(handle) = snapshots::handle_of(&ctx.client, &v.namespace, &s.name_any()).await?
    {
        base = Some(movers::CbtBase {
            handle,
            parent: parent.clone(),
        });
    }
    Ok(Some(movers::CbtPlan { endpoint, base }))
}

async fn move_data(
    b: &Backup,
    ctx: &Context,
    mut st: BackupStatus,
    movement: Movement,
) -> Result<Action> {
    let name = b.name_any();
    let deadlines = &ctx.config.deadlines;
    let mut access: Option<RepositoryAccess> = None;
    let mut prepared: BTreeSet<String> = BTreeSet::new();
    let mut running = movers::running(&ctx.client).await?;
    ctx.metrics.movers_running.set(running as i64);
    for i in 0..st.volumes.len() {
        let v = st.volumes[i].clone();
        if !movement.takes(v.mode)
            || matches!(
                v.phase,
                Some(VolumeBackupPhase::Completed) | Some(VolumeBackupPhase::Failed)
            )
        {
            continue;
        }
        let observed = movers::observe(
            &ctx.client,
            &name,
            &v,
            deadlines.mover_silence,
            deadlines.mover_start,
        )
        .await?;
        let vs = &mut st.volumes[i];
        match observed {
            movers::Observed::NotStarted => {
                if running >= ctx.config.max_movers {
                    continue;
                }
                if access.is_none() {
                    access = Some(repository_access(ctx, b).await?);
                }
                let acc = access.as_ref().expect("resolved above");
                let cbt = cbt_plan(ctx, &v).await?;
                if prepared.insert(v.namespace.clone()) {
                    movers::ensure_access(&ctx.client, &v.namespace).await?;
                }
                movers::ensure_secret(
                    &ctx.client,
                    b,
                    &v.namespace,
                    acc,
                    cbt.as_ref().map(|c| c.endpoint.ca_pem.as_slice()),
                )
                .await?;
                movers::start(
                    &ctx.client,
                    b,
                    &v,
                    &b.spec.repository,
                    acc,
                    &ctx.config.mover_image,
                    cbt.as_ref(),
                    None,
                )
                .await?;
                running += 1;
                vs.phase = Some(VolumeBackupPhase::Pending);
                vs.volume_backup = Some(movers::names(&name, &v).volume_backup);
            }
            movers::Observed::Running(vb) => {
                let s = vb.status.unwrap_or_default();
                vs.phase = Some(s.phase.unwrap_or(VolumeBackupPhase::Pending));
                vs.bytes_total = s.bytes_total;
                vs.bytes_read = s.bytes_done;
                vs.volume_backup = vb.metadata.name.clone();
            }
            movers::Observed::Completed(vb) => {
                let s = vb.status.clone().unwrap_or_default();
                vs.phase = Some(VolumeBackupPhase::Completed);
                vs.snapshot_id = s.snapshot_id.clone();
                vs.bytes_total = s.bytes_total;
                vs.bytes_read = s.bytes_read;
                vs.bytes_new = s.bytes_new;
                vs.changed_blocks = s.changed_blocks;
                vs.full_read_reason = s.full_read_reason.clone();
                vs.volume_backup = vb.metadata.name.clone();
                ctx.metrics.bytes_read.inc_by(s.bytes_read);
                ctx.metrics.bytes_new.inc_by(s.bytes_new);
                // Record the repository snapshot in the VolumeBackup's spec (what the
                // populator and restores read).
                let vbs: Api<coffer_api::VolumeBackup> =
                    Api::namespaced(ctx.client.clone(), &v.namespace);
                vbs.patch(
                    &vb.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"snapshotId": s.snapshot_id}})),
                )
                .await
                .kube_ctx(|| format!("recording the snapshot of VolumeBackup {}", vb.name_any()))?;
                ctx.event(
                    b,
                    EventType::Normal,
                    "VolumeCopied",
                    format!(
                        "PVC {}/{}: read {}, added {}{}",
                        v.namespace,
                        v.pvc,
                        human_bytes(s.bytes_read),
                        human_bytes(s.bytes_new),
                        if s.changed_blocks {
                            " (changed blocks only)"
                        } else {
                            ""
                        }
                    ),
                )
                .await;
            }
            movers::Observed::Failed(reason) => {
                vs.phase = Some(VolumeBackupPhase::Failed);
                vs.message = Some(reason.clone());
                st.items.push(item(
                    ItemKind::Volume,
                    Severity::Error,
                    &v.pvc,
                    Some(&v.namespace),
                    reason.clone(),
                ));
                ctx.event(
                    b,
                    EventType::Warning,
                    "VolumeFailed",
                    format!("PVC {}/{}: {reason}", v.namespace, v.pvc),
                )
                .await;
            }
        }
    }
    // Progress.
    let copy: Vec<&VolumeStatus> = st.volumes.iter().collect();
    let progress = st.progress.get_or_insert_with(Default::default);
    progress.volumes_done = copy
        .iter()
        .filter(|v| {
            !matches!(
                v.mode,
                VolumePolicyKind::SnapshotAndCopy | VolumePolicyKind::Live
            ) || matches!(
                v.phase,
                Some(VolumeBackupPhase::Completed) | Some(VolumeBackupPhase::Failed)
            )
        })
        .count() as u32;
    progress.bytes_total = copy.iter().map(|v| v.bytes_total).sum();
    progress.bytes_done = copy
        .iter()
        .map(|v| v.bytes_read.min(v.bytes_total.max(v.bytes_read)))
        .sum();
    let this_done = st
        .volumes
        .iter()
        .filter(|v| movement.takes(v.mode))
        .all(|v| {
            matches!(
                v.phase,
                Some(VolumeBackupPhase::Completed) | Some(VolumeBackupPhase::Failed)
            )
        });
    if this_done {
        let to = match movement {
            Movement::Live => step::POST_HOOKS,
            Movement::Copies => step::FINALIZE,
        };
        return next(ctx, b, st, to).await;
    }
    write_status(ctx, b, &st).await?;
    Ok(Action::requeue(Duration::from_secs(2)))
}

/// The namespaces holding this backup's volumes.
fn volume_namespaces(st: &BackupStatus) -> BTreeSet<String> {
    st.volumes.iter().map(|v| v.namespace.clone()).collect()
}

/// Removes the temporary objects: mover pods, PVCs, Secrets, and snapshots not kept.
/// Kept: mode `snapshot`'s, and (completed copies of Block volumes) the changed-block
/// base, which replaces the previous base of the same PVC.
async fn remove_temporaries(
    ctx: &Context,
    b: &Backup,
    st: &BackupStatus,
    keep_bases: bool,
) -> Result<()> {
    let name = b.name_any();
    for ns in volume_namespaces(st) {
        movers::clean(&ctx.client, &name, &ns).await?;
    }
    let mut groups_to_delete: BTreeSet<(String, String)> = BTreeSet::new();
    let mut groups_to_keep: BTreeSet<(String, String)> = BTreeSet::new();
    for v in &st.volumes {
        let Some(snap) = &v.volume_snapshot else {
            continue;
        };
        let group = v.group.as_ref().map(|g| {
            (
                v.namespace.clone(),
                crate::names::object_name(&[&name, "group", g]),
            )
        });
        let is_base = keep_bases
            && v.mode == VolumePolicyKind::SnapshotAndCopy
            && v.volume_mode.as_deref() == Some("Block")
            && v.phase == Some(VolumeBackupPhase::Completed);
        let keep = (v.mode == VolumePolicyKind::Snapshot && keep_bases) || is_base;
        if is_base {
            mark_base(ctx, b, v, snap).await?;
        }
        match (group, keep) {
            (Some(g), true) => {
                groups_to_keep.insert(g);
            }
            (Some(g), false) => {
                groups_to_delete.insert(g);
            }
            (None, true) => {}
            (None, false) => snapshots::delete_snapshot(&ctx.client, &v.namespace, snap).await?,
        }
    }
    for g in groups_to_delete.difference(&groups_to_keep) {
        snapshots::delete_group(&ctx.client, &g.0, &g.1).await?;
    }
    Ok(())
}

/// Labels `snap` as the changed-block base of `v`'s PVC and drops the previous base.
async fn mark_base(ctx: &Context, b: &Backup, v: &VolumeStatus, snap: &str) -> Result<()> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &v.namespace, &snapshots::vs_ar());
    let old = api
        .list(&ListParams::default().labels(&format!("{CBT_BASE_LABEL}={}", v.pvc)))
        .await
        .kube_ctx(|| format!("listing the changed-block bases in {}", v.namespace))?
        .items;
    api.patch(
        snap,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {
            "labels": {CBT_BASE_LABEL: v.pvc},
            "annotations": {REPO_SNAPSHOT_ANNOTATION: v.snapshot_id},
        }})),
    )
    .await
    .kube_ctx(|| {
        format!(
            "marking VolumeSnapshot {}/{snap} as the next base",
            v.namespace
        )
    })?;
    for o in old {
        if o.name_any() == snap || o.labels().get(BACKUP_LABEL) == Some(&b.name_any()) {
            continue;
        }
        // A base taken in a group: the group goes (its other members are not bases, or
        // are superseded by this backup's group too).
        let group_owner = o
            .owner_references()
            .iter()
            .find(|r| r.kind == "VolumeGroupSnapshot")
            .map(|r| r.name.clone());
        match group_owner {
            Some(g) => snapshots::delete_group(&ctx.client, &v.namespace, &g).await?,
            None => snapshots::delete_snapshot(&ctx.client, &v.namespace, &o.name_any()).await?,
        }
    }
    Ok(())
}

async fn finalize(
    b: &Backup,
    ctx: &Context,
    mut st: BackupStatus,
    canceled: bool,
) -> Result<Action> {
    let ns = b.namespace().unwrap_or_default();
    remove_temporaries(ctx, b, &st, !canceled && st.failure.is_none()).await?;
    let now = Utc::now();
    let phase = if canceled {
        BackupPhase::Canceled
    } else if st.failure.is_some() {
        BackupPhase::Failed
    } else if st.items.iter().any(|i| i.severity == Severity::Error) {
        BackupPhase::PartiallyFailed
    } else {
        BackupPhase::Completed
    };
    if matches!(phase, BackupPhase::Completed | BackupPhase::PartiallyFailed) {
        let written = async {
            let (_, repo) = open_repository(ctx, b).await?;
            let cluster = coffer_resources::client::Cluster::from_client(
                ctx.client.clone(),
                "in-cluster",
                &ns,
            );
            let m = manifest::BackupManifest {
                version: manifest::VERSION,
                name: b.name_any(),
                namespace: ns.clone(),
                uid: b.uid().unwrap_or_default(),
                cluster: manifest::ClusterIdentity {
                    server: cluster.server().to_string(),
                    uid: cluster.uid().await.ok().flatten(),
                },
                phase,
                start_time: st.start_time.as_ref().map(|t| crate::time::to_chrono(&t.0)),
                completion_time: now,
                application: application(ctx, b, &st).await?,
                resources_snapshot: st.resources_snapshot.clone(),
                volumes: st.volumes.clone(),
                hooks: st.hooks.clone().unwrap_or_default(),
                items: st.items.clone(),
                labels: b.spec.labels.clone(),
            };
            let id = manifest::write(&repo, &m).await?;
            Ok::<_, Error>(id)
        }
        .await;
        match written {
            Ok(id) => st.manifest = Some(id),
            Err(e) => st.failure = Some(format!("writing the backup manifest failed: {e}")),
        }
    }
    let phase = if st.failure.is_some() && !canceled {
        BackupPhase::Failed
    } else {
        phase
    };
    if canceled {
        // A canceled backup has no manifest: what it wrote is forgotten.
        let mut ids: Vec<String> = st.resources_snapshot.iter().cloned().collect();
        ids.extend(st.volumes.iter().filter_map(|v| v.snapshot_id.clone()));
        forget_ids(ctx, b, &ids).await?;
    }
    st.phase = Some(phase);
    st.message = Some(match phase {
        BackupPhase::Completed => "backup completed".into(),
        BackupPhase::PartiallyFailed => format!(
            "backup completed with {} failed item(s): see items",
            st.items
                .iter()
                .filter(|i| i.severity == Severity::Error)
                .count()
        ),
        BackupPhase::Canceled => "canceled by spec.cancel; nothing of it is kept".into(),
        _ => st.failure.clone().unwrap_or_else(|| "failed".into()),
    });
    st.completion_time = Some(crate::time::from_chrono(now));
    st.step = None;
    let new: u64 = st.volumes.iter().map(|v| v.bytes_new).sum();
    st.size = Some(human_bytes(new));
    write_status(ctx, b, &st).await?;
    record_on_application(ctx, b, phase).await;
    ctx.metrics.backups_in_progress.dec();
    ctx.metrics
        .backups
        .get_or_create(&PhaseLabels {
            phase: format!("{phase:?}"),
        })
        .inc();
    if let Some(start) = &st.start_time {
        ctx.metrics
            .backup_duration
            .observe((now - crate::time::to_chrono(&start.0)).num_milliseconds() as f64 / 1000.0);
    }
    let t = if phase == BackupPhase::Completed {
        EventType::Normal
    } else {
        EventType::Warning
    };
    ctx.event(
        b,
        t,
        &format!("{phase:?}"),
        st.message.clone().unwrap_or_default(),
    )
    .await;
    Ok(Action::await_change())
}

/// A finished Backup with a `ttl`: at its expiration its data is forgotten in the
/// repository and the object deleted; until then the controller looks again at that time
/// (at least hourly, so that a changed clock or ttl is seen).
async fn expire_when_due(b: &Backup, ctx: &Context, st: &BackupStatus) -> Result<Action> {
    let Some(expiration) = &st.expiration else {
        return Ok(Action::await_change());
    };
    let due = crate::time::to_chrono(&expiration.0);
    let left = (due - Utc::now()).to_std().unwrap_or_default();
    if !left.is_zero() {
        return Ok(Action::requeue(left.min(Duration::from_secs(3600))));
    }
    let mut ids: Vec<String> = st.resources_snapshot.iter().cloned().collect();
    ids.extend(st.volumes.iter().filter_map(|v| v.snapshot_id.clone()));
    ids.extend(st.manifest.iter().cloned());
    forget_ids(ctx, b, &ids).await?;
    ctx.event(
        b,
        EventType::Normal,
        "Expired",
        format!(
            "ttl {} reached: {} snapshot(s) forgotten in the repository",
            b.spec.ttl.clone().unwrap_or_default(),
            ids.len()
        ),
    )
    .await;
    let api: Api<Backup> = Api::namespaced(ctx.client.clone(), &b.namespace().unwrap_or_default());
    match api.delete(&b.name_any(), &Default::default()).await {
        Ok(_) => Ok(Action::await_change()),
        Err(e) if crate::error::is_not_found(&e) => Ok(Action::await_change()),
        Err(e) => Err(e).kube_ctx(|| format!("deleting the expired Backup {}", b.name_any())),
    }
}

/// Records the backup's end in its Application's status (best effort: the Backup's own
/// status is the record).
async fn record_on_application(ctx: &Context, b: &Backup, phase: BackupPhase) {
    let Some(app) = &b.spec.application else {
        return;
    };
    let api: Api<coffer_api::Application> =
        Api::namespaced(ctx.client.clone(), &b.namespace().unwrap_or_default());
    let mut status = json!({
        "lastBackup": b.name_any(),
        "lastBackupPhase": phase,
        "lastBackupTime": crate::time::now(),
    });
    if phase == BackupPhase::Completed {
        status["lastCompletedBackup"] = json!(b.name_any());
    }
    if let Err(e) = api
        .patch_status(
            app,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
    {
        tracing::warn!(application = %app, error = %e, "cannot record the backup on its Application");
    }
}

/// Forgets repository snapshots by id (already gone is fine).
async fn forget_ids(ctx: &Context, b: &Backup, ids: &[String]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let (_, repo) = open_repository(ctx, b).await?;
    let mut snaps = Vec::new();
    for id in ids {
        match repo.find_snapshot(id).await {
            Ok(s) => snaps.push(s),
            Err(coffer_repo::Error::SnapshotNotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let refs: Vec<&coffer_repo::Snapshot> = snaps.iter().collect();
    repo.forget_snapshots(&refs).await?;
    Ok(())
}

async fn cancel(b: &Backup, ctx: &Context, mut st: BackupStatus) -> Result<Action> {
    let current = st.step.clone().unwrap_or_default();
    // Quiesced (pre hooks ran, post hooks not yet): unquiesce first.
    if current == step::SNAPSHOTS || current == step::LIVE_COPY || current == step::POST_HOOKS {
        let _ = run_hooks(b, ctx, &mut st, hooks::Phase::Post).await?;
    }
    ctx.event(
        b,
        EventType::Normal,
        "Canceling",
        "spec.cancel is set: stopping".into(),
    )
    .await;
    finalize(b, ctx, st, true).await
}

/// The Backup object is being deleted: temporary objects go; with deletionPolicy Delete
/// its data is forgotten in the repository.
async fn cleanup(b: &Backup, ctx: &Context) -> Result<Action> {
    let st = b.status.clone().unwrap_or_default();
    for ns in volume_namespaces(&st) {
        movers::clean(&ctx.client, &b.name_any(), &ns).await?;
    }
    if b.spec.deletion_policy == DeletionPolicy::Delete {
        let mut ids: Vec<String> = st.resources_snapshot.iter().cloned().collect();
        ids.extend(st.volumes.iter().filter_map(|v| v.snapshot_id.clone()));
        ids.extend(st.manifest.iter().cloned());
        forget_ids(ctx, b, &ids).await?;
    }
    if !st.phase.is_some_and(BackupPhase::is_final) && st.phase.is_some() {
        ctx.metrics.backups_in_progress.dec();
    }
    Ok(Action::await_change())
}

/// Compile-time check: every step's future is Send for any lifetime (the controller
/// spawns them; a closure over references inside a stream breaks that).
#[allow(dead_code)]
fn send_probe(b: &Backup, ctx: &Context, st: BackupStatus) {
    fn s<T: Send>(_: T) {}
    s(validate(b, ctx, st.clone()));
    s(resources(b, ctx, st.clone()));
    s(pre_hooks(b, ctx, st.clone()));
    s(take_snapshots(b, ctx, st.clone()));
    s(post_hooks(b, ctx, st.clone()));
    s(move_data(b, ctx, st.clone(), Movement::Copies));
    s(finalize(b, ctx, st.clone(), false));
    s(cancel(b, ctx, st.clone()));
    s(cleanup(b, ctx));
}
