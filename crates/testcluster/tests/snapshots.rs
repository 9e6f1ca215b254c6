//! Simulated CSI storage through kube-rs: VolumeSnapshot and restore, group snapshot
//! consistency, SnapshotMetadata changed blocks.

mod common;

use std::time::Duration;

use common::{obj, wait_phase};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{
    Api, ApiResource, AttachParams, DeleteParams, DynamicObject, GroupVersionKind, PostParams,
};
use serde_json::json;
use tokio::io::AsyncReadExt;

fn ar(g: &str, v: &str, k: &str, p: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, k), p)
}

async fn exec(pods: &Api<Pod>, pod: &str, cmd: &str) -> String {
    let mut p = pods
        .exec(
            pod,
            ["sh", "-c", cmd],
            &AttachParams::default().stderr(false),
        )
        .await
        .unwrap();
    let mut out = String::new();
    p.stdout().unwrap().read_to_string(&mut out).await.unwrap();
    let st = p.take_status().unwrap().await.unwrap();
    assert_eq!(st.status.as_deref(), Some("Success"), "{cmd}: {st:?}");
    out
}

/// Whether `cmd` exits 0 in the pod.
async fn exec_succeeds(pods: &Api<Pod>, pod: &str, cmd: &str) -> bool {
    let Ok(mut p) = pods
        .exec(
            pod,
            ["sh", "-c", cmd],
            &AttachParams::default().stderr(false),
        )
        .await
    else {
        return false;
    };
    let mut out = String::new();
    if let Some(mut stdout) = p.stdout() {
        let _ = stdout.read_to_string(&mut out).await;
    }
    let Some(status) = p.take_status() else {
        return false;
    };
    status
        .await
        .is_some_and(|s| s.status.as_deref() == Some("Success"))
}

