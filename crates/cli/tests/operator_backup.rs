//! The operator's backup workflow on the test cluster, end to end: the operator installed
//! with `kubectl apply -k deploy/` runs as a pod (two replicas, its own ServiceAccount and
//! RBAC, the real `coffer` binary), and Backups are made through the API only.
//! Needs KUBEBUILDER_ASSETS (and COFFER_MOTO_SERVER or `moto_server` on PATH for the S3
//! test).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coffer_api::{Backup, BackupPhase, RepositoryPhase, VolumeBackup};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::json;

mod operator_env;
use operator_env::*;

fn app_yaml(ns: &str, location: &str, credentials: bool) -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: repo-key, namespace: {ns}}}
stringData: {{password: "{PASSWORD}"}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data, namespace: {ns}, labels: {{app: shop, coffer.dev/group: g1}}}}
spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 64Mi}}}}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: blk, namespace: {ns}, labels: {{app: shop, coffer.dev/group: g1}}}}
spec: {{accessModes: [ReadWriteOnce], volumeMode: Block, resources: {{requests: {{storage: 256Mi}}}}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: scratch, namespace: {ns}, labels: {{app: shop, copy: live}}}}
spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 16Mi}}}}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings, namespace: {ns}, labels: {{app: shop}}}}
data: {{color: blue}}
---
apiVersion: v1
kind: Pod
metadata:
  name: db
  namespace: {ns}
  labels: {{app: shop, tier: db}}
  # Velero's hook annotations are honoured too.
  annotations:
    pre.hook.backup.velero.io/command: '["sh", "-c", "echo velero > /data/velero-pre"]'
    pre.hook.backup.velero.io/container: db
spec:
  containers:
  - name: db
    image: busybox
    command: [sh, -c, "echo hello > /data/hello.txt; dd if=/dev/urandom of=/dev/blk bs=1M count=5 seek=7 conv=notrunc 2>/dev/null; echo notes > /scratch/notes.txt; touch /data/ready; while true; do sleep 1; done"]
    volumeMounts: [{{name: data, mountPath: /data}}, {{name: scratch, mountPath: /scratch}}]
    volumeDevices: [{{name: blk, devicePath: /dev/blk}}]
  volumes:
  - {{name: data, persistentVolumeClaim: {{claimName: data}}}}
  - {{name: blk, persistentVolumeClaim: {{claimName: blk}}}}
  - {{name: scratch, persistentVolumeClaim: {{claimName: scratch}}}}
---
apiVersion: coffer.dev/v1alpha1
kind: BackupRepository
metadata: {{name: main, namespace: {ns}}}
spec:
  location: {location}
  keySecret: {{name: repo-key}}
  initialize: true
  {creds}
"#,
        creds = if credentials {
            "credentialsSecret: {name: s3-creds}"
        } else {
            ""
        }
    )
}

const APP: &str = r#"
apiVersion: coffer.dev/v1alpha1
kind: Application
metadata: {name: shop, namespace: NS}
spec:
  labelSelector: {matchLabels: {app: shop}}
  consistencyGroupLabel: coffer.dev/group
  volumes:
  - {selector: {matchLabels: {copy: live}}, policy: live}
  hooks:
  - name: freeze
    labelSelector: {matchLabels: {tier: db}}
    pre:  [{exec: {container: db, command: [sh, -c, "date +%s > /data/pre-marker"]}}]
    post: [{exec: {container: db, command: [sh, -c, "date +%s > /data/post-marker.$(date +%s%N)"]}}]
"#;

