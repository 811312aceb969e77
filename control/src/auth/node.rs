//! Node authorization, as Kubernetes' Node authorizer: an agent (the user
//! `system:node:<name>` in the group `system:nodes`) may read only the
//! Secrets, ConfigMaps and PersistentVolumeClaims of pods bound to its
//! node, and write only its own Node and Lease. Which pods an agent may
//! write is decided by the API server against the stored pod
//! (NodeRestriction, `crate::api::restriction`), since only the stored
//! object says where a pod is bound.
//!
//! Kubernetes keeps a graph of every pod's references for this; here the
//! rare question (an agent reads a pod's Secret when it starts the pod) is
//! answered from the store, the node's pods in the object's namespace, so
//! that pod writes, far more frequent, pay nothing for it (a graph fed by
//! a watch of all pods cost every master a decode of every pod write:
//! measured 10-15% of pod create throughput).

use flotilla_objects::api::{ApiError, ListParams, ObjectApi};
use flotilla_objects::core::Pod;
use flotilla_objects::rbac::Attributes;
use flotilla_objects::registry;
use flotilla_security::authn::Identity;

use crate::ApiServer;

/// The group of node agents, and the prefix of their user names.
pub const NODES_GROUP: &str = "system:nodes";
pub const NODE_USER_PREFIX: &str = "system:node:";

/// The namespace of the nodes' heartbeat Leases.
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// The node `who` is, when it is a node agent.
pub fn node_of(who: &Identity) -> Option<&str> {
    let name = who.user.strip_prefix(NODE_USER_PREFIX)?;
    (who.in_group(NODES_GROUP) && !name.is_empty()).then_some(name)
}

/// What the node authorizer says of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed, whatever RBAC says.
    Allow,
    /// Refused, whatever RBAC says; the reason ends the Forbidden message.
    Deny(String),
    /// Up to RBAC.
    NoOpinion,
}

/// An object a pod refers to: (resource, namespace, name).
type Ref = (&'static str, String, String);

/// The Secrets, ConfigMaps and ServiceAccount `pod` refers to: volumes,
/// the environment of every container, the account it runs as.
pub fn pod_references(pod: &Pod) -> Vec<Ref> {
    let ns = &pod.metadata.namespace;
    let mut refs: Vec<Ref> = Vec::new();
    let mut add = |resource: &'static str, name: &str| {
        let r = (resource, ns.clone(), name.to_string());
        if !name.is_empty() && !refs.contains(&r) {
            refs.push(r);
        }
    };
    add("serviceaccounts", &pod.spec.service_account_name);
    for v in &pod.spec.volumes {
        if let Some(s) = &v.secret {
            add("secrets", &s.secret_name);
        }
        if let Some(c) = &v.config_map {
            add("configmaps", &c.name);
        }
    }
    for c in pod.spec.containers.iter().chain(&pod.spec.init_containers) {
        for e in &c.env {
            let Some(from) = &e.value_from else { continue };
            if let Some(k) = &from.secret_key_ref {
                add("secrets", &k.name);
            }
            if let Some(k) = &from.config_map_key_ref {
                add("configmaps", &k.name);
            }
        }
    }
    refs
}

/// Whether one of `pods` bound to `node` refers to `resource` `name` (in
/// the pods' namespace).
pub fn related(pods: &[Pod], node: &str, resource: &str, name: &str) -> bool {
    pods.iter().filter(|p| p.spec.node_name == node).any(|p| {
        pod_references(p)
            .iter()
            .any(|(r, _, n)| *r == resource && n == name)
    })
}

/// The resources a node reads only through its pods.
const GRAPH_RESOURCES: [&str; 3] = ["secrets", "configmaps", "persistentvolumeclaims"];

/// What the node authorizer says of a request before looking at pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Decided.
    Decided(Decision),
    /// Allowed if a pod bound to the node uses the object, else refused.
    IfRelated,
}

/// The node authorizer's rules for `node` asking `a`. Node and Lease
/// writes are limited to the node's own (creates by NodeRestriction, which
/// sees the name); reads of Secrets, ConfigMaps and claims to single
/// objects its pods use.
pub fn check(node: &str, a: &Attributes) -> Check {
    // A create names no object when it is authorized; NodeRestriction
    // checks the name of a node's own Node or Lease then.
    let own = |what: &str| {
        if a.name == node || a.verb == "create" {
            Check::Decided(Decision::NoOpinion)
        } else {
            Check::Decided(Decision::Deny(format!(
                "node '{node}' may only {what} its own"
            )))
        }
    };
    match (a.api_group.as_str(), a.resource.as_str()) {
        ("", r) if GRAPH_RESOURCES.contains(&r) => {
            if a.verb != "get" || a.name.is_empty() || !a.subresource.is_empty() {
                return Check::Decided(Decision::Deny(format!(
                    "node '{node}' may only get individual {r} that its pods use"
                )));
            }
            Check::IfRelated
        }
        // A node asks for tokens of the accounts its pods run as (bound
        // to the pod: the API server checks that the pod is the node's).
        ("", "serviceaccounts") => {
            let token = a.verb == "create" && a.subresource == "token";
            let get = a.verb == "get" && a.subresource.is_empty();
            if a.name.is_empty() || !(token || get) {
                return Check::Decided(Decision::Deny(format!(
                    "node '{node}' may only get, or create tokens of, individual serviceaccounts that its pods use"
                )));
            }
            Check::IfRelated
        }
        // The masters relay these to agents; no agent needs them, and one
        // must not reach into another node's pods.
        ("", "pods") if matches!(a.subresource.as_str(), "exec" | "portforward" | "attach") => {
            Check::Decided(Decision::Deny(format!(
                "node '{node}' may not use pods/{}",
                a.subresource
            )))
        }
        ("", "nodes") if !matches!(a.verb.as_str(), "get" | "list" | "watch") => {
            own("change the Node that is")
        }
        ("coordination.k8s.io", "leases") if a.namespace == NODE_LEASE_NAMESPACE => {
            own("use the Lease that is")
        }
        _ => Check::Decided(Decision::NoOpinion),
    }
}

