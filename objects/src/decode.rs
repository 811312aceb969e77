//! Decoding JSON into a kind's type: unknown fields become warnings with
//! their full path, type errors a [`FieldError`] at the bad field.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::admit::FieldError;

/// Longest rendering of a bad value in an error.
const MAX_RENDERED: usize = 120;

/// Renders a JSON value for an error message: compact JSON, cut short.
pub(crate) fn render(v: &Value) -> String {
    let s = v.to_string();
    if s.len() <= MAX_RENDERED {
        return s;
    }
    let mut end = MAX_RENDERED;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Whether any object in `v` has a `null` member (what [`strip_nulls`]
/// removes).
fn has_null_members(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.values().any(|v| v.is_null() || has_null_members(v)),
        Value::Array(a) => a.iter().any(has_null_members),
        _ => false,
    }
}

/// Removes the `null` members of every object (Go's decoder treats them as
/// absent). Nulls inside arrays stay (and are type errors).
fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

fn ignored_path(p: &serde_ignored::Path<'_>, out: &mut String) {
    match p {
        serde_ignored::Path::Root => {}
        serde_ignored::Path::Seq { parent, index } => {
            ignored_path(parent, out);
            out.push_str(&format!("[{index}]"));
        }
        serde_ignored::Path::Map { parent, key } => {
            ignored_path(parent, out);
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(key);
        }
        serde_ignored::Path::Some { parent }
        | serde_ignored::Path::NewtypeStruct { parent }
        | serde_ignored::Path::NewtypeVariant { parent } => ignored_path(parent, out),
    }
}

/// Kubernetes' (Go's) name of the type serde expected.
fn expected_type(exp: &str) -> String {
    let exp = exp.trim();
    match exp {
        "i8" | "i16" | "i32" => "int32".to_string(),
        "i64" => "int64".to_string(),
        "u8" | "u16" | "u32" => "uint32".to_string(),
        "u64" => "uint64".to_string(),
        "f32" | "f64" => "number".to_string(),
        "a string" => "string".to_string(),
        "a boolean" => "boolean".to_string(),
        "a sequence" => "array".to_string(),
        "a map" => "object".to_string(),
        "an int32 or a string" => "int32 or string".to_string(),
        "an RFC 3339 time" => "RFC 3339 time".to_string(),
        s if s.starts_with("struct ") => "object".to_string(),
        s => s
            .strip_prefix("a ")
            .or_else(|| s.strip_prefix("an "))
            .unwrap_or(s)
            .to_string(),
    }
}

/// Decodes `value` into `T` the quick way, without tracking where it is
/// or what it skips: for a value without `null` members that decodes.
/// None: use [`decode`], which strips the nulls, names the bad field, and
/// finds the unknown ones; with [`covers`], the caller learns whether there
/// were any.
pub(crate) fn decode_plain<T: DeserializeOwned>(value: &Value) -> Option<T> {
    if has_null_members(value) {
        return None;
    }
    T::deserialize(value).ok()
}

/// Whether every member of every object in `input` is in `output` at the
/// same place (arrays element by element, of equal lengths). `output` being
/// the decoded object serialized again, which holds only the fields its
/// type knows, `input` then had no unknown field. False is no more than
/// "maybe": a known field left out when serialized (an empty map, say),
/// or reshaped by defaults, reads as missing too.
pub(crate) fn covers(output: &Value, input: &Value) -> bool {
    match (input, output) {
        (Value::Object(i), Value::Object(o)) => i
            .iter()
            .all(|(k, v)| o.get(k).is_some_and(|out| covers(out, v))),
        (Value::Array(i), Value::Array(o)) => {
            i.len() == o.len() && i.iter().zip(o).all(|(v, out)| covers(out, v))
        }
        (Value::Object(_) | Value::Array(_), _) => false,
        _ => true,
    }
}

/// Decodes `value` into `T`. Returns the warnings for unknown fields, or
/// the first type error.
pub(crate) fn decode<T: DeserializeOwned>(value: &Value) -> Result<(T, Vec<String>), FieldError> {
    // A copy only where there are nulls to strip: most objects have none,
    // and the copy of the whole tree (and its drop) came on every create.
    let value = if has_null_members(value) {
        let mut v = value.clone();
        strip_nulls(&mut v);
        std::borrow::Cow::Owned(v)
    } else {
        std::borrow::Cow::Borrowed(value)
    };
    let value: &Value = &value;
    let mut warnings = Vec::new();
    let mut on_ignored = |path: serde_ignored::Path<'_>| {
        let mut p = String::new();
        ignored_path(&path, &mut p);
        warnings.push(format!("unknown field {}", crate::admit::quote(&p)));
    };
    let result =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(value, &mut on_ignored));
    match result {
        Ok(t) => Ok((t, warnings)),
        Err(e) => {
            let mut path = String::new();
            let mut at = Some(value);
            for segment in e.path().iter() {
                match segment {
                    serde_path_to_error::Segment::Seq { index } => {
                        path.push_str(&format!("[{index}]"));
                        at = at.and_then(|v| v.get(*index));
                    }
                    serde_path_to_error::Segment::Map { key } => {
                        if !path.is_empty() {
                            path.push('.');
                        }
                        path.push_str(key);
                        at = at.and_then(|v| v.get(key));
                    }
                    serde_path_to_error::Segment::Enum { variant } => {
                        if !path.is_empty() {
                            path.push('.');
                        }
                        path.push_str(variant);
                    }
                    serde_path_to_error::Segment::Unknown => {
                        path.push_str(".?");
                        at = None;
                    }
                }
            }
            let message = e.into_inner().to_string();
            let detail = match message.rsplit_once(", expected ") {
                Some((_, exp)) => format!("expected {}", expected_type(exp)),
                None => message,
            };
            let rendered = at.map(render).unwrap_or_else(|| "null".to_string());
            Err(FieldError::type_invalid(path, rendered, detail))
        }
    }
}
