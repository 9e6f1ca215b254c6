//! The operator's restore workflow on the test cluster, end to end: Restores made through
//! the API only, PVCs filled by Coffer's volume populator (prime PVC, mover pod, PV
//! rebound), data compared byte for byte with the backed-up volumes.
//! Needs KUBEBUILDER_ASSETS.

mod operator_env;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coffer_api::{Restore, RestorePhase, RestoreStatus, VolumeRestorePhase};
use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams};
use operator_env::*;
use serde_json::json;

fn app_yaml(ns: &str, repo: &Path) -> String {
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
apiVersion: coffer.dev/v1alpha1
kind: BackupRepository
metadata: {{name: main, namespace: {ns}}}
spec:
  location: {repo}
  keySecret: {{name: repo-key}}
  initialize: true
"#,
        repo = repo.display()
    )
}

const APP: &str = r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: NS, labels: {app: shop}}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 32Mi}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: blk, namespace: NS, labels: {app: shop}}
spec: {accessModes: [ReadWriteOnce], volumeMode: Block, resources: {requests: {storage: 16Mi}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: NS, labels: {app: shop}}
data: {color: blue}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: NS, labels: {app: shop}}
spec:
  replicas: 1
  selector: {matchLabels: {app: shop}}
  template:
    metadata: {labels: {app: shop}}
    spec:
      containers:
      - name: web
        image: busybox
        # Writes its data once; a restored copy finds it there and only says so.
        command: [sh, -c, "if [ ! -f /data/hello.txt ]; then echo hello > /data/hello.txt; mkdir -p /data/sub; seq 1 20000 > /data/sub/numbers; ln -s hello.txt /data/link; dd if=/dev/urandom of=/dev/blk bs=1M count=3 seek=5 conv=notrunc 2>/dev/null; touch /data/ready; else touch /data/restored; fi; while true; do sleep 1; done"]
        volumeMounts: [{name: data, mountPath: /data}]
        volumeDevices: [{name: blk, devicePath: /dev/blk}]
      volumes:
      - {name: data, persistentVolumeClaim: {claimName: data}}
      - {name: blk, persistentVolumeClaim: {claimName: blk}}
"#;

