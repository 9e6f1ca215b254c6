//! `coffer check` for volume snapshots: decodes each block map and file tree as a
//! restore would and reports what a restore would refuse or get wrong, so that a damaged
//! or malicious snapshot shows up before anyone restores it.
//!
//! Beyond the format and the tree's rules ([`Validation`]), every chunk a tree or map
//! names must be in the snapshot's reference list (else prune may delete it) and in the
//! index with the length the metadata gives it.

use std::sync::Arc;

use coffer_repo::check::MetadataCheck;
use coffer_repo::{ChunkId, Id, Repository, Snapshot, SnapshotKind};
use futures::FutureExt;
use futures::future::BoxFuture;

use crate::block::BlockMap;
use crate::fs::tree::{Kind, decode_tree};
use crate::fs::validate::{EntryProblem, ShortId, Validation};

/// Problems listed per snapshot; beyond this many only their number is given.
const MAX_LISTED: usize = 20;

/// The checks of this crate's formats, for `CheckOptions::metadata`.
pub fn metadata_checks() -> Vec<Arc<dyn MetadataCheck>> {
    vec![Arc::new(FileTreeCheck), Arc::new(BlockMapCheck)]
}

/// Checks the file trees of fs snapshots.
#[derive(Clone, Copy, Debug, Default)]
pub struct FileTreeCheck;

/// Checks the block maps of block snapshots.
#[derive(Clone, Copy, Debug, Default)]
pub struct BlockMapCheck;

impl MetadataCheck for FileTreeCheck {
    fn handles(&self, kind: &SnapshotKind) -> bool {
        *kind == SnapshotKind::Fs
    }
    fn check<'a>(
        &'a self,
        repo: &'a Repository,
        snap: &'a Snapshot,
    ) -> BoxFuture<'a, coffer_repo::Result<Vec<String>>> {
        async move {
            let Some(raw) = read_root(repo, snap).await? else {
                return Ok(vec![
                    "the file tree cannot be read (see the errors about its chunks)".into(),
                ]);
            };
            let entries = match decode_tree(&raw) {
                Ok(e) => e,
                Err(e) => return Ok(vec![e.to_string()]),
            };
            drop(raw);
            let mut valid = Validation::of(&entries);
            let refs = snapshot_chunks(repo, snap).await?;
            // Every chunk of every accepted file, grouped by id: one index lookup each.
            let mut places: Vec<(Id, u32, u64, u32)> = Vec::new();
            for (i, e) in entries.iter().enumerate() {
                if e.kind == Kind::File && valid.is_accepted(i) {
                    places.extend(
                        e.chunks
                            .iter()
                            .map(|c| (Id(c.id), i as u32, c.offset, c.len)),
                    );
                }
            }
            places.sort_unstable_by_key(|p| p.0);
            let mut found = Vec::new();
            for group in places.chunk_by(|a, b| a.0 == b.0) {
                let id = group[0].0;
                let referenced = refs.binary_search(&id).is_ok();
                let stored = repo.locate(&id).first().map(|l| l.raw_length);
                for &(_, i, offset, listed) in group {
                    let problem = if !referenced {
                        EntryProblem::ChunkUnreferenced {
                            id: ShortId::of(&id.0),
                            offset,
                        }
                    } else {
                        match stored {
                            None => EntryProblem::ChunkMissing {
                                id: ShortId::of(&id.0),
                                offset,
                            },
                            Some(stored) if stored != listed => EntryProblem::ChunkLength {
                                offset,
                                stored,
                                listed,
                            },
                            Some(_) => continue,
                        }
                    };
                    found.push((i as usize, problem));
                }
            }
            for (i, problem) in found {
                valid.refuse(i, problem);
            }
            let mut problems: Vec<(u32, EntryProblem)> = valid.problems().to_vec();
            problems.sort_by_key(|p| p.0);
            let lines = problems.iter().map(|&(i, p)| {
                format!(
                    "file tree entry {i} {:?}: {p}",
                    String::from_utf8_lossy(&entries[i as usize].path)
                )
            });
            Ok(listed(lines, problems.len(), "entries a restore refuses"))
        }
        .boxed()
    }
}

