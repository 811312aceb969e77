//! The cluster as the scheduler's filters see it, for "what if" questions:
//! would these pods fit on the nodes there are, on the nodes on their way,
//! on new nodes of a pool, or on the other nodes if this one went away.

use std::collections::BTreeMap;
use std::sync::Arc;

use flotilla_objects::core::{Node, Pod};
use flotilla_scheduler::{filter, NodeInfo, PodInfo, Unfit};

/// The scheduler's own: whether a pod has finished, and "namespace/name".
pub use flotilla_scheduler::cache::is_terminal;
pub use flotilla_scheduler::queue::pod_key;

/// Whether the node's Ready condition is True.
pub fn is_ready(n: &Node) -> bool {
    n.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// Whether the scheduler found no node for the pod: unbound, alive, and
/// PodScheduled=False with reason Unschedulable.
pub fn is_unschedulable(p: &Pod) -> bool {
    p.spec.node_name.is_empty()
        && p.metadata.deletion_timestamp.is_none()
        && !is_terminal(p)
        && p.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "PodScheduled" && c.status == "False" && c.reason == "Unschedulable"
            })
        })
}

/// Every node with the live pods bound to it.
#[derive(Clone, Default)]
pub struct Snapshot {
    pub nodes: BTreeMap<String, NodeInfo>,
}

impl Snapshot {
    pub fn new(nodes: &[Arc<Node>], pods: &[Arc<Pod>]) -> Self {
        let mut s = Snapshot {
            nodes: nodes
                .iter()
                .map(|n| (n.metadata.name.clone(), NodeInfo::new(n.clone())))
                .collect(),
        };
        for p in pods {
            if p.spec.node_name.is_empty() || is_terminal(p) {
                continue;
            }
            if let Some(n) = s.nodes.get_mut(&p.spec.node_name) {
                n.add_pod(PodInfo::new(p.clone()));
            }
        }
        s
    }
}

/// Put `pod` on the first of `nodes` it fits (the node then holds it):
/// that node's index, or every reason each node gave.
pub fn place(pod: &PodInfo, nodes: &mut [NodeInfo]) -> Result<usize, Vec<Unfit>> {
    let mut why = Vec::new();
    for (i, n) in nodes.iter_mut().enumerate() {
        match filter(pod, n) {
            Ok(()) => {
                n.add_pod(pod.clone());
                return Ok(i);
            }
            Err(e) => why.extend(e),
        }
    }
    why.sort();
    why.dedup();
    Err(why)
}

/// Reasons as one line ("Insufficient cpu, Too many pods").
pub fn reasons(why: &[Unfit]) -> String {
    let v: Vec<String> = why.iter().map(|u| u.to_string()).collect();
    v.join(", ")
}
