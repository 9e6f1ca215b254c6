//! The storage through OpenDAL: a local directory or an S3-compatible bucket.
//!
//! The local filesystem writes through a temporary file under `.tmp/` renamed into place,
//! so a writer killed at any point leaves either the whole object or nothing under its
//! final name. S3 writes are single PUTs or multipart uploads completed at close, with
//! `If-None-Match: *`, so they too publish whole objects only.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use opendal::{ErrorKind, Operator};

use super::{Location, ObjectInfo, ObjectWriter, Storage};
use crate::error::{Error, Result};

/// Settings for S3-compatible stores. Nothing is read from the process environment
/// unless [`S3Options::ambient_credentials`] allows it; the CLI fills these from the
/// usual `AWS_*` variables ([`S3Options::from_aws_variables`]).
#[derive(Clone, Default)]
pub struct S3Options {
    /// Endpoint URL (`http://127.0.0.1:9000`); the AWS endpoint of the region when absent.
    pub endpoint: Option<String>,
    /// Region; `us-east-1` when absent.
    pub region: Option<String>,
    /// Access key id (static credentials).
    pub access_key_id: Option<String>,
    /// Secret access key (static credentials).
    pub secret_access_key: Option<String>,
    /// Session token for temporary credentials.
    pub session_token: Option<String>,
    /// Let the S3 client find credentials itself when none are given here: environment
    /// variables, `~/.aws` profiles, web identity (IRSA) and the instance metadata
    /// service. Off by default: a library user decides what the process environment may
    /// contribute.
    pub ambient_credentials: bool,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("ambient_credentials", &self.ambient_credentials)
            .finish()
    }
}

impl S3Options {
    /// Settings from AWS-style variables looked up through `var` (the CLI passes
    /// `std::env::var`): `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`, `AWS_REGION` or
    /// `AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`. Empty values count as unset. Ambient credentials stay allowed,
    /// as the AWS tools do.
    pub fn from_aws_variables(var: impl Fn(&str) -> Option<String>) -> S3Options {
        let get = |k: &str| var(k).filter(|v| !v.is_empty());
        S3Options {
            endpoint: get("AWS_ENDPOINT_URL_S3").or_else(|| get("AWS_ENDPOINT_URL")),
            region: get("AWS_REGION").or_else(|| get("AWS_DEFAULT_REGION")),
            access_key_id: get("AWS_ACCESS_KEY_ID"),
            secret_access_key: get("AWS_SECRET_ACCESS_KEY"),
            session_token: get("AWS_SESSION_TOKEN"),
            ambient_credentials: true,
        }
    }
}

/// Settings of the storage services, by service.
#[derive(Clone, Debug, Default)]
pub struct StorageOptions {
    /// For `s3://` locations.
    pub s3: S3Options,
}

/// The storage through an OpenDAL operator.
#[derive(Clone)]
pub struct OpendalStorage {
    op: Operator,
    location: Arc<Location>,
    local: bool,
}

/// Size of multipart upload parts for large objects (packs) on object stores.
const UPLOAD_PART: usize = 8 * 1024 * 1024;

fn install_tls_provider() {
    // reqwest is built without a bundled crypto provider; ring is lighter to build than
    // aws-lc. Installing twice is harmless (the second call reports the first one).
    let _ = rustls::crypto::ring::default_provider().install_default();
    // OpenDAL's HTTP services need a process-wide transport; first install wins.
    opendal_http_transport_reqwest::install_default();
}

impl OpendalStorage {
    /// Storage at `location` with `options` (only the S3 settings apply to S3).
    pub fn new(location: &Location, options: &StorageOptions) -> Result<OpendalStorage> {
        let build_err = |e: opendal::Error| Error::BadLocation {
            location: location.to_string(),
            reason: e.to_string(),
        };
        let op = match location {
            Location::Local(path) => {
                if !path.is_absolute() {
                    return Err(Error::BadLocation {
                        location: location.to_string(),
                        reason: "a relative path: give an absolute one".into(),
                    });
                }
                let root = path.to_string_lossy().to_string();
                let tmp = path.join(".tmp").to_string_lossy().to_string();
                let builder = opendal::services::Fs::default()
                    .root(&root)
                    .atomic_write_dir(&tmp);
                Operator::new(builder).map_err(build_err)?
            }
            Location::S3 { bucket, prefix } => {
                install_tls_provider();
                let s3 = &options.s3;
                let mut builder = opendal::services::S3::default()
                    .bucket(bucket)
                    .root(&format!("/{prefix}"))
                    .region(s3.region.as_deref().unwrap_or("us-east-1"));
                if let Some(ep) = &s3.endpoint {
                    builder = builder.endpoint(ep);
                }
                if let Some(k) = &s3.access_key_id {
                    builder = builder.access_key_id(k);
                }
                if let Some(k) = &s3.secret_access_key {
                    builder = builder.secret_access_key(k);
                }
                if let Some(t) = &s3.session_token {
                    builder = builder.session_token(t);
                }
                if !s3.ambient_credentials {
                    builder = builder.disable_config_load().disable_ec2_metadata();
                }
                Operator::new(builder)
                    .map_err(build_err)?
                    .layer(
                        opendal::layers::RetryLayer::new()
                            .with_max_times(4)
                            .with_min_delay(Duration::from_millis(100))
                            .with_jitter(),
                    )
                    .layer(
                        opendal::layers::TimeoutLayer::new()
                            .with_timeout(Duration::from_secs(120))
                            .with_io_timeout(Duration::from_secs(60)),
                    )
            }
        };
        Ok(OpendalStorage {
            op,
            local: matches!(location, Location::Local(_)),
            location: Arc::new(location.clone()),
        })
    }

