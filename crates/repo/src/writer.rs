//! Writer sessions: how chunks get into packs, packs into the index, and a snapshot
//! manifest on top, without any lock shared with other writers.
//!
//! A session first writes a marker under `sessions/` (refreshed while it runs, so prune
//! knows a backup is in progress and holds back deletions), then reads the deletion plans
//! under `deletions/` and never deduplicates against a pack prune has scheduled for
//! deletion. Chunks are hashed, deduplicated, compressed and sealed on the blocking pool,
//! then streamed into an open pack per blob kind; full packs are closed in the background.
//! At commit the session re-checks the deletion plans (prune may have run meanwhile) and
//! stores again any chunk it reused from a pack now scheduled for deletion, closes its
//! packs, writes its index file and only then the snapshot manifest. A session killed at
//! any point leaves only whole objects behind: packs without index entries, which nothing
//! references and prune removes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::id::{ChunkId, Id};
use crate::index::{IndexFile, PackRecord};
use crate::object::{ObjectKind, open_object, read_bounded, read_object, seal_object};
use crate::pack::{self, BlobEntry, BlobKind};
use crate::repository::{Repository, to_json};
use crate::snapshot::{self, NewSnapshot, Snapshot};
use crate::storage::ObjectWriter;

/// How often a running session refreshes its marker.
pub const SESSION_HEARTBEAT: Duration = Duration::from_secs(60);
/// A session whose marker is older than this is taken as dead (killed writer).
pub const SESSION_STALE: Duration = Duration::from_secs(10 * 60);
/// Index files are written every this many packs (or index entries), so that an
/// interrupted long backup leaves indexed packs the next backup can reuse, and an index
/// file stays well under the size readers accept.
const INDEX_FLUSH_PACKS: usize = 64;
const INDEX_FLUSH_ENTRIES: usize = 200_000;
/// A pack is closed at this many blobs even below its target size (tiny chunks), which
/// keeps its header a few MiB at most.
const PACK_MAX_BLOBS: usize = 100_000;
/// Pack ids per deletion plan object (keeps each well under the readers' limit).
const PLAN_MAX_PACKS: usize = 100_000;
/// Packs closed in the background at once (bounds memory and open uploads).
const MAX_CLOSING: usize = 2;
/// Bytes of sealed blobs gathered before they are written to the open pack.
const PACK_WRITE_BUFFER: usize = 1 << 20;

/// Result of [`Writer::add`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Added {
    /// The chunk's id.
    pub id: ChunkId,
    /// True when the chunk was stored; false when it was already in the repository.
    pub new: bool,
    /// Bytes added to the repository for this chunk (0 when deduplicated).
    pub stored_bytes: u64,
}

/// A chunk hashed and, if the repository needs it, compressed and encrypted by
/// [`Writer::seal`], waiting for [`Writer::store`].
pub struct SealedChunk {
    kind: BlobKind,
    /// The chunk's id.
    pub id: ChunkId,
    raw_len: u32,
    /// None when the repository (or this session) has the chunk already.
    sealed: Option<Vec<u8>>,
}

impl SealedChunk {
    /// The chunk's plaintext length.
    pub fn raw_len(&self) -> u32 {
        self.raw_len
    }
}

/// Counters of one session.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WriteStats {
    /// Chunks stored by this session.
    pub chunks_new: u64,
    /// Chunks the repository (or this session) had already.
    pub chunks_reused: u64,
    /// Plaintext bytes of new chunks.
    pub bytes_new_raw: u64,
    /// Stored (compressed, sealed) bytes of new chunks: what the repository grew by.
    pub bytes_new_stored: u64,
}

/// A session marker's sealed content.
#[derive(Serialize, Deserialize)]
pub(crate) struct SessionInfo {
    pub started: chrono::DateTime<Utc>,
    pub hostname: String,
    pub pid: u32,
    pub purpose: String,
}

/// A deletion plan written by prune.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct DeletionPlan {
    pub created: chrono::DateTime<Utc>,
    pub packs: Vec<Id>,
}

