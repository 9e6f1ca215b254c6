//! The S3 backend against a real S3-compatible server: moto's server on 127.0.0.1,
//! started by this test (scripts/test.sh installs it and sets COFFER_MOTO_SERVER).

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use coffer_repo::progress::NoProgress;
use coffer_repo::{
    BlobKind, CheckOptions, Error, Location, NewSnapshot, OpendalStorage, PruneOptions, Repository,
    S3Options, Storage, StorageOptions,
};
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

/// S3 storage at `location` on the local server at `port`, with settings passed in (the
/// library reads no environment).
fn s3(location: &str, port: u16) -> Arc<dyn Storage> {
    let options = StorageOptions {
        s3: S3Options {
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            region: Some("us-east-1".into()),
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".into()),
            session_token: None,
            ambient_credentials: false,
        },
    };
    let loc = Location::parse(location).unwrap();
    Arc::new(OpendalStorage::new(&loc, &options).unwrap())
}

#[tokio::test]
async fn s3_round_trip_with_multipart_packs_check_and_prune() {
    let moto = start_moto();
    let dir = tempfile::tempdir().unwrap();
    let c = client(dir.path());
    let loc = "s3://coffer-test/repos/one";
    let mut opts = test_opts();
    opts.pack_size = 20 * 1024 * 1024; // above the 8 MiB part size: multipart uploads
    let repo = Repository::init(s3(loc, moto.port), &secret(), opts, &c)
        .await
        .unwrap();

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
    let packs = repo.storage().list("packs/").await.unwrap();
    assert!(
        packs.iter().any(|p| p.size > 16 * 1024 * 1024),
        "a multipart-sized pack was written: {packs:?}"
    );

    let repo = Repository::open(s3(loc, moto.port), &secret(), &c)
        .await
        .unwrap();
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
            &NoProgress,
        )
        .await
        .unwrap();
    assert!(report.ok(), "{:?}", report.errors);
    repo.forget_snapshots(&[&snap]).await.unwrap();
    let pruned = repo
        .prune(PruneOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert!(pruned.packs_deleted > 0);
    assert!(repo.storage().list("packs/").await.unwrap().is_empty());

    // Wrong password and missing repository are told apart on S3 too.
    let err = Repository::open(
        s3(loc, moto.port),
        &coffer_repo::Secret::Password("x".into()),
        &c,
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(err, Error::WrongSecret { .. }), "{err}");
    let err = Repository::open(s3("s3://coffer-test/repos/none", moto.port), &secret(), &c)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::NotARepository(_)), "{err}");
}

#[tokio::test]
async fn unreachable_s3_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on that port.
    let storage = s3("s3://coffer-test/repo", free_port());
    let err = Repository::open(storage, &secret(), &client(dir.path()))
        .await
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(matches!(err, Error::Unreachable { .. }), "{msg}");
    assert!(
        msg.contains("unreachable") && msg.contains("s3://coffer-test/repo"),
        "{msg}"
    );
}
