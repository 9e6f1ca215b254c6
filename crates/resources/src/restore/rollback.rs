//! Rollback: the live objects in a restore's scope that the backup did not have, which
//! `--rollback` deletes. The scope is the backup's namespaces (or `--namespace`), mapped;
//! the resource types it collected, narrowed by the include/exclude options; objects
//! matching its selector and `--selector`; cluster-scoped types only when the backup
//! included cluster resources. Objects with owners, objects the cluster regenerates and
//! the `default` ServiceAccount are never deleted.

use std::collections::{BTreeMap, BTreeSet};

use kube::Client;

use super::prepare::{Item, never_restored};
use super::select::names;
use super::{PlannedDeletion, RestoreOptions};
use crate::Result;
use crate::archive::{Catalog, Entry};
use crate::collect::{list_all, name_of, namespace_of, object_not_stored};
use crate::discovery::Discovered;
use crate::selector::LabelSelector;

/// The live objects in the restore's scope that the backup did not have.
#[allow(clippy::too_many_arguments)]
pub(super) async fn rollback_deletions(
    client: &Client,
    disc: &Discovered,
    catalog: &Catalog,
    opts: &RestoreOptions,
    selector: Option<&LabelSelector>,
    map_ns: &(dyn Fn(&str) -> String + Sync),
    items: &[Item],
    warnings: &mut Vec<String>,
) -> Result<Vec<PlannedDeletion>> {
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
                    out.push(PlannedDeletion {
                        api_version: res.api_version(),
                        kind: res.kind.clone(),
                        resource: res.resource.clone(),
                        namespaced: res.namespaced,
                        namespace: namespace_of(&o).map(str::to_string),
                        name: name_of(&o).to_string(),
                        reason: "it did not exist at backup time (--rollback)".into(),
                    });
                }
            }
        }
    }
    Ok(out)
}
