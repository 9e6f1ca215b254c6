//! How the operator runs: the settings `coffer operator` passes in (flags and the pod's
//! environment are read by the CLI, not here).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The operator's settings.
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    /// The namespace the operator runs in (its Lease lives there).
    pub namespace: String,
    /// This replica's identity (the pod name): the Lease holder and the events' reporter.
    pub identity: String,
    /// The image of data-mover pods (a Coffer image; its entrypoint is `coffer`).
    pub mover_image: String,
    /// At most this many data-mover pods at once, over all backups.
    pub max_movers: usize,
    /// Where `/metrics` and `/healthz` are served (None: not served).
    pub metrics_addr: Option<SocketAddr>,
    /// The repository index cache.
    pub cache_dir: PathBuf,
    /// Whether to take the Lease before acting (false: act at once; one replica only).
    pub leader_election: bool,
    /// Deadlines of the workflow's waits.
    pub deadlines: Deadlines,
    /// How often a Ready repository is checked again.
    pub repository_check_interval: Duration,
}

/// Deadlines of every wait in a workflow, so that nothing stays InProgress forever.
#[derive(Clone, Debug)]
pub struct Deadlines {
    /// A VolumeSnapshot or VolumeGroupSnapshot becoming ready to use.
    pub snapshot_ready: Duration,
    /// A hook without its own timeout.
    pub hook_default: Duration,
    /// A data-mover pod's PVC being bound and the pod starting.
    pub mover_start: Duration,
    /// A whole data movement of one volume.
    pub mover_run: Duration,
    /// A data-mover's progress report: a mover silent this long is taken as lost.
    pub mover_silence: Duration,
    /// A step that keeps failing (the API server refusing, a repository gone) is retried
    /// this long, then the backup fails with the last error.
    pub step_retry: Duration,
    /// A restored PVC being filled by the volume populator (bound with its data).
    pub populate: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            snapshot_ready: Duration::from_secs(600),
            hook_default: Duration::from_secs(30),
            mover_start: Duration::from_secs(300),
            mover_run: Duration::from_secs(24 * 3600),
            mover_silence: Duration::from_secs(120),
            step_retry: Duration::from_secs(600),
            populate: Duration::from_secs(6 * 3600),
        }
    }
}

impl OperatorConfig {
    /// Settings with the defaults for everything but who and where the operator is.
    pub fn new(namespace: String, identity: String, cache_dir: PathBuf) -> OperatorConfig {
        OperatorConfig {
            namespace,
            identity,
            mover_image: "coffer:latest".into(),
            max_movers: 4,
            metrics_addr: None,
            cache_dir,
            leader_election: true,
            deadlines: Deadlines::default(),
            repository_check_interval: Duration::from_secs(300),
        }
    }
}
