//! The scheduling loop of one term: informers in, decisions out.
//!
//! One task applies informer changes to the cache and the queue; one task
//! takes pods from the queue, decides under the cache's lock (so decisions
//! are made one at a time against everything assumed so far), assumes the
//! pod and hands the binding to a task of its own (at most
//! [`BIND_CONCURRENCY`] at once); failures go back to the queue.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_objects::api::{DeleteParams, ObjectApi};
use flotilla_objects::core::{Node, Pod, PodCondition};
use flotilla_objects::registry;
use flotilla_objects::Time;
use flotilla_runtime::{Change, Informer, LeaderContext, LeaderLoop};
use futures::future::BoxFuture;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::algorithm::{find_preemption, may_preempt, schedule_one, Preemption};
use crate::cache::{is_terminal, Cache};
use crate::events::{Recorder, COMPONENT};
use crate::nodeinfo::PodInfo;
use crate::queue::{pod_key, SchedulingQueue};

/// Bindings (and unschedulable reports) in flight at once.
pub const BIND_CONCURRENCY: usize = 256;
/// How often backed-off pods are looked at.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// The scheduler as a leader loop.
#[derive(Default)]
pub struct Scheduler;

impl LeaderLoop for Scheduler {
    fn name(&self) -> &'static str {
        "scheduler"
    }

    fn run(&self, ctx: LeaderContext) -> BoxFuture<'static, ()> {
        Box::pin(run(ctx))
    }
}

struct Shared {
    cache: Mutex<Cache>,
    queue: SchedulingQueue,
    api: Arc<dyn ObjectApi>,
    events: Recorder,
    binds: Arc<Semaphore>,
}

impl Shared {
    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn ours(p: &Pod) -> bool {
    p.spec.scheduler_name.is_empty() || p.spec.scheduler_name == COMPONENT
}

/// Whether a node change may let a parked pod fit.
fn node_changed(old: &Node, new: &Node) -> bool {
    let ready = |n: &Node| {
        n.status.as_ref().map(|s| {
            (
                s.allocatable.clone(),
                s.capacity.clone(),
                s.conditions
                    .iter()
                    .find(|c| c.type_ == "Ready")
                    .map(|c| c.status.clone()),
            )
        })
    };
    old.spec != new.spec || old.metadata.labels != new.metadata.labels || ready(old) != ready(new)
}

impl Shared {
    fn on_pod(&self, p: Arc<Pod>) {
        let key = pod_key(&p);
        if !p.spec.node_name.is_empty() {
            self.queue.remove(&key);
            let freed = {
                let mut c = self.cache();
                c.forget_nomination(&key);
                if is_terminal(&p) {
                    c.remove_pod(&key)
                } else {
                    c.add_bound_pod(p);
                    false
                }
            };
            if freed {
                self.queue.move_all();
            }
            return;
        }
        if p.metadata.deletion_timestamp.is_some() || is_terminal(&p) || !ours(&p) {
            self.queue.remove(&key);
            self.cache().forget_nomination(&key);
            return;
        }
        {
            let mut c = self.cache();
            if c.is_assumed(&key) {
                // Its binding is in flight.
                return;
            }
            // A nomination written by an earlier term (or this one) holds
            // the room its victims leave.
            let nominated = p.status.as_ref().map(|s| s.nominated_node_name.as_str());
            if let Some(n) = nominated.filter(|n| !n.is_empty()) {
                c.nominate(PodInfo::new(p.clone()), n);
            }
        }
        self.queue.add_or_update(p);
    }

    fn on_pod_deleted(&self, p: &Pod) {
        let key = pod_key(p);
        self.queue.remove(&key);
        let mut c = self.cache();
        c.forget_nomination(&key);
        let freed = c.remove_pod(&key);
        drop(c);
        if freed {
            self.queue.move_all();
        }
    }

    fn on_node(&self, n: Arc<Node>, old: Option<&Node>) {
        let wake = old.is_none_or(|o| node_changed(o, &n));
        self.cache().set_node(n);
        if wake {
            self.queue.move_all();
        }
    }

