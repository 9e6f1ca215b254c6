//! File-tree restore: recreates a snapshot's tree under a target directory.
//!
//! The tree is validated first ([`Validation`]); refused entries (and whatever lies
//! beneath a refused directory) are reported through [`Progress::warn`](crate::Progress)
//! and in [`RestoreSummary::refused`], and everything else restores. Then, in order:
//! directories, symlinks, device nodes and empty files (`at` creates everything beneath
//! directory descriptors, never following a symlink); file contents, chunks fetched pack
//! by pack and written in parallel lanes (`files`); hard links, each to a regular file
//! this run restored; and last the metadata of directories, symlinks and nodes, deepest
//! first (`meta`). A restore returns once its data is on disk.

mod at;
mod files;
mod meta;

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Instant;

use bytes::Bytes;
use coffer_repo::{Id, Repository, Snapshot};
use futures::StreamExt;

use super::select::select;
use super::tree::{Kind, load_tree};
use super::validate::{EntryProblem, ShortId, Validation, file_name};
use crate::{Error, Refusal, RestoreSummary, Result, SharedProgress, Unit, io_err, joined};
use files::{FAILED, FileWriter, Shared, creation_mode, finish_file};

/// Pack spans read and decoded at once during a restore (each at most 4 MiB).
const RESTORE_SPANS: usize = 2;
/// Restore writes run in this many independent lanes, files assigned to lanes by their
/// directory (creating files in one directory serialises in the kernel anyway), so that
/// file creation, the bulk of a small-file restore's cost, uses every core.
const WRITE_LANES: usize = 4;
/// Batches of writes queued or running at once, over all lanes.
const WRITES_IN_FLIGHT: usize = 3;
/// A restore starts flushing the target's file system in the background after every
/// this many bytes written.
const FLUSH_EVERY: u64 = 256 << 20;
/// Directories kept open while creating entries and setting metadata.
const OPEN_DIRS: usize = 64;

/// What and how to restore.
pub struct FsRestore<'a> {
    /// The directory to restore into (created if missing; it may hold files already:
    /// entries of the snapshot replace what is in their way, except directories).
    pub target: &'a Path,
    /// Restore only the entries these globs match (and their ancestors and contents);
    /// all when empty.
    pub include: Vec<String>,
    /// Where progress and refused entries are reported.
    pub progress: SharedProgress,
}

/// Where one chunk goes: `len` bytes at `offset` of file `entry`.
struct Place {
    id: Id,
    entry: u32,
    len: u32,
    offset: u64,
}

