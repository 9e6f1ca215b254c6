//! The repository's key slots under `keys/`: unlocking, listing, adding and removing.
//!
//! Anyone who can write to `keys/` can add a slot, so unlocking never trusts one: names
//! that are not 64 hex digits, objects larger than a slot can be, unparsable JSON and
//! Argon2 costs beyond [`crate::limits::kdf`] are skipped (and reported), and every valid
//! slot of the secret's kind is tried, cheapest first, before the secret is called wrong.

use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;

use crate::crypto::MasterKeys;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::keyslot::{KdfParams, KeySlot, Secret};
use crate::limits;
use crate::object::read_bounded;
use crate::repository::{Repository, to_json};
use crate::storage::Storage;

pub(crate) fn key_path(id: &str) -> String {
    format!("keys/{id}")
}

/// A key slot that cannot be used, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SlotProblem {
    /// The slot's object name under `keys/` (as found; may be anything).
    pub id: String,
    /// What is wrong with it.
    pub problem: String,
}

/// One object under `keys/`: a usable slot or a problem.
#[derive(Clone, Debug)]
pub struct KeyEntry {
    /// The slot's object name under `keys/`.
    pub id: String,
    /// The slot, when it is valid.
    pub slot: Option<KeySlot>,
    /// Why it is not usable, when it is not.
    pub problem: Option<String>,
}

impl KeyEntry {
    /// The first 8 characters of the id, as listings show it (the whole id when shorter).
    pub fn short_id(&self) -> &str {
        short(&self.id)
    }
}

/// The first 8 characters of a key id (all of it when shorter), never splitting a
/// character.
pub fn short(id: &str) -> &str {
    match id.char_indices().nth(8) {
        Some((at, _)) => &id[..at],
        None => id,
    }
}

fn valid_id(name: &str) -> bool {
    name.len() == 64 && name.parse::<Id>().is_ok() && name.bytes().all(|b| !b.is_ascii_uppercase())
}

/// Reads every object under `keys/`, validating each.
async fn read_key_entries(storage: &dyn Storage) -> Result<Vec<KeyEntry>> {
    let listed = storage.list("keys/").await?;
    let reads = futures::stream::iter(listed)
        .map(|o| async move {
            let id = o.path.strip_prefix("keys/").unwrap_or(&o.path).to_string();
            let problem = |p: String| {
                Ok(Some(KeyEntry {
                    id: id.clone(),
                    slot: None,
                    problem: Some(p),
                }))
            };
            if !valid_id(&id) {
                return problem("the name is not 64 lowercase hex digits".into());
            }
            let raw = match read_bounded(storage, &o.path, Some(o.size), limits::MAX_KEY_SLOT).await
            {
                Ok(raw) => raw,
                // Removed after the listing: it is gone, not a problem.
                Err(Error::MissingObject { .. }) => return Ok(None),
                Err(Error::Corrupt { reason, .. }) => return problem(reason),
                Err(e) => return Err(e),
            };
            match KeySlot::parse(&raw) {
                Ok(slot) => Ok(Some(KeyEntry {
                    id,
                    slot: Some(slot),
                    problem: None,
                })),
                Err(p) => problem(p),
            }
        })
        .buffer_unordered(8);
    let mut out: Vec<KeyEntry> = Vec::new();
    futures::pin_mut!(reads);
    while let Some(entry) = reads.next().await {
        out.extend(entry?);
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Finds the slot `secret` opens: (master keys, slot id, slots skipped and why).
pub(crate) async fn unlock(
    storage: &dyn Storage,
    secret: &Secret,
) -> Result<(MasterKeys, String, Vec<SlotProblem>)> {
    let entries = read_key_entries(storage).await?;
    if entries.is_empty() {
        return Err(Error::corrupt("keys/", "the repository has no key slots"));
    }
    let mut problems: Vec<SlotProblem> = entries
        .iter()
        .filter_map(|e| {
            e.problem.as_ref().map(|p| SlotProblem {
                id: e.id.clone(),
                problem: p.clone(),
            })
        })
        .collect();
    let mut candidates: Vec<(String, KeySlot)> = entries
        .into_iter()
        .filter_map(|e| Some((e.id, e.slot?)))
        .filter(|(_, s)| s.kind == secret.kind())
        .collect();
    // Cheapest first: a costly slot (even a hostile one within the limits) is only paid
    // for when no cheaper slot opens.
    candidates.sort_by(|a, b| a.1.cost().cmp(&b.1.cost()).then(a.0.cmp(&b.0)));
    for (id, slot) in candidates {
        let s = secret.clone();
        let opened = tokio::task::spawn_blocking(move || slot.unlock(&s))
            .await
            .map_err(|e| Error::task("deriving a key slot's key", e))?;
        match opened {
            Ok(Some(keys)) => return Ok((keys, id, problems)),
            Ok(None) => {}
            Err(problem) => problems.push(SlotProblem { id, problem }),
        }
    }
    Err(Error::WrongSecret {
        location: storage.location().to_string(),
        skipped: problems.len(),
    })
}

impl Repository {
    /// Every object under `keys/`, valid slots and problems alike, sorted by id.
    pub async fn list_keys(&self) -> Result<Vec<KeyEntry>> {
        read_key_entries(&**self.storage()).await
    }

    /// Adds a key slot for `secret`; returns its id.
    pub async fn add_key(&self, secret: &Secret, kdf: KdfParams) -> Result<String> {
        let keys = self.keys().clone();
        let (s, host, user) = (
            secret.clone(),
            self.open_options().hostname.clone(),
            self.open_options().username.clone(),
        );
        let slot =
            tokio::task::spawn_blocking(move || KeySlot::create(&keys, &s, kdf, &host, &user))
                .await
                .map_err(|e| Error::task("deriving the key slot's key", e))??;
        let id = Id::random().to_hex();
        self.storage()
            .write_new(&key_path(&id), Bytes::from(to_json(&slot)))
            .await?;
        Ok(id)
    }

    /// Removes a key slot (valid or not) by id prefix; refuses the slot in use and the
    /// last valid one. Returns the removed id.
    pub async fn remove_key(&self, prefix: &str) -> Result<String> {
        let entries = self.list_keys().await?;
        let matching: Vec<&KeyEntry> = entries
            .iter()
            .filter(|e| e.id.starts_with(prefix))
            .collect();
        let entry = match matching.as_slice() {
            [] => return Err(Error::KeyNotFound(prefix.into())),
            [one] => *one,
            _ => return Err(Error::AmbiguousKey(prefix.into())),
        };
        if entry.id == self.key_id() {
            return Err(Error::KeyInUse);
        }
        let valid = entries.iter().filter(|e| e.slot.is_some()).count();
        if entry.slot.is_some() && valid <= 1 {
            return Err(Error::LastKey);
        }
        self.storage().delete(&key_path(&entry.id)).await?;
        Ok(entry.id.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids() {
        assert_eq!(short("0123456789"), "01234567");
        assert_eq!(short("abc"), "abc");
        assert_eq!(short(""), "");
        assert_eq!(short("ééééééééé"), "éééééééé");
        assert!(valid_id(&"a".repeat(64)));
        assert!(!valid_id(&"A".repeat(64)));
        assert!(!valid_id("abc"));
    }
}
