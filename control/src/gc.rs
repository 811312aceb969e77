//! The garbage collector: carries out what deletion promised.
//!
//! - Background propagation: an object whose owners are all gone is deleted
//!   (each owner's absence confirmed by a linearizable read first, so that a
//!   cache that has not yet seen a new owner never causes a deletion).
//! - Foreground propagation (finalizer `foregroundDeletion`): the owner's
//!   dependents are deleted (foreground too), then the finalizer is removed
//!   and the owner goes.
//! - Orphan propagation (finalizer `orphan`): the owner's references are
//!   removed from its dependents, then the finalizer.
//! - Namespaces: a terminating namespace's contents are deleted, then its
//!   `kubernetes` finalizer is removed and it goes.
//! - Pods: a pod whose grace period has run out on a node that does not
//!   exist (no agent will ever confirm it stopped) is deleted.
//!
//! It reads list-then-watch caches of every kind and writes through the
//! object API, only while `is_leader` says this master leads, so that one
//! collector acts at a time (two would be harmless: every write is
//! conditional).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use flotilla_client::{
    Api, ApiError, Cache, Client, DeleteParams, ListParams, Propagation, Reason, Reflector,
};
use flotilla_objects::apps::{Deployment, ReplicaSet};
use flotilla_objects::batch::Job;
use flotilla_objects::core::{
    ConfigMap, Endpoints, Event, Namespace, Node, Pod, ReplicationController, Secret, Service,
};
use flotilla_objects::networking::Ingress;
use flotilla_objects::nodepool::NodePool;
use flotilla_objects::registry::{self, ResourceInfo};
use flotilla_objects::{ObjectMeta, Resource};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::api::{FOREGROUND_FINALIZER, NAMESPACE_FINALIZER, ORPHAN_FINALIZER};

/// A cache of one kind, seen through its metadata.
trait KindCache: Send + Sync {
    fn info(&self) -> &'static ResourceInfo;
    fn metas(&self) -> Vec<ObjectMeta>;
    fn version(&self) -> u64;
    fn ready(&self) -> bool;
}

struct Typed<K: Resource> {
    /// The reflector filling `cache`, when this entry owns it.
    _reflector: Option<Reflector<K>>,
    cache: Cache<K>,
}

impl<K: Resource> KindCache for Typed<K> {
    fn info(&self) -> &'static ResourceInfo {
        K::info()
    }
    fn metas(&self) -> Vec<ObjectMeta> {
        self.cache.list().iter().map(|k| k.meta().clone()).collect()
    }
    fn version(&self) -> u64 {
        *self.cache.changes().borrow()
    }
    fn ready(&self) -> bool {
        self.cache.is_ready()
    }
}

fn typed<K: Resource>(client: &Client) -> Box<dyn KindCache> {
    let r = Reflector::spawn(Api::<K>::all(client.clone()), ListParams::default());
    let cache = r.cache();
    Box::new(Typed {
        _reflector: Some(r),
        cache,
    })
}

/// An entry for a cache whose reflector the caller keeps.
fn shared<K: Resource>(cache: Cache<K>) -> Box<dyn KindCache> {
    Box::new(Typed {
        _reflector: None,
        cache,
    })
}

/// How often the collector looks again without a change (grace periods).
const RESYNC: Duration = Duration::from_secs(1);
/// How often it checks its caches for changes.
const POLL: Duration = Duration::from_millis(100);

/// The garbage collector; run with [`GarbageCollector::run`].
pub struct GarbageCollector {
    client: Client,
    is_leader: Arc<dyn Fn() -> bool + Send + Sync>,
}

impl GarbageCollector {
    pub fn new(client: Client, is_leader: Arc<dyn Fn() -> bool + Send + Sync>) -> Self {
        GarbageCollector { client, is_leader }
    }

