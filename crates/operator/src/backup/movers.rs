//! The data movement step, operator side: for each volume copied to the repository, a
//! VolumeBackup (the record, owned by the Backup), a PVC made from the volume's snapshot
//! and a data-mover pod (`coffer mover backup`, the Coffer image) in the PVC's namespace
//! that writes it to the repository and reports progress into the VolumeBackup's status.
//!
//! Movers run in the application's namespace because a PVC can only be made from a
//! snapshot in its own namespace. Each such namespace gets a ServiceAccount
//! `coffer-mover` bound to the ClusterRole `coffer-mover` (read its VolumeBackup, write
//! its status, get VolumeSnapshots for the SnapshotMetadata service's check) and, per
//! Backup, a Secret with the repository's location and key (copied from the repository's
//! Secrets, deleted with the Backup's temporary objects).

use std::collections::BTreeMap;

use coffer_api::{
    Backup, RepositoryRef, VolumeBackup, VolumeBackupPhase, VolumeBackupSpec, VolumePolicyKind,
    VolumeStatus,
};
use coffer_cbt::discovery::ServiceEndpoint;
use coffer_repo::Location;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

use crate::error::{Error, KubeContext, Result, is_conflict, is_not_found};
use crate::names::{
    BACKUP_LABEL, MANAGED_BY, MOVER_CLUSTER_ROLE, MOVER_LABEL, MOVER_SERVICE_ACCOUNT, object_name,
};
use crate::repository::RepositoryAccess;

/// Where the mover sees a Filesystem volume.
pub const FS_MOUNT: &str = "/data";
/// Where the mover sees a Block volume.
pub const BLOCK_DEVICE: &str = "/dev/coffer-source";
/// Where the repository Secret is mounted in a mover (the raw key, the CBT CA).
pub const SECRET_DIR: &str = "/etc/coffer/repo";
/// Where the audience-scoped token for the SnapshotMetadata service is mounted.
pub const CBT_TOKEN_DIR: &str = "/var/run/secrets/coffer/cbt";

/// Names of the objects one volume's movement uses.
pub struct MoverNames {
    /// The VolumeBackup.
    pub volume_backup: String,
    /// The PVC made from the snapshot.
    pub pvc: String,
    /// The pod.
    pub pod: String,
}

/// The names for volume `v` of backup `backup`.
pub fn names(backup: &str, v: &VolumeStatus) -> MoverNames {
    MoverNames {
        volume_backup: object_name(&[backup, &v.pvc]),
        pvc: object_name(&["coffer", backup, &v.pvc]),
        pod: object_name(&["coffer-mover", backup, &v.pvc]),
    }
}

/// The per-Backup repository Secret's name in each mover namespace.
pub fn secret_name(backup: &str) -> String {
    object_name(&["coffer-repo", backup])
}

fn labels(b: &Backup) -> BTreeMap<String, String> {
    [
        (BACKUP_LABEL.to_string(), b.name_any()),
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
    ]
    .into()
}

pub(crate) async fn create<K>(api: &Api<K>, obj: &K, what: &str) -> Result<()>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(e).kube_ctx(|| format!("creating {what}")),
    }
}

pub(crate) fn from_json<K: serde::de::DeserializeOwned>(v: Value, what: &str) -> Result<K> {
    serde_json::from_value(v).map_err(|e| Error::Failed(format!("building {what}: {e}")))
}

/// The movers' ServiceAccount and RoleBinding in `ns` (kept across backups).
pub async fn ensure_access(client: &Client, ns: &str) -> Result<()> {
    let sa: ServiceAccount = from_json(
        json!({"metadata": {"name": MOVER_SERVICE_ACCOUNT, "namespace": ns,
                            "labels": {MANAGED_BY.0: MANAGED_BY.1}}}),
        "the movers' ServiceAccount",
    )?;
    create(
        &Api::namespaced(client.clone(), ns),
        &sa,
        &format!("ServiceAccount {ns}/{MOVER_SERVICE_ACCOUNT}"),
    )
    .await?;
    let rb: RoleBinding = from_json(
        json!({"metadata": {"name": MOVER_SERVICE_ACCOUNT, "namespace": ns,
                            "labels": {MANAGED_BY.0: MANAGED_BY.1}},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": MOVER_CLUSTER_ROLE},
               "subjects": [{"kind": "ServiceAccount", "name": MOVER_SERVICE_ACCOUNT, "namespace": ns}]}),
        "the movers' RoleBinding",
    )?;
    create(
        &Api::namespaced(client.clone(), ns),
        &rb,
        &format!("RoleBinding {ns}/{MOVER_SERVICE_ACCOUNT}"),
    )
    .await
}

