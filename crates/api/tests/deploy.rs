//! deploy/ (the install, `kubectl apply -k deploy/`) holds together: every file parses as
//! Kubernetes objects, the kustomization lists every CRD file and the other manifests and
//! nothing that is missing, the operator's RBAC covers every kind of this API, and the
//! Deployment runs as the ServiceAccount the ClusterRoleBinding names. No cluster needed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule};
use serde::Deserialize;
use serde_yaml::Value;

const NAMESPACE: &str = "coffer-system";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// The YAML documents of a file.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            Value::deserialize(d).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// Every object of the manifests the kustomization lists, by kind.
struct Install {
    objects: Vec<Value>,
}

impl Install {
    fn of_kind<T: serde::de::DeserializeOwned>(&self, kind: &str) -> Vec<T> {
        self.objects
            .iter()
            .filter(|o| o["kind"] == kind)
            .map(|o| {
                serde_yaml::from_value(o.clone())
                    .unwrap_or_else(|e| panic!("a {kind} does not parse as one: {e}"))
            })
            .collect()
    }

    fn one<T: serde::de::DeserializeOwned>(&self, kind: &str, name: &str) -> T {
        let matching: Vec<&Value> = self
            .objects
            .iter()
            .filter(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .collect();
        assert_eq!(matching.len(), 1, "exactly one {kind} {name}");
        serde_yaml::from_value(matching[0].clone()).unwrap()
    }
}

fn kustomization_resources() -> Vec<String> {
    let k = documents(&deploy_dir().join("kustomization.yaml"));
    assert_eq!(k.len(), 1);
    assert_eq!(k[0]["kind"], "Kustomization");
    k[0]["resources"]
        .as_sequence()
        .expect("kustomization.yaml has a resources list")
        .iter()
        .map(|r| r.as_str().expect("resources are paths").to_string())
        .collect()
}

fn install() -> Install {
    let mut objects = Vec::new();
    for r in kustomization_resources() {
        let path = deploy_dir().join(&r);
        assert!(
            path.is_file(),
            "kustomization.yaml lists {r}, which does not exist"
        );
        for doc in documents(&path) {
            assert!(
                doc["apiVersion"].is_string() && doc["kind"].is_string(),
                "{r}: a document without apiVersion and kind"
            );
            assert!(
                doc["metadata"]["name"].is_string(),
                "{r}: an object without a name"
            );
            objects.push(doc);
        }
    }
    Install { objects }
}

#[test]
fn kustomization_lists_every_manifest() {
    let listed: BTreeSet<String> = kustomization_resources().into_iter().collect();
    let mut expected: BTreeSet<String> = ["namespace.yaml", "rbac.yaml", "operator.yaml"]
        .into_iter()
        .map(String::from)
        .collect();
    for e in std::fs::read_dir(deploy_dir().join("crds")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".yaml") {
            expected.insert(format!("crds/{name}"));
        }
    }
    // Every CRD this crate generates has its file (the crds test keeps them current).
    for crd in coffer_api::crds() {
        assert!(
            expected.contains(&format!("crds/{}", coffer_api::crd_file_name(&crd))),
            "deploy/crds/ lacks {}",
            coffer_api::crd_file_name(&crd)
        );
    }
    assert_eq!(
        listed, expected,
        "deploy/kustomization.yaml must list every file of deploy/crds/ and namespace.yaml, rbac.yaml, operator.yaml"
    );
    // Every YAML file in deploy/ parses (listed or not).
    for e in walk(&deploy_dir()) {
        if e.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            documents(&e);
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn objects_are_well_formed_and_consistent() {
    let install = install();
    // Namespaced objects are in coffer-system; nothing else is created in a namespace.
    for o in &install.objects {
        let kind = o["kind"].as_str().unwrap();
        let cluster_scoped = matches!(
            kind,
            "Namespace" | "CustomResourceDefinition" | "ClusterRole" | "ClusterRoleBinding"
        );
        if cluster_scoped {
            assert!(
                o["metadata"]["namespace"].is_null(),
                "{kind} with a namespace"
            );
        } else {
            assert_eq!(
                o["metadata"]["namespace"], NAMESPACE,
                "{kind} outside {NAMESPACE}"
            );
        }
    }
    let _: Namespace = install.one("Namespace", NAMESPACE);
    let crds = install.of_kind::<Value>("CustomResourceDefinition").len();
    assert_eq!(crds, coffer_api::crds().len());

    // The Deployment runs `coffer operator` as coffer-operator, which the binding names.
    let sa: ServiceAccount = install.one("ServiceAccount", "coffer-operator");
    assert_eq!(sa.metadata.namespace.as_deref(), Some(NAMESPACE));
    let binding: ClusterRoleBinding = install.one("ClusterRoleBinding", "coffer-operator");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(binding.role_ref.name, "coffer-operator");
    let subjects = binding.subjects.unwrap_or_default();
    assert_eq!(subjects.len(), 1);
    assert_eq!(
        (subjects[0].kind.as_str(), subjects[0].name.as_str()),
        ("ServiceAccount", "coffer-operator")
    );
    assert_eq!(subjects[0].namespace.as_deref(), Some(NAMESPACE));

    let deployment: Deployment = install.one("Deployment", "coffer-operator");
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(2), "two replicas, one Lease holder");
    let selector = spec.selector.match_labels.unwrap();
    let pod_meta = spec.template.metadata.unwrap();
    let pod_labels = pod_meta.labels.unwrap();
    for (k, v) in &selector {
        assert_eq!(pod_labels.get(k), Some(v), "the selector matches the pods");
    }
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("coffer-operator"));
    assert_eq!(pod.containers.len(), 1);
    let c = &pod.containers[0];
    assert_eq!(c.name, "operator");
    assert_eq!(c.image.as_deref(), Some("coffer:latest"));
    assert_eq!(c.args.as_deref(), Some(&["operator".to_string()][..]));
    let env: Vec<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
    for want in [
        "POD_NAME",
        "POD_NAMESPACE",
        "COFFER_LOG",
        "COFFER_CACHE_DIR",
        "COFFER_MOVER_IMAGE",
    ] {
        assert!(env.contains(&want), "the operator's env lacks {want}");
    }
    let sc = c.security_context.clone().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    // The read-only root needs the cache on a volume.
    let mounts = c.volume_mounts.clone().unwrap_or_default();
    let cache = mounts
        .iter()
        .find(|m| m.mount_path == "/cache")
        .expect("/cache mounted");
    assert!(
        pod.volumes
            .iter()
            .flatten()
            .any(|v| v.name == cache.name && v.empty_dir.is_some())
    );
    let port = c
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("metrics"));
    assert_eq!(port.map(|p| p.container_port), Some(8080));

    let service: Service = install.one("Service", "coffer-operator-metrics");
    let annotations = service.metadata.annotations.unwrap();
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "8080");
    assert_eq!(service.spec.unwrap().selector.unwrap(), selector);
}

