//! Applying a plan: rollback deletions first, then the objects step by step, the objects
//! of one step concurrently (they do not depend on each other; see
//! [`PlannedObject::step`]). Owner references are set from the new uids of the owners
//! restored in earlier steps. Objects that already exist are compared with what the
//! target holds now, not when the plan was made, so a plan stored and applied later still
//! does the right thing; an object that appeared in the meantime follows the plan's
//! existing-object policy.
//!
//! A plan may come from a file, so it is checked first: its format, and that every
//! object is addressable (valid names, a body that matches them) before any request.

use std::collections::BTreeMap;

use coffer_repo::progress::{SharedProgress, Unit};
use futures::{StreamExt, stream};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams, PropagationPolicy};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt};
use serde_json::Value;

use super::plan::api_message;
use super::{
    Action, ApplyOptions, ExistingPolicy, ObjectResult, Outcome, PLAN_FORMAT, PlannedDeletion,
    PlannedObject, RestorePlan, RestoreReport,
};
use crate::client::Cluster;
use crate::collect::with_type;
use crate::discovery::{ServedResource, split_api_version};
use crate::names::{dns_label_problem, path_segment_problem};
use crate::sanitize::sanitize;
use crate::{Error, Result};

/// Stored uid to (new uid, new name) of the objects restored or found so far.
type UidMap = BTreeMap<String, (String, String)>;

/// Runs (or, with `opts.dry_run`, validates with the server's dry run) a plan. One
/// object's failure is its result; the others go on. Errors are for the plan as a whole:
/// a plan of another format, an object it cannot address, or a plan made for another
/// cluster.
pub async fn apply(
    cluster: &Cluster,
    plan: &RestorePlan,
    opts: &ApplyOptions,
    progress: &SharedProgress,
) -> Result<RestoreReport> {
    check_plan(plan)?;
    if let (Some(planned), Some(here)) = (&plan.target.uid, cluster.uid().await?)
        && *planned != here
    {
        return Err(Error::Plan(format!(
            "the plan was made for another cluster ({}, kube-system uid {planned}); this one ({}) has uid {here}: make a new plan against it",
            plan.target.server,
            cluster.server()
        )));
    }
    let client = cluster.client();
    let in_flight = opts.concurrency.max(1);
    let total = plan.failures.len() + plan.deletions.len() + plan.objects.len();
    progress.stage("restoring", Unit::Items, Some(total as u64));
    let mut results: Vec<ObjectResult> = Vec::with_capacity(total);
    for f in &plan.failures {
        progress.warn(&f.display(), f.reason.as_deref().unwrap_or("failed"));
        results.push(f.clone());
    }
    progress.advance(plan.failures.len() as u64);

    // Indices, not references, as stream items: the future stays Send for callers that
    // spawn it (a closure over `&T` items is not general enough for Send).
    let mut deletions = stream::iter(0..plan.deletions.len())
        .map(|i| run_deletion(client, &plan.deletions[i], opts))
        .buffered(in_flight);
    while let Some(r) = deletions.next().await {
        report(progress, &r);
        results.push(r);
    }
    drop(deletions);

    let mut uid_map = UidMap::new();
    for step in plan.objects.chunk_by(|a, b| a.step == b.step) {
        let started = std::time::Instant::now();
        let mut outcomes = Vec::with_capacity(step.len());
        {
            let known = &uid_map;
            let mut runs = stream::iter(0..step.len())
                .map(|i| run_object(client, &step[i], opts, plan.existing, known))
                .buffered(in_flight);
            while let Some((r, found)) = runs.next().await {
                report(progress, &r);
                outcomes.push((r, found));
            }
        }
        for (r, found) in outcomes {
            if let Some((old, new)) = found {
                uid_map.insert(old, new);
            }
            results.push(r);
        }
        tracing::debug!(
            step = step.first().map_or(0, |o| o.step),
            objects = step.len(),
            seconds = started.elapsed().as_secs_f64(),
            "applied a step"
        );
    }

    let mut summary = BTreeMap::new();
    for r in &results {
        *summary.entry(r.result.as_str().to_string()).or_insert(0) += 1;
    }
    let success = results.iter().all(|r| r.result != Outcome::Failed);
    Ok(RestoreReport {
        snapshot_id: plan.snapshot_id.clone(),
        dry_run: opts.dry_run,
        results,
        missing_dependencies: plan.missing_dependencies.clone(),
        undecided_references: plan.undecided_references.clone(),
        warnings: plan.warnings.clone(),
        summary,
        success,
    })
}

