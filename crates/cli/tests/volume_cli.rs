//! The data mover through the real `coffer` binary: round trips, incremental backups,
//! changed ranges, delta restore, integrity, crash safety and user errors.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let env = Env {
            dir: tempfile::tempdir().unwrap(),
        };
        let out = env.coffer(&[
            "repo",
            "init",
            "--kdf-memory-kib",
            "1024",
            "--pack-size-mib",
            "4",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        env
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_coffer"));
        c.args(args)
            .env("COFFER_REPO", self.path("repo"))
            .env("COFFER_PASSWORD", "pw")
            .env("COFFER_CACHE_DIR", self.path("cache"))
            .stdin(Stdio::null());
        c
    }
    fn coffer(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }
    fn ok_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.coffer(args);
        assert!(
            out.status.success(),
            "coffer {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    }
}

fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

const MIB: usize = 1024 * 1024;

/// A 24 MiB image: zero runs, random data and text, in 1 MiB-aligned runs.
fn make_image(path: &Path) -> Vec<u8> {
    let mut img = vec![0u8; 24 * MIB];
    img[2 * MIB..6 * MIB].copy_from_slice(&pseudo_random(1, 4 * MIB));
    let text = b"the quick brown fox jumps over the lazy dog\n".repeat(4 * MIB / 44 + 1);
    img[10 * MIB..14 * MIB].copy_from_slice(&text[..4 * MIB]);
    img[20 * MIB..21 * MIB].copy_from_slice(&pseudo_random(2, MIB));
    std::fs::write(path, &img).unwrap();
    img
}

#[test]
fn block_round_trip_changed_ranges_and_delta() {
    let env = Env::new();
    let img_path = env.path("disk.img");
    let mut img = make_image(&img_path);
    let img_s = img_path.to_str().unwrap();
    let first = env.ok_json(&["volume", "backup", img_s, "--json"]);
    assert_eq!(first["bytes_total"], 24 * MIB as u64);
    assert_eq!(first["parent"], serde_json::Value::Null);
    let first_id = first["snapshot_id"].as_str().unwrap().to_string();

    // Unchanged re-backup stores (almost) nothing.
    let again = env.ok_json(&["volume", "backup", img_s, "--parent", "auto", "--json"]);
    assert_eq!(again["parent"].as_str().unwrap(), first_id);
    assert!(again["bytes_new"].as_u64().unwrap() < 4096, "{again}");
    // The image file is unchanged (size, times, inode): it is not even read...
    assert_eq!(again["bytes_read"], 0, "{again}");
    // ...unless --force says so; then every block is read and still nothing is new.
    let forced = env.ok_json(&[
        "volume", "backup", img_s, "--parent", "auto", "--force", "--json",
    ]);
    assert_eq!(forced["bytes_read"], again["bytes_total"], "{forced}");
    assert!(forced["bytes_new"].as_u64().unwrap() < 4096, "{forced}");

    // Change 3 small ranges in 2 blocks; only those blocks are read.
    for (off, seed) in [
        (3 * MIB + 100, 7u64),
        (3 * MIB + 5000, 8),
        (12 * MIB + 77, 9),
    ] {
        img[off..off + 1000].copy_from_slice(&pseudo_random(seed, 1000));
    }
    std::fs::write(&img_path, &img).unwrap();
    let ranges = env.path("ranges.json");
    std::fs::write(
        &ranges,
        format!(
            r#"[{{"offset":{},"length":1000}},{{"offset":{},"length":1000}},{{"offset":{},"length":1000}}]"#,
            3 * MIB + 100,
            3 * MIB + 5000,
            12 * MIB + 77
        ),
    )
    .unwrap();
    let inc = env.ok_json(&[
        "volume",
        "backup",
        img_s,
        "--parent",
        "auto",
        "--changed-ranges",
        ranges.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(inc["bytes_read"], 2 * MIB as u64, "{inc}");
    assert_eq!(inc["bytes_total"], 24 * MIB as u64);
    let inc_id = inc["snapshot_id"].as_str().unwrap().to_string();

    // Full restore: byte for byte, and sparse.
    let out = env.path("restored.img");
    env.ok_json(&[
        "volume",
        "restore",
        &inc_id,
        "--target",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(std::fs::read(&out).unwrap(), img);
    let allocated = std::fs::metadata(&out).unwrap().blocks() * 512;
    assert!(
        allocated <= 10 * MIB as u64,
        "zero blocks left as holes: {allocated} bytes allocated"
    );

    // Delta restore of the first snapshot onto the changed image writes only 2 blocks.
    let d = env.ok_json(&[
        "volume", "restore", &first_id, "--target", img_s, "--delta", "--json",
    ]);
    assert_eq!(d["blocks_changed"], 2, "{d}");
    assert_eq!(d["bytes_written"], 2 * MIB as u64);
    let orig = make_image(&env.path("orig.img"));
    assert_eq!(std::fs::read(&img_path).unwrap(), orig);

    // diff reports the two changed blocks.
    let diff = env.ok_json(&["diff", &first_id, &inc_id, "--json"]);
    assert_eq!(
        diff,
        serde_json::json!([{"offset": 3 * MIB, "length": MIB}, {"offset": 12 * MIB, "length": MIB}])
    );

    // Dedup across volumes: a copy of the image adds nothing.
    std::fs::copy(env.path("orig.img"), env.path("copy.img")).unwrap();
    let copy = env.ok_json(&[
        "volume",
        "backup",
        env.path("copy.img").to_str().unwrap(),
        "--json",
    ]);
    assert!(copy["bytes_new"].as_u64().unwrap() < 4096, "{copy}");
}

type Row = (String, u32, u32, u32, u64, i64, Vec<u8>, Option<String>);

fn tree_listing(root: &Path) -> Vec<Row> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.unwrap();
        let m = e.path().symlink_metadata().unwrap();
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let content = if m.is_file() {
            std::fs::read(e.path()).unwrap()
        } else {
            Vec::new()
        };
        let link = std::fs::read_link(e.path())
            .ok()
            .map(|l| l.to_string_lossy().into_owned());
        out.push((
            rel,
            m.mode(),
            m.uid(),
            m.gid(),
            m.nlink(),
            m.mtime(),
            content,
            link,
        ));
    }
    out
}

#[test]
fn fs_round_trip_with_metadata_and_incremental() {
    let env = Env::new();
    let src = env.path("src");
    let d = src.join("dir/ünïcødé ☃");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    std::fs::write(d.join("small.txt"), b"hello").unwrap();
    std::fs::write(src.join("big.bin"), pseudo_random(3, 3 * MIB + 17)).unwrap();
    let long = "n".repeat(255);
    std::fs::write(src.join(&long), b"long name").unwrap();
    let mut deep = src.clone();
    for i in 0..30 {
        deep = deep.join(format!("level-{i:02}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("leaf"), b"deep").unwrap();
    std::fs::hard_link(src.join("big.bin"), src.join("big.link")).unwrap();
    std::os::unix::fs::symlink("dir/ünïcødé ☃/small.txt", src.join("sym")).unwrap();
    let sparse = std::fs::File::create(src.join("sparse")).unwrap();
    sparse.set_len(1 << 30).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"middle", 1 << 29).unwrap();
    drop(sparse);
    // Holes only; a small file with a leading hole; the same contents under two names
    // (one chunk written to two files); a read-only file (its mode is set after writing).
    std::fs::File::create(src.join("hollow"))
        .unwrap()
        .set_len(MIB as u64)
        .unwrap();
    let small_sparse = std::fs::File::create(src.join("small-sparse")).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&small_sparse, b"tail", 500 << 10).unwrap();
    drop(small_sparse);
    std::fs::write(src.join("twin-a"), pseudo_random(9, 40_000)).unwrap();
    std::fs::write(src.join("twin-b"), pseudo_random(9, 40_000)).unwrap();
    std::fs::write(src.join("read-only"), b"frozen").unwrap();
    std::fs::set_permissions(
        src.join("read-only"),
        std::os::unix::fs::PermissionsExt::from_mode(0o444),
    )
    .unwrap();
    xattr::set(d.join("small.txt"), "user.colour", b"blue").unwrap();
    xattr::set(d.join("small.txt"), "trusted.secret", b"s").unwrap();
    std::os::unix::fs::chown(d.join("small.txt"), Some(1234), Some(4321)).unwrap();
    std::fs::set_permissions(
        src.join("empty"),
        std::os::unix::fs::PermissionsExt::from_mode(0o4751),
    )
    .unwrap();
    let fifo = std::ffi::CString::new(src.join("fifo").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);

    let first = env.ok_json(&["volume", "backup", src.to_str().unwrap(), "--json"]);
    assert!(
        first["bytes_read"].as_u64().unwrap() < 4 * MIB as u64,
        "sparse holes are not read: {first}"
    );
    let out = env.path("out");
    env.ok_json(&[
        "volume",
        "restore",
        "latest",
        "--target",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(tree_listing(&src), tree_listing(&out));
    let r_small = out.join("dir/ünïcødé ☃/small.txt");
    assert_eq!(
        xattr::get(&r_small, "user.colour").unwrap().unwrap(),
        b"blue"
    );
    assert_eq!(
        xattr::get(&r_small, "trusted.secret").unwrap().unwrap(),
        b"s"
    );
    let (a, b) = (
        std::fs::metadata(out.join("big.bin")).unwrap(),
        std::fs::metadata(out.join("big.link")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "hard link restored as a link");
    let sp = std::fs::metadata(out.join("sparse")).unwrap();
    assert!(
        sp.blocks() * 512 < 4 * MIB as u64,
        "sparse file stays sparse"
    );

    // Incremental: only the changed file is read.
    std::fs::write(d.join("small.txt"), b"changed!").unwrap();
    let inc = env.ok_json(&[
        "volume",
        "backup",
        src.to_str().unwrap(),
        "--parent",
        "auto",
        "--json",
    ]);
    assert_eq!(inc["bytes_read"], 8, "{inc}");
    let out2 = env.path("out2");
    env.ok_json(&[
        "volume",
        "restore",
        "latest",
        "--target",
        out2.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(tree_listing(&src), tree_listing(&out2));

    // --include restores a subset.
    let out3 = env.path("out3");
    env.ok_json(&[
        "volume",
        "restore",
        "latest",
        "--target",
        out3.to_str().unwrap(),
        "--include",
        "dir/**",
        "--json",
    ]);
    assert!(out3.join("dir/ünïcødé ☃/small.txt").exists());
    assert!(!out3.join("big.bin").exists());
}

#[test]
fn damaged_pack_check_and_restore_errors() {
    let env = Env::new();
    let a = env.path("a.img");
    let b = env.path("b.img");
    std::fs::write(&a, pseudo_random(11, 3 * MIB)).unwrap();
    std::fs::write(&b, pseudo_random(12, 3 * MIB)).unwrap();
    let sa = env.ok_json(&["volume", "backup", a.to_str().unwrap(), "--json"]);
    let sb = env.ok_json(&["volume", "backup", b.to_str().unwrap(), "--json"]);
    let sa_id = sa["snapshot_id"].as_str().unwrap();
    let mut packs: Vec<PathBuf> = walkdir::WalkDir::new(env.path("repo/packs"))
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    packs.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let victim = packs.last().unwrap().clone(); // a 3 MiB data pack of one of the two
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[1000] ^= 0x40;
    std::fs::write(&victim, &bytes).unwrap();
    let victim_name = victim.file_name().unwrap().to_str().unwrap().to_string();

    let out = env.coffer(&["check", "--read-data"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&victim_name), "names the pack: {stderr}");
    let out_ok = env.coffer(&["check"]);
    assert!(
        out_ok.status.success(),
        "structure is intact: {}",
        String::from_utf8_lossy(&out_ok.stderr)
    );

    // Exactly one snapshot is affected; it fails to restore, the other restores.
    let last = stderr.lines().last().unwrap_or("");
    let (bad, good, good_src) = if last.contains(&sa_id[..8]) {
        (
            sa_id.to_string(),
            sb["snapshot_id"].as_str().unwrap().to_string(),
            &b,
        )
    } else {
        (
            sb["snapshot_id"].as_str().unwrap().to_string(),
            sa_id.to_string(),
            &a,
        )
    };
    assert!(!last.contains(&good[..8]), "{last}");
    let r = env.coffer(&[
        "volume",
        "restore",
        &bad,
        "--target",
        env.path("bad.img").to_str().unwrap(),
    ]);
    assert!(!r.status.success());
    let msg = String::from_utf8_lossy(&r.stderr);
    assert!(
        msg.contains("damaged") && msg.trim().lines().count() == 1,
        "one clear line: {msg}"
    );
    let g = env.coffer(&[
        "volume",
        "restore",
        &good,
        "--target",
        env.path("good.img").to_str().unwrap(),
    ]);
    assert!(g.status.success());
    assert_eq!(
        std::fs::read(env.path("good.img")).unwrap(),
        std::fs::read(good_src).unwrap()
    );

    // Truncated pack: the structural check finds it.
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let out = env.coffer(&["check"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&victim_name));
}

/// Files under `dir` (recursively); none when it does not exist.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect()
}

/// Polls `cond` until it holds; fails if `child` exits first or a minute passes.
fn wait_for(child: &mut std::process::Child, what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !cond() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the backup ended ({status}) before {what}: make the image larger");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} never happened"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[test]
fn kill_during_backup_leaves_a_clean_repository() {
    let env = Env::new();
    let img = env.path("big.img");
    let f = std::fs::File::create(&img).unwrap();
    for i in 0..48u64 {
        std::os::unix::fs::FileExt::write_all_at(&f, &pseudo_random(100 + i, MIB), i * MIB as u64)
            .unwrap();
    }
    drop(f);
    let repo = env.path("repo");
    // Kill points, each proven to land mid-backup: once the session has begun (its
    // marker exists), after the first pack, and after four packs (of about twelve).
    type KillPoint = (&'static str, usize);
    let points: [KillPoint; 3] = [
        ("the session marker exists", 0),
        ("1 pack is written", 1),
        ("4 packs are written", 4),
    ];
    for (what, packs) in points {
        let packs_before = files_under(&repo.join("packs")).len();
        let snapshots_before = files_under(&repo.join("snapshots")).len();
        let sessions_before = files_under(&repo.join("sessions")).len();
        let mut child = env
            .cmd(&["volume", "backup", img.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for(&mut child, what, || {
            files_under(&repo.join("sessions")).len() > sessions_before
                && files_under(&repo.join("packs")).len() >= packs_before + packs
        });
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let _ = child.wait();
        // The kill landed mid-work: no snapshot was committed and the session's marker
        // is still there (a killed writer cleans nothing up).
        assert_eq!(
            files_under(&repo.join("snapshots")).len(),
            snapshots_before,
            "killed when {what}, yet a snapshot was committed"
        );
        assert!(files_under(&repo.join("sessions")).len() > sessions_before);
        let check = env.coffer(&["check", "--read-data"]);
        assert!(
            check.status.success(),
            "check after a kill when {what}: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let done = env.ok_json(&["volume", "backup", img.to_str().unwrap(), "--json"]);
    let out = env.path("out.img");
    env.ok_json(&[
        "volume",
        "restore",
        done["snapshot_id"].as_str().unwrap(),
        "--target",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&img).unwrap());
    // The killed runs' packs are leftovers prune removes once their sessions are dead
    // (markers not refreshed for 10 minutes; removed here instead of waiting).
    std::fs::remove_dir_all(repo.join("sessions")).unwrap();
    let pruned = env.ok_json(&["prune", "--json"]);
    assert!(
        pruned["orphan_packs_deleted"].as_u64().unwrap() > 0,
        "{pruned}"
    );
    let check = env.coffer(&["check", "--read-data"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    env.ok_json(&[
        "volume",
        "restore",
        "latest",
        "--target",
        env.path("again.img").to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(
        std::fs::read(env.path("again.img")).unwrap(),
        std::fs::read(&img).unwrap()
    );
}

#[test]
fn forget_and_prune_dry_runs_print_plans_and_change_nothing() {
    let env = Env::new();
    let a = env.path("a.img");
    for seed in [21u64, 22, 23] {
        std::fs::write(&a, pseudo_random(seed, 3 * MIB)).unwrap();
        env.ok_json(&["volume", "backup", a.to_str().unwrap(), "--json"]);
    }
    let repo = env.path("repo");
    let snaps = || files_under(&repo.join("snapshots")).len();
    let packs = || files_under(&repo.join("packs")).len();
    assert_eq!(snaps(), 3);

    let plan = env.ok_json(&["forget", "--keep-last", "1", "--dry-run", "--json"]);
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["forgotten"].as_array().unwrap().len(), 2, "{plan}");
    assert_eq!(plan["kept"].as_array().unwrap().len(), 1, "{plan}");
    assert_eq!(
        plan["plan"]["forget"].as_array().unwrap().len(),
        2,
        "{plan}"
    );
    assert_eq!(snaps(), 3, "a dry run forgets nothing");
    let text = env.coffer(&["forget", "--keep-last", "1", "--dry-run"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("would forget"));

    let done = env.ok_json(&["forget", "--keep-last", "1", "--json"]);
    assert_eq!(done["forgotten"], plan["forgotten"]);
    assert_eq!(snaps(), 1);

    let before = packs();
    let dry = env.ok_json(&["prune", "--dry-run", "--json"]);
    assert_eq!(dry["dry_run"], true);
    let planned = dry["plan"]["delete"].as_array().unwrap().len()
        + dry["plan"]["repack"].as_array().unwrap().len();
    assert!(planned >= 2, "the two forgotten images' packs: {dry}");
    assert_eq!(packs(), before, "a dry run deletes nothing");
    let pruned = env.ok_json(&["prune", "--json"]);
    assert!(pruned["packs_deleted"].as_u64().unwrap() >= 2, "{pruned}");
    assert!(packs() < before);
    let check = env.coffer(&["check", "--read-data"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn hostile_key_slots_are_reported_not_fatal() {
    let env = Env::new();
    let keys = env.path("repo/keys");
    std::fs::write(keys.join("x"), b"{}").unwrap();
    std::fs::write(
        keys.join("f".repeat(64)),
        format!(
            r#"{{"version":1,"kind":"password","created":"2026-01-01T00:00:00Z","hostname":"h","username":"u","kdf":{{"m_cost_kib":4294967295,"t_cost":4294967295,"p_cost":1}},"salt":"{}","sealed":"{}"}}"#,
            "ab".repeat(32),
            "cd".repeat(100)
        ),
    )
    .unwrap();
    // Commands open with the good slot.
    let snaps = env.coffer(&["snapshots", "--json"]);
    assert!(
        snaps.status.success(),
        "{}",
        String::from_utf8_lossy(&snaps.stderr)
    );
    // key list shows the good slot and warns about the others, naming them.
    let list = env.coffer(&["key", "list"]);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let stdout = String::from_utf8_lossy(&list.stdout);
    let stderr = String::from_utf8_lossy(&list.stderr);
    assert!(stdout.contains("(current)"), "{stdout}");
    assert!(
        stderr.contains("\"x\"") && stderr.contains("ffffffff"),
        "{stderr}"
    );
    assert!(stderr.contains("Argon2"), "{stderr}");
    let json = env.ok_json(&["key", "list", "--json"]);
    let problems: Vec<_> = json
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k.get("problem").is_some())
        .collect();
    assert_eq!(problems.len(), 2, "{json}");
    // check passes and warns.
    let check = env.coffer(&["check"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&check.stderr).contains("unusable"));
    // The bad slots can be removed by name.
    let rm = env.coffer(&["key", "remove", "x"]);
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
    // A wrong password still says so.
    let wrong = env
        .cmd(&["snapshots"])
        .env("COFFER_PASSWORD", "nope")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong password"));
}

#[test]
fn user_errors_are_one_line_and_non_zero() {
    let env = Env::new();
    let img = env.path("x.img");
    std::fs::write(&img, pseudo_random(1, MIB)).unwrap();
    let bad_ranges = env.path("bad.json");
    std::fs::write(&bad_ranges, "[{\"offset\": 1}]").unwrap();
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["snapshots"],
            vec![("COFFER_PASSWORD", "wrong")],
            "wrong password",
        ),
        (
            vec!["snapshots"],
            vec![("COFFER_REPO", "/nonexistent/repo")],
            "no Coffer repository",
        ),
        (
            vec!["volume", "backup", "/nonexistent/path"],
            vec![],
            "/nonexistent/path",
        ),
        (
            vec!["volume", "restore", "deadbeef", "--target", "/tmp/x"],
            vec![],
            "no snapshot matches",
        ),
        (
            vec![
                "volume",
                "backup",
                img.to_str().unwrap(),
                "--changed-ranges",
                bad_ranges.to_str().unwrap(),
            ],
            vec![],
            "changed ranges",
        ),
        (
            vec![
                "volume",
                "restore",
                "latest",
                "--target",
                "/nonexistent/dev",
                "--delta",
            ],
            vec![],
            "no snapshot",
        ),
    ];
    for (args, envs, expect) in cases {
        let mut c = env.cmd(&args);
        for (k, v) in envs {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(err.contains(expect), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
    }
}

#[test]
fn full_disk_is_reported_and_loses_nothing() {
    let env = Env::new();
    let mnt = env.path("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let st = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=6m",
            "tmpfs",
            mnt.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(
        st.success(),
        "mounting a tmpfs needs root (tests run as root)"
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let repo = mnt.join("repo");
    let small = env.path("small.img");
    let big = env.path("big.img");
    std::fs::write(&small, pseudo_random(5, MIB)).unwrap();
    std::fs::write(&big, pseudo_random(6, 12 * MIB)).unwrap();
    let run = |args: &[&str]| env.cmd(args).env("COFFER_REPO", &repo).output().unwrap();
    assert!(
        run(&[
            "repo",
            "init",
            "--kdf-memory-kib",
            "1024",
            "--pack-size-mib",
            "4"
        ])
        .status
        .success()
    );
    let ok = run(&["volume", "backup", small.to_str().unwrap(), "--json"]);
    assert!(ok.status.success());
    let out = run(&["volume", "backup", big.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("full"), "says the storage is full: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let check = run(&["check", "--read-data"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let r = run(&[
        "volume",
        "restore",
        "latest",
        "--target",
        env.path("r.img").to_str().unwrap(),
    ]);
    assert!(r.status.success());
    assert_eq!(
        std::fs::read(env.path("r.img")).unwrap(),
        std::fs::read(&small).unwrap()
    );
}

/// A tree crafted by someone holding a key (a compromised cluster sharing the repository)
/// and committed through the repository's writer: `volume restore` refuses the entries
/// that would reach outside the target, names them and exits non-zero, restores the
/// rest and changes nothing outside; `check` reports the snapshot damaged.
#[test]
fn crafted_tree_is_refused_and_reported() {
    use coffer_repo::{BlobKind, Location, NewSnapshot, Repository, Secret, SnapshotKind};
    use coffer_volume::fs::{Entry, FileChunk, Kind};

    let env = Env::new();
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("victim.txt"), b"precious\n").unwrap();
    let entry = |path: &[u8], kind: Kind| {
        Entry::new(
            path,
            kind,
            if kind == Kind::Dir { 0o40755 } else { 0o100644 },
        )
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let snap_id = rt.block_on(async {
        let loc = Location::parse(env.path("repo").to_str().unwrap()).unwrap();
        let storage = std::sync::Arc::new(
            coffer_repo::OpendalStorage::new(&loc, &coffer_repo::StorageOptions::default())
                .unwrap(),
        );
        let client = coffer_repo::OpenOptions::new(env.path("cache"), "test-host", "tester");
        let repo = Repository::open(storage, &Secret::Password("pw".into()), &client)
            .await
            .unwrap();
        let w = repo.writer().await.unwrap();
        let data = b"overwritten\n";
        let id = w
            .add(BlobKind::Data, data.to_vec().into())
            .await
            .unwrap()
            .id;
        let file = |path: &[u8]| Entry {
            size: data.len() as u64,
            chunks: vec![FileChunk {
                offset: 0,
                len: data.len() as u32,
                id: id.0,
            }],
            ..entry(path, Kind::File)
        };
        let tree = vec![
            entry(b"", Kind::Dir),
            file(b"../outside/victim.txt"),
            Entry {
                target: outside.as_os_str().as_encoded_bytes().to_vec(),
                ..entry(b"esc", Kind::Symlink)
            },
            file(b"esc/planted.txt"),
            entry(b"good", Kind::Dir),
            file(b"good/f.txt"),
        ];
        let root = w
            .add_stream(BlobKind::Meta, &coffer_volume::fs::encode_tree(&tree))
            .await
            .unwrap();
        let snap = w
            .commit(NewSnapshot {
                kind: SnapshotKind::Fs,
                source: "/crafted".into(),
                tags: Default::default(),
                parent: None,
                root,
                summary: serde_json::json!({}),
                time: None,
            })
            .await
            .unwrap();
        snap.id.to_hex()
    });

    let target = env.path("restored");
    let out = env.coffer(&[
        "volume",
        "restore",
        &snap_id,
        "--target",
        target.to_str().unwrap(),
        "--json",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.trim().lines().last().unwrap();
    assert!(
        last.starts_with("error: ")
            && last.contains("refused 2 entries")
            && last.contains("\"../outside/victim.txt\"")
            && last.contains("\"esc/planted.txt\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: esc/planted.txt: its parent is not a directory"),
        "{stderr}"
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["refused"].as_array().unwrap().len(), 2, "{summary}");
    assert_eq!(summary["refused"][0]["path"], "../outside/victim.txt");
    assert_eq!(summary["files"], 1);
    assert_eq!(
        std::fs::read(target.join("good/f.txt")).unwrap(),
        b"overwritten\n"
    );
    assert_eq!(
        std::fs::read(outside.join("victim.txt")).unwrap(),
        b"precious\n"
    );
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);

    let check = env.coffer(&["check", "--json"]);
    assert!(!check.status.success());
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    let errors = report["errors"].to_string();
    assert!(
        errors.contains("../outside/victim.txt") && errors.contains("esc/planted.txt"),
        "{report}"
    );
    assert_eq!(
        report["affected_snapshots"][0],
        snap_id.as_str(),
        "{report}"
    );
}
