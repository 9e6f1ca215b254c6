//! The operator's errors: typed, so that a reconciler can tell a spec a user must fix
//! (the backup fails validation) from a transient failure (retried) and from the
//! repository being unavailable.

use std::time::Duration;

/// What can go wrong in the operator and the data mover.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("{what}: {}", kube_message(source))]
    Kube {
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The repository layer failed (unreachable, wrong key, damaged object, ...).
    #[error(transparent)]
    Repo(#[from] coffer_repo::Error),
    /// Collecting the Kubernetes objects failed.
    #[error(transparent)]
    Resources(#[from] coffer_resources::Error),
    /// Moving a volume's data failed.
    #[error(transparent)]
    Volume(#[from] coffer_volume::Error),
    /// The SnapshotMetadata service failed.
    #[error(transparent)]
    Cbt(#[from] coffer_cbt::Error),
    /// A spec that cannot run as written (a user must change it).
    #[error("{0}")]
    Invalid(String),
    /// A Secret the spec names is missing or lacks a key.
    #[error("{0}")]
    Secret(String),
    /// A wait ran past its deadline.
    #[error("timed out after {}s waiting for {what}", after.as_secs())]
    Timeout {
        /// What was awaited.
        what: String,
        /// The deadline.
        after: Duration,
    },
    /// Not possible yet; the reconciler tries again shortly (a repository not checked
    /// yet, an object still being created).
    #[error("{0}")]
    Retry(String),
    /// A step failed for a reason stated in words (a hook's exit code, a mover's end).
    #[error("{0}")]
    Failed(String),
}

/// The operator's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds what was being done to a kube-rs error.
pub trait KubeContext<T> {
    /// Wraps the error as [`Error::Kube`] with `what`.
    fn kube_ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> KubeContext<T> for std::result::Result<T, kube::Error> {
    fn kube_ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Kube {
            what: what(),
            source,
        })
    }
}

/// Whether a kube-rs error is the API server's 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Whether a kube-rs error is the API server's 409 (already exists, or a conflict).
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// A kube-rs error in one line: the API server's own message for its errors (not the
/// whole status object), the client's message otherwise.
pub fn kube_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} (HTTP {})", s.message, s.code),
        other => other.to_string(),
    }
}
