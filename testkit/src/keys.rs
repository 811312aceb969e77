//! Where the control plane stores objects: the test-side copy of
//! `flotilla_control::api::object_key` and `kind_prefix`
//! (`bin/flotilla/tests/objects.rs` checks that they agree).

/// The prefix of every object's key.
pub const KEY_PREFIX: &str = "/registry/";

/// The key of object `name` of `resource` (its plural: `pods`,
/// `clusterrolebindings`) in `namespace`: `/registry/<resource>/<ns>/<name>`;
/// `namespace` is empty for a cluster-scoped kind:
/// `/registry/<resource>/<name>`.
pub fn object_key(resource: &str, namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        format!("{KEY_PREFIX}{resource}/{name}")
    } else {
        format!("{KEY_PREFIX}{resource}/{namespace}/{name}")
    }
}

/// The prefix of the keys of `resource` in `namespace`, or of every one of
/// them when `namespace` is empty (or the kind cluster-scoped).
pub fn kind_prefix(resource: &str, namespace: &str) -> String {
    if namespace.is_empty() {
        format!("{KEY_PREFIX}{resource}/")
    } else {
        format!("{KEY_PREFIX}{resource}/{namespace}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(
            object_key("pods", "default", "web"),
            "/registry/pods/default/web"
        );
        assert_eq!(
            object_key("namespaces", "", "default"),
            "/registry/namespaces/default"
        );
        assert_eq!(kind_prefix("pods", "default"), "/registry/pods/default/");
        assert_eq!(kind_prefix("pods", ""), "/registry/pods/");
        assert!(object_key("pods", "ns", "x").starts_with(&kind_prefix("pods", "ns")));
    }
}
