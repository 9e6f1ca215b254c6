//! Coffer's volume populator (KEP-1495): a PVC whose `dataSourceRef` names a
//! `coffer.dev/VolumeBackup` is filled with that backup's data, whether a Restore made the
//! PVC or a user did. The flow is lib-volume-populator's:
//!
//! 1. The user's PVC stays Pending (no provisioner acts on a data source it does not
//!    know). With a WaitForFirstConsumer class, wait for the scheduler to pick a node.
//! 2. A prime PVC (`coffer-prime-<uid>`, same class, size and mode) is provisioned as an
//!    empty volume, and a data-mover pod (`coffer mover restore`) writes the snapshot
//!    into it, on the chosen node.
//! 3. The prime PVC's PV is rebound to the user's PVC (its `claimRef`), the PV binder
//!    binds them, and the prime PVC, pod and Secret are deleted.
//!
//! The prime PVC, pod and Secret live in the user PVC's namespace with it as their owner,
//! so that deleting the PVC (a cancelled Restore, a user giving up) takes them too: a
//! populator never leaves orphans, also when the operator restarts between steps. The
//! outcome is written on the user's PVC (annotations [`POPULATED_ANNOTATION`] or
//! [`FAILED_ANNOTATION`]) and as Events; a missing or unfinished VolumeBackup is an Event
//! on the PVC, not a silent Pending.
//!
//! Whose data a VolumeBackup may name: one in namespace N resolves its repository in N
//! (a BackupRepository there, whose key N's owners hold anyway) or is a
//! ClusterBackupRepository whose snapshot was made from a PVC of N; a VolumeBackup a
//! Restore made (`spec.restore`) resolves it in the Restore's namespace, and only while
//! that Restore restores into N.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use coffer_api::{RepositoryKind, Restore, VolumeBackup, VolumeBackupPhase, VolumeBackupSpec};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::{Controller, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::backup::movers::{create, from_json};
use crate::context::Context;
use crate::error::{Error, KubeContext, Result, is_not_found};
use crate::mover::PVC_TAG;
use crate::names::{MANAGED_BY, object_name};
use crate::repository::{RepositoryAccess, settings_of};

/// The API group and kind a PVC's `dataSourceRef` names.
pub const SOURCE_KIND: (&str, &str) = ("coffer.dev", "VolumeBackup");
/// Label on a populator's prime PVC, pod and Secret: the user PVC's uid.
pub const POPULATOR_LABEL: &str = "coffer.dev/populator-for";
/// Annotation on a populated PVC: the outcome (JSON: snapshot, bytes, seconds).
pub const POPULATED_ANNOTATION: &str = "coffer.dev/populated";
/// Annotation on a PVC the populator gave up on: why.
pub const FAILED_ANNOTATION: &str = "coffer.dev/populate-failed";
/// Annotation counting failed attempts.
const ATTEMPTS_ANNOTATION: &str = "coffer.dev/populate-attempts";
/// Attempts before giving up (the PVC is then recreated to try again).
const MAX_ATTEMPTS: u32 = 3;
/// The scheduler's choice of node for a WaitForFirstConsumer PVC.
const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

/// Names of the objects populating one PVC.
pub struct PrimeNames {
    /// The prime PVC.
    pub pvc: String,
    /// The mover pod.
    pub pod: String,
    /// The repository Secret.
    pub secret: String,
}

/// The names for the PVC of uid `uid`.
pub fn prime_names(uid: &str) -> PrimeNames {
    PrimeNames {
        pvc: object_name(&["coffer-prime", uid]),
        pod: object_name(&["coffer-populate", uid]),
        secret: object_name(&["coffer-populate", uid, "repo"]),
    }
}

/// Whether `pvc` is one for this populator: the VolumeBackup it names.
pub fn volume_backup_of(pvc: &PersistentVolumeClaim) -> Option<String> {
    let r = pvc.spec.as_ref()?.data_source_ref.as_ref()?;
    (r.api_group.as_deref() == Some(SOURCE_KIND.0) && r.kind == SOURCE_KIND.1)
        .then(|| r.name.clone())
}

/// Whether `p` has its volume (bound, or being bound to it).
pub fn has_volume(p: &PersistentVolumeClaim) -> bool {
    p.spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .is_some_and(|v| !v.is_empty())
}

/// Runs the populator until the stream ends.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    Controller::new(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<Pod>::all(client),
        watcher::Config::default().labels(POPULATOR_LABEL),
    )
    .run(reconcile, error_policy, ctx)
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!(error = %e, "populator reconcile");
        }
    })
    .await;
}

