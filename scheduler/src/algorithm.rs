//! One scheduling decision over the cache: filter the nodes (only as many
//! as kube-scheduler would look at in a large cluster), score the feasible
//! ones, pick the best; and, when none fits, find the node where evicting
//! the fewest, lowest-priority pods makes room (preemption).

use std::sync::Arc;

use flotilla_objects::core::Pod;
use rand::Rng;

use crate::cache::Cache;
use crate::filters::filter;
use crate::interpod::{normalize_min_max, InterPodState, Preferred};
use crate::message::Diagnosis;
use crate::nodeinfo::{NodeInfo, PodInfo};
use crate::score::{normalize_reverse, owner_zone_counts, score_with_zones};
use crate::spread::SpreadState;

/// How many feasible nodes to find before scoring, out of `all` (Kubernetes'
/// adaptive percentageOfNodesToScore: every node up to 100, then 50% minus
/// 1% per 125 nodes, at least 5%, and never fewer than 100).
pub fn feasible_nodes_to_find(all: usize) -> usize {
    const MIN_NODES: usize = 100;
    if all < MIN_NODES {
        return all;
    }
    let percent = 50usize.saturating_sub(all / 125).max(5);
    (all * percent / 100).max(MIN_NODES)
}

/// The node a pod goes to, or why it fits none.
pub fn schedule_one(cache: &mut Cache, pod: &PodInfo) -> Result<String, Diagnosis> {
    let slots = cache.slot_count();
    let all = cache.node_count();
    let want = feasible_nodes_to_find(all);
    let mut diag = Diagnosis {
        nodes: all,
        ..Default::default()
    };
    let start = if slots == 0 {
        0
    } else {
        cache.next_start % slots
    };
    let spread = SpreadState::new(&pod.pod, cache.nodes());
    let interpod = InterPodState::new(pod, cache.nodes(), cache.any_anti_affinity());
    let mut feasible: Vec<usize> = Vec::new();
    let mut looked = 0;
    for i in 0..slots {
        let idx = (start + i) % slots;
        looked = i + 1;
        let Some(n) = cache.node_at(idx) else {
            continue;
        };
        let nominated = cache.nominated_for(n.name(), pod);
        let with_nominated;
        let n = if nominated.is_empty() {
            n
        } else {
            let mut sim = n.clone();
            for p in nominated {
                sim.add_pod(p);
            }
            with_nominated = sim;
            &with_nominated
        };
        let fits = filter(pod, n)
            .and_then(|()| match &interpod {
                Some(s) => s.check(n).map_err(|e| vec![e]),
                None => Ok(()),
            })
            .and_then(|()| match &spread {
                Some(s) => s.check(n).map_err(|e| vec![e]),
                None => Ok(()),
            });
        match fits {
            Ok(()) => {
                feasible.push(idx);
                if feasible.len() >= want {
                    break;
                }
            }
            Err(reasons) => diag.add(&reasons),
        }
    }
    cache.next_start = start + looked;
    if feasible.is_empty() {
        return Err(diag);
    }
    let nodes: Vec<&NodeInfo> = feasible.iter().filter_map(|i| cache.node_at(*i)).collect();
    let zones = owner_zone_counts(&pod.pod, cache.nodes());
    let mut scores = score_with_zones(pod, &nodes, zones.as_ref());
    if let Some(pref) = Preferred::new(pod, cache.nodes()) {
        let raw: Vec<i64> = nodes.iter().map(|n| pref.raw(n)).collect();
        for (t, r) in scores.iter_mut().zip(normalize_min_max(&raw)) {
            *t += 2 * r;
        }
    }
    if let Some(s) = spread.as_ref().filter(|s| s.has_soft()) {
        let raw: Vec<i64> = nodes.iter().map(|n| s.raw_score(n)).collect();
        for (t, r) in scores.iter_mut().zip(normalize_reverse(&raw)) {
            *t += 2 * r;
        }
    }
    // The best score; ties broken at random (reservoir sampling), as
    // kube-scheduler does, so equal nodes share the load.
    let mut best = 0;
    let mut ties = 0;
    let mut rng = rand::thread_rng();
    for (i, s) in scores.iter().enumerate() {
        if *s > scores[best] {
            best = i;
            ties = 1;
        } else if *s == scores[best] {
            ties += 1;
            if rng.gen_range(0..ties) == 0 {
                best = i;
            }
        }
    }
    Ok(nodes[best].name().to_string())
}

