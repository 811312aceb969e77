//! Strategic merge patch, as kubectl applies it to the built-in kinds: a
//! JSON merge patch, except that some lists are merged element by element,
//! keyed by a field of their elements (containers by `name`, a container's
//! ports by `containerPort`, a service's ports by `port`, ...), and that
//! `$patch: delete|replace`, `$retainKeys` and
//! `$deleteFromPrimitiveList/FIELD` directives are honoured
//! (`$setElementOrder/FIELD` is accepted and ignored: merged lists keep the
//! live order, new elements last). Lists with no merge key are replaced whole.

use serde_json::{Map, Value};

/// How a list at some field path merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListMerge {
    /// Elements are objects keyed by this field.
    Keyed(&'static str),
    /// Elements are scalars, merged as a set (metadata.finalizers).
    Set,
}

/// The merge strategy of the list at `path` (object field names from the
/// root, list positions left out) in an object of `kind`, as the Kubernetes
/// types' `patchStrategy:"merge"` tags say.
fn list_merge(kind: &str, path: &[String]) -> Option<ListMerge> {
    let last = path.last()?.as_str();
    let parent = path.len().checked_sub(2).map(|i| path[i].as_str());
    let in_container = matches!(
        parent,
        Some("containers" | "initContainers" | "ephemeralContainers")
    );
    let keyed = match (parent, last) {
        (Some("spec"), "containers" | "initContainers" | "ephemeralContainers") => "name",
        (Some("spec"), "volumes" | "imagePullSecrets") => "name",
        (Some("spec"), "hostAliases") => "ip",
        (Some("spec"), "topologySpreadConstraints") => "topologyKey",
        (Some("spec"), "ports") if kind == "Service" && path.len() == 2 => "port",
        (_, "env") if in_container => "name",
        (_, "ports") if in_container => "containerPort",
        (_, "volumeMounts") if in_container => "mountPath",
        (_, "volumeDevices") if in_container => "devicePath",
        (Some("metadata"), "ownerReferences") => "uid",
        (Some("metadata"), "finalizers") => return Some(ListMerge::Set),
        (Some("status"), "conditions") => "type",
        _ => return None,
    };
    Some(ListMerge::Keyed(keyed))
}

/// A bad patch (a directive used wrongly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchError(pub String);

impl std::fmt::Display for PatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PatchError {}

/// Apply strategic merge patch `patch` to `target`, an object of `kind`.
pub fn apply(kind: &str, target: &Value, patch: &Value) -> Result<Value, PatchError> {
    if !patch.is_object() {
        return Err(PatchError(
            "a strategic merge patch must be an object".to_string(),
        ));
    }
    let mut path = Vec::new();
    Ok(merge_value(kind, &mut path, Some(target), patch)?.unwrap_or(Value::Null))
}

/// The merge of `patch` onto `orig` at `path`; None when the patch deletes it.
fn merge_value(
    kind: &str,
    path: &mut Vec<String>,
    orig: Option<&Value>,
    patch: &Value,
) -> Result<Option<Value>, PatchError> {
    match patch {
        Value::Object(p) => {
            let empty = Map::new();
            let o = match orig {
                Some(Value::Object(o)) => o,
                _ => &empty,
            };
            merge_map(kind, path, o, p)
        }
        Value::Array(p) => {
            let merged = match (orig, list_merge(kind, path)) {
                (Some(Value::Array(o)), Some(m)) => merge_list(kind, path, o, p, m)?,
                (_, Some(m)) => merge_list(kind, path, &[], p, m)?,
                (_, None) => p.clone(),
            };
            Ok(Some(Value::Array(merged)))
        }
        other => Ok(Some(other.clone())),
    }
}

fn directive(m: &Map<String, Value>) -> Result<Option<&str>, PatchError> {
    match m.get("$patch") {
        None => Ok(None),
        Some(Value::String(s)) if matches!(s.as_str(), "delete" | "replace" | "merge") => {
            Ok(Some(s.as_str()))
        }
        Some(v) => Err(PatchError(format!(
            "unknown $patch directive {v} (use delete, replace or merge)"
        ))),
    }
}