/// The node authorizer: [`check`], with relationships read from the
/// store (the pods of the node in the object's namespace), so that a pod
/// bound a moment ago counts and the pod write path pays nothing.
#[derive(Clone)]
pub struct NodeAuthorizer {
    api: ApiServer,
}

impl NodeAuthorizer {
    pub fn new(api: ApiServer) -> NodeAuthorizer {
        NodeAuthorizer { api }
    }

    /// The decision for `node` asking `a`.
    pub async fn decide(&self, node: &str, a: &Attributes) -> Result<Decision, ApiError> {
        match check(node, a) {
            Check::Decided(d) => Ok(d),
            Check::IfRelated => {
                let list = ObjectApi::list(
                    &self.api,
                    registry::POD.plural,
                    &a.namespace,
                    &ListParams {
                        field_selector: format!("spec.nodeName={node}"),
                        ..Default::default()
                    },
                )
                .await?;
                let pods: Vec<Pod> = list
                    .items
                    .into_iter()
                    .filter_map(|o| serde_json::from_value(o).ok())
                    .collect();
                Ok(if related(&pods, node, &a.resource, &a.name) {
                    Decision::Allow
                } else {
                    Decision::Deny(format!(
                        "no relationship found between node '{node}' and this object"
                    ))
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: &str, secret: &str, cm_env: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "web", "name": name},
            "spec": {
                "nodeName": node,
                "volumes": [{"name": "s", "secret": {"secretName": secret}}],
                "initContainers": [{"name": "i", "image": "busybox", "env": [
                    {"name": "X", "valueFrom": {"configMapKeyRef": {"name": cm_env, "key": "k"}}}
                ]}],
                "containers": [{"name": "c", "image": "busybox"}]
            }
        }))
        .expect("pod")
    }

    fn attrs(verb: &str, group: &str, resource: &str, ns: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            api_group: group.into(),
            resource: resource.into(),
            namespace: ns.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    fn denied(c: Check) -> bool {
        matches!(c, Check::Decided(Decision::Deny(_)))
    }

    #[test]
    fn a_node_reads_only_what_its_pods_use() {
        let pods = [
            pod("a", "n1", "s1", "c1"),
            pod("b", "n2", "s2", "c2"),
            pod("pending", "", "s3", "c3"),
        ];
        assert!(related(&pods, "n1", "secrets", "s1"));
        assert!(related(&pods, "n1", "configmaps", "c1"));
        for (r, n) in [
            ("secrets", "s2"),
            ("configmaps", "c2"),
            ("secrets", "s3"),
            ("configmaps", "s1"),
        ] {
            assert!(!related(&pods, "n1", r, n), "{r}/{n}");
        }
        assert_eq!(
            check("n1", &attrs("get", "", "secrets", "web", "s1")),
            Check::IfRelated
        );
        // Lists, watches and unnamed reads of secrets are never a node's.
        for verb in ["list", "watch"] {
            assert!(denied(check("n1", &attrs(verb, "", "secrets", "web", ""))));
        }
        assert!(denied(check(
            "n1",
            &attrs("update", "", "configmaps", "web", "c1")
        )));
        // Pods and services are RBAC's to decide.
        assert_eq!(
            check("n1", &attrs("get", "", "pods", "web", "b")),
            Check::Decided(Decision::NoOpinion)
        );
        // No node execs into or port-forwards to pods, its own or others'.
        for sub in ["exec", "portforward", "attach"] {
            let mut a = attrs("create", "", "pods", "web", "b");
            a.subresource = sub.into();
            assert!(denied(check("n1", &a)), "{sub}");
        }
    }

    #[test]
    fn a_node_writes_only_its_own_node_and_lease() {
        let none = Check::Decided(Decision::NoOpinion);
        for verb in ["create", "update", "patch", "delete"] {
            assert_eq!(check("n1", &attrs(verb, "", "nodes", "", "n1")), none);
            let lease = |name| {
                attrs(
                    verb,
                    "coordination.k8s.io",
                    "leases",
                    NODE_LEASE_NAMESPACE,
                    name,
                )
            };
            assert_eq!(check("n1", &lease("n1")), none);
            if verb == "create" {
                continue; // named only in admission
            }
            assert!(denied(check("n1", &attrs(verb, "", "nodes", "", "n2"))));
            assert!(denied(check("n1", &lease("n2"))));
        }
        assert_eq!(check("n1", &attrs("list", "", "nodes", "", "")), none);
        // Leases elsewhere (leader election locks) are RBAC's.
        assert_eq!(
            check(
                "n1",
                &attrs("update", "coordination.k8s.io", "leases", "web", "lock")
            ),
            none
        );
    }

    #[test]
    fn only_named_nodes_in_the_nodes_group_are_nodes() {
        let id = |user: &str, groups: &[&str]| Identity {
            user: user.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        assert_eq!(node_of(&id("system:node:n1", &[NODES_GROUP])), Some("n1"));
        assert_eq!(node_of(&id("system:node:n1", &["dev"])), None);
        assert_eq!(node_of(&id("system:node:", &[NODES_GROUP])), None);
        assert_eq!(node_of(&id("alice", &[NODES_GROUP])), None);
    }
}
