//! The simulated node: a kubelet without containers. It registers Node `sim-node-0`,
//! keeps its Lease and status fresh, runs the pods bound to it as host processes (see
//! `pod`) and serves the kubelet API (exec, logs) for the API server to proxy (see
//! `server`).

mod pod;
mod server;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::Utc;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node as K8sNode, Pod};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use tokio::task::JoinHandle;

use crate::certs::CertFiles;
use crate::storage::Storage;

pub use pod::PodRuntime;

/// What the node needs from the rest of the cluster.
pub struct NodeConfig {
    /// A client of the API server with the node's rights.
    pub client: Client,
    /// The cluster's directory (pods' files live under it).
    pub root: PathBuf,
    /// The API server's port, for in-cluster clients of the pods.
    pub api_port: u16,
    /// The binary that containers with a Coffer image run.
    pub coffer_bin: Option<PathBuf>,
    /// The cluster CA certificate, PEM (mounted into pods with their tokens).
    pub ca_pem: String,
    /// The kubelet's serving certificate.
    pub kubelet_cert: CertFiles,
    /// The simulated storage that provides the pods' PVs.
    pub volumes: Arc<Storage>,
}

/// The simulated kubelet.
pub struct Node {
    pub(crate) cfg: NodeConfig,
    pub(crate) name: String,
    pods: Mutex<HashMap<String, Arc<PodRuntime>>>,
    /// Mount points for the host's top-level entries, shared by all containers.
    pub(crate) rootfs: PathBuf,
    pub(crate) rootfs_entries: std::sync::OnceLock<Vec<pod::RootEntry>>,
    kubelet_port: Mutex<u16>,
}

impl Node {
    /// A node that runs nothing yet.
    pub fn new(cfg: NodeConfig) -> Arc<Node> {
        let rootfs = cfg.root.join("node/rootfs");
        Arc::new(Node {
            cfg,
            name: crate::NODE_NAME.to_string(),
            pods: Mutex::new(HashMap::new()),
            rootfs,
            rootfs_entries: std::sync::OnceLock::new(),
            kubelet_port: Mutex::new(0),
        })
    }

    /// Registers the node and starts the kubelet's loops. Returns their tasks.
    pub async fn start(self: Arc<Self>) -> Result<Vec<JoinHandle<()>>> {
        let entries = pod::prepare_rootfs(&self.rootfs)?;
        let _ = self.rootfs_entries.set(entries);
        let (port, server_task) = server::start(self.clone()).await?;
        *self.kubelet_port.lock().unwrap() = port;
        self.register().await?;
        let mut tasks = vec![server_task];
        let me = self.clone();
        tasks.push(tokio::spawn(async move { me.heartbeat_loop().await }));
        let me = self.clone();
        tasks.push(tokio::spawn(async move { me.pod_loop().await }));
        Ok(tasks)
    }