/// The Backup's repository Secret in `ns` (location, key, S3 variables, CBT CA).
pub async fn ensure_secret(
    client: &Client,
    b: &Backup,
    ns: &str,
    access: &RepositoryAccess,
    cbt_ca: Option<&[u8]>,
) -> Result<()> {
    let mut data = access.mover_secret_data();
    if let Some(ca) = cbt_ca {
        data.insert("cbt-ca.crt".into(), ByteString(ca.to_vec()));
    }
    let name = secret_name(&b.name_any());
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.to_string()),
            labels: Some(labels(b)),
            owner_references: b.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        data: Some(data.clone()),
        ..Default::default()
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(()),
        // Made for an earlier mover of this backup: add what this one needs (the CBT CA
        // of a block volume after a file-system one), never take keys away.
        Err(e) if is_conflict(&e) => {
            api.patch(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({ "data": data })),
            )
            .await
            .kube_ctx(|| format!("updating Secret {ns}/{name}"))?;
            Ok(())
        }
        Err(e) => Err(e).kube_ctx(|| format!("creating Secret {ns}/{name}")),
    }
}

/// The changed-block base of a volume: the snapshot kept from its previous backup.
pub struct CbtBase {
    /// Its CSI snapshot handle.
    pub handle: String,
    /// The repository snapshot made from it (the parent of the new one).
    pub parent: String,
}

/// What a mover needs to ask the SnapshotMetadata service.
pub struct CbtPlan {
    /// The service.
    pub endpoint: ServiceEndpoint,
    /// The base, when there is one.
    pub base: Option<CbtBase>,
}

