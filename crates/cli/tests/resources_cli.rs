//! `coffer resources` end to end: the real coffer binary and kubectl against the test
//! cluster (a real API server). Needs KUBEBUILDER_ASSETS and kubectl.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use coffer_testcluster::TestCluster;
use serde_json::{Value, json};

const PASSWORD: &str = "resources-test-password";

/// A WordPress-like application: 2 Deployments, a Secret, 2 PVCs, 2 Services (one
/// headless), a ConfigMap, a ServiceAccount with a Role and RoleBinding, and a custom
/// resource with its CRD.
const APP: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wg]}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
              color: {type: string}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: web}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: wordpress, namespace: shop}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: config-reader, namespace: shop}
rules:
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: wordpress-reads-config, namespace: shop}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: config-reader}
subjects:
- {kind: ServiceAccount, name: wordpress, namespace: shop}
---
apiVersion: v1
kind: Secret
metadata: {name: db-credentials, namespace: shop}
type: Opaque
stringData: {username: wp, password: s3cret}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: wp-config, namespace: shop, labels: {app: wordpress}}
data: {WORDPRESS_DB_HOST: mysql, theme: dark}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: wp-data, namespace: shop, labels: {app: wordpress}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: mysql-data, namespace: shop, labels: {app: mysql}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
---
apiVersion: v1
kind: Service
metadata: {name: wordpress, namespace: shop, labels: {app: wordpress}}
spec:
  type: NodePort
  selector: {app: wordpress, tier: frontend}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: mysql, namespace: shop, labels: {app: mysql}}
spec:
  clusterIP: None
  selector: {app: mysql}
  ports: [{port: 3306}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: wordpress, namespace: shop, labels: {app: wordpress}}
spec:
  replicas: 1
  selector: {matchLabels: {app: wordpress, tier: frontend}}
  template:
    metadata: {labels: {app: wordpress, tier: frontend}}
    spec:
      serviceAccountName: wordpress
      containers:
      - name: wordpress
        image: wordpress:6.4
        command: [sleep, "3600"]
        envFrom: [{configMapRef: {name: wp-config}}]
        env:
        - name: DB_PASSWORD
          valueFrom: {secretKeyRef: {name: db-credentials, key: password}}
        volumeMounts: [{name: data, mountPath: /var/www/html}]
      volumes:
      - name: data
        persistentVolumeClaim: {claimName: wp-data}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: mysql, namespace: shop, labels: {app: mysql}}
spec:
  replicas: 1
  selector: {matchLabels: {app: mysql}}
  template:
    metadata: {labels: {app: mysql}}
    spec:
      containers:
      - name: mysql
        image: mysql:8.0
        command: [sleep, "3600"]
        env:
        - name: MYSQL_ROOT_PASSWORD
          valueFrom: {secretKeyRef: {name: db-credentials, key: password}}
        volumeMounts: [{name: data, mountPath: /var/lib/mysql}]
      volumes:
      - name: data
        persistentVolumeClaim: {claimName: mysql-data}
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: banner, namespace: shop}
spec: {size: 3, color: blue}
"#;

/// The namespaced objects of APP as (kubectl resource, name).
const APP_OBJECTS: &[(&str, &str)] = &[
    ("serviceaccount", "wordpress"),
    ("role.rbac.authorization.k8s.io", "config-reader"),
    (
        "rolebinding.rbac.authorization.k8s.io",
        "wordpress-reads-config",
    ),
    ("secret", "db-credentials"),
    ("configmap", "wp-config"),
    ("pvc", "wp-data"),
    ("pvc", "mysql-data"),
    ("service", "wordpress"),
    ("service", "mysql"),
    ("deployment.apps", "wordpress"),
    ("deployment.apps", "mysql"),
    ("widget.example.com", "banner"),
];

struct Env {
    _dir: tempfile::TempDir,
    cluster: TestCluster,
    repo: PathBuf,
    cache: PathBuf,
}

