//! The scale-up decision: which pending pods need a new node, which pool
//! grows for them and by how many nodes.
//!
//! Pending pods are first tried on the nodes there are and on the nodes on
//! their way (the pools' templates under the names asked for), so that a
//! node still booting is not asked for twice. The rest are bin-packed,
//! first fit in priority order, on new template nodes of each pool within
//! its room (max size, and the cluster's max total); each pool that helps
//! is an option, and the expander picks one.

use std::collections::BTreeMap;
use std::sync::Arc;

use flotilla_objects::core::{Node, Pod};
use flotilla_scheduler::{filter, NodeInfo, PodInfo};
use rand::Rng;

use crate::simulate::{place, pod_key, reasons, Snapshot};
use crate::template::NoTemplate;

/// How the pool to grow is chosen among those that would help
/// (cluster-autoscaler's expanders).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expander {
    /// The least idle CPU and memory on the new nodes (then the most pods).
    #[default]
    LeastWaste,
    /// The most pods placed (then the least waste).
    MostPods,
    /// The pool with the highest `spec.priority` (then the least waste).
    Priority,
    /// Any of them.
    Random,
}

impl std::str::FromStr for Expander {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "least-waste" => Expander::LeastWaste,
            "most-pods" => Expander::MostPods,
            "priority" => Expander::Priority,
            "random" => Expander::Random,
            other => {
                return Err(format!(
                    "unknown expander {other:?}: least-waste, most-pods, priority or random"
                ))
            }
        })
    }
}

/// A pool as the scale-up sees it.
#[derive(Debug, Clone)]
pub struct PoolCandidate {
    pub name: String,
    /// A node of the pool that does not exist yet.
    pub template: Result<Node, NoTemplate>,
    /// Nodes the pool has or is getting (its target size).
    pub size: i32,
    pub max_size: i32,
    pub priority: i32,
}

/// One way to help: grow `pool` by `nodes` for `pods`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleUpOption {
    pub pool: String,
    pub nodes: i32,
    /// The pods it would place ("namespace/name").
    pub pods: Vec<String>,
    /// Idle share of CPU plus idle share of memory on the new nodes (0..2).
    pub waste: f64,
    pub priority: i32,
}

/// What the scale-up found.
#[derive(Debug, Clone, Default)]
pub struct ScaleUpPlan {
    /// Pods that fit a node there is or one on its way.
    pub fits_now: Vec<String>,
    /// Every pool that would help.
    pub options: Vec<ScaleUpOption>,
    /// The one the expander chose.
    pub chosen: Option<ScaleUpOption>,
    /// Pods the chosen option does not place, with why no pool helps them.
    pub not_helped: BTreeMap<String, String>,
}

fn order(pods: &[Arc<Pod>]) -> Vec<Arc<Pod>> {
    let mut v = pods.to_vec();
    v.sort_by(|a, b| {
        b.spec
            .priority
            .unwrap_or(0)
            .cmp(&a.spec.priority.unwrap_or(0))
            .then(
                a.metadata
                    .creation_timestamp
                    .cmp(&b.metadata.creation_timestamp),
            )
            .then(pod_key(a).cmp(&pod_key(b)))
    });
    v
}

/// Bin-pack `pods` on new nodes of one pool: the option, and why each pod
/// it leaves out was left out.
fn pack(
    pool: &PoolCandidate,
    pods: &[PodInfo],
    cluster_room: Option<i32>,
) -> (Option<ScaleUpOption>, BTreeMap<String, String>) {
    let mut why = BTreeMap::new();
    let template = match &pool.template {
        Ok(t) => t,
        Err(e) => {
            for p in pods {
                why.insert(p.key(), e.to_string());
            }
            return (None, why);
        }
    };
    let mut room = (pool.max_size - pool.size).max(0);
    if let Some(c) = cluster_room {
        room = room.min(c.max(0));
    }
    let mut new: Vec<NodeInfo> = Vec::new();
    let mut placed = Vec::new();
    for p in pods {
        if place(p, &mut new).is_ok() {
            placed.push(p.key());
            continue;
        }
        let mut node = template.clone();
        node.metadata.name = format!("{}-new-{}", pool.name, new.len());
        let mut fresh = NodeInfo::new(Arc::new(node));
        match filter(p, &fresh) {
            Ok(()) if (new.len() as i32) < room => {
                fresh.add_pod(p.clone());
                new.push(fresh);
                placed.push(p.key());
            }
            Ok(()) => {
                let limit = if cluster_room.is_some_and(|c| c <= room) {
                    "the cluster's max nodes total"
                } else {
                    "its max size"
                };
                why.insert(
                    p.key(),
                    format!(
                        "pool {}: would need more nodes than {limit} allows ({}/{})",
                        pool.name, pool.size, pool.max_size
                    ),
                );
            }
            Err(e) => {
                why.insert(p.key(), format!("pool {}: {}", pool.name, reasons(&e)));
            }
        }
    }
    if new.is_empty() {
        return (None, why);
    }
    let (mut alloc_cpu, mut alloc_mem, mut req_cpu, mut req_mem) = (0i64, 0i64, 0i64, 0i64);
    for n in &new {
        alloc_cpu += n.allocatable.milli_cpu;
        alloc_mem += n.allocatable.memory;
        req_cpu += n.requested.milli_cpu;
        req_mem += n.requested.memory;
    }
    let share = |req: i64, alloc: i64| {
        if alloc > 0 {
            (alloc - req) as f64 / alloc as f64
        } else {
            0.0
        }
    };
    let opt = ScaleUpOption {
        pool: pool.name.clone(),
        nodes: new.len() as i32,
        pods: placed,
        waste: share(req_cpu, alloc_cpu) + share(req_mem, alloc_mem),
        priority: pool.priority,
    };
    (Some(opt), why)
}

