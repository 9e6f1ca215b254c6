//! Restore into the running application (`mode: inPlace`, the seed's "restore to
//! production"): the workloads that mount the restored PVCs are recorded and scaled to
//! zero, data movers write the backed-up data into the existing PVCs (block volumes: only
//! the blocks that differ; file trees: what the backup does not hold is removed first),
//! then the objects are restored and the workloads get their recorded replicas back.
//!
//! A pod that mounts a restored PVC and has no controller to scale it down is reported
//! and its volume is not written: writing under a running application would corrupt it.

use std::collections::{BTreeMap, BTreeSet};

use coffer_api::{
    ItemKind, Restore, RestoreMethod, RestoreSpec, RestoreStatus, ScaledWorkload,
    VolumeRestorePhase, VolumeRestoreStatus,
};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::ResourceExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use serde_json::json;

use super::{RESTORE_LABEL, Source, item, pending_volume, restore_label};
use crate::context::Context;
use crate::error::{Error, KubeContext, Result, is_not_found};
use crate::names::{MANAGED_BY, object_name};
use crate::repository::{RepositoryAccess, settings_of};

/// The volumes a restore in place writes: every backed-up PVC the filter keeps, at its
/// mapped namespace; one that does not exist there is Failed with the way out.
pub async fn volumes(
    ctx: &Context,
    spec: &RestoreSpec,
    source: &Source,
) -> Result<Vec<VolumeRestoreStatus>> {
    let mut out = Vec::new();
    for v in source
        .manifest
        .volumes
        .iter()
        .filter(|v| v.snapshot_id.is_some())
    {
        let ns = spec
            .namespace_mapping
            .get(&v.namespace)
            .cloned()
            .unwrap_or_else(|| v.namespace.clone());
        let mut s = pending_volume(&ns, &v.pvc, v);
        if !super::resources::wanted(spec, v) {
            s.phase = Some(VolumeRestorePhase::Skipped);
            s.message = Some("excluded by spec.volumes".into());
        } else if Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&v.pvc)
            .await
            .kube_ctx(|| format!("reading PVC {ns}/{}", v.pvc))?
            .is_none()
        {
            s.phase = Some(VolumeRestorePhase::Failed);
            s.message = Some(format!(
                "PVC {ns}/{} does not exist: mode inPlace writes into existing PVCs; restore with mode new to create it",
                v.pvc
            ));
        } else {
            s.method = Some(if v.volume_mode.as_deref() == Some("Block") {
                RestoreMethod::Delta
            } else {
                RestoreMethod::Mover
            });
        }
        out.push(s);
    }
    Ok(out)
}

fn claims(p: &Pod) -> impl Iterator<Item = &str> {
    p.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.as_str())
}

