//! The SnapshotMetadata client against a real gRPC server over TLS (this test's own,
//! scripted to answer well, break streams, or break the protocol). The end-to-end case,
//! against the test cluster's service with real tokens, is in
//! crates/testcluster/tests/snapshots.rs.

use std::sync::{Arc, Mutex};

use coffer_cbt::proto::snapshot_metadata_server::{SnapshotMetadata, SnapshotMetadataServer};
use coffer_cbt::proto::{
    BlockMetadata, BlockMetadataType, GetMetadataAllocatedRequest, GetMetadataAllocatedResponse,
    GetMetadataDeltaRequest, GetMetadataDeltaResponse,
};
use coffer_cbt::{ByteRange, Error, ServiceEndpoint, SnapshotMetadataClient};
use tonic::{Request, Response, Status};

/// What the server answers: pages of (offset, size) blocks of 4 KiB-aligned ranges; on
/// the first call it breaks the stream with `break_with` after `break_after` pages.
#[derive(Default)]
struct Script {
    pages: Vec<Vec<(i64, i64)>>,
    capacity: i64,
    break_after: Option<usize>,
    break_with: Option<tonic::Code>,
    fail_with: Option<tonic::Code>,
    calls: Vec<(String, i64)>,
}

#[derive(Clone)]
struct Server(Arc<Mutex<Script>>);

type Stream<T> = tokio_stream::wrappers::ReceiverStream<Result<T, Status>>;

impl Server {
    fn answer<T: Send + 'static>(
        &self,
        token: &str,
        starting_offset: i64,
        make: impl Fn(i64, Vec<BlockMetadata>) -> T,
    ) -> Result<Response<Stream<T>>, Status> {
        let mut s = self.0.lock().unwrap();
        s.calls.push((token.to_string(), starting_offset));
        if let Some(code) = s.fail_with {
            return Err(Status::new(code, "scripted failure"));
        }
        let first_call = s.calls.len() == 1;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let mut sent = 0;
        for page in &s.pages {
            let blocks: Vec<BlockMetadata> = page
                .iter()
                .filter(|(o, l)| starting_offset == 0 || o + l > starting_offset)
                .map(|&(byte_offset, size_bytes)| BlockMetadata {
                    byte_offset,
                    size_bytes,
                })
                .collect();
            if blocks.is_empty() {
                continue;
            }
            if first_call && s.break_after == Some(sent) {
                let code = s.break_with.unwrap_or(tonic::Code::Unavailable);
                tx.try_send(Err(Status::new(code, "stream broken")))
                    .unwrap();
                return Ok(Response::new(Stream::new(rx)));
            }
            tx.try_send(Ok(make(s.capacity, blocks))).unwrap();
            sent += 1;
        }
        Ok(Response::new(Stream::new(rx)))
    }
}

#[tonic::async_trait]
impl SnapshotMetadata for Server {
    type GetMetadataAllocatedStream = Stream<GetMetadataAllocatedResponse>;
    type GetMetadataDeltaStream = Stream<GetMetadataDeltaResponse>;

    async fn get_metadata_allocated(
        &self,
        request: Request<GetMetadataAllocatedRequest>,
    ) -> Result<Response<Self::GetMetadataAllocatedStream>, Status> {
        let r = request.into_inner();
        assert_eq!(
            (r.namespace.as_str(), r.snapshot_name.as_str()),
            ("ns", "snap")
        );
        self.answer(&r.security_token, r.starting_offset, |c, b| {
            GetMetadataAllocatedResponse {
                block_metadata_type: BlockMetadataType::FixedLength as i32,
                volume_capacity_bytes: c,
                block_metadata: b,
            }
        })
    }

    async fn get_metadata_delta(
        &self,
        request: Request<GetMetadataDeltaRequest>,
    ) -> Result<Response<Self::GetMetadataDeltaStream>, Status> {
        let r = request.into_inner();
        assert_eq!(r.base_snapshot_id, "base-handle");
        self.answer(&r.security_token, r.starting_offset, |c, b| {
            GetMetadataDeltaResponse {
                block_metadata_type: BlockMetadataType::VariableLength as i32,
                volume_capacity_bytes: c,
                block_metadata: b,
            }
        })
    }
}

/// Starts a TLS server with a fresh CA; returns its endpoint and the script.
async fn serve(script: Script) -> (ServiceEndpoint, Arc<Mutex<Script>>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let script = Arc::new(Mutex::new(script));
    let server = tonic::transport::Server::builder()
        .tls_config(tonic::transport::ServerTlsConfig::new().identity(
            tonic::transport::Identity::from_pem(cert.pem(), key.serialize_pem()),
        ))
        .unwrap()
        .add_service(SnapshotMetadataServer::new(Server(script.clone())))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);
    let endpoint = ServiceEndpoint {
        address,
        ca_pem: ca.pem().into_bytes(),
        audience: "test".into(),
    };
    (endpoint, script)
}