fn error_policy(p: Arc<PersistentVolumeClaim>, e: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(pvc = %p.name_any(), error = %e, "populating failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

fn annotation<'a>(p: &'a PersistentVolumeClaim, key: &str) -> Option<&'a str> {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

async fn annotate(
    ctx: &Context,
    p: &PersistentVolumeClaim,
    values: serde_json::Value,
) -> Result<()> {
    let ns = p.namespace().unwrap_or_default();
    Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &ns)
        .patch(
            &p.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": values}})),
        )
        .await
        .kube_ctx(|| format!("annotating PVC {ns}/{}", p.name_any()))?;
    Ok(())
}

async fn reconcile(p: Arc<PersistentVolumeClaim>, ctx: Arc<Context>) -> Result<Action> {
    let Some(vb_name) = volume_backup_of(&p) else {
        return Ok(Action::await_change());
    };
    if p.metadata.deletion_timestamp.is_some() || annotation(&p, FAILED_ANNOTATION).is_some() {
        return Ok(Action::await_change());
    }
    let ns = p.namespace().unwrap_or_default();
    let uid = p.uid().unwrap_or_default();
    let names = prime_names(&uid);
    if has_volume(&p) {
        cleanup(&ctx, &ns, &names).await?;
        return Ok(Action::await_change());
    }
    // The VolumeBackup: present, complete, and allowed to be read from here.
    let vbs: Api<VolumeBackup> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(vb) = vbs
        .get_opt(&vb_name)
        .await
        .kube_ctx(|| format!("reading VolumeBackup {ns}/{vb_name}"))?
    else {
        ctx.event(
            p.as_ref(),
            EventType::Warning,
            "VolumeBackupNotFound",
            format!(
                "dataSourceRef names VolumeBackup {ns}/{vb_name}, which does not exist: create it (a Backup or a Restore makes them), or recreate the PVC naming an existing one (kubectl get volumebackups -n {ns})"
            ),
        )
        .await;
        return Ok(Action::requeue(Duration::from_secs(15)));
    };
    let snapshot = vb
        .spec
        .snapshot_id
        .clone()
        .or_else(|| vb.status.as_ref().and_then(|s| s.snapshot_id.clone()));
    let complete = vb.status.as_ref().and_then(|s| s.phase) == Some(VolumeBackupPhase::Completed)
        || vb.spec.restore.is_some();
    let Some(snapshot) = snapshot.filter(|_| complete) else {
        ctx.event(
            p.as_ref(),
            EventType::Normal,
            "VolumeBackupNotReady",
            format!("waiting for VolumeBackup {ns}/{vb_name} to hold its data (its backup is still copying it)"),
        )
        .await;
        return Ok(Action::requeue(Duration::from_secs(10)));
    };
    let spec = p.spec.clone().unwrap_or_default();
    let block = spec.volume_mode.as_deref() == Some("Block");
    if block != (vb.spec.volume_mode == "Block") {
        return give_up(
            &ctx,
            &p,
            &names,
            format!(
                "the PVC's volumeMode ({}) differs from VolumeBackup {ns}/{vb_name}'s ({}): recreate the PVC with volumeMode {}",
                spec.volume_mode.as_deref().unwrap_or("Filesystem"),
                vb.spec.volume_mode,
                vb.spec.volume_mode
            ),
        )
        .await;
    }
    // A WaitForFirstConsumer class: the data goes where the scheduler put the consumer.
    let class_name = spec.storage_class_name.clone().unwrap_or_default();
    let class = Api::<StorageClass>::all(ctx.client.clone())
        .get_opt(&class_name)
        .await
        .kube_ctx(|| format!("reading StorageClass {class_name}"))?;
    let Some(class) = class else {
        return give_up(
            &ctx,
            &p,
            &names,
            format!(
                "StorageClass {class_name:?} does not exist: recreate the PVC with an existing storageClassName (kubectl get storageclass)"
            ),
        )
        .await;
    };
    let node = annotation(&p, SELECTED_NODE).map(str::to_string);
    if class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer") && node.is_none() {
        return Ok(Action::await_change());
    }

    if annotation(&p, POPULATED_ANNOTATION).is_some() {
        // Written, not yet bound: the rebinding (idempotent) may not have happened.
        rebind(&ctx, &p, &names).await?;
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let pod = pods
        .get_opt(&names.pod)
        .await
        .kube_ctx(|| format!("reading pod {ns}/{}", names.pod))?;
    let Some(pod) = pod else {
        start(&ctx, &p, &vb, &snapshot, block, node.as_deref(), &names).await?;
        ctx.event(
            p.as_ref(),
            EventType::Normal,
            "Populating",
            format!(
                "restoring snapshot {} of VolumeBackup {ns}/{vb_name} into prime PVC {}",
                short(&snapshot),
                names.pvc
            ),
        )
        .await;
        return Ok(Action::requeue(Duration::from_secs(2)));
    };
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    match phase.as_str() {
        "Succeeded" => {
            let (written, seconds) = crate::restore_pod::outcome(&pods, &ns, &names.pod).await?;
            annotate(
                &ctx,
                &p,
                json!({POPULATED_ANNOTATION: json!({
                    "volumeBackup": vb_name, "snapshot": snapshot,
                    "bytesWritten": written, "durationSeconds": seconds}).to_string()}),
            )
            .await?;
            rebind(&ctx, &p, &names).await?;
            ctx.event(
                p.as_ref(),
                EventType::Normal,
                "Populated",
                format!(
                    "filled from VolumeBackup {ns}/{vb_name} (snapshot {}): {} written in {seconds:.1}s",
                    short(&snapshot),
                    coffer_repo::human_bytes(written)
                ),
            )
            .await;
            Ok(Action::requeue(Duration::from_secs(2)))
        }
        "Failed" => {
            let tail = crate::restore_pod::last_log_line(&pods, &names.pod).await;
            let reason = format!("the data mover {ns}/{} failed: {tail}", names.pod);
            let attempts = annotation(&p, ATTEMPTS_ANNOTATION)
                .and_then(|a| a.parse::<u32>().ok())
                .unwrap_or(0)
                + 1;
            if attempts >= MAX_ATTEMPTS {
                return give_up(
                    &ctx,
                    &p,
                    &names,
                    format!("{reason} ({attempts} attempts): fix the cause and recreate the PVC"),
                )
                .await;
            }
            ctx.event(
                p.as_ref(),
                EventType::Warning,
                "PopulateFailed",
                format!("{reason}; trying again"),
            )
            .await;
            annotate(&ctx, &p, json!({ATTEMPTS_ANNOTATION: attempts.to_string()})).await?;
            delete(&pods, &names.pod, "pod").await?;
            Ok(Action::requeue(Duration::from_secs(5)))
        }
        _ => Ok(Action::requeue(Duration::from_secs(2))),
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

/// Records that populating `p` failed for good (annotation and Event) and removes what
/// was made for it.
async fn give_up(
    ctx: &Context,
    p: &PersistentVolumeClaim,
    names: &PrimeNames,
    reason: String,
) -> Result<Action> {
    let ns = p.namespace().unwrap_or_default();
    ctx.event(p, EventType::Warning, "PopulateFailed", reason.clone())
        .await;
    annotate(ctx, p, json!({FAILED_ANNOTATION: reason})).await?;
    cleanup(ctx, &ns, names).await?;
    Ok(Action::await_change())
}

async fn delete<K>(api: &Api<K>, name: &str, what: &str) -> Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e).kube_ctx(|| format!("deleting {what} {name}")),
    }
}

