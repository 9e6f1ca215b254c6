//! Simulated CSI storage through kube-rs: VolumeSnapshot and restore, group snapshot
//! consistency, SnapshotMetadata changed blocks.

mod common;

use std::time::Duration;

use base64::Engine;
use coffer_testcluster::storage::metadata::proto;
use common::{obj, wait_phase};
use k8s_openapi::api::authentication::v1::TokenRequest;
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

    // VolumeSnapshot of a, then a PVC restored from it holds the data.
    tokio::time::sleep(Duration::from_millis(300)).await;
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
    pods.create(
        &PostParams::default(),
        &obj(json!({
            "metadata": {"name": "reader"},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x",
                "command": ["cat", "/r/file"], "volumeMounts": [{"name": "r", "mountPath": "/r"}]}],
                "volumes": [{"name": "r", "persistentVolumeClaim": {"claimName": "restored"}}]},
        })),
    )
    .await
    .unwrap();
    wait_phase(&pods, "reader", &["Succeeded"], 60).await;
    assert_eq!(
        pods.logs("reader", &Default::default()).await.unwrap(),
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
        let content = contents
            .get(
                m.data["status"]["boundVolumeSnapshotContentName"]
                    .as_str()
                    .unwrap(),
            )
            .await
            .unwrap();
        let handle = content.data["status"]["snapshotHandle"].as_str().unwrap();
        let meta = cluster.storage().snapshot_meta(handle).unwrap();
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
    let base_content = contents
        .get(
            base.data["status"]["boundVolumeSnapshotContentName"]
                .as_str()
                .unwrap(),
        )
        .await
        .unwrap();
    let base_handle = base_content.data["status"]["snapshotHandle"]
        .as_str()
        .unwrap()
        .to_string();

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
    let sms: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ar(
            "cbt.storage.k8s.io",
            "v1beta1",
            "SnapshotMetadataService",
            "snapshotmetadataservices",
        ),
    );
    let sms = sms.get(coffer_testcluster::DRIVER).await.unwrap();
    let audience = sms.data["spec"]["audience"].as_str().unwrap().to_string();
    let address = sms.data["spec"]["address"].as_str().unwrap().to_string();
    let ca = base64::engine::general_purpose::STANDARD
        .decode(sms.data["spec"]["caCert"].as_str().unwrap())
        .unwrap();
    let tr: TokenRequest = sas
        .create_subresource("token", "backup", &PostParams::default(), &json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"audiences": [audience]}}))
        .await
        .unwrap();
    let token = tr.status.unwrap().token;

    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
        .domain_name("127.0.0.1");
    let channel = tonic::transport::Channel::from_shared(format!("https://{address}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = proto::snapshot_metadata_client::SnapshotMetadataClient::new(channel);
    let collect = |resps: Vec<Vec<proto::BlockMetadata>>| -> Vec<i64> {
        resps
            .into_iter()
            .flatten()
            .map(|b| b.byte_offset / 4096)
            .collect()
    };

    let mut s = grpc
        .get_metadata_delta(proto::GetMetadataDeltaRequest {
            security_token: token.clone(),
            namespace: "default".into(),
            base_snapshot_id: base_handle.clone(),
            target_snapshot_name: "blk-2".into(),
            starting_offset: 0,
            max_results: 1,
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(r) = s.message().await.unwrap() {
        assert_eq!(r.volume_capacity_bytes, 1 << 20);
        got.push(r.block_metadata);
    }
    assert_eq!(collect(got), vec![3, 7]);

    let mut s = grpc
        .get_metadata_allocated(proto::GetMetadataAllocatedRequest {
            security_token: token.clone(),
            namespace: "default".into(),
            snapshot_name: "blk-1".into(),
            starting_offset: 0,
            max_results: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(r) = s.message().await.unwrap() {
        got.push(r.block_metadata);
    }
    assert_eq!(collect(got), vec![0, 1, 2]);

    // A token for another audience is refused.
    let other: TokenRequest = sas
        .create_subresource("token", "backup", &PostParams::default(), &json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"audiences": ["other"]}}))
        .await
        .unwrap();
    let err = grpc
        .get_metadata_allocated(proto::GetMetadataAllocatedRequest {
            security_token: other.status.unwrap().token,
            namespace: "default".into(),
            snapshot_name: "blk-1".into(),
            starting_offset: 0,
            max_results: 0,
        })
        .await
        .expect_err("must be refused");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    // Deleting a snapshot (policy Delete) removes its content and data.
    let meta = cluster.storage().snapshot_meta(&base_handle).unwrap();
    snaps
        .delete("blk-1", &DeleteParams::default())
        .await
        .unwrap();
    for _ in 0..100 {
        if snaps.get_opt("blk-1").await.unwrap().is_none()
            && contents
                .get_opt(base_content.metadata.name.as_deref().unwrap())
                .await
                .unwrap()
                .is_none()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(snaps.get_opt("blk-1").await.unwrap().is_none());
    assert!(
        contents
            .get_opt(base_content.metadata.name.as_deref().unwrap())
            .await
            .unwrap()
            .is_none()
    );
    assert!(!cluster.storage().snapshot_data(&meta).exists());
    let _ = content_name;
    cluster.stop().await;
}