async fn wait_ready_file(env: &Env, ns: &str) {
    env.wait_pod_running(ns, "db").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while env
        .exec(ns, "db", "test -f /data/ready && echo yes || true")
        .trim()
        != "yes"
    {
        assert!(Instant::now() < deadline, "the app never wrote its data");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_backup_with_hooks_changed_blocks_and_byte_identical_restores() {
    let env = Env::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let repo_s = repo.to_str().unwrap().to_string();
    let ns = "shop";
    env.apply(&app_yaml(ns, &repo_s, false));
    env.apply(&APP.replace("NS", ns));
    let status = env.wait_repository(ns, "main").await;
    assert_eq!(status.phase, Some(RepositoryPhase::Ready), "{status:?}");
    wait_ready_file(&env, ns).await;

    // 1. The first backup: a group snapshot, hooks around it, both volumes copied.
    env.backup(
        ns,
        "shop-1",
        json!({"application": "shop", "repository": {"name": "main"}}),
    );
    let b = env.wait_backup(ns, "shop-1").await;
    let st = b.status.clone().unwrap();
    assert_eq!(st.phase, Some(BackupPhase::Completed), "{st:#?}");
    // The Application's pre and post hook, and Velero's pre hook annotation.
    assert_eq!(
        st.hooks.as_ref().map(|h| (h.attempted, h.failed)),
        Some((3, 0))
    );
    assert!(
        st.resources_snapshot.is_some() && st.manifest.is_some(),
        "{st:#?}"
    );
    assert_eq!(st.volumes.len(), 3);
    let vol = |st: &coffer_api::BackupStatus, pvc: &str| {
        st.volumes.iter().find(|v| v.pvc == pvc).cloned().unwrap()
    };
    let (data, blk) = (vol(&st, "data"), vol(&st, "blk"));
    // One VolumeGroupSnapshot made both snapshots.
    assert_eq!(data.group.as_deref(), Some("g1"));
    let vgs = ApiResource {
        group: "groupsnapshot.storage.k8s.io".into(),
        version: "v1beta2".into(),
        api_version: "groupsnapshot.storage.k8s.io/v1beta2".into(),
        kind: "VolumeGroupSnapshot".into(),
        plural: "volumegroupsnapshots".into(),
    };
    let groups: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), ns, &vgs);
    assert!(
        groups.get_opt("shop-1-group-g1").await.unwrap().is_some(),
        "the group (kept as the changed-block base) is gone"
    );
    // First backup of the block volume: only its allocated blocks were read.
    assert!(
        blk.bytes_read >= 5 << 20 && blk.bytes_read < 64 << 20,
        "{blk:?}"
    );
    assert!(!blk.changed_blocks);
    // Nothing temporary is left.
    assert_eq!(env.leftovers(ns, "shop-1").await, Vec::<String>::new());

    // Order: the pre hook's marker is in the snapshot, the post hook's is not, and the
    // data movement started after the post hook.
    let out = tmp.path().join("fs");
    let (ok, _, err) = coffer_cmd(
        &repo_s,
        &[
            "volume",
            "restore",
            data.snapshot_id.as_deref().unwrap(),
            "--target",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("hello.txt")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("velero-pre")).unwrap(),
        "velero\n"
    );
    let pre: i64 = std::fs::read_to_string(out.join("pre-marker"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("post-marker")),
        "the snapshot holds the post hook's marker: {names:?}"
    );
    let live = env.pv_path(ns, "data", false).await;
    let post_file = std::fs::read_dir(&live)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("post-marker"))
        .expect("post hook ran");
    let post: i64 = std::fs::read_to_string(live.join(&post_file))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pre <= post);
    let vbs: Api<VolumeBackup> = Api::namespaced(env.client.clone(), ns);
    let vb = vbs.get("shop-1-data").await.unwrap();
    let mover_start = vb.status.unwrap().start_time.unwrap().0.as_second();
    assert!(
        post <= mover_start,
        "data movement ({mover_start}) before the post hook ({post})"
    );
    assert_eq!(vb.spec.snapshot_id, data.snapshot_id);

    // The live volume was copied from the mounted PVC while the app was quiesced: after
    // the pre hook, before the post hook; no snapshot was taken of it.
    let scratch = vol(&st, "scratch");
    assert_eq!(scratch.mode, coffer_api::VolumePolicyKind::Live);
    assert!(
        scratch.volume_snapshot.is_none() && scratch.group.is_none(),
        "{scratch:?}"
    );
    let live_vb = vbs.get("shop-1-scratch").await.unwrap().status.unwrap();
    let (ls, le) = (
        live_vb.start_time.unwrap().0.as_second(),
        live_vb.completion_time.unwrap().0.as_second(),
    );
    assert!(
        pre <= ls && le <= post,
        "live copy {ls}..{le} outside the quiesced window {pre}..{post}"
    );
    let out_live = tmp.path().join("scratch");
    let (ok, _, err) = coffer_cmd(
        &repo_s,
        &[
            "volume",
            "restore",
            scratch.snapshot_id.as_deref().unwrap(),
            "--target",
            out_live.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read_to_string(out_live.join("notes.txt")).unwrap(),
        "notes\n"
    );

    // The block volume restores byte for byte to what the app wrote.
    let img = tmp.path().join("blk.img");
    let (ok, _, err) = coffer_cmd(
        &repo_s,
        &[
            "volume",
            "restore",
            blk.snapshot_id.as_deref().unwrap(),
            "--target",
            img.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{err}");
    let live_blk = env.pv_path(ns, "blk", true).await;
    assert!(
        std::fs::read(&img).unwrap() == std::fs::read(&live_blk).unwrap(),
        "block restore differs from the volume"
    );

    // 2. 3 MiB written: the next backup reads only the changed blocks.
    env.exec(
        ns,
        "db",
        "dd if=/dev/urandom of=/dev/blk bs=1M count=3 seek=100 conv=notrunc 2>/dev/null",
    );
    env.backup(
        ns,
        "shop-2",
        json!({"application": "shop", "repository": {"name": "main"}}),
    );
    let st = env.wait_backup(ns, "shop-2").await.status.unwrap();
    assert_eq!(st.phase, Some(BackupPhase::Completed), "{st:#?}");
    let blk2 = vol(&st, "blk");
    assert!(blk2.changed_blocks, "{blk2:?}");
    assert!(
        blk2.bytes_read <= (3 << 20) + (1 << 20),
        "read {} bytes for a 3 MiB change",
        blk2.bytes_read
    );
    assert!(blk2.bytes_read >= 3 << 20, "{blk2:?}");
    let vb2 = vbs.get("shop-2-blk").await.unwrap().status.unwrap();
    assert!(vb2.changed_blocks && vb2.bytes_read == blk2.bytes_read);
    // The new image restores byte for byte too.
    let img2 = tmp.path().join("blk2.img");
    let (ok, _, err) = coffer_cmd(
        &repo_s,
        &[
            "volume",
            "restore",
            blk2.snapshot_id.as_deref().unwrap(),
            "--target",
            img2.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{err}");
    assert!(
        std::fs::read(&img2).unwrap() == std::fs::read(&live_blk).unwrap(),
        "incremental block restore differs"
    );
    // The previous base was replaced.
    assert!(groups.get_opt("shop-1-group-g1").await.unwrap().is_none());

    // 3. The base snapshot deleted: a full (allocated) read, and the status says why.
    groups
        .delete("shop-2-group-g1", &DeleteParams::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while groups.get_opt("shop-2-group-g1").await.unwrap().is_some() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.backup(
        ns,
        "shop-3",
        json!({"application": "shop", "repository": {"name": "main"}}),
    );
    let st = env.wait_backup(ns, "shop-3").await.status.unwrap();
    assert_eq!(st.phase, Some(BackupPhase::Completed), "{st:#?}");
    let blk3 = vol(&st, "blk");
    assert!(!blk3.changed_blocks);
    assert!(
        blk3.full_read_reason
            .as_deref()
            .unwrap_or_default()
            .contains("no base snapshot"),
        "{blk3:?}"
    );

    // The Application says what happened last.
    let apps: Api<coffer_api::Application> = Api::namespaced(env.client.clone(), ns);
    let app_status = apps.get("shop").await.unwrap().status.unwrap();
    assert_eq!(app_status.last_backup.as_deref(), Some("shop-3"));
    assert_eq!(app_status.last_completed_backup.as_deref(), Some("shop-3"));
    assert_eq!(app_status.last_backup_phase, Some(BackupPhase::Completed));

    // The repository is the catalog: a Backup object deleted (policy Retain) comes back
    // from its manifest, Completed, as on a new cluster pointed at the repository.
    let backups: Api<Backup> = Api::namespaced(env.client.clone(), ns);
    let manifest_1 = backups
        .get("shop-1")
        .await
        .unwrap()
        .status
        .unwrap()
        .manifest;
    backups
        .delete("shop-1", &DeleteParams::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while backups.get_opt("shop-1").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "shop-1 was not deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Any change to the repository object makes the operator look at it again.
    env.kubectl(
        &[
            "-n",
            ns,
            "annotate",
            "backuprepository",
            "main",
            "touched=1",
        ],
        None,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let synced = loop {
        if let Some(b) = backups.get_opt("shop-1").await.unwrap()
            && b.status.as_ref().and_then(|s| s.phase).is_some()
        {
            break b;
        }
        assert!(
            Instant::now() < deadline,
            "shop-1 was not synced back from the repository"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let sst = synced.status.unwrap();
    assert_eq!(sst.phase, Some(BackupPhase::Completed), "{sst:#?}");
    assert_eq!(sst.manifest, manifest_1);
    assert_eq!(sst.volumes.len(), 3);
    assert!(synced.spec.selection.is_some() && synced.spec.application.is_none());

    // The repository checks clean, every byte.
    let (ok, out, err) = coffer_cmd(&repo_s, &["check", "--read-data"], &[]);
    assert!(ok, "check failed: {out}{err}");
    // The manifests are in the repository.
    let (ok, out, _) = coffer_cmd(&repo_s, &["snapshots", "--json"], &[]);
    assert!(ok);
    assert_eq!(out.matches("\"backup\"").count(), 3, "{out}");

    // Events were recorded on the Backup.
    let events = env.kubectl(
        &[
            "-n",
            ns,
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=shop-1",
            "-o",
            "json",
        ],
        None,
    );
    for reason in [
        "Started",
        "ResourcesStored",
        "PreHooksRun",
        "SnapshotsTaken",
        "PostHooksRun",
        "VolumeCopied",
        "Completed",
    ] {
        assert!(
            events.contains(&format!("\"reason\": \"{reason}\"")),
            "no {reason} event: {events}"
        );
    }
    env.cluster.stop().await;
}

struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_moto() -> Moto {
    let bin = std::env::var("COFFER_MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
    let port = free_port();
    let child = Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin} ({e}): pip install 'moto[server]'"));
    let moto = Moto { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"PUT /coffer-test HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(
        reply.starts_with("HTTP/1.1 200"),
        "bucket creation failed: {reply}"
    );
    moto
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_repository_failures_cancel_and_operator_restart() {
    let moto = start_moto();
    let env = Env::start().await;
    let ns = "shop";
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    // The credentials first: the repository is checked as soon as it exists.
    env.kubectl(&["create", "namespace", ns], None);
    env.apply(&format!(
        r#"{{"apiVersion": "v1", "kind": "Secret", "metadata": {{"name": "s3-creds", "namespace": "{ns}"}},
            "stringData": {{"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": "{endpoint}"}}}}"#
    ));
    env.apply(&app_yaml(ns, "s3://coffer-test/shop", true));
    env.apply(&APP.replace("NS", ns));
    let status = env.wait_repository(ns, "main").await;
    assert_eq!(status.phase, Some(RepositoryPhase::Ready), "{status:?}");
    wait_ready_file(&env, ns).await;
    let s3_env = [
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ENDPOINT_URL", endpoint.clone()),
    ];
    let repo = "s3://coffer-test/shop";

    // Bad input, each a clear phase and message, nothing written.
    let snapshots_now = || {
        let (ok, out, err) = coffer_cmd(repo, &["snapshots", "--json"], &s3_env);
        assert!(ok, "{err}");
        out
    };
    let before = snapshots_now();
    env.backup(
        ns,
        "no-repo",
        json!({"application": "shop", "repository": {"name": "missing"}}),
    );
    let st = env.wait_backup(ns, "no-repo").await.status.unwrap();
    assert_eq!(st.phase, Some(BackupPhase::FailedValidation));
    assert!(
        st.message
            .as_deref()
            .unwrap()
            .contains("BackupRepository shop/missing does not exist"),
        "{st:?}"
    );
    env.backup(
        ns,
        "no-app",
        json!({"application": "nope", "repository": {"name": "main"}}),
    );
    let st = env.wait_backup(ns, "no-app").await.status.unwrap();
    assert_eq!(st.phase, Some(BackupPhase::FailedValidation));
    assert!(
        st.message
            .as_deref()
            .unwrap()
            .contains("Application shop/nope does not exist"),
        "{st:?}"
    );
    env.backup(ns, "nothing", json!({"selection": {"labelSelector": {"matchLabels": {"app": "none"}}}, "repository": {"name": "main"}}));
    let st = env.wait_backup(ns, "nothing").await.status.unwrap();
    assert_eq!(st.phase, Some(BackupPhase::FailedValidation));
    assert!(
        st.message
            .as_deref()
            .unwrap()
            .contains("matches no objects"),
        "{st:?}"
    );
    // A PVC on a volume that is not CSI (a hostPath PV) cannot be snapshotted.
    let host_dir = tempfile::tempdir().unwrap();
    env.apply(&format!(
        r#"{{"apiVersion": "v1", "kind": "List", "items": [
            {{"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {{"name": "host-pv"}},
              "spec": {{"capacity": {{"storage": "1Gi"}}, "accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
                       "hostPath": {{"path": "{}"}}, "claimRef": {{"namespace": "{ns}", "name": "legacy"}}}}}},
            {{"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {{"name": "legacy", "namespace": "{ns}", "labels": {{"kind": "legacy"}}}},
              "spec": {{"accessModes": ["ReadWriteOnce"], "storageClassName": "manual", "volumeName": "host-pv",
                       "resources": {{"requests": {{"storage": "1Gi"}}}}}}}}]}}"#,
        host_dir.path().display()
    ));
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(60);
    while pvcs
        .get("legacy")
        .await
        .unwrap()
        .status
        .and_then(|s| s.phase)
        .as_deref()
        != Some("Bound")
    {
        assert!(Instant::now() < deadline, "the hostPath PVC never bound");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.backup(ns, "legacy", json!({"selection": {"labelSelector": {"matchLabels": {"kind": "legacy"}}}, "repository": {"name": "main"}}));
    let st = env.wait_backup(ns, "legacy").await.status.unwrap();
    assert_eq!(st.phase, Some(BackupPhase::FailedValidation));
    assert!(
        st.message.as_deref().unwrap().contains("PVC shop/legacy")
            && st
                .message
                .as_deref()
                .unwrap()
                .contains("cannot be snapshotted"),
        "{st:?}"
    );
    // A wrong key and an unreachable endpoint: the repository says so, and so does a Backup.
    env.apply(&format!(
        r#"{{"apiVersion": "v1", "kind": "List", "items": [
          {{"apiVersion": "v1", "kind": "Secret", "metadata": {{"name": "wrong-key", "namespace": "{ns}"}}, "stringData": {{"password": "not it"}}}},
          {{"apiVersion": "v1", "kind": "Secret", "metadata": {{"name": "nowhere", "namespace": "{ns}"}},
            "stringData": {{"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_ENDPOINT_URL": "http://127.0.0.1:{}"}}}},
          {{"apiVersion": "coffer.dev/v1alpha1", "kind": "BackupRepository", "metadata": {{"name": "wrong", "namespace": "{ns}"}},
            "spec": {{"location": "{repo}", "keySecret": {{"name": "wrong-key"}}, "credentialsSecret": {{"name": "s3-creds"}}}}}},
          {{"apiVersion": "coffer.dev/v1alpha1", "kind": "BackupRepository", "metadata": {{"name": "down", "namespace": "{ns}"}},
            "spec": {{"location": "{repo}", "keySecret": {{"name": "repo-key"}}, "credentialsSecret": {{"name": "nowhere"}}}}}}]}}"#,
        free_port()
    ));
    let wrong = env.wait_repository(ns, "wrong").await;
    assert_eq!(wrong.phase, Some(RepositoryPhase::Unavailable));
    assert!(
        wrong
            .message
            .as_deref()
            .unwrap()
            .contains("wrong password or key"),
        "{wrong:?}"
    );
    let down = env.wait_repository(ns, "down").await;
    assert_eq!(down.phase, Some(RepositoryPhase::Unavailable));
    assert!(
        down.message.as_deref().unwrap().contains("unreachable"),
        "{down:?}"
    );
    env.backup(
        ns,
        "wrong-key",
        json!({"application": "shop", "repository": {"name": "wrong"}}),
    );
    let st = env.wait_backup(ns, "wrong-key").await.status.unwrap();
    assert_eq!(st.phase, Some(BackupPhase::FailedValidation));
    assert!(
        st.message.as_deref().unwrap().contains("wrong password"),
        "{st:?}"
    );
    assert_eq!(
        snapshots_now(),
        before,
        "a backup that failed validation wrote to the repository"
    );

    // A pre hook failing with policy Fail: Failed, naming pod, container, command and exit
    // code; the post hook still ran; no snapshot taken.
    let hooks_app = |name: &str, on_error: &str| {
        format!(
            r#"{{"apiVersion": "coffer.dev/v1alpha1", "kind": "Application", "metadata": {{"name": "{name}", "namespace": "{ns}"}},
                "spec": {{"labelSelector": {{"matchLabels": {{"app": "shop"}}}},
                         "volumes": [{{"policy": "exclude"}}],
                         "hooks": [{{"name": "lock", "labelSelector": {{"matchLabels": {{"tier": "db"}}}},
                                    "pre": [{{"exec": {{"container": "db", "command": ["sh", "-c", "echo locked >&2; exit 7"], "onError": "{on_error}"}}}}],
                                    "post": [{{"exec": {{"container": "db", "command": ["sh", "-c", "touch /data/unlocked-{name}"]}}}}]}}]}}}}"#
        )
    };
    env.apply(&hooks_app("failing", "Fail"));
    env.backup(
        ns,
        "hook-fail",
        json!({"application": "failing", "repository": {"name": "main"}}),
    );
    let st = env.wait_backup(ns, "hook-fail").await.status.unwrap();
    assert_eq!(st.phase, Some(BackupPhase::Failed), "{st:#?}");
    let msg = st.message.clone().unwrap();
    for want in ["pod shop/db", "container db", "exit 7", "exit code 7"] {
        assert!(msg.contains(want), "{want:?} not in {msg:?}");
    }
    assert!(
        env.exec(ns, "db", "ls /data").contains("unlocked-failing"),
        "the post hook did not run"
    );
    env.apply(&hooks_app("lenient", "Continue"));
    env.backup(
        ns,
        "hook-continue",
        json!({"application": "lenient", "repository": {"name": "main"}}),
    );
    let st = env.wait_backup(ns, "hook-continue").await.status.unwrap();
    assert_eq!(st.phase, Some(BackupPhase::PartiallyFailed), "{st:#?}");
    assert!(
        st.items.iter().any(|i| i.reason.contains("exit code 7")),
        "{st:#?}"
    );
    assert!(st.manifest.is_some(), "{st:#?}");

    // orLabelSelectors and objects named one by one: the union, and nothing else.
    env.backup(
        ns,
        "or-and-named",
        json!({"selection": {"orLabelSelectors": [{"matchLabels": {"tier": "db"}}, {"matchLabels": {"copy": "live"}}],
                             "objects": [{"kind": "configmap", "name": "settings"}],
                             "volumes": [{"policy": "exclude"}]},
               "repository": {"name": "main"}}),
    );
    let st = env.wait_backup(ns, "or-and-named").await.status.unwrap();
    assert_eq!(st.phase, Some(BackupPhase::Completed), "{st:#?}");
    let (ok, out, err) = coffer_cmd(
        repo,
        &[
            "resources",
            "list",
            st.resources_snapshot.as_deref().unwrap(),
            "--json",
        ],
        &s3_env,
    );
    assert!(ok, "{err}");
    let listed: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    // The namespace's objects: exactly the union (cluster-scoped ones that these need,
    // the PV and StorageClass of the PVC, come along too).
    let mut names: Vec<String> = listed
        .iter()
        .filter(|o| o["namespace"].is_string())
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["name"].as_str().unwrap()
            )
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "ConfigMap/settings",
            "PersistentVolumeClaim/scratch",
            "Pod/db"
        ],
        "{out}"
    );

    // A backup on S3 that completes, with the operator's leader deleted during the data
    // movement: the other replica takes over and finishes it.
    let holder = env.wait_leader().await;
    env.backup(
        ns,
        "shop-1",
        json!({"application": "shop", "repository": {"name": "main"}}),
    );
    env.wait_step(ns, "shop-1", "Movers").await;
    let ops: Api<Pod> = Api::namespaced(env.client.clone(), "coffer-system");
    ops.delete(&holder, &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let st = env.wait_backup(ns, "shop-1").await.status.unwrap();
    assert_eq!(st.phase, Some(BackupPhase::Completed), "{st:#?}");
    assert_ne!(env.wait_leader().await, holder);
    assert_eq!(env.leftovers(ns, "shop-1").await, Vec::<String>::new());

    // Cancel during the data movement: movers that cannot start (an image that does not
    // exist) keep the backup waiting for them; cancel removes everything it made.
    let metrics_port = free_port();
    env.kubectl(
        &[
            "-n",
            "coffer-system",
            "set",
            "env",
            "deployment/coffer-operator",
            "COFFER_MOVER_IMAGE=registry.invalid/none:1",
            &format!("COFFER_METRICS_ADDR=127.0.0.1:{metrics_port}"),
        ],
        None,
    );
    env.kubectl(
        &[
            "-n",
            "coffer-system",
            "rollout",
            "status",
            "deployment/coffer-operator",
            "--timeout=120s",
        ],
        None,
    );
    env.wait_leader().await;
    env.backup(
        ns,
        "to-cancel",
        json!({"application": "shop", "repository": {"name": "main"}}),
    );
    // The live volume's mover cannot start: the backup waits in LiveCopy, the app
    // quiesced; cancel must unquiesce it (the post hook runs) and remove everything.
    let post_markers = || {
        env.exec(ns, "db", "ls /data | grep -c post-marker || true")
            .trim()
            .parse::<u32>()
            .unwrap()
    };
    let markers_before = post_markers();
    env.wait_step(ns, "to-cancel", "LiveCopy").await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(60);
    while pods
        .list(&ListParams::default().labels("coffer.dev/backup=to-cancel"))
        .await
        .unwrap()
        .items
        .is_empty()
    {
        assert!(Instant::now() < deadline, "no mover pod was started");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let backups: Api<Backup> = Api::namespaced(env.client.clone(), ns);
    backups
        .patch(
            "to-cancel",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"cancel": true}})),
        )
        .await
        .unwrap();
    let st = env.wait_backup(ns, "to-cancel").await.status.unwrap();
    assert_eq!(st.phase, Some(BackupPhase::Canceled), "{st:#?}");
    assert_eq!(
        post_markers(),
        markers_before + 1,
        "cancel did not run the post hook"
    );
    // The leader's /metrics counted it (this replica has seen only this backup).
    let mut conn =
        TcpStream::connect(("127.0.0.1", metrics_port)).expect("the leader serves /metrics");
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut metrics = String::new();
    conn.read_to_string(&mut metrics).unwrap();
    for want in [
        "coffer_backups_total{phase=\"Canceled\"} 1",
        "coffer_leader 1",
        "coffer_movers_running",
        "coffer_backup_duration_seconds_count 1",
    ] {
        assert!(
            metrics.contains(want),
            "{want:?} not in /metrics:\n{metrics}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = env.leftovers(ns, "to-cancel").await;
        let snaps = env.kubectl(
            &[
                "-n",
                ns,
                "get",
                "volumesnapshots,volumegroupsnapshots",
                "-l",
                "coffer.dev/backup=to-cancel",
                "-o",
                "name",
            ],
            None,
        );
        if left.is_empty() && snaps.trim().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: {left:?} {snaps}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (ok, out, err) = coffer_cmd(repo, &["check", "--read-data"], &s3_env);
    assert!(ok, "check failed: {out}{err}");
    // A ttl: once it passes, the backup is forgotten and its object deleted.
    env.backup(
        ns,
        "short-lived",
        json!({"selection": {"objects": [{"kind": "configmap", "name": "settings"}], "volumes": [{"policy": "exclude"}]},
               "repository": {"name": "main"}, "ttl": "15s"}),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut saw_it = false;
    loop {
        match backups.get_opt("short-lived").await.unwrap() {
            Some(b) => {
                let st = b.status.unwrap_or_default();
                assert!(
                    !matches!(st.phase, Some(p) if p.is_final() && p != BackupPhase::Completed),
                    "{st:#?}"
                );
                if st.phase == Some(BackupPhase::Completed) {
                    saw_it = true;
                    assert!(st.expiration.is_some(), "{st:#?}");
                }
            }
            None if saw_it => break,
            None => {}
        }
        assert!(Instant::now() < deadline, "the backup did not expire");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !snapshots_now().contains("shop/short-lived"),
        "an expired backup's data stayed"
    );

    // Deleting a Backup whose policy is Delete forgets all of it in the repository; one
    // with Retain keeps it.
    assert!(snapshots_now().contains("shop/shop-1"));
    backups
        .patch(
            "shop-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"deletionPolicy": "Delete"}})),
        )
        .await
        .unwrap();
    backups
        .delete("shop-1", &DeleteParams::default())
        .await
        .unwrap();
    backups
        .delete("hook-continue", &DeleteParams::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while backups.get_opt("shop-1").await.unwrap().is_some()
        || backups.get_opt("hook-continue").await.unwrap().is_some()
    {
        assert!(Instant::now() < deadline, "the Backups were not deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = snapshots_now();
    assert!(
        !after.contains("shop/shop-1"),
        "shop-1 was not forgotten: {after}"
    );
    assert!(
        after.contains("shop/hook-continue"),
        "a Retain backup's data went: {after}"
    );
    assert!(
        !after.contains("to-cancel"),
        "the canceled backup left snapshots: {after}"
    );
    env.cluster.stop().await;
    drop(moto);
}
