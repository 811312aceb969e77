//! The garbage collector's view of every kind: metadata through shared
//! informers, with the lookups it needs by index (owner uid, object uid,
//! namespace, node), never by scanning.

use std::sync::Arc;

use flotilla_objects::apps::{DaemonSet, Deployment, ReplicaSet};
use flotilla_objects::batch::{CronJob, Job};
use flotilla_objects::certificates::CertificateSigningRequest;
use flotilla_objects::coordination::Lease;
use flotilla_objects::core::{
    ConfigMap, Endpoints, Event, Namespace, Node, Pod, ReplicationController, Secret, Service,
    ServiceAccount,
};
use flotilla_objects::discovery::EndpointSlice;
use flotilla_objects::networking::{Ingress, IngressClass};
use flotilla_objects::nodepool::NodePool;
use flotilla_objects::rbac::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use flotilla_objects::registry::ResourceInfo;
use flotilla_objects::scheduling::PriorityClass;
use flotilla_objects::{ObjectMeta, Resource};
use flotilla_runtime::informer::{BY_NAMESPACE, BY_OWNER};
use flotilla_runtime::{Change, Informer, Informers, ObjectRef, WorkQueue};
use tokio_util::sync::CancellationToken;

/// Index of every informer: by the object's own uid.
pub const BY_UID: &str = "uid";
pub use crate::pods::BY_NODE;

/// What the collector queues: a kind and an object of it.
pub type Key = (&'static str, ObjectRef);

/// One kind, seen through its metadata.
pub trait KindView: Send + Sync {
    fn info(&self) -> &'static ResourceInfo;
    fn meta(&self, key: &ObjectRef) -> Option<ObjectMeta>;
    /// Objects with an owner reference to `uid`.
    fn dependents(&self, uid: &str) -> Vec<ObjectMeta>;
    /// The object with this uid, if cached.
    fn with_uid(&self, uid: &str) -> Option<ObjectMeta>;
    fn in_namespace(&self, ns: &str) -> Vec<ObjectMeta>;
    fn keys(&self) -> Vec<ObjectRef>;
    fn synced(&self) -> bool;
    /// Forward this kind's changes to the queue, through `route`.
    fn forward(&self, route: Arc<Router>, stop: CancellationToken);
}

/// Decides which keys a change touches (it needs every kind).
pub struct Router {
    pub kinds: Arc<Kinds>,
    pub queue: WorkQueue<Key>,
}

impl Router {
    fn changed(&self, info: &'static ResourceInfo, m: &ObjectMeta) {
        self.queue
            .add((info.plural, ObjectRef::new(&m.namespace, &m.name)));
    }

    /// Owners this object no longer references (orphaned from them) are
    /// looked at again: an orphaning owner waits for exactly that.
    fn unowned(&self, old: &ObjectMeta, new: &ObjectMeta) {
        for o in &old.owner_references {
            if new.owner_references.iter().any(|n| n.uid == o.uid) {
                continue;
            }
            if let Some((kind, owner)) = self.kinds.with_uid(&o.uid) {
                self.queue
                    .add((kind.plural, ObjectRef::new(&owner.namespace, &owner.name)));
            }
        }
    }

    /// An object is gone (or going): what waited on it is looked at again.
    fn gone(&self, info: &'static ResourceInfo, m: &ObjectMeta) {
        for (kind, dep) in self.kinds.dependents(&m.uid) {
            self.queue
                .add((kind.plural, ObjectRef::new(&dep.namespace, &dep.name)));
        }
        for o in &m.owner_references {
            if let Some((kind, owner)) = self.kinds.with_uid(&o.uid) {
                self.queue
                    .add((kind.plural, ObjectRef::new(&owner.namespace, &owner.name)));
            }
        }
        if info.namespaced {
            self.queue.add((
                flotilla_objects::registry::NAMESPACE.plural,
                ObjectRef::new("", &m.namespace),
            ));
        }
        if info.kind == "Node" {
            for p in self.kinds.pods.by_index(BY_NODE, &m.name) {
                self.queue.add((
                    flotilla_objects::registry::POD.plural,
                    ObjectRef::of(p.as_ref()),
                ));
            }
        }
    }
}

struct Typed<K: Resource> {
    informer: Informer<K>,
}

impl<K: Resource> KindView for Typed<K> {
    fn info(&self) -> &'static ResourceInfo {
        K::info()
    }
    fn meta(&self, key: &ObjectRef) -> Option<ObjectMeta> {
        self.informer.get_ref(key).map(|k| k.meta().clone())
    }
    fn dependents(&self, uid: &str) -> Vec<ObjectMeta> {
        self.informer
            .by_index(BY_OWNER, uid)
            .iter()
            .map(|k| k.meta().clone())
            .collect()
    }
    fn with_uid(&self, uid: &str) -> Option<ObjectMeta> {
        self.informer
            .by_index(BY_UID, uid)
            .first()
            .map(|k| k.meta().clone())
    }
    fn in_namespace(&self, ns: &str) -> Vec<ObjectMeta> {
        self.informer
            .by_index(BY_NAMESPACE, ns)
            .iter()
            .map(|k| k.meta().clone())
            .collect()
    }
    fn keys(&self) -> Vec<ObjectRef> {
        self.informer.keys()
    }
    fn synced(&self) -> bool {
        self.informer.is_synced()
    }
    fn forward(&self, route: Arc<Router>, stop: CancellationToken) {
        let mut sub = self.informer.subscribe();
        let informer = self.informer.clone();
        let info = K::info();
        tokio::spawn(async move {
            loop {
                let change = tokio::select! {
                    c = sub.next() => match c { Some(c) => c, None => return },
                    _ = stop.cancelled() => return,
                };
                match change {
                    Change::Added(k) => route.changed(info, k.meta()),
                    Change::Updated { old, new } => {
                        route.changed(info, new.meta());
                        route.unowned(old.meta(), new.meta());
                        let began = old.meta().deletion_timestamp.is_none()
                            && new.meta().deletion_timestamp.is_some();
                        if began {
                            route.gone(info, new.meta());
                        }
                    }
                    Change::Deleted(k) => route.gone(info, k.meta()),
                    Change::Lagged => {
                        for k in informer.list() {
                            route.changed(info, k.meta());
                            if k.meta().deletion_timestamp.is_some() {
                                route.gone(info, k.meta());
                            }
                        }
                    }
                }
            }
        });
    }
}