async fn wait_ready(api: &Api<DynamicObject>, name: &str) -> DynamicObject {
    for _ in 0..300 {
        if let Some(o) = api.get_opt(name).await.unwrap()
            && o.data["status"]["readyToUse"].as_bool() == Some(true)
        {
            return o;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{name} not ready: {:?}",
        api.get_opt(name).await.unwrap().map(|o| o.data)
    );
}

/// The VolumeSnapshotContent a ready VolumeSnapshot is bound to, and its snapshot handle.
async fn bound_content(contents: &Api<DynamicObject>, vs: &DynamicObject) -> (String, String) {
    let name = vs.data["status"]["boundVolumeSnapshotContentName"]
        .as_str()
        .unwrap()
        .to_string();
    let content = contents.get(&name).await.unwrap();
    let handle = content.data["status"]["snapshotHandle"].as_str().unwrap();
    (name, handle.to_string())
}

async fn wait_bound(pvcs: &Api<PersistentVolumeClaim>, name: &str) -> PersistentVolumeClaim {
    for _ in 0..300 {
        let p = pvcs.get(name).await.unwrap();
        if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound") {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("PVC {name} not bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_restore_group_snapshot_and_changed_blocks() {
    let (_dir, cluster) = common::start().await;
    let client = cluster.client();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let snaps: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ar(
            "snapshot.storage.k8s.io",
            "v1",
            "VolumeSnapshot",
            "volumesnapshots",
        ),
    );
    let contents: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ar(
            "snapshot.storage.k8s.io",
            "v1",
            "VolumeSnapshotContent",
            "volumesnapshotcontents",
        ),
    );

    // Two filesystem PVCs written by one running pod, in lock step: a then b.
    for n in ["a", "b"] {
        pvcs.create(&PostParams::default(), &obj(json!({
            "metadata": {"name": n, "labels": {"app": "pair"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}},
        })))
        .await
        .unwrap();
    }
    pvcs.create(&PostParams::default(), &obj(json!({
        "metadata": {"name": "blk"},
        "spec": {"accessModes": ["ReadWriteOnce"], "volumeMode": "Block", "storageClassName": "coffer-sim-wffc",
                 "resources": {"requests": {"storage": "1Mi"}}},
    })))
    .await
    .unwrap();
    pods.create(&PostParams::default(), &obj(json!({
        "metadata": {"name": "app"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "c", "image": "x",
            "command": ["sh", "-c", "echo base > /a/file; i=0; while true; do i=$((i+1)); echo $i > /a/t; mv /a/t /a/n; echo $i > /b/t; mv /b/t /b/n; done"],
            "volumeMounts": [{"name": "a", "mountPath": "/a"}, {"name": "b", "mountPath": "/b"}],
            "volumeDevices": [{"name": "blk", "devicePath": "/dev/xvdb"}],
        }],
        "volumes": [{"name": "a", "persistentVolumeClaim": {"claimName": "a"}},
                    {"name": "b", "persistentVolumeClaim": {"claimName": "b"}},
                    {"name": "blk", "persistentVolumeClaim": {"claimName": "blk"}}]},
    })))
    .await
    .unwrap();
    wait_phase(&pods, "app", &["Running"], 60).await;
    // WaitForFirstConsumer PVC got bound when the pod was scheduled.
    wait_bound(&pvcs, "blk").await;

    // VolumeSnapshot of a, then a PVC restored from it holds the data (once the app has
    // written it and is in its loop).
    until("the app wrote /a/file and started its loop", 30, || async {
        exec_succeeds(
            &pods,
            "app",
            "test -s /a/file && test -s /a/n && test -s /b/n",
        )
        .await
        .then_some(())
    })
    .await;
    snaps.create(&PostParams::default(), &obj(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "snap-a"}, "spec": {"source": {"persistentVolumeClaimName": "a"}},
    })))
    .await
    .unwrap();
    let vs = wait_ready(&snaps, "snap-a").await;
    assert_eq!(vs.data["status"]["restoreSize"], "16Mi");
    let content_name = vs.data["status"]["boundVolumeSnapshotContentName"]
        .as_str()
        .unwrap()
        .to_string();
    pvcs.create(&PostParams::default(), &obj(json!({
        "metadata": {"name": "restored"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}},
                 "dataSource": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "snap-a"}},
    })))
    .await
    .unwrap();
    assert_eq!(
        common::pod_output(&pods, "reader", "restored", &["cat", "/data/file"]).await,
        "base\n"
    );

    // A group snapshot of a and b while the pod writes: consistent (b <= a <= b+1).
    let groups: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ar(
            "groupsnapshot.storage.k8s.io",
            "v1beta2",
            "VolumeGroupSnapshot",
            "volumegroupsnapshots",
        ),
    );
    groups.create(&PostParams::default(), &obj(json!({
        "apiVersion": "groupsnapshot.storage.k8s.io/v1beta2", "kind": "VolumeGroupSnapshot",
        "metadata": {"name": "pair"}, "spec": {"source": {"selector": {"matchLabels": {"app": "pair"}}}},
    })))
    .await
    .unwrap();
    wait_ready(&groups, "pair").await;
    let members = snaps.list(&Default::default()).await.unwrap().items;
    let members: Vec<_> = members
        .into_iter()
        .filter(|s| s.data["status"]["volumeGroupSnapshotName"] == "pair")
        .collect();
    assert_eq!(members.len(), 2);
    let mut values = std::collections::HashMap::new();
    for m in &members {
        let m = wait_ready(&snaps, m.metadata.name.as_deref().unwrap()).await;
        let (_, handle) = bound_content(&contents, &m).await;
        let meta = cluster.storage().snapshot_meta(&handle).unwrap();
        let n: u64 = std::fs::read_to_string(cluster.storage().snapshot_data(&meta).join("n"))
            .unwrap()
            .trim()
            .parse()
            .unwrap_or(0);
        let pvc = m.metadata.annotations.as_ref().unwrap()["coffer.dev/source-pvc"].clone();
        values.insert(pvc, n);
    }
    let (a, b) = (values["a"], values["b"]);
    assert!(
        b <= a && a <= b + 1,
        "inconsistent group snapshot: a={a} b={b}"
    );
    assert!(a > 0);

    // Changed blocks: write blocks 3 and 7 of the Block volume between two snapshots.
    exec(&pods, "app", "for s in 0 1 2; do head -c 4096 /dev/urandom | dd of=/dev/xvdb bs=4096 seek=$s conv=notrunc 2>/dev/null; done").await;
    // Order: snapshot 1 after blocks 0-2, then write 3 and 7, then snapshot 2.
    for name in ["blk-1", "blk-2"] {
        if name == "blk-2" {
            exec(&pods, "app", "for s in 7 3; do head -c 4096 /dev/urandom | dd of=/dev/xvdb bs=4096 seek=$s conv=notrunc 2>/dev/null; done").await;
        }
        snaps.create(&PostParams::default(), &obj(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": name}, "spec": {"source": {"persistentVolumeClaimName": "blk"}},
        })))
        .await
        .unwrap();
        wait_ready(&snaps, name).await;
    }
    let base = snaps.get("blk-1").await.unwrap();
    let (base_content, base_handle) = bound_content(&contents, &base).await;

    // A ServiceAccount allowed to get VolumeSnapshots, with an audience-scoped token.
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    sas.create(
        &PostParams::default(),
        &obj(json!({"metadata": {"name": "backup"}})),
    )
    .await
    .unwrap();
    Api::<Role>::namespaced(client.clone(), "default").create(&PostParams::default(), &obj(json!({
        "metadata": {"name": "snap-reader"},
        "rules": [{"apiGroups": ["snapshot.storage.k8s.io"], "resources": ["volumesnapshots"], "verbs": ["get"]}],
    }))).await.unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), "default").create(&PostParams::default(), &obj(json!({
        "metadata": {"name": "snap-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "snap-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "backup", "namespace": "default"}],
    }))).await.unwrap();
    // Coffer's change-tracking client, as a backup would use it: discover the driver's
    // service, get an audience-scoped token, ask for the delta and the allocated blocks.
    let endpoint = coffer_cbt::discovery::find(&client, coffer_testcluster::DRIVER)
        .await
        .unwrap()
        .expect("the simulated driver announces its SnapshotMetadataService");
    assert_eq!(
        endpoint.audience,
        coffer_testcluster::SNAPSHOT_METADATA_AUDIENCE
    );
    let token =
        coffer_cbt::discovery::request_token(&client, "default", "backup", &endpoint.audience, 600)
            .await
            .unwrap();
    let mut cbt = coffer_cbt::SnapshotMetadataClient::connect(&endpoint, token)
        .await
        .unwrap();
    let blocks = |c: &coffer_cbt::ChangedBlocks| -> Vec<u64> {
        c.ranges
            .iter()
            .flat_map(|r| (r.offset / 4096)..(r.end() / 4096))
            .collect()
    };
    let delta = cbt.delta("default", &base_handle, "blk-2").await.unwrap();
    assert_eq!(delta.volume_capacity, 1 << 20);
    assert_eq!(blocks(&delta), vec![3, 7]);
    let allocated = cbt.allocated("default", "blk-1").await.unwrap();
    assert_eq!(blocks(&allocated), vec![0, 1, 2]);
    assert_eq!(
        allocated.ranges,
        vec![coffer_cbt::ByteRange {
            offset: 0,
            length: 3 * 4096
        }],
        "adjacent blocks arrive merged"
    );

    // A token for another audience is refused, and the error says so.
    let other = coffer_cbt::discovery::request_token(&client, "default", "backup", "other", 600)
        .await
        .unwrap();
    let mut wrong = coffer_cbt::SnapshotMetadataClient::connect(&endpoint, other)
        .await
        .unwrap();
    let err = wrong.allocated("default", "blk-1").await.unwrap_err();
    assert!(
        matches!(
            err,
            coffer_cbt::Error::Call {
                code: tonic::Code::Unauthenticated,
                ..
            }
        ),
        "{err}"
    );

    // Deleting a snapshot (policy Delete) removes its content and data.
    let meta = cluster.storage().snapshot_meta(&base_handle).unwrap();
    snaps
        .delete("blk-1", &DeleteParams::default())
        .await
        .unwrap();
    for _ in 0..100 {
        if snaps.get_opt("blk-1").await.unwrap().is_none()
            && contents.get_opt(&base_content).await.unwrap().is_none()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(snaps.get_opt("blk-1").await.unwrap().is_none());
    assert!(contents.get_opt(&base_content).await.unwrap().is_none());
    assert!(!cluster.storage().snapshot_data(&meta).exists());
    let _ = content_name;
    cluster.stop().await;
}

