//! Synthetic index data for measuring the index at scale (100+ million chunks) without
//! storing that much data: index files that describe packs that do not exist. Used by the
//! `index_scale` test and example; nothing else writes such files.

use crate::error::Result;
use crate::id::Id;
use crate::index::{IndexFile, PackRecord};
use crate::pack::{BlobEntry, BlobKind};
use crate::repository::Repository;

/// The id of synthetic chunk `i` (deterministic, uniformly spread like real ids).
pub fn synthetic_chunk_id(i: u64) -> Id {
    Id(*blake3::hash(&i.to_le_bytes()).as_bytes())
}

/// Writes index files describing `chunks` chunks, `per_pack` to a pack, `per_file`
/// chunks to an index file (prune's consolidated files hold 200,000). Returns how many
/// index files were written.
pub async fn write_synthetic_index(
    repo: &Repository,
    chunks: u64,
    per_pack: u64,
    per_file: u64,
) -> Result<usize> {
    let mut files = 0;
    let mut next = 0u64;
    while next < chunks {
        let end = (next + per_file).min(chunks);
        let mut f = IndexFile::default();
        while next < end {
            let n = per_pack.min(end - next);
            let pack =
                Id(*blake3::hash(&[b"pack".as_slice(), &next.to_le_bytes()].concat()).as_bytes());
            let blobs = (0..n)
                .map(|k| BlobEntry {
                    kind: BlobKind::Data,
                    id: synthetic_chunk_id(next + k),
                    offset: (k * 1_100_000) as u32,
                    length: 1_000_000,
                    raw_length: 1_048_576,
                })
                .collect();
            f.packs.push(PackRecord {
                id: pack,
                size: n * 1_100_000,
                blobs,
            });
            next += n;
        }
        repo.write_index_file(&f).await?;
        files += 1;
    }
    Ok(files)
}

/// Resident anonymous memory of this process (heap, stacks; not mapped files), in bytes.
pub fn rss_anon() -> u64 {
    proc_status_kib("RssAnon:") * 1024
}

/// Peak resident memory of this process, in bytes.
pub fn rss_peak() -> u64 {
    proc_status_kib("VmHWM:") * 1024
}

fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
