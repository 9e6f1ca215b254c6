//! The SnapshotMetadata gRPC service (crates/cbt/proto/snapshot-metadata.proto) for
//! Block snapshots of the simulated driver, over TLS, announced by a
//! SnapshotMetadataService object (address, CA, audience). Callers present an
//! audience-scoped ServiceAccount token that is checked with a TokenReview (and a
//! SubjectAccessReview for `get volumesnapshots` in the namespace), as the
//! external-snapshot-metadata sidecar does.
//!
//! Ranges come from comparing the snapshot copies: allocated = the 4 KiB blocks inside
//! the image's data extents (SEEK_DATA/SEEK_HOLE) that are not all zero; delta = the
//! 4 KiB blocks whose contents differ between base and target. A block rewritten with
//! identical contents is therefore not reported as changed.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use base64::Engine;
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

use super::{Storage, jstr, sms_ar, vs_ar, vsc_ar};

/// The protocol's generated code, from the change-tracking crate.
pub use coffer_cbt::proto;

use proto::snapshot_metadata_server::{SnapshotMetadata, SnapshotMetadataServer};
use proto::{
    BlockMetadata, BlockMetadataType, GetMetadataAllocatedRequest, GetMetadataAllocatedResponse,
    GetMetadataDeltaRequest, GetMetadataDeltaResponse,
};

/// Size of the blocks reported (FIXED_LENGTH).
pub const BLOCK_SIZE: u64 = 4096;
const DEFAULT_MAX_RESULTS: usize = 256;

pub(crate) async fn start(st: Arc<Storage>) -> Result<JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the SnapshotMetadata port")?;
    let addr = listener.local_addr()?;
    let identity =
        tonic::transport::Identity::from_pem(&st.grpc_cert.cert_pem, &st.grpc_cert.key_pem);
    let svc = SnapshotMetadataServer::new(Service { st: st.clone() });
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let server = tonic::transport::Server::builder()
        .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?
        .add_service(svc)
        .serve_with_incoming(incoming);
    let task = tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::warn!("SnapshotMetadata server: {e}");
        }
    });
    let api: Api<DynamicObject> = Api::all_with(st.client.clone(), &sms_ar());
    let obj = json!({
        "apiVersion": "cbt.storage.k8s.io/v1beta1", "kind": "SnapshotMetadataService",
        "metadata": {"name": crate::DRIVER},
        "spec": {
            "address": addr.to_string(),
            "caCert": base64::engine::general_purpose::STANDARD.encode(&st.ca_pem),
            "audience": crate::SNAPSHOT_METADATA_AUDIENCE,
        },
    });
    api.patch(
        crate::DRIVER,
        &PatchParams::apply("coffer-testcluster").force(),
        &Patch::Apply(&obj),
    )
    .await
    .context("creating the SnapshotMetadataService object")?;
    Ok(task)
}

struct Service {
    st: Arc<Storage>,
}

type RespStream<T> = tokio_stream::wrappers::ReceiverStream<Result<T, Status>>;

