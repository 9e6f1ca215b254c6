//! Kubernetes objects, DESIGN.md layer 4.
//!
//! This crate owns everything about the YAML side of a backup: connecting to a cluster
//! ([`client`]), discovering what it serves ([`discovery`]), collecting the objects a
//! selection names ([`collect`]), storing them in the repository as a `resources` snapshot
//! ([`archive`]: one catalog plus one stream per object, so a single object reads back
//! without fetching the rest), and restoring them ([`restore`]): a plan (a serialisable
//! value listing every object with its action and final body, in order) and then its
//! application. Planning covers ordering, sanitising, API-version conversion
//! ([`convert`]), namespace mapping, clone renames, transforms ([`transform`]), the
//! existing-object policy, rollback deletions and dependency checks.
//!
//! It does not own volume data (the `volume` crate), the repository format (the `repo`
//! crate) or how workflows are scheduled (the operator). It talks to the API server only
//! through kube-rs, reports progress through [`coffer_repo::progress::Progress`], reads
//! no process environment and never prints.

use thiserror::Error;

/// Errors of the resources layer. Messages are one line, say what is wrong and, where the
/// user can act, what to do.
#[derive(Debug, Error)]
pub enum Error {
    /// The repository failed (reading the catalog or an object, writing a snapshot).
    #[error(transparent)]
    Repo(#[from] coffer_repo::Error),
    /// No API server answered at `server`.
    #[error("cannot reach the Kubernetes API server at {server}: {cause}")]
    Unreachable {
        /// The API server's URL.
        server: String,
        /// Why, in one line ("connection refused").
        cause: String,
    },
    /// The kubeconfig could not be read or does not describe a usable cluster.
    #[error("cannot use kubeconfig {path}: {cause}")]
    Kubeconfig {
        /// The file(s), or which configuration was asked for.
        path: String,
        /// Why, in one line.
        cause: String,
    },
    /// The API server answered a request with an error status.
    #[error("Kubernetes API: {message}")]
    Api {
        /// The HTTP status code (404, 409, 422, ...).
        code: u16,
        /// The status reason (NotFound, AlreadyExists, Invalid, ...).
        reason: String,
        /// The server's message.
        message: String,
    },
    /// A request to the API server failed without an answer (the connection broke, the
    /// answer could not be decoded).
    #[error("Kubernetes API request failed: {0}")]
    Request(String),
    /// Data read from the repository does not decode; the repository may be damaged or
    /// was written by something else.
    #[error("{what} is damaged ({cause}); run `coffer check --read-data`")]
    Damaged {
        /// What was being read ("the catalog of snapshot 1a2b3c4d").
        what: String,
        /// What is wrong with it.
        cause: String,
    },
    /// A name that Kubernetes would refuse (checked before anything is created).
    #[error("{what} {name:?} is not a valid Kubernetes name: {why}")]
    InvalidName {
        /// What the name is for ("target namespace of --namespace-mapping shop=Bad_NS!").
        what: String,
        /// The name.
        name: String,
        /// The rule it breaks.
        why: String,
    },
    /// A restore plan that cannot be applied here or is not a plan of this version.
    #[error("{0}")]
    Plan(String),
    /// Input the caller can fix: options, files, selectors, transforms.
    #[error("{0}")]
    Invalid(String),
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::from_kube_ref(&e)
    }
}

impl Error {
    pub(crate) fn from_kube_ref(e: &kube::Error) -> Error {
        match e {
            kube::Error::Api(status) => Error::Api {
                code: status.code,
                reason: status.reason.clone(),
                message: one_line(&status.message),
            },
            other => Error::Request(one_line_cause(other)),
        }
    }

    /// The API server's status code, when the error is an answer from it.
    pub fn api_code(&self) -> Option<u16> {
        match self {
            Error::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Collapses whitespace (line breaks included) into single spaces.
pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The innermost cause of an error chain, in one line: what a user can act on
/// ("connection refused") rather than every layer's wrapping of it.
pub(crate) fn one_line_cause(e: &(dyn std::error::Error + 'static)) -> String {
    use std::io::ErrorKind;
    let mut innermost = e;
    let mut io_kind = None;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
        }
        innermost = err;
        cur = err.source();
    }
    let known = match io_kind {
        Some(ErrorKind::ConnectionRefused) => Some("connection refused"),
        Some(ErrorKind::ConnectionReset) => Some("connection reset"),
        Some(ErrorKind::ConnectionAborted) => Some("connection aborted"),
        Some(ErrorKind::TimedOut) => Some("connection timed out"),
        Some(ErrorKind::NotFound) => Some("no such file or directory"),
        Some(ErrorKind::PermissionDenied) => Some("permission denied"),
        Some(ErrorKind::HostUnreachable) => Some("host unreachable"),
        Some(ErrorKind::NetworkUnreachable) => Some("network unreachable"),
        Some(ErrorKind::AddrNotAvailable) => Some("address not available"),
        _ => None,
    };
    match known {
        Some(k) => k.to_string(),
        None => {
            let text = one_line(&innermost.to_string());
            if text.is_empty() {
                one_line(&e.to_string())
            } else {
                text
            }
        }
    }
}

pub mod archive;
pub mod client;
pub mod collect;
pub mod convert;
pub mod discovery;
pub mod import;
pub mod names;
pub mod order;
pub mod refs;
pub mod restore;
pub mod sanitize;
pub mod selector;
pub mod transform;

pub use archive::{Catalog, Entry};
pub use client::{Cluster, ClusterAccess, KubeconfigSource};
pub use collect::{BackupSummary, ClusterResources, Selection};
pub use restore::{
    Action, ApplyOptions, ExistingPolicy, ObjectResult, Outcome, RestoreOptions, RestorePlan,
    RestoreReport,
};
