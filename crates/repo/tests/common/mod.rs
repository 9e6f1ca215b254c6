#![allow(dead_code)]
use coffer_repo::{InitOptions, KdfParams, Location, Repository, Secret};

/// Cheap Argon2 so tests stay fast; the format is the same.
pub fn test_opts() -> InitOptions {
    InitOptions {
        kdf: KdfParams {
            m_cost_kib: 1024,
            t_cost: 1,
            p_cost: 1,
        },
        pack_size: 4 * 1024 * 1024,
        ..InitOptions::default()
    }
}

pub fn secret() -> Secret {
    Secret::Password("correct horse".into())
}

pub async fn new_repo(dir: &std::path::Path) -> Repository {
    // SAFETY: tests set the cache dir once per process before any thread reads it.
    unsafe { std::env::set_var("COFFER_CACHE_DIR", dir.join("cache")) };
    let loc = Location::parse(dir.join("repo").to_str().unwrap()).unwrap();
    Repository::init(&loc, &secret(), test_opts())
        .await
        .unwrap()
}

pub async fn reopen(repo: &Repository) -> Repository {
    Repository::open(repo.location(), &secret()).await.unwrap()
}

pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