/// Creates the VolumeBackup, the PVC from the snapshot and the mover pod of volume `v`
/// (each only if absent).
#[allow(clippy::too_many_arguments)]
pub async fn start(
    client: &Client,
    b: &Backup,
    v: &VolumeStatus,
    repository: &RepositoryRef,
    access: &RepositoryAccess,
    image: &str,
    cbt: Option<&CbtPlan>,
    parent: Option<&str>,
) -> Result<()> {
    let n = names(&b.name_any(), v);
    let ns = &v.namespace;
    let block = v.volume_mode.as_deref() == Some("Block");
    let owner = b.controller_owner_ref(&()).map(|o| vec![o]);
    let mut vb_labels = labels(b);
    vb_labels.insert("coffer.dev/pvc".into(), v.pvc.clone());
    let vb = VolumeBackup {
        metadata: kube::api::ObjectMeta {
            name: Some(n.volume_backup.clone()),
            namespace: Some(ns.clone()),
            labels: Some(vb_labels.clone()),
            owner_references: owner.clone(),
            ..Default::default()
        },
        spec: VolumeBackupSpec {
            backup: b.name_any(),
            source_pvc: v.pvc.clone(),
            source_namespace: ns.clone(),
            size: v.size.clone().unwrap_or_default(),
            volume_mode: v.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()),
            storage_class_name: v.storage_class.clone(),
            access_modes: vec!["ReadWriteOnce".into()],
            labels: BTreeMap::new(),
            repository: repository.clone(),
            snapshot_id: None,
            restore: None,
        },
        status: None,
    };
    create(
        &Api::namespaced(client.clone(), ns),
        &vb,
        &format!("VolumeBackup {ns}/{}", n.volume_backup),
    )
    .await?;

    let live = v.mode == VolumePolicyKind::Live;
    // A live copy mounts the application's PVC itself, on the node where it is mounted
    // (a ReadWriteOnce volume can be shared by pods of one node).
    let (claim, node) = if live {
        (v.pvc.clone(), node_using(client, ns, &v.pvc).await?)
    } else {
        (n.pvc.clone(), None)
    };
    let snapshot = match (&v.volume_snapshot, live) {
        (_, true) => String::new(),
        (Some(s), false) => s.clone(),
        (None, false) => {
            return Err(Error::Failed(format!(
                "PVC {ns}/{} has no snapshot to copy",
                v.pvc
            )));
        }
    };
    if !live {
        make_pvc(client, ns, &n.pvc, v, block, &snapshot, &vb_labels, &owner).await?;
    }
    let mut args = vec![
        "mover".to_string(),
        "backup".into(),
        "--volume-backup".into(),
        n.volume_backup.clone(),
        "--namespace".into(),
        ns.clone(),
        "--source".into(),
        if block { BLOCK_DEVICE } else { FS_MOUNT }.into(),
        "--mode".into(),
        if block { "block" } else { "fs" }.into(),
    ];
    if access.uses_key_file() {
        args.extend(["--key-file".into(), format!("{SECRET_DIR}/key")]);
    }
    let mut volumes = vec![
        json!({"name": "source", "persistentVolumeClaim": {"claimName": claim, "readOnly": !block}}),
        json!({"name": "cache", "emptyDir": {}}),
        json!({"name": "repo", "secret": {"secretName": secret_name(&b.name_any()), "defaultMode": 0o400}}),
    ];
    let mut mounts = vec![
        json!({"name": "cache", "mountPath": "/cache"}),
        json!({"name": "repo", "mountPath": SECRET_DIR, "readOnly": true}),
    ];
    if let Location::Local(path) = &access.location {
        // A path repository must be the same directory in every mover: the node's.
        volumes.push(
            json!({"name": "repository", "hostPath": {"path": path, "type": "DirectoryOrCreate"}}),
        );
        mounts.push(json!({"name": "repository", "mountPath": path}));
    }
    match (block, cbt.filter(|_| !live)) {
        (true, Some(c)) => {
            volumes.push(json!({"name": "cbt-token", "projected": {"sources": [
                {"serviceAccountToken": {"audience": c.endpoint.audience, "expirationSeconds": 3600, "path": "token"}}]}}));
            mounts.push(json!({"name": "cbt-token", "mountPath": CBT_TOKEN_DIR, "readOnly": true}));
            args.extend([
                "--cbt-address".into(),
                c.endpoint.address.clone(),
                "--cbt-ca-file".into(),
                format!("{SECRET_DIR}/cbt-ca.crt"),
                "--cbt-token-file".into(),
                format!("{CBT_TOKEN_DIR}/token"),
                "--cbt-target".into(),
                snapshot.clone(),
            ]);
            if let Some(base) = &c.base {
                args.extend([
                    "--cbt-base".into(),
                    base.handle.clone(),
                    "--parent".into(),
                    base.parent.clone(),
                ]);
            } else if let Some(p) = parent {
                args.extend(["--parent".into(), p.to_string()]);
            }
        }
        _ => {
            if let Some(p) = parent {
                args.extend(["--parent".into(), p.to_string()]);
            }
        }
    }
    let mut container = json!({
        "name": "mover",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "envFrom": [{"secretRef": {"name": secret_name(&b.name_any())}}],
        "env": [
            {"name": "COFFER_CACHE_DIR", "value": "/cache"},
            {"name": "COFFER_LOG", "value": "info"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "volumeMounts": mounts,
    });
    if block {
        container["volumeDevices"] = json!([{"name": "source", "devicePath": BLOCK_DEVICE}]);
    } else {
        container["volumeMounts"]
            .as_array_mut()
            .expect("volumeMounts is an array")
            .push(json!({"name": "source", "mountPath": FS_MOUNT, "readOnly": true}));
    }
    let mut pod_labels = vb_labels;
    pod_labels.insert(MOVER_LABEL.into(), "true".into());
    let pod: Pod = from_json(
        json!({
            "metadata": {"name": n.pod, "namespace": ns, "labels": pod_labels, "ownerReferences": owner},
            "spec": {
                "nodeName": node,
                "restartPolicy": "Never",
                "serviceAccountName": MOVER_SERVICE_ACCOUNT,
                "containers": [container],
                "volumes": volumes,
            },
        }),
        "the mover pod",
    )?;
    create(
        &Api::namespaced(client.clone(), ns),
        &pod,
        &format!("pod {ns}/{}", n.pod),
    )
    .await
}

/// How a volume's movement stands, from its VolumeBackup and its pod.
pub enum Observed {
    /// Not started (no VolumeBackup yet).
    NotStarted,
    /// Running; progress so far.
    Running(Box<VolumeBackup>),
    /// Done.
    Completed(Box<VolumeBackup>),
    /// Failed, with the reason.
    Failed(String),
}

/// Looks at volume `v`'s VolumeBackup and mover pod. A pod that ended without the
/// VolumeBackup saying Completed, or a mover silent past `silence`, is a failure.
pub async fn observe(
    client: &Client,
    backup: &str,
    v: &VolumeStatus,
    silence: std::time::Duration,
    start_deadline: std::time::Duration,
) -> Result<Observed> {
    let n = names(backup, v);
    let ns = &v.namespace;
    let vbs: Api<VolumeBackup> = Api::namespaced(client.clone(), ns);
    let Some(vb) = vbs
        .get_opt(&n.volume_backup)
        .await
        .kube_ctx(|| format!("reading VolumeBackup {ns}/{}", n.volume_backup))?
    else {
        return Ok(Observed::NotStarted);
    };
    let status = vb.status.clone().unwrap_or_default();
    match status.phase {
        Some(VolumeBackupPhase::Completed) => return Ok(Observed::Completed(Box::new(vb))),
        Some(VolumeBackupPhase::Failed) | Some(VolumeBackupPhase::Canceled) => {
            return Ok(Observed::Failed(
                status
                    .message
                    .unwrap_or_else(|| "the data mover failed".into()),
            ));
        }
        _ => {}
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = pods
        .get_opt(&n.pod)
        .await
        .kube_ctx(|| format!("reading pod {ns}/{}", n.pod))?;
    let age = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.map(|t| crate::time::age(&t.0))
    };
    match pod {
        // Made, but its pod not yet (an operator stopped between the two): start it.
        None if matches!(status.phase, None | Some(VolumeBackupPhase::Pending)) => {
            Ok(Observed::NotStarted)
        }
        None => Ok(Observed::Failed(format!(
            "the data-mover pod {ns}/{} is gone before finishing",
            n.pod
        ))),
        Some(p) => {
            let phase = p
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default();
            if phase == "Failed" || phase == "Succeeded" {
                // The VolumeBackup was read before the pod: read it again, the mover may
                // have finished in between.
                let vb = vbs
                    .get(&n.volume_backup)
                    .await
                    .kube_ctx(|| format!("reading VolumeBackup {ns}/{}", n.volume_backup))?;
                let st = vb.status.clone().unwrap_or_default();
                if st.phase == Some(VolumeBackupPhase::Completed) {
                    return Ok(Observed::Completed(Box::new(vb)));
                }
                let term = p
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|c| c.first())
                    .and_then(|c| c.state.as_ref())
                    .and_then(|s| s.terminated.as_ref())
                    .map(|t| {
                        format!(
                            "exit code {}{}",
                            t.exit_code,
                            t.message
                                .as_ref()
                                .map(|m| format!(": {m}"))
                                .unwrap_or_default()
                        )
                    })
                    .unwrap_or_else(|| phase.clone());
                if let Some(m) = st.message {
                    return Ok(Observed::Failed(m));
                }
                // The mover could not say why itself (it failed before it could reach its
                // VolumeBackup): the end of its log does.
                let tail = crate::restore_pod::last_log_line(&pods, &n.pod).await;
                return Ok(Observed::Failed(format!(
                    "the data-mover pod {ns}/{} ended ({term}){}",
                    n.pod,
                    if tail.is_empty() {
                        String::new()
                    } else {
                        format!(": {tail}")
                    }
                )));
            }
            if phase != "Running" {
                if age(p.metadata.creation_timestamp.as_ref()).is_some_and(|a| a > start_deadline) {
                    let why = p
                        .status
                        .as_ref()
                        .and_then(|s| s.container_statuses.as_ref())
                        .and_then(|c| c.first())
                        .and_then(|c| c.state.as_ref())
                        .and_then(|s| s.waiting.as_ref())
                        .map(|w| {
                            format!(
                                "{}{}",
                                w.reason.clone().unwrap_or_default(),
                                w.message
                                    .as_ref()
                                    .map(|m| format!(": {m}"))
                                    .unwrap_or_default()
                            )
                        })
                        .unwrap_or_else(|| format!("phase {phase}"));
                    return Ok(Observed::Failed(format!(
                        "the data-mover pod {ns}/{} did not start within {}s ({why})",
                        n.pod,
                        start_deadline.as_secs()
                    )));
                }
                return Ok(Observed::Running(Box::new(vb)));
            }
            let last = status
                .last_update_time
                .as_ref()
                .or(p.metadata.creation_timestamp.as_ref());
            if age(last).is_some_and(|a| a > silence + start_deadline) {
                return Ok(Observed::Failed(format!(
                    "the data-mover pod {ns}/{} reported nothing for {}s: taken as lost",
                    n.pod,
                    silence.as_secs()
                )));
            }
            Ok(Observed::Running(Box::new(vb)))
        }
    }
}

