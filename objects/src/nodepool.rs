//! Flotilla's own kind (`flotilla.dev/v1`): NodePool, a named group of nodes
//! sharing labels, taints and a machine shape. A node names its pool with
//! the label [`NODE_POOL_LABEL`]; a node that names none is in
//! [`DEFAULT_NODE_POOL`].

use std::collections::BTreeMap;

use crate::core::Taint;
use crate::meta::{object, resource, ObjectMeta, Time};
use crate::registry;

/// The node label naming the node's pool.
pub const NODE_POOL_LABEL: &str = "flotilla.dev/nodepool";
/// The pool of a node whose labels name none.
pub const DEFAULT_NODE_POOL: &str = "default";

object! {
    /// A named group of nodes (cluster-scoped).
    pub struct NodePool {
        /// "flotilla.dev/v1"
        pub api_version: String,
        /// "NodePool"
        pub kind: String,
        /// Metadata.
        pub metadata: ObjectMeta,
        /// Desired state.
        pub spec: NodePoolSpec,
        /// Observed state.
        pub status: Option<NodePoolStatus>,
    }
}
resource!(NodePool, registry::NODE_POOL);

object! {
    /// Desired state of a node pool.
    pub struct NodePoolSpec {
        /// Labels every node of the pool carries.
        pub labels: BTreeMap<String, String>,
        /// Taints every node of the pool carries.
        pub taints: Vec<Taint>,
        /// Shape of the pool's machines.
        pub machine: MachineShape,
        /// Fewest nodes (for the autoscaler).
        pub min_size: i32,
        /// Most nodes (for the autoscaler); at least `minSize`.
        pub max_size: i32,
        /// Preference of the autoscaler's `priority` expander: among the
        /// pools that would help, the highest priority grows.
        pub priority: i32,
    }
}

object! {
    /// Resources of one machine of a pool.
    pub struct MachineShape {
        /// CPU quantity, e.g. "4".
        pub cpu: String,
        /// Memory quantity, e.g. "16Gi".
        pub memory: String,
        /// Maximum pods per node.
        pub pods: Option<i32>,
    }
}

object! {
    /// Observed state of a node pool.
    pub struct NodePoolStatus {
        /// Nodes in the pool.
        pub nodes: i32,
        /// Ready nodes in the pool.
        pub ready_nodes: i32,
        /// The autoscaler's intended size: registered nodes not being
        /// removed, plus nodes asked for and not registered yet.
        pub target_size: Option<i32>,
        /// Nodes asked of the provider, not registered yet (written before
        /// the provider is called, so that a new leader calls again with
        /// the same names instead of asking for more).
        pub creating: Vec<NodeOperation>,
        /// Nodes being removed: cordoned, drained, then deleted through the
        /// provider (written before the first step, for the same reason).
        pub deleting: Vec<NodeOperation>,
        /// Nodes found unneeded, since when (removed after the autoscaler's
        /// unneeded time).
        pub unneeded: Vec<NodeOperation>,
        /// Nodes the autoscaler keeps although they look idle, and why.
        pub blocked: Vec<NodeNote>,
        /// When the pool last grew.
        pub last_scale_up_time: Option<Time>,
        /// When a node of the pool was last removed.
        pub last_scale_down_time: Option<Time>,
        /// The autoscaler's last decision about the pool, in words.
        pub message: String,
    }
}

object! {
    /// A node the autoscaler is working on, and since when.
    pub struct NodeOperation {
        /// The node's name.
        pub name: String,
        /// When the operation started (or the node was first found unneeded).
        pub since: Option<Time>,
    }
}

object! {
    /// Something the autoscaler says about one node.
    pub struct NodeNote {
        /// The node's name.
        pub name: String,
        /// Why, in words (e.g. the pod that keeps it).
        pub reason: String,
    }
}

/// The pool a node with these labels belongs to.
pub fn pool_of(labels: &BTreeMap<String, String>) -> &str {
    labels
        .get(NODE_POOL_LABEL)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_NODE_POOL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_of_defaults() {
        let mut l = BTreeMap::new();
        assert_eq!(pool_of(&l), "default");
        l.insert(NODE_POOL_LABEL.to_string(), "gpu".to_string());
        assert_eq!(pool_of(&l), "gpu");
    }
}