/// Deletes the prime PVC, the pod and the Secret of one population.
async fn cleanup(ctx: &Context, ns: &str, names: &PrimeNames) -> Result<()> {
    let c = &ctx.client;
    delete(&Api::<Pod>::namespaced(c.clone(), ns), &names.pod, "pod").await?;
    delete(
        &Api::<Secret>::namespaced(c.clone(), ns),
        &names.secret,
        "Secret",
    )
    .await?;
    delete(
        &Api::<PersistentVolumeClaim>::namespaced(c.clone(), ns),
        &names.pvc,
        "PVC",
    )
    .await
}

/// The repository a VolumeBackup in `ns` may read, checked as the module doc says.
async fn access_for(ctx: &Context, ns: &str, vb: &VolumeBackup) -> Result<RepositoryAccess> {
    let spec: &VolumeBackupSpec = &vb.spec;
    let repo_ns = match &spec.restore {
        Some(r) => {
            let (rns, rname) = r.split_once('/').ok_or_else(|| {
                Error::Invalid(format!(
                    "VolumeBackup {ns}/{}: spec.restore {r:?} is not NAMESPACE/NAME",
                    vb.name_any()
                ))
            })?;
            let restore = Api::<Restore>::namespaced(ctx.client.clone(), rns)
                .get_opt(rname)
                .await
                .kube_ctx(|| format!("reading Restore {r}"))?
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "VolumeBackup {ns}/{} belongs to Restore {r}, which does not exist",
                        vb.name_any()
                    ))
                })?;
            if !crate::restore::targets(&restore).contains(ns) {
                return Err(Error::Invalid(format!(
                    "VolumeBackup {ns}/{} names Restore {r}, which does not restore into namespace {ns}",
                    vb.name_any()
                )));
            }
            rns.to_string()
        }
        None => ns.to_string(),
    };
    let (settings, secret_ns) = settings_of(
        &ctx.client,
        &spec.repository,
        &repo_ns,
        &ctx.config.namespace,
    )
    .await?;
    let access = RepositoryAccess::resolve(&ctx.client, &settings, &secret_ns).await?;
    if spec.restore.is_none() && spec.repository.kind == RepositoryKind::ClusterBackupRepository {
        // Another namespace's data through a cluster-wide repository: only a Restore in
        // that namespace may bring it here.
        let repo = access.open(&ctx.open_options()).await?;
        let id = spec.snapshot_id.clone().unwrap_or_default();
        let snap = repo.find_snapshot(&id).await?;
        let from = snap.tags.get(PVC_TAG).cloned().unwrap_or_default();
        if from.split_once('/').map(|(n, _)| n) != Some(ns) {
            return Err(Error::Invalid(format!(
                "VolumeBackup {ns}/{} names data of PVC {from} through ClusterBackupRepository {}: a namespace may only populate from its own PVCs' data; restore it with a Restore in the source namespace",
                vb.name_any(),
                spec.repository.name
            )));
        }
    }
    Ok(access)
}

