//! Crash safety, deterministically: a backup is run once to count its writes, then again
//! with a fault injected at every one of them in turn (a write that fails, a kill right
//! after it, storage that fills up from it on, an object torn in half by a store without
//! atomic writes). After each, the repository opened afresh must check clean with
//! `--read-data` (a torn object is named by check and nothing else is wrong), the snapshot
//! committed before must restore byte for byte, and the next backup must succeed and
//! restore too.

mod common;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use coffer_repo::progress::NoProgress;
use coffer_repo::storage::fault::{Fault, FaultyStorage};
use coffer_repo::{
    BlobKind, CheckOptions, CheckReport, Error, Id, NewSnapshot, OpenOptions, PruneOptions,
    Repository, Snapshot, Storage,
};
use common::*;

const CHUNK: usize = 30_000;
const BASE: std::ops::Range<u64> = 0..6;
const NEXT: std::ops::Range<u64> = 100..112;

/// Backs up one chunk per seed; the root lists them. Any error is returned.
async fn backup(repo: &Repository, seeds: std::ops::Range<u64>) -> coffer_repo::Result<Snapshot> {
    let w = repo.writer().await?;
    let mut root = Vec::new();
    for s in seeds.clone() {
        let a = w
            .add(BlobKind::Data, Bytes::from(pseudo_random(s, CHUNK)))
            .await?;
        root.extend_from_slice(&a.id.0);
    }
    let root = w.add_stream(BlobKind::Meta, &root).await?;
    w.commit(NewSnapshot {
        kind: "test".into(),
        source: format!("seeds {seeds:?}"),
        root,
        ..Default::default()
    })
    .await
}

/// Reads a snapshot back and compares every chunk with what was written.
async fn restores(repo: &Repository, id: &Id, seeds: std::ops::Range<u64>) {
    let snap = repo.load_snapshot(id).await.unwrap();
    let root = repo.read_stream(&snap.root).await.unwrap();
    assert_eq!(root.len(), seeds.clone().count() * 32);
    for (i, s) in seeds.enumerate() {
        let id = Id::from_slice(&root[i * 32..i * 32 + 32]);
        let data = repo.read_chunk(&id).await.unwrap();
        assert_eq!(data.as_ref(), &pseudo_random(s, CHUNK)[..]);
    }
}

async fn check(repo: &Repository) -> CheckReport {
    repo.check(
        CheckOptions {
            read_data: Some(1.0),
            ..Default::default()
        },
        &NoProgress,
    )
    .await
    .unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A repository with one committed snapshot, to copy for every run.
struct Template {
    dir: tempfile::TempDir,
    base: Id,
}

impl Template {
    async fn new() -> Template {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = test_opts();
        opts.pack_size = 64 * 1024; // about two chunks a pack: many writes per backup
        let repo = Repository::init(
            local(&dir.path().join("repo")),
            &secret(),
            opts,
            &client(dir.path()),
        )
        .await
        .unwrap();
        let base = backup(&repo, BASE).await.unwrap().id;
        Template { dir, base }
    }

    /// A fresh copy of the repository in `run`: its storage and options (own cache).
    fn copy(&self, run: &Path) -> (Arc<dyn Storage>, OpenOptions) {
        copy_dir(&self.dir.path().join("repo"), &run.join("repo"));
        (local(&run.join("repo")), client(run))
    }
}

/// Runs the backup of `NEXT` through a fault; returns what it returned and the decorator.
async fn faulty_backup(
    storage: Arc<dyn Storage>,
    options: &OpenOptions,
    fault: Fault,
) -> (coffer_repo::Result<Snapshot>, Arc<FaultyStorage>) {
    let faulty = FaultyStorage::new(storage, fault);
    let result = match Repository::open(faulty.clone(), &secret(), options).await {
        Ok(repo) => backup(&repo, NEXT).await,
        Err(e) => Err(e),
    };
    (result, faulty)
}

/// How many writes the backup makes without faults.
async fn count_writes(t: &Template) -> u64 {
    let run = tempfile::tempdir().unwrap();
    let (storage, options) = t.copy(run.path());
    let (result, faulty) = faulty_backup(storage, &options, Fault::None).await;
    result.unwrap();
    let n = faulty.writes();
    assert!(n >= 15, "the backup makes many writes: {n}");
    n
}

/// After a faulty run: the repository, opened afresh on the real storage, passes
/// `check --read-data` (or, after a torn write, check names only the torn object), keeps
/// the earlier snapshot, accepts and restores the next backup, and prunes. Returns the
/// first check's report.
async fn assert_recovers(
    t: &Template,
    storage: Arc<dyn Storage>,
    run: &Path,
    result: &coffer_repo::Result<Snapshot>,
    torn: Option<String>,
    what: &str,
) -> CheckReport {
    // A new process: fresh cache.
    let options = OpenOptions::new(run.join("cache-after"), "test-host", "tester");
    let repo = Repository::open(storage.clone(), &secret(), &options)
        .await
        .unwrap_or_else(|e| panic!("{what}: cannot open afterwards: {e}"));
    let first = check(&repo).await;
    let report = first.clone();
    match &torn {
        None => assert!(
            report.ok(),
            "{what}: check after the fault: {:?}",
            report.errors
        ),
        Some(path) => {
            let name = path.rsplit('/').next().unwrap();
            for e in &report.errors {
                assert!(
                    e.contains(&name[..8]),
                    "{what}: check reports only the torn {path}: {e}"
                );
            }
            assert!(report.damaged_packs.is_empty(), "{what}: {report:?}");
        }
    }
    assert!(
        !report.affected_snapshots.contains(&t.base),
        "{what}: the earlier snapshot is intact"
    );
    restores(&repo, &t.base, BASE).await;
    if let Ok(snap) = result {
        assert!(torn.is_none());
        restores(&repo, &snap.id, NEXT).await;
    }
    let next = backup(&repo, NEXT)
        .await
        .unwrap_or_else(|e| panic!("{what}: the next backup fails: {e}"));
    restores(&repo, &next.id, NEXT).await;
    if let Some(path) = torn.as_ref().filter(|p| p.starts_with("index/")) {
        // Prune refuses while an index file cannot be read: its packs would look unused.
        let err = repo
            .prune(PruneOptions::default(), &NoProgress)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::PruneUnsafe(_)), "{what}: {err}");
        assert!(err.to_string().contains(&path[6..14]), "{err}");
    }
    if let Some(path) = &torn {
        // The repair: remove the torn object; then everything checks clean.
        storage.delete(path).await.unwrap();
        repo.reload_index().await.unwrap();
    }
    let report = check(&repo).await;
    assert!(
        report.ok(),
        "{what}: check after the next backup: {:?}",
        report.errors
    );
    repo.prune(PruneOptions::default(), &NoProgress)
        .await
        .unwrap_or_else(|e| panic!("{what}: prune fails: {e}"));
    let report = check(&repo).await;
    assert!(
        report.ok(),
        "{what}: check after prune: {:?}",
        report.errors
    );
    restores(&repo, &t.base, BASE).await;
    restores(&repo, &next.id, NEXT).await;
    first
}

