//! The operator's Prometheus metrics and the small HTTP server that exposes them
//! (`/metrics` in the text format, `/healthz`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of the per-phase counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// The final phase.
    pub phase: String,
}

/// Everything the operator counts.
pub struct Metrics {
    registry: Registry,
    /// Backups ended, by final phase.
    pub backups: Family<PhaseLabels, Counter>,
    /// Seconds from a backup's start to its end.
    pub backup_duration: Histogram,
    /// Volume bytes read by data movers.
    pub bytes_read: Counter,
    /// Bytes added to repositories by data movers.
    pub bytes_new: Counter,
    /// Data-mover pods running now.
    pub movers_running: Gauge,
    /// Backups in progress now.
    pub backups_in_progress: Gauge,
    /// 1 while this replica holds the leader Lease.
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("coffer");
        let backups = Family::<PhaseLabels, Counter>::default();
        registry.register("backups", "Backups ended, by final phase", backups.clone());
        let backup_duration = Histogram::new(exponential_buckets(1.0, 2.0, 16));
        registry.register(
            "backup_duration_seconds",
            "Seconds from a backup's start to its end",
            backup_duration.clone(),
        );
        let bytes_read = Counter::default();
        registry.register(
            "volume_bytes_read",
            "Volume bytes read by data movers",
            bytes_read.clone(),
        );
        let bytes_new = Counter::default();
        registry.register(
            "volume_bytes_new",
            "Bytes added to repositories by data movers",
            bytes_new.clone(),
        );
        let movers_running = Gauge::default();
        registry.register(
            "movers_running",
            "Data-mover pods running now",
            movers_running.clone(),
        );
        let backups_in_progress = Gauge::default();
        registry.register(
            "backups_in_progress",
            "Backups in progress now",
            backups_in_progress.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        Metrics {
            registry,
            backups,
            backup_duration,
            bytes_read,
            bytes_new,
            movers_running,
            backups_in_progress,
            leader,
        }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

async fn metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}

/// Binds `addr` and serves `/metrics` and `/healthz` until the process ends. Returns
/// the bound address, or the bind error (the caller decides whether that is fatal).
pub async fn serve(addr: SocketAddr, m: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(m);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics server stopped");
        }
    });
    Ok(bound)
}
