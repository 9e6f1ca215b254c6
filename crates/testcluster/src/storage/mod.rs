//! The simulated CSI storage, driven the way the CSI sidecars drive a real driver:
//! a provisioner for the `coffer-sim` StorageClasses (directories for Filesystem
//! volumes, sparse files for Block volumes), the snapshot controller and sidecar for
//! VolumeSnapshot and VolumeGroupSnapshot (the processes of pods using a volume are
//! stopped for the copy), and the SnapshotMetadata gRPC service for changed blocks.

mod group;
pub mod metadata;
mod provisioner;
mod snapshot;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec};
use kube::Client;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::runtime::controller::{Action, Controller};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::certs::{Ca, CertFiles};
use crate::node::Node;

/// Finalizer the provisioner puts on the PVs it creates.
pub(crate) const PV_FINALIZER: &str = "external-provisioner.volume.kubernetes.io/finalizer";

/// The error type of the reconcilers (kube-runtime needs a std error).
#[derive(Debug)]
pub(crate) struct ReconcileError(anyhow::Error);

impl std::fmt::Display for ReconcileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for ReconcileError {}

impl From<anyhow::Error> for ReconcileError {
    fn from(e: anyhow::Error) -> Self {
        ReconcileError(e)
    }
}

pub(crate) fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

pub(crate) fn vs_ar() -> ApiResource {
    ar(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshot",
        "volumesnapshots",
    )
}
pub(crate) fn vsc_ar() -> ApiResource {
    ar(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshotContent",
        "volumesnapshotcontents",
    )
}
pub(crate) fn vsclass_ar() -> ApiResource {
    ar(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshotClass",
        "volumesnapshotclasses",
    )
}
pub(crate) fn vgs_ar() -> ApiResource {
    ar(
        "groupsnapshot.storage.k8s.io",
        "v1beta2",
        "VolumeGroupSnapshot",
        "volumegroupsnapshots",
    )
}
pub(crate) fn vgsc_ar() -> ApiResource {
    ar(
        "groupsnapshot.storage.k8s.io",
        "v1beta2",
        "VolumeGroupSnapshotContent",
        "volumegroupsnapshotcontents",
    )
}
pub(crate) fn vgsclass_ar() -> ApiResource {
    ar(
        "groupsnapshot.storage.k8s.io",
        "v1beta2",
        "VolumeGroupSnapshotClass",
        "volumegroupsnapshotclasses",
    )
}
pub(crate) fn sms_ar() -> ApiResource {
    ar(
        "cbt.storage.k8s.io",
        "v1beta1",
        "SnapshotMetadataService",
        "snapshotmetadataservices",
    )
}

/// Reads a string at a JSON path.
pub(crate) fn jstr<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_str().filter(|s| !s.is_empty())
}

pub(crate) fn jbool(v: &Value, path: &[&str]) -> bool {
    let mut cur = v;
    for p in path {
        match cur.get(*p) {
            Some(x) => cur = x,
            None => return false,
        }
    }
    cur.as_bool().unwrap_or(false)
}

/// Parses a Kubernetes quantity of bytes ("1Gi", "500M", "1024").
pub fn parse_quantity(q: &str) -> Result<u64> {
    let q = q.trim();
    let units: [(&str, u64); 12] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("Pi", 1 << 50),
        ("Ei", 1 << 60),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("P", 1_000_000_000_000_000),
        ("E", 1_000_000_000_000_000_000),
    ];
    for (suffix, mult) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            let n: f64 = n.parse().with_context(|| format!("bad quantity {q}"))?;
            return Ok((n * mult as f64).ceil() as u64);
        }
    }
    let n: f64 = q.parse().with_context(|| format!("bad quantity {q}"))?;
    Ok(n.ceil() as u64)
}

