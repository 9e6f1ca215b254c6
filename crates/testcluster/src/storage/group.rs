//! VolumeGroupSnapshot for the simulated driver: every PVC matching the selector is
//! snapshotted at one instant (all processes of pods using any of them are stopped for
//! the copies), with a VolumeGroupSnapshotContent and one VolumeSnapshot plus
//! VolumeSnapshotContent per PVC, as the upstream group snapshot controller makes them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::snapshot::content_status;
use super::{
    ReconcileError, Storage, finalizers_patch, forever, jbool, jstr, parse_quantity, vgs_ar,
    vgsc_ar, vgsclass_ar, vs_ar, vsc_ar,
};

const VGS_FINALIZER: &str =
    "groupsnapshot.storage.kubernetes.io/volumegroupsnapshot-bound-protection";

pub(crate) async fn run_group_controller(st: Arc<Storage>) {
    forever("volumegroupsnapshot", || {
        let api: Api<DynamicObject> = Api::all_with(st.client.clone(), &vgs_ar());
        Controller::new_with(api, watcher::Config::default(), vgs_ar())
            .run(
                |g, st| async move { reconcile(g, st).await.map_err(ReconcileError::from) },
                |_, e, _| {
                    tracing::debug!("group snapshot controller: {e}");
                    Action::requeue(Duration::from_secs(1))
                },
                st.clone(),
            )
            .for_each(|_| async {})
    })
    .await
}

