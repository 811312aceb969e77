//! The drain against the real API server over the in-memory store: the
//! snapshot a scan works from can miss a pod the scheduler has just bound.

use std::sync::Arc;
use std::time::Duration;

use flotilla_control::memstore::MemStore;
use flotilla_control::{ApiConfig, ApiServer};
use flotilla_objects::api::ListParams;
use flotilla_objects::core::{Node, Pod};
use flotilla_objects::registry;
use serde_json::json;
use serde_json::Value;

use super::*;

/// A provider that only records what it is asked.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

#[async_trait::async_trait]
impl NodeProvider for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    fn manages(&self, _: &str) -> bool {
        true
    }
    async fn create(&self, _: &str, node: &str) -> Result<(), crate::ProviderError> {
        lock(&self.0).push(format!("create {node}"));
        Ok(())
    }
    async fn delete(&self, _: &str, node: &str) -> Result<(), crate::ProviderError> {
        lock(&self.0).push(format!("delete {node}"));
        Ok(())
    }
}

async fn api() -> Arc<dyn ObjectApi> {
    let store = MemStore::new();
    store.set_term(1);
    let api = ApiServer::new(Arc::new(store), ApiConfig::default());
    api.ensure_namespaces().await.expect("namespaces");
    Arc::new(api.fenced(1))
}

async fn term() -> Term {
    Term::new(
        Config::default(),
        Arc::new(Recorder::default()),
        api().await,
    )
}

/// The informers a scan reads, over `api`.
struct Caches {
    pods: Informer<Pod>,
    nodes: Informer<Node>,
    pools: Informer<NodePool>,
}

impl Caches {
    async fn new(api: &Arc<dyn ObjectApi>) -> Caches {
        let c = Caches {
            pods: Informer::spawn(api.clone()),
            nodes: Informer::spawn(api.clone()),
            pools: Informer::spawn(api.clone()),
        };
        for ok in [
            c.pods.wait_synced(Duration::from_secs(10)).await,
            c.nodes.wait_synced(Duration::from_secs(10)).await,
            c.pools.wait_synced(Duration::from_secs(10)).await,
        ] {
            assert!(ok, "informers synced");
        }
        c
    }

    /// Scan until the pool's status (as the cache shows it) meets `cond`.
    async fn scan_until(
        &self,
        t: &mut Term,
        what: &str,
        cond: impl Fn(&NodePoolStatus) -> bool,
    ) -> NodePoolStatus {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            t.scan(&self.pods, &self.nodes, &self.pools).await;
            while t.tasks.join_next().await.is_some() {}
            let st = self
                .pools
                .get("", "p")
                .and_then(|p| p.status.clone())
                .unwrap_or_default();
            if cond(&st) {
                return st;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out: {what}; status {st:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn create_pool(api: &Arc<dyn ObjectApi>, min: i32, status: Value) {
    let v = json!({"apiVersion": "flotilla.dev/v1", "kind": "NodePool",
        "metadata": {"name": "p"},
        "spec": {"minSize": min, "maxSize": 3, "machine": {"cpu": "2", "memory": "4Gi"}}});
    let mut v = api
        .create(registry::NODE_POOL.plural, "", v, false)
        .await
        .expect("pool")
        .object;
    v["status"] = status;
    api.update(registry::NODE_POOL.plural, "", v, true, false)
        .await
        .expect("pool status");
}

/// A Ready node of pool `p` with room for anything these tests run.
async fn ready_node(api: &Arc<dyn ObjectApi>, name: &str) {
    let v = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"flotilla.dev/nodepool": "p"}}});
    let mut v = api
        .create(registry::NODE.plural, "", v, false)
        .await
        .expect("node")
        .object;
    v["status"] = json!({"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
        "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True"}]});
    api.update(registry::NODE.plural, "", v, true, false)
        .await
        .expect("node status");
}

fn calls(r: &Recorder) -> Vec<String> {
    lock(&r.0).clone()
}

#[tokio::test]
async fn a_node_that_never_registers_is_given_up_and_replaced() {
    let api = api().await;
    create_pool(&api, 1, json!({})).await;
    let caches = Caches::new(&api).await;
    let rec = Arc::new(Recorder::default());
    // Times in the status have whole seconds (as Kubernetes' do): a
    // provision time of 2 s is over 1 to 3 s after the ask.
    let cfg = Config {
        max_node_provision_time: Duration::from_secs(2),
        ..Config::default()
    };
    let mut t = Term::new(cfg, rec.clone(), api.clone());
    let st = caches
        .scan_until(&mut t, "the min size asks for a node", |st| {
            st.creating.len() == 1
        })
        .await;
    let first = st.creating[0].name.clone();
    assert_eq!(calls(&rec), [format!("create {first}")]);
    // It never registers: past the provision time it is deleted through
    // the provider, and another is asked for in its place.
    let st = caches
        .scan_until(&mut t, "the first node given up, another asked for", |st| {
            st.creating.len() == 1 && st.creating[0].name != first && st.deleting.is_empty()
        })
        .await;
    let second = st.creating[0].name.clone();
    assert_eq!(st.target_size, Some(1));
    let c = calls(&rec);
    assert!(c.contains(&format!("delete {first}")), "{c:?}");
    assert!(c.contains(&format!("create {second}")), "{c:?}");
    let events = api
        .list(registry::EVENT.plural, "", &ListParams::default())
        .await
        .expect("events");
    assert!(
        events.items.iter().any(|e| e["reason"] == "ScaleUpTimedOut"
            && e["message"].as_str().is_some_and(|m| m.contains(&first))),
        "no ScaleUpTimedOut event naming {first}"
    );
}

