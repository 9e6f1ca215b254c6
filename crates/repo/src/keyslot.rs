//! Key slots: the master keys wrapped for one secret, stored as plaintext JSON under
//! `keys/`.
//!
//! A slot's key-encryption key comes from Argon2id (passwords) or BLAKE3 key derivation
//! (raw key files of at least 32 bytes). Slots are not authenticated: anyone who can write
//! to `keys/` can add one, so a slot is validated before any work is spent on it (Argon2
//! costs within [`limits::kdf`](crate::limits::kdf)) and a bad slot is skipped, never
//! fatal, so that it can neither hide a good slot nor lock users out.

use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::crypto::{Encryption, MasterKeys, NONCE_LEN, SEAL_OVERHEAD, SEAL_VERSION, open_with};
use crate::error::{Error, Result};
use crate::limits::kdf as limit;

/// Argon2id cost parameters stored in a password key slot.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes over the memory.
    pub t_cost: u32,
    /// Lanes (parallelism).
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

impl KdfParams {
    /// Whether readers accept these costs; `Err` says which limit they break.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let KdfParams {
            m_cost_kib: m,
            t_cost: t,
            p_cost: p,
        } = *self;
        if !(1..=limit::MAX_P_COST).contains(&p) {
            return Err(format!(
                "Argon2 lanes {p} outside 1..={}",
                limit::MAX_P_COST
            ));
        }
        if !(1..=limit::MAX_T_COST).contains(&t) {
            return Err(format!(
                "Argon2 passes {t} outside 1..={}",
                limit::MAX_T_COST
            ));
        }
        if m < 8 * p || m > limit::MAX_M_COST_KIB {
            return Err(format!(
                "Argon2 memory {m} KiB outside {}..={} KiB",
                8 * p,
                limit::MAX_M_COST_KIB
            ));
        }
        if m as u64 * t as u64 > limit::MAX_WORK_KIB {
            return Err(format!(
                "Argon2 work {m} KiB x {t} passes exceeds {} KiB",
                limit::MAX_WORK_KIB
            ));
        }
        Ok(())
    }
}

/// A secret that unlocks a key slot.
#[derive(Clone)]
pub enum Secret {
    /// A password (Argon2id slots).
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

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Password(_) => f.write_str("Secret::Password(<redacted>)"),
            Secret::KeyFile(k) => write!(f, "Secret::KeyFile(<{} bytes>)", k.len()),
        }
    }
}

impl Secret {
    /// The kind of slot this secret opens.
    pub fn kind(&self) -> SlotKind {
        match self {
            Secret::Password(_) => SlotKind::Password,
            Secret::KeyFile(_) => SlotKind::KeyFile,
        }
    }

    /// Refuses secrets that cannot be a key (a key file shorter than 32 bytes).
    pub fn validate(&self) -> Result<()> {
        match self {
            Secret::KeyFile(k) if k.len() < 32 => Err(Error::KeyFileTooShort { len: k.len() }),
            _ => Ok(()),
        }
    }
}

/// What kind of secret a slot is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlotKind {
    /// A password through Argon2id.
    Password,
    /// Raw key bytes through BLAKE3 key derivation.
    KeyFile,
}

/// A key slot as stored under `keys/`: plaintext JSON with the wrapped master keys.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeySlot {
    /// Slot format version, 1.
    pub version: u32,
    /// The secret's kind.
    pub kind: SlotKind,
    /// When the slot was made.
    pub created: chrono::DateTime<chrono::Utc>,
    /// The machine that made it (informational).
    pub hostname: String,
    /// The user who made it (informational).
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
/// Salt lengths readers accept, in bytes (writers use 32).
const SALT_LEN: std::ops::RangeInclusive<usize> = 16..=64;
/// Sealed master keys: the JSON of two hex keys and the AEAD name is under 256 bytes.
const MAX_SEALED_LEN: usize = 1024;

