use super::*;
use serde_json::json;

fn deploy_info<'a>(ns: &'a str, name: &'a str) -> ObjectInfo<'a> {
    ObjectInfo {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        resource: "deployments",
        namespace: Some(ns),
        name,
    }
}

fn pvc_info<'a>(ns: &'a str, name: &'a str) -> ObjectInfo<'a> {
    ObjectInfo {
        group: "",
        version: "v1",
        kind: "PersistentVolumeClaim",
        resource: "persistentvolumeclaims",
        namespace: Some(ns),
        name,
    }
}

fn pv_info(name: &str) -> ObjectInfo<'_> {
    ObjectInfo {
        group: "",
        version: "v1",
        kind: "PersistentVolume",
        resource: "persistentvolumes",
        namespace: None,
        name,
    }
}

fn deployment(ns: &str, name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "web", "tier": "front"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [
                    {"name": "web", "image": "nginx:1.25", "ports": [{"containerPort": 80}]},
                    {"name": "sidecar", "image": "quay.io/org/side:2"}
                ]}
            }
        }
    })
}

fn pvc(ns: &str, name: &str, sc: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": ns, "labels": {"foo": "bar", "test": "x"}},
        "spec": {"storageClassName": sc, "accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Gi"}}}
    })
}

fn err_text(r: Result<TransformSet, Error>) -> String {
    match r {
        Err(Error::Invalid(m)) => {
            assert!(!m.contains('\n'), "error must be one line: {m}");
            m
        }
        Err(e) => panic!("unexpected error kind {e:?}"),
        Ok(s) => panic!("expected an error, got {} rules", s.len()),
    }
}

// ---------------------------------------------------------------------------------------
// Native format

const NATIVE: &str = r#"
rules:
  - name: scale-down-web
    match:
      group: apps
      kind: Deployment
      namespace: "prod-.*"
      name: "web.*"
      labels: {app: web}
      conditions:
        - path: /spec/replicas
          equals: 3
    jsonPatch:
      - {op: replace, path: /spec/replicas, value: 1}
    mergePatch: {metadata: {labels: {restored: "true", tier: null}}}
"#;

#[test]
fn native_rule_applies_json_and_merge_patch() {
    let set = TransformSet::from_yaml(NATIVE, "t.yaml").unwrap();
    assert_eq!(set.len(), 1);
    let mut obj = deployment("prod-eu", "web-1", 3);
    let applied = set
        .apply(&deploy_info("prod-eu", "web-1"), &mut obj)
        .unwrap();
    assert_eq!(applied, vec!["scale-down-web"]);
    assert_eq!(obj["spec"]["replicas"], json!(1));
    assert_eq!(
        obj["metadata"]["labels"],
        json!({"app": "web", "restored": "true"})
    );
}

#[test]
fn native_match_conditions_each_filter() {
    let set = TransformSet::from_yaml(NATIVE, "t.yaml").unwrap();
    // namespace regex is anchored
    let mut obj = deployment("xprod-eu", "web-1", 3);
    assert!(
        set.apply(&deploy_info("xprod-eu", "web-1"), &mut obj)
            .unwrap()
            .is_empty()
    );
    // name regex is anchored
    let mut obj = deployment("prod-eu", "myweb", 3);
    assert!(
        set.apply(&deploy_info("prod-eu", "myweb"), &mut obj)
            .unwrap()
            .is_empty()
    );
    // condition on replicas
    let mut obj = deployment("prod-eu", "web-1", 2);
    assert!(
        set.apply(&deploy_info("prod-eu", "web-1"), &mut obj)
            .unwrap()
            .is_empty()
    );
    assert_eq!(obj["spec"]["replicas"], json!(2));
    // labels
    let mut obj = deployment("prod-eu", "web-1", 3);
    obj["metadata"]["labels"]["app"] = json!("db");
    assert!(
        set.apply(&deploy_info("prod-eu", "web-1"), &mut obj)
            .unwrap()
            .is_empty()
    );
    // group
    let info = ObjectInfo {
        group: "extensions",
        ..deploy_info("prod-eu", "web-1")
    };
    let mut obj = deployment("prod-eu", "web-1", 3);
    assert!(set.apply(&info, &mut obj).unwrap().is_empty());
}

#[test]
fn native_kind_accepts_kind_plural_and_kubectl_forms() {
    for kind in [
        "Deployment",
        "deployment",
        "deployments",
        "deployments.apps",
        "Deployment.apps",
    ] {
        let text = format!(
            "rules:\n- match: {{kind: {kind}}}\n  mergePatch: {{metadata: {{labels: {{k: v}}}}}}\n"
        );
        let set = TransformSet::from_yaml(&text, "t").unwrap();
        let mut obj = deployment("a", "b", 1);
        assert_eq!(
            set.apply(&deploy_info("a", "b"), &mut obj).unwrap().len(),
            1,
            "{kind}"
        );
    }
    for kind in ["statefulsets", "deployments.extensions", "Pod"] {
        let text = format!("rules:\n- match: {{kind: {kind}}}\n  mergePatch: {{a: 1}}\n");
        let set = TransformSet::from_yaml(&text, "t").unwrap();
        let mut obj = deployment("a", "b", 1);
        assert!(
            set.apply(&deploy_info("a", "b"), &mut obj)
                .unwrap()
                .is_empty(),
            "{kind}"
        );
    }
}

