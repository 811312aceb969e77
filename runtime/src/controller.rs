//! A controller: a reconcile function over the keys of one kind, fed by the
//! changes of that kind and of the kinds that map to it.
//!
//! ```ignore
//! Controller::new("replicaset", rs_informer)
//!     .owns(pod_informer)                    // a pod's controller owner
//!     .watches(node_informer, |n| vec![...]) // any mapping to keys
//!     .run(reconciler, stop)
//!     .await;
//! ```
//!
//! The reconciler gets a key and the object as the cache has it (None:
//! gone), never an event: it must compute what to do from the state, so it
//! is idempotent, and a periodic resync repairs anything missed. It returns
//! an [`Action`]; an error sends the key back with back-off.
//!
//! No key is reconciled before every cache the controller was given (its
//! own, those it [`owns`](Controller::owns), [`watches`](Controller::watches)
//! or [`reads`](Controller::reads)) has filled: a reconciler that counted
//! a new term's still empty pod cache would create every pod again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_objects::Resource;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::informer::{Change, Informer, ObjectRef, Subscription};
use crate::queue::{QueueConfig, QueueMetrics, WorkQueue};

/// What to do with a key after reconciling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing until something changes (or the next resync).
    Await,
    /// Look again after this long (a deadline, a grace period).
    RequeueAfter(Duration),
}

/// A reconcile function over objects of `K`.
#[async_trait::async_trait]
pub trait Reconciler<K>: Send + Sync + 'static {
    type Error: std::fmt::Display + Send;

    async fn reconcile(&self, key: &ObjectRef, obj: Option<Arc<K>>) -> Result<Action, Self::Error>;
}

type Trigger = Box<dyn FnOnce(WorkQueue<ObjectRef>, CancellationToken) + Send>;

/// Waits (up to the given time) until one of the controller's caches has
/// filled; names its kind.
type SyncWait = Box<dyn Fn(Duration) -> BoxFuture<'static, bool> + Send + Sync>;

fn sync_wait<W: Resource>(informer: &Informer<W>) -> (&'static str, SyncWait) {
    let informer = informer.clone();
    (
        W::info().kind,
        Box::new(move |limit| {
            let informer = informer.clone();
            Box::pin(async move { informer.wait_synced(limit).await })
        }),
    )
}

/// A controller of kind `K`, built then run.
pub struct Controller<K> {
    name: String,
    informer: Informer<K>,
    /// Each starts a task that turns another informer's changes into keys.
    triggers: Vec<Trigger>,
    /// Every cache the reconciler looks at, its own first.
    caches: Vec<(&'static str, SyncWait)>,
    resync: Option<Duration>,
    workers: usize,
    queue: WorkQueue<ObjectRef>,
}

/// Forward an informer's changes to a queue through `map` until `stop`.
fn forward<W: Resource>(
    mut sub: Subscription<W>,
    informer: Informer<W>,
    queue: WorkQueue<ObjectRef>,
    stop: CancellationToken,
    map: impl Fn(&W) -> Vec<ObjectRef> + Send + 'static,
) {
    tokio::spawn(async move {
        loop {
            let change = tokio::select! {
                c = sub.next() => match c { Some(c) => c, None => return },
                _ = stop.cancelled() => return,
            };
            match change {
                Change::Added(k) | Change::Deleted(k) => {
                    for key in map(&k) {
                        queue.add(key);
                    }
                }
                Change::Updated { old, new } => {
                    let mut keys = map(&old);
                    keys.extend(map(&new));
                    keys.sort();
                    keys.dedup();
                    for key in keys {
                        queue.add(key);
                    }
                }
                Change::Lagged => {
                    for k in informer.list() {
                        for key in map(&k) {
                            queue.add(key);
                        }
                    }
                }
            }
        }
    });
}

impl<K: Resource> Controller<K> {
    pub fn new(name: &str, informer: Informer<K>) -> Self {
        Controller {
            name: name.to_string(),
            caches: vec![sync_wait(&informer)],
            informer,
            triggers: Vec::new(),
            resync: Some(Duration::from_secs(300)),
            workers: 4,
            queue: WorkQueue::new(QueueConfig::default()).named(name),
        }
    }

    /// Reconcile the controlling owner (of kind `K`) of each changed `C`.
    pub fn owns<C: Resource>(self, child: Informer<C>) -> Self {
        let kind = K::info().kind;
        self.watches(child, move |c: &C| {
            c.meta()
                .owner_references
                .iter()
                .filter(|o| o.controller == Some(true) && o.kind == kind)
                .map(|o| ObjectRef::new(&c.meta().namespace, &o.name))
                .collect()
        })
    }

