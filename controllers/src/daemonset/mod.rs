//! DaemonSets: one pod on every eligible node, as Kubernetes' DaemonSet
//! controller keeps them.
//!
//! A node is eligible when it matches the template's nodeSelector and its
//! NoSchedule and NoExecute taints are tolerated, counting the tolerations
//! every daemon pod gets (not-ready, unreachable, disk/memory/pid pressure,
//! unschedulable: daemons keep running on cordoned and failing nodes, as
//! in Kubernetes). Each pass:
//! - creates a pod, bound to the node (`spec.nodeName`), on each eligible
//!   node without one, in slow-start batches;
//! - deletes pods on nodes that are no longer eligible or gone, extra pods
//!   on a node (the newest go), and failed pods (recreated next pass);
//! - rolls out a new template (pods labelled with its hash,
//!   `controller-revision-hash`): RollingUpdate deletes old pods while at
//!   most `maxUnavailable` nodes lack an available pod, or, with `maxSurge`,
//!   starts the new pod beside the old one and deletes the old one once
//!   the new one is available; OnDelete replaces only pods users delete;
//! - writes the status counts.
//!
//! Pods are placed by the controller itself rather than through the
//! scheduler, as Kubernetes did before 1.12: node affinity by name lands
//! together with the scheduler's affinity support.

mod nodes;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::pods::usable_selector;
use chrono::Utc;
use flotilla_client::events::Recorder;
use flotilla_objects::api::{ApiError, ObjectApi, Reason};
use flotilla_objects::apps::DaemonSet;
use flotilla_objects::core::{Node, Pod};
use flotilla_objects::meta::IntOrString;
use flotilla_runtime::informer::BY_NAMESPACE;
use flotilla_runtime::{
    Action, Controller, Informer, LeaderContext, LeaderLoop, ObjectRef, Reconciler,
};
use futures::future::BoxFuture;
use serde_json::json;

use crate::deployment::template_hash;
use crate::pods::{
    claim_pods, create_pods, delete_pods, is_available, is_ready, latest, owner_ref, phase,
    pod_from_template, until_available, Freshness,
};

pub use nodes::{daemon_tolerations, eligible, tolerates};

pub const COMPONENT: &str = "daemonset-controller";
/// The label with the hash of the template a daemon pod was made from.
pub const HASH_LABEL: &str = "controller-revision-hash";

/// The leader loop.
#[derive(Default)]
pub struct DaemonSetLoop;

impl LeaderLoop for DaemonSetLoop {
    fn name(&self) -> &'static str {
        COMPONENT
    }

    fn run(&self, ctx: LeaderContext) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let sets = ctx.informers.get::<DaemonSet>();
            let nodes = ctx.informers.get::<Node>();
            let pods = ctx.informers.get::<Pod>();
            let r = Arc::new(DaemonSets {
                api: ctx.api.clone(),
                sets: sets.clone(),
                nodes: nodes.clone(),
                pods: pods.clone(),
                recorder: Recorder::new(ctx.api.clone(), COMPONENT),
                fresh: Freshness::default(),
            });
            // Any node change may change where every daemon set runs.
            let all = sets.clone();
            Controller::new(COMPONENT, sets)
                .owns(pods)
                .watches(nodes, move |_: &Node| {
                    all.list()
                        .iter()
                        .map(|d| ObjectRef::of(d.as_ref()))
                        .collect()
                })
                .run(r, ctx.stop)
                .await
        })
    }
}

struct DaemonSets {
    api: Arc<dyn ObjectApi>,
    sets: Informer<DaemonSet>,
    nodes: Informer<Node>,
    pods: Informer<Pod>,
    recorder: Recorder,
    fresh: Freshness,
}

