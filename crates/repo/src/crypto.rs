//! Encryption of every stored object, the chunk-id key, and key slots.
//!
//! Every object (chunk, pack header, index, snapshot, config) is sealed as
//! `[version=1][nonce: 24 bytes][AEAD ciphertext + 16-byte tag]`, with associated data
//! that binds it to its role (a chunk's own id, or the object kind), so that a blob cannot
//! be swapped for another without detection.
//!
//! Nonces are 192-bit random values, so no nonce repeats under one key at any scale:
//! - ChaCha20-Poly1305 is used as XChaCha20-Poly1305, which takes the 24-byte nonce directly.
//! - AES-256-GCM takes only 96-bit nonces, so each object gets its own key:
//!   `BLAKE3-keyed(data_key, nonce)`, and GCM runs with an all-zero nonce under that key.
//!   A key is used once, so nonce reuse cannot happen; key collisions need a 192-bit
//!   nonce collision.
//!
//! Key slots wrap the master keys (chunk-id key, data key) with a key-encryption key
//! from Argon2id (passwords) or BLAKE3 key derivation (raw key files of >= 32 bytes).

use aes_gcm::Aes256Gcm;
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, AeadInOut, KeyInit, Payload};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Result};
use crate::id::Id;

const SEAL_VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Bytes a sealed object adds to its plaintext.
pub const SEAL_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

/// The AEAD chosen at `repo init`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encryption {
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
    #[serde(rename = "chacha20-poly1305")]
    ChaCha20Poly1305,
}

impl std::str::FromStr for Encryption {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "aes-256-gcm" => Ok(Encryption::Aes256Gcm),
            "chacha20-poly1305" | "xchacha20-poly1305" => Ok(Encryption::ChaCha20Poly1305),
            other => Err(Error::Invalid(format!(
                "unknown encryption {other:?}: use aes-256-gcm or chacha20-poly1305"
            ))),
        }
    }
}

impl std::fmt::Display for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Encryption::Aes256Gcm => "aes-256-gcm",
            Encryption::ChaCha20Poly1305 => "chacha20-poly1305",
        })
    }
}

/// The repository's master keys; what a key slot wraps.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct MasterKeys {
    #[zeroize(skip)]
    pub encryption: Encryption,
    /// Keys chunk ids (BLAKE3 keyed hash). Shared with copies of this repository so ids agree.
    #[serde(with = "hex_key")]
    pub chunk_id_key: [u8; 32],
    /// Seals every object.
    #[serde(with = "hex_key")]
    pub data_key: [u8; 32],
}

mod hex_key {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(k: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(k))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut k = [0u8; 32];
        hex::decode_to_slice(&s, &mut k).map_err(serde::de::Error::custom)?;
        Ok(k)
    }
}

impl MasterKeys {
    pub fn generate(encryption: Encryption) -> MasterKeys {
        let mut chunk_id_key = [0u8; 32];
        let mut data_key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut chunk_id_key);
        rand::rngs::OsRng.fill_bytes(&mut data_key);
        MasterKeys {
            encryption,
            chunk_id_key,
            data_key,
        }
    }

    /// The chunk id of `plaintext`.
    pub fn chunk_id(&self, plaintext: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.chunk_id_key, plaintext).as_bytes())
    }

    /// Seals `plaintext` with associated data `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        self.seal_with(aad, plaintext.len(), |out| out.extend_from_slice(plaintext))
    }

    /// Seals the plaintext that `fill` appends to the buffer it is given (about `len`
    /// bytes), encrypting it in place: one allocation and no copy beyond what `fill`
    /// writes.
    pub fn seal_with(&self, aad: &[u8], len: usize, fill: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(SEAL_OVERHEAD + len);
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        fill(&mut out);
        let body = &mut out[1 + NONCE_LEN..];
        let tag = match self.encryption {
            Encryption::ChaCha20Poly1305 => XChaCha20Poly1305::new((&self.data_key).into())
                .encrypt_inout_detached((&nonce).into(), aad, body.into()),
            Encryption::Aes256Gcm => {
                Aes256Gcm::new((&aes_object_key(&self.data_key, &nonce)).into())
                    .encrypt_inout_detached(&[0u8; 12].into(), aad, body.into())
            }
        }
        .expect("AEAD encryption cannot fail for in-memory buffers");
        out.extend_from_slice(&tag);
        out
    }

    /// Opens a sealed object; `Err(reason)` when it is not authentic.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> std::result::Result<Vec<u8>, String> {
        open_with(self.encryption, &self.data_key, aad, sealed)
    }
}

