//! Collection: which objects a selection names, read from the API server a page at a
//! time and stored as a `resources` snapshot as they are read.
//!
//! Objects the cluster regenerates (events, endpoints, leases, nodes, service-account
//! token Secrets, the per-namespace `kube-root-ca.crt`, ...) are never stored: restoring
//! them would at best be overwritten and at worst fight the controllers that own them.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Instant;

use coffer_repo::Repository;
use coffer_repo::progress::{SharedProgress, Unit};
use futures::{StreamExt, stream};
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::archive::{ArchiveWriter, ClusterInfo, RecordedSelection};
use crate::client::Cluster;
use crate::discovery::{Discovered, ServedResource};
use crate::{Error, Result};

/// Which cluster-scoped objects come along.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterResources {
    /// Those the selected namespaced objects need (and all of them with
    /// `--all-namespaces`... no: see [`Selection`]).
    #[default]
    Auto,
    /// Every cluster-scoped object of the selected types, and the `Auto` set.
    Include,
    /// Only the Namespace objects of the selected namespaces.
    Exclude,
}

impl std::str::FromStr for ClusterResources {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "include" => Ok(Self::Include),
            "exclude" => Ok(Self::Exclude),
            _ => Err(Error::Invalid(format!(
                "--cluster-resources {s:?}: expected auto, include or exclude"
            ))),
        }
    }
}

impl ClusterResources {
    /// The flag value (`auto`, `include`, `exclude`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Include => "include",
            Self::Exclude => "exclude",
        }
    }
}

/// What to back up.
///
/// - Namespaced objects: those in `namespaces` (every namespace with `all_namespaces`),
///   of the resource types left after `include_resources`/`exclude_resources`, matching
///   `selector`.
/// - Cluster-scoped objects: with `Auto`, the Namespace objects of the selected
///   namespaces and what the selected objects need: CRDs of their custom resources, PVs
///   bound to their PVCs, the StorageClasses of those, ClusterRoles and
///   ClusterRoleBindings that bind their ServiceAccounts, PriorityClasses their pods use.
///   With `Include`, every cluster-scoped object of the selected types (and the `Auto`
///   set). With `Exclude`, only the Namespace objects.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Namespaces to back up (ignored with `all_namespaces`).
    pub namespaces: Vec<String>,
    /// Every namespace.
    pub all_namespaces: bool,
    /// Label selector (kubectl syntax), evaluated by the API server.
    pub selector: Option<String>,
    /// More label selectors: an object matching any of them (or `selector`) is selected
    /// (Velero's `orLabelSelectors`). With these and no `selector`, only what they match.
    pub or_selectors: Vec<String>,
    /// Objects named one by one, selected whatever their labels (in addition to what the
    /// selectors select).
    pub objects: Vec<NamedObject>,
    /// Only these resource types (kubectl names).
    pub include_resources: Vec<String>,
    /// Never these resource types (kubectl names).
    pub exclude_resources: Vec<String>,
    /// Which cluster-scoped objects come along.
    pub cluster_resources: ClusterResources,
}

/// One object named in a selection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedObject {
    /// Its type, as kubectl names it (`deployment`, `deployments.apps`, `cm`).
    pub resource: String,
    /// Its namespace (namespaced types; default: each selected namespace).
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

/// What `resources backup` reports.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BackupSummary {
    /// The new snapshot's id (hex).
    pub snapshot_id: String,
    /// How many objects were stored.
    pub objects: usize,
    /// Types that could not be listed, objects that could not be read.
    pub warnings: Vec<String>,
    /// The namespaces backed up.
    pub namespaces: Vec<String>,
    /// Objects per resource type ("deployments.apps": 2).
    pub types: BTreeMap<String, usize>,
    /// Bytes the repository grew by.
    pub bytes_new: u64,
    /// Wall-clock seconds.
    pub duration_s: f64,
}

