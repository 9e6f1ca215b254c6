//! Opening, creating and reading a repository.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, Location};
use crate::crypto::{Encryption, KdfParams, KeySlot, MasterKeys, Secret};
use crate::error::{Error, Result};
use crate::id::{ChunkId, Id, SnapshotId};
use crate::index::{self, ChunkLocation, IndexFile, IndexTable};
use crate::pack::{self, BlobEntry, Compression};
use crate::snapshot::{self, Snapshot, SnapshotKind};

/// Which snapshot an incremental backup takes unchanged data from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ParentChoice {
    /// None: read everything.
    #[default]
    None,
    /// The newest snapshot of the same kind, source and tags.
    Auto,
    /// A snapshot id or unique prefix (or "latest").
    Id(String),
}

impl ParentChoice {
    /// `--parent` as the CLI takes it: absent, `auto`, or an id.
    pub fn from_flag(flag: Option<&str>) -> ParentChoice {
        match flag {
            None => ParentChoice::None,
            Some("auto") => ParentChoice::Auto,
            Some(id) => ParentChoice::Id(id.to_string()),
        }
    }
}

/// A run of blobs of one pack read at once: (pack, start, end, blobs).
type Span = (Id, u64, u64, Vec<(ChunkId, ChunkLocation)>);

/// The repository format this code reads and writes.
pub const FORMAT_VERSION: u32 = 1;
const MARKER: &str = "coffer.repo";
const CONFIG: &str = "config";

/// FastCDC v2020 sizes for files and metadata streams.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkerParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            min: 256 * 1024,
            avg: 1024 * 1024,
            max: 4 * 1024 * 1024,
        }
    }
}

/// Settings fixed at `repo init`, stored sealed in `config`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RepoConfig {
    pub version: u32,
    pub id: Id,
    pub created: DateTime<Utc>,
    pub encryption: Encryption,
    /// "zstd:LEVEL" or "none".
    pub compression: String,
    pub chunker: ChunkerParams,
    /// Block size for block volumes.
    pub block_size: u32,
    /// Target size of pack objects.
    pub pack_size: u32,
    /// Objects younger than this many days are never deleted (forget/prune refuse).
    #[serde(default)]
    pub immutable_days: u32,
}

impl RepoConfig {
    pub fn compression(&self) -> Compression {
        self.compression.parse().unwrap_or(Compression::Zstd(3))
    }
}

/// The plaintext marker that says "this is a Coffer repository" before any key is known.
#[derive(Serialize, Deserialize)]
struct Marker {
    format: String,
    version: u32,
    id: Id,
}

/// Options for `Repository::init`.
#[derive(Clone, Debug)]
pub struct InitOptions {
    pub encryption: Encryption,
    pub compression: Compression,
    pub block_size: u32,
    pub pack_size: u32,
    pub chunker: ChunkerParams,
    pub kdf: KdfParams,
    pub immutable_days: u32,
    /// Chunk-id key to share with another repository (copy targets), so ids agree.
    pub chunk_id_key: Option<[u8; 32]>,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            encryption: Encryption::Aes256Gcm,
            compression: Compression::Zstd(3),
            block_size: 1024 * 1024,
            pack_size: 32 * 1024 * 1024,
            chunker: ChunkerParams::default(),
            kdf: KdfParams::default(),
            immutable_days: 0,
            chunk_id_key: None,
        }
    }
}

/// An open repository. Cheap to clone.
#[derive(Clone)]
pub struct Repository {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub backend: Backend,
    pub keys: MasterKeys,
    pub config: RepoConfig,
    pub key_id: String,
    pub cache_dir: PathBuf,
    pub index: RwLock<Arc<IndexTable>>,
}

pub(crate) fn key_path(id: &str) -> String {
    format!("keys/{id}")
}

