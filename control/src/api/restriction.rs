//! NodeRestriction, as Kubernetes' admission plugin of that name: what a
//! node agent may write, judged against the stored object inside the
//! read-modify-write loop (the node authorizer, `crate::auth::node`,
//! cannot see where a pod is bound or what a write changes).
//!
//! A node may create, change and delete only pods bound to it, and create
//! only its own Node and heartbeat Lease; it may not
//! change its own spec (taints, pod CIDR, unschedulable belong to the
//! masters and operators), its pool label, nor any label under
//! `node-restriction.kubernetes.io/`, which operators use to steer
//! workloads to nodes they trust.

use std::sync::Arc;

use flotilla_objects::api::{ApiError, Reason};
use flotilla_objects::nodepool::NODE_POOL_LABEL;
use flotilla_objects::registry::ResourceInfo;
use serde_json::Value;

use super::json::str_at;
use super::ApiServer;

/// The namespace of the nodes' heartbeat Leases.
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// Labels under this prefix are the operators' alone.
pub const RESTRICTED_LABEL_PREFIX: &str = "node-restriction.kubernetes.io/";

impl ApiServer {
    /// This server for a call from the agent of `node`: its writes are
    /// restricted as NodeRestriction says.
    pub fn as_node(&self, node: &str) -> ApiServer {
        let mut s = self.clone();
        s.ctx.node = Some(Arc::from(node));
        s
    }

    /// Refuse a node agent's write of `info` from `cur` (None: a create)
    /// to `new` (None: a delete) that NodeRestriction does not allow.
    pub(crate) fn restrict(
        &self,
        info: &ResourceInfo,
        cur: Option<&Value>,
        new: Option<&Value>,
    ) -> Result<(), ApiError> {
        match &self.ctx.node {
            Some(node) => node_restriction(node, info, cur, new),
            None => Ok(()),
        }
    }
}

fn forbidden(info: &ResourceInfo, obj: &Value, why: String) -> ApiError {
    ApiError::new(
        Reason::Forbidden,
        format!(
            "{} \"{}\" is forbidden: {why}",
            info.qualified_name(),
            str_at(obj, "/metadata/name")
        ),
    )
}

fn labels(v: &Value) -> impl Iterator<Item = (&str, &Value)> {
    v.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|m| m.iter().map(|(k, v)| (k.as_str(), v)))
}

fn restricted(key: &str) -> bool {
    key.starts_with(RESTRICTED_LABEL_PREFIX)
}

