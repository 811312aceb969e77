//! Node lifecycle, as Kubernetes' node lifecycle controller and its
//! NoExecute taint manager do it:
//!
//! - a node whose agent has not reported for the grace period (40 s by
//!   default; the last report is the later of its Ready condition's
//!   heartbeat and its Lease's renewTime in `kube-node-lease`) gets its
//!   conditions set to Unknown (NodeStatusUnknown, "Kubelet stopped posting
//!   node status.") and the `node.kubernetes.io/unreachable:NoExecute`
//!   taint; a node whose agent reports Ready=False gets
//!   `node.kubernetes.io/not-ready:NoExecute`; both go when it is Ready
//!   again;
//! - pods on a node with a NoExecute taint they do not tolerate are
//!   deleted at once, those that tolerate it for `tolerationSeconds` (300 s
//!   by default, added at admission) once that time has passed since the
//!   taint was added, so that their controllers recreate them elsewhere;
//! - tainting is rate-limited (one node every 10 s by default), and when
//!   more than 55% of the nodes are not ready (at least three nodes), no
//!   node is tainted at all: when most nodes go silent at once, it is more
//!   likely that the masters are the ones cut off, and evicting everything
//!   would only make things worse.

mod evict;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use flotilla_objects::api::{ApiError, ObjectApi, Reason};
use flotilla_objects::coordination::Lease;
use flotilla_objects::core::{Node, NodeCondition, Pod, Taint};
use flotilla_objects::{Time, TAINT_NOT_READY, TAINT_UNREACHABLE};
use flotilla_runtime::{
    Action, Controller, Informer, LeaderContext, LeaderLoop, ObjectRef, Reconciler,
};
use futures::future::BoxFuture;
use serde_json::json;

pub use evict::eviction_due;

pub const COMPONENT: &str = "node-lifecycle-controller";

/// The knobs, with Kubernetes' defaults.
#[derive(Debug, Clone, Copy)]
pub struct NodeLifecycle {
    /// How long a node may stay silent before it is marked Unknown.
    pub grace_period: Duration,
    /// Nodes tainted per second (0.1: one every 10 s).
    pub taint_rate: f64,
    /// The share of not-ready nodes above which nothing is tainted.
    pub unhealthy_threshold: f64,
    /// How often every node is looked at again.
    pub monitor_period: Duration,
}

impl Default for NodeLifecycle {
    fn default() -> Self {
        NodeLifecycle {
            grace_period: Duration::from_secs(40),
            taint_rate: 0.1,
            unhealthy_threshold: 0.55,
            monitor_period: Duration::from_secs(5),
        }
    }
}

/// A source of the agents' heartbeats besides the Node object (their
/// Leases): the last renewal per node.
pub type Heartbeats = Arc<dyn Fn(&str) -> Option<DateTime<Utc>> + Send + Sync>;

impl LeaderLoop for NodeLifecycle {
    fn name(&self) -> &'static str {
        COMPONENT
    }

    fn run(&self, ctx: LeaderContext) -> BoxFuture<'static, ()> {
        let cfg = *self;
        Box::pin(async move {
            let nodes = ctx.informers.get::<Node>();
            let pods = ctx.informers.get::<Pod>();
            crate::pods::index_by_node(&pods);
            let leases = ctx.informers.get::<Lease>();
            let heartbeats = leases::heartbeats(leases.clone());
            let r = Arc::new(Lifecycle {
                api: ctx.api.clone(),
                nodes: nodes.clone(),
                cfg,
                heartbeats,
                limiter: Mutex::new(Bucket::new(cfg.taint_rate)),
                seen: Mutex::new(HashMap::new()),
            });
            let evictor = evict::Evictor::new(ctx.api.clone(), nodes.clone(), pods.clone());
            let stop = ctx.stop.clone();
            tokio::spawn(async move { evictor.run(stop).await });
            // A node's heartbeat may be its Lease alone: an unfilled lease
            // cache would make every such node look silent.
            Controller::new(COMPONENT, nodes)
                .reads(&leases)
                .run(r, ctx.stop)
                .await
        })
    }
}