impl Service {
    async fn authorize(&self, token: &str, namespace: &str) -> Result<(), Status> {
        if token.is_empty() {
            return Err(Status::unauthenticated("security_token is empty"));
        }
        let reviews: Api<TokenReview> = Api::all(self.st.client.clone());
        let tr: TokenReview = serde_json::from_value(json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {"token": token, "audiences": [crate::SNAPSHOT_METADATA_AUDIENCE]},
        }))
        .map_err(|e| Status::internal(e.to_string()))?;
        let res = reviews
            .create(&PostParams::default(), &tr)
            .await
            .map_err(|e| Status::internal(format!("TokenReview: {e}")))?;
        let status = res.status.unwrap_or_default();
        if !status.authenticated.unwrap_or(false) {
            return Err(Status::unauthenticated(format!(
                "token not valid for audience {}: {}",
                crate::SNAPSHOT_METADATA_AUDIENCE,
                status.error.unwrap_or_default()
            )));
        }
        let user = status.user.unwrap_or_default();
        let sars: Api<SubjectAccessReview> = Api::all(self.st.client.clone());
        let sar: SubjectAccessReview = serde_json::from_value(json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": user.username, "groups": user.groups, "uid": user.uid,
                     "resourceAttributes": {"namespace": namespace, "verb": "get", "group": "snapshot.storage.k8s.io", "resource": "volumesnapshots"}},
        }))
        .map_err(|e| Status::internal(e.to_string()))?;
        let res = sars
            .create(&PostParams::default(), &sar)
            .await
            .map_err(|e| Status::internal(format!("SubjectAccessReview: {e}")))?;
        if !res.status.map(|s| s.allowed).unwrap_or(false) {
            return Err(Status::permission_denied(format!(
                "not allowed to get volumesnapshots in namespace {namespace}"
            )));
        }
        Ok(())
    }

    /// The snapshot image of a VolumeSnapshot: (path, size).
    async fn snapshot_image(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<(std::path::PathBuf, u64), Status> {
        let vs = Api::<DynamicObject>::namespaced_with(self.st.client.clone(), namespace, &vs_ar())
            .get_opt(name)
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| {
                Status::not_found(format!("VolumeSnapshot {namespace}/{name} not found"))
            })?;
        let content =
            jstr(&vs.data, &["status", "boundVolumeSnapshotContentName"]).ok_or_else(|| {
                Status::unavailable(format!("VolumeSnapshot {namespace}/{name} is not ready"))
            })?;
        let c = Api::<DynamicObject>::all_with(self.st.client.clone(), &vsc_ar())
            .get(content)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let handle = jstr(&c.data, &["status", "snapshotHandle"])
            .ok_or_else(|| Status::unavailable("snapshot has no handle yet"))?;
        self.image_by_handle(handle)
    }

    fn image_by_handle(&self, handle: &str) -> Result<(std::path::PathBuf, u64), Status> {
        let meta = self
            .st
            .snapshot_meta(handle)
            .map_err(|e| Status::not_found(format!("{e:#}")))?;
        if !meta.block {
            return Err(Status::invalid_argument(format!(
                "snapshot {handle} is of a Filesystem volume; changed blocks exist only for Block volumes"
            )));
        }
        Ok((self.st.snapshot_data(&meta), meta.size))
    }
}

/// Data extents of a file as (start, end), via SEEK_DATA/SEEK_HOLE.
fn data_extents(path: &Path) -> std::io::Result<Vec<(u64, u64)>> {
    let f = std::fs::File::open(path)?;
    let len = f.metadata()?.len() as i64;
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut pos: i64 = 0;
    while pos < len {
        // SAFETY: lseek on an open fd.
        let start = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if start < 0 {
            break;
        }
        // SAFETY: as above.
        let end = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
        let end = if end < 0 { len } else { end };
        out.push((start as u64, end as u64));
        pos = end;
    }
    Ok(out)
}

/// Block indexes (aligned to BLOCK_SIZE) covered by the extents.
fn extent_blocks(extents: &[(u64, u64)]) -> std::collections::BTreeSet<u64> {
    let mut set = std::collections::BTreeSet::new();
    for (s, e) in extents {
        let mut b = s / BLOCK_SIZE;
        while b * BLOCK_SIZE < *e {
            set.insert(b);
            b += 1;
        }
    }
    set
}

fn read_block(f: &std::fs::File, b: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut n = 0;
    while n < buf.len() {
        let r = f.read_at(&mut buf[n..], b * BLOCK_SIZE + n as u64)?;
        if r == 0 {
            break;
        }
        n += r;
    }
    buf[n..].fill(0);
    Ok(n)
}

/// Non-zero allocated blocks of an image.
pub fn allocated_blocks(path: &Path) -> std::io::Result<Vec<u64>> {
    let f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; BLOCK_SIZE as usize];
    let mut out = Vec::new();
    for b in extent_blocks(&data_extents(path)?) {
        read_block(&f, b, &mut buf)?;
        if buf.iter().any(|x| *x != 0) {
            out.push(b);
        }
    }
    Ok(out)
}

