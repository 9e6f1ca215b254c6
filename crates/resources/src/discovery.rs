//! What a cluster serves: every group, version and resource, from the API server's
//! discovery endpoints, with the names kubectl accepts for each resource.
//!
//! kube-rs's own `Discovery` drops short names and singular names, which `--include-resources
//! deploy` needs, so this reads the raw `APIResourceList`s (through kube-rs's client calls)
//! and keeps everything.

use std::collections::BTreeMap;

use futures::future::join_all;
use kube::Client;
use kube::discovery::ApiResource;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One resource as served in one group version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedResource {
    /// "" for the core group.
    pub group: String,
    /// The version ("v1").
    pub version: String,
    /// The kind ("Deployment").
    pub kind: String,
    /// The plural name used in URLs ("deployments").
    pub resource: String,
    #[serde(default)]
    /// The singular name ("deployment").
    pub singular: String,
    #[serde(default)]
    /// Short names ("deploy").
    pub short_names: Vec<String>,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    #[serde(default)]
    /// The verbs the server allows (list, get, create, ...).
    pub verbs: Vec<String>,
    /// Whether `status` is a subresource (then the main resource ignores it on create).
    #[serde(default)]
    pub status_subresource: bool,
}

impl ServedResource {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        api_version(&self.group, &self.version)
    }

    /// "deployments.apps", or "configmaps" for the core group.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    /// kube-rs's description of the resource, for dynamic APIs.
    pub fn api_resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.clone(),
            version: self.version.clone(),
            api_version: self.api_version(),
            kind: self.kind.clone(),
            plural: self.resource.clone(),
        }
    }

    /// Whether the server allows `verb` on this resource.
    pub fn can(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    /// Whether `name` is one of the names kubectl accepts for this resource: plural,
    /// singular, short name or kind, each optionally followed by `.group` (or a prefix of
    /// `version.group`, as in `deployments.v1.apps`).
    pub fn answers_to(&self, name: &str) -> bool {
        let (base, qualifier) = match name.split_once('.') {
            Some((b, q)) => (b, Some(q)),
            None => (name, None),
        };
        let base_matches = base.eq_ignore_ascii_case(&self.resource)
            || base.eq_ignore_ascii_case(&self.singular)
            || base.eq_ignore_ascii_case(&self.kind)
            || self
                .short_names
                .iter()
                .any(|s| s.eq_ignore_ascii_case(base));
        if !base_matches {
            return false;
        }
        match qualifier {
            None => true,
            Some(q) => {
                q == self.group
                    || q == format!("{}.{}", self.version, self.group).trim_end_matches('.')
            }
        }
    }
}

/// `group/version`, or `version` for the core group.
pub fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// Splits "apps/v1" into ("apps", "v1") and "v1" into ("", "v1").
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// Everything a cluster serves.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Discovered {
    /// Every resource in every served version (subresources excluded).
    pub resources: Vec<ServedResource>,
    /// The preferred version of each group ("" = core).
    pub preferred: BTreeMap<String, String>,
}

impl Discovered {
    /// Reads discovery from the API server: the core group and every API group, each group
    /// version fetched concurrently.
    pub async fn from_cluster(client: &Client) -> Result<Discovered> {
        let mut preferred = BTreeMap::new();
        let mut versions: Vec<(String, String)> = Vec::new();
        let core = client.list_core_api_versions().await?;
        for v in &core.versions {
            versions.push((String::new(), v.clone()));
        }
        if let Some(v) = core.versions.first() {
            preferred.insert(String::new(), v.clone());
        }
        let groups = client.list_api_groups().await?;
        for g in groups.groups {
            if let Some(p) = g.preferred_version.as_ref().or(g.versions.first()) {
                preferred.insert(g.name.clone(), p.version.clone());
            }
            for v in g.versions {
                versions.push((g.name.clone(), v.version));
            }
        }
        let lists = join_all(versions.iter().map(|(g, v)| async move {
            let list = if g.is_empty() {
                client.list_core_api_resources(v).await
            } else {
                client.list_api_group_resources(&api_version(g, v)).await
            };
            (g.clone(), v.clone(), list)
        }))
        .await;
        let mut resources = Vec::new();
        for (group, version, list) in lists {
            let list = match list {
                Ok(l) => l,
                // An aggregated API whose backend is down fails discovery of its group
                // only; everything else stays usable (kubectl behaves the same).
                Err(e) => {
                    tracing::warn!("discovery of {group}/{version} failed: {e}");
                    continue;
                }
            };
            let status_of: Vec<&str> = list
                .resources
                .iter()
                .filter_map(|r| r.name.strip_suffix("/status"))
                .collect();
            for r in &list.resources {
                if r.name.contains('/') {
                    continue;
                }
                resources.push(ServedResource {
                    group: group.clone(),
                    version: version.clone(),
                    kind: r.kind.clone(),
                    resource: r.name.clone(),
                    singular: if r.singular_name.is_empty() {
                        r.kind.to_ascii_lowercase()
                    } else {
                        r.singular_name.clone()
                    },
                    short_names: r.short_names.clone().unwrap_or_default(),
                    namespaced: r.namespaced,
                    verbs: r.verbs.clone(),
                    status_subresource: status_of.contains(&r.name.as_str()),
                });
            }
        }
        Ok(Discovered {
            resources,
            preferred,
        })
    }

