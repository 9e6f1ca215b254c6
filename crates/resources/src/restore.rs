//! The restore planner and runner.
//!
//! A restore reads the catalog, selects entries, loads only their objects, and turns each
//! into the object to create in the target: converted to a served API version, moved by
//! the namespace mapping, renamed by `--clone`, sanitised, mapped (storage classes, image
//! registries) and transformed. It checks dependencies, compares with what the target
//! holds (the existing-object policy), adds rollback deletions, orders everything (see
//! [`crate::order`]) and then either prints the plan validated by the server's dry run, or
//! runs it object by object: one failure is reported and the rest go on.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use coffer_repo::{Repository, Snapshot};
use futures::{StreamExt, stream};
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams, PropagationPolicy};
use serde::Serialize;
use serde_json::{Value, json};

use crate::archive::{Catalog, Entry};
use crate::collect::{
    get_object, is_builtin_group, list_all, name_of, namespace_of, object_not_stored,
};
use crate::discovery::{Discovered, ServedResource, split_api_version};
use crate::order::{Orderable, rank, restore_order};
use crate::refs;
use crate::sanitize::{SanitizeOptions, sanitize};
use crate::selector::LabelSelector;
use crate::transform::{ObjectInfo, TransformSet, map_image_registries, map_storage_classes};
use crate::{Error, Result};

/// What to do with an object that already exists in the target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExistingPolicy {
    /// Leave it as it is and report it.
    #[default]
    Skip,
    /// Replace it with the backed-up state (server-assigned fields kept).
    Update,
    /// Delete it and create it again.
    Recreate,
}

impl std::str::FromStr for ExistingPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "skip" => Ok(Self::Skip),
            "update" => Ok(Self::Update),
            "recreate" => Ok(Self::Recreate),
            _ => Err(Error::Invalid(format!(
                "--existing {s:?}: expected skip, update or recreate"
            ))),
        }
    }
}

/// Everything a restore can be asked.
#[derive(Default)]
pub struct RestoreOptions {
    /// Only objects from these source namespaces (and cluster-scoped ones).
    pub namespaces: Vec<String>,
    pub namespace_mapping: BTreeMap<String, String>,
    pub include_resources: Vec<String>,
    pub exclude_resources: Vec<String>,
    pub selector: Option<String>,
    /// `KIND/NAME` of the only objects to restore.
    pub only: Vec<String>,
    pub transforms: TransformSet,
    pub storage_class_mapping: BTreeMap<String, String>,
    pub image_registry_mapping: BTreeMap<String, String>,
    /// None: `update` with --rollback, `skip` otherwise.
    pub existing: Option<ExistingPolicy>,
    pub rollback: bool,
    pub clone_suffix: Option<String>,
    pub dry_run: bool,
    pub preserve_node_ports: bool,
    /// How long to wait for a CRD to be Established or an object to be gone.
    pub wait_timeout: Duration,
}

