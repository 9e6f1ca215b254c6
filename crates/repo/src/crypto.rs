//! Encryption of every stored object, and the master keys (chunk-id key, data key).
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
//! Key slots ([`crate::keyslot`]) wrap the master keys with a key-encryption key.

use aes_gcm::Aes256Gcm;
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, AeadInOut, KeyInit, Payload};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Result};
use crate::id::Id;

pub(crate) const SEAL_VERSION: u8 = 1;
pub(crate) const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Bytes a sealed object adds to its plaintext.
pub const SEAL_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

/// The AEAD chosen at `repo init`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encryption {
    /// AES-256-GCM with a per-object key (see the module doc).
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
    /// XChaCha20-Poly1305 (24-byte nonces).
    #[serde(rename = "chacha20-poly1305")]
    ChaCha20Poly1305,
}

impl std::str::FromStr for Encryption {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "aes-256-gcm" => Ok(Encryption::Aes256Gcm),
            "chacha20-poly1305" | "xchacha20-poly1305" => Ok(Encryption::ChaCha20Poly1305),
            other => Err(Error::InvalidOption {
                option: "encryption",
                reason: format!("unknown {other:?}: use aes-256-gcm or chacha20-poly1305"),
            }),
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
    /// The AEAD every object is sealed with.
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
    /// Fresh random keys.
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

pub(crate) fn open_with(
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
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&sealed[1..1 + NONCE_LEN]);
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
}