/// Waits until `f` returns Some, polling every 100 ms.
async fn until<T, F, Fut>(what: &str, secs: u64, f: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A ReadWriteOnce PVC of the default class with `extra` fields in its spec.
fn pvc(name: &str, size: &str, extra: serde_json::Value) -> PersistentVolumeClaim {
    let mut spec =
        json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}});
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    obj(json!({"metadata": {"name": name}, "spec": spec}))
}

/// Creates PVC `name` from the VolumeSnapshot `snap`, named in `field` (dataSource or
/// dataSourceRef), and returns its data.txt once it is bound.
async fn restored_data(
    st: &coffer_testcluster::storage::Storage,
    api: &Api<PersistentVolumeClaim>,
    name: &str,
    field: &str,
    snap: &str,
) -> String {
    let source = json!({field: {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": snap}});
    api.create(&PostParams::default(), &pvc(name, "16Mi", source))
        .await
        .unwrap();
    let bound = wait_bound(api, name).await;
    std::fs::read_to_string(st.volume_path(&pv_of(&bound), false).join("data.txt")).unwrap()
}

fn pv_of(pvc: &PersistentVolumeClaim) -> String {
    pvc.spec.as_ref().unwrap().volume_name.clone().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn populator_clone_static_snapshot_and_expansion() {
    use k8s_openapi::api::core::v1::{Namespace, PersistentVolume};
    use kube::api::{Patch, PatchParams};

    let (_dir, cluster) = common::start().await;
    let client = cluster.client();
    let st = cluster.storage();
    let pp = PostParams::default();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let vs_ar = ar(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshot",
        "volumesnapshots",
    );
    let snaps: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &vs_ar);
    let contents: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ar(
            "snapshot.storage.k8s.io",
            "v1",
            "VolumeSnapshotContent",
            "volumesnapshotcontents",
        ),
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in ["populator", "elsewhere"] {
        namespaces
            .create(&pp, &obj(json!({"metadata": {"name": ns}})))
            .await
            .unwrap();
    }

    // A source PVC with data, a Block PVC, and a PVC for a volume populator: its
    // dataSourceRef names a kind the provisioner does not know (KEP-1495).
    pvcs.create(&pp, &pvc("src", "16Mi", json!({})))
        .await
        .unwrap();
    pvcs.create(&pp, &pvc("blk", "1Mi", json!({"volumeMode": "Block"})))
        .await
        .unwrap();
    let populated = pvcs
        .create(
            &pp,
            &pvc(
                "populated",
                "8Mi",
                json!({"dataSourceRef": {
            "apiGroup": "populator.test.coffer.dev", "kind": "Seed", "name": "seed-1"}}),
            ),
        )
        .await
        .unwrap();
    let src = wait_bound(&pvcs, "src").await;
    let src_dir = st.volume_path(&pv_of(&src), false);
    std::fs::write(src_dir.join("data.txt"), "original data\n").unwrap();

    // Clone: a PVC whose dataSource is another PVC holds its data.
    pvcs.create(
        &pp,
        &pvc(
            "clone",
            "16Mi",
            json!({"dataSource": {"kind": "PersistentVolumeClaim", "name": "src"}}),
        ),
    )
    .await
    .unwrap();
    let clone = wait_bound(&pvcs, "clone").await;
    let clone_dir = st.volume_path(&pv_of(&clone), false);
    assert_ne!(clone_dir, src_dir);
    assert_eq!(
        std::fs::read_to_string(clone_dir.join("data.txt")).unwrap(),
        "original data\n"
    );

    // A snapshot with a Retain class; a PVC restored through dataSourceRef holds the data.
    let classes: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ar(
            "snapshot.storage.k8s.io",
            "v1",
            "VolumeSnapshotClass",
            "volumesnapshotclasses",
        ),
    );
    classes.create(&pp, &obj(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
        "metadata": {"name": "retain"}, "driver": coffer_testcluster::DRIVER, "deletionPolicy": "Retain",
    })))
    .await
    .unwrap();
    snaps.create(&pp, &obj(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "kept"},
        "spec": {"volumeSnapshotClassName": "retain", "source": {"persistentVolumeClaimName": "src"}},
    })))
    .await
    .unwrap();
    let kept = wait_ready(&snaps, "kept").await;
    std::fs::write(src_dir.join("data.txt"), "changed after the snapshot\n").unwrap();
    assert_eq!(
        restored_data(st, &pvcs, "from-ref", "dataSourceRef", "kept").await,
        "original data\n"
    );

    // Static binding: the VolumeSnapshot goes, its content and data stay (Retain); the
    // content goes too, the data stays. An admin then pre-provisions a content for that
    // snapshot handle and a VolumeSnapshot in another namespace binds to it.
    let (content_name, handle) = bound_content(&contents, &kept).await;
    snaps
        .delete("kept", &DeleteParams::default())
        .await
        .unwrap();
    until("VolumeSnapshot kept deleted", 30, || async {
        snaps.get_opt("kept").await.unwrap().is_none().then_some(())
    })
    .await;
    // The VolumeSnapshot is gone only after the controller released it, so the Retain
    // content must be there now.
    assert!(contents.get_opt(&content_name).await.unwrap().is_some());
    contents
        .delete(&content_name, &DeleteParams::default())
        .await
        .unwrap();
    until("content deleted", 30, || async {
        contents
            .get_opt(&content_name)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let meta = st.snapshot_meta(&handle).unwrap();
    assert!(st.snapshot_data(&meta).join("data.txt").is_file());
    contents
        .create(
            &pp,
            &obj(json!({
                "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
                "metadata": {"name": "static-content"},
                "spec": {"deletionPolicy": "Delete", "driver": coffer_testcluster::DRIVER,
                         "source": {"snapshotHandle": handle}, "sourceVolumeMode": "Filesystem",
                         "volumeSnapshotRef": {"name": "static", "namespace": "elsewhere"}},
            })),
        )
        .await
        .unwrap();
    let elsewhere: Api<DynamicObject> = Api::namespaced_with(client.clone(), "elsewhere", &vs_ar);
    elsewhere.create(&pp, &obj(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "static"}, "spec": {"source": {"volumeSnapshotContentName": "static-content"}},
    })))
    .await
    .unwrap();
    let stat = wait_ready(&elsewhere, "static").await;
    assert_eq!(
        stat.data["status"]["boundVolumeSnapshotContentName"],
        "static-content"
    );
    assert_eq!(stat.data["status"]["restoreSize"], "16Mi");
    let content = contents.get("static-content").await.unwrap();
    assert_eq!(content.data["status"]["readyToUse"], true);
    assert_eq!(
        content.data["spec"]["volumeSnapshotRef"]["uid"].as_str(),
        stat.metadata.uid.as_deref()
    );
    let other_pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "elsewhere");
    assert_eq!(
        restored_data(st, &other_pvcs, "from-static", "dataSource", "static").await,
        "original data\n"
    );
    // Its deletion policy is Delete: deleting the VolumeSnapshot removes content and data.
    elsewhere
        .delete("static", &DeleteParams::default())
        .await
        .unwrap();
    until("static content and data deleted", 30, || async {
        (contents.get_opt("static-content").await.unwrap().is_none()
            && !st.snapshot_data(&meta).exists())
        .then_some(())
    })
    .await;

    // The populator PVC was left alone: still Pending, no PV made for it.
    let uid = populated.metadata.uid.clone().unwrap();
    let p = pvcs.get("populated").await.unwrap();
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("Pending"));
    assert!(p.spec.unwrap().volume_name.is_none());
    assert!(pvs.get_opt(&format!("pvc-{uid}")).await.unwrap().is_none());
    // The populator does its part as lib-volume-populator does: a prime PVC in its own
    // namespace, a pod that fills it, then the PV rebound to the user's PVC.
    let prime_pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "populator");
    let prime_name = format!("prime-{uid}");
    prime_pvcs
        .create(&pp, &pvc(&prime_name, "8Mi", json!({})))
        .await
        .unwrap();
    let prime = wait_bound(&prime_pvcs, &prime_name).await;
    let prime_pv = pv_of(&prime);
    let prime_pods: Api<Pod> = Api::namespaced(client.clone(), "populator");
    prime_pods
        .create(
            &pp,
            &obj(json!({
                "metadata": {"name": "populate"},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x",
                    "command": ["sh", "-c", "echo seeded by populator > /vol/seed.txt"],
                    "volumeMounts": [{"name": "v", "mountPath": "/vol"}]}],
                    "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": prime_name}}]},
            })),
        )
        .await
        .unwrap();
    wait_phase(&prime_pods, "populate", &["Succeeded"], 60).await;
    pvs.patch(&prime_pv, &PatchParams::default(), &Patch::Merge(json!({
        "metadata": {"annotations": {"volume.kubernetes.io/populated-from": "populator/seed-1"}},
        "spec": {"claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "default",
                              "name": "populated", "uid": uid,
                              "resourceVersion": populated.metadata.resource_version}},
    })))
    .await
    .unwrap();
    let bound = wait_bound(&pvcs, "populated").await;
    assert_eq!(pv_of(&bound), prime_pv);
    // lib-volume-populator also waits for the prime PVC to turn Lost, which the PV
    // binder notices only at its periodic resync (15 s): deleting it now is as safe.
    prime_pvcs
        .delete(&prime_name, &DeleteParams::default())
        .await
        .unwrap();
    // The user's pod sees the populated data; the PV survived the prime PVC.
    assert_eq!(
        common::pod_output(&pods, "user", "populated", &["cat", "/data/seed.txt"]).await,
        "seeded by populator\n"
    );
    assert_eq!(
        pvs.get(&prime_pv)
            .await
            .unwrap()
            .status
            .unwrap()
            .phase
            .as_deref(),
        Some("Bound")
    );

    // Expansion (the classes allow it): the PV, the PVC's status and a Block volume's
    // image file grow.
    let blk = wait_bound(&pvcs, "blk").await;
    let img = st.volume_path(&pv_of(&blk), true);
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 1 << 20);
    for (name, size) in [("blk", "4Mi"), ("src", "32Mi")] {
        pvcs.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({
            "spec": {"resources": {"requests": {"storage": size}}}})),
        )
        .await
        .unwrap();
    }
    for (name, size) in [("blk", "4Mi"), ("src", "32Mi")] {
        let p = until("PVC status capacity grown", 30, || async {
            let p = pvcs.get(name).await.unwrap();
            let cap = p
                .status
                .as_ref()?
                .capacity
                .as_ref()?
                .get("storage")?
                .0
                .clone();
            (cap == size).then_some(p)
        })
        .await;
        let pv = pvs.get(&pv_of(&p)).await.unwrap();
        assert_eq!(pv.spec.unwrap().capacity.unwrap()["storage"].0, size);
    }
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 4 << 20);

    // Reclaim policy Delete: deleting a PVC deletes its PV and the volume's data.
    let clone_pv = pv_of(&clone);
    pvcs.delete("clone", &DeleteParams::default())
        .await
        .unwrap();
    until("PV of a deleted PVC deleted", 30, || async {
        pvs.get_opt(&clone_pv)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(!clone_dir.exists());
    cluster.stop().await;
}
