//! Errors of change tracking; each message is one line saying what is wrong and, where the
//! user can act, what to do.

/// Errors of change tracking.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A changed-ranges file or value is not what it should be.
    #[error("changed ranges: {0}")]
    BadRanges(String),
    /// Two snapshots that cannot be compared.
    #[error("cannot compare the snapshots: {0}")]
    Incomparable(String),
    /// Reading a snapshot's block map failed.
    #[error(transparent)]
    Volume(#[from] coffer_volume::Error),
    /// The SnapshotMetadata service could not be reached or refused the connection.
    #[error("cannot connect to the SnapshotMetadata service at {address}: {reason}")]
    Connect {
        /// host:port of the service.
        address: String,
        /// What went wrong.
        reason: String,
    },
    /// The service answered a call with an error status.
    #[error("SnapshotMetadata {call} failed: {code:?}: {message}")]
    Call {
        /// "GetMetadataAllocated" or "GetMetadataDelta".
        call: &'static str,
        /// The gRPC status code.
        code: tonic::Code,
        /// The server's message.
        message: String,
    },
    /// The service's answer breaks the protocol (ranges out of order, overlapping, outside
    /// the volume, changing block sizes): it is not used.
    #[error("SnapshotMetadata {call} answered something invalid: {reason}")]
    Protocol {
        /// "GetMetadataAllocated" or "GetMetadataDelta".
        call: &'static str,
        /// What is wrong with the answer.
        reason: String,
    },
    /// A call did not finish within its deadline.
    #[error("SnapshotMetadata {call} did not answer within {seconds} s")]
    Timeout {
        /// "GetMetadataAllocated" or "GetMetadataDelta".
        call: &'static str,
        /// The deadline.
        seconds: u64,
    },
    /// The driver has no SnapshotMetadataService, or it is incomplete.
    #[error("SnapshotMetadataService {driver}: {reason}")]
    Service {
        /// The CSI driver name (the object's name).
        driver: String,
        /// What is missing or wrong.
        reason: String,
    },
    /// A Kubernetes API call failed.
    #[error("{what}: {source}")]
    Kube {
        /// What was being done.
        what: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// Results of change tracking.
pub type Result<T, E = Error> = std::result::Result<T, E>;
