//! The autoscaler's loop of one term: every scan interval it reads pods,
//! nodes and pools from the term's informers, brings each managed pool's
//! status (its intent) up to date, decides, writes the statuses (a
//! compare-and-swap each), and only then acts on the pools whose status
//! was written: provider calls (in tasks, one per node at a time),
//! cordons, drains and node deletions.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use flotilla_objects::api::{DeleteParams, ListParams, ObjectApi, Reason};
use flotilla_objects::core::{Node, Pod};
use flotilla_objects::nodepool::{pool_of, NodeNote, NodeOperation, NodePool, NodePoolStatus};
use flotilla_objects::{registry, Time};
use flotilla_runtime::{Informer, LeaderContext, LeaderLoop};
use futures::future::BoxFuture;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::events::{record, Involved};
use crate::provider::NodeProvider;
use crate::scaledown::{find_unneeded, is_daemon, Candidate, Verdict, MIRROR_ANNOTATION};
use crate::scaleup::{self, PoolCandidate};
use crate::simulate::{is_ready, is_terminal, is_unschedulable, pod_key, Snapshot};
use crate::template::template;
use crate::{Config, COMPONENT};

/// Most messages remembered for de-duplicating events.
const SAID_MAX: usize = 10_000;

/// The autoscaler as a leader loop.
pub struct Autoscaler {
    cfg: Config,
    provider: Arc<dyn NodeProvider>,
}

impl Autoscaler {
    pub fn new(cfg: Config, provider: Arc<dyn NodeProvider>) -> Self {
        Autoscaler { cfg, provider }
    }
}

impl LeaderLoop for Autoscaler {
    fn name(&self) -> &'static str {
        COMPONENT
    }

    fn run(&self, ctx: LeaderContext) -> BoxFuture<'static, ()> {
        Box::pin(run(self.cfg.clone(), self.provider.clone(), ctx))
    }
}