/// A node where preemption makes room, and the pods to evict there.
#[derive(Debug, Clone)]
pub struct Preemption {
    pub node: String,
    pub victims: Vec<Arc<Pod>>,
}

/// Whether the pod may preempt at all: its policy allows it, and it is not
/// already waiting for victims it evicted to go (pods of lower priority
/// terminating on its nominated node).
pub fn may_preempt(pod: &Pod, cache: &Cache) -> bool {
    if pod.spec.preemption_policy == "Never" {
        return false;
    }
    let nominated = pod
        .status
        .as_ref()
        .map(|s| s.nominated_node_name.as_str())
        .unwrap_or("");
    if nominated.is_empty() {
        return true;
    }
    let prio = pod.spec.priority.unwrap_or(0);
    match cache.node(nominated) {
        Some(n) => !n
            .pods
            .values()
            .any(|p| p.pod.metadata.deletion_timestamp.is_some() && p.priority() < prio),
        None => true,
    }
}

/// The victims on one node: every lower-priority pod removed, then as many
/// as possible put back, most important first; None when even removing all
/// of them does not make the pod fit.
fn victims_on(pod: &PodInfo, node: &NodeInfo) -> Option<Vec<Arc<Pod>>> {
    let prio = pod.priority();
    let mut sim = node.clone();
    let mut lower: Vec<PodInfo> = node
        .pods
        .values()
        .filter(|p| p.priority() < prio && p.pod.metadata.deletion_timestamp.is_none())
        .cloned()
        .collect();
    if lower.is_empty() {
        return None;
    }
    for p in &lower {
        sim.remove_pod(&p.key());
    }
    if filter(pod, &sim).is_err() {
        return None;
    }
    // Most important first: those are the ones worth keeping.
    lower.sort_by(|a, b| {
        b.priority().cmp(&a.priority()).then_with(|| {
            a.pod
                .metadata
                .creation_timestamp
                .cmp(&b.pod.metadata.creation_timestamp)
        })
    });
    let mut victims = Vec::new();
    for p in lower {
        let key = p.key();
        sim.add_pod(p.clone());
        if filter(pod, &sim).is_err() {
            sim.remove_pod(&key);
            victims.push(p.pod.clone());
        }
    }
    Some(victims)
}

/// The node where the fewest pods (then the least important ones) must go
/// for the pod to fit; only nodes whose every reason is one preemption can
/// resolve are tried.
pub fn find_preemption(cache: &Cache, pod: &PodInfo) -> Option<Preemption> {
    let mut best: Option<(usize, i32, Preemption)> = None;
    for n in cache.nodes() {
        match filter(pod, n) {
            Ok(()) => continue,
            Err(reasons) if reasons.iter().all(|r| r.resolvable_by_preemption()) => {}
            Err(_) => continue,
        }
        let Some(victims) = victims_on(pod, n) else {
            continue;
        };
        if victims.is_empty() {
            continue;
        }
        let top = victims
            .iter()
            .map(|v| v.spec.priority.unwrap_or(0))
            .max()
            .unwrap_or(0);
        let better = match &best {
            None => true,
            Some((count, prio, _)) => (victims.len(), top) < (*count, *prio),
        };
        if better {
            best = Some((
                victims.len(),
                top,
                Preemption {
                    node: n.name().to_string(),
                    victims,
                },
            ));
        }
    }
    best.map(|(_, _, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_clusters_are_sampled_as_kube_scheduler_does() {
        assert_eq!(feasible_nodes_to_find(3), 3);
        assert_eq!(feasible_nodes_to_find(99), 99);
        assert_eq!(feasible_nodes_to_find(500), 230);
        assert_eq!(feasible_nodes_to_find(5000), 500);
        assert_eq!(feasible_nodes_to_find(50_000), 2500);
    }
}
