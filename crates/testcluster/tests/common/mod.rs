#![allow(dead_code)]
//! Helpers shared by the test cluster's tests.

use std::time::Duration;

use coffer_testcluster::TestCluster;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::wait::await_condition;

pub async fn start() -> (tempfile::TempDir, TestCluster) {
    if let Ok(filter) = std::env::var("COFFER_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = TestCluster::start(dir.path())
        .await
        .expect("start test cluster");
    (dir, cluster)
}

pub fn pod_phase(p: Option<&Pod>) -> Option<String> {
    p.and_then(|p| p.status.as_ref())
        .and_then(|s| s.phase.clone())
}

/// Waits until the pod's phase is one of `phases`.
pub async fn wait_phase(api: &Api<Pod>, name: &str, phases: &[&str], secs: u64) -> Pod {
    let phases: Vec<String> = phases.iter().map(|s| s.to_string()).collect();
    let cond = move |p: Option<&Pod>| pod_phase(p).is_some_and(|ph| phases.contains(&ph));
    match tokio::time::timeout(
        Duration::from_secs(secs),
        await_condition(api.clone(), name, cond),
    )
    .await
    {
        Ok(Ok(Some(p))) => p,
        other => {
            let p = api.get_opt(name).await.ok().flatten();
            panic!(
                "pod {name} did not reach the phase: {other:?}; pod: {:#?}",
                p.and_then(|p| p.status)
            );
        }
    }
}

pub fn alive(pid: i32) -> bool {
    // Zombies count as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

pub fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("object")
}

/// Runs kubectl against the cluster: (success, stdout, stderr).
pub fn kubectl(cluster: &TestCluster, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path())
        .args(args)
        .output()
        .expect("kubectl (apt-get install kubernetes-client)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Retries kubectl until it succeeds with an output that `ok` accepts; returns it.
pub async fn kubectl_until(
    cluster: &TestCluster,
    args: &[&str],
    secs: u64,
    ok: impl Fn(&str) -> bool,
) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let (success, out, err) = kubectl(cluster, args);
        if success && ok(&out) {
            return out;
        }
        if std::time::Instant::now() > deadline {
            panic!("kubectl {args:?}: never as expected; last: {out} {err}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs a pod with the PVC `claim` at /data that runs `command` (restartPolicy Never)
/// until it succeeds, and returns its logs.
pub async fn pod_output(api: &Api<Pod>, name: &str, claim: &str, command: &[&str]) -> String {
    let pod = obj(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x",
            "command": command, "volumeMounts": [{"name": "v", "mountPath": "/data"}]}],
            "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]},
    }));
    api.create(&Default::default(), &pod).await.unwrap();
    wait_phase(api, name, &["Succeeded"], 60).await;
    api.logs(name, &Default::default()).await.unwrap()
}