/// Deletes the movers' pods, PVCs and the repository Secret of backup `backup` in `ns`.
pub async fn clean(client: &Client, backup: &str, ns: &str) -> Result<()> {
    let lp = ListParams::default().labels(&format!("{BACKUP_LABEL}={backup}"));
    let dp = DeleteParams::background();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    for p in pods
        .list(&lp)
        .await
        .kube_ctx(|| format!("listing the mover pods of {ns}"))?
        .items
        .into_iter()
        .filter(|p| p.labels().contains_key(MOVER_LABEL))
    {
        let _ = pods
            .delete(&p.name_any(), &DeleteParams::default().grace_period(1))
            .await;
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    pvcs.delete_collection(&dp, &lp)
        .await
        .kube_ctx(|| format!("deleting the movers' PVCs in {ns}"))?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    match secrets.delete(&secret_name(backup), &dp).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e).kube_ctx(|| format!("deleting the movers' Secret in {ns}")),
    }
}

/// Mover pods running or starting now, over the whole cluster.
pub async fn running(client: &Client) -> Result<usize> {
    let pods: Api<Pod> = Api::all(client.clone());
    let lp = ListParams::default().labels(&format!("{MOVER_LABEL}=true"));
    Ok(pods
        .list(&lp)
        .await
        .kube_ctx(|| "listing mover pods".into())?
        .items
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    None | Some("Pending") | Some("Running")
                )
        })
        .count())
}

