//! `coffer demo`: the main job on the embedded default. A local test cluster (the real
//! control plane, a simulated node and CSI storage), the operator installed from the
//! manifests of deploy/ (built into the binary) and running as its pods, a sample
//! application with a Filesystem and a Block PVC in one consistency group and hooks
//! around the snapshot, a Backup made through the API, its status printed; then both
//! volumes restored from the repository with the CLI and compared byte for byte, and the
//! repository checked.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use coffer_api::{
    Backup, BackupPhase, BackupRepository, RepositoryPhase, Restore, RestoreMethod, RestorePhase,
    VolumeRestorePhase,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, LogParams, Patch, PatchParams};
use kube::discovery::{Discovery, Scope};
use kube::{Client, ResourceExt};

/// The install: the files `kubectl apply -k deploy/` applies, in its order.
const DEPLOY: &[(&str, &str)] = &[
    (
        "crds/applications.coffer.dev.yaml",
        include_str!("../../../deploy/crds/applications.coffer.dev.yaml"),
    ),
    (
        "crds/backuprepositories.coffer.dev.yaml",
        include_str!("../../../deploy/crds/backuprepositories.coffer.dev.yaml"),
    ),
    (
        "crds/backups.coffer.dev.yaml",
        include_str!("../../../deploy/crds/backups.coffer.dev.yaml"),
    ),
    (
        "crds/clusterbackuprepositories.coffer.dev.yaml",
        include_str!("../../../deploy/crds/clusterbackuprepositories.coffer.dev.yaml"),
    ),
    (
        "crds/restores.coffer.dev.yaml",
        include_str!("../../../deploy/crds/restores.coffer.dev.yaml"),
    ),
    (
        "crds/volumebackups.coffer.dev.yaml",
        include_str!("../../../deploy/crds/volumebackups.coffer.dev.yaml"),
    ),
    (
        "namespace.yaml",
        include_str!("../../../deploy/namespace.yaml"),
    ),
    ("rbac.yaml", include_str!("../../../deploy/rbac.yaml")),
    (
        "operator.yaml",
        include_str!("../../../deploy/operator.yaml"),
    ),
];

const NS: &str = "demo";
/// Where the demo restores the application.
const RESTORED_NS: &str = "demo-restored";
const PASSWORD: &str = "coffer demo password";

/// `coffer demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Directory for the cluster, the repository and the restored copies (default: a new
    /// temporary directory, removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the cluster running at the end (until Ctrl-C), to look around with kubectl.
    #[arg(long)]
    keep: bool,
}

fn step(s: &str) {
    println!("==> {s}");
}

