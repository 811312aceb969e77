//! The garbage collector: carries out what deletion promised.
//!
//! - Background propagation: an object whose owners are all gone is deleted
//!   (each owner's absence confirmed by a linearizable read first, so that a
//!   cache that has not yet seen a new owner never causes a deletion). An
//!   object with an owner of a kind this cluster does not serve is left
//!   alone, as Kubernetes does: that owner may well exist.
//! - Foreground propagation (finalizer `foregroundDeletion`): the owner's
//!   dependents are deleted (foreground too), then the finalizer is removed
//!   and the owner goes.
//! - Orphan propagation (finalizer `orphan`): the owner's references are
//!   removed from its dependents, then the finalizer.
//! - Namespaces: a terminating namespace's contents are deleted, then its
//!   `kubernetes` finalizer is removed and it goes.
//! - Pods of nodes that do not exist (no agent will ever run them or
//!   confirm they stopped; the node's absence confirmed by a linearizable
//!   read, not the cache), as Kubernetes' pod GC does it: a terminating one
//!   is deleted once its grace period has run out; one that is not
//!   terminating (bound to a node that was removed just after the
//!   scheduler chose it, say) once the node has been missing for a
//!   quarantine (40 s, Kubernetes' own), so that its controller replaces
//!   it and a node that is only on its way is not robbed of its pods.
//!
//! It runs on the leader only, over the runtime's shared informers, and
//! reacts to each change by looking up what it touches through indexes
//! (an object's dependents by owner uid, its owners by uid, a namespace's
//! contents, a node's pods); nothing is rescanned. Its writes are fenced
//! with its term.

mod kinds;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use flotilla_objects::api::{
    ApiError, DeleteParams, ObjectApi, Propagation, Reason, FOREGROUND_FINALIZER, ORPHAN_FINALIZER,
};
use flotilla_objects::registry::{self, ResourceInfo};
use flotilla_objects::ObjectMeta;
use flotilla_runtime::{LeaderContext, LeaderLoop, ObjectRef, QueueConfig, WorkQueue};
use futures::future::BoxFuture;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use kinds::Router;
pub use kinds::{Key, Kinds, BY_NODE, BY_UID};

/// Workers reconciling keys at once.
const WORKERS: usize = 4;
/// Every key is looked at again this often, in case a change was missed.
const RESYNC: Duration = Duration::from_secs(300);

/// How long a node must be missing before the pods bound to it that are
/// not terminating are deleted (Kubernetes' pod GC quarantine).
pub const ORPHAN_QUARANTINE: Duration = Duration::from_secs(40);

/// The garbage collector as a leader loop.
pub struct GarbageCollector {
    /// See [`ORPHAN_QUARANTINE`].
    pub orphan_quarantine: Duration,
}

impl Default for GarbageCollector {
    fn default() -> Self {
        GarbageCollector {
            orphan_quarantine: ORPHAN_QUARANTINE,
        }
    }
}

impl LeaderLoop for GarbageCollector {
    fn name(&self) -> &'static str {
        "garbage-collector"
    }

    fn run(&self, ctx: LeaderContext) -> BoxFuture<'static, ()> {
        Box::pin(run(ctx, self.orphan_quarantine))
    }
}

/// What one reconcile decided.
enum Next {
    Done,
    /// Look again at this key later (a grace period still running).
    After(Duration),
}

/// The collector's state for one term.
pub struct Collector {
    api: Arc<dyn ObjectApi>,
    pub kinds: Arc<Kinds>,
    orphan_quarantine: Duration,
    /// Nodes found missing by a linearizable read, and since when (this
    /// term): the quarantine of their pods runs from there.
    missing_since: Mutex<HashMap<String, Instant>>,
}

async fn run(ctx: LeaderContext, orphan_quarantine: Duration) {
    let kinds = Arc::new(Kinds::new(&ctx.informers));
    let queue: WorkQueue<Key> = WorkQueue::new(QueueConfig::default());
    let router = Arc::new(Router {
        kinds: kinds.clone(),
        queue: queue.clone(),
    });
    for k in kinds.all() {
        k.forward(router.clone(), ctx.stop.clone());
    }
    // Act only on a complete picture.
    while !kinds.synced() {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = ctx.stop.cancelled() => return,
        }
    }
    let resync = |q: &WorkQueue<Key>| {
        for k in kinds.all() {
            for key in k.keys() {
                q.add((k.info().plural, key));
            }
        }
    };
    resync(&queue);
    let c = Arc::new(Collector::new(
        ctx.api.clone(),
        kinds.clone(),
        orphan_quarantine,
    ));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| tokio::spawn(worker(c.clone(), queue.clone(), ctx.stop.clone())))
        .collect();
    let mut tick = tokio::time::interval(RESYNC);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => resync(&queue),
            _ = ctx.stop.cancelled() => break,
        }
    }
    queue.shut_down();
    for w in workers {
        let _ = w.await;
    }
}

