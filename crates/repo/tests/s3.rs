//! The S3 backend against a real S3-compatible server: moto's server on 127.0.0.1,
//! started by this test (scripts/test.sh installs it and sets COFFER_MOTO_SERVER).

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use coffer_repo::{BlobKind, CheckOptions, Error, Location, NewSnapshot, PruneOptions, Repository};
use common::*;

struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn start_moto() -> Moto {
    let bin = std::env::var("COFFER_MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
    let port = free_port();
    let child = Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin} ({e}): install it with `pip install 'moto[server]'` (scripts/test.sh does)"));
    let moto = Moto { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let reply = http(
        port,
        "PUT /coffer-test HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert!(
        reply.starts_with("HTTP/1.1 200"),
        "bucket creation failed: {reply}"
    );
    moto
}

fn s3_env(port: u16) {
    // SAFETY: set before any thread of this test process reads the environment.
    unsafe {
        std::env::set_var("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"));
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    }
}

#[tokio::test]
async fn s3_round_trip_with_multipart_packs_check_and_prune() {
    let moto = start_moto();
    s3_env(moto.port);
    let dir = tempfile::tempdir().unwrap();
    // SAFETY: as above.
    unsafe { std::env::set_var("COFFER_CACHE_DIR", dir.path().join("cache")) };
    let loc = Location::parse("s3://coffer-test/repos/one").unwrap();
    let mut opts = test_opts();
    opts.pack_size = 20 * 1024 * 1024; // above the 8 MiB part size: multipart uploads
    let repo = Repository::init(&loc, &secret(), opts).await.unwrap();

    let w = repo.writer().await.unwrap();
    let mut ids = Vec::new();
    for i in 0..30u64 {
        ids.push(
            w.add(BlobKind::Data, Bytes::from(pseudo_random(i, 1_000_000)))
                .await
                .unwrap()
                .id,
        );
    }
    let mut root_stream = Vec::new();
    for id in &ids {
        root_stream.extend_from_slice(&id.0);
    }
    let root = w.add_stream(BlobKind::Meta, &root_stream).await.unwrap();
    let snap = w
        .commit(NewSnapshot {
            kind: "test".into(),
            root,
            ..Default::default()
        })
        .await
        .unwrap();
    let packs = repo.backend().list("packs/").await.unwrap();
    assert!(
        packs.iter().any(|p| p.size > 16 * 1024 * 1024),
        "a multipart-sized pack was written: {packs:?}"
    );

    let repo = Repository::open(&loc, &secret()).await.unwrap();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            repo.read_chunk(id).await.unwrap().as_ref(),
            &pseudo_random(i as u64, 1_000_000)[..]
        );
    }
    assert_eq!(repo.list_snapshots().await.unwrap()[0].id, snap.id);
    let report = repo
        .check(
            CheckOptions {
                read_data: Some(1.0),
                ..Default::default()
            },
            &coffer_repo::progress::NoProgress,
        )
        .await
        .unwrap();
    assert!(report.ok(), "{:?}", report.errors);
    repo.forget_snapshots(&[&snap]).await.unwrap();
    let pruned = repo.prune(PruneOptions::default()).await.unwrap();
    assert!(pruned.packs_deleted > 0);
    assert!(repo.backend().list("packs/").await.unwrap().is_empty());

    // Wrong password and missing repository are told apart on S3 too.
    let err = Repository::open(&loc, &coffer_repo::Secret::Password("x".into()))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::WrongSecret(_)), "{err}");
    let missing = Location::parse("s3://coffer-test/repos/none").unwrap();
    let err = Repository::open(&missing, &secret()).await.err().unwrap();
    assert!(matches!(err, Error::NotARepository(_)), "{err}");
}

#[tokio::test]
async fn unreachable_s3_is_a_clear_error() {
    s3_env(free_port()); // nothing listens there
    let loc = Location::parse("s3://coffer-test/repo").unwrap();
    let started = Instant::now();
    let err = Repository::open(&loc, &secret()).await.err().unwrap();
    let msg = err.to_string();
    assert!(matches!(err, Error::Unreachable { .. }), "{msg}");
    assert!(
        msg.contains("unreachable") && msg.contains("s3://coffer-test/repo"),
        "{msg}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}