impl KeySlot {
    /// Wraps `keys` for `secret`; `hostname` and `username` are recorded as who made it.
    pub fn create(
        keys: &MasterKeys,
        secret: &Secret,
        kdf: KdfParams,
        hostname: &str,
        username: &str,
    ) -> Result<KeySlot> {
        secret.validate()?;
        let kdf = match secret {
            Secret::Password(_) => {
                kdf.validate().map_err(|reason| Error::InvalidOption {
                    option: "key derivation costs",
                    reason,
                })?;
                Some(kdf)
            }
            Secret::KeyFile(_) => None,
        };
        let mut salt = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let kek = derive_kek(secret, &salt, kdf).map_err(|reason| Error::InvalidOption {
            option: "key derivation",
            reason,
        })?;
        let plain = serde_json::to_vec(keys).unwrap_or_default();
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
            .unwrap_or_default();
        let mut sealed = vec![SEAL_VERSION];
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ct);
        Ok(KeySlot {
            version: 1,
            kind: secret.kind(),
            created: chrono::Utc::now(),
            hostname: hostname.to_string(),
            username: username.to_string(),
            kdf,
            salt: hex::encode(salt),
            sealed: hex::encode(sealed),
        })
    }

    /// Parses and validates a stored slot; `Err` says why it is unusable.
    pub fn parse(bytes: &[u8]) -> std::result::Result<KeySlot, String> {
        let slot: KeySlot =
            serde_json::from_slice(bytes).map_err(|e| format!("not a key slot: {e}"))?;
        slot.validate()?;
        Ok(slot)
    }

    /// Whether the slot can be tried at bounded cost: version 1, KDF costs within the
    /// limits (password slots), salt and sealed keys of plausible lengths.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.version != 1 {
            return Err(format!("unknown key slot version {}", self.version));
        }
        match (self.kind, &self.kdf) {
            (SlotKind::Password, None) => return Err("password slot without KDF costs".into()),
            (SlotKind::Password, Some(k)) => k.validate()?,
            (SlotKind::KeyFile, _) => {}
        }
        let salt_len = self.salt.len() / 2;
        if !self.salt.len().is_multiple_of(2) || !SALT_LEN.contains(&salt_len) {
            return Err(format!(
                "salt of {} hex digits (expected {}..={} bytes)",
                self.salt.len(),
                SALT_LEN.start(),
                SALT_LEN.end()
            ));
        }
        let sealed_len = self.sealed.len() / 2;
        if !self.sealed.len().is_multiple_of(2)
            || !(SEAL_OVERHEAD..=MAX_SEALED_LEN).contains(&sealed_len)
        {
            return Err(format!("sealed keys of {} hex digits", self.sealed.len()));
        }
        Ok(())
    }

    /// Relative cost of trying the slot (Argon2 memory x passes; 0 for key files), so
    /// that cheap slots are tried first.
    pub fn cost(&self) -> u64 {
        self.kdf
            .map(|k| k.m_cost_kib as u64 * k.t_cost as u64)
            .unwrap_or(0)
    }

    /// Unwraps the master keys: `Ok(Some)` when `secret` opens the slot, `Ok(None)` when
    /// it does not (another slot may), `Err(reason)` when the slot itself is unusable.
    /// Validate first ([`KeySlot::validate`]): costs are not checked again here.
    pub fn unlock(&self, secret: &Secret) -> std::result::Result<Option<MasterKeys>, String> {
        if self.kind != secret.kind() {
            return Ok(None);
        }
        let salt = hex::decode(&self.salt).map_err(|_| "salt is not hex".to_string())?;
        let sealed =
            hex::decode(&self.sealed).map_err(|_| "sealed keys are not hex".to_string())?;
        let mut kek = derive_kek(secret, &salt, self.kdf)?;
        let opened = open_with(Encryption::ChaCha20Poly1305, &kek, SLOT_AAD, &sealed);
        kek.zeroize();
        match opened {
            Ok(mut plain) => {
                let keys = serde_json::from_slice::<MasterKeys>(&plain)
                    .map_err(|e| format!("opens, but holds no master keys: {e}"));
                plain.zeroize();
                keys.map(Some)
            }
            Err(_) => Ok(None),
        }
    }
}