/// Resource types never stored, as (group, plural).
const NEVER_STORED: &[(&str, &str)] = &[
    ("", "events"),
    ("events.k8s.io", "events"),
    ("", "endpoints"),
    ("discovery.k8s.io", "endpointslices"),
    ("coordination.k8s.io", "leases"),
    ("", "nodes"),
    ("", "componentstatuses"),
    ("storage.k8s.io", "volumeattachments"),
    ("storage.k8s.io", "csinodes"),
    ("storage.k8s.io", "csistoragecapacities"),
    ("certificates.k8s.io", "certificatesigningrequests"),
    ("internal.apiserver.k8s.io", "storageversions"),
    ("metrics.k8s.io", "pods"),
    ("metrics.k8s.io", "nodes"),
];

/// Whether a resource type is ever stored.
pub fn type_is_stored(r: &ServedResource) -> bool {
    !NEVER_STORED.contains(&(r.group.as_str(), r.resource.as_str()))
        && r.can("list")
        && r.can("get")
        && r.can("create")
}

/// Why an object of a stored type is still not stored, if it is not.
pub fn object_not_stored(r: &ServedResource, obj: &Value) -> Option<&'static str> {
    let meta = &obj["metadata"];
    match (r.group.as_str(), r.kind.as_str()) {
        ("", "Secret") if obj["type"] == "kubernetes.io/service-account-token" => {
            Some("service-account token Secrets are issued by the cluster")
        }
        ("", "ConfigMap") if meta["name"] == "kube-root-ca.crt" => {
            Some("kube-root-ca.crt is published into every namespace by the cluster")
        }
        ("apiregistration.k8s.io", "APIService")
            if meta["labels"]["kube-aggregator.kubernetes.io/automanaged"].is_string() =>
        {
            Some("built-in APIServices are managed by the API server")
        }
        ("flowcontrol.apiserver.k8s.io", _)
            if meta["annotations"]["apf.kubernetes.io/autoupdate-spec"] == "true" =>
        {
            Some("default flow-control objects are maintained by the API server")
        }
        ("rbac.authorization.k8s.io", _)
            if meta["labels"]["kubernetes.io/bootstrapping"] == "rbac-defaults" =>
        {
            Some("default RBAC objects are reconciled by the API server")
        }
        ("scheduling.k8s.io", "PriorityClass")
            if meta["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("system-")) =>
        {
            Some("system PriorityClasses are built in")
        }
        _ => None,
    }
}

/// Objects a listing page holds at most.
const PAGE_SIZE: u32 = 250;

/// Listings whose first page is fetched ahead while an earlier one is stored (many types
/// have few objects: their listings are round trips worth overlapping). With the page
/// being stored, a backup holds at most `(LISTINGS_AHEAD + 1) * PAGE_SIZE` objects
/// (measured: 8 pages of 500 Deployments ahead held 23 MiB more at 10,000 objects than
/// at 1,000).
const LISTINGS_AHEAD: usize = 4;

/// Lists every object of one resource type (in one namespace, or all), page by page.
pub async fn list_all(
    client: &Client,
    res: &ServedResource,
    namespace: Option<&str>,
    selector: Option<&str>,
) -> Result<Vec<Value>> {
    let mut listing = Listing::new(
        res.clone(),
        namespace.map(str::to_string),
        vec![selector.map(str::to_string)],
    );
    let mut out = Vec::new();
    while let Some(page) = listing.next_page(client).await? {
        out.extend(page);
    }
    Ok(out)
}

/// One resource type in one namespace (or all), listed a page at a time under each of
/// some label selectors in turn.
struct Listing {
    res: ServedResource,
    namespace: Option<String>,
    selectors: Vec<Option<String>>,
    /// The selector being listed.
    at: usize,
    continue_token: Option<String>,
}

impl Listing {
    fn new(res: ServedResource, namespace: Option<String>, selectors: Vec<Option<String>>) -> Self {
        Listing {
            res,
            namespace,
            selectors,
            at: 0,
            continue_token: None,
        }
    }

