//! Dependency checks: every required reference of a restored object (a ConfigMap, Secret,
//! PVC or ServiceAccount of its pods, the Role of a RoleBinding, the Service of an
//! Ingress, ...) must be restored in the same run or exist in the target; what is missing
//! is reported, with whether the backup holds it.

use std::collections::{BTreeMap, BTreeSet};

use kube::Client;

use super::Action;
use super::prepare::Item;
use crate::archive::Catalog;
use crate::collect::get_object;
use crate::discovery::Discovered;
use crate::refs;

/// References from restored objects to objects that will be neither restored nor present.
pub(super) async fn missing_dependencies(
    client: &Client,
    disc: &Discovered,
    items: &[Item],
    catalog: &Catalog,
) -> Vec<String> {
    let restored: BTreeSet<(&str, &str, Option<&str>, &str)> = items
        .iter()
        .filter(|it| it.failure.is_none())
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
    for it in items
        .iter()
        .filter(|it| it.action != Action::Skip && it.failure.is_none())
    {
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