fn aes_object_key(data_key: &[u8; 32], nonce: &[u8; NONCE_LEN]) -> [u8; 32] {
    *blake3::keyed_hash(data_key, nonce).as_bytes()
}

fn open_with(
    encryption: Encryption,
    key: &[u8; 32],
    aad: &[u8],
    sealed: &[u8],
) -> std::result::Result<Vec<u8>, String> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(format!("too short ({} bytes)", sealed.len()));
    }
    if sealed[0] != SEAL_VERSION {
        return Err(format!("unknown seal version {}", sealed[0]));
    }
    let nonce: [u8; NONCE_LEN] = sealed[1..1 + NONCE_LEN].try_into().unwrap();
    let payload = Payload {
        msg: &sealed[1 + NONCE_LEN..],
        aad,
    };
    match encryption {
        Encryption::ChaCha20Poly1305 => {
            XChaCha20Poly1305::new(key.into()).decrypt((&nonce).into(), payload)
        }
        Encryption::Aes256Gcm => Aes256Gcm::new((&aes_object_key(key, &nonce)).into())
            .decrypt(&[0u8; 12].into(), payload),
    }
    .map_err(|_| "authentication failed (wrong key, or the bytes were altered)".to_string())
}

/// Argon2id cost parameters stored in a password key slot.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// 32 MiB, 6 passes, 4 lanes: the same memory-time product as RFC 9106's
    /// memory-constrained option (64 MiB, 3 passes) in half the memory, because every
    /// command unlocks a slot and this is the peak of a small command's memory (restic's
    /// scrypt is calibrated under a similar budget). Far above OWASP's Argon2id floor
    /// (19 MiB, 2 passes). Costs are stored per slot; older slots keep theirs.
    fn default() -> Self {
        KdfParams {
            m_cost_kib: 32 * 1024,
            t_cost: 6,
            p_cost: 4,
        }
    }
}

/// A secret that unlocks a key slot.
#[derive(Clone)]
pub enum Secret {
    Password(String),
    /// Raw key material (a key file or a Kubernetes Secret's bytes), at least 32 bytes.
    KeyFile(Vec<u8>),
}

impl Drop for Secret {
    fn drop(&mut self) {
        match self {
            Secret::Password(p) => p.zeroize(),
            Secret::KeyFile(k) => k.zeroize(),
        }
    }
}

impl Secret {
    pub(crate) fn kind(&self) -> SlotKind {
        match self {
            Secret::Password(_) => SlotKind::Password,
            Secret::KeyFile(_) => SlotKind::KeyFile,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlotKind {
    Password,
    KeyFile,
}

/// A key slot as stored under `keys/`: plaintext JSON with the wrapped master keys.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeySlot {
    pub version: u32,
    pub kind: SlotKind,
    pub created: chrono::DateTime<chrono::Utc>,
    pub hostname: String,
    pub username: String,
    /// Argon2id parameters (password slots only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kdf: Option<KdfParams>,
    /// Hex salt for the KDF.
    pub salt: String,
    /// Hex of the sealed master keys (XChaCha20-Poly1305 under the key-encryption key).
    pub sealed: String,
}

const SLOT_AAD: &[u8] = b"coffer key slot v1";

impl KeySlot {
    /// Wraps `keys` for `secret`.
    pub fn create(keys: &MasterKeys, secret: &Secret, kdf: KdfParams) -> Result<KeySlot> {
        let mut salt = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let kdf = match secret {
            Secret::Password(_) => Some(kdf),
            Secret::KeyFile(_) => None,
        };
        let kek = derive_kek(secret, &salt, kdf)?;
        let plain = serde_json::to_vec(keys).expect("master keys serialize");
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = XChaCha20Poly1305::new((&kek).into())
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: &plain,
                    aad: SLOT_AAD,
                },
            )
            .expect("AEAD encryption cannot fail");
        let mut sealed = vec![SEAL_VERSION];
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ct);
        Ok(KeySlot {
            version: 1,
            kind: secret.kind(),
            created: chrono::Utc::now(),
            hostname: crate::hostname(),
            username: std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
            kdf,
            salt: hex::encode(salt),
            sealed: hex::encode(sealed),
        })
    }

    /// Unwraps the master keys; `Ok(None)` when the secret does not fit this slot.
    pub fn unlock(&self, secret: &Secret) -> Result<Option<MasterKeys>> {
        if self.kind != secret.kind() {
            return Ok(None);
        }
        let salt =
            hex::decode(&self.salt).map_err(|_| Error::corrupt("key slot", "salt is not hex"))?;
        let sealed = hex::decode(&self.sealed)
            .map_err(|_| Error::corrupt("key slot", "sealed keys are not hex"))?;
        let kek = derive_kek(secret, &salt, self.kdf)?;
        match open_with(Encryption::ChaCha20Poly1305, &kek, SLOT_AAD, &sealed) {
            Ok(plain) => {
                let keys: MasterKeys = serde_json::from_slice(&plain)
                    .map_err(|e| Error::corrupt("key slot", format!("bad master keys: {e}")))?;
                Ok(Some(keys))
            }
            Err(_) => Ok(None),
        }
    }
}