/// Restores file-system snapshot `snap` into `r.target`.
pub async fn restore(
    repo: &Repository,
    snap: &Snapshot,
    r: FsRestore<'_>,
) -> Result<RestoreSummary> {
    let started = Instant::now();
    let entries = load_tree(repo, snap).await?;
    let mut valid = Validation::of(&entries);
    let mut selected = select(&entries, &r.include)?;
    close_selection(&mut selected, &valid);
    let wanted = |valid: &Validation, i: usize| selected[i] && valid.is_accepted(i);

    // Where each chunk of the selected files goes, as one list sorted by chunk id (compact
    // for millions of files). A file whose chunk the repository lacks, or holds with
    // another length, is refused before anything is created.
    let mut places: Vec<Place> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if e.kind == Kind::File && wanted(&valid, i) {
            places.extend(e.chunks.iter().map(|c| Place {
                id: Id(c.id),
                entry: i as u32,
                len: c.len,
                offset: c.offset,
            }));
        }
    }
    places.sort_unstable_by_key(|p| p.id);
    let mut unusable = Vec::new();
    for group in places.chunk_by(|a, b| a.id == b.id) {
        let stored = repo.locate(&group[0].id).first().map(|l| l.raw_length);
        for p in group {
            let problem = match stored {
                None => EntryProblem::ChunkMissing {
                    id: ShortId::of(&p.id.0),
                    offset: p.offset,
                },
                Some(stored) if stored != p.len => EntryProblem::ChunkLength {
                    offset: p.offset,
                    stored,
                    listed: p.len,
                },
                Some(_) => continue,
            };
            unusable.push((p.entry as usize, problem));
        }
    }
    for (i, problem) in unusable {
        valid.refuse(i, problem);
    }
    places.retain(|p| valid.is_accepted(p.entry as usize));

    let target = r.target.to_path_buf();
    let entries = Arc::new(entries);
    let valid = Arc::new(valid);
    let pending: Arc<Vec<AtomicU32>> = Arc::new(
        entries
            .iter()
            .map(|e| AtomicU32::new(e.chunks.len() as u32))
            .collect(),
    );
    let shared = Shared {
        target: Arc::new(target.clone()),
        entries: entries.clone(),
        valid: valid.clone(),
        pending: pending.clone(),
        progress: r.progress.clone(),
    };
    let (entries, valid, pending) = (&*entries, &*valid, &*pending);

    let mut refused: Vec<(u32, EntryProblem)> = Vec::new();
    let report = |refused: &mut Vec<(u32, EntryProblem)>, i: usize, problem: EntryProblem| {
        r.progress.warn(
            &String::from_utf8_lossy(&entries[i].path),
            &problem.to_string(),
        );
        refused.push((i as u32, problem));
    };
    for &(i, problem) in valid.problems() {
        if selected[i as usize] {
            report(&mut refused, i as usize, problem);
        }
    }

    let total: u64 = (0..entries.len())
        .filter(|&i| entries[i].kind == Kind::File && wanted(valid, i))
        .map(|i| entries[i].size)
        .sum();
    r.progress.stage("writing", Unit::Bytes, Some(total));

    std::fs::create_dir_all(&target).map_err(|e| io_err(&target, e))?;
    let root: Arc<OwnedFd> = Arc::new(
        std::fs::File::open(&target)
            .map_err(|e| io_err(&target, e))?
            .into(),
    );
    let mut dirs = at::DirCache::new(root.clone(), OPEN_DIRS);

    // 1. Directories, symlinks, nodes and files without chunks (empty, or all holes), in
    //    tree order so that every parent exists before its entries.
    let mut lane_of = vec![0u8; entries.len()];
    for (i, e) in entries.iter().enumerate() {
        if !wanted(valid, i) {
            continue;
        }
        let Some(parent) = valid.parent(i) else {
            continue; // the root: the target itself
        };
        match e.kind {
            Kind::Hardlink => continue,
            Kind::File if !e.chunks.is_empty() => {
                lane_of[i] = lane(parent);
                continue;
            }
            _ => {}
        }
        let dir = dirs
            .get(parent, entries, valid)
            .map_err(|err| shared.io_err(parent, err))?;
        let dir = dir.as_fd();
        let name = file_name(&e.path);
        let made = match e.kind {
            Kind::Dir => {
                let fd = at::make_dir(dir, name).map_err(|err| shared.io_err(i, err))?;
                dirs.insert(i, fd);
                true
            }
            Kind::File => match at::create_file(dir, name, creation_mode(e))
                .map_err(|err| shared.io_err(i, err))?
            {
                Some(file) => {
                    finish_file(&file, e).map_err(|err| shared.io_err(i, err))?;
                    true
                }
                None => false,
            },
            Kind::Symlink => at::replacing(dir, name, || {
                rustix::fs::symlinkat(&e.target[..], dir, name)
            })
            .map_err(|err| shared.io_err(i, err))?
            .is_some(),
            Kind::CharDev | Kind::BlockDev | Kind::Fifo | Kind::Socket => {
                at::replacing(dir, name, || {
                    rustix::fs::mknodat(
                        dir,
                        name,
                        meta::node_type(e.kind),
                        rustix::fs::Mode::from_raw_mode(e.mode & 0o7777),
                        e.rdev as _,
                    )
                })
                .map_err(|err| shared.io_err(i, err))?
                .is_some()
            }
            Kind::Hardlink => unreachable!("skipped above"),
        };
        if !made {
            pending[i].fetch_or(FAILED, Relaxed);
            report(&mut refused, i, EntryProblem::DirectoryInTheWay);
        }
    }

    // 2. File contents: chunks fetched pack by pack in large reads and written where they
    //    belong; each file is created on its first chunk and finished after its last.
    //    Chunks of one file sit together in packs, so a small cache of open files serves
    //    nearly every write.
    let mut order: Vec<Id> = places.iter().map(|p| p.id).collect();
    order.dedup();
    let lanes: Arc<Vec<std::sync::Mutex<FileWriter>>> = Arc::new(
        (0..WRITE_LANES)
            .map(|_| std::sync::Mutex::new(FileWriter::new(shared.clone(), root.clone())))
            .collect(),
    );
    let mut written = 0u64;
    // The target's file system, flushed in the background every FLUSH_EVERY bytes so that
    // the disk writes while files are still being created, rather than all at the end.
    let mut flushing: Option<tokio::task::JoinHandle<std::io::Result<()>>> = None;
    let mut flushed_at = 0u64;
    let mut writes_running = futures::stream::FuturesUnordered::new();
    let mut chunks = std::pin::pin!(repo.read_chunks_by_pack(&order, RESTORE_SPANS)?);
    while let Some(batch) = chunks.next().await {
        let mut per_lane: Vec<Vec<(usize, u64, u32, Bytes)>> = vec![Vec::new(); WRITE_LANES];
        for (id, data) in batch? {
            let from = places.partition_point(|p| p.id < id);
            for p in places[from..].iter().take_while(|p| p.id == id) {
                let f = p.entry as usize;
                per_lane[lane_of[f] as usize].push((f, p.offset, p.len, data.clone()));
            }
        }
        for (lane, writes) in per_lane.into_iter().enumerate() {
            if writes.is_empty() {
                continue;
            }
            let lanes = lanes.clone();
            writes_running.push(tokio::task::spawn_blocking(move || {
                // A lane's lock is only poisoned by a panic in its own writes, which
                // surfaces as that task's error: the state is still consistent.
                let mut writer = lanes[lane].lock().unwrap_or_else(|e| e.into_inner());
                let mut n = 0u64;
                for (f, offset, len, data) in writes {
                    n += writer.write(f, offset, len, &data)?;
                }
                Ok::<_, Error>(n)
            }));
        }
        while writes_running.len() > WRITES_IN_FLIGHT {
            let Some(done) = writes_running.next().await else {
                break;
            };
            let n = joined("a restore's file writer", done)??;
            written += n;
            r.progress.advance(n);
        }
        if written - flushed_at >= FLUSH_EVERY && flushing.as_ref().is_none_or(|f| f.is_finished())
        {
            if let Some(done) = flushing.take() {
                joined("flushing the restore target", done.await)?
                    .map_err(|e| io_err(&target, e))?;
            }
            flushed_at = written;
            let fs = root.try_clone().map_err(|e| io_err(&target, e))?;
            flushing = Some(tokio::task::spawn_blocking(move || {
                Ok(rustix::fs::syncfs(&fs)?)
            }));
        }
    }
    while let Some(done) = writes_running.next().await {
        let n = joined("a restore's file writer", done)??;
        written += n;
        r.progress.advance(n);
    }
    for lane in lanes.iter() {
        let mut lane = lane.lock().unwrap_or_else(|e| e.into_inner());
        refused.append(&mut lane.refused);
    }
    drop(lanes);

    // 3. Hard links, to files this run restored.
    for &(link, file) in valid.links() {
        let (link, file) = (link as usize, file as usize);
        if !wanted(valid, link) {
            continue;
        }
        if !wanted(valid, file) || pending[file].load(Relaxed) & FAILED != 0 {
            pending[link].fetch_or(FAILED, Relaxed);
            report(&mut refused, link, EntryProblem::LinkTargetNotRestored);
            continue;
        }
        let (link_parent, file_parent) = (
            valid.parent(link).unwrap_or(0),
            valid.parent(file).unwrap_or(0),
        );
        let from = dirs
            .get(file_parent, entries, valid)
            .map_err(|err| shared.io_err(file_parent, err))?;
        let to = dirs
            .get(link_parent, entries, valid)
            .map_err(|err| shared.io_err(link_parent, err))?;
        let (from_name, to_name) = (
            file_name(&entries[file].path),
            file_name(&entries[link].path),
        );
        let linked = at::replacing(to.as_fd(), to_name, || {
            rustix::fs::linkat(
                from.as_fd(),
                from_name,
                to.as_fd(),
                to_name,
                rustix::fs::AtFlags::empty(),
            )
        })
        .map_err(|err| shared.io_err(link, err))?;
        if linked.is_none() {
            pending[link].fetch_or(FAILED, Relaxed);
            report(&mut refused, link, EntryProblem::DirectoryInTheWay);
        }
    }

    // 4. Metadata of the rest last, deepest first, so directory times are not disturbed
    //    by their contents.
    for (i, e) in entries.iter().enumerate().rev() {
        if !wanted(valid, i) || pending[i].load(Relaxed) & FAILED != 0 {
            continue;
        }
        match e.kind {
            Kind::Dir => {
                let dir = dirs
                    .get(i, entries, valid)
                    .map_err(|err| shared.io_err(i, err))?;
                meta::dir_metadata(dir.as_fd(), e).map_err(|err| shared.io_err(i, err))?;
            }
            Kind::Symlink | Kind::CharDev | Kind::BlockDev | Kind::Fifo | Kind::Socket => {
                let parent = valid.parent(i).unwrap_or(0);
                let dir = dirs
                    .get(parent, entries, valid)
                    .map_err(|err| shared.io_err(parent, err))?;
                meta::node_metadata(dir.as_fd(), file_name(&e.path), e)
                    .map_err(|err| shared.io_err(i, err))?;
            }
            Kind::File | Kind::Hardlink => {}
        }
    }
    drop(dirs);

    // A restore is done when its data is on disk: flush the target's file system.
    if let Some(done) = flushing.take() {
        joined("flushing the restore target", done.await)?.map_err(|e| io_err(&target, e))?;
    }
    rustix::fs::syncfs(&root).map_err(|e| io_err(&target, e.into()))?;

    refused.sort_by_key(|(i, _)| *i);
    Ok(RestoreSummary {
        snapshot_id: snap.id.to_hex(),
        target: target.display().to_string(),
        bytes_total: total,
        bytes_written: written,
        blocks_changed: None,
        files: Some(
            (0..entries.len())
                .filter(|&i| {
                    entries[i].kind == Kind::File
                        && wanted(valid, i)
                        && pending[i].load(Relaxed) & FAILED == 0
                })
                .count() as u64,
        ),
        duration_s: started.elapsed().as_secs_f64(),
        refused: refused
            .into_iter()
            .map(|(i, problem)| Refusal {
                path: String::from_utf8_lossy(&entries[i as usize].path).into_owned(),
                reason: problem.to_string(),
            })
            .collect(),
    })
}

/// Extends a selection to what its entries need: the file each selected hard link names
/// and every ancestor directory, as the validation found them (a duplicate path in a
/// damaged tree must not leave an accepted parent unselected).
fn close_selection(selected: &mut [bool], valid: &Validation) {
    let links = valid.links();
    for i in (0..selected.len()).rev() {
        if !selected[i] || !valid.is_accepted(i) {
            continue;
        }
        if let Ok(k) = links.binary_search_by_key(&(i as u32), |&(l, _)| l) {
            selected[links[k].1 as usize] = true;
        }
        if let Some(p) = valid.parent(i) {
            selected[p] = true;
        }
    }
}

/// The write lane of files in directory `dir`.
fn lane(dir: usize) -> u8 {
    ((dir as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 62) as u8 % WRITE_LANES as u8
}
