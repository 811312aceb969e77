//! Topology spread constraints (`topologySpreadConstraints`): how evenly
//! the pods a constraint selects spread across the domains of a topology
//! key. Unlike the other filters this needs the whole cluster (the count
//! in every domain), so it is computed once per pod ([`SpreadState`]) and
//! then asked per node.
//!
//! As in Kubernetes: only nodes that pass the pod's nodeSelector and
//! required node affinity and have the key define domains; matching pods
//! are counted in the pod's namespace, terminating ones excepted; a node
//! fits a DoNotSchedule constraint when its domain's count plus one, minus
//! the smallest domain's count, is at most maxSkew. ScheduleAnyway
//! constraints only score: fewer matching pods in the domain is better.

use std::collections::HashMap;

use flotilla_objects::core::Pod;
use flotilla_objects::Selector;

use crate::filters::{check_node_affinity, Unfit};
use crate::nodeinfo::NodeInfo;

struct Constraint {
    key: String,
    max_skew: i64,
    hard: bool,
    selector: Selector,
    counts: HashMap<String, i64>,
    min: i64,
}

/// The counts per domain of each of a pod's constraints.
pub struct SpreadState {
    constraints: Vec<Constraint>,
}

fn nothing() -> Selector {
    Selector::parse("flotilla.dev/selects-nothing,!flotilla.dev/selects-nothing")
        .unwrap_or_else(|_| Selector::everything())
}

fn counts_pod(sel: &Selector, ns: &str, p: &Pod) -> bool {
    p.metadata.namespace == ns
        && p.metadata.deletion_timestamp.is_none()
        && sel.matches(&p.metadata.labels)
}

impl SpreadState {
    /// None when the pod has no constraint.
    pub fn new<'a>(pod: &Pod, nodes: impl Iterator<Item = &'a NodeInfo>) -> Option<SpreadState> {
        if pod.spec.topology_spread_constraints.is_empty() {
            return None;
        }
        let mut constraints: Vec<Constraint> = pod
            .spec
            .topology_spread_constraints
            .iter()
            .map(|c| Constraint {
                key: c.topology_key.clone(),
                max_skew: i64::from(c.max_skew.max(1)),
                hard: c.when_unsatisfiable != "ScheduleAnyway",
                selector: c
                    .label_selector
                    .as_ref()
                    .and_then(|s| Selector::from_label_selector(s).ok())
                    // No selector (or one that does not parse) selects nothing.
                    .unwrap_or_else(nothing),
                counts: HashMap::new(),
                min: 0,
            })
            .collect();
        let ns = &pod.metadata.namespace;
        for n in nodes {
            if check_node_affinity(pod, n).is_err() {
                continue;
            }
            for c in &mut constraints {
                let Some(domain) = n.labels.get(&c.key) else {
                    continue;
                };
                let here = n
                    .pods
                    .values()
                    .filter(|p| counts_pod(&c.selector, ns, &p.pod))
                    .count() as i64;
                *c.counts.entry(domain.clone()).or_insert(0) += here;
            }
        }
        for c in &mut constraints {
            c.min = c.counts.values().copied().min().unwrap_or(0);
        }
        Some(SpreadState { constraints })
    }

    /// Whether the node keeps every DoNotSchedule constraint.
    pub fn check(&self, node: &NodeInfo) -> Result<(), Unfit> {
        for c in self.constraints.iter().filter(|c| c.hard) {
            let Some(domain) = node.labels.get(&c.key) else {
                return Err(Unfit::TopologySpread);
            };
            let count = c.counts.get(domain).copied().unwrap_or(0);
            if count + 1 - c.min > c.max_skew {
                return Err(Unfit::TopologySpread);
            }
        }
        Ok(())
    }

    /// Matching pods in the node's domains of the ScheduleAnyway
    /// constraints (raw; fewer is better).
    pub fn raw_score(&self, node: &NodeInfo) -> i64 {
        self.constraints
            .iter()
            .filter(|c| !c.hard)
            .map(|c| {
                node.labels
                    .get(&c.key)
                    .and_then(|d| c.counts.get(d))
                    .copied()
                    .unwrap_or(0)
            })
            .sum()
    }

    /// Whether any constraint is ScheduleAnyway (scores).
    pub fn has_soft(&self) -> bool {
        self.constraints.iter().any(|c| !c.hard)
    }
}
