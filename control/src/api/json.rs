//! Small helpers on objects as JSON values, shared by the operations.

use bytes::Bytes;
use flotilla_objects::api::ApiError;
use serde_json::{json, Map, Value};

use crate::store::Kv;

pub(crate) fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// The object's metadata, created if missing. Every caller has checked that
/// `v` is an object; anything else is replaced by one.
pub(crate) fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = json!({});
    }
    let md = v
        .as_object_mut()
        .map(|o| o.entry("metadata").or_insert_with(|| json!({})));
    match md {
        Some(m) => {
            if !m.is_object() {
                *m = json!({});
            }
            match m.as_object_mut() {
                Some(m) => m,
                None => unreachable!("metadata was just made an object"),
            }
        }
        None => unreachable!("v was just made an object"),
    }
}

/// Set the object's status (none, or null: remove it).
pub(crate) fn set_status(v: &mut Value, status: Option<&Value>) {
    if let Some(o) = v.as_object_mut() {
        match status {
            Some(s) if !s.is_null() => {
                o.insert("status".into(), s.clone());
            }
            _ => {
                o.remove("status");
            }
        }
    }
}

pub(crate) fn finalizers(v: &Value) -> Vec<String> {
    v.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn set_finalizers(v: &mut Value, f: &[String]) {
    let m = meta_mut(v);
    if f.is_empty() {
        m.remove("finalizers");
    } else {
        m.insert("finalizers".into(), json!(f));
    }
}

pub(crate) fn is_terminating(v: &Value) -> bool {
    v.pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
}

/// The object as stored: without resourceVersion.
pub(crate) fn strip_rv(v: &mut Value) {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
}

pub fn with_rv(mut v: Value, rev: i64) -> Value {
    if v.is_object() {
        meta_mut(&mut v).insert("resourceVersion".into(), Value::String(rev.to_string()));
    }
    v
}

/// A stored object, with its resourceVersion (the key's mod revision).
pub(crate) fn decode(kv: &Kv) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(&kv.value).map_err(|e| {
        ApiError::internal(format!(
            "stored object {} is not valid JSON: {e}",
            String::from_utf8_lossy(&kv.key)
        ))
    })?;
    Ok(with_rv(v, kv.mod_revision))
}

pub(crate) fn to_bytes(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// Two stored forms are the same object (resourceVersion aside).
pub(crate) fn same(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    let meta_eq = |x: Option<&Value>, y: Option<&Value>| match (
        x.and_then(Value::as_object),
        y.and_then(Value::as_object),
    ) {
        (Some(x), Some(y)) => {
            let rest = |m: &Map<String, Value>| {
                m.iter()
                    .filter(|(k, _)| k.as_str() != "resourceVersion")
                    .count()
            };
            rest(x) == rest(y)
                && x.iter()
                    .filter(|(k, _)| k.as_str() != "resourceVersion")
                    .all(|(k, v)| y.get(k) == Some(v))
        }
        _ => x == y,
    };
    a.len() == b.len()
        && a.iter().all(|(k, v)| {
            if k == "metadata" {
                meta_eq(Some(v), b.get(k))
            } else {
                b.get(k) == Some(v)
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_ignores_only_the_resource_version() {
        let a = json!({"metadata": {"name": "a", "resourceVersion": "3"}, "data": {"k": "v"}});
        let b = json!({"metadata": {"name": "a"}, "data": {"k": "v"}});
        assert!(same(&a, &b));
        let c = json!({"metadata": {"name": "a", "labels": {"x": "y"}}, "data": {"k": "v"}});
        assert!(!same(&a, &c));
        let d = json!({"metadata": {"name": "a"}, "data": {"k": "w"}});
        assert!(!same(&b, &d));
    }
}
