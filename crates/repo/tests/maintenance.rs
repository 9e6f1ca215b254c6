//! Maintenance: forget and prune reclaim space and keep what snapshots need (also while
//! backups run), check names damaged packs and the snapshots they affect, copy.

mod common;

use bytes::Bytes;
use coffer_repo::progress::NoProgress;
use coffer_repo::{BlobKind, CheckOptions, Id, NewSnapshot, PruneOptions, Repository, Snapshot};
use common::*;

/// Backs up `n` chunks of 500 kB generated from `seeds`; the root lists them.
async fn backup(repo: &Repository, seeds: &[u64]) -> Snapshot {
    let w = repo.writer().await.unwrap();
    let mut root_stream = Vec::new();
    for &s in seeds {
        let a = w
            .add(BlobKind::Data, Bytes::from(pseudo_random(s, 500_000)))
            .await
            .unwrap();
        root_stream.extend_from_slice(&a.id.0);
    }
    let root = w.add_stream(BlobKind::Meta, &root_stream).await.unwrap();
    w.commit(NewSnapshot {
        kind: "test".into(),
        source: format!("seeds-{}", seeds[0]),
        root,
        ..Default::default()
    })
    .await
    .unwrap()
}

/// Reads a snapshot back and compares every chunk with what was written.
async fn verify(repo: &Repository, snap: &Snapshot, seeds: &[u64]) -> coffer_repo::Result<()> {
    let root = repo.read_stream(&snap.root).await?;
    assert_eq!(root.len(), seeds.len() * 32);
    for (i, &s) in seeds.iter().enumerate() {
        let id = Id(root[i * 32..i * 32 + 32].try_into().unwrap());
        let data = repo.read_chunk(&id).await?;
        assert_eq!(data.as_ref(), &pseudo_random(s, 500_000)[..]);
    }
    Ok(())
}

async fn pack_bytes(repo: &Repository) -> u64 {
    repo.storage()
        .list("packs/")
        .await
        .unwrap()
        .iter()
        .map(|o| o.size)
        .sum()
}