async fn worker(c: Arc<Collector>, queue: WorkQueue<Key>, stop: CancellationToken) {
    while let Some(key) = queue.get().await {
        let res = tokio::select! {
            r = c.reconcile(&key) => r,
            _ = stop.cancelled() => { queue.done(&key); return; }
        };
        match res {
            Ok(Next::Done) => queue.forget(&key),
            Ok(Next::After(d)) => {
                queue.forget(&key);
                queue.add_after(key.clone(), d);
            }
            Err(e) if matches!(e.reason, Reason::NotFound | Reason::Conflict) => {
                // The object changed under us: its change brings it back.
                queue.forget(&key);
            }
            Err(e) => {
                tracing::debug!(kind = key.0, key = %key.1, error = %e, "garbage collection failed; will retry");
                queue.add_rate_limited(key.clone());
            }
        }
        queue.done(&key);
    }
}

impl Collector {
    pub fn new(api: Arc<dyn ObjectApi>, kinds: Arc<Kinds>, orphan_quarantine: Duration) -> Self {
        Collector {
            api,
            kinds,
            orphan_quarantine,
            missing_since: Mutex::new(HashMap::new()),
        }
    }

    /// Look at one object and do what its deletion, or its owners'
    /// absence, requires. Idempotent: every write is conditional.
    async fn reconcile(&self, (plural, key): &Key) -> Result<Next, ApiError> {
        let Some(kind) = self.kinds.by_plural(plural) else {
            return Ok(Next::Done);
        };
        let info = kind.info();
        let Some(m) = kind.meta(key) else {
            return Ok(Next::Done);
        };
        if m.deletion_timestamp.is_some() {
            if m.finalizers.iter().any(|f| f == FOREGROUND_FINALIZER) {
                self.foreground(info, &m).await?;
            }
            if m.finalizers.iter().any(|f| f == ORPHAN_FINALIZER) {
                self.orphan(info, &m).await?;
            }
            if info.kind == "Namespace" {
                self.namespace(&m).await?;
            }
            if info.kind == "Pod" {
                return self.pod_of_missing_node(key).await;
            }
            return Ok(Next::Done);
        }
        if !m.owner_references.is_empty() {
            self.maybe_orphaned(info, &m).await?;
        }
        if info.kind == "Pod" {
            return self.pod_of_missing_node(key).await;
        }
        Ok(Next::Done)
    }

    async fn delete(
        &self,
        info: &ResourceInfo,
        m: &ObjectMeta,
        propagation: Propagation,
    ) -> Result<(), ApiError> {
        let p = DeleteParams {
            propagation: Some(propagation),
            precondition_uid: m.uid.clone(),
            ..Default::default()
        };
        self.api
            .delete(info.plural, &m.namespace, &m.name, &p)
            .await
            .map(|_| ())
    }

    async fn remove_finalizer(
        &self,
        info: &ResourceInfo,
        m: &ObjectMeta,
        f: &str,
    ) -> Result<(), ApiError> {
        let rest: Vec<&String> = m.finalizers.iter().filter(|x| *x != f).collect();
        let patch =
            json!({"metadata": {"finalizers": rest, "resourceVersion": m.resource_version}});
        self.api
            .patch(info.plural, &m.namespace, &m.name, patch, false, false)
            .await
            .map(|_| ())
    }

    async fn foreground(&self, info: &ResourceInfo, m: &ObjectMeta) -> Result<(), ApiError> {
        let deps = self.kinds.dependents(&m.uid);
        if deps.is_empty() {
            tracing::info!(kind = info.kind, name = %m.name, "dependents gone; finishing foreground deletion");
            return self.remove_finalizer(info, m, FOREGROUND_FINALIZER).await;
        }
        for (di, d) in &deps {
            if d.deletion_timestamp.is_none() {
                tracing::info!(kind = di.kind, name = %d.name, owner = %m.name, "deleting a dependent (foreground)");
                self.delete(di, d, Propagation::Foreground).await?;
            }
        }
        Ok(())
    }

    async fn orphan(&self, info: &ResourceInfo, m: &ObjectMeta) -> Result<(), ApiError> {
        let deps = self.kinds.dependents(&m.uid);
        for (di, d) in &deps {
            let refs: Vec<_> = d
                .owner_references
                .iter()
                .filter(|o| o.uid != m.uid)
                .collect();
            let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": d.resource_version}});
            tracing::info!(kind = di.kind, name = %d.name, owner = %m.name, "orphaning a dependent");
            self.api
                .patch(di.plural, &d.namespace, &d.name, patch, false, false)
                .await?;
        }
        if deps.is_empty() {
            return self.remove_finalizer(info, m, ORPHAN_FINALIZER).await;
        }
        Ok(())
    }

