//! A backup data mover, as it runs inside its pod (`coffer mover backup`): opens the
//! repository from the Secret the operator made, asks the SnapshotMetadata service which
//! blocks to read (changed since the base snapshot, or allocated on a first backup),
//! backs the volume up with the volume layer, and reports into its VolumeBackup's status
//! every two seconds; the final status says what was read and written, or why it failed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use coffer_api::{VolumeBackup, VolumeBackupPhase, VolumeBackupStatus};
use coffer_cbt::SnapshotMetadataClient;
use coffer_cbt::discovery::ServiceEndpoint;
use coffer_repo::progress::Counters;
use coffer_repo::{ParentChoice, Repository, SharedProgress, SnapshotKind};
use coffer_volume::{block, fs};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::{BACKUP_TAG, PVC_TAG};
use crate::error::{Error, KubeContext, Result};

/// Where the SnapshotMetadata service is and what to ask it.
pub struct CbtArgs {
    /// `host:port`.
    pub address: String,
    /// The service's CA certificate (PEM file).
    pub ca_file: PathBuf,
    /// An audience-scoped token (file).
    pub token_file: PathBuf,
    /// The VolumeSnapshot being copied.
    pub target: String,
    /// The base snapshot's CSI handle, for a delta.
    pub base: Option<String>,
    /// The audience (only for messages).
    pub audience: String,
}

/// One volume's movement.
pub struct MoverBackup {
    /// The VolumeBackup to report into.
    pub volume_backup: String,
    /// Its namespace.
    pub namespace: String,
    /// The mounted volume (a directory) or device.
    pub source: PathBuf,
    /// Block (true) or file tree.
    pub block: bool,
    /// The repository snapshot unchanged data comes from (else found by the PVC's tag).
    pub parent: Option<String>,
    /// The changed-block service, when the volume's driver has one.
    pub cbt: Option<CbtArgs>,
    /// This pod's name (recorded in status).
    pub pod: Option<String>,
}

async fn patch(api: &Api<VolumeBackup>, name: &str, status: serde_json::Value) -> Result<()> {
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .kube_ctx(|| format!("writing the status of VolumeBackup {name}"))?;
    Ok(())
}

/// Runs the movement and records the outcome in the VolumeBackup (also on failure, with
/// the reason). Returns the final status.
pub async fn run(repo: &Repository, client: Client, m: MoverBackup) -> Result<VolumeBackupStatus> {
    let api: Api<VolumeBackup> = Api::namespaced(client, &m.namespace);
    let vb = api
        .get(&m.volume_backup)
        .await
        .kube_ctx(|| format!("reading VolumeBackup {}/{}", m.namespace, m.volume_backup))?;
    let started = crate::time::now();
    patch(
        &api,
        &m.volume_backup,
        json!({"phase": VolumeBackupPhase::InProgress, "moverPod": m.pod, "startTime": started,
               "lastUpdateTime": crate::time::now()}),
    )
    .await?;
    let result = move_data(repo, &api, &vb, &m).await;
    let now = crate::time::now();
    match result {
        Ok(mut status) => {
            status.phase = Some(VolumeBackupPhase::Completed);
            status.mover_pod = m.pod.clone();
            status.start_time = Some(started);
            status.completion_time = Some(now.clone());
            status.last_update_time = Some(now);
            patch(
                &api,
                &m.volume_backup,
                serde_json::to_value(&status).unwrap_or_default(),
            )
            .await?;
            Ok(status)
        }
        Err(e) => {
            let message = e.to_string();
            patch(
                &api,
                &m.volume_backup,
                json!({"phase": VolumeBackupPhase::Failed, "message": message,
                       "completionTime": now.clone(), "lastUpdateTime": now}),
            )
            .await?;
            Err(e)
        }
    }
}

