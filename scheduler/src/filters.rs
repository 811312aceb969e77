//! Filters: whether a pod fits a node, as a pure function of the pod, the
//! node and the pods on it ([`NodeInfo`]). Each failing filter gives the
//! reason Kubernetes' scheduler gives, which the unschedulable message
//! counts across nodes (see [`crate::message`]).
//!
//! The order is kube-scheduler's: unschedulable, readiness, taints, node
//! affinity and selector (the node pool is a label), host ports,
//! resources, pod anti-affinity. A node fails on the first filter that
//! refuses it (resources report every resource that is short).

use std::fmt;

use flotilla_objects::core::{Pod, Taint, Toleration};
use flotilla_objects::meta::LabelSelector;
use flotilla_objects::scheduling::{
    NodeSelectorRequirement, NodeSelectorTerm, PodAffinityTerm, HOSTNAME_LABEL,
};
use flotilla_objects::Selector;

use crate::nodeinfo::{NodeInfo, PodInfo};

/// The taint a cordoned node is treated as having.
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// Why a node does not fit a pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unfit {
    /// `spec.unschedulable` (cordoned), not tolerated.
    Unschedulable,
    /// The node's Ready condition is not True.
    NotReady,
    /// A NoSchedule or NoExecute taint the pod does not tolerate.
    UntoleratedTaint {
        key: String,
        value: String,
    },
    /// nodeSelector, required node affinity or node pool.
    NodeAffinity,
    /// A host port the pod asks for is taken.
    HostPorts,
    InsufficientCpu,
    InsufficientMemory,
    TooManyPods,
    /// A pod on the node matches the pod's required anti-affinity.
    PodAntiAffinity,
    /// A pod on the node has a required anti-affinity the pod matches.
    ExistingPodsAntiAffinity,
    /// A DoNotSchedule topology spread constraint (see [`crate::spread`]).
    TopologySpread,
    /// A required pod affinity (see [`crate::interpod`]).
    PodAffinity,
}

impl fmt::Display for Unfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unfit::Unschedulable => f.write_str("node(s) were unschedulable"),
            Unfit::NotReady => f.write_str("node(s) were not ready"),
            Unfit::UntoleratedTaint { key, value } => {
                write!(f, "node(s) had untolerated taint {{{key}: {value}}}")
            }
            Unfit::NodeAffinity => f.write_str("node(s) didn't match Pod's node affinity/selector"),
            Unfit::HostPorts => {
                f.write_str("node(s) didn't have free ports for the requested pod ports")
            }
            Unfit::InsufficientCpu => f.write_str("Insufficient cpu"),
            Unfit::InsufficientMemory => f.write_str("Insufficient memory"),
            Unfit::TooManyPods => f.write_str("Too many pods"),
            Unfit::PodAntiAffinity => f.write_str("node(s) didn't match pod anti-affinity rules"),
            Unfit::ExistingPodsAntiAffinity => {
                f.write_str("node(s) didn't satisfy existing pods anti-affinity rules")
            }
            Unfit::PodAffinity => f.write_str("node(s) didn't match pod affinity rules"),
            Unfit::TopologySpread => {
                f.write_str("node(s) didn't match pod topology spread constraints")
            }
        }
    }
}

impl Unfit {
    /// Whether removing pods from the node could make the pod fit (what
    /// preemption may try); the others are properties of the node.
    pub fn resolvable_by_preemption(&self) -> bool {
        matches!(
            self,
            Unfit::HostPorts
                | Unfit::InsufficientCpu
                | Unfit::InsufficientMemory
                | Unfit::TooManyPods
                | Unfit::PodAntiAffinity
                | Unfit::ExistingPodsAntiAffinity
        )
    }
}

/// Whether `t` tolerates `taint` (Kubernetes' ToleratesTaint).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if !t.effect.is_empty() && t.effect != taint.effect {
        return false;
    }
    if !t.key.is_empty() && t.key != taint.key {
        return false;
    }
    match t.operator.as_str() {
        "Exists" => true,
        "" | "Equal" => t.value == taint.value,
        _ => false,
    }
}

pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

/// Whether the node is cordoned for this pod.
pub fn check_unschedulable(pod: &Pod, node: &NodeInfo) -> Result<(), Unfit> {
    if !node.node.spec.unschedulable {
        return Ok(());
    }
    let taint = Taint {
        key: UNSCHEDULABLE_TAINT.into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    };
    if tolerated(&pod.spec.tolerations, &taint) {
        return Ok(());
    }
    Err(Unfit::Unschedulable)
}

/// Whether the node reports Ready=True.
pub fn check_ready(node: &NodeInfo) -> Result<(), Unfit> {
    let ready = node.node.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    });
    if ready {
        Ok(())
    } else {
        Err(Unfit::NotReady)
    }
}

/// The first NoSchedule/NoExecute taint the pod does not tolerate.
pub fn check_taints(pod: &Pod, node: &NodeInfo) -> Result<(), Unfit> {
    for t in &node.node.spec.taints {
        if (t.effect == "NoSchedule" || t.effect == "NoExecute")
            && !tolerated(&pod.spec.tolerations, t)
        {
            return Err(Unfit::UntoleratedTaint {
                key: t.key.clone(),
                value: t.value.clone(),
            });
        }
    }
    Ok(())
}