fn derive_kek(secret: &Secret, salt: &[u8], kdf: Option<KdfParams>) -> Result<[u8; 32]> {
    match secret {
        Secret::Password(password) => {
            let p = kdf.ok_or_else(|| Error::corrupt("key slot", "password slot without KDF"))?;
            let params = argon2::Params::new(p.m_cost_kib, p.t_cost, p.p_cost, Some(32))
                .map_err(|e| Error::corrupt("key slot", format!("bad Argon2 parameters: {e}")))?;
            let argon =
                argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
            let mut out = [0u8; 32];
            argon
                .hash_password_into(password.as_bytes(), salt, &mut out)
                .map_err(|e| Error::Invalid(format!("key derivation failed: {e}")))?;
            Ok(out)
        }
        Secret::KeyFile(bytes) => {
            if bytes.len() < 32 {
                return Err(Error::Invalid(format!(
                    "key file holds {} bytes; a raw key needs at least 32 random bytes (e.g. `head -c 32 /dev/urandom > key`)",
                    bytes.len()
                )));
            }
            let mut material = Vec::with_capacity(salt.len() + bytes.len());
            material.extend_from_slice(salt);
            material.extend_from_slice(bytes);
            let out = blake3::derive_key("coffer 2026 key-file slot v1", &material);
            material.zeroize();
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_both_algorithms() {
        for enc in [Encryption::Aes256Gcm, Encryption::ChaCha20Poly1305] {
            let keys = MasterKeys::generate(enc);
            let sealed = keys.seal(b"aad", b"hello world");
            assert_eq!(keys.open(b"aad", &sealed).unwrap(), b"hello world");
            assert!(keys.open(b"other", &sealed).is_err(), "aad is bound");
            let mut bad = sealed.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert!(keys.open(b"aad", &bad).is_err(), "tamper detected");
            let other = MasterKeys::generate(enc);
            assert!(other.open(b"aad", &sealed).is_err(), "wrong key detected");
            // Two seals of the same plaintext differ (fresh nonce).
            assert_ne!(keys.seal(b"aad", b"x"), keys.seal(b"aad", b"x"));
        }
    }

    #[test]
    fn key_slots() {
        let keys = MasterKeys::generate(Encryption::Aes256Gcm);
        let cheap = KdfParams {
            m_cost_kib: 256,
            t_cost: 1,
            p_cost: 1,
        };
        let slot = KeySlot::create(&keys, &Secret::Password("pw".into()), cheap).unwrap();
        let got = slot
            .unlock(&Secret::Password("pw".into()))
            .unwrap()
            .unwrap();
        assert_eq!(got.data_key, keys.data_key);
        assert!(
            slot.unlock(&Secret::Password("nope".into()))
                .unwrap()
                .is_none()
        );
        let raw = vec![7u8; 32];
        let kslot = KeySlot::create(&keys, &Secret::KeyFile(raw.clone()), cheap).unwrap();
        assert!(kslot.unlock(&Secret::KeyFile(raw)).unwrap().is_some());
        assert!(
            kslot
                .unlock(&Secret::KeyFile(vec![8u8; 32]))
                .unwrap()
                .is_none()
        );
        assert!(KeySlot::create(&keys, &Secret::KeyFile(vec![1; 5]), cheap).is_err());
    }
}