impl Repository {
    /// Creates a repository at `location`, unlocked by `secret`.
    pub async fn init(
        location: &Location,
        secret: &Secret,
        opts: InitOptions,
    ) -> Result<Repository> {
        let backend = Backend::new(location)?;
        if backend.stat(MARKER).await?.is_some() {
            return Err(Error::AlreadyExists(location.to_string()));
        }
        if opts.block_size < 4096 || !opts.block_size.is_power_of_two() {
            return Err(Error::Invalid(
                "block size must be a power of two of at least 4096".into(),
            ));
        }
        let mut keys = MasterKeys::generate(opts.encryption);
        if let Some(k) = opts.chunk_id_key {
            keys.chunk_id_key = k;
        }
        let config = RepoConfig {
            version: FORMAT_VERSION,
            id: Id::random(),
            created: Utc::now(),
            encryption: opts.encryption,
            compression: opts.compression.to_string(),
            chunker: opts.chunker,
            block_size: opts.block_size,
            pack_size: opts.pack_size,
            immutable_days: opts.immutable_days,
        };
        let slot = KeySlot::create(&keys, secret, opts.kdf)?;
        let key_id = Id::random().to_hex();
        backend
            .write_new(
                &key_path(&key_id),
                Bytes::from(serde_json::to_vec_pretty(&slot).unwrap()),
            )
            .await?;
        let sealed = seal_object(&keys, b"config", &serde_json::to_vec(&config).unwrap());
        backend.write_new(CONFIG, Bytes::from(sealed)).await?;
        // The marker goes last: a repository is complete once it exists.
        let marker = Marker {
            format: "coffer".into(),
            version: FORMAT_VERSION,
            id: config.id,
        };
        backend
            .write_new(
                MARKER,
                Bytes::from(serde_json::to_vec_pretty(&marker).unwrap()),
            )
            .await?;
        Self::assemble(backend, keys, config, key_id)
    }