#[test]
fn native_core_group_and_version() {
    let set = TransformSet::from_yaml(
        "rules:\n- match: {group: \"\", version: v1}\n  mergePatch: {metadata: {annotations: {x: y}}}\n",
        "t",
    )
    .unwrap();
    let mut p = pvc("a", "data", "standard");
    assert_eq!(set.apply(&pvc_info("a", "data"), &mut p).unwrap().len(), 1);
    let mut d = deployment("a", "b", 1);
    assert!(
        set.apply(&deploy_info("a", "b"), &mut d)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn native_cluster_scoped_objects_have_empty_namespace() {
    let set = TransformSet::from_yaml(
        "rules:\n- name: any-ns\n  match: {namespace: \".*\"}\n  mergePatch: {a: 1}\n- name: prod\n  match: {namespace: \"prod\"}\n  mergePatch: {b: 1}\n",
        "t",
    )
    .unwrap();
    let mut pv =
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv1"}});
    assert_eq!(set.apply(&pv_info("pv1"), &mut pv).unwrap(), vec!["any-ns"]);
}

#[test]
fn native_label_selector_string() {
    let set = TransformSet::from_yaml(
        "rules:\n- match: {labelSelector: \"app=web,tier in (front,back),!legacy\"}\n  mergePatch: {x: 1}\n",
        "sel.yaml",
    )
    .unwrap();
    let mut d = deployment("a", "b", 1);
    assert_eq!(
        set.apply(&deploy_info("a", "b"), &mut d).unwrap(),
        vec!["sel.yaml rules[0]"]
    );
    let mut d = deployment("a", "b", 1);
    d["metadata"]["labels"]["legacy"] = json!("1");
    assert!(
        set.apply(&deploy_info("a", "b"), &mut d)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn native_conditions_equals_exists_matches_and_dotted_paths() {
    let text = r#"
rules:
  - name: all
    match:
      conditions:
        - {path: .spec.replicas, equals: 3.0}
        - {path: /metadata/annotations/skip, exists: false}
        - {path: /spec/template, exists: true}
        - {path: ".spec.template.spec.containers[0].image", matches: "nginx:.*"}
        - {path: "spec.template.spec.containers[1].name", equals: sidecar}
    jsonPatch: [{op: add, path: /metadata/annotations, value: {seen: "yes"}}]
"#;
    let set = TransformSet::from_yaml(text, "t").unwrap();
    let mut d = deployment("a", "b", 3);
    assert_eq!(
        set.apply(&deploy_info("a", "b"), &mut d).unwrap(),
        vec!["all"]
    );
    assert_eq!(d["metadata"]["annotations"], json!({"seen": "yes"}));
    // Now the annotation map exists, but not `skip`: still matches; with skip it does not.
    let mut d = deployment("a", "b", 3);
    d["metadata"]["annotations"] = json!({"skip": "1"});
    assert!(
        set.apply(&deploy_info("a", "b"), &mut d)
            .unwrap()
            .is_empty()
    );
    // matches is anchored and needs a string
    let mut d = deployment("a", "b", 3);
    d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("my-nginx:1");
    assert!(
        set.apply(&deploy_info("a", "b"), &mut d)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn native_equals_null_differs_from_absent_equals() {
    let set = TransformSet::from_yaml(
        "rules:\n- match: {conditions: [{path: /spec/x, equals: null}]}\n  mergePatch: {y: 1}\n",
        "t",
    )
    .unwrap();
    let mut a = json!({"spec": {"x": null}});
    assert_eq!(set.apply(&deploy_info("a", "b"), &mut a).unwrap().len(), 1);
    let mut b = json!({"spec": {}});
    assert!(
        set.apply(&deploy_info("a", "b"), &mut b)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn native_rules_see_earlier_results_in_order() {
    let text = r#"
rules:
  - name: first
    jsonPatch: [{op: replace, path: /spec/replicas, value: 5}]
  - name: second
    match: {conditions: [{path: /spec/replicas, equals: 5}]}
    jsonPatch: [{op: replace, path: /spec/replicas, value: 6}]
"#;
    let set = TransformSet::from_yaml(text, "t").unwrap();
    let mut d = deployment("a", "b", 1);
    assert_eq!(
        set.apply(&deploy_info("a", "b"), &mut d).unwrap(),
        vec!["first", "second"]
    );
    assert_eq!(d["spec"]["replicas"], json!(6));
}

#[test]
fn native_failing_test_op_skips_rule_without_error() {
    let text = r#"
rules:
  - name: guarded
    jsonPatch:
      - {op: replace, path: /spec/replicas, value: 9}
      - {op: test, path: /spec/template/spec/containers/0/name, value: nope}
"#;
    let set = TransformSet::from_yaml(text, "t").unwrap();
    let mut d = deployment("a", "b", 1);
    assert!(
        set.apply(&deploy_info("a", "b"), &mut d)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        d["spec"]["replicas"],
        json!(1),
        "a skipped rule leaves no partial change"
    );
}

#[test]
fn native_strategic_merge_patch() {
    let text = r#"
rules:
  - name: bump
    match: {kind: Deployment}
    strategicMergePatch:
      spec:
        template:
          spec:
            containers:
              - name: web
                image: nginx:1.27
"#;
    let set = TransformSet::from_yaml(text, "t").unwrap();
    let mut d = deployment("a", "b", 1);
    set.apply(&deploy_info("a", "b"), &mut d).unwrap();
    let cs = &d["spec"]["template"]["spec"]["containers"];
    assert_eq!(cs.as_array().unwrap().len(), 2);
    assert_eq!(
        cs[0],
        json!({"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]})
    );
    assert_eq!(cs[1]["image"], json!("quay.io/org/side:2"));
}

#[test]
fn native_rule_without_match_applies_to_everything() {
    let set = TransformSet::from_yaml(
        "rules:\n- mergePatch: {metadata: {labels: {all: \"1\"}}}\n",
        "t",
    )
    .unwrap();
    let mut p = pvc("a", "d", "x");
    assert_eq!(set.apply(&pvc_info("a", "d"), &mut p).unwrap().len(), 1);
    assert_eq!(p["metadata"]["labels"]["all"], json!("1"));
}

#[test]
fn failing_patch_names_rule_and_object() {
    let text =
        "rules:\n- name: fix-it\n  jsonPatch: [{op: replace, path: /spec/nothere/x, value: 1}]\n";
    let set = TransformSet::from_yaml(text, "t.yaml").unwrap();
    let mut d = deployment("prod", "web", 1);
    let before = d.clone();
    let Err(Error::Invalid(m)) = set.apply(&deploy_info("prod", "web"), &mut d) else {
        panic!("expected error")
    };
    assert!(m.contains("\"fix-it\""), "{m}");
    assert!(m.contains("t.yaml rules[0]"), "{m}");
    assert!(m.contains("apps/v1 Deployment prod/web"), "{m}");
    assert!(m.contains("/spec/nothere/x"), "{m}");
    assert!(!m.contains('\n'));
    assert_eq!(d, before);
}

#[test]
fn failing_patch_of_unnamed_rule_names_location() {
    let set = TransformSet::from_yaml(
        "rules:\n- jsonPatch: [{op: remove, path: /spec/none}]\n",
        "f.yaml",
    )
    .unwrap();
    let mut p = pvc("ns", "data", "x");
    let Err(Error::Invalid(m)) = set.apply(&pvc_info("ns", "data"), &mut p) else {
        panic!()
    };
    assert!(m.starts_with("transform f.yaml rules[0]:"), "{m}");
    assert!(m.contains("v1 PersistentVolumeClaim ns/data"), "{m}");
}

#[test]
fn native_parse_errors_name_rule_and_field() {
    let m = err_text(TransformSet::from_yaml(
        "rules:\n- name: r1\n  match: {name: \"web(\"}\n  mergePatch: {a: 1}\n",
        "t.yaml",
    ));
    assert!(
        m.contains("t.yaml: rule \"r1\" (rules[0])") && m.contains("match.name regex"),
        "{m}"
    );

    let m = err_text(TransformSet::from_yaml(
        "rules:\n- match: {kindd: Deployment}\n  mergePatch: {a: 1}\n",
        "t.yaml",
    ));
    assert!(m.contains("rules[0].match") && m.contains("kindd"), "{m}");

    let m = err_text(TransformSet::from_yaml("rules:\n- name: empty\n", "t.yaml"));
    assert!(m.contains("has no patch"), "{m}");

    let m = err_text(TransformSet::from_yaml(
        "rules:\n- match: {conditions: [{path: /a, equals: 1, exists: true}]}\n  mergePatch: {a: 1}\n",
        "t.yaml",
    ));
    assert!(m.contains("exactly one of equals, exists, matches"), "{m}");

    let m = err_text(TransformSet::from_yaml(
        "rules:\n- match: {conditions: [{path: /a, matches: \"[\"}]}\n  mergePatch: {a: 1}\n",
        "t.yaml",
    ));
    assert!(m.contains("conditions[0]") && m.contains("regex"), "{m}");

    let m = err_text(TransformSet::from_yaml(
        "rules:\n- jsonPatch: [{op: replace, path: spec/replicas, value: 1}]\n",
        "t.yaml",
    ));
    assert!(m.contains("jsonPatch[0]"), "{m}");

    let m = err_text(TransformSet::from_yaml(
        "rules:\n- jsonPatch: [{op: frobnicate, path: /a}]\n",
        "t.yaml",
    ));
    assert!(m.contains("jsonPatch[0]"), "{m}");

    let m = err_text(TransformSet::from_yaml(
        "rules:\n- match: {labelSelector: \"a in b\"}\n  mergePatch: {a: 1}\n",
        "t.yaml",
    ));
    assert!(m.contains("match.labelSelector"), "{m}");

    let m = err_text(TransformSet::from_yaml("rules: []\n", "t.yaml"));
    assert!(m.contains("empty"), "{m}");

    let m = err_text(TransformSet::from_yaml("foo: bar\n", "t.yaml"));
    assert!(m.contains("not a transform file"), "{m}");

    let m = err_text(TransformSet::from_yaml("rules: [\n", "t.yaml"));
    assert!(m.contains("not valid YAML"), "{m}");

    let m = err_text(TransformSet::from_yaml(
        "rules:\n- match: {conditions: [{path: /a~2b, exists: true}]}\n  mergePatch: {a: 1}\n",
        "t.yaml",
    ));
    assert!(m.contains("~0"), "{m}");
}

#[test]
fn dotted_paths_to_pointers() {
    assert_eq!(to_pointer(".spec.replicas").unwrap(), "/spec/replicas");
    assert_eq!(to_pointer("spec.replicas").unwrap(), "/spec/replicas");
    assert_eq!(to_pointer(".a.b[0].c[12]").unwrap(), "/a/b/0/c/12");
    assert_eq!(
        to_pointer("/metadata/labels/app.kubernetes.io~1name").unwrap(),
        "/metadata/labels/app.kubernetes.io~1name"
    );
    assert_eq!(to_pointer("").unwrap(), "");
    assert!(to_pointer(".a..b").is_err());
    assert!(to_pointer(".a[x]").is_err());
    assert!(to_pointer(".a[0").is_err());
}

#[test]
fn multi_document_files_and_extend() {
    let text = "rules:\n- name: a\n  mergePatch: {a: 1}\n---\nrules:\n- name: b\n  mergePatch: {b: 1}\n---\n";
    let mut set = TransformSet::from_yaml(text, "t").unwrap();
    assert_eq!(set.len(), 2);
    let other = TransformSet::from_yaml("rules:\n- name: c\n  mergePatch: {c: 1}\n", "u").unwrap();
    set.extend(other);
    assert_eq!(set.len(), 3);
    assert!(!set.is_empty());
    assert!(TransformSet::default().is_empty());
    let mut d = json!({});
    assert_eq!(
        set.apply(&deploy_info("x", "y"), &mut d).unwrap(),
        vec!["a", "b", "c"]
    );
    assert_eq!(d, json!({"a": 1, "b": 1, "c": 1}));
    // A Velero document after a native one keeps its own snapshot.
    assert_eq!(
        set.rules.iter().map(|r| r.file).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
}

#[test]
fn yaml_merge_keys_are_applied() {
    let text = "common: &c {op: replace, path: /spec/replicas, value: 2}\n";
    // Unknown top-level key `common` is not a transform file.
    assert!(TransformSet::from_yaml(text, "t").is_err());
    let text = "rules:\n- name: a\n  jsonPatch:\n  - &op {op: replace, path: /spec/replicas, value: 2}\n- name: b\n  jsonPatch:\n  - <<: *op\n    value: 4\n";
    let set = TransformSet::from_yaml(text, "t").unwrap();
    let mut d = deployment("a", "b", 1);
    set.apply(&deploy_info("a", "b"), &mut d).unwrap();
    assert_eq!(d["spec"]["replicas"], json!(4));
}

// ---------------------------------------------------------------------------------------
// Velero format

const VELERO_DOC: &str = r#"
version: v1
resourceModifierRules:
- conditions:
     groupResource: persistentvolumeclaims
     resourceNameRegex: "^mysql.*$"
     namespaces:
     - bar
     - foo
     labelSelector:
        matchLabels:
           foo: bar
  patches:
  - operation: replace
    path: "/spec/storageClassName"
    value: "premium"
  - operation: remove
    path: "/metadata/labels/test"
"#;

#[test]
fn velero_documented_example() {
    let set = TransformSet::from_yaml(VELERO_DOC, "rm.yaml").unwrap();
    let mut p = pvc("foo", "mysql-data", "standard");
    let applied = set.apply(&pvc_info("foo", "mysql-data"), &mut p).unwrap();
    assert_eq!(applied, vec!["rm.yaml resourceModifierRules[0]"]);
    assert_eq!(p["spec"]["storageClassName"], json!("premium"));
    assert_eq!(p["metadata"]["labels"], json!({"foo": "bar"}));
    // Other namespace, other name, missing label: no match.
    for (ns, name, drop_label) in [
        ("baz", "mysql-data", false),
        ("foo", "pg-data", false),
        ("foo", "mysql-data", true),
    ] {
        let mut p = pvc(ns, name, "standard");
        if drop_label {
            p["metadata"]["labels"] = json!({"test": "x"});
        }
        assert!(
            set.apply(&pvc_info(ns, name), &mut p).unwrap().is_empty(),
            "{ns} {name}"
        );
    }
}

#[test]
fn velero_name_regex_is_unanchored() {
    let text = "version: v1\nresourceModifierRules:\n- conditions: {groupResource: persistentvolumeclaims, resourceNameRegex: sql}\n  patches: [{operation: add, path: /metadata/labels/hit, value: \"1\"}]\n";
    let set = TransformSet::from_yaml(text, "t").unwrap();
    let mut p = pvc("a", "mysql-data", "x");
    assert_eq!(
        set.apply(&pvc_info("a", "mysql-data"), &mut p)
            .unwrap()
            .len(),
        1
    );
    // "1" is a number to Velero.
    assert_eq!(p["metadata"]["labels"]["hit"], json!(1));
}

#[test]
fn velero_group_resource_globs() {
    let cases = [
        ("persistentvolumeclaims", "persistentvolumeclaims", true),
        ("persistentvolumeclaims", "deployments.apps", false),
        ("*", "persistentvolumeclaims", true),
        ("*", "deployments.apps", false),
        ("*.apps", "deployments.apps", true),
        ("*.apps", "persistentvolumeclaims", false),
        ("**", "deployments.apps", true),
        ("**", "ingresses.networking.k8s.io", true),
        ("*.*", "deployments.apps", true),
        ("{deployments,statefulsets}.apps", "statefulsets.apps", true),
        ("{deployments,statefulsets}.apps", "daemonsets.apps", false),
        ("deployment?.apps", "deployments.apps", true),
        ("[dr]eplicasets.apps", "replicasets.apps", true),
        ("[!r]eplicasets.apps", "replicasets.apps", false),
        ("deployments.apps", "deploymentsxapps", false),
        ("*.k8s.io", "ingresses.networking.k8s.io", false),
        ("**.k8s.io", "ingresses.networking.k8s.io", true),
    ];
    for (glob, gr, want) in cases {
        let re = glob_regex(glob).unwrap();
        assert_eq!(re.is_match(gr), want, "{glob} vs {gr}");
    }
    for bad in ["{a,b", "[ab", "a\\"] {
        assert!(glob_regex(bad).is_err(), "{bad}");
    }
}

#[test]
fn velero_group_resource_from_object_info() {
    assert_eq!(deploy_info("a", "b").group_resource(), "deployments.apps");
    assert_eq!(
        pvc_info("a", "b").group_resource(),
        "persistentvolumeclaims"
    );
    let text = "version: v1\nresourceModifierRules:\n- conditions: {groupResource: '*.apps'}\n  patches: [{operation: replace, path: /spec/replicas, value: \"0\"}]\n";
    let set = TransformSet::from_yaml(text, "t").unwrap();
    let mut d = deployment("a", "b", 3);
    assert_eq!(set.apply(&deploy_info("a", "b"), &mut d).unwrap().len(), 1);
    assert_eq!(d["spec"]["replicas"], json!(0));
    let mut p = pvc("a", "b", "x");
    assert!(set.apply(&pvc_info("a", "b"), &mut p).unwrap().is_empty());
}

#[test]
fn velero_value_quoting_matches_add_quotes() {
    let cases = [
        ("premium", r#""premium""#),
        ("", r#""""#),
        ("3", "3"),
        ("-1.5", "-1.5"),
        ("1e3", "1e3"),
        ("true", "true"),
        ("False", "False"),
        ("null", "null"),
        ("Null", r#""Null""#),
        (r#"{"a": 1}"#, r#"{"a": 1}"#),
        ("[1,2]", "[1,2]"),
        (r#""true""#, r#""true""#),
        (r#""3""#, r#""3""#),
        ("nginx:1.14.2", r#""nginx:1.14.2""#),
        ("Inf", "Inf"),
        ("0x1p-2", "0x1p-2"),
        (" 1", r#"" 1""#),
        ("1_000", r#""1_000""#),
        (".5", ".5"),
    ];
    for (input, want) in cases {
        assert_eq!(velero_json_value(input), want, "{input:?}");
    }
}

#[test]
fn velero_yaml_scalars_become_go_strings() {
    let text = r#"
version: v1
resourceModifierRules:
- conditions: {groupResource: configmaps}
  patches:
  - {operation: add, path: /data/int, value: 1}
  - {operation: add, path: /data/bool, value: true}
  - {operation: add, path: /data/quotedbool, value: "\"true\""}
  - {operation: add, path: /data/str, value: "hello"}
  - {operation: add, path: /data/empty}
  - {operation: add, path: /data/nullv, value: null}
  - {operation: add, path: /data/obj, value: "{\"k\": [1, 2]}"}
  - {operation: add, path: /data/float, value: 2.5}
  - {operation: add, path: /data/whole, value: 2.0}
"#;
    let set = TransformSet::from_yaml(text, "t").unwrap();
    let info = ObjectInfo {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        resource: "configmaps",
        namespace: Some("a"),
        name: "cm",
    };
    let mut cm =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {}});
    set.apply(&info, &mut cm).unwrap();
    assert_eq!(
        cm["data"],
        json!({"int": 1, "bool": true, "quotedbool": "true", "str": "hello", "empty": "",
               "nullv": "", "obj": {"k": [1, 2]}, "float": 2.5, "whole": 2})
    );
}

#[test]
fn velero_complex_add_and_copy_from_docs() {
    let text = r#"
version: v1
resourceModifierRules:
- conditions:
    groupResource: deployments.apps
    resourceNameRegex: "^test-.*$"
    namespaces:
    - bar
    - foo
  patches:
  - operation: add
    path: "/spec/template/spec/containers/0"
    value: "{\"name\": \"nginx\", \"image\": \"nginx:1.14.2\", \"ports\": [{\"containerPort\": 80}]}"
  - operation: copy
    from: "/spec/template/spec/containers/0"
    path: "/spec/template/spec/containers/1"
"#;
    let set = TransformSet::from_yaml(text, "t").unwrap();
    let mut d = deployment("foo", "test-web", 1);
    set.apply(&deploy_info("foo", "test-web"), &mut d).unwrap();
    let cs = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(cs.len(), 4);
    let added = json!({"name": "nginx", "image": "nginx:1.14.2", "ports": [{"containerPort": 80}]});
    assert_eq!(cs[0], added);
    assert_eq!(cs[1], added);
    assert_eq!(cs[2]["name"], json!("web"));
}

#[test]
fn velero_value_that_breaks_json_is_reported_at_load() {
    for value in [r#"a"b"#, "True", "two\nlines"] {
        let text = format!(
            "version: v1\nresourceModifierRules:\n- conditions: {{groupResource: pods}}\n  patches:\n  - operation: add\n    path: /x\n    value: {}\n",
            serde_json::to_string(value).unwrap()
        );
        let m = err_text(TransformSet::from_yaml(&text, "v.yaml"));
        assert!(
            m.contains("v.yaml resourceModifierRules[0]: patches[0]"),
            "{m}"
        );
        assert!(m.contains("does not parse"), "{m}");
    }
}

#[test]
fn velero_yaml_map_value_is_accepted_as_json() {
    let text = "version: v1\nresourceModifierRules:\n- conditions: {groupResource: pods}\n  patches:\n  - {operation: add, path: /x, value: {a: [1]}}\n";
    let set = TransformSet::from_yaml(text, "t").unwrap();
    let info = ObjectInfo {
        group: "",
        version: "v1",
        kind: "Pod",
        resource: "pods",
        namespace: Some("a"),
        name: "p",
    };
    let mut p = json!({});
    set.apply(&info, &mut p).unwrap();
    assert_eq!(p, json!({"x": {"a": [1]}}));
}

#[test]
fn velero_test_operation_skips_rule() {
    let text = r#"
version: v1
resourceModifierRules:
- conditions:
    groupResource: persistentvolumeclaims.storage.k8s.io
    resourceNameRegex: ".*"
  patches:
  - operation: test
    path: "/spec/storageClassName"
    value: "premium"
  - operation: replace
    path: "/spec/storageClassName"
    value: "standard"
- conditions:
    groupResource: persistentvolumeclaims
  patches:
  - operation: test
    path: "/spec/storageClassName"
    value: "premium"
  - operation: replace
    path: "/spec/storageClassName"
    value: "standard"
"#;
    let set = TransformSet::from_yaml(text, "t").unwrap();
    // Rule 0's groupResource never matches a core PVC (as in Velero).
    let mut p = pvc("a", "d", "premium");
    assert_eq!(
        set.apply(&pvc_info("a", "d"), &mut p).unwrap(),
        vec!["t resourceModifierRules[1]"]
    );
    assert_eq!(p["spec"]["storageClassName"], json!("standard"));
    let mut p = pvc("a", "d", "gold");
    assert!(set.apply(&pvc_info("a", "d"), &mut p).unwrap().is_empty());
    assert_eq!(p["spec"]["storageClassName"], json!("gold"));
}

#[test]
fn velero_matches_conditions() {
    let text = r#"
version: v1
resourceModifierRules:
- conditions:
    groupResource: deployments.apps
    matches:
    - path: /spec/replicas
      value: "3"
    - path: /spec/template/spec/containers/0/name
      value: web
  patches:
  - {operation: replace, path: /spec/replicas, value: "1"}
"#;
    let set = TransformSet::from_yaml(text, "t").unwrap();
    let mut d = deployment("a", "b", 3);
    assert_eq!(set.apply(&deploy_info("a", "b"), &mut d).unwrap().len(), 1);
    assert_eq!(d["spec"]["replicas"], json!(1));
    let mut d = deployment("a", "b", 2);
    assert!(
        set.apply(&deploy_info("a", "b"), &mut d)
            .unwrap()
            .is_empty()
    );
    // A missing path is no match, not an error.
    let mut d = deployment("a", "b", 3);
    d["spec"]["template"]["spec"]["containers"] = json!([]);
    assert!(
        set.apply(&deploy_info("a", "b"), &mut d)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn velero_match_null_on_missing_leaf() {
    assert!(velero_test(&json!({"a": {}}), "/a/b", &Value::Null));
    assert!(!velero_test(&json!({"a": {}}), "/a/b", &json!("x")));
    assert!(!velero_test(&json!({}), "/a/b", &Value::Null));
    assert!(velero_test(&json!({"a": {"b": 1.0}}), "/a/b", &json!(1)));
}

#[test]
fn velero_conditions_see_object_before_the_file() {
    let text = r#"
version: v1
resourceModifierRules:
- conditions:
    groupResource: persistentvolumeclaims
    matches: [{path: /spec/storageClassName, value: standard}]
  patches: [{operation: replace, path: /spec/storageClassName, value: premium}]
- conditions:
    groupResource: persistentvolumeclaims
    matches: [{path: /spec/storageClassName, value: standard}]
  mergePatches:
  - patchData: |
      metadata:
        labels:
          was-standard: "true"
"#;
    let set = TransformSet::from_yaml(text, "t").unwrap();
    let mut p = pvc("a", "d", "standard");
    assert_eq!(set.apply(&pvc_info("a", "d"), &mut p).unwrap().len(), 2);
    assert_eq!(p["spec"]["storageClassName"], json!("premium"));
    assert_eq!(p["metadata"]["labels"]["was-standard"], json!("true"));

    // A second file sees the result of the first.
    let mut set2 = TransformSet::from_yaml(text, "first").unwrap();
    set2.extend(TransformSet::from_yaml(text, "second").unwrap());
    let mut p = pvc("a", "d", "standard");
    let applied = set2.apply(&pvc_info("a", "d"), &mut p).unwrap();
    assert_eq!(
        applied,
        vec![
            "first resourceModifierRules[0]",
            "first resourceModifierRules[1]"
        ]
    );
}

#[test]
fn velero_applies_only_first_patch_kind() {
    let text = r#"
version: v1
resourceModifierRules:
- conditions: {groupResource: persistentvolumeclaims}
  patches: [{operation: replace, path: /spec/storageClassName, value: premium}]
  mergePatches: [{patchData: '{"metadata": {"labels": {"merged": "yes"}}}'}]
"#;
    let set = TransformSet::from_yaml(text, "t").unwrap();
    let mut p = pvc("a", "d", "standard");
    set.apply(&pvc_info("a", "d"), &mut p).unwrap();
    assert_eq!(p["spec"]["storageClassName"], json!("premium"));
    assert!(p["metadata"]["labels"].get("merged").is_none());
}

#[test]
fn velero_merge_patches_yaml_and_json() {
    let text = r#"
version: v1
resourceModifierRules:
- conditions:
    groupResource: pods
    namespaces:
    - ns1
    matches:
    - path: /metadata/annotations/foo
      value: bar
  mergePatches:
  - patchData: |
      metadata:
        annotations:
          foo: null
  - patchData: |
      {"metadata":{"labels":{"patched":"json"}}}
"#;
    let set = TransformSet::from_yaml(text, "t").unwrap();
    let info = ObjectInfo {
        group: "",
        version: "v1",
        kind: "Pod",
        resource: "pods",
        namespace: Some("ns1"),
        name: "p",
    };
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ns1", "annotations": {"foo": "bar", "keep": "1"}}});
    assert_eq!(set.apply(&info, &mut pod).unwrap().len(), 1);
    assert_eq!(pod["metadata"]["annotations"], json!({"keep": "1"}));
    assert_eq!(pod["metadata"]["labels"], json!({"patched": "json"}));
}

#[test]
fn velero_strategic_patches() {
    let text = r#"
version: v1
resourceModifierRules:
- conditions:
    groupResource: pods
    namespaces:
    - ns1
  strategicPatches:
  - patchData: |
      spec:
        containers:
        - name: nginx
          image: repo2/nginx
"#;
    let set = TransformSet::from_yaml(text, "t").unwrap();
    let info = ObjectInfo {
        group: "",
        version: "v1",
        kind: "Pod",
        resource: "pods",
        namespace: Some("ns1"),
        name: "p",
    };
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns1"},
        "spec": {"containers": [{"name": "nginx", "image": "nginx"}, {"name": "log", "image": "busybox"}]}});
    set.apply(&info, &mut pod).unwrap();
    assert_eq!(
        pod["spec"]["containers"],
        json!([{"name": "nginx", "image": "repo2/nginx"}, {"name": "log", "image": "busybox"}])
    );
}

#[test]
fn velero_namespaces_do_not_filter_cluster_scoped() {
    let text = "version: v1\nresourceModifierRules:\n- conditions: {groupResource: persistentvolumes, namespaces: [foo]}\n  mergePatches: [{patchData: '{\"spec\": {\"storageClassName\": \"fast\"}}'}]\n";
    let set = TransformSet::from_yaml(text, "t").unwrap();
    let mut pv = json!({"kind": "PersistentVolume", "spec": {"storageClassName": "slow"}});
    assert_eq!(set.apply(&pv_info("pv1"), &mut pv).unwrap().len(), 1);
    assert_eq!(pv["spec"]["storageClassName"], json!("fast"));
    // `*` in namespaces includes every namespace.
    let text = "version: v1\nresourceModifierRules:\n- conditions: {groupResource: persistentvolumeclaims, namespaces: ['*']}\n  patches: [{operation: add, path: /metadata/labels/x, value: y}]\n";
    let set = TransformSet::from_yaml(text, "t").unwrap();
    let mut p = pvc("any", "d", "x");
    assert_eq!(set.apply(&pvc_info("any", "d"), &mut p).unwrap().len(), 1);
}

#[test]
fn velero_match_expressions() {
    let text = r#"
version: v1
resourceModifierRules:
- conditions:
    groupResource: persistentvolumeclaims
    labelSelector:
      matchExpressions:
      - {key: foo, operator: In, values: [bar, baz]}
      - {key: skip, operator: DoesNotExist}
  patches: [{operation: add, path: /metadata/labels/hit, value: "yes"}]
"#;
    let set = TransformSet::from_yaml(text, "t").unwrap();
    let mut p = pvc("a", "d", "x");
    assert_eq!(set.apply(&pvc_info("a", "d"), &mut p).unwrap().len(), 1);
    let mut p = pvc("a", "d", "x");
    p["metadata"]["labels"]["skip"] = json!("1");
    assert!(set.apply(&pvc_info("a", "d"), &mut p).unwrap().is_empty());
}

#[test]
fn velero_configmap_wrapper() {
    let cm = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: resource-modifiers
  namespace: velero
  labels:
    velero.io/resource-modifier: "true"
data:
  resource-modifiers.yaml: |
    version: v1
    resourceModifierRules:
    - conditions:
        groupResource: persistentvolumeclaims
      patches:
      - operation: replace
        path: "/spec/storageClassName"
        value: "premium"
"#;
    let set = TransformSet::from_yaml(cm, "cm.yaml").unwrap();
    let mut p = pvc("a", "d", "standard");
    let applied = set.apply(&pvc_info("a", "d"), &mut p).unwrap();
    assert_eq!(
        applied,
        vec![
            "cm.yaml (ConfigMap resource-modifiers key resource-modifiers.yaml) resourceModifierRules[0]"
        ]
    );
    assert_eq!(p["spec"]["storageClassName"], json!("premium"));

    let two = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: rm}\ndata: {a: 'x', b: 'y'}\n";
    let m = err_text(TransformSet::from_yaml(two, "cm.yaml"));
    assert!(
        m.contains("exactly one data key") && m.contains("it has 2"),
        "{m}"
    );

    // A native file inside a ConfigMap works too.
    let native = "kind: ConfigMap\nmetadata: {name: n}\ndata:\n  t.yaml: |\n    rules:\n    - name: r\n      mergePatch: {a: 1}\n";
    let set = TransformSet::from_yaml(native, "cm").unwrap();
    assert_eq!(set.len(), 1);
}

#[test]
fn velero_parse_errors() {
    let cases = [
        (
            "version: v2\nresourceModifierRules:\n- conditions: {groupResource: pods}\n  patches: [{operation: add, path: /a, value: b}]\n",
            "unsupported Velero resource modifier version",
        ),
        (
            "version: v1\nresourceModifierRules: []\n",
            "resourceModifierRules is empty",
        ),
        (
            "version: v1\nresourceModifierRules:\n- conditions: {resourceNameRegex: a}\n  patches: [{operation: add, path: /a, value: b}]\n",
            "groupResource cannot be empty",
        ),
        (
            "version: v1\nresourceModifierRules:\n- conditions: {groupResource: pods}\n  patches: [{operation: upsert, path: /a, value: b}]\n",
            "unsupported operation \"upsert\"",
        ),
        (
            "version: v1\nresourceModifierRules:\n- conditions: {groupResource: pods}\n  patches: [{operation: add, value: b}]\n",
            "path cannot be empty",
        ),
        (
            "version: v1\nresourceModifierRules:\n- conditions: {groupResource: pods, resourceNameRegex: '(a'}\n  patches: [{operation: add, path: /a, value: b}]\n",
            "resourceNameRegex",
        ),
        (
            "version: v1\nresourceModifierRules:\n- conditions: {groupResource: pods}\n",
            "has no patch data",
        ),
        (
            "version: v1\nresourceModifierRules:\n- conditions: {groupResource: pods, namespace: [a]}\n  patches: [{operation: add, path: /a, value: b}]\n",
            "namespace",
        ),
        (
            "version: v1\nresourceModifierRules:\n- conditions: {groupResource: pods, matches: [{value: x}]}\n  patches: [{operation: add, path: /a, value: b}]\n",
            "matches[0]: path is required",
        ),
        (
            "version: v1\nresourceModifierRules:\n- conditions: {groupResource: pods}\n  mergePatches: [{patchData: '{a: [}'}]\n",
            "mergePatches[0].patchData",
        ),
        (
            "version: v1\nresourceModifierRules:\n- conditions: {groupResource: pods, labelSelector: {matchExpressions: [{key: a, operator: In}]}}\n  patches: [{operation: add, path: /a, value: b}]\n",
            "conditions.labelSelector",
        ),
        (
            "version: v1\nrules: []\nresourceModifierRules: []\n",
            "both",
        ),
        (
            "version: v1\nresourceModifierRules:\n- conditions: {groupResource: 'pods{'}\n  patches: [{operation: add, path: /a, value: b}]\n",
            "groupResource",
        ),
    ];
    for (text, want) in cases {
        let m = err_text(TransformSet::from_yaml(text, "v.yaml"));
        assert!(m.contains(want), "want {want:?} in: {m}");
        assert!(m.starts_with("v.yaml"), "{m}");
    }
}

#[test]
fn velero_operation_case_is_accepted() {
    let text = "version: V1\nresourceModifierRules:\n- conditions: {groupResource: persistentvolumeclaims}\n  patches: [{operation: Replace, path: /spec/storageClassName, value: x}]\n";
    let set = TransformSet::from_yaml(text, "t").unwrap();
    let mut p = pvc("a", "d", "standard");
    set.apply(&pvc_info("a", "d"), &mut p).unwrap();
    assert_eq!(p["spec"]["storageClassName"], json!("x"));
}

#[test]
fn velero_failing_patch_is_error_naming_rule() {
    let text = "version: v1\nresourceModifierRules:\n- conditions: {groupResource: persistentvolumeclaims}\n  patches: [{operation: remove, path: /spec/nothing}]\n";
    let set = TransformSet::from_yaml(text, "v.yaml").unwrap();
    let mut p = pvc("ns", "d", "x");
    let Err(Error::Invalid(m)) = set.apply(&pvc_info("ns", "d"), &mut p) else {
        panic!()
    };
    assert!(
        m.contains("v.yaml resourceModifierRules[0]")
            && m.contains("ns/d")
            && m.contains("/spec/nothing"),
        "{m}"
    );
}

// ---------------------------------------------------------------------------------------
// Strategic merge

fn smp(target: Value, patch: Value) -> Value {
    let mut t = target;
    strategic_merge(&mut t, &patch).unwrap();
    t
}

#[test]
fn smp_merges_maps_and_deletes_with_null() {
    assert_eq!(
        smp(
            json!({"a": {"b": 1, "c": 2}, "d": 3}),
            json!({"a": {"b": null, "e": 4}, "d": null, "f": {"g": null, "h": 1}})
        ),
        json!({"a": {"c": 2, "e": 4}, "f": {"h": 1}})
    );
}

#[test]
fn smp_containers_env_mounts_ports() {
    let target = json!({"spec": {"containers": [
        {"name": "a", "image": "a:1",
         "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}],
         "volumeMounts": [{"name": "v", "mountPath": "/data"}],
         "ports": [{"containerPort": 80, "name": "http"}],
         "args": ["--x", "--y"]},
        {"name": "b", "image": "b:1"}
    ]}});
    let patch = json!({"spec": {"containers": [
        {"name": "a",
         "env": [{"name": "Y", "value": "22"}, {"name": "Z", "value": "3"}, {"name": "X", "$patch": "delete"}],
         "volumeMounts": [{"mountPath": "/data", "readOnly": true}],
         "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443}],
         "args": ["--z"]},
        {"name": "c", "image": "c:1"}
    ]}});
    let got = smp(target, patch);
    assert_eq!(
        got,
        json!({"spec": {"containers": [
            {"name": "a", "image": "a:1",
             "env": [{"name": "Y", "value": "22"}, {"name": "Z", "value": "3"}],
             "volumeMounts": [{"name": "v", "mountPath": "/data", "readOnly": true}],
             "ports": [{"containerPort": 80, "name": "http", "protocol": "TCP"}, {"containerPort": 443}],
             "args": ["--z"]},
            {"name": "b", "image": "b:1"},
            {"name": "c", "image": "c:1"}
        ]}})
    );
}

#[test]
fn smp_service_ports_merge_by_port() {
    let got = smp(
        json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}}),
        json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}),
    );
    assert_eq!(
        got,
        json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}, {"port": 443}]}})
    );
}

#[test]
fn smp_delete_and_replace_directives() {
    // $patch: delete on a list item
    let got = smp(
        json!({"spec": {"volumes": [{"name": "a"}, {"name": "b"}]}}),
        json!({"spec": {"volumes": [{"name": "a", "$patch": "delete"}]}}),
    );
    assert_eq!(got, json!({"spec": {"volumes": [{"name": "b"}]}}));
    // $patch: replace as a list item replaces the whole list
    let got = smp(
        json!({"spec": {"volumes": [{"name": "a"}, {"name": "b"}]}}),
        json!({"spec": {"volumes": [{"name": "c"}, {"$patch": "replace"}]}}),
    );
    assert_eq!(got, json!({"spec": {"volumes": [{"name": "c"}]}}));
    // $patch: replace on a map
    let got = smp(
        json!({"spec": {"resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "1"}}}}),
        json!({"spec": {"resources": {"$patch": "replace", "limits": {"memory": "1Gi"}}}}),
    );
    assert_eq!(
        got,
        json!({"spec": {"resources": {"limits": {"memory": "1Gi"}}}})
    );
    // $patch: delete on a map key
    let got = smp(
        json!({"a": {"b": 1}, "c": 1}),
        json!({"a": {"$patch": "delete"}}),
    );
    assert_eq!(got, json!({"c": 1}));
    // $patch: merge is the default
    let got = smp(
        json!({"a": {"b": 1}}),
        json!({"a": {"$patch": "merge", "c": 2}}),
    );
    assert_eq!(got, json!({"a": {"b": 1, "c": 2}}));
}

#[test]
fn smp_volume_claim_templates_by_metadata_name() {
    let got = smp(
        json!({"spec": {"volumeClaimTemplates": [
            {"metadata": {"name": "data"}, "spec": {"storageClassName": "slow", "accessModes": ["ReadWriteOnce"]}},
            {"metadata": {"name": "logs"}, "spec": {"storageClassName": "slow"}}]}}),
        json!({"spec": {"volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"storageClassName": "fast"}}]}}),
    );
    assert_eq!(
        got["spec"]["volumeClaimTemplates"][0]["spec"],
        json!({"storageClassName": "fast", "accessModes": ["ReadWriteOnce"]})
    );
    assert_eq!(
        got["spec"]["volumeClaimTemplates"][1]["spec"]["storageClassName"],
        json!("slow")
    );
}

#[test]
fn smp_finalizers_retain_keys_and_primitive_delete() {
    let got = smp(
        json!({"metadata": {"finalizers": ["a", "b"]}}),
        json!({"metadata": {"finalizers": ["b", "c"]}}),
    );
    assert_eq!(got, json!({"metadata": {"finalizers": ["a", "b", "c"]}}));
    let got = smp(
        json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
    );
    assert_eq!(got, json!({"metadata": {"finalizers": ["a", "c"]}}));
    let got = smp(
        json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}),
        json!({"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}),
    );
    assert_eq!(got, json!({"strategy": {"type": "Recreate"}}));
    let got = smp(
        json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}),
        json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}], "containers": [{"name": "a", "image": "x"}]}}),
    );
    assert_eq!(
        got,
        json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b"}]}})
    );
}

#[test]
fn smp_new_subtrees_are_cleaned_of_directives() {
    let got = smp(
        json!({"spec": {}}),
        json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "env": [{"name": "X", "value": "1"}, {"name": "Y", "$patch": "delete"}]}], "x": null}}}}),
    );
    assert_eq!(
        got,
        json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "env": [{"name": "X", "value": "1"}]}]}}}})
    );
}

