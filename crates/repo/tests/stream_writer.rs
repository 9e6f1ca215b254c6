//! A metadata stream written in pieces is stored as exactly the chunks of the same bytes
//! written whole (so it dedups with them), and reads back byte for byte.

mod common;

use coffer_repo::{BlobKind, ChunkerParams, InitOptions, NewSnapshot, Repository, StreamWriter};
use common::*;
use proptest::prelude::*;

/// Small chunks, so that a few hundred KiB make many of them.
async fn small_chunk_repo(dir: &std::path::Path) -> Repository {
    let opts = InitOptions {
        chunker: ChunkerParams {
            min: 2048,
            avg: 8192,
            max: 32768,
        },
        ..test_opts()
    };
    Repository::init(local(&dir.join("repo")), &secret(), opts, &client(dir))
        .await
        .unwrap()
}

/// Lines of varying length with repeats, like a catalog: not random, so that cut points
/// fall at content the pieces split in many places.
fn catalog_like(lines: usize, seed: u64) -> Vec<u8> {
    let noise = pseudo_random(seed, lines * 8);
    let mut out = Vec::new();
    for i in 0..lines {
        let n = noise[i * 8] as usize;
        out.extend_from_slice(
            format!(
                "{{\"entry\":{{\"kind\":\"ConfigMap\",\"name\":\"cm-{i:06}\",\"pad\":\"{}\"}}}}\n",
                "x".repeat(n)
            )
            .as_bytes(),
        );
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn pieces_make_the_chunks_of_the_whole(
        lines in 1usize..6000,
        seed in any::<u64>(),
        piece_sizes in proptest::collection::vec(1usize..70_000, 1..40),
    ) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let repo = small_chunk_repo(dir.path()).await;
            let data = catalog_like(lines, seed);
            let w = repo.writer().await.unwrap();
            let whole = w.add_stream(BlobKind::Meta, &data).await.unwrap();
            let mut s = StreamWriter::new(&w, BlobKind::Meta);
            let mut at = 0;
            let mut k = 0;
            while at < data.len() {
                let n = piece_sizes[k % piece_sizes.len()].min(data.len() - at);
                s.write(&data[at..at + n]).await.unwrap();
                at += n;
                k += 1;
            }
            assert_eq!(s.len(), data.len() as u64);
            let pieces = s.finish().await.unwrap();
            assert_eq!(pieces, whole, "the same chunks whatever the pieces");
            w.commit(NewSnapshot {
                kind: "test".into(),
                source: "/catalog".into(),
                root: pieces.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
            assert_eq!(reopen(&repo).await.read_stream(&pieces).await.unwrap(), data);
        });
    }
}

#[tokio::test]
async fn an_empty_stream_has_no_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let repo = small_chunk_repo(dir.path()).await;
    let w = repo.writer().await.unwrap();
    let s = StreamWriter::new(&w, BlobKind::Meta);
    assert!(s.is_empty());
    assert_eq!(s.finish().await.unwrap(), Vec::new());
    assert_eq!(w.add_stream(BlobKind::Meta, b"").await.unwrap(), Vec::new());
    w.abort().await;
}
