//! Where a repository is: a local directory or an S3 bucket and prefix.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where a repository is. Credentials and endpoints are not part of it (they are
/// [`StorageOptions`](super::StorageOptions)), so a location can be shown and logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A directory on a local (or mounted) file system; always absolute.
    Local(PathBuf),
    /// A prefix in an S3 bucket (any S3-compatible store).
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix inside the bucket, without leading or trailing `/`; may be empty.
        prefix: String,
    },
}

impl Location {
    /// Parses `/ABSOLUTE/PATH`, `file:///ABSOLUTE/PATH` or `s3://BUCKET/PREFIX`. A relative
    /// path is refused: the library does not know the process's working directory; use
    /// [`Location::parse_relative_to`].
    pub fn parse(s: &str) -> Result<Location> {
        Self::parse_inner(s, None)
    }

    /// As [`Location::parse`], resolving a relative path against `base` (the CLI passes
    /// its working directory).
    pub fn parse_relative_to(s: &str, base: &Path) -> Result<Location> {
        Self::parse_inner(s, Some(base))
    }

    fn parse_inner(s: &str, base: Option<&Path>) -> Result<Location> {
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
        let path = Path::new(path);
        if path.is_absolute() {
            return Ok(Location::Local(path.to_path_buf()));
        }
        match base {
            Some(base) if base.is_absolute() => Ok(Location::Local(base.join(path))),
            _ => Err(bad("a relative path: give an absolute one")),
        }
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
        assert!(Location::parse("").is_err());
        assert!(Location::parse("rel/dir").is_err());
        assert_eq!(
            Location::parse_relative_to("rel/dir", Path::new("/base")).unwrap(),
            Location::Local("/base/rel/dir".into())
        );
    }
}
