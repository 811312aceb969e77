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

use super::*;

/// A provider the drain never reaches: these tests stop before the call.
struct Unused;

#[async_trait::async_trait]
impl NodeProvider for Unused {
    fn name(&self) -> &str {
        "unused"
    }
    fn manages(&self, _: &str) -> bool {
        true
    }
    async fn create(&self, _: &str, _: &str) -> Result<(), crate::ProviderError> {
        Err(crate::ProviderError::Failed("not in this test".into()))
    }
    async fn delete(&self, _: &str, _: &str) -> Result<(), crate::ProviderError> {
        Err(crate::ProviderError::Failed("not in this test".into()))
    }
}

async fn term() -> Term {
    let store = MemStore::new();
    store.set_term(1);
    let api = ApiServer::new(Arc::new(store), ApiConfig::default());
    api.ensure_namespaces().await.expect("namespaces");
    Term::new(Config::default(), Arc::new(Unused), Arc::new(api.fenced(1)))
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
