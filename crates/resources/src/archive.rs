//! The on-repo archive of a resources snapshot.
//!
//! A `resources` snapshot's root stream is a JSON [`Catalog`]: where the objects came from,
//! what was selected, which resource types were collected (also those with no objects, so
//! that a rollback knows its scope), and one [`Entry`] per object naming the chunks of that
//! object's own JSON stream. Reading one object therefore costs the catalog plus that
//! object's chunks, never the whole backup. Objects are stored exactly as the API server
//! returned them (with apiVersion and kind filled in); sanitising happens at restore time,
//! so nothing is lost for later inspection. Unchanged objects dedup across backups.

use std::collections::BTreeMap;

use coffer_repo::{BlobKind, ChunkId, NewSnapshot, Repository, Snapshot, Writer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::discovery::{ServedResource, split_api_version};
use crate::{Error, Result};

/// Version of the catalog layout.
pub const CATALOG_FORMAT: u32 = 1;

/// Where a backup was taken.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// The API server URL the backup read from.
    pub server: String,
    /// The uid of the kube-system namespace: a stable identity of the cluster.
    #[serde(default)]
    pub uid: Option<String>,
    /// The API server's version ("v1.26.4").
    #[serde(default)]
    pub version: String,
}

/// What the backup selected, recorded so that restore can reason about scope.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RecordedSelection {
    /// Namespaces selected; empty with `all_namespaces`.
    pub namespaces: Vec<String>,
    pub all_namespaces: bool,
    pub selector: Option<String>,
    pub include_resources: Vec<String>,
    pub exclude_resources: Vec<String>,
    pub cluster_resources: String,
}

/// One stored object.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    /// Plural resource name in the stored version.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Bytes of the stored JSON.
    pub size: u64,
    pub chunks: Vec<ChunkId>,
}

impl Entry {
    pub fn group(&self) -> &str {
        split_api_version(&self.api_version).0
    }

    /// "Deployment/web" or "Namespace/shop", as the CLI shows objects.
    pub fn display(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/{} (namespace {ns})", self.kind, self.name),
            None => format!("{}/{}", self.kind, self.name),
        }
    }
}

/// The root stream of a resources snapshot.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Catalog {
    pub format: u32,
    pub cluster: ClusterInfo,
    pub selection: RecordedSelection,
    /// Every resource type that was collected (listed), objects or not.
    pub collected: Vec<ServedResource>,
    pub entries: Vec<Entry>,
}

impl Catalog {
    /// Reads the catalog of a resources snapshot.
    pub async fn load(repo: &Repository, snap: &Snapshot) -> Result<Catalog> {
        if snap.kind != coffer_repo::SnapshotKind::Resources {
            return Err(Error::Invalid(format!(
                "snapshot {} is a {} snapshot, not a resources snapshot (list them with `coffer snapshots`)",
                snap.id.short(),
                snap.kind
            )));
        }
        let bytes = repo.read_stream(&snap.root).await?;
        let catalog: Catalog = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Invalid(format!(
                "the catalog of snapshot {} is damaged ({e}); run `coffer check --read-data`",
                snap.id.short()
            ))
        })?;
        if catalog.format != CATALOG_FORMAT {
            return Err(Error::Invalid(format!(
                "snapshot {} uses resources catalog format {}, this coffer reads {CATALOG_FORMAT}",
                snap.id.short(),
                catalog.format
            )));
        }
        Ok(catalog)
    }

    /// Reads one stored object.
    pub async fn read_object(repo: &Repository, entry: &Entry) -> Result<Value> {
        let bytes = repo.read_stream(&entry.chunks).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::Invalid(format!(
                "stored object {} is damaged ({e}); run `coffer check --read-data`",
                entry.display()
            ))
        })
    }

    /// Finds entries by `KIND/NAME` (kind as kubectl accepts it: kind, plural or singular,
    /// any case, optionally group-qualified) and an optional namespace.
    pub fn find(&self, kind_name: &str, namespace: Option<&str>) -> Result<Vec<&Entry>> {
        let (kind, name) = kind_name.split_once('/').ok_or_else(|| {
            Error::Invalid(format!(
                "{kind_name:?} is not KIND/NAME (for example deployment/web or configmaps/settings)"
            ))
        })?;
        let found: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| {
                e.name == name
                    && namespace.is_none_or(|ns| e.namespace.as_deref() == Some(ns))
                    && self.entry_answers_to(e, kind)
            })
            .collect();
        Ok(found)
    }

    /// Whether an entry's type answers to a kubectl-style resource name.
    pub fn entry_answers_to(&self, e: &Entry, name: &str) -> bool {
        match self
            .collected
            .iter()
            .find(|r| r.kind == e.kind && r.group == e.group())
        {
            Some(r) => r.answers_to(name),
            None => {
                let (base, q) = name.split_once('.').unwrap_or((name, ""));
                (base.eq_ignore_ascii_case(&e.kind) || base.eq_ignore_ascii_case(&e.resource))
                    && (q.is_empty() || q == e.group())
            }
        }
    }
}

