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

use coffer_repo::progress::SharedProgress;
use coffer_repo::{BlobKind, ChunkId, NewSnapshot, Repository, Snapshot, Writer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::discovery::{ServedResource, split_api_version};
use crate::{Error, Result};

/// Version of the catalog layout.
pub const CATALOG_FORMAT: u32 = 1;

/// Where a backup was taken.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct RecordedSelection {
    /// Namespaces selected; empty with `all_namespaces`.
    pub namespaces: Vec<String>,
    /// Whether every namespace was selected.
    pub all_namespaces: bool,
    /// The label selector, if any.
    pub selector: Option<String>,
    /// Resource types included (kubectl names; empty: all).
    pub include_resources: Vec<String>,
    /// Resource types excluded (kubectl names).
    pub exclude_resources: Vec<String>,
    /// Cluster-scoped objects: auto, include or exclude.
    pub cluster_resources: String,
}

/// One stored object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(rename = "apiVersion")]
    /// The stored object's API version.
    pub api_version: String,
    /// The kind.
    pub kind: String,
    /// Plural resource name in the stored version.
    pub resource: String,
    /// The namespace; None for cluster-scoped objects.
    pub namespace: Option<String>,
    /// The name.
    pub name: String,
    #[serde(default)]
    /// The object's labels (for selectors at restore time).
    pub labels: BTreeMap<String, String>,
    /// Bytes of the stored JSON.
    pub size: u64,
    /// The chunks of the object's JSON stream, in order.
    pub chunks: Vec<ChunkId>,
}

impl Entry {
    /// The API group ("" for the core group).
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    /// [`CATALOG_FORMAT`].
    pub format: u32,
    /// The cluster the objects came from.
    pub cluster: ClusterInfo,
    /// What the backup selected.
    pub selection: RecordedSelection,
    /// Every resource type that was collected (listed), objects or not.
    pub collected: Vec<ServedResource>,
    /// One entry per stored object, sorted by group, kind, namespace and name.
    pub entries: Vec<Entry>,
}

/// The largest stored object read back (Kubernetes itself stores at most about 1.5 MiB
/// per object); a catalog entry claiming more is damaged.
pub const MAX_OBJECT_BYTES: u64 = 16 << 20;

/// The largest catalog read back (about three million objects).
pub const MAX_CATALOG_BYTES: u64 = 1 << 30;

impl Catalog {
    /// Reads the catalog of a resources snapshot. The catalog is untrusted: it is read
    /// chunk by chunk up to [`MAX_CATALOG_BYTES`] and checked by [`Catalog::from_bytes`].
    pub async fn load(repo: &Repository, snap: &Snapshot) -> Result<Catalog> {
        if snap.kind != coffer_repo::SnapshotKind::Resources {
            return Err(Error::Invalid(format!(
                "snapshot {} is a {} snapshot, not a resources snapshot (list them with `coffer snapshots`)",
                snap.id.short(),
                snap.kind
            )));
        }
        let what = format!("the catalog of snapshot {}", snap.id.short());
        let bytes = read_bounded(repo, &snap.root, MAX_CATALOG_BYTES, &what).await?;
        Catalog::from_bytes(&bytes, &what)
    }

    /// Decodes and checks a catalog (`what` names it in errors). Never panics and
    /// allocates in proportion to `bytes`: every entry must name a plausible object
    /// (a size up to [`MAX_OBJECT_BYTES`], at most one chunk per byte, names Kubernetes
    /// could have stored), or the catalog is reported damaged.
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Catalog> {
        let damaged = |cause: String| Error::Damaged {
            what: what.to_string(),
            cause,
        };
        if bytes.len() as u64 > MAX_CATALOG_BYTES {
            return Err(damaged(format!(
                "{} bytes, more than the {MAX_CATALOG_BYTES} a catalog may have",
                bytes.len()
            )));
        }
        let catalog: Catalog =
            serde_json::from_slice(bytes).map_err(|e| damaged(crate::one_line(&e.to_string())))?;
        if catalog.format != CATALOG_FORMAT {
            return Err(Error::Invalid(format!(
                "{what} uses resources catalog format {}, this coffer reads {CATALOG_FORMAT}",
                catalog.format
            )));
        }
        for r in &catalog.collected {
            check_resource(r).map_err(damaged)?;
        }
        for (i, e) in catalog.entries.iter().enumerate() {
            check_entry(e).map_err(|m| damaged(format!("entry {i}: {m}")))?;
        }
        Ok(catalog)
    }

