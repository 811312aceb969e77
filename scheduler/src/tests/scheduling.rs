//! The scheduling loop against the API server over the in-memory store.

use std::sync::Arc;
use std::time::Duration;

use flotilla_control::memstore::MemStore;
use flotilla_control::{ApiConfig, ApiServer};
use flotilla_objects::api::{DeleteParams, ListParams, ObjectApi, Reason};
use flotilla_runtime::{Informers, LeaderContext, LeaderLoop};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{node_json, pod_json};
use crate::Scheduler;

struct Env {
    api: ApiServer,
    stop: CancellationToken,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn env() -> Env {
    let store = MemStore::new();
    store.set_term(1);
    let api = ApiServer::new(Arc::new(store), ApiConfig::default());
    api.ensure_namespaces().await.expect("namespaces");
    Env {
        api,
        stop: CancellationToken::new(),
    }
}

impl Env {
    fn start(&self) {
        let fenced: Arc<dyn ObjectApi> = Arc::new(self.api.fenced(1));
        let ctx = LeaderContext {
            term: 1,
            api: fenced.clone(),
            informers: Informers::new(fenced),
            stop: self.stop.clone(),
        };
        tokio::spawn(Scheduler.run(ctx));
    }

    async fn node(&self, name: &str, cpu: &str, extra: Value) {
        ObjectApi::create(
            &self.api,
            "nodes",
            "",
            node_json(name, cpu, "8Gi", extra),
            false,
        )
        .await
        .expect("node");
    }

    async fn pod(&self, name: &str, cpu: &str, extra: Value) {
        let mut p = pod_json(name, cpu, "", extra);
        if let Some(m) = p["metadata"].as_object_mut() {
            m.remove("uid");
        }
        ObjectApi::create(&self.api, "pods", "default", p, false)
            .await
            .expect("pod");
    }