    /// Collect until `stop` is cancelled.
    pub async fn run(self, stop: CancellationToken) {
        // Pods and nodes are also read as themselves (grace periods, nodes
        // that do not exist): one reflector each serves both uses.
        let pods = Reflector::spawn(Api::<Pod>::all(self.client.clone()), ListParams::default());
        let nodes = Reflector::spawn(Api::<Node>::all(self.client.clone()), ListParams::default());
        let caches: Vec<Box<dyn KindCache>> = vec![
            typed::<Namespace>(&self.client),
            shared(nodes.cache()),
            typed::<NodePool>(&self.client),
            shared(pods.cache()),
            typed::<ReplicationController>(&self.client),
            typed::<ReplicaSet>(&self.client),
            typed::<Deployment>(&self.client),
            typed::<Job>(&self.client),
            typed::<Service>(&self.client),
            typed::<Endpoints>(&self.client),
            typed::<Ingress>(&self.client),
            typed::<ConfigMap>(&self.client),
            typed::<Secret>(&self.client),
            typed::<Event>(&self.client),
        ];
        let mut seen = u64::MAX;
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
            if !(self.is_leader)() || !caches.iter().all(|c| c.ready()) {
                continue;
            }
            let v: u64 = caches.iter().map(|c| c.version()).sum();
            if v == seen && last.elapsed() < RESYNC {
                continue;
            }
            seen = v;
            last = tokio::time::Instant::now();
            if let Err(e) = self.pass(&caches, &pods.cache(), &nodes.cache()).await {
                tracing::debug!(error = %e, "garbage collection pass incomplete; will retry");
            }
        }
    }

    /// One look at everything; every action is idempotent.
    async fn pass(
        &self,
        caches: &[Box<dyn KindCache>],
        pods: &Cache<Pod>,
        nodes: &Cache<Node>,
    ) -> Result<(), ApiError> {
        let all: Vec<(&'static ResourceInfo, ObjectMeta)> = caches
            .iter()
            .flat_map(|c| {
                let info = c.info();
                c.metas().into_iter().map(move |m| (info, m))
            })
            .collect();
        let uids: HashSet<&str> = all.iter().map(|(_, m)| m.uid.as_str()).collect();
        let mut dependents: HashMap<&str, Vec<(&'static ResourceInfo, &ObjectMeta)>> =
            HashMap::new();
        for (info, m) in &all {
            for o in &m.owner_references {
                dependents
                    .entry(o.uid.as_str())
                    .or_default()
                    .push((*info, m));
            }
        }
        let mut first_err = None;
        let mut note = |r: Result<(), ApiError>| {
            if let Err(e) = r {
                if !matches!(e.reason, Reason::NotFound | Reason::Conflict) && first_err.is_none() {
                    first_err = Some(e);
                }
            }
        };
        for (info, m) in &all {
            let deps = dependents.get(m.uid.as_str()).cloned().unwrap_or_default();
            if m.deletion_timestamp.is_some() {
                if m.finalizers.iter().any(|f| f == FOREGROUND_FINALIZER) {
                    note(self.foreground(info, m, &deps).await);
                }
                if m.finalizers.iter().any(|f| f == ORPHAN_FINALIZER) {
                    note(self.orphan(info, m, &deps).await);
                }
                if info.kind == "Namespace" {
                    let contents: Vec<_> = all
                        .iter()
                        .filter(|(i, x)| i.namespaced && x.namespace == m.name)
                        .map(|(i, x)| (*i, x))
                        .collect();
                    note(self.namespace(m, &contents).await);
                }
            } else if !m.owner_references.is_empty()
                && m.owner_references
                    .iter()
                    .all(|o| !uids.contains(o.uid.as_str()))
            {
                note(self.maybe_orphaned(info, m).await);
            }
        }
        let now = Utc::now();
        for p in pods.list() {
            let m = &p.metadata;
            let node = &p.spec.node_name;
            if let Some(t) = &m.deletion_timestamp {
                if t.0 <= now && !node.is_empty() && nodes.get("", node).is_none() {
                    let api = Api::<Pod>::namespaced(self.client.clone(), &m.namespace);
                    let dp = DeleteParams {
                        grace_period_seconds: Some(0),
                        precondition_uid: m.uid.clone(),
                        ..Default::default()
                    };
                    tracing::info!(pod = %m.name, namespace = %m.namespace, node = %node, "deleting a terminated pod of a node that does not exist");
                    note(api.delete(&m.name, &dp).await.map(|_| ()));
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
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
        self.client
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
        self.client
            .patch(info.plural, &m.namespace, &m.name, &patch, false)
            .await
            .map(|_| ())
    }

    async fn foreground(
        &self,
        info: &ResourceInfo,
        m: &ObjectMeta,
        deps: &[(&'static ResourceInfo, &ObjectMeta)],
    ) -> Result<(), ApiError> {
        if deps.is_empty() {
            tracing::info!(kind = info.kind, name = %m.name, "dependents gone; finishing foreground deletion");
            return self.remove_finalizer(info, m, FOREGROUND_FINALIZER).await;
        }
        for (di, d) in deps {
            if d.deletion_timestamp.is_none() {
                tracing::info!(kind = di.kind, name = %d.name, owner = %m.name, "deleting a dependent (foreground)");
                self.delete(di, d, Propagation::Foreground).await?;
            }
        }
        Ok(())
    }

    async fn orphan(
        &self,
        info: &ResourceInfo,
        m: &ObjectMeta,
        deps: &[(&'static ResourceInfo, &ObjectMeta)],
    ) -> Result<(), ApiError> {
        for (di, d) in deps {
            let refs: Vec<_> = d
                .owner_references
                .iter()
                .filter(|o| o.uid != m.uid)
                .collect();
            let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": d.resource_version}});
            tracing::info!(kind = di.kind, name = %d.name, owner = %m.name, "orphaning a dependent");
            self.client
                .patch(di.plural, &d.namespace, &d.name, &patch, false)
                .await?;
        }
        if deps.is_empty() {
            return self.remove_finalizer(info, m, ORPHAN_FINALIZER).await;
        }
        Ok(())
    }

    async fn namespace(
        &self,
        m: &ObjectMeta,
        contents: &[(&'static ResourceInfo, &ObjectMeta)],
    ) -> Result<(), ApiError> {
        if contents.is_empty() {
            tracing::info!(namespace = %m.name, "namespace empty; removing it");
            let rest: Vec<String> = Vec::new();
            let patch = json!({"spec": {"finalizers": rest}, "metadata": {"resourceVersion": m.resource_version}});
            return self
                .client
                .patch(registry::NAMESPACE.plural, "", &m.name, &patch, false)
                .await
                .map(|_| ())
                .or_else(|e| {
                    if e.is(Reason::NotFound) {
                        Ok(())
                    } else {
                        Err(e)
                    }
                });
        }
        let _ = NAMESPACE_FINALIZER;
        for (i, x) in contents {
            if x.deletion_timestamp.is_none() {
                self.delete(i, x, Propagation::Background).await?;
            }
        }
        Ok(())
    }

    /// Every owner of `m` looks gone from the caches: confirm each by a
    /// linearizable read before deleting `m`.
    async fn maybe_orphaned(&self, info: &ResourceInfo, m: &ObjectMeta) -> Result<(), ApiError> {
        for o in &m.owner_references {
            let Some(oi) = registry::by_kind(&o.api_version, &o.kind) else {
                // An owner of a kind this cluster does not serve cannot exist.
                continue;
            };
            let ns = if oi.namespaced {
                m.namespace.as_str()
            } else {
                ""
            };
            match self.client.get(oi.plural, ns, &o.name).await {
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