/// Pick among `options` as `expander` says.
pub fn choose(
    options: &[ScaleUpOption],
    expander: Expander,
    rng: &mut impl Rng,
) -> Option<ScaleUpOption> {
    use std::cmp::Ordering;
    if options.is_empty() {
        return None;
    }
    let waste = |a: &ScaleUpOption, b: &ScaleUpOption| {
        a.waste.partial_cmp(&b.waste).unwrap_or(Ordering::Equal)
    };
    let pods = |a: &ScaleUpOption, b: &ScaleUpOption| b.pods.len().cmp(&a.pods.len());
    let mut v = options.to_vec();
    match expander {
        Expander::LeastWaste => v.sort_by(|a, b| waste(a, b).then(pods(a, b))),
        Expander::MostPods => v.sort_by(|a, b| pods(a, b).then(waste(a, b))),
        Expander::Priority => v.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then(waste(a, b))
                .then(pods(a, b))
        }),
        Expander::Random => {
            let i = rng.gen_range(0..v.len());
            return Some(v.swap_remove(i));
        }
    }
    // Ties fall to the pool's name, so the choice does not depend on the
    // order pools were listed in.
    let best = v[0].clone();
    v.into_iter()
        .take_while(|o| {
            o.waste == best.waste && o.pods.len() == best.pods.len() && o.priority == best.priority
        })
        .min_by(|a, b| a.pool.cmp(&b.pool))
        .or(Some(best))
}

/// Decide a scale-up for `pending` (unschedulable pods): `snapshot` holds
/// the nodes there are, `upcoming` the nodes asked for and not registered
/// (as their pools' templates), `pools` the pools that may grow, and
/// `cluster_room` how many more nodes the cluster may have (None: no limit).
pub fn plan(
    pending: &[Arc<Pod>],
    snapshot: &Snapshot,
    upcoming: Vec<Node>,
    pools: &[PoolCandidate],
    cluster_room: Option<i32>,
    expander: Expander,
    rng: &mut impl Rng,
) -> ScaleUpPlan {
    let mut out = ScaleUpPlan::default();
    let mut nodes: Vec<NodeInfo> = snapshot.nodes.values().cloned().collect();
    nodes.extend(upcoming.into_iter().map(|n| NodeInfo::new(Arc::new(n))));
    let mut rest = Vec::new();
    for p in order(pending) {
        let info = PodInfo::new(p);
        match place(&info, &mut nodes) {
            Ok(_) => out.fits_now.push(info.key()),
            Err(_) => rest.push(info),
        }
    }
    if rest.is_empty() {
        return out;
    }
    let mut why: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pool in pools {
        let (opt, w) = pack(pool, &rest, cluster_room);
        for (k, r) in w {
            why.entry(k).or_default().push(r);
        }
        out.options.extend(opt);
    }
    out.chosen = choose(&out.options, expander, rng);
    for p in &rest {
        let key = p.key();
        if out.chosen.as_ref().is_some_and(|c| c.pods.contains(&key)) {
            continue;
        }
        let reason = match why.get(&key) {
            Some(r) if !r.is_empty() => r.join("; "),
            _ if pools.is_empty() => "no node pool may grow".to_string(),
            _ => "another pool was chosen for other pods; it will be tried again".to_string(),
        };
        out.not_helped.insert(key, reason);
    }
    out
}
