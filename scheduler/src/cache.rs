//! The scheduler's picture of the cluster: every node with the pods bound
//! to it, plus the pods it has *assumed* onto a node while their binding is
//! in flight, so that a node is never over-committed by bindings the
//! informers have not shown yet.
//!
//! Nodes sit in a vector so that each scheduling cycle can start where the
//! previous one stopped (kube-scheduler's rotation when it looks at only
//! part of a large cluster).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use flotilla_objects::core::{Node, Pod};

use crate::nodeinfo::{has_required_anti_affinity, NodeInfo, PodInfo};
use crate::queue::{pod_key, PodKey};

struct Slot {
    info: NodeInfo,
    /// False for a node that was deleted while pods were still bound to it
    /// (kept for their accounting; never a candidate).
    present: bool,
}

/// Nodes, their pods, and assumed pods.
#[derive(Default)]
pub struct Cache {
    slots: Vec<Slot>,
    by_name: HashMap<String, usize>,
    /// The node each known pod is on (bound or assumed).
    pod_node: HashMap<PodKey, String>,
    assumed: HashSet<PodKey>,
    /// Pending pods nominated to a node by preemption (by node): the room
    /// their victims leave is theirs, not a less important pod's.
    nominated: HashMap<String, HashMap<PodKey, PodInfo>>,
    nominated_node: HashMap<PodKey, String>,
    /// Pods (bound or assumed) with a required pod anti-affinity term.
    anti_affinity_pods: usize,
    /// Where the next cycle starts looking.
    pub next_start: usize,
}

/// Whether a pod is done and no longer holds resources.
pub fn is_terminal(p: &Pod) -> bool {
    p.status
        .as_ref()
        .is_some_and(|s| s.phase == "Succeeded" || s.phase == "Failed")
}

impl Cache {
    pub fn new() -> Self {
        Self::default()
    }

    fn slot_mut(&mut self, name: &str) -> &mut Slot {
        let idx = match self.by_name.get(name) {
            Some(i) => *i,
            None => {
                let mut n = Node::default();
                n.metadata.name = name.to_string();
                self.slots.push(Slot {
                    info: NodeInfo::new(Arc::new(n)),
                    present: false,
                });
                self.by_name.insert(name.to_string(), self.slots.len() - 1);
                self.slots.len() - 1
            }
        };
        &mut self.slots[idx]
    }

    fn drop_slot(&mut self, name: &str) {
        let Some(idx) = self.by_name.remove(name) else {
            return;
        };
        self.slots.swap_remove(idx);
        if idx < self.slots.len() {
            let moved = self.slots[idx].info.name().to_string();
            self.by_name.insert(moved, idx);
        }
    }

    pub fn set_node(&mut self, node: Arc<Node>) {
        let name = node.metadata.name.clone();
        let s = self.slot_mut(&name);
        s.info.set_node(node);
        s.present = true;
    }

    pub fn remove_node(&mut self, name: &str) {
        let Some(&idx) = self.by_name.get(name) else {
            return;
        };
        if self.slots[idx].info.pods.is_empty() {
            self.drop_slot(name);
        } else {
            self.slots[idx].present = false;
        }
    }

    /// A pod bound to a node (as the informer shows it): replaces what was
    /// assumed.
    pub fn add_bound_pod(&mut self, pod: Arc<Pod>) {
        let key = pod_key(&pod);
        let node = pod.spec.node_name.clone();
        self.remove_pod(&key);
        self.pod_node.insert(key, node.clone());
        self.count_anti_affinity(&pod, 1);
        self.slot_mut(&node).info.add_pod(PodInfo::new(pod));
    }

    fn count_anti_affinity(&mut self, p: &Pod, d: isize) {
        if has_required_anti_affinity(p) {
            self.anti_affinity_pods = self.anti_affinity_pods.saturating_add_signed(d);
        }
    }