    fn map_err(&self, path: &str, e: opendal::Error) -> Error {
        map_error(&self.location, path, e)
    }

    async fn read_impl(&self, path: &str) -> Result<Bytes> {
        let buf = self
            .op
            .read(path)
            .await
            .map_err(|e| self.map_err(path, e))?;
        Ok(buf.to_bytes())
    }

    async fn read_range_impl(&self, path: &str, offset: u64, len: u64) -> Result<Bytes> {
        let end = offset.checked_add(len).ok_or_else(|| {
            Error::corrupt(path, format!("range {offset}+{len} is out of bounds"))
        })?;
        if len == 0 {
            return Ok(Bytes::new());
        }
        let buf = self
            .op
            .read_with(path)
            .range(offset..end)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::RangeNotSatisfied => Error::corrupt(
                    path,
                    format!("truncated: no {len} bytes at offset {offset}"),
                ),
                _ => self.map_err(path, e),
            })?;
        let bytes = buf.to_bytes();
        if (bytes.len() as u64) != len {
            return Err(Error::corrupt(
                path,
                format!(
                    "truncated: wanted {len} bytes at offset {offset}, got {}",
                    bytes.len()
                ),
            ));
        }
        Ok(bytes)
    }

    async fn write_new_impl(&self, path: &str, data: Bytes) -> Result<()> {
        let len = data.len();
        let mut w = self.op.write_with(path, data).if_not_exists(true);
        if len > UPLOAD_PART && !self.local {
            w = w.chunk(UPLOAD_PART).concurrent(2);
        }
        w.await.map_err(|e| self.map_err(path, e))?;
        Ok(())
    }

    async fn create_impl(&self, path: &str) -> Result<Box<dyn ObjectWriter>> {
        let mut w = self.op.writer_with(path).if_not_exists(true);
        if !self.local {
            w = w.chunk(UPLOAD_PART).concurrent(2);
        }
        let writer = w.await.map_err(|e| self.map_err(path, e))?;
        Ok(Box::new(OpendalWriter {
            writer,
            path: path.to_string(),
            location: self.location.clone(),
        }))
    }

    async fn list_impl(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let entries = match self.op.list_with(prefix).recursive(true).await {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.map_err(prefix, e)),
        };
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let meta = entry.metadata();
            if meta.is_dir() {
                continue;
            }
            out.push(ObjectInfo {
                path: entry.path().to_string(),
                size: meta.content_length(),
                modified: modified(meta),
            });
        }
        Ok(out)
    }

    async fn stat_impl(&self, path: &str) -> Result<Option<ObjectInfo>> {
        match self.op.stat(path).await {
            Ok(meta) => Ok(Some(ObjectInfo {
                path: path.to_string(),
                size: meta.content_length(),
                modified: modified(&meta),
            })),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.map_err(path, e)),
        }
    }

    async fn delete_impl(&self, path: &str) -> Result<()> {
        match self.op.delete(path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.map_err(path, e)),
        }
    }
}

fn modified(meta: &opendal::Metadata) -> Option<chrono::DateTime<chrono::Utc>> {
    meta.last_modified()
        .and_then(|t| chrono::DateTime::from_timestamp(t.into_inner().as_second(), 0))
}

impl Storage for OpendalStorage {
    fn location(&self) -> &Location {
        &self.location
    }
    fn read<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Bytes>> {
        Box::pin(self.read_impl(path))
    }
    fn read_range<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'a, Result<Bytes>> {
        Box::pin(self.read_range_impl(path, offset, len))
    }
    fn write_new<'a>(&'a self, path: &'a str, data: Bytes) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.write_new_impl(path, data))
    }
    fn create<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Box<dyn ObjectWriter>>> {
        Box::pin(self.create_impl(path))
    }
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<ObjectInfo>>> {
        Box::pin(self.list_impl(prefix))
    }
    fn stat<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Option<ObjectInfo>>> {
        Box::pin(self.stat_impl(path))
    }
    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.delete_impl(path))
    }
}

struct OpendalWriter {
    writer: opendal::Writer,
    path: String,
    location: Arc<Location>,
}

impl ObjectWriter for OpendalWriter {
    fn write(&mut self, data: Bytes) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.writer
                .write(data)
                .await
                .map_err(|e| map_error(&self.location, &self.path, e))
        })
    }
    fn close(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.writer
                .close()
                .await
                .map(|_| ())
                .map_err(|e| map_error(&self.location, &self.path, e))
        })
    }
}

fn map_error(location: &Location, path: &str, e: opendal::Error) -> Error {
    let location = location.to_string();
    let path = path.to_string();
    match e.kind() {
        ErrorKind::NotFound => Error::MissingObject { path },
        ErrorKind::ConditionNotMatch | ErrorKind::AlreadyExists => {
            Error::ObjectExists { location, path }
        }
        ErrorKind::PermissionDenied => Error::PermissionDenied {
            location,
            path,
            source: Box::new(e),
        },
        _ if is_disk_full(&e) => Error::StorageFull { location, path },
        _ if is_unreachable(&e) => Error::Unreachable {
            location,
            source: Box::new(e),
        },
        _ => Error::Storage {
            location,
            path,
            source: Box::new(e),
        },
    }
}

fn is_disk_full(e: &opendal::Error) -> bool {
    let text = format!("{e:?}");
    text.contains("No space left on device")
        || text.contains("StorageFull")
        || text.contains("os error 28")
        || text.contains("QuotaExceeded")
}

fn is_unreachable(e: &opendal::Error) -> bool {
    let text = format!("{e:?}").to_lowercase();
    text.contains("connection refused")
        || text.contains("dns error")
        || text.contains("error sending request")
        || text.contains("timed out")
        || text.contains("connect")
}
