//! Init containers a restore injects (restore hooks of the init kind): into each restored
//! Pod, and the pod template of each restored workload, that a hook group's selector
//! matches (by the pod's or the template's labels), and as Velero's
//! `init.hook.restore.velero.io/{container-image,container-name,command}` annotations on
//! the pod or template ask. They go first in `initContainers`, so they run to completion
//! before the application starts on its restored data. The operator changes the plan (a
//! value) before it is applied; each change is a note on the object.

use coffer_api::{InitContainer, RestoreSpec};
use coffer_resources::restore::{Action, RestorePlan};
use serde_json::{Value, json};

use crate::backup::hooks::parse_velero_command;

const VELERO_PREFIX: &str = "init.hook.restore.velero.io";

/// Where the pod spec and its labels are in an object of `kind`.
fn template_path(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

fn container(c: &InitContainer) -> Value {
    let mut v = json!({"name": c.name, "image": c.image});
    if !c.command.is_empty() {
        v["command"] = json!(c.command);
    }
    if !c.volume_mounts.is_empty() {
        v["volumeMounts"] = json!(c.volume_mounts);
    }
    v
}

/// Injects the init containers `spec`'s hooks and the Velero annotations ask for into the
/// objects `plan` creates or replaces.
pub fn inject(spec: &RestoreSpec, plan: &mut RestorePlan) {
    for o in plan.objects.iter_mut() {
        if !matches!(o.action, Action::Create | Action::Update | Action::Recreate) {
            continue;
        }
        let Some(path) = template_path(&o.kind) else {
            continue;
        };
        let Some(template) = o.object.pointer_mut(path) else {
            continue;
        };
        let labels = template["metadata"]["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let mut wanted: Vec<(String, Value)> = Vec::new();
        for g in &spec.hooks {
            if g.init.is_empty()
                || g.label_selector
                    .as_ref()
                    .is_some_and(|s| !crate::selector::matches(s, &labels))
            {
                continue;
            }
            wanted.extend(g.init.iter().map(|c| (g.name.clone(), container(c))));
        }
        let a = &template["metadata"]["annotations"];
        if let Some(image) = a[format!("{VELERO_PREFIX}/container-image")].as_str() {
            let name = a[format!("{VELERO_PREFIX}/container-name")]
                .as_str()
                .unwrap_or("restore-hook-init");
            let mut c = json!({"name": name, "image": image});
            if let Some(cmd) = a[format!("{VELERO_PREFIX}/command")].as_str() {
                c["command"] = json!(parse_velero_command(cmd));
            }
            wanted.push((format!("{VELERO_PREFIX} annotations"), c));
        }
        if wanted.is_empty() {
            continue;
        }
        let spec = &mut template["spec"];
        if !spec["initContainers"].is_array() {
            spec["initContainers"] = json!([]);
        }
        let list = spec["initContainers"]
            .as_array_mut()
            .expect("made an array above");
        // In order, before the pod's own init containers.
        let mut at = 0;
        for (from, c) in wanted {
            let name = c["name"].as_str().unwrap_or_default().to_string();
            if list.iter().any(|x| x["name"] == c["name"]) {
                continue;
            }
            list.insert(at, c);
            at += 1;
            o.notes.push(format!(
                "init container {name} injected (restore hook {from})"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_with(objects: Vec<(&str, Value)>) -> RestorePlan {
        let objects: Vec<Value> = objects
            .into_iter()
            .map(|(kind, object)| {
                json!({
                    "step": 0, "rank": 0, "action": "create", "apiVersion": "v1", "kind": kind,
                    "resource": "x", "namespaced": true, "namespace": "shop", "name": "n",
                    "object": object, "stored_uid": null, "owners": [], "live_uid": null,
                    "sanitized_with": {}
                })
            })
            .collect();
        serde_json::from_value(json!({
            "format": 1, "snapshot_id": "s", "target": {"server": "", "uid": null},
            "existing": "skip", "failures": [], "deletions": [], "objects": objects,
            "missing_dependencies": [], "warnings": []
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn matching_templates_and_pods_get_the_containers_first() {
        let spec: RestoreSpec = serde_json::from_value(json!({"hooks": [{"name": "seed",
            "labelSelector": {"matchLabels": {"app": "db"}},
            "init": [{"name": "mark", "image": "busybox", "command": ["sh", "-c", "true"]}]}]}))
        .unwrap();
        let mut plan = plan_with(vec![
            (
                "Deployment",
                json!({"spec": {"template": {"metadata": {"labels": {"app": "db"}},
                "spec": {"initContainers": [{"name": "own", "image": "x"}], "containers": []}}}}),
            ),
            (
                "Deployment",
                json!({"spec": {"template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": []}}}}),
            ),
            (
                "Pod",
                json!({"metadata": {"labels": {"app": "web"}, "annotations": {
                "init.hook.restore.velero.io/container-image": "alpine",
                "init.hook.restore.velero.io/container-name": "v",
                "init.hook.restore.velero.io/command": "[\"echo\", \"hi\"]"}},
                "spec": {"containers": []}}),
            ),
            ("ConfigMap", json!({"metadata": {"labels": {"app": "db"}}})),
        ]);
        inject(&spec, &mut plan);
        let db = &plan.objects[0].object["spec"]["template"]["spec"]["initContainers"];
        assert_eq!(db[0]["name"], "mark");
        assert_eq!(db[1]["name"], "own");
        assert!(plan.objects[0].notes[0].contains("restore hook seed"));
        assert!(plan.objects[1].object["spec"]["template"]["spec"]["initContainers"].is_null());
        let pod = &plan.objects[2].object["spec"]["initContainers"];
        assert_eq!(pod[0]["image"], "alpine");
        assert_eq!(pod[0]["command"], json!(["echo", "hi"]));
        assert!(plan.objects[3].object.get("spec").is_none());
        // Injecting twice adds nothing.
        inject(&spec, &mut plan);
        assert_eq!(
            plan.objects[0].object["spec"]["template"]["spec"]["initContainers"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }
}
