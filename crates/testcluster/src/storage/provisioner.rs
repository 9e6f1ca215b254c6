//! The external-provisioner's part: PVCs of a `coffer-sim` class get a PV (created
//! empty, or as a copy of a VolumeSnapshot or PVC named in dataSource), which the real
//! PV controller binds; Released PVs with reclaim policy Delete are deleted with their
//! data. A dataSourceRef to any other kind is left to a volume populator.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

use super::{
    PV_FINALIZER, Storage, create_if_absent, finalizers_patch, jbool, jstr, parse_quantity,
    pv_capacity, run_controller, vs_ar, vsc_ar,
};

pub(crate) async fn run_pvc_controller(st: Arc<Storage>) {
    run_controller(
        st,
        "provisioner",
        |st| Controller::new(Api::all(st.client.clone()), watcher::Config::default()),
        reconcile_pvc,
    )
    .await
}

pub(crate) async fn run_pv_controller(st: Arc<Storage>) {
    run_controller(
        st,
        "pv deleter",
        |st| Controller::new(Api::all(st.client.clone()), watcher::Config::default()),
        reconcile_pv,
    )
    .await
}

enum Source {
    Empty,
    Snapshot(String),
    Volume(String),
}

async fn reconcile_pvc(pvc: Arc<PersistentVolumeClaim>, st: Arc<Storage>) -> Result<Action> {
    if pvc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = pvc.metadata.namespace.clone().unwrap_or_default();
    let name = pvc.metadata.name.clone().unwrap_or_default();
    let uid = pvc.metadata.uid.clone().unwrap_or_default();
    let spec = pvc.spec.clone().unwrap_or_default();
    let Some(class_name) = spec.storage_class_name.clone().filter(|s| !s.is_empty()) else {
        return Ok(Action::await_change());
    };
    let Some(class) = Api::<StorageClass>::all(st.client.clone())
        .get_opt(&class_name)
        .await?
    else {
        return Ok(Action::await_change());
    };
    if class.provisioner != crate::DRIVER {
        return Ok(Action::await_change());
    }
    let requested = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| parse_quantity(&q.0))
        .transpose()?
        .unwrap_or(1 << 30);
    let block = spec.volume_mode.as_deref() == Some("Block");
    if let Some(pv_name) = spec.volume_name.clone().filter(|s| !s.is_empty()) {
        expand_if_needed(
            &st,
            &pvc,
            &pv_name,
            requested,
            block,
            class.allow_volume_expansion.unwrap_or(false),
        )
        .await?;
        return Ok(Action::await_change());
    }
    if class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")
        && !pvc
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("volume.kubernetes.io/selected-node"))
    {
        return Ok(Action::await_change());
    }
    let (group, kind, src_name, src_ns) = if let Some(r) = &spec.data_source_ref {
        (
            r.api_group.clone().unwrap_or_default(),
            r.kind.clone(),
            r.name.clone(),
            r.namespace.clone().unwrap_or(ns.clone()),
        )
    } else if let Some(r) = &spec.data_source {
        (
            r.api_group.clone().unwrap_or_default(),
            r.kind.clone(),
            r.name.clone(),
            ns.clone(),
        )
    } else {
        (String::new(), String::new(), String::new(), ns.clone())
    };
    let mut size = requested;
    let source = match (group.as_str(), kind.as_str()) {
        ("", "") => Source::Empty,
        ("snapshot.storage.k8s.io", "VolumeSnapshot") => {
            let vs = Api::<DynamicObject>::namespaced_with(st.client.clone(), &src_ns, &vs_ar())
                .get_opt(&src_name)
                .await?;
            let Some(vs) = vs else {
                return Ok(Action::requeue(Duration::from_secs(1)));
            };
            let (Some(content), true) = (
                jstr(&vs.data, &["status", "boundVolumeSnapshotContentName"]),
                jbool(&vs.data, &["status", "readyToUse"]),
            ) else {
                return Ok(Action::requeue(Duration::from_millis(500)));
            };
            let content = Api::<DynamicObject>::all_with(st.client.clone(), &vsc_ar())
                .get(content)
                .await?;
            let handle = jstr(&content.data, &["status", "snapshotHandle"])
                .ok_or_else(|| anyhow!("snapshot content has no handle"))?;
            let meta = st.snapshot_meta(handle)?;
            if meta.block != block {
                return Err(anyhow!(
                    "PVC {ns}/{name}: volumeMode does not match the snapshot's"
                ));
            }
            size = size.max(meta.size);
            Source::Snapshot(handle.to_string())
        }
        ("", "PersistentVolumeClaim") => {
            let src = Api::<PersistentVolumeClaim>::namespaced(st.client.clone(), &src_ns)
                .get(&src_name)
                .await?;
            let Some(pv_name) = src
                .spec
                .and_then(|s| s.volume_name)
                .filter(|s| !s.is_empty())
            else {
                return Ok(Action::requeue(Duration::from_secs(1)));
            };
            let pv = Api::<PersistentVolume>::all(st.client.clone())
                .get(&pv_name)
                .await?;
            let csi = pv
                .spec
                .and_then(|s| s.csi)
                .ok_or_else(|| anyhow!("source PV {pv_name} is not a CSI volume"))?;
            if csi.driver != crate::DRIVER {
                return Err(anyhow!(
                    "source PV {pv_name} belongs to driver {}",
                    csi.driver
                ));
            }
            Source::Volume(csi.volume_handle)
        }
        // Any other kind: left for a volume populator (KEP-1495).
        _ => return Ok(Action::await_change()),
    };
    let pv_name = format!("pvc-{uid}");
    let pv_api: Api<PersistentVolume> = Api::all(st.client.clone());
    if pv_api.get_opt(&pv_name).await?.is_some() {
        return Ok(Action::await_change());
    }
    let path = st.volume_path(&pv_name, block);
    st.delete_volume(&pv_name);
    match &source {
        Source::Empty => {
            st.create_volume(&pv_name, block, size).await?;
        }
        Source::Snapshot(handle) => {
            let meta = st.snapshot_meta(handle)?;
            Storage::copy_data(&st.snapshot_data(&meta), &path, block).await?;
            st.create_volume(&pv_name, block, size).await?;
        }
        Source::Volume(handle) => {
            Storage::copy_data(&st.volume_path(handle, block), &path, block).await?;
            st.create_volume(&pv_name, block, size).await?;
        }
    }
    let capacity = super::format_quantity(size);
    let pv: PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": crate::DRIVER},
                     "finalizers": [PV_FINALIZER]},
        "spec": {
            "capacity": {"storage": capacity},
            "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns, "name": name, "uid": uid},
            "persistentVolumeReclaimPolicy": class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
            "storageClassName": class_name,
            "volumeMode": if block { "Block" } else { "Filesystem" },
            "csi": {"driver": crate::DRIVER, "volumeHandle": pv_name,
                    "volumeAttributes": {"storage.kubernetes.io/csiProvisionerIdentity": "coffer-sim"}},
        },
    }))?;
    create_if_absent(&pv_api, &pv)
        .await
        .context("creating PV")?;
    tracing::debug!(pvc = %format!("{ns}/{name}"), pv = %pv_name, "provisioned");
    Ok(Action::await_change())
}