#[test]
fn smp_errors() {
    let mut t = json!({"spec": {"containers": [{"name": "a"}]}});
    let e =
        strategic_merge(&mut t, &json!({"spec": {"containers": [{"image": "x"}]}})).unwrap_err();
    assert!(
        e.contains("spec.containers") && e.contains("merge key name"),
        "{e}"
    );
    let e = strategic_merge(&mut t, &json!({"spec": {"$patch": "frob"}})).unwrap_err();
    assert!(e.contains("frob"), "{e}");
    let e = strategic_merge(&mut t, &json!({"$patch": "delete"})).unwrap_err();
    assert!(e.contains("not supported"), "{e}");
    let e = strategic_merge(&mut t, &json!({"$unknown": 1})).unwrap_err();
    assert!(e.contains("$unknown"), "{e}");

    let text =
        "rules:\n- name: bad-smp\n  strategicMergePatch: {spec: {containers: [{image: x}]}}\n";
    let set = TransformSet::from_yaml(text, "t").unwrap();
    let mut d = deployment("a", "b", 1);
    d["spec"]["containers"] = json!([{"name": "x"}]);
    let Err(Error::Invalid(m)) = set.apply(&deploy_info("a", "b"), &mut d) else {
        panic!()
    };
    assert!(
        m.contains("bad-smp") && m.contains("strategic merge patch failed"),
        "{m}"
    );
}

