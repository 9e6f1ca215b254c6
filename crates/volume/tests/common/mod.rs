//! What the volume tests share: a repository in a temporary directory, trees crafted
//! entry by entry and committed through the repository's writer (as anyone holding a key
//! can), and exact records of a directory's state to prove a restore left it alone.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use coffer_repo::check::CheckOptions;
use coffer_repo::progress::{Counters, NoProgress};
use coffer_repo::{
    BlobKind, InitOptions, KdfParams, Location, NewSnapshot, OpenOptions, OpendalStorage,
    Repository, Secret, Snapshot, SnapshotKind, StorageOptions,
};
use coffer_volume::RestoreSummary;
use coffer_volume::fs::{Entry, FileChunk, FsRestore, Kind};

/// A repository, an empty restore target, and beside the target a directory of files a
/// malicious snapshot would like to change.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub repo: Repository,
    pub target: PathBuf,
    pub outside: PathBuf,
}

impl Fixture {
    pub async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let loc = Location::parse(dir.path().join("repo").to_str().unwrap()).unwrap();
        let storage = Arc::new(OpendalStorage::new(&loc, &StorageOptions::default()).unwrap());
        let client = OpenOptions::new(dir.path().join("cache"), "test-host", "tester");
        let opts = InitOptions {
            kdf: KdfParams {
                m_cost_kib: 1024,
                t_cost: 1,
                p_cost: 1,
            },
            pack_size: 4 * 1024 * 1024,
            ..InitOptions::default()
        };
        let repo = Repository::init(storage, &Secret::Password("pw".into()), opts, &client)
            .await
            .unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(outside.join("sub")).unwrap();
        std::fs::write(outside.join("victim.txt"), b"precious data\n").unwrap();
        std::fs::write(outside.join("hard.txt"), b"linked data\n").unwrap();
        std::fs::write(outside.join("sub/inner.txt"), b"inner data\n").unwrap();
        std::os::unix::fs::symlink("victim.txt", outside.join("link")).unwrap();
        let target = dir.path().join("target");
        Fixture {
            dir,
            repo,
            target,
            outside,
        }
    }

    /// An absolute path below the outside directory, as raw bytes.
    pub fn outside_bytes(&self, rel: &str) -> Vec<u8> {
        let p = if rel.is_empty() {
            self.outside.clone()
        } else {
            self.outside.join(rel)
        };
        p.as_os_str().as_bytes().to_vec()
    }

    /// A tree builder whose chunks go to this repository.
    pub async fn tree(&self) -> TreeBuilder {
        TreeBuilder {
            writer: self.repo.writer().await.unwrap(),
            entries: Vec::new(),
        }
    }

    /// Restores `snap` into the target; returns the summary and the warnings reported.
    pub async fn restore(&self, snap: &Snapshot) -> (RestoreSummary, Vec<(String, String)>) {
        self.restore_include(snap, Vec::new()).await
    }

    pub async fn restore_include(
        &self,
        snap: &Snapshot,
        include: Vec<String>,
    ) -> (RestoreSummary, Vec<(String, String)>) {
        let counters = Counters::new();
        let summary = coffer_volume::fs::restore(
            &self.repo,
            snap,
            FsRestore {
                target: &self.target,
                include,
                progress: counters.clone(),
            },
        )
        .await
        .unwrap();
        (summary, counters.warnings())
    }

    /// Runs `check` with the volume metadata checks; returns its errors, asserting that
    /// they agree with whether `snap` is affected.
    pub async fn check(&self, snap: &Snapshot) -> Vec<String> {
        let report = self
            .repo
            .check(
                CheckOptions {
                    read_data: None,
                    metadata: coffer_volume::metadata_checks(),
                },
                &NoProgress,
            )
            .await
            .unwrap();
        assert_eq!(
            report.affected_snapshots.contains(&snap.id),
            !report.errors.is_empty(),
            "{:?}",
            report.errors
        );
        report.errors
    }
}

/// Asserts that `refused` names exactly `paths` (in tree order) and the warnings too.
pub fn assert_refused(summary: &RestoreSummary, warnings: &[(String, String)], paths: &[&[u8]]) {
    let want: Vec<String> = paths
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let got: Vec<String> = summary.refused.iter().map(|r| r.path.clone()).collect();
    assert_eq!(got, want, "{:#?}", summary.refused);
    let warned: Vec<String> = warnings.iter().map(|w| w.0.clone()).collect();
    assert_eq!(warned.len(), want.len(), "{warnings:?}");
    for w in &want {
        assert!(warned.contains(w), "no warning for {w}: {warnings:?}");
    }
    for r in &summary.refused {
        assert!(!r.reason.is_empty());
    }
}

/// Asserts that every path of `paths` appears in some of check's errors.
pub fn assert_check_names(errors: &[String], paths: &[&[u8]]) {
    assert!(!errors.is_empty(), "check found nothing");
    for p in paths {
        let p = format!("{:?}", String::from_utf8_lossy(p));
        assert!(
            errors.iter().any(|e| e.contains(&p)),
            "check does not name {p}: {errors:#?}"
        );
    }
}

