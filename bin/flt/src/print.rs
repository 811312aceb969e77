//! Output formats: how `flt` prints cluster objects, the way kubectl does.
//!
//! Objects are plain [`serde_json::Value`]s in Kubernetes' JSON form. This
//! module turns them into `kubectl get` tables ([`table`], or [`header`] and
//! [`row`] with [`align`] for watch output), `kubectl describe` text
//! ([`describe`]), and `-o yaml`, `-o json` and `-o name` output
//! ([`to_yaml`], [`to_json`], [`name_line`]). Times are shown relative to the
//! `now` the caller passes, so output is reproducible.

mod describe;
mod pool;
mod table;
mod tabwriter;
mod util;

#[cfg(test)]
mod tests;

use serde_json::Value;

// The public API; `flt`'s commands may not use every item yet, and a binary
// crate reports re-exports nobody uses.
#[allow(unused_imports)]
pub use describe::describe;
#[allow(unused_imports)]
pub use table::{align, header, row, table, TableOpts};
#[allow(unused_imports)]
pub use util::age;

/// A list of objects as kubectl prints it for `-o yaml` and `-o json`:
/// `{"apiVersion": "v1", "kind": "List", "items": [...], "metadata":
/// {"resourceVersion": ""}}`.
pub fn list(items: &[Value]) -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "items": items,
        "kind": "List",
        "metadata": {"resourceVersion": ""},
    })
}

/// `-o yaml`: the object as YAML, ending in a newline. A JSON array is taken
/// as a list of objects and printed as a kubectl `List` (see [`list`]).
pub fn to_yaml(v: &Value) -> String {
    let wrapped;
    let v = match v {
        Value::Array(items) => {
            wrapped = list(items);
            &wrapped
        }
        other => other,
    };
    serde_yaml::to_string(v).unwrap_or_else(|e| format!("# cannot print as YAML: {e}\n"))
}

/// `-o json`: the object as JSON indented by four spaces, as kubectl
/// prints it, ending in a newline. A JSON array is printed as a kubectl
/// `List` (see [`list`]).
pub fn to_json(v: &Value) -> String {
    let wrapped;
    let v = match v {
        Value::Array(items) => {
            wrapped = list(items);
            &wrapped
        }
        other => other,
    };
    match serde_json::to_string_pretty(v) {
        Ok(pretty) => {
            // serde_json indents by two spaces; kubectl by four. A JSON string
            // never holds a raw newline, so leading spaces are indentation.
            let mut out = String::with_capacity(pretty.len() * 2);
            for line in pretty.lines() {
                let body = line.trim_start_matches(' ');
                let depth = line.len() - body.len();
                out.extend(std::iter::repeat_n(' ', depth * 2));
                out.push_str(body);
                out.push('\n');
            }
            out
        }
        Err(e) => format!("{{\"error\": {:?}}}\n", e.to_string()),
    }
}

/// `-o name`: "deployment.apps/web" for `kind_qualified` "deployment.apps",
/// without a newline.
pub fn name_line(kind_qualified: &str, item: &Value) -> String {
    let name = item
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    format!("{kind_qualified}/{name}")
}
