//! ReplicaSets and ReplicationControllers against the in-memory cluster.

use flotilla_objects::apps::ReplicaSet;
use flotilla_objects::core::{Pod, ReplicationController};
use serde_json::json;

use super::*;
use crate::pods::controlled_by;
use crate::testenv::{until, Env};

fn rs(name: &str, replicas: i32) -> serde_json::Value {
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})
}

async fn owned_active(env: &Env, uid: &str) -> usize {
    env.pods()
        .await
        .iter()
        .filter(|p| controlled_by(&p.metadata, uid) && is_active(p))
        .count()
}

#[tokio::test]
async fn a_replica_set_keeps_its_count_and_reports_availability() {
    let env = Env::new().await;
    env.run(ReplicasLoop::<ReplicaSet>::default());
    env.kubelet();
    let r = env.apply(rs("web", 5)).await;
    let uid = r["metadata"]["uid"].as_str().expect("uid").to_string();
    let api = env.typed::<ReplicaSet>("default");
    until("5 available replicas in status", || async {
        let s = api.get("web").await.expect("rs").status.unwrap_or_default();
        s.replicas == 5
            && s.ready_replicas == 5
            && s.available_replicas == 5
            && s.observed_generation == 1
    })
    .await;
    assert_eq!(owned_active(&env, &uid).await, 5);
    // A pod deleted by someone else is replaced.
    let victim = env.pods().await[0].metadata.name.clone();
    env.typed::<Pod>("default")
        .delete(&victim, &Default::default())
        .await
        .expect("delete");
    until("the pod is replaced", || async {
        let names: Vec<String> = env
            .pods()
            .await
            .iter()
            .map(|p| p.metadata.name.clone())
            .collect();
        names.len() == 5 && !names.contains(&victim)
    })
    .await;
    // Scale down prefers pods that are not ready.
    env.patch("replicasets", "web", json!({"spec": {"replicas": 7}}))
        .await;
    until("7 pods", || async { owned_active(&env, &uid).await == 7 }).await;
    env.patch("replicasets", "web", json!({"spec": {"replicas": 2}}))
        .await;
    until("2 pods", || async { env.pods().await.len() == 2 }).await;
    until("status says 2", || async {
        api.get("web")
            .await
            .expect("rs")
            .status
            .unwrap_or_default()
            .replicas
            == 2
    })
    .await;
}

#[tokio::test]
async fn scale_down_takes_unready_pods_first() {
    let env = Env::new().await;
    env.kubelet();
    // Two ready orphans and one that never becomes ready, then a replica set
    // of 2 that adopts all three: it must delete the unready one.
    for (name, ready) in [("a", "yes"), ("b", "yes"), ("c", "no")] {
        let p = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "web", "test/ready": ready}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        env.apply(p).await;
    }
    until("the pods run", || async {
        env.pods()
            .await
            .iter()
            .all(|p| p.status.as_ref().is_some_and(|s| s.phase == "Running"))
    })
    .await;
    env.run(ReplicasLoop::<ReplicaSet>::default());
    let r = env.apply(rs("web", 2)).await;
    let uid = r["metadata"]["uid"].as_str().expect("uid").to_string();
    until("two pods left, both adopted", || async {
        let pods = env.pods().await;
        pods.len() == 2 && pods.iter().all(|p| controlled_by(&p.metadata, &uid))
    })
    .await;
    let names: Vec<String> = env
        .pods()
        .await
        .iter()
        .map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(names, ["a", "b"], "the unready pod goes first");
}

#[tokio::test]
async fn a_pod_that_stops_matching_is_released_and_replaced() {
    let env = Env::new().await;
    env.run(ReplicasLoop::<ReplicaSet>::default());
    env.kubelet();
    let r = env.apply(rs("web", 2)).await;
    let uid = r["metadata"]["uid"].as_str().expect("uid").to_string();
    until("2 pods", || async { owned_active(&env, &uid).await == 2 }).await;
    let name = env.pods().await[0].metadata.name.clone();
    env.patch(
        "pods",
        &name,
        json!({"metadata": {"labels": {"app": "debug"}}}),
    )
    .await;
    until("released and replaced", || async {
        let pods = env.pods().await;
        let released = pods.iter().find(|p| p.metadata.name == name);
        released.is_some_and(|p| controller_of(&p.metadata).is_none())
            && owned_active(&env, &uid).await == 2
    })
    .await;
    assert_eq!(env.pods().await.len(), 3);
}

#[tokio::test]
async fn a_replication_controller_uses_its_template_labels_as_selector() {
    let env = Env::new().await;
    env.run(ReplicasLoop::<ReplicationController>::default());
    env.kubelet();
    let rc = json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "old"},
        "spec": {"replicas": 3, "template": {"metadata": {"labels": {"app": "old"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    env.apply(rc).await;
    let api = env.typed::<ReplicationController>("default");
    until("3 ready", || async {
        api.get("old")
            .await
            .expect("rc")
            .status
            .unwrap_or_default()
            .ready_replicas
            == 3
    })
    .await;
}