/// Scales the workloads mounting the volumes to zero (recording their replicas once) and
/// returns whether no pod mounts any of them any more. Pods without a controller fail
/// their volumes.
pub async fn scale_down(ctx: &Context, st: &mut RestoreStatus) -> Result<bool> {
    // The pods that mount a volume to write, as listed: whether they still do is decided
    // once every pod was seen (a volume may be failed by a later pod).
    let mut mounting: Vec<(String, Vec<String>)> = Vec::new();
    let wanted: BTreeMap<String, BTreeSet<String>> = st
        .volumes
        .iter()
        .filter(|v| v.phase == Some(VolumeRestorePhase::Pending))
        .fold(BTreeMap::new(), |mut m, v| {
            m.entry(v.namespace.clone())
                .or_default()
                .insert(v.pvc.clone());
            m
        });
    for (ns, pvcs) in wanted {
        let pods = Api::<Pod>::namespaced(ctx.client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .kube_ctx(|| format!("listing the pods of {ns}"))?;
        for p in pods {
            let used: Vec<String> = claims(&p)
                .filter(|c| pvcs.contains(*c))
                .map(str::to_string)
                .collect();
            if used.is_empty()
                || p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
            {
                continue;
            }
            mounting.push((ns.clone(), used.clone()));
            let Some(owner) = p
                .owner_references()
                .iter()
                .find(|o| o.controller == Some(true))
            else {
                fail_used(
                    st,
                    &ns,
                    &used,
                    format!(
                        "pod {ns}/{} mounts it and has no controller to scale it down: delete the pod (or stop what uses the volume) and restore again",
                        p.name_any()
                    ),
                );
                continue;
            };
            let (kind, name) = match owner.kind.as_str() {
                "ReplicaSet" => {
                    let rs = Api::<ReplicaSet>::namespaced(ctx.client.clone(), &ns)
                        .get_opt(&owner.name)
                        .await
                        .kube_ctx(|| format!("reading ReplicaSet {ns}/{}", owner.name))?;
                    match rs.as_ref().and_then(|rs| {
                        rs.owner_references()
                            .iter()
                            .find(|o| o.controller == Some(true) && o.kind == "Deployment")
                            .map(|o| o.name.clone())
                    }) {
                        Some(d) => ("Deployment".to_string(), d),
                        None => ("ReplicaSet".to_string(), owner.name.clone()),
                    }
                }
                k @ "StatefulSet" => (k.to_string(), owner.name.clone()),
                other => {
                    fail_used(
                        st,
                        &ns,
                        &used,
                        format!(
                            "pod {ns}/{} mounts it and is run by a {other}, which a restore cannot scale down: stop it and restore again",
                            p.name_any()
                        ),
                    );
                    continue;
                }
            };
            if !st
                .scaled
                .iter()
                .any(|w| w.kind == kind && w.namespace == ns && w.name == name)
            {
                let replicas = scale(ctx, &kind, &ns, &name, 0).await?;
                st.scaled.push(ScaledWorkload {
                    kind,
                    namespace: ns.clone(),
                    name,
                    replicas,
                });
            }
        }
    }
    // Pods of volumes failed above keep running: only the volumes still to write must be
    // free.
    Ok(!mounting.iter().any(|(ns, used)| {
        st.volumes.iter().any(|v| {
            &v.namespace == ns
                && used.contains(&v.pvc)
                && v.phase == Some(VolumeRestorePhase::Pending)
        })
    }))
}

/// Fails the volumes of `ns` named in `used` with `why`.
fn fail_used(st: &mut RestoreStatus, ns: &str, used: &[String], why: String) {
    for v in st
        .volumes
        .iter_mut()
        .filter(|v| v.namespace == ns && used.contains(&v.pvc))
    {
        v.phase = Some(VolumeRestorePhase::Failed);
        v.message = Some(why.clone());
    }
}

/// Sets the replicas of workload `kind ns/name` (an apps/v1 kind); returns what it had.
async fn scale(ctx: &Context, kind: &str, ns: &str, name: &str, replicas: i32) -> Result<i32> {
    let what = || format!("scaling {kind} {ns}/{name} to {replicas}");
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", kind));
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &ar);
    let before = api.get(name).await.kube_ctx(what)?.data["spec"]["replicas"].as_i64();
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": replicas}})),
    )
    .await
    .kube_ctx(what)?;
    Ok(before.map_or(1, |r| r as i32))
}

