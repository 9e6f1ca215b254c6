//! `coffer dev cluster` driven by kubectl, and pods that run the real coffer binary.
//! Needs KUBEBUILDER_ASSETS and kubectl (Debian: kubernetes-client).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl (apt-get install kubernetes-client)");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn kubectl_apply(kubeconfig: &Path, yaml: &str) {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Retries a kubectl command until it succeeds and `ok` accepts its output.
fn eventually(kubeconfig: &Path, args: &[&str], secs: u64, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && ok(&stdout) {
            return stdout;
        }
        if Instant::now() > deadline {
            panic!(
                "kubectl {args:?}: never as expected; last: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// Descendants of a process (through /proc/*/stat ppid links).
fn descendants(root: i32) -> Vec<i32> {
    let mut all = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            let rest = stat.rsplit(')').next().unwrap_or("");
            let ppid: i32 = rest
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            all.push((pid, ppid));
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(all.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out.remove(0);
    out
}

const APP: &str = r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: demo}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 16Mi}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: app, namespace: demo}
spec:
  replicas: 1
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: app
        image: busybox
        command: [sh, -c, "echo hi > /data/f; echo app-ready; exec sleep 3600"]
        volumeMounts: [{name: data, mountPath: /data}]
      volumes:
      - name: data
        persistentVolumeClaim: {claimName: data}
"#;

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.test.coffer.dev}
spec:
  group: test.coffer.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, properties: {size: {type: integer}}}
"#;

const RESTORE: &str = r#"
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {name: snap, namespace: demo}
spec:
  source: {persistentVolumeClaimName: data}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: restored, namespace: demo}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 16Mi}}
  dataSource: {apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: snap}
---
apiVersion: v1
kind: Pod
metadata: {name: reader, namespace: demo}
spec:
  restartPolicy: Never
  containers:
  - {name: c, image: busybox, command: [cat, /r/f], volumeMounts: [{name: r, mountPath: /r}]}
  volumes:
  - {name: r, persistentVolumeClaim: {claimName: restored}}
"#;

