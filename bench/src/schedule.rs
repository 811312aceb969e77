//! `flotilla-bench schedule`: the scheduler's throughput and latency on
//! hollow nodes (Node objects with a Ready status and allocatable
//! resources; no agent runs).
//!
//! For each node count (cumulative: the cluster grows from one point to
//! the next), `--pods` pods are created as fast as `--clients` creators
//! can, in a namespace of their own, and a watch records when each is seen
//! bound. Reported: pods per second from the first create to the last
//! binding, creates per second, and the p50/p99 of create-to-bound. Then
//! an open-loop point offers `--rate` pods per second for `--rate-secs`
//! and reports the same latency. One JSON line per point.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use flotilla_client::{Client, ClientOptions, EventType, ListParams, WatchParams};
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{json, Value};

#[derive(Debug, Clone, clap::Args)]
pub struct ScheduleArgs {
    /// Node counts, in increasing order (the cluster grows between points).
    #[arg(long, value_delimiter = ',', default_value = "500,5000")]
    nodes: Vec<usize>,
    /// Pods created at each closed-loop point.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Concurrent creators.
    #[arg(long, default_value_t = 256)]
    clients: usize,
    /// Pods per second offered at the open-loop point (0: skip it).
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// Seconds of the open-loop point.
    #[arg(long, default_value_t = 10.0)]
    rate_secs: f64,
    /// Give up on a point after this many seconds.
    #[arg(long, default_value_t = 300.0)]
    max_secs: f64,
    /// Prefix of namespaces and node names (unique per run).
    #[arg(long, default_value = "sched")]
    run_id: String,
}

pub(crate) fn client(endpoints: &[String]) -> Result<Client> {
    Client::connect_with(
        endpoints,
        ClientOptions {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            retry_for: Duration::from_secs(10),
            ..Default::default()
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

fn hollow_node(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "bench": "hollow"}},
        "status": {
            "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
            "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}]}})
}

pub(crate) fn bench_pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.9",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}})
}

/// Run `n` calls of `f(i)` over `clients` concurrent tasks; count failures.
pub(crate) async fn fan_out<F, Fut>(n: usize, clients: usize, f: F) -> usize
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let f = Arc::new(f);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients.max(1) {
        let (f, next) = (f.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut failed = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return failed;
                }
                if !f(i).await {
                    failed += 1;
                }
            }
        }));
    }
    let mut failed = 0;
    for t in tasks {
        failed += t.await.unwrap_or(0);
    }
    failed
}

pub(crate) async fn grow_nodes(c: &Client, prefix: &str, from: usize, to: usize) -> Result<()> {
    let c = c.clone();
    let prefix = prefix.to_string();
    let failed = fan_out(to - from, 64, move |i| {
        let (c, name) = (c.clone(), format!("{prefix}-node-{:05}", from + i));
        async move {
            match c.create("nodes", "", &hollow_node(&name), false).await {
                Ok(_) => true,
                Err(e) if e.reason == flotilla_client::Reason::AlreadyExists => true,
                Err(e) => {
                    eprintln!("node {name}: {e}");
                    false
                }
            }
        }
    })
    .await;
    if failed > 0 {
        bail!("{failed} nodes could not be created");
    }
    Ok(())
}

/// Create times by pod name, and the bound times the watch saw.
#[derive(Default)]
struct Times {
    created: HashMap<String, Instant>,
    bound: HashMap<String, Instant>,
}

/// Watch `ns` from `rv` and note when each pod is first seen bound.
fn watch_bound(
    c: Client,
    ns: String,
    rv: String,
    times: Arc<Mutex<Times>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let p = WatchParams {
            resource_version: rv,
            ..Default::default()
        };
        let mut s = match c.watch("pods", &ns, &p).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("watch: {e}");
                return;
            }
        };
        while let Some(ev) = s.next().await {
            let Ok(ev) = ev else { return };
            if ev.kind == EventType::Bookmark {
                continue;
            }
            let bound = ev.object["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty());
            if bound {
                let name = ev.object["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                let mut t = times.lock().unwrap_or_else(|e| e.into_inner());
                t.bound.entry(name).or_insert_with(Instant::now);
            }
        }
    })
}

pub(crate) async fn namespace(c: &Client, ns: &str) -> Result<String> {
    let v = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
    c.create("namespaces", "", &v, false)
        .await
        .map_err(|e| anyhow::anyhow!("namespace {ns}: {e}"))?;
    let l = c
        .list("pods", ns, &ListParams::default().limit(1))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(l.resource_version)
}

