//! What `flt describe nodepool` says about a pool's autoscaling: its size
//! bounds, the autoscaler's intended size, what it is doing, and why it
//! keeps nodes that look idle.

use serde_json::Value;

fn int(pool: &Value, path: &str) -> Option<i64> {
    pool.pointer(path).and_then(Value::as_i64)
}

/// "min 1, max 3, target 2 (nodes 2, 2 ready)".
pub(crate) fn size(pool: &Value) -> String {
    let target = int(pool, "/status/targetSize")
        .map(|t| t.to_string())
        .unwrap_or_else(|| "<none>".into());
    format!(
        "min {}, max {}, target {target} (nodes {}, {} ready)",
        int(pool, "/spec/minSize").unwrap_or(0),
        int(pool, "/spec/maxSize").unwrap_or(0),
        int(pool, "/status/nodes").unwrap_or(0),
        int(pool, "/status/readyNodes").unwrap_or(0),
    )
}

/// "NODE: REASON" for each node the autoscaler keeps, and the nodes it is
/// creating and deleting, as (title, lines).
pub(crate) fn activity(pool: &Value) -> Vec<(&'static str, Vec<String>)> {
    let names = |key: &str| -> Vec<String> {
        pool.pointer(&format!("/status/{key}"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|o| {
                        let name = o.get("name").and_then(Value::as_str).unwrap_or("");
                        match (
                            o.get("reason").and_then(Value::as_str),
                            o.get("since").and_then(Value::as_str),
                        ) {
                            (Some(r), _) => format!("{name}: {r}"),
                            (None, Some(s)) => format!("{name} (since {s})"),
                            (None, None) => name.to_string(),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    [
        ("Creating", names("creating")),
        ("Deleting", names("deleting")),
        ("Unneeded", names("unneeded")),
        ("Kept", names("blocked")),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .collect()
}
