//! The snapshot controller and the csi-snapshotter sidecar, for the simulated driver:
//! VolumeSnapshot -> VolumeSnapshotContent (dynamic and pre-provisioned), readyToUse,
//! restoreSize, deletion policy and finalizers as upstream does them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow};
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::{
    ClaimVolume, Content, Storage, claim_volume, create_if_absent, finalizers_patch, find_class,
    format_quantity, jbool, jstr, run_controller, set_status_error, volume_of, vs_ar, vsc_ar,
    vsclass_ar,
};

pub(crate) const VS_FINALIZER: &str =
    "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection";
pub(crate) const VSC_FINALIZER: &str =
    "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection";

pub(crate) async fn run_snapshot_controller(st: Arc<Storage>) {
    run_controller(
        st,
        "volumesnapshot",
        |st| {
            let vs_api: Api<DynamicObject> = Api::all_with(st.client.clone(), &vs_ar());
            let vsc_api: Api<DynamicObject> = Api::all_with(st.client.clone(), &vsc_ar());
            Controller::new_with(vs_api, watcher::Config::default(), vs_ar()).watches_with(
                vsc_api,
                vsc_ar(),
                watcher::Config::default(),
                |content: DynamicObject| {
                    let name = jstr(&content.data, &["spec", "volumeSnapshotRef", "name"])?;
                    let ns = jstr(&content.data, &["spec", "volumeSnapshotRef", "namespace"])?;
                    Some(ObjectRef::new_with(name, vs_ar()).within(ns))
                },
            )
        },
        reconcile_vs,
    )
    .await
}

pub(crate) async fn run_content_controller(st: Arc<Storage>) {
    run_controller(
        st,
        "volumesnapshotcontent",
        |st| {
            let vsc_api: Api<DynamicObject> = Api::all_with(st.client.clone(), &vsc_ar());
            Controller::new_with(vsc_api, watcher::Config::default(), vsc_ar())
        },
        reconcile_content,
    )
    .await
}

