//! `--clone`: what a clone renames, and how its objects stop pointing at the original.
//!
//! Three things make a clone independent of the original it runs beside: its objects get
//! new names (and references by name follow, see [`crate::refs`]); its selectors and the
//! pod labels they select get the suffix, so the original's Services never send traffic
//! to the clone's pods and the other way round; and the Service addresses written into
//! its configuration (environment values, container arguments and commands, ConfigMap
//! and Secret values) that name a Service of the restore are rewritten to the clone's
//! Service. The last one is text, so the rule for what counts as an address matters; it
//! is [`rewrite_service_references`], documented in docs/resources.md. The same rewrite
//! applies when a namespace mapping moves Services: `db.shop.svc` becomes
//! `db.shop-staging.svc`.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::Value;

use crate::discovery::ServedResource;
use crate::refs;

/// Kinds that `--clone` renames. Namespaces, CRDs and shared cluster configuration keep
/// their names (the clone uses them as they are).
pub(super) fn clone_renames(r: &ServedResource) -> bool {
    if !r.namespaced {
        return matches!(
            (r.group.as_str(), r.kind.as_str()),
            ("rbac.authorization.k8s.io", "ClusterRoleBinding")
        );
    }
    true
}

/// Whether a clone suffix can make valid names and label values: a DNS label of at most
/// 20 characters (names get `-SUFFIX`).
pub(super) fn suffix_problem(suffix: &str) -> Option<String> {
    if suffix.len() > 20 {
        return Some(format!(
            "it has {} characters; keep it to 20 or fewer, names and label values get -SUFFIX",
            suffix.len()
        ));
    }
    crate::names::dns_label_problem(suffix)
}

/// The `coffer.dev/clone-of` value: `CLUSTER/NAMESPACE/NAME` (or `CLUSTER/NAME` for
/// cluster-scoped objects), where CLUSTER is the source API server's host and port (or
/// the import origin). No empty segment, so never a doubled `/`.
pub(super) fn provenance(server: &str, namespace: Option<&str>, name: &str) -> String {
    let host = server
        .split_once("://")
        .map_or(server, |(_, rest)| rest)
        .trim_matches('/');
    let mut parts: Vec<&str> = host.split('/').filter(|p| !p.is_empty()).collect();
    parts.extend(namespace.filter(|n| !n.is_empty()));
    parts.push(name);
    parts.join("/")
}

/// `--clone`: label values in selectors and the pod labels they select get the suffix,
/// so the clone's Services and controllers select only the clone's pods.
pub(super) fn suffix_selector_labels(
    group: &str,
    kind: &str,
    obj: &mut Value,
    suffix: &str,
) -> Result<(), String> {
    let suffixed = |v: &mut Value| -> Result<(), String> {
        if let Some(s) = v.as_str() {
            let new = format!("{s}-{suffix}");
            if new.len() > 63 {
                return Err(format!(
                    "label value {new:?} would exceed 63 characters; choose a shorter --clone suffix"
                ));
            }
            *v = Value::String(new);
        }
        Ok(())
    };
    for (ptr, structured) in refs::selector_pointers(group, kind) {
        let Some(sel) = obj.pointer_mut(ptr) else {
            continue;
        };
        let map = if *structured {
            sel.get_mut("matchLabels")
        } else {
            Some(sel)
        };
        if let Some(m) = map.and_then(Value::as_object_mut) {
            for v in m.values_mut() {
                suffixed(v)?;
            }
        }
        if *structured
            && let Some(exprs) = obj
                .pointer_mut(&format!("{ptr}/matchExpressions"))
                .and_then(Value::as_array_mut)
        {
            for e in exprs {
                if let Some(vals) = e.get_mut("values").and_then(Value::as_array_mut) {
                    for v in vals {
                        suffixed(v)?;
                    }
                }
            }
        }
    }
    if refs::pod_spec_mut(group, kind, obj).is_some()
        && let Some(meta) = refs::pod_metadata_mut(group, kind, obj)
        && let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut)
    {
        for v in labels.values_mut() {
            suffixed(v)?;
        }
    }
    Ok(())
}

/// The Services (and StatefulSets, whose pods have DNS names) whose addresses change in
/// a restore, keyed by their source namespace and name.
#[derive(Clone, Debug, Default)]
pub struct ServiceNames {
    /// (source namespace, name) to (target namespace, target name).
    pub services: BTreeMap<(String, String), (String, String)>,
    /// (source namespace, name) to target name, for renamed StatefulSets.
    pub stateful_sets: BTreeMap<(String, String), String>,
}

