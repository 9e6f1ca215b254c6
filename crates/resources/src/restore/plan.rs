//! The planner: from a snapshot, a cluster and options to a [`RestorePlan`].
//!
//! It reads the target (discovery, the objects that already exist, what rollback would
//! delete) but changes nothing. Failures it can already see (an API the target does not
//! serve, a transform that fails, an object it cannot read in the target) go into the
//! plan as failed results; everything else into the ordered list of objects.

use std::collections::{BTreeMap, BTreeSet};

use coffer_repo::progress::{SharedProgress, Unit};
use coffer_repo::{Repository, Snapshot};
use futures::{StreamExt, stream};
use serde_json::Value;

use super::clone::{ServiceNames, clone_renames, suffix_problem};
use super::dependencies::missing_dependencies;
use super::prepare::{
    Item, PrepareContext, Renames, UNSERVED, check_addressable, never_restored, prepare,
    resolve_target,
};
use super::rollback::rollback_deletions;
use super::select::select_entries;
use super::{
    Action, ExistingPolicy, ObjectResult, Outcome, PLAN_FORMAT, PlanTarget, PlannedObject,
    RestoreOptions, RestorePlan,
};
use crate::archive::{Catalog, Entry};
use crate::client::Cluster;
use crate::collect::{get_object, object_not_stored};
use crate::discovery::Discovered;
use crate::order::{Orderable, rank, restore_order};
use crate::sanitize::SanitizeOptions;
use crate::{Error, Result};

/// Lookups in the target at once while planning.
const LOOKUPS_IN_FLIGHT: usize = 32;

/// From this many objects of one type in one namespace, the planner lists them instead of
/// reading each.
const LIST_FROM: usize = 16;