/// Formats bytes as a quantity ("1Gi" when exact, else plain bytes).
pub fn format_quantity(bytes: u64) -> String {
    for (suffix, shift) in [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        if bytes > 0 && bytes.is_multiple_of(1u64 << shift) {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// What is recorded beside each snapshot's data.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SnapshotMeta {
    /// The snapshot handle (the VolumeSnapshotContent's snapshotHandle).
    pub handle: String,
    /// The PV the snapshot was taken of.
    pub source_volume: String,
    /// Whether the volume is a Block volume (an image) rather than a directory.
    pub block: bool,
    /// The volume's size in bytes.
    pub size: u64,
    /// Unix nanoseconds.
    pub created: i64,
}

/// The simulated storage.
pub struct Storage {
    pub(crate) client: Client,
    root: PathBuf,
    freezer: OnceLock<Weak<Node>>,
    pub(crate) ca_pem: String,
    pub(crate) grpc_cert: CertFiles,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Storage {
    pub(crate) fn new(
        client: Client,
        cluster_root: &Path,
        ca: &Ca,
        ca_pem: String,
    ) -> Result<Arc<Storage>> {
        let root = cluster_root.join("storage");
        std::fs::create_dir_all(root.join("volumes"))?;
        std::fs::create_dir_all(root.join("snapshots"))?;
        let grpc_cert = ca.serving(
            &cluster_root.join("pki"),
            "snapshot-metadata",
            &["127.0.0.1", "localhost"],
        )?;
        Ok(Arc::new(Storage {
            client,
            root,
            freezer: OnceLock::new(),
            ca_pem,
            grpc_cert,
            tasks: Mutex::new(Vec::new()),
        }))
    }

    pub(crate) fn set_freezer(&self, node: Arc<Node>) {
        let _ = self.freezer.set(Arc::downgrade(&node));
    }

    pub(crate) async fn start(self: Arc<Self>) -> Result<Vec<JoinHandle<()>>> {
        let mut tasks = vec![
            tokio::spawn(provisioner::run_pvc_controller(self.clone())),
            tokio::spawn(provisioner::run_pv_controller(self.clone())),
            tokio::spawn(snapshot::run_snapshot_controller(self.clone())),
            tokio::spawn(snapshot::run_content_controller(self.clone())),
            tokio::spawn(group::run_group_controller(self.clone())),
        ];
        tasks.push(metadata::start(self.clone()).await?);
        Ok(tasks)
    }

    pub(crate) fn shutdown(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    /// Where a volume's data lives: a directory (Filesystem) or a sparse file (Block).
    pub fn volume_path(&self, handle: &str, block: bool) -> PathBuf {
        if block {
            self.root.join("volumes").join(format!("{handle}.img"))
        } else {
            self.root.join("volumes").join(handle)
        }
    }

    /// A snapshot's directory (holding `data` or `data.img`, and `meta.json`).
    pub fn snapshot_dir(&self, handle: &str) -> PathBuf {
        self.root.join("snapshots").join(handle)
    }

    /// What was recorded beside snapshot `handle`'s data.
    pub fn snapshot_meta(&self, handle: &str) -> Result<SnapshotMeta> {
        let p = self.snapshot_dir(handle).join("meta.json");
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("snapshot {handle} not found"))?;
        Ok(serde_json::from_str(&text)?)
    }

    /// The data of a snapshot: a directory or an image file.
    pub fn snapshot_data(&self, meta: &SnapshotMeta) -> PathBuf {
        let d = self.snapshot_dir(&meta.handle);
        if meta.block {
            d.join("data.img")
        } else {
            d.join("data")
        }
    }

    pub(crate) async fn create_volume(
        &self,
        handle: &str,
        block: bool,
        size: u64,
    ) -> Result<PathBuf> {
        let p = self.volume_path(handle, block);
        if block {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&p)?;
            if f.metadata()?.len() < size {
                f.set_len(size)?;
            }
        } else {
            std::fs::create_dir_all(&p)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777))?;
        }
        Ok(p)
    }

    pub(crate) fn delete_volume(&self, handle: &str) {
        let _ = std::fs::remove_dir_all(self.volume_path(handle, false));
        let _ = std::fs::remove_file(self.volume_path(handle, true));
    }

    pub(crate) fn delete_snapshot(&self, handle: &str) {
        if !handle.is_empty() && !handle.contains('/') {
            let _ = std::fs::remove_dir_all(self.snapshot_dir(handle));
        }
    }

    /// Copies volume data or snapshot data (sparse files stay sparse).
    pub(crate) async fn copy_data(src: &Path, dst: &Path, block: bool) -> Result<()> {
        let status = if block {
            tokio::process::Command::new("cp")
                .arg("--sparse=always")
                .arg(src)
                .arg(dst)
                .status()
                .await?
        } else {
            std::fs::create_dir_all(dst)?;
            tokio::process::Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", src.display()))
                .arg(dst)
                .status()
                .await?
        };
        if !status.success() {
            bail!(
                "copying {} to {} failed ({status})",
                src.display(),
                dst.display()
            );
        }
        Ok(())
    }

    /// Takes snapshots of several volumes at one instant: every process of every pod
    /// using any of the volumes is stopped (SIGSTOP) for the copies and resumed after.
    /// Each item is (volume handle, snapshot handle, block, size).
    pub(crate) async fn take_snapshots(
        &self,
        items: &[(String, String, bool, u64)],
    ) -> Result<Vec<SnapshotMeta>> {
        let handles: Vec<String> = items.iter().map(|i| i.0.clone()).collect();
        let node = self.freezer.get().and_then(|w| w.upgrade());
        let all_exist = items
            .iter()
            .all(|i| self.snapshot_dir(&i.1).join("meta.json").exists());
        let guard = node
            .as_ref()
            .filter(|_| !all_exist)
            .map(|n| n.freeze(&handles));
        let created = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        let mut out = Vec::new();
        for (vol, snap, block, size) in items {
            let dir = self.snapshot_dir(snap);
            if dir.join("meta.json").exists() {
                out.push(self.snapshot_meta(snap)?);
                continue;
            }
            let tmp = self.root.join("snapshots").join(format!(".tmp-{snap}"));
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir_all(&tmp)?;
            let src = self.volume_path(vol, *block);
            let data = if *block {
                tmp.join("data.img")
            } else {
                tmp.join("data")
            };
            Self::copy_data(&src, &data, *block).await?;
            let meta = SnapshotMeta {
                handle: snap.clone(),
                source_volume: vol.clone(),
                block: *block,
                size: *size,
                created,
            };
            std::fs::write(tmp.join("meta.json"), serde_json::to_vec(&meta)?)?;
            std::fs::rename(&tmp, &dir)?;
            out.push(meta);
        }
        drop(guard);
        Ok(out)
    }
}