// ---------------------------------------------------------------------------------------
// Storage classes

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn storage_class_mapping_pvc_pv_sts() {
    let m = map(&[("standard", "fast"), ("slow", "cheap")]);
    let mut p = pvc("a", "d", "standard");
    p["metadata"]["annotations"] = json!({LEGACY_SC_ANNOTATION: "slow", "other": "standard"});
    assert!(map_storage_classes(&mut p, &m));
    assert_eq!(p["spec"]["storageClassName"], json!("fast"));
    assert_eq!(
        p["metadata"]["annotations"],
        json!({LEGACY_SC_ANNOTATION: "cheap", "other": "standard"})
    );

    let mut pv = json!({"kind": "PersistentVolume", "spec": {"storageClassName": "slow"}});
    assert!(map_storage_classes(&mut pv, &m));
    assert_eq!(pv["spec"]["storageClassName"], json!("cheap"));

    let mut sts = json!({"kind": "StatefulSet", "spec": {"volumeClaimTemplates": [
        {"metadata": {"name": "data"}, "spec": {"storageClassName": "standard"}},
        {"metadata": {"name": "logs", "annotations": {LEGACY_SC_ANNOTATION: "slow"}}, "spec": {}},
        {"metadata": {"name": "keep"}, "spec": {"storageClassName": "gold"}}
    ]}});
    assert!(map_storage_classes(&mut sts, &m));
    let v = &sts["spec"]["volumeClaimTemplates"];
    assert_eq!(v[0]["spec"]["storageClassName"], json!("fast"));
    assert_eq!(
        v[1]["metadata"]["annotations"][LEGACY_SC_ANNOTATION],
        json!("cheap")
    );
    assert!(v[1]["spec"].get("storageClassName").is_none());
    assert_eq!(v[2]["spec"]["storageClassName"], json!("gold"));
}

