//! The cluster autoscaler end to end: `flotilla up --autoscale 1:3` with
//! hollow agents (the local provider, `--autoscale-runtime fake`) and
//! short timings. The pool is brought to its min size; a Deployment scaled
//! beyond the cluster's room gets new nodes and all its pods Running; past
//! the max size the pods stay pending and are told why; scaled back, the
//! idle nodes are drained and removed after the unneeded time, while a
//! node running a pod no controller owns is kept and named with its
//! blocker in the pool's status.

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Command};
use std::time::Duration;

use common::*;
use flotilla_client::{Api, Client, ClientOptions};
use flotilla_objects::apps::Deployment;
use flotilla_objects::core::{Event, Node, Pod};
use flotilla_objects::nodepool::NodePool;
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(90);

/// `flotilla up`, stopped when dropped; the tail of its log is printed
/// when the test fails.
struct Up(Child, std::path::PathBuf);

impl Drop for Up {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.1).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(80)..].join("\n");
            eprintln!("--- the last lines of {} ---\n{tail}", self.1.display());
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn client(dir: &std::path::Path, base: u16) -> Client {
    let pki = dir.join("pki");
    let tls = flotilla_security::tls::ClientTlsFiles {
        ca: Some(pki.join("ca.crt")),
        cert: Some(pki.join("admin.crt")),
        key: Some(pki.join("admin.key")),
    }
    .tonic_config()
    .expect("admin tls");
    Client::connect_with(
        &[format!("127.0.0.1:{base}")],
        ClientOptions {
            tls: Some(tls),
            ..Default::default()
        },
    )
    .expect("client")
}