impl MetadataCheck for BlockMapCheck {
    fn handles(&self, kind: &SnapshotKind) -> bool {
        *kind == SnapshotKind::Block
    }
    fn check<'a>(
        &'a self,
        repo: &'a Repository,
        snap: &'a Snapshot,
    ) -> BoxFuture<'a, coffer_repo::Result<Vec<String>>> {
        async move {
            let Some(raw) = read_root(repo, snap).await? else {
                return Ok(vec!["the block map cannot be read (see the errors about its chunks)".into()]);
            };
            let map = match BlockMap::decode(&raw) {
                Ok(m) => m,
                Err(e) => return Ok(vec![e.to_string()]),
            };
            drop(raw);
            let refs = snapshot_chunks(repo, snap).await?;
            let mut stored: Vec<(ChunkId, usize)> = map
                .blocks
                .iter()
                .enumerate()
                .filter_map(|(i, b)| b.map(|id| (id, i)))
                .collect();
            stored.sort_unstable();
            let mut problems = Vec::new();
            for group in stored.chunk_by(|a, b| a.0 == b.0) {
                let id = group[0].0;
                let referenced = refs.binary_search(&id).is_ok();
                let length = repo.locate(&id).first().map(|l| l.raw_length as usize);
                for &(_, i) in group {
                    let want = map.block_len(i);
                    if !referenced {
                        problems.push(format!(
                            "block map: block {i}'s chunk {} is not in the snapshot's reference list (prune may delete it)",
                            id.short()
                        ));
                    } else if length.is_none() {
                        problems.push(format!(
                            "block map: block {i}'s chunk {} is not in the repository",
                            id.short()
                        ));
                    } else if length != Some(want) {
                        problems.push(format!(
                            "block map: block {i}'s chunk holds {} bytes, the block has {want}",
                            length.unwrap_or(0)
                        ));
                    }
                }
            }
            let n = problems.len();
            Ok(listed(problems.into_iter(), n, "blocks a restore cannot write"))
        }
        .boxed()
    }
}

/// The snapshot's metadata stream; None when its chunks are damaged or missing (check
/// reports those itself), an error only when storage fails.
async fn read_root(repo: &Repository, snap: &Snapshot) -> coffer_repo::Result<Option<Vec<u8>>> {
    match read_stream(repo, &snap.root).await {
        Ok(raw) => Ok(Some(raw)),
        Err(
            coffer_repo::Error::ChunkNotFound(_)
            | coffer_repo::Error::DamagedChunk { .. }
            | coffer_repo::Error::Corrupt { .. }
            | coffer_repo::Error::MissingObject { .. },
        ) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The first [`MAX_LISTED`] lines, then how many more there are.
fn listed(lines: impl Iterator<Item = String>, total: usize, what: &str) -> Vec<String> {
    let mut out: Vec<String> = lines.take(MAX_LISTED).collect();
    if total > MAX_LISTED {
        out.push(format!("... {} more {what}", total - MAX_LISTED));
    }
    out
}

// The stream and reference-list readers of the repository, chunk by chunk: inside the
// checks' boxed futures the compiler cannot prove `Repository::read_stream`'s concurrent
// reads Send, and metadata streams are a few chunks each.
async fn read_stream(repo: &Repository, ids: &[ChunkId]) -> coffer_repo::Result<Vec<u8>> {
    let mut out = Vec::new();
    for id in ids {
        out.extend_from_slice(&repo.read_chunk(id).await?);
    }
    Ok(out)
}

/// Every chunk `snap` needs (its reference list, plus the chunks of that list and of its
/// root), sorted: what prune keeps for it (docs/format.md, "Snapshots").
async fn snapshot_chunks(repo: &Repository, snap: &Snapshot) -> coffer_repo::Result<Vec<ChunkId>> {
    let raw = read_stream(repo, &snap.refs).await?;
    let mut ids: Vec<ChunkId> = raw
        .chunks_exact(32)
        .map(|c| {
            let mut id = [0u8; 32];
            id.copy_from_slice(c);
            Id(id)
        })
        .collect();
    ids.extend(snap.refs.iter().copied());
    ids.extend(snap.root.iter().copied());
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}