/// Whether check saw packs a writer left unindexed (the fault landed mid-backup).
fn left_packs(report: &CheckReport) -> bool {
    report
        .warnings
        .iter()
        .any(|w| w.contains("not in the index"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_any_write() {
    let t = Template::new().await;
    let writes = count_writes(&t).await;
    let mut mid_backup = 0;
    for n in 0..=writes {
        let run = tempfile::tempdir().unwrap();
        let (storage, options) = t.copy(run.path());
        let (result, faulty) = faulty_backup(storage.clone(), &options, Fault::KillAfter(n)).await;
        if n < writes {
            assert!(result.is_err(), "killed after write {n} of {writes}");
            assert!(faulty.killed());
        }
        let what = format!("killed after write {n} of {writes}");
        let report = assert_recovers(&t, storage, run.path(), &result, None, &what).await;
        mid_backup += left_packs(&report) as usize;
    }
    assert!(mid_backup > 0, "some kills left packs behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_write_failing_once() {
    let t = Template::new().await;
    let writes = count_writes(&t).await;
    for n in 1..=writes {
        let run = tempfile::tempdir().unwrap();
        let (storage, options) = t.copy(run.path());
        let (result, _) = faulty_backup(storage.clone(), &options, Fault::FailWrite(n)).await;
        if let Err(e) = &result {
            assert!(
                e.to_string().contains("injected fault"),
                "write {n}: the failure is reported as it was: {e}"
            );
        }
        let what = format!("write {n} of {writes} failing");
        assert_recovers(&t, storage, run.path(), &result, None, &what).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_full_from_any_write() {
    let t = Template::new().await;
    let writes = count_writes(&t).await;
    for n in 1..=writes {
        let run = tempfile::tempdir().unwrap();
        let (storage, options) = t.copy(run.path());
        let (result, _) = faulty_backup(storage.clone(), &options, Fault::FullFrom(n)).await;
        match &result {
            Err(Error::StorageFull { .. }) => {}
            Err(e) => panic!("full from write {n}: not reported as full: {e}"),
            // The last writes are the session marker's removal, which may fail quietly.
            Ok(_) => assert!(
                n == writes,
                "full from write {n} of {writes}, yet committed"
            ),
        }
        if let Err(e) = &result {
            assert!(e.to_string().contains("full"), "{e}");
        }
        // Space is freed: the same storage without the fault.
        let what = format!("full from write {n} of {writes}");
        assert_recovers(&t, storage, run.path(), &result, None, &what).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_at_any_write() {
    let t = Template::new().await;
    let writes = count_writes(&t).await;
    let mut detected = Vec::new();
    for n in 1..=writes {
        let run = tempfile::tempdir().unwrap();
        let (storage, options) = t.copy(run.path());
        let (result, faulty) = faulty_backup(storage.clone(), &options, Fault::TornWrite(n)).await;
        faulty.settled().await;
        assert!(result.is_err(), "torn at write {n} of {writes}");
        let torn = faulty.torn_path();
        assert!(torn.is_some(), "write {n} was torn");
        let what = format!("torn at write {n} of {writes} ({torn:?})");
        let report = assert_recovers(&t, storage, run.path(), &result, torn.clone(), &what).await;
        if !report.ok() {
            detected.extend(torn);
        }
    }
    // Torn metadata (an index file, the snapshot) is found and named by check; torn
    // packs and markers are leftovers nothing references.
    assert!(
        detected.iter().any(|p| p.starts_with("index/")),
        "a torn index file was detected: {detected:?}"
    );
    assert!(
        detected.iter().any(|p| p.starts_with("snapshots/")),
        "a torn snapshot was detected: {detected:?}"
    );
}
