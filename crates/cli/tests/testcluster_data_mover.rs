//! The data-mover pod pattern end to end on the test cluster: an application pod writes a
//! PVC, a VolumeSnapshot of it is restored into a new PVC, a pod running the real
//! `coffer` binary (image `coffer`, password from a Secret) backs that PVC up into a
//! repository on a second PVC, and the coffer binary on the host restores the snapshot
//! byte for byte. Needs KUBEBUILDER_ASSETS.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("object")
}

async fn wait_phase(pods: &Api<Pod>, name: &str, want: &str) -> Pod {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let p = pods.get(name).await.unwrap();
        let phase = p.status.as_ref().and_then(|s| s.phase.clone());
        if phase.as_deref() == Some(want) {
            return p;
        }
        if matches!(phase.as_deref(), Some("Succeeded" | "Failed")) || Instant::now() > deadline {
            let logs = pods
                .logs(name, &Default::default())
                .await
                .unwrap_or_default();
            panic!(
                "pod {name}: wanted {want}, got {:#?}\nlogs:\n{logs}",
                p.status
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The volume directory behind a bound PVC.
async fn pvc_dir(
    cluster: &coffer_testcluster::TestCluster,
    pvcs: &Api<PersistentVolumeClaim>,
    name: &str,
) -> std::path::PathBuf {
    let pv = pvcs
        .get(name)
        .await
        .unwrap()
        .spec
        .unwrap()
        .volume_name
        .expect("bound");
    cluster.storage().volume_path(&pv, false)
}

/// Every entry below `root`: relative path -> (kind, mode, contents or link target).
fn tree(root: &Path) -> BTreeMap<String, (char, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        let md = std::fs::symlink_metadata(e.path()).unwrap();
        let mode = md.permissions().mode() & 0o7777;
        let entry = if md.file_type().is_symlink() {
            let target = std::fs::read_link(e.path()).unwrap();
            ('l', 0, target.display().to_string().into_bytes())
        } else if md.is_dir() {
            ('d', mode, Vec::new())
        } else {
            ('f', mode, std::fs::read(e.path()).unwrap())
        };
        out.insert(rel, entry);
    }
    out
}

/// The container spec of a coffer data-mover pod: image `coffer`, no command, the
/// repository at /repo, the password from the Secret, a scratch cache.
fn coffer_container(args: &[&str], extra_mounts: Value) -> Value {
    let mut mounts = vec![
        json!({"name": "repo", "mountPath": "/repo"}),
        json!({"name": "cache", "mountPath": "/cache"}),
    ];
    mounts.extend(extra_mounts.as_array().cloned().unwrap_or_default());
    json!({
        "name": "coffer", "image": "registry.example.com/coffer:dev", "args": args,
        "env": [
            {"name": "COFFER_REPO", "value": "/repo"},
            {"name": "COFFER_CACHE_DIR", "value": "/cache"},
            {"name": "COFFER_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "repo-pass", "key": "password"}}},
        ],
        "volumeMounts": mounts,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_mover_pod_backs_up_a_restored_snapshot_and_host_restores_it() {
    let dir = tempfile::tempdir().unwrap();
    let opts = coffer_testcluster::Options {
        coffer_bin: Some(env!("CARGO_BIN_EXE_coffer").into()),
        ..Default::default()
    };
    let cluster = coffer_testcluster::TestCluster::start_with(dir.path(), opts)
        .await
        .unwrap();
    let client = cluster.client();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    Api::<Secret>::namespaced(client.clone(), "default")
        .create(
            &pp,
            &obj(json!({"metadata": {"name": "repo-pass"}, "stringData": {"password": PASSWORD}})),
        )
        .await
        .unwrap();
    for (name, size) in [("app-data", "32Mi"), ("repo", "64Mi")] {
        pvcs.create(&pp, &obj(json!({
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
        })))
        .await
        .unwrap();
    }

    // The application writes its data; meanwhile a coffer pod initialises the repository.
    pods.create(&pp, &obj(json!({
        "metadata": {"name": "writer"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "app", "image": "busybox",
            "command": ["sh", "-c", "set -e; mkdir -p /data/sub/deeper; \
                head -c 3000000 /dev/urandom > /data/big.bin; \
                printf 'hello from the app\\n' > /data/sub/hello.txt; chmod 640 /data/sub/hello.txt; \
                : > /data/sub/deeper/empty; ln -s sub/hello.txt /data/link; \
                dd if=/dev/urandom of=/data/sparse bs=4096 seek=1000 count=2 2>/dev/null"],
            "volumeMounts": [{"name": "d", "mountPath": "/data"}]}],
            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "app-data"}}]},
    })))
    .await
    .unwrap();
    pods.create(&pp, &obj(json!({
        "metadata": {"name": "repo-init"},
        "spec": {"restartPolicy": "Never",
            "containers": [coffer_container(&["repo", "init", "--kdf-memory-kib", "1024", "--pack-size-mib", "4"], json!([]))],
            "volumes": [{"name": "repo", "persistentVolumeClaim": {"claimName": "repo"}},
                        {"name": "cache", "emptyDir": {}}]},
    })))
    .await
    .unwrap();
    wait_phase(&pods, "writer", "Succeeded").await;
    wait_phase(&pods, "repo-init", "Succeeded").await;

    // A VolumeSnapshot of the application's PVC, restored into a PVC for the data mover.
    let snaps: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshot"),
            "volumesnapshots",
        ),
    );
    snaps
        .create(&pp, &obj(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "app-snap"}, "spec": {"source": {"persistentVolumeClaimName": "app-data"}},
        })))
        .await
        .unwrap();
    pvcs.create(&pp, &obj(json!({
        "metadata": {"name": "backup-src"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "32Mi"}},
                 "dataSource": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "app-snap"}},
    })))
    .await
    .unwrap();

    // The data mover: the coffer binary backs up the read-only PVC into the repository.
    pods.create(
        &pp,
        &obj(json!({
            "metadata": {"name": "mover"},
            "spec": {"restartPolicy": "Never",
                "containers": [coffer_container(
                    &["volume", "backup", "/data", "--fs", "--json", "--tag", "pvc=app-data"],
                    json!([{"name": "src", "mountPath": "/data", "readOnly": true}]))],
                "volumes": [{"name": "repo", "persistentVolumeClaim": {"claimName": "repo"}},
                            {"name": "cache", "emptyDir": {}},
                            {"name": "src", "persistentVolumeClaim": {"claimName": "backup-src"}}]},
        })),
    )
    .await
    .unwrap();
    let pod = wait_phase(&pods, "mover", "Succeeded").await;
    let term = pod.status.unwrap().container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(term.exit_code, 0);
    let logs = pods.logs("mover", &Default::default()).await.unwrap();
    let start = logs
        .find('{')
        .unwrap_or_else(|| panic!("no JSON in {logs}"));
    let report: Value = serde_json::Deserializer::from_str(&logs[start..])
        .into_iter()
        .next()
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}: {logs}"));
    let id = report["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(report["source"], "/data", "{report}");
    assert!(
        report["bytes_total"].as_u64().unwrap() >= 3_000_000,
        "{report}"
    );

    // The coffer binary on the host restores the snapshot from the repository PVC: the
    // tree is the one the application pod wrote, byte for byte.
    let restored = dir.path().join("restored");
    let out = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(["volume", "restore", &id, "--json", "--target"])
        .arg(&restored)
        .env("COFFER_REPO", pvc_dir(&cluster, &pvcs, "repo").await)
        .env("COFFER_PASSWORD", PASSWORD)
        .env("COFFER_CACHE_DIR", dir.path().join("host-cache"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = tree(&pvc_dir(&cluster, &pvcs, "app-data").await);
    assert_eq!(written.len(), 7, "{:?}", written.keys());
    assert_eq!(written["big.bin"].2.len(), 3_000_000);
    assert_eq!(written["sub/hello.txt"].1, 0o640);
    assert_eq!(tree(&restored), written);
    cluster.stop().await;
}