/// The PVC a mover reads: made from `snapshot`, shaped as the source PVC.
#[allow(clippy::too_many_arguments)]
async fn make_pvc(
    client: &Client,
    ns: &str,
    name: &str,
    v: &VolumeStatus,
    block: bool,
    snapshot: &str,
    labels: &BTreeMap<String, String>,
    owner: &Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>,
) -> Result<()> {
    let pvc: PersistentVolumeClaim = from_json(
        json!({
            "metadata": {"name": name, "namespace": ns, "labels": labels, "ownerReferences": owner},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": v.storage_class,
                "volumeMode": if block { "Block" } else { "Filesystem" },
                "resources": {"requests": {"storage": v.size.clone().unwrap_or_else(|| "1Gi".into())}},
                "dataSource": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": snapshot},
            },
        }),
        "the mover's PVC",
    )?;
    create(
        &Api::namespaced(client.clone(), ns),
        &pvc,
        &format!("PVC {ns}/{name}"),
    )
    .await
}

/// The node of a running pod that mounts PVC `ns/pvc`, if any.
async fn node_using(client: &Client, ns: &str, pvc: &str) -> Result<Option<String>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default())
        .await
        .kube_ctx(|| format!("listing the pods of {ns}"))?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .find(|p| {
            p.spec.as_ref().is_some_and(|s| {
                s.volumes.iter().flatten().any(|v| {
                    v.persistent_volume_claim
                        .as_ref()
                        .is_some_and(|c| c.claim_name == pvc)
                })
            })
        })
        .and_then(|p| p.spec.and_then(|s| s.node_name)))
}
