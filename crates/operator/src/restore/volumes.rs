//! The `Volumes` step and the restore's cleanup: each restored PVC's filling followed
//! through what the volume populator writes on it (an annotation with the outcome, or
//! why it gave up) and its binding, with a deadline; and, when a restore stops early,
//! the PVCs it made that are not yet filled and its VolumeBackups removed.

use coffer_api::{
    ItemKind, Restore, RestoreStatus, VolumeBackup, VolumeRestorePhase, VolumeRestoreStatus,
};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};

use super::{RESTORE_LABEL, item, restore_label, targets};
use crate::context::Context;
use crate::error::{KubeContext, Result, is_not_found};
use crate::populator::{FAILED_ANNOTATION, POPULATED_ANNOTATION, has_volume, prime_names};

/// Updates each unfinished volume of `st`; returns whether every volume has ended.
pub async fn observe(ctx: &Context, st: &mut RestoreStatus) -> Result<bool> {
    let started = st
        .start_time
        .as_ref()
        .map(|t| crate::time::age(&t.0))
        .unwrap_or_default();
    let mut all_done = true;
    let mut failed = Vec::new();
    for v in st.volumes.iter_mut() {
        if !matches!(
            v.phase,
            Some(VolumeRestorePhase::Pending) | Some(VolumeRestorePhase::InProgress)
        ) {
            continue;
        }
        observe_one(ctx, v).await?;
        if v.phase == Some(VolumeRestorePhase::Failed) {
            failed.push(v.clone());
        } else if v.phase != Some(VolumeRestorePhase::Completed) {
            if started > ctx.config.deadlines.populate {
                v.phase = Some(VolumeRestorePhase::Failed);
                v.message = Some(format!(
                    "not filled within {}s: see `kubectl describe pvc {} -n {}` for the populator's events",
                    ctx.config.deadlines.populate.as_secs(),
                    v.pvc,
                    v.namespace
                ));
                failed.push(v.clone());
            } else {
                all_done = false;
            }
        }
    }
    for v in failed {
        st.items.push(item(
            ItemKind::Volume,
            &v.pvc,
            Some(&v.namespace),
            v.message.clone().unwrap_or_else(|| "failed".into()),
        ));
    }
    Ok(all_done)
}

async fn observe_one(ctx: &Context, v: &mut VolumeRestoreStatus) -> Result<()> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &v.namespace);
    let Some(p) = pvcs
        .get_opt(&v.pvc)
        .await
        .kube_ctx(|| format!("reading PVC {}/{}", v.namespace, v.pvc))?
    else {
        v.phase = Some(VolumeRestorePhase::Failed);
        v.message = Some("the PVC was deleted before it was filled".into());
        return Ok(());
    };
    let annotations = p.metadata.annotations.clone().unwrap_or_default();
    if let Some(why) = annotations.get(FAILED_ANNOTATION) {
        v.phase = Some(VolumeRestorePhase::Failed);
        v.message = Some(why.clone());
        return Ok(());
    }
    let bound = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    if let (true, Some(outcome)) = (bound, annotations.get(POPULATED_ANNOTATION)) {
        let o: serde_json::Value = serde_json::from_str(outcome).unwrap_or_default();
        v.phase = Some(VolumeRestorePhase::Completed);
        v.bytes_written = o["bytesWritten"].as_u64().unwrap_or_default();
        v.duration_seconds = o["durationSeconds"].as_f64();
        v.message = None;
        return Ok(());
    }
    let pod = prime_names(&p.uid().unwrap_or_default()).pod;
    let running = Api::<Pod>::namespaced(ctx.client.clone(), &v.namespace)
        .get_opt(&pod)
        .await
        .kube_ctx(|| format!("reading pod {}/{pod}", v.namespace))?
        .is_some();
    if running {
        v.phase = Some(VolumeRestorePhase::InProgress);
    }
    Ok(())
}

fn selector(r: &Restore) -> ListParams {
    ListParams::default().labels(&format!(
        "{RESTORE_LABEL}={}",
        restore_label(&r.namespace().unwrap_or_default(), &r.name_any())
    ))
}

/// Deletes the VolumeBackups restore `r` made (its PVCs are filled, or will not be).
pub async fn remove_volume_backups(ctx: &Context, r: &Restore) -> Result<()> {
    for ns in targets(r) {
        let api: Api<VolumeBackup> = Api::namespaced(ctx.client.clone(), &ns);
        match api
            .delete_collection(&DeleteParams::background(), &selector(r))
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(e).kube_ctx(|| format!("deleting the restore's VolumeBackups in {ns}"));
            }
        }
    }
    Ok(())
}

/// What a stopped restore leaves: the PVCs it made that are not bound yet are deleted
/// (their prime PVCs, mover pods and Secrets are owned by them and go too), and its
/// VolumeBackups.
pub async fn remove_unfinished(ctx: &Context, r: &Restore) -> Result<()> {
    for ns in targets(r) {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
        let list = api
            .list(&selector(r))
            .await
            .kube_ctx(|| format!("listing the restore's PVCs in {ns}"))?;
        for p in list {
            if has_volume(&p) {
                continue;
            }
            match api.delete(&p.name_any(), &DeleteParams::background()).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    return Err(e).kube_ctx(|| format!("deleting PVC {ns}/{}", p.name_any()));
                }
            }
        }
    }
    remove_volume_backups(ctx, r).await
}
