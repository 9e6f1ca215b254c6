//! The backup manifest: one repository snapshot (kind `backup`) per Backup that records
//! everything a restore needs, so that the repository alone is enough: the resources
//! snapshot, each volume's snapshot with the PVC's shape, the application's definition,
//! hook outcomes, items, and the cluster it came from. Stored as JSON in one stream
//! (docs/format.md, "Backup manifests").

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use coffer_api::{ApplicationSpec, BackupPhase, HookCounts, StatusItem, VolumeStatus};
use coffer_repo::{BlobKind, NewSnapshot, Repository, SnapshotKind};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::mover::BACKUP_TAG;

/// The snapshot kind of manifests.
pub const KIND: &str = "backup";
/// The manifest format version.
pub const VERSION: u32 = 1;
/// At most this many bytes are read back from a manifest (it is untrusted input).
pub const MAX_BYTES: u64 = 64 << 20;

/// What a Backup recorded.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupManifest {
    /// [`VERSION`].
    pub version: u32,
    /// The Backup's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its uid.
    pub uid: String,
    /// The cluster: its API server and the uid of its kube-system namespace.
    pub cluster: ClusterIdentity,
    /// How it ended.
    pub phase: BackupPhase,
    /// When it started.
    pub start_time: Option<DateTime<Utc>>,
    /// When it ended.
    pub completion_time: DateTime<Utc>,
    /// The application's definition.
    pub application: ApplicationSpec,
    /// The resources snapshot.
    pub resources_snapshot: Option<String>,
    /// Each volume: PVC, mode, repository snapshot, VolumeSnapshot kept (mode snapshot).
    pub volumes: Vec<VolumeStatus>,
    /// Hooks.
    pub hooks: HookCounts,
    /// Failed and warned items.
    pub items: Vec<StatusItem>,
    /// The Backup's labels (also snapshot tags).
    pub labels: BTreeMap<String, String>,
}

/// Which cluster a backup came from.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterIdentity {
    /// The API server's address as the operator reached it.
    pub server: String,
    /// The kube-system namespace's uid (stable for the cluster's life).
    pub uid: Option<String>,
}

/// Writes `m` as a snapshot of kind `backup`; returns its id.
pub async fn write(repo: &Repository, m: &BackupManifest) -> Result<String> {
    let data = serde_json::to_vec_pretty(m)
        .map_err(|e| Error::Failed(format!("encoding the manifest: {e}")))?;
    let writer = repo.writer().await?;
    let root = match writer.add_stream(BlobKind::Meta, &data).await {
        Ok(r) => r,
        Err(e) => {
            writer.abort().await;
            return Err(e.into());
        }
    };
    let mut tags = m.labels.clone();
    tags.insert(BACKUP_TAG.into(), format!("{}/{}", m.namespace, m.name));
    let snap = writer
        .commit(NewSnapshot {
            kind: SnapshotKind::Other(KIND.into()),
            source: format!("backup/{}/{}", m.namespace, m.name),
            tags,
            parent: None,
            root,
            summary: serde_json::json!({"volumes": m.volumes.len(), "phase": m.phase}),
            ..Default::default()
        })
        .await?;
    Ok(snap.id.to_string())
}

/// Reads the manifest of snapshot `id`.
pub async fn read(repo: &Repository, id: &str) -> Result<BackupManifest> {
    let snap = repo.find_snapshot(id).await?;
    if snap.kind.as_str() != KIND {
        return Err(Error::Invalid(format!(
            "snapshot {id} is a {} snapshot, not a backup manifest",
            snap.kind.as_str()
        )));
    }
    let data = repo.read_stream_limited(&snap.root, MAX_BYTES).await?;
    serde_json::from_slice(&data)
        .map_err(|e| Error::Failed(format!("backup manifest {id} is damaged: {e}")))
}