pub async fn run(a: DemoArgs) -> Result<()> {
    let temp;
    let dir = match a.dir {
        Some(d) => d,
        None => {
            temp = tempfile_dir()?;
            temp.clone()
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = std::fs::canonicalize(&dir)?;
    let cluster_dir = dir.join("cluster");
    let repo = dir.join("repo");
    let _ = std::fs::remove_dir_all(&cluster_dir);
    let _ = std::fs::remove_dir_all(&repo);

    step("starting a local test cluster (real control plane, simulated node and CSI storage)");
    let options = coffer_testcluster::Options {
        coffer_bin: std::env::current_exe().ok(),
        ..Default::default()
    };
    let cluster = coffer_testcluster::TestCluster::start_with(&cluster_dir, options).await?;
    println!("    kubeconfig: {}", cluster.kubeconfig_path().display());
    let client = cluster.client();
    let result = demo(&client, &cluster, &repo).await;
    if a.keep && result.is_ok() {
        println!(
            "the cluster keeps running: export KUBECONFIG={}; Ctrl-C stops it",
            cluster.kubeconfig_path().display()
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    cluster.stop().await;
    result
}

fn tempfile_dir() -> Result<PathBuf> {
    let base = std::env::temp_dir().join(format!("coffer-demo-{}", std::process::id()));
    std::fs::create_dir_all(&base)?;
    Ok(base)
}

async fn demo(
    client: &Client,
    cluster: &coffer_testcluster::TestCluster,
    repo: &Path,
) -> Result<()> {
    step("installing the operator from deploy/ (CRDs, RBAC, a Deployment of 2 replicas)");
    install(client).await?;
    let holder = wait_leader(client).await?;
    println!("    operator running; leader {holder}");

    step("deploying the sample app: a Filesystem and a Block PVC in one consistency group");
    apply_yaml(client, &app_yaml(&repo.display().to_string())).await?;
    wait_repository(client).await?;
    wait_app_ready(client).await?;

    step("backing it up: kubectl apply of a Backup (application shop, repository main)");
    apply_yaml(
        client,
        &format!(
            "apiVersion: coffer.dev/v1alpha1\nkind: Backup\nmetadata: {{name: shop-1, namespace: {NS}}}\nspec: {{application: shop, repository: {{name: main}}}}\n"
        ),
    )
    .await?;
    let b = wait_backup(client, "shop-1").await?;
    print_status(&b);
    let st = b.status.clone().unwrap_or_default();
    if st.phase != Some(BackupPhase::Completed) {
        bail!(
            "the backup ended {:?}: {}",
            st.phase,
            st.message.unwrap_or_default()
        );
    }

    step(&format!(
        "restoring the application into namespace {RESTORED_NS}: kubectl apply of a Restore (Coffer's volume populator fills its PVCs)"
    ));
    apply_yaml(
        client,
        &format!(
            "apiVersion: coffer.dev/v1alpha1\nkind: Restore\nmetadata: {{name: shop-back, namespace: {NS}}}\nspec: {{backup: shop-1, namespaceMapping: {{{NS}: {RESTORED_NS}}}}}\n"
        ),
    )
    .await?;
    let r = wait_restore(client, "shop-back").await?;
    let rst = r.status.clone().unwrap_or_default();
    println!(
        "    Restore shop-back: {:?} ({})",
        rst.phase.unwrap_or(RestorePhase::New),
        rst.message.clone().unwrap_or_default()
    );
    if rst.phase != Some(RestorePhase::Completed) {
        for i in &rst.items {
            println!("    {:?} {:?} {}: {}", i.severity, i.kind, i.name, i.reason);
        }
        bail!("the restore ended {:?}", rst.phase);
    }
    let exe = std::env::current_exe()?;
    for v in &rst.volumes {
        let block = st.volumes.iter().any(|b| {
            format!("{}/{}", b.namespace, b.pvc) == v.source
                && b.volume_mode.as_deref() == Some("Block")
        });
        let original = pv_path(
            client,
            cluster,
            NS,
            v.source.rsplit('/').next().unwrap_or_default(),
            block,
        )
        .await?;
        let restored = pv_path(client, cluster, &v.namespace, &v.pvc, block).await?;
        let same = if block {
            files_equal(&restored, &original)?
        } else {
            // The post hook wrote its marker after the snapshot: everything else matches.
            trees_equal(&restored, &original, &["post-hook"])?
        };
        if !same {
            bail!(
                "restored PVC {}/{} differs from the volume it was backed up from",
                v.namespace,
                v.pvc
            );
        }
        println!(
            "    PVC {}/{}: {:?} by the {:?}, {} written in {:.1}s, identical to {}",
            v.namespace,
            v.pvc,
            v.phase.unwrap_or(VolumeRestorePhase::Pending),
            v.method.unwrap_or(RestoreMethod::Populator),
            coffer_repo::human_bytes(v.bytes_written),
            v.duration_seconds.unwrap_or_default(),
            v.source
        );
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), RESTORED_NS);
    wait_until("the restored app to run", Duration::from_secs(120), || {
        let pods = pods.clone();
        async move {
            Ok(pods
                .get_opt("db")
                .await?
                .and_then(|p| p.status)
                .and_then(|s| s.phase)
                .filter(|p| p == "Running"))
        }
    })
    .await?;
    println!("    pod {RESTORED_NS}/db running on its restored volumes");
    step("checking the repository, every byte");
    run_coffer(&exe, repo, &["check", "--read-data"])?;
    run_coffer(&exe, repo, &["snapshots"])?;
    println!(
        "demo passed: the operator backed the application up and restored it into {RESTORED_NS}, its volumes byte for byte"
    );
    Ok(())
}

fn run_coffer(exe: &Path, repo: &Path, args: &[&str]) -> Result<()> {
    println!("    $ coffer --repo {} {}", repo.display(), args.join(" "));
    let status = std::process::Command::new(exe)
        .arg("--repo")
        .arg(repo)
        .args(args)
        .env("COFFER_PASSWORD", PASSWORD)
        .status()
        .context("cannot run coffer")?;
    if !status.success() {
        bail!("coffer {} failed", args.join(" "));
    }
    Ok(())
}

fn files_equal(a: &Path, b: &Path) -> Result<bool> {
    Ok(std::fs::read(a)? == std::fs::read(b)?)
}

fn trees_equal(a: &Path, b: &Path, skip_prefix: &[&str]) -> Result<bool> {
    let list = |d: &Path| -> Result<Vec<(String, Vec<u8>)>> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(d)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if skip_prefix.iter().any(|p| name.starts_with(p)) || !e.file_type()?.is_file() {
                continue;
            }
            v.push((name, std::fs::read(e.path())?));
        }
        v.sort();
        Ok(v)
    };
    Ok(list(a)? == list(b)?)
}

/// Applies every document of the install, CRDs first (waited until established).
async fn install(client: &Client) -> Result<()> {
    for (name, text) in DEPLOY.iter().filter(|(n, _)| n.starts_with("crds/")) {
        apply_yaml(client, text)
            .await
            .with_context(|| format!("applying deploy/{name}"))?;
    }
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in coffer_api::crds() {
        let name = crd.name_any();
        let cond = kube::runtime::conditions::is_crd_established();
        tokio::time::timeout(
            Duration::from_secs(30),
            kube::runtime::wait::await_condition(crds.clone(), &name, cond),
        )
        .await
        .with_context(|| format!("CRD {name} not established within 30 s"))??;
    }
    for (name, text) in DEPLOY.iter().filter(|(n, _)| !n.starts_with("crds/")) {
        apply_yaml(client, text)
            .await
            .with_context(|| format!("applying deploy/{name}"))?;
    }
    Ok(())
}

/// Server-side apply of every document in `text`.
async fn apply_yaml(client: &Client, text: &str) -> Result<()> {
    let mut discovery = Discovery::new(client.clone()).run().await?;
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize_from(doc)?;
        if value.is_null() {
            continue;
        }
        let obj: DynamicObject = serde_yaml::from_value(value)?;
        let tm = obj
            .types
            .clone()
            .context("a document without apiVersion/kind")?;
        let gvk = kube::api::GroupVersionKind::try_from(&tm)?;
        // A CRD established a moment ago may not be in the API server's discovery yet:
        // look again for a while before calling the kind unknown.
        let deadline = Instant::now() + Duration::from_secs(30);
        let (ar, caps) = loop {
            if let Some(found) = discovery.resolve_gvk(&gvk) {
                break found;
            }
            if Instant::now() > deadline {
                bail!(
                    "the cluster does not serve {}/{} (waited 30 s for it to appear)",
                    tm.api_version,
                    tm.kind
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            discovery = Discovery::new(client.clone()).run().await?;
        };
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => Api::namespaced_with(
                client.clone(),
                obj.metadata.namespace.as_deref().unwrap_or("default"),
                &ar,
            ),
            Scope::Cluster => Api::all_with(client.clone(), &ar),
        };
        api.patch(
            &obj.name_any(),
            &PatchParams::apply("coffer-demo").force(),
            &Patch::Apply(&obj),
        )
        .await
        .with_context(|| format!("applying {} {}", tm.kind, obj.name_any()))?;
    }
    Ok(())
}

trait DeserializeFrom {
    fn deserialize_from(d: serde_yaml::Deserializer) -> Result<serde_yaml::Value>;
}

impl DeserializeFrom for serde_yaml::Value {
    fn deserialize_from(d: serde_yaml::Deserializer) -> Result<serde_yaml::Value> {
        Ok(serde::Deserialize::deserialize(d)?)
    }
}

async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {}s waiting for {what}", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn wait_leader(client: &Client) -> Result<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "coffer-system");
    wait_until(
        "the operator to take its Lease",
        Duration::from_secs(120),
        || {
            let leases = leases.clone();
            async move {
                Ok(leases
                    .get_opt("coffer-operator")
                    .await?
                    .and_then(|l| l.spec)
                    .and_then(|s| s.holder_identity))
            }
        },
    )
    .await
}