fn report(progress: &SharedProgress, r: &ObjectResult) {
    if r.result == Outcome::Failed {
        progress.warn(&r.display(), r.reason.as_deref().unwrap_or("failed"));
    }
    progress.advance(1);
}

/// Checks a plan before any request: its format, and that every object is addressable.
pub fn check_plan(plan: &RestorePlan) -> Result<()> {
    if plan.format != PLAN_FORMAT {
        return Err(Error::Plan(format!(
            "the plan has format {}, this coffer applies format {PLAN_FORMAT}; make a new plan with this coffer",
            plan.format
        )));
    }
    let bad = |what: String, why: String| Error::Plan(format!("the plan's {what}: {why}"));
    for (i, o) in plan.objects.iter().enumerate() {
        let what = || format!("object {} ({})", i + 1, o.display());
        if o.action == Action::Delete {
            return Err(bad(what(), "delete belongs in the deletions".into()));
        }
        check_address(
            &o.api_version,
            &o.resource,
            o.namespaced,
            o.namespace.as_deref(),
            &o.name,
        )
        .map_err(|why| bad(what(), why))?;
        let field = |p: &str| o.object.pointer(p).and_then(Value::as_str);
        let matches = field("/apiVersion") == Some(o.api_version.as_str())
            && field("/kind") == Some(o.kind.as_str())
            && field("/metadata/name") == Some(o.name.as_str())
            && (!o.namespaced || field("/metadata/namespace") == o.namespace.as_deref());
        if !matches {
            return Err(bad(
                what(),
                "its body's apiVersion, kind, namespace or name differ from the plan's".into(),
            ));
        }
    }
    for (i, d) in plan.deletions.iter().enumerate() {
        check_address(
            &d.api_version,
            &d.resource,
            d.namespaced,
            d.namespace.as_deref(),
            &d.name,
        )
        .map_err(|why| bad(format!("deletion {}", i + 1), why))?;
    }
    Ok(())
}

fn check_address(
    api_version: &str,
    resource: &str,
    namespaced: bool,
    namespace: Option<&str>,
    name: &str,
) -> std::result::Result<(), String> {
    let (group, version) = split_api_version(api_version);
    for (what, v) in [("version", version), ("resource", resource), ("name", name)] {
        if let Some(p) = path_segment_problem(v) {
            return Err(format!("{what} {v:?}: {p}"));
        }
    }
    if !group.is_empty()
        && let Some(p) = path_segment_problem(group)
    {
        return Err(format!("group {group:?}: {p}"));
    }
    match namespace {
        Some(ns) if namespaced => {
            if let Some(p) = dns_label_problem(ns) {
                return Err(format!("namespace {ns:?}: {p}"));
            }
        }
        None if namespaced => return Err("a namespaced object without a namespace".into()),
        _ => {}
    }
    Ok(())
}

fn api_for(client: &Client, res: &ServedResource, ns: Option<&str>) -> Api<DynamicObject> {
    let ar = res.api_resource();
    match ns {
        Some(ns) if res.namespaced => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    }
}

