//! Measures the index at scale: writes synthetic index files for N chunks (default 100
//! million; packs and data are not stored), then opens the repository with an empty
//! cache and reports the time to merge, the memory it took, the table's size and the
//! lookup rate. `bench/index_scale.sh` runs it and records the numbers.
//!
//!     cargo run --release -p coffer-repo --example index_scale -- [CHUNKS] [DIR]

use std::sync::Arc;
use std::time::Instant;

use coffer_repo::scale::{rss_anon, rss_peak, synthetic_chunk_id, write_synthetic_index};
use coffer_repo::{
    InitOptions, KdfParams, Location, OpenOptions, OpendalStorage, Repository, Secret,
    StorageOptions,
};

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // As the coffer binary does (see crates/cli/src/main.rs): large buffers are mapped
    // and returned to the system when freed.
    // SAFETY: tunes the allocator before any allocation-heavy work.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
    let mut args = std::env::args().skip(1);
    let chunks: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000_000);
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| "index-scale".into()));
    let secret = Secret::Password("index-scale".into());
    let dir = std::path::absolute(&dir)?;
    let loc = Location::parse(dir.join("repo").to_str().unwrap_or_default())?;
    let storage = Arc::new(OpendalStorage::new(&loc, &StorageOptions::default())?);
    if !dir.join("repo").exists() {
        let repo = Repository::init(
            storage.clone(),
            &secret,
            InitOptions {
                kdf: KdfParams {
                    m_cost_kib: 1024,
                    ..KdfParams::default()
                },
                ..InitOptions::default()
            },
            &OpenOptions::new(dir.join("cache-write"), "bench", "bench"),
        )
        .await?;
        let t = Instant::now();
        let files = write_synthetic_index(&repo, chunks, 30, 200_000).await?;
        eprintln!(
            "wrote {files} index files for {chunks} chunks in {:.1}s",
            t.elapsed().as_secs_f64()
        );
    }
    let cache = dir.join(format!("cache-{}", std::process::id()));
    let anon_before = rss_anon();
    let t = Instant::now();
    let repo = Repository::open(
        storage,
        &secret,
        &OpenOptions::new(&cache, "bench", "bench"),
    )
    .await?;
    let open_s = t.elapsed().as_secs_f64();
    let anon_after = rss_anon();
    let peak = rss_peak();
    // The cache holds one directory per repository.
    let table_bytes: u64 = std::fs::read_dir(&cache)?
        .flatten()
        .filter_map(|d| std::fs::read_dir(d.path()).ok())
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("table-"))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum();
    let lookups = 1_000_000u64;
    let t = Instant::now();
    let mut found = 0u64;
    for k in 0..lookups {
        let i = (k * 2_654_435_761) % chunks;
        found += repo.locate(&synthetic_chunk_id(i)).len() as u64;
    }
    let lookup_s = t.elapsed().as_secs_f64();
    assert_eq!(found, lookups, "every synthetic chunk is found");
    println!(
        "chunks={chunks} open_s={open_s:.1} anon_growth_mib={} anon_after_mib={} peak_rss_mib={} table_mib={} lookups_per_s={:.0}",
        (anon_after.saturating_sub(anon_before)) >> 20,
        anon_after >> 20,
        peak >> 20,
        table_bytes >> 20,
        lookups as f64 / lookup_s
    );
    std::fs::remove_dir_all(&cache)?;
    Ok(())
}
