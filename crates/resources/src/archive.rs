//! The on-repo archive of a resources snapshot.
//!
//! A `resources` snapshot's root stream is its [`Catalog`]: where the objects came from,
//! what was selected, which resource types were collected (also those with no objects, so
//! that a rollback knows its scope), and one [`Entry`] per object naming the chunks of that
//! object's own JSON stream. Reading one object therefore costs the catalog plus that
//! object's chunks, never the whole backup. Objects are stored exactly as the API server
//! returned them (with apiVersion and kind filled in); sanitising happens at restore time,
//! so nothing is lost for later inspection. Unchanged objects dedup across backups.
//!
//! Catalog format 2 (what this code writes) is JSON lines: a header, one line per entry in the
//! order the objects were stored, and a trailer with the count and the collected types,
//! so that a backup writes each entry as its object is stored ([`ArchiveWriter`]) and
//! holds neither the objects nor the entries: its memory does not grow with the object
//! count. Format 1 (one JSON object, entries sorted) is still read: a repository written
//! by any release restores. docs/format.md has both.

use std::collections::BTreeMap;

use futures::StreamExt;

use coffer_repo::progress::SharedProgress;
use coffer_repo::{BlobKind, ChunkId, NewSnapshot, Repository, Snapshot, StreamWriter, Writer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::discovery::{ServedResource, split_api_version};
use crate::{Error, Result};

/// Version of the catalog layout written: JSON lines ([`ArchiveWriter`]).
pub const CATALOG_FORMAT: u32 = 2;

/// The first catalog layout (one JSON object), still read.
pub const CATALOG_FORMAT_V1: u32 = 1;

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

/// The root stream of a resources snapshot, as read (whatever its format).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    /// The layout it was read from (or is to be encoded in): [`CATALOG_FORMAT`] or
    /// [`CATALOG_FORMAT_V1`].
    pub format: u32,
    /// The cluster the objects came from.
    pub cluster: ClusterInfo,
    /// What the backup selected.
    pub selection: RecordedSelection,
    /// Every resource type that was collected (listed), objects or not.
    pub collected: Vec<ServedResource>,
    /// One entry per stored object, sorted by group, kind, namespace and name (as read;
    /// format 2 stores them in the order they were stored).
    pub entries: Vec<Entry>,
}

/// One line of a format-2 catalog.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Line {
    /// The first line.
    Header(Header),
    /// One per stored object.
    Entry(Entry),
    /// The last line: a catalog cut short (a writer killed, a chunk lost) has none.
    End(Trailer),
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    format: u32,
    cluster: ClusterInfo,
    selection: RecordedSelection,
}

#[derive(Debug, Serialize, Deserialize)]
struct Trailer {
    /// How many entry lines precede it.
    entries: u64,
    collected: Vec<ServedResource>,
}

/// The longest line of a format-2 catalog read back: an entry is bounded by its object
/// (labels and chunk ids), the trailer by the number of resource types.
pub const MAX_CATALOG_LINE: usize = 32 << 20;

/// The largest stored object read back (Kubernetes itself stores at most about 1.5 MiB
/// per object); a catalog entry claiming more is damaged.
pub const MAX_OBJECT_BYTES: u64 = 16 << 20;

/// The largest catalog read back whole (about three million objects).
pub const MAX_CATALOG_BYTES: u64 = 1 << 30;