impl ServiceNames {
    /// Whether nothing changes address.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    fn service(&self, ns: &str, name: &str) -> Option<&(String, String)> {
        self.services.get(&(ns.to_string(), name.to_string()))
    }

    /// A StatefulSet pod's name (`web-0`) in the clone, if its StatefulSet is renamed.
    fn pod(&self, ns: &str, pod: &str) -> Option<String> {
        let (set, ordinal) = pod.rsplit_once('-')?;
        if ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let new = self.stateful_sets.get(&(ns.to_string(), set.to_string()))?;
        Some(format!("{new}-{ordinal}"))
    }
}

/// The outcome of [`rewrite_service_references`] on one text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsRewrite {
    /// The text with the references rewritten.
    pub text: String,
    /// How many references were rewritten.
    pub rewritten: usize,
    /// Tokens that name a Service of the restore but could not be decided (a bare name
    /// in free text), left as they were.
    pub undecided: Vec<String>,
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

/// Rewrites the Service addresses in `text` that name a Service of the restore whose
/// address changes, as written by an object of source namespace `src_ns`.
///
/// Only whole tokens (maximal runs of letters, digits, `.`, `-`, `_`) count, never parts
/// of other words; tokens with `_` or upper-case letters are not DNS names. Recognised:
/// - `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local` (any cluster domain), with or
///   without `:port`, anywhere (URLs included): always rewritten;
/// - `pod.svc.ns[.svc...]` and `pod.svc` for StatefulSet pods (`db-0.db.shop.svc`): the
///   pod's name follows its renamed StatefulSet; other pod names are undecided;
/// - a bare `svc` (same namespace), only where it is clearly a host: the whole value
///   (optionally `:port`), a whole `key: value` / `key=value` line, a URL host (after
///   `://` or `user@`), or the value of an inline `key=`. A bare name anywhere else is
///   free text: left as it is and reported undecided. A name followed by `://` is a URL
///   scheme, not a host.
pub fn rewrite_service_references(text: &str, src_ns: &str, names: &ServiceNames) -> DnsRewrite {
    let mut out = DnsRewrite {
        text: String::with_capacity(text.len()),
        ..Default::default()
    };
    if names.is_empty() {
        out.text.push_str(text);
        return out;
    }
    let mut last = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if !is_token_char(c) {
            continue;
        }
        let mut end = start + c.len_utf8();
        while let Some(&(i, c)) = chars.peek() {
            if !is_token_char(c) {
                break;
            }
            end = i + c.len_utf8();
            chars.next();
        }
        let token = &text[start..end];
        let core = token.trim_end_matches('.');
        let core_end = start + core.len();
        if let Some(new) = rewrite_token(text, start, core_end, core, src_ns, names, &mut out) {
            out.text.push_str(&text[last..start]);
            out.text.push_str(&new);
            last = core_end;
            out.rewritten += 1;
        }
    }
    out.text.push_str(&text[last..]);
    out.undecided.sort();
    out.undecided.dedup();
    out
}

/// The replacement of one token, if it is a decided reference; undecided ones are
/// recorded in `out`.
fn rewrite_token(
    text: &str,
    start: usize,
    end: usize,
    core: &str,
    src_ns: &str,
    names: &ServiceNames,
    out: &mut DnsRewrite,
) -> Option<String> {
    if core.is_empty() || core.contains('_') || core.chars().any(|c| c.is_ascii_uppercase()) {
        return None;
    }
    let labels: Vec<&str> = core.split('.').collect();
    if labels.iter().any(|l| l.is_empty()) {
        return None;
    }
    let svc_suffix_ok = |i: usize| labels.len() == i || labels[i] == "svc";
    // svc.ns[.svc...]
    if labels.len() >= 2
        && svc_suffix_ok(2)
        && let Some((ns, name)) = names.service(labels[1], labels[0])
    {
        let mut new = vec![name.as_str(), ns.as_str()];
        new.extend(&labels[2..]);
        return Some(new.join("."));
    }
    // pod.svc.ns[.svc...]
    if labels.len() >= 3
        && svc_suffix_ok(3)
        && let Some((ns, name)) = names.service(labels[2], labels[1])
    {
        let pod = match names.pod(labels[2], labels[0]) {
            Some(p) => p,
            None if name == labels[1] => labels[0].to_string(),
            None => {
                out.undecided.push(core.to_string());
                return None;
            }
        };
        let mut new = vec![pod.as_str(), name.as_str(), ns.as_str()];
        new.extend(&labels[3..]);
        return Some(new.join("."));
    }
    // pod.svc in the same namespace.
    if labels.len() == 2
        && let Some((_, name)) = names.service(src_ns, labels[1])
        && name != labels[1]
    {
        return match names.pod(src_ns, labels[0]) {
            Some(pod) => Some(format!("{pod}.{name}")),
            None => {
                out.undecided.push(core.to_string());
                None
            }
        };
    }
    // A bare name in the same namespace: only where it is clearly a host.
    if labels.len() == 1
        && let Some((_, name)) = names.service(src_ns, core)
        && name != core
    {
        let before = &text[..start];
        let after = &text[end..];
        if after.starts_with("://") {
            return None;
        }
        if bare_is_host(before, after) {
            return Some(name.clone());
        }
        out.undecided.push(core.to_string());
    }
    None
}