    fn node_status(&self) -> serde_json::Value {
        let port = *self.kubelet_port.lock().unwrap();
        let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let cond = |t: &str, s: &str, reason: &str, msg: &str| {
            json!({"type": t, "status": s, "reason": reason, "message": msg,
                   "lastHeartbeatTime": now, "lastTransitionTime": now})
        };
        let resources = json!({"cpu": format!("{}", cpus.max(8)), "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"});
        json!({
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "simulated kubelet is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            "nodeInfo": {
                "machineID": "coffer-sim", "systemUUID": "coffer-sim", "bootID": "coffer-sim",
                "kernelVersion": "", "osImage": "Coffer simulated node",
                "containerRuntimeVersion": "sim://0.1.0",
                "kubeletVersion": "v1.26.4", "kubeProxyVersion": "v1.26.4",
                "operatingSystem": "linux", "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
            },
        })
    }

    async fn register(&self) -> Result<()> {
        let api: Api<K8sNode> = Api::all(self.cfg.client.clone());
        let node: K8sNode = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.name, "labels": {
                "kubernetes.io/hostname": self.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/worker": "",
            }, "annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
            "spec": {},
        }))?;
        match api.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e).context("registering Node"),
        }
        api.patch_status(
            &self.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": self.node_status()})),
        )
        .await
        .context("setting Node status")?;
        self.renew_lease(true).await?;
        Ok(())
    }

    async fn renew_lease(&self, create: bool) -> Result<()> {
        let api: Api<Lease> = Api::namespaced(self.cfg.client.clone(), "kube-node-lease");
        let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        if create {
            let lease: Lease = serde_json::from_value(json!({
                "metadata": {"name": self.name},
                "spec": {"holderIdentity": self.name, "leaseDurationSeconds": 40},
            }))?;
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e).context("creating node Lease"),
            }
        }
        api.patch(
            &self.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"renewTime": now}})),
        )
        .await
        .context("renewing node Lease")?;
        Ok(())
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let api: Api<K8sNode> = Api::all(self.cfg.client.clone());
        let mut n = 0u64;
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            n += 1;
            if let Err(e) = self.renew_lease(false).await {
                tracing::warn!("node lease: {e:#}");
            }
            if n.is_multiple_of(3) {
                let patch = Patch::Merge(json!({"status": self.node_status()}));
                if let Err(e) = api
                    .patch_status(&self.name, &PatchParams::default(), &patch)
                    .await
                {
                    tracing::warn!("node status: {e:#}");
                }
            }
        }
    }

    /// Watches the pods bound to this node and drives each through its lifecycle.
    async fn pod_loop(self: Arc<Self>) {
        let api: Api<Pod> = Api::all(self.cfg.client.clone());
        let config = watcher::Config::default().fields(&format!("spec.nodeName={}", self.name));
        let mut stream = watcher(api, config).boxed();
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Apply(pod)) | Ok(watcher::Event::InitApply(pod)) => {
                    self.on_pod(pod)
                }
                Ok(watcher::Event::Delete(pod)) => {
                    if let Some(uid) = pod.metadata.uid.as_deref() {
                        let rt = self.pods.lock().unwrap().remove(uid);
                        if let Some(rt) = rt {
                            rt.force_kill();
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!("pod watch: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    fn on_pod(self: &Arc<Self>, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let existing = self.pods.lock().unwrap().get(&uid).cloned();
        if let Some(rt) = existing {
            if pod.metadata.deletion_timestamp.is_some() {
                rt.request_termination(pod.metadata.deletion_grace_period_seconds);
            }
            return;
        }
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        let terminal = phase == "Succeeded" || phase == "Failed";
        if pod.metadata.deletion_timestamp.is_some() {
            // Nothing runs for this pod: finish the deletion right away.
            let node = self.clone();
            tokio::spawn(async move { pod::final_delete(&node, &pod).await });
            return;
        }
        if terminal {
            return;
        }
        let rt = PodRuntime::new(self, &pod);
        self.pods.lock().unwrap().insert(uid, rt.clone());
        let node = self.clone();
        let task = tokio::spawn(async move {
            let uid = rt.uid.clone();
            pod::run_pod(node.clone(), rt, pod).await;
            node.pods.lock().unwrap().remove(&uid);
        });
        drop(task);
    }

    pub(crate) fn find_pod(&self, namespace: &str, name: &str) -> Option<Arc<PodRuntime>> {
        self.pods
            .lock()
            .unwrap()
            .values()
            .find(|p| p.namespace == namespace && p.name == name)
            .cloned()
    }

    /// PIDs of all running container processes.
    pub fn pids(&self) -> Vec<i32> {
        self.pods
            .lock()
            .unwrap()
            .values()
            .flat_map(|p| p.pids())
            .collect()
    }

    /// Kills every container (cluster shutdown).
    pub fn kill_all(&self) {
        let pods: Vec<_> = self.pods.lock().unwrap().drain().map(|(_, p)| p).collect();
        for p in pods {
            p.force_kill();
        }
    }

    /// Stops (SIGSTOP) every process of every pod that uses one of the given volume
    /// handles; the returned guard resumes them (SIGCONT) when dropped.
    pub fn freeze(&self, handles: &[String]) -> FreezeGuard {
        let mut groups = Vec::new();
        for p in self.pods.lock().unwrap().values() {
            if p.uses_any(handles) {
                groups.extend(p.process_groups());
            }
        }
        for g in &groups {
            crate::process::kill_group(*g, libc::SIGSTOP);
        }
        if !groups.is_empty() {
            tracing::debug!(?groups, "froze pod processes for a snapshot");
        }
        FreezeGuard { groups }
    }
}

/// Resumes frozen processes on drop.
pub struct FreezeGuard {
    groups: Vec<i32>,
}

impl FreezeGuard {
    /// The process groups that were stopped.
    pub fn groups(&self) -> &[i32] {
        &self.groups
    }
}

impl Drop for FreezeGuard {
    fn drop(&mut self) {
        for g in &self.groups {
            crate::process::kill_group(*g, libc::SIGCONT);
        }
    }
}