fn derive_kek(
    secret: &Secret,
    salt: &[u8],
    kdf: Option<KdfParams>,
) -> std::result::Result<[u8; 32], String> {
    match secret {
        Secret::Password(password) => {
            let p = kdf.ok_or("password slot without KDF costs")?;
            let params = argon2::Params::new(p.m_cost_kib, p.t_cost, p.p_cost, Some(32))
                .map_err(|e| format!("bad Argon2 parameters: {e}"))?;
            let argon =
                argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
            let mut out = [0u8; 32];
            argon
                .hash_password_into(password.as_bytes(), salt, &mut out)
                .map_err(|e| format!("key derivation failed: {e}"))?;
            Ok(out)
        }
        Secret::KeyFile(bytes) => {
            if bytes.len() < 32 {
                return Err(format!("key file holds only {} bytes", bytes.len()));
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
    use proptest::prelude::*;

    fn cheap() -> KdfParams {
        KdfParams {
            m_cost_kib: 256,
            t_cost: 1,
            p_cost: 1,
        }
    }

    #[test]
    fn key_slots() {
        let keys = MasterKeys::generate(Encryption::Aes256Gcm);
        let slot =
            KeySlot::create(&keys, &Secret::Password("pw".into()), cheap(), "h", "u").unwrap();
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
        let kslot =
            KeySlot::create(&keys, &Secret::KeyFile(raw.clone()), cheap(), "h", "u").unwrap();
        assert!(kslot.unlock(&Secret::KeyFile(raw)).unwrap().is_some());
        assert!(
            kslot
                .unlock(&Secret::KeyFile(vec![8u8; 32]))
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            KeySlot::create(&keys, &Secret::KeyFile(vec![1; 5]), cheap(), "h", "u"),
            Err(Error::KeyFileTooShort { len: 5 })
        ));
        // Round trip through the stored JSON.
        let json = serde_json::to_vec(&slot).unwrap();
        let parsed = KeySlot::parse(&json).unwrap();
        assert!(
            parsed
                .unlock(&Secret::Password("pw".into()))
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn kdf_limits() {
        assert!(KdfParams::default().validate().is_ok());
        let ok = |m, t, p| {
            KdfParams {
                m_cost_kib: m,
                t_cost: t,
                p_cost: p,
            }
            .validate()
        };
        assert!(ok(4 << 20, 4, 4).is_ok(), "4 GiB x 4 passes is allowed");
        assert!(ok((4 << 20) + 1, 1, 1).is_err(), "memory above 4 GiB");
        assert!(ok(u32::MAX, 1, 1).is_err());
        assert!(ok(1 << 20, 65, 1).is_err(), "passes above 64");
        assert!(ok(4 << 20, 5, 1).is_err(), "work above 16 GiB");
        assert!(ok(1024, 1, 0).is_err(), "no lanes");
        assert!(ok(1024, 1, 65).is_err(), "too many lanes");
        assert!(ok(1024, 0, 1).is_err(), "no passes");
        assert!(ok(7, 1, 1).is_err(), "memory below 8 KiB per lane");
        // Creating a slot beyond the limits is refused too.
        let keys = MasterKeys::generate(Encryption::Aes256Gcm);
        let huge = KdfParams {
            m_cost_kib: u32::MAX,
            t_cost: 1,
            p_cost: 1,
        };
        assert!(KeySlot::create(&keys, &Secret::Password("pw".into()), huge, "h", "u").is_err());
    }

    fn valid_slot_json() -> Vec<u8> {
        let keys = MasterKeys::generate(Encryption::ChaCha20Poly1305);
        let slot =
            KeySlot::create(&keys, &Secret::Password("pw".into()), cheap(), "h", "u").unwrap();
        serde_json::to_vec(&slot).unwrap()
    }

    proptest! {
        #![proptest_config(crate::limits::proptest_cases(300))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(slot) = KeySlot::parse(&bytes) {
                // Anything that parses is cheap to try.
                prop_assert!(slot.validate().is_ok());
            }
        }

        #[test]
        fn mutated_slots_error_or_stay_valid(
            flip in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let json = valid_slot_json();
            prop_assert!(KeySlot::parse(&json).is_ok());
            let mut bad = json.clone();
            let i = flip.index(bad.len());
            bad[i] = byte;
            if let Ok(slot) = KeySlot::parse(&bad) {
                prop_assert!(slot.cost() <= limit::MAX_WORK_KIB);
                // Unlocking a mutated but valid slot errors or answers; it never panics.
                let _ = slot.unlock(&Secret::Password("pw".into()));
            }
            let c = cut.index(json.len());
            prop_assert!(KeySlot::parse(&json[..c]).is_err());
        }

        #[test]
        fn huge_costs_are_refused(m in any::<u32>(), t in any::<u32>(), p in any::<u32>()) {
            let json = format!(
                r#"{{"version":1,"kind":"password","created":"2026-01-01T00:00:00Z","hostname":"h","username":"u","kdf":{{"m_cost_kib":{m},"t_cost":{t},"p_cost":{p}}},"salt":"{}","sealed":"{}"}}"#,
                "00".repeat(32),
                "00".repeat(100)
            );
            match KeySlot::parse(json.as_bytes()) {
                Ok(slot) => {
                    let k = slot.kdf.unwrap();
                    prop_assert!(k.m_cost_kib <= limit::MAX_M_COST_KIB);
                    prop_assert!(k.t_cost <= limit::MAX_T_COST && k.p_cost <= limit::MAX_P_COST);
                    prop_assert!(slot.cost() <= limit::MAX_WORK_KIB);
                }
                Err(reason) => prop_assert!(reason.contains("Argon2"), "{}", reason),
            }
        }
    }
}