/// `maxUnavailable` or `maxSurge` as a number of nodes (percentages of the
/// desired count; unavailable rounds down but at least one is allowed when
/// surge is 0, surge rounds up), as Kubernetes resolves them.
fn resolve(v: Option<&IntOrString>, desired: i32, round_up: bool) -> i32 {
    match v {
        None => 0,
        Some(IntOrString::Int(n)) => (*n).max(0),
        Some(IntOrString::String(s)) => {
            let pct: f64 = s.trim_end_matches('%').parse().unwrap_or(0.0);
            let raw = pct * f64::from(desired) / 100.0;
            (if round_up { raw.ceil() } else { raw.floor() }) as i32
        }
    }
}

/// What one pass decided for one node.
#[derive(Default)]
struct NodePlan {
    create: Vec<String>,
    delete: Vec<Arc<Pod>>,
}

impl DaemonSets {
    async fn sync(&self, key: &ObjectRef, ds: &DaemonSet) -> Result<Action, ApiError> {
        let Some(selector) = usable_selector(ds.spec.selector.as_ref()) else {
            return Ok(Action::Await);
        };
        let candidates = self.pods.by_index(BY_NAMESPACE, &key.namespace);
        let (owned, wrote) = claim_pods(&self.api, ds, &selector, candidates).await?;
        self.fresh.note(key, wrote);
        if ds.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Await);
        }
        let hash = template_hash(
            &ds.spec.template,
            ds.status
                .as_ref()
                .and_then(|s| s.collision_count)
                .unwrap_or(0),
        );
        let now = Utc::now();
        let mrs = ds.spec.min_ready_seconds;
        let live = |p: &Pod| p.metadata.deletion_timestamp.is_none();
        let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
        for p in owned.iter().filter(|p| live(p)) {
            by_node
                .entry(p.spec.node_name.clone())
                .or_default()
                .push(p.clone());
        }
        let nodes = self.nodes.list();
        let mut plan = NodePlan::default();
        let (mut desired, mut scheduled, mut misscheduled) = (0, 0, 0);
        let (mut ready, mut available, mut updated) = (0, 0, 0);
        // Nodes whose daemon is of the old template, per rollout step.
        let mut old_only: Vec<(String, Arc<Pod>)> = Vec::new();
        let mut unavailable_nodes = 0;
        let mut surging = 0;
        for node in &nodes {
            let name = &node.metadata.name;
            let mut pods = by_node.remove(name).unwrap_or_default();
            if !eligible(node, &ds.spec.template.spec) {
                if !pods.is_empty() {
                    misscheduled += 1;
                    plan.delete.extend(pods);
                }
                continue;
            }
            desired += 1;
            // Failed pods go; the node gets a new one on a later pass.
            let (failed, rest): (Vec<_>, Vec<_>) =
                pods.drain(..).partition(|p| phase(p) == "Failed");
            plan.delete.extend(failed);
            pods = rest;
            if pods.is_empty() {
                plan.create.push(name.clone());
                unavailable_nodes += 1;
                continue;
            }
            scheduled += 1;
            // Oldest first; at most one of each template is kept.
            pods.sort_by_key(|p| p.metadata.creation_timestamp);
            let is_new = |p: &Pod| p.metadata.labels.get(HASH_LABEL) == Some(&hash);
            let new = pods.iter().find(|p| is_new(p)).cloned();
            let old = pods.iter().find(|p| !is_new(p)).cloned();
            for p in &pods {
                let keep = new.as_ref().is_some_and(|n| Arc::ptr_eq(n, p))
                    || old.as_ref().is_some_and(|o| Arc::ptr_eq(o, p));
                if !keep {
                    plan.delete.push(p.clone());
                }
            }
            let counted = new.clone().or_else(|| old.clone());
            if let Some(p) = &counted {
                ready += i32::from(is_ready(p));
                if is_available(p, mrs, now) {
                    available += 1;
                } else {
                    unavailable_nodes += 1;
                }
            }
            match (&new, &old) {
                (Some(n), Some(o)) => {
                    updated += 1;
                    surging += 1;
                    // A surge pod replaced its old one once available.
                    if is_available(n, mrs, now) {
                        plan.delete.push(o.clone());
                    }
                }
                (Some(_), None) => updated += 1,
                (None, Some(o)) => old_only.push((name.clone(), o.clone())),
                (None, None) => {}
            }
        }
        // Pods on nodes that no longer exist.
        for (_, pods) in by_node {
            misscheduled += 1;
            plan.delete.extend(pods);
        }
        // The rollout's next step.
        if ds.spec.update_strategy.type_ != "OnDelete" {
            let ru = ds
                .spec
                .update_strategy
                .rolling_update
                .clone()
                .unwrap_or_default();
            let max_surge = resolve(ru.max_surge.as_ref(), desired, true);
            let mut max_unavailable = resolve(ru.max_unavailable.as_ref(), desired, false);
            if max_surge == 0 && max_unavailable == 0 {
                max_unavailable = 1;
            }
            // Not-available old pods first: replacing them costs nothing.
            old_only.sort_by_key(|(_, p)| is_available(p, mrs, now));
            let mut budget_unavailable = (max_unavailable - unavailable_nodes).max(0);
            let mut budget_surge = (max_surge - surging).max(0);
            for (node, p) in old_only {
                if !is_available(&p, mrs, now) {
                    plan.delete.push(p);
                } else if budget_surge > 0 {
                    budget_surge -= 1;
                    plan.create.push(node);
                } else if budget_unavailable > 0 {
                    budget_unavailable -= 1;
                    plan.delete.push(p);
                }
            }
        }
        let mut error = None;
        if !plan.delete.is_empty() {
            let w = delete_pods(&self.api, &self.recorder, ds, &plan.delete).await;
            self.fresh.note(key, w.revision);
            error = w.error;
        }
        if !plan.create.is_empty() && error.is_none() {
            let pods = plan
                .create
                .iter()
                .map(|node| {
                    let mut p = pod_from_template(
                        &ds.spec.template,
                        &key.namespace,
                        &key.name,
                        owner_ref(ds),
                    );
                    p.metadata.labels.insert(HASH_LABEL.into(), hash.clone());
                    p.spec.node_name = node.clone();
                    for t in daemon_tolerations(&p.spec) {
                        p.spec.tolerations.push(t);
                    }
                    p
                })
                .collect();
            let w = create_pods(&self.api, &self.recorder, ds, pods).await;
            self.fresh.note(key, w.revision);
            error = w.error;
        }
        let status = json!({
            "desiredNumberScheduled": desired,
            "currentNumberScheduled": scheduled,
            "numberMisscheduled": misscheduled,
            "numberReady": ready,
            "numberAvailable": available,
            "numberUnavailable": (desired - available).max(0),
            "updatedNumberScheduled": updated,
            "observedGeneration": ds.metadata.generation,
        });
        let prev = ds
            .status
            .as_ref()
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let changed = status
            .as_object()
            .into_iter()
            .flatten()
            .any(|(k, v)| prev.as_ref().and_then(|p| p.get(k)).unwrap_or(&json!(0)) != v);
        if changed {
            match self
                .api
                .patch(
                    "daemonsets",
                    &key.namespace,
                    &key.name,
                    json!({"status": status}),
                    true,
                    false,
                )
                .await
            {
                Ok(_) => {}
                Err(e) if e.is(Reason::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(e) = error {
            return Err(e);
        }
        let next = owned
            .iter()
            .filter_map(|p| until_available(p, mrs, now))
            .min();
        Ok(next.map_or(Action::Await, |d| {
            Action::RequeueAfter(d + Duration::from_millis(50))
        }))
    }
}

#[async_trait::async_trait]
impl Reconciler<DaemonSet> for DaemonSets {
    type Error = ApiError;

    async fn reconcile(
        &self,
        key: &ObjectRef,
        obj: Option<Arc<DaemonSet>>,
    ) -> Result<Action, ApiError> {
        if obj.is_none() {
            return Ok(Action::Await);
        }
        match latest(&self.fresh, key, &self.pods, &self.sets).await {
            Ok(ds) => self.sync(key, &ds).await,
            Err(action) => Ok(action),
        }
    }
}

#[cfg(test)]
mod tests;
