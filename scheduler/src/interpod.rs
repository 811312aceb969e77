//! Required inter-pod rules that need the whole cluster: pod affinity on
//! any topology key, and pod anti-affinity on keys other than the hostname
//! (which [`crate::filters::check_pod_anti_affinity`] decides from the node
//! alone). Computed once per pod ([`InterPodState`]), then asked per node.
//!
//! As in Kubernetes: a node's domain is the value of its label named by
//! the term's topology key (a node without the label is in no domain);
//! - affinity: every term needs a matching pod in the node's domain, except
//!   that the first pod of a group (no pod matches the term anywhere, and
//!   the pod matches it itself) may go anywhere the key exists;
//! - anti-affinity: no term of the pod may match a pod in the node's
//!   domain, and no pod in the node's domain may have a term that matches
//!   the pod.

use std::collections::HashSet;

use flotilla_objects::core::Pod;
use flotilla_objects::scheduling::{PodAffinityTerm, HOSTNAME_LABEL};

use crate::filters::{term_selects, Unfit};
use crate::nodeinfo::{NodeInfo, PodInfo};

struct AffinityTerm {
    key: String,
    /// Domains holding a matching pod.
    domains: HashSet<String>,
    /// No pod matches anywhere, and the pod matches its own term.
    first_of_group: bool,
}

/// The domains each of a pod's required rules allows or forbids.
pub struct InterPodState {
    affinity: Vec<AffinityTerm>,
    /// (topology key, domain) pairs the pod may not go to.
    forbidden: HashSet<(String, String)>,
    /// Why, for each forbidden pair: the pod's own rule or another pod's.
    forbidden_by_others: HashSet<(String, String)>,
}

fn terms(pod: &Pod, anti: bool) -> &[PodAffinityTerm] {
    let a = pod.spec.affinity.as_ref();
    let t = if anti {
        a.and_then(|a| a.pod_anti_affinity.as_ref())
            .map(|x| &x.required_during_scheduling_ignored_during_execution)
    } else {
        a.and_then(|a| a.pod_affinity.as_ref())
            .map(|x| &x.required_during_scheduling_ignored_during_execution)
    };
    t.map(Vec::as_slice).unwrap_or(&[])
}

impl InterPodState {
    /// None when nothing needs the whole cluster for this pod: it has no
    /// required affinity, no anti-affinity beyond the hostname, and no pod
    /// has a required anti-affinity (`any_anti_affinity`).
    pub fn new<'a>(
        pod: &PodInfo,
        nodes: impl Iterator<Item = &'a NodeInfo>,
        any_anti_affinity: bool,
    ) -> Option<InterPodState> {
        let p = &pod.pod;
        let ns = p.metadata.namespace.as_str();
        let own_affinity = terms(p, false);
        let own_anti: Vec<&PodAffinityTerm> = terms(p, true)
            .iter()
            .filter(|t| t.topology_key != HOSTNAME_LABEL)
            .collect();
        if own_affinity.is_empty() && own_anti.is_empty() && !any_anti_affinity {
            return None;
        }
        let mut affinity: Vec<AffinityTerm> = own_affinity
            .iter()
            .map(|t| AffinityTerm {
                key: t.topology_key.clone(),
                domains: HashSet::new(),
                first_of_group: false,
            })
            .collect();
        let mut matched_anywhere = vec![false; own_affinity.len()];
        let mut forbidden = HashSet::new();
        let mut forbidden_by_others = HashSet::new();
        let me = pod.key();
        let own_terms = !own_affinity.is_empty() || !own_anti.is_empty();
        for n in nodes {
            if !own_terms && n.anti_affinity_pods == 0 {
                // Only other pods' anti-affinity matters, and none is here.
                continue;
            }
            for other in n.pods.values() {
                if other.key() == me {
                    continue;
                }
                let o = &other.pod;
                for (i, t) in own_affinity.iter().enumerate() {
                    if term_selects(t, ns, o) {
                        matched_anywhere[i] = true;
                        if let Some(d) = n.labels.get(&t.topology_key) {
                            affinity[i].domains.insert(d.clone());
                        }
                    }
                }
                for t in &own_anti {
                    if term_selects(t, ns, o) {
                        if let Some(d) = n.labels.get(&t.topology_key) {
                            forbidden.insert((t.topology_key.clone(), d.clone()));
                        }
                    }
                }
                if n.anti_affinity_pods == 0 {
                    continue;
                }
                for t in terms(o, true) {
                    if t.topology_key == HOSTNAME_LABEL {
                        continue;
                    }
                    if term_selects(t, &o.metadata.namespace, p) {
                        if let Some(d) = n.labels.get(&t.topology_key) {
                            forbidden_by_others.insert((t.topology_key.clone(), d.clone()));
                        }
                    }
                }
            }
        }
        for (i, t) in own_affinity.iter().enumerate() {
            affinity[i].first_of_group = !matched_anywhere[i] && term_selects(t, ns, p);
        }
        Some(InterPodState {
            affinity,
            forbidden,
            forbidden_by_others,
        })
    }

    /// Whether the node keeps every required rule.
    pub fn check(&self, node: &NodeInfo) -> Result<(), Unfit> {
        for t in &self.affinity {
            let Some(d) = node.labels.get(&t.key) else {
                return Err(Unfit::PodAffinity);
            };
            if !t.first_of_group && !t.domains.contains(d) {
                return Err(Unfit::PodAffinity);
            }
        }
        let in_domain = |set: &HashSet<(String, String)>| {
            set.iter()
                .any(|(k, v)| node.labels.get(k).is_some_and(|d| d == v))
        };
        if in_domain(&self.forbidden) {
            return Err(Unfit::PodAntiAffinity);
        }
        if in_domain(&self.forbidden_by_others) {
            return Err(Unfit::ExistingPodsAntiAffinity);
        }
        Ok(())
    }
}

