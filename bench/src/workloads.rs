//! `flotilla-bench workloads`: what the Deployment controller costs over
//! creating the same pods directly (issue 13's goal: at most 1.3x).
//!
//! On `--nodes` hollow nodes, with a hollow kubelet in this process (it
//! watches the pods and reports each bound pod Running and Ready), two
//! phases in namespaces of their own, same pod spec, same criterion:
//! 1. direct: `--replicas` pods created by `--clients` concurrent creators;
//! 2. deployment: one Deployment of `--replicas`.
//!
//! Each phase is timed from its first write to the last pod reported Ready
//! (and, for the deployment, to `status.availableReplicas` reaching the
//! count). One JSON line per phase, then the ratio.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use flotilla_client::{Client, EventType, WatchParams};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::schedule::{bench_pod, client, fan_out, grow_nodes, namespace};

#[derive(Debug, Clone, clap::Args)]
pub struct WorkloadsArgs {
    /// Hollow nodes.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Pods in each phase.
    #[arg(long, default_value_t = 3000)]
    replicas: usize,
    /// Concurrent creators of the direct phase.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Concurrent status writers of the hollow kubelet.
    #[arg(long, default_value_t = 64)]
    kubelet_writers: usize,
    /// Give up on a phase after this many seconds.
    #[arg(long, default_value_t = 300.0)]
    max_secs: f64,
    /// Prefix of namespaces and node names (unique per run).
    #[arg(long, default_value = "wl")]
    run_id: String,
}

/// The hollow kubelet of one namespace: every pod seen bound and not yet
/// reported gets Running and Ready; `ready` counts the reports made.
struct Kubelet {
    ready: Arc<Mutex<HashSet<String>>>,
    last: Arc<Mutex<Option<Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn kubelet(c: Client, ns: String, rv: String, writers: usize) -> Kubelet {
    let ready = Arc::new(Mutex::new(HashSet::new()));
    let last = Arc::new(Mutex::new(None));
    let (r, l) = (ready.clone(), last.clone());
    let task = tokio::spawn(async move {
        let p = WatchParams {
            resource_version: rv,
            ..Default::default()
        };
        let Ok(mut s) = c.watch("pods", &ns, &p).await else {
            return;
        };
        // At most `writers` status writes in flight.
        let permits = Arc::new(tokio::sync::Semaphore::new(writers.max(1)));
        let mut sent = HashSet::new();
        let mut writes = tokio::task::JoinSet::new();
        while let Some(Ok(ev)) = s.next().await {
            if ev.kind == EventType::Bookmark || ev.kind == EventType::Deleted {
                continue;
            }
            let o = &ev.object;
            let bound = o["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty());
            let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
            if !bound || o["status"]["phase"] == "Running" || !sent.insert(name.clone()) {
                continue;
            }
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let (c, ns, r, l) = (c.clone(), ns.clone(), r.clone(), l.clone());
            writes.spawn(async move {
                let status = json!({"status": {"phase": "Running", "podIP": "10.244.0.1",
                    "conditions": [{"type": "Ready", "status": "True"}]}});
                if c.patch("pods", &ns, &name, &status, true).await.is_ok() {
                    r.lock().unwrap_or_else(|e| e.into_inner()).insert(name);
                    *l.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                }
                drop(permit);
            });
            while writes.try_join_next().is_some() {}
        }
    });
    Kubelet { ready, last, task }
}

async fn wait_ready(k: &Kubelet, n: usize, deadline: Instant) -> Result<Instant> {
    loop {
        let got = k.ready.lock().unwrap_or_else(|e| e.into_inner()).len();
        if got >= n {
            let last = *k.last.lock().unwrap_or_else(|e| e.into_inner());
            return Ok(last.unwrap_or_else(Instant::now));
        }
        if Instant::now() >= deadline {
            bail!("only {got} of {n} pods ready before the deadline");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn deployment(name: &str, replicas: usize) -> Value {
    let pod = bench_pod("x");
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "bench"}},
            "template": {"metadata": {"labels": {"app": "bench"}}, "spec": pod["spec"].clone()}}})
}

pub async fn run(endpoints: &[String], a: &WorkloadsArgs) -> Result<()> {
    let c = client(endpoints)?;
    let t = Instant::now();
    grow_nodes(&c, &a.run_id, 0, a.nodes).await?;
    eprintln!(
        "{} hollow nodes in {:.1} s",
        a.nodes,
        t.elapsed().as_secs_f64()
    );
    let max = Duration::from_secs_f64(a.max_secs);

    // 1. Direct creates.
    let ns = format!("{}-direct", a.run_id);
    let rv = namespace(&c, &ns).await?;
    let k = kubelet(c.clone(), ns.clone(), rv, a.kubelet_writers);
    let start = Instant::now();
    let (c2, ns2) = (c.clone(), ns.clone());
    let failed = fan_out(a.replicas, a.clients, move |i| {
        let (c, ns) = (c2.clone(), ns2.clone());
        async move {
            let mut p = bench_pod(&format!("p-{i:05}"));
            p["metadata"]["namespace"] = json!(ns);
            c.create("pods", &ns, &p, false).await.is_ok()
        }
    })
    .await;
    if failed > 0 {
        bail!("{failed} direct creates failed");
    }
    let created = start.elapsed();
    let done = wait_ready(&k, a.replicas, start + max).await?;
    let direct = done.saturating_duration_since(start);
    drop(k);
    println!(
        "{}",
        json!({"bench": "workloads", "phase": "direct", "nodes": a.nodes, "pods": a.replicas,
            "clients": a.clients, "created_s": created.as_secs_f64(), "all_ready_s": direct.as_secs_f64(),
            "pods_per_s": a.replicas as f64 / direct.as_secs_f64()})
    );

    // 2. One Deployment.
    let ns = format!("{}-deploy", a.run_id);
    let rv = namespace(&c, &ns).await?;
    let k = kubelet(c.clone(), ns.clone(), rv, a.kubelet_writers);
    let start = Instant::now();
    c.create("deployments", &ns, &deployment("bench", a.replicas), false)
        .await
        .map_err(|e| anyhow::anyhow!("deployment: {e}"))?;
    let done = wait_ready(&k, a.replicas, start + max).await?;
    let deploy = done.saturating_duration_since(start);
    // And until the deployment's status says so.
    let available = loop {
        let d = c
            .get("deployments", &ns, "bench")
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if d["status"]["availableReplicas"].as_u64() == Some(a.replicas as u64) {
            break start.elapsed();
        }
        if start.elapsed() > max {
            bail!(
                "the deployment's status never reached {} available",
                a.replicas
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(k);
    println!(
        "{}",
        json!({"bench": "workloads", "phase": "deployment", "nodes": a.nodes, "pods": a.replicas,
            "all_ready_s": deploy.as_secs_f64(), "status_available_s": available.as_secs_f64(),
            "pods_per_s": a.replicas as f64 / deploy.as_secs_f64()})
    );
    println!(
        "{}",
        json!({"bench": "workloads", "ratio_deployment_to_direct": deploy.as_secs_f64() / direct.as_secs_f64(), "goal": 1.3})
    );
    Ok(())
}
