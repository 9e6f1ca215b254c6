//! Key slots are untrusted: anyone with write access to `keys/` can add one. A hostile
//! slot beside a good one neither locks users out nor costs them its KDF price: slots
//! beyond the cost limits are refused unread, unusable ones are skipped and reported
//! (by `list_keys`, `key_slot_problems` and `check`), and the cheapest slots are tried
//! first, so the good slot opens without deriving the hostile one.

mod common;

use bytes::Bytes;
use coffer_repo::progress::{Counters, NoProgress};
use coffer_repo::scale::rss_peak;
use coffer_repo::{CheckOptions, Error, Repository, Secret};
use common::*;

fn slot_json(m: u64, t: u64, p: u64, sealed_bytes: usize) -> Vec<u8> {
    format!(
        r#"{{"version":1,"kind":"password","created":"2026-01-01T00:00:00Z","hostname":"evil","username":"evil","kdf":{{"m_cost_kib":{m},"t_cost":{t},"p_cost":{p}}},"salt":"{}","sealed":"{}"}}"#,
        "ab".repeat(32),
        "cd".repeat(sealed_bytes)
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_key_slots_are_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let repo = new_repo(dir.path()).await;
    let storage = repo.storage().clone();
    let huge = "f".repeat(64);
    let costly = "e".repeat(64);
    let garbage = "d".repeat(64);
    let cheap_junk = "0".repeat(64);
    // Costs beyond every limit: refused unread.
    storage
        .write_new(
            &format!("keys/{huge}"),
            Bytes::from(slot_json(u32::MAX as u64, u32::MAX as u64, 1, 100)),
        )
        .await
        .unwrap();
    // Within the limits but 4 GiB x 4 passes: only ever tried after cheaper slots.
    storage
        .write_new(
            &format!("keys/{costly}"),
            Bytes::from(slot_json(4 << 20, 4, 4, 100)),
        )
        .await
        .unwrap();
    // Not JSON at all.
    storage
        .write_new(
            &format!("keys/{garbage}"),
            Bytes::from_static(b"\x00\xffnot json"),
        )
        .await
        .unwrap();
    // Cheaper than the good slot, so tried first, and it does not open: skipped.
    storage
        .write_new(
            &format!("keys/{cheap_junk}"),
            Bytes::from(slot_json(64, 1, 1, 100)),
        )
        .await
        .unwrap();
    // A name that is not an id (listings used to slice the first 8 characters).
    storage
        .write_new("keys/x", Bytes::from_static(b"{}"))
        .await
        .unwrap();

    let before = rss_peak();
    let opened = Repository::open(storage.clone(), &secret(), &client(dir.path()))
        .await
        .unwrap();
    // The 4 GiB slot was never derived: peak memory stayed far below it.
    assert!(
        rss_peak() < before + (1 << 30),
        "peak memory grew from {} to {} MiB",
        before >> 20,
        rss_peak() >> 20
    );
    assert_eq!(opened.key_id(), repo.key_id());
    let problems: Vec<(String, String)> = opened
        .key_slot_problems()
        .iter()
        .map(|p| (p.id.clone(), p.problem.clone()))
        .collect();
    let problem_of = |id: &str| {
        problems
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| panic!("slot {id} is reported: {problems:?}"))
    };
    assert!(problem_of(&huge).contains("Argon2"), "{problems:?}");
    assert!(
        problem_of(&garbage).contains("not a key slot"),
        "{problems:?}"
    );
    assert!(problem_of("x").contains("64"), "{problems:?}");
    assert!(
        !problems.iter().any(|(i, _)| i == &costly),
        "the costly slot is valid and was not tried: {problems:?}"
    );

    // list_keys shows every object, with the problems.
    let entries = opened.list_keys().await.unwrap();
    assert_eq!(entries.len(), 6);
    assert!(entries.iter().any(|e| e.id == "x" && e.short_id() == "x"));
    assert_eq!(
        entries.iter().filter(|e| e.slot.is_some()).count(),
        3,
        "good, costly and cheap junk parse"
    );

    // check reports them as warnings, not errors.
    let progress = Counters::new();
    let report = opened
        .check(CheckOptions::default(), &*progress)
        .await
        .unwrap();
    assert!(report.ok(), "{:?}", report.errors);
    for id in [&huge[..8], &garbage[..8], "x"] {
        assert!(
            report.warnings.iter().any(|w| w.contains(id)),
            "check names slot {id}: {:?}",
            report.warnings
        );
    }
    assert!(progress.warnings().len() >= 3);

    // A slot can be removed by its (odd) name; the last valid slot cannot.
    assert_eq!(opened.remove_key("x").await.unwrap(), "x");
    opened.remove_key(&huge).await.unwrap();
    opened.remove_key(&garbage).await.unwrap();
    opened.remove_key(&costly).await.unwrap();
    opened.remove_key(&cheap_junk).await.unwrap();
    assert!(matches!(
        opened.remove_key(repo.key_id()).await.unwrap_err(),
        Error::KeyInUse
    ));

    // A wrong password still says so, and counts what it skipped.
    storage
        .write_new("keys/y", Bytes::from_static(b"junk"))
        .await
        .unwrap();
    let err = Repository::open(
        storage.clone(),
        &Secret::Password("wrong".into()),
        &client(dir.path()),
    )
    .await
    .err()
    .unwrap();
    assert!(
        matches!(err, Error::WrongSecret { skipped: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("wrong password"), "{err}");
}

#[tokio::test]
async fn every_slot_of_the_kind_is_tried() {
    let dir = tempfile::tempdir().unwrap();
    let repo = new_repo(dir.path()).await;
    // A second password and a key file; the first slot is tried and does not open.
    let second = Secret::Password("second".into());
    let kdf = test_opts().kdf;
    repo.add_key(&second, kdf).await.unwrap();
    let key = Secret::KeyFile(vec![9u8; 32]);
    repo.add_key(&key, kdf).await.unwrap();
    for s in [secret(), second, key] {
        Repository::open(repo.storage().clone(), &s, &client(dir.path()))
            .await
            .unwrap();
    }
    let report = repo
        .check(CheckOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert!(report.ok() && report.warnings.is_empty(), "{report:?}");
}
