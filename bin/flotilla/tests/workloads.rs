//! The workload controllers on real masters, with hollow nodes: a task in
//! the test stands in for the agents (binds pods, reports them running and
//! ready, finishes them as their `test/exit` label says, and removes pods
//! being deleted). Rollouts keep their promise, undo goes back, a Job
//! completes, a SIGKILL of the leader during a rollout ends with exactly
//! the replicas asked for, a paused and then a killed leader hand the
//! controllers over without a pod created twice, and a service's endpoints
//! follow its pods (its LoadBalancer address from the masters' pool).
//!
//! Flotilla only: with `FLOTILLA_TEST_TARGET=etcd` every test here is skipped.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use flotilla_client::{Client, DeleteParams, EventType, ListParams, WatchParams};
use flotilla_objects::api::ObjectApi;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

fn client_all(c: &Cluster) -> Client {
    let addrs: Vec<String> = (0..c.masters.len()).map(|i| c.client_addr(i)).collect();
    Client::connect(&addrs).expect("client")
}

async fn start(test: &str) -> Option<(Cluster, Client, CancellationToken)> {
    start_with(test, None).await
}

async fn start_with(
    test: &str,
    rust_log: Option<String>,
) -> Option<(Cluster, Client, CancellationToken)> {
    if skip_on_etcd(test, false) {
        return None;
    }
    let opts = Opts {
        rust_log,
        extra_args: vec![format!("--lb-pool={LB_POOL}")],
        ..Opts::default()
    };
    let cluster = Cluster::start(3, opts).await;
    let client = client_all(&cluster);
    wait_for(
        Duration::from_secs(15),
        "the namespace default exists",
        async || client.get("namespaces", "", "default").await,
    )
    .await;
    let stop = CancellationToken::new();
    tokio::spawn(hollow_nodes(client.clone(), stop.clone()));
    Some((cluster, client, stop))
}

/// The masters' pool of load balancer addresses.
const LB_POOL: &str = "192.0.2.0/29";