async fn wait_repository(client: &Client) -> Result<()> {
    let api: Api<BackupRepository> = Api::namespaced(client.clone(), NS);
    let st = wait_until(
        "the repository to be checked",
        Duration::from_secs(60),
        || {
            let api = api.clone();
            async move { Ok(api.get("main").await?.status.filter(|s| s.phase.is_some())) }
        },
    )
    .await?;
    println!(
        "    repository main: {:?} ({})",
        st.phase.unwrap_or(RepositoryPhase::Unavailable),
        st.message.clone().unwrap_or_default()
    );
    if st.phase != Some(RepositoryPhase::Ready) {
        bail!(
            "the repository is not ready: {}",
            st.message.unwrap_or_default()
        );
    }
    Ok(())
}

async fn wait_app_ready(client: &Client) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    wait_until("the app to write its data", Duration::from_secs(60), || {
        let pods = pods.clone();
        async move {
            Ok(pods
                .logs("db", &LogParams::default())
                .await
                .ok()
                .filter(|l| l.contains("ready"))
                .map(|_| ()))
        }
    })
    .await
}

async fn wait_backup(client: &Client, name: &str) -> Result<Backup> {
    let api: Api<Backup> = Api::namespaced(client.clone(), NS);
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let b = api.get(name).await?;
        let st = b.status.clone().unwrap_or_default();
        let line = format!(
            "    {:?} step {} objects {} volumes {}/{}",
            st.phase.unwrap_or(BackupPhase::New),
            st.step.clone().unwrap_or_else(|| "-".into()),
            st.progress.as_ref().map(|p| p.objects).unwrap_or(0),
            st.progress.as_ref().map(|p| p.volumes_done).unwrap_or(0),
            st.progress.as_ref().map(|p| p.volumes_total).unwrap_or(0),
        );
        if line != last {
            println!("{line}");
            last = line;
        }
        if st.phase.is_some_and(BackupPhase::is_final) {
            return Ok(b);
        }
        if Instant::now() > deadline {
            bail!("timed out after 300s waiting for the backup to end");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn wait_restore(client: &Client, name: &str) -> Result<Restore> {
    let api: Api<Restore> = Api::namespaced(client.clone(), NS);
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let r = api.get(name).await?;
        let st = r.status.clone().unwrap_or_default();
        let done = st
            .volumes
            .iter()
            .filter(|v| v.phase == Some(VolumeRestorePhase::Completed))
            .count();
        let line = format!(
            "    {:?} step {} volumes {done}/{}",
            st.phase.unwrap_or(RestorePhase::New),
            st.step.clone().unwrap_or_else(|| "-".into()),
            st.volumes.len()
        );
        if line != last {
            println!("{line}");
            last = line;
        }
        if st.phase.is_some_and(RestorePhase::is_final) {
            return Ok(r);
        }
        if Instant::now() > deadline {
            bail!("timed out after 300s waiting for the restore to end");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Where the test cluster keeps the volume of PVC `ns/name`.
async fn pv_path(
    client: &Client,
    cluster: &coffer_testcluster::TestCluster,
    ns: &str,
    name: &str,
    block: bool,
) -> Result<PathBuf> {
    let pv = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .get(name)
        .await?
        .spec
        .and_then(|s| s.volume_name)
        .with_context(|| format!("PVC {ns}/{name} is not bound"))?;
    Ok(cluster.storage().volume_path(&pv, block))
}

fn print_status(b: &Backup) {
    let st = b.status.clone().unwrap_or_default();
    println!(
        "    Backup {}: {:?} ({})",
        b.name_any(),
        st.phase.unwrap_or(BackupPhase::New),
        st.message.unwrap_or_default()
    );
    if let Some(h) = &st.hooks {
        println!("    hooks: {} run, {} failed", h.attempted, h.failed);
    }
    println!(
        "    resources snapshot {}, manifest {}",
        st.resources_snapshot.as_deref().unwrap_or("-"),
        st.manifest.as_deref().unwrap_or("-")
    );
    for v in &st.volumes {
        println!(
            "    PVC {} ({}): snapshot {} read {} B, added {} B{}",
            v.pvc,
            v.volume_mode.as_deref().unwrap_or("Filesystem"),
            v.snapshot_id
                .as_deref()
                .map(|s| &s[..8.min(s.len())])
                .unwrap_or("-"),
            v.bytes_read,
            v.bytes_new,
            v.full_read_reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
    }
    for i in &st.items {
        println!("    {:?} {:?} {}: {}", i.severity, i.kind, i.name, i.reason);
    }
}

fn app_yaml(repo: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: repo-key, namespace: {NS}}}
stringData: {{password: "{PASSWORD}"}}
---
apiVersion: coffer.dev/v1alpha1
kind: BackupRepository
metadata: {{name: main, namespace: {NS}}}
spec: {{location: "{repo}", keySecret: {{name: repo-key}}, initialize: true}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data, namespace: {NS}, labels: {{app: shop, coffer.dev/group: db}}}}
spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 64Mi}}}}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: blk, namespace: {NS}, labels: {{app: shop, coffer.dev/group: db}}}}
spec: {{accessModes: [ReadWriteOnce], volumeMode: Block, resources: {{requests: {{storage: 128Mi}}}}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings, namespace: {NS}, labels: {{app: shop}}}}
data: {{greeting: hello}}
---
apiVersion: v1
kind: Pod
metadata: {{name: db, namespace: {NS}, labels: {{app: shop, tier: db}}}}
spec:
  containers:
  - name: db
    image: busybox
    command: [sh, -c, "if [ ! -f /data/table.txt ]; then for i in 1 2 3; do echo row $i >> /data/table.txt; done; dd if=/dev/urandom of=/dev/blk bs=1M count=4 seek=8 conv=notrunc 2>/dev/null; fi; echo ready; while true; do sleep 1; done"]
    volumeMounts: [{{name: data, mountPath: /data}}]
    volumeDevices: [{{name: blk, devicePath: /dev/blk}}]
  volumes:
  - {{name: data, persistentVolumeClaim: {{claimName: data}}}}
  - {{name: blk, persistentVolumeClaim: {{claimName: blk}}}}
---
apiVersion: coffer.dev/v1alpha1
kind: Application
metadata: {{name: shop, namespace: {NS}}}
spec:
  labelSelector: {{matchLabels: {{app: shop}}}}
  consistencyGroupLabel: coffer.dev/group
  hooks:
  - name: flush
    labelSelector: {{matchLabels: {{tier: db}}}}
    pre: [{{exec: {{container: db, command: [sh, -c, "sync; echo flushed > /data/pre-hook"]}}}}]
    post: [{{exec: {{container: db, command: [sh, -c, "echo resumed > /data/post-hook"]}}}}]
"#
    )
}