    /// Opens the repository at `location` with `secret`.
    pub async fn open(location: &Location, secret: &Secret) -> Result<Repository> {
        let backend = Backend::new(location)?;
        let marker = match backend.read(MARKER).await {
            Ok(b) => b,
            Err(Error::MissingObject { .. }) => {
                return Err(Error::NotARepository(location.to_string()));
            }
            Err(e) => return Err(e),
        };
        let marker: Marker = serde_json::from_slice(&marker)
            .map_err(|e| Error::corrupt(MARKER, format!("not valid JSON: {e}")))?;
        if marker.format != "coffer" {
            return Err(Error::NotARepository(location.to_string()));
        }
        if marker.version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                location: location.to_string(),
                found: marker.version,
                supported: FORMAT_VERSION,
            });
        }
        let (keys, key_id) = unlock(&backend, secret).await?;
        let raw = backend.read(CONFIG).await?;
        let plain = open_object(&keys, b"config", &raw).map_err(|r| Error::corrupt(CONFIG, r))?;
        let config: RepoConfig = serde_json::from_slice(&plain)
            .map_err(|e| Error::corrupt(CONFIG, format!("bad JSON: {e}")))?;
        let repo = Self::assemble(backend, keys, config, key_id)?;
        repo.reload_index().await?;
        Ok(repo)
    }

    fn assemble(
        backend: Backend,
        keys: MasterKeys,
        config: RepoConfig,
        key_id: String,
    ) -> Result<Repository> {
        let cache_dir = cache_root().join(config.id.to_hex());
        Ok(Repository {
            inner: Arc::new(Inner {
                backend,
                keys,
                config,
                key_id,
                cache_dir,
                index: RwLock::new(Arc::new(IndexTable::empty())),
            }),
        })
    }

    pub fn config(&self) -> &RepoConfig {
        &self.inner.config
    }

    pub fn location(&self) -> &Location {
        self.inner.backend.location()
    }

    pub fn backend(&self) -> &Backend {
        &self.inner.backend
    }

    pub(crate) fn keys(&self) -> &MasterKeys {
        &self.inner.keys
    }

    /// The key slot this session unlocked with.
    pub fn key_id(&self) -> &str {
        &self.inner.key_id
    }

    /// Keyed BLAKE3 of `data`: the id it has (or would have) in this repository.
    pub fn chunk_id(&self, data: &[u8]) -> ChunkId {
        self.inner.keys.chunk_id(data)
    }

    pub(crate) fn index(&self) -> Arc<IndexTable> {
        self.inner.index.read().unwrap().clone()
    }

    /// Where a chunk is stored, if the index knows it.
    pub fn locate(&self, id: &ChunkId) -> Vec<ChunkLocation> {
        self.index().lookup(id)
    }

    /// Re-reads the repository's index files (incrementally, through the local cache).
    pub async fn reload_index(&self) -> Result<()> {
        let listed = self.inner.backend.list("index/").await?;
        let mut current = BTreeSet::new();
        for o in &listed {
            let name = o.path.rsplit('/').next().unwrap_or("");
            if let Ok(id) = name.parse::<Id>() {
                current.insert(id);
            }
        }
        let base = self.index();
        if base.sources == current && (base.path.is_some() || current.is_empty()) {
            return Ok(());
        }
        std::fs::create_dir_all(&self.inner.cache_dir)
            .map_err(|e| index::cache_error(&self.inner.cache_dir, e))?;
        // A cached table from an earlier run of any process.
        let base = if base.path.is_none() {
            Arc::new(self.cached_table().unwrap_or_else(IndexTable::empty))
        } else {
            base
        };
        // Merge the new index files into the cached table (or, when files it holds were
        // removed, everything from scratch), a bounded batch at a time.
        let base_usable = base.sources.is_subset(&current);
        let (start, ids): (Option<&IndexTable>, Vec<Id>) = if base_usable {
            (
                Some(&*base),
                current.difference(&base.sources).copied().collect(),
            )
        } else {
            (None, current.iter().copied().collect())
        };
        let (mut table, superseded) = self.merge_index_files(start, &ids).await?;
        let merged_superseded = superseded
            .iter()
            .any(|s| ids.contains(s) || start.is_some_and(|b| b.sources.contains(s)));
        if merged_superseded {
            // Prune replaced index files that are merged in: rebuild without them.
            if let Some(p) = &table.path {
                let _ = std::fs::remove_file(p);
            }
            let keep: Vec<Id> = current
                .iter()
                .copied()
                .filter(|i| !superseded.contains(i))
                .collect();
            table = self.merge_index_files(None, &keep).await?.0;
        }
        let table = self.publish_table(table, current)?;
        *self.inner.index.write().unwrap() = Arc::new(table);
        Ok(())
    }

    /// Merges index files into `base` (or into nothing) with memory bounded however large
    /// the repository: files are loaded `MERGE_BATCH_ENTRIES` entries at a time; each full
    /// batch is written out as a sorted run (a small table), and one final pass merges
    /// the base, the runs and the last batch through their mappings (an external merge
    /// sort, linear in the index size). Returns the table (at a private path in the cache)
    /// and every index file id that the merged files supersede.
    async fn merge_index_files(
        &self,
        base: Option<&IndexTable>,
        ids: &[Id],
    ) -> Result<(IndexTable, BTreeSet<Id>)> {
        const MERGE_BATCH_ENTRIES: usize = 200_000;
        let dir = &self.inner.cache_dir;
        let private = format!("{}.{}", std::process::id(), Id::random().short());
        let mut superseded = BTreeSet::new();
        let mut runs: Vec<IndexTable> = Vec::new();
        let mut loads = futures::stream::iter(ids.iter().copied())
            .map(|id| async move { self.load_index_file(&id).await })
            .buffered(2);
        let mut batch: Vec<IndexFile> = Vec::new();
        let mut batch_entries = 0usize;
        let result = async {
            while let Some(file) = loads.next().await {
                let file = file?;
                superseded.extend(file.supersedes.iter().copied());
                batch_entries += file.packs.iter().map(|p| p.blobs.len()).sum::<usize>();
                batch.push(file);
                if batch_entries >= MERGE_BATCH_ENTRIES {
                    let out = dir.join(format!("merge-{private}.run{}", runs.len()));
                    index::build_table(&out, &[], &|_| true, &batch)
                        .map_err(|e| index::cache_error(&out, e))?;
                    runs.push(
                        IndexTable::open(&out, BTreeSet::new())
                            .map_err(|e| index::cache_error(&out, e))?,
                    );
                    batch.clear();
                    batch_entries = 0;
                }
            }
            let out = dir.join(format!("merge-{private}.table"));
            let mut bases: Vec<&IndexTable> = base.into_iter().collect();
            bases.extend(runs.iter());
            index::build_table(&out, &bases, &|_| true, &batch)
                .map_err(|e| index::cache_error(&out, e))?;
            IndexTable::open(&out, BTreeSet::new()).map_err(|e| index::cache_error(&out, e))
        }
        .await;
        for r in &runs {
            if let Some(p) = &r.path {
                let _ = std::fs::remove_file(p);
            }
        }
        Ok((result?, superseded))
    }

    /// Moves a merged table to its shared name in the cache and records it as current
    /// for the next process.
    fn publish_table(&self, mut table: IndexTable, sources: BTreeSet<Id>) -> Result<IndexTable> {
        let dir = &self.inner.cache_dir;
        let mut name_hasher = blake3::Hasher::new();
        for s in &sources {
            name_hasher.update(&s.0);
        }
        let name = format!("table-{}", &name_hasher.finalize().to_hex()[..32]);
        let path = dir.join(&name);
        let err = |e| index::cache_error(&path, e);
        let from = table.path.clone().expect("merged tables are files");
        // The mapping stays valid across the rename (and if another process later removes
        // the file), so the table is not reopened.
        std::fs::rename(&from, &path).map_err(err)?;
        table.path = Some(path.clone());
        table.sources = sources.clone();
        let listing: Vec<String> = sources.iter().map(|s| s.to_hex()).collect();
        let pointer = dir.join("current");
        let tmp = dir.join(format!("current.tmp{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec(&(&name, listing)).unwrap()).map_err(err)?;
        std::fs::rename(&tmp, &pointer).map_err(err)?;
        // Older tables are dead weight (as large as the index); processes still using one
        // keep their mapping. Merge files of crashed processes go after an hour.
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let file = e.file_name();
                let file = file.to_string_lossy();
                let stale_table = file.starts_with("table-") && file != name.as_str();
                let old_merge = file.starts_with("merge-")
                    && e.metadata().and_then(|m| m.modified()).is_ok_and(|t| {
                        t.elapsed().unwrap_or_default() > std::time::Duration::from_secs(3600)
                    });
                if stale_table || old_merge {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(table)
    }

    fn cached_table(&self) -> Option<IndexTable> {
        let dir = &self.inner.cache_dir;
        let raw = std::fs::read(dir.join("current")).ok()?;
        let (name, listing): (String, Vec<String>) = serde_json::from_slice(&raw).ok()?;
        let sources: BTreeSet<Id> = listing.iter().filter_map(|s| s.parse().ok()).collect();
        IndexTable::open(&dir.join(name), sources).ok()
    }

    pub(crate) async fn load_index_file(&self, id: &Id) -> Result<IndexFile> {
        let path = index::index_path(id);
        let raw = self.inner.backend.read(&path).await?;
        if Id::of_content(&raw) != *id {
            return Err(Error::corrupt(&path, "content does not match its name"));
        }
        let plain =
            open_object(&self.inner.keys, b"index", &raw).map_err(|r| Error::corrupt(&path, r))?;
        IndexFile::decode(&plain).map_err(|r| Error::corrupt(&path, r))
    }

    /// Writes an index file as given; returns its id. Backups never need this (their
    /// writer indexes the packs it stores); it is for tools that build index files
    /// themselves: repair, and the synthetic scale tests of the index.
    pub async fn write_index_file(&self, file: &IndexFile) -> Result<Id> {
        let sealed = seal_object(&self.inner.keys, b"index", &file.encode());
        let id = Id::of_content(&sealed);
        self.inner
            .backend
            .write_new(&index::index_path(&id), Bytes::from(sealed))
            .await?;
        Ok(id)
    }

    /// Reads, decrypts and verifies one chunk.
    pub async fn read_chunk(&self, id: &ChunkId) -> Result<Bytes> {
        let locations = self.locate(id);
        if locations.is_empty() {
            return Err(Error::ChunkNotFound(*id));
        }
        let mut last_err = None;
        for loc in locations {
            match self.read_chunk_at(id, &loc).await {
                Ok(b) => return Ok(b),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap())
    }

    pub(crate) async fn read_chunk_at(&self, id: &ChunkId, loc: &ChunkLocation) -> Result<Bytes> {
        let path = pack::pack_path(&loc.pack);
        let sealed = match self
            .inner
            .backend
            .read_range(&path, loc.offset as u64, loc.length as u64)
            .await
        {
            Ok(b) => b,
            Err(Error::MissingObject { .. }) => {
                return Err(Error::DamagedChunk {
                    chunk: *id,
                    pack: loc.pack,
                    reason: "the pack is missing".into(),
                });
            }
            Err(Error::Corrupt { reason, .. }) => {
                return Err(Error::DamagedChunk {
                    chunk: *id,
                    pack: loc.pack,
                    reason,
                });
            }
            Err(e) => return Err(e),
        };
        let keys = self.inner.clone();
        let id2 = *id;
        let raw_length = loc.raw_length;
        let data = tokio::task::spawn_blocking(move || {
            pack::open_blob(&keys.keys, &id2, &sealed, raw_length)
        })
        .await
        .expect("decrypt task panicked");
        data.map_err(|reason| Error::DamagedChunk {
            chunk: *id,
            pack: loc.pack,
            reason,
        })
    }

    /// Reads many chunks the way a restore needs them: grouped by pack and read in large
    /// sequential spans (adjacent blobs with small gaps merged, at most `SPAN_MAX` bytes),
    /// `concurrency` spans at a time, each span's blobs decrypted and verified off the
    /// async threads. Yields `(id, plaintext)` in pack order, each id once. Far fewer and
    /// larger reads than one `read_chunk` per chunk: on a cold cache or object storage
    /// this is the difference between seeking and streaming. A span that cannot be read
    /// or a blob that fails to verify falls back to `read_chunk` (other copies), whose
    /// error names the damaged chunk and pack.
    pub fn read_chunks_by_pack(
        &self,
        ids: &[ChunkId],
        concurrency: usize,
    ) -> Result<impl futures::Stream<Item = Result<Vec<(ChunkId, Bytes)>>> + '_> {
        const SPAN_MAX: u64 = 4 << 20;
        const GAP_MAX: u64 = 256 << 10;
        let mut located: Vec<(ChunkId, ChunkLocation)> = Vec::with_capacity(ids.len());
        let mut seen = std::collections::HashSet::with_capacity(ids.len());
        for id in ids {
            if !seen.insert(*id) {
                continue;
            }
            let loc = self
                .locate(id)
                .into_iter()
                .next()
                .ok_or(Error::ChunkNotFound(*id))?;
            located.push((*id, loc));
        }
        located.sort_by_key(|(_, l)| (l.pack, l.offset));
        // Spans: (pack, start, end, blobs). Both the bytes read and the plaintext they
        // decode to stay under SPAN_MAX, which bounds memory per span in flight.
        let mut spans: Vec<Span> = Vec::new();
        let mut span_raw = 0u64;
        for (id, loc) in located {
            let (start, end) = (loc.offset as u64, loc.offset as u64 + loc.length as u64);
            match spans.last_mut() {
                Some((pack, s, e, blobs))
                    if *pack == loc.pack
                        && start <= *e + GAP_MAX
                        && end - *s <= SPAN_MAX
                        && span_raw + loc.raw_length as u64 <= SPAN_MAX =>
                {
                    *e = (*e).max(end);
                    span_raw += loc.raw_length as u64;
                    blobs.push((id, loc));
                }
                _ => {
                    span_raw = loc.raw_length as u64;
                    spans.push((loc.pack, start, end, vec![(id, loc)]));
                }
            }
        }
        Ok(futures::stream::iter(spans)
            .map(move |(pack, start, end, blobs)| async move {
                let path = pack::pack_path(&pack);
                let span = self
                    .inner
                    .backend
                    .read_range(&path, start, end - start)
                    .await;
                let keys = self.inner.clone();
                let decoded: Vec<(ChunkId, ChunkLocation, Option<Bytes>)> =
                    tokio::task::spawn_blocking(move || {
                        blobs
                            .into_iter()
                            .map(|(id, loc)| {
                                let data = span.as_ref().ok().and_then(|span| {
                                    let from = (loc.offset as u64 - start) as usize;
                                    let sealed = span.get(from..from + loc.length as usize)?;
                                    pack::open_blob(&keys.keys, &id, sealed, loc.raw_length).ok()
                                });
                                (id, loc, data)
                            })
                            .collect()
                    })
                    .await
                    .expect("decrypt task panicked");
                let mut out = Vec::with_capacity(decoded.len());
                for (id, _loc, data) in decoded {
                    let data = match data {
                        Some(d) => d,
                        None => self.read_chunk(&id).await?,
                    };
                    out.push((id, data));
                }
                Ok(out)
            })
            .buffered(concurrency.max(1)))
    }

    /// Reads several chunks and concatenates them in order.
    pub async fn read_stream(&self, ids: &[ChunkId]) -> Result<Vec<u8>> {
        let parts: Vec<Bytes> = futures::stream::iter(ids.iter())
            .map(|id| self.read_chunk(id))
            .buffered(4)
            .try_collect()
            .await?;
        let mut out = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
        for p in parts {
            out.extend_from_slice(&p);
        }
        Ok(out)
    }

    /// Reads the blob list stored at the end of a pack (only its tail is fetched).
    pub async fn read_pack_header(&self, pack: &Id, size: u64) -> Result<Vec<BlobEntry>> {
        let path = pack::pack_path(pack);
        if size < pack::TRAILER_LEN as u64 {
            return Err(Error::corrupt(
                &path,
                format!("truncated: only {size} bytes"),
            ));
        }
        let backend = &self.inner.backend;
        let trailer = backend
            .read_range(
                &path,
                size - pack::TRAILER_LEN as u64,
                pack::TRAILER_LEN as u64,
            )
            .await?;
        let start = pack::header_start(&trailer, size).map_err(|r| Error::corrupt(&path, r))?;
        let sealed = backend
            .read_range(&path, start, size - pack::TRAILER_LEN as u64 - start)
            .await?;
        let entries = pack::open_header(&self.inner.keys, pack, &sealed)
            .map_err(|r| Error::corrupt(&path, r))?;
        pack::check_bounds(&entries, start).map_err(|r| Error::corrupt(&path, r))?;
        Ok(entries)
    }

    // ----- snapshots -----

    pub(crate) async fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        let path = snapshot::snapshot_path(id);
        let raw = self.inner.backend.read(&path).await?;
        if Id::of_content(&raw) != *id {
            return Err(Error::corrupt(&path, "content does not match its name"));
        }
        let plain = open_object(&self.inner.keys, b"snapshot", &raw)
            .map_err(|r| Error::corrupt(&path, r))?;
        let mut snap: Snapshot = serde_json::from_slice(&plain)
            .map_err(|e| Error::corrupt(&path, format!("bad JSON: {e}")))?;
        snap.id = *id;
        Ok(snap)
    }

    pub(crate) async fn write_snapshot(&self, snap: &Snapshot) -> Result<SnapshotId> {
        let sealed = seal_object(
            &self.inner.keys,
            b"snapshot",
            &serde_json::to_vec(snap).unwrap(),
        );
        let id = Id::of_content(&sealed);
        self.inner
            .backend
            .write_new(&snapshot::snapshot_path(&id), Bytes::from(sealed))
            .await?;
        Ok(id)
    }

    /// The ids of all snapshots, from a listing.
    pub async fn snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        let listed = self.inner.backend.list("snapshots/").await?;
        Ok(listed
            .iter()
            .filter_map(|o| o.path.rsplit('/').next()?.parse().ok())
            .collect())
    }

    /// All snapshots, oldest first.
    pub async fn list_snapshots(&self) -> Result<Vec<Snapshot>> {
        let ids = self.snapshot_ids().await?;
        let mut snaps: Vec<Snapshot> = futures::stream::iter(ids)
            .map(|id| async move { self.load_snapshot(&id).await })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        snaps.sort_by(|a, b| a.time.cmp(&b.time).then(a.id.cmp(&b.id)));
        Ok(snaps)
    }

    /// The snapshot named by a unique id prefix, or "latest".
    pub async fn find_snapshot(&self, prefix: &str) -> Result<Snapshot> {
        if prefix == "latest" {
            return self
                .list_snapshots()
                .await?
                .pop()
                .ok_or_else(|| Error::SnapshotNotFound(prefix.into()));
        }
        let p = prefix.to_ascii_lowercase();
        if p.is_empty() || !p.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::SnapshotNotFound(prefix.into()));
        }
        let ids: Vec<SnapshotId> = self
            .snapshot_ids()
            .await?
            .into_iter()
            .filter(|id| id.to_hex().starts_with(&p))
            .collect();
        match ids.as_slice() {
            [] => Err(Error::SnapshotNotFound(prefix.into())),
            [one] => self.load_snapshot(one).await,
            _ => Err(Error::AmbiguousSnapshot(prefix.into())),
        }
    }

    /// The parent an incremental backup of (`kind`, `source`, `tags`) compares against:
    /// none, the newest snapshot with the same kind, source and tags
    /// ([`ParentChoice::Auto`]), or a named one, which must be of the same kind.
    pub async fn resolve_parent(
        &self,
        choice: &ParentChoice,
        kind: &SnapshotKind,
        source: &str,
        tags: &std::collections::BTreeMap<String, String>,
    ) -> Result<Option<Snapshot>> {
        match choice {
            ParentChoice::None => Ok(None),
            ParentChoice::Auto => Ok(self
                .list_snapshots()
                .await?
                .into_iter()
                .rev()
                .find(|s| &s.kind == kind && s.source == source && &s.tags == tags)),
            ParentChoice::Id(id) => {
                let s = self.find_snapshot(id).await?;
                if &s.kind != kind {
                    return Err(Error::Invalid(format!(
                        "parent {} is a {} snapshot; this backup is {kind}",
                        s.id.short(),
                        s.kind
                    )));
                }
                Ok(Some(s))
            }
        }
    }

    /// Every chunk a snapshot needs: its metadata, its reference list's chunks and the
    /// chunks the list names.
    pub async fn snapshot_chunks(&self, snap: &Snapshot) -> Result<Vec<ChunkId>> {
        let raw = self.read_stream(&snap.refs).await?;
        let mut ids = snapshot::decode_refs(&raw)
            .map_err(|r| Error::corrupt(snapshot::snapshot_path(&snap.id), r))?;
        ids.extend(snap.refs.iter().copied());
        ids.extend(snap.root.iter().copied());
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    // ----- key slots -----

    /// All key slots: (id, slot).
    pub async fn list_keys(&self) -> Result<Vec<(String, KeySlot)>> {
        list_key_slots(&self.inner.backend).await
    }

    /// Adds a key slot for `secret`; returns its id.
    pub async fn add_key(&self, secret: &Secret, kdf: KdfParams) -> Result<String> {
        let slot = KeySlot::create(&self.inner.keys, secret, kdf)?;
        let id = Id::random().to_hex();
        self.inner
            .backend
            .write_new(
                &key_path(&id),
                Bytes::from(serde_json::to_vec_pretty(&slot).unwrap()),
            )
            .await?;
        Ok(id)
    }

    /// Removes a key slot by id prefix; refuses the slot in use and the last one.
    pub async fn remove_key(&self, prefix: &str) -> Result<String> {
        let keys = self.list_keys().await?;
        let matching: Vec<&String> = keys
            .iter()
            .map(|(id, _)| id)
            .filter(|id| id.starts_with(prefix))
            .collect();
        let id = match matching.as_slice() {
            [] => return Err(Error::KeyNotFound(prefix.into())),
            [one] => (*one).clone(),
            _ => {
                return Err(Error::Invalid(format!(
                    "key id prefix {prefix:?} is ambiguous"
                )));
            }
        };
        if id == self.inner.key_id {
            return Err(Error::Refused(
                "refusing to remove the key slot this command was unlocked with; unlock with another key to remove it".into(),
            ));
        }
        if keys.len() <= 1 {
            return Err(Error::Refused(
                "refusing to remove the last key slot".into(),
            ));
        }
        self.inner.backend.delete(&key_path(&id)).await?;
        Ok(id)
    }

    /// The master keys' chunk-id key, to initialise copy targets whose ids agree.
    pub fn chunk_id_key(&self) -> [u8; 32] {
        self.inner.keys.chunk_id_key
    }
}

