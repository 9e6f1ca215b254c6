//! Opening and creating a repository: the marker, the config, and the handle
//! ([`Repository`]) every other operation hangs off.
//!
//! The library reads nothing from the process environment: the caller hands in the
//! storage (any [`Storage`]), the secret, and [`OpenOptions`] (cache directory, the host
//! and user names recorded in snapshots and key slots).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::compression::Compression;
use crate::crypto::{Encryption, MasterKeys};
use crate::error::{Error, Result};
use crate::id::{ChunkId, Id};
use crate::index_table::{ChunkLocation, IndexTable};
use crate::keys::SlotProblem;
use crate::keyslot::{KdfParams, KeySlot, Secret};
use crate::limits;
use crate::object::{ObjectKind, read_bounded, read_object, seal_object};
use crate::storage::{Location, Storage};

/// The repository format this code reads and writes.
pub const FORMAT_VERSION: u32 = 1;
pub(crate) const MARKER: &str = "coffer.repo";
pub(crate) const CONFIG: &str = "config";

/// FastCDC v2020 sizes for files and metadata streams.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkerParams {
    /// Smallest chunk (except a stream's last).
    pub min: u32,
    /// Average chunk size the cut points aim at.
    pub avg: u32,
    /// Largest chunk.
    pub max: u32,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            min: 256 * 1024,
            avg: 1024 * 1024,
            max: 4 * 1024 * 1024,
        }
    }
}

impl ChunkerParams {
    /// Whether FastCDC accepts these sizes and chunks stay within [`limits::MAX_CHUNK`]:
    /// `64 <= min <= avg <= max`, `avg >= 256`, `1024 <= max <= MAX_CHUNK`.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let ChunkerParams { min, avg, max } = *self;
        if min < 64 || avg < 256 || max < 1024 || min > avg || avg > max || max > limits::MAX_CHUNK
        {
            return Err(format!(
                "chunker sizes min {min}, avg {avg}, max {max}: need 64 <= min <= avg <= max, avg >= 256, 1024 <= max <= {}",
                limits::MAX_CHUNK
            ));
        }
        Ok(())
    }
}

/// Settings fixed at `repo init`, stored sealed in `config`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RepoConfig {
    /// Format version, [`FORMAT_VERSION`].
    pub version: u32,
    /// The repository's random id (also in the marker; names the local cache).
    pub id: Id,
    /// When the repository was made.
    pub created: DateTime<Utc>,
    /// The AEAD of every object.
    pub encryption: Encryption,
    /// "zstd:LEVEL" or "none".
    pub compression: String,
    /// Content-defined chunking sizes.
    pub chunker: ChunkerParams,
    /// Block size for block volumes.
    pub block_size: u32,
    /// Target size of pack objects.
    pub pack_size: u32,
    /// Objects younger than this many days are never deleted (forget/prune refuse).
    #[serde(default)]
    pub immutable_days: u32,
}

impl RepoConfig {
    /// The chunk compression (validated when the config is read).
    pub fn compression(&self) -> Compression {
        self.compression.parse().unwrap_or(Compression::Zstd(3))
    }

    /// Whether every setting is within the format's limits.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.version != FORMAT_VERSION {
            return Err(format!("config version {}", self.version));
        }
        self.compression
            .parse::<Compression>()
            .map_err(|e| e.to_string())?;
        self.chunker.validate()?;
        validate_block_size(self.block_size)?;
        if !limits::PACK_SIZE_RANGE.contains(&self.pack_size) {
            return Err(format!("pack size {} out of range", self.pack_size));
        }
        Ok(())
    }
}

fn validate_block_size(b: u32) -> std::result::Result<(), String> {
    if !(limits::MIN_BLOCK_SIZE..=limits::MAX_CHUNK).contains(&b) || !b.is_power_of_two() {
        return Err(format!(
            "block size {b}: a power of two from {} to {}",
            limits::MIN_BLOCK_SIZE,
            limits::MAX_CHUNK
        ));
    }
    Ok(())
}