async fn move_data(
    repo: &Repository,
    api: &Api<VolumeBackup>,
    vb: &VolumeBackup,
    m: &MoverBackup,
) -> Result<VolumeBackupStatus> {
    let pvc_id = format!("{}/{}", vb.spec.source_namespace, vb.spec.source_pvc);
    let mut tags = BTreeMap::new();
    tags.insert(PVC_TAG.to_string(), pvc_id.clone());
    tags.insert(
        BACKUP_TAG.to_string(),
        format!("{}/{}", m.namespace, vb.spec.backup),
    );
    let kind = if m.block {
        SnapshotKind::Block
    } else {
        SnapshotKind::Fs
    };
    // The parent: the one named, else the newest snapshot of this PVC of the same kind.
    let parent = match &m.parent {
        Some(id) => Some(
            repo.resolve_parent(&ParentChoice::Id(id.clone()), &kind, "", &tags)
                .await?
                .ok_or_else(|| Error::Failed(format!("parent snapshot {id} not found")))?,
        ),
        None => repo
            .list_snapshots()
            .await?
            .into_iter()
            .rev()
            .find(|s| s.kind == kind && s.tags.get(PVC_TAG) == Some(&pvc_id)),
    };

    let mut changed_ranges = None;
    let mut allocated_ranges = None;
    let mut changed_blocks = false;
    let mut full_read_reason = None;
    if m.block {
        match &m.cbt {
            None => full_read_reason = Some(
                "the volume's CSI driver offers no SnapshotMetadata service: every block was read"
                    .to_string(),
            ),
            Some(c) => {
                let endpoint = ServiceEndpoint {
                    address: c.address.clone(),
                    ca_pem: std::fs::read(&c.ca_file).map_err(|e| {
                        Error::Failed(format!("cannot read {}: {e}", c.ca_file.display()))
                    })?,
                    audience: c.audience.clone(),
                };
                let token = std::fs::read_to_string(&c.token_file).map_err(|e| {
                    Error::Failed(format!("cannot read {}: {e}", c.token_file.display()))
                })?;
                let mut client =
                    SnapshotMetadataClient::connect(&endpoint, token.trim().to_string()).await?;
                match (&c.base, &parent) {
                    (Some(base), Some(_)) => {
                        match client.delta(&m.namespace, base, &c.target).await {
                            Ok(d) => {
                                changed_blocks = true;
                                changed_ranges =
                                    Some(d.ranges.iter().map(|r| r.offset..r.end()).collect());
                            }
                            Err(e) => {
                                full_read_reason = Some(format!(
                                    "the changed blocks since the base snapshot could not be listed ({e}): every block was read"
                                ))
                            }
                        }
                    }
                    (base, _) => {
                        full_read_reason = Some(if base.is_some() {
                            "the base snapshot's repository snapshot is gone: the allocated blocks were read".into()
                        } else {
                            "no base snapshot (first backup of this volume, or the base was deleted): the allocated blocks were read".into()
                        });
                        let a = client.allocated(&m.namespace, &c.target).await?;
                        allocated_ranges =
                            Some(a.ranges.iter().map(|r| r.offset..r.end()).collect());
                    }
                }
            }
        }
    }

    let counting = Counters::new();
    let progress: SharedProgress = counting.clone();
    // Status every two seconds while the data moves.
    let reporter = {
        let api = api.clone();
        let name = m.volume_backup.clone();
        let c = counting.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let (done, total) = c.position();
                let status = json!({"bytesDone": done, "bytesTotal": total,
                                    "lastUpdateTime": crate::time::now()});
                if let Err(e) = patch(&api, &name, status).await {
                    tracing::warn!(error = %e, "progress update failed");
                }
            }
        })
    };
    let parent_id = parent.as_ref().map(|p| p.id.to_string());
    let summary = if m.block {
        block::backup(
            repo,
            block::BlockBackup {
                source: &m.source,
                tags,
                parent,
                changed_ranges,
                allocated_ranges,
                force: false,
                progress,
            },
        )
        .await
    } else {
        fs::backup(
            repo,
            fs::FsBackup {
                source: &m.source,
                tags,
                parent,
                force: false,
                progress,
            },
        )
        .await
    };
    reporter.abort();
    let s = summary?;
    Ok(VolumeBackupStatus {
        bytes_total: s.bytes_total,
        bytes_done: s.bytes_total,
        bytes_read: s.bytes_read,
        bytes_new: s.bytes_new,
        changed_blocks,
        full_read_reason,
        snapshot_id: Some(s.snapshot_id),
        parent_snapshot_id: parent_id,
        ..Default::default()
    })
}