#[test]
fn kubectl_against_coffer_dev_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(["dev", "cluster", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    // Whatever happens, the cluster stops with the test.
    struct Stop(i32);
    impl Drop for Stop {
        fn drop(&mut self) {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.0, libc::SIGTERM) };
            for _ in 0..100 {
                if !alive(self.0) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            // SAFETY: as above.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
    let _stop = Stop(pid);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("output").unwrap();
    assert!(first.starts_with("cluster ready"), "{first}");
    let kc = dir.path().join("kubeconfig");
    assert!(kc.is_file());

    kubectl(&kc, &["create", "namespace", "demo"]);
    eventually(
        &kc,
        &["-n", "demo", "get", "serviceaccount", "default"],
        30,
        |_| true,
    );
    kubectl_apply(&kc, APP);
    kubectl(
        &kc,
        &[
            "-n",
            "demo",
            "rollout",
            "status",
            "deployment/app",
            "--timeout=90s",
        ],
    );
    let out = eventually(
        &kc,
        &["-n", "demo", "exec", "deploy/app", "--", "cat", "/data/f"],
        30,
        |s| s.trim() == "hi",
    );
    assert_eq!(out.trim(), "hi");
    let logs = eventually(&kc, &["-n", "demo", "logs", "deploy/app"], 30, |s| {
        s.contains("app-ready")
    });
    assert!(logs.contains("app-ready"));

    // Scale to 0 and back.
    kubectl(
        &kc,
        &["-n", "demo", "scale", "deployment/app", "--replicas=0"],
    );
    eventually(
        &kc,
        &["-n", "demo", "get", "pods", "-l", "app=app", "-o", "name"],
        60,
        |s| s.trim().is_empty(),
    );
    kubectl(
        &kc,
        &["-n", "demo", "scale", "deployment/app", "--replicas=1"],
    );
    kubectl(
        &kc,
        &[
            "-n",
            "demo",
            "rollout",
            "status",
            "deployment/app",
            "--timeout=90s",
        ],
    );
    eventually(
        &kc,
        &["-n", "demo", "exec", "deploy/app", "--", "cat", "/data/f"],
        30,
        |s| s.trim() == "hi",
    );

    // A CRD and a custom resource.
    kubectl_apply(&kc, CRD);
    kubectl(
        &kc,
        &[
            "wait",
            "--for=condition=established",
            "crd/widgets.test.coffer.dev",
            "--timeout=30s",
        ],
    );
    kubectl_apply(
        &kc,
        "apiVersion: test.coffer.dev/v1\nkind: Widget\nmetadata: {name: w1, namespace: demo}\nspec: {size: 3}\n",
    );
    assert_eq!(
        kubectl(
            &kc,
            &[
                "-n",
                "demo",
                "get",
                "widget",
                "w1",
                "-o",
                "jsonpath={.spec.size}"
            ]
        ),
        "3"
    );

    // kubectl get -w sees changes.
    let mut watch = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["-n", "demo", "get", "configmaps", "-w", "-o", "name"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let wout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(wout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The watch is running once it has listed what exists (the namespace's root CA).
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("kubectl get -w lists the existing ConfigMaps");
    assert!(first.starts_with("configmap/"), "{first}");
    kubectl(
        &kc,
        &[
            "-n",
            "demo",
            "create",
            "configmap",
            "watched",
            "--from-literal=k=v",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = false;
    while Instant::now() < deadline && !seen {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            seen = l.contains("configmap/watched");
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(seen, "kubectl get -w did not show the new ConfigMap");

    // A VolumeSnapshot and a PVC restored from it hold the data.
    kubectl_apply(&kc, RESTORE);
    kubectl(
        &kc,
        &[
            "-n",
            "demo",
            "wait",
            "--for=jsonpath={.status.readyToUse}=true",
            "volumesnapshot/snap",
            "--timeout=60s",
        ],
    );
    kubectl(
        &kc,
        &[
            "-n",
            "demo",
            "wait",
            "--for=jsonpath={.status.phase}=Succeeded",
            "pod/reader",
            "--timeout=60s",
        ],
    );
    assert_eq!(kubectl(&kc, &["-n", "demo", "logs", "reader"]).trim(), "hi");

    // Delete the namespace and see it gone.
    kubectl(&kc, &["delete", "namespace", "demo", "--timeout=120s"]);
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["get", "namespace", "demo"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "namespace still there");

    // SIGTERM stops the cluster and every process it started.
    let procs = descendants(pid);
    assert!(procs.len() >= 4, "{procs:?}");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // Its children are reaped by it before it exits; wait (with a deadline) for the
    // grandchildren the kernel reparents.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left = procs;
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        left.retain(|p| alive(*p));
    }
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_running_the_coffer_binary() {
    use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
    use kube::api::{Api, PostParams};
    use serde_json::json;

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
    pvcs.create(&PostParams::default(), &serde_json::from_value(json!({
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}},
    })).unwrap()).await.unwrap();
    // The coffer binary (image coffer, no command) runs with the PVC at /data: it creates
    // its cluster directory there, then fails for want of KUBEBUILDER_ASSETS (exit code 1).
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "coffer"},
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "coffer", "image": "ghcr.io/example/coffer:1.0",
                "args": ["dev", "cluster", "--dir", "/data/from-coffer"],
                "volumeMounts": [{"name": "d", "mountPath": "/data"}]}],
                "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]},
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let pod = loop {
        let p = pods.get("coffer").await.unwrap();
        if matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Failed" | "Succeeded")
        ) {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "pod did not finish: {:?}",
            p.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Failed")
    );
    let term = pod.status.unwrap().container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(term.exit_code, 1);
    let logs = pods.logs("coffer", &Default::default()).await.unwrap();
    assert!(logs.contains("KUBEBUILDER_ASSETS"), "{logs}");
    let pv = pvcs
        .get("data")
        .await
        .unwrap()
        .spec
        .unwrap()
        .volume_name
        .unwrap();
    assert!(
        cluster
            .storage()
            .volume_path(&pv, false)
            .join("from-coffer")
            .is_dir()
    );

    // `coffer --version` in a pod exits 0 and its output is in the logs.
    pods.create(&PostParams::default(), &serde_json::from_value(json!({
        "metadata": {"name": "version"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "coffer", "args": ["--version"]}]},
    })).unwrap()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = pods.get("version").await.unwrap();
        if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pod did not succeed: {:?}",
            p.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        pods.logs("version", &Default::default())
            .await
            .unwrap()
            .starts_with("coffer ")
    );
    cluster.stop().await;
}