fn merge_map(
    kind: &str,
    path: &mut Vec<String>,
    orig: &Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<Option<Value>, PatchError> {
    let mut out = match directive(patch)? {
        Some("delete") => return Ok(None),
        Some("replace") => Map::new(),
        _ => orig.clone(),
    };
    // Lists of scalars to take values out of, applied after the merge.
    let mut delete_from: Vec<(&str, &Value)> = Vec::new();
    for (k, v) in patch {
        if k == "$patch" || k.starts_with("$setElementOrder/") || k == "$retainKeys" {
            // ($setElementOrder only orders lists; $retainKeys is applied below.)
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            delete_from.push((field, v));
            continue;
        }
        if k.starts_with('$') {
            return Err(PatchError(format!("unknown directive {k:?} in the patch")));
        }
        if v.is_null() {
            out.remove(k);
            continue;
        }
        path.push(k.clone());
        let merged = merge_value(kind, path, orig.get(k), v);
        path.pop();
        match merged? {
            Some(m) => {
                out.insert(k.clone(), m);
            }
            None => {
                out.remove(k);
            }
        }
    }
    for (field, values) in delete_from {
        let Value::Array(values) = values else {
            return Err(PatchError(format!(
                "$deleteFromPrimitiveList/{field} must be a list"
            )));
        };
        if let Some(Value::Array(list)) = out.get_mut(field) {
            list.retain(|x| !values.contains(x));
        }
    }
    if let Some(keep) = patch.get("$retainKeys") {
        let Some(keep) = keep.as_array() else {
            return Err(PatchError(
                "$retainKeys must be a list of field names".to_string(),
            ));
        };
        out.retain(|k, _| keep.iter().any(|x| x.as_str() == Some(k.as_str())));
    }
    Ok(Some(Value::Object(out)))
}

fn merge_list(
    kind: &str,
    path: &mut Vec<String>,
    orig: &[Value],
    patch: &[Value],
    how: ListMerge,
) -> Result<Vec<Value>, PatchError> {
    // `{"$patch": "replace"}` in the list: the rest of the list replaces it.
    let replace = patch.iter().any(|e| {
        e.as_object()
            .is_some_and(|m| m.len() == 1 && m.get("$patch") == Some(&Value::from("replace")))
    });
    let items: Vec<&Value> = patch
        .iter()
        .filter(|e| {
            !e.as_object()
                .is_some_and(|m| m.len() == 1 && m.contains_key("$patch"))
        })
        .collect();
    let mut out: Vec<Value> = if replace { Vec::new() } else { orig.to_vec() };
    let key = match how {
        ListMerge::Set => {
            for v in items {
                if !out.contains(v) {
                    out.push(v.clone());
                }
            }
            return Ok(out);
        }
        ListMerge::Keyed(key) => key,
    };
    for item in items {
        let Some(m) = item.as_object() else {
            return Err(PatchError(format!(
                "the elements of {} must be objects keyed by {key:?}",
                path.join(".")
            )));
        };
        let Some(id) = m.get(key) else {
            return Err(PatchError(format!(
                "an element of {} has no merge key {key:?}",
                path.join(".")
            )));
        };
        let at = out.iter().position(|e| e.get(key) == Some(id));
        if directive(m)? == Some("delete") {
            if let Some(i) = at {
                out.remove(i);
            }
            continue;
        }
        match at {
            Some(i) => {
                let merged = merge_value(kind, path, Some(&out[i]), item)?;
                match merged {
                    Some(v) => out[i] = v,
                    None => {
                        out.remove(i);
                    }
                }
            }
            None => {
                if let Some(v) = merge_value(kind, path, None, item)? {
                    out.push(v);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy() -> Value {
        json!({"kind": "Deployment", "metadata": {"name": "web", "finalizers": ["a"]},
            "spec": {"replicas": 1, "template": {"spec": {
                "containers": [
                    {"name": "web", "image": "nginx:1",
                     "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                     "ports": [{"containerPort": 80, "name": "http"}]},
                    {"name": "side", "image": "busybox"}],
                "volumes": [{"name": "data", "emptyDir": {}}],
                "tolerations": [{"key": "x", "operator": "Exists"}]}}}})
    }

    #[test]
    fn containers_merge_by_name_and_keep_their_other_fields() {
        let p = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:2", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]},
            {"name": "new", "image": "redis"}]}}}});
        let out = apply("Deployment", &deploy(), &p).unwrap();
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs.as_array().unwrap().len(), 3);
        assert_eq!(cs[0]["image"], "nginx:2");
        assert_eq!(cs[0]["ports"][0]["containerPort"], 80);
        assert_eq!(
            cs[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}])
        );
        assert_eq!(cs[1]["name"], "side");
        assert_eq!(cs[2], json!({"name": "new", "image": "redis"}));
        assert_eq!(out["spec"]["replicas"], 1);
    }

    #[test]
    fn patch_delete_removes_an_element_and_null_removes_a_field() {
        let p = json!({"spec": {"template": {"spec": {
            "containers": [{"name": "side", "$patch": "delete"},
                           {"name": "web", "env": [{"name": "A", "$patch": "delete"}]}],
            "volumes": null}}}});
        let out = apply("Deployment", &deploy(), &p).unwrap();
        let spec = &out["spec"]["template"]["spec"];
        assert_eq!(spec["containers"].as_array().unwrap().len(), 1);
        assert_eq!(
            spec["containers"][0]["env"],
            json!([{"name": "B", "value": "2"}])
        );
        assert!(spec.get("volumes").is_none());
    }

    #[test]
    fn lists_without_a_merge_key_are_replaced_and_replace_directive_replaces() {
        let p = json!({"spec": {"template": {"spec": {
            "tolerations": [{"key": "y", "operator": "Exists"}],
            "volumes": [{"$patch": "replace"}, {"name": "cache", "emptyDir": {}}]}}}});
        let out = apply("Deployment", &deploy(), &p).unwrap();
        let spec = &out["spec"]["template"]["spec"];
        assert_eq!(
            spec["tolerations"],
            json!([{"key": "y", "operator": "Exists"}])
        );
        assert_eq!(spec["volumes"], json!([{"name": "cache", "emptyDir": {}}]));
    }

    #[test]
    fn service_ports_merge_by_port_and_finalizers_as_a_set() {
        let svc = json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"ports": [
            {"port": 80, "targetPort": 8080}, {"port": 443, "targetPort": 8443}]}});
        let p = json!({"metadata": {"finalizers": ["c", "a"], "$deleteFromPrimitiveList/finalizers": ["b"]},
            "spec": {"ports": [{"port": 443, "targetPort": 9443}, {"port": 53, "protocol": "UDP"}]}});
        let out = apply("Service", &svc, &p).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "c"]));
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "targetPort": 8080}, {"port": 443, "targetPort": 9443},
                   {"port": 53, "protocol": "UDP"}])
        );
        // A container's ports are keyed by containerPort, not port.
        let pod = json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 1}]}]}});
        let p = json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 2}]}]}});
        let out = apply("Pod", &pod, &p).unwrap();
        assert_eq!(
            out["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 1}, {"containerPort": 2}])
        );
    }

    #[test]
    fn retain_keys_drops_the_fields_not_named() {
        let d = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let p = json!({"spec": {"strategy": {"type": "Recreate", "$retainKeys": ["type"]}}});
        let out = apply("Deployment", &d, &p).unwrap();
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        assert!(apply("Deployment", &d, &json!({"spec": {"$retainKeys": "x"}})).is_err());
    }

    #[test]
    fn bad_patches_are_named_errors() {
        assert!(apply("Pod", &json!({}), &json!([1])).is_err());
        let e = apply(
            "Deployment",
            &deploy(),
            &json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}),
        )
        .unwrap_err();
        assert_eq!(
            e.0,
            "an element of spec.template.spec.containers has no merge key \"name\""
        );
        let e = apply("Pod", &json!({}), &json!({"$patch": "nope"})).unwrap_err();
        assert!(e.0.contains("unknown $patch directive"), "{e}");
        let e = apply("Pod", &json!({}), &json!({"metadata": {"$bogus": 1}})).unwrap_err();
        assert_eq!(e.0, "unknown directive \"$bogus\" in the patch");
    }
}