/// The outcome for one object.
#[derive(Clone, Debug, Serialize)]
pub struct ObjectResult {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    /// The stored object's namespace/name when the restore moved or renamed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// create, update, recreate, skip or delete.
    pub action: String,
    /// created, updated, unchanged, recreated, skipped, deleted, failed; with --dry-run:
    /// planned (the server's dry run accepted it) or failed.
    pub result: String,
    /// Why (for skip, failed, delete), in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Conversions and transforms applied.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// A restore's report.
#[derive(Clone, Debug, Serialize)]
pub struct RestoreReport {
    pub snapshot_id: String,
    pub dry_run: bool,
    pub results: Vec<ObjectResult>,
    /// References that point at objects neither restored nor present in the target.
    pub missing_dependencies: Vec<String>,
    pub warnings: Vec<String>,
    /// Count per result.
    pub summary: BTreeMap<String, usize>,
    /// Whether every object succeeded.
    pub success: bool,
}

/// One object on its way through the planner.
struct Item {
    res: ServedResource,
    /// The stored object's uid and owners (for ordering and owner rewriting).
    old_uid: Option<String>,
    owners: Vec<Value>,
    src_ns: Option<String>,
    src_name: String,
    object: Value,
    action: &'static str,
    reason: Option<String>,
    notes: Vec<String>,
    /// The live object, when it exists.
    live: Option<Value>,
    failed: bool,
    /// How the object was sanitised (the live object is compared the same way).
    sanitized_with: SanitizeOptions,
}

impl Item {
    /// A stored object about to be planned (created unless the plan decides otherwise).
    fn stored(e: &Entry, res: ServedResource, object: Value, notes: Vec<String>) -> Item {
        Item {
            old_uid: object["metadata"]["uid"].as_str().map(str::to_string),
            owners: object["metadata"]["ownerReferences"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            src_ns: e.namespace.clone(),
            src_name: e.name.clone(),
            res,
            object,
            action: "create",
            reason: None,
            notes,
            live: None,
            failed: false,
            sanitized_with: SanitizeOptions::default(),
        }
    }

    fn tgt_ns(&self) -> Option<&str> {
        namespace_of(&self.object)
    }
    fn tgt_name(&self) -> &str {
        name_of(&self.object)
    }
    fn result(&self, result: &str, reason: Option<String>) -> ObjectResult {
        let moved = self.src_ns.as_deref() != self.tgt_ns() || self.src_name != self.tgt_name();
        ObjectResult {
            api_version: self.res.api_version(),
            kind: self.res.kind.clone(),
            namespace: self.tgt_ns().map(str::to_string),
            name: self.tgt_name().to_string(),
            from: moved.then(|| match &self.src_ns {
                Some(ns) => format!("{ns}/{}", self.src_name),
                None => self.src_name.clone(),
            }),
            action: self.action.to_string(),
            result: result.to_string(),
            reason: reason.or_else(|| self.reason.clone()),
            notes: self.notes.clone(),
        }
    }
}

fn api_for(client: &Client, res: &ServedResource, ns: Option<&str>) -> Api<DynamicObject> {
    let ar = res.api_resource();
    match ns {
        Some(ns) if res.namespaced => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    }
}

fn kube_message(e: &Error) -> String {
    match e {
        Error::Kube(kube::Error::Api(ae)) => ae.message.clone(),
        e => e.to_string(),
    }
}

/// Why an object is never restored, even though it was stored.
fn never_restored(group: &str, kind: &str, obj: &Value) -> Option<&'static str> {
    let controller_owner = obj["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["controller"].as_bool() == Some(true));
    let owner_kind = controller_owner.and_then(|o| o["kind"].as_str());
    match (group, kind, owner_kind) {
        ("", "Pod", Some(_)) => Some("its controller creates its pods again"),
        ("apps", "ReplicaSet", Some("Deployment")) => {
            Some("its Deployment creates its ReplicaSets again")
        }
        ("batch", "Job", Some("CronJob")) => Some("its CronJob creates its Jobs again"),
        ("apps", "ControllerRevision", _) => Some("controllers record their revisions again"),
        ("", "PersistentVolumeClaim", _)
            if obj["metadata"]["labels"]["coffer.dev/restore-helper"].is_string() =>
        {
            Some("a Coffer helper claim")
        }
        _ => None,
    }
}

/// Plans and (unless `dry_run`) runs a restore.
pub async fn restore(
    repo: &Repository,
    snap: &Snapshot,
    client: &Client,
    opts: &RestoreOptions,
) -> Result<RestoreReport> {
    if opts.rollback && !opts.only.is_empty() {
        return Err(Error::Invalid(
            "--rollback cannot be combined with --only: a rollback reverts a whole scope (narrow it with --namespace, --include-resources or --selector)".into(),
        ));
    }
    let selector = opts
        .selector
        .as_deref()
        .map(crate::selector::parse)
        .transpose()?;
    let existing = opts.existing.unwrap_or(if opts.rollback {
        ExistingPolicy::Update
    } else {
        ExistingPolicy::Skip
    });
    let catalog = Catalog::load(repo, snap).await?;
    let mut disc = Discovered::from_cluster(client).await?;
    let mut warnings = Vec::new();

    // 1. Select entries.
    let chosen = select_entries(&catalog, opts, selector.as_ref())?;

    // 2. Load the chosen objects (only these).
    let entries = &catalog.entries;
    let loaded: Vec<(usize, Result<Value>)> = stream::iter(chosen.iter().copied())
        .map(|i| async move { (i, Catalog::read_object(repo, &entries[i]).await) })
        .buffered(16)
        .collect()
        .await;
    let mut items: Vec<Item> = Vec::new();
    let mut results_pre: Vec<ObjectResult> = Vec::new();
    for (i, obj) in loaded {
        let e = &catalog.entries[i];
        let obj = obj?;
        // Convert to a version the target serves.
        let (obj, res, notes) = match resolve_target(&disc, e, obj) {
            Ok(t) => t,
            Err(reason) => {
                results_pre.push(failed_entry(e, reason));
                continue;
            }
        };
        if res.group == "apiextensions.k8s.io" && res.kind == "CustomResourceDefinition" {
            disc.add_crd(&obj);
        }
        items.push(Item::stored(e, res, obj, notes));
    }
    // Custom resources whose CRD the loop above only met later: resolve them again now
    // that every restored CRD is known.
    let mut retry = Vec::new();
    results_pre.retain(|r| {
        let unresolved = r.reason.as_deref().is_some_and(|m| m.starts_with(UNSERVED));
        if unresolved {
            retry.push(r.clone());
        }
        !unresolved
    });
    for r in retry {
        let e = catalog
            .entries
            .iter()
            .find(|e| {
                e.api_version == r.api_version
                    && e.kind == r.kind
                    && e.namespace == r.namespace
                    && e.name == r.name
            })
            .expect("failed entries come from the catalog");
        let obj = Catalog::read_object(repo, e).await?;
        match resolve_target(&disc, e, obj) {
            Ok((obj, res, notes)) => items.push(Item::stored(e, res, obj, notes)),
            Err(reason) => results_pre.push(failed_entry(e, reason)),
        }
    }

    // 3. What is never restored.
    for it in &mut items {
        if let Some(why) = never_restored(&it.res.group, &it.res.kind, &it.object)
            .or_else(|| object_not_stored(&it.res, &it.object))
        {
            it.action = "skip";
            it.reason = Some(why.to_string());
        }
    }

    // 4. PersistentVolumes: restore only those that do not exist and whose storage
    // outlived them (not dynamically provisioned with reclaim policy Delete).
    let mut restored_pvs = BTreeSet::new();
    for it in items.iter_mut().filter(|it| {
        it.action == "create" && it.res.group.is_empty() && it.res.kind == "PersistentVolume"
    }) {
        let live = get_object(client, &it.res, None, &it.src_name).await?;
        let dynamic_delete = it.object["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"]
            .is_string()
            && it.object["spec"]["persistentVolumeReclaimPolicy"] != "Retain";
        if live.is_some() {
            it.action = "skip";
            it.reason = Some("the volume exists in the target; its claim binds to a new volume if it cannot use it".into());
        } else if dynamic_delete {
            it.action = "skip";
            it.reason = Some("dynamically provisioned with reclaim policy Delete: its storage went with it, so its claim gets a new volume (restore the data with Coffer's volume restore)".into());
        } else if opts.clone_suffix.is_none() {
            restored_pvs.insert(it.src_name.clone());
        }
    }

    // 5. Rename map for --clone: (group, kind, target namespace, old name) -> new name.
    let map_ns = |ns: &str| -> String {
        opts.namespace_mapping
            .get(ns)
            .cloned()
            .unwrap_or_else(|| ns.to_string())
    };
    let mut renames: BTreeMap<(String, String, Option<String>, String), String> = BTreeMap::new();
    if let Some(suffix) = &opts.clone_suffix {
        for it in items.iter().filter(|it| it.action != "skip") {
            if clone_renames(&it.res) {
                renames.insert(
                    (
                        it.res.group.clone(),
                        it.res.kind.clone(),
                        it.src_ns.as_deref().map(map_ns),
                        it.src_name.clone(),
                    ),
                    format!("{}-{suffix}", it.src_name),
                );
            }
        }
    }

    // 6. Transform each object into what the target gets.
    let sanitize_base = SanitizeOptions {
        preserve_node_ports: opts.preserve_node_ports,
        ..Default::default()
    };
    for it in items.iter_mut().filter(|it| it.action != "skip") {
        if let Err(reason) = prepare(
            it,
            opts,
            &map_ns,
            &renames,
            &restored_pvs,
            &sanitize_base,
            &snap.id.to_hex(),
            &catalog,
        ) {
            it.failed = true;
            it.reason = Some(reason);
        }
    }

    // 7. Namespaces the restored objects land in.
    let ns_res = disc
        .by_kind("", "Namespace")
        .ok_or_else(|| Error::Invalid("the target cluster serves no namespaces".into()))?
        .clone();
    let mut needed_ns: BTreeSet<String> = items
        .iter()
        .filter(|it| it.action != "skip" && it.res.namespaced)
        .filter_map(|it| it.tgt_ns().map(str::to_string))
        .collect();
    for it in items
        .iter()
        .filter(|it| it.res.group.is_empty() && it.res.kind == "Namespace")
    {
        needed_ns.remove(it.tgt_name());
    }
    for ns in needed_ns {
        if get_object(client, &ns_res, None, &ns).await?.is_none() {
            items.push(Item {
                res: ns_res.clone(),
                old_uid: None,
                owners: Vec::new(),
                src_ns: None,
                src_name: ns.clone(),
                object: json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                action: "create",
                reason: Some("restored objects go into it".into()),
                notes: Vec::new(),
                live: None,
                failed: false,
                sanitized_with: SanitizeOptions::default(),
            });
        }
    }

    // 8. Compare with the target: the existing-object policy.
    let lookups: Vec<Result<Option<Value>>> = stream::iter(items.iter())
        .map(|it| async move {
            if it.action == "skip" || it.failed {
                return Ok(None);
            }
            get_object(client, &it.res, it.tgt_ns(), it.tgt_name()).await
        })
        .buffered(16)
        .collect()
        .await;
    for (it, live) in items.iter_mut().zip(lookups) {
        let live = match live {
            Ok(l) => l,
            Err(e) => {
                it.failed = true;
                it.reason = Some(format!(
                    "cannot read it in the target: {}",
                    kube_message(&e)
                ));
                continue;
            }
        };
        if let Some(l) = live {
            if l["metadata"]["deletionTimestamp"].is_string() {
                it.action = "skip";
                it.reason = Some(
                    "it is being deleted in the target; run the restore again once it is gone"
                        .into(),
                );
            } else {
                it.action = match existing {
                    ExistingPolicy::Skip => "skip",
                    ExistingPolicy::Update => "update",
                    ExistingPolicy::Recreate => "recreate",
                };
                if existing == ExistingPolicy::Skip {
                    it.reason = Some("it already exists in the target (--existing skip)".into());
                } else if it.res.group.is_empty() && it.res.kind == "Namespace" {
                    // Namespaces are containers: never recreated (that would delete
                    // everything in them), only updated.
                    it.action = "update";
                }
            }
            it.live = Some(l);
        }
    }

    // 9. Dependencies of what is restored.
    let missing = missing_dependencies(client, &disc, &items, &catalog).await;

    // 10. Rollback deletions.
    let mut deletions = Vec::new();
    if opts.rollback {
        deletions = rollback_deletions(
            client,
            &disc,
            &catalog,
            opts,
            selector.as_ref(),
            &map_ns,
            &items,
            &mut warnings,
        )
        .await?;
    }

    // 11. Order.
    let orderables: Vec<Orderable> = items
        .iter()
        .map(|it| Orderable {
            rank: rank(&it.res.group, &it.res.kind, it.res.namespaced),
            key: (
                it.tgt_ns().unwrap_or_default().to_string(),
                it.res.kind.clone(),
                it.tgt_name().to_string(),
            ),
            uid: it.old_uid.as_deref(),
            owners: it.owners.iter().filter_map(|o| o["uid"].as_str()).collect(),
        })
        .collect();
    let order = restore_order(&orderables);

    // 12. Run (or validate) the plan: deletions first, then objects in order.
    let mut results = results_pre;
    let mut uid_map: BTreeMap<String, (String, String)> = BTreeMap::new();
    for d in &deletions {
        results.push(run_deletion(client, d, opts).await);
    }
    for i in order {
        let r = run_item(client, &mut items[i], opts, existing, &mut uid_map).await;
        results.push(r);
    }
    let mut summary = BTreeMap::new();
    for r in &results {
        *summary.entry(r.result.clone()).or_insert(0) += 1;
    }
    let success = results.iter().all(|r| r.result != "failed");
    Ok(RestoreReport {
        snapshot_id: snap.id.to_hex(),
        dry_run: opts.dry_run,
        results,
        missing_dependencies: missing,
        warnings,
        summary,
        success,
    })
}

const UNSERVED: &str = "not served by the target";

fn failed_entry(e: &Entry, reason: String) -> ObjectResult {
    ObjectResult {
        api_version: e.api_version.clone(),
        kind: e.kind.clone(),
        namespace: e.namespace.clone(),
        name: e.name.clone(),
        from: None,
        action: "create".into(),
        result: "failed".into(),
        reason: Some(reason),
        notes: Vec::new(),
    }
}

/// Which stored entries the options select (Namespace objects follow their contents).
fn select_entries(
    catalog: &Catalog,
    opts: &RestoreOptions,
    selector: Option<&LabelSelector>,
) -> Result<Vec<usize>> {
    for n in &opts.namespaces {
        if !catalog
            .entries
            .iter()
            .any(|e| e.namespace.as_deref() == Some(n.as_str()))
        {
            return Err(Error::Invalid(format!(
                "the backup holds nothing in namespace {n:?} (see `coffer resources list`)"
            )));
        }
    }
    let mut only_found = vec![false; opts.only.len()];
    let is_namespace = |e: &Entry| e.group().is_empty() && e.kind == "Namespace";
    let mut chosen: Vec<usize> = Vec::new();
    for (i, e) in catalog.entries.iter().enumerate() {
        if is_namespace(e) {
            continue;
        }
        if !opts.namespaces.is_empty()
            && !e
                .namespace
                .as_ref()
                .is_some_and(|ns| opts.namespaces.contains(ns))
        {
            continue;
        }
        if !opts.include_resources.is_empty()
            && !names(&opts.include_resources).any(|n| catalog.entry_answers_to(e, n))
        {
            continue;
        }
        if names(&opts.exclude_resources).any(|n| catalog.entry_answers_to(e, n)) {
            continue;
        }
        if let Some(sel) = selector
            && !sel.matches(&e.labels)
        {
            continue;
        }
        if !opts.only.is_empty() {
            let mut hit = false;
            for (k, spec) in opts.only.iter().enumerate() {
                let (kind, name) = spec.split_once('/').ok_or_else(|| {
                    Error::Invalid(format!(
                        "--only {spec:?} is not KIND/NAME (for example deployment/web)"
                    ))
                })?;
                if e.name == name && catalog.entry_answers_to(e, kind) {
                    only_found[k] = true;
                    hit = true;
                }
            }
            if !hit {
                continue;
            }
        }
        chosen.push(i);
    }
    if let Some(k) = only_found.iter().position(|f| !f) {
        return Err(Error::Invalid(format!(
            "--only {}: no such object in the backup (see `coffer resources list`)",
            opts.only[k]
        )));
    }
    // Namespace objects: those holding a chosen object, or (no --only) chosen by the
    // filters themselves; never when namespaces are excluded.
    let ns_of_chosen: BTreeSet<&str> = chosen
        .iter()
        .filter_map(|&i| catalog.entries[i].namespace.as_deref())
        .collect();
    let ns_excluded = names(&opts.exclude_resources).any(|n| {
        catalog
            .entries
            .iter()
            .find(|e| is_namespace(e))
            .is_some_and(|e| catalog.entry_answers_to(e, n))
    });
    for (i, e) in catalog.entries.iter().enumerate() {
        if is_namespace(e) && !ns_excluded && ns_of_chosen.contains(e.name.as_str()) {
            chosen.push(i);
        }
    }
    Ok(chosen)
}

fn names(list: &[String]) -> impl Iterator<Item = &str> {
    list.iter()
        .flat_map(|n| n.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
}

/// The object in a version the target serves, with the served resource and notes.
fn resolve_target(
    disc: &Discovered,
    e: &Entry,
    obj: Value,
) -> std::result::Result<(Value, ServedResource, Vec<String>), String> {
    if let Some(r) = disc.exact(&e.api_version, &e.kind) {
        return Ok((obj, r.clone(), Vec::new()));
    }
    let served = |api_version: &str, kind: &str| disc.exact(api_version, kind).is_some();
    match crate::convert::convert_for_target(&obj, &served) {
        Ok(c) => {
            let r = disc
                .exact(&c.to, &e.kind)
                .or_else(|| {
                    let kind = c.object["kind"].as_str().unwrap_or(&e.kind);
                    disc.exact(&c.to, kind)
                })
                .ok_or_else(|| {
                    format!(
                        "{UNSERVED}: converted to {} but that is not served either",
                        c.to
                    )
                })?
                .clone();
            let mut notes = vec![format!("converted from {} to {}", c.from, c.to)];
            notes.extend(c.notes);
            Ok((c.object, r, notes))
        }
        Err(err) => {
            let (group, _) = split_api_version(&e.api_version);
            if !is_builtin_group(group) && disc.by_kind(group, &e.kind).is_none() {
                Err(format!(
                    "{UNSERVED}: {} {} has no CRD in the target and none in this restore (include its CRD or install it)",
                    e.api_version, e.kind
                ))
            } else {
                Err(err.to_string())
            }
        }
    }
}

/// Kinds that `--clone` renames. Namespaces, CRDs and shared cluster configuration keep
/// their names (the clone uses them as they are).
fn clone_renames(r: &ServedResource) -> bool {
    if !r.namespaced {
        return matches!(
            (r.group.as_str(), r.kind.as_str()),
            ("rbac.authorization.k8s.io", "ClusterRoleBinding")
        );
    }
    true
}

/// Turns a stored object into the object the target gets.
#[allow(clippy::too_many_arguments)]
fn prepare(
    it: &mut Item,
    opts: &RestoreOptions,
    map_ns: &dyn Fn(&str) -> String,
    renames: &BTreeMap<(String, String, Option<String>, String), String>,
    restored_pvs: &BTreeSet<String>,
    sanitize_base: &SanitizeOptions,
    snapshot_id: &str,
    catalog: &Catalog,
) -> std::result::Result<(), String> {
    let (group, kind) = (it.res.group.clone(), it.res.kind.clone());
    let obj = &mut it.object;
    // Namespace mapping, also where namespaces are named inside the object.
    if let Some(ns) = it.src_ns.as_deref() {
        obj["metadata"]["namespace"] = Value::String(map_ns(ns));
    }
    if group.is_empty() && kind == "Namespace" {
        obj["metadata"]["name"] = Value::String(map_ns(&it.src_name));
        if let Some(l) = obj
            .pointer_mut("/metadata/labels")
            .and_then(Value::as_object_mut)
        {
            l.remove("kubernetes.io/metadata.name");
        }
    }
    if let Some(subjects) = obj.get_mut("subjects").and_then(Value::as_array_mut) {
        for s in subjects {
            if let Some(ns) = s["namespace"].as_str().map(map_ns) {
                s["namespace"] = Value::String(ns);
            }
        }
    }
    if let Some(ns) = obj
        .pointer("/spec/claimRef/namespace")
        .and_then(Value::as_str)
    {
        let ns = map_ns(ns);
        obj["spec"]["claimRef"]["namespace"] = Value::String(ns);
    }
    // Clone renames: the object, the references to renamed objects, and selector labels.
    if let Some(suffix) = &opts.clone_suffix {
        let tgt_ns = obj["metadata"]["namespace"].as_str().map(str::to_string);
        if let Some(new) = renames.get(&(
            group.clone(),
            kind.clone(),
            tgt_ns.clone(),
            it.src_name.clone(),
        )) {
            obj["metadata"]["name"] = Value::String(new.clone());
        }
        refs::visit_refs_mut(&group, &kind, obj, &mut |g, k, _, name| {
            let Some(n) = name.as_str() else { return };
            let scope = if k == "ClusterRole" {
                None
            } else {
                tgt_ns.clone()
            };
            if let Some(new) = renames.get(&(g.to_string(), k.to_string(), scope, n.to_string())) {
                *name = Value::String(new.clone());
            }
        });
        if group.is_empty() && kind == "PersistentVolumeClaim" {
            // A clone never takes over the original's volume.
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("volumeName");
            }
        }
        suffix_selector_labels(&group, &kind, obj, suffix)?;
        let annotations = obj["metadata"]
            .as_object_mut()
            .ok_or("object has no metadata")?
            .entry("annotations")
            .or_insert_with(|| json!({}));
        annotations["coffer.dev/clone-of"] = Value::String(format!(
            "{}/{}{}",
            catalog.cluster.server,
            it.src_ns
                .as_deref()
                .map(|n| format!("{n}/"))
                .unwrap_or_default(),
            it.src_name
        ));
        annotations["coffer.dev/backup-id"] = Value::String(snapshot_id.to_string());
    }
    // Sanitise.
    let opts_here = SanitizeOptions {
        keep_status: !it.res.status_subresource && !is_builtin_group(&group),
        keep_volume_binding: group.is_empty()
            && kind == "PersistentVolumeClaim"
            && opts.clone_suffix.is_none()
            && obj["spec"]["volumeName"]
                .as_str()
                .is_some_and(|pv| restored_pvs.contains(pv)),
        ..sanitize_base.clone()
    };
    sanitize(&group, &kind, obj, &opts_here);
    it.sanitized_with = opts_here;
    // Transforms (matching the object as backed up: its original namespace and name, as
    // Velero's resource modifiers do), then the storage-class and registry mappings.
    if !opts.transforms.is_empty() {
        let info = ObjectInfo {
            group: &group,
            version: &it.res.version,
            kind: &kind,
            resource: &it.res.resource,
            namespace: it.src_ns.as_deref(),
            name: &it.src_name,
        };
        let applied = opts
            .transforms
            .apply(&info, obj)
            .map_err(|e| format!("transform failed: {e}"))?;
        for a in applied {
            it.notes.push(format!("transform {a}"));
        }
        // A transform may rename or move the object; keep apiVersion/kind as they are.
        if obj["apiVersion"] != Value::String(it.res.api_version())
            || obj["kind"] != Value::String(kind.clone())
        {
            return Err("a transform changed apiVersion or kind, which a restore cannot follow; use a separate rule set per kind".into());
        }
    }
    if map_storage_classes(obj, &opts.storage_class_mapping) {
        it.notes.push("storage class mapped".into());
    }
    if map_image_registries(obj, &opts.image_registry_mapping) {
        it.notes.push("image registry mapped".into());
    }
    Ok(())
}

/// `--clone`: label values in selectors and the pod labels they select get the suffix,
/// so the clone's Services and controllers select only the clone's pods.
fn suffix_selector_labels(
    group: &str,
    kind: &str,
    obj: &mut Value,
    suffix: &str,
) -> std::result::Result<(), String> {
    let suffixed = |v: &mut Value| -> std::result::Result<(), String> {
        if let Some(s) = v.as_str() {
            let new = format!("{s}-{suffix}");
            if new.len() > 63 {
                return Err(format!(
                    "label value {new:?} would exceed 63 characters; choose a shorter --clone suffix"
                ));
            }
            *v = Value::String(new);
        }
        Ok(())
    };
    for (ptr, structured) in refs::selector_pointers(group, kind) {
        let Some(sel) = obj.pointer_mut(ptr) else {
            continue;
        };
        let map = if *structured {
            sel.get_mut("matchLabels")
        } else {
            Some(sel)
        };
        if let Some(m) = map.and_then(Value::as_object_mut) {
            for v in m.values_mut() {
                suffixed(v)?;
            }
        }
        if *structured
            && let Some(exprs) = obj
                .pointer_mut(&format!("{ptr}/matchExpressions"))
                .and_then(Value::as_array_mut)
        {
            for e in exprs {
                if let Some(vals) = e.get_mut("values").and_then(Value::as_array_mut) {
                    for v in vals {
                        suffixed(v)?;
                    }
                }
            }
        }
    }
    if refs::pod_spec_mut(group, kind, obj).is_some()
        && let Some(meta) = refs::pod_metadata_mut(group, kind, obj)
        && let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut)
    {
        for v in labels.values_mut() {
            suffixed(v)?;
        }
    }
    Ok(())
}

/// References from restored objects to objects that will be neither restored nor present.
async fn missing_dependencies(
    client: &Client,
    disc: &Discovered,
    items: &[Item],
    catalog: &Catalog,
) -> Vec<String> {
    let restored: BTreeSet<(&str, &str, Option<&str>, &str)> = items
        .iter()
        .filter(|it| !it.failed)
        .map(|it| {
            (
                it.res.group.as_str(),
                it.res.kind.as_str(),
                it.tgt_ns(),
                it.tgt_name(),
            )
        })
        .collect();
    let mut out = Vec::new();
    let mut checked: BTreeMap<(String, String, Option<String>, String), bool> = BTreeMap::new();
    for it in items.iter().filter(|it| it.action != "skip" && !it.failed) {
        for r in refs::references(&it.res.group, &it.res.kind, &it.object) {
            if !r.required {
                continue;
            }
            let Some(res) = disc.by_kind(r.group, r.kind) else {
                continue;
            };
            let ns = if res.namespaced { it.tgt_ns() } else { None };
            if restored.contains(&(r.group, r.kind, ns, r.name.as_str())) {
                continue;
            }
            // Every new namespace gets a "default" ServiceAccount.
            if r.kind == "ServiceAccount" && r.name == "default" {
                continue;
            }
            let key = (
                r.group.to_string(),
                r.kind.to_string(),
                ns.map(str::to_string),
                r.name.clone(),
            );
            let present = match checked.get(&key) {
                Some(p) => *p,
                None => {
                    let p = matches!(get_object(client, res, ns, &r.name).await, Ok(Some(_)));
                    checked.insert(key, p);
                    p
                }
            };
            if present {
                continue;
            }
            let in_backup = catalog.entries.iter().any(|e| {
                e.kind == r.kind && e.name == r.name && (!res.namespaced || e.namespace.is_some())
            });
            let hint = if in_backup {
                format!(
                    "it is in the backup: add --only {}/{}",
                    r.kind.to_ascii_lowercase(),
                    r.name
                )
            } else {
                "it is not in the backup either".to_string()
            };
            out.push(format!(
                "{} {}{} needs {} {}{}, which the target does not have ({hint})",
                it.res.kind,
                it.tgt_ns().map(|n| format!("{n}/")).unwrap_or_default(),
                it.tgt_name(),
                r.kind,
                ns.map(|n| format!("{n}/")).unwrap_or_default(),
                r.name
            ));
        }
    }
    out
}

/// A live object rollback will delete.
struct Deletion {
    res: ServedResource,
    namespace: Option<String>,
    name: String,
}

/// The live objects in the restore's scope that the backup did not have.
#[allow(clippy::too_many_arguments)]
async fn rollback_deletions(
    client: &Client,
    disc: &Discovered,
    catalog: &Catalog,
    opts: &RestoreOptions,
    selector: Option<&LabelSelector>,
    map_ns: &dyn Fn(&str) -> String,
    items: &[Item],
    warnings: &mut Vec<String>,
) -> Result<Vec<Deletion>> {
    let in_backup: BTreeSet<(&str, &str, Option<&str>, &str)> = items
        .iter()
        .map(|it| {
            (
                it.res.group.as_str(),
                it.res.kind.as_str(),
                it.tgt_ns(),
                it.tgt_name(),
            )
        })
        .collect();
    // Namespaces in scope: the backup's (or those asked for), mapped.
    let mut source_ns: Vec<String> = if opts.namespaces.is_empty() {
        let mut v: Vec<String> = catalog.selection.namespaces.clone();
        v.extend(catalog.entries.iter().filter_map(|e| e.namespace.clone()));
        v
    } else {
        opts.namespaces.clone()
    };
    source_ns.sort();
    source_ns.dedup();
    let cluster_scope = catalog.selection.cluster_resources == "include";
    let mut out = Vec::new();
    for stored_type in &catalog.collected {
        let Some(res) = disc.by_kind(&stored_type.group, &stored_type.kind) else {
            continue;
        };
        if res.kind == "Namespace" && res.group.is_empty() {
            continue;
        }
        if !res.namespaced && !cluster_scope {
            continue;
        }
        let probe = Entry {
            api_version: stored_type.api_version(),
            kind: stored_type.kind.clone(),
            resource: stored_type.resource.clone(),
            namespace: None,
            name: String::new(),
            labels: BTreeMap::new(),
            size: 0,
            chunks: Vec::new(),
        };
        if !opts.include_resources.is_empty()
            && !names(&opts.include_resources).any(|n| catalog.entry_answers_to(&probe, n))
        {
            continue;
        }
        if names(&opts.exclude_resources).any(|n| catalog.entry_answers_to(&probe, n)) {
            continue;
        }
        let namespaces: Vec<Option<String>> = if res.namespaced {
            source_ns.iter().map(|n| Some(map_ns(n))).collect()
        } else {
            vec![None]
        };
        for ns in namespaces {
            let live = match list_all(
                client,
                res,
                ns.as_deref(),
                catalog.selection.selector.as_deref(),
            )
            .await
            {
                Ok(l) => l,
                Err(e) => {
                    warnings.push(format!(
                        "rollback could not list {} in {}: {e}",
                        res.group_resource(),
                        ns.as_deref().unwrap_or("the cluster")
                    ));
                    continue;
                }
            };
            for o in live {
                let labels: BTreeMap<String, String> =
                    serde_json::from_value(o["metadata"]["labels"].clone()).unwrap_or_default();
                if selector.is_some_and(|s| !s.matches(&labels)) {
                    continue;
                }
                // Objects someone owns are their owner's business (the garbage collector
                // removes them with it); regenerated objects are the cluster's.
                if o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
                    || o["metadata"]["deletionTimestamp"].is_string()
                    || object_not_stored(res, &o).is_some()
                    || never_restored(&res.group, &res.kind, &o).is_some()
                    || (res.group.is_empty()
                        && res.kind == "ServiceAccount"
                        && name_of(&o) == "default")
                {
                    continue;
                }
                let key = (
                    res.group.as_str(),
                    res.kind.as_str(),
                    namespace_of(&o),
                    name_of(&o),
                );
                if !in_backup.contains(&key) {
                    out.push(Deletion {
                        res: res.clone(),
                        namespace: namespace_of(&o).map(str::to_string),
                        name: name_of(&o).to_string(),
                    });
                }
            }
        }
    }
    Ok(out)
}

async fn run_deletion(client: &Client, d: &Deletion, opts: &RestoreOptions) -> ObjectResult {
    let api = api_for(client, &d.res, d.namespace.as_deref());
    let dp = DeleteParams {
        dry_run: opts.dry_run,
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    let (result, reason) = match api.delete(&d.name, &dp).await {
        Ok(_) if opts.dry_run => (
            "planned",
            "it did not exist at backup time (--rollback)".to_string(),
        ),
        Ok(_) => (
            "deleted",
            "it did not exist at backup time (--rollback)".to_string(),
        ),
        Err(kube::Error::Api(ae)) if ae.code == 404 => ("deleted", "already gone".to_string()),
        Err(e) => ("failed", kube_message(&Error::Kube(e))),
    };
    ObjectResult {
        api_version: d.res.api_version(),
        kind: d.res.kind.clone(),
        namespace: d.namespace.clone(),
        name: d.name.clone(),
        from: None,
        action: "delete".into(),
        result: result.into(),
        reason: Some(reason),
        notes: Vec::new(),
    }
}

/// Owner references: those to objects restored (or present) in this run point at their
/// new uids; the rest are dropped.
fn rewrite_owners(it: &mut Item, uid_map: &BTreeMap<String, (String, String)>) {
    let owners: Vec<Value> = it
        .owners
        .iter()
        .filter_map(|o| {
            let (uid, name) = uid_map.get(o["uid"].as_str()?)?;
            let mut o = o.clone();
            o["uid"] = Value::String(uid.clone());
            o["name"] = Value::String(name.clone());
            Some(o)
        })
        .collect();
    let meta = it.object["metadata"]
        .as_object_mut()
        .expect("objects have metadata");
    if owners.is_empty() {
        meta.remove("ownerReferences");
    } else {
        meta.insert("ownerReferences".into(), Value::Array(owners));
    }
}

/// Fields the server assigned or that cannot change, carried from the live object into
/// the replacement.
fn keep_server_fields(group: &str, kind: &str, desired: &mut Value, live: &Value) {
    let copy = |desired: &mut Value, ptr: &str| {
        if desired.pointer(ptr).is_none()
            && let Some(v) = live.pointer(ptr)
        {
            let (parent, field) = ptr.rsplit_once('/').expect("pointers have a parent");
            if let Some(p) = desired.pointer_mut(parent).and_then(Value::as_object_mut) {
                p.insert(field.to_string(), v.clone());
            }
        }
    };
    desired["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"].clone();
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
                    {
                        p["nodePort"] = np.clone();
                    }
                }
            }
        }
        ("", "PersistentVolumeClaim") => {
            // Only the requested size may change on a bound claim.
            let requests = desired.pointer("/spec/resources/requests").cloned();
            desired["spec"] = live["spec"].clone();
            if let Some(r) = requests {
                desired["spec"]["resources"]["requests"] = r;
            }
            // The binding annotations the controllers set stay as they are.
            if let Some(live_a) = live
                .pointer("/metadata/annotations")
                .and_then(Value::as_object)
            {
                for (k, v) in live_a {
                    if k.starts_with("pv.kubernetes.io/") || k.starts_with("volume.") {
                        desired["metadata"]["annotations"][k.as_str()] = v.clone();
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
                        desired["spec"]["template"]["metadata"]["labels"][k] = v.clone();
                    }
                }
            }
        }
        _ => {}
    }
}

