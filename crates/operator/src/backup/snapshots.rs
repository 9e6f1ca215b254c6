//! The Snapshots step: one VolumeSnapshot per PVC, or one VolumeGroupSnapshot per
//! consistency group (every PVC of the group at one instant), created while the
//! application is quiesced, then awaited until ready to use within a deadline. Names are
//! derived from the Backup and PVC (or group), so a step repeated after an operator
//! restart finds what it made instead of making more.

use std::collections::BTreeMap;
use std::time::Duration;

use coffer_api::{Backup, VolumePolicyKind, VolumeStatus};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

use crate::error::{Error, KubeContext, Result, is_conflict, is_not_found};
use crate::names::{BACKUP_LABEL, MANAGED_BY, object_name};

fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// VolumeSnapshot.
pub fn vs_ar() -> ApiResource {
    ar(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshot",
        "volumesnapshots",
    )
}
/// VolumeSnapshotContent.
pub fn vsc_ar() -> ApiResource {
    ar(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshotContent",
        "volumesnapshotcontents",
    )
}
/// VolumeSnapshotClass.
pub fn vsclass_ar() -> ApiResource {
    ar(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshotClass",
        "volumesnapshotclasses",
    )
}
/// VolumeGroupSnapshot.
pub fn vgs_ar() -> ApiResource {
    ar(
        "groupsnapshot.storage.k8s.io",
        "v1beta2",
        "VolumeGroupSnapshot",
        "volumegroupsnapshots",
    )
}
/// VolumeGroupSnapshotContent.
pub fn vgsc_ar() -> ApiResource {
    ar(
        "groupsnapshot.storage.k8s.io",
        "v1beta2",
        "VolumeGroupSnapshotContent",
        "volumegroupsnapshotcontents",
    )
}
/// VolumeGroupSnapshotClass.
pub fn vgsclass_ar() -> ApiResource {
    ar(
        "groupsnapshot.storage.k8s.io",
        "v1beta2",
        "VolumeGroupSnapshotClass",
        "volumegroupsnapshotclasses",
    )
}

fn labels(b: &Backup) -> Value {
    json!({BACKUP_LABEL: b.name_any(), MANAGED_BY.0: MANAGED_BY.1})
}

async fn create_if_absent(api: &Api<DynamicObject>, obj: Value, what: &str) -> Result<()> {
    let obj: DynamicObject =
        serde_json::from_value(obj).map_err(|e| Error::Failed(format!("{what}: {e}")))?;
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => Ok(()),
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(e).kube_ctx(|| format!("creating {what}")),
    }
}

/// Creates the snapshots of every volume (groups as one VolumeGroupSnapshot) and waits
/// until all are ready; fills `volume_snapshot` of each volume. Errors name the volume
/// and the reason the storage gave.
pub async fn take(
    client: &Client,
    b: &Backup,
    volumes: &mut [VolumeStatus],
    group_label: Option<&str>,
    deadline: Duration,
) -> Result<()> {
    let owner = b.controller_owner_ref(&()).map(|o| vec![o]);
    let mut groups: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (i, v) in volumes.iter().enumerate() {
        if !matches!(
            v.mode,
            VolumePolicyKind::Snapshot | VolumePolicyKind::SnapshotAndCopy
        ) {
            continue;
        }
        match &v.group {
            Some(g) => groups
                .entry((v.namespace.clone(), g.clone()))
                .or_default()
                .push(i),
            None => {
                let name = object_name(&[&b.name_any(), &v.pvc]);
                let api: Api<DynamicObject> =
                    Api::namespaced_with(client.clone(), &v.namespace, &vs_ar());
                create_if_absent(
                    &api,
                    json!({
                        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                        "metadata": {"name": name, "namespace": v.namespace, "labels": labels(b),
                                     "ownerReferences": owner},
                        "spec": {"volumeSnapshotClassName": v.snapshot_class,
                                 "source": {"persistentVolumeClaimName": v.pvc}},
                    }),
                    &format!("VolumeSnapshot {}/{name}", v.namespace),
                )
                .await?;
            }
        }
    }
    // One VolumeGroupSnapshot per (namespace, group): its selector is the group label's
    // value, which is what makes PVCs one group.
    let group_key = group_label.unwrap_or_default().to_string();
    for ((ns, g), members) in &groups {
        let name = object_name(&[&b.name_any(), "group", g]);
        let driver = volumes[members[0]].driver.clone().unwrap_or_default();
        let class = group_class(client, &driver).await?;
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &vgs_ar());
        create_if_absent(
            &api,
            json!({
                "apiVersion": "groupsnapshot.storage.k8s.io/v1beta2", "kind": "VolumeGroupSnapshot",
                "metadata": {"name": name, "namespace": ns, "labels": labels(b), "ownerReferences": owner},
                "spec": {"volumeGroupSnapshotClassName": class,
                         "source": {"selector": {"matchLabels": {group_key.clone(): g}}}},
            }),
            &format!("VolumeGroupSnapshot {ns}/{name}"),
        )
        .await?;
    }

    // Wait for every snapshot, then record names.
    let started = tokio::time::Instant::now();
    for ((ns, g), members) in &groups {
        let name = object_name(&[&b.name_any(), "group", g]);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &vgs_ar());
        wait_ready(&api, &name, "VolumeGroupSnapshot", deadline, started).await?;
        let by_pvc = group_members(client, ns, &name).await?;
        for &i in members {
            let v = &mut volumes[i];
            let Some(vs) = by_pvc.get(&v.pvc) else {
                return Err(Error::Failed(format!(
                    "VolumeGroupSnapshot {ns}/{name} holds no snapshot of PVC {}: the group's selector {group_key}={g} did not take it",
                    v.pvc
                )));
            };
            v.volume_snapshot = Some(vs.clone());
        }
    }
    for v in volumes.iter_mut().filter(|v| {
        v.group.is_none()
            && matches!(
                v.mode,
                VolumePolicyKind::Snapshot | VolumePolicyKind::SnapshotAndCopy
            )
    }) {
        let name = object_name(&[&b.name_any(), &v.pvc]);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &v.namespace, &vs_ar());
        wait_ready(&api, &name, "VolumeSnapshot", deadline, started).await?;
        v.volume_snapshot = Some(name);
    }
    Ok(())
}