#[tokio::test]
async fn forget_and_prune_reclaim_space_and_keep_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let repo = new_repo(dir.path()).await;
    let a_seeds: Vec<u64> = (0..20).collect();
    let b_seeds: Vec<u64> = (10..40).collect(); // shares 10 chunks with a
    let c_seeds: Vec<u64> = (100..120).collect();
    let a = backup(&repo, &a_seeds).await;
    let b = backup(&repo, &b_seeds).await;
    let c = backup(&repo, &c_seeds).await;
    let before = pack_bytes(&repo).await;

    repo.forget_snapshots(&[&a, &c]).await.unwrap();
    let report = repo
        .prune(PruneOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(report.live_sessions, 0);
    assert!(
        report.packs_deleted + report.packs_repacked > 0,
        "{report:?}"
    );
    let after = pack_bytes(&repo).await;
    // a's 10 own chunks and c's 20 are gone: 30 of 50 chunks of ~500 kB.
    assert!(after < before * 6 / 10, "before {before}, after {after}");
    assert!(after >= 30 * 500_000, "b's data is kept: {after}");

    let repo = reopen(&repo).await;
    verify(&repo, &b, &b_seeds).await.unwrap();
    assert!(
        repo.check(
            CheckOptions {
                read_data: Some(1.0),
                ..Default::default()
            },
            &NoProgress
        )
        .await
        .unwrap()
        .ok()
    );
    assert!(repo.storage().list("deletions/").await.unwrap().is_empty());
    // A second prune finds nothing to do.
    let again = repo
        .prune(PruneOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(again.packs_deleted, 0);
}

#[tokio::test]
async fn prune_defers_while_a_backup_runs_and_the_backup_survives() {
    let dir = tempfile::tempdir().unwrap();
    let repo = new_repo(dir.path()).await;
    let seeds: Vec<u64> = (0..12).collect();
    let old = backup(&repo, &seeds).await;
    // A backup starts and dedups against the old snapshot's chunks...
    let w = repo.writer().await.unwrap();
    let mut root_stream = Vec::new();
    for &s in &seeds {
        let a = w
            .add(BlobKind::Data, Bytes::from(pseudo_random(s, 500_000)))
            .await
            .unwrap();
        assert!(!a.new);
        root_stream.extend_from_slice(&a.id.0);
    }
    // ...then the old snapshot is forgotten and pruned while the backup runs.
    repo.forget_snapshots(&[&old]).await.unwrap();
    let report = repo
        .prune(PruneOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(report.live_sessions, 1);
    assert_eq!(
        report.packs_deleted, 0,
        "nothing deleted under a running backup"
    );
    assert!(report.packs_deferred > 0);
    let root = w.add_stream(BlobKind::Meta, &root_stream).await.unwrap();
    let snap = w
        .commit(NewSnapshot {
            kind: "test".into(),
            root,
            ..Default::default()
        })
        .await
        .unwrap();
    // The next prune deletes the old packs; the new snapshot still restores.
    let report = repo
        .prune(PruneOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert!(report.packs_deleted > 0, "{report:?}");
    let repo = reopen(&repo).await;
    verify(&repo, &snap, &seeds).await.unwrap();
    assert!(
        repo.check(
            CheckOptions {
                read_data: Some(1.0),
                ..Default::default()
            },
            &NoProgress
        )
        .await
        .unwrap()
        .ok()
    );
}

#[tokio::test]
async fn damaged_pack_is_named_with_affected_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let repo = new_repo(dir.path()).await;
    let a_seeds: Vec<u64> = (0..10).collect();
    // b shares one chunk (seed 3) with a, stored in the same pack as a's first chunk.
    let b_seeds: Vec<u64> = std::iter::once(3).chain(50..60).collect();
    let a = backup(&repo, &a_seeds).await;
    let b = backup(&repo, &b_seeds).await;
    assert!(
        repo.check(
            CheckOptions {
                read_data: Some(1.0),
                ..Default::default()
            },
            &NoProgress
        )
        .await
        .unwrap()
        .ok()
    );

    // Flip one byte in a data pack holding a's first chunk.
    let root = repo.read_stream(&a.root).await.unwrap();
    let first = Id(root[..32].try_into().unwrap());
    let loc = repo.locate(&first)[0];
    let hex = loc.pack.to_hex();
    let path = dir.path().join("repo/packs").join(&hex[..2]).join(&hex);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[loc.offset as usize + 100] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();

    let structural = repo
        .check(CheckOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert!(
        structural.ok(),
        "a flipped data byte is only seen when reading data"
    );
    let report = repo
        .check(
            CheckOptions {
                read_data: Some(1.0),
                ..Default::default()
            },
            &NoProgress,
        )
        .await
        .unwrap();
    assert!(!report.ok());
    assert_eq!(report.damaged_packs, vec![loc.pack]);
    // Only the blob is bad: b, which needs another chunk of the same pack, is intact.
    assert_eq!(report.affected_snapshots, vec![a.id]);
    let message = report
        .errors
        .iter()
        .find(|e| e.contains(&hex))
        .unwrap_or_else(|| panic!("{:?}", report.errors));
    assert!(
        message.contains(&a.id.short()) && !message.contains(&b.id.short()),
        "{message}"
    );
    let err = verify(&repo, &a, &a_seeds)
        .await
        .expect_err("restore of a fails");
    assert!(err.to_string().contains("damaged"), "{err}");
    verify(&repo, &b, &b_seeds).await.unwrap();

    // Truncation and deletion are found by the structural check, and lose the whole
    // pack: now b is affected too.
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let report = repo
        .check(CheckOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(report.damaged_packs, vec![loc.pack]);
    let mut both = vec![a.id, b.id];
    both.sort();
    let mut affected = report.affected_snapshots.clone();
    affected.sort();
    assert_eq!(affected, both);
    std::fs::remove_file(&path).unwrap();
    let report = repo
        .check(CheckOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert!(
        report.errors.iter().any(|e| e.contains("missing")),
        "{:?}",
        report.errors
    );
    let mut affected = report.affected_snapshots.clone();
    affected.sort();
    assert_eq!(affected, both);
    assert!(verify(&repo, &b, &b_seeds).await.is_err());
}

#[tokio::test]
async fn copy_to_another_repository() {
    let dir = tempfile::tempdir().unwrap();
    let repo = new_repo(dir.path()).await;
    let seeds: Vec<u64> = (0..8).collect();
    let a = backup(&repo, &seeds).await;
    let c = client(dir.path());
    let other = coffer_repo::Secret::Password("other".into());
    let target = repo
        .init_copy_target(local(&dir.path().join("copy")), &other, test_opts(), &c)
        .await
        .unwrap();
    let progress = coffer_repo::progress::Counters::new();
    let report = repo.copy_to(&target, &[], &*progress).await.unwrap();
    assert_eq!(report.copied, vec![a.id]);
    // Progress: one stage per snapshot, every missing chunk counted.
    assert_eq!(progress.position().0, report.chunks_copied);
    assert!(report.chunks_copied > 0);
    let again = repo.copy_to(&target, &[], &NoProgress).await.unwrap();
    assert_eq!(again.skipped, vec![a.id]);
    let target = Repository::open(local(&dir.path().join("copy")), &other, &c)
        .await
        .unwrap();
    let snaps = target.list_snapshots().await.unwrap();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].original, Some(a.id));
    verify(&target, &snaps[0], &seeds).await.unwrap();
    assert!(
        target
            .check(
                CheckOptions {
                    read_data: Some(1.0),
                    ..Default::default()
                },
                &NoProgress
            )
            .await
            .unwrap()
            .ok()
    );
    // A repository not made as a copy target is refused.
    let unrelated = Repository::init(
        local(&dir.path().join("unrelated")),
        &other,
        test_opts(),
        &c,
    )
    .await
    .unwrap();
    let err = repo
        .copy_to(&unrelated, &[], &NoProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(err, coffer_repo::Error::NotACopyTarget(_)),
        "{err}"
    );
}

#[tokio::test]
async fn concurrent_writers_and_prune() {
    let dir = tempfile::tempdir().unwrap();
    let repo = new_repo(dir.path()).await;
    let old_seeds: Vec<u64> = (0..10).collect();
    let old = backup(&repo, &old_seeds).await;
    repo.forget_snapshots(&[&old]).await.unwrap();
    let r1 = repo.clone();
    let r2 = repo.clone();
    let r3 = repo.clone();
    let s1: Vec<u64> = (0..15).collect();
    let s2: Vec<u64> = (5..25).collect();
    let (a, b, p) = tokio::join!(
        async move { backup(&r1, &s1).await },
        async move { backup(&r2, &s2).await },
        async move {
            r3.prune(PruneOptions::default(), &NoProgress)
                .await
                .unwrap()
        },
    );
    let _ = p;
    // A later prune with nothing running cleans up, and everything restores.
    repo.prune(PruneOptions::default(), &NoProgress)
        .await
        .unwrap();
    let repo = reopen(&repo).await;
    verify(&repo, &a, &(0..15).collect::<Vec<_>>())
        .await
        .unwrap();
    verify(&repo, &b, &(5..25).collect::<Vec<_>>())
        .await
        .unwrap();
    let report = repo
        .check(
            CheckOptions {
                read_data: Some(1.0),
                ..Default::default()
            },
            &NoProgress,
        )
        .await
        .unwrap();
    assert!(report.ok(), "{:?}", report.errors);
}