fn r(offset: u64, length: u64) -> ByteRange {
    ByteRange { offset, length }
}

#[tokio::test]
async fn pages_are_collected_merged_and_the_token_sent() {
    let (endpoint, script) = serve(Script {
        pages: vec![
            vec![(0, 4096), (4096, 4096)],
            vec![(16384, 4096)],
            vec![(20480, 4096), (1 << 20, 4096)],
        ],
        capacity: 2 << 20,
        ..Default::default()
    })
    .await;
    let mut client = SnapshotMetadataClient::connect(&endpoint, "tok".into())
        .await
        .unwrap();
    let got = client.allocated("ns", "snap").await.unwrap();
    assert_eq!(got.volume_capacity, 2 << 20);
    assert_eq!(
        got.ranges,
        vec![r(0, 8192), r(16384, 8192), r(1 << 20, 4096)]
    );
    assert_eq!(got.bytes(), 20480);
    assert_eq!(script.lock().unwrap().calls, vec![("tok".to_string(), 0)]);
}

#[tokio::test]
async fn a_broken_stream_resumes_after_the_last_range() {
    let (endpoint, script) = serve(Script {
        pages: vec![vec![(0, 4096)], vec![(8192, 100)], vec![(65536, 4096)]],
        capacity: 1 << 20,
        break_after: Some(2),
        ..Default::default()
    })
    .await;
    let mut client = SnapshotMetadataClient::connect(&endpoint, "tok".into())
        .await
        .unwrap();
    let got = client.delta("ns", "base-handle", "snap").await.unwrap();
    assert_eq!(got.ranges, vec![r(0, 4096), r(8192, 100), r(65536, 4096)]);
    let calls: Vec<i64> = script.lock().unwrap().calls.iter().map(|c| c.1).collect();
    assert_eq!(calls, vec![0, 8292], "resumed where the last range ended");
}

#[tokio::test]
async fn protocol_violations_are_refused() {
    for (pages, what) in [
        (vec![vec![(8192, 4096), (0, 4096)]], "before"),
        (vec![vec![(4096, 4096)], vec![(0, 4096)]], "before"),
        (vec![vec![(0, 0)]], "empty"),
        (vec![vec![(-4096, 4096)]], "negative"),
        (vec![vec![(1 << 20, 4096)]], "past the volume"),
        (vec![vec![(0, 4096), (4096, 8192)]], "FIXED_LENGTH"),
    ] {
        let (endpoint, _) = serve(Script {
            pages,
            capacity: 1 << 20,
            ..Default::default()
        })
        .await;
        let mut client = SnapshotMetadataClient::connect(&endpoint, "tok".into())
            .await
            .unwrap();
        let err = client.allocated("ns", "snap").await.unwrap_err();
        assert!(
            matches!(err, Error::Protocol { .. }) && err.to_string().contains(what),
            "{what}: {err}"
        );
    }
}

#[tokio::test]
async fn refusals_are_not_retried_and_a_wrong_ca_does_not_connect() {
    let (endpoint, script) = serve(Script {
        fail_with: Some(tonic::Code::Unauthenticated),
        capacity: 1 << 20,
        ..Default::default()
    })
    .await;
    let mut client = SnapshotMetadataClient::connect(&endpoint, "tok".into())
        .await
        .unwrap();
    let err = client.allocated("ns", "snap").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Call {
                code: tonic::Code::Unauthenticated,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(script.lock().unwrap().calls.len(), 1);

    // A stream that keeps breaking gives up after a bounded number of resumptions.
    let (endpoint, script) = serve(Script {
        pages: vec![vec![(0, 4096)]],
        capacity: 1 << 20,
        fail_with: Some(tonic::Code::Unavailable),
        ..Default::default()
    })
    .await;
    let mut client = SnapshotMetadataClient::connect(&endpoint, "tok".into())
        .await
        .unwrap();
    let err = client.allocated("ns", "snap").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Call {
                code: tonic::Code::Unavailable,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        script.lock().unwrap().calls.len(),
        4,
        "one call and three resumptions"
    );

    // Another CA's certificate is not trusted.
    let (mut other, _) = serve(Script::default()).await;
    other.address = endpoint.address.clone();
    let err = SnapshotMetadataClient::connect(&other, "tok".into())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
}