    /// Each resource in its group's preferred version (or, when the preferred version
    /// does not serve it, the first version that does).
    pub fn preferred_resources(&self) -> Vec<&ServedResource> {
        let mut out: Vec<&ServedResource> = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut sorted: Vec<&ServedResource> = self.resources.iter().collect();
        sorted.sort_by_key(|r| {
            (
                r.group.clone(),
                r.resource.clone(),
                self.preferred.get(&r.group) != Some(&r.version),
            )
        });
        for r in sorted {
            if seen.insert((r.group.clone(), r.resource.clone())) {
                out.push(r);
            }
        }
        out
    }

    /// Resolves a kubectl-style resource name to the resources it names (in their
    /// preferred versions). An unknown name is an error listing what to check.
    pub fn resolve(&self, name: &str) -> Result<Vec<&ServedResource>> {
        let found: Vec<&ServedResource> = self
            .preferred_resources()
            .into_iter()
            .filter(|r| r.answers_to(name))
            .collect();
        if found.is_empty() {
            return Err(Error::Invalid(format!(
                "the cluster serves no resource named {name:?} (see `kubectl api-resources`; custom resources need their CRD installed)"
            )));
        }
        // A bare name matching several groups (e.g. "events"): kubectl picks the core
        // group first; keep all so that include/exclude covers each.
        Ok(found)
    }

    /// The served resource for (group, kind) in the preferred version, if any.
    pub fn by_kind(&self, group: &str, kind: &str) -> Option<&ServedResource> {
        // What `preferred_resources` would list first for this kind, without sorting
        // everything (planners call this once per reference).
        let preferred = self.preferred.get(group);
        self.resources
            .iter()
            .enumerate()
            .filter(|(_, r)| r.group == group && r.kind == kind)
            .min_by_key(|(i, r)| (r.resource.as_str(), preferred != Some(&r.version), *i))
            .map(|(_, r)| r)
    }

    /// The resource serving exactly this apiVersion and kind.
    pub fn exact(&self, api_version: &str, kind: &str) -> Option<&ServedResource> {
        let (g, v) = split_api_version(api_version);
        self.resources
            .iter()
            .find(|r| r.group == g && r.version == v && r.kind == kind)
    }

    /// Adds the resources a CustomResourceDefinition object defines (so that custom
    /// resources can be planned before their CRD exists in the target).
    pub fn add_crd(&mut self, crd: &serde_json::Value) {
        let spec = &crd["spec"];
        let group = spec["group"].as_str().unwrap_or_default().to_string();
        let names = &spec["names"];
        let kind = names["kind"].as_str().unwrap_or_default().to_string();
        let plural = names["plural"].as_str().unwrap_or_default().to_string();
        if group.is_empty() || kind.is_empty() || plural.is_empty() {
            return;
        }
        let namespaced = spec["scope"].as_str() != Some("Cluster");
        let versions = spec["versions"].as_array().cloned().unwrap_or_default();
        for v in &versions {
            if v["served"].as_bool() == Some(false) {
                continue;
            }
            let version = v["name"].as_str().unwrap_or_default().to_string();
            if self.exact(&api_version(&group, &version), &kind).is_some() {
                continue;
            }
            let storage = v["storage"].as_bool() == Some(true);
            if storage || !self.preferred.contains_key(&group) {
                self.preferred.insert(group.clone(), version.clone());
            }
            self.resources.push(ServedResource {
                group: group.clone(),
                version,
                kind: kind.clone(),
                resource: plural.clone(),
                singular: names["singular"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| kind.to_ascii_lowercase()),
                short_names: names["shortNames"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                namespaced,
                verbs: [
                    "create", "delete", "get", "list", "patch", "update", "watch",
                ]
                .map(str::to_string)
                .to_vec(),
                status_subresource: !v["subresources"]["status"].is_null(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy() -> ServedResource {
        ServedResource {
            group: "apps".into(),
            version: "v1".into(),
            kind: "Deployment".into(),
            resource: "deployments".into(),
            singular: "deployment".into(),
            short_names: vec!["deploy".into()],
            namespaced: true,
            verbs: vec!["list".into()],
            status_subresource: true,
        }
    }

    #[test]
    fn by_kind_picks_the_preferred_version() {
        let v1 = deploy();
        let beta = ServedResource {
            version: "v1beta1".into(),
            ..deploy()
        };
        let mut disc = Discovered {
            resources: vec![beta.clone(), v1.clone()],
            preferred: BTreeMap::from([("apps".to_string(), "v1".to_string())]),
        };
        assert_eq!(disc.by_kind("apps", "Deployment"), Some(&v1));
        assert_eq!(
            disc.by_kind("apps", "Deployment"),
            disc.preferred_resources()
                .into_iter()
                .find(|r| r.kind == "Deployment")
        );
        disc.preferred.clear();
        assert_eq!(disc.by_kind("apps", "Deployment"), Some(&beta));
        assert_eq!(disc.by_kind("batch", "Deployment"), None);
    }

    #[test]
    fn kubectl_names() {
        let d = deploy();
        for n in [
            "deployments",
            "deploy",
            "deployment",
            "Deployment",
            "deployments.apps",
            "deploy.apps",
            "deployments.v1.apps",
        ] {
            assert!(d.answers_to(n), "{n}");
        }
        for n in ["deployments.batch", "dep", "pods", "deployments.v2.apps"] {
            assert!(!d.answers_to(n), "{n}");
        }
    }
}
