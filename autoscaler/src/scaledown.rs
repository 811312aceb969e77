//! The scale-down decision: which nodes are unneeded, and what keeps the
//! others.
//!
//! A node is unneeded when the CPU and the memory its pods request are each
//! below the threshold share of its allocatable (half by default), none of
//! its pods keeps it ([`pod_blocker`]), its pool stays at or above its min
//! size without it, and every pod on it fits another node (the scheduler's
//! filters, with the pods moved off earlier candidates counted where they
//! would land). DaemonSet pods neither move nor keep a node.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use flotilla_objects::core::Pod;
use flotilla_scheduler::{NodeInfo, PodInfo};

use crate::simulate::{place, pod_key, reasons, Snapshot};
use crate::SAFE_TO_EVICT;

/// The annotation the agent puts on the API's copy of a static pod.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Owner kinds that recreate a pod deleted by a drain.
const REPLICATING_OWNERS: &[&str] = &[
    "ReplicaSet",
    "ReplicationController",
    "Job",
    "StatefulSet",
    "DaemonSet",
];

/// Why a pod keeps its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocker {
    /// No controller would recreate it.
    NotReplicated,
    /// A volume on the node's disk (emptyDir not in memory, or hostPath).
    LocalStorage(String),
    /// A static pod: not created through the API.
    Static,
    /// Annotated safe-to-evict "false".
    NotSafeToEvict,
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Blocker::NotReplicated => f.write_str("not replicated: no controller owns it"),
            Blocker::LocalStorage(v) => write!(f, "local storage: volume {v:?} is on the node"),
            Blocker::Static => f.write_str("a static pod (not created through the API)"),
            Blocker::NotSafeToEvict => write!(f, "annotated {SAFE_TO_EVICT}=false"),
        }
    }
}

/// The kind of the pod's controlling owner.
fn controller_kind(p: &Pod) -> Option<&str> {
    p.metadata
        .owner_references
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.kind.as_str())
}

/// Whether the pod belongs to a DaemonSet (left in place by a drain).
pub fn is_daemon(p: &Pod) -> bool {
    controller_kind(p) == Some("DaemonSet")
}

/// What keeps the pod's node, if anything. The annotation
/// [`SAFE_TO_EVICT`] "true" lets any pod move; "false" keeps any.
pub fn pod_blocker(p: &Pod) -> Option<Blocker> {
    let safe = p
        .metadata
        .annotations
        .get(SAFE_TO_EVICT)
        .map(String::as_str);
    if safe == Some("true") {
        return None;
    }
    if p.metadata.annotations.contains_key(MIRROR_ANNOTATION) {
        return Some(Blocker::Static);
    }
    if safe == Some("false") {
        return Some(Blocker::NotSafeToEvict);
    }
    if is_daemon(p) {
        return None;
    }
    if !controller_kind(p).is_some_and(|k| REPLICATING_OWNERS.contains(&k)) {
        return Some(Blocker::NotReplicated);
    }
    for v in &p.spec.volumes {
        let on_disk = v.empty_dir.as_ref().is_some_and(|e| e.medium != "Memory");
        if on_disk || v.host_path.is_some() {
            return Some(Blocker::LocalStorage(v.name.clone()));
        }
    }
    None
}

/// A node the scale-down may consider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub node: String,
    pub pool: String,
}

/// What the scale-down thinks of a node.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// It could go now.
    Unneeded,
    /// Its pods request this share of its CPU and memory (one at or above the threshold).
    Busy { cpu: f64, memory: f64 },
    /// It looks idle but is kept, for this reason.
    Kept(String),
}

fn utilization(n: &NodeInfo) -> (f64, f64) {
    let share = |req: i64, alloc: i64| {
        if alloc > 0 {
            req as f64 / alloc as f64
        } else {
            1.0
        }
    };
    let mut cpu = 0;
    let mut mem = 0;
    for p in n.pods.values() {
        if is_daemon(&p.pod) || p.pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        cpu += p.requests.milli_cpu;
        mem += p.requests.memory;
    }
    (
        share(cpu, n.allocatable.milli_cpu),
        share(mem, n.allocatable.memory),
    )
}

/// Judge `candidates` in turn (emptiest first): `snapshot` is the cluster,
/// `unavailable` nodes that take no pod in the simulation (being removed),
/// `removable` how many nodes each pool may lose (size minus min size; it
/// is spent by the nodes found unneeded) and `threshold` the utilization
/// below which a node is a candidate.
pub fn find_unneeded(
    snapshot: &Snapshot,
    candidates: &[Candidate],
    unavailable: &BTreeSet<String>,
    removable: &mut BTreeMap<String, i32>,
    threshold: f64,
) -> BTreeMap<String, Verdict> {
    let mut out = BTreeMap::new();
    let mut dests: BTreeMap<String, NodeInfo> = snapshot
        .nodes
        .iter()
        .filter(|(n, _)| !unavailable.contains(*n))
        .map(|(n, i)| (n.clone(), i.clone()))
        .collect();
    let mut order: Vec<(&Candidate, (f64, f64))> = candidates
        .iter()
        .filter_map(|c| Some((c, utilization(snapshot.nodes.get(&c.node)?))))
        .collect();
    order.sort_by(|a, b| {
        let (x, y) = (a.1 .0 + a.1 .1, b.1 .0 + b.1 .1);
        x.partial_cmp(&y)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.0.node.cmp(&b.0.node))
    });
    for (c, (cpu, memory)) in order {
        if cpu >= threshold || memory >= threshold {
            out.insert(c.node.clone(), Verdict::Busy { cpu, memory });
            continue;
        }
        let verdict = judge(
            &c.node,
            snapshot,
            &mut dests,
            removable.get(&c.pool).copied(),
        );
        if verdict == Verdict::Unneeded {
            *removable.entry(c.pool.clone()).or_insert(0) -= 1;
        }
        out.insert(c.node.clone(), verdict);
    }
    out
}

/// One node: its pods' blockers, the pool's min size, then whether its
/// pods fit elsewhere (on success `dests` holds them there and no longer
/// holds the node).
fn judge(
    node: &str,
    snapshot: &Snapshot,
    dests: &mut BTreeMap<String, NodeInfo>,
    removable: Option<i32>,
) -> Verdict {
    let pods: Vec<&PodInfo> = snapshot
        .nodes
        .get(node)
        .map(|n| n.pods.values().collect())
        .unwrap_or_default();
    let mut moving = Vec::new();
    for p in pods {
        if p.pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let Some(b) = pod_blocker(&p.pod) {
            return Verdict::Kept(format!("pod {} keeps it: {b}", pod_key(&p.pod)));
        }
        if !is_daemon(&p.pod) {
            moving.push(p.clone());
        }
    }
    if removable.unwrap_or(0) <= 0 {
        return Verdict::Kept("its pool is at its min size".into());
    }
    let mut trial: Vec<NodeInfo> = dests
        .iter()
        .filter(|(n, _)| n.as_str() != node)
        .map(|(_, i)| i.clone())
        .collect();
    for p in &moving {
        if let Err(why) = place(p, &mut trial) {
            let why = if why.is_empty() {
                "there is no other node".to_string()
            } else {
                reasons(&why)
            };
            return Verdict::Kept(format!("pod {} fits no other node: {why}", pod_key(&p.pod)));
        }
    }
    *dests = trial
        .into_iter()
        .map(|i| (i.name().to_string(), i))
        .collect();
    Verdict::Unneeded
}