/// Blocks whose contents differ between two images.
pub fn changed_blocks(base: &Path, target: &Path) -> std::io::Result<Vec<u64>> {
    let fb = std::fs::File::open(base)?;
    let ft = std::fs::File::open(target)?;
    let mut blocks = extent_blocks(&data_extents(base)?);
    blocks.extend(extent_blocks(&data_extents(target)?));
    let (mut a, mut b) = (
        vec![0u8; BLOCK_SIZE as usize],
        vec![0u8; BLOCK_SIZE as usize],
    );
    let mut out = Vec::new();
    for blk in blocks {
        read_block(&fb, blk, &mut a)?;
        read_block(&ft, blk, &mut b)?;
        if a != b {
            out.push(blk);
        }
    }
    Ok(out)
}

fn spawn_stream<T: Send + 'static>(
    blocks: Vec<u64>,
    starting_offset: i64,
    max_results: i32,
    make: impl Fn(Vec<BlockMetadata>) -> T + Send + 'static,
) -> RespStream<T> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let per = if max_results > 0 {
        max_results as usize
    } else {
        DEFAULT_MAX_RESULTS
    };
    let start = starting_offset.max(0) as u64;
    tokio::spawn(async move {
        let list: Vec<BlockMetadata> = blocks
            .into_iter()
            .map(|b| b * BLOCK_SIZE)
            .filter(|off| off + BLOCK_SIZE > start)
            .map(|off| BlockMetadata {
                byte_offset: off as i64,
                size_bytes: BLOCK_SIZE as i64,
            })
            .collect();
        if list.is_empty() {
            let _ = tx.send(Ok(make(Vec::new()))).await;
        }
        for chunk in list.chunks(per) {
            if tx.send(Ok(make(chunk.to_vec()))).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Runs a comparison of snapshot images off the async threads; errors are internal.
async fn compare<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, Status>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(e.to_string()))
}

#[tonic::async_trait]
impl SnapshotMetadata for Service {
    type GetMetadataAllocatedStream = RespStream<GetMetadataAllocatedResponse>;
    type GetMetadataDeltaStream = RespStream<GetMetadataDeltaResponse>;

    async fn get_metadata_allocated(
        &self,
        request: Request<GetMetadataAllocatedRequest>,
    ) -> Result<Response<Self::GetMetadataAllocatedStream>, Status> {
        let req = request.into_inner();
        if req.namespace.is_empty() || req.snapshot_name.is_empty() {
            return Err(Status::invalid_argument(
                "namespace and snapshot_name are required",
            ));
        }
        self.authorize(&req.security_token, &req.namespace).await?;
        let (path, size) = self
            .snapshot_image(&req.namespace, &req.snapshot_name)
            .await?;
        let blocks = compare(move || allocated_blocks(&path)).await?;
        Ok(Response::new(spawn_stream(
            blocks,
            req.starting_offset,
            req.max_results,
            move |b| GetMetadataAllocatedResponse {
                block_metadata_type: BlockMetadataType::FixedLength as i32,
                volume_capacity_bytes: size as i64,
                block_metadata: b,
            },
        )))
    }

    async fn get_metadata_delta(
        &self,
        request: Request<GetMetadataDeltaRequest>,
    ) -> Result<Response<Self::GetMetadataDeltaStream>, Status> {
        let req = request.into_inner();
        if req.namespace.is_empty()
            || req.target_snapshot_name.is_empty()
            || req.base_snapshot_id.is_empty()
        {
            return Err(Status::invalid_argument(
                "namespace, base_snapshot_id and target_snapshot_name are required",
            ));
        }
        self.authorize(&req.security_token, &req.namespace).await?;
        let (target, size) = self
            .snapshot_image(&req.namespace, &req.target_snapshot_name)
            .await?;
        let (base, _) = self.image_by_handle(&req.base_snapshot_id)?;
        let blocks = compare(move || changed_blocks(&base, &target)).await?;
        Ok(Response::new(spawn_stream(
            blocks,
            req.starting_offset,
            req.max_results,
            move |b| GetMetadataDeltaResponse {
                block_metadata_type: BlockMetadataType::FixedLength as i32,
                volume_capacity_bytes: size as i64,
                block_metadata: b,
            },
        )))
    }
}