    /// The next page (apiVersion and kind set), or None after the last.
    async fn next_page(&mut self, client: &Client) -> Result<Option<Vec<Value>>> {
        let Some(selector) = self.selectors.get(self.at) else {
            return Ok(None);
        };
        let ar = self.res.api_resource();
        let api: Api<DynamicObject> = match &self.namespace {
            Some(ns) if self.res.namespaced => Api::namespaced_with(client.clone(), ns, &ar),
            _ => Api::all_with(client.clone(), &ar),
        };
        let params = ListParams {
            label_selector: selector.clone(),
            limit: Some(PAGE_SIZE),
            continue_token: self.continue_token.take(),
            ..Default::default()
        };
        let page = api.list(&params).await?;
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => self.continue_token = Some(c),
            _ => self.at += 1,
        }
        Ok(Some(
            page.items
                .into_iter()
                .map(|o| with_type(&self.res, o))
                .collect(),
        ))
    }
}

/// The object as JSON with apiVersion and kind set (list items may lack them).
pub(crate) fn with_type(res: &ServedResource, obj: DynamicObject) -> Value {
    // apiVersion and kind first, as kubectl prints them.
    let mut out = serde_json::Map::new();
    out.insert("apiVersion".into(), Value::String(res.api_version()));
    out.insert("kind".into(), Value::String(res.kind.clone()));
    if let Ok(Value::Object(map)) = serde_json::to_value(&obj) {
        for (k, v) in map {
            if k != "apiVersion" && k != "kind" {
                out.insert(k, v);
            }
        }
    }
    Value::Object(out)
}

/// Reads one object by name, if it exists.
pub async fn get_object(
    client: &Client,
    res: &ServedResource,
    namespace: Option<&str>,
    name: &str,
) -> Result<Option<Value>> {
    let ar = res.api_resource();
    let api: Api<DynamicObject> = match namespace {
        Some(ns) if res.namespaced => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    };
    match api.get(name).await {
        Ok(o) => Ok(Some(with_type(res, o))),
        // A plain 404 also comes back for a resource type the server does not serve
        // (yet): a custom resource whose CRD this restore has still to create.
        Err(kube::Error::Api(ae)) if ae.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Resolves include/exclude lists to the set of (group, plural) they name.
fn resolve_names(
    disc: &Discovered,
    names: &[String],
    warnings: &mut Vec<String>,
    strict: bool,
) -> Result<BTreeSet<(String, String)>> {
    let mut out = BTreeSet::new();
    for n in names.iter().flat_map(|n| n.split(',')).map(str::trim) {
        if n.is_empty() {
            continue;
        }
        if n == "*" {
            for r in disc.preferred_resources() {
                out.insert((r.group.clone(), r.resource.clone()));
            }
            continue;
        }
        match disc.resolve(n) {
            Ok(rs) => {
                for r in rs {
                    out.insert((r.group.clone(), r.resource.clone()));
                }
            }
            Err(e) if strict => return Err(e),
            Err(e) => warnings.push(e.to_string()),
        }
    }
    Ok(out)
}

/// The resource types a selection lists: (namespaced, cluster-scoped).
pub fn selected_types<'a>(
    disc: &'a Discovered,
    include: &[String],
    exclude: &[String],
    warnings: &mut Vec<String>,
) -> Result<Vec<&'a ServedResource>> {
    let included = resolve_names(disc, include, warnings, true)?;
    let excluded = resolve_names(disc, exclude, warnings, false)?;
    Ok(disc
        .preferred_resources()
        .into_iter()
        .filter(|r| type_is_stored(r))
        .filter(|r| {
            let key = (r.group.clone(), r.resource.clone());
            (included.is_empty() || included.contains(&key)) && !excluded.contains(&key)
        })
        .collect())
}