    /// Rebuild from the informers (after falling behind them), keeping
    /// what is assumed.
    fn resync(&self, pods: &Informer<Pod>, nodes: &Informer<Node>) {
        {
            let mut c = self.cache();
            let assumed = c.assumed_pods();
            c.clear();
            for n in nodes.list() {
                c.set_node(n);
            }
            for (info, node) in assumed {
                c.assume(info, &node);
            }
        }
        // Pending pods join the queue in the order they were created (the
        // cache lists them by name).
        let mut all = pods.list();
        all.sort_by(|a, b| {
            a.metadata
                .creation_timestamp
                .cmp(&b.metadata.creation_timestamp)
        });
        for p in all {
            self.on_pod(p);
        }
        self.queue.move_all();
    }

    /// Decide for one pod; binding and reporting go on in tasks.
    async fn schedule(self: &Arc<Self>, pod: Arc<Pod>, stop: &CancellationToken) {
        let key = pod_key(&pod);
        let info = PodInfo::new(pod.clone());
        let started = std::time::Instant::now();
        let decision = {
            let mut c = self.cache();
            if c.knows(&key) {
                // Bound (or being bound) meanwhile.
                self.queue.remove(&key);
                return;
            }
            match schedule_one(&mut c, &info) {
                Ok(node) => {
                    c.forget_nomination(&key);
                    c.assume(info, &node);
                    Ok(node)
                }
                Err(diag) => {
                    let pre = (diag.preemption_may_help() && may_preempt(&pod, &c))
                        .then(|| find_preemption(&c, &info))
                        .flatten();
                    if let Some(p) = &pre {
                        c.nominate(info, &p.node);
                    }
                    Err((diag.message(), pre))
                }
            }
        };
        crate::metrics::attempt(
            if decision.is_ok() {
                "scheduled"
            } else {
                "unschedulable"
            },
            started.elapsed(),
        );
        if decision.is_err() {
            self.queue.unschedulable(&key);
        }
        // Every task holds a permit, so that the term's end can wait for
        // them all (and a burst of bindings is bounded).
        let permit = tokio::select! {
            p = self.binds.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.cancelled() => return,
        };
        let me = self.clone();
        tokio::spawn(async move {
            match decision {
                Ok(node) => me.bind(pod, node).await,
                Err((message, pre)) => me.unschedulable(pod, message, pre).await,
            }
            drop(permit);
        });
    }

    async fn bind(&self, pod: Arc<Pod>, node: String) {
        let key = pod_key(&pod);
        let m = &pod.metadata;
        match self.api.bind(&m.namespace, &m.name, &node).await {
            Ok(_) => {
                self.queue.remove(&key);
                tracing::debug!(pod = %key, node = %node, "bound");
                self.events.normal(
                    &pod,
                    "Scheduled",
                    format!("Successfully assigned {key} to {node}"),
                );
            }
            Err(e) => {
                crate::metrics::ATTEMPTS.with_label_values(&["error"]).inc();
                tracing::debug!(pod = %key, node = %node, error = %e, "binding failed; will retry");
                self.cache().forget_assumed(&key);
                self.queue.retry(&key);
            }
        }
    }

    async fn unschedulable(&self, pod: Arc<Pod>, message: String, pre: Option<Preemption>) {
        let key = pod_key(&pod);
        let m = &pod.metadata;
        let mut nominated = pod
            .status
            .as_ref()
            .map(|s| s.nominated_node_name.clone())
            .unwrap_or_default();
        if let Some(pre) = pre {
            tracing::info!(pod = %key, node = %pre.node, victims = pre.victims.len(), "preempting");
            for v in &pre.victims {
                let dp = DeleteParams {
                    precondition_uid: v.metadata.uid.clone(),
                    ..Default::default()
                };
                match self
                    .api
                    .delete(
                        registry::POD.plural,
                        &v.metadata.namespace,
                        &v.metadata.name,
                        &dp,
                    )
                    .await
                {
                    Ok(_) => self.events.normal(
                        v,
                        "Preempted",
                        format!("Preempted by pod {} on node {}", m.uid, pre.node),
                    ),
                    Err(e) => {
                        tracing::debug!(victim = %v.metadata.name, error = %e, "could not preempt")
                    }
                }
            }
            nominated = pre.node;
        }
        tracing::debug!(pod = %key, %message, "unschedulable");
        let mut conds: Vec<PodCondition> = pod
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        let cur_nominated = pod
            .status
            .as_ref()
            .map(|s| s.nominated_node_name.as_str())
            .unwrap_or("");
        let now = Time::now();
        let message_copy = message.clone();
        match conds.iter().position(|c| c.type_ == "PodScheduled") {
            Some(i)
                if conds[i].status == "False"
                    && conds[i].reason == "Unschedulable"
                    && conds[i].message == message
                    && cur_nominated == nominated =>
            {
                return;
            }
            Some(i) => {
                let c = &mut conds[i];
                if c.status != "False" {
                    c.last_transition_time = Some(now);
                }
                c.status = "False".into();
                c.reason = "Unschedulable".into();
                c.message = message;
                c.last_probe_time = None;
            }
            None => conds.push(PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: "Unschedulable".into(),
                message,
                last_transition_time: Some(now),
                last_probe_time: None,
            }),
        }
        // One event per new reason, not per attempt: events are not
        // aggregated yet, and a pod parked for hours would otherwise write
        // one every minute.
        self.events.warning(&pod, "FailedScheduling", message_copy);
        let mut status = json!({ "conditions": conds });
        if !nominated.is_empty() {
            status["nominatedNodeName"] = json!(nominated);
        }
        let patch = json!({"metadata": {"resourceVersion": m.resource_version}, "status": status});
        if let Err(e) = self
            .api
            .patch(
                registry::POD.plural,
                &m.namespace,
                &m.name,
                patch,
                true,
                false,
            )
            .await
        {
            // The pod changed (its change brings it back) or went away.
            tracing::debug!(pod = %key, error = %e, "could not write the unschedulable condition");
        }
    }
}