async fn run_deletion(client: &Client, d: &PlannedDeletion, opts: &ApplyOptions) -> ObjectResult {
    let api = api_for(client, &d.served(), d.namespace.as_deref());
    let dp = DeleteParams {
        dry_run: opts.dry_run,
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    match api.delete(&d.name, &dp).await {
        Ok(_) if opts.dry_run => d.result(Outcome::Planned, d.reason.clone()),
        Ok(_) => d.result(Outcome::Deleted, d.reason.clone()),
        Err(kube::Error::Api(ae)) if ae.code == 404 => {
            d.result(Outcome::Deleted, "already gone".into())
        }
        Err(e) => d.result(Outcome::Failed, api_message(&e.into())),
    }
}

/// The owner references that point at objects restored (or found) so far, rewritten to
/// their new uids and names; the rest are dropped.
fn set_owners(body: &mut Value, owners: &[Value], known: &UidMap) {
    let owners: Vec<Value> = owners
        .iter()
        .filter_map(|o| {
            let (uid, name) = known.get(o.get("uid")?.as_str()?)?;
            let mut o = o.clone();
            let m = o.as_object_mut()?;
            m.insert("uid".into(), Value::String(uid.clone()));
            m.insert("name".into(), Value::String(name.clone()));
            Some(o)
        })
        .collect();
    if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        if owners.is_empty() {
            meta.remove("ownerReferences");
        } else {
            meta.insert("ownerReferences".into(), Value::Array(owners));
        }
    }
}

/// What an object's run found: its stored uid and its uid and name in the target.
type Found = Option<(String, (String, String))>;

/// Runs (or dry-runs) one planned object.
async fn run_object(
    client: &Client,
    o: &PlannedObject,
    opts: &ApplyOptions,
    existing: ExistingPolicy,
    known: &UidMap,
) -> (ObjectResult, Found) {
    let found =
        |uid: Option<String>| -> Found { Some((o.stored_uid.clone()?, (uid?, o.name.clone()))) };
    if o.action == Action::Skip {
        return (o.result(Outcome::Skipped, None), found(o.live_uid.clone()));
    }
    let mut body = o.object.clone();
    set_owners(&mut body, &o.owners, known);
    let res = o.served();
    let api = api_for(client, &res, o.namespace.as_deref());
    let run = Run {
        api: &api,
        o,
        opts,
        body: &body,
    };
    let attempt = match o.action {
        Action::Create => run.create(existing).await,
        Action::Update | Action::Recreate => match run.live().await {
            Ok(Some(live)) if o.action == Action::Update => run.update(&live).await,
            Ok(Some(live)) => run.recreate(&live).await,
            // Gone since the plan was made: create it.
            Ok(None) => run.create(existing).await,
            Err(e) => Err(e),
        },
        Action::Skip | Action::Delete => Err("not an action for a planned object".into()),
    };
    match attempt {
        Ok(Done {
            action,
            outcome,
            uid,
            reason,
        }) => {
            let mut r = o.result(outcome, reason);
            r.action = action;
            let is_crd =
                res.group == "apiextensions.k8s.io" && res.kind == "CustomResourceDefinition";
            if is_crd
                && !opts.dry_run
                && matches!(
                    outcome,
                    Outcome::Created | Outcome::Updated | Outcome::Recreated
                )
                && let Err(e) = wait_established(client, &o.name, opts).await
            {
                r.result = Outcome::Failed;
                r.reason = Some(e);
            }
            (r, found(uid))
        }
        Err(reason) => (o.result(Outcome::Failed, Some(reason)), None),
    }
}

/// What one run did.
struct Done {
    action: Action,
    outcome: Outcome,
    uid: Option<String>,
    reason: Option<String>,
}

struct Run<'a> {
    api: &'a Api<DynamicObject>,
    o: &'a PlannedObject,
    opts: &'a ApplyOptions,
    body: &'a Value,
}

