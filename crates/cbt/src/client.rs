//! A client of the Kubernetes CSI SnapshotMetadata service (KEP-3314): which blocks of a
//! VolumeSnapshot hold data (GetMetadataAllocated), and which changed between two
//! snapshots of one volume (GetMetadataDelta).
//!
//! The service is reached over TLS, verified against the CA its SnapshotMetadataService
//! object publishes, and every call carries an audience-scoped ServiceAccount token (see
//! [`crate::discovery`]). Answers stream in pages; a stream cut short is resumed from the
//! end of the last range received (`starting_offset`, as the protocol intends), a bounded
//! number of times. The server's answers are checked before use: ranges out of order,
//! overlapping, empty, outside the volume, or a capacity or block type that changes
//! mid-stream make the call fail ([`Error::Protocol`]), because a backup that trusted a
//! wrong delta would silently miss data. The caller then falls back to a full read.

use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::discovery::ServiceEndpoint;
use crate::error::{Error, Result};
use crate::proto::snapshot_metadata_client::SnapshotMetadataClient as Grpc;
use crate::proto::{
    BlockMetadata, BlockMetadataType, GetMetadataAllocatedRequest, GetMetadataAllocatedResponse,
    GetMetadataDeltaRequest, GetMetadataDeltaResponse,
};
use crate::ranges::{ByteRange, RangeCollector};

/// How many times a stream cut short is resumed before the call fails.
const RESUMES: u32 = 3;
/// Ranges asked for per response message (the server may send fewer).
const PAGE: i32 = 1024;

/// The answer to a call: the volume's size and the ranges, sorted, disjoint, adjacent
/// ones merged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangedBlocks {
    /// The volume's capacity in bytes, as the service reports it.
    pub volume_capacity: u64,
    /// The allocated or changed ranges.
    pub ranges: Vec<ByteRange>,
}

impl ChangedBlocks {
    /// The number of bytes the ranges cover.
    pub fn bytes(&self) -> u64 {
        self.ranges.iter().map(|r| r.length).sum()
    }
}

/// A connection to one SnapshotMetadata service, with the token its calls present.
#[derive(Clone)]
pub struct SnapshotMetadataClient {
    grpc: Grpc<Channel>,
    token: String,
    call_timeout: Duration,
}

impl std::fmt::Debug for SnapshotMetadataClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotMetadataClient")
            .field("call_timeout", &self.call_timeout)
            .finish_non_exhaustive()
    }
}

impl SnapshotMetadataClient {
    /// Connects over TLS to `endpoint` (its address, verified with its CA certificate).
    /// `token` is an audience-scoped ServiceAccount token for the endpoint's audience.
    pub async fn connect(endpoint: &ServiceEndpoint, token: String) -> Result<Self> {
        let connect_err = |reason: String| Error::Connect {
            address: endpoint.address.clone(),
            reason,
        };
        let host = host_of(&endpoint.address);
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&endpoint.ca_pem))
            .domain_name(host);
        let channel = Endpoint::from_shared(format!("https://{}", endpoint.address))
            .map_err(|e| connect_err(format!("not a valid address: {e}")))?
            .connect_timeout(Duration::from_secs(10))
            .tls_config(tls)
            .map_err(|e| connect_err(format!("TLS setup: {e}")))?
            .connect()
            .await
            .map_err(|e| connect_err(error_chain(&e)))?;
        Ok(SnapshotMetadataClient {
            grpc: Grpc::new(channel).max_decoding_message_size(16 << 20),
            token,
            call_timeout: Duration::from_secs(600),
        })
    }

    /// Sets the deadline of each whole call (all its pages and resumptions); 10 minutes
    /// by default.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The ranges of `snapshot` (a VolumeSnapshot name in `namespace`) that hold data: on
    /// a first backup, what needs reading at all.
    pub async fn allocated(&mut self, namespace: &str, snapshot: &str) -> Result<ChangedBlocks> {
        let call = "GetMetadataAllocated";
        let (grpc, token) = (self.grpc.clone(), self.token.clone());
        let (namespace, snapshot) = (namespace.to_string(), snapshot.to_string());
        self.run(call, move |starting_offset| {
            let mut grpc = grpc.clone();
            let req = GetMetadataAllocatedRequest {
                security_token: token.clone(),
                namespace: namespace.clone(),
                snapshot_name: snapshot.clone(),
                starting_offset,
                max_results: PAGE,
            };
            async move { grpc.get_metadata_allocated(req).await }
        })
        .await
    }

    /// The ranges that differ between the snapshot whose CSI handle is `base_snapshot_id`
    /// and `target_snapshot` (a VolumeSnapshot name in `namespace`).
    pub async fn delta(
        &mut self,
        namespace: &str,
        base_snapshot_id: &str,
        target_snapshot: &str,
    ) -> Result<ChangedBlocks> {
        let call = "GetMetadataDelta";
        let (grpc, token) = (self.grpc.clone(), self.token.clone());
        let (namespace, base, target) = (
            namespace.to_string(),
            base_snapshot_id.to_string(),
            target_snapshot.to_string(),
        );
        self.run(call, move |starting_offset| {
            let mut grpc = grpc.clone();
            let req = GetMetadataDeltaRequest {
                security_token: token.clone(),
                namespace: namespace.clone(),
                base_snapshot_id: base.clone(),
                target_snapshot_name: target.clone(),
                starting_offset,
                max_results: PAGE,
            };
            async move { grpc.get_metadata_delta(req).await }
        })
        .await
    }

    /// Runs one call to its end within the deadline: pages collected and checked, the
    /// stream resumed from the last range's end when it breaks.
    async fn run<A, F, Fut>(&self, call: &'static str, start: F) -> Result<ChangedBlocks>
    where
        A: Answer,
        F: Fn(i64) -> Fut,
        Fut: std::future::Future<
                Output = std::result::Result<tonic::Response<tonic::Streaming<A>>, tonic::Status>,
            >,
    {
        let work = async {
            let mut ranges = RangeCollector::default();
            let mut shape: Option<(u64, i32, Option<i64>)> = None;
            let mut resumes = 0;
            loop {
                let offset = i64::try_from(ranges.next_offset).map_err(|_| Error::Protocol {
                    call,
                    reason: "ranges past the largest offset the protocol can express".into(),
                })?;
                let failure = match start(offset).await {
                    Ok(resp) => {
                        let mut stream = resp.into_inner();
                        loop {
                            match stream.message().await {
                                Ok(Some(answer)) => {
                                    accept(call, answer, &mut shape, &mut ranges)?;
                                }
                                Ok(None) => {
                                    let (volume_capacity, _, _) =
                                        shape.ok_or_else(|| Error::Protocol {
                                            call,
                                            reason: "the stream ended without any answer".into(),
                                        })?;
                                    return Ok(ChangedBlocks {
                                        volume_capacity,
                                        ranges: ranges.ranges,
                                    });
                                }
                                Err(status) => break status,
                            }
                        }
                    }
                    Err(status) => status,
                };
                if !resumable(failure.code()) || resumes >= RESUMES {
                    return Err(Error::Call {
                        call,
                        code: failure.code(),
                        message: failure.message().to_string(),
                    });
                }
                resumes += 1;
                tokio::time::sleep(Duration::from_millis(200 << resumes)).await;
            }
        };
        tokio::time::timeout(self.call_timeout, work)
            .await
            .map_err(|_| Error::Timeout {
                call,
                seconds: self.call_timeout.as_secs(),
            })?
    }
}

