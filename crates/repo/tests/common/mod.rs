#![allow(dead_code)]
use std::path::Path;
use std::sync::Arc;

use coffer_repo::{
    InitOptions, KdfParams, Location, OpenOptions, OpendalStorage, Repository, Secret, Storage,
    StorageOptions,
};

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

/// Options with the cache under `dir`.
pub fn client(dir: &Path) -> OpenOptions {
    OpenOptions::new(dir.join("cache"), "test-host", "tester")
}

/// Local storage at `path`.
pub fn local(path: &Path) -> Arc<dyn Storage> {
    let loc = Location::parse(path.to_str().unwrap()).unwrap();
    Arc::new(OpendalStorage::new(&loc, &StorageOptions::default()).unwrap())
}

/// A new repository at `dir/repo`, caching under `dir/cache`.
pub async fn new_repo(dir: &Path) -> Repository {
    Repository::init(
        local(&dir.join("repo")),
        &secret(),
        test_opts(),
        &client(dir),
    )
    .await
    .unwrap()
}

/// The same repository opened again (same storage, same cache).
pub async fn reopen(repo: &Repository) -> Repository {
    Repository::open(repo.storage().clone(), &secret(), repo.open_options())
        .await
        .unwrap()
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