impl Catalog {
    /// Reads the catalog of a resources snapshot, in either format. The catalog is
    /// untrusted: it is read chunk by chunk up to [`MAX_CATALOG_BYTES`] and checked as
    /// [`Catalog::from_bytes`] checks it.
    pub async fn load(repo: &Repository, snap: &Snapshot) -> Result<Catalog> {
        if snap.kind != coffer_repo::SnapshotKind::Resources {
            return Err(Error::Invalid(format!(
                "snapshot {} is a {} snapshot, not a resources snapshot (list them with `coffer snapshots`)",
                snap.id.short(),
                snap.kind
            )));
        }
        let what = format!("the catalog of snapshot {}", snap.id.short());
        let Some(first) = snap.root.first() else {
            return Catalog::from_bytes(b"", &what);
        };
        let head = repo.read_chunk(first).await?;
        if !head.starts_with(b"{\"header\"") {
            // Format 1: one JSON object, decoded whole (the head chunk is not read again).
            let rest_limit = MAX_CATALOG_BYTES.saturating_sub(head.len() as u64);
            let mut bytes = head.to_vec();
            bytes.extend(read_bounded(repo, &snap.root[1..], rest_limit, &what).await?);
            return Catalog::from_bytes(&bytes, &what);
        }
        // Format 2: decoded a line at a time as the chunks arrive, so that only the
        // entries are held, never the catalog's bytes as well.
        let mut dec = LineDecoder::new(&what);
        let mut total = 0u64;
        let mut chunks = futures::stream::iter(1..snap.root.len())
            .map(|i| repo.read_chunk(&snap.root[i]))
            .buffered(4);
        let mut part = Some(head);
        while let Some(bytes) = part.take() {
            total += bytes.len() as u64;
            if total > MAX_CATALOG_BYTES {
                return Err(dec.damaged(format!(
                    "its chunks hold more than the {MAX_CATALOG_BYTES} bytes a catalog may have"
                )));
            }
            dec.push(&bytes)?;
            part = chunks.next().await.transpose()?;
        }
        let mut catalog = dec.finish()?;
        sort_entries(&mut catalog.entries);
        Ok(catalog)
    }

    /// Decodes and checks a catalog of either format (`what` names it in errors). Never
    /// panics and allocates in proportion to `bytes`: every entry must name a plausible
    /// object (a size up to [`MAX_OBJECT_BYTES`], at most one chunk per byte, names
    /// Kubernetes could have stored), a format-2 catalog must end with its trailer and
    /// count its entries right, or the catalog is reported damaged. Entries come back
    /// sorted by group, kind, namespace and name.
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
        let mut catalog = if bytes.starts_with(b"{\"header\"") {
            let mut dec = LineDecoder::new(what);
            dec.push(bytes)?;
            dec.finish()?
        } else {
            let catalog: Catalog = serde_json::from_slice(bytes)
                .map_err(|e| damaged(crate::one_line(&e.to_string())))?;
            if catalog.format != CATALOG_FORMAT_V1 {
                return Err(unknown_format(what, catalog.format));
            }
            for r in &catalog.collected {
                check_resource(r).map_err(damaged)?;
            }
            for (i, e) in catalog.entries.iter().enumerate() {
                check_entry(e).map_err(|m| damaged(format!("entry {i}: {m}")))?;
            }
            catalog
        };
        sort_entries(&mut catalog.entries);
        Ok(catalog)
    }

    /// The catalog encoded in the layout its `format` names: format 1 as one JSON
    /// object, any other as format 2's lines (what [`ArchiveWriter`] writes), with
    /// `format` in the header.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        if self.format == CATALOG_FORMAT_V1 {
            return serde_json::to_vec(self).map_err(encode_error);
        }
        let mut out = encode_line(&Line::Header(Header {
            format: self.format,
            cluster: self.cluster.clone(),
            selection: self.selection.clone(),
        }))?;
        for e in &self.entries {
            out.extend(encode_line(&Line::Entry(e.clone()))?);
        }
        out.extend(encode_line(&Line::End(Trailer {
            entries: self.entries.len() as u64,
            collected: self.collected.clone(),
        }))?);
        Ok(out)
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

/// The order catalogs are read in: by group, kind, namespace and name.
fn sort_entries(entries: &mut [Entry]) {
    entries.sort_by(|a, b| {
        (a.group(), &a.kind, &a.namespace, &a.name).cmp(&(
            b.group(),
            &b.kind,
            &b.namespace,
            &b.name,
        ))
    });
}

fn encode_error(e: serde_json::Error) -> Error {
    Error::Invalid(format!("the catalog cannot be encoded: {e}"))
}

fn encode_line(line: &Line) -> Result<Vec<u8>> {
    let mut out = serde_json::to_vec(line).map_err(encode_error)?;
    out.push(b'\n');
    Ok(out)
}