impl Env {
    async fn start() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let cluster = TestCluster::start(dir.path().join("cluster"))
            .await
            .expect("start the test cluster (KUBEBUILDER_ASSETS)");
        let env = Env {
            repo: dir.path().join("repo"),
            cache: dir.path().join("cache"),
            _dir: dir,
            cluster,
        };
        let out = env.coffer(&["repo", "init", "--kdf-memory-kib", "1024"]);
        assert!(out.status.success(), "{}", stderr(&out));
        env
    }

    fn kubeconfig(&self) -> &Path {
        self.cluster.kubeconfig_path()
    }

    fn coffer(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_coffer"))
            .args(args)
            .env("COFFER_REPO", &self.repo)
            .env("COFFER_PASSWORD", PASSWORD)
            .env("COFFER_CACHE_DIR", &self.cache)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs a `coffer resources` subcommand with this cluster's kubeconfig.
    fn resources(&self, sub: &str, args: &[&str]) -> Output {
        let kc = self.kubeconfig().to_str().unwrap().to_string();
        let mut all = vec!["resources", sub];
        all.extend_from_slice(args);
        if sub == "backup" || sub == "restore" || sub == "apply-plan" {
            all.extend_from_slice(&["--kubeconfig", &kc]);
        }
        self.coffer(&all)
    }

    fn resources_json(&self, sub: &str, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.resources(sub, &a);
        assert!(
            out.status.success(),
            "coffer resources {sub} {args:?} failed: {}\n{}",
            stderr(&out),
            String::from_utf8_lossy(&out.stdout)
        );
        serde_json::from_slice(&out.stdout).expect("JSON output")
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let out = self.kubectl_raw(args, None);
        assert!(out.status.success(), "kubectl {args:?}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn kubectl_raw(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl (apt-get install kubernetes-client)");
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    fn apply(&self, yaml: &str) {
        // The CRD must be established before its custom resources apply.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.kubectl_raw(&["apply", "-f", "-"], Some(yaml));
            if out.status.success() {
                return;
            }
            let crd_pending = stderr(&out).contains("ensure CRDs are installed first");
            assert!(
                crd_pending && Instant::now() < deadline,
                "kubectl apply failed: {}",
                stderr(&out)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn get_json(&self, ns: &str, resource: &str, name: &str) -> Option<Value> {
        let out = self.kubectl_raw(&["get", "-n", ns, resource, name, "-o", "json"], None);
        if !out.status.success() {
            assert!(
                stderr(&out).contains("NotFound"),
                "kubectl get {resource}/{name}: {}",
                stderr(&out)
            );
            return None;
        }
        Some(serde_json::from_slice(&out.stdout).unwrap())
    }

    fn delete_namespace(&self, ns: &str) {
        self.kubectl(&["delete", "namespace", ns, "--wait=true", "--timeout=120s"]);
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.get_json("default", "namespace", ns).is_some() {
            assert!(Instant::now() < deadline, "namespace {ns} not gone");
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn backup_shop(&self) -> String {
        let b = self.resources_json("backup", &["--namespace", "shop"]);
        b["snapshot_id"].as_str().unwrap().to_string()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// An object as compared across a restore: everything except what the cluster assigns.
fn comparable(mut o: Value) -> Value {
    let meta = o["metadata"].as_object_mut().unwrap();
    for f in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "generation",
        "managedFields",
        "namespace",
        "ownerReferences",
    ] {
        meta.remove(f);
    }
    if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
        a.retain(|k, _| {
            !(k.starts_with("pv.kubernetes.io/")
                || k.starts_with("volume.")
                || k == "deployment.kubernetes.io/revision"
                || k == "kubectl.kubernetes.io/last-applied-configuration")
        });
        if a.is_empty() {
            meta.remove("annotations");
        }
    }
    let m = o.as_object_mut().unwrap();
    m.remove("status");
    if let Some(spec) = m.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
        spec.remove("volumeName");
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports {
                p.as_object_mut().unwrap().remove("nodePort");
            }
        }
    }
    if let Some(subjects) = m.get_mut("subjects").and_then(Value::as_array_mut) {
        for s in subjects {
            s.as_object_mut().unwrap().remove("namespace");
        }
    }
    o
}

fn snapshot_app(env: &Env, ns: &str) -> Vec<(String, Value)> {
    APP_OBJECTS
        .iter()
        .map(|(r, n)| {
            let o = env
                .get_json(ns, r, n)
                .unwrap_or_else(|| panic!("{r}/{n} missing in {ns}"));
            (format!("{r}/{n}"), comparable(o))
        })
        .collect()
}

fn assert_same_app(before: &[(String, Value)], after: &[(String, Value)]) {
    for ((name, a), (_, b)) in before.iter().zip(after) {
        assert_eq!(a, b, "{name} differs after restore");
    }
}

fn wait_pvcs_bound(env: &Env, ns: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for pvc in ["wp-data", "mysql-data"] {
        loop {
            let p = env.get_json(ns, "pvc", pvc);
            if p.as_ref().and_then(|p| p["status"]["phase"].as_str()) == Some("Bound") {
                break;
            }
            assert!(Instant::now() < deadline, "pvc {ns}/{pvc} not bound: {p:?}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_backup_delete_restore_and_clone() {
    let env = Env::start().await;
    env.apply(APP);
    wait_pvcs_bound(&env, "shop");
    let before = snapshot_app(&env, "shop");
    // A ConfigMap owned by the custom resource: restored after it, pointing at its new uid.
    let widget_uid = env.get_json("shop", "widget", "banner").unwrap()["metadata"]["uid"].clone();
    env.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: banner-rendered\n  namespace: shop\n  ownerReferences:\n  - {{apiVersion: example.com/v1, kind: Widget, name: banner, uid: {}}}\ndata: {{html: hi}}\n",
        widget_uid.as_str().unwrap()
    ));

    let backup = env.resources_json("backup", &["--namespace", "shop", "--tag", "app=wordpress"]);
    let id = backup["snapshot_id"].as_str().unwrap().to_string();
    assert!(
        backup["warnings"].as_array().unwrap().is_empty(),
        "{backup}"
    );

    // The catalog: every object of the app, the cluster-scoped objects it needs, and
    // nothing the cluster regenerates.
    let list = env.resources_json("list", &[&id]);
    let listed: Vec<(String, Option<String>, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["namespace"].as_str().map(str::to_string),
                e["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let has = |kind: &str, ns: Option<&str>, name: &str| {
        listed
            .iter()
            .any(|(k, n, m)| k == kind && n.as_deref() == ns && m == name)
    };
    for (kind, name) in [
        ("ServiceAccount", "wordpress"),
        ("Role", "config-reader"),
        ("RoleBinding", "wordpress-reads-config"),
        ("Secret", "db-credentials"),
        ("ConfigMap", "wp-config"),
        ("PersistentVolumeClaim", "wp-data"),
        ("PersistentVolumeClaim", "mysql-data"),
        ("Service", "wordpress"),
        ("Service", "mysql"),
        ("Deployment", "wordpress"),
        ("Deployment", "mysql"),
        ("Widget", "banner"),
    ] {
        assert!(
            has(kind, Some("shop"), name),
            "{kind}/{name} not stored: {listed:?}"
        );
    }
    assert!(has("Namespace", None, "shop"));
    assert!(has("CustomResourceDefinition", None, "widgets.example.com"));
    assert!(has("StorageClass", None, "coffer-sim"));
    assert!(
        listed
            .iter()
            .filter(|(k, _, _)| k == "PersistentVolume")
            .count()
            == 2,
        "the two bound PVs come along: {listed:?}"
    );
    for (kind, _, name) in &listed {
        assert!(
            !["Event", "Endpoints", "EndpointSlice", "Lease"].contains(&kind.as_str())
                && name != "kube-root-ca.crt",
            "{kind}/{name} must not be stored"
        );
    }

    // One object reads back on its own, as YAML.
    let out = env.resources("show", &[&id, "configmap/wp-config", "--namespace", "shop"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let shown: Value = serde_yaml::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["data"]["theme"], "dark");
    assert_eq!(shown["kind"], "ConfigMap");
    let out = env.resources("show", &[&id, "configmap/nope", "--namespace", "shop"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no configmap/nope"),
        "{}",
        stderr(&out)
    );

    // Disaster: the namespace and the CRD are gone.
    env.delete_namespace("shop");
    env.kubectl(&["delete", "crd", "widgets.example.com", "--wait=true"]);

    // A dry run changes nothing and shows the CRD first.
    let plan = env.resources_json("restore", &[&id, "--dry-run"]);
    let results = plan["results"].as_array().unwrap();
    assert_eq!(results[0]["kind"], "CustomResourceDefinition", "{plan}");
    assert!(env.get_json("default", "namespace", "shop").is_none());
    assert!(plan["success"].as_bool().unwrap(), "{plan:#}");

    let report = env.resources_json("restore", &[&id]);
    assert!(report["success"].as_bool().unwrap(), "{report:#}");
    let created = report["summary"]["created"].as_u64().unwrap();
    assert!(created >= 14, "{report:#}");
    // PVs provisioned with reclaim policy Delete are not restored: their claims bind anew.
    for r in report["results"].as_array().unwrap() {
        if r["kind"] == "PersistentVolume" {
            assert_eq!(r["result"], "skipped", "{r}");
        }
    }
    wait_pvcs_bound(&env, "shop");
    let after = snapshot_app(&env, "shop");
    assert_same_app(&before, &after);
    let ns = env.get_json("default", "namespace", "shop").unwrap();
    assert_eq!(ns["metadata"]["labels"]["team"], "web");
    let new_widget_uid =
        env.get_json("shop", "widget", "banner").unwrap()["metadata"]["uid"].clone();
    assert_ne!(new_widget_uid, widget_uid);
    let owned = env
        .get_json("shop", "configmap", "banner-rendered")
        .unwrap();
    assert_eq!(
        owned["metadata"]["ownerReferences"][0]["uid"],
        new_widget_uid
    );
    let position = |kind: &str, name: &str| {
        report["results"]
            .as_array()
            .unwrap()
            .iter()
            .position(|r| r["kind"] == kind && r["name"] == name)
            .unwrap()
    };
    assert!(position("Widget", "banner") < position("ConfigMap", "banner-rendered"));
    assert!(position("ConfigMap", "wp-config") < position("Deployment", "wordpress"));
    assert!(position("PersistentVolumeClaim", "wp-data") < position("Deployment", "wordpress"));

    // The same backup into another namespace.
    let report = env.resources_json(
        "restore",
        &[&id, "--namespace-mapping", "shop=shop-staging"],
    );
    assert!(report["success"].as_bool().unwrap(), "{report:#}");
    wait_pvcs_bound(&env, "shop-staging");
    let staged = snapshot_app(&env, "shop-staging");
    assert_same_app(&before, &staged);
    let rb = env
        .get_json("shop-staging", "rolebinding", "wordpress-reads-config")
        .unwrap();
    assert_eq!(rb["subjects"][0]["namespace"], "shop-staging");

    // Twice beside the original with --clone.
    for suffix in ["blue", "green"] {
        let report = env.resources_json("restore", &[&id, "--clone", suffix]);
        assert!(report["success"].as_bool().unwrap(), "{report:#}");
        let d = env
            .get_json("shop", "deployment", &format!("wordpress-{suffix}"))
            .unwrap();
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], format!("wordpress-{suffix}"));
        assert_eq!(
            pod["containers"][0]["envFrom"][0]["configMapRef"]["name"],
            format!("wp-config-{suffix}")
        );
        assert_eq!(
            pod["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"],
            format!("db-credentials-{suffix}")
        );
        assert_eq!(
            pod["volumes"][0]["persistentVolumeClaim"]["claimName"],
            format!("wp-data-{suffix}")
        );
        assert_eq!(
            d["spec"]["selector"]["matchLabels"]["app"],
            format!("wordpress-{suffix}")
        );
        assert_eq!(
            d["metadata"]["annotations"]["coffer.dev/backup-id"],
            id.as_str()
        );
        assert!(
            d["metadata"]["annotations"]["coffer.dev/clone-of"]
                .as_str()
                .unwrap()
                .ends_with("/shop/wordpress")
        );
        let svc = env
            .get_json("shop", "service", &format!("wordpress-{suffix}"))
            .unwrap();
        assert_eq!(
            svc["spec"]["selector"]["app"],
            format!("wordpress-{suffix}")
        );
        let rb = env
            .get_json(
                "shop",
                "rolebinding",
                &format!("wordpress-reads-config-{suffix}"),
            )
            .unwrap();
        assert_eq!(rb["roleRef"]["name"], format!("config-reader-{suffix}"));
        assert_eq!(rb["subjects"][0]["name"], format!("wordpress-{suffix}"));
        assert!(
            env.get_json("shop", "widget", &format!("banner-{suffix}"))
                .is_some()
        );
        let pvc = env
            .get_json("shop", "pvc", &format!("wp-data-{suffix}"))
            .unwrap();
        assert!(
            pvc["spec"]["volumeName"]
                .as_str()
                .is_none_or(|v| v != after_pv_of(&env, "wp-data"))
        );
    }
    // The original is untouched.
    assert_same_app(&before, &snapshot_app(&env, "shop"));
}

fn after_pv_of(env: &Env, pvc: &str) -> String {
    env.get_json("shop", "pvc", pvc).unwrap()["spec"]["volumeName"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_existing_policies_and_partial_restore() {
    let env = Env::start().await;
    env.apply(APP);
    let id = env.backup_shop();

    // After the backup: one object added, one changed.
    env.apply(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: added-later, namespace: shop}\ndata: {x: one}\n",
    );
    env.kubectl(&[
        "patch",
        "-n",
        "shop",
        "configmap",
        "wp-config",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"theme":"light"}}"#,
    ]);

    // --existing skip (the default) leaves both and reports the skip.
    let report = env.resources_json("restore", &[&id]);
    assert!(report["success"].as_bool().unwrap(), "{report:#}");
    let cm = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "ConfigMap" && r["name"] == "wp-config")
        .unwrap();
    assert_eq!(cm["result"], "skipped");
    assert!(cm["reason"].as_str().unwrap().contains("already exists"));
    assert!(env.get_json("shop", "configmap", "added-later").is_some());
    assert_eq!(
        env.get_json("shop", "configmap", "wp-config").unwrap()["data"]["theme"],
        "light"
    );

    // --rollback --dry-run shows the deletion first and changes nothing.
    let plan = env.resources_json("restore", &[&id, "--rollback", "--dry-run"]);
    let first = &plan["results"][0];
    assert_eq!(first["action"], "delete", "{plan:#}");
    assert_eq!(first["name"], "added-later");
    assert!(env.get_json("shop", "configmap", "added-later").is_some());

    // --rollback removes the first and reverts the second; the rest is unchanged.
    let report = env.resources_json("restore", &[&id, "--rollback"]);
    assert!(report["success"].as_bool().unwrap(), "{report:#}");
    assert!(env.get_json("shop", "configmap", "added-later").is_none());
    assert_eq!(
        env.get_json("shop", "configmap", "wp-config").unwrap()["data"]["theme"],
        "dark"
    );
    let results = report["results"].as_array().unwrap();
    let result_of = |kind: &str, name: &str| {
        results
            .iter()
            .find(|r| r["kind"] == kind && r["name"] == name)
            .unwrap_or_else(|| panic!("{kind}/{name} not in {report:#}"))["result"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(result_of("ConfigMap", "wp-config"), "updated");
    assert_eq!(result_of("Secret", "db-credentials"), "unchanged");
    assert_eq!(result_of("Deployment", "wordpress"), "unchanged");
    // Nothing outside the scope was touched.
    assert!(
        env.get_json("default", "serviceaccount", "default")
            .is_some()
    );

    // --existing recreate gives the object a new uid.
    let uid_before =
        env.get_json("shop", "secret", "db-credentials").unwrap()["metadata"]["uid"].clone();
    let report = env.resources_json(
        "restore",
        &[
            &id,
            "--only",
            "secret/db-credentials",
            "--existing",
            "recreate",
        ],
    );
    assert!(report["success"].as_bool().unwrap(), "{report:#}");
    let uid_after =
        env.get_json("shop", "secret", "db-credentials").unwrap()["metadata"]["uid"].clone();
    assert_ne!(uid_before, uid_after);

    // Pagination: 1,100 ConfigMaps come back in pages of 500, all of them.
    let mut bulk = String::from("apiVersion: v1\nkind: List\nitems:\n");
    for i in 0..1100 {
        bulk.push_str(&format!(
            "- {{apiVersion: v1, kind: ConfigMap, metadata: {{name: cm-{i:04}, namespace: bulk}}, data: {{i: \"{i}\"}}}}\n"
        ));
    }
    env.kubectl(&["create", "namespace", "bulk"]);
    let out = env.kubectl_raw(&["apply", "-f", "-"], Some(&bulk));
    assert!(out.status.success(), "{}", stderr(&out));
    let b = env.resources_json(
        "backup",
        &["--namespace", "bulk", "--include-resources", "configmaps"],
    );
    assert_eq!(
        b["objects"], 1101,
        "1100 ConfigMaps and the Namespace: {b:#}"
    );
    // Restored over themselves: the planner lists them (one request per page, not one per
    // object) and finds each; with --existing update, only the changed one is written.
    env.kubectl(&[
        "patch",
        "-n",
        "bulk",
        "configmap",
        "cm-0042",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"i":"changed"}}"#,
    ]);
    let bulk_id = b["snapshot_id"].as_str().unwrap();
    let report = env.resources_json("restore", &[bulk_id, "--existing", "update"]);
    assert!(report["success"].as_bool().unwrap(), "{report:#}");
    let summary = &report["summary"];
    assert_eq!(summary["updated"], 1, "{summary}");
    assert_eq!(
        summary["unchanged"], 1100,
        "1099 ConfigMaps and the Namespace: {summary}"
    );
    assert_eq!(
        env.get_json("bulk", "configmap", "cm-0042").unwrap()["data"]["i"],
        "42"
    );

    // Cluster protection: every namespace and the cluster-scoped objects, without what the
    // API server maintains itself.
    env.apply(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: shop-viewer}\nrules: [{apiGroups: [\"\"], resources: [pods], verbs: [get]}]\n",
    );
    let all = env.resources_json(
        "backup",
        &[
            "--all-namespaces",
            "--cluster-resources",
            "include",
            "--exclude-resources",
            "configmaps",
        ],
    );
    let all_id = all["snapshot_id"].as_str().unwrap();
    let list = env.resources_json("list", &[all_id, "--kind", "clusterroles"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"shop-viewer"), "{names:?}");
    assert!(
        !names.contains(&"cluster-admin"),
        "bootstrap roles are the API server's: {names:?}"
    );
    let crds = env.resources_json("list", &[all_id, "--kind", "crd"]);
    assert!(
        crds.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "widgets.example.com")
    );
    let nss = env.resources_json("list", &[all_id, "--kind", "namespaces"]);
    for ns in ["shop", "bulk", "kube-system", "default"] {
        assert!(
            nss.as_array().unwrap().iter().any(|e| e["name"] == ns),
            "{ns}"
        );
    }

    // Partial restore into a fresh namespace: the Deployment alone, its ConfigMap, Secret,
    // PVC and ServiceAccount reported missing.
    let report = env.resources_json(
        "restore",
        &[
            &id,
            "--only",
            "deployment/wordpress",
            "--namespace-mapping",
            "shop=shop-partial",
        ],
    );
    assert!(report["success"].as_bool().unwrap(), "{report:#}");
    let missing: Vec<String> = report["missing_dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    for dep in [
        "ConfigMap shop-partial/wp-config",
        "Secret shop-partial/db-credentials",
        "PersistentVolumeClaim shop-partial/wp-data",
        "ServiceAccount shop-partial/wordpress",
    ] {
        assert!(
            missing
                .iter()
                .any(|m| m.contains(dep) && m.contains("add --only")),
            "{dep} not reported: {missing:#?}"
        );
    }
    assert_eq!(missing.len(), 4, "{missing:#?}");
    assert!(
        env.get_json("shop-partial", "deployment", "wordpress")
            .is_some()
    );
    assert!(
        env.get_json("shop-partial", "configmap", "wp-config")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_reported_per_object_and_the_rest_restores() {
    let env = Env::start().await;
    env.apply(APP);
    let id = env.backup_shop();
    env.delete_namespace("shop");
    env.kubectl(&["delete", "crd", "widgets.example.com", "--wait=true"]);

    // Without its CRD (excluded), the custom resource fails with a reason; every other
    // object restores; the exit code says not everything succeeded.
    let out = env.resources(
        "restore",
        &[
            &id,
            "--exclude-resources",
            "customresourcedefinitions",
            "--json",
        ],
    );
    assert!(!out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed = failed_results(&report);
    assert_eq!(failed.len(), 1, "{report:#}");
    assert_eq!(failed[0]["kind"], "Widget");
    assert!(
        failed[0]["reason"].as_str().unwrap().contains("CRD"),
        "{:#}",
        failed[0]
    );
    assert!(stderr(&out).contains("Widget/banner"), "{}", stderr(&out));
    assert!(env.get_json("shop", "deployment", "wordpress").is_some());
    assert!(env.get_json("shop", "configmap", "wp-config").is_some());

    // Errors before anything happens: one line, non-zero exit.
    let bad = env.coffer(&[
        "resources",
        "restore",
        &id,
        "--kubeconfig",
        "/nonexistent/kubeconfig",
    ]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("/nonexistent/kubeconfig"),
        "{}",
        stderr(&bad)
    );
    let out = env.resources("restore", &[&id, "--only", "deployment/nope"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no such object"), "{}", stderr(&out));
    let out = env.resources("backup", &["--namespace", "does-not-exist"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does-not-exist"), "{}", stderr(&out));
    let out = env.resources("backup", &["--namespace", "shop", "--selector", "a in in"]);
    assert!(!out.status.success());
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));

    // An unreachable API server.
    let kc = std::fs::read_to_string(env.kubeconfig()).unwrap();
    let server = env.cluster.server_url();
    let dead = env._dir.path().join("dead-kubeconfig");
    std::fs::write(&dead, kc.replace(&server, "https://127.0.0.1:1")).unwrap();
    let out = env.coffer(&[
        "resources",
        "backup",
        "--namespace",
        "shop",
        "--kubeconfig",
        dead.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cannot reach"), "{}", stderr(&out));
    let plan = env._dir.path().join("plan.json");
    // (The dry run's own outcome does not matter here, only the plan it saves.)
    let _ = env.resources(
        "restore",
        &[&id, "--dry-run", "--plan-out", plan.to_str().unwrap()],
    );
    assert!(plan.exists());
    for args in [
        vec!["resources", "backup", "--namespace", "shop"],
        vec!["resources", "restore", &id],
        vec!["resources", "restore", &id, "--dry-run"],
        vec!["resources", "apply-plan", plan.to_str().unwrap()],
    ] {
        let mut args = args.clone();
        args.extend(["--kubeconfig", dead.to_str().unwrap()]);
        let out = env.coffer(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.contains("cannot reach the Kubernetes API server at https://127.0.0.1:1")
                && err.contains("connection refused"),
            "{args:?}: {err}"
        );
    }
    // Nothing was written for the failed backups.
    let snaps: Value =
        serde_json::from_slice(&env.coffer(&["snapshots", "--json"]).stdout).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 1);
    let _ = json!(null);
}

/// The results of a restore report that failed.
fn failed_results(report: &Value) -> Vec<&Value> {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["result"] == "failed")
        .collect()
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_api_versions_transforms_and_mappings() {
    let env = Env::start().await;
    // A backup from a cluster long gone: objects in API versions 1.26 no longer serves.
    let imported = env.resources_json(
        "import",
        &[&fixture("old-api.yaml"), "--origin", "k8s-1.15-cluster"],
    );
    let id = imported["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(imported["objects"], 14, "{imported:#}");

    let out = env.resources(
        "restore",
        &[
            &id,
            "--transform",
            &fixture("transform-native.yaml"),
            "--transform",
            &fixture("transform-velero.yaml"),
            "--storage-class-mapping",
            "old-fast=coffer-sim-wffc",
            "--image-registry-mapping",
            "docker.io=mirror.local",
            "--json",
        ],
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    // PodSecurityPolicy has no successor: reported, and the exit code says so.
    assert!(!out.status.success());
    let failed = failed_results(&report);
    assert_eq!(failed.len(), 1, "{report:#}");
    assert_eq!(failed[0]["kind"], "PodSecurityPolicy");
    assert!(
        failed[0]["reason"]
            .as_str()
            .unwrap()
            .contains("removed in Kubernetes 1.25")
    );
    assert!(
        stderr(&out).contains("PodSecurityPolicy/restricted"),
        "{}",
        stderr(&out)
    );
    let converted = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["notes"].as_array().is_some_and(|n| {
                n.iter()
                    .any(|n| n.as_str().unwrap().starts_with("converted from"))
            })
        })
        .count();
    assert_eq!(converted, 8, "{report:#}");

    // Every converted object is live in its new version, with its fields reshaped.
    let d = env
        .get_json("legacy", "deployments.v1.apps", "legacy-web")
        .unwrap();
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "legacy-web");
    assert_eq!(d["spec"]["replicas"], 0, "native transform");
    assert_eq!(d["metadata"]["labels"]["migrated"], "yes");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "mirror.local/library/nginx:1.14"
    );
    let ing = env
        .get_json("legacy", "ingresses.v1.networking.k8s.io", "legacy-web")
        .unwrap();
    let backend = &ing["spec"]["rules"][0]["http"]["paths"][0]["backend"];
    assert_eq!(backend["service"]["name"], "legacy-web");
    assert_eq!(backend["service"]["port"]["number"], 80);
    assert!(
        env.get_json("legacy", "cronjobs.v1.batch", "nightly")
            .is_some()
    );
    assert!(
        env.get_json("legacy", "poddisruptionbudgets.v1.policy", "legacy-web")
            .is_some()
    );
    assert!(
        env.get_json("legacy", "roles.v1.rbac.authorization.k8s.io", "reader")
            .is_some()
    );
    let hpa = env
        .get_json(
            "legacy",
            "horizontalpodautoscalers.v2.autoscaling",
            "legacy-web",
        )
        .unwrap();
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        60
    );
    let crd = env
        .get_json("default", "crd", "gadgets.example.com")
        .unwrap();
    assert_eq!(
        crd["spec"]["versions"][0]["additionalPrinterColumns"][0]["jsonPath"],
        ".spec.size"
    );
    let g = env.get_json("legacy", "gadgets.example.com", "g1").unwrap();
    assert_eq!(g["spec"]["size"], 7);
    // Velero-format rule (matches + JSON patch + merge patch) and storage-class mapping.
    let cm = env.get_json("legacy", "configmap", "settings").unwrap();
    assert_eq!(cm["data"]["mode"], "production");
    assert_eq!(cm["metadata"]["annotations"]["migrated-by"], "coffer");
    let pvc = env.get_json("legacy", "pvc", "legacy-data").unwrap();
    assert_eq!(pvc["spec"]["storageClassName"], "coffer-sim-wffc");

    // The conversion fixtures of the resources crate: each converted object is accepted by
    // a 1.26 API server and is live afterwards.
    let dir = format!(
        "{}/../resources/tests/fixtures/old-api",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut inputs: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| p.display().to_string())
        .collect();
    inputs.sort();
    assert_eq!(inputs.len(), 8);
    let mut args: Vec<&str> = inputs.iter().map(String::as_str).collect();
    args.extend(["--origin", "fixtures"]);
    let fixtures = env.resources_json("import", &args);
    let fid = fixtures["snapshot_id"].as_str().unwrap().to_string();
    let report = env.resources_json("restore", &[&fid]);
    assert!(report["success"].as_bool().unwrap(), "{report:#}");
    for r in report["results"].as_array().unwrap() {
        assert_eq!(r["result"], "created", "{r}");
        let kind = r["kind"].as_str().unwrap().to_ascii_lowercase();
        let resource = match r["apiVersion"].as_str().unwrap().split_once('/') {
            Some((group, version)) => format!("{kind}.{version}.{group}"),
            None => kind,
        };
        let ns = r["namespace"].as_str().unwrap_or("default");
        assert!(
            env.get_json(ns, &resource, r["name"].as_str().unwrap())
                .is_some(),
            "{resource} {} not live",
            r["name"]
        );
    }

    // A v1beta1 CRD that pruned nothing: its custom resource keeps every field, nested
    // unknown ones included; a CRD with a broken schema fails alone, with a reason.
    let imported = env.resources_json(
        "import",
        &[
            &fixture("old-crd-preserve.yaml"),
            "--origin",
            "k8s-1.15-cluster",
        ],
    );
    let nid = imported["snapshot_id"].as_str().unwrap().to_string();
    let out = env.resources("restore", &[&nid, "--json"]);
    assert!(!out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let failed = failed_results(&report);
    assert_eq!(failed.len(), 1, "{report:#}");
    assert_eq!(failed[0]["name"], "brokens.example.com");
    assert!(
        failed[0]["reason"].as_str().unwrap().contains("not a map"),
        "{:#}",
        failed[0]
    );
    assert!(
        stderr(&out).contains("CustomResourceDefinition/brokens.example.com"),
        "{}",
        stderr(&out)
    );
    let note = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "Note")
        .unwrap();
    assert_eq!(note["result"], "created", "{note}");
    let n = env.get_json("notes", "notes.example.com", "n1").unwrap();
    assert_eq!(n["spec"]["size"], 3);
    assert_eq!(n["spec"]["extra"]["nested"]["deep"], "kept", "{n:#}");
    assert_eq!(n["spec"]["extra"]["nested"]["count"], 2, "{n:#}");
    assert_eq!(n["spec"]["list"][0]["b"]["c"], 2, "{n:#}");
    assert_eq!(n["color"], "blue", "{n:#}");

    // A broken transform file is a one-line error before anything happens.
    let bad = env._dir.path().join("bad.yaml");
    std::fs::write(&bad, "rules:\n- match: {name: \"(\"}\n").unwrap();
    let out = env.resources("restore", &[&id, "--transform", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("regex"), "{}", stderr(&out));
}

/// Objects of APP's namespace that name its Services in their configuration: environment
/// values, arguments, a command, ConfigMap and Secret values.
const WORKER: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: worker-config, namespace: shop}
data:
  site: http://wordpress.shop.svc.cluster.local/
  db: mysql:3306
  note: ask the mysql team before changing it
  theme: dark
---
apiVersion: v1
kind: Secret
metadata: {name: worker-secret, namespace: shop}
type: Opaque
stringData: {dsn: "mysql://wp:pw@mysql.shop.svc:3306/wp"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: worker, namespace: shop}
spec:
  replicas: 0
  selector: {matchLabels: {app: worker}}
  template:
    metadata: {labels: {app: worker}}
    spec:
      containers:
      - name: worker
        image: busybox:1.36
        command: [worker, "--db=mysql.shop:3306"]
        args: [--frontend, "wordpress:80"]
        env:
        - {name: DB_URL, value: "postgres://user@mysql.shop.svc:3306/x"}
        - {name: DB_HOST, value: mysql}
        - {name: NOTE, value: "mysql is shared with the shop"}
        - {name: OTHER, value: "mysqladmin.shop.svc and my-mysql"}
"#;

fn worker_env(d: &Value, name: &str) -> String {
    d["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("env {name} missing: {d:#}"))["value"]
        .as_str()
        .unwrap()
        .to_string()
}

fn secret_value(s: &Value, key: &str) -> String {
    let out = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(s["data"][key].as_str().unwrap().as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_then_apply_equals_a_direct_restore() {
    let env = Env::start().await;
    env.apply(APP);
    env.apply(WORKER);
    wait_pvcs_bound(&env, "shop");
    let id = env.backup_shop();

    // A plan made now, saved, applied later: nothing is created by the dry run.
    let plan_file = env._dir.path().join("plan.json");
    let out = env.resources_json(
        "restore",
        &[
            &id,
            "--namespace-mapping",
            "shop=copy",
            "--dry-run",
            "--plan-out",
            plan_file.to_str().unwrap(),
        ],
    );
    assert!(
        out["dry_run"].as_bool().unwrap() && out["success"].as_bool().unwrap(),
        "{out:#}"
    );
    assert!(env.get_json("default", "namespace", "copy").is_none());
    let plan = &out["plan"];
    let saved: Value = serde_json::from_slice(&std::fs::read(&plan_file).unwrap()).unwrap();
    assert_eq!(&saved, plan, "--plan-out writes the plan --json prints");
    let objects = plan["objects"].as_array().unwrap();
    // Every object with its action, final body and step; steps never go back.
    let cm = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["name"] == "worker-config")
        .unwrap();
    assert_eq!(cm["action"], "create");
    assert_eq!(cm["namespace"], "copy");
    assert_eq!(cm["from"], "shop/worker-config");
    assert_eq!(cm["object"]["metadata"]["namespace"], "copy");
    assert_eq!(
        cm["object"]["data"]["site"],
        "http://wordpress.copy.svc.cluster.local/"
    );
    assert!(cm["object"]["metadata"].get("uid").is_none(), "{cm:#}");
    let steps: Vec<u64> = objects
        .iter()
        .map(|o| o["step"].as_u64().unwrap())
        .collect();
    assert!(steps.windows(2).all(|w| w[0] <= w[1]), "{steps:?}");
    // The CRD comes first (it exists: skipped), then the new namespace.
    assert_eq!(objects[0]["kind"], "CustomResourceDefinition");
    assert_eq!(objects[0]["action"], "skip");
    let ns = objects.iter().find(|o| o["kind"] == "Namespace").unwrap();
    assert_eq!(
        (&ns["name"], &ns["action"]),
        (&json!("copy"), &json!("create"))
    );
    // The human plan shows steps too.
    let out = env.resources(
        "restore",
        &[&id, "--namespace-mapping", "shop=copy", "--dry-run"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("STEP") && text.contains("ConfigMap/worker-config -n copy"),
        "{text}"
    );

    // The direct restore.
    let direct = env.resources_json("restore", &[&id, "--namespace-mapping", "shop=copy"]);
    assert!(direct["success"].as_bool().unwrap(), "{direct:#}");
    wait_pvcs_bound(&env, "copy");
    let mut names: Vec<(&str, &str)> = APP_OBJECTS.to_vec();
    names.extend([
        ("configmap", "worker-config"),
        ("secret", "worker-secret"),
        ("deployment.apps", "worker"),
    ]);
    let take = |env: &Env| -> Vec<(String, Value)> {
        names
            .iter()
            .map(|(r, n)| {
                let o = env
                    .get_json("copy", r, n)
                    .unwrap_or_else(|| panic!("{r}/{n} missing"));
                (format!("{r}/{n}"), comparable(o))
            })
            .collect()
    };
    let from_direct = take(&env);
    let outcomes = |report: &Value| -> Vec<(String, String, String, String)> {
        report["results"]
            .as_array()
            .unwrap()
            .iter()
            // The namespace's default ServiceAccount races with the cluster's controller.
            .filter(|r| !(r["kind"] == "ServiceAccount" && r["name"] == "default"))
            .map(|r| {
                (
                    r["kind"].as_str().unwrap().to_string(),
                    r["name"].as_str().unwrap().to_string(),
                    r["action"].as_str().unwrap().to_string(),
                    r["result"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    env.delete_namespace("copy");

    // The saved plan, applied after the world changed and changed back.
    let applied = env.resources_json("apply-plan", &[plan_file.to_str().unwrap()]);
    assert!(applied["success"].as_bool().unwrap(), "{applied:#}");
    assert!(!applied["dry_run"].as_bool().unwrap());
    wait_pvcs_bound(&env, "copy");
    let from_plan = take(&env);
    assert_eq!(outcomes(&applied), outcomes(&direct));
    assert_same_app(&from_direct, &from_plan);
    assert_eq!(from_direct.len(), from_plan.len());

    // Applied again, the plan finds everything there: creates turn into the plan's
    // existing-object policy (skip) instead of failing.
    let again = env.resources_json("apply-plan", &[plan_file.to_str().unwrap()]);
    assert!(again["success"].as_bool().unwrap(), "{again:#}");
    let cm = again["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "ConfigMap" && r["name"] == "worker-config")
        .unwrap();
    assert_eq!(cm["result"], "skipped", "{cm}");

    // A plan made for this cluster is refused by another one.
    let other = TestCluster::start(env._dir.path().join("other-cluster"))
        .await
        .expect("start a second test cluster");
    let out = env.coffer(&[
        "resources",
        "apply-plan",
        plan_file.to_str().unwrap(),
        "--kubeconfig",
        other.kubeconfig_path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("made for another cluster"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
    let other_ns = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(other.kubeconfig_path())
        .args(["get", "namespace", "copy"])
        .output()
        .unwrap();
    assert!(
        !other_ns.status.success(),
        "nothing was applied to the other cluster"
    );
    other.stop().await;

    // A damaged or foreign plan is one line, and nothing is applied.
    let bad = env._dir.path().join("bad-plan.json");
    let mut broken = saved.clone();
    broken["format"] = json!(99);
    std::fs::write(&bad, serde_json::to_vec(&broken).unwrap()).unwrap();
    let out = env.resources("apply-plan", &[bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("format 99"), "{}", stderr(&out));
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
    let mut broken = saved.clone();
    broken["objects"][1]["name"] = json!("../../secrets/x");
    std::fs::write(&bad, serde_json::to_vec(&broken).unwrap()).unwrap();
    let out = env.resources("apply-plan", &[bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not allowed"), "{}", stderr(&out));
    std::fs::write(&bad, "{\"not\": \"a plan\"}").unwrap();
    let out = env.resources("apply-plan", &[bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not a restore plan"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_talks_only_to_its_own_services() {
    let env = Env::start().await;
    env.apply(APP);
    env.apply(WORKER);
    let id = env.backup_shop();

    let report = env.resources_json("restore", &[&id, "--clone", "blue"]);
    assert!(report["success"].as_bool().unwrap(), "{report:#}");

    // Environment, command and arguments of the clone's Deployment name the clone's
    // Services; free text and other words are left alone.
    let d = env.get_json("shop", "deployment", "worker-blue").unwrap();
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        worker_env(&d, "DB_URL"),
        "postgres://user@mysql-blue.shop.svc:3306/x"
    );
    assert_eq!(worker_env(&d, "DB_HOST"), "mysql-blue");
    assert_eq!(worker_env(&d, "NOTE"), "mysql is shared with the shop");
    assert_eq!(worker_env(&d, "OTHER"), "mysqladmin.shop.svc and my-mysql");
    assert_eq!(c["command"], json!(["worker", "--db=mysql-blue.shop:3306"]));
    assert_eq!(c["args"], json!(["--frontend", "wordpress-blue:80"]));
    // ConfigMaps and Secrets too.
    let cm = env
        .get_json("shop", "configmap", "worker-config-blue")
        .unwrap();
    assert_eq!(
        cm["data"]["site"],
        "http://wordpress-blue.shop.svc.cluster.local/"
    );
    assert_eq!(cm["data"]["db"], "mysql-blue:3306");
    assert_eq!(cm["data"]["note"], "ask the mysql team before changing it");
    assert_eq!(cm["data"]["theme"], "dark");
    let wp = env.get_json("shop", "configmap", "wp-config-blue").unwrap();
    assert_eq!(wp["data"]["WORDPRESS_DB_HOST"], "mysql-blue");
    let s = env
        .get_json("shop", "secret", "worker-secret-blue")
        .unwrap();
    assert_eq!(
        secret_value(&s, "dsn"),
        "mysql://wp:pw@mysql-blue.shop.svc:3306/wp"
    );
    // Every Service the clone's configuration names exists and is the clone's.
    for svc in ["mysql-blue", "wordpress-blue"] {
        let s = env.get_json("shop", "service", svc).unwrap();
        assert!(
            s["spec"]["selector"]["app"]
                .as_str()
                .unwrap()
                .ends_with("-blue"),
            "{s:#}"
        );
    }
    // The bare names in free text are listed, not guessed.
    let undecided: Vec<&str> = report["undecided_references"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert!(
        undecided.iter().any(|u| u.contains("worker-blue")
            && u.contains("env NOTE")
            && u.contains("\"mysql\"")),
        "{undecided:#?}"
    );
    assert!(
        undecided
            .iter()
            .any(|u| u.contains("worker-config-blue") && u.contains("data key note")),
        "{undecided:#?}"
    );
    assert_eq!(undecided.len(), 2, "{undecided:#?}");
    // Provenance: well formed, no doubled '/'.
    for (k, v) in d["metadata"]["annotations"].as_object().unwrap() {
        if k.starts_with("coffer.dev/") {
            assert!(
                !k.contains("//") && !v.as_str().unwrap().contains("//"),
                "{k}: {v}"
            );
        }
    }
    let origin = d["metadata"]["annotations"]["coffer.dev/clone-of"]
        .as_str()
        .unwrap();
    let server = env.cluster.server_url();
    let host = server.trim_start_matches("https://").trim_end_matches('/');
    assert_eq!(origin, format!("{host}/shop/worker"));
    // The original is untouched.
    let orig = env.get_json("shop", "deployment", "worker").unwrap();
    assert_eq!(
        worker_env(&orig, "DB_URL"),
        "postgres://user@mysql.shop.svc:3306/x"
    );
    assert_eq!(
        env.get_json("shop", "configmap", "wp-config").unwrap()["data"]["WORDPRESS_DB_HOST"],
        "mysql"
    );

    // An invalid target namespace is refused before anything is created.
    let namespaces = env.kubectl(&["get", "namespaces", "-o", "name"]);
    let out = env.resources("restore", &[&id, "--namespace-mapping", "shop=Bad_NS!"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("Bad_NS!"), "{}", stderr(&out));
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
    assert_eq!(
        env.kubectl(&["get", "namespaces", "-o", "name"]),
        namespaces
    );

    // A transform that removes /metadata fails that object, naming the rule and the
    // object; the rest restores; the summary names namespace, kind and name.
    let rules = env._dir.path().join("strip.yaml");
    std::fs::write(
        &rules,
        "rules:\n- name: strip-metadata\n  match: {kind: ConfigMap, name: worker-config}\n  jsonPatch: [{op: remove, path: /metadata}]\n",
    )
    .unwrap();
    let out = env.resources(
        "restore",
        &[
            &id,
            "--namespace-mapping",
            "shop=tx",
            "--transform",
            rules.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(!out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed = failed_results(&report);
    assert_eq!(failed.len(), 1, "{report:#}");
    let reason = failed[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("strip-metadata") && reason.contains("removes /metadata"),
        "{reason}"
    );
    assert!(reason.contains("shop/worker-config"), "{reason}");
    assert!(
        stderr(&out).contains("ConfigMap/worker-config (namespace tx)"),
        "{}",
        stderr(&out)
    );
    assert!(env.get_json("tx", "deployment", "worker").is_some());
}