/// NodeRestriction for a write by the agent of `node`.
pub fn node_restriction(
    node: &str,
    info: &ResourceInfo,
    cur: Option<&Value>,
    new: Option<&Value>,
) -> Result<(), ApiError> {
    let Some(obj) = new.or(cur) else {
        return Ok(());
    };
    match info.kind {
        "Pod" => {
            for (v, what) in [(cur, "change or delete"), (new, "create or change")] {
                let Some(v) = v else { continue };
                let bound = str_at(v, "/spec/nodeName");
                if bound != node {
                    let to = if bound.is_empty() {
                        "it is not bound to a node".to_string()
                    } else {
                        format!("it is bound to node \"{bound}\"")
                    };
                    return Err(forbidden(
                        info,
                        obj,
                        format!("node \"{node}\" can only {what} pods bound to it, and {to}"),
                    ));
                }
            }
            Ok(())
        }
        "Node" | "Lease" if str_at(obj, "/metadata/name") != node => {
            if info.kind == "Lease" && str_at(obj, "/metadata/namespace") != NODE_LEASE_NAMESPACE {
                return Ok(());
            }
            Err(forbidden(
                info,
                obj,
                format!("node \"{node}\" may only write its own {}", info.kind),
            ))
        }
        "Node" => {
            let Some(new) = new else { return Ok(()) };
            let Some(cur) = cur else {
                // Registering: any labels but the operators' own.
                return match labels(new).find(|(k, _)| restricted(k)) {
                    Some((k, _)) => Err(forbidden(
                        info,
                        new,
                        format!("node \"{node}\" may not set the label {k} (labels under {RESTRICTED_LABEL_PREFIX} are the operators')"),
                    )),
                    None => Ok(()),
                };
            };
            if cur.get("spec") != new.get("spec") {
                return Err(forbidden(
                    info,
                    new,
                    format!("node \"{node}\" may not change its spec (taints, pod CIDR and unschedulable are the masters' and the operators')"),
                ));
            }
            let before: Vec<_> = labels(cur)
                .filter(|(k, _)| restricted(k) || *k == NODE_POOL_LABEL)
                .collect();
            let after: Vec<_> = labels(new)
                .filter(|(k, _)| restricted(k) || *k == NODE_POOL_LABEL)
                .collect();
            if before != after {
                return Err(forbidden(
                    info,
                    new,
                    format!("node \"{node}\" may not change its {NODE_POOL_LABEL} label nor labels under {RESTRICTED_LABEL_PREFIX}"),
                ));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_objects::registry;
    use serde_json::json;

    fn pod(node: &str) -> Value {
        json!({"metadata": {"namespace": "web", "name": "p"}, "spec": {"nodeName": node}})
    }

    fn node(labels: Value, spec: Value) -> Value {
        json!({"metadata": {"name": "n1", "labels": labels}, "spec": spec})
    }

    fn refused(r: Result<(), ApiError>, says: &str) {
        match r {
            Err(e) => {
                assert_eq!(e.reason, Reason::Forbidden, "{e}");
                assert!(e.message.contains(says), "{}", e.message);
            }
            Ok(()) => panic!("allowed; wanted a refusal saying {says:?}"),
        }
    }

    #[test]
    fn a_node_writes_only_pods_bound_to_it() {
        let p = &registry::POD;
        assert!(node_restriction("n1", p, None, Some(&pod("n1"))).is_ok());
        assert!(node_restriction("n1", p, Some(&pod("n1")), Some(&pod("n1"))).is_ok());
        assert!(node_restriction("n1", p, Some(&pod("n1")), None).is_ok());
        refused(
            node_restriction("n1", p, None, Some(&pod("n2"))),
            "bound to node \"n2\"",
        );
        refused(
            node_restriction("n1", p, Some(&pod("n2")), None),
            "can only change or delete pods bound to it",
        );
        refused(
            node_restriction("n1", p, Some(&pod("")), Some(&pod(""))),
            "not bound to a node",
        );
    }

    #[test]
    fn a_node_keeps_its_spec_pool_and_restricted_labels() {
        let n = &registry::NODE;
        let base = node(
            json!({"flotilla.dev/nodepool": "default", "node-restriction.kubernetes.io/tier": "a"}),
            json!({"podCIDR": "10.244.1.0/24"}),
        );
        // Its own labels otherwise, and its status, are the node's.
        let mut more = base.clone();
        more["metadata"]["labels"]["kubernetes.io/hostname"] = json!("n1");
        more["status"] = json!({"phase": "Running"});
        assert!(node_restriction("n1", n, Some(&base), Some(&more)).is_ok());
        let mut taint = base.clone();
        taint["spec"]["taints"] = json!([{"key": "k", "effect": "NoSchedule"}]);
        refused(
            node_restriction("n1", n, Some(&base), Some(&taint)),
            "may not change its spec",
        );
        let mut cidr = base.clone();
        cidr["spec"]["podCIDR"] = json!("10.244.9.0/24");
        refused(
            node_restriction("n1", n, Some(&base), Some(&cidr)),
            "may not change its spec",
        );
        for (k, v) in [
            ("flotilla.dev/nodepool", json!("gpu")),
            ("node-restriction.kubernetes.io/tier", json!("b")),
            ("node-restriction.kubernetes.io/new", json!("x")),
        ] {
            let mut l = base.clone();
            l["metadata"]["labels"][k] = v;
            refused(
                node_restriction("n1", n, Some(&base), Some(&l)),
                "may not change its",
            );
        }
        let mut gone = base.clone();
        gone["metadata"]["labels"]
            .as_object_mut()
            .expect("labels")
            .remove("node-restriction.kubernetes.io/tier");
        refused(
            node_restriction("n1", n, Some(&base), Some(&gone)),
            "may not change its",
        );
        // Registering with the operators' label is refused; without, fine.
        refused(
            node_restriction("n1", n, None, Some(&base)),
            "may not set the label",
        );
        assert!(node_restriction(
            "n1",
            n,
            None,
            Some(&node(json!({"flotilla.dev/nodepool": "gpu"}), json!({})))
        )
        .is_ok());
        // Only its own Node, and its own Lease among the heartbeats.
        let other = node(json!({}), json!({}));
        let mut other = other;
        other["metadata"]["name"] = json!("n2");
        refused(
            node_restriction("n1", n, None, Some(&other)),
            "may only write its own Node",
        );
        let lease = |name: &str, ns: &str| json!({"metadata": {"name": name, "namespace": ns}});
        let l = &registry::LEASE;
        assert!(node_restriction("n1", l, None, Some(&lease("n1", NODE_LEASE_NAMESPACE))).is_ok());
        refused(
            node_restriction("n1", l, None, Some(&lease("n2", NODE_LEASE_NAMESPACE))),
            "may only write its own Lease",
        );
        assert!(node_restriction("n1", l, None, Some(&lease("lock", "web"))).is_ok());
        // Other kinds are not NodeRestriction's.
        assert!(node_restriction("n1", &registry::SERVICE, None, Some(&pod("n2"))).is_ok());
    }
}