async fn list_key_slots(backend: &Backend) -> Result<Vec<(String, KeySlot)>> {
    let listed = backend.list("keys/").await?;
    let mut out = Vec::new();
    for o in listed {
        let id = o.path.rsplit('/').next().unwrap_or("").to_string();
        let raw = backend.read(&o.path).await?;
        let slot: KeySlot = serde_json::from_slice(&raw)
            .map_err(|e| Error::corrupt(&o.path, format!("bad key slot JSON: {e}")))?;
        out.push((id, slot));
    }
    Ok(out)
}

async fn unlock(backend: &Backend, secret: &Secret) -> Result<(MasterKeys, String)> {
    let slots = list_key_slots(backend).await?;
    if slots.is_empty() {
        return Err(Error::corrupt("keys/", "the repository has no key slots"));
    }
    for (id, slot) in slots {
        let secret = secret.clone();
        let found = tokio::task::spawn_blocking(move || slot.unlock(&secret))
            .await
            .expect("key derivation panicked")?;
        if let Some(keys) = found {
            return Ok((keys, id));
        }
    }
    Err(Error::WrongSecret(backend.location().to_string()))
}

/// Compresses (zstd) and seals a repository object such as an index or a manifest.
pub(crate) fn seal_object(keys: &MasterKeys, aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut body = vec![1u8];
    body.extend_from_slice(&zstd::bulk::compress(plain, 3).expect("zstd in memory"));
    keys.seal(aad, &body)
}