/// The plaintext marker that says "this is a Coffer repository" before any key is known.
#[derive(Serialize, Deserialize)]
struct Marker {
    format: String,
    version: u32,
    id: Id,
}

/// Options for [`Repository::init`].
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// The AEAD of every object.
    pub encryption: Encryption,
    /// Chunk compression.
    pub compression: Compression,
    /// Block size for block volumes (a power of two, 4 KiB to 64 MiB).
    pub block_size: u32,
    /// Target pack size (4 KiB to 1 GiB).
    pub pack_size: u32,
    /// Content-defined chunking sizes.
    pub chunker: ChunkerParams,
    /// Argon2id costs of the first key slot (password secrets).
    pub kdf: KdfParams,
    /// Immutability period in days (0: none).
    pub immutable_days: u32,
    /// Chunk-id key to share with another repository (copy targets), so ids agree.
    pub chunk_id_key: Option<[u8; 32]>,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            encryption: Encryption::Aes256Gcm,
            compression: Compression::Zstd(3),
            block_size: 1024 * 1024,
            pack_size: 32 * 1024 * 1024,
            chunker: ChunkerParams::default(),
            kdf: KdfParams::default(),
            immutable_days: 0,
            chunk_id_key: None,
        }
    }
}

/// What the caller tells the library about where it runs: nothing is read from the
/// process environment.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Root of the local cache; each repository uses `<cache_dir>/<repository id>/`.
    pub cache_dir: PathBuf,
    /// Recorded in snapshots, key slots and session markers.
    pub hostname: String,
    /// Recorded in key slots.
    pub username: String,
}

impl OpenOptions {
    /// Options with the given cache root and names.
    pub fn new(
        cache_dir: impl Into<PathBuf>,
        hostname: impl Into<String>,
        username: impl Into<String>,
    ) -> OpenOptions {
        OpenOptions {
            cache_dir: cache_dir.into(),
            hostname: hostname.into(),
            username: username.into(),
        }
    }
}

/// An open repository. Cheap to clone.
#[derive(Clone)]
pub struct Repository {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub storage: Arc<dyn Storage>,
    pub keys: MasterKeys,
    pub config: RepoConfig,
    pub key_id: String,
    pub cache_dir: PathBuf,
    pub client: OpenOptions,
    pub index: RwLock<Arc<IndexTable>>,
    /// Key slots skipped while unlocking, and why.
    pub slot_problems: Vec<SlotProblem>,
}

impl Repository {
    /// Creates a repository in `storage`, unlocked by `secret`.
    pub async fn init(
        storage: Arc<dyn Storage>,
        secret: &Secret,
        opts: InitOptions,
        client: &OpenOptions,
    ) -> Result<Repository> {
        secret.validate()?;
        let location = storage.location().to_string();
        if storage.stat(MARKER).await?.is_some() {
            return Err(Error::AlreadyExists(location));
        }
        validate_block_size(opts.block_size).map_err(|reason| Error::InvalidOption {
            option: "block size",
            reason,
        })?;
        opts.chunker
            .validate()
            .map_err(|reason| Error::InvalidOption {
                option: "chunker sizes",
                reason,
            })?;
        if !limits::PACK_SIZE_RANGE.contains(&opts.pack_size) {
            return Err(Error::InvalidOption {
                option: "pack size",
                reason: format!(
                    "{} bytes: from {} to {}",
                    opts.pack_size,
                    limits::PACK_SIZE_RANGE.start(),
                    limits::PACK_SIZE_RANGE.end()
                ),
            });
        }
        let mut keys = MasterKeys::generate(opts.encryption);
        if let Some(k) = opts.chunk_id_key {
            keys.chunk_id_key = k;
        }
        let config = RepoConfig {
            version: FORMAT_VERSION,
            id: Id::random(),
            created: Utc::now(),
            encryption: opts.encryption,
            compression: opts.compression.to_string(),
            chunker: opts.chunker,
            block_size: opts.block_size,
            pack_size: opts.pack_size,
            immutable_days: opts.immutable_days,
        };
        let slot = {
            let (keys, secret, kdf) = (keys.clone(), secret.clone(), opts.kdf);
            let (host, user) = (client.hostname.clone(), client.username.clone());
            tokio::task::spawn_blocking(move || KeySlot::create(&keys, &secret, kdf, &host, &user))
                .await
                .map_err(|e| Error::task("deriving the key slot's key", e))??
        };
        let key_id = Id::random().to_hex();
        storage
            .write_new(&crate::keys::key_path(&key_id), Bytes::from(to_json(&slot)))
            .await?;
        let sealed = seal_object(&keys, ObjectKind::Config, &to_json(&config));
        storage.write_new(CONFIG, Bytes::from(sealed)).await?;
        // The marker goes last: a repository is complete once it exists.
        let marker = Marker {
            format: "coffer".into(),
            version: FORMAT_VERSION,
            id: config.id,
        };
        storage
            .write_new(MARKER, Bytes::from(to_json(&marker)))
            .await?;
        Ok(Self::assemble(
            storage,
            keys,
            config,
            key_id,
            client,
            Vec::new(),
        ))
    }