impl Run<'_> {
    fn post_params(&self) -> PostParams {
        PostParams {
            dry_run: self.opts.dry_run,
            field_manager: Some("coffer".into()),
        }
    }

    fn desired(&self, body: &Value) -> std::result::Result<DynamicObject, String> {
        serde_json::from_value(body.clone()).map_err(|e| format!("not a valid object: {e}"))
    }

    fn done(&self, action: Action, outcome: Outcome, uid: Option<String>) -> Done {
        Done {
            action,
            outcome,
            uid,
            reason: None,
        }
    }

    /// The object as the target holds it now.
    async fn live(&self) -> std::result::Result<Option<Value>, String> {
        match self.api.get_opt(&self.o.name).await {
            Ok(l) => Ok(l.map(|l| with_type(&self.o.served(), l))),
            Err(e) => Err(format!(
                "cannot read it in the target: {}",
                api_message(&e.into())
            )),
        }
    }

    async fn create(&self, existing: ExistingPolicy) -> std::result::Result<Done, String> {
        let desired = self.desired(self.body)?;
        match self.api.create(&self.post_params(), &desired).await {
            Ok(created) => Ok(self.done(
                Action::Create,
                if self.opts.dry_run {
                    Outcome::Planned
                } else {
                    Outcome::Created
                },
                created.metadata.uid,
            )),
            Err(kube::Error::Api(ae)) if self.opts.dry_run && dry_run_cannot_see(&ae.message) => {
                Ok(self.done(Action::Create, Outcome::Planned, None))
            }
            // Created meanwhile, typically by the cluster itself (a namespace's default
            // ServiceAccount): treat it as existing.
            Err(kube::Error::Api(ae)) if ae.code == 409 && !self.opts.dry_run => {
                match self.live().await? {
                    Some(live) if existing == ExistingPolicy::Update => self.update(&live).await,
                    Some(live) if existing == ExistingPolicy::Recreate => {
                        self.recreate(&live).await
                    }
                    Some(live) => Ok(Done {
                        action: Action::Skip,
                        outcome: Outcome::Skipped,
                        uid: live["metadata"]["uid"].as_str().map(str::to_string),
                        reason: Some(
                            "it appeared in the target during the restore (--existing skip)".into(),
                        ),
                    }),
                    None => Err(crate::one_line(&ae.message)),
                }
            }
            Err(e) => Err(api_message(&e.into())),
        }
    }

    async fn update(&self, live: &Value) -> std::result::Result<Done, String> {
        let (group, kind) = (self.o.served().group, self.o.kind.as_str());
        let live_uid = live["metadata"]["uid"].as_str().map(str::to_string);
        let mut want = self.body.clone();
        keep_server_fields(&group, kind, &mut want, live);
        // Unchanged when the live object, cleaned the same way, is what we would write:
        // then nothing is written (a replace would still record a new field manager).
        let mut live_clean = live.clone();
        sanitize(&group, kind, &mut live_clean, &self.o.sanitized_with);
        keep_server_fields(&group, kind, &mut live_clean, live);
        if live_clean == want {
            return Ok(Done {
                action: Action::Update,
                outcome: if self.opts.dry_run {
                    Outcome::Planned
                } else {
                    Outcome::Unchanged
                },
                uid: live_uid,
                reason: Some("it already matches the backup".into()),
            });
        }
        let want = self.desired(&want)?;
        match self
            .api
            .replace(&self.o.name, &self.post_params(), &want)
            .await
        {
            Ok(after) => {
                let same = after.metadata.resource_version.as_deref()
                    == live["metadata"]["resourceVersion"].as_str();
                let outcome = match (self.opts.dry_run, same) {
                    (true, _) => Outcome::Planned,
                    (false, true) => Outcome::Unchanged,
                    (false, false) => Outcome::Updated,
                };
                Ok(self.done(Action::Update, outcome, after.metadata.uid.or(live_uid)))
            }
            Err(e) => Err(format!(
                "{} (try --existing recreate if the field cannot change)",
                api_message(&e.into())
            )),
        }
    }

    async fn recreate(&self, live: &Value) -> std::result::Result<Done, String> {
        let dp = DeleteParams {
            dry_run: self.opts.dry_run,
            propagation_policy: Some(PropagationPolicy::Foreground),
            ..Default::default()
        };
        if let Err(e) = self.api.delete(&self.o.name, &dp).await {
            return Err(format!("could not delete it: {}", api_message(&e.into())));
        }
        if self.opts.dry_run {
            return Ok(self.done(Action::Recreate, Outcome::Planned, None));
        }
        let uid = live["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let gone = await_condition(self.api.clone(), &self.o.name, conditions::is_deleted(&uid));
        match tokio::time::timeout(self.opts.wait_timeout, gone).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(format!(
                    "deleted, but could not watch it go: {}",
                    crate::one_line_cause(&e)
                ));
            }
            Err(_) => {
                return Err(format!(
                    "deleted but still present after {}s (a finalizer holds it)",
                    self.opts.wait_timeout.as_secs()
                ));
            }
        }
        let desired = self.desired(self.body)?;
        match self.api.create(&self.post_params(), &desired).await {
            Ok(c) => Ok(self.done(Action::Recreate, Outcome::Recreated, c.metadata.uid)),
            Err(e) => Err(format!(
                "deleted, but creating it again failed: {}",
                api_message(&e.into())
            )),
        }
    }
}