/// Creates the Secret, the prime PVC and the mover pod (each only if absent).
async fn start(
    ctx: &Context,
    p: &PersistentVolumeClaim,
    vb: &VolumeBackup,
    snapshot: &str,
    block: bool,
    node: Option<&str>,
    names: &PrimeNames,
) -> Result<()> {
    let ns = p.namespace().unwrap_or_default();
    let access = match access_for(ctx, &ns, vb).await {
        Ok(a) => a,
        Err(e @ (Error::Invalid(_) | Error::Secret(_))) => {
            give_up(ctx, p, names, e.to_string()).await?;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let owner = p.controller_owner_ref(&()).map(|mut o| {
        o.controller = Some(false);
        vec![o]
    });
    let labels: BTreeMap<String, String> = [
        (POPULATOR_LABEL.to_string(), p.uid().unwrap_or_default()),
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
    ]
    .into();
    let c = &ctx.client;
    let spec = p.spec.clone().unwrap_or_default();
    let mut annotations = BTreeMap::new();
    if let Some(n) = node {
        annotations.insert(SELECTED_NODE.to_string(), n.to_string());
    }
    let prime: PersistentVolumeClaim = from_json(
        json!({
            "metadata": {"name": names.pvc, "namespace": ns, "labels": labels,
                         "annotations": annotations, "ownerReferences": owner},
            "spec": {
                "accessModes": spec.access_modes,
                "resources": spec.resources,
                "storageClassName": spec.storage_class_name,
                "volumeMode": spec.volume_mode,
            },
        }),
        "the prime PVC",
    )?;
    create(
        &Api::<PersistentVolumeClaim>::namespaced(c.clone(), &ns),
        &prime,
        &format!("PVC {ns}/{}", names.pvc),
    )
    .await?;
    crate::restore_pod::start(
        c,
        &crate::restore_pod::RestorePod {
            name: &names.pod,
            secret: &names.secret,
            namespace: &ns,
            labels: &labels,
            owner,
            claim: &names.pvc,
            snapshot,
            block,
            in_place: false,
            node,
        },
        &access,
        &ctx.config.mover_image,
    )
    .await
}

/// Hands the prime PVC's PV to the user's PVC.
async fn rebind(ctx: &Context, p: &PersistentVolumeClaim, names: &PrimeNames) -> Result<()> {
    let ns = p.namespace().unwrap_or_default();
    let prime = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &ns)
        .get(&names.pvc)
        .await
        .kube_ctx(|| format!("reading prime PVC {ns}/{}", names.pvc))?;
    let pv = prime
        .spec
        .and_then(|s| s.volume_name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            Error::Failed(format!(
                "prime PVC {ns}/{} has no volume although its mover ran",
                names.pvc
            ))
        })?;
    Api::<PersistentVolume>::all(ctx.client.clone())
        .patch(
            &pv,
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"annotations": {"coffer.dev/populated-for": format!("{ns}/{}", p.name_any())}},
                "spec": {"claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "namespace": ns, "name": p.name_any(), "uid": p.uid(),
                    "resourceVersion": p.resource_version()}},
            })),
        )
        .await
        .kube_ctx(|| format!("rebinding PV {pv} to PVC {ns}/{}", p.name_any()))?;
    Ok(())
}