#[test]
fn storage_class_mapping_no_change() {
    let m = map(&[("standard", "fast")]);
    let mut p = pvc("a", "d", "gold");
    assert!(!map_storage_classes(&mut p, &m));
    let mut d = deployment("a", "b", 1);
    assert!(!map_storage_classes(&mut d, &m));
    let mut p = pvc("a", "d", "standard");
    assert!(!map_storage_classes(&mut p, &BTreeMap::new()));
    let mut same = pvc("a", "d", "x");
    assert!(!map_storage_classes(&mut same, &map(&[("x", "x")])));
    let mut no_spec = json!({"kind": "PersistentVolumeClaim"});
    assert!(!map_storage_classes(&mut no_spec, &m));
}

// ---------------------------------------------------------------------------------------
// Images

#[test]
fn image_normalisation() {
    let cases = [
        ("nginx", "docker.io/library/nginx"),
        ("nginx:1", "docker.io/library/nginx:1"),
        ("bitnami/redis:7", "docker.io/bitnami/redis:7"),
        ("docker.io/nginx", "docker.io/library/nginx"),
        ("index.docker.io/library/nginx", "docker.io/library/nginx"),
        ("quay.io/org/app@sha256:abc", "quay.io/org/app@sha256:abc"),
        ("localhost/app", "localhost/app"),
        ("localhost:5000/app:1", "localhost:5000/app:1"),
        ("registry:5000/app", "registry:5000/app"),
        ("Registry/app", "Registry/app"),
        ("nginx@sha256:abc", "docker.io/library/nginx@sha256:abc"),
    ];
    for (i, want) in cases {
        assert_eq!(normalize_image(i), want, "{i}");
    }
}