/// Dry-run errors that come from the plan's own earlier steps not having happened (a
/// namespace or CRD this restore creates first).
fn dry_run_cannot_see(message: &str) -> bool {
    message.contains("namespaces") && message.contains("not found")
        || message.contains("the server could not find the requested resource")
        || message.contains("404 page not found")
}

/// Waits until a CRD reports Established, so that its custom resources can be created.
async fn wait_established(
    client: &Client,
    name: &str,
    opts: &ApplyOptions,
) -> std::result::Result<(), String> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let established = await_condition(api, name, conditions::is_crd_established());
    match tokio::time::timeout(opts.wait_timeout, established).await {
        Ok(Ok(Some(crd))) if !crd.name_any().is_empty() => Ok(()),
        Ok(Ok(_)) => Err("created, but it is gone again".into()),
        Ok(Err(e)) => Err(format!(
            "created, but could not watch it become Established: {}",
            crate::one_line_cause(&e)
        )),
        Err(_) => Err(format!(
            "created, but not Established after {}s",
            opts.wait_timeout.as_secs()
        )),
    }
}

/// Sets `path` in `v` to `new`, creating maps on the way; gives up (false) where a
/// non-map is in the way.
fn set_at(v: &mut Value, path: &[&str], new: Value) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut cur = v;
    for p in parents {
        let Some(m) = cur.as_object_mut() else {
            return false;
        };
        cur = m
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    match cur.as_object_mut() {
        Some(m) => {
            m.insert(last.to_string(), new);
            true
        }
        None => false,
    }
}