    /// Opens the repository in `storage` with `secret`. Key slots that are invalid are
    /// skipped (see [`Repository::key_slot_problems`]); every slot of the secret's kind is
    /// tried, cheapest first, before the secret is called wrong.
    pub async fn open(
        storage: Arc<dyn Storage>,
        secret: &Secret,
        client: &OpenOptions,
    ) -> Result<Repository> {
        secret.validate()?;
        let location = storage.location().to_string();
        let marker = match read_bounded(&*storage, MARKER, None, limits::MAX_MARKER).await {
            Ok(b) => b,
            Err(Error::MissingObject { .. }) => return Err(Error::NotARepository(location)),
            Err(e) => return Err(e),
        };
        let marker: Marker = serde_json::from_slice(&marker)
            .map_err(|e| Error::corrupt(MARKER, format!("not valid JSON: {e}")))?;
        if marker.format != "coffer" {
            return Err(Error::NotARepository(location));
        }
        if marker.version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                location,
                found: marker.version,
                supported: FORMAT_VERSION,
            });
        }
        let (keys, key_id, problems) = crate::keys::unlock(&*storage, secret).await?;
        let (_, plain) = read_object(&*storage, &keys, ObjectKind::Config, CONFIG, None).await?;
        let config: RepoConfig = serde_json::from_slice(&plain)
            .map_err(|e| Error::corrupt(CONFIG, format!("bad JSON: {e}")))?;
        config
            .validate()
            .map_err(|reason| Error::corrupt(CONFIG, reason))?;
        if config.encryption != keys.encryption {
            return Err(Error::corrupt(
                CONFIG,
                "its encryption differs from the key slot's",
            ));
        }
        if config.id != marker.id {
            return Err(Error::corrupt(MARKER, "its id differs from the config's"));
        }
        let repo = Self::assemble(storage, keys, config, key_id, client, problems);
        repo.reload_index().await?;
        Ok(repo)
    }

    fn assemble(
        storage: Arc<dyn Storage>,
        keys: MasterKeys,
        config: RepoConfig,
        key_id: String,
        client: &OpenOptions,
        slot_problems: Vec<SlotProblem>,
    ) -> Repository {
        let cache_dir = client.cache_dir.join(config.id.to_hex());
        Repository {
            inner: Arc::new(Inner {
                storage,
                keys,
                config,
                key_id,
                cache_dir,
                client: client.clone(),
                index: RwLock::new(Arc::new(IndexTable::empty())),
                slot_problems,
            }),
        }
    }

    /// Settings fixed at init.
    pub fn config(&self) -> &RepoConfig {
        &self.inner.config
    }

    /// Where the repository is.
    pub fn location(&self) -> &Location {
        self.inner.storage.location()
    }

    /// The storage the repository lives in.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.storage
    }

    /// The options the repository was opened with.
    pub fn open_options(&self) -> &OpenOptions {
        &self.inner.client
    }

    pub(crate) fn keys(&self) -> &MasterKeys {
        &self.inner.keys
    }

    /// The key slot this session unlocked with.
    pub fn key_id(&self) -> &str {
        &self.inner.key_id
    }

    /// Key slots skipped while opening (unparsable, costs beyond the limits, bad names),
    /// with the reason: `key list` and `check` report them.
    pub fn key_slot_problems(&self) -> &[SlotProblem] {
        &self.inner.slot_problems
    }

    /// Keyed BLAKE3 of `data`: the id it has (or would have) in this repository.
    pub fn chunk_id(&self, data: &[u8]) -> ChunkId {
        self.inner.keys.chunk_id(data)
    }

    /// The master keys' chunk-id key, to initialise copy targets whose ids agree.
    pub fn chunk_id_key(&self) -> [u8; 32] {
        self.inner.keys.chunk_id_key
    }

    pub(crate) fn index(&self) -> Arc<IndexTable> {
        self.inner
            .index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_index(&self, table: IndexTable) {
        *self.inner.index.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
    }

    /// Where a chunk is stored, if the index knows it.
    pub fn locate(&self, id: &ChunkId) -> Vec<ChunkLocation> {
        self.index().lookup(id)
    }
}