/// Stores one object as its own stream and returns its catalog entry.
pub async fn store_object(writer: &Writer, res: &ServedResource, obj: &Value) -> Result<Entry> {
    let bytes = serde_json::to_vec(obj).expect("JSON values serialize");
    let chunks = writer.add_stream(BlobKind::Meta, &bytes).await?;
    let meta = &obj["metadata"];
    Ok(Entry {
        api_version: res.api_version(),
        kind: res.kind.clone(),
        resource: res.resource.clone(),
        namespace: meta["namespace"].as_str().map(str::to_string),
        name: meta["name"].as_str().unwrap_or_default().to_string(),
        labels: serde_json::from_value(meta["labels"].clone()).unwrap_or_default(),
        size: bytes.len() as u64,
        chunks,
    })
}

/// Stores objects as a resources snapshot: each object its own stream, then the catalog,
/// then the manifest. Returns the snapshot and the bytes it added to the repository.
#[allow(clippy::too_many_arguments)]
pub async fn write_snapshot(
    repo: &Repository,
    cluster: ClusterInfo,
    selection: RecordedSelection,
    collected: Vec<ServedResource>,
    objects: &[(ServedResource, Value)],
    tags: BTreeMap<String, String>,
    source: String,
    warnings: usize,
) -> Result<(Snapshot, u64)> {
    let writer = repo.writer().await?;
    match write_with(&writer, cluster, selection, collected, objects).await {
        Ok((root, catalog_summary)) => {
            let bytes_new = writer.stats().bytes_new_stored;
            let mut summary = catalog_summary;
            summary["warnings"] = warnings.into();
            summary["bytes_new"] = bytes_new.into();
            let snap = writer
                .commit(NewSnapshot {
                    kind: coffer_repo::SnapshotKind::Resources,
                    source,
                    tags,
                    parent: None,
                    root,
                    summary,
                    time: None,
                })
                .await?;
            Ok((snap, bytes_new))
        }
        Err(e) => {
            writer.abort().await;
            Err(e)
        }
    }
}

async fn write_with(
    writer: &Writer,
    cluster: ClusterInfo,
    selection: RecordedSelection,
    collected: Vec<ServedResource>,
    objects: &[(ServedResource, Value)],
) -> Result<(Vec<ChunkId>, Value)> {
    use futures::{StreamExt, TryStreamExt, stream};
    let entries: Vec<Entry> = stream::iter(objects.iter())
        .map(|(r, o)| store_object(writer, r, o))
        .buffered(16)
        .try_collect()
        .await?;
    let summary = serde_json::json!({
        "objects": entries.len(),
        "namespaces": selection.namespaces,
        "cluster": cluster,
    });
    let catalog = Catalog {
        format: CATALOG_FORMAT,
        cluster,
        selection,
        collected,
        entries,
    };
    let root = writer
        .add_stream(
            BlobKind::Meta,
            &serde_json::to_vec(&catalog).expect("catalog serializes"),
        )
        .await?;
    Ok((root, summary))
}