#[tokio::test]
async fn idle_nodes_go_only_after_the_unneeded_time_and_the_delay_after_a_scale_up() {
    let api = api().await;
    let now = chrono::Utc::now();
    create_pool(
        &api,
        0,
        json!({"targetSize": 2, "lastScaleUpTime": Time(now)}),
    )
    .await;
    ready_node(&api, "n1").await;
    ready_node(&api, "n2").await;
    let caches = Caches::new(&api).await;
    let rec = Arc::new(Recorder::default());
    let long = Duration::from_secs(3600);
    // Just scaled up: unneeded nodes are noted, none removed.
    let cfg = Config {
        scale_down_unneeded_time: Duration::ZERO,
        scale_down_delay_after_add: long,
        ..Config::default()
    };
    let mut t = Term::new(cfg, rec.clone(), api.clone());
    let st = caches
        .scan_until(&mut t, "both nodes noted unneeded", |st| {
            st.unneeded.len() == 2
        })
        .await;
    assert!(st.deleting.is_empty(), "{st:?}");
    // Long after the scale-up, but not unneeded for long enough: kept.
    t.cfg.scale_down_delay_after_add = Duration::ZERO;
    t.cfg.scale_down_unneeded_time = long;
    for _ in 0..3 {
        let st = caches.scan_until(&mut t, "a scan", |_| true).await;
        assert!(st.deleting.is_empty(), "{st:?}");
        assert_eq!(st.unneeded.len(), 2, "{st:?}");
    }
    assert!(calls(&rec).is_empty(), "{:?}", calls(&rec));
    // Unneeded for long enough: both drained and removed, down to min 0.
    t.cfg.scale_down_unneeded_time = Duration::ZERO;
    let st = caches
        .scan_until(&mut t, "both nodes removed", |st| {
            st.deleting.is_empty() && st.target_size == Some(0)
        })
        .await;
    assert!(st.unneeded.is_empty(), "{st:?}");
    let mut c = calls(&rec);
    c.sort();
    assert_eq!(c, ["delete n1", "delete n2"]);
    for n in ["n1", "n2"] {
        let e = api.get(registry::NODE.plural, "", n, false).await;
        assert!(e.is_err(), "node {n} still there");
    }
}

async fn create_node(t: &Term, name: &str, cordoned: bool) -> Node {
    let v = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name}, "spec": {"unschedulable": cordoned}});
    let v = t
        .api
        .create(registry::NODE.plural, "", v, false)
        .await
        .expect("node");
    serde_json::from_value(v.object).expect("node")
}

async fn bind_pod(t: &Term, name: &str, node: &str) {
    let v = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}});
    t.api
        .create(registry::POD.plural, "default", v, false)
        .await
        .expect("pod");
}

async fn pods_on(t: &Term, node: &str) -> Vec<Pod> {
    let p = ListParams::default().fields(&format!("spec.nodeName={node}"));
    t.api
        .list(registry::POD.plural, "", &p)
        .await
        .expect("list")
        .items
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("pod"))
        .collect()
}

#[tokio::test]
async fn the_scan_that_cordons_a_node_does_not_finish_its_drain() {
    let mut t = term().await;
    let node = create_node(&t, "n1", false).await;
    assert!(
        !t.drained(&node, &[], Duration::ZERO).await,
        "a node cordoned in this scan may still receive a pod bound from the scheduler's older view"
    );
    let v = t
        .api
        .get(registry::NODE.plural, "", "n1", false)
        .await
        .expect("node");
    assert_eq!(v["spec"]["unschedulable"], json!(true), "cordoned: {v}");
}

#[tokio::test]
async fn a_pod_the_snapshot_missed_keeps_the_node_until_it_is_gone() {
    let mut t = term().await;
    let node = create_node(&t, "n1", true).await;
    // Bound after the scan's snapshot was taken: the snapshot shows none.
    bind_pod(&t, "late", "n1").await;
    assert!(
        !t.drained(&node, &[], Duration::ZERO).await,
        "the node would go with a pod still bound to it"
    );
    let left = pods_on(&t, "n1").await;
    assert_eq!(left.len(), 1);
    assert!(
        left[0].metadata.deletion_timestamp.is_some(),
        "the late pod is being deleted: {:?}",
        left[0].metadata
    );
    // Still terminating (its agent has not confirmed): the node stays.
    assert!(!t.drained(&node, &[], Duration::ZERO).await);
    // Past the longest drain the node goes anyway.
    assert!(t.drained(&node, &[], t.cfg.max_graceful_termination).await);
}

#[tokio::test]
async fn a_cordoned_node_without_pods_is_drained() {
    let mut t = term().await;
    let node = create_node(&t, "n1", true).await;
    bind_pod(&t, "elsewhere", "n2").await;
    assert!(t.drained(&node, &[], Duration::ZERO).await);
}