/// Collects the selection and stores it as a resources snapshot, each object as it is
/// listed: memory holds a few listing pages, never the whole selection (a namespace of
/// 66,000 objects backs up in the memory of one of 1,000).
///
/// Progress: stage "collecting" while the cluster's types are discovered, then stage
/// "storing" counting the objects stored (no total: it is known at the end).
pub async fn backup(
    repo: &Repository,
    cluster: &Cluster,
    sel: &Selection,
    tags: BTreeMap<String, String>,
    progress: &SharedProgress,
) -> Result<BackupSummary> {
    let started = Instant::now();
    let client = cluster.client();
    let info = cluster.info().await?;
    progress.stage("collecting", Unit::Items, None);
    let disc = Discovered::from_cluster(client).await?;
    let mut warnings = Vec::new();
    let types = selected_types(
        &disc,
        &sel.include_resources,
        &sel.exclude_resources,
        &mut warnings,
    )?;
    let excluded = resolve_names(&disc, &sel.exclude_resources, &mut Vec::new(), false)?;

    // The namespaces in scope.
    let ns_res = disc
        .by_kind("", "Namespace")
        .ok_or_else(|| Error::Invalid("the cluster serves no namespaces".into()))?
        .clone();
    let mut namespaces: Vec<String> = if sel.all_namespaces {
        list_all(client, &ns_res, None, None)
            .await?
            .iter()
            .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
            .collect()
    } else {
        sel.namespaces.clone()
    };
    namespaces.sort();
    namespaces.dedup();
    let mut namespace_objects = Vec::new();
    for ns in &namespaces {
        match get_object(client, &ns_res, None, ns).await? {
            Some(o) => namespace_objects.push(o),
            None => {
                return Err(Error::Invalid(format!(
                    "namespace {ns:?} does not exist in the cluster at {} (check --namespace and --context)",
                    info.server
                )));
            }
        }
    }
    let source = if sel.all_namespaces {
        format!("{}/*", cluster_name(&info))
    } else {
        format!("{}/{}", cluster_name(&info), namespaces.join(","))
    };
    let selection = RecordedSelection {
        namespaces: namespaces.clone(),
        all_namespaces: sel.all_namespaces,
        selector: sel.selector.clone(),
        include_resources: sel.include_resources.clone(),
        exclude_resources: sel.exclude_resources.clone(),
        cluster_resources: sel.cluster_resources.as_str().into(),
    };
    progress.stage("storing", Unit::Items, None);
    let archive = ArchiveWriter::start(repo, info, selection).await?;
    let mut run = Collection {
        client,
        disc: &disc,
        sel,
        excluded,
        progress,
        archive,
        collected: types.iter().map(|r| (*r).clone()).collect(),
        type_counts: BTreeMap::new(),
        named: HashSet::new(),
        cluster_keys: HashSet::new(),
        needs: Needs::default(),
        warnings,
    };
    if let Err(e) = run
        .collect(&types, &ns_res, namespace_objects, &namespaces)
        .await
    {
        run.archive.abort().await;
        return Err(e);
    }
    let Collection {
        archive,
        collected,
        type_counts,
        warnings,
        ..
    } = run;
    let objects = archive.stored() as usize;
    let (snap, bytes_new) = archive
        .commit(collected, tags, source, warnings.len())
        .await?;
    Ok(BackupSummary {
        snapshot_id: snap.id.to_hex(),
        objects,
        warnings,
        namespaces,
        types: type_counts,
        bytes_new,
        duration_s: started.elapsed().as_secs_f64(),
    })
}

/// (group, kind, namespace, name): an object's identity in a backup.
type ObjectKey = (String, String, Option<String>, String);

fn key_of(r: &ServedResource, o: &Value) -> ObjectKey {
    (
        r.group.clone(),
        r.kind.clone(),
        namespace_of(o).map(str::to_string),
        name_of(o).to_string(),
    )
}

/// One backup's collection under way: what has been stored, and what that brings along.
struct Collection<'a> {
    client: &'a Client,
    disc: &'a Discovered,
    sel: &'a Selection,
    /// (group, plural) excluded by the selection.
    excluded: BTreeSet<(String, String)>,
    progress: &'a SharedProgress,
    archive: ArchiveWriter,
    /// Every type listed, and the types of objects stored without listing theirs.
    collected: Vec<ServedResource>,
    type_counts: BTreeMap<String, usize>,
    /// Objects named one by one (stored first; listings skip them).
    named: HashSet<ObjectKey>,
    /// Cluster-scoped objects stored (a dependency is stored once).
    cluster_keys: HashSet<ObjectKey>,
    needs: Needs,
    warnings: Vec<String>,
}