/// Every file under `root` (relative path to its contents, or a symlink's target).
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(path);
                out.insert(format!("{rel}/"), Vec::new());
            } else if ft.is_symlink() {
                let t = std::fs::read_link(&path).unwrap();
                out.insert(format!("{rel} ->"), t.display().to_string().into_bytes());
            } else {
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

fn restore(env: &Env, ns: &str, name: &str, spec: serde_json::Value) {
    let r = json!({"apiVersion": "coffer.dev/v1alpha1", "kind": "Restore",
                   "metadata": {"name": name, "namespace": ns}, "spec": spec});
    env.apply(&r.to_string());
}

async fn wait_restore(env: &Env, ns: &str, name: &str) -> RestoreStatus {
    let api: Api<Restore> = Api::namespaced(env.client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let st = api.get(name).await.unwrap().status.unwrap_or_default();
        if st.phase.is_some_and(RestorePhase::is_final) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "restore {name} did not end: {st:#?}\noperator logs:\n{}",
            env.kubectl(
                &[
                    "-n",
                    "coffer-system",
                    "logs",
                    "deploy/coffer-operator",
                    "--tail=30"
                ],
                None
            )
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn wait_restore_step(env: &Env, ns: &str, name: &str, step: &str) {
    let api: Api<Restore> = Api::namespaced(env.client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let st = api.get(name).await.unwrap().status.unwrap_or_default();
        if st.step.as_deref() == Some(step) {
            return;
        }
        assert!(
            Instant::now() < deadline && !st.phase.is_some_and(RestorePhase::is_final),
            "restore {name} never reached step {step}: {st:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Records the names of prime PVCs seen in `ns` until dropped.
fn watch_primes(env: &Env, ns: &str) -> (Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let api: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), ns);
    let s = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            if let Ok(list) = api.list(&ListParams::default()).await {
                for p in list {
                    let name = p.metadata.name.unwrap_or_default();
                    let mut s = s.lock().unwrap();
                    if name.starts_with("coffer-prime-") && !s.contains(&name) {
                        s.push(name);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (seen, task)
}

async fn pvc_names(env: &Env, ns: &str) -> Vec<String> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.metadata.name.unwrap_or_default())
        .collect()
}

/// The running pod of Deployment web in `ns`, once its data is there.
async fn web_pod(env: &Env, ns: &str, marker: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for p in pods
            .list(&ListParams::default().labels("app=shop"))
            .await
            .unwrap()
        {
            let name = p.metadata.name.clone().unwrap_or_default();
            if p.status.and_then(|s| s.phase).as_deref() == Some("Running")
                && env
                    .exec(
                        ns,
                        &name,
                        &format!("test -f /data/{marker} && echo yes || true"),
                    )
                    .trim()
                    == "yes"
            {
                return name;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no web pod in {ns} with /data/{marker}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The data of PVCs `data` (a tree) and `blk` (bytes) in `ns`.
async fn volumes_of(env: &Env, ns: &str) -> (BTreeMap<String, Vec<u8>>, Vec<u8>) {
    let data = env.pv_path(ns, "data", false).await;
    let blk = env.pv_path(ns, "blk", true).await;
    let mut files = tree(&data);
    // What the app writes when it starts on restored data is not backed-up data.
    files.remove("restored");
    files.remove("hook-ran");
    files.remove("init-ran");
    (files, std::fs::read(blk).unwrap())
}

/// Waits until Backup `name` in `ns` exists with `manifest`: brought back from the
/// repository by its BackupRepository.
async fn wait_synced(env: &Env, ns: &str, name: &str, manifest: &str) {
    let backups: Api<coffer_api::Backup> = Api::namespaced(env.client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(b) = backups.get_opt(name).await.unwrap()
            && b.status.as_ref().and_then(|s| s.manifest.as_deref()) == Some(manifest)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "backup {name} did not come back from the repository"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn events_of(env: &Env, ns: &str, pvc: &str) -> Vec<(String, String)> {
    let api: Api<Event> = Api::namespaced(env.client.clone(), ns);
    api.list(&ListParams::default().fields(&format!("involvedObject.name={pvc}")))
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restore_to_new_clone_user_pvc_disaster_recovery_and_bad_input() {
    let env = Env::start().await;
    let repo = env.dir.path().join("repo");
    env.apply(&app_yaml("shop", &repo));
    env.apply(&APP.replace("NS", "shop"));
    web_pod(&env, "shop", "ready").await;
    env.wait_repository("shop", "main").await;
    env.backup(
        "shop",
        "shop-1",
        json!({"selection": {"labelSelector": {"matchLabels": {"app": "shop"}}},
               "repository": {"name": "main"}}),
    );
    let b = env.wait_backup("shop", "shop-1").await;
    let bst = b.status.clone().unwrap();
    assert_eq!(
        bst.phase,
        Some(coffer_api::BackupPhase::Completed),
        "{bst:#?}"
    );
    let manifest = bst.manifest.clone().unwrap();
    let original = volumes_of(&env, "shop").await;
    assert_eq!(original.0["hello.txt"], b"hello\n");
    assert!(original.1.iter().any(|&b| b != 0));

    // 1. Clone into another namespace while the original runs: objects and data there,
    //    filled through prime PVCs that are gone afterwards.
    env.apply(r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop-copy"}}"#);
    let (primes, watcher) = watch_primes(&env, "shop-copy");
    restore(
        &env,
        "shop",
        "to-copy",
        json!({"backup": "shop-1", "namespaceMapping": {"shop": "shop-copy"}}),
    );
    let st = wait_restore(&env, "shop", "to-copy").await;
    assert_eq!(st.phase, Some(RestorePhase::Completed), "{st:#?}");
    assert_eq!(st.volumes.len(), 2, "{st:#?}");
    for v in &st.volumes {
        assert_eq!(v.phase, Some(VolumeRestorePhase::Completed), "{v:#?}");
        assert_eq!(v.method, Some(coffer_api::RestoreMethod::Populator));
        assert_eq!(v.namespace, "shop-copy");
    }
    assert_eq!(st.target_namespaces, vec!["shop-copy".to_string()]);
    let copy = volumes_of(&env, "shop-copy").await;
    assert_eq!(copy.0, original.0, "the restored file tree differs");
    assert!(copy.1 == original.1, "the restored block volume differs");
    web_pod(&env, "shop-copy", "restored").await;
    watcher.abort();
    assert_eq!(
        primes.lock().unwrap().len(),
        2,
        "each PVC through a prime PVC"
    );
    let mut left = pvc_names(&env, "shop-copy").await;
    left.sort();
    assert_eq!(
        left,
        vec!["blk".to_string(), "data".to_string()],
        "no prime PVC left"
    );
    let cm = env.kubectl(
        &[
            "-n",
            "shop-copy",
            "get",
            "configmap",
            "settings",
            "-o",
            "jsonpath={.data.color}",
        ],
        None,
    );
    assert_eq!(cm, "blue");
    // The original is untouched, its app still running on its own data.
    assert_eq!(volumes_of(&env, "shop").await.0, original.0);
    web_pod(&env, "shop", "ready").await;

    // 2. A PVC a user makes with a data source of the backup's VolumeBackup: populated
    //    with no Restore at all; one naming a missing VolumeBackup gets an Event saying so.
    env.apply(
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data-copy, namespace: shop}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 32Mi}}
  dataSourceRef: {apiGroup: coffer.dev, kind: VolumeBackup, name: shop-1-data}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: from-nothing, namespace: shop}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 32Mi}}
  dataSourceRef: {apiGroup: coffer.dev, kind: VolumeBackup, name: no-such-backup}
"#,
    );
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), "shop");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let p = pvcs.get("data-copy").await.unwrap();
        if p.status.and_then(|s| s.phase).as_deref() == Some("Bound") {
            break;
        }
        assert!(Instant::now() < deadline, "data-copy was never populated");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        tree(&env.pv_path("shop", "data-copy", false).await),
        original.0
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = events_of(&env, "shop", "from-nothing").await;
        if let Some((_, msg)) = events.iter().find(|(r, _)| r == "VolumeBackupNotFound") {
            assert!(
                msg.contains("shop/no-such-backup") && msg.contains("does not exist"),
                "{msg}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no event on from-nothing: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let p = pvcs.get("from-nothing").await.unwrap();
    assert_eq!(p.status.and_then(|s| s.phase).as_deref(), Some("Pending"));

    // 3. Bad input: each a Failed restore with a message that says what to fix.
    for (name, spec, expect) in [
        (
            "missing",
            json!({"backup": "nope"}),
            "Backup shop/nope does not exist",
        ),
        (
            "no-manifest",
            json!({"repository": {"name": "main"}, "manifest": "00000000deadbeef"}),
            "is not in repository",
        ),
        (
            "bad-class",
            json!({"backup": "shop-1", "namespaceMapping": {"shop": "shop-x"},
                   "storageClassMapping": {"coffer-sim": "gold"}}),
            "StorageClass gold",
        ),
        (
            "clone-in-place",
            json!({"backup": "shop-1", "mode": "inPlace", "clone": "copy"}),
            "goes with mode new",
        ),
    ] {
        restore(&env, "shop", name, spec);
        let st = wait_restore(&env, "shop", name).await;
        assert_eq!(st.phase, Some(RestorePhase::Failed), "{name}: {st:#?}");
        let msg = st.message.clone().unwrap_or_default();
        assert!(msg.contains(expect), "{name}: {msg}");
    }

    // In place, with rollback: the running app's data and ConfigMap changed and a Secret
    // added; the restore scales it down, writes only the differing blocks of the Block
    // PVC, removes the file the backup did not have, puts the ConfigMap back, deletes the
    // Secret, and gives the Deployment its replicas back.
    env.kubectl(
        &["-n", "shop", "scale", "deployment", "web", "--replicas=2"],
        None,
    );
    let pod = web_pod(&env, "shop", "ready").await;
    env.exec(
        "shop",
        &pod,
        "echo changed > /data/hello.txt; echo new > /data/new.txt; rm /data/link; dd if=/dev/urandom of=/dev/blk bs=1M count=1 seek=6 conv=notrunc 2>/dev/null",
    );
    env.kubectl(
        &[
            "-n",
            "shop",
            "patch",
            "configmap",
            "settings",
            "--type=merge",
            "-p",
            r#"{"data": {"color": "red"}}"#,
        ],
        None,
    );
    env.apply("apiVersion: v1\nkind: Secret\nmetadata: {name: extra, namespace: shop, labels: {app: shop}}\nstringData: {k: v}\n");
    let changed = volumes_of(&env, "shop").await;
    assert_ne!(changed.0, original.0);
    assert!(changed.1 != original.1);
    restore(
        &env,
        "shop",
        "back",
        json!({"backup": "shop-1", "mode": "inPlace", "rollback": true, "labelSelector": "app=shop"}),
    );
    let st = wait_restore(&env, "shop", "back").await;
    assert_eq!(st.phase, Some(RestorePhase::Completed), "{st:#?}");
    let now = volumes_of(&env, "shop").await;
    assert_eq!(now.0, original.0, "the file tree is not as backed up");
    assert!(now.1 == original.1, "the block volume is not as backed up");
    let blk = st.volumes.iter().find(|v| v.pvc == "blk").unwrap();
    assert_eq!(blk.method, Some(coffer_api::RestoreMethod::Delta));
    assert!(
        blk.bytes_written > 0 && blk.bytes_written < blk.bytes_total.max(16 << 20) / 4,
        "a delta writes only what changed: {blk:#?}"
    );
    assert_eq!(
        st.scaled,
        vec![coffer_api::ScaledWorkload {
            kind: "Deployment".into(),
            namespace: "shop".into(),
            name: "web".into(),
            replicas: 2
        }]
    );
    let cm = env.kubectl(
        &[
            "-n",
            "shop",
            "get",
            "configmap",
            "settings",
            "-o",
            "jsonpath={.data.color}",
        ],
        None,
    );
    assert_eq!(cm, "blue");
    let secrets = env.kubectl(&["-n", "shop", "get", "secrets", "-o", "name"], None);
    assert!(!secrets.contains("secret/extra"), "{secrets}");
    let replicas = env.kubectl(
        &[
            "-n",
            "shop",
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.replicas}",
        ],
        None,
    );
    assert_eq!(replicas, "2");
    web_pod(&env, "shop", "restored").await;
    let left = env.kubectl(
        &[
            "-n",
            "shop",
            "get",
            "pods",
            "-l",
            "coffer.dev/restore",
            "-o",
            "name",
        ],
        None,
    );
    assert!(left.trim().is_empty(), "mover pods left: {left}");

    // 4. WaitForFirstConsumer storage: the PVCs wait for a pod, and the populator for the
    //    scheduler's node; the operator's leader deleted meanwhile, a new one carries on.
    let late = json!({"backup": "shop-1", "namespaceMapping": {"shop": "shop-late"},
                      "storageClassMapping": {"coffer-sim": coffer_testcluster::STORAGE_CLASS_WFFC},
                      "excludeResources": ["deployments", "replicasets", "pods"]});
    restore(&env, "shop", "late", late.clone());
    wait_restore_step(&env, "shop", "late", "Volumes").await;
    let late_pvcs: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), "shop-late");
    for name in ["data", "blk"] {
        let p = late_pvcs.get(name).await.unwrap();
        assert_eq!(
            p.status.and_then(|s| s.phase).as_deref(),
            Some("Pending"),
            "{name} waits for its consumer"
        );
    }
    let leader = env.wait_leader().await;
    env.kubectl(
        &[
            "-n",
            "coffer-system",
            "delete",
            "pod",
            &leader,
            "--wait=false",
        ],
        None,
    );
    env.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: consumer, namespace: shop-late}
spec:
  containers:
  - name: c
    image: busybox
    command: [sh, -c, "while true; do sleep 1; done"]
    volumeMounts: [{name: data, mountPath: /data}]
    volumeDevices: [{name: blk, devicePath: /dev/blk}]
  volumes:
  - {name: data, persistentVolumeClaim: {claimName: data}}
  - {name: blk, persistentVolumeClaim: {claimName: blk}}
"#,
    );
    let st = wait_restore(&env, "shop", "late").await;
    assert_eq!(st.phase, Some(RestorePhase::Completed), "{st:#?}");
    let late_data = volumes_of(&env, "shop-late").await;
    assert_eq!(late_data.0, original.0);
    assert!(
        late_data.1 == original.1,
        "the block volume differs (WaitForFirstConsumer)"
    );
    assert!(env.wait_leader().await != leader);

    // 5. Cancel while the PVCs wait: the restore ends Canceled, and the PVCs it made and its
    //    VolumeBackups are gone (no prime PVC, pod or half-bound PVC stays).
    let mut stop = late;
    stop["namespaceMapping"] = json!({"shop": "shop-stop"});
    restore(&env, "shop", "stopped", stop);
    wait_restore_step(&env, "shop", "stopped", "Volumes").await;
    env.kubectl(
        &[
            "-n",
            "shop",
            "patch",
            "restore",
            "stopped",
            "--type=merge",
            "-p",
            r#"{"spec": {"cancel": true}}"#,
        ],
        None,
    );
    let st = wait_restore(&env, "shop", "stopped").await;
    assert_eq!(st.phase, Some(RestorePhase::Canceled), "{st:#?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pvc_names(&env, "shop-stop").await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "PVCs left after cancel: {:?}",
            pvc_names(&env, "shop-stop").await
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let vbs: Api<coffer_api::VolumeBackup> = Api::namespaced(env.client.clone(), "shop-stop");
    assert!(
        vbs.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // 6. Disaster recovery: the namespaces deleted (Backup and VolumeBackups with them), the
    //    repository declared again: the backup reappears from its manifest, and a Restore
    //    of it brings the app back with its data.
    env.kubectl(
        &[
            "delete",
            "namespace",
            "shop",
            "shop-copy",
            "--wait=true",
            "--timeout=120s",
        ],
        None,
    );
    env.apply(&app_yaml("shop", &repo));
    wait_synced(&env, "shop", "shop-1", &manifest).await;
    // With restore hooks: one that reads the restored data once the pod is Ready, one
    // that fails with onError Continue (the restore ends PartiallyFailed, naming it).
    restore(
        &env,
        "shop",
        "dr",
        json!({"backup": "shop-1", "hooks": [{"name": "check",
        "labelSelector": {"matchLabels": {"app": "shop"}},
        "init": [{"name": "mark", "image": "busybox", "command": ["sh", "-c", "echo init > /data/init-ran"],
                  "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
        "post": [
            {"exec": {"command": ["sh", "-c", "cp /data/hello.txt /data/hook-ran"]}, "waitTimeout": "2m"},
            {"exec": {"command": ["sh", "-c", "echo broken >&2; exit 3"], "onError": "Continue"}}
        ]}]}),
    );
    let st = wait_restore(&env, "shop", "dr").await;
    assert_eq!(st.phase, Some(RestorePhase::PartiallyFailed), "{st:#?}");
    let hooks = st.hooks.clone().unwrap();
    assert_eq!((hooks.attempted, hooks.failed), (2, 1), "{st:#?}");
    let failed = st
        .items
        .iter()
        .find(|i| i.kind == coffer_api::ItemKind::Hook)
        .unwrap();
    assert!(
        failed.reason.contains("\"check\"") && failed.reason.contains("exit code 3"),
        "{failed:?}"
    );
    assert!(
        st.volumes
            .iter()
            .all(|v| v.phase == Some(VolumeRestorePhase::Completed))
    );
    let pod = web_pod(&env, "shop", "hook-ran").await;
    assert_eq!(env.exec("shop", &pod, "cat /data/hook-ran"), "hello\n");
    // The init container was injected, and ran before the app, on the restored volume.
    let init = env.kubectl(
        &[
            "-n",
            "shop",
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.initContainers[0].name}",
        ],
        None,
    );
    assert_eq!(init, "mark");
    assert_eq!(env.exec("shop", &pod, "cat /data/init-ran"), "init\n");
    let back = volumes_of(&env, "shop").await;
    assert_eq!(back.0, original.0);
    assert!(back.1 == original.1, "the block volume differs after DR");
    web_pod(&env, "shop", "restored").await;
    // And once more from the manifest id alone, into another namespace, with the CLI.
    let out = std::process::Command::new(coffer())
        .args([
            "restore",
            "create",
            "dr-manifest",
            "-n",
            "shop",
            "--from-manifest",
            &manifest[..12],
        ])
        .args([
            "--kubeconfig",
            env.cluster.kubeconfig_path().to_str().unwrap(),
        ])
        .args([
            "--repository",
            "main",
            "--namespace-mapping",
            "shop=shop-dr",
            "--wait",
            "--timeout",
            "3m",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "coffer restore create failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Completed"), "{stdout}");
    assert_eq!(volumes_of(&env, "shop-dr").await.0, original.0);
    let listed = std::process::Command::new(coffer())
        .args(["restore", "get", "-n", "shop"])
        .args([
            "--kubeconfig",
            env.cluster.kubeconfig_path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("dr-manifest") && listed.contains("Completed"),
        "{listed}"
    );
    env.cluster.stop().await;
}

/// More of the app, for comparing specs across clusters: a Service and a Secret.
const MORE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: NS, labels: {app: shop}}
spec: {selector: {app: shop}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Secret
metadata: {name: app-secret, namespace: NS, labels: {app: shop}}
type: Opaque
stringData: {token: "s3cr3t"}
"#;

/// An object as kubectl gets it (JSON).
fn object(env: &Env, ns: &str, kind_name: &str) -> serde_json::Value {
    serde_json::from_str(&env.kubectl(&["-n", ns, "get", kind_name, "-o", "json"], None)).unwrap()
}

/// What must be equal between an object and its restored copy: what a user wrote, not
/// what the cluster assigned (a Service's cluster IPs) or the restore records.
fn user_part(kind_name: &str, o: &serde_json::Value) -> serde_json::Value {
    let mut v = match kind_name.split('/').next().unwrap() {
        "configmap" | "secret" => json!({"data": o["data"], "type": o["type"]}),
        "service" => {
            let mut spec = o["spec"].clone();
            for assigned in ["clusterIP", "clusterIPs"] {
                spec.as_object_mut().unwrap().remove(assigned);
            }
            spec
        }
        "persistentvolumeclaim" => json!({
            "accessModes": o["spec"]["accessModes"],
            "resources": o["spec"]["resources"],
            "volumeMode": o["spec"]["volumeMode"],
            "storageClassName": o["spec"]["storageClassName"],
        }),
        _ => o["spec"].clone(),
    };
    v["labels"] = o["metadata"]["labels"].clone();
    if let Some(l) = v["labels"].as_object_mut() {
        l.remove("coffer.dev/restore");
    }
    v
}

const COMPARED: &[&str] = &[
    "configmap/settings",
    "secret/app-secret",
    "service/web",
    "deployment/web",
    "persistentvolumeclaim/data",
    "persistentvolumeclaim/blk",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clone_beside_the_original_then_disaster_recovery_in_a_second_cluster() {
    // The repository outlives the first cluster.
    let keep = tempfile::tempdir().unwrap();
    let repo = keep.path().join("repo");
    let env = Env::start().await;
    env.apply(&app_yaml("shop", &repo));
    env.apply(&APP.replace("NS", "shop"));
    env.apply(&MORE.replace("NS", "shop"));
    web_pod(&env, "shop", "ready").await;
    env.wait_repository("shop", "main").await;
    env.backup(
        "shop",
        "shop-1",
        json!({"selection": {"labelSelector": {"matchLabels": {"app": "shop"}}},
               "repository": {"name": "main"}}),
    );
    let bst = env.wait_backup("shop", "shop-1").await.status.unwrap();
    assert_eq!(
        bst.phase,
        Some(coffer_api::BackupPhase::Completed),
        "{bst:#?}"
    );
    let snapshot = bst.resources_snapshot.clone().unwrap();
    let manifest = bst.manifest.clone().unwrap();
    let original = volumes_of(&env, "shop").await;
    let originals: Vec<serde_json::Value> =
        COMPARED.iter().map(|k| object(&env, "shop", k)).collect();

    // 1. A clone in the same namespace, beside the running original: every object renamed
    //    with the suffix and marked with its origin, its own PVCs filled from the backup,
    //    its pods selected apart from the original's.
    restore(
        &env,
        "shop",
        "clone",
        json!({"backup": "shop-1", "clone": "copy"}),
    );
    let st = wait_restore(&env, "shop", "clone").await;
    assert_eq!(st.phase, Some(RestorePhase::Completed), "{st:#?}");
    let mut filled: Vec<&str> = st.volumes.iter().map(|v| v.pvc.as_str()).collect();
    filled.sort();
    assert_eq!(filled, ["blk-copy", "data-copy"], "{st:#?}");
    assert!(
        st.volumes
            .iter()
            .all(|v| v.phase == Some(VolumeRestorePhase::Completed)),
        "{st:#?}"
    );
    for (k, o) in COMPARED.iter().zip(&originals) {
        let copy = object(&env, "shop", &format!("{k}-copy"));
        let a = &copy["metadata"]["annotations"];
        let name = k.split_once('/').unwrap().1;
        // CLUSTER/NAMESPACE/NAME, CLUSTER as the backup recorded it.
        let origin = a["coffer.dev/clone-of"].as_str().unwrap_or_default();
        assert!(
            origin.ends_with(&format!("/shop/{name}")) && !origin.starts_with('/'),
            "{k}-copy: {a}"
        );
        assert_eq!(a["coffer.dev/backup-id"], json!(snapshot), "{k}-copy: {a}");
        // The clone's selectors and pod labels carry the suffix; the rest is the same.
        let mut want = user_part(k, o);
        let mut got = user_part(k, &copy);
        for v in [&mut want, &mut got] {
            v["labels"] = json!(null);
            for p in [
                "/selector",
                "/selector/matchLabels",
                "/template/metadata/labels",
            ] {
                if let Some(m) = v.pointer_mut(p).and_then(|m| m.as_object_mut()) {
                    m.remove("app");
                }
            }
            for p in [
                "/template/spec/volumes/0/persistentVolumeClaim/claimName",
                "/template/spec/volumes/1/persistentVolumeClaim/claimName",
            ] {
                if let Some(c) = v.pointer_mut(p) {
                    *c = json!(c.as_str().unwrap().trim_end_matches("-copy"));
                }
            }
        }
        assert_eq!(
            got, want,
            "{k}-copy differs from {k} beyond the clone's renames"
        );
    }
    let deploy = object(&env, "shop", "deployment/web-copy");
    assert_eq!(
        deploy["spec"]["selector"]["matchLabels"]["app"],
        "shop-copy"
    );
    let data = env.pv_path("shop", "data-copy", false).await;
    let blk = env.pv_path("shop", "blk-copy", true).await;
    let mut files = tree(&data);
    files.remove("restored");
    assert_eq!(files, original.0, "the clone's file tree differs");
    assert!(
        std::fs::read(&blk).unwrap() == original.1,
        "the clone's block volume differs"
    );
    // Both run, each on its own data: the clone's pod finds its restored data, and what
    // it writes is not in the original's volume.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "shop");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !data.join("restored").exists() {
        assert!(
            Instant::now() < deadline,
            "the clone's pod never started on its data"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        !env.pv_path("shop", "data", false)
            .await
            .join("restored")
            .exists()
    );
    let running = pods
        .list(&ListParams::default().labels("app=shop-copy"))
        .await
        .unwrap();
    assert_eq!(running.items.len(), 1, "one clone pod");
    web_pod(&env, "shop", "ready").await;

    // 2. The first cluster is gone. A second one, with its own operator, is pointed at the
    //    same repository (read-only): the backup appears, and a Restore brings the app
    //    back with its data and its objects as they were.
    let Env {
        cluster,
        dir: first_dir,
        ..
    } = env;
    cluster.stop().await;
    drop(first_dir);
    let env = Env::start().await;
    env.apply(&app_yaml("shop", &repo).replace("initialize: true", "readOnly: true"));
    wait_synced(&env, "shop", "shop-1", &manifest).await;
    restore(&env, "shop", "dr", json!({"backup": "shop-1"}));
    let st = wait_restore(&env, "shop", "dr").await;
    assert_eq!(st.phase, Some(RestorePhase::Completed), "{st:#?}");
    assert!(
        st.volumes.len() == 2
            && st
                .volumes
                .iter()
                .all(|v| v.phase == Some(VolumeRestorePhase::Completed)),
        "{st:#?}"
    );
    web_pod(&env, "shop", "restored").await;
    let back = volumes_of(&env, "shop").await;
    assert_eq!(back.0, original.0, "the file tree differs after DR");
    assert!(back.1 == original.1, "the block volume differs after DR");
    for (k, o) in COMPARED.iter().zip(&originals) {
        assert_eq!(
            user_part(k, &object(&env, "shop", k)),
            user_part(k, o),
            "{k} differs in the second cluster"
        );
    }
    env.cluster.stop().await;
}