/// Plans a restore of `snap` into `cluster`: reads the target, changes nothing.
/// Options the planner can reject (bad names, conflicting flags, an unknown `--only`)
/// are errors before anything is read from the cluster; per-object problems are
/// failures inside the plan.
pub async fn plan(
    repo: &Repository,
    snap: &Snapshot,
    cluster: &Cluster,
    opts: &RestoreOptions,
    progress: &SharedProgress,
) -> Result<RestorePlan> {
    check_options(opts)?;
    let client = cluster.client();
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
    let chosen = select_entries(&catalog, opts, selector.as_ref())?;
    let target = PlanTarget {
        server: cluster.server().to_string(),
        uid: cluster.uid().await?,
    };
    let mut disc = Discovered::from_cluster(client).await?;
    let mut warnings = Vec::new();
    let mut failures: Vec<ObjectResult> = Vec::new();

    // 1. Load the chosen objects (only these) and convert each to a served version.
    progress.stage("planning", Unit::Items, Some(chosen.len() as u64));
    let entries = &catalog.entries;
    let mut loaded = stream::iter(chosen.iter().copied())
        .map(|i| async move { (i, Catalog::read_object(repo, &entries[i]).await) })
        .buffered(16);
    let mut items: Vec<Item> = Vec::new();
    let mut unresolved: Vec<(usize, Value, String)> = Vec::new();
    while let Some((i, obj)) = loaded.next().await {
        let e = &catalog.entries[i];
        let obj = obj?;
        progress.advance(1);
        match resolve_target(&disc, e, &obj) {
            Ok((obj, res, notes)) => {
                if res.group == "apiextensions.k8s.io" && res.kind == "CustomResourceDefinition" {
                    disc.add_crd(&obj);
                }
                items.push(Item::stored(e, res, obj, notes));
            }
            Err(reason) => unresolved.push((i, obj, reason)),
        }
    }
    drop(loaded);
    tracing::debug!(
        objects = items.len(),
        "loaded and converted the stored objects"
    );
    // Custom resources whose CRD the loop above only met later: resolve them again now
    // that every restored CRD is known.
    for (i, obj, reason) in unresolved {
        let e = &catalog.entries[i];
        let retry = if reason.starts_with(UNSERVED) {
            resolve_target(&disc, e, &obj)
        } else {
            Err(reason)
        };
        match retry {
            Ok((obj, res, notes)) => items.push(Item::stored(e, res, obj, notes)),
            Err(reason) => failures.push(failed_entry(e, reason)),
        }
    }

    // 2. What is never restored.
    for it in &mut items {
        if let Some(why) = never_restored(&it.res.group, &it.res.kind, &it.object)
            .or_else(|| object_not_stored(&it.res, &it.object))
        {
            it.action = Action::Skip;
            it.reason = Some(why.to_string());
        }
    }

    // 3. PersistentVolumes: restore only those that do not exist and whose storage
    // outlived them (not dynamically provisioned with reclaim policy Delete).
    let mut restored_pvs = BTreeSet::new();
    for it in items.iter_mut().filter(|it| {
        it.action == Action::Create && it.res.group.is_empty() && it.res.kind == "PersistentVolume"
    }) {
        let live = get_object(client, &it.res, None, &it.src_name).await?;
        let dynamic_delete = it.object["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"]
            .is_string()
            && it.object["spec"]["persistentVolumeReclaimPolicy"] != "Retain";
        if live.is_some() {
            it.action = Action::Skip;
            it.reason = Some("the volume exists in the target; its claim binds to a new volume if it cannot use it".into());
        } else if dynamic_delete {
            it.action = Action::Skip;
            it.reason = Some("dynamically provisioned with reclaim policy Delete: its storage went with it, so its claim gets a new volume (restore the data with Coffer's volume restore)".into());
        } else if opts.clone_suffix.is_none() {
            restored_pvs.insert(it.src_name.clone());
        }
    }

    // 4. Renames for --clone, and the Services whose addresses change.
    let map_ns = |ns: &str| -> String {
        opts.namespace_mapping
            .get(ns)
            .cloned()
            .unwrap_or_else(|| ns.to_string())
    };
    let mut renames: Renames = BTreeMap::new();
    if let Some(suffix) = &opts.clone_suffix {
        for it in items
            .iter()
            .filter(|it| it.action != Action::Skip && clone_renames(&it.res))
        {
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
    let services = service_names(&items, &renames, &map_ns);

    // 5. Turn each object into what the target gets.
    let cx = PrepareContext {
        opts,
        renames: &renames,
        services: &services,
        restored_pvs: &restored_pvs,
        sanitize_base: SanitizeOptions {
            preserve_node_ports: opts.preserve_node_ports,
            ..Default::default()
        },
        snapshot_id: snap.id.to_hex(),
        source_server: catalog.cluster.server.clone(),
    };
    for it in items.iter_mut().filter(|it| it.action != Action::Skip) {
        if let Err(reason) = prepare(it, &cx) {
            it.failure = Some(reason);
        }
    }

    // 6. Namespaces the restored objects land in.
    let ns_res = disc
        .by_kind("", "Namespace")
        .ok_or_else(|| Error::Invalid("the target cluster serves no namespaces".into()))?
        .clone();
    let mut needed_ns: BTreeSet<String> = items
        .iter()
        .filter(|it| it.action != Action::Skip && it.failure.is_none() && it.res.namespaced)
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
            let mut item = Item::new_namespace(ns_res.clone(), &ns);
            if let Err(reason) = check_addressable(&ns_res, &item.object) {
                item.failure = Some(reason);
            }
            items.push(item);
        }
    }

    // 7. Compare with the target: the existing-object policy.
    let lookups = live_objects(client, &ns_res, &items).await?;
    tracing::debug!(objects = items.len(), "looked up the objects in the target");
    for (it, live) in items.iter_mut().zip(lookups) {
        let live = match live {
            Ok(l) => l,
            Err(e) => {
                it.failure = Some(format!("cannot read it in the target: {}", api_message(&e)));
                continue;
            }
        };
        let Some(l) = live else { continue };
        it.live_uid = l["metadata"]["uid"].as_str().map(str::to_string);
        if l["metadata"]["deletionTimestamp"].is_string() {
            it.action = Action::Skip;
            it.reason = Some(
                "it is being deleted in the target; run the restore again once it is gone".into(),
            );
            continue;
        }
        it.action = match existing {
            ExistingPolicy::Skip => Action::Skip,
            ExistingPolicy::Update => Action::Update,
            ExistingPolicy::Recreate => Action::Recreate,
        };
        if existing == ExistingPolicy::Skip {
            it.reason = Some("it already exists in the target (--existing skip)".into());
        } else if it.res.group.is_empty() && it.res.kind == "Namespace" {
            // Namespaces are containers: never recreated (that would delete everything
            // in them), only updated.
            it.action = Action::Update;
        }
    }

    // 8. Dependencies of what is restored.
    let missing_dependencies = missing_dependencies(client, &disc, &items, &catalog).await;
    tracing::debug!(missing = missing_dependencies.len(), "checked dependencies");

    // 9. Rollback deletions.
    let deletions = if opts.rollback {
        rollback_deletions(
            client,
            &disc,
            &catalog,
            opts,
            selector.as_ref(),
            &map_ns,
            &items,
            &mut warnings,
        )
        .await?
    } else {
        Vec::new()
    };

    // 10. Order, and steps of independent objects.
    let mut undecided_references = Vec::new();
    for it in &items {
        for u in &it.undecided {
            undecided_references.push(format!(
                "{} {}{}: {u}",
                it.res.kind,
                it.tgt_ns().map(|n| format!("{n}/")).unwrap_or_default(),
                it.tgt_name()
            ));
        }
    }
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
    let steps = steps(&orderables, &order);
    let mut slots: Vec<Option<Item>> = items.into_iter().map(Some).collect();
    let mut objects = Vec::with_capacity(order.len());
    for (i, step) in order.iter().zip(steps) {
        let Some(it) = slots.get_mut(*i).and_then(Option::take) else {
            continue;
        };
        if let Some(reason) = &it.failure {
            let mut r = planned(it_rank(&it), step, &it);
            r.reason = Some(reason.clone());
            failures.push(r.result(Outcome::Failed, None));
            continue;
        }
        objects.push(planned(it_rank(&it), step, &it));
    }
    Ok(RestorePlan {
        format: PLAN_FORMAT,
        snapshot_id: snap.id.to_hex(),
        target,
        existing,
        failures,
        deletions,
        objects,
        missing_dependencies,
        undecided_references,
        warnings,
    })
}

