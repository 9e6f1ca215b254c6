//! Restores of crafted file trees: what anyone holding a key of a shared repository can
//! commit. Each escape a tree may attempt (paths out of the target, writes through
//! symlinks, hard links to outside files, symlinks placed outside) is refused with the
//! entry named, nothing outside the target changes (compared byte for byte), the rest of
//! the tree restores, and `check` reports the tree damaged.

mod common;

use std::os::unix::fs::MetadataExt;

use coffer_volume::fs::Kind;
use common::{Fixture, assert_check_names, assert_good_restored, assert_refused, dir_state};

#[tokio::test]
async fn dotdot_paths_are_refused() {
    let fx = Fixture::new().await;
    let before = dir_state(&fx.outside);
    let snap = fx
        .tree()
        .await
        .root()
        .raw(common::entry("../outside", Kind::Dir))
        .file("../outside/victim.txt", b"overwritten\n")
        .await
        .file("../outside/new.txt", b"planted\n")
        .await
        .good_part()
        .await
        .file("good/../../outside/sub/inner.txt", b"overwritten\n")
        .await
        .raw(common::entry("good/..", Kind::Dir))
        .commit()
        .await;
    let (summary, warnings) = fx.restore(&snap).await;
    let bad: [&[u8]; 5] = [
        b"../outside",
        b"../outside/victim.txt",
        b"../outside/new.txt",
        b"good/../../outside/sub/inner.txt",
        b"good/..",
    ];
    assert_refused(&summary, &warnings, &bad);
    assert!(
        summary.refused[0].reason.contains("\"..\""),
        "{:?}",
        summary.refused
    );
    assert_eq!(dir_state(&fx.outside), before);
    assert_good_restored(&fx.target);
    assert_eq!(summary.files, Some(2));
    assert_check_names(&fx.check(&snap).await, &bad);
}

#[tokio::test]
async fn absolute_paths_are_refused() {
    let fx = Fixture::new().await;
    let before = dir_state(&fx.outside);
    let victim = fx.outside_bytes("victim.txt");
    let planted_dir = fx.outside_bytes("planted");
    let mut planted_file = planted_dir.clone();
    planted_file.extend_from_slice(b"/f");
    let snap = fx
        .tree()
        .await
        .root()
        .raw(common::entry(&victim, Kind::File))
        .raw(common::entry(&planted_dir, Kind::Dir))
        .file(&planted_file, b"planted\n")
        .await
        .good_part()
        .await
        .commit()
        .await;
    let (summary, warnings) = fx.restore(&snap).await;
    assert_refused(&summary, &warnings, &[&victim, &planted_dir, &planted_file]);
    assert!(summary.refused[0].reason.contains("absolute"));
    assert_eq!(dir_state(&fx.outside), before);
    assert_good_restored(&fx.target);
    assert_check_names(&fx.check(&snap).await, &[&victim, &planted_dir]);
}

#[tokio::test]
async fn entries_beneath_a_symlink_are_refused() {
    let fx = Fixture::new().await;
    let before = dir_state(&fx.outside);
    let outside = fx.outside_bytes("");
    let snap = fx
        .tree()
        .await
        .root()
        // Valid symlinks (restored as symlinks, never followed)...
        .symlink("esc", &outside)
        // ...and what a tree may try to put through them.
        .file("esc/new.txt", b"planted\n")
        .await
        .raw(common::entry("esc/newdir", Kind::Dir))
        .file("esc/victim.txt", b"overwritten\n")
        .await
        .good_part()
        .await
        .symlink("rel", "../outside/sub")
        .file("rel/inner.txt", b"overwritten\n")
        .await
        .commit()
        .await;
    let (summary, warnings) = fx.restore(&snap).await;
    let bad: [&[u8]; 4] = [
        b"esc/new.txt",
        b"esc/newdir",
        b"esc/victim.txt",
        b"rel/inner.txt",
    ];
    assert_refused(&summary, &warnings, &bad);
    assert!(summary.refused[0].reason.contains("not a directory"));
    assert_eq!(dir_state(&fx.outside), before);
    assert_good_restored(&fx.target);
    // The symlinks themselves are sound entries and restored as they were.
    assert_eq!(
        std::fs::read_link(fx.target.join("esc")).unwrap(),
        fx.outside
    );
    assert_eq!(
        std::fs::read_link(fx.target.join("rel")).unwrap(),
        std::path::Path::new("../outside/sub")
    );
    assert_check_names(&fx.check(&snap).await, &bad);
}

#[tokio::test]
async fn a_file_named_like_an_earlier_symlink_is_refused() {
    let fx = Fixture::new().await;
    let before = dir_state(&fx.outside);
    let victim = fx.outside_bytes("victim.txt");
    let snap = fx
        .tree()
        .await
        .root()
        .good_part()
        .await
        .symlink("victim", &victim)
        .file("victim", b"overwritten\n")
        .await
        .file("zz", b"after\n")
        .await
        .commit()
        .await;
    let (summary, warnings) = fx.restore(&snap).await;
    assert_refused(&summary, &warnings, &[b"victim"]);
    assert!(summary.refused[0].reason.contains("repeats"));
    assert_eq!(dir_state(&fx.outside), before);
    assert_good_restored(&fx.target);
    assert_eq!(
        std::fs::read_link(fx.target.join("victim"))
            .unwrap()
            .as_os_str(),
        fx.outside.join("victim.txt").as_os_str()
    );
    assert_eq!(std::fs::read(fx.target.join("zz")).unwrap(), b"after\n");
    assert_check_names(&fx.check(&snap).await, &[b"victim"]);
}

