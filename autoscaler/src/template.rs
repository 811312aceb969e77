//! A pool's node template: the node a new machine of the pool would be,
//! for the filters to judge before it exists. Its labels and taints are
//! the pool's; its allocatable is the pool's machine shape, or, when the
//! pool declares none, what a node of the pool already reports (as
//! cluster-autoscaler builds templates from a real node of the group).

use std::collections::BTreeMap;
use std::sync::Arc;

use flotilla_objects::core::{Node, NodeCondition, NodeStatus};
use flotilla_objects::nodepool::{pool_of, NodePool, NODE_POOL_LABEL};
use flotilla_objects::scheduling::HOSTNAME_LABEL;

/// Pods a node of a pool whose shape names no pod count takes (kubelet's default).
const DEFAULT_PODS: i32 = 110;

/// Why a pool has no template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pool {0} declares no machine shape (spec.machine) and has no node to copy one from")]
pub struct NoTemplate(pub String);

/// The template of `pool` named `name`; `nodes` are the cluster's nodes
/// (one of the pool's is copied when the pool declares no shape).
pub fn template(pool: &NodePool, name: &str, nodes: &[Arc<Node>]) -> Result<Node, NoTemplate> {
    let pool_name = &pool.metadata.name;
    let shape = &pool.spec.machine;
    let allocatable: BTreeMap<String, String> = if !shape.cpu.is_empty() && !shape.memory.is_empty()
    {
        BTreeMap::from([
            ("cpu".to_string(), shape.cpu.clone()),
            ("memory".to_string(), shape.memory.clone()),
            (
                "pods".to_string(),
                shape.pods.unwrap_or(DEFAULT_PODS).to_string(),
            ),
        ])
    } else {
        let model = nodes
            .iter()
            .filter(|n| pool_of(&n.metadata.labels) == pool_name)
            .find_map(|n| {
                let s = n.status.as_ref()?;
                let a = if s.allocatable.is_empty() {
                    &s.capacity
                } else {
                    &s.allocatable
                };
                (!a.is_empty()).then(|| a.clone())
            });
        model.ok_or_else(|| NoTemplate(pool_name.clone()))?
    };
    let mut n = Node::default();
    n.metadata.name = name.to_string();
    n.metadata.labels = pool.spec.labels.clone();
    n.metadata
        .labels
        .insert(NODE_POOL_LABEL.to_string(), pool_name.clone());
    n.metadata
        .labels
        .insert(HOSTNAME_LABEL.to_string(), name.to_string());
    n.metadata
        .labels
        .insert("kubernetes.io/os".to_string(), "linux".to_string());
    n.spec.taints = pool.spec.taints.clone();
    n.status = Some(NodeStatus {
        capacity: allocatable.clone(),
        allocatable,
        conditions: vec![NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    Ok(n)
}