/// Installs the CSIDriver, the StorageClasses, the VolumeSnapshotClass and the
/// VolumeGroupSnapshotClass of the simulated driver.
pub(crate) async fn install_classes(client: &Client) -> Result<()> {
    let pp = PatchParams::apply("coffer-testcluster").force();
    let apply = |ar: ApiResource, obj: Value| {
        let client = client.clone();
        let pp = pp.clone();
        async move {
            let name = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let api: Api<DynamicObject> = Api::all_with(client, &ar);
            api.patch(&name, &pp, &Patch::Apply(&obj))
                .await
                .with_context(|| format!("installing {} {name}", ar.kind))?;
            anyhow::Ok(())
        }
    };
    apply(
        ar("storage.k8s.io", "v1", "CSIDriver", "csidrivers"),
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver", "metadata": {"name": crate::DRIVER},
               "spec": {"attachRequired": false, "podInfoOnMount": false, "volumeLifecycleModes": ["Persistent"]}}),
    )
    .await?;
    for (name, mode, default) in [
        (crate::STORAGE_CLASS, "Immediate", "true"),
        (crate::STORAGE_CLASS_WFFC, "WaitForFirstConsumer", "false"),
    ] {
        apply(
            ar("storage.k8s.io", "v1", "StorageClass", "storageclasses"),
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                   "metadata": {"name": name, "annotations": {"storageclass.kubernetes.io/is-default-class": default}},
                   "provisioner": crate::DRIVER, "reclaimPolicy": "Delete", "volumeBindingMode": mode,
                   "allowVolumeExpansion": true}),
        )
        .await?;
    }
    apply(
        vsclass_ar(),
        json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
               "metadata": {"name": crate::SNAPSHOT_CLASS, "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"}},
               "driver": crate::DRIVER, "deletionPolicy": "Delete"}),
    )
    .await?;
    apply(
        vgsclass_ar(),
        json!({"apiVersion": "groupsnapshot.storage.k8s.io/v1beta2", "kind": "VolumeGroupSnapshotClass",
               "metadata": {"name": crate::SNAPSHOT_CLASS, "annotations": {"groupsnapshot.storage.kubernetes.io/is-default-class": "true"}},
               "driver": crate::DRIVER, "deletionPolicy": "Delete"}),
    )
    .await?;
    Ok(())
}