mod leases {
    //! Heartbeats from the agents' Leases in `kube-node-lease`.
    use std::sync::Arc;

    use flotilla_objects::coordination::{Lease, NODE_LEASE_NAMESPACE};
    use flotilla_runtime::Informer;

    use super::Heartbeats;

    pub fn heartbeats(leases: Informer<Lease>) -> Heartbeats {
        Arc::new(move |node| {
            leases
                .get(NODE_LEASE_NAMESPACE, node)
                .and_then(|l| l.spec.renew_time)
                .map(|t| t.0)
        })
    }
}

/// A token bucket for tainting nodes.
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64) -> Self {
        Bucket {
            rate,
            tokens: 1.0,
            at: Instant::now(),
        }
    }

    /// Take a token, or say how long until one is there.
    fn take(&mut self) -> Result<(), Duration> {
        let now = Instant::now();
        self.tokens =
            (self.tokens + self.rate * now.duration_since(self.at).as_secs_f64()).min(1.0);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        if self.rate <= 0.0 {
            return Err(Duration::from_secs(3600));
        }
        Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
    }
}

/// A node's last heartbeat, and when this master first saw it.
type Seen = (Option<DateTime<Utc>>, Instant);

struct Lifecycle {
    api: Arc<dyn ObjectApi>,
    nodes: Informer<Node>,
    cfg: NodeLifecycle,
    heartbeats: Heartbeats,
    limiter: Mutex<Bucket>,
    /// Per node: the heartbeat last seen, and when (on this master's
    /// clock) it was first seen: silence is measured locally, so that
    /// clocks that disagree do not make a node look dead.
    seen: Mutex<HashMap<String, Seen>>,
}

fn ready(n: &Node) -> Option<&NodeCondition> {
    n.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
}

fn has_taint(n: &Node, key: &str) -> bool {
    n.spec
        .taints
        .iter()
        .any(|t| t.key == key && t.effect == "NoExecute")
}

/// What the node's NoExecute taints should be, given its Ready status.
fn wanted_taint(status: &str) -> Option<&'static str> {
    match status {
        "True" => None,
        "False" => Some(TAINT_NOT_READY),
        _ => Some(TAINT_UNREACHABLE),
    }
}

impl Lifecycle {
    /// How long this node has been silent, on this master's clock.
    fn silence(&self, n: &Node) -> Duration {
        let name = &n.metadata.name;
        let beat = [
            ready(n).and_then(|c| c.last_heartbeat_time).map(|t| t.0),
            (self.heartbeats)(name),
        ]
        .into_iter()
        .flatten()
        .max();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let entry = seen.entry(name.clone()).or_insert((beat, Instant::now()));
        if entry.0 != beat {
            *entry = (beat, Instant::now());
        }
        entry.1.elapsed()
    }

    /// Whether most nodes are not ready (then no taints are added). A node
    /// that will be marked Unknown within one monitor period counts as not
    /// ready already: nodes that went silent together are judged together,
    /// as Kubernetes' sweep over all nodes does.
    fn full_disruption(&self) -> bool {
        let nodes = self.nodes.list();
        if nodes.len() < 3 {
            return false;
        }
        let soon = self
            .cfg
            .grace_period
            .saturating_sub(self.cfg.monitor_period);
        let unhealthy = nodes
            .iter()
            .filter(|n| ready(n).is_none_or(|c| c.status != "True") || self.silence(n) >= soon)
            .count();
        unhealthy as f64 / nodes.len() as f64 > self.cfg.unhealthy_threshold
    }