async fn wait_synced(
    pods: &Informer<Pod>,
    nodes: &Informer<Node>,
    stop: &CancellationToken,
) -> bool {
    loop {
        if pods.is_synced() && nodes.is_synced() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = stop.cancelled() => return false,
        }
    }
}

async fn run(ctx: LeaderContext) {
    let pods = ctx.informers.get::<Pod>();
    let nodes = ctx.informers.get::<Node>();
    let mut pod_sub = pods.subscribe();
    let mut node_sub = nodes.subscribe();
    let stop = ctx.stop.clone();
    // Decide only on a complete picture.
    if !wait_synced(&pods, &nodes, &stop).await {
        return;
    }
    let sh = Arc::new(Shared {
        cache: Mutex::new(Cache::new()),
        queue: SchedulingQueue::new(),
        api: ctx.api.clone(),
        events: Recorder::start(ctx.api.clone(), stop.clone()),
        binds: Arc::new(Semaphore::new(BIND_CONCURRENCY)),
    });
    sh.resync(&pods, &nodes);
    tracing::info!(
        term = ctx.term,
        nodes = nodes.len(),
        pending = sh.queue.len(),
        "scheduler started"
    );
    let watcher = {
        let (sh, stop, pods, nodes) = (sh.clone(), stop.clone(), pods.clone(), nodes.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    c = pod_sub.next() => match c {
                        Some(Change::Added(p)) | Some(Change::Updated { new: p, .. }) => sh.on_pod(p),
                        Some(Change::Deleted(p)) => sh.on_pod_deleted(&p),
                        Some(Change::Lagged) => sh.resync(&pods, &nodes),
                        None => return,
                    },
                    c = node_sub.next() => match c {
                        Some(Change::Added(n)) => sh.on_node(n, None),
                        Some(Change::Updated { old, new }) => sh.on_node(new, Some(old.as_ref())),
                        Some(Change::Deleted(n)) => sh.cache().remove_node(&n.metadata.name),
                        Some(Change::Lagged) => sh.resync(&pods, &nodes),
                        None => return,
                    },
                    _ = stop.cancelled() => return,
                }
            }
        })
    };
    let flusher = {
        let (q, stop) = (sh.queue.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => q.flush(),
                    _ = stop.cancelled() => return,
                }
            }
        })
    };
    loop {
        let popped = tokio::select! {
            p = sh.queue.pop() => match p { Some(p) => p, None => break },
            _ = stop.cancelled() => break,
        };
        sh.schedule(popped.pod, &stop).await;
    }
    sh.queue.close();
    let _ = watcher.await;
    let _ = flusher.await;
    // Let the bindings and reports in flight finish (their writes are
    // fenced with this term, so none lands after it), so that nothing of
    // this term outlives it.
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        sh.binds.acquire_many(BIND_CONCURRENCY as u32),
    )
    .await;
    tracing::info!(term = ctx.term, "scheduler stopped");
}