    async fn namespace(&self, m: &ObjectMeta) -> Result<(), ApiError> {
        let contents = self.kinds.in_namespace(&m.name);
        if contents.is_empty() {
            tracing::info!(namespace = %m.name, "namespace empty; removing it");
            let rest: Vec<String> = Vec::new();
            let patch = json!({"spec": {"finalizers": rest}, "metadata": {"resourceVersion": m.resource_version}});
            return match self
                .api
                .patch(registry::NAMESPACE.plural, "", &m.name, patch, false, false)
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if e.is(Reason::NotFound) => Ok(()),
                Err(e) => Err(e),
            };
        }
        for (i, x) in &contents {
            if x.deletion_timestamp.is_none() {
                self.delete(i, x, Propagation::Background).await?;
            }
        }
        Ok(())
    }

    /// A pod bound to a node that does not exist: no agent will run it or
    /// confirm it stopped, so it is deleted (at once, with no grace: there
    /// is nobody to honour one), if it is terminating once its grace period
    /// is over, otherwise once the node has been missing for the
    /// quarantine. The node's absence in the cache is confirmed by a
    /// linearizable read first (a cache that has not yet seen a new node
    /// must not cause the deletion of a pod that runs on it).
    async fn pod_of_missing_node(&self, key: &ObjectRef) -> Result<Next, ApiError> {
        let Some(pod) = self.kinds.pods.get_ref(key) else {
            return Ok(Next::Done);
        };
        let m = &pod.metadata;
        let node = &pod.spec.node_name;
        if node.is_empty() {
            return Ok(Next::Done);
        }
        if self.kinds.nodes.get("", node).is_some() {
            self.missing(node, false);
            return Ok(Next::Done);
        }
        if let Some(deadline) = m.deletion_timestamp {
            let left = deadline.0 - Utc::now();
            if left > chrono::Duration::zero() {
                let d = left.to_std().unwrap_or(Duration::from_secs(1));
                return Ok(Next::After(d + Duration::from_millis(100)));
            }
        }
        match self.api.get(registry::NODE.plural, "", node, false).await {
            Ok(_) => {
                // The node exists: its agent completes the deletion; the
                // cache will catch up.
                self.missing(node, false);
                return Ok(Next::Done);
            }
            Err(e) if e.is(Reason::NotFound) => {}
            Err(e) => return Err(e),
        }
        let terminating = m.deletion_timestamp.is_some();
        if !terminating {
            let missing_for = self.missing(node, true);
            if missing_for < self.orphan_quarantine {
                let d = self.orphan_quarantine - missing_for;
                return Ok(Next::After(d + Duration::from_millis(100)));
            }
        }
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            precondition_uid: m.uid.clone(),
            ..Default::default()
        };
        if terminating {
            tracing::info!(pod = %m.name, namespace = %m.namespace, node = %node, "deleting a terminated pod of a node that does not exist");
        } else {
            tracing::info!(pod = %m.name, namespace = %m.namespace, node = %node, quarantine = ?self.orphan_quarantine, "deleting a pod bound to a node that does not exist");
        }
        self.api
            .delete(registry::POD.plural, &m.namespace, &m.name, &dp)
            .await?;
        Ok(Next::Done)
    }

    /// Note whether `node` was found missing; how long it has been.
    fn missing(&self, node: &str, missing: bool) -> Duration {
        let mut since = self.missing_since.lock().unwrap_or_else(|e| e.into_inner());
        if !missing {
            since.remove(node);
            return Duration::ZERO;
        }
        if since.len() >= 10_000 && !since.contains_key(node) {
            // Names of nodes long gone: forgetting them only restarts
            // their quarantine.
            since.clear();
        }
        since
            .entry(node.to_string())
            .or_insert_with(Instant::now)
            .elapsed()
    }

    /// An object with owners: if every owner is gone (cache first, then a
    /// linearizable read of each), delete it. An owner of a kind this
    /// cluster does not serve cannot be checked, so the object stays.
    async fn maybe_orphaned(&self, info: &ResourceInfo, m: &ObjectMeta) -> Result<(), ApiError> {
        let mut kinds = Vec::with_capacity(m.owner_references.len());
        for o in &m.owner_references {
            if self.kinds.with_uid(&o.uid).is_some() {
                return Ok(());
            }
            match registry::by_kind(&o.api_version, &o.kind) {
                Some(oi) => kinds.push((oi, o)),
                None => {
                    tracing::debug!(kind = info.kind, name = %m.name, owner_kind = %o.kind, owner_api_version = %o.api_version, "owner of a kind this cluster does not serve; leaving the object alone");
                    return Ok(());
                }
            }
        }
        for (oi, o) in kinds {
            let ns = if oi.namespaced {
                m.namespace.as_str()
            } else {
                ""
            };
            match self.api.get(oi.plural, ns, &o.name, false).await {
                Ok(v) => {
                    if v.pointer("/metadata/uid").and_then(|u| u.as_str()) == Some(o.uid.as_str()) {
                        return Ok(());
                    }
                }
                Err(e) if e.is(Reason::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        tracing::info!(kind = info.kind, name = %m.name, namespace = %m.namespace, "owners gone; deleting a dependent");
        self.delete(info, m, Propagation::Background).await
    }
}