#[test]
fn image_mapping_rules() {
    let m = map(&[
        ("docker.io", "registry.local"),
        ("quay.io/org", "reg.local/mirror"),
        ("docker.io/bitnami", "reg.local/bitnami-mirror/"),
        ("localhost:5000", "reg.local"),
    ]);
    let cases = [
        ("nginx:1", Some("registry.local/library/nginx:1")),
        ("library/nginx", Some("registry.local/library/nginx")),
        (
            "docker.io/library/nginx@sha256:ab",
            Some("registry.local/library/nginx@sha256:ab"),
        ),
        ("bitnami/redis:7", Some("reg.local/bitnami-mirror/redis:7")),
        ("quay.io/org/app:2", Some("reg.local/mirror/app:2")),
        ("quay.io/organisation/app:2", None),
        ("quay.io/other/app", None),
        ("localhost:5000/app", Some("reg.local/app")),
        ("localhost/app", None),
        ("gcr.io/x/y", None),
        ("", None),
    ];
    for (i, want) in cases {
        assert_eq!(map_image(i, &m).as_deref(), want, "{i}");
    }
    // A host/path key also matches an exact repository with tag or digest.
    let m = map(&[("docker.io/library/nginx", "reg.local/nginx")]);
    assert_eq!(
        map_image("nginx:1", &m).as_deref(),
        Some("reg.local/nginx:1")
    );
    assert_eq!(map_image("nginx", &m).as_deref(), Some("reg.local/nginx"));
    assert_eq!(map_image("nginx-extra:1", &m), None);
    // index.docker.io keys are docker.io
    let m = map(&[("index.docker.io", "mirror")]);
    assert_eq!(
        map_image("nginx", &m).as_deref(),
        Some("mirror/library/nginx")
    );
}