fn unknown_format(what: &str, format: u32) -> Error {
    Error::Invalid(format!(
        "{what} uses resources catalog format {format}, this coffer reads {CATALOG_FORMAT_V1} and {CATALOG_FORMAT} (a newer coffer wrote it: upgrade)"
    ))
}

/// Decodes a format-2 catalog line by line, checking each line as it comes.
struct LineDecoder<'a> {
    what: &'a str,
    /// The start of a line whose end has not come yet.
    pending: Vec<u8>,
    header: Option<Header>,
    entries: Vec<Entry>,
    trailer: Option<Trailer>,
}

impl<'a> LineDecoder<'a> {
    fn new(what: &'a str) -> Self {
        LineDecoder {
            what,
            pending: Vec::new(),
            header: None,
            entries: Vec::new(),
            trailer: None,
        }
    }

    fn damaged(&self, cause: String) -> Error {
        Error::Damaged {
            what: self.what.to_string(),
            cause,
        }
    }

    /// Takes the next bytes of the catalog, in pieces of any size.
    fn push(&mut self, mut bytes: &[u8]) -> Result<()> {
        while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            if self.pending.is_empty() {
                self.line(&bytes[..nl])?;
            } else {
                let mut line = std::mem::take(&mut self.pending);
                line.extend_from_slice(&bytes[..nl]);
                self.line(&line)?;
            }
            bytes = &bytes[nl + 1..];
        }
        if self.pending.len() + bytes.len() > MAX_CATALOG_LINE {
            return Err(self.damaged(format!(
                "a line longer than the {MAX_CATALOG_LINE} bytes a line may have"
            )));
        }
        self.pending.extend_from_slice(bytes);
        Ok(())
    }

    fn line(&mut self, bytes: &[u8]) -> Result<()> {
        let at = self.entries.len() + usize::from(self.header.is_some()) + 1;
        if bytes.len() > MAX_CATALOG_LINE {
            return Err(self.damaged(format!(
                "line {at} has {} bytes, more than the {MAX_CATALOG_LINE} a line may have",
                bytes.len()
            )));
        }
        if self.trailer.is_some() {
            return Err(self.damaged(format!("line {at} follows the trailer")));
        }
        let line: Line = serde_json::from_slice(bytes)
            .map_err(|e| self.damaged(format!("line {at}: {}", crate::one_line(&e.to_string()))))?;
        match (line, self.header.is_some()) {
            (Line::Header(h), false) => {
                if h.format != CATALOG_FORMAT {
                    return Err(unknown_format(self.what, h.format));
                }
                self.header = Some(h);
            }
            (_, false) => return Err(self.damaged("its first line is not the header".into())),
            (Line::Header(_), true) => {
                return Err(self.damaged(format!("line {at} is a second header")));
            }
            (Line::Entry(e), true) => {
                let i = self.entries.len();
                check_entry(&e).map_err(|m| self.damaged(format!("entry {i}: {m}")))?;
                self.entries.push(e);
            }
            (Line::End(t), true) => {
                if t.entries != self.entries.len() as u64 {
                    return Err(self.damaged(format!(
                        "its trailer counts {} entries, {} precede it",
                        t.entries,
                        self.entries.len()
                    )));
                }
                for r in &t.collected {
                    check_resource(r).map_err(|m| self.damaged(m))?;
                }
                self.trailer = Some(t);
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<Catalog> {
        if !self.pending.is_empty() {
            return Err(self.damaged("it ends in the middle of a line".into()));
        }
        let (Some(header), Some(trailer)) = (self.header, self.trailer) else {
            return Err(Error::Damaged {
                what: self.what.to_string(),
                cause: "it ends before its trailer (cut short)".into(),
            });
        };
        Ok(Catalog {
            format: header.format,
            cluster: header.cluster,
            selection: header.selection,
            collected: trailer.collected,
            entries: self.entries,
        })
    }
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

/// How many objects one [`ArchiveWriter::store`] call stores at once.
const STORE_CONCURRENCY: usize = 16;

/// A resources snapshot being written: objects are stored as they come (each its own
/// stream) and their entries appended to the catalog stream at once, so that neither the
/// objects nor their entries stay in memory. [`ArchiveWriter::commit`] writes the
/// trailer and the snapshot; dropping it or [`ArchiveWriter::abort`] leaves nothing a
/// snapshot names (the session's chunks go at the next prune).
pub struct ArchiveWriter {
    writer: Writer,
    catalog: StreamWriter,
    entries: u64,
    summary: Value,
}

impl ArchiveWriter {
    /// Starts a session and the catalog (its header).
    pub async fn start(
        repo: &Repository,
        cluster: ClusterInfo,
        selection: RecordedSelection,
    ) -> Result<ArchiveWriter> {
        let writer = repo.writer().await?;
        let summary = serde_json::json!({
            "namespaces": selection.namespaces,
            "cluster": cluster,
        });
        let mut catalog = StreamWriter::new(&writer, BlobKind::Meta);
        let header = encode_line(&Line::Header(Header {
            format: CATALOG_FORMAT,
            cluster,
            selection,
        }))?;
        if let Err(e) = catalog.write(&header).await {
            writer.abort().await;
            return Err(e.into());
        }
        Ok(ArchiveWriter {
            writer,
            catalog,
            entries: 0,
            summary,
        })
    }

    /// Objects stored so far.
    pub fn stored(&self) -> u64 {
        self.entries
    }

    /// Stores objects of one type (several at once) and appends their entries in the
    /// order given; each stored object advances `progress` by one.
    pub async fn store(
        &mut self,
        res: &ServedResource,
        objects: &[&Value],
        progress: &SharedProgress,
    ) -> Result<()> {
        let writer = &self.writer;
        // By index: a closure taking a reference makes the stream's futures not provably
        // Send for callers that spawn this future (the operator's controllers).
        let mut entries = futures::stream::iter(0..objects.len())
            .map(|i| async move {
                let e = store_object(writer, res, objects[i]).await;
                progress.advance(1);
                e
            })
            .buffered(STORE_CONCURRENCY);
        while let Some(entry) = entries.next().await {
            let line = encode_line(&Line::Entry(entry?))?;
            self.catalog.write(&line).await?;
            self.entries += 1;
        }
        Ok(())
    }

    /// Writes the trailer (the collected types) and commits the snapshot. Returns it and
    /// the bytes the session added to the repository.
    pub async fn commit(
        self,
        collected: Vec<ServedResource>,
        tags: BTreeMap<String, String>,
        source: String,
        warnings: usize,
    ) -> Result<(Snapshot, u64)> {
        let ArchiveWriter {
            writer,
            mut catalog,
            entries,
            mut summary,
        } = self;
        let root = async {
            catalog
                .write(&encode_line(&Line::End(Trailer { entries, collected }))?)
                .await?;
            Ok::<_, Error>(catalog.finish().await?)
        }
        .await;
        let root = match root {
            Ok(root) => root,
            Err(e) => {
                writer.abort().await;
                return Err(e);
            }
        };
        let bytes_new = writer.stats().bytes_new_stored;
        summary["objects"] = entries.into();
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

    /// Ends the session without a snapshot.
    pub async fn abort(self) {
        self.writer.abort().await;
    }
}

/// Stores objects already in memory as a resources snapshot (an import from files):
/// each object its own stream, then the catalog, then the manifest. Returns the snapshot
/// and the bytes it added to the repository.
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
    let mut archive = ArchiveWriter::start(repo, cluster, selection).await?;
    // Consecutive objects of one type go in one call.
    let mut from = 0;
    while from < objects.len() {
        let r = &objects[from].0;
        let to = from + objects[from..].iter().take_while(|(o, _)| o == r).count();
        let batch: Vec<&Value> = objects[from..to].iter().map(|(_, o)| o).collect();
        if let Err(e) = archive.store(r, &batch, progress).await {
            archive.abort().await;
            return Err(e);
        }
        from = to;
    }
    archive.commit(collected, tags, source, warnings).await
}
