//! Node lifecycle against the in-memory cluster: the tests play the
//! agents' heartbeats (a Ready condition whose lastHeartbeatTime moves;
//! times are whole seconds, so the grace period here is 2.5 s).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use flotilla_objects::core::Node;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::testenv::Env;

const GRACE: Duration = Duration::from_millis(2500);

async fn env(taint_rate: f64) -> Env {
    let env = Env::new().await;
    env.run(NodeLifecycle {
        grace_period: GRACE,
        taint_rate,
        unhealthy_threshold: 0.55,
        monitor_period: Duration::from_millis(200),
    });
    env
}

async fn add_node(env: &Env, name: &str) {
    let n = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}});
    env.api.apply("", n, false).await.expect("node");
    report(env, name, "True").await;
}

/// What an agent reports: its Ready status, now.
async fn report(env: &Env, name: &str, ready: &str) {
    let p = json!({"status": {"conditions": [{"type": "Ready", "status": ready, "reason": "KubeletReady",
        "lastHeartbeatTime": Time::now(), "lastTransitionTime": Time::now()}]}});
    ObjectApi::patch(&env.api, "nodes", "", name, p, true, false)
        .await
        .expect("status");
}

/// Agents that keep reporting Ready for `names` until cancelled.
fn heartbeats(env: &Env, names: &[&str], stop: CancellationToken) {
    let api = env.api.clone();
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            for n in &names {
                let p = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                    "lastHeartbeatTime": Time::now()}]}});
                let _ = ObjectApi::patch(&api, "nodes", "", n, p, true, false).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
}

async fn node(env: &Env, name: &str) -> Node {
    env.typed::<Node>("").get(name).await.expect("node")
}

fn ready_status(n: &Node) -> String {
    ready(n).map(|c| c.status.clone()).unwrap_or_default()
}

fn taint_keys(n: &Node) -> BTreeSet<String> {
    n.spec
        .taints
        .iter()
        .filter(|t| t.effect == "NoExecute")
        .map(|t| t.key.clone())
        .collect()
}

async fn until<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pod(name: &str, node: &str, tolerations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": node, "tolerations": tolerations, "containers": [{"name": "c", "image": "busybox"}]}})
}

