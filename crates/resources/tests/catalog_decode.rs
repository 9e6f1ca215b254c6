//! The catalog and the object streams of a resources snapshot are read from a repository
//! that other (possibly compromised) clusters write: decoding them never panics, refuses
//! what Kubernetes could not have stored, and round-trips what it writes.

use std::collections::BTreeMap;

use coffer_repo::Id;
use coffer_resources::archive::{
    CATALOG_FORMAT, CATALOG_FORMAT_V1, Catalog, ClusterInfo, Entry, MAX_OBJECT_BYTES,
    RecordedSelection, decode_object,
};
use coffer_resources::discovery::ServedResource;
use proptest::prelude::*;
use serde_json::json;

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?"
}

fn served() -> impl Strategy<Value = ServedResource> {
    (
        prop_oneof![Just(String::new()), "[a-z]{1,8}\\.example\\.com"],
        "v[1-3](beta[1-2])?",
        "[A-Z][a-z]{1,10}",
        any::<bool>(),
        proptest::collection::vec("[a-z]{1,6}", 0..4),
    )
        .prop_map(|(group, version, kind, namespaced, verbs)| ServedResource {
            resource: format!("{}s", kind.to_ascii_lowercase()),
            singular: kind.to_ascii_lowercase(),
            short_names: Vec::new(),
            group,
            version,
            kind,
            namespaced,
            verbs,
            status_subresource: false,
        })
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        served(),
        proptest::option::of(name()),
        name(),
        proptest::collection::btree_map("[a-z]{1,5}", "[a-z0-9]{0,5}", 0..3),
        1u64..=MAX_OBJECT_BYTES,
        proptest::collection::vec(any::<[u8; 32]>(), 1..4),
    )
        .prop_map(|(r, namespace, name, labels, size, chunks)| Entry {
            api_version: r.api_version(),
            kind: r.kind.clone(),
            resource: r.resource.clone(),
            namespace,
            name,
            labels,
            size,
            chunks: chunks.into_iter().map(Id).collect(),
        })
}

/// The catalog with its entries in the order a reader returns them.
fn sorted(mut c: Catalog) -> Catalog {
    c.entries.sort_by(|a, b| {
        (a.group(), &a.kind, &a.namespace, &a.name).cmp(&(
            b.group(),
            &b.kind,
            &b.namespace,
            &b.name,
        ))
    });
    c
}

fn catalog() -> impl Strategy<Value = Catalog> {
    (
        "https://[a-z0-9.]{1,20}:[0-9]{2,5}",
        proptest::option::of("[a-f0-9-]{36}"),
        proptest::collection::vec(name(), 0..3),
        any::<bool>(),
        proptest::collection::vec(served(), 0..4),
        proptest::collection::vec(entry(), 0..8),
    )
        .prop_map(
            |(server, uid, namespaces, all_namespaces, collected, entries)| Catalog {
                format: CATALOG_FORMAT,
                cluster: ClusterInfo {
                    server,
                    uid,
                    version: "v1.26.4".into(),
                },
                selection: RecordedSelection {
                    namespaces,
                    all_namespaces,
                    selector: None,
                    include_resources: Vec::new(),
                    exclude_resources: Vec::new(),
                    cluster_resources: "auto".into(),
                },
                collected,
                entries,
            },
        )
}