/// The VolumeGroupSnapshotClass of `driver` (the default one, else the only one).
async fn group_class(client: &Client, driver: &str) -> Result<String> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &vgsclass_ar());
    let list = match api.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(e) if is_not_found(&e) => Vec::new(),
        Err(e) => return Err(e).kube_ctx(|| "listing VolumeGroupSnapshotClasses".into()),
    };
    let of_driver: Vec<&DynamicObject> = list
        .iter()
        .filter(|c| c.data["driver"].as_str() == Some(driver))
        .collect();
    let default = of_driver.iter().find(|c| {
        c.annotations()
            .get("groupsnapshot.storage.kubernetes.io/is-default-class")
            .is_some_and(|v| v == "true")
    });
    match (default, of_driver.len()) {
        (Some(c), _) => Ok(c.name_any()),
        (None, 1) => Ok(of_driver[0].name_any()),
        (None, 0) => Err(Error::Invalid(format!(
            "driver {driver} has no VolumeGroupSnapshotClass, so a consistency group cannot be snapshotted together: create one, or drop consistencyGroupLabel"
        ))),
        (None, n) => Err(Error::Invalid(format!(
            "driver {driver} has {n} VolumeGroupSnapshotClasses and none is the default"
        ))),
    }
}

/// Waits until the snapshot `name` is ready to use; its error, or the deadline, fails.
async fn wait_ready(
    api: &Api<DynamicObject>,
    name: &str,
    kind: &str,
    deadline: Duration,
    started: tokio::time::Instant,
) -> Result<()> {
    loop {
        let o = api
            .get_opt(name)
            .await
            .kube_ctx(|| format!("reading {kind} {name}"))?
            .ok_or_else(|| Error::Failed(format!("{kind} {name} was deleted while being taken")))?;
        let status = &o.data["status"];
        if status["readyToUse"].as_bool() == Some(true) {
            return Ok(());
        }
        if let Some(msg) = status["error"]["message"].as_str() {
            return Err(Error::Failed(format!("{kind} {name} failed: {msg}")));
        }
        if started.elapsed() >= deadline {
            return Err(Error::Timeout {
                what: format!("{kind} {name} to be ready to use"),
                after: deadline,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// PVC name -> VolumeSnapshot name, for the snapshots a VolumeGroupSnapshot made: each
/// snapshot's content handle matched to the group content's volume handle, and that to
/// the PVC's PV (how external-snapshotter records group members).
async fn group_members(client: &Client, ns: &str, group: &str) -> Result<BTreeMap<String, String>> {
    let vgs: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &vgs_ar());
    let g = vgs
        .get(group)
        .await
        .kube_ctx(|| format!("reading VolumeGroupSnapshot {ns}/{group}"))?;
    let uid = g.uid().unwrap_or_default();
    let content_name = g.data["status"]["boundVolumeGroupSnapshotContentName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let gc = Api::<DynamicObject>::all_with(client.clone(), &vgsc_ar())
        .get(&content_name)
        .await
        .kube_ctx(|| format!("reading VolumeGroupSnapshotContent {content_name}"))?;
    // snapshot handle -> volume handle
    let mut volume_of: BTreeMap<String, String> = BTreeMap::new();
    for info in gc.data["status"]["volumeSnapshotInfoList"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let (Some(s), Some(v)) = (
            info["snapshotHandle"].as_str(),
            info["volumeHandle"].as_str(),
        ) {
            volume_of.insert(s.to_string(), v.to_string());
        }
    }
    // volume handle -> PVC name
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let mut pvc_of: BTreeMap<String, String> = BTreeMap::new();
    for pvc in pvcs
        .list(&ListParams::default())
        .await
        .kube_ctx(|| format!("listing the PVCs of {ns}"))?
        .items
    {
        let Some(pv) = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()) else {
            continue;
        };
        if let Some(h) = pvs
            .get_opt(&pv)
            .await
            .kube_ctx(|| format!("reading PV {pv}"))?
            .and_then(|p| p.spec)
            .and_then(|s| s.csi)
            .map(|c| c.volume_handle)
        {
            pvc_of.insert(h, pvc.name_any());
        }
    }
    let snaps: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &vs_ar());
    let contents: Api<DynamicObject> = Api::all_with(client.clone(), &vsc_ar());
    let mut out = BTreeMap::new();
    for s in snaps
        .list(&ListParams::default())
        .await
        .kube_ctx(|| format!("listing the VolumeSnapshots of {ns}"))?
        .items
    {
        let owned = s.owner_references().iter().any(|o| o.uid == uid);
        let named = s.data["status"]["volumeGroupSnapshotName"].as_str() == Some(group);
        if !owned && !named {
            continue;
        }
        let content = s.data["status"]["boundVolumeSnapshotContentName"]
            .as_str()
            .or_else(|| s.data["spec"]["source"]["volumeSnapshotContentName"].as_str())
            .unwrap_or_default()
            .to_string();
        let Some(c) = contents
            .get_opt(&content)
            .await
            .kube_ctx(|| format!("reading VolumeSnapshotContent {content}"))?
        else {
            continue;
        };
        let handle = c.data["status"]["snapshotHandle"]
            .as_str()
            .or_else(|| c.data["spec"]["source"]["snapshotHandle"].as_str())
            .unwrap_or_default();
        if let Some(pvc) = volume_of.get(handle).and_then(|v| pvc_of.get(v)) {
            out.insert(pvc.clone(), s.name_any());
        }
    }
    Ok(out)
}

/// The CSI handle of VolumeSnapshot `ns/name` (its content's `snapshotHandle`), if it is
/// still there.
pub async fn handle_of(client: &Client, ns: &str, name: &str) -> Result<Option<String>> {
    let snaps: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &vs_ar());
    let Some(s) = snaps
        .get_opt(name)
        .await
        .kube_ctx(|| format!("reading VolumeSnapshot {ns}/{name}"))?
    else {
        return Ok(None);
    };
    let Some(content) = s.data["status"]["boundVolumeSnapshotContentName"].as_str() else {
        return Ok(None);
    };
    let c = Api::<DynamicObject>::all_with(client.clone(), &vsc_ar())
        .get_opt(content)
        .await
        .kube_ctx(|| format!("reading VolumeSnapshotContent {content}"))?;
    Ok(c.and_then(|c| {
        c.data["status"]["snapshotHandle"]
            .as_str()
            .map(str::to_string)
    }))
}

/// Deletes a VolumeSnapshot (absent is fine).
pub async fn delete_snapshot(client: &Client, ns: &str, name: &str) -> Result<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &vs_ar());
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e).kube_ctx(|| format!("deleting VolumeSnapshot {ns}/{name}")),
    }
}

/// Deletes a VolumeGroupSnapshot (absent is fine).
pub async fn delete_group(client: &Client, ns: &str, name: &str) -> Result<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &vgs_ar());
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e).kube_ctx(|| format!("deleting VolumeGroupSnapshot {ns}/{name}")),
    }
}