async fn pool_nodes(nodes: &Api<Node>) -> Result<Vec<Node>, String> {
    let l = nodes
        .list(&Default::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(l.items
        .into_iter()
        .filter(|n| {
            n.metadata
                .labels
                .get("flotilla.dev/nodepool")
                .map(String::as_str)
                == Some("default")
        })
        .collect())
}

fn ready(n: &Node) -> bool {
    n.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

async fn web_pods(pods: &Api<Pod>) -> Result<Vec<Pod>, String> {
    let l = pods
        .list(&flotilla_client::ListParams::default().labels("app=web"))
        .await
        .map_err(|e| e.to_string())?;
    Ok(l.items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect())
}

fn running(p: &Pod) -> bool {
    p.status.as_ref().is_some_and(|s| s.phase == "Running")
}

async fn scale(deploys: &Api<Deployment>, n: i32) {
    deploys
        .patch("web", &json!({"spec": {"replicas": n}}))
        .await
        .expect("scale");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_pool_grows_for_pending_pods_and_shrinks_when_idle() {
    if skip_on_etcd(
        "the_default_pool_grows_for_pending_pods_and_shrinks_when_idle",
        false,
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let base = free_up_base();
    let log_path = dir.path().join("up.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let _up = Up(
        Command::new(flotilla_bin())
            .args(["up", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--base-port",
                &base.to_string(),
                "--agents",
                "0",
                "--proxy-mode",
                "none",
            ])
            .args(["--autoscale", "1:3", "--autoscale-runtime", "fake"])
            .args(["--scan-interval", "1s", "--scale-down-unneeded-time", "3s"])
            .args(["--scale-down-delay-after-add", "3s"])
            .env("RUST_LOG", "info,flotilla_autoscaler=debug")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("flotilla up"),
        log_path,
    );
    let data = dir.path().join("data");
    wait_for(
        Duration::from_secs(60),
        "up wrote the admin certificate",
        async || {
            if data.join("flt.yaml").exists() {
                Ok(())
            } else {
                Err("not yet")
            }
        },
    )
    .await;
    let c = client(&data, base);
    let nodes = Api::<Node>::all(c.clone());
    let pools = Api::<NodePool>::all(c.clone());
    let pods = Api::<Pod>::namespaced(c.clone(), "default");
    let deploys = Api::<Deployment>::namespaced(c.clone(), "default");
    let events = Api::<Event>::namespaced(c.clone(), "default");

    // Min size 1: the autoscaler asks the provider for the first node.
    let first = wait_for(
        TIMEOUT,
        "the pool has its min size: one Ready node",
        async || {
            let ns = pool_nodes(&nodes).await?;
            match ns.as_slice() {
                [n] if ready(n) => Ok(n.clone()),
                other => Err(format!("{} nodes", other.len())),
            }
        },
    )
    .await;
    // Each pod asks for 30% of a node's CPU: three fit a node.
    let alloc = &first.status.as_ref().expect("status").allocatable["cpu"];
    let milli = (flotilla_objects::parse_quantity(alloc).expect("cpu") * 1000.0) as i64;
    let request = format!("{}m", milli * 3 / 10);
    let deploy: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "web", "image": "nginx",
                    "resources": {"requests": {"cpu": request, "memory": "16Mi"}}}]}}}
    }))
    .expect("deployment");
    deploys.create(&deploy).await.expect("create deployment");
    wait_for(TIMEOUT, "three pods Running on the one node", async || {
        let ps = web_pods(&pods).await?;
        let n = ps.iter().filter(|p| running(p)).count();
        if n == 3 {
            Ok(())
        } else {
            Err(format!("{n} running"))
        }
    })
    .await;

    // Six pods: three more than the node holds; one new node takes them.
    scale(&deploys, 6).await;
    wait_for(TIMEOUT, "six pods Running on two nodes", async || {
        let ps = web_pods(&pods).await?;
        let run: Vec<&Pod> = ps.iter().filter(|p| running(p)).collect();
        let on: BTreeSet<&str> = run.iter().map(|p| p.spec.node_name.as_str()).collect();
        let ns = pool_nodes(&nodes).await?;
        if run.len() == 6 && on.len() == 2 && ns.len() == 2 {
            Ok(())
        } else {
            Err(format!(
                "{} running on {on:?}; {} nodes",
                run.len(),
                ns.len()
            ))
        }
    })
    .await;
    let triggered = events
        .list(&flotilla_client::ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .any(|e| e.reason == "TriggeredScaleUp" && e.message.contains("default 1->2 (max: 3)"));
    assert!(triggered, "no TriggeredScaleUp event naming default 1->2");

    // Twelve pods need four nodes; the max size is three: nine Running,
    // three pending and told why, and no fourth node.
    scale(&deploys, 12).await;
    wait_for(
        TIMEOUT,
        "nine pods Running, three told the max size stops them",
        async || {
            let ps = web_pods(&pods).await?;
            let run = ps.iter().filter(|p| running(p)).count();
            let pending: Vec<&Pod> = ps.iter().filter(|p| p.spec.node_name.is_empty()).collect();
            let evs = events
                .list(&flotilla_client::ListParams::default())
                .await
                .map_err(|e| e.to_string())?
                .items;
            let told = pending
                .iter()
                .filter(|p| {
                    evs.iter().any(|e| {
                        e.involved_object.name == p.metadata.name
                            && e.reason == "NotTriggerScaleUp"
                            && e.message.contains("max size")
                    })
                })
                .count();
            if run == 9 && pending.len() == 3 && told == 3 {
                Ok(())
            } else {
                Err(format!(
                    "{run} running, {} pending, {told} told",
                    pending.len()
                ))
            }
        },
    )
    .await;
    let ns = pool_nodes(&nodes).await.expect("nodes");
    assert_eq!(ns.len(), 3, "the max size is 3");
    let pool = pools.get("default").await.expect("pool");
    assert_eq!(pool.status.as_ref().and_then(|s| s.target_size), Some(3));

    // A pod no controller owns, on one node: that node stays.
    let pinned_node = ns[0].metadata.name.clone();
    let bare: Pod = serde_json::from_value(json!({
        "metadata": {"name": "bare", "namespace": "default"},
        "spec": {"nodeName": pinned_node, "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "busybox",
                "resources": {"requests": {"cpu": "10m"}}}]}
    }))
    .expect("pod");
    pods.create(&bare).await.expect("bare pod");
    // Back to one pod: the idle nodes go after the unneeded time.
    scale(&deploys, 1).await;
    wait_for(
        TIMEOUT,
        "the pool shrinks to the node with the bare pod",
        async || {
            let ns = pool_nodes(&nodes).await?;
            let names: Vec<&str> = ns.iter().map(|n| n.metadata.name.as_str()).collect();
            let ps = web_pods(&pods).await?;
            let run = ps.iter().filter(|p| running(p)).count();
            if names == [pinned_node.as_str()] && run == 1 && ps.len() == 1 {
                Ok(())
            } else {
                Err(format!(
                    "nodes {names:?}, {run} of {} web pods running",
                    ps.len()
                ))
            }
        },
    )
    .await;
    wait_for(TIMEOUT, "the pool names the node's blocker", async || {
        let p = pools.get("default").await.map_err(|e| e.to_string())?;
        let st = p.status.unwrap_or_default();
        let blocked = st.blocked.iter().any(|b| {
            b.name == pinned_node
                && b.reason.contains("default/bare")
                && b.reason.contains("no controller")
        });
        if blocked && st.target_size == Some(1) && st.deleting.is_empty() {
            Ok(())
        } else {
            Err(format!("status {st:?}"))
        }
    })
    .await;
    let bare = pods.get("bare").await.expect("the bare pod is still there");
    assert_eq!(bare.spec.node_name, pinned_node);
}