/// Whether `rules` grant `verb` on `resource` of `group` (exact names or `*`).
fn allows(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
    let has =
        |list: &Option<Vec<String>>, v: &str| list.iter().flatten().any(|x| x == v || x == "*");
    rules.iter().any(|r| {
        r.resource_names.is_none()
            && has(&r.api_groups, group)
            && has(&r.resources, resource)
            && r.verbs.iter().any(|x| x == verb || x == "*")
    })
}

#[test]
fn rbac_covers_every_kind_and_no_more_than_it_should() {
    let install = install();
    let operator: ClusterRole = install.one("ClusterRole", "coffer-operator");
    let rules = operator.rules.unwrap();
    // Every kind of this API, with its status and finalizers, every verb.
    for crd in coffer_api::crds() {
        let plural = &crd.spec.names.plural;
        for resource in [
            plural.clone(),
            format!("{plural}/status"),
            format!("{plural}/finalizers"),
        ] {
            for verb in [
                "get", "list", "watch", "create", "update", "patch", "delete",
            ] {
                assert!(
                    allows(&rules, coffer_api::GROUP, &resource, verb),
                    "coffer-operator may not {verb} {resource}"
                );
            }
        }
    }
    // What the workflow needs.
    for (group, resource, verb) in [
        ("", "pods", "create"),
        ("", "pods/exec", "create"),
        ("", "pods/log", "get"),
        ("", "persistentvolumeclaims", "delete"),
        ("", "persistentvolumeclaims", "deletecollection"),
        ("", "secrets", "create"),
        ("", "serviceaccounts", "create"),
        ("events.k8s.io", "events", "create"),
        ("coordination.k8s.io", "leases", "update"),
        ("snapshot.storage.k8s.io", "volumesnapshots", "create"),
        (
            "groupsnapshot.storage.k8s.io",
            "volumegroupsnapshots",
            "create",
        ),
        ("cbt.storage.k8s.io", "snapshotmetadataservices", "get"),
        ("rbac.authorization.k8s.io", "rolebindings", "create"),
        ("apps", "deployments", "list"),
        // Restores: any kind the application is made of, created, replaced, deleted
        // (rollback); workloads scaled in place; the populator's PV handed over.
        ("apps", "deployments", "patch"),
        ("", "configmaps", "delete"),
        ("example.com", "widgets", "create"),
        ("", "persistentvolumes", "patch"),
    ] {
        assert!(
            allows(&rules, group, resource, verb),
            "coffer-operator may not {verb} {resource}"
        );
    }
    // Reads everything; writes of every kind only as restores need them (create, update,
    // patch, delete: no deletecollection on everything), no wildcard verbs, no escalation
    // beyond binding coffer-mover, no impersonation. (Restoring arbitrary objects makes
    // the operator as strong as what it may create, pods with any ServiceAccount included:
    // docs/install.md says so, as Velero's cluster-admin binding is.)
    for r in &rules {
        let wildcard_resources = r.resources.iter().flatten().any(|x| x == "*");
        let verbs: BTreeSet<&str> = r.verbs.iter().map(String::as_str).collect();
        assert!(!verbs.contains("*"), "a rule with verb *: {r:?}");
        assert!(
            !verbs.contains("escalate") && !verbs.contains("impersonate"),
            "{r:?}"
        );
        if wildcard_resources {
            assert!(
                verbs.is_subset(&BTreeSet::from(["get", "list", "watch"]))
                    || verbs == BTreeSet::from(["create", "update", "patch", "delete"]),
                "unexpected verbs on every resource: {r:?}"
            );
        }
        if verbs.contains("bind") {
            assert_eq!(
                r.resource_names.as_deref(),
                Some(&["coffer-mover".to_string()][..])
            );
        }
    }
    assert!(!allows(&rules, "", "configmaps", "deletecollection"));
    assert!(!allows(&rules, "", "users", "impersonate"));

    // The movers: their VolumeBackup and its status, and the snapshots' metadata check.
    let mover: ClusterRole = install.one("ClusterRole", "coffer-mover");
    let rules = mover.rules.unwrap();
    assert!(allows(&rules, "coffer.dev", "volumebackups", "get"));
    assert!(allows(
        &rules,
        "coffer.dev",
        "volumebackups/status",
        "patch"
    ));
    assert!(allows(
        &rules,
        "snapshot.storage.k8s.io",
        "volumesnapshots",
        "get"
    ));
    assert!(!allows(&rules, "coffer.dev", "volumebackups", "patch"));
    assert!(!allows(&rules, "", "secrets", "get"));
}

#[test]
fn kubectl_kustomize_builds_the_install() {
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(deploy_dir())
        .output()
        .expect("kubectl (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "kubectl kustomize deploy/: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let kinds: Vec<String> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            Value::deserialize(d).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(kinds.len(), install().objects.len());
    assert_eq!(
        kinds[0], "Namespace",
        "kustomize orders the Namespace first"
    );
}
