//! Node authorization, as Kubernetes' Node authorizer: an agent (the user
//! `system:node:<name>` in the group `system:nodes`) may read only the
//! Secrets, ConfigMaps and PersistentVolumeClaims of pods bound to its
//! node, and write only its own Node and Lease. Which pods an agent may
//! write is decided by the API server against the stored pod
//! (NodeRestriction, `crate::api::restriction`), since only the stored
//! object says where a pod is bound.
//!
//! The pods' references come from a graph kept from this replica's watch of
//! pods; a reference the graph does not hold yet (a pod bound a moment ago,
//! not yet seen here) is looked up in the store before a refusal.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use flotilla_objects::api::{EventType, ListParams, ObjectApi};
use flotilla_objects::core::Pod;
use flotilla_objects::rbac::Attributes;
use flotilla_objects::registry::{self, ResourceInfo};
use flotilla_security::authn::Identity;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::policy::{follow, Indexed};
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

/// The objects each pod refers to, by node.
#[derive(Default)]
pub struct NodeGraph {
    /// (namespace, pod) -> (node, references).
    pods: HashMap<(String, String), (String, Vec<Ref>)>,
    /// node -> reference -> how many of its pods hold it.
    by_node: HashMap<String, HashMap<Ref, usize>>,
}

/// The Secrets, ConfigMaps and claims `pod` refers to: volumes, and the
/// environment of every container.
pub fn pod_references(pod: &Pod) -> Vec<Ref> {
    let ns = &pod.metadata.namespace;
    let mut refs: Vec<Ref> = Vec::new();
    let mut add = |resource: &'static str, name: &str| {
        let r = (resource, ns.clone(), name.to_string());
        if !name.is_empty() && !refs.contains(&r) {
            refs.push(r);
        }
    };
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

impl NodeGraph {
    fn remove(&mut self, key: &(String, String)) {
        let Some((node, refs)) = self.pods.remove(key) else {
            return;
        };
        if let Some(m) = self.by_node.get_mut(&node) {
            for r in refs {
                if let Some(n) = m.get_mut(&r) {
                    *n -= 1;
                    if *n == 0 {
                        m.remove(&r);
                    }
                }
            }
            if m.is_empty() {
                self.by_node.remove(&node);
            }
        }
    }

    fn insert(&mut self, pod: &Pod) {
        let key = (pod.metadata.namespace.clone(), pod.metadata.name.clone());
        self.remove(&key);
        let node = pod.spec.node_name.clone();
        if node.is_empty() {
            return;
        }
        let refs = pod_references(pod);
        let m = self.by_node.entry(node.clone()).or_default();
        for r in &refs {
            *m.entry(r.clone()).or_default() += 1;
        }
        self.pods.insert(key, (node, refs));
    }

    /// Whether a pod bound to `node` refers to `resource` `ns/name`.
    pub fn related(&self, node: &str, resource: &str, ns: &str, name: &str) -> bool {
        self.by_node.get(node).is_some_and(|m| {
            m.keys()
                .any(|(r, n, nm)| *r == resource && n == ns && nm == name)
        })
    }
}

impl Indexed for NodeGraph {
    fn apply(&mut self, _info: &ResourceInfo, kind: EventType, obj: &Value) {
        let pod: Pod = match serde_json::from_value(obj.clone()) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "a pod that does not decode is left out of the node graph");
                return;
            }
        };
        if kind == EventType::Deleted {
            self.remove(&(pod.metadata.namespace, pod.metadata.name));
        } else {
            self.insert(&pod);
        }
    }

    fn clear(&mut self, _info: &ResourceInfo) {
        *self = NodeGraph::default();
    }
}

/// The resources a node reads only through its pods.
const GRAPH_RESOURCES: [&str; 3] = ["secrets", "configmaps", "persistentvolumeclaims"];