/// A label selector (matchLabels and matchExpressions) as a query string.
fn selector_string(sel: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(m) = sel.get("matchLabels").and_then(|m| m.as_object()) {
        for (k, v) in m {
            parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    for e in sel
        .get("matchExpressions")
        .and_then(|m| m.as_array())
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .collect();
        match e["operator"].as_str().unwrap_or_default() {
            "In" => parts.push(format!("{key} in ({})", values.join(","))),
            "NotIn" => parts.push(format!("{key} notin ({})", values.join(","))),
            "Exists" => parts.push(key.to_string()),
            "DoesNotExist" => parts.push(format!("!{key}")),
            _ => {}
        }
    }
    parts.join(",")
}

fn short_hash(s: &str) -> String {
    // FNV-1a, 64 bit.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

async fn set_error(api: &Api<DynamicObject>, name: &str, msg: &str) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let patch = json!({"status": {"readyToUse": false, "error": {"message": msg, "time": now}}});
    let _ = api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await;
}

async fn reconcile(g: Arc<DynamicObject>, st: Arc<Storage>) -> Result<Action> {
    let ns = g.metadata.namespace.clone().unwrap_or_default();
    let name = g.metadata.name.clone().unwrap_or_default();
    let uid = g.metadata.uid.clone().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(st.client.clone(), &ns, &vgs_ar());
    let gcontents: Api<DynamicObject> = Api::all_with(st.client.clone(), &vgsc_ar());
    let finalizers = g.metadata.finalizers.clone().unwrap_or_default();
    let content_name = format!("groupsnapcontent-{uid}");
    if g.metadata.deletion_timestamp.is_some() {
        if finalizers.iter().any(|f| f == VGS_FINALIZER) {
            if let Some(c) = gcontents.get_opt(&content_name).await?
                && jstr(&c.data, &["spec", "deletionPolicy"]) == Some("Delete")
            {
                let _ = gcontents
                    .delete(&content_name, &DeleteParams::default())
                    .await;
            }
            let snaps: Api<DynamicObject> = Api::namespaced_with(st.client.clone(), &ns, &vs_ar());
            let lp = ListParams::default().labels(&format!(
                "groupsnapshot.storage.k8s.io/volume-group-snapshot-uid={uid}"
            ));
            for s in snaps.list(&lp).await?.items {
                let _ = snaps
                    .delete(
                        s.metadata.name.as_deref().unwrap_or_default(),
                        &DeleteParams::default(),
                    )
                    .await;
            }
            if let Some(p) = finalizers_patch(&finalizers, None, &[VGS_FINALIZER]) {
                api.patch(&name, &PatchParams::default(), &Patch::Merge(p))
                    .await?;
            }
        }
        return Ok(Action::await_change());
    }
    if jbool(&g.data, &["status", "readyToUse"]) {
        return Ok(Action::await_change());
    }
    if jstr(
        &g.data,
        &["spec", "source", "volumeGroupSnapshotContentName"],
    )
    .is_some()
    {
        set_error(
            &api,
            &name,
            "pre-provisioned VolumeGroupSnapshots are not supported by the simulated driver",
        )
        .await;
        return Ok(Action::await_change());
    }
    // Class: the named one or the driver's default.
    let classes: Api<DynamicObject> = Api::all_with(st.client.clone(), &vgsclass_ar());
    let class_name = jstr(&g.data, &["spec", "volumeGroupSnapshotClassName"]).map(str::to_string);
    let class = classes
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .find(|c| match &class_name {
            Some(n) => c.metadata.name.as_ref() == Some(n),
            None => {
                jstr(&c.data, &["driver"]) == Some(crate::DRIVER)
                    && c.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get("groupsnapshot.storage.kubernetes.io/is-default-class"))
                        .is_some_and(|v| v == "true")
            }
        });
    let Some(class) = class else {
        set_error(&api, &name, "VolumeGroupSnapshotClass not found").await;
        return Ok(Action::requeue(Duration::from_secs(2)));
    };
    if jstr(&class.data, &["driver"]) != Some(crate::DRIVER) {
        return Ok(Action::await_change());
    }
    let policy = jstr(&class.data, &["deletionPolicy"])
        .unwrap_or("Delete")
        .to_string();
    let class_name = class.metadata.name.clone().unwrap_or_default();
    if let Some(p) = finalizers_patch(&finalizers, Some(VGS_FINALIZER), &[]) {
        api.patch(&name, &PatchParams::default(), &Patch::Merge(p))
            .await?;
    }
    // Members.
    let selector = selector_string(&g.data["spec"]["source"]["selector"]);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(st.client.clone(), &ns);
    let members = pvcs
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    if members.is_empty() {
        set_error(
            &api,
            &name,
            &format!("no PersistentVolumeClaim in {ns} matches selector {selector:?}"),
        )
        .await;
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    let pvs: Api<PersistentVolume> = Api::all(st.client.clone());
    let mut items = Vec::new();
    let mut pvc_names = Vec::new();
    for pvc in &members {
        let pvc_name = pvc.metadata.name.clone().unwrap_or_default();
        let Some(pv_name) = pvc
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .filter(|s| !s.is_empty())
        else {
            set_error(
                &api,
                &name,
                &format!("PersistentVolumeClaim {pvc_name} is not bound"),
            )
            .await;
            return Ok(Action::requeue(Duration::from_secs(1)));
        };
        let pspec = pvs.get(&pv_name).await?.spec.unwrap_or_default();
        let Some(csi) = pspec.csi.as_ref().filter(|c| c.driver == crate::DRIVER) else {
            set_error(
                &api,
                &name,
                &format!(
                    "PersistentVolumeClaim {pvc_name} is not a {} volume",
                    crate::DRIVER
                ),
            )
            .await;
            return Ok(Action::requeue(Duration::from_secs(5)));
        };
        let block = pspec.volume_mode.as_deref() == Some("Block");
        let size = pspec
            .capacity
            .as_ref()
            .and_then(|c| c.get("storage"))
            .map(|q| parse_quantity(&q.0))
            .transpose()?
            .unwrap_or(0);
        let snap = format!("snap-{}-{}", uid, short_hash(&csi.volume_handle));
        items.push((csi.volume_handle.clone(), snap, block, size));
        pvc_names.push((pvc_name, block));
    }
    let group_handle = format!("group-{uid}");
    let metas = st.take_snapshots(&items).await?;
    let created = metas.first().map(|m| m.created).unwrap_or(0);
    let contents: Api<DynamicObject> = Api::all_with(st.client.clone(), &vsc_ar());
    let snaps: Api<DynamicObject> = Api::namespaced_with(st.client.clone(), &ns, &vs_ar());
    let mut infos = Vec::new();
    for (meta, (pvc_name, block)) in metas.iter().zip(&pvc_names) {
        let hash = short_hash(&format!("{uid}/{}", meta.source_volume));
        let vs_name = format!("snapshot-{hash}");
        let vsc_name = format!("snapcontent-{hash}");
        let content: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
            "metadata": {"name": vsc_name},
            "spec": {
                "volumeSnapshotRef": {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot", "name": vs_name, "namespace": ns},
                "source": {"snapshotHandle": meta.handle},
                "driver": crate::DRIVER,
                "deletionPolicy": policy,
                "sourceVolumeMode": if *block { "Block" } else { "Filesystem" },
            },
        }))?;
        match contents.create(&PostParams::default(), &content).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        let status = content_status(meta, Some(&group_handle));
        contents
            .patch_status(
                &vsc_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await?;
        let vs: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": vs_name, "namespace": ns,
                "labels": {"groupsnapshot.storage.k8s.io/volume-group-snapshot-uid": uid},
                "annotations": {"coffer.dev/source-pvc": pvc_name},
                "ownerReferences": [{"apiVersion": "groupsnapshot.storage.k8s.io/v1beta2", "kind": "VolumeGroupSnapshot",
                                     "name": name, "uid": uid}]},
            "spec": {"source": {"volumeSnapshotContentName": vsc_name}},
        }))?;
        match snaps.create(&PostParams::default(), &vs).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        snaps
            .patch_status(
                &vs_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"volumeGroupSnapshotName": name}})),
            )
            .await?;
        infos.push(json!({"volumeHandle": meta.source_volume, "snapshotHandle": meta.handle, "readyToUse": true,
                          "restoreSize": meta.size, "creationTime": meta.created}));
    }
    let gc: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "groupsnapshot.storage.k8s.io/v1beta2", "kind": "VolumeGroupSnapshotContent",
        "metadata": {"name": content_name},
        "spec": {
            "deletionPolicy": policy,
            "driver": crate::DRIVER,
            "source": {"volumeHandles": items.iter().map(|i| i.0.clone()).collect::<Vec<_>>()},
            "volumeGroupSnapshotClassName": class_name,
            "volumeGroupSnapshotRef": {"apiVersion": "groupsnapshot.storage.k8s.io/v1beta2", "kind": "VolumeGroupSnapshot",
                                       "name": name, "namespace": ns, "uid": uid},
        },
    }))?;
    match gcontents.create(&PostParams::default(), &gc).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    let created_s = chrono::DateTime::from_timestamp_nanos(created)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    gcontents
        .patch_status(
            &content_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"volumeGroupSnapshotHandle": group_handle, "creationTime": created_s,
                                             "readyToUse": true, "volumeSnapshotInfoList": infos}})),
        )
        .await?;
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"boundVolumeGroupSnapshotContentName": content_name, "creationTime": created_s,
                                         "readyToUse": true, "error": null}})),
    )
    .await?;
    Ok(Action::await_change())
}