/// Runs a kube-runtime Controller forever (rebuilt by `make` whenever its stream ends),
/// reconciling with `reconcile` and retrying failures after a second.
pub(crate) async fn run_controller<K, M, F, Fut>(
    st: Arc<Storage>,
    name: &'static str,
    make: M,
    reconcile: F,
) where
    K: Clone
        + kube::Resource
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: std::fmt::Debug + Eq + std::hash::Hash + Clone + Unpin,
    M: Fn(&Storage) -> Controller<K>,
    F: Fn(Arc<K>, Arc<Storage>) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = Result<Action>> + Send + 'static,
{
    loop {
        make(&st)
            .run(
                move |obj, st| {
                    let fut = reconcile(obj, st);
                    async move { fut.await.map_err(ReconcileError::from) }
                },
                move |_, e, _| {
                    tracing::debug!("{name} controller: {e}");
                    Action::requeue(Duration::from_secs(1))
                },
                st.clone(),
            )
            .for_each(|_| async {})
            .await;
        tracing::debug!("{name} controller stream ended; restarting");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Creates an object; one that exists already (409) is fine.
pub(crate) async fn create_if_absent<K>(api: &Api<K>, obj: &K) -> Result<()>
where
    K: Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Reports a failure in the status of a (group) snapshot object: readyToUse false and
/// `error` with the message and the time, as the snapshot controller does.
pub(crate) async fn set_status_error(api: &Api<DynamicObject>, name: &str, msg: &str) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let patch = json!({"status": {"readyToUse": false, "error": {"message": msg, "time": now}}});
    let _ = api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await;
}

/// A (group) snapshot class of this driver: the one named, or the driver's default (the
/// one annotated `<default_annotation>: "true"`). None if there is none.
pub(crate) async fn find_class(
    client: &Client,
    ar: &ApiResource,
    name: Option<&str>,
    default_annotation: &str,
) -> Result<Option<DynamicObject>> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), ar);
    Ok(api
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .find(|c| match name {
            Some(n) => c.metadata.name.as_deref() == Some(n),
            None => {
                jstr(&c.data, &["driver"]) == Some(crate::DRIVER)
                    && c.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(default_annotation))
                        .is_some_and(|v| v == "true")
            }
        }))
}

/// The storage capacity of a PV in bytes (0 when unset).
pub(crate) fn pv_capacity(spec: &PersistentVolumeSpec) -> Result<u64> {
    Ok(spec
        .capacity
        .as_ref()
        .and_then(|c| c.get("storage"))
        .map(|q| parse_quantity(&q.0))
        .transpose()?
        .unwrap_or(0))
}

/// A PVC's volume as a snapshot sees it.
pub(crate) enum ClaimVolume {
    /// Bound to a volume of this driver.
    Ours {
        handle: String,
        block: bool,
        size: u64,
    },
    /// Bound to a volume of another driver (or not a CSI volume).
    Foreign,
    /// Missing or not bound yet: the message says which.
    NotReady(String),
}