/// One mutation of a byte string: flip, insert, delete, or truncate.
fn mutate(mut bytes: Vec<u8>, ops: &[(u8, usize, u8)]) -> Vec<u8> {
    for &(op, at, byte) in ops {
        if bytes.is_empty() {
            bytes.push(byte);
            continue;
        }
        let at = at % bytes.len();
        match op % 4 {
            0 => bytes[at] ^= byte | 1,
            1 => bytes.insert(at, byte),
            2 => {
                bytes.remove(at);
            }
            _ => bytes.truncate(at),
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_are_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        prop_assert!(Catalog::from_bytes(&bytes, "test catalog").is_err());
    }

    #[test]
    fn catalogs_round_trip_in_both_formats(c in catalog()) {
        for format in [CATALOG_FORMAT, CATALOG_FORMAT_V1] {
            let c = sorted(Catalog { format, ..c.clone() });
            let bytes = c.to_bytes().unwrap();
            let back = Catalog::from_bytes(&bytes, "test catalog").unwrap();
            prop_assert_eq!(&back, &c);
            prop_assert_eq!(back.to_bytes().unwrap(), bytes);
        }
    }

    #[test]
    fn format_2_entries_come_back_sorted_whatever_their_stored_order(c in catalog()) {
        let back = Catalog::from_bytes(&c.to_bytes().unwrap(), "test catalog").unwrap();
        prop_assert_eq!(back, sorted(c));
    }

    #[test]
    fn a_format_2_catalog_cut_at_any_line_is_damaged(c in catalog(), at in any::<usize>()) {
        let bytes = c.to_bytes().unwrap();
        let ends: Vec<usize> = bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i + 1)
            .collect();
        // Every proper prefix that ends at a line's end lacks the trailer.
        let cut = ends[at % ends.len()];
        if cut < bytes.len() {
            let err = Catalog::from_bytes(&bytes[..cut], "c").unwrap_err().to_string();
            prop_assert!(err.contains("cut short"), "{}", err);
        }
    }

    #[test]
    fn mutated_catalogs_never_panic(
        c in catalog(),
        ops in proptest::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 1..6),
    ) {
        let bytes = mutate(c.to_bytes().unwrap(), &ops);
        // Either an error, or a catalog that is itself consistent.
        if let Ok(back) = Catalog::from_bytes(&bytes, "test catalog") {
            let again = Catalog::from_bytes(&back.to_bytes().unwrap(), "test catalog").unwrap();
            prop_assert_eq!(again, back);
        }
    }

    #[test]
    fn objects_decode_only_as_their_entry(
        e in entry(),
        ops in proptest::collection::vec((any::<u8>(), any::<usize>(), any::<u8>()), 0..4),
    ) {
        let mut obj = json!({"apiVersion": e.api_version, "kind": e.kind,
                             "metadata": {"name": e.name}, "data": {"k": "v"}});
        if let Some(ns) = &e.namespace {
            obj["metadata"]["namespace"] = json!(ns);
        }
        let bytes = serde_json::to_vec(&obj).unwrap();
        let entry = Entry { size: bytes.len() as u64, ..e };
        prop_assert_eq!(decode_object(&bytes, &entry).unwrap(), obj);
        let mutated = mutate(bytes.clone(), &ops);
        if mutated != bytes {
            // Decoding a changed stream never panics; with the size changed it is refused.
            let r = decode_object(&mutated, &entry);
            if mutated.len() != bytes.len() {
                prop_assert!(r.is_err());
            }
        }
    }
}

/// A valid catalog of one ConfigMap.
fn one_entry_catalog() -> Catalog {
    Catalog {
        format: CATALOG_FORMAT,
        cluster: ClusterInfo::default(),
        selection: RecordedSelection::default(),
        collected: Vec::new(),
        entries: vec![Entry {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            resource: "configmaps".into(),
            namespace: Some("shop".into()),
            name: "settings".into(),
            labels: BTreeMap::new(),
            size: 100,
            chunks: vec![Id([7u8; 32])],
        }],
    }
}

