//! The index's memory stays bounded as the repository grows: a fresh client merges two
//! million index entries (many batches, so the external merge path runs) while its
//! anonymous memory grows by a small, fixed amount, and every lookup still answers.
//! bench/index_scale.sh runs the same at 100 million entries and reports the numbers.

mod common;

use coffer_repo::Repository;
use coffer_repo::scale::{rss_anon, synthetic_chunk_id, write_synthetic_index};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_memory_is_bounded_and_lookups_answer() {
    let dir = tempfile::tempdir().unwrap();
    let repo = new_repo(dir.path()).await;
    let chunks = 2_000_000u64;
    let files = write_synthetic_index(&repo, chunks, 30, 100_000)
        .await
        .unwrap();
    assert_eq!(files, 20);
    drop(repo);

    // A client with an empty cache: everything is merged from the index files.
    let fresh = coffer_repo::OpenOptions::new(dir.path().join("fresh-cache"), "h", "u");
    let before = rss_anon();
    let repo = Repository::open(local(&dir.path().join("repo")), &secret(), &fresh)
        .await
        .unwrap();
    let grown = rss_anon().saturating_sub(before);
    eprintln!(
        "opening with 2,000,000 index entries grew anonymous memory by {} MiB",
        grown >> 20
    );
    // 2 million entries are ~96 MB in the table; holding them in memory would be far
    // more. The merge holds one 200,000-entry batch at a time.
    assert!(
        grown < 80 << 20,
        "anonymous memory grew by {} MiB while opening",
        grown >> 20
    );
    for i in (0..chunks).step_by(9_973) {
        let loc = repo.locate(&synthetic_chunk_id(i));
        assert_eq!(loc.len(), 1, "chunk {i}");
        assert_eq!(loc[0].raw_length, 1_048_576);
    }
    assert!(repo.locate(&synthetic_chunk_id(chunks + 1)).is_empty());
    let stats = repo.stats().await.unwrap();
    assert_eq!(stats.chunks as u64, chunks);
    // Packs do not span index files: 20 files of 100,000 chunks, 30 to a pack.
    assert_eq!(stats.packs as u64, 20 * 100_000u64.div_ceil(30));
}