/// Gives every scaled workload its recorded replicas back. A workload deleted meanwhile
/// (by a rollback) is skipped.
pub async fn scale_up(ctx: &Context, st: &RestoreStatus) -> Result<()> {
    for w in &st.scaled {
        match scale(ctx, &w.kind, &w.namespace, &w.name, w.replicas).await {
            Ok(_) => {}
            Err(Error::Kube {
                source: kube::Error::Api(s),
                ..
            }) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn mover_name(r: &Restore, pvc: &str) -> String {
    object_name(&["coffer-restore", &r.name_any(), pvc])
}

fn secret_name(r: &Restore) -> String {
    object_name(&["coffer-restore", &r.name_any(), "repo"])
}

/// Starts the mover of each pending volume (once) and records how each stands; returns
/// whether every volume has ended.
pub async fn movers(
    ctx: &Context,
    r: &Restore,
    repository: &coffer_api::RepositoryRef,
    st: &mut RestoreStatus,
) -> Result<bool> {
    let rns = r.namespace().unwrap_or_default();
    let label = restore_label(&rns, &r.name_any());
    let mut access: Option<RepositoryAccess> = None;
    let mut all_done = true;
    let mut failed = Vec::new();
    for v in st.volumes.iter_mut() {
        if !matches!(
            v.phase,
            Some(VolumeRestorePhase::Pending) | Some(VolumeRestorePhase::InProgress)
        ) {
            continue;
        }
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &v.namespace);
        let name = mover_name(r, &v.pvc);
        let Some(pod) = pods
            .get_opt(&name)
            .await
            .kube_ctx(|| format!("reading pod {}/{name}", v.namespace))?
        else {
            if access.is_none() {
                let (settings, secret_ns) =
                    settings_of(&ctx.client, repository, &rns, &ctx.config.namespace).await?;
                access = Some(RepositoryAccess::resolve(&ctx.client, &settings, &secret_ns).await?);
            }
            let a = access.as_ref().expect("resolved above");
            start(ctx, r, &label, v, a).await?;
            v.phase = Some(VolumeRestorePhase::InProgress);
            all_done = false;
            continue;
        };
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        match phase.as_str() {
            "Succeeded" => {
                let (written, seconds) =
                    crate::restore_pod::outcome(&pods, &v.namespace, &name).await?;
                v.phase = Some(VolumeRestorePhase::Completed);
                v.bytes_written = written;
                v.duration_seconds = Some(seconds);
            }
            "Failed" => {
                let tail = crate::restore_pod::last_log_line(&pods, &name).await;
                v.phase = Some(VolumeRestorePhase::Failed);
                v.message = Some(format!(
                    "the data mover {}/{name} failed: {tail}",
                    v.namespace
                ));
                failed.push(v.clone());
            }
            _ => all_done = false,
        }
    }
    for v in failed {
        st.items.push(item(
            ItemKind::Volume,
            &v.pvc,
            Some(&v.namespace),
            v.message.clone().unwrap_or_default(),
        ));
    }
    Ok(all_done)
}

async fn start(
    ctx: &Context,
    r: &Restore,
    label: &str,
    v: &VolumeRestoreStatus,
    access: &RepositoryAccess,
) -> Result<()> {
    let labels: BTreeMap<String, String> = [
        (RESTORE_LABEL.to_string(), label.to_string()),
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
    ]
    .into();
    crate::restore_pod::start(
        &ctx.client,
        &crate::restore_pod::RestorePod {
            name: &mover_name(r, &v.pvc),
            secret: &secret_name(r),
            namespace: &v.namespace,
            labels: &labels,
            owner: None,
            claim: &v.pvc,
            snapshot: v.snapshot_id.as_deref().unwrap_or_default(),
            block: v.method == Some(RestoreMethod::Delta),
            in_place: true,
            node: None,
        },
        access,
        &ctx.config.mover_image,
    )
    .await
}

/// Deletes the restore's mover pods and Secrets.
pub async fn remove_movers(ctx: &Context, r: &Restore) -> Result<()> {
    let lp = ListParams::default().labels(&format!(
        "{RESTORE_LABEL}={}",
        restore_label(&r.namespace().unwrap_or_default(), &r.name_any())
    ));
    for ns in super::targets(r) {
        delete_labelled::<Pod>(ctx, &ns, &lp).await?;
        delete_labelled::<Secret>(ctx, &ns, &lp).await?;
    }
    Ok(())
}

/// Deletes the objects of kind `K` in `ns` that `lp` selects, one by one (the operator
/// may list and delete them, not delete collections of them).
async fn delete_labelled<K>(ctx: &Context, ns: &str, lp: &ListParams) -> Result<()>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let kind = K::kind(&());
    for o in api
        .list(lp)
        .await
        .kube_ctx(|| format!("listing the restore's {kind}s in {ns}"))?
    {
        match api.delete(&o.name_any(), &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(e).kube_ctx(|| format!("deleting {kind} {ns}/{}", o.name_any()));
            }
        }
    }
    Ok(())
}