/// The live counterpart of every item (None for skipped and failed items), read with as
/// few requests as the target allows: nothing in namespaces that do not exist yet, one
/// listing per type and namespace where many objects share them, single reads elsewhere.
async fn live_objects(
    client: &kube::Client,
    ns_res: &crate::discovery::ServedResource,
    items: &[Item],
) -> Result<Vec<Result<Option<Value>>>> {
    // Owned keys and indices as stream items: a closure over borrowed items makes the
    // future not Send for every lifetime, and callers spawn it.
    let wanted = |it: &Item| it.action != Action::Skip && it.failure.is_none();
    let namespaces: BTreeSet<String> = items
        .iter()
        .filter(|it| wanted(it) && it.res.namespaced)
        .filter_map(Item::tgt_ns)
        .map(str::to_string)
        .collect();
    let present: Vec<(String, bool)> = stream::iter(namespaces)
        .map(|ns: String| async move {
            get_object(client, ns_res, None, &ns)
                .await
                .map(|o| (ns, o.is_some()))
        })
        .buffered(LOOKUPS_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    let absent: BTreeSet<String> = present
        .into_iter()
        .filter(|(_, p)| !p)
        .map(|(ns, _)| ns)
        .collect();
    // Groups big enough to list: (group, resource, namespace) with the index of one
    // item of each and their size.
    type Key = (String, String, Option<String>);
    let key_of = |it: &Item| -> Key {
        (
            it.res.group.clone(),
            it.res.resource.clone(),
            it.tgt_ns().map(str::to_string),
        )
    };
    let mut groups: BTreeMap<Key, (usize, usize)> = BTreeMap::new();
    for (i, it) in items.iter().enumerate().filter(|(_, it)| wanted(it)) {
        groups.entry(key_of(it)).or_insert((i, 0)).1 += 1;
    }
    let to_list: Vec<(Key, usize)> = groups
        .into_iter()
        .filter(|(k, (_, n))| *n >= LIST_FROM && k.2.as_ref().is_none_or(|ns| !absent.contains(ns)))
        .map(|(k, (i, _))| (k, i))
        .collect();
    let listed: BTreeMap<Key, BTreeMap<String, Value>> = stream::iter(to_list)
        .map(|(key, i): (Key, usize)| async move {
            let list =
                crate::collect::list_all(client, &items[i].res, key.2.as_deref(), None).await?;
            let by_name = list
                .into_iter()
                .map(|o| (crate::collect::name_of(&o).to_string(), o))
                .collect();
            Ok::<_, Error>((key, by_name))
        })
        .buffered(4)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    Ok(stream::iter(0..items.len())
        .map(|i| {
            let (listed, absent, it) = (&listed, &absent, &items[i]);
            async move {
                if !wanted(it) || it.tgt_ns().is_some_and(|ns| absent.contains(ns)) {
                    return Ok(None);
                }
                if let Some(by_name) = listed.get(&key_of(it)) {
                    return Ok(by_name.get(it.tgt_name()).cloned());
                }
                get_object(client, &it.res, it.tgt_ns(), it.tgt_name()).await
            }
        })
        .buffered(LOOKUPS_IN_FLIGHT)
        .collect()
        .await)
}

fn it_rank(it: &Item) -> u32 {
    rank(&it.res.group, &it.res.kind, it.res.namespaced)
}

fn planned(rank: u32, step: u32, it: &Item) -> PlannedObject {
    let mut object = it.object.clone();
    // Owner references are set at apply time, from the owners' new uids.
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("ownerReferences");
    }
    PlannedObject {
        step,
        rank,
        action: it.action,
        api_version: it.res.api_version(),
        kind: it.res.kind.clone(),
        resource: it.res.resource.clone(),
        namespaced: it.res.namespaced,
        namespace: it.tgt_ns().map(str::to_string),
        name: it.tgt_name().to_string(),
        from: it.from(),
        reason: it.reason.clone(),
        notes: it.notes.clone(),
        object,
        stored_uid: it.old_uid.clone(),
        owners: it.owners.clone(),
        live_uid: it.live_uid.clone(),
        sanitized_with: it.sanitized_with.clone(),
    }
}