impl Collection<'_> {
    fn type_allowed(&self, r: &ServedResource) -> bool {
        !self
            .excluded
            .contains(&(r.group.clone(), r.resource.clone()))
    }

    /// Stores objects of one type that the selection keeps, noting what they need.
    async fn store(&mut self, r: &ServedResource, objects: &[Value]) -> Result<()> {
        let keep: Vec<&Value> = objects
            .iter()
            .filter(|o| object_not_stored(r, o).is_none())
            .collect();
        if keep.is_empty() {
            return Ok(());
        }
        for o in &keep {
            if r.namespaced {
                self.needs.observe(r, o);
            } else {
                self.cluster_keys.insert(key_of(r, o));
            }
        }
        if !self.collected.contains(r) {
            self.collected.push(r.clone());
        }
        *self.type_counts.entry(r.group_resource()).or_insert(0) += keep.len();
        self.archive.store(r, &keep, self.progress).await
    }

    async fn collect(
        &mut self,
        types: &[&ServedResource],
        ns_res: &ServedResource,
        namespace_objects: Vec<Value>,
        namespaces: &[String],
    ) -> Result<()> {
        if self.type_allowed(ns_res) {
            self.store(ns_res, &namespace_objects).await?;
        }
        self.named_objects(namespaces).await?;
        self.namespaced(types, namespaces).await?;
        if self.sel.cluster_resources == ClusterResources::Include {
            for r in types
                .iter()
                .filter(|r| !r.namespaced && r.kind != "Namespace")
            {
                self.cluster_listing(r).await?;
            }
        }
        if self.sel.cluster_resources != ClusterResources::Exclude {
            self.dependencies().await?;
        }
        Ok(())
    }

    /// Objects named one by one, whatever their labels.
    async fn named_objects(&mut self, namespaces: &[String]) -> Result<()> {
        for named in &self.sel.objects {
            let found = match self.disc.resolve(&named.resource) {
                Ok(rs) => rs,
                Err(e) => {
                    self.warnings
                        .push(format!("object {}/{}: {e}", named.resource, named.name));
                    continue;
                }
            };
            let Some(r) = found.into_iter().next().cloned() else {
                continue;
            };
            let scopes: Vec<Option<String>> = match (&named.namespace, r.namespaced) {
                (_, false) => vec![None],
                (Some(ns), true) => vec![Some(ns.clone())],
                (None, true) => namespaces.iter().map(|n| Some(n.clone())).collect(),
            };
            let mut any = false;
            for ns in scopes {
                match get_object(self.client, &r, ns.as_deref(), &named.name).await {
                    Ok(Some(o)) => {
                        any = true;
                        let key = key_of(&r, &o);
                        if self.named.insert(key) {
                            self.store(&r, std::slice::from_ref(&o)).await?;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => self.warnings.push(format!(
                        "could not read {}/{}: {e}",
                        named.resource, named.name
                    )),
                }
            }
            if !any {
                self.warnings.push(format!(
                    "object {}/{} named in the selection does not exist",
                    named.resource, named.name
                ));
            }
        }
        Ok(())
    }

    /// Namespaced objects: one listing per (type, namespace), or per type across all
    /// namespaces, each under every selector (an object matching several is stored
    /// once). Listings are fetched a few ahead and stored in order, a page at a time.
    async fn namespaced(&mut self, types: &[&ServedResource], namespaces: &[String]) -> Result<()> {
        let sel = self.sel;
        let selectors: Vec<Option<String>> = if sel.or_selectors.is_empty() {
            vec![sel.selector.clone()]
        } else {
            sel.selector
                .iter()
                .chain(&sel.or_selectors)
                .map(|s| Some(s.clone()))
                .collect()
        };
        let scopes: Vec<Option<String>> = if sel.all_namespaces {
            vec![None]
        } else {
            namespaces.iter().map(|n| Some(n.clone())).collect()
        };
        let mut listings = Vec::new();
        for r in types.iter().filter(|r| r.namespaced) {
            for ns in &scopes {
                listings.push(Listing::new((*r).clone(), ns.clone(), selectors.clone()));
            }
        }
        let client = self.client;
        // Owned listings: a stream of futures that borrow from their closure's argument
        // is not provably Send to callers that spawn this future (the operator).
        let mut ahead = stream::iter(listings)
            .map(|mut l| async move {
                let first = l.next_page(client).await;
                (l, first)
            })
            .buffered(LISTINGS_AHEAD);
        while let Some((mut listing, mut page)) = ahead.next().await {
            // Names stored from this listing, when several selectors may repeat them.
            let mut seen: HashSet<(Option<String>, String)> = HashSet::new();
            loop {
                let items = match page {
                    Ok(Some(items)) => items,
                    Ok(None) => break,
                    Err(Error::Api {
                        code: 400, message, ..
                    }) => {
                        return Err(Error::Invalid(format!(
                            "the API server rejected the selection: {message} (check --selector)"
                        )));
                    }
                    Err(e) => {
                        self.warnings.push(format!(
                            "could not list {}: {e}",
                            listing.res.group_resource()
                        ));
                        break;
                    }
                };
                let res = listing.res.clone();
                let several = listing.selectors.len() > 1;
                let items: Vec<Value> = items
                    .into_iter()
                    .filter(|o| {
                        // No key built per object unless objects were named.
                        (self.named.is_empty() || !self.named.contains(&key_of(&res, o)))
                            && (!several
                                || seen.insert((
                                    namespace_of(o).map(str::to_string),
                                    name_of(o).to_string(),
                                )))
                    })
                    .collect();
                self.store(&res, &items).await?;
                page = listing.next_page(client).await;
            }
        }
        Ok(())
    }

    /// Every object of one cluster-scoped type (`--cluster-resources include`).
    async fn cluster_listing(&mut self, r: &ServedResource) -> Result<()> {
        let mut listing = Listing::new(r.clone(), None, vec![self.sel.selector.clone()]);
        loop {
            match listing.next_page(self.client).await {
                Ok(Some(items)) => {
                    let items: Vec<Value> = items
                        .into_iter()
                        .filter(|o| !self.cluster_keys.contains(&key_of(r, o)))
                        .collect();
                    self.store(r, &items).await?;
                }
                Ok(None) => return Ok(()),
                Err(e) => {
                    self.warnings
                        .push(format!("could not list {}: {e}", r.group_resource()));
                    return Ok(());
                }
            }
        }
    }

    /// The cluster-scoped objects the stored namespaced objects need.
    async fn dependencies(&mut self) -> Result<()> {
        let needs = std::mem::take(&mut self.needs)
            .resolve(self.disc, self.client)
            .await?;
        for (group, kind, name) in needs {
            let Some(r) = self.disc.by_kind(&group, &kind) else {
                continue;
            };
            if self
                .cluster_keys
                .contains(&(group.clone(), kind.clone(), None, name.clone()))
                || !self.type_allowed(r)
            {
                continue;
            }
            match get_object(self.client, r, None, &name).await {
                Ok(Some(o)) => self.store(r, std::slice::from_ref(&o)).await?,
                Ok(None) => {}
                Err(e) => self
                    .warnings
                    .push(format!("could not read {kind}/{name}: {e}")),
            }
        }
        Ok(())
    }
}

/// A short name for the cluster in snapshot sources: the API server's host and port.
fn cluster_name(c: &ClusterInfo) -> String {
    c.server
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

pub(crate) fn name_of(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or_default()
}

pub(crate) fn namespace_of(o: &Value) -> Option<&str> {
    o["metadata"]["namespace"].as_str()
}

/// What the stored namespaced objects need from the cluster scope, noted as they are
/// stored: CRDs of custom resources, PVs of PVCs and their StorageClasses, ClusterRoles
/// bound by RoleBindings, PriorityClasses of pods, ClusterRoleBindings of ServiceAccounts.
#[derive(Default)]
struct Needs {
    /// (group, kind, name).
    objects: BTreeSet<(String, String, String)>,
    pvs: Vec<String>,
    /// (namespace, name) of stored ServiceAccounts.
    service_accounts: BTreeSet<(String, String)>,
}

impl Needs {
    fn add(&mut self, g: &str, k: &str, n: &str) {
        if !n.is_empty() {
            self.objects
                .insert((g.to_string(), k.to_string(), n.to_string()));
        }
    }

    fn observe(&mut self, r: &ServedResource, o: &Value) {
        match (r.group.as_str(), r.kind.as_str()) {
            ("", "PersistentVolumeClaim") => {
                if let Some(pv) = o["spec"]["volumeName"].as_str() {
                    self.add("", "PersistentVolume", pv);
                    self.pvs.push(pv.to_string());
                }
                if let Some(sc) = o["spec"]["storageClassName"].as_str() {
                    self.add("storage.k8s.io", "StorageClass", sc);
                }
            }
            ("rbac.authorization.k8s.io", "RoleBinding")
                if o["roleRef"]["kind"] == "ClusterRole" =>
            {
                self.add(
                    "rbac.authorization.k8s.io",
                    "ClusterRole",
                    o["roleRef"]["name"].as_str().unwrap_or_default(),
                );
            }
            ("", "ServiceAccount") => {
                self.service_accounts.insert((
                    namespace_of(o).unwrap_or_default().to_string(),
                    name_of(o).to_string(),
                ));
            }
            _ => {}
        }
        if let Some(pc) = crate::refs::pod_spec(r, o).and_then(|s| s["priorityClassName"].as_str())
        {
            self.add("scheduling.k8s.io", "PriorityClass", pc);
        }
        // Custom resources bring their CRD.
        if !is_builtin_group(&r.group) {
            self.add(
                "apiextensions.k8s.io",
                "CustomResourceDefinition",
                &format!("{}.{}", r.resource, r.group),
            );
        }
    }

    /// Everything needed, as (group, kind, name): what was noted, the StorageClasses of
    /// the PVs (a PV may name a class its claim does not), and the ClusterRoleBindings
    /// with a noted ServiceAccount as subject (with their ClusterRoles).
    async fn resolve(
        mut self,
        disc: &Discovered,
        client: &Client,
    ) -> Result<BTreeSet<(String, String, String)>> {
        if let Some(pv_res) = disc.by_kind("", "PersistentVolume") {
            for pv in std::mem::take(&mut self.pvs) {
                if let Some(o) = get_object(client, pv_res, None, &pv).await?
                    && let Some(sc) = o["spec"]["storageClassName"].as_str()
                {
                    self.add("storage.k8s.io", "StorageClass", sc);
                }
            }
        }
        if !self.service_accounts.is_empty()
            && let Some(crb) = disc.by_kind("rbac.authorization.k8s.io", "ClusterRoleBinding")
        {
            for b in list_all(client, crb, None, None).await? {
                if object_not_stored(crb, &b).is_some() {
                    continue;
                }
                let binds_selected = b["subjects"].as_array().is_some_and(|subjects| {
                    subjects.iter().any(|s| {
                        s["kind"] == "ServiceAccount"
                            && self.service_accounts.contains(&(
                                s["namespace"].as_str().unwrap_or_default().to_string(),
                                s["name"].as_str().unwrap_or_default().to_string(),
                            ))
                    })
                });
                if binds_selected {
                    self.add(
                        "rbac.authorization.k8s.io",
                        "ClusterRoleBinding",
                        name_of(&b),
                    );
                    if b["roleRef"]["kind"] == "ClusterRole" {
                        self.add(
                            "rbac.authorization.k8s.io",
                            "ClusterRole",
                            b["roleRef"]["name"].as_str().unwrap_or_default(),
                        );
                    }
                }
            }
        }
        Ok(self.objects)
    }
}

/// Groups served by Kubernetes itself (their types need no CRD).
pub fn is_builtin_group(group: &str) -> bool {
    const BUILTIN: &[&str] = &[
        "",
        "apps",
        "batch",
        "autoscaling",
        "policy",
        "extensions",
        "networking.k8s.io",
        "rbac.authorization.k8s.io",
        "storage.k8s.io",
        "apiextensions.k8s.io",
        "apiregistration.k8s.io",
        "admissionregistration.k8s.io",
        "scheduling.k8s.io",
        "coordination.k8s.io",
        "node.k8s.io",
        "discovery.k8s.io",
        "events.k8s.io",
        "flowcontrol.apiserver.k8s.io",
        "certificates.k8s.io",
        "authentication.k8s.io",
        "authorization.k8s.io",
        "internal.apiserver.k8s.io",
        "resource.k8s.io",
        "storagemigration.k8s.io",
    ];
    BUILTIN.contains(&group)
}