/// Looks up the volume behind a PVC (for snapshots and group snapshots).
pub(crate) async fn claim_volume(st: &Storage, ns: &str, pvc_name: &str) -> Result<ClaimVolume> {
    let pvc = Api::<PersistentVolumeClaim>::namespaced(st.client.clone(), ns)
        .get_opt(pvc_name)
        .await?;
    let Some(pvc) = pvc else {
        return Ok(ClaimVolume::NotReady(format!(
            "PersistentVolumeClaim {pvc_name} not found"
        )));
    };
    let Some(pv_name) = pvc
        .spec
        .and_then(|s| s.volume_name)
        .filter(|s| !s.is_empty())
    else {
        return Ok(ClaimVolume::NotReady(format!(
            "PersistentVolumeClaim {pvc_name} is not bound"
        )));
    };
    let pspec = Api::<PersistentVolume>::all(st.client.clone())
        .get(&pv_name)
        .await?
        .spec
        .unwrap_or_default();
    Ok(volume_of(&pspec).unwrap_or(ClaimVolume::Foreign))
}

/// The volume of a PV spec, if it is one of this driver's.
pub(crate) fn volume_of(pspec: &PersistentVolumeSpec) -> Option<ClaimVolume> {
    let csi = pspec.csi.as_ref().filter(|c| c.driver == crate::DRIVER)?;
    Some(ClaimVolume::Ours {
        handle: csi.volume_handle.clone(),
        block: pspec.volume_mode.as_deref() == Some("Block"),
        size: pv_capacity(pspec).ok()?,
    })
}

/// A VolumeSnapshotContent of this driver for the VolumeSnapshot `ns/vs_name`.
pub(crate) struct Content<'a> {
    pub name: &'a str,
    pub ns: &'a str,
    pub vs_name: &'a str,
    pub vs_uid: Option<&'a str>,
    /// `{"volumeHandle": ..}` (dynamic) or `{"snapshotHandle": ..}` (pre-provisioned).
    pub source: Value,
    pub policy: &'a str,
    pub class: Option<&'a str>,
    pub block: bool,
}

impl Content<'_> {
    pub(crate) fn object(&self) -> Result<DynamicObject> {
        let mut vs_ref = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                                "name": self.vs_name, "namespace": self.ns});
        if let Some(uid) = self.vs_uid {
            vs_ref["uid"] = json!(uid);
        }
        let mut spec = json!({
            "volumeSnapshotRef": vs_ref,
            "source": self.source,
            "driver": crate::DRIVER,
            "deletionPolicy": self.policy,
            "sourceVolumeMode": if self.block { "Block" } else { "Filesystem" },
        });
        if let Some(c) = self.class {
            spec["volumeSnapshotClassName"] = json!(c);
        }
        Ok(serde_json::from_value(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
            "metadata": {"name": self.name},
            "spec": spec,
        }))?)
    }
}

/// Merge-patches finalizers: the object's list with `add` added and `remove` removed.
pub(crate) fn finalizers_patch(
    current: &[String],
    add: Option<&str>,
    remove: &[&str],
) -> Option<Value> {
    let mut list: Vec<String> = current
        .iter()
        .filter(|f| !remove.contains(&f.as_str()))
        .cloned()
        .collect();
    if let Some(a) = add
        && !list.iter().any(|f| f == a)
    {
        list.push(a.to_string());
    }
    if list.as_slice() == current {
        None
    } else {
        Some(json!({"metadata": {"finalizers": list}}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("1Gi").unwrap(), 1 << 30);
        assert_eq!(parse_quantity("10Mi").unwrap(), 10 << 20);
        assert_eq!(parse_quantity("1k").unwrap(), 1000);
        assert_eq!(parse_quantity("4096").unwrap(), 4096);
        assert_eq!(format_quantity(1 << 30), "1Gi");
        assert_eq!(format_quantity(1000), "1000");
    }
}
