//! Scores: how good a feasible node is for a pod, each score 0-100 per
//! node (normalized across the feasible nodes where Kubernetes
//! normalizes), weighted and summed as kube-scheduler's default profile
//! does:
//!
//! | score                         | weight |
//! |-------------------------------|--------|
//! | least allocated               | 1      |
//! | balanced allocation           | 1      |
//! | preferred node affinity       | 2      |
//! | PreferNoSchedule taints       | 3      |
//! | spreading one owner's pods    | 2      |
//!
//! (node, then two thirds zone when nodes have zones). Two more need the
//! whole cluster and are added by [`crate::algorithm`]: preferred pod
//! (anti-)affinity ([`crate::interpod::Preferred`], weight 2) and
//! ScheduleAnyway topology spread ([`crate::spread`], weight 2).

use std::collections::HashMap;

use flotilla_objects::core::Pod;

use crate::filters::{term_matches, tolerated};
use crate::nodeinfo::{controller_uid, NodeInfo, PodInfo};
use crate::resources::Resources;

pub const MAX_SCORE: i64 = 100;

/// What a pod without requests is counted as for scoring (kube-scheduler's
/// non-zero defaults), so that such pods still spread.
const DEFAULT_MILLI_CPU: i64 = 100;
const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// A pod's cpu and memory for scoring: its requests, or the defaults when
/// it has none.
pub fn non_zero(r: &Resources) -> (i64, i64) {
    (
        if r.milli_cpu == 0 {
            DEFAULT_MILLI_CPU
        } else {
            r.milli_cpu
        },
        if r.memory == 0 {
            DEFAULT_MEMORY
        } else {
            r.memory
        },
    )
}

/// Requested fractions of cpu and memory with the pod added.
fn fractions(pod: &PodInfo, node: &NodeInfo) -> (f64, f64) {
    let (pc, pm) = non_zero(&pod.requests);
    let used_cpu = pc + node.non_zero_requested.0;
    let used_mem = pm + node.non_zero_requested.1;
    let frac = |used: i64, total: i64| {
        if total <= 0 {
            1.0
        } else {
            (used as f64 / total as f64).min(1.0)
        }
    };
    (
        frac(used_cpu, node.allocatable.milli_cpu),
        frac(used_mem, node.allocatable.memory),
    )
}

/// Least allocated: the free share of cpu and memory after placing the pod.
pub fn least_allocated(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let (c, m) = fractions(pod, node);
    (((1.0 - c) + (1.0 - m)) / 2.0 * MAX_SCORE as f64) as i64
}

/// Balanced allocation: cpu and memory used in equal shares score high.
pub fn balanced_allocation(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let (c, m) = fractions(pod, node);
    ((1.0 - (c - m).abs() / 2.0) * MAX_SCORE as f64) as i64
}

/// Sum of the weights of the pod's preferred node affinity terms the node
/// matches (raw; normalized across nodes).
pub fn node_affinity_raw(pod: &Pod, node: &NodeInfo) -> i64 {
    pod.spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .map(|n| {
            n.preferred_during_scheduling_ignored_during_execution
                .iter()
                .filter(|p| term_matches(&p.preference, node))
                .map(|p| i64::from(p.weight))
                .sum()
        })
        .unwrap_or(0)
}

/// PreferNoSchedule taints of the node the pod does not tolerate (raw;
/// fewer is better).
pub fn prefer_no_schedule_raw(pod: &Pod, node: &NodeInfo) -> i64 {
    let tolerations: Vec<_> = pod
        .spec
        .tolerations
        .iter()
        .filter(|t| t.effect.is_empty() || t.effect == "PreferNoSchedule")
        .cloned()
        .collect();
    node.node
        .spec
        .taints
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule" && !tolerated(&tolerations, t))
        .count() as i64
}

/// Pods on the node with the same controlling owner as the pod (raw;
/// fewer is better): replicas of one owner spread across nodes.
pub fn same_owner_raw(pod: &Pod, node: &NodeInfo) -> i64 {
    controller_uid(pod)
        .and_then(|o| node.owners.get(o))
        .map(|n| *n as i64)
        .unwrap_or(0)
}

/// Scale raw values to 0-100, highest raw best.
fn normalize(raw: &[i64]) -> Vec<i64> {
    let max = raw.iter().copied().max().unwrap_or(0);
    raw.iter()
        .map(|r| if max > 0 { r * MAX_SCORE / max } else { 0 })
        .collect()
}

/// Scale raw values to 0-100, lowest raw best.
pub fn normalize_reverse(raw: &[i64]) -> Vec<i64> {
    let max = raw.iter().copied().max().unwrap_or(0);
    raw.iter()
        .map(|r| {
            if max > 0 {
                MAX_SCORE - r * MAX_SCORE / max
            } else {
                MAX_SCORE
            }
        })
        .collect()
}

/// The node label naming a node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Pods of the pod's controlling owner in each zone, over all `nodes` (the
/// whole cluster, not only the feasible nodes); None for a pod without an
/// owner or a cluster without zones.
pub fn owner_zone_counts<'a>(
    pod: &Pod,
    nodes: impl Iterator<Item = &'a NodeInfo>,
) -> Option<HashMap<String, i64>> {
    let uid = controller_uid(pod)?;
    let mut counts: HashMap<String, i64> = HashMap::new();
    for n in nodes {
        if let Some(z) = n.labels.get(ZONE_LABEL) {
            *counts.entry(z.clone()).or_insert(0) += n.owners.get(uid).copied().unwrap_or(0) as i64;
        }
    }
    (!counts.is_empty()).then_some(counts)
}

/// The total score of each node (same order as `nodes`).
pub fn score(pod: &PodInfo, nodes: &[&NodeInfo]) -> Vec<i64> {
    score_with_zones(pod, nodes, None)
}

/// [`score`], spreading one owner's pods across zones too when
/// `zones` (from [`owner_zone_counts`]) is given: as kube-scheduler does,
/// the spreading score is then one third the node's count and two thirds
/// its zone's.
pub fn score_with_zones(
    pod: &PodInfo,
    nodes: &[&NodeInfo],
    zones: Option<&HashMap<String, i64>>,
) -> Vec<i64> {
    let p = &pod.pod;
    let affinity = normalize(
        &nodes
            .iter()
            .map(|n| node_affinity_raw(p, n))
            .collect::<Vec<_>>(),
    );
    let taints = normalize_reverse(
        &nodes
            .iter()
            .map(|n| prefer_no_schedule_raw(p, n))
            .collect::<Vec<_>>(),
    );
    let mut spread = normalize_reverse(
        &nodes
            .iter()
            .map(|n| same_owner_raw(p, n))
            .collect::<Vec<_>>(),
    );
    if let Some(zones) = zones {
        let raw: Vec<i64> = nodes
            .iter()
            .map(|n| {
                n.labels
                    .get(ZONE_LABEL)
                    .and_then(|z| zones.get(z))
                    .copied()
                    .unwrap_or(0)
            })
            .collect();
        for (s, z) in spread.iter_mut().zip(normalize_reverse(&raw)) {
            *s = (*s + 2 * z) / 3;
        }
    }
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            least_allocated(pod, n)
                + balanced_allocation(pod, n)
                + 2 * affinity[i]
                + 3 * taints[i]
                + 2 * spread[i]
        })
        .collect()
}
