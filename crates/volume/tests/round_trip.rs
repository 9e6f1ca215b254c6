//! Backup then restore of a real tree with every kind of entry and metadata: the restored
//! tree equals the source in every detail a restore sets (content, holes, modes, owners,
//! times, xattrs on files, directories and symlinks, hard links, device nodes, fifos,
//! sockets), and restoring again over it changes nothing.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use coffer_repo::progress::Counters;
use coffer_volume::fs::{FsBackup, FsRestore};

/// Everything a restore sets, per path (not ctime or inode numbers).
fn listing(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, PathBuf> = BTreeMap::new();
    for item in walkdir::WalkDir::new(root).sort_by_file_name() {
        let item = item.unwrap();
        let p = item.path();
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        let m = std::fs::symlink_metadata(p).unwrap();
        let ft = m.file_type();
        let what = if ft.is_file() {
            // Hard links: the first path of the inode stands for it.
            let first = inodes.entry(m.ino()).or_insert_with(|| rel.clone()).clone();
            format!(
                "file {:?} sparse={} first={first:?}",
                std::fs::read(p).unwrap(),
                m.blocks() * 512 < m.len()
            )
        } else if ft.is_symlink() {
            format!("symlink {:?}", std::fs::read_link(p).unwrap())
        } else if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_char_device() || ft.is_block_device() {
            format!("dev {}", m.rdev())
        } else if ft.is_fifo() {
            "fifo".to_string()
        } else {
            "socket".to_string()
        };
        let mut xattrs: Vec<(String, Vec<u8>)> = xattr::list(p)
            .unwrap()
            .map(|n| {
                let v = xattr::get(p, &n).unwrap().unwrap_or_default();
                (n.to_string_lossy().into_owned(), v)
            })
            .collect();
        xattrs.sort();
        let times = format!("{}.{:09}", m.mtime(), m.mtime_nsec());
        out.insert(
            rel,
            format!(
                "{what} mode={:o} owner={}:{} nlink={} mtime={times} xattrs={xattrs:?}",
                m.mode(),
                m.uid(),
                m.gid(),
                if ft.is_dir() { 0 } else { m.nlink() }
            ),
        );
    }
    out
}

fn make_source(src: &Path) {
    std::fs::create_dir_all(src.join("dir/deep/er")).unwrap();
    std::fs::write(src.join("dir/a.txt"), b"hello\n").unwrap();
    std::fs::write(src.join("dir/deep/er/b.bin"), vec![7u8; 300_000]).unwrap();
    std::fs::hard_link(src.join("dir/a.txt"), src.join("a-link")).unwrap();
    let sparse = std::fs::File::create(src.join("sparse")).unwrap();
    sparse.set_len(64 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"middle", 32 << 20).unwrap();
    drop(sparse);
    std::fs::write(src.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("dir/a.txt", src.join("sym")).unwrap();
    std::os::unix::fs::symlink("/nowhere/at/all", src.join("dangling")).unwrap();
    // Metadata of every kind of entry.
    xattr::set(src.join("dir"), "user.dir", b"d").unwrap();
    xattr::set(src.join("dir/a.txt"), "user.file", b"f").unwrap();
    xattr::set(src.join("sym"), "trusted.link", b"l").unwrap();
    std::os::unix::fs::chown(src.join("dir/deep"), Some(1234), Some(4321)).unwrap();
    std::os::unix::fs::lchown(src.join("sym"), Some(55), Some(66)).unwrap();
    let node = |name: &str, mode: u32, dev: u64| {
        let c = std::ffi::CString::new(src.join(name).to_str().unwrap()).unwrap();
        // SAFETY: mknod with a NUL-terminated path.
        assert_eq!(
            unsafe { libc::mknod(c.as_ptr(), mode, dev as libc::dev_t) },
            0
        );
    };
    node("null", libc::S_IFCHR | 0o620, libc::makedev(1, 3));
    node("fifo", libc::S_IFIFO | 0o640, 0);
    std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    xattr::set(src.join("fifo"), "trusted.node", b"n").unwrap();
    for (p, mode) in [
        ("dir/deep/er", 0o555),
        ("dir/deep", 0o700),
        ("dir/a.txt", 0o4755),
    ] {
        std::fs::set_permissions(
            src.join(p),
            std::os::unix::fs::PermissionsExt::from_mode(mode),
        )
        .unwrap();
    }
    // Times last, deepest first, as a restore sets them.
    let mut paths: Vec<PathBuf> = walkdir::WalkDir::new(src)
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .collect();
    paths.reverse();
    for (i, p) in paths.iter().enumerate() {
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        let t = libc::timespec {
            tv_sec: 1_600_000_000 + i as i64,
            tv_nsec: 123_456_789,
        };
        // SAFETY: NUL-terminated path, two timespecs.
        let rc = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                [t, t].as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        assert_eq!(rc, 0);
    }
}

#[tokio::test]
async fn every_kind_of_entry_round_trips() {
    let fx = common::Fixture::new().await;
    let src = fx.dir.path().join("src");
    make_source(&src);
    let want = listing(&src);
    let summary = coffer_volume::fs::backup(
        &fx.repo,
        FsBackup {
            source: &src,
            tags: Default::default(),
            parent: None,
            force: false,
            progress: Counters::new(),
        },
    )
    .await
    .unwrap();
    let snap = fx.repo.find_snapshot(&summary.snapshot_id).await.unwrap();
    for round in 0..2 {
        let counters = Counters::new();
        let restored = coffer_volume::fs::restore(
            &fx.repo,
            &snap,
            FsRestore {
                target: &fx.target,
                include: Vec::new(),
                progress: counters.clone(),
            },
        )
        .await
        .unwrap();
        assert!(restored.refused.is_empty(), "{:?}", restored.refused);
        assert!(counters.warnings().is_empty());
        assert_eq!(restored.files, Some(4));
        let got = listing(&fx.target);
        for (p, w) in &want {
            assert_eq!(got.get(p), Some(w), "round {round}: {p:?}");
        }
        assert_eq!(got.len(), want.len(), "round {round}");
    }
    assert!(fx.check(&snap).await.is_empty());
}