/// Runs (or dry-runs) one planned object.
async fn run_item(
    client: &Client,
    it: &mut Item,
    opts: &RestoreOptions,
    existing: ExistingPolicy,
    uid_map: &mut BTreeMap<String, (String, String)>,
) -> ObjectResult {
    if it.failed {
        return it.result("failed", None);
    }
    let live_uid = it
        .live
        .as_ref()
        .and_then(|l| l["metadata"]["uid"].as_str())
        .map(str::to_string);
    let record =
        |uid_map: &mut BTreeMap<String, (String, String)>, it: &Item, new_uid: Option<String>| {
            if let (Some(old), Some(new)) = (&it.old_uid, new_uid) {
                uid_map.insert(old.clone(), (new, it.tgt_name().to_string()));
            }
        };
    if it.action == "skip" {
        record(uid_map, it, live_uid);
        return it.result("skipped", None);
    }
    rewrite_owners(it, uid_map);
    let api = api_for(client, &it.res, it.tgt_ns());
    let pp = PostParams {
        dry_run: opts.dry_run,
        field_manager: Some("coffer".into()),
    };
    let desired: DynamicObject = match serde_json::from_value(it.object.clone()) {
        Ok(d) => d,
        Err(e) => return it.result("failed", Some(format!("not a valid object: {e}"))),
    };
    let outcome: std::result::Result<(&str, Option<String>), String> = match it.action {
        "create" => {
            match api.create(&pp, &desired).await {
                Ok(created) => Ok((
                    if opts.dry_run { "planned" } else { "created" },
                    created.metadata.uid,
                )),
                Err(kube::Error::Api(ae)) if opts.dry_run && dry_run_cannot_see(&ae.message) => {
                    Ok(("planned", None))
                }
                // Created meanwhile, typically by the cluster itself (a namespace's default
                // ServiceAccount): treat it as existing.
                Err(kube::Error::Api(ae)) if ae.code == 409 && !opts.dry_run => {
                    match api.get_opt(it.tgt_name()).await {
                        Ok(Some(live)) if existing != ExistingPolicy::Skip => {
                            it.live = Some(serde_json::to_value(&live).expect("objects serialize"));
                            it.action = if existing == ExistingPolicy::Update {
                                "update"
                            } else {
                                "recreate"
                            };
                            return Box::pin(run_item(client, it, opts, existing, uid_map)).await;
                        }
                        Ok(Some(live)) => {
                            record(uid_map, it, live.metadata.uid);
                            it.action = "skip";
                            return it.result(
                            "skipped",
                            Some("it appeared in the target during the restore (--existing skip)".into()),
                        );
                        }
                        _ => Err(ae.message),
                    }
                }
                Err(e) => Err(kube_message(&Error::Kube(e))),
            }
        }
        "update" => {
            let live = it.live.clone().expect("updates have a live object");
            let mut want = it.object.clone();
            keep_server_fields(&it.res.group, &it.res.kind, &mut want, &live);
            // Unchanged when the live object, cleaned the same way, is what we would write:
            // then nothing is written (a replace would still record a new field manager).
            let mut live_clean = live.clone();
            sanitize(
                &it.res.group,
                &it.res.kind,
                &mut live_clean,
                &it.sanitized_with,
            );
            keep_server_fields(&it.res.group, &it.res.kind, &mut live_clean, &live);
            if live_clean == want {
                record(uid_map, it, live_uid);
                return it.result(
                    if opts.dry_run { "planned" } else { "unchanged" },
                    Some("it already matches the backup".into()),
                );
            }
            let want: DynamicObject = serde_json::from_value(want).expect("valid JSON object");
            match api.replace(it.tgt_name(), &pp, &want).await {
                Ok(after) => {
                    let same = after.metadata.resource_version.as_deref()
                        == live["metadata"]["resourceVersion"].as_str();
                    let r = match (opts.dry_run, same) {
                        (true, _) => "planned",
                        (false, true) => "unchanged",
                        (false, false) => "updated",
                    };
                    Ok((r, after.metadata.uid))
                }
                Err(e) => Err(format!(
                    "{} (try --existing recreate if the field cannot change)",
                    kube_message(&Error::Kube(e))
                )),
            }
        }
        "recreate" => recreate(&api, it, &desired, &pp, opts).await,
        other => Err(format!("unknown action {other}")),
    };
    match outcome {
        Ok((result, uid)) => {
            record(uid_map, it, uid.or(live_uid));
            if !opts.dry_run
                && it.res.group == "apiextensions.k8s.io"
                && it.res.kind == "CustomResourceDefinition"
                && let Err(e) = wait_established(&api, it.tgt_name(), opts.wait_timeout).await
            {
                return it.result("failed", Some(e));
            }
            it.result(result, None)
        }
        Err(reason) => it.result("failed", Some(reason)),
    }
}