/// Fields the server assigned or that cannot change, carried from the live object into
/// the replacement.
fn keep_server_fields(group: &str, kind: &str, desired: &mut Value, live: &Value) {
    let copy = |desired: &mut Value, ptr: &str| {
        if desired.pointer(ptr).is_none()
            && let Some(v) = live.pointer(ptr)
        {
            let path: Vec<&str> = ptr.split('/').skip(1).collect();
            set_at(desired, &path, v.clone());
        }
    };
    set_at(
        desired,
        &["metadata", "resourceVersion"],
        live["metadata"]["resourceVersion"].clone(),
    );
    match (group, kind) {
        ("", "Service") => {
            for p in [
                "/spec/clusterIP",
                "/spec/clusterIPs",
                "/spec/ipFamilies",
                "/spec/ipFamilyPolicy",
                "/spec/healthCheckNodePort",
            ] {
                copy(desired, p);
            }
            // Node ports: keep the live port's for the same port number.
            if let (Some(want), Some(have)) = (
                desired
                    .pointer_mut("/spec/ports")
                    .and_then(Value::as_array_mut),
                live.pointer("/spec/ports").and_then(Value::as_array),
            ) {
                for p in want {
                    if p.get("nodePort").is_none()
                        && let Some(l) = have
                            .iter()
                            .find(|l| l["port"] == p["port"] && l["protocol"] == p["protocol"])
                        && let Some(np) = l.get("nodePort")
                        && let Some(p) = p.as_object_mut()
                    {
                        p.insert("nodePort".into(), np.clone());
                    }
                }
            }
        }
        ("", "PersistentVolumeClaim") => {
            // Only the requested size may change on a bound claim.
            let requests = desired.pointer("/spec/resources/requests").cloned();
            set_at(desired, &["spec"], live["spec"].clone());
            if let Some(r) = requests {
                set_at(desired, &["spec", "resources", "requests"], r);
            }
            // The binding annotations the controllers set stay as they are.
            if let Some(live_a) = live
                .pointer("/metadata/annotations")
                .and_then(Value::as_object)
            {
                for (k, v) in live_a {
                    if k.starts_with("pv.kubernetes.io/") || k.starts_with("volume.") {
                        set_at(desired, &["metadata", "annotations", k], v.clone());
                    }
                }
            }
        }
        ("", "PersistentVolume") => copy(desired, "/spec/claimRef"),
        ("", "Pod") => copy(desired, "/spec/nodeName"),
        ("batch", "Job") => {
            copy(desired, "/spec/selector");
            if let Some(l) = live
                .pointer("/spec/template/metadata/labels")
                .and_then(Value::as_object)
            {
                for k in ["controller-uid", "batch.kubernetes.io/controller-uid"] {
                    if let Some(v) = l.get(k) {
                        set_at(
                            desired,
                            &["spec", "template", "metadata", "labels", k],
                            v.clone(),
                        );
                    }
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn owners_point_at_new_uids_or_go() {
        let mut body = json!({"metadata": {"name": "cm"}});
        let owners = vec![
            json!({"apiVersion": "example.com/v1", "kind": "Widget", "name": "w", "uid": "old-1"}),
            json!({"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "old-2"}),
            json!("not an owner reference"),
        ];
        let mut known = UidMap::new();
        known.insert("old-1".into(), ("new-1".into(), "w".into()));
        set_owners(&mut body, &owners, &known);
        assert_eq!(
            body["metadata"]["ownerReferences"],
            json!([{"apiVersion": "example.com/v1", "kind": "Widget", "name": "w", "uid": "new-1"}])
        );
        set_owners(&mut body, &owners, &UidMap::new());
        assert!(body["metadata"].get("ownerReferences").is_none());
    }

    #[test]
    fn server_fields_never_panic_on_odd_bodies() {
        let live = json!({"metadata": {"resourceVersion": "7"},
            "spec": {"selector": {"a": "b"}, "template": {"metadata": {"labels": {"controller-uid": "u"}}}}});
        for mut desired in [
            json!({"metadata": {}, "spec": "a string"}),
            json!({"metadata": {}, "spec": {"template": 3}}),
            json!({"metadata": 1}),
            json!([]),
        ] {
            keep_server_fields("batch", "Job", &mut desired, &live);
            keep_server_fields("", "PersistentVolumeClaim", &mut desired, &live);
            keep_server_fields("", "Service", &mut desired, &live);
        }
        let mut d = json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {}}}});
        keep_server_fields("batch", "Job", &mut d, &live);
        assert_eq!(d["metadata"]["resourceVersion"], "7");
        assert_eq!(d["spec"]["selector"], json!({"a": "b"}));
        assert_eq!(
            d["spec"]["template"]["metadata"]["labels"]["controller-uid"],
            "u"
        );
    }
}