/// The node authorizer's decision for `node` asking `a`, from `graph`.
/// Node and Lease writes are limited to the node's own (creates by
/// NodeRestriction, which sees the name); reads of Secrets,
/// ConfigMaps and claims to single objects its pods refer to.
pub fn decide(node: &str, a: &Attributes, graph: &NodeGraph) -> Decision {
    // A create names no object when it is authorized; NodeRestriction
    // checks the name of a node's own Node or Lease then.
    let own = |what: &str| {
        if a.name == node || a.verb == "create" {
            Decision::NoOpinion
        } else {
            Decision::Deny(format!("node '{node}' may only {what} its own"))
        }
    };
    match (a.api_group.as_str(), a.resource.as_str()) {
        ("", r) if GRAPH_RESOURCES.contains(&r) => {
            if a.verb != "get" || a.name.is_empty() || !a.subresource.is_empty() {
                return Decision::Deny(format!(
                    "node '{node}' may only get individual {r} that its pods use"
                ));
            }
            if graph.related(node, r, &a.namespace, &a.name) {
                Decision::Allow
            } else {
                Decision::Deny(format!(
                    "no relationship found between node '{node}' and this object"
                ))
            }
        }
        ("", "nodes") if !matches!(a.verb.as_str(), "get" | "list" | "watch") => {
            own("change the Node that is")
        }
        ("coordination.k8s.io", "leases") if a.namespace == NODE_LEASE_NAMESPACE => {
            own("use the Lease that is")
        }
        _ => Decision::NoOpinion,
    }
}

/// The graph of this replica's pods, followed until the master stops.
#[derive(Clone)]
pub struct NodeIndex {
    graph: Arc<RwLock<NodeGraph>>,
    synced: watch::Receiver<bool>,
    api: ApiServer,
}

const POD_KINDS: [&ResourceInfo; 1] = [&registry::POD];

impl NodeIndex {
    pub fn follow(api: ApiServer, stop: CancellationToken) -> NodeIndex {
        let graph = Arc::new(RwLock::new(NodeGraph::default()));
        let synced = follow(api.clone(), &POD_KINDS, graph.clone(), stop);
        NodeIndex { graph, synced, api }
    }

    /// The decision for `node` asking `a`. A refusal for want of a
    /// relationship is checked against the store's pods first (the graph
    /// may not have seen a pod just bound).
    pub async fn decide(&self, node: &str, a: &Attributes) -> Decision {
        super::policy::wait_synced(&self.synced, super::SYNC_WAIT).await;
        let d = decide(
            node,
            a,
            &self.graph.read().unwrap_or_else(|p| p.into_inner()),
        );
        let Decision::Deny(reason) = &d else {
            return d;
        };
        if a.verb != "get" || !GRAPH_RESOURCES.contains(&a.resource.as_str()) || a.name.is_empty() {
            return d;
        }
        match self.related_in_store(node, a).await {
            Ok(true) => Decision::Allow,
            Ok(false) => d,
            Err(e) => {
                tracing::debug!(error = %e, "reading the node's pods");
                Decision::Deny(reason.clone())
            }
        }
    }