/// Whether a bare name between `before` and `after` stands where a host does.
fn bare_is_host(before: &str, after: &str) -> bool {
    let line_before = before.rsplit('\n').next().unwrap_or("");
    let line_after = after.split('\n').next().unwrap_or("");
    let quotes: &[char] = &['"', '\''];
    // What may follow a host: nothing, or a port, then the end of the value.
    let port_then_end = |s: &str| {
        let s = s.trim_start_matches(quotes);
        match s.strip_prefix(':') {
            None => s.trim().is_empty(),
            Some(rest) => {
                let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
                digits > 0 && {
                    let tail = rest[digits..].trim_start_matches(quotes);
                    tail.trim().is_empty() || tail.starts_with(['/', '?', '#'])
                }
            }
        }
    };
    let ends_host = |s: &str| {
        s.is_empty()
            || s.starts_with([':', '/', '?', '#', ',', ';', '&', '"', '\''])
            || s.starts_with(char::is_whitespace)
    };
    // The whole value, or a whole `key: value` / `key=value` line.
    let lead = line_before.trim_start();
    let lead = lead
        .strip_prefix("- ")
        .unwrap_or(lead)
        .trim_start_matches(quotes);
    let keyed = lead
        .trim_end()
        .trim_end_matches(quotes)
        .trim_end()
        .strip_suffix([':', '='])
        .is_some_and(|key| {
            let key = key.trim().trim_matches(quotes);
            !key.is_empty() && key.chars().all(|c| is_token_char(c) || c == '/')
        });
    if (lead.trim().is_empty() || keyed) && port_then_end(line_after) {
        return true;
    }
    // A URL host.
    if (before.ends_with("://") || before.ends_with('@')) && ends_host(after) {
        return true;
    }
    // The value of an inline key=value.
    if let Some(key) = before.strip_suffix('=')
        && key.chars().last().is_some_and(is_token_char)
        && ends_host(after)
    {
        return true;
    }
    false
}

