//! VolumeGroupSnapshot for the simulated driver: every PVC matching the selector is
//! snapshotted at one instant (all processes of pods using any of them are stopped for
//! the copies), with a VolumeGroupSnapshotContent and one VolumeSnapshot plus
//! VolumeSnapshotContent per PVC, as the upstream group snapshot controller makes them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::snapshot::content_status;
use super::{
    ClaimVolume, Content, Storage, claim_volume, create_if_absent, finalizers_patch, find_class,
    jbool, jstr, run_controller, set_status_error, vgs_ar, vgsc_ar, vgsclass_ar, vs_ar, vsc_ar,
};

const VGS_FINALIZER: &str =
    "groupsnapshot.storage.kubernetes.io/volumegroupsnapshot-bound-protection";

pub(crate) async fn run_group_controller(st: Arc<Storage>) {
    run_controller(
        st,
        "volumegroupsnapshot",
        |st| {
            let api: Api<DynamicObject> = Api::all_with(st.client.clone(), &vgs_ar());
            Controller::new_with(api, watcher::Config::default(), vgs_ar())
        },
        reconcile,
    )
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
        set_status_error(
            &api,
            &name,
            "pre-provisioned VolumeGroupSnapshots are not supported by the simulated driver",
        )
        .await;
        return Ok(Action::await_change());
    }
    // Class: the named one or the driver's default.
    let class = find_class(
        &st.client,
        &vgsclass_ar(),
        jstr(&g.data, &["spec", "volumeGroupSnapshotClassName"]),
        "groupsnapshot.storage.kubernetes.io/is-default-class",
    )
    .await?;
    let Some(class) = class else {
        set_status_error(&api, &name, "VolumeGroupSnapshotClass not found").await;
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
        set_status_error(
            &api,
            &name,
            &format!("no PersistentVolumeClaim in {ns} matches selector {selector:?}"),
        )
        .await;
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    let mut items = Vec::new();
    let mut pvc_names = Vec::new();
    for pvc in &members {
        let pvc_name = pvc.metadata.name.clone().unwrap_or_default();
        let (handle, block, size) = match claim_volume(&st, &ns, &pvc_name).await? {
            ClaimVolume::Ours {
                handle,
                block,
                size,
            } => (handle, block, size),
            ClaimVolume::NotReady(msg) => {
                set_status_error(&api, &name, &msg).await;
                return Ok(Action::requeue(Duration::from_secs(1)));
            }
            ClaimVolume::Foreign => {
                let msg = format!(
                    "PersistentVolumeClaim {pvc_name} is not a {} volume",
                    crate::DRIVER
                );
                set_status_error(&api, &name, &msg).await;
                return Ok(Action::requeue(Duration::from_secs(5)));
            }
        };
        let snap = format!("snap-{}-{}", uid, short_hash(&handle));
        items.push((handle, snap, block, size));
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
        let content = Content {
            name: &vsc_name,
            ns: &ns,
            vs_name: &vs_name,
            vs_uid: None,
            source: json!({"snapshotHandle": meta.handle}),
            policy: &policy,
            class: None,
            block: *block,
        }
        .object()?;
        create_if_absent(&contents, &content).await?;
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
        create_if_absent(&snaps, &vs).await?;
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
    create_if_absent(&gcontents, &gc).await?;
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