#[test]
fn image_mapping_over_workloads() {
    let m = map(&[
        ("docker.io", "registry.local"),
        ("quay.io/org", "reg.local/mirror"),
    ]);
    let mut d = deployment("a", "b", 1);
    d["spec"]["template"]["spec"]["initContainers"] = json!([{"name": "init", "image": "busybox"}]);
    d["spec"]["template"]["spec"]["ephemeralContainers"] =
        json!([{"name": "dbg", "image": "gcr.io/x/dbg"}]);
    assert!(map_image_registries(&mut d, &m));
    let spec = &d["spec"]["template"]["spec"];
    assert_eq!(
        spec["containers"][0]["image"],
        json!("registry.local/library/nginx:1.25")
    );
    assert_eq!(
        spec["containers"][1]["image"],
        json!("reg.local/mirror/side:2")
    );
    assert_eq!(
        spec["initContainers"][0]["image"],
        json!("registry.local/library/busybox")
    );
    assert_eq!(
        spec["ephemeralContainers"][0]["image"],
        json!("gcr.io/x/dbg")
    );

    let mut cj = json!({"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec": {
        "containers": [{"name": "c", "image": "alpine:3"}]}}}}}});
    assert!(map_image_registries(&mut cj, &m));
    assert_eq!(
        cj.pointer("/spec/jobTemplate/spec/template/spec/containers/0/image")
            .unwrap(),
        &json!("registry.local/library/alpine:3")
    );

    let mut pod =
        json!({"kind": "Pod", "spec": {"containers": [{"name": "c", "image": "quay.io/org/x"}]}});
    assert!(map_image_registries(&mut pod, &m));
    assert_eq!(
        pod["spec"]["containers"][0]["image"],
        json!("reg.local/mirror/x")
    );

    for kind in [
        "StatefulSet",
        "DaemonSet",
        "ReplicaSet",
        "Job",
        "ReplicationController",
    ] {
        let mut w = json!({"kind": kind, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "redis"}]}}}});
        assert!(map_image_registries(&mut w, &m), "{kind}");
        assert_eq!(
            w["spec"]["template"]["spec"]["containers"][0]["image"],
            json!("registry.local/library/redis")
        );
    }
    let mut pt = json!({"kind": "PodTemplate", "template": {"spec": {"containers": [{"name": "c", "image": "redis"}]}}});
    assert!(map_image_registries(&mut pt, &m));

    let mut svc = json!({"kind": "Service", "spec": {"containers": [{"image": "redis"}]}});
    assert!(!map_image_registries(&mut svc, &m));
    let mut unmapped =
        json!({"kind": "Pod", "spec": {"containers": [{"name": "c", "image": "gcr.io/a/b"}]}});
    assert!(!map_image_registries(&mut unmapped, &m));
    assert!(!map_image_registries(&mut pod, &BTreeMap::new()));
}

