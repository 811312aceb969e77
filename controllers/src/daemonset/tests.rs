//! DaemonSets against the in-memory cluster: nodes are objects the tests
//! create and delete; the stand-in kubelet runs the pods.

use std::collections::BTreeSet;

use flotilla_objects::apps::DaemonSet;
use flotilla_objects::core::Pod;
use serde_json::{json, Value};

use super::*;
use crate::testenv::{until, Env};

async fn env() -> Env {
    let env = Env::new().await;
    env.run(DaemonSetLoop);
    env.kubelet();
    env
}

async fn add_node(env: &Env, name: &str, labels: Value, taints: Value) {
    let n = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints}});
    env.api.apply("", n, false).await.expect("node");
}

fn ds(name: &str, image: &str, extra: Value) -> Value {
    let mut d = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}]}}}});
    flotilla_objects::merge_patch(&mut d, &extra);
    d
}

/// node -> images of the live pods there.
async fn placement(env: &Env) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = env
        .pods()
        .await
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p: &Pod| (p.spec.node_name.clone(), p.spec.containers[0].image.clone()))
        .collect();
    out.sort();
    out
}

fn on(nodes: &[&str], image: &str) -> Vec<(String, String)> {
    nodes
        .iter()
        .map(|n| (n.to_string(), image.to_string()))
        .collect()
}

async fn status(env: &Env, name: &str) -> flotilla_objects::apps::DaemonSetStatus {
    env.typed::<DaemonSet>("default")
        .get(name)
        .await
        .expect("ds")
        .status
        .unwrap_or_default()
}

#[tokio::test]
async fn a_daemon_set_follows_nodes_joining_and_leaving() {
    let env = env().await;
    add_node(&env, "n1", json!({}), json!([])).await;
    add_node(&env, "n2", json!({}), json!([])).await;
    env.apply(ds("agent", "v1", json!({}))).await;
    until("one pod per node", || async {
        placement(&env).await == on(&["n1", "n2"], "v1")
    })
    .await;
    add_node(&env, "n3", json!({}), json!([])).await;
    until("the new node gets one", || async {
        placement(&env).await == on(&["n1", "n2", "n3"], "v1")
    })
    .await;
    env.api
        .delete(
            &flotilla_objects::registry::NODE,
            "",
            "n2",
            &Default::default(),
        )
        .await
        .expect("delete node");
    until("the gone node's pod goes", || async {
        placement(&env).await == on(&["n1", "n3"], "v1")
    })
    .await;
    until("status", || async {
        let s = status(&env, "agent").await;
        s.desired_number_scheduled == 2
            && s.current_number_scheduled == 2
            && s.number_ready == 2
            && s.number_misscheduled == 0
    })
    .await;
}

#[tokio::test]
async fn node_selector_and_taints_pick_the_nodes_but_cordoned_nodes_keep_their_daemon() {
    let env = env().await;
    add_node(&env, "ssd", json!({"disk": "ssd"}), json!([])).await;
    add_node(&env, "hdd", json!({"disk": "hdd"}), json!([])).await;
    add_node(
        &env,
        "tainted",
        json!({"disk": "ssd"}),
        json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
    )
    .await;
    add_node(
        &env,
        "cordoned",
        json!({"disk": "ssd"}),
        json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]),
    )
    .await;
    env.apply(ds(
        "cache",
        "v1",
        json!({"spec": {"template": {"spec": {"nodeSelector": {"disk": "ssd"}}}}}),
    ))
    .await;
    until("ssd nodes it tolerates", || async {
        placement(&env).await == on(&["cordoned", "ssd"], "v1")
    })
    .await;
    // A label change moves it.
    ObjectApi::patch(
        &env.api,
        "nodes",
        "",
        "ssd",
        json!({"metadata": {"labels": {"disk": "hdd"}}}),
        false,
        false,
    )
    .await
    .expect("relabel");
    until("the relabelled node's pod goes", || async {
        placement(&env).await == on(&["cordoned"], "v1")
    })
    .await;
}

#[tokio::test]
async fn a_rolling_update_replaces_one_node_at_a_time() {
    let env = env().await;
    for n in ["a", "b", "c", "d"] {
        add_node(&env, n, json!({}), json!([])).await;
    }
    env.apply(ds("log", "v1", json!({}))).await;
    until("v1 everywhere", || async {
        placement(&env).await == on(&["a", "b", "c", "d"], "v1")
    })
    .await;
    // The rolling update starts from four ready daemons (a pod not ready
    // yet is replaced at once, as Kubernetes does, and would count here).
    until("v1 ready everywhere", || async {
        env.pods().await.iter().filter(|p| is_ready(p)).count() == 4
    })
    .await;
    // Watch every change: never more than one node without a live v1 or
    // ready v2 pod (maxUnavailable 1 by default).
    let pods = env.informers.get::<Pod>();
    let mut sub = pods.subscribe();
    let worst = std::sync::Arc::new(std::sync::Mutex::new(0usize));
    let (w, p2) = (worst.clone(), pods.clone());
    let watcher = tokio::spawn(async move {
        while sub.next().await.is_some() {
            let serving: BTreeSet<String> = p2
                .list()
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
                .map(|p| p.spec.node_name.clone())
                .collect();
            let missing = 4usize.saturating_sub(serving.len());
            let mut g = w.lock().expect("lock");
            *g = (*g).max(missing);
        }
    });
    env.patch(
        "daemonsets",
        "log",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "v2"}]}}}}),
    )
    .await;
    until("v2 everywhere", || async {
        placement(&env).await == on(&["a", "b", "c", "d"], "v2")
    })
    .await;
    watcher.abort();
    assert!(
        *worst.lock().expect("lock") <= 1,
        "at most one node without its daemon at a time"
    );
    until("status updated", || async {
        let s = status(&env, "log").await;
        s.updated_number_scheduled == 4 && s.number_available == 4
    })
    .await;
}

#[tokio::test]
async fn on_delete_replaces_only_deleted_pods() {
    let env = env().await;
    for n in ["a", "b"] {
        add_node(&env, n, json!({}), json!([])).await;
    }
    env.apply(ds(
        "od",
        "v1",
        json!({"spec": {"updateStrategy": {"type": "OnDelete", "rollingUpdate": null}}}),
    ))
    .await;
    until("v1 everywhere", || async {
        placement(&env).await == on(&["a", "b"], "v1")
    })
    .await;
    env.patch(
        "daemonsets",
        "od",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "v2"}]}}}}),
    )
    .await;
    until("observed", || async {
        status(&env, "od").await.observed_generation == 2
    })
    .await;
    assert_eq!(
        placement(&env).await,
        on(&["a", "b"], "v1"),
        "nothing replaced by itself"
    );
    let victim = env
        .pods()
        .await
        .into_iter()
        .find(|p| p.spec.node_name == "a")
        .expect("pod on a");
    env.typed::<Pod>("default")
        .delete(&victim.metadata.name, &Default::default())
        .await
        .expect("delete");
    until("a runs v2, b still v1", || async {
        placement(&env).await
            == vec![
                ("a".to_string(), "v2".to_string()),
                ("b".to_string(), "v1".to_string()),
            ]
    })
    .await;
}