    async fn mark_unknown(&self, n: &Node) -> Result<(), ApiError> {
        let now = Time::now();
        let mut conditions = n.status.clone().unwrap_or_default().conditions;
        if conditions.iter().all(|c| c.type_ != "Ready") {
            conditions.push(NodeCondition {
                type_: "Ready".into(),
                ..Default::default()
            });
        }
        for c in &mut conditions {
            if c.status != "Unknown" {
                c.status = "Unknown".into();
                c.last_transition_time = Some(now);
            }
            c.reason = "NodeStatusUnknown".into();
            c.message = "Kubelet stopped posting node status.".into();
        }
        let p = json!({"metadata": {"resourceVersion": n.metadata.resource_version}, "status": {"conditions": conditions}});
        self.api
            .patch("nodes", "", &n.metadata.name, p, true, false)
            .await?;
        tracing::warn!(node = %n.metadata.name, "node stopped reporting; marked Unknown");
        Ok(())
    }

    async fn set_taints(&self, n: &Node, want: Option<&str>) -> Result<(), ApiError> {
        let mut taints: Vec<Taint> = n
            .spec
            .taints
            .iter()
            .filter(|t| {
                !(t.effect == "NoExecute"
                    && (t.key == TAINT_NOT_READY || t.key == TAINT_UNREACHABLE)
                    && Some(t.key.as_str()) != want)
            })
            .cloned()
            .collect();
        if let Some(key) = want {
            if !taints
                .iter()
                .any(|t| t.key == key && t.effect == "NoExecute")
            {
                taints.push(Taint {
                    key: key.into(),
                    value: String::new(),
                    effect: "NoExecute".into(),
                    time_added: Some(Time::now()),
                });
            }
        }
        let p = json!({"metadata": {"resourceVersion": n.metadata.resource_version}, "spec": {"taints": taints}});
        self.api
            .patch("nodes", "", &n.metadata.name, p, false, false)
            .await?;
        tracing::info!(node = %n.metadata.name, taint = ?want, "node taints updated");
        Ok(())
    }

    async fn sync(&self, n: &Node) -> Result<Action, ApiError> {
        let silent = self.silence(n);
        let status = ready(n).map_or("Unknown", |c| c.status.as_str());
        if silent >= self.cfg.grace_period && status != "Unknown" {
            self.mark_unknown(n).await?;
            // The write comes back as a change: the next pass taints.
            return Ok(Action::Await);
        }
        let want = wanted_taint(status);
        let have_right = match want {
            Some(k) => has_taint(n, k),
            None => true,
        };
        let stale = [TAINT_NOT_READY, TAINT_UNREACHABLE]
            .into_iter()
            .any(|k| has_taint(n, k) && Some(k) != want);
        if stale || !have_right {
            if want.is_some() && !have_right {
                if self.full_disruption() {
                    tracing::warn!(node = %n.metadata.name, "most nodes are not ready: not tainting (the masters may be the ones cut off)");
                    return Ok(Action::RequeueAfter(self.cfg.monitor_period));
                }
                let wait = self
                    .limiter
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                if let Err(wait) = wait {
                    return Ok(Action::RequeueAfter(wait));
                }
            }
            self.set_taints(n, want).await?;
            return Ok(Action::Await);
        }
        // Look again when the grace period would run out.
        let left = self.cfg.grace_period.saturating_sub(silent);
        Ok(Action::RequeueAfter(if status == "Unknown" {
            self.cfg.monitor_period
        } else {
            left.max(Duration::from_millis(100))
        }))
    }
}

#[async_trait::async_trait]
impl Reconciler<Node> for Lifecycle {
    type Error = ApiError;

    async fn reconcile(&self, key: &ObjectRef, obj: Option<Arc<Node>>) -> Result<Action, ApiError> {
        if obj.is_none() {
            self.seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key.name);
            return Ok(Action::Await);
        }
        let Some(n) = self.nodes.get_ref(key) else {
            return Ok(Action::Await);
        };
        match self.sync(&n).await {
            Err(e) if e.is(Reason::Conflict) => Ok(Action::RequeueAfter(Duration::from_millis(50))),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests;