    /// The catalog as stored (JSON).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self)
            .map_err(|e| Error::Invalid(format!("the catalog cannot be encoded: {e}")))
    }

    /// Reads one stored object: exactly the entry's size, a JSON object whose apiVersion,
    /// kind, namespace and name are the entry's (so that what a restore selects by the
    /// catalog is what it creates).
    pub async fn read_object(repo: &Repository, entry: &Entry) -> Result<Value> {
        let what = format!("stored object {}", entry.display());
        let bytes = read_bounded(repo, &entry.chunks, entry.size, &what).await?;
        decode_object(&bytes, entry)
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

/// Checks one decoded object against its entry.
pub fn decode_object(bytes: &[u8], entry: &Entry) -> Result<Value> {
    let damaged = |cause: String| Error::Damaged {
        what: format!("stored object {}", entry.display()),
        cause,
    };
    if bytes.len() as u64 != entry.size {
        return Err(damaged(format!(
            "{} bytes, the catalog says {}",
            bytes.len(),
            entry.size
        )));
    }
    let obj: Value =
        serde_json::from_slice(bytes).map_err(|e| damaged(crate::one_line(&e.to_string())))?;
    let field = |p: &str| obj.pointer(p).and_then(Value::as_str);
    let same = obj.is_object()
        && field("/apiVersion") == Some(entry.api_version.as_str())
        && field("/kind") == Some(entry.kind.as_str())
        && field("/metadata/name") == Some(entry.name.as_str())
        && field("/metadata/namespace") == entry.namespace.as_deref();
    if !same {
        return Err(damaged(
            "its apiVersion, kind, namespace or name differ from the catalog's".into(),
        ));
    }
    Ok(obj)
}

fn check_resource(r: &ServedResource) -> std::result::Result<(), String> {
    for (what, v, may_be_empty) in [
        ("group", &r.group, true),
        ("version", &r.version, false),
        ("resource", &r.resource, false),
        ("kind", &r.kind, false),
    ] {
        if v.is_empty() && may_be_empty {
            continue;
        }
        if let Some(p) = crate::names::path_segment_problem(v) {
            return Err(format!("collected type with {what} {v:?}: {p}"));
        }
    }
    Ok(())
}

fn check_entry(e: &Entry) -> std::result::Result<(), String> {
    let at = || e.display();
    if e.size == 0 || e.size > MAX_OBJECT_BYTES {
        return Err(format!(
            "{} claims {} bytes (1 to {MAX_OBJECT_BYTES})",
            at(),
            e.size
        ));
    }
    if e.chunks.is_empty() || e.chunks.len() as u64 > e.size {
        return Err(format!(
            "{} has {} chunks for {} bytes",
            at(),
            e.chunks.len(),
            e.size
        ));
    }
    let (group, version) = split_api_version(&e.api_version);
    for (what, v, may_be_empty) in [
        ("group", group, true),
        ("version", version, false),
        ("kind", e.kind.as_str(), false),
        ("resource", e.resource.as_str(), false),
        ("name", e.name.as_str(), false),
    ] {
        if v.is_empty() && may_be_empty {
            continue;
        }
        if let Some(p) = crate::names::path_segment_problem(v) {
            return Err(format!("{} has {what} {v:?}: {p}", at()));
        }
    }
    if let Some(ns) = &e.namespace
        && let Some(p) = crate::names::dns_label_problem(ns)
    {
        return Err(format!("{} has namespace {ns:?}: {p}", at()));
    }
    Ok(())
}

/// Reads a stream chunk by chunk, refusing it once it exceeds `limit` bytes (a damaged or
/// hostile chunk list cannot make the reader allocate more than `limit`).
async fn read_bounded(
    repo: &Repository,
    chunks: &[ChunkId],
    limit: u64,
    what: &str,
) -> Result<Vec<u8>> {
    use futures::StreamExt;
    let mut out: Vec<u8> = Vec::new();
    let mut parts = futures::stream::iter(0..chunks.len())
        .map(|i| repo.read_chunk(&chunks[i]))
        .buffered(4);
    while let Some(part) = parts.next().await {
        let part = part?;
        if (out.len() + part.len()) as u64 > limit {
            return Err(Error::Damaged {
                what: what.to_string(),
                cause: format!("its chunks hold more than the {limit} bytes expected"),
            });
        }
        out.extend_from_slice(&part);
    }
    Ok(out)
}

/// Stores one object as its own stream and returns its catalog entry.
pub async fn store_object(writer: &Writer, res: &ServedResource, obj: &Value) -> Result<Entry> {
    let bytes = serde_json::to_vec(obj)
        .map_err(|e| Error::Invalid(format!("an object cannot be encoded: {e}")))?;
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
    progress: &SharedProgress,
) -> Result<(Snapshot, u64)> {
    let writer = repo.writer().await?;
    match write_with(&writer, cluster, selection, collected, objects, progress).await {
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
    progress: &SharedProgress,
) -> Result<(Vec<ChunkId>, Value)> {
    use futures::{StreamExt, TryStreamExt, stream};
    // By index: a closure taking a reference makes the stream's futures not provably Send
    // for callers that spawn this future (the operator's controllers).
    let entries: Vec<Entry> = stream::iter(0..objects.len())
        .map(|i| {
            let (r, o) = &objects[i];
            async move {
                let e = store_object(writer, r, o).await;
                progress.advance(1);
                e
            }
        })
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
        .add_stream(BlobKind::Meta, &catalog.to_bytes()?)
        .await?;
    Ok((root, summary))
}
