//! Repository statistics: how much is stored, and how much deduplication saves.

use std::collections::HashSet;

use serde::Serialize;

use crate::error::Result;
use crate::repository::Repository;

/// What `stats` reports.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepoStats {
    /// Snapshots.
    pub snapshots: usize,
    /// Packs in the index.
    pub packs: usize,
    /// Bytes of all packs (what the repository occupies, besides small metadata).
    pub pack_bytes: u64,
    /// Distinct chunks.
    pub chunks: usize,
    /// Plaintext bytes of all distinct chunks.
    pub unique_bytes: u64,
    /// Stored bytes of all distinct chunks (after compression and encryption).
    pub stored_bytes: u64,
    /// Sum of the snapshots' logical sizes (their `bytes_total`), when they record it.
    pub logical_bytes: u64,
    /// logical_bytes / stored_bytes.
    pub dedup_ratio: f64,
    /// unique_bytes / stored_bytes.
    pub compression_ratio: f64,
}

impl Repository {
    /// Counts snapshots, packs and chunks, and the savings of dedup and compression.
    pub async fn stats(&self) -> Result<RepoStats> {
        self.reload_index().await?;
        let table = self.index();
        let mut s = RepoStats {
            packs: table.pack_count(),
            pack_bytes: table.packs().map(|(_, size)| size).sum(),
            ..Default::default()
        };
        let mut seen = HashSet::new();
        for (id, loc) in table.iter() {
            if seen.insert(id) {
                s.unique_bytes += loc.raw_length as u64;
                s.stored_bytes += loc.length as u64;
            }
        }
        s.chunks = seen.len();
        let snaps = self.list_snapshots().await?;
        s.snapshots = snaps.len();
        s.logical_bytes = snaps
            .iter()
            .filter_map(|x| x.summary.get("bytes_total").and_then(|v| v.as_u64()))
            .sum();
        if s.stored_bytes > 0 {
            s.dedup_ratio = s.logical_bytes as f64 / s.stored_bytes as f64;
            s.compression_ratio = s.unique_bytes as f64 / s.stored_bytes as f64;
        }
        Ok(s)
    }
}

/// Bytes in binary units, as people read them ("1.5 GiB", "12 B").
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
