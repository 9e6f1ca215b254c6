//! The format's validity limits: what readers accept and `check` enforces. Everything read
//! from a repository is untrusted (any cluster holding a key can add objects), so every
//! size is bounded before it is allocated. docs/format.md lists the same numbers.

/// Largest chunk plaintext (block size and chunker maximum are at most this).
pub const MAX_CHUNK: u32 = 64 << 20;
/// Smallest block size for block volumes.
pub const MIN_BLOCK_SIZE: u32 = 4096;
/// Smallest and largest target pack size.
pub const PACK_SIZE_RANGE: std::ops::RangeInclusive<u32> = 4096..=1 << 30;

/// Largest metadata stream [`Repository::read_stream`](crate::Repository::read_stream)
/// assembles in memory (a manifest can list one chunk many times; the sum is checked
/// against the index before anything is read).
pub const MAX_STREAM: u64 = 4 << 30;

/// Largest stored marker (`coffer.repo`).
pub const MAX_MARKER: u64 = 4 << 10;
/// Largest stored key slot.
pub const MAX_KEY_SLOT: u64 = 64 << 10;
/// Largest plaintext of the config object.
pub const MAX_CONFIG: usize = 64 << 10;
/// Largest plaintext of a snapshot manifest.
pub const MAX_SNAPSHOT: usize = 16 << 20;
/// Largest plaintext of an index file.
pub const MAX_INDEX: usize = 64 << 20;
/// Largest plaintext of a deletion plan.
pub const MAX_DELETIONS: usize = 16 << 20;
/// Largest plaintext of a session marker.
pub const MAX_SESSION: usize = 64 << 10;

/// Argon2id costs a password slot may ask for; a slot beyond them is refused unread, so
/// one hostile slot can neither exhaust memory nor stall every command.
pub mod kdf {
    /// Largest memory cost in KiB (4 GiB).
    pub const MAX_M_COST_KIB: u32 = 4 << 20;
    /// Largest number of passes.
    pub const MAX_T_COST: u32 = 64;
    /// Largest number of lanes.
    pub const MAX_P_COST: u32 = 64;
    /// Largest memory x passes product in KiB (16 GiB: e.g. 4 GiB x 4, 2 GiB x 8,
    /// 64 MiB x 64); this bounds the time one derivation takes.
    pub const MAX_WORK_KIB: u64 = 16 << 20;
}

/// Stored size of a sealed metadata object whose plaintext is at most `plain` bytes
/// (zstd's worst case plus the compression byte and the seal).
pub const fn max_sealed(plain: usize) -> u64 {
    (plain + plain / 128 + 1024 + crate::crypto::SEAL_OVERHEAD) as u64
}

/// Cases the cheap property tests run by default; `PROPTEST_CASES` replaces it.
#[cfg(test)]
const DEFAULT_CASES: u32 = 2000;

/// Property-test settings for a test that runs `cases` cases by default (fewer for
/// costly tests). `PROPTEST_CASES=N` (CI raises it) scales every test alike: a test runs
/// `cases * N / 2000` cases, and never fewer than its default.
#[cfg(test)]
pub(crate) fn proptest_cases(cases: u32) -> proptest::test_runner::Config {
    let mut config = proptest::test_runner::Config::default();
    let scaled = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(cases as u64, |n| n * cases as u64 / DEFAULT_CASES as u64);
    config.cases = scaled.clamp(cases as u64, u32::MAX as u64) as u32;
    config.failure_persistence = None;
    config
}

/// Property-test settings for cheap decoders: 2,000 cases unless `PROPTEST_CASES` says.
#[cfg(test)]
pub(crate) fn proptest_config() -> proptest::test_runner::Config {
    proptest_cases(DEFAULT_CASES)
}