async fn expand_if_needed(
    st: &Storage,
    pvc: &PersistentVolumeClaim,
    pv_name: &str,
    requested: u64,
    block: bool,
    allowed: bool,
) -> Result<()> {
    if !allowed || pvc.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
        return Ok(());
    }
    let pv_api: Api<PersistentVolume> = Api::all(st.client.clone());
    let Some(pv) = pv_api.get_opt(pv_name).await? else {
        return Ok(());
    };
    let Some(pspec) = pv.spec.as_ref() else {
        return Ok(());
    };
    if pspec.csi.as_ref().map(|c| c.driver.as_str()) != Some(crate::DRIVER) {
        return Ok(());
    }
    let current = pv_capacity(pspec)?;
    if requested <= current {
        return Ok(());
    }
    let handle = pspec
        .csi
        .as_ref()
        .map(|c| c.volume_handle.clone())
        .unwrap_or_default();
    st.create_volume(&handle, block, requested).await?;
    let q = super::format_quantity(requested);
    pv_api
        .patch(
            pv_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"capacity": {"storage": q}}})),
        )
        .await?;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(
        st.client.clone(),
        pvc.metadata.namespace.as_deref().unwrap_or_default(),
    );
    pvcs.patch_status(
        pvc.metadata.name.as_deref().unwrap_or_default(),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"capacity": {"storage": q}}})),
    )
    .await?;
    Ok(())
}

async fn reconcile_pv(pv: Arc<PersistentVolume>, st: Arc<Storage>) -> Result<Action> {
    let provisioned_by = pv
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("pv.kubernetes.io/provisioned-by"))
        .map(|s| s.as_str());
    if provisioned_by != Some(crate::DRIVER) {
        return Ok(Action::await_change());
    }
    let name = pv.metadata.name.clone().unwrap_or_default();
    let spec = pv.spec.clone().unwrap_or_default();
    let handle = spec
        .csi
        .as_ref()
        .map(|c| c.volume_handle.clone())
        .unwrap_or_default();
    let policy = spec
        .persistent_volume_reclaim_policy
        .clone()
        .unwrap_or_else(|| "Delete".into());
    let phase = pv
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let api: Api<PersistentVolume> = Api::all(st.client.clone());
    let finalizers = pv.metadata.finalizers.clone().unwrap_or_default();
    if pv.metadata.deletion_timestamp.is_some() {
        if finalizers.iter().any(|f| f == PV_FINALIZER) && phase != "Bound" {
            if policy == "Delete" {
                st.delete_volume(&handle);
            }
            if let Some(p) = finalizers_patch(&finalizers, None, &[PV_FINALIZER]) {
                api.patch(&name, &PatchParams::default(), &Patch::Merge(p))
                    .await?;
            }
        }
        return Ok(Action::await_change());
    }
    if phase == "Released" && policy == "Delete" {
        st.delete_volume(&handle);
        if let Some(p) = finalizers_patch(&finalizers, None, &[PV_FINALIZER]) {
            api.patch(&name, &PatchParams::default(), &Patch::Merge(p))
                .await?;
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::await_change())
}