#[tokio::test]
async fn hard_links_to_outside_files_are_refused() {
    let fx = Fixture::new().await;
    let before = dir_state(&fx.outside);
    let abs = fx.outside_bytes("hard.txt");
    let snap = fx
        .tree()
        .await
        .root()
        .symlink("esc", fx.outside_bytes(""))
        .good_part()
        .await
        .hardlink("h1", "../outside/hard.txt")
        .hardlink("h2", &abs)
        .hardlink("h3", "esc/hard.txt")
        .hardlink("h4", "esc")
        .hardlink("h5", "good")
        .hardlink("h6", "later.txt")
        .hardlink("h7", "good/a.txt")
        .file("later.txt", b"later\n")
        .await
        .commit()
        .await;
    let (summary, warnings) = fx.restore(&snap).await;
    let bad: [&[u8]; 6] = [b"h1", b"h2", b"h3", b"h4", b"h5", b"h6"];
    assert_refused(&summary, &warnings, &bad);
    assert!(summary.refused[0].reason.contains("hard link target"));
    assert_eq!(dir_state(&fx.outside), before);
    assert_good_restored(&fx.target);
    // The one sound link is made, to the file restored in this run.
    let a = std::fs::metadata(fx.target.join("good/a.txt")).unwrap();
    let h7 = std::fs::metadata(fx.target.join("h7")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (h7.ino(), 2));
    for h in ["h1", "h2", "h3", "h4", "h5", "h6"] {
        assert!(std::fs::symlink_metadata(fx.target.join(h)).is_err(), "{h}");
    }
    assert_check_names(&fx.check(&snap).await, &bad);
}

#[tokio::test]
async fn symlinks_whose_own_path_escapes_are_refused() {
    let fx = Fixture::new().await;
    let before = dir_state(&fx.outside);
    let abs = fx.outside_bytes("link");
    let snap = fx
        .tree()
        .await
        .root()
        .symlink("../outside/victim.txt", "/etc/passwd")
        .symlink(&abs, "replaced")
        .good_part()
        .await
        .symlink("good/../../outside/sub", "replaced")
        .symlink("good/./x", "y")
        .commit()
        .await;
    let (summary, warnings) = fx.restore(&snap).await;
    let bad: [&[u8]; 4] = [
        b"../outside/victim.txt",
        &abs,
        b"good/../../outside/sub",
        b"good/./x",
    ];
    assert_refused(&summary, &warnings, &bad);
    assert_eq!(dir_state(&fx.outside), before);
    assert_good_restored(&fx.target);
    assert_check_names(&fx.check(&snap).await, &bad);
}

/// A restore into a target that already holds symlinks and hard links to outside files
/// (what an unsafe restore, or anyone, may have left there) replaces them and never
/// writes through them.
#[tokio::test]
async fn links_already_in_the_target_are_replaced_not_followed() {
    let fx = Fixture::new().await;
    let before = dir_state(&fx.outside);
    std::fs::create_dir_all(&fx.target).unwrap();
    std::os::unix::fs::symlink(fx.outside.join("sub"), fx.target.join("data")).unwrap();
    std::os::unix::fs::symlink(fx.outside.join("victim.txt"), fx.target.join("conf.txt")).unwrap();
    std::os::unix::fs::symlink(&fx.outside, fx.target.join("good")).unwrap();
    std::fs::hard_link(fx.outside.join("hard.txt"), fx.target.join("hl.txt")).unwrap();
    std::os::unix::fs::symlink(fx.outside.join("sub"), fx.target.join("s")).unwrap();
    let snap = fx
        .tree()
        .await
        .root()
        .file("conf.txt", b"new conf\n")
        .await
        .dir("data")
        .file("data/inner.txt", b"new inner\n")
        .await
        .good_part()
        .await
        .file("hl.txt", b"new hl\n")
        .await
        .symlink("s", "elsewhere")
        .commit()
        .await;
    let (summary, warnings) = fx.restore(&snap).await;
    assert_refused(&summary, &warnings, &[]);
    assert_eq!(dir_state(&fx.outside), before);
    assert_good_restored(&fx.target);
    assert!(
        std::fs::symlink_metadata(fx.target.join("data"))
            .unwrap()
            .is_dir()
    );
    assert_eq!(
        std::fs::read(fx.target.join("data/inner.txt")).unwrap(),
        b"new inner\n"
    );
    assert_eq!(
        std::fs::read(fx.target.join("conf.txt")).unwrap(),
        b"new conf\n"
    );
    let hl = std::fs::symlink_metadata(fx.target.join("hl.txt")).unwrap();
    assert!(hl.is_file());
    assert_eq!(hl.nlink(), 1);
    assert_eq!(
        std::fs::read(fx.target.join("hl.txt")).unwrap(),
        b"new hl\n"
    );
    assert_eq!(
        std::fs::read_link(fx.target.join("s")).unwrap(),
        std::path::Path::new("elsewhere")
    );
    assert!(fx.check(&snap).await.is_empty());
}