    async fn class(&self, name: &str, value: i32) {
        let c = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value});
        ObjectApi::create(&self.api, "priorityclasses", "", c, false)
            .await
            .expect("class");
    }

    async fn get(&self, name: &str) -> Value {
        ObjectApi::get(&self.api, "pods", "default", name, false)
            .await
            .expect("pod")
    }

    async fn pods(&self) -> Vec<Value> {
        ObjectApi::list(&self.api, "pods", "default", &ListParams::default())
            .await
            .expect("list")
            .items
    }

    async fn node_of(&self, name: &str) -> String {
        self.get(name).await["spec"]["nodeName"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    async fn condition(&self, name: &str) -> Option<Value> {
        let p = self.get(name).await;
        p["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "PodScheduled")
            .cloned()
    }

    async fn events(&self, reason: &str) -> Vec<Value> {
        ObjectApi::list(
            &self.api,
            "events",
            "default",
            &ListParams::default().fields(&format!("reason={reason}")),
        )
        .await
        .expect("events")
        .items
    }
}

async fn until<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn pods_are_bound_within_capacity_and_the_rest_say_why() {
    let e = env().await;
    for n in ["n1", "n2", "n3"] {
        e.node(n, "1", json!({})).await;
    }
    e.node(
        "gpu",
        "8",
        json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
    )
    .await;
    for i in 0..4 {
        e.pod(&format!("p{i}"), "1", json!({})).await;
    }
    e.start();
    until("three pods bound", || async {
        let mut bound = 0;
        for i in 0..4 {
            if !e.node_of(&format!("p{i}")).await.is_empty() {
                bound += 1;
            }
        }
        bound == 3
    })
    .await;
    let mut nodes = Vec::new();
    let mut pending = String::new();
    for i in 0..4 {
        let name = format!("p{i}");
        match e.node_of(&name).await.as_str() {
            "" => pending = name,
            n => nodes.push(n.to_string()),
        }
    }
    nodes.sort();
    assert_eq!(
        nodes,
        ["n1", "n2", "n3"],
        "one per node, none on the tainted node"
    );
    until("the pending pod says why", || async {
        e.condition(&pending).await.is_some()
    })
    .await;
    let c = e.condition(&pending).await.expect("condition");
    assert_eq!(c["status"], "False");
    assert_eq!(c["reason"], "Unschedulable");
    assert_eq!(
        c["message"],
        "0/4 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 3 Insufficient cpu."
    );
    until("a FailedScheduling event", || async {
        !e.events("FailedScheduling").await.is_empty()
    })
    .await;
    until("Scheduled events", || async {
        e.events("Scheduled").await.len() == 3
    })
    .await;
    // A new node: the parked pod is tried again and bound there.
    e.node("n4", "1", json!({})).await;
    until("the pending pod lands on the new node", || async {
        e.node_of(&pending).await == "n4"
    })
    .await;
    let c = e.condition(&pending).await.expect("condition");
    assert_eq!(c["status"], "True");
}

#[tokio::test]
async fn higher_priority_first_and_classes_resolved_at_admission() {
    let e = env().await;
    e.class("high", 1000).await;
    let refused = ObjectApi::create(
        &e.api,
        "pods",
        "default",
        pod_json(
            "bad",
            "",
            "",
            json!({"spec": {"priorityClassName": "nope"}}),
        ),
        false,
    )
    .await
    .expect_err("unknown class");
    assert_eq!(refused.reason, Reason::Forbidden);
    e.node("only", "1", json!({})).await;
    e.pod("low", "1", json!({})).await;
    e.pod("high", "1", json!({"spec": {"priorityClassName": "high"}}))
        .await;
    assert_eq!(e.get("high").await["spec"]["priority"], 1000);
    assert_eq!(e.get("low").await["spec"]["priority"], 0);
    e.start();
    until("the high-priority pod is bound first", || async {
        e.node_of("high").await == "only"
    })
    .await;
    until("the low one is unschedulable", || async {
        e.condition("low").await.is_some()
    })
    .await;
    assert_eq!(e.node_of("low").await, "");
    // An update that leaves out what admission resolved keeps it.
    let mut high = e.get("high").await;
    for f in ["priority", "priorityClassName", "preemptionPolicy"] {
        high["spec"].as_object_mut().map(|s| s.remove(f));
    }
    high["spec"]["containers"][0]["image"] = json!("busybox:2");
    let updated = ObjectApi::update(&e.api, "pods", "default", high, false, false)
        .await
        .expect("update");
    assert_eq!(updated.object["spec"]["priority"], 1000);
    assert_eq!(updated.object["spec"]["priorityClassName"], "high");
}

#[tokio::test]
async fn preemption_evicts_a_lower_priority_pod_and_nominates_the_node() {
    let e = env().await;
    for (name, value) in [("low", 1), ("high", 100)] {
        e.class(name, value).await;
    }
    e.node("only", "1", json!({})).await;
    e.pod("low", "1", json!({"spec": {"priorityClassName": "low"}}))
        .await;
    e.start();
    until("the low pod is bound", || async {
        e.node_of("low").await == "only"
    })
    .await;
    e.pod("high", "1", json!({"spec": {"priorityClassName": "high"}}))
        .await;
    until("the low pod is being deleted", || async {
        !e.get("low").await["metadata"]["deletionTimestamp"].is_null()
    })
    .await;
    until("the high pod is nominated", || async {
        e.get("high").await["status"]["nominatedNodeName"] == "only"
    })
    .await;
    assert_eq!(e.node_of("high").await, "", "not before the victim is gone");
    // The node's agent would confirm the victim stopped: here, the test.
    ObjectApi::delete(
        &e.api,
        "pods",
        "default",
        "low",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .expect("delete");
    // A less important pod that comes now does not take the room.
    e.pod("mid", "1", json!({"spec": {"priorityClassName": "low"}}))
        .await;
    until("the high pod is bound", || async {
        e.node_of("high").await == "only"
    })
    .await;
    until("mid waits", || async { e.condition("mid").await.is_some() }).await;
    assert_eq!(e.node_of("mid").await, "");
    let high = e.get("high").await;
    assert!(high["status"]["nominatedNodeName"].is_null(), "{high}");
    until("a Preempted event", || async {
        !e.events("Preempted").await.is_empty()
    })
    .await;
}

#[tokio::test]
async fn anti_affinity_spreads_and_many_pods_never_overcommit() {
    let e = env().await;
    for n in ["a", "b"] {
        e.node(n, "2", json!({})).await;
    }
    let anti = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"affinity": {"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": {"matchLabels": {"app": "web"}},
            "topologyKey": "kubernetes.io/hostname"}]}}}});
    for i in 0..3 {
        e.pod(&format!("web{i}"), "", anti.clone()).await;
    }
    for i in 0..10 {
        e.pod(&format!("small{i}"), "500m", json!({})).await;
    }
    e.start();
    until("six pods bound per the capacity, two web pods", || async {
        let bound = e
            .pods()
            .await
            .iter()
            .filter(|p| {
                p["spec"]["nodeName"]
                    .as_str()
                    .is_some_and(|n| !n.is_empty())
            })
            .count();
        bound == 10
    })
    .await;
    let mut webs = Vec::new();
    for i in 0..3 {
        webs.push(e.node_of(&format!("web{i}")).await);
    }
    webs.sort();
    assert_eq!(webs, ["", "a", "b"]);
    let mut per_node = std::collections::BTreeMap::new();
    for i in 0..10 {
        let n = e.node_of(&format!("small{i}")).await;
        *per_node.entry(n).or_insert(0) += 1;
    }
    // 2 cpu per node, 500m each: four per node, two left over.
    assert_eq!(per_node.get("a"), Some(&4));
    assert_eq!(per_node.get("b"), Some(&4));
    assert_eq!(per_node.get(""), Some(&2));
    let pods = e.pods().await;
    let web_pending = pods
        .iter()
        .find(|p| p["metadata"]["labels"]["app"] == "web" && p["spec"]["nodeName"].is_null())
        .expect("a pending web pod");
    let name = web_pending["metadata"]["name"].as_str().unwrap_or("");
    until("the pending web pod says why", || async {
        e.condition(name).await.is_some()
    })
    .await;
    let msg = e.condition(name).await.expect("cond")["message"].clone();
    assert_eq!(
        msg,
        "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules."
    );
}

#[tokio::test]
async fn pods_waiting_at_the_start_of_a_term_are_queued_by_creation_time() {
    let e = env().await;
    e.node("only", "1", json!({})).await;
    // Created an hour earlier, but listed after "a-later" by name.
    let earlier = e
        .api
        .clone()
        .with_clock(Arc::new(|| chrono::Utc::now() - chrono::Duration::hours(1)));
    let mut p = pod_json("z-earlier", "1", "", json!({}));
    p["metadata"].as_object_mut().map(|m| m.remove("uid"));
    ObjectApi::create(&earlier, "pods", "default", p, false)
        .await
        .expect("pod");
    e.pod("a-later", "1", json!({})).await;
    e.start();
    until("the earlier pod is bound", || async {
        e.node_of("z-earlier").await == "only"
    })
    .await;
    until("the later one waits", || async {
        e.condition("a-later").await.is_some()
    })
    .await;
    assert_eq!(e.node_of("a-later").await, "");
}
