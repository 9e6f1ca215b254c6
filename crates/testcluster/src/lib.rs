//! Coffer's test cluster: the real Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler from `KUBEBUILDER_ASSETS`) on 127.0.0.1, with
//! a simulated node (a kubelet that runs containers as host processes in their own mount
//! namespaces) and simulated CSI storage (provisioner, snapshots, group snapshots and the
//! SnapshotMetadata gRPC service). See docs/testcluster.md.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let cluster = coffer_testcluster::TestCluster::start(dir.path()).await?;
//! let client = cluster.client();
//! # let _ = client;
//! cluster.stop().await;
//! # Ok(()) }
//! ```

mod certs;
mod controlplane;
pub mod node;
mod process;
pub mod storage;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kube::Client;
use tokio::task::JoinHandle;

pub use controlplane::ControlPlane;

/// The CSI driver name of the simulated storage.
pub const DRIVER: &str = "sim.csi.coffer.dev";
/// The default StorageClass (volumeBindingMode Immediate).
pub const STORAGE_CLASS: &str = "coffer-sim";
/// A second StorageClass with volumeBindingMode WaitForFirstConsumer.
pub const STORAGE_CLASS_WFFC: &str = "coffer-sim-wffc";
/// The default VolumeSnapshotClass and VolumeGroupSnapshotClass.
pub const SNAPSHOT_CLASS: &str = "coffer-sim";
/// The simulated node's name.
pub const NODE_NAME: &str = "sim-node-0";
/// The audience that SnapshotMetadata callers must request their token for.
pub const SNAPSHOT_METADATA_AUDIENCE: &str = "coffer-sim-snapshot-metadata";

macro_rules! crd_file {
    ($name:literal) => {
        ($name, include_str!(concat!("../crds/", $name)))
    };
}

/// The snapshot CRDs the simulated storage serves, built in (crds/, Apache-2.0, from
/// kubernetes-csi/external-snapshotter and external-snapshot-metadata).
const BUILTIN_CRDS: &[(&str, &str)] = &[
    crd_file!("cbt.storage.k8s.io_snapshotmetadataservices.yaml"),
    crd_file!("groupsnapshot.storage.k8s.io_volumegroupsnapshotclasses.yaml"),
    crd_file!("groupsnapshot.storage.k8s.io_volumegroupsnapshotcontents.yaml"),
    crd_file!("groupsnapshot.storage.k8s.io_volumegroupsnapshots.yaml"),
    crd_file!("snapshot.storage.k8s.io_volumesnapshotclasses.yaml"),
    crd_file!("snapshot.storage.k8s.io_volumesnapshotcontents.yaml"),
    crd_file!("snapshot.storage.k8s.io_volumesnapshots.yaml"),
];

/// How to start a cluster. `Options::default()` reads the environment.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Directory with etcd, kube-apiserver, kube-controller-manager, kube-scheduler.
    /// Default: env `KUBEBUILDER_ASSETS`.
    pub assets_dir: Option<PathBuf>,
    /// A directory of CRD YAML files to install instead of the snapshot CRDs built into
    /// this crate (crds/: external-snapshotter's VolumeSnapshot and VolumeGroupSnapshot
    /// kinds, external-snapshot-metadata's SnapshotMetadataService).
    pub crds_dir: Option<PathBuf>,
    /// The `coffer` binary that containers with a Coffer image and no command run.
    /// Default: env `COFFER_BIN`.
    pub coffer_bin: Option<PathBuf>,
    /// How long to wait for the control plane to become ready (default 60 s).
    pub start_timeout: Option<Duration>,
}

impl Options {
    fn assets_dir(&self) -> Result<PathBuf> {
        if let Some(d) = &self.assets_dir {
            return Ok(d.clone());
        }
        match std::env::var_os("KUBEBUILDER_ASSETS") {
            Some(d) if !d.is_empty() => Ok(PathBuf::from(d)),
            _ => bail!(
                "KUBEBUILDER_ASSETS is not set: set it to the directory holding etcd, \
                 kube-apiserver, kube-controller-manager and kube-scheduler, e.g. \
                 `export KUBEBUILDER_ASSETS=$(../shared/k8s/assets)`"
            ),
        }
    }

