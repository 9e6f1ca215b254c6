//! What every reconciler shares: the client, the settings, the metrics and the events'
//! reporter.

use std::sync::Arc;

use coffer_repo::OpenOptions;
use kube::Client;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::config::OperatorConfig;
use crate::metrics::Metrics;

/// Shared by the controllers.
pub struct Context {
    /// The operator's client (its ServiceAccount in the cluster).
    pub client: Client,
    /// Settings.
    pub config: OperatorConfig,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Who publishes events.
    pub reporter: Reporter,
    /// Since when each object's reconcile has been failing (by uid), so that a step that
    /// keeps failing ends its workflow instead of retrying forever.
    pub failing_since: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl Context {
    /// How the operator opens repositories (its cache, its identity in snapshots).
    pub fn open_options(&self) -> OpenOptions {
        OpenOptions::new(
            self.config.cache_dir.clone(),
            self.config.identity.clone(),
            "coffer-operator".to_string(),
        )
    }

    /// Publishes an event about `obj`; a failure to publish is logged, never fatal.
    pub async fn event<K>(&self, obj: &K, type_: EventType, reason: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(truncate(note, 1000)),
            action: reason.to_string(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(reason, error = %e, "cannot publish an event");
        }
    }
}

/// `s` cut to at most `max` bytes at a character boundary, with "..." when cut.
pub fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max.saturating_sub(3);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

/// A step of a reconcile, as [`with_finalizer`] runs it.
pub type Step =
    futures::future::BoxFuture<'static, crate::Result<kube::runtime::controller::Action>>;

/// Runs `apply` (or, once the object is being deleted, `cleanup`) under finalizer `name`
/// on `obj`: kube-runtime's finalizer helper with the operator's error type.
pub async fn with_finalizer<K>(
    ctx: Arc<Context>,
    obj: Arc<K>,
    name: &str,
    apply: fn(Arc<K>, Arc<Context>) -> Step,
    cleanup: fn(Arc<K>, Arc<Context>) -> Step,
) -> crate::Result<kube::runtime::controller::Action>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    use kube::runtime::finalizer::{Error as FinalizerError, Event, finalizer};
    let ns = obj.meta().namespace.clone().unwrap_or_default();
    let api: kube::Api<K> = kube::Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, name, obj, |event| match event {
        Event::Apply(o) => apply(o, ctx.clone()),
        Event::Cleanup(o) => cleanup(o, ctx.clone()),
    })
    .await
    .map_err(|e| match e {
        FinalizerError::ApplyFailed(e) | FinalizerError::CleanupFailed(e) => e,
        other => crate::Error::Failed(other.to_string()),
    })
}