fn view<K: Resource>(informers: &Informers) -> Box<dyn KindView> {
    let informer = informers.get::<K>();
    informer.add_index(BY_UID, Arc::new(|k: &K| vec![k.meta().uid.clone()]));
    Box::new(Typed { informer })
}

/// Every kind the collector looks after: every kind the API serves
/// (`registry::RESOURCES`; a test keeps the two lists equal), so that owner
/// references work on any of them and a namespace's deletion leaves none
/// of its objects behind.
pub struct Kinds {
    all: Vec<Box<dyn KindView>>,
    /// Pods and nodes are also read as themselves.
    pub pods: Informer<Pod>,
    pub nodes: Informer<Node>,
}

impl Kinds {
    pub fn new(informers: &Informers) -> Self {
        let pods = informers.get::<Pod>();
        crate::pods::index_by_node(&pods);
        Kinds {
            all: vec![
                view::<Namespace>(informers),
                view::<Node>(informers),
                view::<NodePool>(informers),
                view::<Pod>(informers),
                view::<ReplicationController>(informers),
                view::<ReplicaSet>(informers),
                view::<Deployment>(informers),
                view::<Job>(informers),
                view::<CronJob>(informers),
                view::<DaemonSet>(informers),
                view::<Service>(informers),
                view::<Endpoints>(informers),
                view::<EndpointSlice>(informers),
                view::<Ingress>(informers),
                view::<ConfigMap>(informers),
                view::<Secret>(informers),
                view::<ServiceAccount>(informers),
                view::<Event>(informers),
                view::<Lease>(informers),
                view::<Role>(informers),
                view::<RoleBinding>(informers),
                view::<ClusterRole>(informers),
                view::<ClusterRoleBinding>(informers),
                view::<IngressClass>(informers),
                view::<PriorityClass>(informers),
                view::<CertificateSigningRequest>(informers),
            ],
            nodes: informers.get::<Node>(),
            pods,
        }
    }

    pub fn all(&self) -> &[Box<dyn KindView>] {
        &self.all
    }

    pub fn by_plural(&self, plural: &str) -> Option<&dyn KindView> {
        self.all
            .iter()
            .find(|k| k.info().plural == plural)
            .map(|b| b.as_ref())
    }

    pub fn synced(&self) -> bool {
        self.all.iter().all(|k| k.synced())
    }

    /// Every cached object with an owner reference to `uid`.
    pub fn dependents(&self, uid: &str) -> Vec<(&'static ResourceInfo, ObjectMeta)> {
        self.all
            .iter()
            .flat_map(|k| k.dependents(uid).into_iter().map(move |m| (k.info(), m)))
            .collect()
    }

    /// The cached object with this uid, of whatever kind.
    pub fn with_uid(&self, uid: &str) -> Option<(&'static ResourceInfo, ObjectMeta)> {
        self.all
            .iter()
            .find_map(|k| k.with_uid(uid).map(|m| (k.info(), m)))
    }

    /// Every cached object in namespace `ns`.
    pub fn in_namespace(&self, ns: &str) -> Vec<(&'static ResourceInfo, ObjectMeta)> {
        self.all
            .iter()
            .filter(|k| k.info().namespaced)
            .flat_map(|k| k.in_namespace(ns).into_iter().map(move |m| (k.info(), m)))
            .collect()
    }
}