pub(crate) fn session_path(id: &Id, seq: u64) -> String {
    format!("sessions/{}/{:010}", id.to_hex(), seq)
}

/// Reads every deletion plan: (object path, plan). An unreadable plan is an error, not
/// skipped: a writer that ignored it could reuse a pack about to be deleted.
pub(crate) async fn load_deletion_plans(repo: &Repository) -> Result<Vec<(String, DeletionPlan)>> {
    let listed = repo.storage().list("deletions/").await?;
    let mut out = Vec::new();
    for o in listed {
        let plain = match read_object(
            &**repo.storage(),
            repo.keys(),
            ObjectKind::Deletions,
            &o.path,
            Some(o.size),
        )
        .await
        {
            Ok((_, plain)) => plain,
            // Deleted by a concurrent prune after our listing: nothing to honour any more.
            Err(Error::MissingObject { .. }) => continue,
            Err(e) => return Err(e),
        };
        let plan: DeletionPlan = serde_json::from_slice(&plain)
            .map_err(|e| Error::corrupt(&o.path, format!("bad JSON: {e}")))?;
        out.push((o.path, plan));
    }
    Ok(out)
}

/// Writes a deletion plan, split into objects of at most `PLAN_MAX_PACKS` packs; returns
/// their paths.
pub(crate) async fn write_deletion_plan(
    repo: &Repository,
    plan: &DeletionPlan,
) -> Result<Vec<String>> {
    let mut paths = Vec::new();
    for packs in plan.packs.chunks(PLAN_MAX_PACKS) {
        let part = DeletionPlan {
            created: plan.created,
            packs: packs.to_vec(),
        };
        let sealed = seal_object(repo.keys(), ObjectKind::Deletions, &to_json(&part));
        let path = format!("deletions/{}", Id::of_content(&sealed).to_hex());
        match repo.storage().write_new(&path, Bytes::from(sealed)).await {
            // The same bytes are there already: the same plan.
            Ok(()) | Err(Error::ObjectExists { .. }) => paths.push(path),
            Err(e) => return Err(e),
        }
    }
    Ok(paths)
}

/// Locks a mutex, taking the data as it is if a panicking thread held it (every update
/// under these locks is a single step, so the data is consistent).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct OpenPack {
    id: Id,
    writer: Box<dyn ObjectWriter>,
    /// Sealed blobs not yet handed to the storage: written in pieces of
    /// `PACK_WRITE_BUFFER` bytes, not one storage call per blob (each costs a hand-off to
    /// the blocking pool and a system call on a local disk).
    pending: Vec<u8>,
    written: u64,
    entries: Vec<BlobEntry>,
}

#[derive(Default)]
struct State {
    /// Chunks stored by this session (written or being written).
    stored: HashSet<ChunkId>,
    /// Every chunk the snapshot will reference.
    refs: HashSet<ChunkId>,
    /// Chunks reused from the index, with the pack they were found in.
    reused_from: HashMap<ChunkId, Id>,
    /// Closed packs not yet in an index file.
    unindexed: Vec<PackRecord>,
    /// Packs never to deduplicate against (scheduled for deletion, or being repacked).
    excluded: HashSet<Id>,
    failed: Option<String>,
}

/// One writer session. Clone it to add chunks from several tasks.
#[derive(Clone)]
pub struct Writer {
    inner: Arc<WriterInner>,
}

struct WriterInner {
    repo: Repository,
    session: Id,
    state: Mutex<State>,
    packers: [tokio::sync::Mutex<Option<OpenPack>>; 2],
    closing: tokio::sync::Mutex<Vec<JoinHandle<Result<PackRecord>>>>,
    index_ids: Mutex<Vec<Id>>,
    heartbeat: Mutex<Option<JoinHandle<()>>>,
    chunks_new: AtomicU64,
    chunks_reused: AtomicU64,
    bytes_new_raw: AtomicU64,
    bytes_new_stored: AtomicU64,
}

impl Drop for WriterInner {
    fn drop(&mut self) {
        if let Some(h) = lock(&self.heartbeat).take() {
            h.abort();
        }
    }
}