#[tokio::test]
async fn a_silent_node_goes_unknown_is_tainted_and_its_pods_leave_after_their_toleration() {
    let env = env(100.0).await;
    env.kubelet();
    add_node(&env, "alive").await;
    add_node(&env, "silent").await;
    let stop = CancellationToken::new();
    heartbeats(&env, &["alive"], stop.clone());
    let short = json!([{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 1}]);
    let forever = json!([{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]);
    env.apply(pod("short", "silent", short)).await;
    env.apply(pod("forever", "silent", forever)).await;
    env.apply(pod("elsewhere", "alive", json!([]))).await;
    until("silent is Unknown and tainted unreachable", 15, || async {
        let n = node(&env, "silent").await;
        ready_status(&n) == "Unknown"
            && taint_keys(&n) == BTreeSet::from([TAINT_UNREACHABLE.to_string()])
    })
    .await;
    let n = node(&env, "silent").await;
    assert_eq!(
        ready(&n).map(|c| c.reason.as_str()),
        Some("NodeStatusUnknown")
    );
    until("the pod tolerating it for 1 s is evicted", 15, || async {
        let names: BTreeSet<String> = env
            .pods()
            .await
            .iter()
            .map(|p| p.metadata.name.clone())
            .collect();
        !names.contains("short")
    })
    .await;
    let names: BTreeSet<String> = env
        .pods()
        .await
        .iter()
        .map(|p| p.metadata.name.clone())
        .collect();
    assert!(
        names.contains("forever"),
        "a pod tolerating it for ever stays"
    );
    assert!(names.contains("elsewhere"), "pods of healthy nodes stay");
    let alive = node(&env, "alive").await;
    assert_eq!(ready_status(&alive), "True");
    assert!(taint_keys(&alive).is_empty());
    // It comes back: Ready, untainted.
    heartbeats(&env, &["silent"], stop.clone());
    until("silent is Ready and untainted again", 15, || async {
        let n = node(&env, "silent").await;
        ready_status(&n) == "True" && taint_keys(&n).is_empty()
    })
    .await;
    stop.cancel();
}

#[tokio::test]
async fn a_node_reporting_not_ready_gets_the_not_ready_taint() {
    let env = env(100.0).await;
    add_node(&env, "sick").await;
    report(&env, "sick", "False").await;
    until("tainted not-ready", 10, || async {
        taint_keys(&node(&env, "sick").await) == BTreeSet::from([TAINT_NOT_READY.to_string()])
    })
    .await;
    report(&env, "sick", "True").await;
    until("untainted", 10, || async {
        taint_keys(&node(&env, "sick").await).is_empty()
    })
    .await;
}

#[tokio::test]
async fn when_most_nodes_go_silent_at_once_none_is_tainted() {
    let env = env(100.0).await;
    let names = ["n1", "n2", "n3", "n4"];
    for n in names {
        add_node(&env, n).await;
    }
    // Record any NoExecute taint on n1..n3 while they are Unknown.
    let nodes = env.informers.get::<Node>();
    let mut sub = nodes.subscribe();
    let tainted_while_disrupted = Arc::new(Mutex::new(Vec::new()));
    let (t2, n2) = (tainted_while_disrupted.clone(), nodes.clone());
    let watcher = tokio::spawn(async move {
        while sub.next().await.is_some() {
            let all = n2.list();
            let unknown = all.iter().filter(|n| ready_status(n) != "True").count();
            if unknown * 100 > all.len() * 55 {
                for n in all.iter().filter(|n| !taint_keys(n).is_empty()) {
                    t2.lock().expect("lock").push(n.metadata.name.clone());
                }
            }
        }
    });
    until("all four Unknown", 15, || async {
        let mut all = true;
        for n in names {
            all &= ready_status(&node(&env, n).await) == "Unknown";
        }
        all
    })
    .await;
    // Three come back; the fourth is then a lone silent node, and tainted.
    let stop = CancellationToken::new();
    heartbeats(&env, &["n1", "n2", "n3"], stop.clone());
    until("n4 alone is tainted", 15, || async {
        taint_keys(&node(&env, "n4").await) == BTreeSet::from([TAINT_UNREACHABLE.to_string()])
    })
    .await;
    watcher.abort();
    stop.cancel();
    assert!(
        tainted_while_disrupted.lock().expect("lock").is_empty(),
        "no taint while most nodes were silent"
    );
}

#[test]
fn the_taint_bucket_paces_nodes() {
    let mut b = Bucket::new(0.1);
    assert!(b.take().is_ok(), "the first node at once");
    let wait = b.take().expect_err("the second waits");
    assert!(
        wait > Duration::from_secs(9) && wait <= Duration::from_secs(10),
        "{wait:?}"
    );
    assert!(Bucket {
        rate: 0.0,
        tokens: 0.0,
        at: Instant::now()
    }
    .take()
    .is_err());
}

#[tokio::test]
async fn a_node_whose_lease_is_renewed_stays_ready() {
    use flotilla_objects::coordination::NODE_LEASE_NAMESPACE;
    let env = env(100.0).await;
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NODE_LEASE_NAMESPACE}});
    let _ = env.api.apply("", ns, false).await;
    // Both report Ready once; only "leased" renews its Lease after that,
    // as agents do (the Node status is written only on changes).
    add_node(&env, "leased").await;
    add_node(&env, "silent").await;
    let api = env.api.clone();
    let stop = CancellationToken::new();
    let s2 = stop.clone();
    tokio::spawn(async move {
        while !s2.is_cancelled() {
            let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "leased", "namespace": NODE_LEASE_NAMESPACE},
                "spec": {"holderIdentity": "leased", "leaseDurationSeconds": 40, "renewTime": Time::now()}});
            let _ = api.apply(NODE_LEASE_NAMESPACE, lease, false).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    until("silent is Unknown", 15, || async {
        ready_status(&node(&env, "silent").await) == "Unknown"
    })
    .await;
    let leased = node(&env, "leased").await;
    assert_eq!(ready_status(&leased), "True", "its Lease keeps it alive");
    assert!(taint_keys(&leased).is_empty());
    stop.cancel();
}
