//! Chunks, streams and snapshots round trip byte for byte; dedup within and across
//! sessions; wrong secrets, missing and existing repositories are told apart.

mod common;

use bytes::Bytes;
use coffer_repo::{BlobKind, Error, NewSnapshot, Repository, Secret};
use common::*;

#[tokio::test]
async fn chunks_round_trip_and_dedup() {
    let dir = tempfile::tempdir().unwrap();
    let repo = new_repo(dir.path()).await;
    let w = repo.writer().await.unwrap();
    let mut ids = Vec::new();
    for i in 0..40u64 {
        let data = pseudo_random(i, 300_000);
        let a = w.add(BlobKind::Data, Bytes::from(data)).await.unwrap();
        assert!(a.new);
        ids.push(a.id);
    }
    let again = w
        .add(BlobKind::Data, Bytes::from(pseudo_random(3, 300_000)))
        .await
        .unwrap();
    assert!(!again.new, "same data in one session dedups");
    let meta = b"metadata stream".repeat(1000);
    let root = w.add_stream(BlobKind::Meta, &meta).await.unwrap();
    let snap = w
        .commit(NewSnapshot {
            kind: "test".into(),
            source: "/src".into(),
            root: root.clone(),
            ..Default::default()
        })
        .await
        .unwrap();

    let repo2 = reopen(&repo).await;
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            repo2.read_chunk(id).await.unwrap().as_ref(),
            &pseudo_random(i as u64, 300_000)[..]
        );
    }
    assert_eq!(repo2.read_stream(&root).await.unwrap(), meta);
    // A stream listing one chunk over and over is refused before it is read.
    let repeated = vec![root[0]; 1000];
    let err = repo2
        .read_stream_limited(&repeated, 10 << 20)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::StreamTooLarge { .. }), "{err}");
    let listed = repo2.list_snapshots().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, snap.id);
    assert_eq!(
        repo2
            .find_snapshot(&snap.id.to_hex()[..8])
            .await
            .unwrap()
            .id,
        snap.id
    );
    let needed = repo2.snapshot_chunks(&listed[0]).await.unwrap();
    for id in &ids {
        assert!(needed.contains(id));
    }

    // A second session dedups against the index.
    let w2 = repo2.writer().await.unwrap();
    let a = w2
        .add(BlobKind::Data, Bytes::from(pseudo_random(5, 300_000)))
        .await
        .unwrap();
    assert!(!a.new);
    assert!(w2.reuse(&ids[7]));
    assert!(!w2.reuse(&coffer_repo::Id::random()));
    w2.commit(NewSnapshot {
        kind: "test".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    // No session markers remain after commits.
    assert!(repo2.storage().list("sessions/").await.unwrap().is_empty());
}

#[tokio::test]
async fn wrong_password_and_missing_repo() {
    let dir = tempfile::tempdir().unwrap();
    let repo = new_repo(dir.path()).await;
    let c = client(dir.path());
    let err = Repository::open(repo.storage().clone(), &Secret::Password("nope".into()), &c)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, Error::WrongSecret { skipped: 0, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("wrong password"), "{err}");
    let missing = local(&dir.path().join("nothing"));
    let err = Repository::open(missing, &secret(), &c)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::NotARepository(_)), "{err}");
    let err = Repository::init(repo.storage().clone(), &secret(), test_opts(), &c)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::AlreadyExists(_)), "{err}");
    let err = Repository::open(repo.storage().clone(), &Secret::KeyFile(vec![1; 8]), &c)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::KeyFileTooShort { len: 8 }), "{err}");
}

#[tokio::test]
async fn damaged_index_cache_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let repo = new_repo(dir.path()).await;
    let w = repo.writer().await.unwrap();
    let mut ids = Vec::new();
    for i in 0..20u64 {
        let a = w
            .add(BlobKind::Data, Bytes::from(pseudo_random(i, 10_000)))
            .await
            .unwrap();
        ids.push(a.id);
    }
    w.commit(NewSnapshot::default()).await.unwrap();
    let cache = dir.path().join("cache").join(repo.config().id.to_hex());
    let table = || {
        std::fs::read_dir(&cache)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("table-")
            })
            .expect("a cached table")
    };
    let reads_back = |repo: Repository| {
        let ids = ids.clone();
        async move {
            for (i, id) in ids.iter().enumerate() {
                assert_eq!(
                    repo.read_chunk(id).await.unwrap().as_ref(),
                    &pseudo_random(i as u64, 10_000)[..]
                );
            }
        }
    };
    reads_back(reopen(&repo).await).await;

    // Truncated: refused at open and rebuilt from the repository.
    let t = table();
    let bytes = std::fs::read(&t).unwrap();
    std::fs::write(&t, &bytes[..bytes.len() - 7]).unwrap();
    reads_back(reopen(&repo).await).await;

    // A flipped bit in an entry: caught by the checksum (small tables are verified at
    // open) and rebuilt.
    let t = table();
    let mut bytes = std::fs::read(&t).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0x10;
    std::fs::write(&t, &bytes).unwrap();
    reads_back(reopen(&repo).await).await;
    assert_ne!(std::fs::read(table()).unwrap(), bytes);

    // A pointer naming a file outside the cache, or garbage: ignored, rebuilt.
    std::fs::write(
        cache.join("current"),
        br#"{"table":"../../etc/passwd","sources":[]}"#,
    )
    .unwrap();
    reads_back(reopen(&repo).await).await;
    std::fs::write(cache.join("current"), b"\x00garbage").unwrap();
    reads_back(reopen(&repo).await).await;
}