#[test]
fn hostile_entries_are_refused() {
    let ok = one_entry_catalog();
    Catalog::from_bytes(&ok.to_bytes().unwrap(), "c").unwrap();
    type Change = Box<dyn Fn(&mut Entry)>;
    let cases: Vec<(&str, Change)> = vec![
        (
            "a name with a slash",
            Box::new(|e| e.name = "../../secrets/x".into()),
        ),
        ("a dot-dot name", Box::new(|e| e.name = "..".into())),
        (
            "an invalid namespace",
            Box::new(|e| e.namespace = Some("Bad_NS!".into())),
        ),
        ("a huge size", Box::new(|e| e.size = u64::MAX)),
        ("no chunks", Box::new(|e| e.chunks.clear())),
        (
            "more chunks than bytes",
            Box::new(|e| {
                e.size = 1;
                e.chunks = vec![Id([1u8; 32]); 2];
            }),
        ),
        (
            "a version with a slash",
            Box::new(|e| e.api_version = "a/b/c".into()),
        ),
    ];
    for (what, change) in cases {
        let mut c = ok.clone();
        change(&mut c.entries[0]);
        let err = Catalog::from_bytes(&c.to_bytes().unwrap(), "the catalog of snapshot x")
            .expect_err(what)
            .to_string();
        assert!(
            err.contains("is damaged") && !err.contains('\n'),
            "{what}: {err}"
        );
    }
    let mut c = ok.clone();
    c.format = 99;
    let err = Catalog::from_bytes(&c.to_bytes().unwrap(), "c")
        .unwrap_err()
        .to_string();
    assert!(err.contains("format 99"), "{err}");
    let mut c = ok.clone();
    c.format = CATALOG_FORMAT_V1;
    let mut v1: serde_json::Value = serde_json::from_slice(&c.to_bytes().unwrap()).unwrap();
    v1["format"] = json!(7);
    let err = Catalog::from_bytes(&serde_json::to_vec(&v1).unwrap(), "c")
        .unwrap_err()
        .to_string();
    assert!(err.contains("format 7"), "{err}");
}

/// A format-2 catalog whose lines do not add up: each is damaged, in one line.
#[test]
fn format_2_lines_that_do_not_add_up_are_damaged() {
    let ok = String::from_utf8(one_entry_catalog().to_bytes().unwrap()).unwrap();
    let lines: Vec<&str> = ok.lines().collect();
    assert_eq!(lines.len(), 3, "{ok}");
    let (header, entry, end) = (lines[0], lines[1], lines[2]);
    let cases = [
        (
            "the trailer counts wrong",
            format!("{header}\n{entry}\n{entry}\n{end}\n"),
            "counts 1 entries, 2 precede",
        ),
        (
            "a line after the trailer",
            format!("{header}\n{entry}\n{end}\n{entry}\n"),
            "follows the trailer",
        ),
        (
            "a second header",
            format!("{header}\n{header}\n{entry}\n{end}\n"),
            "second header",
        ),
        ("no trailer", format!("{header}\n{entry}\n"), "cut short"),
        (
            "no final newline",
            format!("{header}\n{entry}\n{end}"),
            "middle of a line",
        ),
        (
            "an unknown line",
            format!("{header}\n{{\"extra\":1}}\n{end}\n"),
            "line 2",
        ),
        (
            "a header that is not first",
            format!("{entry}\n{header}\n{end}\n"),
            "is damaged",
        ),
    ];
    for (what, bytes, want) in cases {
        let err = Catalog::from_bytes(bytes.as_bytes(), "the catalog of snapshot x")
            .expect_err(what)
            .to_string();
        assert!(err.contains(want) && !err.contains('\n'), "{what}: {err}");
    }
    Catalog::from_bytes(ok.as_bytes(), "c").unwrap();
}

#[test]
fn objects_that_differ_from_their_entry_are_refused() {
    let entry = Entry {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        resource: "configmaps".into(),
        namespace: Some("shop".into()),
        name: "settings".into(),
        labels: BTreeMap::new(),
        size: 0,
        chunks: vec![Id([7u8; 32])],
    };
    for obj in [
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "settings", "namespace": "shop"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other", "namespace": "shop"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": "settings"}),
        json!(["not", "an", "object"]),
    ] {
        let bytes = serde_json::to_vec(&obj).unwrap();
        let e = Entry {
            size: bytes.len() as u64,
            ..entry.clone()
        };
        let err = decode_object(&bytes, &e).unwrap_err().to_string();
        assert!(err.contains("is damaged"), "{obj}: {err}");
    }
}