/// A pod's preferred pod affinity (+weight) and anti-affinity (-weight)
/// terms, with the count of matching pods per domain of each.
pub struct Preferred {
    terms: Vec<(String, i64, std::collections::HashMap<String, i64>)>,
}

impl Preferred {
    /// None for a pod without preferred pod (anti-)affinity.
    pub fn new<'a>(pod: &PodInfo, nodes: impl Iterator<Item = &'a NodeInfo>) -> Option<Preferred> {
        let p = &pod.pod;
        let a = p.spec.affinity.as_ref()?;
        let mut weighted: Vec<(&PodAffinityTerm, i64)> = Vec::new();
        if let Some(x) = &a.pod_affinity {
            for w in &x.preferred_during_scheduling_ignored_during_execution {
                weighted.push((&w.pod_affinity_term, i64::from(w.weight)));
            }
        }
        if let Some(x) = &a.pod_anti_affinity {
            for w in &x.preferred_during_scheduling_ignored_during_execution {
                weighted.push((&w.pod_affinity_term, -i64::from(w.weight)));
            }
        }
        if weighted.is_empty() {
            return None;
        }
        let ns = p.metadata.namespace.as_str();
        let me = pod.key();
        let mut terms: Vec<(String, i64, std::collections::HashMap<String, i64>)> = weighted
            .iter()
            .map(|(t, w)| (t.topology_key.clone(), *w, Default::default()))
            .collect();
        for n in nodes {
            for other in n.pods.values() {
                if other.key() == me {
                    continue;
                }
                for (i, (t, _)) in weighted.iter().enumerate() {
                    if term_selects(t, ns, &other.pod) {
                        if let Some(d) = n.labels.get(&t.topology_key) {
                            *terms[i].2.entry(d.clone()).or_insert(0) += 1;
                        }
                    }
                }
            }
        }
        Some(Preferred { terms })
    }

    /// The node's raw score: each term's weight times the matching pods in
    /// the node's domain (negative for anti-affinity).
    pub fn raw(&self, node: &NodeInfo) -> i64 {
        self.terms
            .iter()
            .map(|(key, w, counts)| {
                node.labels
                    .get(key)
                    .and_then(|d| counts.get(d))
                    .map(|c| w * c)
                    .unwrap_or(0)
            })
            .sum()
    }
}

/// Scale raw scores to 0-100, min to max (kube-scheduler's normalisation
/// of inter-pod affinity, whose raw scores may be negative).
pub fn normalize_min_max(raw: &[i64]) -> Vec<i64> {
    let (min, max) = (
        raw.iter().copied().min().unwrap_or(0),
        raw.iter().copied().max().unwrap_or(0),
    );
    raw.iter()
        .map(|r| {
            if max > min {
                (r - min) * crate::score::MAX_SCORE / (max - min)
            } else {
                0
            }
        })
        .collect()
}