async fn wait_bound(times: &Arc<Mutex<Times>>, n: usize, deadline: Instant) -> usize {
    loop {
        let b = times.lock().unwrap_or_else(|e| e.into_inner()).bound.len();
        if b >= n || Instant::now() >= deadline {
            return b;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn latencies(t: &Times) -> (Histogram<u64>, Option<Instant>, Option<Instant>) {
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("histogram");
    let first = t.created.values().min().copied();
    let last = t.bound.values().max().copied();
    for (name, c) in &t.created {
        if let Some(b) = t.bound.get(name) {
            let us = b.saturating_duration_since(*c).as_micros() as u64;
            let _ = h.record(us.max(1));
        }
    }
    (h, first, last)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

async fn closed_loop(endpoints: &[String], a: &ScheduleArgs, nodes: usize) -> Result<()> {
    let c = client(endpoints)?;
    let ns = format!("{}-{nodes}", a.run_id);
    let rv = namespace(&c, &ns).await?;
    let times = Arc::new(Mutex::new(Times::default()));
    let w = watch_bound(c.clone(), ns.clone(), rv, times.clone());
    let start = Instant::now();
    let (c2, ns2, t2) = (c.clone(), ns.clone(), times.clone());
    let failed = fan_out(a.pods, a.clients, move |i| {
        let (c, ns, t) = (c2.clone(), ns2.clone(), t2.clone());
        async move {
            let name = format!("p-{i:06}");
            let sent = Instant::now();
            match c.create("pods", &ns, &bench_pod(&name), false).await {
                Ok(_) => {
                    t.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .created
                        .insert(name, sent);
                    true
                }
                Err(e) => {
                    eprintln!("create {name}: {e}");
                    false
                }
            }
        }
    })
    .await;
    let created_in = start.elapsed().as_secs_f64();
    let ok = a.pods - failed;
    let bound = wait_bound(&times, ok, start + Duration::from_secs_f64(a.max_secs)).await;
    w.abort();
    let t = times.lock().unwrap_or_else(|e| e.into_inner());
    let (h, first, last) = latencies(&t);
    let span = match (first, last) {
        (Some(f), Some(l)) => l.saturating_duration_since(f).as_secs_f64(),
        _ => 0.0,
    };
    println!(
        "{}",
        json!({"workload": "schedule", "nodes": nodes, "pods": a.pods, "clients": a.clients,
            "create_errors": failed, "bound": bound, "seconds": span,
            "pods_per_second": if span > 0.0 { bound as f64 / span } else { 0.0 },
            "creates_per_second": ok as f64 / created_in,
            "p50_ms": ms(h.value_at_quantile(0.5)), "p99_ms": ms(h.value_at_quantile(0.99)),
            "max_ms": ms(h.max())})
    );
    Ok(())
}

async fn open_loop(endpoints: &[String], a: &ScheduleArgs, nodes: usize) -> Result<()> {
    let c = client(endpoints)?;
    let ns = format!("{}-{nodes}-rate", a.run_id);
    let rv = namespace(&c, &ns).await?;
    let times = Arc::new(Mutex::new(Times::default()));
    let w = watch_bound(c.clone(), ns.clone(), rv, times.clone());
    let n = (a.rate * a.rate_secs) as usize;
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / a.rate);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let (c, ns, t) = (c.clone(), ns.clone(), times.clone());
        tasks.push(tokio::spawn(async move {
            let name = format!("r-{i:06}");
            // Latency counts from the scheduled send time.
            t.lock()
                .unwrap_or_else(|e| e.into_inner())
                .created
                .insert(name.clone(), due);
            c.create("pods", &ns, &bench_pod(&name), false)
                .await
                .is_ok()
        }));
    }
    let mut failed = 0;
    for t in tasks {
        if !t.await.unwrap_or(false) {
            failed += 1;
        }
    }
    let bound = wait_bound(
        &times,
        n - failed,
        start + Duration::from_secs_f64(a.max_secs),
    )
    .await;
    w.abort();
    let t = times.lock().unwrap_or_else(|e| e.into_inner());
    let (h, _, _) = latencies(&t);
    println!(
        "{}",
        json!({"workload": "schedule-rate", "nodes": nodes, "rate": a.rate, "pods": n,
            "create_errors": failed, "bound": bound,
            "p50_ms": ms(h.value_at_quantile(0.5)), "p99_ms": ms(h.value_at_quantile(0.99)),
            "max_ms": ms(h.max())})
    );
    Ok(())
}

pub async fn run(endpoints: &[String], a: &ScheduleArgs) -> Result<()> {
    let c = client(endpoints)?;
    let mut have = 0;
    for &nodes in &a.nodes {
        if nodes < have {
            bail!("--nodes must increase");
        }
        let t = Instant::now();
        grow_nodes(&c, &a.run_id, have, nodes).await?;
        eprintln!(
            "{nodes} hollow nodes ({:.1} s to add {})",
            t.elapsed().as_secs_f64(),
            nodes - have
        );
        have = nodes;
        closed_loop(endpoints, a, nodes).await?;
        if a.rate > 0.0 {
            open_loop(endpoints, a, nodes).await?;
        }
    }
    Ok(())
}