/// A directory where the snapshot has a file, symlink or hard link is left alone with its
/// contents: that entry is refused, nothing is lost.
#[tokio::test]
async fn a_directory_in_the_way_is_left_alone_and_reported() {
    let fx = Fixture::new().await;
    for d in ["w1", "w2", "w3"] {
        std::fs::create_dir_all(fx.target.join(d)).unwrap();
        std::fs::write(fx.target.join(d).join("keep.txt"), b"keep\n").unwrap();
    }
    let snap = fx
        .tree()
        .await
        .root()
        .good_part()
        .await
        .file("w1", b"a file\n")
        .await
        .symlink("w2", "x")
        .hardlink("w3", "good/a.txt")
        .commit()
        .await;
    let (summary, warnings) = fx.restore(&snap).await;
    assert_refused(&summary, &warnings, &[b"w1", b"w2", b"w3"]);
    for r in &summary.refused {
        assert!(r.reason.contains("directory is in the way"), "{r:?}");
    }
    for d in ["w1", "w2", "w3"] {
        assert_eq!(
            std::fs::read(fx.target.join(d).join("keep.txt")).unwrap(),
            b"keep\n"
        );
    }
    assert_good_restored(&fx.target);
    // The tree itself is sound.
    assert!(fx.check(&snap).await.is_empty());
}

/// Chunk lists that do not fit the file or the repository refuse their file only.
#[tokio::test]
async fn files_with_unusable_chunks_are_refused() {
    let fx = Fixture::new().await;
    let tree = fx
        .tree()
        .await
        .root()
        .good_part()
        .await
        .file("long", b"0123456789")
        .await
        .file("missing", b"abcdefghij")
        .await
        .file("overlap", b"klmnopqrst")
        .await
        .file("past-end", b"uvwxyz")
        .await;
    let mut entries = tree.entries.clone();
    let mut tree = tree;
    // "long" claims its chunk holds 11 bytes; "missing" names a chunk no one stored;
    // "overlap" lists its chunk twice; "past-end" ends beyond its size.
    let at = |entries: &Vec<coffer_volume::fs::Entry>, p: &str| {
        entries.iter().position(|e| e.path == p.as_bytes()).unwrap()
    };
    let i = at(&entries, "long");
    entries[i].chunks[0].len = 11;
    entries[i].size = 11;
    let i = at(&entries, "missing");
    entries[i].chunks[0].id = [7; 32];
    let i = at(&entries, "overlap");
    let c = entries[i].chunks[0].clone();
    entries[i].chunks.push(c);
    let i = at(&entries, "past-end");
    entries[i].size = 3;
    tree.entries = entries;
    let snap = tree.commit().await;
    let (summary, warnings) = fx.restore(&snap).await;
    let bad: [&[u8]; 4] = [b"long", b"missing", b"overlap", b"past-end"];
    assert_refused(&summary, &warnings, &bad);
    let reasons: Vec<&str> = summary.refused.iter().map(|r| r.reason.as_str()).collect();
    assert!(
        reasons[0].contains("holds 10 bytes in the repository"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("not in the repository"), "{reasons:?}");
    assert!(reasons[2].contains("overlaps"), "{reasons:?}");
    assert!(reasons[3].contains("past the file's size"), "{reasons:?}");
    for p in ["long", "missing", "overlap", "past-end"] {
        assert!(std::fs::symlink_metadata(fx.target.join(p)).is_err(), "{p}");
    }
    assert_good_restored(&fx.target);
    let errors = fx.check(&snap).await;
    assert_check_names(&errors, &bad);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("not in the snapshot's reference list")),
        "{errors:#?}"
    );
}

/// `--include` of a damaged tree restores the selection's sound entries and reports only
/// the selection's refused ones.
#[tokio::test]
async fn include_selects_within_a_damaged_tree() {
    let fx = Fixture::new().await;
    let before = dir_state(&fx.outside);
    let snap = fx
        .tree()
        .await
        .root()
        .file("../outside/victim.txt", b"overwritten\n")
        .await
        .good_part()
        .await
        .symlink("good/sub/esc", "../../../outside")
        .file("good/sub/esc/x", b"planted\n")
        .await
        .dir("other")
        .commit()
        .await;
    let (summary, warnings) = fx.restore_include(&snap, vec!["good/sub".into()]).await;
    assert_refused(&summary, &warnings, &[b"good/sub/esc/x"]);
    assert_eq!(dir_state(&fx.outside), before);
    assert_eq!(
        std::fs::read(fx.target.join("good/sub/b.txt")).unwrap(),
        b"good file b\n".repeat(1000)
    );
    assert!(!fx.target.join("good/a.txt").exists());
    assert!(!fx.target.join("other").exists());
}
