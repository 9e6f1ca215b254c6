//! Memory flat in the object count: a resources backup of a namespace of 10,000
//! ConfigMaps peaks at the memory of one of 1,000, both for `coffer resources backup`
//! (the process's peak RSS, from wait4) and for the operator (the leader's VmHWM across
//! a Backup of each namespace). Before catalog format 2 a backup held every object and
//! entry while storing them (about 6 KB an object: 127 MiB for 10,000 in the operator).
//!
//! Memory only: nothing here is timed.

mod operator_env;

use std::process::Command;

use coffer_api::BackupPhase;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, PostParams};
use operator_env::*;
use serde_json::json;

const SMALL: usize = 1_000;
const BIG: usize = 10_000;

/// Peak memory allowed at BIG objects: this times the SMALL figure, plus a little for
/// what legitimately grows (the writer session's per-chunk sets: ~100 bytes a chunk).
const FLAT: f64 = 1.25;

async fn create_config_maps(client: &kube::Client, ns: &str, n: usize) {
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
    )
    .await
    .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    stream::iter(0..n)
        .map(|i| {
            let cms = cms.clone();
            async move {
                let cm: ConfigMap = serde_json::from_value(json!({
                    "metadata": {"name": format!("cm-{i:05}"), "labels": {"app": format!("app-{}", i % 50)}},
                    "data": {"key": format!("value-{i}"), "other": "x".repeat(200)},
                }))
                .unwrap();
                cms.create(&PostParams::default(), &cm).await.map(|_| ())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();
}

/// Runs a command to its end; returns whether it succeeded, its stdout and its peak RSS
/// in KiB (the kernel's own count for that process, from wait4).
// The child is reaped by wait4 itself, which std's Child cannot do while giving rusage.
#[allow(clippy::zombie_processes)]
fn run_measured(cmd: &mut Command) -> (bool, String, u64) {
    let out = tempfile::NamedTempFile::new().unwrap();
    let err = tempfile::NamedTempFile::new().unwrap();
    let child = cmd
        .stdout(out.reopen().unwrap())
        .stderr(err.reopen().unwrap())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, by pid, with valid pointers; the Child is not
    // waited for again.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32, "wait4");
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    let stdout = std::fs::read_to_string(out.path()).unwrap();
    if !ok {
        eprintln!("stderr: {}", std::fs::read_to_string(err.path()).unwrap());
    }
    (ok, stdout, usage.ru_maxrss as u64)
}

/// The operator's leader process (pods are host processes on the test cluster's node).
async fn leader_pid(env: &Env) -> i32 {
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), "coffer-system");
    let holder = leases
        .get("coffer-operator")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.holder_identity)
        .expect("a leader");
    let want = format!("POD_NAME={holder}");
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let is_operator = cmdline.split(|&b| b == 0).any(|a| a == b"operator");
        if is_operator && environ.split(|&b| b == 0).any(|v| v == want.as_bytes()) {
            return pid;
        }
    }
    panic!("no process for the operator pod {holder}");
}

fn vm_hwm_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

async fn backed_up(env: &Env, ns: &str, name: &str) -> u64 {
    env.backup(
        ns,
        name,
        json!({"selection": {}, "repository": {"name": "main"}}),
    );
    let b = env.wait_backup(ns, name).await;
    let st = b.status.unwrap();
    assert_eq!(st.phase, Some(BackupPhase::Completed), "{st:#?}");
    st.progress.unwrap().objects
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_of_ten_times_the_objects_takes_the_same_memory() {
    let env = Env::start().await;
    create_config_maps(&env.client, "small", SMALL).await;
    create_config_maps(&env.client, "big", BIG).await;

    // The CLI: one process per backup.
    let repo = env.dir.path().join("repo");
    let repo_s = repo.to_str().unwrap();
    let (ok, _, err) = coffer_cmd(repo_s, &["repo", "init", "--kdf-memory-kib", "1024"], &[]);
    assert!(ok, "{err}");
    let mut peaks = Vec::new();
    for (ns, n) in [("small", SMALL), ("big", BIG)] {
        let (ok, out, peak) = run_measured(
            Command::new(coffer())
                .args(["--repo", repo_s, "resources", "backup", "--json"])
                .args(["--namespace", ns, "--kubeconfig"])
                .arg(env.cluster.kubeconfig_path())
                .env("COFFER_PASSWORD", PASSWORD)
                .env("COFFER_CACHE_DIR", env.dir.path().join("cache")),
        );
        assert!(ok, "resources backup of {ns}");
        let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
        let stored = summary["objects"].as_u64().unwrap() as usize;
        // The ConfigMaps, the namespace, and what the cluster adds (none it regenerates).
        assert!(
            stored > n && stored < n + 10,
            "{ns}: {stored} objects stored"
        );
        eprintln!(
            "coffer resources backup of {stored} objects: peak RSS {:.1} MiB",
            mib(peak)
        );
        peaks.push(peak);
    }
    let (ok, out, err) = coffer_cmd(repo_s, &["check", "--read-data", "--json"], &[]);
    assert!(ok, "check: {out}{err}");
    assert!(
        peaks[1] as f64 <= peaks[0] as f64 * FLAT,
        "the CLI's peak grew from {:.1} MiB at {SMALL} objects to {:.1} MiB at {BIG}",
        mib(peaks[0]),
        mib(peaks[1])
    );

    // The operator: its leader's high-water mark across a Backup of each namespace.
    let op_repo = env.dir.path().join("operator-repo");
    let (ok, _, err) = coffer_cmd(
        op_repo.to_str().unwrap(),
        &["repo", "init", "--kdf-memory-kib", "1024"],
        &[],
    );
    assert!(ok, "{err}");
    for ns in ["small", "big"] {
        env.apply(&format!(
            r#"{{"apiVersion": "v1", "kind": "Secret", "metadata": {{"name": "repo-key", "namespace": "{ns}"}},
                "stringData": {{"password": "{PASSWORD}"}}}}"#
        ));
        env.apply(&format!(
            r#"{{"apiVersion": "coffer.dev/v1alpha1", "kind": "BackupRepository", "metadata": {{"name": "main", "namespace": "{ns}"}},
                "spec": {{"location": "{}", "keySecret": {{"name": "repo-key"}}}}}}"#,
            op_repo.display()
        ));
        let status = env.wait_repository(ns, "main").await;
        assert_eq!(
            status.phase,
            Some(coffer_api::RepositoryPhase::Ready),
            "{status:?}"
        );
    }
    let pid = leader_pid(&env).await;
    let idle = vm_hwm_kib(pid);
    let small = backed_up(&env, "small", "small-1").await;
    let after_small = vm_hwm_kib(pid);
    let big = backed_up(&env, "big", "big-1").await;
    assert_eq!(leader_pid(&env).await, pid, "the leader changed mid-test");
    let after_big = vm_hwm_kib(pid);
    eprintln!(
        "operator VmHWM: {:.1} MiB idle, {:.1} MiB after {small} objects, {:.1} MiB after {big}",
        mib(idle),
        mib(after_small),
        mib(after_big)
    );
    assert!(big as usize > BIG && small as usize > SMALL);
    assert!(
        after_big as f64 <= after_small as f64 * FLAT,
        "the operator's peak grew from {:.1} MiB after {SMALL} objects to {:.1} MiB after {BIG}",
        mib(after_small),
        mib(after_big)
    );
}