    /// The CRDs to install: (file name, YAML).
    fn crds(&self) -> Result<Vec<(String, String)>> {
        let Some(dir) = &self.crds_dir else {
            return Ok(BUILTIN_CRDS
                .iter()
                .map(|(n, t)| (n.to_string(), t.to_string()))
                .collect());
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading the CRD directory {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|p| {
                let text = std::fs::read_to_string(&p)
                    .with_context(|| format!("reading {}", p.display()))?;
                Ok((p.display().to_string(), text))
            })
            .collect()
    }

    fn coffer_bin(&self) -> Option<PathBuf> {
        self.coffer_bin.clone().or_else(|| {
            std::env::var_os("COFFER_BIN")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        })
    }
}

/// A running cluster. Every child process ends on [`TestCluster::stop`], on drop and on
/// panic (and through PR_SET_PDEATHSIG if the owning process is killed).
pub struct TestCluster {
    root: PathBuf,
    kubeconfig: PathBuf,
    client: Client,
    control_plane: Option<ControlPlane>,
    node: Arc<node::Node>,
    storage: Arc<storage::Storage>,
    tasks: Vec<JoinHandle<()>>,
    startup: Duration,
}

impl TestCluster {
    /// Starts a cluster whose files (certificates, etcd data, logs, volumes, snapshots,
    /// kubeconfig) live under `root_dir`, with options from the environment.
    pub async fn start(root_dir: impl AsRef<Path>) -> Result<TestCluster> {
        Self::start_with(root_dir, Options::default()).await
    }

    /// Starts a cluster with explicit options.
    pub async fn start_with(root_dir: impl AsRef<Path>, options: Options) -> Result<TestCluster> {
        let begin = Instant::now();
        let root = root_dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let root = root.canonicalize()?;
        let assets = options.assets_dir()?;
        let crds = options.crds()?;
        let mut cp = ControlPlane::start(
            &root,
            &assets,
            options.start_timeout.unwrap_or(Duration::from_secs(60)),
        )
        .await?;
        let client = cp.client.clone();
        let result = async {
            let mut tasks = Vec::new();
            cp.install_crds(&crds).await?;
            let storage = storage::Storage::new(client.clone(), &root, &cp.ca, cp.ca_pem.clone())?;
            let node = node::Node::new(node::NodeConfig {
                client: client.clone(),
                root: root.clone(),
                api_port: cp.api_port,
                coffer_bin: options.coffer_bin(),
                ca_pem: cp.ca_pem.clone(),
                kubelet_cert: cp.kubelet_serving.clone(),
                volumes: storage.clone(),
            });
            storage.set_freezer(node.clone());
            tasks.extend(node.clone().start().await?);
            tasks.extend(storage.clone().start().await?);
            storage::install_classes(&client).await?;
            cp.wait_default_service_account().await?;
            anyhow::Ok((tasks, storage, node))
        }
        .await;
        let (tasks, storage, node) = match result {
            Ok(v) => v,
            Err(e) => {
                cp.stop().await;
                return Err(e);
            }
        };
        let startup = begin.elapsed();
        tracing::info!(?startup, root = %root.display(), "test cluster ready");
        Ok(TestCluster {
            kubeconfig: cp.kubeconfig.clone(),
            root,
            client,
            control_plane: Some(cp),
            node,
            storage,
            tasks,
            startup,
        })
    }

    /// A kube-rs client authenticated as cluster admin (system:masters).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The admin kubeconfig (for kubectl or `coffer --kubeconfig`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The cluster's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The API server's URL.
    pub fn server_url(&self) -> String {
        let port = self.control_plane.as_ref().map(|c| c.api_port).unwrap_or(0);
        format!("https://127.0.0.1:{port}")
    }

    /// Time from `start` until the cluster was ready.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// PIDs of the control-plane processes and of every running container (for tests
    /// that check nothing is left behind).
    pub fn pids(&self) -> Vec<i32> {
        let mut pids = self
            .control_plane
            .as_ref()
            .map(|c| c.pids())
            .unwrap_or_default();
        pids.extend(self.node.pids());
        pids
    }

    /// The simulated storage (paths of volumes and snapshots).
    pub fn storage(&self) -> &storage::Storage {
        &self.storage
    }

    /// Stops every container and control-plane process and waits for them to exit.
    pub async fn stop(mut self) {
        self.shutdown_tasks();
        self.node.kill_all();
        if let Some(mut cp) = self.control_plane.take() {
            cp.stop().await;
        }
    }

    fn shutdown_tasks(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        self.storage.shutdown();
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.shutdown_tasks();
        self.node.kill_all();
        if let Some(mut cp) = self.control_plane.take() {
            cp.kill_now();
        }
    }
}