    /// Reconcile the keys `map` gives for each changed `W` (its old and
    /// new state both, for an update).
    pub fn watches<W: Resource>(
        mut self,
        informer: Informer<W>,
        map: impl Fn(&W) -> Vec<ObjectRef> + Send + Sync + 'static,
    ) -> Self {
        let sub = informer.subscribe();
        self.caches.push(sync_wait(&informer));
        self.triggers.push(Box::new(move |queue, stop| {
            forward(sub, informer, queue, stop, map)
        }));
        self
    }

    /// A cache the reconciler reads without reacting to its changes (a
    /// node's Lease, say): nothing is reconciled before it has filled.
    pub fn reads<W: Resource>(mut self, informer: &Informer<W>) -> Self {
        self.caches.push(sync_wait(informer));
        self
    }

    /// Reconcile every key this often (None: never); default 5 minutes.
    pub fn resync_every(mut self, every: Option<Duration>) -> Self {
        self.resync = every;
        self
    }

    /// Workers reconciling different keys at once (never the same key).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    pub fn queue_config(mut self, cfg: QueueConfig) -> Self {
        self.queue = WorkQueue::new(cfg).named(&self.name);
        self
    }

    /// The queue, for metrics and for adding keys from outside.
    pub fn queue(&self) -> WorkQueue<ObjectRef> {
        self.queue.clone()
    }

    /// Reconcile until `stop`; returns once every worker has finished its
    /// current key (so nothing of this controller outlives the call).
    pub async fn run<R: Reconciler<K>>(self, reconciler: Arc<R>, stop: CancellationToken) {
        let Controller {
            name,
            informer,
            triggers,
            caches,
            resync,
            workers,
            queue,
        } = self;
        let own = informer.subscribe();
        forward(
            own,
            informer.clone(),
            queue.clone(),
            stop.clone(),
            |k: &K| vec![ObjectRef::of(k)],
        );
        for t in triggers {
            t(queue.clone(), stop.clone());
        }
        // Wait for every cache before the first reconcile: a reconciler
        // that saw an empty cache would act on a world that is not there.
        for (kind, synced) in &caches {
            loop {
                tokio::select! {
                    ok = synced(Duration::from_secs(5)) => if ok { break },
                    _ = stop.cancelled() => return,
                }
                tracing::info!(controller = %name, kind, "waiting for the cache to sync");
            }
        }
        for key in informer.keys() {
            queue.add(key);
        }
        if let Some(every) = resync {
            let (q, i, s) = (queue.clone(), informer.clone(), stop.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = tick.tick() => for key in i.keys() { q.add(key) },
                        _ = s.cancelled() => return,
                    }
                }
            });
        }
        let mut tasks = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (q, i, r, n, s) = (
                queue.clone(),
                informer.clone(),
                reconciler.clone(),
                name.clone(),
                stop.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while let Some(key) = q.get().await {
                    let obj = i.get_ref(&key);
                    let started = Instant::now();
                    // Stopping abandons a reconcile in the middle: its
                    // writes are fenced, so none lands after leadership ends.
                    let res = tokio::select! {
                        r = r.reconcile(&key, obj) => r,
                        _ = s.cancelled() => {
                            q.done(&key);
                            return;
                        }
                    };
                    let took = started.elapsed();
                    match res {
                        Ok(Action::Await) => q.forget(&key),
                        Ok(Action::RequeueAfter(d)) => {
                            q.forget(&key);
                            q.add_after(key.clone(), d);
                        }
                        Err(e) => {
                            tracing::debug!(controller = %n, key = %key, error = %e, failures = q.failures(&key), "reconcile failed; will retry");
                            q.add_rate_limited(key.clone());
                        }
                    }
                    if took > Duration::from_secs(1) {
                        tracing::debug!(controller = %n, key = %key, ?took, "slow reconcile");
                    }
                    q.done(&key);
                }
            }));
        }
        stop.cancelled().await;
        queue.shut_down();
        for t in tasks {
            let _ = t.await;
        }
        tracing::debug!(controller = %name, "stopped");
    }
}

/// A controller's queue metrics, for reporting.
pub fn metrics(queue: &WorkQueue<ObjectRef>) -> QueueMetrics {
    queue.metrics()
}