fn rfc3339_from_nanos(n: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(n).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The named VolumeSnapshotClass or the driver's default: (name, deletionPolicy).
async fn snapshot_class(st: &Storage, name: Option<&str>) -> Result<(String, String)> {
    let c = find_class(
        &st.client,
        &vsclass_ar(),
        name,
        "snapshot.storage.kubernetes.io/is-default-class",
    )
    .await?
    .ok_or_else(|| {
        anyhow!(
            "VolumeSnapshotClass {} not found",
            name.unwrap_or("(default)")
        )
    })?;
    if jstr(&c.data, &["driver"]) != Some(crate::DRIVER) {
        return Err(anyhow!("not our driver"));
    }
    Ok((
        c.metadata.name.clone().unwrap_or_default(),
        jstr(&c.data, &["deletionPolicy"])
            .unwrap_or("Delete")
            .to_string(),
    ))
}

async fn reconcile_vs(vs: Arc<DynamicObject>, st: Arc<Storage>) -> Result<Action> {
    let ns = vs.metadata.namespace.clone().unwrap_or_default();
    let name = vs.metadata.name.clone().unwrap_or_default();
    let uid = vs.metadata.uid.clone().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(st.client.clone(), &ns, &vs_ar());
    let contents: Api<DynamicObject> = Api::all_with(st.client.clone(), &vsc_ar());
    let finalizers = vs.metadata.finalizers.clone().unwrap_or_default();
    let bound = jstr(&vs.data, &["status", "boundVolumeSnapshotContentName"]).map(str::to_string);
    if vs.metadata.deletion_timestamp.is_some() {
        if !finalizers.iter().any(|f| f == VS_FINALIZER) {
            return Ok(Action::await_change());
        }
        if let Some(cname) = &bound
            && let Some(c) = contents.get_opt(cname).await?
            && jstr(&c.data, &["spec", "deletionPolicy"]) == Some("Delete")
            && c.metadata.deletion_timestamp.is_none()
        {
            let _ = contents.delete(cname, &DeleteParams::default()).await;
        }
        if let Some(p) = finalizers_patch(
            &finalizers,
            None,
            &[
                VS_FINALIZER,
                "snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection",
            ],
        ) {
            api.patch(&name, &PatchParams::default(), &Patch::Merge(p))
                .await?;
        }
        return Ok(Action::await_change());
    }
    // Only snapshots for this driver: dynamic ones whose PVC is ours, or bound to our content.
    let pre = jstr(&vs.data, &["spec", "source", "volumeSnapshotContentName"]).map(str::to_string);
    let pvc_name =
        jstr(&vs.data, &["spec", "source", "persistentVolumeClaimName"]).map(str::to_string);
    let content_name = match (&pre, &pvc_name) {
        (Some(c), _) => c.clone(),
        (None, Some(pvc_name)) => {
            let cname = format!("snapcontent-{uid}");
            if contents.get_opt(&cname).await?.is_none() {
                let (handle, block) = match claim_volume(&st, &ns, pvc_name).await? {
                    ClaimVolume::Ours { handle, block, .. } => (handle, block),
                    ClaimVolume::Foreign => return Ok(Action::await_change()),
                    ClaimVolume::NotReady(msg) => {
                        set_status_error(&api, &name, &msg).await;
                        return Ok(Action::requeue(Duration::from_secs(1)));
                    }
                };
                let class_name = jstr(&vs.data, &["spec", "volumeSnapshotClassName"]);
                let (class, policy) = match snapshot_class(&st, class_name).await {
                    Ok(c) => c,
                    Err(e) => {
                        set_status_error(&api, &name, &format!("{e:#}")).await;
                        return Ok(Action::requeue(Duration::from_secs(2)));
                    }
                };
                ensure_finalizer(&api, &vs, &finalizers).await?;
                let content = Content {
                    name: &cname,
                    ns: &ns,
                    vs_name: &name,
                    vs_uid: Some(&uid),
                    source: json!({"volumeHandle": handle}),
                    policy: &policy,
                    class: Some(&class),
                    block,
                }
                .object()?;
                create_if_absent(&contents, &content).await?;
            }
            cname
        }
        _ => return Ok(Action::await_change()),
    };
    let Some(content) = contents.get_opt(&content_name).await? else {
        set_status_error(
            &api,
            &name,
            &format!("VolumeSnapshotContent {content_name} not found"),
        )
        .await;
        return Ok(Action::requeue(Duration::from_secs(2)));
    };
    if jstr(&content.data, &["spec", "driver"]) != Some(crate::DRIVER) {
        return Ok(Action::await_change());
    }
    ensure_finalizer(&api, &vs, &finalizers).await?;
    if pre.is_some() && jstr(&content.data, &["spec", "volumeSnapshotRef", "uid"]).is_none() {
        let p = json!({"spec": {"volumeSnapshotRef": {"uid": uid}}});
        contents
            .patch(&content_name, &PatchParams::default(), &Patch::Merge(p))
            .await?;
    }
    if !jbool(&content.data, &["status", "readyToUse"]) {
        if let Some(msg) = jstr(&content.data, &["status", "error", "message"]) {
            set_status_error(&api, &name, msg).await;
        }
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if jbool(&vs.data, &["status", "readyToUse"]) && bound.as_deref() == Some(content_name.as_str())
    {
        return Ok(Action::await_change());
    }
    let status = &content.data["status"];
    let size = status["restoreSize"].as_u64().unwrap_or(0);
    let created = status["creationTime"].as_i64().unwrap_or(0);
    let patch = json!({"status": {
        "boundVolumeSnapshotContentName": content_name,
        "creationTime": rfc3339_from_nanos(created),
        "readyToUse": true,
        "restoreSize": format_quantity(size),
        "error": null,
    }});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(Action::await_change())
}

async fn ensure_finalizer(
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    finalizers: &[String],
) -> Result<()> {
    if let Some(p) = finalizers_patch(finalizers, Some(VS_FINALIZER), &[]) {
        api.patch(
            obj.metadata.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(p),
        )
        .await?;
    }
    Ok(())
}

/// The content status for a snapshot.
pub(crate) fn content_status(meta: &super::SnapshotMeta, group_handle: Option<&str>) -> Value {
    let mut s = json!({
        "snapshotHandle": meta.handle,
        "readyToUse": true,
        "restoreSize": meta.size,
        "creationTime": meta.created,
    });
    if let Some(g) = group_handle {
        s["volumeGroupSnapshotHandle"] = json!(g);
    }
    s
}

async fn reconcile_content(c: Arc<DynamicObject>, st: Arc<Storage>) -> Result<Action> {
    if jstr(&c.data, &["spec", "driver"]) != Some(crate::DRIVER) {
        return Ok(Action::await_change());
    }
    let name = c.metadata.name.clone().unwrap_or_default();
    let api: Api<DynamicObject> = Api::all_with(st.client.clone(), &vsc_ar());
    let finalizers = c.metadata.finalizers.clone().unwrap_or_default();
    let policy = jstr(&c.data, &["spec", "deletionPolicy"])
        .unwrap_or("Delete")
        .to_string();
    let handle = jstr(&c.data, &["status", "snapshotHandle"])
        .or_else(|| jstr(&c.data, &["spec", "source", "snapshotHandle"]))
        .map(str::to_string);
    if c.metadata.deletion_timestamp.is_some() {
        if finalizers.iter().any(|f| f == VSC_FINALIZER) {
            if policy == "Delete"
                && let Some(h) = &handle
            {
                st.delete_snapshot(h);
            }
            if let Some(p) = finalizers_patch(&finalizers, None, &[VSC_FINALIZER]) {
                api.patch(&name, &PatchParams::default(), &Patch::Merge(p))
                    .await?;
            }
        }
        return Ok(Action::await_change());
    }
    if let Some(p) = finalizers_patch(&finalizers, Some(VSC_FINALIZER), &[]) {
        api.patch(&name, &PatchParams::default(), &Patch::Merge(p))
            .await?;
    }
    if jbool(&c.data, &["status", "readyToUse"]) {
        // The snapshot it was made for is gone: apply the deletion policy.
        let vs_name = jstr(&c.data, &["spec", "volumeSnapshotRef", "name"]).unwrap_or_default();
        let vs_ns = jstr(&c.data, &["spec", "volumeSnapshotRef", "namespace"]).unwrap_or_default();
        let vs_uid = jstr(&c.data, &["spec", "volumeSnapshotRef", "uid"]);
        if let Some(vs_uid) = vs_uid {
            let vs = Api::<DynamicObject>::namespaced_with(st.client.clone(), vs_ns, &vs_ar())
                .get_opt(vs_name)
                .await?;
            let gone = vs.is_none_or(|v| v.metadata.uid.as_deref() != Some(vs_uid));
            if gone && policy == "Delete" {
                let _ = api.delete(&name, &DeleteParams::default()).await;
            }
        }
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    if let Some(vol) = jstr(&c.data, &["spec", "source", "volumeHandle"]) {
        // Dynamic: take the snapshot now.
        let pspec = Api::<PersistentVolume>::all(st.client.clone())
            .get_opt(vol)
            .await?
            .and_then(|p| p.spec)
            .ok_or_else(|| anyhow!("source volume {vol} not found"))?;
        let Some(ClaimVolume::Ours { block, size, .. }) = volume_of(&pspec) else {
            return Err(anyhow!(
                "source volume {vol} is not a {} volume",
                crate::DRIVER
            ));
        };
        let snap = format!("snap-{}", c.metadata.uid.clone().unwrap_or_default());
        let metas = st
            .take_snapshots(&[(vol.to_string(), snap, block, size)])
            .await?;
        let status = content_status(&metas[0], None);
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await?;
    } else if let Some(h) = jstr(&c.data, &["spec", "source", "snapshotHandle"]) {
        // Pre-provisioned: the handle must name a snapshot of this driver.
        match st.snapshot_meta(h) {
            Ok(meta) => {
                let status = content_status(&meta, None);
                api.patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": status})),
                )
                .await?;
            }
            Err(e) => set_status_error(&api, &name, &format!("{e:#}")).await,
        }
    }
    Ok(Action::await_change())
}
