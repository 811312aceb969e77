//! Properties of admission over inputs no one wrote by hand: whatever JSON
//! a client sends as any kind, admission answers (an admitted object, or
//! field errors that say what is wrong) and never panics; and what it
//! admits, it admits again unchanged (defaults apply once, decoding is
//! stable), which the API server relies on when it re-admits a stored
//! object on every update.

use flotilla_objects::admit::admit_tracked;
use flotilla_objects::{admit, ResourceInfo, RESOURCES};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// Keys that occur in manifests, so that random objects reach deep into
/// the decoders instead of stopping at the first unknown field.
const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "labels",
    "annotations",
    "spec",
    "status",
    "containers",
    "initContainers",
    "image",
    "ports",
    "containerPort",
    "protocol",
    "env",
    "value",
    "valueFrom",
    "secretKeyRef",
    "configMapKeyRef",
    "key",
    "volumes",
    "secret",
    "secretName",
    "configMap",
    "emptyDir",
    "hostPath",
    "path",
    "replicas",
    "selector",
    "matchLabels",
    "matchExpressions",
    "operator",
    "values",
    "template",
    "strategy",
    "type",
    "rollingUpdate",
    "maxSurge",
    "maxUnavailable",
    "schedule",
    "jobTemplate",
    "backoffLimit",
    "completions",
    "parallelism",
    "restartPolicy",
    "nodeName",
    "nodeSelector",
    "tolerations",
    "effect",
    "taints",
    "resources",
    "requests",
    "limits",
    "cpu",
    "memory",
    "clusterIP",
    "clusterIPs",
    "targetPort",
    "nodePort",
    "port",
    "externalName",
    "rules",
    "host",
    "http",
    "paths",
    "pathType",
    "backend",
    "service",
    "number",
    "tls",
    "hosts",
    "data",
    "stringData",
    "verbs",
    "apiGroups",
    "resourceNames",
    "subjects",
    "roleRef",
    "hostAliases",
    "ip",
    "hostnames",
    "podCIDR",
    "unschedulable",
    "priority",
    "priorityClassName",
    "dnsPolicy",
    "dnsConfig",
    "nameservers",
    "readinessProbe",
    "httpGet",
    "exec",
    "command",
    "args",
    "periodSeconds",
    "minSize",
    "maxSize",
    "ownerReferences",
    "uid",
    "finalizers",
    "generateName",
    "controller",
    "parameters",
    "endpoints",
    "addresses",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1000i64..1000).prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![
            "[a-z0-9.-]{0,12}",
            "[ -~]{0,20}",
            Just("10.96.0.10".to_string()),
            Just("100m".to_string()),
            Just("*/5 * * * *".to_string()),
            Just("TCP".to_string()),
            Just("Always".to_string()),
            Just("/".to_string()),
            Just("Prefix".to_string()),
            "\\PC{0,8}",
        ]
        .prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|kvs| {
                Value::Object(
                    kvs.into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

fn kind() -> impl Strategy<Value = &'static ResourceInfo> {
    prop::sample::select(RESOURCES.to_vec())
}

/// A plausible manifest of `info`: its apiVersion and kind, a valid name,
/// and random contents.
fn manifest(info: &'static ResourceInfo, body: Value) -> Value {
    let mut m = match body {
        Value::Object(m) => m,
        other => {
            let mut m = Map::new();
            m.insert("spec".into(), other);
            m
        }
    };
    m.insert("apiVersion".into(), json!(info.api_version()));
    m.insert("kind".into(), json!(info.kind));
    let meta = m.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    if let Value::Object(meta) = meta {
        meta.insert("name".into(), json!("x"));
        if info.namespaced {
            meta.insert("namespace".into(), json!("default"));
        } else {
            meta.remove("namespace");
        }
    }
    Value::Object(m)
}

fn check(info: &'static ResourceInfo, v: Value) -> Result<(), TestCaseError> {
    // The quick decoding answers exactly as the one that tracks every field.
    let quick = admit(info, v.clone());
    let tracked = admit_tracked(info, v.clone());
    prop_assert_eq!(
        format!("{quick:?}"),
        format!("{tracked:?}"),
        "{}: the quick and the tracked admission differ on {}",
        info.kind,
        v
    );
    match quick {
        Ok(a) => {
            let again = admit(info, a.object.clone()).map_err(|e| {
                TestCaseError::fail(format!(
                    "{}: an admitted object is refused when admitted again: {e:?}\n{}",
                    info.kind, a.object
                ))
            })?;
            prop_assert_eq!(
                &again.object,
                &a.object,
                "{}: admitting again changed the object",
                info.kind
            );
        }
        Err(errs) => {
            prop_assert!(!errs.is_empty(), "{}: refused without a reason", info.kind);
            for e in &errs {
                prop_assert!(
                    !e.to_string().trim().is_empty(),
                    "{}: an empty error",
                    info.kind
                );
            }
        }
    }
    Ok(())
}

proptest! {
    // No regression files: a failure prints its input, and a case saved
    // from a deliberately broken build would be kept and re-run forever.
    #![proptest_config(ProptestConfig {
        cases: 10_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Any JSON at all, as any kind.
    #[test]
    fn any_json_as_any_kind_is_answered(info in kind(), v in json_value()) {
        check(info, v)?;
    }

    /// Manifests with the right kind and a name, and random contents: these
    /// get past the envelope into the kinds' own decoders and validation.
    #[test]
    fn random_manifests_are_answered_and_admission_is_stable(info in kind(), body in json_value()) {
        check(info, manifest(info, body))?;
    }
}