fn text<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// Three hollow nodes: what the agents would do to each pod, every 50 ms.
async fn hollow_nodes(client: Client, stop: CancellationToken) {
    let n = AtomicUsize::new(0);
    loop {
        if let Ok(list) = client.list("pods", "default", &ListParams::default()).await {
            for p in list.items {
                let _ = hollow_step(&client, &p, &n).await;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

async fn hollow_step(
    client: &Client,
    p: &Value,
    n: &AtomicUsize,
) -> Result<(), flotilla_client::ApiError> {
    let name = text(p, "/metadata/name");
    if p.pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        client.delete("pods", "default", name, &dp).await?;
        return Ok(());
    }
    if text(p, "/spec/nodeName").is_empty() {
        let i = n.fetch_add(1, Ordering::SeqCst) % 3;
        ObjectApi::bind(client, "default", name, &format!("hollow-{i}")).await?;
        return Ok(());
    }
    let phase = text(p, "/status/phase");
    let exit = p
        .pointer("/metadata/labels/test~1exit")
        .and_then(Value::as_str);
    // Each pod an address of its own, as an agent gives it.
    let ip = format!("10.244.9.{}", n.fetch_add(1, Ordering::SeqCst) % 250 + 1);
    let status = match (phase, exit) {
        ("Pending", _) => json!({"status": {"phase": "Running", "podIP": ip, "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "True", "lastTransitionTime": flotilla_objects::Time::now()}]}}),
        ("Running", Some("0")) => {
            json!({"status": {"phase": "Succeeded", "conditions": [{"type": "Ready", "status": "False"}]}})
        }
        ("Running", Some(_)) => {
            json!({"status": {"phase": "Failed", "conditions": [{"type": "Ready", "status": "False"}]}})
        }
        _ => return Ok(()),
    };
    client
        .patch("pods", "default", name, &status, true)
        .await
        .map(|_| ())
}

fn deployment(replicas: i64, image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": image}]}}}})
}

/// Live pods by image, and how many of them are ready.
async fn pods_by_image(client: &Client) -> (BTreeMap<String, usize>, usize) {
    let list = client
        .list("pods", "default", &ListParams::default())
        .await
        .expect("pods");
    let mut by = BTreeMap::new();
    let mut ready = 0;
    for p in &list.items {
        if p.pointer("/metadata/deletionTimestamp")
            .is_some_and(|t| !t.is_null())
        {
            continue;
        }
        if !matches!(text(p, "/status/phase"), "Running" | "Pending") {
            continue;
        }
        *by.entry(text(p, "/spec/containers/0/image").to_string())
            .or_insert(0) += 1;
        let is_ready = p
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
        ready += usize::from(is_ready);
    }
    (by, ready)
}

async fn rolled_out(client: &Client, replicas: i64, image: &str) {
    wait_for(
        Duration::from_secs(60),
        &format!("{replicas} ready pods of {image} and nothing else"),
        async || {
            let d = client
                .get("deployments", "default", "web")
                .await
                .map_err(|e| e.to_string())?;
            let (by, ready) = pods_by_image(client).await;
            let want = BTreeMap::from([(image.to_string(), replicas as usize)]);
            let observed =
                d.pointer("/status/observedGeneration") == d.pointer("/metadata/generation");
            if by == want
                && ready == replicas as usize
                && observed
                && d.pointer("/status/availableReplicas") == Some(&json!(replicas))
            {
                Ok(())
            } else {
                Err(format!(
                    "pods {by:?}, ready {ready}, status {}",
                    d["status"]
                ))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_keeps_its_promise_and_undo_goes_back() {
    let Some((mut cluster, client, stop)) =
        start("a_rolling_update_keeps_its_promise_and_undo_goes_back").await
    else {
        return;
    };
    client
        .apply("default", &deployment(5, "v1"), false)
        .await
        .expect("apply");
    rolled_out(&client, 5, "v1").await;
    // While it rolls out, at least 5 - maxUnavailable pods stay ready on
    // every look.
    let watching = CancellationToken::new();
    let low = Arc::new(AtomicUsize::new(usize::MAX));
    let (c2, w2, l2) = (client.clone(), watching.clone(), low.clone());
    let watcher = tokio::spawn(async move {
        while !w2.is_cancelled() {
            let (_, ready) = pods_by_image(&c2).await;
            l2.fetch_min(ready, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    client
        .apply("default", &deployment(5, "v2"), false)
        .await
        .expect("update");
    rolled_out(&client, 5, "v2").await;
    watching.cancel();
    watcher.await.expect("watcher");
    let low = low.load(Ordering::SeqCst);
    assert!(
        low >= 4,
        "ready pods fell to {low} during the rollout (promised at least 4)"
    );
    // Undo (what `flt rollout undo` writes): the v1 template comes back, on
    // the first ReplicaSet, now the newest revision.
    client
        .apply("default", &deployment(5, "v1"), false)
        .await
        .expect("undo");
    rolled_out(&client, 5, "v1").await;
    let sets = client
        .list("replicasets", "default", &ListParams::default())
        .await
        .expect("rs");
    assert_eq!(sets.items.len(), 2, "no third ReplicaSet");
    stop.cancel();
    cluster.assert_none_exited();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_mid_rollout_ends_with_exactly_the_replicas_asked_for() {
    let Some((mut cluster, client, stop)) =
        start("the_leader_killed_mid_rollout_ends_with_exactly_the_replicas_asked_for").await
    else {
        return;
    };
    client
        .apply("default", &deployment(6, "v1"), false)
        .await
        .expect("apply");
    rolled_out(&client, 6, "v1").await;
    client
        .apply("default", &deployment(6, "v2"), false)
        .await
        .expect("update");
    wait_for(
        Duration::from_secs(30),
        "the rollout has started",
        async || {
            let (by, _) = pods_by_image(&client).await;
            if by.contains_key("v2") {
                Ok(())
            } else {
                Err(format!("{by:?}"))
            }
        },
    )
    .await;
    let leader = cluster.leader().await;
    cluster.kill(leader);
    rolled_out(&client, 6, "v2").await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_completes_and_a_failing_job_stops_at_its_backoff_limit() {
    let Some((_cluster, client, stop)) =
        start("a_job_completes_and_a_failing_job_stops_at_its_backoff_limit").await
    else {
        return;
    };
    let job = |name: &str, exit: &str, spec: Value| {
        let mut j = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": "default"},
            "spec": {"template": {"metadata": {"labels": {"test/exit": exit}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}});
        flotilla_objects::merge_patch(&mut j, &json!({"spec": spec}));
        j
    };
    client
        .apply(
            "default",
            &job("pi", "0", json!({"completions": 4, "parallelism": 2})),
            false,
        )
        .await
        .expect("job");
    // backoffLimit 0: the first failure ends it (no back-off wait).
    client
        .apply(
            "default",
            &job("bad", "1", json!({"backoffLimit": 0})),
            false,
        )
        .await
        .expect("job");
    for (name, cond, reason) in [
        ("pi", "Complete", "CompletionsReached"),
        ("bad", "Failed", "BackoffLimitExceeded"),
    ] {
        wait_for(
            Duration::from_secs(60),
            &format!("job {name} {cond}"),
            async || {
                let j = client
                    .get("jobs", "default", name)
                    .await
                    .map_err(|e| e.to_string())?;
                let ok = j
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .is_some_and(|c| {
                        c.iter().any(|c| {
                            c["type"] == cond && c["status"] == "True" && c["reason"] == reason
                        })
                    });
                if ok {
                    Ok(j)
                } else {
                    Err(j["status"].to_string())
                }
            },
        )
        .await;
    }
    let pi = client.get("jobs", "default", "pi").await.expect("pi");
    assert_eq!(pi.pointer("/status/succeeded"), Some(&json!(4)));
    let bad = client.get("jobs", "default", "bad").await.expect("bad");
    assert_eq!(bad.pointer("/status/failed"), Some(&json!(1)));
    stop.cancel();
}

/// The ready addresses of a service's Endpoints and of its slices.
async fn service_addresses(client: &Client, name: &str) -> (Vec<String>, Vec<String>) {
    let mut ep: Vec<String> = match client.get("endpoints", "default", name).await {
        Ok(e) => e["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["addresses"].as_array().cloned().unwrap_or_default())
            .map(|a| text(&a, "/ip").to_string())
            .collect(),
        Err(_) => vec!["<no endpoints>".into()],
    };
    let p = ListParams {
        label_selector: format!("kubernetes.io/service-name={name}"),
        ..Default::default()
    };
    let mut sl: Vec<String> = client
        .list("endpointslices", "default", &p)
        .await
        .expect("slices")
        .items
        .iter()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .filter(|e| e.pointer("/conditions/ready") != Some(&json!(false)))
        .map(|e| text(&e, "/addresses/0").to_string())
        .collect();
    ep.sort();
    sl.sort();
    (ep, sl)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_services_endpoints_follow_its_pods_and_a_load_balancer_gets_a_pool_address() {
    let Some((mut cluster, client, stop)) =
        start("a_services_endpoints_follow_its_pods_and_a_load_balancer_gets_a_pool_address").await
    else {
        return;
    };
    let svc = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}})
    };
    client
        .apply("default", &deployment(3, "v1"), false)
        .await
        .expect("deploy");
    let web = client
        .apply("default", &svc("web"), false)
        .await
        .expect("svc")
        .object;
    let ip = text(&web, "/status/loadBalancer/ingress/0/ip").to_string();
    assert!(ip.starts_with("192.0.2."), "a pool address: {web}");

    let three = async |client: &Client, name: &str, n: usize| {
        wait_for(
            Duration::from_secs(30),
            "the endpoints hold the pods",
            async || {
                let (ep, sl) = service_addresses(client, name).await;
                if ep.len() == n && ep == sl {
                    Ok(())
                } else {
                    Err(format!("endpoints {ep:?}, slices {sl:?}"))
                }
            },
        )
        .await
    };
    three(&client, "web", 3).await;
    client
        .patch(
            "deployments",
            "default",
            "web",
            &json!({"spec": {"replicas": 1}}),
            false,
        )
        .await
        .expect("scale");
    three(&client, "web", 1).await;

    // With the leader gone, the next leader keeps them and gives a second
    // balancer another address.
    let leader = cluster.leader().await;
    cluster.kill(leader);
    let api = client
        .apply("default", &svc("api"), false)
        .await
        .expect("svc 2")
        .object;
    let ip2 = text(&api, "/status/loadBalancer/ingress/0/ip");
    assert!(ip2.starts_with("192.0.2.") && ip2 != ip, "{ip} then {ip2}");
    three(&client, "api", 1).await;

    // A service deleted takes its endpoints and slices with it.
    client
        .delete("services", "default", "web", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for(
        Duration::from_secs(15),
        "web's endpoints are gone",
        async || match service_addresses(&client, "web").await {
            (ep, sl) if ep == ["<no endpoints>"] && sl.is_empty() => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_set_follows_the_nodes_that_join_and_leave() {
    let Some((_cluster, client, stop)) =
        start("a_daemon_set_follows_the_nodes_that_join_and_leave").await
    else {
        return;
    };
    let node = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    };
    for n in ["hollow-0", "hollow-1"] {
        client
            .create("nodes", "", &node(n), false)
            .await
            .expect("node");
    }
    let ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    client.apply("default", &ds, false).await.expect("ds");
    let placed = async |want: &[&str]| {
        wait_for(
            Duration::from_secs(30),
            "one running daemon per node",
            async || {
                let p = ListParams {
                    label_selector: "app=agent".into(),
                    ..Default::default()
                };
                let pods = client.list("pods", "default", &p).await?;
                let mut on: Vec<String> = pods
                    .items
                    .iter()
                    .filter(|p| text(p, "/status/phase") == "Running")
                    .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
                    .map(|p| text(p, "/spec/nodeName").to_string())
                    .collect();
                on.sort();
                let ds = client.get("daemonsets", "default", "agent").await?;
                let ready = ds.pointer("/status/numberReady").and_then(Value::as_u64);
                if on == want && ready == Some(want.len() as u64) {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("daemons on {on:?}, numberReady {ready:?}"))
                }
            },
        )
        .await
    };
    placed(&["hollow-0", "hollow-1"]).await;
    client
        .create("nodes", "", &node("hollow-2"), false)
        .await
        .expect("node 3");
    placed(&["hollow-0", "hollow-1", "hollow-2"]).await;
    client
        .delete("nodes", "", "hollow-0", &DeleteParams::default())
        .await
        .expect("delete node");
    placed(&["hollow-1", "hollow-2"]).await;
    stop.cancel();
}

fn replica_set(replicas: i64) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "burst", "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "burst"}},
            "template": {"metadata": {"labels": {"app": "burst"}},
                "spec": {"containers": [{"name": "c", "image": "v1"}]}}}})
}

/// Live pods of the ReplicaSet `burst`.
async fn burst_pods(client: &Client) -> Result<usize, String> {
    let p = ListParams {
        label_selector: "app=burst".into(),
        ..Default::default()
    };
    let list = client
        .list("pods", "default", &p)
        .await
        .map_err(|e| e.to_string())?;
    Ok(list
        .items
        .iter()
        .filter(|p| {
            p.pointer("/metadata/deletionTimestamp")
                .is_none_or(Value::is_null)
        })
        .count())
}

async fn burst_reaches(client: &Client, n: usize) {
    wait_for(
        Duration::from_secs(60),
        &format!("{n} pods of the ReplicaSet"),
        async || match burst_pods(client).await? {
            got if got == n => Ok(()),
            got => Err(format!("{got} pods")),
        },
    )
    .await;
}

/// The terms a master's leader loops were started and stopped in, from its
/// log, in order: ("start" | "stop", term).
fn loop_terms(log: &std::path::Path) -> Vec<(&'static str, u64)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let term = |line: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("term="))
            .and_then(|t| t.parse().ok())
    };
    text.lines()
        .filter_map(|l| {
            if l.contains("leading: starting the leader loops") {
                Some(("start", term(l)?))
            } else if l.contains("no longer leading in this term") {
                Some(("stop", term(l)?))
            } else {
                None
            }
        })
        .collect()
}

/// The leader paused (SIGSTOP) while its ReplicaSet controller creates
/// pods, a new leader elected, the old one resumed; then the new leader
/// SIGKILLed while its controller creates more. Every pod the ReplicaSet
/// ever had is one it needed: a deposed leader's loops stop, and none of
/// their late writes lands (they are fenced by their term), so no pod is
/// created twice over and deleted again. Each master's log says which
/// loops it ran in which term.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_then_killed_leader_hands_its_controllers_over_without_overlap() {
    let Some((mut cluster, client, hollow)) = start_with(
        "a_paused_then_killed_leader_hands_its_controllers_over_without_overlap",
        // Each pass that creates or deletes pods, with the cache it saw.
        Some("info,flotilla_controllers::replicaset=debug".into()),
    )
    .await
    else {
        return;
    };
    // No nodes: the pods stay Pending and nothing but the ReplicaSet
    // controller creates or deletes them.
    hollow.cancel();
    let from = client
        .list("pods", "default", &ListParams::default())
        .await
        .expect("pods")
        .resource_version;
    client
        .apply("default", &replica_set(150), false)
        .await
        .expect("apply");
    wait_for(
        Duration::from_secs(30),
        "the controller has started creating pods",
        async || match burst_pods(&client).await? {
            0 => Err("none yet".to_string()),
            n => Ok(n),
        },
    )
    .await;
    let first = cluster.leader().await;
    cluster.pause(first);
    let second = wait_for(
        Duration::from_secs(30),
        "another master leads",
        async || match cluster.try_leader().await? {
            l if l != first => Ok(l),
            l => Err(format!("{l} still leads")),
        },
    )
    .await;
    cluster.resume(first);
    burst_reaches(&client, 150).await;
    client
        .apply("default", &replica_set(300), false)
        .await
        .expect("scale up");
    wait_for(
        Duration::from_secs(30),
        "the new leader's controller is creating pods",
        async || match burst_pods(&client).await? {
            n if n > 150 => Ok(n),
            n => Err(format!("{n} pods")),
        },
    )
    .await;
    let now = cluster.leader().await;
    cluster.kill(now);
    burst_reaches(&client, 300).await;

    // Every pod event since the start, replayed from history.
    let to = client
        .list("pods", "default", &ListParams::default())
        .await
        .expect("pods")
        .resource_version
        .parse::<i64>()
        .expect("revision");
    let p = WatchParams {
        label_selector: "app=burst".into(),
        resource_version: from,
        // Bookmarks carry the stream past revisions with no pod event.
        bookmarks: true,
        bookmark_interval: Duration::from_millis(200),
        ..Default::default()
    };
    let mut events = client.watch("pods", "default", &p).await.expect("watch");
    let (mut added, mut deleted) = (std::collections::BTreeSet::new(), Vec::new());
    let mut seen = 0;
    while seen < to {
        let ev = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("the replay reaches the final revision")
            .expect("the stream goes on")
            .expect("an event");
        seen = text(&ev.object, "/metadata/resourceVersion")
            .parse()
            .unwrap_or(seen);
        let name = text(&ev.object, "/metadata/name").to_string();
        match ev.kind {
            EventType::Added => {
                added.insert(name);
            }
            EventType::Deleted => deleted.push(name),
            _ => {}
        }
    }
    assert_eq!(
        (added.len(), deleted),
        (300, vec![]),
        "pods were created beyond what the ReplicaSet asked for"
    );

    // The paused leader stopped its loops for its term once it was back,
    // and each later leader started its own in a later term.
    let terms = |i: usize| loop_terms(&cluster.masters[i].log_path);
    let first_terms = terms(first);
    let led = first_terms
        .iter()
        .find(|(what, _)| *what == "start")
        .map(|&(_, t)| t)
        .expect("the first leader logged its loops starting");
    assert!(
        first_terms.contains(&("stop", led)),
        "the paused leader did not stop its loops of term {led}: {first_terms:?}"
    );
    let second_terms = terms(second);
    assert!(
        second_terms
            .iter()
            .any(|&(what, t)| what == "start" && t > led),
        "the second leader started no loops after term {led}: {second_terms:?}"
    );
    cluster.restart(now);
    cluster.wait_ready(Duration::from_secs(30)).await;
}