/// Dry-run errors that come from the plan's own earlier steps not having happened (a
/// namespace or CRD this restore creates first).
fn dry_run_cannot_see(message: &str) -> bool {
    message.contains("namespaces") && message.contains("not found")
        || message.contains("the server could not find the requested resource")
        || message.contains("404 page not found")
}

async fn recreate(
    api: &Api<DynamicObject>,
    it: &Item,
    desired: &DynamicObject,
    pp: &PostParams,
    opts: &RestoreOptions,
) -> std::result::Result<(&'static str, Option<String>), String> {
    let dp = DeleteParams {
        dry_run: opts.dry_run,
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..Default::default()
    };
    if let Err(e) = api.delete(it.tgt_name(), &dp).await {
        return Err(format!(
            "could not delete it: {}",
            kube_message(&Error::Kube(e))
        ));
    }
    if opts.dry_run {
        return Ok(("planned", None));
    }
    let deadline = tokio::time::Instant::now() + opts.wait_timeout;
    loop {
        match api.get_opt(it.tgt_name()).await {
            Ok(None) => break,
            Ok(Some(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Ok(Some(_)) => {
                return Err(format!(
                    "deleted but still present after {}s (a finalizer holds it)",
                    opts.wait_timeout.as_secs()
                ));
            }
            Err(e) => return Err(kube_message(&Error::Kube(e))),
        }
    }
    match api.create(pp, desired).await {
        Ok(c) => Ok(("recreated", c.metadata.uid)),
        Err(e) => Err(format!(
            "deleted, but creating it again failed: {}",
            kube_message(&Error::Kube(e))
        )),
    }
}

/// Waits until a CRD reports Established, so that its custom resources can be created.
async fn wait_established(
    api: &Api<DynamicObject>,
    name: &str,
    timeout: Duration,
) -> std::result::Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(Some(crd)) = api.get_opt(name).await {
            let established = crd.data["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Established" && c["status"] == "True");
            if established {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "created, but not Established after {}s",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