impl Repository {
    /// Starts a writer session.
    pub async fn writer(&self) -> Result<Writer> {
        self.writer_for("backup").await
    }

    pub(crate) async fn writer_for(&self, purpose: &str) -> Result<Writer> {
        let session = Id::random();
        let started = Utc::now();
        let info = SessionInfo {
            started,
            hostname: self.open_options().hostname.clone(),
            pid: std::process::id(),
            purpose: purpose.to_string(),
        };
        let sealed = Bytes::from(seal_object(
            self.keys(),
            ObjectKind::Session,
            &to_json(&info),
        ));
        // The marker goes first, then the deletion plans are read: prune does the
        // opposite (plan, then markers), so one of the two always sees the other.
        self.storage()
            .write_new(&session_path(&session, 0), sealed.clone())
            .await?;
        let plans = load_deletion_plans(self).await?;
        self.reload_index().await?;
        let mut state = State::default();
        for (_, plan) in plans {
            state.excluded.extend(plan.packs);
        }
        let storage = self.storage().clone();
        let heartbeat = tokio::spawn(async move {
            let mut seq = 0u64;
            loop {
                tokio::time::sleep(SESSION_HEARTBEAT).await;
                let next = seq + 1;
                if storage
                    .write_new(&session_path(&session, next), sealed.clone())
                    .await
                    .is_ok()
                {
                    let _ = storage.delete(&session_path(&session, seq)).await;
                    seq = next;
                }
            }
        });
        Ok(Writer {
            inner: Arc::new(WriterInner {
                repo: self.clone(),
                session,
                state: Mutex::new(state),
                packers: [tokio::sync::Mutex::new(None), tokio::sync::Mutex::new(None)],
                closing: tokio::sync::Mutex::new(Vec::new()),
                index_ids: Mutex::new(Vec::new()),
                heartbeat: Mutex::new(Some(heartbeat)),
                chunks_new: AtomicU64::new(0),
                chunks_reused: AtomicU64::new(0),
                bytes_new_raw: AtomicU64::new(0),
                bytes_new_stored: AtomicU64::new(0),
            }),
        })
    }
}

enum Claim {
    Exists,
    New,
}

impl Writer {
    /// The repository this session writes to.
    pub fn repository(&self) -> &Repository {
        &self.inner.repo
    }

    /// The session's counters so far.
    pub fn stats(&self) -> WriteStats {
        let i = &self.inner;
        WriteStats {
            chunks_new: i.chunks_new.load(Ordering::Relaxed),
            chunks_reused: i.chunks_reused.load(Ordering::Relaxed),
            bytes_new_raw: i.bytes_new_raw.load(Ordering::Relaxed),
            bytes_new_stored: i.bytes_new_stored.load(Ordering::Relaxed),
        }
    }

    /// Never deduplicate against these packs (prune uses it while repacking).
    pub(crate) fn exclude_packs(&self, packs: impl IntoIterator<Item = Id>) {
        lock(&self.inner.state).excluded.extend(packs);
    }

    /// Decides whether `id` must be stored, and references it either way.
    fn claim(&self, id: ChunkId, force: bool) -> Claim {
        let mut st = lock(&self.inner.state);
        st.refs.insert(id);
        if st.stored.contains(&id) {
            return Claim::Exists;
        }
        if !force {
            let index = self.inner.repo.index();
            if let Some(loc) = index
                .lookup(&id)
                .into_iter()
                .find(|l| !st.excluded.contains(&l.pack))
            {
                st.reused_from.insert(id, loc.pack);
                return Claim::Exists;
            }
        }
        st.stored.insert(id);
        Claim::New
    }

    /// Adds a chunk: hashes it, and stores it unless the repository has it already.
    pub async fn add(&self, kind: BlobKind, data: Bytes) -> Result<Added> {
        self.add_inner(kind, data, false).await
    }

