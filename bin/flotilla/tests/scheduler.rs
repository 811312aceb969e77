//! The scheduler on real masters with hollow nodes (Node objects created by
//! the test; no agent runs): pods get bound, and a SIGKILL of the leader in
//! the middle of scheduling ends with every pod bound exactly once and no
//! node over-committed.
//!
//! Flotilla only: with `FLOTILLA_TEST_TARGET=etcd` every test here is skipped.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use flotilla_client::{Client, EventType, ListParams, WatchEvent, WatchParams};
use serde_json::{json, Value};
use tokio_stream::StreamExt;

const NODES: usize = 25;
/// 4 cpu per node and 100m per pod: the pods fill the nodes exactly, so a
/// single over-committed node leaves some pod unbound.
const PODS: usize = 1000;

fn node(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
        "status": {"allocatable": {"cpu": "4", "memory": "64Gi", "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True"}]}})
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}})
}

async fn bound_count(c: &Client) -> usize {
    match c.list_all("pods", "default", &ListParams::default()).await {
        Ok(l) => l
            .items
            .iter()
            .filter(|p| {
                p["spec"]["nodeName"]
                    .as_str()
                    .is_some_and(|n| !n.is_empty())
            })
            .count(),
        Err(_) => 0,
    }
}

/// Three masters and a client of all of them, once the default namespace
/// exists; None when the target is etcd.
async fn start() -> Option<(Cluster, Client)> {
    if skip_on_etcd("scheduler", false) {
        return None;
    }
    let cluster = Cluster::start(3, Opts::default()).await;
    let addrs: Vec<String> = (0..3).map(|i| cluster.client_addr(i)).collect();
    let client = Client::connect(&addrs).expect("client");
    wait_for(
        Duration::from_secs(15),
        "the default namespace",
        async || client.get("namespaces", "", "default").await,
    )
    .await;
    Some((cluster, client))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_while_scheduling_binds_every_pod_once_without_overcommit() {
    let Some((mut cluster, client)) = start().await else {
        return;
    };
    for i in 0..NODES {
        client
            .create("nodes", "", &node(&format!("hollow-{i:02}")), false)
            .await
            .expect("node");
    }
    // Every change of every pod, from before the first one: a pod's node,
    // once set, must never change.
    let start_rv = client
        .list("pods", "default", &ListParams::default())
        .await
        .expect("list")
        .resource_version;
    let first_node: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let rebound: Arc<Mutex<Vec<String>>> = Arc::default();
    let watch = {
        let (c, first, rebound) = (client.clone(), first_node.clone(), rebound.clone());
        tokio::spawn(async move {
            // The leader is killed below, and with it maybe the master this
            // watch is on: like an informer's, the watch then resumes from
            // the last change it saw (it once ended there, and the test
            // waited for bindings it could no longer see).
            let mut rv = start_rv;
            loop {
                let p = WatchParams {
                    resource_version: rv.clone(),
                    ..Default::default()
                };
                let Ok(mut s) = c.watch("pods", "default", &p).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                while let Some(Ok(ev)) = s.next().await {
                    if let Some(v) = ev.object["metadata"]["resourceVersion"].as_str() {
                        rv = v.to_string();
                    }
                    record_binding(&ev, &first, &rebound);
                }
            }
        })
    };
    let creators: Vec<_> = (0..16)
        .map(|t| {
            let c = client.clone();
            tokio::spawn(async move {
                for i in (t..PODS).step_by(16) {
                    c.create("pods", "default", &pod(&format!("p-{i:04}")), false)
                        .await
                        .expect("create pod");
                }
            })
        })
        .collect();
    // Kill the leader once scheduling is well under way.
    wait_until(
        Duration::from_secs(60),
        "a third of the pods are bound",
        async || bound_count(&client).await >= PODS / 3,
    )
    .await;
    let leader = cluster.leader().await;
    cluster.kill(leader);
    let at_kill = bound_count(&client).await;
    println!("[test] killed the leader, master {leader}, with {at_kill} pods bound");
    for c in creators {
        c.await.expect("creator");
    }
    wait_until(Duration::from_secs(90), "every pod is bound", async || {
        bound_count(&client).await == PODS
    })
    .await;
    let pods = client
        .list_all("pods", "default", &ListParams::default())
        .await
        .expect("list");
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for p in &pods.items {
        let n = p["spec"]["nodeName"].as_str().unwrap_or("").to_string();
        *per_node.entry(n).or_insert(0) += 1;
        let scheduled = p["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "PodScheduled"))
            .map(|c| c["status"].clone());
        assert_eq!(scheduled, Some(json!("True")), "{p}");
    }
    assert_eq!(per_node.len(), NODES, "{per_node:?}");
    for (n, count) in &per_node {
        assert_eq!(
            *count,
            PODS / NODES,
            "node {n} holds {count} pods: {per_node:?}"
        );
    }
    // The watch saw every binding, and none twice.
    wait_until(
        Duration::from_secs(15),
        "the watch saw every binding",
        async || first_node.lock().unwrap().len() == PODS,
    )
    .await;
    watch.abort();
    let rebound = rebound.lock().unwrap().clone();
    assert!(rebound.is_empty(), "pods bound twice: {rebound:?}");
    // The survivors are still up (the killed master is no longer watched).
    cluster.assert_none_exited();
}

async fn flt(cluster: &Cluster, args: &[&str]) -> CmdOut {
    let servers: Vec<String> = (0..3).map(|i| cluster.client_addr(i)).collect();
    let mut cmd = tokio::process::Command::new(flt_bin());
    cmd.args(args)
        .env("FLT_SERVER", servers.join(","))
        .env_remove("FLT_CONFIG");
    run_command(
        &mut cmd,
        format!("flt {}", args.join(" ")),
        None,
        Duration::from_secs(60),
    )
    .await
}

async fn create_pod(c: &Client, pod: &Value) {
    c.create("pods", "default", pod, false)
        .await
        .expect("create pod");
}

async fn wait_on(c: &Client, pod: &str, node: &str) {
    wait_until(
        Duration::from_secs(20),
        &format!("{pod} is on {node}"),
        async || node_of(c, pod).await == node,
    )
    .await;
}

async fn node_of(c: &Client, pod: &str) -> String {
    c.get("pods", "default", pod)
        .await
        .map(|p| p["spec"]["nodeName"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taints_affinity_preemption_and_the_reason_in_flt() {
    let Some((cluster, client)) = start().await else {
        return;
    };
    let mut plain = node("plain");
    plain["status"]["allocatable"]["cpu"] = json!("1");
    let mut gpu = node("gpu");
    gpu["metadata"]["labels"] = json!({"zone": "b"});
    gpu["spec"] = json!({"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]});
    for n in [plain, gpu] {
        client.create("nodes", "", &n, false).await.expect("node");
    }
    for (name, value) in [("low", 1), ("high", 100)] {
        let c = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value});
        client
            .create("priorityclasses", "", &c, false)
            .await
            .expect("class");
    }
    let with = |name: &str, cpu: &str, spec: Value| {
        let mut p = pod(name);
        p["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!(cpu);
        flotilla_objects::merge_patch(&mut p, &json!({ "spec": spec }));
        p
    };
    // Fits nowhere: says why, in the condition and in flt describe.
    create_pod(&client, &with("big", "2", json!({}))).await;
    let why = "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {dedicated: gpu}.";
    wait_until(
        Duration::from_secs(20),
        "flt describe shows why big waits",
        async || {
            let out = flt(&cluster, &["describe", "pod", "big"]).await;
            out.stdout.contains("FailedScheduling") && out.stdout.contains(why)
        },
    )
    .await;
    let big = client.get("pods", "default", "big").await.expect("big");
    let cond = big["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "PodScheduled").cloned())
        .expect("PodScheduled");
    assert_eq!(
        (cond["status"].clone(), cond["reason"].clone()),
        (json!("False"), json!("Unschedulable"))
    );
    assert_eq!(cond["message"], why);
    // Tolerates the taint and asks for zone b: the gpu node.
    let tolerant = with(
        "tolerant",
        "1",
        json!({"tolerations": [{"key": "dedicated", "operator": "Exists"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}]}}}}),
    );
    create_pod(&client, &tolerant).await;
    wait_on(&client, "tolerant", "gpu").await;
    // Preemption: high evicts low from the only node it fits.
    create_pod(
        &client,
        &with("low", "1", json!({"priorityClassName": "low"})),
    )
    .await;
    wait_on(&client, "low", "plain").await;
    create_pod(
        &client,
        &with("high", "1", json!({"priorityClassName": "high"})),
    )
    .await;
    wait_until(
        Duration::from_secs(20),
        "high is nominated, low terminating",
        async || {
            let out = flt(&cluster, &["get", "pods", "-o", "wide"]).await;
            let high = out
                .stdout
                .lines()
                .find(|l| l.starts_with("high "))
                .unwrap_or("")
                .to_string();
            let low = out
                .stdout
                .lines()
                .find(|l| l.starts_with("low "))
                .unwrap_or("")
                .to_string();
            high.trim_end().ends_with("plain") && low.contains("Terminating")
        },
    )
    .await;
    assert_eq!(node_of(&client, "high").await, "", "not before low is gone");
    // The node's agent would confirm low stopped; here the test does.
    flt(
        &cluster,
        &["delete", "pod", "low", "--grace-period=0", "--wait=false"],
    )
    .await
    .ok();
    wait_on(&client, "high", "plain").await;
    let preempted = client
        .list(
            "events",
            "default",
            &ListParams::default().fields("reason=Preempted"),
        )
        .await
        .expect("events");
    assert!(
        preempted
            .items
            .iter()
            .any(|e| e["involvedObject"]["name"] == "low"),
        "{:?}",
        preempted.items
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_spread_across_zones_and_nodes() {
    let Some((_cluster, client)) = start().await else {
        return;
    };
    for (name, zone) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
        let mut n = node(name);
        n["metadata"]["labels"] = json!({"topology.kubernetes.io/zone": zone});
        client.create("nodes", "", &n, false).await.expect("node");
    }
    // An owner that exists (the garbage collector keeps its dependents).
    let owner = client
        .create(
            "configmaps",
            "default",
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}}),
            false,
        )
        .await
        .expect("owner")
        .0;
    let owner_ref = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
        "uid": owner["metadata"]["uid"], "controller": true}]);
    // Four replicas, at most one more in a zone than in another: zone b's
    // single node must take two.
    for i in 0..4 {
        let mut p = pod(&format!("r{i}"));
        p["metadata"]["labels"] = json!({"app": "r"});
        p["metadata"]["ownerReferences"] = owner_ref.clone();
        p["spec"]["topologySpreadConstraints"] = json!([{"maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "r"}}}]);
        create_pod(&client, &p).await;
    }
    wait_until(Duration::from_secs(20), "four replicas bound", async || {
        bound_count(&client).await == 4
    })
    .await;
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..4 {
        *per_node
            .entry(node_of(&client, &format!("r{i}")).await)
            .or_insert(0) += 1;
    }
    let zone_b = per_node.get("b1").copied().unwrap_or(0);
    assert_eq!(zone_b, 2, "{per_node:?}");
    // Within zone a, the owner's replicas spread over both nodes.
    assert_eq!(per_node.get("a1"), Some(&1), "{per_node:?}");
    assert_eq!(per_node.get("a2"), Some(&1), "{per_node:?}");
}

/// Note the node a watch event binds its pod to: the first one, or a
/// rebinding (a defect) if the pod had another.
fn record_binding(
    ev: &WatchEvent,
    first: &Mutex<HashMap<String, String>>,
    rebound: &Mutex<Vec<String>>,
) {
    if ev.kind == EventType::Bookmark {
        return;
    }
    let name = ev.object["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let node = ev.object["spec"]["nodeName"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if node.is_empty() {
        return;
    }
    let mut f = first.lock().unwrap();
    match f.get(&name) {
        Some(n) if *n != node => rebound
            .lock()
            .unwrap()
            .push(format!("{name}: {n} then {node}")),
        Some(_) => {}
        None => {
            f.insert(name, node);
        }
    }
}