/// Rewrites the Service addresses inside one object (environment values, container
/// arguments and commands; ConfigMap data; Secret data and stringData). Returns how many
/// were rewritten and where undecided names were left (`env DB_HOST of container web:
/// "db"`).
pub(super) fn rewrite_object_references(
    group: &str,
    kind: &str,
    obj: &mut Value,
    src_ns: &str,
    names: &ServiceNames,
) -> (usize, Vec<String>) {
    struct Acc<'a> {
        src_ns: &'a str,
        names: &'a ServiceNames,
        count: usize,
        undecided: Vec<String>,
    }
    impl Acc<'_> {
        /// The rewritten text, if anything changed.
        fn text(&mut self, at: &str, text: &str) -> Option<String> {
            let r = rewrite_service_references(text, self.src_ns, self.names);
            for u in r.undecided {
                self.undecided.push(format!("{at}: {u:?}"));
            }
            self.count += r.rewritten;
            (r.rewritten > 0).then_some(r.text)
        }
        fn value(&mut self, at: &str, slot: &mut Value) {
            if let Some(new) = slot.as_str().and_then(|t| self.text(at, t)) {
                *slot = Value::String(new);
            }
        }
    }
    let mut acc = Acc {
        src_ns,
        names,
        count: 0,
        undecided: Vec::new(),
    };
    if let Some(spec) = refs::pod_spec_mut(group, kind, obj) {
        for list in ["containers", "initContainers", "ephemeralContainers"] {
            let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
                continue;
            };
            for c in containers {
                let cname = c["name"].as_str().unwrap_or("?").to_string();
                if let Some(env) = c.get_mut("env").and_then(Value::as_array_mut) {
                    for e in env {
                        let ename = e["name"].as_str().unwrap_or("?").to_string();
                        if let Some(v) = e.get_mut("value") {
                            acc.value(&format!("env {ename} of container {cname}"), v);
                        }
                    }
                }
                for field in ["args", "command"] {
                    if let Some(items) = c.get_mut(field).and_then(Value::as_array_mut) {
                        for (i, v) in items.iter_mut().enumerate() {
                            acc.value(&format!("{field}[{i}] of container {cname}"), v);
                        }
                    }
                }
            }
        }
    }
    match (group, kind) {
        ("", "ConfigMap") => {
            if let Some(data) = obj.get_mut("data").and_then(Value::as_object_mut) {
                for (k, v) in data.iter_mut() {
                    acc.value(&format!("data key {k}"), v);
                }
            }
        }
        ("", "Secret") => {
            if let Some(data) = obj.get_mut("stringData").and_then(Value::as_object_mut) {
                for (k, v) in data.iter_mut() {
                    acc.value(&format!("stringData key {k}"), v);
                }
            }
            if let Some(data) = obj.get_mut("data").and_then(Value::as_object_mut) {
                let b64 = base64::engine::general_purpose::STANDARD;
                for (k, v) in data.iter_mut() {
                    // Values that are not base64 of UTF-8 text hold no addresses to rewrite.
                    let Some(text) = v
                        .as_str()
                        .and_then(|s| b64.decode(s).ok())
                        .and_then(|b| String::from_utf8(b).ok())
                    else {
                        continue;
                    };
                    if let Some(new) = acc.text(&format!("data key {k}"), &text) {
                        *v = Value::String(b64.encode(new));
                    }
                }
            }
        }
        _ => {}
    }
    (acc.count, acc.undecided)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn clone_names() -> ServiceNames {
        let mut n = ServiceNames::default();
        for s in ["db", "web", "cache"] {
            n.services.insert(
                ("shop".into(), s.into()),
                ("shop".into(), format!("{s}-blue")),
            );
        }
        n.stateful_sets
            .insert(("shop".into(), "db".into()), "db-blue".into());
        n
    }

    fn rw(text: &str) -> DnsRewrite {
        rewrite_service_references(text, "shop", &clone_names())
    }

    #[test]
    fn dotted_forms_are_rewritten_anywhere() {
        for (input, want) in [
            ("db.shop", "db-blue.shop"),
            ("db.shop.svc", "db-blue.shop.svc"),
            (
                "db.shop.svc.cluster.local",
                "db-blue.shop.svc.cluster.local",
            ),
            (
                "db.shop.svc.cluster.local.",
                "db-blue.shop.svc.cluster.local.",
            ),
            ("db.shop:5432", "db-blue.shop:5432"),
            (
                "postgres://user@db.shop.svc:5432/x",
                "postgres://user@db-blue.shop.svc:5432/x",
            ),
            (
                "connect to db.shop.svc.cluster.local now",
                "connect to db-blue.shop.svc.cluster.local now",
            ),
            (
                "a=web.shop,b=cache.shop.svc",
                "a=web-blue.shop,b=cache-blue.shop.svc",
            ),
            ("db-0.db.shop.svc", "db-blue-0.db-blue.shop.svc"),
            ("db-1.db", "db-blue-1.db-blue"),
        ] {
            let r = rw(input);
            assert_eq!(r.text, want, "{input}");
            assert!(r.undecided.is_empty(), "{input}: {:?}", r.undecided);
        }
    }

    #[test]
    fn bare_names_only_where_they_are_hosts() {
        for (input, want) in [
            ("db", "db-blue"),
            ("db:5432", "db-blue:5432"),
            ("  db  ", "  db-blue  "),
            (
                "postgres://user:pw@db:5432/x",
                "postgres://user:pw@db-blue:5432/x",
            ),
            ("http://web/path?q=1", "http://web-blue/path?q=1"),
            ("redis://cache", "redis://cache-blue"),
            ("--host=db", "--host=db-blue"),
            ("host=db port=5432", "host=db-blue port=5432"),
            ("host: db\nport: 5432\n", "host: db-blue\nport: 5432\n"),
            ("DB_HOST=db:5432", "DB_HOST=db-blue:5432"),
        ] {
            let r = rw(input);
            assert_eq!(r.text, want, "{input}");
            assert_eq!(r.rewritten, 1, "{input}");
            assert!(r.undecided.is_empty(), "{input}: {:?}", r.undecided);
        }
    }

    #[test]
    fn never_parts_of_other_words() {
        for input in [
            "mydb.shop.svc",
            "db_host",
            "DB",
            "dbx",
            "db.shopping",
            "xdb.shop",
            "db.other.svc",
            "a.db.other",
            "web-db",
            "db://x",
        ] {
            let r = rw(input);
            assert_eq!(r.text, input, "{input}");
            assert_eq!(r.rewritten, 0, "{input}");
            assert!(r.undecided.is_empty(), "{input}: {:?}", r.undecided);
        }
    }

    #[test]
    fn bare_names_in_free_text_are_undecided() {
        let r = rw("the db is slow, ask web team");
        assert_eq!(r.text, "the db is slow, ask web team");
        assert_eq!(r.undecided, vec!["db".to_string(), "web".to_string()]);
        // A pod of a Service whose StatefulSet is not renamed cannot be named.
        let r = rw("other-0.web.shop.svc");
        assert_eq!(r.text, "other-0.web.shop.svc");
        assert_eq!(r.undecided, vec!["other-0.web.shop.svc".to_string()]);
    }

    #[test]
    fn namespace_moves_without_renames_keep_bare_names() {
        let mut n = ServiceNames::default();
        n.services.insert(
            ("shop".into(), "db".into()),
            ("staging".into(), "db".into()),
        );
        let r = rewrite_service_references("db and db.shop.svc:5432 and db-0.db.shop", "shop", &n);
        assert_eq!(r.text, "db and db.staging.svc:5432 and db-0.db.staging");
        assert!(r.undecided.is_empty());
    }

    #[test]
    fn objects_env_args_configmaps_and_secrets() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{
            "name": "app",
            "command": ["app", "--db=db.shop.svc:5432"],
            "args": ["--cache", "cache:6379"],
            "env": [{"name": "DB_URL", "value": "postgres://u@db:5432/x"},
                    {"name": "NOTE", "value": "db is primary"},
                    {"name": "FROM", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}]
        }]}}}});
        let (n, undecided) =
            rewrite_object_references("apps", "Deployment", &mut d, "shop", &clone_names());
        assert_eq!(n, 3);
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["command"][1], "--db=db-blue.shop.svc:5432");
        assert_eq!(c["args"][1], "cache-blue:6379");
        assert_eq!(c["env"][0]["value"], "postgres://u@db-blue:5432/x");
        assert_eq!(c["env"][1]["value"], "db is primary");
        assert_eq!(
            undecided,
            vec!["env NOTE of container app: \"db\"".to_string()]
        );

        let mut cm =
            json!({"data": {"url": "http://web.shop.svc.cluster.local/", "theme": "dark"}});
        let (n, _) = rewrite_object_references("", "ConfigMap", &mut cm, "shop", &clone_names());
        assert_eq!(n, 1);
        assert_eq!(cm["data"]["url"], "http://web-blue.shop.svc.cluster.local/");

        let mut s = json!({"data": {"url": b64.encode("mysql://root@db.shop:3306"),
                                    "bin": b64.encode([0xff, 0xfe, 0x00]),
                                    "other": b64.encode("nothing here")}});
        let before_other = s["data"]["other"].clone();
        let (n, _) = rewrite_object_references("", "Secret", &mut s, "shop", &clone_names());
        assert_eq!(n, 1);
        assert_eq!(
            b64.decode(s["data"]["url"].as_str().unwrap()).unwrap(),
            b"mysql://root@db-blue.shop:3306"
        );
        assert_eq!(s["data"]["other"], before_other);
    }

    #[test]
    fn provenance_has_no_empty_segments() {
        for (server, ns, want) in [
            (
                "https://127.0.0.1:6443",
                Some("shop"),
                "127.0.0.1:6443/shop/web",
            ),
            (
                "https://127.0.0.1:6443/",
                Some("shop"),
                "127.0.0.1:6443/shop/web",
            ),
            ("k8s-1.15-cluster", None, "k8s-1.15-cluster/web"),
            ("", Some("shop"), "shop/web"),
            (
                "https://api.example.com//prefix/",
                None,
                "api.example.com/prefix/web",
            ),
        ] {
            let p = provenance(server, ns, "web");
            assert_eq!(p, want);
            assert!(!p.contains("//") && !p.starts_with('/') && !p.ends_with('/'));
        }
    }
}