/// Groups the ordered objects into steps: a new step begins where the rank changes or
/// where an object's owner is in the current step (owners must exist, with their uids
/// known, before their dependents are created).
fn steps(items: &[Orderable], order: &[usize]) -> Vec<u32> {
    let mut out = Vec::with_capacity(order.len());
    let mut step = 0u32;
    let mut current_rank = None;
    let mut in_step: BTreeSet<&str> = BTreeSet::new();
    for &i in order {
        let it = &items[i];
        let owner_in_step = it.owners.iter().any(|o| in_step.contains(o));
        if current_rank.is_some_and(|r| r != it.rank) || owner_in_step {
            step += 1;
            in_step.clear();
        }
        current_rank = Some(it.rank);
        if let Some(uid) = it.uid {
            in_step.insert(uid);
        }
        out.push(step);
    }
    out
}

/// Options refused before anything is read: conflicting flags and names Kubernetes
/// would refuse halfway through the restore.
fn check_options(opts: &RestoreOptions) -> Result<()> {
    if opts.rollback && !opts.only.is_empty() {
        return Err(Error::Invalid(
            "--rollback cannot be combined with --only: a rollback reverts a whole scope (narrow it with --namespace, --include-resources or --selector)".into(),
        ));
    }
    for (from, to) in &opts.namespace_mapping {
        if let Some(why) = crate::names::dns_label_problem(to) {
            return Err(Error::InvalidName {
                what: format!("target namespace of --namespace-mapping {from}={to}"),
                name: to.clone(),
                why,
            });
        }
    }
    if let Some(suffix) = &opts.clone_suffix
        && let Some(why) = suffix_problem(suffix)
    {
        return Err(Error::InvalidName {
            what: "--clone suffix".into(),
            name: suffix.clone(),
            why,
        });
    }
    Ok(())
}