/// What the two calls' response messages have in common.
trait Answer {
    fn parts(self) -> (i32, i64, Vec<BlockMetadata>);
}

impl Answer for GetMetadataAllocatedResponse {
    fn parts(self) -> (i32, i64, Vec<BlockMetadata>) {
        (
            self.block_metadata_type,
            self.volume_capacity_bytes,
            self.block_metadata,
        )
    }
}

impl Answer for GetMetadataDeltaResponse {
    fn parts(self) -> (i32, i64, Vec<BlockMetadata>) {
        (
            self.block_metadata_type,
            self.volume_capacity_bytes,
            self.block_metadata,
        )
    }
}

/// Checks one response message against the ones before it and collects its ranges.
/// `shape` is (capacity, block metadata type, fixed block size) of the stream so far.
fn accept(
    call: &'static str,
    answer: impl Answer,
    shape: &mut Option<(u64, i32, Option<i64>)>,
    ranges: &mut RangeCollector,
) -> Result<()> {
    let bad = |reason: String| Error::Protocol { call, reason };
    let (kind, capacity, blocks) = answer.parts();
    let capacity =
        u64::try_from(capacity).map_err(|_| bad(format!("negative volume capacity {capacity}")))?;
    let fixed = kind == BlockMetadataType::FixedLength as i32;
    if !fixed && kind != BlockMetadataType::VariableLength as i32 {
        return Err(bad(format!("unknown block metadata type {kind}")));
    }
    let (want_capacity, want_kind, block_size) = shape.get_or_insert((capacity, kind, None));
    if *want_capacity != capacity || *want_kind != kind {
        return Err(bad(
            "the volume capacity or block metadata type changed mid-stream".into(),
        ));
    }
    for b in blocks {
        if fixed {
            let size = *block_size.get_or_insert(b.size_bytes);
            if size != b.size_bytes {
                return Err(bad(format!(
                    "FIXED_LENGTH blocks of {size} and {} bytes",
                    b.size_bytes
                )));
            }
        }
        ranges
            .push(b.byte_offset, b.size_bytes, capacity)
            .map_err(bad)?;
    }
    Ok(())
}

/// Statuses after which the same call, resumed, may well succeed.
fn resumable(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable | tonic::Code::Aborted | tonic::Code::ResourceExhausted
    )
}

/// The host part of `host:port` (brackets of an IPv6 literal removed): the name the
/// server's certificate must carry.
fn host_of(address: &str) -> String {
    let host = match address.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => address,
    };
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(host_of("127.0.0.1:6443"), "127.0.0.1");
        assert_eq!(host_of("[::1]:443"), "::1");
        assert_eq!(
            host_of("snapshot-metadata.csi.svc"),
            "snapshot-metadata.csi.svc"
        );
    }
}
