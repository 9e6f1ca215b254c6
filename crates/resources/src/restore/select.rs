//! Selection: which catalog entries a restore's options name (namespaces, resource types,
//! a label selector, `--only KIND/NAME`), and the Namespace objects that come along.

use std::collections::BTreeSet;

use super::RestoreOptions;
use crate::archive::{Catalog, Entry};
use crate::selector::LabelSelector;
use crate::{Error, Result};

/// Which stored entries the options select (Namespace objects follow their contents).
pub(super) fn select_entries(
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

pub(super) fn names(list: &[String]) -> impl Iterator<Item = &str> {
    list.iter()
        .flat_map(|n| n.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
}