#[test]
fn mapping_flags_parse() {
    let m = parse_mapping(
        "--storage-class-mapping",
        &[
            "standard=fast,slow=cheap".into(),
            " gold = platinum ".into(),
        ],
    )
    .unwrap();
    assert_eq!(
        m,
        map(&[
            ("standard", "fast"),
            ("slow", "cheap"),
            ("gold", "platinum")
        ])
    );
    for bad in ["noequals", "=x", "x="] {
        let Err(Error::Invalid(e)) = parse_mapping("--storage-class-mapping", &[bad.into()]) else {
            panic!("{bad}")
        };
        assert!(e.contains("--storage-class-mapping"), "{e}");
    }
    let Err(Error::Invalid(e)) =
        parse_mapping("--image-registry-mapping", &["a=b".into(), "a=c".into()])
    else {
        panic!()
    };
    assert!(e.contains("mapped twice"), "{e}");
    assert!(parse_mapping("--x", &["a=b".into(), "a=b".into()]).is_ok());
}

#[test]
fn object_info_display() {
    assert_eq!(
        deploy_info("ns", "web").to_string(),
        "apps/v1 Deployment ns/web"
    );
    assert_eq!(pv_info("pv1").to_string(), "v1 PersistentVolume pv1");
}

// ---------------------------------------------------------------------------------------
// Required fields

#[test]
fn removing_required_fields_is_an_error_naming_rule_and_object() {
    for (path, what) in [
        ("/metadata", "/metadata"),
        ("/metadata/name", "/metadata/name"),
        ("/kind", "/kind"),
        ("/apiVersion", "/apiVersion"),
    ] {
        let text = format!("rules:\n- name: strip\n  jsonPatch: [{{op: remove, path: {path}}}]\n");
        let set = TransformSet::from_yaml(&text, "t.yaml").unwrap();
        let mut d = deployment("prod", "web", 1);
        let before = d.clone();
        let Err(Error::Invalid(m)) = set.apply(&deploy_info("prod", "web"), &mut d) else {
            panic!("removing {path} must be an error")
        };
        assert!(
            m.contains("\"strip\"") && m.contains("t.yaml rules[0]"),
            "{m}"
        );
        assert!(m.contains("apps/v1 Deployment prod/web"), "{m}");
        assert!(m.contains(&format!("removes {what}")), "{m}");
        assert!(!m.contains('\n'), "{m}");
        assert_eq!(d, before, "the object stays as the earlier rules made it");
    }
    // A merge patch that nulls metadata is caught the same way.
    let set =
        TransformSet::from_yaml("rules:\n- mergePatch: {metadata: null}\n", "m.yaml").unwrap();
    let mut d = deployment("prod", "web", 1);
    let m = set
        .apply(&deploy_info("prod", "web"), &mut d)
        .unwrap_err()
        .to_string();
    assert!(
        m.contains("m.yaml rules[0]") && m.contains("removes /metadata"),
        "{m}"
    );
}