/// The Services (and StatefulSets) whose DNS names change: renamed by `--clone` or
/// moved by the namespace mapping.
fn service_names(
    items: &[Item],
    renames: &Renames,
    map_ns: &(dyn Fn(&str) -> String + Sync),
) -> ServiceNames {
    let mut names = ServiceNames::default();
    for it in items.iter().filter(|it| it.action != Action::Skip) {
        let Some(src_ns) = it.src_ns.as_deref() else {
            continue;
        };
        let tgt_ns = map_ns(src_ns);
        let key = (
            it.res.group.clone(),
            it.res.kind.clone(),
            Some(tgt_ns.clone()),
            it.src_name.clone(),
        );
        let new_name = renames
            .get(&key)
            .cloned()
            .unwrap_or_else(|| it.src_name.clone());
        match (it.res.group.as_str(), it.res.kind.as_str()) {
            ("", "Service") if new_name != it.src_name || tgt_ns != src_ns => {
                names.services.insert(
                    (src_ns.to_string(), it.src_name.clone()),
                    (tgt_ns, new_name),
                );
            }
            ("apps", "StatefulSet") if new_name != it.src_name => {
                names
                    .stateful_sets
                    .insert((src_ns.to_string(), it.src_name.clone()), new_name);
            }
            _ => {}
        }
    }
    names
}

fn failed_entry(e: &Entry, reason: String) -> ObjectResult {
    ObjectResult {
        api_version: e.api_version.clone(),
        kind: e.kind.clone(),
        namespace: e.namespace.clone(),
        name: e.name.clone(),
        from: None,
        action: Action::Create,
        result: Outcome::Failed,
        reason: Some(reason),
        notes: Vec::new(),
    }
}

/// The API server's message alone, or the error in one line.
pub(super) fn api_message(e: &Error) -> String {
    match e {
        Error::Api { message, .. } => message.clone(),
        e => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o<'a>(rank: u32, uid: &'a str, owners: Vec<&'a str>) -> Orderable<'a> {
        Orderable {
            rank,
            key: (String::new(), String::new(), uid.to_string()),
            uid: Some(uid),
            owners,
        }
    }

    #[test]
    fn steps_split_on_rank_and_owners() {
        // Two Secrets, two ConfigMaps of which one owns the other, a Deployment.
        let items = vec![
            o(40, "s1", vec![]),
            o(40, "s2", vec![]),
            o(50, "c1", vec![]),
            o(50, "c2", vec!["c1"]),
            o(120, "d", vec!["s1"]),
        ];
        let order = restore_order(&items);
        assert_eq!(order, vec![0, 1, 2, 3, 4]);
        assert_eq!(steps(&items, &order), vec![0, 0, 1, 2, 3]);
    }

    #[test]
    fn refused_options() {
        let mut opts = RestoreOptions::default();
        opts.namespace_mapping
            .insert("shop".into(), "Bad_NS!".into());
        let e = check_options(&opts).unwrap_err();
        assert!(matches!(e, Error::InvalidName { .. }), "{e}");
        assert!(e.to_string().contains("Bad_NS!"), "{e}");
        let opts = RestoreOptions {
            clone_suffix: Some("Blue".into()),
            ..Default::default()
        };
        assert!(check_options(&opts).is_err());
        let opts = RestoreOptions {
            rollback: true,
            only: vec!["deployment/web".into()],
            ..Default::default()
        };
        assert!(check_options(&opts).is_err());
    }
}