    /// Whether any pod here has a required pod anti-affinity term (every
    /// node must then be checked against it).
    pub fn any_anti_affinity(&self) -> bool {
        self.anti_affinity_pods > 0
    }

    /// Forget a pod (deleted, finished, or an assumption that failed).
    pub fn remove_pod(&mut self, key: &str) -> bool {
        self.assumed.remove(key);
        let Some(node) = self.pod_node.remove(key) else {
            return false;
        };
        if let Some(&idx) = self.by_name.get(&node) {
            let s = &mut self.slots[idx];
            let gone = s.info.remove_pod(key);
            let empty = !s.present && s.info.pods.is_empty();
            if let Some(p) = gone {
                self.count_anti_affinity(&p.pod, -1);
            }
            if empty {
                self.drop_slot(&node);
            }
        }
        true
    }

    /// Put a pod on a node before its binding is seen.
    pub fn assume(&mut self, pod: PodInfo, node: &str) {
        let key = pod.key();
        self.remove_pod(&key);
        self.pod_node.insert(key.clone(), node.to_string());
        self.assumed.insert(key);
        self.count_anti_affinity(&pod.pod, 1);
        self.slot_mut(node).info.add_pod(pod);
    }

    pub fn is_assumed(&self, key: &str) -> bool {
        self.assumed.contains(key)
    }

    /// Whether the pod is on some node here (bound or assumed).
    pub fn knows(&self, key: &str) -> bool {
        self.pod_node.contains_key(key)
    }

    /// Nodes that exist.
    pub fn node_count(&self) -> usize {
        self.slots.iter().filter(|s| s.present).count()
    }

    /// Slots, present or not, for rotation.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// The node at slot `i`, if it exists.
    pub fn node_at(&self, i: usize) -> Option<&NodeInfo> {
        self.slots.get(i).filter(|s| s.present).map(|s| &s.info)
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.by_name.get(name).and_then(|i| self.node_at(*i))
    }

    /// Every existing node.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.slots.iter().filter(|s| s.present).map(|s| &s.info)
    }

    pub fn clear(&mut self) {
        *self = Cache::default();
    }

    /// Note (or, with an empty node, forget) a pending pod's nomination.
    pub fn nominate(&mut self, pod: PodInfo, node: &str) {
        let key = pod.key();
        self.forget_nomination(&key);
        if node.is_empty() {
            return;
        }
        self.nominated_node.insert(key.clone(), node.to_string());
        self.nominated
            .entry(node.to_string())
            .or_default()
            .insert(key, pod);
    }

    pub fn forget_nomination(&mut self, key: &str) {
        let Some(node) = self.nominated_node.remove(key) else {
            return;
        };
        if let Some(m) = self.nominated.get_mut(&node) {
            m.remove(key);
            if m.is_empty() {
                self.nominated.remove(&node);
            }
        }
    }

    /// The pods nominated to `node` that `pod` must leave room for: those
    /// at least as important, other than itself.
    pub fn nominated_for(&self, node: &str, pod: &PodInfo) -> Vec<PodInfo> {
        let key = pod.key();
        self.nominated
            .get(node)
            .map(|m| {
                m.iter()
                    .filter(|(k, p)| **k != key && p.priority() >= pod.priority())
                    .map(|(_, p)| p.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Cache {
    /// Drop an assumption that failed (a pod the informer has shown bound
    /// since is kept).
    pub fn forget_assumed(&mut self, key: &str) {
        if self.assumed.contains(key) {
            self.remove_pod(key);
        }
    }

    /// The assumed pods and their nodes.
    pub fn assumed_pods(&self) -> Vec<(PodInfo, String)> {
        self.assumed
            .iter()
            .filter_map(|k| {
                let node = self.pod_node.get(k)?;
                let s = &self.slots[*self.by_name.get(node)?];
                Some((s.info.pods.get(k)?.clone(), node.clone()))
            })
            .collect()
    }
}
