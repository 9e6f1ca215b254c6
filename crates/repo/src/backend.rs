//! Storage backends through OpenDAL: where the repository's objects live.
//!
//! Only a handful of operations are used, and none modifies an object in place: read (whole
//! or a byte range), create-if-absent write, list a prefix, stat, delete. The local
//! filesystem writes through a temporary file renamed into place, so a writer killed at
//! any point leaves either the whole object or nothing under its final name.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use opendal::{ErrorKind, Operator};

use crate::error::{Error, Result};

/// Where a repository is: a local path or an S3 bucket and prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Local(std::path::PathBuf),
    S3 { bucket: String, prefix: String },
}

impl Location {
    /// Parses `PATH`, `file://PATH` or `s3://BUCKET/PREFIX`.
    pub fn parse(s: &str) -> Result<Location> {
        let bad = |reason: &str| Error::BadLocation {
            location: s.to_string(),
            reason: reason.to_string(),
        };
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("the bucket name is missing (s3://BUCKET/PREFIX)"));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        if let Some((scheme, _)) = s.split_once("://")
            && scheme != "file"
        {
            return Err(bad(
                "unsupported scheme: use a path, file://PATH or s3://BUCKET/PREFIX",
            ));
        }
        let path = s.strip_prefix("file://").unwrap_or(s);
        if path.is_empty() {
            return Err(bad("the path is empty"));
        }
        let path = std::path::Path::new(path);
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| bad(&format!("cannot resolve relative path: {e}")))?
                .join(path)
        };
        Ok(Location::Local(abs))
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// One listed object.
#[derive(Clone, Debug)]
pub struct ObjectInfo {
    /// Path relative to the repository root.
    pub path: String,
    pub size: u64,
    pub modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// The repository's storage: an OpenDAL operator plus the location for error messages.
#[derive(Clone)]
pub struct Backend {
    op: Operator,
    location: Arc<Location>,
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

impl Backend {
    pub fn new(location: &Location) -> Result<Backend> {
        let build_err = |e: opendal::Error| Error::BadLocation {
            location: location.to_string(),
            reason: e.to_string(),
        };
        let op = match location {
            Location::Local(path) => {
                let root = path.to_string_lossy().to_string();
                let tmp = path.join(".tmp").to_string_lossy().to_string();
                let builder = opendal::services::Fs::default()
                    .root(&root)
                    .atomic_write_dir(&tmp);
                Operator::new(builder).map_err(build_err)?
            }
            Location::S3 { bucket, prefix } => {
                install_tls_provider();
                let mut builder = opendal::services::S3::default()
                    .bucket(bucket)
                    .root(&format!("/{prefix}"));
                let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
                if let Some(ep) = env("AWS_ENDPOINT_URL_S3").or_else(|| env("AWS_ENDPOINT_URL")) {
                    builder = builder.endpoint(&ep);
                }
                let region = env("AWS_REGION")
                    .or_else(|| env("AWS_DEFAULT_REGION"))
                    .unwrap_or_else(|| "us-east-1".to_string());
                builder = builder.region(&region);
                if let Some(k) = env("AWS_ACCESS_KEY_ID") {
                    builder = builder.access_key_id(&k);
                }
                if let Some(k) = env("AWS_SECRET_ACCESS_KEY") {
                    builder = builder.secret_access_key(&k);
                }
                if let Some(t) = env("AWS_SESSION_TOKEN") {
                    builder = builder.session_token(&t);
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
        Ok(Backend {
            op,
            location: Arc::new(location.clone()),
        })
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    pub fn is_local(&self) -> bool {
        matches!(*self.location, Location::Local(_))
    }

    fn map_err(&self, path: &str, e: opendal::Error) -> Error {
        let location = self.location.to_string();
        match e.kind() {
            ErrorKind::NotFound => Error::MissingObject {
                path: path.to_string(),
            },
            ErrorKind::ConditionNotMatch | ErrorKind::AlreadyExists => {
                Error::Refused(format!("object {path} already exists at {location}"))
            }
            ErrorKind::PermissionDenied => Error::PermissionDenied {
                location,
                path: path.to_string(),
                source: Box::new(e),
            },
            _ if is_disk_full(&e) => Error::StorageFull {
                location,
                path: path.to_string(),
            },
            _ if is_unreachable(&e) => Error::Unreachable {
                location,
                source: Box::new(e),
            },
            _ => Error::Storage {
                location,
                path: path.to_string(),
                source: Box::new(e),
            },
        }
    }

    pub async fn read(&self, path: &str) -> Result<Bytes> {
        let buf = self
            .op
            .read(path)
            .await
            .map_err(|e| self.map_err(path, e))?;
        Ok(buf.to_bytes())
    }

    pub async fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Bytes> {
        let buf = self
            .op
            .read_with(path)
            .range(offset..offset + len)
            .await
            .map_err(|e| self.map_err(path, e))?;
        let bytes = buf.to_bytes();
        if (bytes.len() as u64) < len {
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

    /// Writes a new object; fails if it exists. Objects are never overwritten.
    pub async fn write_new(&self, path: &str, data: Bytes) -> Result<()> {
        let len = data.len();
        let mut w = self.op.write_with(path, data).if_not_exists(true);
        if len > UPLOAD_PART && !self.is_local() {
            w = w.chunk(UPLOAD_PART).concurrent(2);
        }
        w.await.map_err(|e| self.map_err(path, e))?;
        Ok(())
    }

    /// Opens a streaming writer for a new object (packs), failing if it exists.
    pub async fn writer(&self, path: &str) -> Result<opendal::Writer> {
        let mut w = self.op.writer_with(path).if_not_exists(true);
        if !self.is_local() {
            w = w.chunk(UPLOAD_PART).concurrent(2);
        }
        w.await.map_err(|e| self.map_err(path, e))
    }

    pub async fn write_part(&self, path: &str, w: &mut opendal::Writer, data: Bytes) -> Result<()> {
        w.write(data).await.map_err(|e| self.map_err(path, e))
    }

    /// Completes a streamed object: only now does it appear under its name.
    pub async fn close_writer(&self, path: &str, w: &mut opendal::Writer) -> Result<()> {
        w.close()
            .await
            .map(|_| ())
            .map_err(|e| self.map_err(path, e))
    }

    /// Lists the objects under `prefix` (a directory such as "snapshots/"), recursively.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
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
            let modified = meta
                .last_modified()
                .and_then(|t| chrono::DateTime::from_timestamp(t.into_inner().as_second(), 0));
            out.push(ObjectInfo {
                path: entry.path().to_string(),
                size: meta.content_length(),
                modified,
            });
        }
        Ok(out)
    }

    /// Size of an object, or None if it does not exist.
    pub async fn stat(&self, path: &str) -> Result<Option<ObjectInfo>> {
        match self.op.stat(path).await {
            Ok(meta) => Ok(Some(ObjectInfo {
                path: path.to_string(),
                size: meta.content_length(),
                modified: meta
                    .last_modified()
                    .and_then(|t| chrono::DateTime::from_timestamp(t.into_inner().as_second(), 0)),
            })),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.map_err(path, e)),
        }
    }

    pub async fn delete(&self, path: &str) -> Result<()> {
        match self.op.delete(path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.map_err(path, e)),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_locations() {
        assert_eq!(
            Location::parse("s3://b/p/q/").unwrap(),
            Location::S3 {
                bucket: "b".into(),
                prefix: "p/q".into()
            }
        );
        assert_eq!(
            Location::parse("file:///x/y").unwrap(),
            Location::Local("/x/y".into())
        );
        assert!(Location::parse("gs://x").is_err());
        assert!(Location::parse("s3://").is_err());
    }
}