/// One requirement against a value (None: the label is absent).
fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let int = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| r.values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !r.values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) =
                (value.and_then(int), r.values.first().and_then(|s| int(s)))
            else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Whether a node selector term matches the node (an empty term matches
/// nothing, as in Kubernetes).
pub fn term_matches(t: &NodeSelectorTerm, node: &NodeInfo) -> bool {
    if t.match_expressions.is_empty() && t.match_fields.is_empty() {
        return false;
    }
    t.match_expressions
        .iter()
        .all(|r| requirement_matches(r, node.labels.get(&r.key).map(String::as_str)))
        && t.match_fields
            .iter()
            .all(|r| r.key == "metadata.name" && requirement_matches(r, Some(node.name())))
}

/// nodeSelector (the node pool is the label `flotilla.dev/nodepool`, which
/// every node has) and required node affinity.
pub fn check_node_affinity(pod: &Pod, node: &NodeInfo) -> Result<(), Unfit> {
    let selector_ok = pod
        .spec
        .node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v));
    if !selector_ok {
        return Err(Unfit::NodeAffinity);
    }
    let required = pod
        .spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    if let Some(req) = required {
        if !req
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, node))
        {
            return Err(Unfit::NodeAffinity);
        }
    }
    Ok(())
}

/// Whether every host port the pod asks for is free on the node.
pub fn check_host_ports(pod: &PodInfo, node: &NodeInfo) -> Result<(), Unfit> {
    if pod
        .host_ports
        .iter()
        .any(|(proto, _, port)| node.used_ports.contains(&(proto.clone(), *port)))
    {
        return Err(Unfit::HostPorts);
    }
    Ok(())
}

/// CPU, memory and pod count against what is left on the node; every
/// resource that is short is reported.
pub fn check_resources(pod: &PodInfo, node: &NodeInfo) -> Result<(), Vec<Unfit>> {
    let free = node.free();
    let r = &pod.requests;
    let mut out = Vec::new();
    if r.pods > free.pods {
        out.push(Unfit::TooManyPods);
    }
    if r.milli_cpu > 0 && r.milli_cpu > free.milli_cpu {
        out.push(Unfit::InsufficientCpu);
    }
    if r.memory > 0 && r.memory > free.memory {
        out.push(Unfit::InsufficientMemory);
    }
    if out.is_empty() {
        Ok(())
    } else {
        Err(out)
    }
}

/// Whether `target` (in `target_ns`) is selected by a pod affinity term of
/// a pod in `owner_ns`.
pub fn term_selects(term: &PodAffinityTerm, owner_ns: &str, target: &Pod) -> bool {
    let ns_ok = if term.namespaces.is_empty() {
        target.metadata.namespace == owner_ns
    } else {
        term.namespaces.contains(&target.metadata.namespace)
    };
    ns_ok && selector_matches(term.label_selector.as_ref(), target)
}

fn selector_matches(s: Option<&LabelSelector>, pod: &Pod) -> bool {
    // A term without a selector selects nothing, as in Kubernetes.
    let Some(s) = s else { return false };
    match Selector::from_label_selector(s) {
        Ok(sel) => sel.matches(&pod.metadata.labels),
        Err(_) => false,
    }
}

fn required_anti_affinity(pod: &Pod) -> &[PodAffinityTerm] {
    pod.spec
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .map(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_slice()
        })
        .unwrap_or(&[])
}

/// Required pod anti-affinity on the hostname topology, both ways: no pod
/// on the node matches the pod's terms, and the pod matches no term of a
/// pod on the node. (Terms on other topology keys are not enforced.)
pub fn check_pod_anti_affinity(pod: &Pod, node: &NodeInfo) -> Result<(), Unfit> {
    let own: Vec<&PodAffinityTerm> = required_anti_affinity(pod)
        .iter()
        .filter(|t| t.topology_key == HOSTNAME_LABEL)
        .collect();
    if own.is_empty() && node.anti_affinity_pods == 0 {
        return Ok(());
    }
    for other in node.pods.values() {
        let o = &other.pod;
        if o.metadata.uid == pod.metadata.uid && !pod.metadata.uid.is_empty() {
            continue;
        }
        if own
            .iter()
            .any(|t| term_selects(t, &pod.metadata.namespace, o))
        {
            return Err(Unfit::PodAntiAffinity);
        }
        if required_anti_affinity(o)
            .iter()
            .filter(|t| t.topology_key == HOSTNAME_LABEL)
            .any(|t| term_selects(t, &o.metadata.namespace, pod))
        {
            return Err(Unfit::ExistingPodsAntiAffinity);
        }
    }
    Ok(())
}

/// Every filter, in order: Ok when the pod fits the node, else why not.
pub fn filter(pod: &PodInfo, node: &NodeInfo) -> Result<(), Vec<Unfit>> {
    let p = &pod.pod;
    check_unschedulable(p, node).map_err(|e| vec![e])?;
    check_ready(node).map_err(|e| vec![e])?;
    check_taints(p, node).map_err(|e| vec![e])?;
    check_node_affinity(p, node).map_err(|e| vec![e])?;
    check_host_ports(pod, node).map_err(|e| vec![e])?;
    check_resources(pod, node)?;
    check_pod_anti_affinity(p, node).map_err(|e| vec![e])?;
    Ok(())
}