fn since(op: &NodeOperation) -> DateTime<Utc> {
    op.since.map(|t| t.0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn elapsed(from: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (now - from).to_std().unwrap_or_default()
}

/// A fresh node name for `pool`, not among `taken`.
fn node_name(pool: &str, taken: &HashSet<String>, rng: &mut impl Rng) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    loop {
        let suffix: String = (0..5)
            .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
            .collect();
        let name = format!("{pool}-{suffix}");
        if !taken.contains(&name) {
            return name;
        }
    }
}

/// What the loop remembers within one term (the intent itself is in the store).
struct Term {
    cfg: Config,
    provider: Arc<dyn NodeProvider>,
    api: Arc<dyn ObjectApi>,
    /// Nodes with a provider call in flight.
    busy: Arc<Mutex<HashSet<String>>>,
    /// Nodes created through the provider in this term.
    created: Arc<Mutex<HashSet<String>>>,
    /// Nodes deleted through the provider (and from the API) in this term.
    deleted: Arc<Mutex<HashSet<String>>>,
    /// Pools refreshed with the provider in this term.
    refreshed: HashSet<String>,
    /// The last message recorded per object and reason, so that an event
    /// is written when what it says changes, not every scan.
    said: HashMap<String, String>,
    tasks: JoinSet<()>,
}

/// One pool's work for this scan, once its status is written.
struct PoolWork {
    pool: Arc<NodePool>,
    status: NodePoolStatus,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Term {
    fn new(cfg: Config, provider: Arc<dyn NodeProvider>, api: Arc<dyn ObjectApi>) -> Self {
        Term {
            cfg,
            provider,
            api,
            busy: Default::default(),
            created: Default::default(),
            deleted: Default::default(),
            refreshed: HashSet::new(),
            said: HashMap::new(),
            tasks: JoinSet::new(),
        }
    }

    /// Record an event unless the same was said last time about `about`.
    fn say(&mut self, about: Involved, type_: &'static str, reason: &'static str, msg: String) {
        let key = format!("{}/{}/{}/{reason}", about.kind, about.namespace, about.name);
        if self.said.get(&key) == Some(&msg) {
            return;
        }
        if self.said.len() >= SAID_MAX {
            // Objects come and go: forget what was said rather than grow;
            // at worst an event is written once more.
            self.said.clear();
        }
        self.said.insert(key, msg.clone());
        record(&self.api, about, type_, reason, msg);
    }

    async fn scan(
        &mut self,
        pods: &Informer<Pod>,
        nodes: &Informer<Node>,
        pools: &Informer<NodePool>,
    ) {
        let now = Utc::now();
        let all_nodes = nodes.list();
        let all_pods = pods.list();
        let managed: Vec<Arc<NodePool>> = pools
            .list()
            .into_iter()
            .filter(|p| p.spec.max_size > 0 && self.provider.manages(&p.metadata.name))
            .collect();
        let snapshot = Snapshot::new(&all_nodes, &all_pods);
        let by_name: BTreeMap<&str, &Arc<Node>> = all_nodes
            .iter()
            .map(|n| (n.metadata.name.as_str(), n))
            .collect();
        let mut taken: HashSet<String> =
            all_nodes.iter().map(|n| n.metadata.name.clone()).collect();
        let mut rng = rand::rngs::StdRng::from_entropy();
        let mut work: Vec<PoolWork> = Vec::new();
        for pool in &managed {
            let name = pool.metadata.name.clone();
            let mut st = pool.status.clone().unwrap_or_default();
            let members: Vec<&Arc<Node>> = all_nodes
                .iter()
                .filter(|n| pool_of(&n.metadata.labels) == name)
                .collect();
            if !self.refreshed.contains(&name) {
                self.refreshed.insert(name.clone());
                let mut known: Vec<String> =
                    members.iter().map(|n| n.metadata.name.clone()).collect();
                known.extend(st.creating.iter().map(|o| o.name.clone()));
                let (prov, pname) = (self.provider.clone(), name.clone());
                self.tasks.spawn(async move {
                    if let Err(e) = prov.refresh(&pname, &known).await {
                        tracing::warn!(pool = %pname, error = %e, "provider refresh failed");
                    }
                });
            }
            if self.provider.names_nodes() {
                // The provider names its machines: the names asked for are
                // placeholders, and each node of the pool beyond those the
                // target already counted fulfils the oldest.
                let alive = members
                    .iter()
                    .filter(|n| !st.deleting.iter().any(|o| o.name == n.metadata.name))
                    .count() as i32;
                let wanted = (st.target_size.unwrap_or(0) - alive).max(0) as usize;
                let fulfilled = st.creating.len().saturating_sub(wanted);
                st.creating.drain(..fulfilled);
            }
            // Nodes asked for: registered, or given up after the provision time.
            let mut creating = Vec::new();
            for op in std::mem::take(&mut st.creating) {
                if by_name.contains_key(op.name.as_str()) {
                    continue;
                }
                if elapsed(since(&op), now) >= self.cfg.max_node_provision_time {
                    tracing::warn!(pool = %name, node = %op.name, "node did not register in time; giving it up");
                    self.say(
                        Involved::of(pool.as_ref()),
                        "Warning",
                        "ScaleUpTimedOut",
                        format!(
                            "node {} did not register within {:?}; deleting it",
                            op.name, self.cfg.max_node_provision_time
                        ),
                    );
                    st.deleting.push(NodeOperation {
                        name: op.name,
                        since: Some(Time(now)),
                    });
                    continue;
                }
                creating.push(op);
            }
            st.creating = creating;
            // Nodes being removed: done once deleted through the provider and gone from the API.
            let deleted = lock(&self.deleted).clone();
            st.deleting
                .retain(|op| !deleted.contains(&op.name) || by_name.contains_key(op.name.as_str()));
            let deleting: HashSet<&str> = st.deleting.iter().map(|o| o.name.as_str()).collect();
            let alive = members
                .iter()
                .filter(|n| !deleting.contains(n.metadata.name.as_str()))
                .count() as i32;
            // Never below the min size.
            while alive + (st.creating.len() as i32) < pool.spec.min_size {
                let n = node_name(&name, &taken, &mut rng);
                taken.insert(n.clone());
                st.message = format!(
                    "below its min size {}: asking for node {n}",
                    pool.spec.min_size
                );
                st.creating.push(NodeOperation {
                    name: n,
                    since: Some(Time(now)),
                });
            }
            for op in st.creating.iter().chain(&st.deleting) {
                taken.insert(op.name.clone());
            }
            st.nodes = members.len() as i32;
            st.ready_nodes = members.iter().filter(|n| is_ready(n)).count() as i32;
            st.target_size = Some(alive + st.creating.len() as i32);
            work.push(PoolWork {
                pool: pool.clone(),
                status: st,
            });
        }
        self.scale_up(
            &all_pods, &all_nodes, &snapshot, &mut work, &mut taken, now, &mut rng,
        );
        if self.cfg.scale_down_enabled {
            self.scale_down(&snapshot, &all_nodes, &mut work, now);
        }
        // Write each pool's intent, then act on it.
        for w in work {
            let old = w.pool.status.clone().unwrap_or_default();
            if old != w.status && !self.write_status(&w.pool, &w.status).await {
                continue;
            }
            self.act(&w.pool, &w.status, &by_name, &all_pods, now).await;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn scale_up(
        &mut self,
        all_pods: &[Arc<Pod>],
        all_nodes: &[Arc<Node>],
        snapshot: &Snapshot,
        work: &mut [PoolWork],
        taken: &mut HashSet<String>,
        now: DateTime<Utc>,
        rng: &mut impl Rng,
    ) {
        let pending: Vec<Arc<Pod>> = all_pods
            .iter()
            .filter(|p| is_unschedulable(p))
            .cloned()
            .collect();
        if pending.is_empty() {
            return;
        }
        let mut upcoming = Vec::new();
        let mut candidates = Vec::new();
        let mut coming = 0;
        for w in work.iter() {
            let t = |n: &str| template(&w.pool, n, all_nodes);
            for op in &w.status.creating {
                coming += 1;
                if let Ok(n) = t(&op.name) {
                    upcoming.push(n);
                }
            }
            // A node that registered but is not Ready yet (a real agent
            // sets up the pod network first) is still on its way: counted
            // as its template, lest its pods ask for one more.
            let pool = w.pool.metadata.name.as_str();
            let deleting: HashSet<&str> =
                w.status.deleting.iter().map(|o| o.name.as_str()).collect();
            for n in all_nodes {
                let young = n
                    .metadata
                    .creation_timestamp
                    .is_some_and(|c| elapsed(c.0, now) < self.cfg.max_node_provision_time);
                if pool_of(&n.metadata.labels) == pool
                    && young
                    && !is_ready(n)
                    && !n.spec.unschedulable
                    && !deleting.contains(n.metadata.name.as_str())
                {
                    if let Ok(t) = t(&n.metadata.name) {
                        upcoming.push(t);
                    }
                }
            }
            candidates.push(PoolCandidate {
                name: w.pool.metadata.name.clone(),
                template: t(&format!("template-{}", w.pool.metadata.name)),
                size: w.status.target_size.unwrap_or(0),
                max_size: w.pool.spec.max_size,
                priority: w.pool.spec.priority,
            });
        }
        let room = (self.cfg.max_nodes_total > 0)
            .then(|| self.cfg.max_nodes_total as i32 - all_nodes.len() as i32 - coming);
        let plan = scaleup::plan(
            &pending,
            snapshot,
            upcoming,
            &candidates,
            room,
            self.cfg.expander,
            rng,
        );
        let by_key: HashMap<String, &Arc<Pod>> = pending.iter().map(|p| (pod_key(p), p)).collect();
        for (key, why) in &plan.not_helped {
            if let Some(p) = by_key.get(key) {
                self.say(
                    Involved::of(p.as_ref()),
                    "Normal",
                    "NotTriggerScaleUp",
                    format!("pod didn't trigger scale-up: {why}"),
                );
            }
        }
        let Some(chosen) = plan.chosen else { return };
        let Some(w) = work
            .iter_mut()
            .find(|w| w.pool.metadata.name == chosen.pool)
        else {
            return;
        };
        let from = w.status.target_size.unwrap_or(0);
        let to = from + chosen.nodes;
        let mut names = Vec::new();
        for _ in 0..chosen.nodes {
            let n = node_name(&chosen.pool, taken, rng);
            taken.insert(n.clone());
            w.status.creating.push(NodeOperation {
                name: n.clone(),
                since: Some(Time(now)),
            });
            names.push(n);
        }
        w.status.target_size = Some(to);
        w.status.last_scale_up_time = Some(Time(now));
        w.status.message = format!(
            "scaled up from {from} to {to} (max {}) for {} pending pod(s): {}",
            w.pool.spec.max_size,
            chosen.pods.len(),
            names.join(", ")
        );
        tracing::info!(pool = %chosen.pool, from, to, pods = chosen.pods.len(), "scaling up");
        let msg = format!(
            "pod triggered scale-up: [{{{} {from}->{to} (max: {})}}]",
            chosen.pool, w.pool.spec.max_size
        );
        let pool_ev = (Involved::of(w.pool.as_ref()), w.status.message.clone());
        for key in &chosen.pods {
            if let Some(p) = by_key.get(key) {
                self.say(
                    Involved::of(p.as_ref()),
                    "Normal",
                    "TriggeredScaleUp",
                    msg.clone(),
                );
            }
        }
        self.say(pool_ev.0, "Normal", "ScaledUpGroup", pool_ev.1);
    }

    fn scale_down(
        &mut self,
        snapshot: &Snapshot,
        all_nodes: &[Arc<Node>],
        work: &mut [PoolWork],
        now: DateTime<Utc>,
    ) {
        let mut unavailable = BTreeSet::new();
        let mut candidates = Vec::new();
        let mut removable = BTreeMap::new();
        let mut in_cooldown = false;
        for w in work.iter() {
            let name = &w.pool.metadata.name;
            unavailable.extend(w.status.deleting.iter().map(|o| o.name.clone()));
            unavailable.extend(w.status.creating.iter().map(|o| o.name.clone()));
            removable.insert(
                name.clone(),
                w.status.target_size.unwrap_or(0) - w.pool.spec.min_size,
            );
            if !w.status.creating.is_empty() {
                in_cooldown = true;
            }
            if let Some(t) = w.status.last_scale_up_time {
                if elapsed(t.0, now) < self.cfg.scale_down_delay_after_add {
                    in_cooldown = true;
                }
            }
        }
        for n in all_nodes {
            let pool = pool_of(&n.metadata.labels).to_string();
            if !removable.contains_key(&pool) || unavailable.contains(&n.metadata.name) {
                continue;
            }
            if !is_ready(n) || n.spec.unschedulable {
                continue;
            }
            candidates.push(Candidate {
                node: n.metadata.name.clone(),
                pool,
            });
        }
        let verdicts = find_unneeded(
            snapshot,
            &candidates,
            &unavailable,
            &mut removable,
            self.cfg.utilization_threshold,
        );
        for w in work.iter_mut() {
            let pool = w.pool.metadata.name.clone();
            let old: HashMap<String, NodeOperation> = w
                .status
                .unneeded
                .drain(..)
                .map(|o| (o.name.clone(), o))
                .collect();
            w.status.blocked.clear();
            for c in candidates.iter().filter(|c| c.pool == pool) {
                let node = c.node.clone();
                match verdicts.get(&node) {
                    Some(Verdict::Unneeded) => {
                        let op = old.get(&node).cloned().unwrap_or(NodeOperation {
                            name: node.clone(),
                            since: Some(Time(now)),
                        });
                        w.status.unneeded.push(op);
                    }
                    Some(Verdict::Kept(why)) => {
                        w.status.blocked.push(NodeNote {
                            name: node.clone(),
                            reason: why.clone(),
                        });
                        if let Some(n) = snapshot.nodes.get(&node) {
                            let about = Involved::of(n.node.as_ref());
                            self.say(
                                about,
                                "Normal",
                                "ScaleDownBlocked",
                                format!("node is idle but kept: {why}"),
                            );
                        }
                    }
                    _ => {}
                }
            }
            if in_cooldown {
                continue;
            }
            let due: Vec<NodeOperation> = w
                .status
                .unneeded
                .iter()
                .filter(|o| elapsed(since(o), now) >= self.cfg.scale_down_unneeded_time)
                .cloned()
                .collect();
            for op in due {
                w.status.unneeded.retain(|o| o.name != op.name);
                w.status.deleting.push(NodeOperation {
                    name: op.name.clone(),
                    since: Some(Time(now)),
                });
                let to = w.status.target_size.unwrap_or(0) - 1;
                w.status.target_size = Some(to);
                w.status.last_scale_down_time = Some(Time(now));
                w.status.message = format!(
                    "scaling down to {to}: node {} unneeded since {}",
                    op.name,
                    Time(since(&op))
                );
                tracing::info!(pool = %pool, node = %op.name, to, "scaling down");
                if let Some(n) = snapshot.nodes.get(&op.name) {
                    let about = Involved::of(n.node.as_ref());
                    self.say(
                        about,
                        "Normal",
                        "ScaleDown",
                        format!(
                            "node removed by cluster autoscaler: unneeded for {:?}",
                            self.cfg.scale_down_unneeded_time
                        ),
                    );
                }
                let about = Involved::of(w.pool.as_ref());
                let msg = w.status.message.clone();
                self.say(about, "Normal", "ScaleDown", msg);
            }
        }
    }

    /// Write the pool's status on top of the version read; false when it
    /// changed meanwhile (the next scan starts from the new one).
    async fn write_status(&self, pool: &NodePool, status: &NodePoolStatus) -> bool {
        let mut p = pool.clone();
        p.status = Some(status.clone());
        let obj = match serde_json::to_value(&p) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(pool = %pool.metadata.name, error = %e, "cannot encode a pool");
                return false;
            }
        };
        match self
            .api
            .update(registry::NODE_POOL.plural, "", obj, true, false)
            .await
        {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!(pool = %pool.metadata.name, error = %e, "pool status not written; next scan");
                false
            }
        }
    }

    /// Carry out the pool's written intent.
    async fn act(
        &mut self,
        pool: &NodePool,
        st: &NodePoolStatus,
        by_name: &BTreeMap<&str, &Arc<Node>>,
        all_pods: &[Arc<Pod>],
        now: DateTime<Utc>,
    ) {
        let pname = pool.metadata.name.clone();
        if self.provider.names_nodes() {
            if !st.creating.is_empty() {
                self.resize(pname.clone(), st.target_size.unwrap_or(0));
            }
        } else {
            for op in &st.creating {
                if lock(&self.created).contains(&op.name) {
                    continue;
                }
                let node = op.name.clone();
                self.call(pname.clone(), node, true);
            }
        }
        for op in &st.deleting {
            if lock(&self.deleted).contains(&op.name) {
                continue;
            }
            if let Some(n) = by_name.get(op.name.as_str()) {
                if !self.drained(n, all_pods, elapsed(since(op), now)).await {
                    continue;
                }
            }
            self.call(pname.clone(), op.name.clone(), false);
        }
    }

    /// Cordon the node and delete its pods (each with its grace period);
    /// true once they are gone (DaemonSet and static pods aside) or the
    /// drain has taken longer than allowed.
    ///
    /// The scheduler binds from its own cache, so a pod can land on the
    /// node just after the cordon, unseen by this scan's snapshot: the
    /// scan that cordons never finishes the drain, and a drain the
    /// snapshot calls finished is confirmed by a linearizable list of the
    /// node's pods before the node goes. (A bind racing even that is left
    /// to the garbage collector, which deletes pods of nodes that are gone.)
    async fn drained(&mut self, node: &Node, all_pods: &[Arc<Pod>], took: Duration) -> bool {
        let name = &node.metadata.name;
        if !node.spec.unschedulable {
            let patch = json!({"spec": {"unschedulable": true}});
            if let Err(e) = self
                .api
                .patch(registry::NODE.plural, "", name, patch, false, false)
                .await
            {
                tracing::debug!(node = %name, error = %e, "cordon failed; next scan");
                return false;
            }
        }
        let on_node: Vec<Arc<Pod>> = all_pods
            .iter()
            .filter(|p| &p.spec.node_name == name)
            .cloned()
            .collect();
        let left = self.evict(name, &on_node).await;
        if took >= self.cfg.max_graceful_termination {
            return true;
        }
        if left > 0 || !node.spec.unschedulable {
            return false;
        }
        let params = ListParams::default().fields(&format!("spec.nodeName={name}"));
        let fresh = match self.api.list(registry::POD.plural, "", &params).await {
            Ok(l) => l
                .items
                .into_iter()
                .filter_map(|v| serde_json::from_value::<Pod>(v).ok())
                .map(Arc::new)
                .collect::<Vec<_>>(),
            Err(e) => {
                tracing::debug!(node = %name, error = %e, "cannot list the node's pods; next scan");
                return false;
            }
        };
        let left = self.evict(name, &fresh).await;
        if left > 0 {
            tracing::info!(node = %name, left, "pods the cache had not shown are still on a drained node");
        }
        left == 0
    }

    /// Delete the pods of a node being drained (DaemonSet and static pods
    /// and finished pods aside); how many are still there.
    async fn evict(&mut self, name: &str, pods: &[Arc<Pod>]) -> usize {
        let mut left = 0;
        for p in pods.iter().filter(|p| !is_terminal(p)) {
            if is_daemon(p) || p.metadata.annotations.contains_key(MIRROR_ANNOTATION) {
                continue;
            }
            left += 1;
            if p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let m = &p.metadata;
            let dp = DeleteParams {
                precondition_uid: m.uid.clone(),
                ..Default::default()
            };
            match self
                .api
                .delete(registry::POD.plural, &m.namespace, &m.name, &dp)
                .await
            {
                Ok(_) => self.say(
                    Involved::of(p.as_ref()),
                    "Normal",
                    "ScaleDown",
                    format!("deleting pod for node scale down (node {name})"),
                ),
                Err(e) if e.is(Reason::NotFound) => left -= 1,
                Err(e) => {
                    tracing::debug!(pod = %pod_key(p), error = %e, "could not delete a pod while draining")
                }
            }
        }
        left
    }

    /// Ask a provider that names its machines for `target` nodes in
    /// `pool`, in a task, unless a call for the pool is in flight.
    fn resize(&mut self, pool: String, target: i32) {
        let key = format!("pool {pool}");
        if !lock(&self.busy).insert(key.clone()) {
            return;
        }
        let (prov, busy) = (self.provider.clone(), self.busy.clone());
        self.tasks.spawn(async move {
            match prov.resize(&pool, target).await {
                Ok(()) => tracing::debug!(pool = %pool, target, provider = prov.name(), "provider resize done"),
                Err(e) => tracing::warn!(pool = %pool, target, error = %e, "provider resize failed; next scan retries"),
            }
            lock(&busy).remove(&key);
        });
    }

    /// A provider call for `node` in a task, unless one is in flight. A
    /// deletion also removes the Node object.
    fn call(&mut self, pool: String, node: String, create: bool) {
        if !lock(&self.busy).insert(node.clone()) {
            return;
        }
        let (prov, api) = (self.provider.clone(), self.api.clone());
        let (busy, created, deleted) = (
            self.busy.clone(),
            self.created.clone(),
            self.deleted.clone(),
        );
        self.tasks.spawn(async move {
            let res = if create {
                prov.create(&pool, &node).await
            } else {
                match prov.delete(&pool, &node).await {
                    Ok(()) => match api.delete(registry::NODE.plural, "", &node, &DeleteParams::default()).await {
                        Ok(_) => Ok(()),
                        Err(e) if e.is(Reason::NotFound) => Ok(()),
                        Err(e) => Err(crate::ProviderError::Failed(format!("deleting node object: {e}"))),
                    },
                    Err(e) => Err(e),
                }
            };
            match res {
                Ok(()) => {
                    tracing::info!(pool = %pool, node = %node, create, provider = prov.name(), "provider call done");
                    lock(if create { &created } else { &deleted }).insert(node.clone());
                }
                Err(e) => tracing::warn!(pool = %pool, node = %node, create, error = %e, "provider call failed; next scan retries"),
            }
            lock(&busy).remove(&node);
        });
    }
}

async fn run(cfg: Config, provider: Arc<dyn NodeProvider>, ctx: LeaderContext) {
    let pods = ctx.informers.get::<Pod>();
    let nodes = ctx.informers.get::<Node>();
    let pools = ctx.informers.get::<NodePool>();
    let stop: CancellationToken = ctx.stop.clone();
    loop {
        let wait = Duration::from_secs(60);
        let synced = async {
            pods.wait_synced(wait).await
                && nodes.wait_synced(wait).await
                && pools.wait_synced(wait).await
        };
        tokio::select! {
            ok = synced => if ok { break },
            _ = stop.cancelled() => return,
        }
    }
    tracing::info!(term = ctx.term, provider = provider.name(), scan = ?cfg.scan_interval, "cluster autoscaler started");
    let mut tick = tokio::time::interval(cfg.scan_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut term = Term::new(cfg, provider, ctx.api.clone());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        term.scan(&pods, &nodes, &pools).await;
        while term.tasks.try_join_next().is_some() {}
    }
    // Provider calls in flight get a moment to finish; what they did not
    // finish the next leader does again (the names are in the store).
    let mut tasks = std::mem::take(&mut term.tasks);
    if tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tasks.shutdown().await;
    }
    tracing::info!(term = ctx.term, "cluster autoscaler stopped");
}

#[cfg(test)]
mod tests;