/// JSON of the repository's own types (which always serialise).
pub(crate) fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config() -> RepoConfig {
        RepoConfig {
            version: 1,
            id: Id::random(),
            created: Utc::now(),
            encryption: Encryption::Aes256Gcm,
            compression: "zstd:3".into(),
            chunker: ChunkerParams::default(),
            block_size: 1 << 20,
            pack_size: 32 << 20,
            immutable_days: 0,
        }
    }

    #[test]
    fn config_validation() {
        assert!(config().validate().is_ok());
        let mut c = config();
        c.block_size = 3000;
        assert!(c.validate().is_err());
        let mut c = config();
        c.chunker.max = u32::MAX;
        assert!(c.validate().is_err(), "FastCDC would panic on this");
        let mut c = config();
        c.compression = "lz4".into();
        assert!(c.validate().is_err());
        let mut c = config();
        c.pack_size = 0;
        assert!(c.validate().is_err());
    }

    proptest! {
        #![proptest_config(crate::limits::proptest_config())]

        #[test]
        fn config_json_round_trips(
            min in 64u32..100_000, extra in 0u32..100_000, more in 0u32..1_000_000,
            bs in 12u32..=26, level in -7i32..=22, days in any::<u32>(),
        ) {
            let mut c = config();
            c.chunker = ChunkerParams { min, avg: (min + extra).max(256), max: (min + extra + more).max(1024) };
            c.block_size = 1 << bs;
            c.compression = format!("zstd:{level}");
            c.immutable_days = days;
            prop_assert!(c.validate().is_ok());
            let back: RepoConfig = serde_json::from_slice(&to_json(&c)).unwrap();
            prop_assert!(back.validate().is_ok());
            prop_assert_eq!(to_json(&back), to_json(&c));
        }

        #[test]
        fn markers_round_trip(id in any::<[u8; 32]>(), version in any::<u32>()) {
            let m = Marker { format: "coffer".into(), version, id: Id(id) };
            let back: Marker = serde_json::from_slice(&to_json(&m)).unwrap();
            prop_assert_eq!((back.format, back.version, back.id), (m.format, m.version, m.id));
        }

        #[test]
        fn config_and_marker_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(c) = serde_json::from_slice::<RepoConfig>(&bytes) {
                let _ = c.validate();
            }
            let _ = serde_json::from_slice::<Marker>(&bytes);
        }

        #[test]
        fn mutated_configs_error_or_validate(at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut json = to_json(&config());
            let i = at.index(json.len());
            json[i] = byte;
            if let Ok(c) = serde_json::from_slice::<RepoConfig>(&json)
                && c.validate().is_ok()
            {
                // Whatever validates is usable by the chunker without panicking.
                let data = vec![7u8; 10_000];
                let p = c.chunker;
                let _ = fastcdc::v2020::FastCDC::new(&data, p.min, p.avg, p.max).count();
            }
        }
    }
}