    async fn related_in_store(
        &self,
        node: &str,
        a: &Attributes,
    ) -> Result<bool, flotilla_objects::api::ApiError> {
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
        Ok(list.items.iter().any(|o| {
            serde_json::from_value::<Pod>(o.clone()).is_ok_and(|p| {
                pod_references(&p)
                    .iter()
                    .any(|(r, _, n)| *r == a.resource && *n == a.name)
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, node: &str, secret: &str, cm_env: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": ns, "name": name},
            "spec": {
                "nodeName": node,
                "volumes": [{"name": "s", "secret": {"secretName": secret}}],
                "containers": [{"name": "c", "image": "busybox", "env": [
                    {"name": "X", "valueFrom": {"configMapKeyRef": {"name": cm_env, "key": "k"}}}
                ]}]
            }
        }))
        .expect("pod")
    }

    fn get(resource: &str, ns: &str, name: &str) -> Attributes {
        Attributes {
            verb: "get".into(),
            resource: resource.into(),
            namespace: ns.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_node_reads_only_what_its_pods_use() {
        let mut g = NodeGraph::default();
        g.insert(&pod("web", "a", "n1", "s1", "c1"));
        g.insert(&pod("web", "b", "n2", "s2", "c2"));
        g.insert(&pod("web", "pending", "", "s3", "c3"));
        assert_eq!(
            decide("n1", &get("secrets", "web", "s1"), &g),
            Decision::Allow
        );
        assert_eq!(
            decide("n1", &get("configmaps", "web", "c1"), &g),
            Decision::Allow
        );
        for (r, n) in [("secrets", "s2"), ("configmaps", "c2"), ("secrets", "s3")] {
            assert!(
                matches!(decide("n1", &get(r, "web", n), &g), Decision::Deny(m) if m.contains("no relationship")),
                "{r}/{n}"
            );
        }
        // Same name, other namespace.
        assert!(matches!(
            decide("n1", &get("secrets", "other", "s1"), &g),
            Decision::Deny(_)
        ));
        // Lists and watches of secrets are never a node's.
        let mut list = get("secrets", "web", "");
        list.verb = "list".into();
        assert!(matches!(decide("n1", &list, &g), Decision::Deny(_)));
        // Pods and services are RBAC's to decide.
        assert_eq!(
            decide("n1", &get("pods", "web", "b"), &g),
            Decision::NoOpinion
        );
    }

    #[test]
    fn the_graph_follows_pods_moving_and_leaving() {
        let mut g = NodeGraph::default();
        g.insert(&pod("web", "a", "n1", "s1", "c1"));
        g.insert(&pod("web", "b", "n1", "s1", "c9"));
        // Two pods share s1: one leaving keeps it related.
        g.remove(&("web".into(), "a".into()));
        assert!(g.related("n1", "secrets", "web", "s1"));
        assert!(!g.related("n1", "configmaps", "web", "c1"));
        // A pod bound elsewhere (rewritten) takes its references along.
        g.insert(&pod("web", "b", "n2", "s1", "c9"));
        assert!(!g.related("n1", "secrets", "web", "s1"));
        assert!(g.related("n2", "secrets", "web", "s1"));
        g.apply(
            &registry::POD,
            EventType::Deleted,
            &serde_json::to_value(pod("web", "b", "n2", "s1", "c9")).expect("json"),
        );
        assert!(g.by_node.is_empty() && g.pods.is_empty());
    }

    #[test]
    fn a_node_writes_only_its_own_node_and_lease() {
        let g = NodeGraph::default();
        let write = |verb: &str, group: &str, resource: &str, ns: &str, name: &str| Attributes {
            verb: verb.into(),
            api_group: group.into(),
            resource: resource.into(),
            namespace: ns.into(),
            name: name.into(),
            ..Default::default()
        };
        for verb in ["create", "update", "patch", "delete"] {
            assert_eq!(
                decide("n1", &write(verb, "", "nodes", "", "n1"), &g),
                Decision::NoOpinion
            );
            let lease = |name| {
                write(
                    verb,
                    "coordination.k8s.io",
                    "leases",
                    NODE_LEASE_NAMESPACE,
                    name,
                )
            };
            assert_eq!(decide("n1", &lease("n1"), &g), Decision::NoOpinion);
            if verb == "create" {
                continue; // named only in admission
            }
            assert!(matches!(
                decide("n1", &write(verb, "", "nodes", "", "n2"), &g),
                Decision::Deny(_)
            ));
            assert!(matches!(decide("n1", &lease("n2"), &g), Decision::Deny(_)));
        }
        assert_eq!(
            decide("n1", &write("list", "", "nodes", "", ""), &g),
            Decision::NoOpinion
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
