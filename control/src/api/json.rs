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

/// The bytes of a stored object (`stored`, which has no resourceVersion)
/// with `"resourceVersion":"rev"` spliced in as the first member of its
/// top-level `metadata`: what serializing the object with its
/// resourceVersion gives, but for the order of `metadata`'s members, and
/// without serializing it again. None when `stored` is not a JSON object
/// with a top-level `metadata` object (named without escapes).
pub(crate) fn splice_rv(stored: &[u8], rev: i64) -> Option<Vec<u8>> {
    let b = stored;
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_ws(b, i);
        if b.get(i) != Some(&b'"') {
            return None; // `}` (no metadata) or not JSON
        }
        let key_end = string_end(b, i)?;
        let key = &b[i + 1..key_end - 1];
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        if key == b"metadata" {
            if b.get(i) != Some(&b'{') {
                return None;
            }
            let at = i + 1;
            let empty = b.get(skip_ws(b, at)) == Some(&b'}');
            let member = format!(
                "\"resourceVersion\":\"{rev}\"{}",
                if empty { "" } else { "," }
            );
            let mut out = Vec::with_capacity(b.len() + member.len());
            out.extend_from_slice(&b[..at]);
            out.extend_from_slice(member.as_bytes());
            out.extend_from_slice(&b[at..]);
            return Some(out);
        }
        i = skip_ws(b, value_end(b, i)?);
        match b.get(i) {
            Some(b',') => i += 1,
            _ => return None,
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b
        .get(i)
        .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
    {
        i += 1;
    }
    i
}

/// The index after the string that starts (with its quote) at `i`.
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    loop {
        match b.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// The index after the JSON value that starts at `i`.
fn value_end(b: &[u8], mut i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            loop {
                match b.get(i)? {
                    b'"' => {
                        i = string_end(b, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            while b
                .get(i)
                .is_some_and(|c| !matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
            {
                i += 1;
            }
            Some(i)
        }
    }
}

/// Whether `stored` decodes as a JSON object whose one `metadata` member is
/// an object without a `resourceVersion`: then [`splice_rv`] on it gives
/// what [`served`] gives by decoding it. Checked by walking the JSON with
/// the checks decoding makes (UTF-8, escapes and surrogates, numbers in
/// range, nesting depth) but building nothing.
fn spliceable(stored: &[u8]) -> bool {
    let mut de = serde_json::Deserializer::from_slice(stored);
    let ok = serde::Deserializer::deserialize_any(&mut de, check::Top).unwrap_or(false);
    ok && de.end().is_ok()
}

/// The visitors behind [`spliceable`]. Every value goes through
/// `deserialize_any`, as `Value`'s decoding does (the ignoring path serde
/// offers skips strings' UTF-8 and numbers' range).
mod check {
    use std::fmt;

    use serde::de::{DeserializeSeed, Deserializer, Error, MapAccess, SeqAccess, Visitor};

    /// Any JSON value: accepted if it decodes, nothing kept.
    #[derive(Clone, Copy)]
    pub(super) struct Any;

    impl<'de> DeserializeSeed<'de> for Any {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Any {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E: Error>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E: Error>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E: Error>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E: Error>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E: Error>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E: Error>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_none<E: Error>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(Any)?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while map.next_key_seed(Any)?.is_some() {
                map.next_value_seed(Any)?;
            }
            Ok(())
        }
    }

    /// A member's name, compared with one it may be.
    struct Named(&'static str);

    impl<'de> DeserializeSeed<'de> for Named {
        type Value = bool;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            d.deserialize_str(self)
        }
    }

    impl<'de> Visitor<'de> for Named {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a member's name")
        }
        fn visit_str<E: Error>(self, s: &str) -> Result<bool, E> {
            Ok(s == self.0)
        }
    }

    /// The top level: true for an object with one `metadata` member, an
    /// object without a `resourceVersion`. Anything else is an error here
    /// (the bytes go the long way, decoded, whether they are JSON or not).
    pub(super) struct Top;

    impl<'de> Visitor<'de> for Top {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            let mut metadata = 0;
            let mut fits = true;
            while let Some(is_metadata) = map.next_key_seed(Named("metadata"))? {
                if is_metadata {
                    metadata += 1;
                    fits &= map.next_value_seed(Meta)?;
                } else {
                    map.next_value_seed(Any)?;
                }
            }
            Ok(fits && metadata == 1)
        }
    }

    /// `metadata`'s value: true for an object without a `resourceVersion`;
    /// anything else is an error, as at the top.
    struct Meta;

    impl<'de> DeserializeSeed<'de> for Meta {
        type Value = bool;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Meta {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("metadata")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            let mut fits = true;
            while let Some(is_rv) = map.next_key_seed(Named("resourceVersion"))? {
                fits &= !is_rv;
                map.next_value_seed(Any)?;
            }
            Ok(fits)
        }
    }
}

/// A stored object's bytes as served, with the resourceVersion `rev`, and
/// the object if making them decoded it. Bytes that [`spliceable`] passes
/// get the resourceVersion spliced in and are not decoded (None); any other
/// form goes the long way, [`served`].
pub(crate) fn served_bytes(stored: &[u8], rev: i64) -> Result<(Vec<u8>, Option<Value>), String> {
    if spliceable(stored) {
        if let Some(bytes) = splice_rv(stored, rev) {
            return Ok((bytes, None));
        }
    }
    served(stored, rev).map(|(v, bytes)| (bytes, Some(v)))
}

/// An object read from the store and its bytes as served, both with the
/// resourceVersion `rev`: decoded, given it, and serialized again (the long
/// way of [`served_bytes`], for stored forms that splicing does not fit).
pub(crate) fn served(stored: &[u8], rev: i64) -> Result<(Value, Vec<u8>), String> {
    let v = with_rv(
        serde_json::from_slice(stored).map_err(|e| e.to_string())?,
        rev,
    );
    let bytes = serde_json::to_vec(&v).map_err(|e| e.to_string())?;
    Ok((v, bytes))
}

/// A stored object, with its resourceVersion (the key's mod revision).
pub(crate) fn decode(kv: &Kv) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(&kv.value).map_err(|e| not_json(&kv.key, e))?;
    Ok(with_rv(v, kv.mod_revision))
}

/// The error for a stored value under `key` that does not decode.
pub(crate) fn not_json(key: &[u8], e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!(
        "stored object {} is not valid JSON: {e}",
        String::from_utf8_lossy(key)
    ))
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

    /// The spliced bytes are the object with its resourceVersion, whatever
    /// comes before `metadata` and whatever `metadata` holds.
    #[test]
    fn splice_rv_gives_the_object_with_its_resource_version() {
        let objects = [
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "labels": {"x": "y"}}, "spec": {"template": {"metadata": {"name": "inner"}}}}),
            json!({"metadata": {}}),
            json!({"a": "\"metadata\":{", "b": ["}", {"metadata": {"q": 1}}], "c": null, "d": 1.5e3, "e": true, "metadata": {"name": "n\\\"x"}}),
            json!({"aaa": {"metadata": {"deep": [1, 2, {"x": "}]"}]}}, "metadata": {"uid": "u"}, "zzz": 0}),
        ];
        for o in objects {
            let stored = serde_json::to_vec(&o).expect("serialize");
            let spliced = splice_rv(&stored, 42).expect("a top-level metadata object");
            let back: Value = serde_json::from_slice(&spliced).expect("valid JSON");
            assert_eq!(
                back,
                with_rv(o.clone(), 42),
                "{}",
                String::from_utf8_lossy(&spliced)
            );
            // Pretty-printed (stored through the etcd API by hand) too.
            let pretty = serde_json::to_vec_pretty(&o).expect("serialize");
            let back: Value =
                serde_json::from_slice(&splice_rv(&pretty, 7).expect("metadata")).expect("JSON");
            assert_eq!(back, with_rv(o, 7));
        }
    }

    #[test]
    fn splice_rv_refuses_what_it_cannot_place() {
        for stored in [
            &br#"{"kind":"Pod"}"#[..],
            br#"{"metadata":"x"}"#,
            br#"{"spec":{"metadata":{}}}"#,
            br#"[1,2]"#,
            br#"{"meta\u0064ata":{}}"#,
            br#"{"metadata""#,
            br#"{"a":{"#,
            b"",
        ] {
            assert_eq!(
                splice_rv(stored, 1),
                None,
                "{}",
                String::from_utf8_lossy(stored)
            );
        }
    }

    /// A stored form with `metadata` twice (written through the etcd API):
    /// a decoder keeps the last, so the resourceVersion must be in the last
    /// one served. Splicing would put it in the first.
    #[test]
    fn served_bytes_of_a_doubled_metadata_carry_the_resource_version_a_decoder_keeps() {
        let stored = br#"{"metadata":{"name":"a"},"metadata":{"name":"b"}}"#;
        let (bytes, object) = served_bytes(stored, 9).expect("served");
        let expected = json!({"metadata": {"name": "b", "resourceVersion": "9"}});
        assert_eq!(
            serde_json::from_slice::<Value>(&bytes).expect("JSON"),
            expected
        );
        assert_eq!(object, Some(expected));
    }

    #[test]
    fn served_reserializes_a_stored_form_that_has_a_resource_version() {
        let stored = br#"{"metadata":{"name":"a","resourceVersion":"3"}}"#;
        let (v, bytes) = served(stored, 9).expect("served");
        assert_eq!(
            v,
            json!({"metadata": {"name": "a", "resourceVersion": "9"}})
        );
        assert_eq!(serde_json::from_slice::<Value>(&bytes).expect("JSON"), v);
        let (v, bytes) = served(br#"{"metadata":{"name":"a"}}"#, 9).expect("served");
        assert_eq!(serde_json::from_slice::<Value>(&bytes).expect("JSON"), v);
        assert!(served(b"{", 1).is_err());
    }
}