pub(crate) fn open_object(
    keys: &MasterKeys,
    aad: &[u8],
    sealed: &[u8],
) -> std::result::Result<Vec<u8>, String> {
    let body = keys.open(aad, sealed)?;
    match body.first() {
        Some(0) => Ok(body[1..].to_vec()),
        Some(1) => {
            let mut out = Vec::new();
            zstd::stream::copy_decode(&body[1..], &mut out)
                .map_err(|e| format!("decompression failed: {e}"))?;
            Ok(out)
        }
        _ => Err("unknown compression marker".into()),
    }
}

/// The local cache root: `COFFER_CACHE_DIR`, else `$XDG_CACHE_HOME/coffer`, else
/// `~/.cache/coffer`, else a directory under the system temp dir.
pub fn cache_root() -> PathBuf {
    if let Ok(d) = std::env::var("COFFER_CACHE_DIR")
        && !d.is_empty()
    {
        return PathBuf::from(d);
    }
    if let Ok(d) = std::env::var("XDG_CACHE_HOME")
        && !d.is_empty()
    {
        return Path::new(&d).join("coffer");
    }
    if let Ok(h) = std::env::var("HOME")
        && !h.is_empty()
        && h != "/"
    {
        return Path::new(&h).join(".cache").join("coffer");
    }
    std::env::temp_dir().join("coffer-cache")
}