    async fn add_inner(&self, kind: BlobKind, data: Bytes, force: bool) -> Result<Added> {
        self.check_failed()?;
        let this = self.clone();
        let sealed = tokio::task::spawn_blocking(move || this.seal_inner(kind, &data, force))
            .await
            .map_err(|e| Error::task("compressing and encrypting a chunk", e));
        match sealed {
            Ok(sealed) => self.store(sealed).await,
            Err(e) => {
                self.fail(&e);
                Err(e)
            }
        }
    }

    /// The CPU half of [`Writer::add`], for callers already on a blocking thread (a file
    /// reader that chunks, hashes and seals small files in one go, without a hand-off per
    /// chunk): hashes `data`, decides whether the repository needs it, and if so
    /// compresses and encrypts it. Pass the result to [`Writer::store`].
    pub fn seal(&self, kind: BlobKind, data: &[u8]) -> SealedChunk {
        self.seal_inner(kind, data, false)
    }

    fn seal_inner(&self, kind: BlobKind, data: &[u8], force: bool) -> SealedChunk {
        let keys = self.inner.repo.keys();
        let id = keys.chunk_id(data);
        let sealed = match self.claim(id, force) {
            Claim::Exists => None,
            Claim::New => Some(pack::seal_blob(
                keys,
                &id,
                data,
                self.inner.repo.config().compression(),
            )),
        };
        SealedChunk {
            kind,
            id,
            raw_len: data.len() as u32,
            sealed,
        }
    }

    /// The I/O half of [`Writer::add`]: appends a sealed chunk to its open pack (nothing
    /// to do for one the repository already has).
    pub async fn store(&self, chunk: SealedChunk) -> Result<Added> {
        let SealedChunk {
            kind,
            id,
            raw_len,
            sealed,
        } = chunk;
        let Some(sealed) = sealed else {
            self.inner.chunks_reused.fetch_add(1, Ordering::Relaxed);
            return Ok(Added {
                id,
                new: false,
                stored_bytes: 0,
            });
        };
        self.check_failed()?;
        let stored = sealed.len() as u64;
        if let Err(e) = self.append(kind, id, sealed, raw_len).await {
            self.fail(&e);
            return Err(e);
        }
        self.inner.chunks_new.fetch_add(1, Ordering::Relaxed);
        self.inner
            .bytes_new_raw
            .fetch_add(raw_len as u64, Ordering::Relaxed);
        self.inner
            .bytes_new_stored
            .fetch_add(stored, Ordering::Relaxed);
        Ok(Added {
            id,
            new: true,
            stored_bytes: stored,
        })
    }

