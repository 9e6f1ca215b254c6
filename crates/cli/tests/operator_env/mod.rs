//! What the operator's workflow tests share: a test cluster with the operator installed
//! from deploy/ (`kubectl apply -k`, two replicas, its own RBAC) running the real `coffer`
//! binary, and the waits and commands the tests use against it.

// Each test binary uses part of it.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coffer_api::{Backup, BackupPhase, BackupRepository};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams};
use serde_json::json;

pub const PASSWORD: &str = "operator test password";

pub fn coffer() -> &'static str {
    env!("CARGO_BIN_EXE_coffer")
}

pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

pub struct Env {
    pub cluster: coffer_testcluster::TestCluster,
    pub dir: tempfile::TempDir,
    pub client: kube::Client,
}

impl Env {
    pub async fn start() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let options = coffer_testcluster::Options {
            coffer_bin: Some(coffer().into()),
            ..Default::default()
        };
        let cluster = coffer_testcluster::TestCluster::start_with(dir.path().join("c"), options)
            .await
            .expect("test cluster");
        let client = cluster.client();
        let env = Env {
            cluster,
            dir,
            client,
        };
        // The install, exactly as a user runs it.
        env.kubectl(&["apply", "-k", deploy_dir().to_str().unwrap()], None);
        env.wait_leader().await;
        env
    }

    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(self.cluster.kubeconfig_path())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl");
        {
            let mut w = child.stdin.take().unwrap();
            if let Some(s) = stdin {
                w.write_all(s.as_bytes()).unwrap();
            }
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn apply(&self, yaml: &str) {
        self.kubectl(&["apply", "-f", "-"], Some(yaml));
    }

    /// The operator's pods are up and one holds the Lease; returns the holder.
    pub async fn wait_leader(&self) -> String {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), "coffer-system");
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "coffer-system");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(l) = leases.get_opt("coffer-operator").await.unwrap()
                && let Some(holder) = l.spec.and_then(|s| s.holder_identity)
                && pods
                    .get_opt(&holder)
                    .await
                    .unwrap()
                    .is_some_and(|p| p.metadata.deletion_timestamp.is_none())
            {
                return holder;
            }
            assert!(Instant::now() < deadline, "no operator took the Lease");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    pub async fn wait_repository(&self, ns: &str, name: &str) -> coffer_api::RepositoryStatus {
        let api: Api<BackupRepository> = Api::namespaced(self.client.clone(), ns);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(s) = api.get(name).await.unwrap().status
                && s.phase.is_some()
            {
                return s;
            }
            assert!(Instant::now() < deadline, "repository {name} never checked");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    pub async fn wait_backup(&self, ns: &str, name: &str) -> Backup {
        let api: Api<Backup> = Api::namespaced(self.client.clone(), ns);
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            let b = api.get(name).await.unwrap();
            if b.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(BackupPhase::is_final)
            {
                return b;
            }
            assert!(
                Instant::now() < deadline,
                "backup {name} did not end: {:#?}\noperator logs:\n{}",
                b.status,
                self.kubectl(
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

    pub async fn wait_step(&self, ns: &str, name: &str, step: &str) {
        let api: Api<Backup> = Api::namespaced(self.client.clone(), ns);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let b = api.get(name).await.unwrap();
            let st = b.status.clone().unwrap_or_default();
            if st.step.as_deref() == Some(step) {
                return;
            }
            assert!(
                Instant::now() < deadline && !st.phase.is_some_and(BackupPhase::is_final),
                "backup {name} never reached step {step}: {st:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn backup(&self, ns: &str, name: &str, spec: serde_json::Value) {
        let b = json!({"apiVersion": "coffer.dev/v1alpha1", "kind": "Backup",
                       "metadata": {"name": name, "namespace": ns}, "spec": spec});
        self.apply(&b.to_string());
    }

    pub async fn pv_path(&self, ns: &str, pvc: &str, block: bool) -> PathBuf {
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        let pv = pvcs
            .get(pvc)
            .await
            .unwrap()
            .spec
            .unwrap()
            .volume_name
            .unwrap();
        self.cluster.storage().volume_path(&pv, block)
    }

    /// Runs a command in pod `ns/pod` through kubectl exec.
    pub fn exec(&self, ns: &str, pod: &str, script: &str) -> String {
        self.kubectl(&["-n", ns, "exec", pod, "--", "sh", "-c", script], None)
    }

    pub async fn wait_pod_running(&self, ns: &str, name: &str) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let p = pods.get(name).await.unwrap();
            if p.status.and_then(|s| s.phase).as_deref() == Some("Running") {
                return;
            }
            assert!(Instant::now() < deadline, "pod {name} did not run");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Objects a backup may leave behind: mover pods, their PVCs, its Secret.
    pub async fn leftovers(&self, ns: &str, backup: &str) -> Vec<String> {
        let lp = ListParams::default().labels(&format!("coffer.dev/backup={backup}"));
        let mut out = Vec::new();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        for p in pods.list(&lp).await.unwrap() {
            if p.metadata.deletion_timestamp.is_none() {
                out.push(format!("pod {}", p.metadata.name.unwrap()));
            }
        }
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        for p in pvcs.list(&lp).await.unwrap() {
            if p.metadata.deletion_timestamp.is_none() {
                out.push(format!("pvc {}", p.metadata.name.unwrap()));
            }
        }
        out
    }
}

pub fn coffer_cmd(repo: &str, args: &[&str], envs: &[(&str, String)]) -> (bool, String, String) {
    let mut cmd = Command::new(coffer());
    cmd.arg("--repo")
        .arg(repo)
        .args(args)
        .env("COFFER_PASSWORD", PASSWORD);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
