//! A node as the filters and scores see it: the node, the pods on it (bound
//! or assumed), and what those pods request and which host ports they hold.
//! Pure data, so that the autoscaler can build one for a node that does
//! not exist yet (a pool's template) and ask the same filters.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use flotilla_objects::core::{Node, Pod};
use flotilla_objects::nodepool::{pool_of, NODE_POOL_LABEL};
use flotilla_objects::scheduling::HOSTNAME_LABEL;

use crate::resources::{node_allocatable, pod_requests, Resources};

/// A host port a pod holds: protocol, host IP ("" or 0.0.0.0: every
/// address) and port.
pub type HostPort = (String, String, i32);

/// A pod with what the scheduler derives from it once.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub requests: Resources,
    pub host_ports: Vec<HostPort>,
}

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> Self {
        let requests = pod_requests(&pod);
        let host_ports = pod
            .spec
            .containers
            .iter()
            .chain(&pod.spec.init_containers)
            .flat_map(|c| &c.ports)
            .filter(|p| p.host_port > 0)
            .map(|p| {
                let proto = if p.protocol.is_empty() {
                    "TCP"
                } else {
                    &p.protocol
                };
                (proto.to_string(), String::new(), p.host_port)
            })
            .collect();
        PodInfo {
            pod,
            requests,
            host_ports,
        }
    }

    /// "namespace/name"
    pub fn key(&self) -> String {
        format!("{}/{}", self.pod.metadata.namespace, self.pod.metadata.name)
    }

    pub fn priority(&self) -> i32 {
        self.pod.spec.priority.unwrap_or(0)
    }
}

/// The uid of the pod's controlling owner.
pub fn controller_uid(p: &Pod) -> Option<&str> {
    p.metadata
        .owner_references
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

/// Whether the pod has a required pod anti-affinity term.
pub fn has_required_anti_affinity(p: &Pod) -> bool {
    p.spec
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .is_some_and(|a| {
            !a.required_during_scheduling_ignored_during_execution
                .is_empty()
        })
}

/// A node and the pods on it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    /// The node's labels, plus the ones every node has implicitly: its
    /// hostname and its pool (`default` when it names none).
    pub labels: BTreeMap<String, String>,
    pub allocatable: Resources,
    /// By "namespace/name".
    pub pods: BTreeMap<String, PodInfo>,
    pub requested: Resources,
    pub used_ports: HashSet<(String, i32)>,
    /// CPU and memory requested, a pod without requests counted as the
    /// scores count it (see [`crate::score`]).
    pub non_zero_requested: (i64, i64),
    /// Pods per controlling owner uid.
    pub owners: HashMap<String, usize>,
    /// Pods with a required pod anti-affinity term.
    pub anti_affinity_pods: usize,
}

impl NodeInfo {
    pub fn new(node: Arc<Node>) -> Self {
        let mut labels = node.metadata.labels.clone();
        labels
            .entry(HOSTNAME_LABEL.to_string())
            .or_insert_with(|| node.metadata.name.clone());
        let pool = pool_of(&node.metadata.labels).to_string();
        labels.insert(NODE_POOL_LABEL.to_string(), pool);
        NodeInfo {
            allocatable: node_allocatable(&node),
            node,
            labels,
            pods: BTreeMap::new(),
            requested: Resources::default(),
            used_ports: HashSet::new(),
            non_zero_requested: (0, 0),
            owners: HashMap::new(),
            anti_affinity_pods: 0,
        }
    }

    /// A node with these pods on it.
    pub fn with_pods(node: Arc<Node>, pods: impl IntoIterator<Item = Arc<Pod>>) -> Self {
        let mut n = NodeInfo::new(node);
        for p in pods {
            n.add_pod(PodInfo::new(p));
        }
        n
    }

    pub fn name(&self) -> &str {
        &self.node.metadata.name
    }

    /// Replace the node object, keeping the pods.
    pub fn set_node(&mut self, node: Arc<Node>) {
        let pods = std::mem::take(&mut self.pods);
        *self = NodeInfo::new(node);
        for (_, p) in pods {
            self.add_pod(p);
        }
    }

    pub fn add_pod(&mut self, p: PodInfo) {
        if let Some(old) = self.pods.remove(&p.key()) {
            self.forget(&old);
        }
        self.requested.add(&p.requests);
        for (proto, _, port) in &p.host_ports {
            self.used_ports.insert((proto.clone(), *port));
        }
        let (c, m) = crate::score::non_zero(&p.requests);
        self.non_zero_requested.0 += c;
        self.non_zero_requested.1 += m;
        if let Some(o) = controller_uid(&p.pod) {
            *self.owners.entry(o.to_string()).or_insert(0) += 1;
        }
        if has_required_anti_affinity(&p.pod) {
            self.anti_affinity_pods += 1;
        }
        self.pods.insert(p.key(), p);
    }

    pub fn remove_pod(&mut self, key: &str) -> Option<PodInfo> {
        let p = self.pods.remove(key)?;
        self.forget(&p);
        Some(p)
    }

    fn forget(&mut self, p: &PodInfo) {
        self.requested.sub(&p.requests);
        let (c, m) = crate::score::non_zero(&p.requests);
        self.non_zero_requested.0 -= c;
        self.non_zero_requested.1 -= m;
        if let Some(o) = controller_uid(&p.pod) {
            if let Some(n) = self.owners.get_mut(o) {
                *n -= 1;
                if *n == 0 {
                    self.owners.remove(o);
                }
            }
        }
        if has_required_anti_affinity(&p.pod) {
            self.anti_affinity_pods -= 1;
        }
        if p.host_ports.is_empty() {
            return;
        }
        for (proto, _, port) in &p.host_ports {
            self.used_ports.remove(&(proto.clone(), *port));
        }
        // Another pod may hold the same port (it should not, but a node
        // may report what it runs): recount.
        for o in self.pods.values() {
            for (proto, _, port) in &o.host_ports {
                self.used_ports.insert((proto.clone(), *port));
            }
        }
    }

    /// What is left for new pods.
    pub fn free(&self) -> Resources {
        let mut f = self.allocatable;
        f.sub(&self.requested);
        f
    }
}