    /// References a chunk without its data (e.g. an unchanged file from the parent).
    /// False when the repository does not have it (usable); then add() the data.
    pub fn reuse(&self, id: &ChunkId) -> bool {
        let mut st = lock(&self.inner.state);
        if st.stored.contains(id) {
            st.refs.insert(*id);
            return true;
        }
        let index = self.inner.repo.index();
        match index
            .lookup(id)
            .into_iter()
            .find(|l| !st.excluded.contains(&l.pack))
        {
            Some(loc) => {
                st.refs.insert(*id);
                st.reused_from.insert(*id, loc.pack);
                drop(st);
                self.inner.chunks_reused.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Stores a metadata byte stream as content-defined chunks; returns their ids in order.
    pub async fn add_stream(&self, kind: BlobKind, data: &[u8]) -> Result<Vec<ChunkId>> {
        let p = self.inner.repo.config().chunker;
        let mut ids = Vec::new();
        for c in fastcdc::v2020::FastCDC::new(data, p.min, p.avg, p.max) {
            let part = Bytes::copy_from_slice(&data[c.offset..c.offset + c.length]);
            ids.push(self.add(kind, part).await?.id);
        }
        Ok(ids)
    }

    fn fail(&self, e: &Error) {
        let mut st = lock(&self.inner.state);
        if st.failed.is_none() {
            st.failed = Some(e.to_string());
        }
    }

    fn check_failed(&self) -> Result<()> {
        match &lock(&self.inner.state).failed {
            Some(msg) => Err(Error::SessionFailed(msg.clone())),
            None => Ok(()),
        }
    }

    async fn append(
        &self,
        kind: BlobKind,
        id: ChunkId,
        sealed: Vec<u8>,
        raw_len: u32,
    ) -> Result<()> {
        let repo = &self.inner.repo;
        let slot = &self.inner.packers[kind.to_u8() as usize];
        let mut guard = slot.lock().await;
        if guard.is_none() {
            let pack_id = Id::random();
            let writer = repo.storage().create(&pack::pack_path(&pack_id)).await?;
            *guard = Some(OpenPack {
                id: pack_id,
                writer,
                pending: Vec::new(),
                written: 0,
                entries: Vec::new(),
            });
        }
        let Some(open) = guard.as_mut() else {
            return Err(Error::TaskFailed {
                task: "opening a pack",
                reason: "no open pack".into(),
            });
        };
        let len = sealed.len() as u32;
        if open.pending.is_empty() && sealed.len() >= PACK_WRITE_BUFFER {
            open.pending = sealed;
        } else {
            if open.pending.is_empty() {
                open.pending
                    .reserve(PACK_WRITE_BUFFER + PACK_WRITE_BUFFER / 4);
            }
            open.pending.extend_from_slice(&sealed);
        }
        if open.pending.len() >= PACK_WRITE_BUFFER {
            write_pending(open).await?;
        }
        open.entries.push(BlobEntry {
            kind,
            id,
            offset: open.written as u32,
            length: len,
            raw_length: raw_len,
        });
        open.written += len as u64;
        if open.written >= repo.config().pack_size as u64 || open.entries.len() >= PACK_MAX_BLOBS {
            let full = guard.take();
            drop(guard);
            if let Some(full) = full {
                self.close_in_background(full).await?;
            }
        }
        Ok(())
    }

    async fn close_in_background(&self, open: OpenPack) -> Result<()> {
        let repo = self.inner.repo.clone();
        let handle = tokio::spawn(async move { close_pack(&repo, open).await });
        let mut closing = self.inner.closing.lock().await;
        closing.push(handle);
        // Bound the packs in flight: wait for the oldest ones.
        while closing.len() > MAX_CLOSING {
            let h = closing.remove(0);
            let rec = h.await.map_err(|e| Error::task("closing a pack", e))??;
            lock(&self.inner.state).unindexed.push(rec);
        }
        drop(closing);
        self.maybe_flush_index().await
    }

    async fn maybe_flush_index(&self) -> Result<()> {
        let batch = {
            let mut st = lock(&self.inner.state);
            let entries: usize = st.unindexed.iter().map(|p| p.blobs.len()).sum();
            if st.unindexed.len() < INDEX_FLUSH_PACKS && entries < INDEX_FLUSH_ENTRIES {
                return Ok(());
            }
            std::mem::take(&mut st.unindexed)
        };
        self.write_index(batch).await
    }

    async fn write_index(&self, packs: Vec<PackRecord>) -> Result<()> {
        if packs.is_empty() {
            return Ok(());
        }
        let id = self
            .inner
            .repo
            .write_index_file(&IndexFile {
                supersedes: Vec::new(),
                packs,
            })
            .await?;
        lock(&self.inner.index_ids).push(id);
        Ok(())
    }

    /// Closes every open pack and writes the index for all packs of this session.
    pub(crate) async fn flush(&self) -> Result<()> {
        for slot in &self.inner.packers {
            let open = slot.lock().await.take();
            if let Some(open) = open {
                let repo = self.inner.repo.clone();
                let rec = close_pack(&repo, open).await?;
                lock(&self.inner.state).unindexed.push(rec);
            }
        }
        let handles = std::mem::take(&mut *self.inner.closing.lock().await);
        for h in handles {
            let rec = h.await.map_err(|e| Error::task("closing a pack", e))??;
            lock(&self.inner.state).unindexed.push(rec);
        }
        let batch = std::mem::take(&mut lock(&self.inner.state).unindexed);
        self.write_index(batch).await?;
        // Later reads through this repository handle see what the session wrote.
        self.inner.repo.reload_index().await
    }

    /// Stores again the reused chunks whose packs prune scheduled for deletion while this
    /// session ran, so the snapshot never depends on a pack about to disappear.
    async fn rescue_from_pruned_packs(&self) -> Result<()> {
        let plans = load_deletion_plans(&self.inner.repo).await?;
        let doomed: HashSet<Id> = plans.into_iter().flat_map(|(_, p)| p.packs).collect();
        if doomed.is_empty() {
            return Ok(());
        }
        let at_risk: Vec<ChunkId> = {
            let mut st = lock(&self.inner.state);
            st.excluded.extend(doomed.iter().copied());
            st.reused_from
                .iter()
                .filter(|(_, pack)| doomed.contains(pack))
                .map(|(id, _)| *id)
                .collect()
        };
        for id in at_risk {
            let data = self
                .inner
                .repo
                .read_chunk(&id)
                .await
                .map_err(|e| Error::PrunedDuringBackup(e.to_string()))?;
            // Metadata and data alike: the kind only steers pack placement.
            let kind = self
                .inner
                .repo
                .locate(&id)
                .first()
                .map(|l| l.kind)
                .unwrap_or(BlobKind::Data);
            self.add_inner(kind, data, true).await?;
            lock(&self.inner.state).reused_from.remove(&id);
        }
        Ok(())
    }

    /// Finishes the session: stores the reference list, closes packs, writes the index and
    /// then the snapshot manifest.
    pub async fn commit(self, new: NewSnapshot) -> Result<Snapshot> {
        self.check_failed()?;
        self.rescue_from_pruned_packs().await?;
        let mut refs: Vec<ChunkId> = lock(&self.inner.state).refs.iter().copied().collect();
        refs.sort_unstable();
        let refs_chunks = self
            .add_stream(BlobKind::Meta, &snapshot::encode_refs(&refs))
            .await?;
        self.flush().await?;
        let mut snap = Snapshot {
            id: Id::default(),
            time: new.time.unwrap_or_else(Utc::now),
            kind: new.kind,
            source: new.source,
            hostname: self.inner.repo.open_options().hostname.clone(),
            tags: new.tags,
            parent: new.parent,
            root: new.root,
            refs: refs_chunks,
            summary: new.summary,
            original: None,
        };
        snap.id = self.inner.repo.write_snapshot(&snap).await?;
        self.end_session().await;
        Ok(snap)
    }

    /// Commits a snapshot manifest copied from elsewhere (copy), keeping its fields.
    pub(crate) async fn commit_copy(self, mut snap: Snapshot) -> Result<Snapshot> {
        self.check_failed()?;
        self.rescue_from_pruned_packs().await?;
        self.flush().await?;
        snap.id = self.inner.repo.write_snapshot(&snap).await?;
        self.end_session().await;
        Ok(snap)
    }

    /// Finishes a session that stores chunks but no snapshot (prune's repacking).
    pub(crate) async fn finish(self) -> Result<Vec<Id>> {
        self.check_failed()?;
        self.flush().await?;
        let ids = lock(&self.inner.index_ids).clone();
        self.end_session().await;
        Ok(ids)
    }

    /// Ends the session without a snapshot. Packs already written stay unreferenced
    /// (prune removes them).
    pub async fn abort(self) {
        self.end_session().await;
    }

    pub(crate) fn session_id(&self) -> Id {
        self.inner.session
    }

    async fn end_session(&self) {
        if let Some(h) = lock(&self.inner.heartbeat).take() {
            h.abort();
        }
        let prefix = format!("sessions/{}/", self.inner.session.to_hex());
        if let Ok(list) = self.inner.repo.storage().list(&prefix).await {
            for o in list {
                let _ = self.inner.repo.storage().delete(&o.path).await;
            }
        }
    }
}

/// Hands the gathered blobs of an open pack to the storage.
async fn write_pending(open: &mut OpenPack) -> Result<()> {
    if open.pending.is_empty() {
        return Ok(());
    }
    let data = Bytes::from(std::mem::take(&mut open.pending));
    open.writer.write(data).await
}

async fn close_pack(repo: &Repository, mut open: OpenPack) -> Result<PackRecord> {
    write_pending(&mut open).await?;
    let trailer = pack::encode_trailer(repo.keys(), &open.id, &open.entries);
    let size = open.written + trailer.len() as u64;
    open.writer.write(trailer).await?;
    open.writer.close().await?;
    Ok(PackRecord {
        id: open.id,
        size,
        blobs: open.entries,
    })
}

/// Live sessions other than `except`: session id -> newest marker time.
pub(crate) async fn live_sessions(
    repo: &Repository,
    except: Option<Id>,
) -> Result<BTreeMap<Id, chrono::DateTime<Utc>>> {
    let listed = repo.storage().list("sessions/").await?;
    let now = Utc::now();
    let stale = chrono::Duration::from_std(SESSION_STALE).unwrap_or(chrono::Duration::MAX);
    let mut out: BTreeMap<Id, chrono::DateTime<Utc>> = BTreeMap::new();
    for o in listed {
        let mut parts = o.path.split('/');
        let (Some(_), Some(sid)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(sid) = sid.parse::<Id>() else { continue };
        if Some(sid) == except {
            continue;
        }
        let t = o.modified.unwrap_or(now);
        if now - t > stale {
            continue;
        }
        let e = out.entry(sid).or_insert(t);
        if t > *e {
            *e = t;
        }
    }
    Ok(out)
}

/// Session start times of live sessions (reads their markers).
pub(crate) async fn live_session_starts(
    repo: &Repository,
    except: Option<Id>,
) -> Result<Vec<chrono::DateTime<Utc>>> {
    let live = live_sessions(repo, except).await?;
    let mut out = Vec::new();
    for sid in live.keys() {
        let prefix = format!("sessions/{}/", sid.to_hex());
        let listed = repo.storage().list(&prefix).await?;
        let Some(o) = listed.first() else { continue };
        // A marker that cannot be read counts as the oldest session: deletions wait.
        let raw = match read_bounded(
            &**repo.storage(),
            &o.path,
            Some(o.size),
            ObjectKind::Session.max_stored(),
        )
        .await
        {
            Ok(raw) => raw,
            // The session ended (or moved to its next marker) since the listing.
            Err(Error::MissingObject { .. }) => continue,
            Err(_) => {
                out.push(chrono::DateTime::<Utc>::MIN_UTC);
                continue;
            }
        };
        match open_object(repo.keys(), ObjectKind::Session, &raw) {
            Ok(plain) => {
                if let Ok(info) = serde_json::from_slice::<SessionInfo>(&plain) {
                    out.push(info.started);
                }
            }
            Err(_) => out.push(chrono::DateTime::<Utc>::MIN_UTC),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::limits::proptest_config())]

        #[test]
        fn plans_and_markers_round_trip(
            packs in proptest::collection::vec(any::<[u8; 32]>(), 0..20),
            t in 0i64..4_000_000_000,
            pid in any::<u32>(),
            host in ".{0,20}",
        ) {
            let created = chrono::DateTime::from_timestamp(t, 0).unwrap_or_default();
            let plan = DeletionPlan { created, packs: packs.into_iter().map(Id).collect() };
            let back: DeletionPlan = serde_json::from_slice(&to_json(&plan)).unwrap();
            prop_assert_eq!(back.created, plan.created);
            prop_assert_eq!(back.packs, plan.packs);
            let info = SessionInfo { started: created, hostname: host, pid, purpose: "backup".into() };
            let back: SessionInfo = serde_json::from_slice(&to_json(&info)).unwrap();
            prop_assert_eq!(back.hostname, info.hostname);
            prop_assert_eq!(back.pid, info.pid);
        }

        #[test]
        fn plan_and_marker_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = serde_json::from_slice::<DeletionPlan>(&bytes);
            let _ = serde_json::from_slice::<SessionInfo>(&bytes);
        }
    }
}