/// Builds a tree entry by entry; files' contents are stored as one chunk each.
pub struct TreeBuilder {
    writer: coffer_repo::Writer,
    pub entries: Vec<Entry>,
}

/// An entry with everything but path and kind plain.
pub fn entry(path: impl AsRef<[u8]>, kind: Kind) -> Entry {
    let type_bits = match kind {
        Kind::Dir => 0o040000,
        Kind::Symlink => 0o120000,
        _ => 0o100000,
    };
    let perm = match kind {
        Kind::Dir => 0o755,
        Kind::Symlink => 0o777,
        _ => 0o644,
    };
    Entry {
        mtime_ns: 1_700_000_000_123_456_789,
        atime_ns: 1_700_000_000_000_000_000,
        ..Entry::new(path.as_ref(), kind, type_bits | perm)
    }
}

impl TreeBuilder {
    pub fn root(mut self) -> Self {
        self.entries.push(entry("", Kind::Dir));
        self
    }
    pub fn dir(mut self, path: impl AsRef<[u8]>) -> Self {
        self.entries.push(entry(path, Kind::Dir));
        self
    }
    pub async fn file(mut self, path: impl AsRef<[u8]>, data: &[u8]) -> Self {
        let mut e = entry(path, Kind::File);
        e.size = data.len() as u64;
        if !data.is_empty() {
            let added = self
                .writer
                .add(BlobKind::Data, Bytes::copy_from_slice(data))
                .await
                .unwrap();
            e.chunks.push(FileChunk {
                offset: 0,
                len: data.len() as u32,
                id: added.id.0,
            });
        }
        self.entries.push(e);
        self
    }
    pub fn symlink(mut self, path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Self {
        let mut e = entry(path, Kind::Symlink);
        e.target = target.as_ref().to_vec();
        self.entries.push(e);
        self
    }
    pub fn hardlink(mut self, path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Self {
        let mut e = entry(path, Kind::Hardlink);
        e.target = target.as_ref().to_vec();
        self.entries.push(e);
        self
    }
    pub fn raw(mut self, e: Entry) -> Self {
        self.entries.push(e);
        self
    }
    /// The usual harmless part of every crafted tree, which must restore whatever else
    /// the tree holds.
    pub async fn good_part(self) -> Self {
        self.dir("good")
            .file("good/a.txt", b"good file a\n")
            .await
            .dir("good/sub")
            .file("good/sub/b.txt", &b"good file b\n".repeat(1000))
            .await
    }
    /// Stores the tree and commits it as an fs snapshot, as a backup would.
    pub async fn commit(self) -> Snapshot {
        let root = self
            .writer
            .add_stream(
                BlobKind::Meta,
                &coffer_volume::fs::encode_tree(&self.entries),
            )
            .await
            .unwrap();
        self.writer
            .commit(NewSnapshot {
                kind: SnapshotKind::Fs,
                source: "/crafted".into(),
                tags: BTreeMap::new(),
                parent: None,
                root,
                summary: serde_json::json!({}),
                time: None,
            })
            .await
            .unwrap()
    }
}

/// Asserts that the harmless part of a crafted tree was restored.
pub fn assert_good_restored(target: &Path) {
    assert_eq!(
        std::fs::read(target.join("good/a.txt")).unwrap(),
        b"good file a\n"
    );
    assert_eq!(
        std::fs::read(target.join("good/sub/b.txt")).unwrap(),
        b"good file b\n".repeat(1000)
    );
    let meta = std::fs::symlink_metadata(target.join("good/a.txt")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o644);
    assert_eq!(meta.mtime_nsec(), 123_456_789);
}

/// One path's state: everything a restore could change through a symlink, a hard link
/// or a bad path (type, content, link target, mode, owner, link count, times, xattrs).
#[derive(Debug, PartialEq, Eq)]
pub struct PathState {
    kind: String,
    content: Vec<u8>,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u64,
    mtime_ns: i128,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The state of every path under `root` (and `root` itself), symlinks not followed.
pub fn dir_state(root: &Path) -> BTreeMap<PathBuf, PathState> {
    let mut out = BTreeMap::new();
    for item in walkdir::WalkDir::new(root).follow_links(false) {
        let item = item.unwrap();
        let p = item.path();
        let m = std::fs::symlink_metadata(p).unwrap();
        let ft = m.file_type();
        let (kind, content) = if ft.is_symlink() {
            (
                "symlink",
                std::fs::read_link(p)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
            )
        } else if ft.is_file() {
            ("file", std::fs::read(p).unwrap())
        } else if ft.is_dir() {
            ("dir", Vec::new())
        } else {
            ("other", Vec::new())
        };
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = xattr::list(p)
            .map(|names| {
                names
                    .filter_map(|n| {
                        let v = xattr::get(p, &n).ok()??;
                        Some((n.as_bytes().to_vec(), v))
                    })
                    .collect()
            })
            .unwrap_or_default();
        xattrs.sort();
        out.insert(
            p.strip_prefix(root).unwrap().to_path_buf(),
            PathState {
                kind: kind.into(),
                content,
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                nlink: m.nlink(),
                mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
                xattrs,
            },
        );
    }
    out
}
